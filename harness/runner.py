"""Run one (case, adapter) cell: inputs, worker, oracle, comparison, ledger, records."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness import inputs
from harness.adapters.base import Adapter, Broken, Raises
from harness.cases import Case
from harness.compare import compare, describe
from harness.expected import expected_quantities
from harness.ledger import Entry, apply_ledger
from harness.schema import Cell, Effective, MismatchKind, OutcomeStatus, Quantity, Result, Verdict
from harness.stable import WEAK_FACTOR, stable_quantities, weak_ratio
from harness.workers import Outcome, Workers

STDERR_TAIL_LINES = 8  # of a crashed worker's stderr, in the outcome message


@dataclass
class CellResult:
    records: list[Result | Cell] = field(default_factory=list)
    skip_reason: str | None = None

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.records if isinstance(r, Result) and r.verdict.fails_run]

    def failure_text(self) -> str:
        return "\n\n".join(r.message + (f"\n  Reproduce: {r.repro}" if r.repro else "") for r in self.failures)


@dataclass(frozen=True)
class ExpectedRaise:
    """A raise the call should end in, and who says so: the case's ``expect_raise`` (``declared`` is
    empty), or the adapter's conventions for what ``declared`` names ("eps = 0 in training")."""

    raises: Raises
    declared: str = ""

    def __str__(self) -> str:
        who = f"the adapter declares that {self.declared} raises" if self.declared else "the case expects"
        return f"{who} {self.raises.type} matching {self.raises.match!r}"

    @property
    def met(self) -> str:
        return f"as the adapter declares for {self.declared}" if self.declared else "as the case expects"


def expected_raises(case: Case, adapter: Adapter, eps: float) -> list[ExpectedRaise]:
    """What the call should raise: the case's ``expect_raise`` for this adapter when it has one, else
    every raise the adapter's conventions declare for this configuration (``eps`` as passed); [] if none."""
    want = case.expect_raise.get(adapter.name)
    if want:
        return [ExpectedRaise(Raises(want.type, want.match))]
    return [ExpectedRaise(r, what) for what, r in adapter.conventions.raises_on(case, eps)]


def judge_raise(outcome: Outcome, wants: list[ExpectedRaise]) -> tuple[Verdict, str]:
    """(verdict, message) of the outcome itself: returned / raised / expected-raise / crashed / timeout."""
    raised = outcome.observed.raised if outcome.observed else None
    if outcome.status != OutcomeStatus.RETURNED:
        tail = outcome.stderr_tail.strip().splitlines()[-STDERR_TAIL_LINES:]
        return Verdict(outcome.status), outcome.message + ("\n  stderr tail:\n    " + "\n    ".join(tail)
                                                           if tail else "")
    expected = " or ".join(map(str, wants))
    if raised is None:
        if wants:
            return Verdict.FAIL, f"{expected}, but the call returned normally"
        return Verdict.PASS, "returned normally"
    text = f"{raised.type}: {raised.message}"
    met = next((w for w in wants if w.raises.matches(raised.type, raised.message)), None)
    if met:
        return Verdict.EXPECTED_RAISE, f"raised {met.met}, during {raised.stage}: {text}"
    if wants:
        return Verdict.RAISED, f"{expected}, but during {raised.stage}: {text}"
    return Verdict.RAISED, f"unexpected exception during {raised.stage}: {text}"


