"""What the report infers from the records: where a cell's discrepancy starts, and drift between environments.

Both read the model only (``harness.report.model``): no oracle, no framework.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from harness.report.model import Model, ReportCell
from harness.report.text import fmt_ratio, fmt_ulp, fmt_value
from harness.schema import Quantity, Result, Verdict

_STATS = {Quantity.RUNNING_MEAN, Quantity.RUNNING_VAR}
_GRADIENTS = {Quantity.DX, Quantity.DGAMMA, Quantity.DBETA}
_ENDED = (Verdict.RAISED, Verdict.CRASHED, Verdict.TIMEOUT)  # the call itself did not return values
MESSAGE_CHARS = 300  # of an exception message quoted in a sentence


@dataclass(frozen=True)
class Divergence:
    """The first recorded quantity that differs, in computation order, and what that implies."""

    step: int | None  # the call's index in the case's calls; None: the outcome of the run
    quantity: Quantity
    text: str
    also: tuple[str, ...] = ()  # other quantities differing at the same step
    later: tuple[str, ...] = ()  # quantities differing downstream

    @property
    def stage(self) -> str:
        return self.quantity.stage


def _inference(bad: set[Quantity], tracked: bool, step: int) -> list[str]:
    """What the pattern of differing quantities at the first differing train step says about the stages."""
    notes = []
    ok_y = Quantity.Y not in bad
    if not tracked:
        notes.append("the case does not track running statistics, so the batch statistics are seen only "
                     "through y and the gradients")
    if Quantity.RUNNING_MEAN in bad and ok_y:
        notes.append("y agrees, so the batch mean used to normalize is right: the running-mean update "
                     "(momentum) is what differs")
    elif Quantity.RUNNING_VAR in bad and Quantity.RUNNING_MEAN not in bad and ok_y:
        notes.append("y and running_mean agree, so the batch variance used to normalize is right: what is "
                     "stored differs (variance estimator biased vs Bessel-corrected, or momentum)")
    elif bad & _STATS and not ok_y:
        notes.append("the batch statistics and y both differ: the statistics themselves are computed "
                     "differently (precision, overflow, reduction order)")
    elif not ok_y and tracked:
        notes.append("the running statistics agree but y differs: the normalization itself differs "
                     "(eps, inverse square root, rounding of the output)")
    elif bad <= _GRADIENTS:
        notes.append("the forward pass agrees; the backward pass is the first to differ")
    if step > 0:
        notes.append(f"calls 0..{step - 1} agree: the difference appears after {step} call(s) "
                     "(compounding through the running statistics or accumulated rounding)")
    return notes


def first_divergence(cell: ReportCell) -> Divergence | None:
    """Which recorded quantity differs first (train steps in order, then eval), and what that implies.

    Per training step the stages are ordered as the computation runs: the batch mean (seen in
    running_mean), the batch variance (running_var), the output y, then the gradients. Only
    recorded quantities are used: a statement like "the batch mean is right" is inferred from y
    agreeing, and says so.
    """
    out = cell.outcome
    if out is not None and out.verdict in _ENDED:
        stage = out.exception_stage or ("the call" if out.verdict == Verdict.RAISED else "the worker")
        what = (f"{out.exception_type}: {(out.exception_message or '')[:MESSAGE_CHARS]}" if out.exception_type
                else out.message[:MESSAGE_CHARS])
        return Divergence(None, Quantity.OUTCOME, f"{out.verdict} during {stage}: {what}")
    diff = [r for r in cell.results if r.verdict.differs and r.quantity not in (None, Quantity.OUTCOME)]
    if not diff:
        return None
    stepped = [r for r in diff if r.step is not None]
    step: int | None = min((r.step for r in stepped), default=None)  # type: ignore[type-var]
    at = (sorted((r for r in stepped if r.step == step), key=lambda r: r.quantity.order) if stepped
          else sorted(diff, key=lambda r: r.quantity.order))
    first: Result = at[0]
    q = first.quantity
    where = q.value if step is None else f"call {step} ({q.phase})"
    if q.phase == "train":
        tracked = any(r.quantity in _STATS for r in cell.results)
        notes = _inference({r.quantity for r in at}, tracked, step or 0)
    elif q.is_state:
        notes = ["the eval call changed the running statistics, which an eval call must leave as they were"]
    elif not any(r.quantity.phase == "train" for r in diff):
        notes = ["every training call agrees: only eval mode differs (it normalizes with the running "
                 "statistics and the eval-mode eps)"]
    else:
        notes = []
    names = [r.quantity.value for r in at]
    idx = first.worst_index
    kind = first.mismatch_kind
    measure = (kind.headline if kind is not None and not kind.bounded
               else f"error/bound {fmt_ratio(first.error_ratio, first.verdict.differs) or 'n/a'}")
    detail = (f"{q}{list(idx) if idx else ''}: expected {fmt_value(first.expected)}, observed "
              f"{fmt_value(first.observed)} ({measure}, {fmt_ulp(first.max_ulp_err) or 'n/a'} ulp, {first.verdict})")
    later = sorted({r.quantity.value for r in diff} - set(names))
    return Divergence(step, q, "; ".join([f"first differs at {where}: {q.stage} — {detail}", *notes]),
                      tuple(names[1:]), tuple(later))


def _name(r: Result) -> str:
    """The quantity, or for a stale ledger record the quantity globs its entry covers."""
    return r.quantity.value if r.quantity else "|".join(r.covers or [])


# -- drift between environments ------------------------------------------------------------------

def orders_apart(a: float | None, b: float | None, floor: float = 1.0) -> bool:
    """Do two errors differ by a factor of 10 or more? Everything below ``floor`` counts as ``floor``
    (ULPs: everything within one ULP counts as 1)."""
    if a is None or b is None:
        return False
    if math.isinf(a) or math.isinf(b):
        return a != b
    return abs(math.log10(max(a, floor)) - math.log10(max(b, floor))) >= 1.0


@dataclass(frozen=True)
class Drift:
    """One (case, adapter) whose verdict or error magnitude differs between environments."""

    case: str
    adapter: str
    what: str  # "verdict", "error magnitude" or "ledger only"
    cells: dict[str, ReportCell]  # env key -> the cell there
    changed: tuple[str, ...]  # quantities whose verdict differs between the environments

    @property
    def ledger_only(self) -> bool:
        """The framework did the same; only the ledger's reading of it differs (``ledger_only``)."""
        return self.what == "ledger only"


