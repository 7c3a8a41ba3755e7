"""The report's benchmark section, from ``bench.jsonl`` files written by ``bnparity bench``.

Per configuration, a bar chart of the median time per adapter and variant (whiskers: the
inter-quartile range), a plot of achieved bandwidth as a fraction of the measured copy
bandwidth against tensor size, and the raw figures; the measured machine bandwidth on top.
Figures are matplotlib SVGs embedded as ``<img>`` data URIs, like the sweep plots, and cached by
content the same way (``harness.report.plots.PlotCache``); without them (``plots=False``, or no
matplotlib) the section keeps the machine and the raw figures.
"""

from __future__ import annotations

import base64
import importlib.util
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.report.plots import PlotCache, cached
from harness.results import read
from harness.schema import Bandwidth, Benchmark, Header, dumps

MODES = ("train_fwd", "train_fwd_bwd", "eval_fwd")


def find(paths: Iterable[Path | str]) -> list[Path]:
    """bench.jsonl files named directly, or in DIR/ or DIR/*/ (next to results.jsonl)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name.endswith("bench.jsonl"):
            out.append(p)
        elif p.is_file() and (p.parent / "bench.jsonl").is_file():  # beside a results.jsonl
            out.append(p.parent / "bench.jsonl")
        elif p.is_dir():
            out.extend(sorted({*p.glob("bench.jsonl"), *p.glob("*/bench.jsonl")}))
    return out


@dataclass
class Run:
    """One bench.jsonl file."""

    path: Path
    env: str
    header: Header | None
    bandwidth: list[Bandwidth] = field(default_factory=list)
    rows: list[Benchmark] = field(default_factory=list)


def load(paths: Iterable[Path | str]) -> list[Run]:
    """One entry per file: its header, bandwidth records and benchmark rows."""
    runs = []
    for path in find(paths):
        rf = read(path)
        runs.append(Run(path, rf.header.env if rf.header else path.parent.name, rf.header,
                        [r for r in rf.records if isinstance(r, Bandwidth)],
                        [r for r in rf.records if isinstance(r, Benchmark)]))
    return runs


def _svg(plt, fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue().encode()).decode()


def _label(r: Benchmark, multi_env: bool) -> str:
    lab = f"{r.adapter} {r.variant}" + (f" [{r.device}]" if (r.device or "cpu") != "cpu" else "")
    return f"{lab} ({r.env})" if multi_env else lab


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def section(paths: Iterable[Path | str], plots: bool = True, cache: PlotCache | None = None) -> dict[str, Any] | None:
    """Everything the template shows, or None when there is no benchmark file. ``plots=False``: no figures;
    ``cache``: figures of unchanged rows are read back instead of drawn."""
    runs = load(paths)
    if not runs:
        return None
    multi_env = len({run.env for run in runs}) > 1
    rows = [r for run in runs for r in run.rows]
    ok = [r for r in rows if r.status == "ok"]
    machines = [{"env": run.env, **((run.header.machine if run.header else None) or {}),
                 "bandwidth": sorted(run.bandwidth, key=lambda b: b.size_bytes)} for run in runs]
    table = sorted(rows, key=lambda r: (r.case or "", r.mode or "", r.median_s or 1e9))
    out = {"machines": machines, "charts": [], "fraction_plot": None, "table": table,
           "skipped": [r for r in rows if r.status != "ok"], "multi_env": multi_env}
    if plots and ok and importlib.util.find_spec("matplotlib") is not None:
        out["charts"] = _charts(ok, multi_env, cache)
        out["fraction_plot"] = cached(cache, ["fraction", multi_env, [dumps(r) for r in ok]], __file__,
                                      lambda: _fraction_plot(_matplotlib(), ok, multi_env))
    return out


def _charts(ok: list[Benchmark], multi_env: bool, cache: PlotCache | None) -> list[dict[str, Any]]:
    """Per configuration: median time per adapter and variant, one panel per mode."""
    by_case: dict[str, list[Benchmark]] = defaultdict(list)
    for r in ok:
        by_case[r.case or ""].append(r)
    charts = []
    for case, rs in sorted(by_case.items()):
        uri = cached(cache, ["chart", case, multi_env, [dumps(r) for r in rs]], __file__,
                     lambda case=case, rs=rs: _chart(_matplotlib(), case, rs, multi_env))
        best = {m: min((r for r in rs if r.mode == m), key=lambda r: r.median_s, default=None) for m in MODES}
        charts.append({"case": case, "uri": uri, "best": best})
    return charts


def _chart(plt, case: str, rs: list[Benchmark], multi_env: bool) -> str:
    labels = sorted({_label(r, multi_env) for r in rs})
    fig, axes = plt.subplots(1, len(MODES), figsize=(4.2 * len(MODES), 0.32 * len(labels) + 1.4), sharey=True)
    for ax, mode in zip(axes, MODES):
        pick = {_label(r, multi_env): r for r in rs if r.mode == mode}
        ys = range(len(labels))
        med = [pick[lab].median_s * 1e3 if lab in pick else 0 for lab in labels]
        lo = [(pick[lab].median_s - pick[lab].q1_s) * 1e3 if lab in pick else 0 for lab in labels]
        hi = [(pick[lab].q3_s - pick[lab].median_s) * 1e3 if lab in pick else 0 for lab in labels]
        colors = ["#c0504d" if lab in pick and not pick[lab].stable else "#4f81bd" for lab in labels]
        ax.barh(list(ys), med, xerr=[lo, hi], color=colors, capsize=2)
        ax.set_title(mode, fontsize=9)
        ax.set_xlabel("median ms (IQR whiskers; red: CV > 3%)", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(list(range(len(labels))), labels)
    fig.suptitle(case, fontsize=10)
    return _svg(plt, fig)


def _fraction_plot(plt, ok: list[Benchmark], multi_env: bool) -> str:
    """Achieved bandwidth as a fraction of the measured copy bandwidth, against the bytes a call moves."""
    fig, axes = plt.subplots(1, len(MODES), figsize=(4.2 * len(MODES), 3.4), sharey=True)
    for ax, mode in zip(axes, MODES):
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for r in ok:
            if r.mode == mode and r.bw_fraction is not None and r.bytes is not None:
                series[_label(r, multi_env)].append((r.bytes, r.bw_fraction))
        ax.set_prop_cycle(color=plt.cm.tab20.colors)  # one colour per adapter/variant (up to 20)
        for lab, pts in sorted(series.items()):
            # several rows share a size (dtypes, layouts): every row is a dot, the line joins the best per size
            best: dict[int, float] = {}
            for size, frac in pts:
                best[size] = max(frac, best.get(size, 0.0))
            sizes = sorted(best)
            (line,) = ax.plot(sizes, [best[b] for b in sizes], lw=1, label=lab)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", ms=2.5, alpha=0.6, color=line.get_color())
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(mode, fontsize=9)
        ax.set_xlabel("bytes moved at minimum per call", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("fraction of measured copy bandwidth (line: best row per size)", fontsize=7)
    axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _svg(plt, fig)
