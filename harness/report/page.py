"""The model -> one self-contained HTML file: the Jinja environment, the data blob's encoding, file writing.

No network, no CDN, vanilla JS, opens from disk. Jinja2 autoescaping is on; the data blob is
script-safe JSON (as ``jinja2.utils.htmlsafe_json_dumps`` writes it), gzip + base-85 when it is large, and the
page renders it with ``textContent`` only, so nothing from a results file is ever parsed as markup.
The page's script is ``templates/js/*.js``, one file per concern, inlined in ``JS`` order.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from harness import __version__
from harness.report import base85
from harness.report import bench as bench_section
from harness.report.blob import Blob, Columns
from harness.report.model import Model, load
from harness.report.plots import PlotCache, sweep_plots
from harness.report.text import fmt_setting, fmt_ulp
from harness.report.views import DEFAULT_BASELINE, Builder
from harness.schema import MismatchKind, Quantity, Verdict, _clean

TEMPLATES = Path(__file__).parent / "templates"
JS = ("util.js", "data.js", "filters.js", "sort.js", "detail.js", "portability.js", "main.js")
PLOT_CACHE = Path(".bnparity-cache") / "plots"  # beside the report: figures by content (plots.PlotCache)
COMPRESS_ABOVE = 1_500_000  # characters of JSON: beyond this the blob travels gzip + base-85 (base85.py)


def _jinja() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["ulp"] = fmt_ulp
    env.filters["setting"] = fmt_setting
    env.filters["g"] = lambda v, d=3: "" if v is None else (f"{v:.{d}g}" if isinstance(v, float) else str(v))
    return env


def script() -> Markup:
    """The page's JavaScript: every file of ``JS`` in one strict-mode scope."""
    parts = [f"/* -- {name} -- */\n" + (TEMPLATES / "js" / name).read_text() for name in JS]
    return Markup('(function () {\n"use strict";\n' + "\n".join(parts) + "\n})();")


_HTML_SAFE = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027"))


def _script_safe(text: str) -> str:
    """The characters ``htmlsafe_json_dumps`` escapes, escaped (str.replace: a column of numbers has none, and
    a translate table costs a Python call per character)."""
    for c, esc in _HTML_SAFE:
        if c in text:
            text = text.replace(c, esc)
    return text


def _json(obj: Any) -> str:
    """Compact script-safe JSON, as ``jinja2.utils.htmlsafe_json_dumps`` writes it."""
    kw: dict[str, Any] = dict(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    try:  # numbers were made JSON-safe on the way in; a stray NaN costs a second pass
        text = json.dumps(obj, **kw)
    except ValueError:
        text = json.dumps(_clean(obj), **kw)
    return _script_safe(text)


def _chunks(blob: dict[str, Any]) -> Iterator[str]:
    """The blob's JSON in pieces: each of ``rows``'s columns on its own (a ``Columns`` makes them one at a
    time, and registers the ledger entries its records cite), then everything else."""
    rest = dict(blob)
    rows = rest.pop("rows", None)
    if rows is None:
        yield _json(rest)
        return
    yield '{"rows":['
    for i, col in enumerate(rows.json() if isinstance(rows, Columns) else map(_json, rows)):
        yield ("," if i else "") + _script_safe(col)
    yield "],"
    yield _json(rest)[1:]


def encode(blob: dict[str, Any], compress: bool | None = None) -> tuple[Markup, str]:
    """(payload, encoding) of the data blob: script-safe JSON, or gzip + base-85 of it when large. The
    JSON is made and compressed a piece at a time (``_chunks``)."""
    if compress is False:
        return Markup("".join(_chunks(blob))), "json"
    # level 6, not 9: on a 12 MB blob (100k records) 2.8x faster for 2% more bytes (2.89 against 2.83 MB)
    z = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: the gzip format, mtime 0
    packed: list[bytes] = []
    chars = 0
    text: list[str] | None = [] if compress is None else None  # kept while the blob may stay plain JSON
    for chunk in _chunks(blob):
        chars += len(chunk)
        if text is not None:
            text.append(chunk)
            if chars <= COMPRESS_ABOVE:
                continue
            chunk, text = "".join(text), None
        packed.append(z.compress(chunk.encode()))
    if text is not None:
        return Markup("".join(text)), "json"
    packed.append(z.flush())
    return Markup(base85.encode(b"".join(packed))), "gzip+base85"


def render(model: Model, *, compress: bool | None = None, gaps: bool = True, plots: bool = True,
           bench: dict[str, Any] | None = None, baseline: str = DEFAULT_BASELINE,
           plot_cache: PlotCache | None = None) -> str:
    """The report as one HTML string. ``compress``: None = gzip the blob only when it is large;
    ``baseline``: the adapter the defaults-vs-defaults view compares the others with; ``plot_cache``:
    where finished figures and oracle gaps are kept by content (None: every figure is drawn, every gap computed)."""
    # the figures' cache keeps the portability view's oracle gaps too (gaps.GapCache: by content, beside them)
    b = Builder(model, gaps=gaps, baseline=baseline, gap_cache=plot_cache.root if plot_cache is not None else None)
    payload, encoding = encode(Blob(model, b).build(), compress)
    ctx = {
        "version": __version__, "model": model, "envs": b.envs(), "groups": b.matrix(),
        "header_cols": b.header_cols(), "counts": b.counts(), "starts": b.start_rows(), "drift": b.drift_rows(),
        "drift_summary": b.drift_summary(), "families": b.family_views(),
        "paths": b.path_views(),
        "replicas": b.replica_views(),
        "defaults": b.defaults_views(), "plots": sweep_plots(model, plot_cache) if plots else [],
        "partial": [e for e in model.envs if e.partial], "adapters": model.adapters, "tags": model.tags(),
        "quantities": [q for q in Quantity if q is not Quantity.OUTCOME], "verdicts": Verdict.ordered(),
        "fail_mark": Verdict.FAIL.info.mark,
        "kinds": list(MismatchKind),
        "payload": payload, "encoding": encoding, "ncases": len(model.cases), "ncells": len(model.cells),
        "css": Markup((TEMPLATES / "report.css").read_text()), "js": script(),
        "multi_env": len(model.envs) > 1, "bench": bench,
    }
    return _jinja().get_template("report.html.j2").render(**ctx)


@dataclass(frozen=True)
class Written:
    path: Path
    model: Model
    chars: int


def write(paths: Iterable[Path | str], out: Path | str, *, plots: bool = True,
          plot_cache: Path | str | None | bool = True, **kw: Any) -> Written:
    """Load results files (or folders holding them), render, and write the report to ``out`` atomically.

    ``plot_cache``: the folder figures are cached in by content; True (the default) is
    ``.bnparity-cache/plots`` beside ``out``, False or None draws every figure. A results file this
    version cannot read raises ``harness.schema.SchemaError`` naming it.
    """
    paths = list(paths)
    out = Path(out)
    if plot_cache is True:
        plot_cache = out.parent / PLOT_CACHE
    cache = PlotCache(plot_cache) if plot_cache else None
    model = load(paths)
    html = render(model, bench=bench_section.section(paths, plots=plots, cache=cache), plots=plots,
                  plot_cache=cache, **kw)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return Written(out, model, len(html))


def render_paths(paths: Iterable[Path | str], out: Path | str, **kw: Any) -> Path:
    """Read results files (or folders holding them) and write one self-contained HTML report to ``out``.

        >>> render_paths([Path("reports/current/results.jsonl")], Path("reports/current/index.html"))
        >>> render_paths([Path("reports")], Path("reports/index.html"))   # every env below, merged
    """
    return write(paths, out, **kw).path
