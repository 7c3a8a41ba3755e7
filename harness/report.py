"""The HTML discrepancy report: ``bnparity report DIR_OR_FILES... -o reports/index.html``.

One self-contained file (no network, no CDN, vanilla JS, opens from disk), rendered from
results files alone with Jinja2 autoescaping on. The matrix (cases x adapters per
environment) is plain HTML; the per-cell detail travels as one JSON blob (gzip + base64
when it is large) that the page renders on click with ``textContent`` only, so nothing from
a results file is ever parsed as markup.

    >>> render_paths([Path("reports/current/results.jsonl")], Path("reports/current/index.html"))
    >>> render_paths([Path("reports")], Path("reports/index.html"))   # every env below, merged
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from harness import __version__
from harness.report_gaps import GapCache, Signature, bound, signature
from harness.report_model import (
    DIFFERING,
    FAILING,
    QUANTITIES,
    SEVERITY,
    Cell,
    Model,
    drift,
    first_divergence,
    fmt_ulp,
    load,
    num,
    rank,
    safe_link,
)
from harness.schema import _clean

TEMPLATES = Path(__file__).parent / "templates"
COMPRESS_ABOVE = 1_500_000  # bytes of JSON: beyond this the blob travels gzip + base64
SYMBOL = {"pass": "", "skip": "–", "expected-raise": "E", "known": "K", "stale": "S", "fail": "F",
          "raised": "R", "timeout": "T", "crashed": "C"}
METRIC_KINDS = ("match", "value", "nan", "finite_where_nan", "inf", "shape", "missing")


_FMT = {d: f"%.{d}g" for d in range(1, 18)}
_INF = (math.inf, -math.inf)


def _r(v: Any, digits: int) -> Any:
    """A number rounded for the blob; non-finite numbers as the strings results files use."""
    if type(v) is float:  # the hot path: ~500k calls for 100k records
        if v != v or v in _INF:
            return "nan" if v != v else ("inf" if v > 0 else "-inf")
        return float(_FMT[digits] % v)
    return v


class _Index:
    """String -> small int, in order of first use (the blob stores indices, not repeated strings)."""

    def __init__(self, initial: tuple[str, ...] = ()):
        self.items: list[Any] = []
        self._pos: dict[str, int] = {}
        for s in initial:
            self(s)

    def __call__(self, item: Any) -> int:
        key = json.dumps(item, sort_keys=True) if not isinstance(item, str) else item
        if key not in self._pos:
            self._pos[key] = len(self.items)
            self.items.append(item)
        return self._pos[key]


def _compact_result(r: dict[str, Any], q: _Index, v: _Index, k: _Index, ledger: dict[str, Any]) -> list[Any]:
    """[quantity, step, verdict, abs, rel, ulp, threshold, ratio, worst index, expected, observed,
    mismatched, total, mismatch kind, ledger id, message] with trailing empties dropped."""
    verdict = str(r.get("verdict"))
    digits = 4 if verdict == "pass" else 17  # a pass's worst element needs no more; a failure's gets every digit
    led = r.get("ledger")
    led_id = None
    if isinstance(led, dict):
        led_id = str(led.get("id") or f"entry-{len(ledger)}")
        ledger.setdefault(led_id, {key: led.get(key) for key in ("kind", "reason", "observed", "versions")}
                          | {"link": safe_link(led.get("link")), "raw_link": str(led.get("link") or "")})
    has_metrics = r.get("max_abs_err") is not None or r.get("mismatch_kind") in ("nan", "inf", "finite_where_nan")
    msg = None if has_metrics and r.get("mismatch_kind") != "shape" else _strip_repro(r.get("message"))
    mk = r.get("mismatch_kind")
    row = [q(str(r.get("quantity"))), r.get("step"), v(verdict), _r(r.get("max_abs_err"), 3),
           _r(r.get("max_rel_err"), 3), _r(r.get("max_ulp_err"), 3), _r(r.get("threshold"), 3),
           _r(r.get("error_ratio"), 3), r.get("worst_index"), _r(r.get("expected"), digits),
           _r(r.get("observed"), digits), r.get("mismatched") or None, r.get("total"),
           k(str(mk)) if mk and mk != "match" else None, led_id, msg or None]
    while row and row[-1] is None:
        row.pop()
    return row


def _strip_repro(msg: Any) -> str:
    """The runner appends a pytest command; the report shows its own reproducer instead."""
    s = str(msg or "")
    i = s.find("\n  Reproduce: ")
    return (s[:i] if i >= 0 else s)[:4000]


def _outcome(r: dict[str, Any], v: _Index) -> dict[str, Any]:
    o = {"v": v(str(r.get("verdict", "pass"))), "m": _strip_repro(r.get("message"))}
    for src, dst in (("exception_type", "t"), ("exception_message", "e"), ("exception_stage", "s"),
                     ("exit_code", "x")):
        if r.get(src) is not None:
            o[dst] = r[src]
    if r.get("stderr_tail"):
        o["tail"] = str(r["stderr_tail"])[-3000:]
    return o


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None)))


def _row_order(model: Model) -> list[tuple[str, list[str]]]:
    return [(g, [c.name for c in cs]) for g, cs in model.groups()]


class Builder:
    """Model -> everything the template needs (matrix rows, blob, sections)."""

    def __init__(self, model: Model, gaps: bool = True):
        self.model = model
        self.groups = _row_order(model)
        self.rows = [name for _, names in self.groups for name in names]
        self.row_of = {name: i for i, name in enumerate(self.rows)}
        self.col_of = {col: i for i, col in enumerate(model.columns)}
        self.gap_cache = GapCache() if gaps else None
        self._sigs: dict[str, tuple[list[Signature], dict[str, Any] | None]] | None = None
        self.starts: dict[tuple[str, str, str], dict[str, Any]] = {}
        for key, cell in model.cells.items():
            if cell.verdict not in ("pass", "skip", "expected-raise"):
                fd = first_divergence(cell)
                if fd:
                    self.starts[key] = fd

    # -- the blob --------------------------------------------------------------------------------
    @property
    def sigs(self) -> dict[str, tuple[list[Signature], dict[str, Any] | None]]:
        """Per case: the distinct oracle signatures of its cells, and the oracle gaps between them."""
        if self._sigs is not None:
            return self._sigs
        out = {}
        for name in self.rows:
            sigs: list[Signature] = []
            for env, adapter in self.model.columns:
                cell = self.model.cells.get((env, name, adapter))
                s = signature(cell.meta) if cell else None
                if s is not None and s not in sigs:
                    sigs.append(s)
            params = self.model.cases[name].params
            gaps = None
            if len(sigs) > 1 and params and self.gap_cache is not None:
                gaps = self.gap_cache.get(params, sigs)
            out[name] = (sigs, gaps)
        self._sigs = out
        return out

    def blob(self) -> dict[str, Any]:
        m = self.model
        q, v, k, conv = _Index(QUANTITIES), _Index(SEVERITY), _Index(METRIC_KINDS), _Index()
        ledger: dict[str, Any] = {}
        sigs = self.sigs
        cells: dict[str, Any] = {}
        from harness import repro

        for (env, case, adapter), cell in m.cells.items():
            r, c = self.row_of[case], self.col_of[(env, adapter)]
            meta = cell.meta or {}
            d: dict[str, Any] = {"v": v(cell.verdict), "u": _r(cell.max_ulp(), 3),
                                 "r": [_compact_result(x, q, v, k, ledger) for x in cell.results
                                       if x.get("quantity") != "outcome"]}
            out = cell.outcome
            if out:
                d["o"] = _outcome(out, v)
            if meta:
                d["k"] = conv(meta.get("conventions") or {})
                d["set"] = meta.get("settings") or {}
                d["eff"] = meta.get("effective") or {}
                d["info"] = {kk: _r(vv, 4) for kk, vv in (meta.get("info") or {}).items() if _jsonable(vv)}
                worker = meta.get("worker") or {}
                if "import_s" in worker:
                    d["info"]["worker import_s"] = _r(worker["import_s"], 3)
                d["info"]["round trip s"] = _r(meta.get("wall_s"), 3)
                d["st"] = meta.get("status")
                s = signature(meta)
                case_sigs = sigs[case][0]
                if s is not None and s in case_sigs:
                    d["g"] = case_sigs.index(s)
            if cell.version:
                d["fv"] = cell.version
            st = self.starts.get((env, case, adapter))
            if st:
                d["start"] = st["text"]
            cells[f"{r}:{c}"] = d
        cases = []
        for name in self.rows:
            info = m.cases[name]
            cases.append({"n": name, "j": repro.case_json(info.params) if info.params else None,
                          "d": str(info.params.get("description", "")) if info.params else "", "t": info.tags})
        gaps = {}
        for name, (ss, g) in sigs.items():
            if len(ss) > 1:
                gaps[str(self.row_of[name])] = {"sigs": [list(s) for s in ss],
                                                "d": {p: {kk: _r(vv, 3) for kk, vv in dd.items()}
                                                      for p, dd in g.items()} if g else None}
        adapters = sorted({a for _, a in m.columns})
        templates = {a: repro.template(a) for a in adapters}
        return {"version": __version__, "verdicts": v.items, "quantities": q.items, "kinds": k.items,
                "conventions": conv.items, "ledger": ledger,
                "cols": [[e, a] for e, a in m.columns], "envs": [e.key for e in m.envs], "cases": cases,
                "cells": cells, "gaps": gaps, "templates": templates, "placeholder": repro.CASE_PLACEHOLDER}

    # -- server-side sections ----------------------------------------------------------------------
    def matrix(self) -> list[dict[str, Any]]:
        m = self.model
        groups = []
        for g, names in self.groups:
            rows = []
            for name in names:
                info = m.cases[name]
                r = self.row_of[name]
                tds, search = [], [name, info.params.get("description", ""), *info.tags]
                worst_rank = 0
                for c, (env, adapter) in enumerate(m.columns):
                    cell = m.cells.get((env, name, adapter))
                    if cell is None:
                        tds.append({"c": c, "cls": "none", "text": "", "title": f"{adapter} @ {env}: not run"})
                        continue
                    verdict, ulp = cell.verdict, cell.max_ulp()
                    worst_rank = max(worst_rank, rank(verdict))
                    text = fmt_ulp(ulp) if verdict in ("pass", "known", "fail", "stale") and ulp is not None \
                        else SYMBOL.get(verdict, verdict[:1].upper())
                    title = f"{name} × {adapter} @ {env}: {verdict}" + (f", worst {fmt_ulp(ulp)} ulp" if ulp is not None
                                                                        else "")
                    out = cell.outcome
                    if out.get("verdict") not in (None, "pass"):
                        short = str(out.get("exception_type") or out.get("message") or "")[:160]
                        title += f" — {short}"
                        search.append(short)
                    tds.append({"c": c, "cls": f"v-{verdict}", "text": text, "title": title,
                                "sort": rank(verdict) * 1e6 + min(ulp or 0.0, 9.99e5)})
                rows.append({"r": r, "name": name, "desc": info.params.get("description", ""),
                             "tags": " ".join(info.tags), "cells": tds, "worst": worst_rank,
                             "search": " ".join(str(s) for s in search).lower()})
            groups.append({"name": g, "rows": rows})
        return groups

    def header_cols(self) -> list[dict[str, Any]]:
        m = self.model
        out = []
        for env in m.envs:
            cols = [{"c": self.col_of[(env.key, a)], "adapter": a} for a in env.adapters]
            if cols:
                out.append({"env": env, "cols": cols})
        return out

    def start_rows(self) -> list[dict[str, Any]]:
        rows = []
        for (env, case, adapter), st in sorted(self.starts.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
            cell = self.model.cells[(env, case, adapter)]
            rows.append({"env": env, "case": case, "adapter": adapter, "verdict": cell.verdict,
                         "key": f"{self.row_of[case]}:{self.col_of[(env, adapter)]}", "step": st["step"],
                         "quantity": st["quantity"], "stage": st["stage"], "text": st["text"],
                         "later": ", ".join(st["also"] + st["later"]),
                         "tags": " ".join(self.model.cases[case].tags)})
        return rows

    def drift_rows(self) -> list[dict[str, Any]]:
        rows = drift(self.model)
        for row in rows:
            row["tags"] = " ".join(self.model.cases[row["case"]].tags) if row["case"] in self.model.cases else ""
            row["cells"] = []
            for env in self.model.envs:
                val = row["values"].get(env.key)
                key = None
                if val is not None:
                    key = f"{self.row_of[row['case']]}:{self.col_of[(env.key, row['adapter'])]}"
                row["cells"].append({"env": env.key, "val": val, "key": key,
                                     "ulp": fmt_ulp(val["ulp"]) if val else ""})
        return rows

    def defaults_views(self) -> list[dict[str, Any]]:
        """Cases run with each framework's own defaults: settings side by side and how far apart the results are."""
        m = self.model
        views = []
        for name in self.rows:
            info = m.cases[name]
            if not info.params.get("use_defaults"):
                continue
            sigs, gaps = self.sigs.get(name, ([], None))
            for env in m.envs:
                cells = [(a, m.cells.get((env.key, name, a))) for a in env.adapters]
                cells = [(a, c) for a, c in cells if c is not None]
                if not cells:
                    continue
                base_a, base = next(((a, c) for a, c in cells if a == "torch" and c.meta), None) or \
                    next(((a, c) for a, c in cells if c.meta), cells[0])
                steps = int(info.params.get("steps", 0) or 0)
                keys = [(f"running_mean@{steps - 1}", "running_mean", steps - 1),
                        (f"running_var@{steps - 1}", "running_var", steps - 1),
                        ("y_eval@", "y_eval", None), ("dx_eval@", "dx_eval", None)] if steps else \
                    [("y_eval@", "y_eval", None), ("dx_eval@", "dx_eval", None)]
                rows = []
                for a, c in cells:
                    meta = c.meta or {}
                    conv, settings, eff = meta.get("conventions") or {}, meta.get("settings") or {}, \
                        meta.get("effective") or {}
                    gapcells = []
                    for key, qn, step in keys:
                        gapcells.append(self._gap_text(name, base, c, qn, step, key, sigs, gaps))
                    rows.append({"adapter": a, "verdict": c.verdict, "momentum": settings.get("momentum"),
                                 "eps": settings.get("eps"), "eff_m": eff.get("momentum"),
                                 "estimator": conv.get("running_var_estimator"),
                                 "style": conv.get("momentum_style"), "gaps": gapcells, "base": a == base_a,
                                 "key": f"{self.row_of[name]}:{self.col_of[(env.key, a)]}"})
                views.append({"case": name, "env": env.key, "base": base_a, "rows": rows,
                              "labels": [f"{qn}" + (f" after step {s}" if s is not None else "") for _, qn, s in keys],
                              "desc": info.params.get("description", ""), "tags": " ".join(info.tags)})
        return views

    def _gap_text(self, case: str, base: Cell, other: Cell, q: str, step: int | None, key: str,
                  sigs: list[Signature], gaps: dict[str, Any] | None) -> dict[str, Any]:
        if other is base:
            return {"text": "baseline", "title": "the other rows are compared with this adapter"}
        sa, sb = signature(base.meta), signature(other.meta)

        def err(cell: Cell) -> float | None:
            r = next((x for x in cell.results if x.get("quantity") == q and x.get("step") == step), None)
            return num(r.get("max_abs_err")) if r else None

        ea, eb = err(base), err(other)
        if sa is None or sb is None:
            return {"text": "—", "title": "no settings recorded (skipped or not run)"}
        if sa == sb:
            gap = 0.0
        elif gaps is None or sa not in sigs or sb not in sigs:
            return {"text": "differs by convention", "title": "the oracle could not be rebuilt from the case here"}
        else:
            i, j = sorted((sigs.index(sa), sigs.index(sb)))
            gap = (gaps.get(f"{i},{j}") or {}).get(key)
        b = bound(ea, eb, gap)
        if b is None:
            return {"text": "—", "title": "an outcome without this quantity (raised or crashed)"}
        lo, hi = b
        title = (f"measured errors {ea:.3g} ({base.adapter}) and {eb:.3g} ({other.adapter}) against their oracles: "
                 f"{lo:.3g} <= max|a - b| <= {hi:.3g}")
        if sa == sb:
            return {"text": "same settings", "sub": f"|a − b| ≤ {hi:.3g}", "title": title}
        sub = f"|a − b| ≈ {hi:.3g}" if f"{lo:.3g}" == f"{hi:.3g}" else f"|a − b| in [{lo:.3g}, {hi:.3g}]"
        return {"text": f"{gap:.3g}", "sub": sub, "conv": gap > 0,
                "title": f"oracle gap {gap:.3g} = max|oracle_a - oracle_b| under each adapter's settings; " + title}

    def counts(self) -> dict[str, Any]:
        cells = Counter(c.verdict for c in self.model.cells.values())
        records = Counter()
        for e in self.model.envs:
            records.update(e.verdicts)
        order = [v for v in SEVERITY if cells.get(v) or records.get(v)] + \
            sorted((set(cells) | set(records)) - set(SEVERITY))
        return {"order": order, "cells": cells, "records": records}


