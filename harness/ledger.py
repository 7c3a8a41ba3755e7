"""The ledger of known differences (``cases/known_differences.toml``), keyed by mechanism.

Each ``[[difference]]`` names one real, understood mechanism and the conditions under which it occurs:

    [[difference]]
    id = "torch-...";  adapter = "torch";  versions = ">=2.0"   # adapter: glob or list; PEP 440 versions
    quantity = ["y", "dx"]      # glob(s) over quantity names, only those the mechanism explains; "outcome"
    kind = "framework bug" | "numerical weakness" | "undocumented behaviour"
    observed = "what was measured"; reason = "why"; link = "https://..."
    cases = "batch1_*"          # optional name glob(s); tags = [...]; not_cases = [...] excludes
    [difference.when]           # optional conditions (class ``When``), all must hold:
    dtype = ["float32"]; policy = "mixed"; layout = "channels_last"; affine = true
    track_running_stats = true; nonfinite = "none"           # "none" | "nan" | "inf", or a list
    count = { min = 3 }; steps = { min = 1 }; eps = { max = 1e-3 }; momentum = { not_in = [0.0, 0.5] }
    offset_ratio = { min = 10.0, max = 1e12 }; max_abs = { min = 1.85e19 }

The conditions are evaluated on ``Facts``, measured once per case from the case and the inputs every
adapter is fed (``case_facts``): ``offset_ratio`` is the largest |mean| / std over channels and training
steps (inf for a constant non-zero channel), ``max_abs`` the largest |x| of the training batches. A range
(``Range``) is ``{min, max, not_in}``, each optional, one required.

An entry is validated like a case (the pydantic model ``Entry``, errors naming the file, the entry and
the field, ``when.<condition>.<part>`` inside the conditions): no unknown field, no coercion, ``kind`` one
of the three, ``link`` an https:// address, ``versions`` a PEP 440 specifier, every ``quantity`` glob
matching some quantity (one that matches none would never be judged, not even as stale), and a scope
(``cases``, ``tags`` or ``when``); every scope given must hold.

Strict both ways: a failing quantity that no entry covers fails; an entry that applies to a (case,
adapter) cell, its conditions holding there, but covers no failure there is stale and fails too
(``apply_ledger``). Where the conditions do not hold the entry is not judged.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, field_validator, model_validator

from harness.cases import (
    Case,
    CaseError,
    Dtype,
    FieldProblem,
    StrictModel,
    Text,
    format_errors,
    read_toml,
    table_label,
    toml_type,
)
from harness.schema import LedgerRef, MismatchKind, Quantity, Result, Verdict

# the running statistics after an eval or frozen call: the same state a training call's entry speaks of
_STATE_AFTER_OTHER_CALLS = {q.value: q.base.value for q in Quantity if q.is_state and q.phase != "train"}
# a frozen call's results: a training call's or an eval call's, by the adapter's Conventions.frozen_call
_FROZEN_RESULTS = {q.value: q.base.value for q in Quantity if q.phase == "frozen" and not q.is_state}

if TYPE_CHECKING:
    from harness.inputs import CaseData

Kind = Literal["framework bug", "numerical weakness", "undocumented behaviour"]
KINDS: tuple[str, ...] = Kind.__args__


def _listed(v):
    """A glob may be given alone or in a list."""
    return [v] if isinstance(v, str) else v


def _glob(v: str) -> str:
    if not v or any(ch.isspace() for ch in v):
        raise ValueError("must be a name or glob, without spaces")
    return v


Glob = Annotated[str, AfterValidator(_glob)]
Globs = Annotated[tuple[Glob, ...], BeforeValidator(_listed), Field(strict=False)]


# -- conditions: what a case is, measured once, and the ranges an entry's mechanism needs ----------------

@dataclass(frozen=True)
class Facts:
    """What the ledger's conditions (``[difference.when]``) are evaluated on, computed once per case from the
    case and its inputs (the arrays every adapter is fed, in the case dtype).

    ``offset_ratio``: |mean| / std per channel (population std, over the finite values of one batch), the
    largest over channels and the batches normalized with their own statistics (every training batch, and the
    eval batch of a case without running statistics; every shard of a data-parallel case without sync, where
    each replica normalizes its own); ``inf`` for a constant non-zero channel, 0 for a
    constant zero one and with no training step. ``max_abs``: the largest |value| the layer is fed, NaN left
    out: the training batches, the eval batch and the initial running statistics (``inf`` where one of them
    holds inf, e.g. a running mean beyond the parameter dtype's range). ``nonfinite``: the kinds of non-finite
    value the training batches hold, ``("nan",)``, ``("inf",)``, ``("inf", "nan")``, or ``("none",)``
    (planted by ``specials``, or a value beyond the dtype's range). ``momentum`` is None for "cumulative".
    ``layout``: ``channels_first`` or ``channels_last`` as the case says, ``other`` for channels at a middle axis
    (``axis``). ``batch_calls``: the calls that normalize with their own batch's statistics (train and frozen
    calls, and eval calls of a case without running statistics): where a mechanism of the batch statistics can
    show, whether or not a running statistic is updated (``steps``)."""

    dtype: str
    policy: str
    layout: str
    affine: bool
    track_running_stats: bool
    count: int
    steps: int
    batch_calls: int
    eps: float
    momentum: float | None
    offset_ratio: float
    max_abs: float
    nonfinite: tuple[str, ...]
    # a case's ``mask``: whether it has one, and the fewest unmasked values of a channel in a training batch (the
    # count without a mask; 0 where a batch or a channel is fully masked); ``channels``: C
    mask: bool = False
    unmasked: int = 0
    channels: int = 0
    rank: int = 0  # the input's number of axes (2: dense, 3: a sequence, 4 and 5: images and volumes)
    center: bool = True  # the layer has beta (a bias); a layer without one has affine false, or gamma alone
    frozen: bool = False  # the case makes frozen calls (``"frozen"`` in its schedule)
    cumulative: bool = False  # the case's momentum is "cumulative" (torch's momentum=None), where ``momentum`` is None
    renorm: bool = False  # the case asks for Batch Renormalization (``renorm``)
    # gamma equals the initial running variance, or beta the initial running mean, element for element (a layer as its
    # constructor builds it: ones and zeros): an ONNX exporter stores equal tensors once and hands them over shared
    equal_initializers: bool = False


def _channel_stats(x, axis: int) -> tuple[float, float, set[str]]:
    """(largest |mean|/std over channels, largest |x| but NaN, the kinds of non-finite value) of one batch."""
    import numpy as np

    a = np.moveaxis(np.asarray(x, dtype=np.float64), axis, 0).reshape(x.shape[axis], -1)
    nan, inf = np.isnan(a), np.isinf(a)
    kinds = {k for k, m in (("nan", nan), ("inf", inf)) if m.any()}
    top = float(np.max(np.abs(a[~nan]))) if (~nan).any() else 0.0
    ok = ~(nan | inf)
    cnt = ok.sum(axis=1)
    seen = cnt > 0
    if not seen.any():
        return 0.0, top, kinds
    mean = np.where(ok, a, 0.0).sum(axis=1)[seen] / cnt[seen]
    dev = np.where(ok[seen], a[seen] - mean[:, None], 0.0)
    std = np.sqrt((dev * dev).sum(axis=1) / cnt[seen])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(std > 0, np.abs(mean) / std, np.where(mean != 0, np.inf, 0.0))
    return float(ratio.max()), top, kinds


def _fewest_unmasked(case: Case, data: CaseData) -> int:
    """The fewest unmasked values of a channel in a training batch: ``case.count`` without a mask."""
    if data.mask is None or not data.mask:
        return case.count
    import numpy as np

    ax = data.channel_axis % len(case.shape)
    return int(min(np.moveaxis(m, ax, 0).reshape(case.channels, -1).sum(axis=1).min() for m in data.mask))


_FACTS: dict[tuple, Facts] = {}


def case_facts(case: Case, data: CaseData | None = None) -> Facts:
    """The facts of ``case`` (its inputs built from the seed unless ``data`` is given); cached per case."""
    key = (case.name, case.file, case.model_dump_json())
    if key in _FACTS:
        return _FACTS[key]
    if data is None:
        from harness import inputs

        data = inputs.build(case)
    import numpy as np

    ratio, top, kinds = 0.0, 0.0, set()
    # the batches normalized with their own statistics: every training batch, and the eval batch of a case that
    # keeps no running statistics (its eval call normalizes with the batch's)
    own = [*data.x, *([] if case.track_running_stats else [data.x_eval])]
    if case.data_parallel is not None and not case.data_parallel.sync:  # each replica normalizes its own shard
        from reference import shard_slices

        own = [x[s] for x in data.x for s in shard_slices(case.shards)]
    for x in own:
        r, t, k = _channel_stats(x, data.channel_axis)
        ratio, top, kinds = max(ratio, r), max(top, t), kinds | k
    for a in (data.x_eval, data.running_mean, data.running_var):  # what else the layer is fed
        a = np.abs(np.asarray(a, dtype=np.float64))
        if (~np.isnan(a)).any():
            top = max(top, float(a[~np.isnan(a)].max()))
    middle = case.channel_axis % case.rank not in (1, case.rank - 1)
    batch_calls = sum(kind != "eval" or not case.track_running_stats for kind in case.schedule)
    facts = Facts(dtype=case.dtype, policy=case.policy, layout="other" if middle else case.layout,
                  affine=case.has_scale or case.has_center, track_running_stats=case.track_running_stats,
                  count=case.count, steps=case.steps, batch_calls=batch_calls,
                  eps=case.eps, momentum=None if case.momentum == "cumulative" else float(case.momentum),
                  offset_ratio=ratio, max_abs=top, nonfinite=tuple(sorted(kinds)) or ("none",),
                  mask=data.mask is not None, unmasked=_fewest_unmasked(case, data), channels=case.channels,
                  rank=case.rank, center=case.has_center, frozen="frozen" in case.schedule,
                  cumulative=case.momentum == "cumulative", renorm=case.renorm is not None,
                  equal_initializers=bool((case.has_scale and np.array_equal(data.gamma, data.running_var))
                                          or (case.has_center and np.array_equal(data.beta, data.running_mean))))
    if len(_FACTS) > 4096:
        _FACTS.clear()
    _FACTS[key] = facts
    return facts


Bound = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Range(StrictModel):
    """``{min = a, max = b, not_in = [...]}``: a <= value <= b, and the value none of ``not_in``. Each part
    may be left out; one must be there. ``max`` cannot be inf (TOML's inf is refused like everywhere): a
    value that may be infinite (``offset_ratio`` of a constant channel) is inside a range with no ``max``."""

    min: Bound | None = None
    max: Bound | None = None
    not_in: Annotated[tuple[Bound, ...], Field(strict=False)] = ()

    @model_validator(mode="after")
    def _sane(self):
        if self.min is None and self.max is None and not self.not_in:
            raise FieldProblem("min", "give min, max or not_in (an empty range holds everywhere)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise FieldProblem("max", f"max ({self.max:g}) must be >= min ({self.min:g})")
        return self

    def holds(self, v: float | None) -> bool:
        if v is None:
            return False
        return ((self.min is None or v >= self.min) and (self.max is None or v <= self.max)
                and v not in self.not_in)

    def __str__(self) -> str:
        parts = ([f">= {self.min:g}"] if self.min is not None else []) + (
            [f"<= {self.max:g}"] if self.max is not None else []) + (
            [f"not {', '.join(f'{v:g}' for v in self.not_in)}"] if self.not_in else [])
        return " and ".join(parts)


Policy = Literal["pure", "mixed", "custom"]
Layout = Literal["channels_first", "channels_last", "other"]


class When(StrictModel):
    """``[difference.when]``: the conditions under which the entry's mechanism occurs; all given must hold.
    A list field holds when the case's value is one of the list (``nonfinite``: when the case holds one of the
    kinds listed); a range as ``Range``; a boolean when equal. See ``Facts`` for what each measures."""

    dtype: Annotated[tuple[Dtype, ...], BeforeValidator(_listed), Field(strict=False, min_length=1)] | None = None
    policy: Annotated[tuple[Policy, ...], BeforeValidator(_listed), Field(strict=False, min_length=1)] | None = None
    layout: Annotated[tuple[Layout, ...], BeforeValidator(_listed), Field(strict=False, min_length=1)] | None = None
    affine: bool | None = None
    track_running_stats: bool | None = None
    nonfinite: Annotated[tuple[Literal["none", "nan", "inf"], ...], BeforeValidator(_listed),
                         Field(strict=False, min_length=1)] | None = None
    count: Range | None = None
    steps: Range | None = None
    batch_calls: Range | None = None
    eps: Range | None = None
    momentum: Range | None = None
    offset_ratio: Range | None = None
    max_abs: Range | None = None
    mask: bool | None = None
    unmasked: Range | None = None
    channels: Range | None = None
    rank: Range | None = None
    center: bool | None = None
    frozen: bool | None = None
    cumulative: bool | None = None
    renorm: bool | None = None
    equal_initializers: bool | None = None

    @model_validator(mode="after")
    def _something(self):
        if not self.model_fields_set:
            raise ValueError("empty: give at least one condition (" + ", ".join(When.model_fields) + ")")
        return self

    def holds(self, f: Facts) -> bool:
        for name in self.model_fields_set:
            want = getattr(self, name)
            have = getattr(f, name)
            if isinstance(want, Range):
                ok = want.holds(have)
            elif isinstance(have, tuple):
                ok = bool(set(have) & set(want))
            elif isinstance(want, tuple):
                ok = have in want
            else:
                ok = have == want
            if not ok:
                return False
        return True

    def describe(self) -> str:
        """The conditions in words: ``dtype float32; offset_ratio >= 10``."""
        out = []
        for name in When.model_fields:
            if name in self.model_fields_set:
                v = getattr(self, name)
                out.append(f"{name} {'|'.join(v) if isinstance(v, tuple) else v}")
        return "; ".join(out)


class Entry(StrictModel):
    """One ``[[difference]]``: strict like a case (no unknown field, no coercion)."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+-]+$")]
    adapter: Annotated[Globs, Field(min_length=1)]
    quantity: Annotated[Globs, Field(min_length=1)]
    kind: Kind
    observed: Text
    reason: Text
    link: str
    versions: str = ""
    cases: Globs = ()
    tags: Globs = ()
    not_cases: Globs = ()
    when: When | None = None
    evidence: Globs = ()

    @field_validator("quantity")
    @classmethod
    def _known_quantity(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        names = [q.value for q in Quantity]
        for glob in v:  # a glob that covers no quantity would never be judged, not even as stale
            if not fnmatch.filter(names, glob):
                raise ValueError(f"{glob!r} matches no quantity ({', '.join(names)})")
        return v

    @field_validator("link")
    @classmethod
    def _https(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme != "https" or not parts.netloc or any(ch.isspace() for ch in v):
            raise ValueError("must be an https:// link to source or an issue")
        return v

    @field_validator("versions")
    @classmethod
    def _pep440(cls, v: str) -> str:
        try:
            SpecifierSet(v)
        except InvalidSpecifier:
            raise ValueError("not a PEP 440 version specifier (like '>=2.0' or '>=3.0,<3.12')") from None
        if not v.strip():
            raise ValueError("empty: leave versions out to mean every version")
        return v

    @model_validator(mode="after")
    def _scoped(self):
        if not (self.cases or self.tags or self.when):
            raise FieldProblem("cases", "give a case glob, tags or [difference.when] conditions (an entry must be "
                                        "scoped)")
        if not (self.cases or self.evidence):
            raise FieldProblem("evidence", "name the cases where the mechanism shows (case globs): the entry is "
                                           "judged stale there, so a release that changes it is noticed")
        return self

    def judged_in(self, case: Case) -> bool:
        """Is a cell of ``case`` where this entry applies one where it must explain a difference? Its named
        cases, or its evidence cases."""
        return bool(self.cases) or any(fnmatch.fnmatchcase(case.name, p) for p in self.evidence)

    def applies(self, case: Case, adapter: str, version: str | None, facts: Facts | None = None) -> bool:
        """Does this entry scope the (case, adapter) cell at this framework version? Every scope given must hold:
        adapter, versions, cases, tags, not_cases and the ``when`` conditions (on ``facts``, computed from the
        case's inputs when not given)."""
        if not any(fnmatch.fnmatchcase(adapter, a) for a in self.adapter):
            return False
        if self.versions:
            if version is None:
                return False
            try:
                if Version(version) not in SpecifierSet(self.versions):
                    return False
            except InvalidVersion:
                return False
        if self.cases and not any(fnmatch.fnmatchcase(case.name, p) for p in self.cases):
            return False
        if self.tags and not set(self.tags) & set(case.tags):
            return False
        if any(fnmatch.fnmatchcase(case.name, p) for p in self.not_cases):
            return False
        return self.when is None or self.when.holds(facts or case_facts(case))

    def covers(self, quantity: str, same_state: bool = True, frozen_call: str = "") -> bool:
        """Does a glob match ``quantity``? The state after an eval call (``running_var_eval``) is the state the
        call before it left, and after a frozen call it is that state or its training update, so an entry that
        explains ``running_var`` explains them too (``same_state``), unless an eval call itself changed it
        (mismatch kind ``changed``: a mechanism of its own, named only as such). A frozen call's y and dx are a
        training call's or an eval call's, as the adapter declares (``frozen_call``): an entry that explains
        ``y`` (or ``y_eval``) there explains ``y_frozen``."""
        names = [quantity]
        if same_state and quantity in _STATE_AFTER_OTHER_CALLS:
            names.append(_STATE_AFTER_OTHER_CALLS[quantity])
        if quantity in _FROZEN_RESULTS and frozen_call:
            base = _FROZEN_RESULTS[quantity]
            names.append(base if frozen_call == "batch_statistics" else f"{base}_eval")
        return any(fnmatch.fnmatchcase(n, q) for n in names for q in self.quantity)

    def as_record(self) -> LedgerRef:
        return LedgerRef(id=self.id, kind=self.kind, reason=self.reason, link=self.link, observed=self.observed,
                         versions=self.versions)


def load_ledger(path: Path | None) -> list[Entry]:
    """The entries of a ledger file (none when there is no file); every error is a CaseError naming the file,
    the entry and the field."""
    if path is None or not Path(path).exists():
        return []
    path = Path(path)
    raw = read_toml(path)
    extra = set(raw) - {"difference"}
    if extra:
        raise CaseError(f"{path}: top-level table '{sorted(extra)[0]}': unknown (a ledger holds [[difference]])")
    items = raw.get("difference", [])
    if not isinstance(items, list):
        raise CaseError(f"{path}: field 'difference': must be an array of tables ([[difference]]), "
                        f"got {toml_type(items)}")
    entries: list[Entry] = []
    seen: set[str] = set()
    for i, body in enumerate(items):
        who, _ = table_label(raw, ("difference", i))
        if not isinstance(body, dict):
            raise CaseError(f"{path}: difference #{i + 1}: must be a table ([[difference]]), got {toml_type(body)}")
        try:
            entry = Entry.model_validate(body)
        except ValidationError as e:
            raise CaseError(format_errors(e, f"{path}: {who}", body, whole="(entry)")) from None
        if entry.id in seen:
            raise CaseError(f"{path}: {who}: field 'id': duplicate")
        seen.add(entry.id)
        entries.append(entry)
    return entries


def apply_ledger(case: Case, adapter: str, version: str | None, ledger: list[Entry],
                 records: list[Result], data: CaseData | None = None, frozen_call: str = "") -> list[Result]:
    """Mark every failing record an applicable entry covers ``known``; return a ``stale`` record for each
    applicable entry that is judged in this case (``Entry.judged_in``) and covered nothing where what it covers
    was compared.

    An entry applies where its scope and conditions hold (``data``: the case's inputs, to measure them on). A
    numerical mechanism need not push every case where it can occur past the bound (a one-pass variance at a
    modest offset loses digits within it, which the weak tier shows), so an entry is judged only in the cases
    it names, or in its ``evidence`` cases: where the mechanism is known to show. A run that holds none of them
    (a user's own cases, a subset) judges nothing, and never reports a stale entry it cannot vouch for."""
    facts = case_facts(case, data) if any(e.when for e in ledger) else None
    entries = [e for e in ledger if e.applies(case, adapter, version, facts)]
    used: set[str] = set()
    for r in records:
        if r.verdict.fails_run and r.verdict != Verdict.STALE:
            explaining = [e for e in entries
                          if e.covers(r.quantity, r.mismatch_kind != MismatchKind.CHANGED, frozen_call)]
            if explaining:  # every entry that explains a failure is in use, the first is shown
                r.verdict = Verdict.KNOWN
                r.ledger = explaining[0].as_record()
                r.ledger_ids = [e.id for e in explaining]
                used.update(e.id for e in explaining)
    compared = {r.quantity for r in records if r.verdict != Verdict.SKIP and r.quantity != "outcome"}
    head = records[0]
    stale = []
    for e in entries:
        # an entry is judged only where what it covers was compared (not when the call raised or crashed)
        if e.id in used or not e.judged_in(case) or not (any(e.covers(q) for q in compared) or e.covers("outcome")):
            continue
        covers = "|".join(e.quantity)
        where = "a case it names" if e.cases else "one of its evidence cases"
        stale.append(Result(env=head.env, case=head.case, adapter=head.adapter, framework=head.framework,
                            framework_version=head.framework_version, quantity=None, covers=list(e.quantity),
                            verdict=Verdict.STALE, ledger=e.as_record(),
                            message=(f"ledger entry {e.id!r} expects a difference in {covers!r} here ({where}"
                                     + (f"; its conditions hold: {e.when.describe()}" if e.when else "")
                                     + "), but nothing differed: the framework changed or the entry is too wide")))
    return stale
