"""The model -> one self-contained HTML file: the Jinja environment, the data blob's encoding, file writing.

No network, no CDN, vanilla JS, opens from disk. Jinja2 autoescaping is on; the data blob is
script-safe JSON (as ``jinja2.utils.htmlsafe_json_dumps`` writes it), packed (gzip + base-120) when it
is large, and the page renders it with ``textContent`` only, so nothing from a results file is ever
parsed as markup.
The page's script is ``templates/js/*.js``, one file per concern, inlined in ``JS`` order.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from harness import __version__
from harness.report import base120, packed
from harness.report import bench as bench_section
from harness.report.blob import Blob, Columns
from harness.report.model import Model, load
from harness.report.packed import Planes
from harness.report.plots import PlotCache, sweep_plots
from harness.report.text import fmt_setting, fmt_ulp
from harness.report.views import DEFAULT_BASELINE, Builder
from harness.schema import MismatchKind, Quantity, Verdict, _clean

TEMPLATES = Path(__file__).parent / "templates"
JS = ("util.js", "data.js", "filters.js", "sort.js", "detail.js", "portability.js", "main.js")
PLOT_CACHE = Path(".bnparity-cache") / "plots"  # beside the report: figures by content (plots.PlotCache)
COMPRESS_ABOVE = 1_500_000  # characters of JSON: beyond this the blob travels packed, gzip + base-120 (base120.py)


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


class Payload(NamedTuple):
    """The data blob as the page carries it: ``text`` in the ``bn-data`` element and its ``encoding``; packed,
    the text is two gzip streams in base-120, the records' planes (``planes``: how many characters of the
    text) and then the JSON."""

    text: Markup
    encoding: str
    planes: int = 0


def _gzip(chunks: Iterable[bytes], level: int, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> bytes:
    z = zlib.compressobj(level, zlib.DEFLATED, 31, 9, strategy)  # wbits 31: the gzip format, mtime 0
    return b"".join([*(z.compress(c) for c in chunks), z.flush()])


def encode(blob: dict[str, Any], compress: bool | None = None) -> Payload:
    """The data blob as script-safe JSON, or, when large, packed: the records' numeric columns as byte
    planes (``harness.report.packed``) and the JSON, each gzip, in base-120. Made and compressed a piece at
    a time (``_chunks``; the planes a column at a time)."""
    if compress is False:
        return Payload(Markup("".join(_chunks(blob))), "json")
    if compress is None:  # plain JSON while it stays small
        text: list[str] = []
        chars = 0
        for chunk in _chunks(blob):
            text.append(chunk)
            chars += len(chunk)
            if chars > COMPRESS_ABOVE:
                break
        else:
            return Payload(Markup("".join(text)), "json")
        del text
    rows = blob.get("rows")
    planes = ""
    if isinstance(rows, Columns):
        # the planes at level 6, filtered (deflate's own strategy for small-valued bytes): on 100k records 0.6%
        # smaller than the default, level 9 takes six times as long for 2% less; the JSON at level 9: 8%
        # smaller than at 6, in 0.03 s
        z = zlib.compressobj(6, zlib.DEFLATED, 31, 9, zlib.Z_FILTERED)
        out: list[bytes] = []
        sink = Planes(lambda b: out.append(z.compress(b)))
        columns = list(rows.packed(sink))  # (registers the ledger entries the records cite)
        out.append(z.flush())
        planes = base120.encode(b"".join(out))
        del out
        rest = dict(blob)
        del rest["rows"]
        chunks: Iterable[str] = ['{"rows":[', ",".join(_json(c) for c in columns), "],", _json(rest)[1:]]
    else:
        chunks = _chunks(blob)
    text = base120.encode(_gzip((c.encode() for c in chunks), 9))
    return Payload(Markup(planes + text), "gzip+base120", len(planes))


def decode(payload: Payload) -> dict[str, Any]:
    """The blob back from its payload, ``rows`` as the JSON lists of the plain page (what the page's
    ``loadData`` and ``unpackColumn`` read; self-tests)."""
    import gzip

    if payload.encoding == "json":
        return json.loads(str(payload.text))
    text = str(payload.text)
    blob = json.loads(gzip.decompress(base120.decode(text[payload.planes:])))
    if payload.planes:
        binary = gzip.decompress(base120.decode(text[:payload.planes]))
        blob["rows"] = [packed.decode_column(c, binary) for c in blob["rows"]]
    return blob


def render(model: Model, *, compress: bool | None = None, gaps: bool = True, plots: bool = True,
           bench: dict[str, Any] | None = None, baseline: str = DEFAULT_BASELINE,
           plot_cache: PlotCache | None = None) -> str:
    """The report as one HTML string. ``compress``: None = gzip the blob only when it is large;
    ``baseline``: the adapter the defaults-vs-defaults view compares the others with; ``plot_cache``:
    where finished figures and oracle gaps are kept by content (None: every figure is drawn, every gap computed)."""
    # the figures' cache keeps the portability view's oracle gaps too (gaps.GapCache: by content, beside them)
    b = Builder(model, gaps=gaps, baseline=baseline, gap_cache=plot_cache.root if plot_cache is not None else None)
    payload = encode(Blob(model, b).build(), compress)
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
        "payload": payload.text, "encoding": payload.encoding,
        "planes": payload.planes, "ncases": len(model.cases), "ncells": len(model.cells),
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
