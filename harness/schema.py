"""The results data model, defined once: verdicts, quantities, and every record of a results file.

``reports/<env>/results.jsonl`` (parity) and ``reports/<env>/bench.jsonl`` (benchmark) hold one
JSON object per line: a ``Header`` first, then ``Result`` and ``Cell`` records (parity) or
``Bandwidth`` and ``Benchmark`` records (benchmark). Writers build these models and readers load
through them (``harness.results``), so a renamed field is a type error, not a silent ``None``.
``docs/results.schema.json`` is generated from the models (``python -m harness.schema``) for
tools outside Python.

JSON has no NaN or infinity: a non-finite float is written as the string ``"nan"``, ``"inf"``
or ``"-inf"`` (one encoding, everywhere), and read back as a float.

    >>> Verdict.worst(["pass", "known", "skip"])
    <Verdict.KNOWN: 'known'>
    >>> Verdict.STALE.fails_run, Quantity.RUNNING_VAR.label(2), Quantity.Y_EVAL.label(3)
    (True, 'running_var after call 2 (train)', 'y of call 3 (eval)')
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema, model_validator

# 2: NaN at the worst element is "nan" (was null); the pytest command is `repro` (was appended to `message`);
#    a stale record names its entry's quantity globs in `covers` (was "a|b" in `quantity`); cells carry
#    `worker_env`; the greatest differences over the mismatched elements, each with its own index.
# 3: the verdict `weak` and the fields `stable_abs_err` / `weak_ratio` (the stable baseline's error and the
#    observed error over it); cells carry `precision` (the dtypes the adapter declares it works in).
# 4: a case is a sequence of calls (``calls``): ``step`` is the index of the call in it for every quantity, eval
#    ones too (they had None: the one eval call after the training calls, which is call ``steps`` of the short
#    form); the state after an eval call is recorded (``running_mean_eval``, ``running_var_eval``); the mismatch
#    kind ``changed`` (an eval call's result or state differs bit for bit from what it must repeat); a training
#    call on a frozen layer (``y_frozen``, ``dx_frozen``, ``running_mean_frozen``, ``running_var_frozen``).
# 5: cells carry ``path`` (eager, graph, compiled, exported, converted, distributed), ``source`` (the eager adapter a
#    path starts from) and ``omits`` (quantities a path does not produce, with why); the second-order quantities.
SCHEMA_VERSION = 5


class SchemaError(ValueError):
    """A results file this version cannot read (newer schema, or a record that does not validate)."""


# -- verdicts ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _VerdictInfo:
    severity: int  # a cell shows its worst (highest) verdict
    fails_run: bool
    differs: bool  # the values differ from the oracle (known: and the ledger says why)
    shows_error: bool  # the matrix shows the worst error over its bound rather than a letter
    letter: str  # terminal matrix
    mark: str  # report matrix, where no error is shown
    meaning: str
    shows_weak_ratio: bool = False  # the matrix shows the mark and the worst weak_ratio ('W450')


class Verdict(enum.StrEnum):
    """One verdict per (case, adapter, quantity, step); a cell's verdict is its worst."""

    PASS = "pass"
    SKIP = "skip"
    WEAK = "weak"
    EXPECTED_RAISE = "expected-raise"
    KNOWN = "known"
    STALE = "stale"
    FAIL = "fail"
    RAISED = "raised"
    TIMEOUT = "timeout"
    CRASHED = "crashed"

    @property
    def info(self) -> _VerdictInfo:
        return _VERDICTS[self]

    @property
    def severity(self) -> int:
        return _VERDICTS[self].severity

    @property
    def fails_run(self) -> bool:
        return _VERDICTS[self].fails_run

    @property
    def differs(self) -> bool:
        return _VERDICTS[self].differs

    @classmethod
    def worst(cls, verdicts: Iterable[str]) -> Verdict:
        """The most severe of ``verdicts`` (pass when there are none)."""
        return max((cls(v) for v in verdicts), key=lambda v: v.severity, default=cls.PASS)

    @classmethod
    def ordered(cls) -> list[Verdict]:
        return sorted(cls, key=lambda v: v.severity)

    @classmethod
    def table(cls) -> list[dict[str, Any]]:
        """Every verdict with its properties, in severity order (what the report's JavaScript reads)."""
        return [{"name": v.value, "severity": v.severity, "fails_run": v.fails_run, "differs": v.differs,
                 "shows_error": v.info.shows_error, "shows_weak_ratio": v.info.shows_weak_ratio,
                 "letter": v.info.letter, "mark": v.info.mark,
                 "meaning": v.info.meaning} for v in cls.ordered()]