_LEDGER_SWAP = {Verdict.KNOWN, Verdict.FAIL}


def ledger_only(per_env: dict[str, ReportCell]) -> bool:
    """Do the cells' verdicts differ only through the ledger, the observed bits being the same?

    True when every quantity (and step) is recorded in every environment, and each one whose
    verdict differs differs only as ``known`` <-> ``fail`` with the same array ``digest`` everywhere:
    the same observed bits, judged by a ledger entry whose version scope covers one environment
    and not the other. Stale records are the ledger's own and are left out. A changed digest, an
    outcome that changed (raise vs return), a quantity recorded in one environment only, or a record
    without a digest (an older results file) is a behaviour change.
    """
    keyed: dict[tuple[Quantity, int | None], list[Result]] = defaultdict(list)
    for c in per_env.values():
        for r in c.results:
            if r.quantity is not None:
                keyed[(r.quantity, r.step)].append(r)
    for rs in keyed.values():
        if len(rs) != len(per_env):
            return False
        verdicts = {r.verdict for r in rs}
        if len(verdicts) == 1:
            continue
        if not verdicts <= _LEDGER_SWAP:
            return False
        digests = {r.digest for r in rs}
        if len(digests) != 1 or None in digests:
            return False
    return True


def drift(model: Model) -> list[Drift]:
    """(case, adapter) cells whose verdict or error order of magnitude differs between environments.

    A skipped cell (adapter not installed there, dtype unsupported) is not a behaviour and is left
    out of the comparison, like a cell that did not run. A verdict change that is the ledger's alone
    (``ledger_only``) is kept apart as ``what == "ledger only"``: not a change of behaviour.
    """
    by: dict[tuple[str, str], dict[str, ReportCell]] = defaultdict(dict)
    for (env, case, adapter), cell in model.cells.items():
        if cell.verdict != Verdict.SKIP:
            by[(case, adapter)][env] = cell
    rows = []
    for (case, adapter), per_env in sorted(by.items()):
        if len(per_env) < 2:
            continue
        verdicts = {c.verdict for c in per_env.values()}
        ulps = [c.max_ulp() for c in per_env.values()]
        apart = any(orders_apart(a, b) for i, a in enumerate(ulps) for b in ulps[i + 1:])
        if len(verdicts) == 1 and not apart:
            continue
        per_q: dict[tuple[str, int | None], set[Verdict]] = defaultdict(set)
        for c in per_env.values():
            for r in c.results:
                per_q[(_name(r), r.step)].add(r.verdict)
        changed = sorted({q for (q, _), vs in per_q.items() if len(vs) > 1})
        what = "error magnitude" if len(verdicts) == 1 else "verdict"
        if what == "verdict" and not apart and ledger_only(per_env):
            what = "ledger only"
        rows.append(Drift(case, adapter, what, per_env, tuple(changed)))
    return rows
