"""What the parity run prints at the end: the cases x adapters matrix, verdict counts, time per adapter."""

from __future__ import annotations

from collections import Counter, defaultdict

from harness.schema import Verdict
from harness.session import ParitySession


def timings(state: ParitySession) -> dict[str, dict[str, float]]:
    """Per adapter: worker starts, import, compile and compute seconds, harness overhead."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for c in state.cells:
        t = out[c.adapter]
        w, info, wall = c.worker, c.info, c.wall_s or 0.0
        t["cells"] += 1
        if "import_s" in w:  # a worker's first case: spawn + import + this case
            t["worker_starts"] += 1
            t["import_s"] += w["import_s"]
            t["startup_s"] += max(wall - w["import_s"] - info.get("compute_s", 0.0), 0.0)
        t["compute_s"] += info.get("compute_s", 0.0)
        t["compile_s"] += info.get("compile_s", 0.0)
        t["compiles"] += info.get("compiles", 0)
        t["compile_cache_hits"] += info.get("compile_cache_hits", 0)
        t["worker_wall_s"] += wall
    return {a: dict(v) for a, v in out.items()}


def summary(state: ParitySession, tr) -> None:
    if not state.matrix:
        return
    tr.section("bnparity: cases x adapters (worst verdict per cell)")
    cases = sorted({c for c, _ in state.matrix})
    adapters = sorted({a for _, a in state.matrix})
    width = max(len(c) for c in cases)
    cols = [max(len(a), 3) for a in adapters]
    tr.write_line(" " * width + "  " + "  ".join(a.rjust(w) for a, w in zip(adapters, cols)))
    totals: Counter = Counter()
    for c in cases:
        row = []
        for a, w in zip(adapters, cols):
            cnt = state.matrix.get((c, a))
            if not cnt:
                row.append(" " * (w - 1) + ".")
                continue
            totals.update(cnt)
            row.append(Verdict.worst(cnt).info.letter.rjust(w))
        tr.write_line(c.ljust(width) + "  " + "  ".join(row))
    tr.write_line("legend: " + ", ".join(f"{v.info.letter}={v}" for v in Verdict.ordered()) + ", .=not run")
    tr.write_line("records by verdict: " + ", ".join(f"{v}={n}" for v, n in sorted(totals.items())))
    t = timings(state)
    if t:
        tr.write_line("time per adapter (s): " + "; ".join(
            f"{a}: {int(v.get('worker_starts', 0))} worker start(s) {v.get('startup_s', 0):.1f}, "
            f"import {v.get('import_s', 0):.1f}, "
            f"compute {v.get('compute_s', 0):.2f}, compile {v.get('compile_s', 0):.2f} "
            f"({int(v.get('compiles', 0))}x"
            + (f", {int(v['compile_cache_hits'])} from the cache" if v.get("compile_cache_hits") else "")
            + f"), worker round-trips {v.get('worker_wall_s', 0):.2f}"
            for a, v in sorted(t.items())))
    if state.writer is not None:
        tr.write_line(f"results: {state.writer.path}")
    if state.html is not None:
        tr.write_line(f"report: {state.html}")
    if state.html_error:
        tr.write_line(f"report NOT written: {state.html_error}", red=True)