_VERDICTS = {
    Verdict.PASS: _VerdictInfo(0, False, False, True, "P", "", "within the tolerance of the float64 oracle"),
    Verdict.SKIP: _VerdictInfo(1, False, False, False, "-", "–",
                               "the adapter is unavailable, does not support the case, or its framework refuses the "
                               "case's configuration (the reason is recorded)"),
    Verdict.WEAK: _VerdictInfo(2, False, False, True, "W", "W",
                               "within the tolerance, but far less accurate than a stable BN in the same declared "
                               "precision on the same inputs (two-pass, pairwise sums): informational, never fails "
                               "a run", shows_weak_ratio=True),
    Verdict.EXPECTED_RAISE: _VerdictInfo(3, False, False, False, "E", "E",
                                         "the framework raised what the case's `expect_raise` or the adapter's "
                                         "declared conventions expect"),
    Verdict.KNOWN: _VerdictInfo(4, False, True, True, "K", "K",
                                "a failure that matches an entry of the ledger `cases/known_differences.toml`"),
    Verdict.STALE: _VerdictInfo(5, True, False, True, "S", "S",
                                "a ledger entry that applies here but matched no failure (the framework changed)"),
    Verdict.FAIL: _VerdictInfo(6, True, True, True, "F", "F",
                               "outside the tolerance, NaN or an infinity where the oracle is finite, a finite "
                               "value where the oracle is undefined (NaN), the wrong shape, or returned where a "
                               "raise is expected"),
    Verdict.RAISED: _VerdictInfo(7, True, False, False, "R", "R",
                                 "the framework raised, and neither the case nor the adapter's conventions "
                                 "expect it"),
    Verdict.TIMEOUT: _VerdictInfo(8, True, False, False, "T", "T",
                                  "the case exceeded its time limit; the worker was killed and replaced"),
    Verdict.CRASHED: _VerdictInfo(9, True, False, False, "C", "C",
                                  "the framework killed its worker process (segfault, abort, OOM kill)"),
}


# -- quantities ----------------------------------------------------------------------------------------

Phase = Literal["outcome", "train", "eval", "frozen"]
CALL_PHASES = ("train", "eval", "frozen")  # the kinds of call a case makes (harness.cases.Call); "outcome" is none