def _envs_view(model: Model) -> list[dict[str, Any]]:
    hashes = {e.header.get("cases_hash") for e in model.envs if e.header.get("cases_hash")}
    out = []
    for e in model.envs:
        h = e.header
        plat = h.get("platform") or {}
        timings = h.get("timings") or {}
        out.append({"key": e.key, "name": e.name, "path": e.path, "status": e.status, "partial": e.partial,
                    "started": h.get("started", ""), "finished": h.get("finished", ""),
                    "versions": sorted((str(k), str(v)) for k, v in e.versions.items()),
                    "platform": ", ".join(f"{k} {v}" for k, v in plat.items() if v not in (None, "")),
                    "cases_hash": str(h.get("cases_hash", ""))[:12], "hash_differs": len(hashes) > 1,
                    "records": sum(e.verdicts.values()), "cells": sum(e.cell_verdicts.values()),
                    "verdicts": sorted(e.cell_verdicts.items(), key=lambda kv: rank(kv[0])),
                    "ignored": dict(e.ignored), "adapters": e.adapters,
                    "timings": sorted((str(a), {k: v for k, v in t.items() if isinstance(v, (int, float))})
                                      for a, t in timings.items() if isinstance(t, dict)),
                    "argv": " ".join(str(a) for a in h.get("argv") or []), "report_error": h.get("report_error"),
                    "sample": str(h["sample"]) if h.get("sample") else ""})
    return out


