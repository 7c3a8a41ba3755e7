"""The report's server-side sections as view models: what the Jinja template iterates over.

``Builder(model)`` holds the row and column order shared by the matrix, the sections and the
data blob (a cell is ``"row:column"`` everywhere), and each section is one method returning
plain dicts and lists of strings the template prints as they are.
"""

from __future__ import annotations

from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.report.analysis import Divergence, Drift, drift, first_divergence
from harness.report.families import FAMILY_CONVENTIONS, families
from harness.report.gaps import PairBound, Portability
from harness.report.model import Env, Headline, Model, ReportCell
from harness.report.paths import cost_text, identical_text, path_groups
from harness.report.replicas import replica_rows
from harness.report.replicas import side as replica_side
from harness.report.story import summaries
from harness.report.text import fmt_g, fmt_ratio, fmt_ulp, safe_link
from harness.schema import Quantity, Verdict

DEFAULT_BASELINE = "torch"  # the adapter the defaults-vs-defaults view compares the others with
TITLE_CHARS = 160  # of an exception or message in a matrix cell's tooltip


def headline_title(hl: Headline, ulp: float | None) -> str:
    """The tooltip's account of a cell's number: the worst error/bound and where, then the worst ULPs."""
    out = ""
    rec = hl.record
    where = f" ({rec.quantity.label(rec.step)})" if rec is not None and rec.quantity is not None else ""
    if hl.kind is not None:
        out += f"; {hl.kind.headline}{where}"
        if hl.ratio is not None:
            out += f"; worst error/bound elsewhere {fmt_g(hl.ratio)}"
    elif hl.ratio is not None:
        out += f"; worst error/bound {fmt_g(hl.ratio)}{where}"
    if ulp is not None:
        out += f"; worst error {fmt_ulp(ulp)} ulp"
    return out


