"""What the parity run prints at the end: the cases x adapters matrix, verdict counts, time per adapter."""

from __future__ import annotations

from collections import Counter, defaultdict

from harness.schema import Verdict
from harness.session import ParitySession


def timings(state: ParitySession) -> dict[str, dict[str, float]]:
    """Per adapter, seconds: what the cases cost in the worker (``case_s``), starting workers and importing
    the framework, and the rest of the round trips (moving arrays between the processes).

    ``worker_wall_s`` (the round trips) = ``case_s`` + ``startup_s`` + ``import_s`` + ``overhead_s`` +
    ``unanswered_s``: a worker's first case pays its start (``startup_s``: spawning it, the first
    transfer) and the import (``import_s``), every case pays the transfers (``overhead_s``), and a case
    that crashed, timed out or whose adapter failed to set up has no ``case_s`` (its whole round trip
    is ``unanswered_s``).
    ``compute_s`` is the adapter's own measure of its run (``info``), ``compile_s`` part of it.
    """
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for c in state.cells:
        t = out[c.adapter]
        w, info, wall = c.worker, c.info, c.wall_s or 0.0
        t["cells"] += 1
        t["worker_wall_s"] += wall
        t["compute_s"] += info.get("compute_s", 0.0)
        t["compile_s"] += info.get("compile_s", 0.0)
        t["compiles"] += info.get("compiles", 0)
        t["compile_cache_hits"] += info.get("compile_cache_hits", 0)
        if c.case_s is None:
            t["unanswered_s"] += wall
            continue
        t["case_s"] += c.case_s
        rest = max(wall - c.case_s, 0.0)
        if "import_s" in w:  # a worker's first case: spawn + import + this case
            t["worker_starts"] += 1
            t["import_s"] += w["import_s"]
            t["startup_s"] += max(rest - w["import_s"], 0.0)
        else:
            t["overhead_s"] += rest
    return {a: dict(v) for a, v in out.items()}


def timing_line(adapter: str, v: dict[str, float]) -> str:
    """One adapter's time, cases first: 'torch: 93 cases 12.31 s in the worker (compile ...), ...'."""
    compiles = int(v.get("compiles", 0))
    compile_ = (f" (compile {v.get('compile_s', 0):.2f} s, {compiles}x"
                + (f", {int(v['compile_cache_hits'])} from the cache" if v.get("compile_cache_hits") else "") + ")"
                if compiles or v.get("compile_cache_hits") else "")
    lost = (f", {v['unanswered_s']:.1f} s in cases that crashed, timed out or failed to set up"
            if v.get("unanswered_s") else "")
    return (f"{adapter}: {int(v.get('cells', 0))} cases {v.get('case_s', 0):.2f} s in the worker{compile_}, "
            f"{int(v.get('worker_starts', 0))} worker start(s) {v.get('startup_s', 0):.1f} s + import "
            f"{v.get('import_s', 0):.1f} s, transfers {v.get('overhead_s', 0):.2f} s{lost}; "
            f"round trips {v.get('worker_wall_s', 0):.2f} s")


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
        tr.write_line("time per adapter:")
        for a, v in sorted(t.items()):
            tr.write_line("  " + timing_line(a, v))
    if state.writer is not None:
        tr.write_line(f"results: {state.writer.path}")
    if state.html is not None:
        tr.write_line(f"report: {state.html}")
    if state.html_error:
        tr.write_line(f"report NOT written: {state.html_error}", red=True)
