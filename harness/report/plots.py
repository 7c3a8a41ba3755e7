"""Error over its bound against a swept parameter, per adapter, on log axes: matplotlib (Agg) to SVG data URIs.

The y axis is the matrix's number, error/bound (1 = on the bound, the dotted line), not ULPs: ULPs
measure the error against the spacing of the dtype at the quantity's scale, which near zero (a
gradient of a constant input, scale ~1e-40) reads 1e41 for an error the bound allows, and says
nothing about the verdict. A difference without a ratio (NaN, infinity, a shape) is drawn as a
cross at the top of its panel.

The SVG goes into an ``<img>`` as a data URI, so nothing in it (adapter or case names come
from results files) can run in the page.

Drawing is most of a render's time (a second or more a figure), so figures are cached by content:
``PlotCache`` keeps each finished data URI under a hash of what was plotted, the code that plots
it and the matplotlib version. A re-render of unchanged results draws nothing; a changed sweep
redraws that figure only. ``bnparity report`` keeps the cache beside its output
(``.bnparity-cache/plots/``); ``cache=None`` draws every figure.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from harness.report.analysis import orders_apart
from harness.report.model import Model, headline, sweep_x
from harness.schema import Quantity

PANELS = (("y (train)", (Quantity.Y,)), ("running statistics", (Quantity.RUNNING_MEAN, Quantity.RUNNING_VAR)),
          ("gradients (train)", (Quantity.DX, Quantity.DGAMMA, Quantity.DBETA)),
          ("eval", tuple(Quantity.of_phase("eval"))))
FLOOR = 1e-3  # error/bound below this (exact results included) is drawn on this line
SAME_BELOW = 0.1  # another environment's line is drawn again only where its error/bound is 10x apart, above this


class PlotCache:
    """Finished figures (data URIs) on disk, keyed by a hash of what they show and how they are drawn.

    The key covers the plotted data, the source of the module that draws it (``code``: a change to a
    figure's code redraws it) and the matplotlib version. Entries are written atomically; an entry
    that cannot be read is drawn again, and a cache that cannot be written costs only the speed.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.hits = 0
        self.drawn = 0

    def key(self, data: Any, code: str) -> str:
        import matplotlib

        h = hashlib.sha256()
        h.update(Path(code).read_bytes())
        h.update(matplotlib.__version__.encode())
        h.update(json.dumps(data, sort_keys=True, default=repr, allow_nan=True).encode())
        return h.hexdigest()[:32]

    def get(self, data: Any, code: str, draw: Callable[[], str]) -> str:
        """The figure for ``data``: from the cache, or ``draw()`` and kept."""
        path = self.root / f"{self.key(data, code)}.uri"
        try:
            uri = path.read_text(encoding="ascii")
            if uri.startswith("data:image/svg+xml;base64,"):
                self.hits += 1
                return uri
        except (OSError, UnicodeDecodeError):
            pass
        uri = draw()
        self.drawn += 1
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(uri, encoding="ascii")
            os.replace(tmp, path)
        except OSError:
            pass
        return uri


def cached(cache: PlotCache | None, data: Any, code: str, draw: Callable[[], str]) -> str:
    """``draw()``, or its cached result when ``cache`` holds one for ``data`` drawn by ``code``."""
    return draw() if cache is None else cache.get(data, code, draw)


def _varying_index(values: list[Any]) -> int | None:
    """For list-valued sweeps (a shape): the one position that changes, if there is one."""
    lists = [v for v in values if isinstance(v, list)]
    if not lists:
        return None
    n = min(len(v) for v in lists)
    moving = [i for i in range(n) if len({repr(v[i]) for v in lists}) > 1]
    return moving[0] if moving else 0


def sweep_series(model: Model) -> dict[str, dict[str, Any]]:
    """{sweep name: {param, label, series: {(env, adapter): [(x, {panel: (ratio, differs, no_ratio)}, verdict)]}}}.

    ``ratio``: the panel's worst error/bound (None when there is none); ``differs``: the record at
    that ratio differs from the oracle (ringed); ``no_ratio``: some record of the panel differs
    without a ratio (NaN, infinity, shape, missing: a cross at the top)."""
    sweeps: dict[str, dict[str, Any]] = {}
    members: dict[str, list] = defaultdict(list)
    for info in model.cases.values():
        sw = info.sweep
        if sw:
            members[str(sw["name"])].append((info, sw))
    for name, items in sorted(members.items()):
        values = [sw.get("value") for _, sw in items]
        vi = _varying_index(values)
        param = str(items[0][1].get("param", name))
        label = f"{param}[{vi}]" if vi is not None else param
        series: dict[tuple[str, str], list] = defaultdict(list)
        for info, sw in items:
            x = sweep_x(sw.get("value"), vi)
            if x is None or not math.isfinite(x):
                continue
            for env, adapter in model.columns:
                cell = model.cells.get((env, info.name, adapter))
                if cell is None:
                    continue
                point: dict[str, tuple[float | None, bool, bool]] = {}
                for panel, qs in PANELS:
                    rs = [r for r in cell.results if r.quantity in qs]
                    hl = headline(rs)
                    ratio = None if hl.ratio is None or math.isnan(hl.ratio) else hl.ratio
                    no_ratio = hl.kind is not None or (hl.ratio is not None and math.isnan(hl.ratio))
                    if ratio is not None or no_ratio:  # ringed: the record at the ratio differs from the oracle
                        point[panel] = (ratio, hl.over, no_ratio)
                series[(env, adapter)].append((x, point, cell.verdict))
        if series:
            series, same = _drop_repeats(dict(series), [e.key for e in model.envs])
            sweeps[name] = {"param": param, "label": label, "series": series, "cases": len(items), "same": same}
    return sweeps


def _drop_repeats(series: dict[tuple[str, str], list], env_order: list[str]) -> tuple[dict, list[str]]:
    """Keep an adapter's line from a later environment only where it tells something new.

    The first environment holding the adapter draws its line; another environment's line is kept
    when some point's error/bound is 10x apart (at or above a tenth of the bound), or differs from
    the oracle where the first did not (or the reverse). The dropped ones are named in the caption.
    """

    def points(pts):
        return {(x, panel): v for x, p, _ in pts for panel, v in p.items()}

    def differs(a: dict, b: dict) -> bool:
        return a.keys() != b.keys() or any(a[k][1:] != b[k][1:] or orders_apart(a[k][0], b[k][0], SAME_BELOW)
                                           for k in a)

    first: dict[str, dict] = {}
    kept: dict[tuple[str, str], list] = {}
    same: list[str] = []
    for env, adapter in sorted(series, key=lambda k: (env_order.index(k[0]) if k[0] in env_order else 99, k[1])):
        pts = series[(env, adapter)]
        if adapter not in first:
            first[adapter] = points(pts)
            kept[(env, adapter)] = pts
        elif differs(points(pts), first[adapter]):
            kept[(env, adapter)] = pts
        else:
            same.append(f"{adapter} @ {env}")
    return kept, same


def figure_svg(name: str, sweep: dict[str, Any], multi_env: bool) -> str:
    """One figure per sweep: a panel per quantity group, a line per adapter (and environment)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import rcParams
    from matplotlib.ticker import LogLocator, NullLocator

    rcParams["svg.fonttype"] = "none"  # text stays text: smaller and searchable
    rcParams["svg.hashsalt"] = "bnparity"  # deterministic ids
    series = sweep["series"]
    xs = sorted({x for pts in series.values() for x, _, _ in pts})
    adapters = sorted({a for _, a in series})
    # no pure red among the lines: red rings mark the points that differ from the oracle
    palette = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (6, 7)]
    if len(adapters) <= 9:
        palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 3]
    colour = {a: palette[i % len(palette)] for i, a in enumerate(adapters)}
    styles = ["-", "--", ":", "-."]
    line_no: dict[tuple[str, str], int] = {}
    for env, adapter in series:  # series keeps the environments' order
        line_no[(env, adapter)] = sum(1 for e, a in line_no if a == adapter)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(3.3 * len(PANELS), 3.1), sharey=True, squeeze=False)
    handles = {}
    marker = "o" if len(series) <= 12 else None  # dozens of lines: markers would double the SVG and hide the lines
    for ax, (panel, _) in zip(axes[0], PANELS):
        for (env, adapter), pts in sorted(series.items()):
            got = sorted((x, p[panel]) for x, p, _ in pts if panel in p)
            if not got:
                continue
            ratios = [(x, max(u, FLOOR), d) for x, (u, d, _) in got if u is not None]
            # an adapter's first line is solid; its lines from other environments get the other styles
            ls = styles[line_no[(env, adapter)] % len(styles)]
            label = f"{adapter} @ {env}" if multi_env else adapter
            if ratios:
                (ln,) = ax.plot([x for x, _, _ in ratios], [y for _, y, _ in ratios], ls, marker=marker, ms=3.5,
                                lw=1.3, color=colour[adapter], label=label)
                handles[label] = ln
            bad = [(x, y) for x, y, d in ratios if d]
            if bad:
                ax.plot(*zip(*bad), "o", ms=9, mfc="none", mec="#d62728", mew=1.4)
            off = [x for x, (_, _, no_ratio) in got if no_ratio]
            if off:  # no ratio (NaN, infinity, shape): a cross at the top of the panel
                (cross,) = ax.plot(off, [0.97] * len(off), "x", ms=7, mew=1.6, color=colour[adapter],
                                   transform=ax.get_xaxis_transform(), clip_on=False)
                handles.setdefault(label, cross)
        ax.set_title(panel, fontsize=9)
        ax.set_yscale("log")
        if xs and min(xs) > 0:
            ax.set_xscale("log")
        elif xs and max(abs(x) for x in xs) > 0:
            pos = [abs(x) for x in xs if x != 0]
            ax.set_xscale("symlog", linthresh=min(pos))
            if min(xs) >= 0:  # a sweep from 0 up: no negative half-axis
                ax.set_xlim(left=-0.05 * min(pos), right=max(xs) * 1.3)
        ax.axhline(1.0, color="#888", lw=0.6, ls=":")
        ax.set_xlabel(sweep["label"], fontsize=8)
        ax.tick_params(labelsize=7)
        # minor ticks on log axes cost seconds of layout and most of the SVG's bytes
        ax.yaxis.set_major_locator(LogLocator(numticks=7))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(True, which="major", alpha=0.25)
    axes[0][0].set_ylabel("error / bound (worst element)", fontsize=8)
    ncol = 6
    rows = math.ceil(len(handles) / ncol) if handles else 0
    legend_h = 0.18 * rows  # inches
    fig.set_size_inches(3.3 * len(PANELS), 3.1 + legend_h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(ncol, len(handles)),
                   fontsize=7, frameon=False)
    bottom = (0.55 + legend_h) / (3.1 + legend_h)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.9, bottom=bottom, wspace=0.08)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return buf.getvalue()


def _uri(name: str, sweep: dict[str, Any], multi_env: bool) -> str:
    svg = figure_svg(name, sweep, multi_env)
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)  # matplotlib echoes every label's source in a comment
    svg = re.sub(r"\s*\n\s*", " ", svg).replace("> <", "><")
    svg = re.sub(r"(\d\.\d\d)\d+", r"\1", svg)  # coordinates in pt: hundredths are plenty
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def sweep_plots(model: Model, cache: PlotCache | None = None) -> list[dict[str, Any]]:
    """[{name, param, label, uri, cases}] for every sweep in the results (empty without matplotlib).
    ``cache``: figures whose data did not change are read back instead of drawn."""
    sweeps = sweep_series(model)
    if not sweeps:
        return []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return []
    multi_env = len(model.envs) > 1
    out = []
    for name, sw in sweeps.items():
        data = [name, multi_env, sw["label"], sorted([list(k), v] for k, v in sw["series"].items())]
        uri = cached(cache, data, __file__, partial(_uri, name, sw, multi_env))
        by_env: dict[str, int] = defaultdict(int)
        for label in sw["same"]:
            by_env[label.rsplit(" @ ", 1)[-1]] += 1
        out.append({"name": name, "param": sw["param"], "label": sw["label"], "uri": uri, "cases": sw["cases"],
                    "same": sw["same"], "same_by_env": sorted(by_env.items())})
    return out