class Quantity(enum.StrEnum):
    """What is compared: the outcome of the call, then every array, in the order the computation runs."""

    OUTCOME = "outcome"
    RUNNING_MEAN = "running_mean"
    RUNNING_VAR = "running_var"
    Y = "y"
    DX = "dx"
    DGAMMA = "dgamma"
    DBETA = "dbeta"
    HVP_X = "hvp_x"
    HVP_GAMMA = "hvp_gamma"
    Y_EVAL = "y_eval"
    DX_EVAL = "dx_eval"
    DGAMMA_EVAL = "dgamma_eval"
    DBETA_EVAL = "dbeta_eval"
    RUNNING_MEAN_EVAL = "running_mean_eval"
    RUNNING_VAR_EVAL = "running_var_eval"
    Y_FROZEN = "y_frozen"
    DX_FROZEN = "dx_frozen"
    RUNNING_MEAN_FROZEN = "running_mean_frozen"
    RUNNING_VAR_FROZEN = "running_var_frozen"

    @property
    def phase(self) -> Phase:
        return _QUANTITIES[self][0]

    @property
    def order(self) -> int:
        """Position within its phase (train: the batch mean, variance, y, then the gradients)."""
        return [q for q in Quantity if q.phase == self.phase].index(self)

    @property
    def per_channel(self) -> bool:
        """One value per channel, in the parameter dtype (running statistics, dgamma, dbeta)."""
        return self.base in (Quantity.RUNNING_MEAN, Quantity.RUNNING_VAR, Quantity.DGAMMA, Quantity.DBETA,
                             Quantity.HVP_GAMMA)

    @property
    def is_state(self) -> bool:
        """The layer's state after the call (the running statistics), not a result of the call."""
        return self.base in (Quantity.RUNNING_MEAN, Quantity.RUNNING_VAR)

    @property
    def base(self) -> Quantity:
        """The quantity without its phase: ``y`` for ``y_eval`` and ``y_frozen``."""
        phase = self.phase
        return Quantity(self.value.removesuffix(f"_{phase}")) if phase in CALL_PHASES[1:] else self

    @property
    def stage(self) -> str:
        """What part of the computation this quantity shows."""
        return _QUANTITIES[self][1]

    def label(self, step: int | None = None) -> str:
        """'running_var after call 2 (train)', 'y of call 3 (eval)'; without a step, the name alone."""
        name = self.base.value
        if step is None or self.phase == "outcome":
            return name if self.phase != "eval" else f"{name} (eval)"
        return f"{name} {'after' if self.is_state else 'of'} call {step} ({self.phase})"

    @classmethod
    def of_phase(cls, phase: str) -> list[Quantity]:
        return [q for q in cls if q.phase == phase]


_QUANTITIES: dict[Quantity, tuple[Phase, str]] = {
    Quantity.OUTCOME: ("outcome", "the call itself (returned, raised, crashed)"),
    Quantity.RUNNING_MEAN: ("train", "batch mean -> running_mean"),
    Quantity.RUNNING_VAR: ("train", "batch variance -> running_var"),
    Quantity.Y: ("train", "normalized output y"),
    Quantity.DX: ("train", "gradients (dx)"),
    Quantity.DGAMMA: ("train", "gradients (dgamma)"),
    Quantity.DBETA: ("train", "gradients (dbeta)"),
    Quantity.HVP_X: ("train", "second derivatives: d/de dx(x + e v), the Hessian-vector product"),
    Quantity.HVP_GAMMA: ("train", "second derivatives: d/de dgamma(x + e v)"),
    Quantity.Y_EVAL: ("eval", "eval output y"),
    Quantity.DX_EVAL: ("eval", "eval gradient dx"),
    Quantity.DGAMMA_EVAL: ("eval", "eval gradients (dgamma)"),
    Quantity.DBETA_EVAL: ("eval", "eval gradients (dbeta)"),
    Quantity.RUNNING_MEAN_EVAL: ("eval", "running_mean after an eval call (must be unchanged)"),
    Quantity.RUNNING_VAR_EVAL: ("eval", "running_var after an eval call (must be unchanged)"),
    Quantity.Y_FROZEN: ("frozen", "y of a training call on a frozen layer"),
    Quantity.DX_FROZEN: ("frozen", "dx of a training call on a frozen layer"),
    Quantity.RUNNING_MEAN_FROZEN: ("frozen", "running_mean after a training call on a frozen layer"),
    Quantity.RUNNING_VAR_FROZEN: ("frozen", "running_var after a training call on a frozen layer"),
}