def _script_json(s: str) -> Markup:
    """JSON text made safe inside <script>: '<', '>' and '&' escaped (they occur only inside JSON strings,
    where \\u escapes mean the same), so '</script>' and '<!--' cannot occur."""
    s = s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    s = s.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Markup(s)


def _jinja() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["ulp"] = fmt_ulp
    env.filters["g"] = lambda v, d=3: "" if v is None else (f"{v:.{d}g}" if isinstance(v, float) else str(v))
    return env


def render(model: Model, *, compress: bool | None = None, gaps: bool = True, plots: bool = True,
           bench: dict[str, Any] | None = None) -> str:
    """The report as one HTML string. ``compress``: None = gzip the blob only when it is large."""
    b = Builder(model, gaps=gaps)
    blob = b.blob()
    try:  # numbers were cleaned on the way in; a stray NaN from a hand-made record costs a full pass
        raw = json.dumps(blob, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except ValueError:
        blob = _clean(blob)
        raw = json.dumps(blob, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    if compress is None:
        compress = len(raw.encode()) > COMPRESS_ABOVE
    if compress:
        payload = Markup(base64.b64encode(gzip.compress(raw.encode(), compresslevel=6, mtime=0)).decode())
        encoding = "gzip+base64"
    else:
        payload, encoding = _script_json(raw), "json"
    from harness.report_plots import sweep_plots

    env = _jinja()
    ctx = {
        "version": __version__, "model": model, "envs": _envs_view(model), "groups": b.matrix(),
        "header_cols": b.header_cols(), "counts": b.counts(), "starts": b.start_rows(), "drift": b.drift_rows(),
        "defaults": b.defaults_views(), "plots": sweep_plots(model) if plots else [],
        "partial": [e for e in model.envs if e.partial], "adapters": model.adapters,
        "tags": model.tags(), "quantities": [q for q in QUANTITIES if q != "outcome"],
        "verdicts": list(SEVERITY), "payload": payload, "encoding": encoding,
        "ncases": len(model.cases), "ncells": len(model.cells), "failing": FAILING, "differing": DIFFERING,
        "css": Markup((TEMPLATES / "report.css").read_text()), "js": Markup((TEMPLATES / "report.js").read_text()),
        "multi_env": len(model.envs) > 1, "bench": bench,
    }
    return env.get_template("report.html.j2").render(**ctx)


def render_paths(paths: list[Path], out: Path, **kw: Any) -> Path:
    """Read results files (or folders holding them) and write one self-contained HTML report to ``out``."""
    from harness import report_bench

    model = load(paths)
    html = render(model, bench=report_bench.section(paths), **kw)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bnparity report",
                                description="Render results files into one self-contained HTML report.")
    p.add_argument("paths", nargs="+", metavar="DIR_OR_FILE",
                   help="results.jsonl files, or folders holding them (DIR/results.jsonl or DIR/*/results.jsonl)")
    p.add_argument("-o", "--output", default="reports/index.html", metavar="FILE",
                   help="where the HTML goes (default: reports/index.html)")
    p.add_argument("--compress", choices=("auto", "yes", "no"), default="auto",
                   help="gzip the embedded detail data (auto: only when it is large)")
    p.add_argument("--no-plots", action="store_true", help="leave out the sweep plots (no matplotlib needed)")
    args = p.parse_args(argv)
    try:
        model = load(args.paths)
    except FileNotFoundError as e:
        print(f"bnparity report: {e}", file=sys.stderr)
        return 2
    if not model.envs:
        print("bnparity report: no results files found", file=sys.stderr)
        return 2
    compress = {"auto": None, "yes": True, "no": False}[args.compress]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    from harness import report_bench

    bench = None if args.no_plots else report_bench.section(args.paths)
    html = render(model, compress=compress, plots=not args.no_plots, bench=bench)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    partial = [e.key for e in model.envs if e.partial]
    print(f"wrote {out} ({len(html) / 1e6:.2f} MB): {len(model.envs)} environment(s), {len(model.cases)} cases, "
          f"{len(model.cells)} cells" + (f"; PARTIAL: {', '.join(partial)}" if partial else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