class Builder:
    """Model -> everything the template needs (matrix rows, sections) and the order the blob uses."""

    def __init__(self, model: Model, gaps: bool = True, baseline: str = DEFAULT_BASELINE,
                 gap_cache: Path | str | None = None):
        self.model = model
        self.baseline = baseline
        self.groups = [(g, [c.name for c in cs]) for g, cs in model.groups()]
        self.rows = [name for _, names in self.groups for name in names]
        self.row_of = {name: i for i, name in enumerate(self.rows)}
        self.col_of = {col: i for i, col in enumerate(model.columns)}
        self.portability = Portability(model, compute=gaps, cache=gap_cache)
        self.starts: dict[tuple[str, str, str], Divergence] = {}
        for key, cell in model.cells.items():
            if cell.verdict.fails_run or cell.verdict.differs:
                fd = first_divergence(cell)
                if fd:
                    self.starts[key] = fd

    def key(self, env: str, case: str, adapter: str) -> str:
        """A cell's key in the page (``data-key``, and the blob's ``cells``)."""
        return f"{self.row_of[case]}:{self.col_of[(env, adapter)]}"

    @staticmethod
    def outcome_short(cell: ReportCell) -> str:
        """What a cell that did not pass says of its outcome, in brief (its tooltip and the row's search text)."""
        out = cell.outcome
        if out is None or out.verdict is Verdict.PASS:
            return ""
        return (out.exception_type or out.message)[:TITLE_CHARS]

    @staticmethod
    def cell_tip(cell: ReportCell) -> str:
        """A matrix cell's tooltip after '{case} × {adapter} @ {env}: {verdict}' (which the page puts before it,
        ``cellTitle`` in ``templates/js/detail.js``): the worst error/bound and where, the worst ULPs, and for a
        cell that did not pass its outcome in brief. A million-record matrix has 40,000 cells: their tooltips
        are a third of its HTML, and compress ten to one in the blob."""
        tip = headline_title(cell.headline(), cell.max_ulp())
        short = Builder.outcome_short(cell)
        return tip + f" — {short}" if short else tip

    def matrix(self) -> list[dict[str, Any]]:
        m = self.model
        groups = []
        for g, names in self.groups:
            rows = []
            for name in names:
                info = m.cases[name]
                tds, search = [], [name, info.description, *info.tags]
                for c, (env, adapter) in enumerate(m.columns):
                    cell = m.cells.get((env, name, adapter))
                    if cell is None:
                        tds.append({"c": c, "cls": "none", "text": "", "title": f"{adapter} @ {env}: not run"})
                        continue
                    verdict = cell.verdict
                    short = self.outcome_short(cell)
                    if short:
                        search.append(short)
                    # the tooltip travels in the blob (cell_tip), put on the cell when the pointer is over it
                    tds.append({"c": c, "cls": f"v-{verdict}", "text": cell.headline().matrix_text(verdict)})
                rows.append({"r": self.row_of[name], "name": name, "desc": info.description,
                             "tags": " ".join(info.tags), "cells": tds,
                             "search": " ".join(str(s) for s in search).lower()})
            groups.append({"name": g, "rows": rows})
        return groups

    def header_cols(self) -> list[dict[str, Any]]:
        out = []
        for env in self.model.envs:
            cols = [{"c": self.col_of[(env.key, a)], "adapter": a} for a in env.adapters]
            if cols:
                out.append({"env": env, "cols": cols})
        return out

    def start_rows(self) -> list[dict[str, Any]]:
        rows = []
        for (env, case, adapter), st in sorted(self.starts.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
            cell = self.model.cells[(env, case, adapter)]
            rows.append({"env": env, "case": case, "adapter": adapter, "verdict": cell.verdict,
                         "key": self.key(env, case, adapter), "step": st.step, "quantity": st.quantity,
                         "outcome": st.quantity is Quantity.OUTCOME, "stage": st.stage, "text": st.text,
                         "later": ", ".join(st.also + st.later), "tags": " ".join(self.model.cases[case].tags)})
        return rows

    @cached_property
    def drifts(self) -> list[Drift]:
        return drift(self.model)

    def drift_summary(self) -> list[dict[str, Any]]:
        """Per adapter and pair of versions: what changed, in cases, and the ledger entries that came or went."""
        out = []
        for s in summaries(self.model, self.drifts):
            out.append({"adapter": s.adapter, "title": s.title, "from": s.env_from, "to": s.env_to,
                        "version_from": s.version_from or "?", "version_to": s.version_to or "?",
                        "changes": s.change_texts(), "cases": len(s.cases), "text": s.text,
                        "mechanisms": [{"text": m.text, "change": m.change, "reason": m.reason}
                                       for m in s.mechanisms]})
        return out

    def drift_rows(self) -> list[dict[str, Any]]:
        rows = []
        for d in self.drifts:
            cells = []
            for env in self.model.envs:
                c = d.cells.get(env.key)
                if c is None:
                    cells.append(None)
                    continue
                hl = c.headline()
                cells.append({"env": env.key, "verdict": c.verdict, "version": c.framework_version,
                              "sort": min(hl.sort_value, 1e308), "text": hl.text, "ulp_text": fmt_ulp(c.max_ulp()),
                              "digests": ", ".join(sorted({r.digest[:8] for r in c.results
                                                           if r.digest and r.quantity.value in d.changed})),
                              "key": self.key(env.key, d.case, d.adapter)})
            rows.append({"case": d.case, "adapter": d.adapter, "what": d.what, "ledger_only": d.ledger_only,
                         "changed": ", ".join(d.changed),
                         "tags": " ".join(self.model.cases[d.case].tags) if d.case in self.model.cases else "",
                         "verdicts": " ".join(sorted({c.verdict.value for c in d.cells.values()})), "cells": cells})
        return rows

    def path_views(self) -> list[dict[str, Any]]:
        """Each eager adapter beside its compiled, graph, exported and converted paths (``harness.report.paths``)."""
        out = []
        for g in path_groups(self.model):
            rows = [{"adapter": r.adapter, "path": r.path, "cases": r.cases, "both_ok": r.both_ok,
                     "path_fails": r.path_fails, "eager_fails": r.eager_fails, "both_fail": r.both_fail,
                     "skipped": r.skipped, "identical": identical_text(r),
                     "eager_worst": fmt_ratio(r.eager_worst) if r.eager_worst is not None else "",
                     "path_worst": fmt_ratio(r.path_worst) if r.path_worst is not None else "",
                     "cost": cost_text(r),
                     "omits": [{"quantity": q, "why": why} for q, why in sorted(r.omits.items())],
                     "diffs": [{"case": d.case, "eager": d.eager.value, "path": d.path.value,
                                "eager_ratio": fmt_ratio(d.eager_ratio) if d.eager_ratio is not None else "",
                                "path_ratio": fmt_ratio(d.path_ratio) if d.path_ratio is not None else "",
                                "failing": d.failing} for d in r.diffs]} for r in g.rows]
            out.append({"env": g.env, "source": g.source, "rows": rows})
        return out

    def replica_views(self) -> list[dict[str, Any]]:
        """Per data-parallel configuration and environment, each framework with sync on and off side by side
        (``harness.report.replicas``)."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in sorted(replica_rows(self.model), key=lambda r: (r.env, r.config, r.adapter)):
            groups.setdefault((r.env, r.config), []).append(
                {"adapter": r.adapter, "convention": r.convention(), "sync": replica_side(r.by_sync.get(True)),
                 "local": replica_side(r.by_sync.get(False))})
        return [{"env": env, "config": config, "rows": rows} for (env, config), rows in groups.items()]

    def family_views(self) -> list[dict[str, Any]]:
        """Each scenario family per environment, adapters side by side (``harness.report.families``)."""
        out = []
        for f in families(self.model):
            conv = FAMILY_CONVENTIONS.get(f.name)
            rows = [{"adapter": r.adapter, "ran": r.ran, "verdicts": r.verdict_text(),
                     "worst": fmt_ratio(r.worst) if r.worst is not None else "", "does": r.does,
                     "skips": [{"reason": reason, "n": n} for reason, n in r.skips.most_common()],
                     "mechanisms": [{"id": m.id, "kind": m.kind, "records": m.records, "link": safe_link(m.link)}
                                    for m in sorted(r.mechanisms.values(), key=lambda m: m.id)]} for r in f.rows]
            out.append({"name": f.name, "env": f.env, "cases": len(f.cases), "convention": conv[0] if conv else "",
                        "rows": rows})
        return out

    def defaults_views(self) -> list[dict[str, Any]]:
        """Cases run with each framework's own defaults: settings side by side and how far apart the results are."""
        m = self.model
        views = []
        for name in self.rows:
            info = m.cases[name]
            if not info.use_defaults:
                continue
            calls = info.schedule
            trains = [i for i, kind in enumerate(calls) if kind == "train"]
            evals = [i for i, kind in enumerate(calls) if kind == "eval"]
            keys = [(Quantity.RUNNING_MEAN, trains[-1]), (Quantity.RUNNING_VAR, trains[-1])] if trains else []
            keys += [(q, evals[-1]) for q in Quantity.of_phase("eval") if not q.is_state] if evals else []
            for env in m.envs:
                cells = [(a, c) for a in env.adapters if (c := m.cells.get((env.key, name, a))) is not None]
                if not cells:
                    continue
                base_a, base = next(((a, c) for a, c in cells if a == self.baseline and c.record), None) or \
                    next(((a, c) for a, c in cells if c.record), cells[0])
                rows = []
                for a, c in cells:
                    rec = c.record
                    rows.append({"adapter": a, "verdict": c.verdict, "base": a == base_a,
                                 "momentum": rec.settings.get("momentum") if rec else None,
                                 "eps": rec.settings.get("eps") if rec else None,
                                 "eff_m": rec.effective.momentum if rec else None,
                                 "estimator": rec.conventions.get("running_var_estimator") if rec else None,
                                 "style": rec.conventions.get("momentum_style") if rec else None,
                                 "gaps": [self._gap_text(name, base, c, q, step) for q, step in keys],
                                 "key": self.key(env.key, name, a)})
                views.append({"case": name, "env": env.key, "base": base_a, "rows": rows,
                              "labels": [q.label(s) for q, s in keys],
                              "desc": info.description, "tags": " ".join(info.tags)})
        return views

    def _gap_text(self, case: str, base: ReportCell, other: ReportCell, q: Quantity,
                  step: int | None) -> dict[str, Any]:
        if other is base:
            return {"text": "baseline", "title": "the other rows are compared with this adapter"}
        b = self.portability.pair(case, base, other, q, step)
        if not isinstance(b, PairBound):
            return {"text": b.text, "title": b.why}
        lo, hi = b.lower, b.upper
        title = (f"measured errors {b.err_a:.3g} ({base.adapter}) and {b.err_b:.3g} ({other.adapter}) against their "
                 f"oracles: {lo:.3g} <= max|a - b| <= {hi:.3g}")
        if b.same_settings:
            return {"text": "same settings", "sub": f"|a − b| ≤ {hi:.3g}", "title": title}
        sub = f"|a − b| ≈ {hi:.3g}" if f"{lo:.3g}" == f"{hi:.3g}" else f"|a − b| in [{lo:.3g}, {hi:.3g}]"
        return {"text": f"{b.gap:.3g}", "sub": sub, "conv": b.gap > 0,
                "title": f"oracle gap {b.gap:.3g} = max|oracle_a - oracle_b| under each adapter's settings; " + title}

    def counts(self) -> dict[str, Any]:
        """Cells and records per verdict, for the verdicts that occur, in severity order."""
        cells = Counter(c.verdict for c in self.model.cells.values())
        records: Counter[Verdict] = Counter()
        for e in self.model.envs:
            records.update(e.verdicts)
        order = [v for v in Verdict.ordered() if cells[v] or records[v]]
        return {"order": order, "cells": cells, "records": records}

    def envs(self) -> list[dict[str, Any]]:
        hashes = {e.header.cases_hash for e in self.model.envs if e.header and e.header.cases_hash}
        return [_env_view(e, hash_differs=len(hashes) > 1) for e in self.model.envs]


def _env_view(e: Env, hash_differs: bool) -> dict[str, Any]:
    h = e.header
    timings = (h.timings if h else None) or {}
    return {"key": e.key, "name": e.name, "path": e.path, "status": e.status, "partial": e.partial,
            "started": h.started if h else "", "finished": (h.finished if h else None) or "",
            "versions": sorted(e.versions.items()),
            "platform": ", ".join(f"{k} {v}" for k, v in (h.platform if h else {}).items() if v not in (None, "")),
            "cases_hash": (h.cases_hash if h else "")[:12], "hash_differs": hash_differs,
            "records": sum(e.verdicts.values()), "cells": sum(e.cell_verdicts.values()),
            "verdicts": sorted(e.cell_verdicts.items(), key=lambda kv: kv[0].severity),
            "ignored": dict(e.ignored), "adapters": e.adapters, "skipped": e.skipped,
            "timings": sorted(timings.items()),
            "argv": " ".join((h.argv if h else None) or []), "sample": (h.sample if h else None) or ""}