class MismatchKind(enum.StrEnum):
    """How an observed array differs from the oracle (``match``: it does not)."""

    MATCH = "match"
    VALUE = "value"
    NAN = "nan"
    FINITE_WHERE_NAN = "finite_where_nan"
    INF = "inf"
    SHAPE = "shape"
    MISSING = "missing"
    CHANGED = "changed"

    @property
    def headline(self) -> str:
        return {"match": "values agree", "value": "values differ", "nan": "NaN where the oracle is finite",
                "finite_where_nan": "a finite value where the oracle is undefined (NaN)",
                "inf": "an infinity where the oracle is finite, or the other infinity",
                "shape": "shape differs", "missing": "not returned by the adapter",
                "changed": "an eval call changed what it must leave as it was (the state, or the result of "
                           "repeating the call) bit for bit"}[self.value]

    @property
    def bounded(self) -> bool:
        """Does ``error_ratio`` (error / bound) measure this difference? Not for NaN, infinity, shape or a
        missing array: no finite error there (the report shows the kind's ``mark`` instead of a ratio)."""
        return self in (MismatchKind.MATCH, MismatchKind.VALUE)

    @property
    def mark(self) -> str:
        """What the report's matrix shows for a difference without a ratio."""
        return {"nan": "NaN", "finite_where_nan": "¬NaN", "inf": "inf", "shape": "shape",
                "missing": "miss", "changed": "≠"}.get(self.value, "")


class BenchStatus(enum.StrEnum):
    """How one benchmark row ended."""

    OK = "ok"
    SKIP = "skip"
    ERROR = "error"


class OutcomeStatus(enum.StrEnum):
    """How the worker's call ended."""

    RETURNED = "returned"
    CRASHED = "crashed"
    TIMEOUT = "timeout"


# -- records -------------------------------------------------------------------------------------------

# a float that may be NaN or infinite: written as "nan" / "inf" / "-inf" (JSON has no such numbers)
Float = Annotated[float, WithJsonSchema({"anyOf": [{"type": "number"}, {"enum": ["nan", "inf", "-inf"]}]})]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False, frozen=False)

    def to_json_dict(self) -> dict[str, Any]:
        """The record as it is written: ``kind`` and which cell it is first, then its own fields, then inherited
        ones; fields left at None are left out (top level only)."""
        d = self.model_dump(mode="python", exclude_none=True)
        first = [k for k in ("kind", *_CELL_KEY, *type(self).__annotations__) if k in d]
        return {**{k: d[k] for k in first}, **d}


class LedgerRef(Record):
    """The ledger entry that explains a record (``known``) or that no longer happens (``stale``)."""

    id: str
    kind: str
    reason: str
    link: str
    observed: str
    versions: str = ""


class Header(Record):
    """Line 1 of a results file; rewritten at the end with the final ``status``."""

    kind: Literal["header"] = "header"
    schema_version: int = SCHEMA_VERSION
    env: str
    status: Literal["running", "complete", "interrupted"] = "running"
    started: str = ""
    finished: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    cases_hash: str = ""
    platform: dict[str, Any] = Field(default_factory=dict)
    adapters: list[str] | None = None
    argv: list[str] | None = None
    ledger: str | None = None
    records: int | None = None
    exit_status: int | None = None
    timings: dict[str, dict[str, float]] | None = None
    # benchmark files
    mode: Literal["parity", "bench"] | None = None
    threads: str | None = None
    machine: dict[str, Any] | None = None
    malloc: dict[str, str] | None = None
    # synthetic files (tests/report_sample.py): what they are
    sample: str | None = None


class Comparison(Record):
    """What comparing one observed array with the oracle measures (``harness.compare``); a ``Result``
    of a compared quantity carries these fields."""

    mismatch_kind: MismatchKind | None = None
    mismatched: int | None = None
    total: int | None = None
    observed_dtype: str | None = None
    max_abs_err: Float | None = Field(None, description="largest |observed - expected| over every element")
    max_rel_err: Float | None = None
    max_ulp_err: Float | None = Field(None, description="max_abs_err in ulps of the dtype at the quantity's scale")
    greatest_abs_diff: Float | None = Field(None, description="largest |diff| over the mismatched elements")
    greatest_abs_index: list[int] | None = None
    greatest_rel_diff: Float | None = Field(None, description="largest relative diff over the mismatched elements")
    greatest_rel_index: list[int] | None = None
    threshold: Float | None = Field(None, description="the bound at the worst element")
    error_ratio: Float | None = Field(None, description="error / bound at the worst element")
    worst_index: list[int] | None = Field(None, description="the element with the largest error over its bound")
    expected: Float | None = Field(None, description="the oracle at the worst element (NaN where it is NaN)")
    observed: Float | None = None
    nan_expected: int | None = None
    nan_observed: int | None = None
    expected_shape: list[int] | None = None
    observed_shape: list[int] | None = None
    stable_abs_err: Float | None = Field(None, description="largest |stable - expected| of the harness's stable BN "
                                         "in the adapter's declared precision (harness.stable)")
    weak_ratio: Float | None = Field(None, description="max_abs_err over (stable_abs_err + one ulp at the "
                                     "quantity's scale): above harness.stable.WEAK_FACTOR the verdict is weak")


