"""Paths side by side: each framework's eager adapter beside its compiled, graph, exported and converted paths.

Every path is judged against the oracle like any adapter; this view answers the porting question "it matches in
eager, does it still match after ``torch.compile`` / XLA / export?" by comparing each path with the eager adapter it
starts from (the cell record's ``source``), case by case, in the same environment:

* how many cases each ran, and how the verdicts pair up: both within the bound, the path fails where eager does not
  (a difference the path introduces), eager fails where the path does not, both fail;
* how many of the quantities compared on both are bit-identical (the results' digests): a compiled path that
  reorders a reduction differs in the last bits and still passes; an identical digest says the path ran the same
  arithmetic;
* the worst error over its bound on each side, and the cases where the two differ in verdict, with the quantities
  that fail on either side;
* what the path costs beside eager on the same cases: the workers' own time (``info["compute_s"]``), of it the
  compile or export time (``info["compile_s"]``) and the programs compiled or exported (``info["compiles"]``).

The page's "Paths" section shows it; ``markdown`` writes it for an issue or a release note (``bnparity report
--paths FILE``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from harness.report.model import Model, ReportCell
from harness.report.text import fmt_ratio
from harness.schema import Quantity, Verdict


@dataclass
class CaseDiff:
    """A case where the path and its eager source end differently."""

    case: str
    eager: Verdict
    path: Verdict
    eager_ratio: float | None
    path_ratio: float | None
    failing: list[str]  # labels of the quantities that fail on the path (or on eager, where only eager fails)


@dataclass
class PathRow:
    """One path adapter against its eager source, in one environment."""

    adapter: str
    path: str
    both_ok: int = 0
    path_fails: int = 0  # the path fails where eager is within the bound (or known): the path's own difference
    eager_fails: int = 0
    both_fail: int = 0
    skipped: int = 0  # cases the path skipped where eager ran
    identical: int = 0  # quantities with the same digest on both sides
    compared: int = 0  # quantities with a digest on both sides
    eager_worst: float | None = None
    path_worst: float | None = None
    omits: dict[str, str] = field(default_factory=dict)
    diffs: list[CaseDiff] = field(default_factory=list)
    compute_s: float = 0.0  # the path's time in its worker on the cases both ran (info["compute_s"])
    compile_s: float = 0.0  # of it, compiling or exporting (info["compile_s"])
    compiles: int = 0
    eager_compute_s: float = 0.0  # the eager source's, on the same cases

    @property
    def cases(self) -> int:
        return self.both_ok + self.path_fails + self.eager_fails + self.both_fail


@dataclass
class PathGroup:
    env: str
    source: str
    rows: list[PathRow]


def _ratio(cell: ReportCell) -> float | None:
    r = cell.headline().ratio
    return None if r is None or math.isnan(r) else r


def _worst(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _failing(cell: ReportCell) -> list[str]:
    return [r.quantity.label(r.step) if r.quantity else "?" for r in cell.results if r.verdict.fails_run]


def _digests(cell: ReportCell) -> dict[tuple[Quantity, int | None], str]:
    return {(r.quantity, r.step): r.digest for r in cell.results if r.digest and r.quantity is not None}


def path_groups(model: Model) -> list[PathGroup]:
    """Per environment and eager source adapter, every path of it that has cells there."""
    out = []
    for env in model.envs:
        by_source: dict[str, list[tuple[str, str]]] = {}
        for adapter in env.adapters:
            rec = next((c.record for (e, _, a), c in model.cells.items()
                        if e == env.key and a == adapter and c.record is not None), None)
            if rec is not None and rec.path != "eager" and rec.source:
                by_source.setdefault(rec.source, []).append((adapter, rec.path))
        for source, paths in sorted(by_source.items()):
            rows = [_row(model, env.key, source, adapter, path) for adapter, path in paths]
            out.append(PathGroup(env.key, source, rows))
    return out


def _row(model: Model, env: str, source: str, adapter: str, path: str) -> PathRow:
    row = PathRow(adapter, path)
    for case in model.cases:
        pc, ec = model.cells.get((env, case, adapter)), model.cells.get((env, case, source))
        if pc is None or ec is None or ec.verdict is Verdict.SKIP:
            continue
        if pc.verdict is Verdict.SKIP:
            row.skipped += 1
            continue
        if pc.record is not None and pc.record.omits:
            row.omits.update(pc.record.omits)
        p_bad, e_bad = pc.verdict.fails_run, ec.verdict.fails_run
        if p_bad and e_bad:
            row.both_fail += 1
        elif p_bad:
            row.path_fails += 1
        elif e_bad:
            row.eager_fails += 1
        else:
            row.both_ok += 1
        pinfo = pc.record.info if pc.record is not None else {}
        row.compute_s += pinfo.get("compute_s", 0.0)
        row.compile_s += pinfo.get("compile_s", 0.0)
        row.compiles += pinfo.get("compiles", 0)
        row.eager_compute_s += ec.record.info.get("compute_s", 0.0) if ec.record is not None else 0.0
        pr, er = _ratio(pc), _ratio(ec)
        row.path_worst, row.eager_worst = _worst(row.path_worst, pr), _worst(row.eager_worst, er)
        pd, ed = _digests(pc), _digests(ec)
        common = pd.keys() & ed.keys()
        row.compared += len(common)
        row.identical += sum(pd[k] == ed[k] for k in common)
        if p_bad != e_bad:
            row.diffs.append(CaseDiff(case, ec.verdict, pc.verdict, er, pr, _failing(pc if p_bad else ec)))
    return row


def _fmt(r: float | None) -> str:
    return fmt_ratio(r) if r is not None else ""


def identical_text(row: PathRow) -> str:
    return f"{row.identical}/{row.compared}" if row.compared else ""


def cost_text(row: PathRow) -> str:
    """'61.5 s (compile 58.8 s, 107x); eager 0.9 s': the path's time in its worker beside its source's."""
    if not row.cases:
        return ""
    compiled = f" (compile {_secs(row.compile_s)}, {row.compiles}x)" if row.compiles else ""
    return f"{_secs(row.compute_s)}{compiled}; eager {_secs(row.eager_compute_s)}"


def _secs(s: float) -> str:
    """Seconds to a tenth, or to a hundredth under one (an eager adapter's cases take milliseconds each)."""
    return f"{s:.1f} s" if s >= 1 else f"{s:.2f} s"


def markdown(groups: list[PathGroup]) -> str:
    """The paths view as Markdown: one table per (environment, eager adapter), then the cases whose verdicts part."""
    parts = []
    head = ["path adapter", "path", "cases", "both ok", "path fails, eager ok", "eager fails, path ok", "both fail",
            "skipped by path", "bit-identical quantities", "worst error/bound (eager / path)", "time in the worker",
            "omits"]
    for g in groups:
        lines = [f"### {g.source} and its paths ({g.env})", "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]
        for r in g.rows:
            cols = [r.adapter, r.path, str(r.cases), str(r.both_ok), str(r.path_fails), str(r.eager_fails),
                    str(r.both_fail), str(r.skipped), identical_text(r),
                    f"{_fmt(r.eager_worst)} / {_fmt(r.path_worst)}", cost_text(r),
                    ", ".join(sorted(r.omits))]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |")
        diffs = [(r.adapter, d) for r in g.rows for d in r.diffs]
        if diffs:
            lines += ["", "| path adapter | case | eager | path | failing quantities |", "|---|---|---|---|---|"]
            for adapter, d in diffs:
                more = " ..." if len(d.failing) > 6 else ""
                lines.append(f"| {adapter} | {d.case} | {d.eager} {_fmt(d.eager_ratio)} | {d.path} "
                             f"{_fmt(d.path_ratio)} | {', '.join(d.failing[:6])}{more} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n" if parts else "No compiled, graph, exported or converted paths in these results.\n"