def run_cell(case: Case, adapter: Adapter, spec: str, workers: Workers, *, env: str,
             ledger: list[Entry], timeout: float, repro: str) -> CellResult:
    """Everything about one cell, as result records (one per quantity and step) and the cell record."""
    version = adapter.framework_version()
    ids = dict(env=env, case=case.name, adapter=adapter.name, framework=adapter.framework,
               framework_version=version)
    res = CellResult()
    if isinstance(adapter, Broken) and adapter.error is not None:
        err = adapter.error
        res.records.append(Result(**ids, quantity=Quantity.OUTCOME, verdict=Verdict.RAISED, message=adapter.reason,
                                  exception_type=err.type, exception_message=err.message, exception_stage=err.stage,
                                  repro=repro))
        return res
    reason = adapter.available() or adapter.supports(case)
    if reason:
        res.skip_reason = reason
        res.records.append(Result(**ids, quantity=Quantity.OUTCOME, verdict=Verdict.SKIP, message=reason))
        return res

    data = inputs.build(case)
    wait = workers.submit(adapter.name, spec, adapter.worker_env, case, data, case.timeout or timeout)
    momentum, eps = adapter.effective(case)
    precision = adapter.precision(case) if hasattr(adapter, "precision") else None
    estimator = adapter.conventions.running_var_estimator
    # the oracle and the stable baseline run while the framework works in its worker
    frozen = adapter.conventions.frozen_call or "batch_statistics"  # (a case with frozen calls needs one declared)
    ghost = adapter.conventions.virtual_batch_update
    replicas = {"replica_running": getattr(adapter.conventions, "replica_running", "first"),
                "replica_gradients": getattr(adapter.conventions, "replica_gradients", "sum")}
    expected = expected_quantities(case, data, estimator, momentum, eps, precision, frozen, ghost, **replicas)
    stable = stable_quantities(case, data, estimator, momentum, eps, precision, frozen, ghost, **replicas)
    outcome = wait()
    obs = outcome.observed
    verdict, message = judge_raise(outcome, expected_raises(case, adapter, eps))
    outcome_rec = Result(**ids, quantity=Quantity.OUTCOME, verdict=verdict, message=message)
    if obs is not None and obs.raised:
        outcome_rec.exception_type = obs.raised.type
        outcome_rec.exception_message = obs.raised.message
        outcome_rec.exception_stage = obs.raised.stage
    if outcome.status != OutcomeStatus.RETURNED:
        outcome_rec.exit_code, outcome_rec.stderr_tail = outcome.exit_code, outcome.stderr_tail
    records = [outcome_rec]
    omits = getattr(adapter, "omits", {})  # (an adapter that does not subclass Adapter produces every quantity)
    if obs is not None and verdict == Verdict.PASS:
        for key, exp in expected.items():
            q, step = Quantity(key[0]), key[1]
            if q.value in omits:  # the path does not produce it (the cell record says why)
                continue
            if key not in obs.arrays:
                records.append(Result(**ids, quantity=q, step=step, verdict=Verdict.FAIL,
                                      mismatch_kind=MismatchKind.MISSING,
                                      message=f"{q.label(step)}: not returned by the adapter"))
                continue
            arr = obs.arrays[key]
            m = compare(exp, arr)
            verdict, message = (Verdict.PASS, "") if m.ok else (Verdict.FAIL, describe(q.label(step), m, exp.dtype))
            weak = weak_ratio(exp.value, exp.dtype, m.max_abs_err, stable.get(key))
            if weak and m.ok and weak[1] > WEAK_FACTOR:
                verdict, message = Verdict.WEAK, describe_weak(q.label(step), m, *weak)
            fields = m.fields()
            if weak:
                fields.update(stable_abs_err=weak[0], weak_ratio=weak[1])
            records.append(Result(**ids, quantity=q, step=step, verdict=verdict, message=message,
                                  digest=inputs.digest(arr), **fields))

        flag_changes(case.schedule, records)

    records += apply_ledger(case, adapter.name, version, ledger, records, data, adapter.conventions.frozen_call)
    for r in records:
        if r.verdict.fails_run:
            r.repro = repro
    cell = Cell(**ids, verdict=Verdict.worst(r.verdict for r in records), case_params=case.summary(),
                tags=list(case.tags), file=case.file, conventions=adapter.conventions.as_dict(),
                path=getattr(adapter, "path", "eager"), source=getattr(adapter, "source", "") or None,
                omits=dict(omits) or None,
                settings=adapter.settings(case), precision=precision.as_dict() if precision else {},
                effective=Effective(momentum=momentum, eps=eps),
                info=({k: v for k, v in obs.info.items() if _jsonable(v)} if obs else {}),
                worker=outcome.worker, worker_env=dict(adapter.worker_env), status=OutcomeStatus(outcome.status),
                wall_s=outcome.wall_s, case_s=outcome.case_s, input_digests=data.digests)
    res.records = [*records, cell]
    return res


# what an eval call must repeat bit for bit: its element-wise results when the call before it was the same eval call
# (the reductions dgamma/dbeta may be summed in another order per call, e.g. with GPU atomics: bound-checked only)
REPEATED = (Quantity.Y_EVAL, Quantity.DX_EVAL)
STATE = {Quantity.RUNNING_MEAN_EVAL: Quantity.RUNNING_MEAN, Quantity.RUNNING_VAR_EVAL: Quantity.RUNNING_VAR}


def flag_changes(schedule: tuple[str, ...], records: list[Result]) -> None:
    """Fail, as ``changed``, an eval call that changed what it must leave as it was, bit for bit: the running
    statistics (as after the call before it), and its y and dx where the call before it was the same eval call
    (same batch, same state). Within the bound is not enough: the oracle cannot see a one-ulp drift, the bits can."""
    by_key = {(r.quantity, r.step): r for r in records if r.step is not None and r.digest}
    for i in range(1, len(schedule)):
        if schedule[i] != "eval":
            continue
        before = "train" if schedule[i - 1] == "train" else "eval"
        pairs = [(q, (prev if before == "train" else q)) for q, prev in STATE.items()]
        if before == "eval":
            pairs += [(q, q) for q in REPEATED]
        for q, q_before in pairs:
            now, then = by_key.get((q, i)), by_key.get((q_before, i - 1))
            if now is None or then is None or now.digest == then.digest or now.verdict.fails_run:
                continue
            what = ("the state it was given" if q in STATE else "the result of the same eval call before it")
            now.verdict, now.mismatch_kind = Verdict.FAIL, MismatchKind.CHANGED
            now.message = (f"{q.label(i)}: {MismatchKind.CHANGED.headline}: differs from {q_before.label(i - 1)}, "
                           f"{what} (digest {now.digest} vs {then.digest})"
                           + (f"; largest |diff| from the oracle {now.max_abs_err:.3g}, {now.error_ratio:.3g} of the "
                              f"bound" if now.max_abs_err is not None and now.error_ratio is not None else ""))


def describe_weak(label: str, m, stable_err: float, ratio: float) -> str:
    return (f"{label}: within the bound ({m.error_ratio:.3g} of it) but {ratio:.3g}x the error of a stable BN in the "
            f"same precision: max |diff| {m.max_abs_err:.3g}, stable {stable_err:.3g} (two-pass, pairwise sums, "
            f"harness.stable); weak above {WEAK_FACTOR:g}x")


def _jsonable(v) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict))