class CellKey(Record):
    """Which (environment, case, adapter) a record belongs to, and the framework version it ran."""

    env: str
    case: str
    adapter: str
    framework: str
    framework_version: str | None = None


_CELL_KEY = tuple(CellKey.model_fields)


class Result(CellKey, Comparison):
    """One (case, adapter, quantity, step): its verdict, and the metrics when the array was compared."""

    kind: Literal["result"] = "result"
    quantity: Quantity | None = Field(None, description="None only on a stale record: its entry's globs are `covers`")
    step: int | None = None
    verdict: Verdict
    message: str = ""
    repro: str | None = Field(None, description="the command that reproduces a failing record")
    covers: list[str] | None = None
    digest: str | None = Field(None, description="sha256 prefix of the observed array's bytes")
    # the outcome (quantity "outcome")
    exception_type: str | None = None
    exception_message: str | None = None
    exception_stage: str | None = None
    exit_code: int | None = None
    stderr_tail: str | None = None
    # the ledger
    ledger: LedgerRef | None = None
    ledger_ids: list[str] | None = None

    @model_validator(mode="after")
    def _quantity_or_covers(self) -> Result:
        if self.quantity is None and self.covers is None:
            raise ValueError("a result names its quantity, or (a stale ledger record) the globs it covers")
        return self

    @property
    def compared(self) -> bool:
        """Did an array get compared (metrics present)?"""
        return self.mismatch_kind is not None and self.mismatch_kind not in (MismatchKind.SHAPE,
                                                                             MismatchKind.MISSING)


class Effective(Record):
    """The settings in case terms (momentum as the weight of the new statistic) that the oracle used."""

    momentum: Float | Literal["cumulative"] | None
    eps: Float | None


class Cell(CellKey):
    """One (case, adapter) cell: its worst verdict and what is needed to understand and reproduce it."""

    kind: Literal["cell"] = "cell"
    verdict: Verdict
    case_params: dict[str, Any]
    tags: list[str] = Field(default_factory=list)
    file: str = ""
    conventions: dict[str, Any] = Field(default_factory=dict)
    path: str = Field("eager", description="how the adapter runs the framework's BN (harness.adapters.base.PATHS): "
                      "eager, graph, compiled, exported, converted or distributed")
    source: str | None = Field(None, description="for a non-eager path, the eager adapter it starts from")
    omits: dict[str, str] | None = Field(None, description="quantities this path does not produce, with why (not "
                                         "compared)")
    settings: dict[str, Any] = Field(default_factory=dict)
    precision: dict[str, str] = Field(default_factory=dict, description="the dtypes the adapter declares it works "
                                      "in for this case (harness.adapters.base.Precision)")
    effective: Effective
    info: dict[str, Any] = Field(default_factory=dict)
    worker: dict[str, Any] = Field(default_factory=dict)
    worker_env: dict[str, str] = Field(default_factory=dict)
    status: OutcomeStatus
    wall_s: Float | None = Field(None, description="seconds from handing the case to its worker to the answer: on a "
                                 "worker's first case this includes starting the worker and importing the framework "
                                 "(worker.import_s)")
    case_s: Float | None = Field(None, description="seconds the case itself took in its worker (build, every step, "
                                 "eval), without starting the worker or importing the framework; absent when the "
                                 "case did not run to an answer (crashed, timed out, or the adapter failed to set up)")
    input_digests: dict[str, str] = Field(default_factory=dict)


class Bandwidth(Record):
    """The machine's measured memory bandwidth at one working-set size (benchmark files)."""

    kind: Literal["bandwidth"] = "bandwidth"
    env: str
    size_bytes: int
    copy_gbs: Float
    add_gbs: Float
    copy_cv: Float
    add_cv: Float
    trials: int
    copy_gbs_trials: list[Float]
    threads: str
    beyond_llc: bool
    llc_reported_bytes: int | None = None


class Benchmark(Record):
    """One timed configuration of one adapter (or why it was not timed)."""

    kind: Literal["benchmark"] = "benchmark"
    env: str
    adapter: str
    status: BenchStatus
    reason: str | None = Field(None, description="why a row was skipped or failed")
    framework: str | None = None
    framework_version: str | None = None
    threads: str | None = Field(None, description="intra-op threads every framework was given")
    config: str | None = Field(None, description="the configuration's name in cases/bench.toml")
    case: str | None = None
    shape: list[int] | None = Field(None, description="logical shape (N, C, *spatial)")
    dtype: str | None = None
    layout: str | None = Field(None, description="channels_first or channels_last")
    mode: str | None = Field(None, description="train_fwd, train_fwd_bwd or eval_fwd")
    variant: str | None = Field(None, description="how the adapter calls BN: eager, a compiled form, ...")
    device: str | None = None
    cpus: list[int] | None = Field(None, description="the CPUs the worker was pinned to")
    median_s: Float | None = Field(None, description="median seconds per call")
    min_s: Float | None = None
    q1_s: Float | None = Field(None, description="first quartile of seconds per call")
    q3_s: Float | None = Field(None, description="third quartile of seconds per call")
    reps: int | None = Field(None, description="calls timed in all")
    samples: int | None = Field(None, description="timing samples (each of one or more calls)")
    cv: Float | None = Field(None, description="coefficient of variation of the samples")
    stable: bool | None = Field(None, description="cv reached the target before the budget ran out")
    warmup_s: Float | None = None
    bytes: int | None = Field(None, description="the minimum bytes one call must move")
    gbs: Float | None = Field(None, description="achieved GB/s: bytes / median_s")
    bw_fraction: Float | None = Field(None, description="gbs over the copy bandwidth measured nearest the working set")
    bw_fraction_dram: Float | None = Field(None, description="gbs over the copy bandwidth beyond the last-level cache")


AnyRecord = Annotated[Header | Result | Cell | Bandwidth | Benchmark, Field(discriminator="kind")]
RECORD = TypeAdapter(AnyRecord)


# -- encoding ------------------------------------------------------------------------------------------

def _clean(v: Any) -> Any:
    """JSON has no NaN/Inf: non-finite floats become strings ("nan", "inf", "-inf")."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, enum.Enum):
        return v.value
    return v


def dumps(record: Record | dict[str, Any]) -> str:
    """One line of a results file."""
    d = record.to_json_dict() if isinstance(record, Record) else record
    return json.dumps(_clean(d), allow_nan=False, default=str)


def parse(line: str | dict[str, Any]) -> Header | Result | Cell | Bandwidth | Benchmark:
    """One line (or its decoded object) as a typed record; raises pydantic's ValidationError."""
    obj = json.loads(line) if isinstance(line, str) else line
    return RECORD.validate_python(obj)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of one line of a results file (any record kind)."""
    schema = RECORD.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"bnparity results record (schema_version {SCHEMA_VERSION})"
    schema["description"] = ("One line of reports/<env>/results.jsonl or bench.jsonl. Non-finite numbers are "
                             "written as the strings 'nan', 'inf' and '-inf'.")
    return schema


if __name__ == "__main__":  # python -m harness.schema > docs/results.schema.json
    print(json.dumps(json_schema(), indent=1, sort_keys=True))
