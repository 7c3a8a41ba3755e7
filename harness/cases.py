"""Case files: load, validate, expand.

A case file is UTF-8 TOML with an optional ``[defaults]`` table merged into
every case, any number of ``[[case]]`` tables, and any number of ``[[sweep]]``
tables that each expand one parameter over a list of values. Every error is a
``CaseError`` that names the file, the case (or sweep) and the field; no
malformed file gets through, and none ends in a traceback.

The rules beyond "the right TOML type" (each bound has its reason beside it):

* every number is finite (``inf``/``nan`` only through ``specials``);
* ``shape`` has rank 2 to 5 and at most 64M elements;
* generator parameters lie within +-1e100, so the float64 oracle's squared
  deviations stay finite; ``student_t`` needs ``df >= 1``;
* ``running_var``'s generator yields only values >= 0 (it is a variance);
* ``tolerance.factor`` widens the bound by more than 1 and at most 100 times;
* ``adapters``, ``channels``, sweep ``values`` and ledger globs are non-empty.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import math
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Dtype = Literal["float16", "bfloat16", "float32", "float64"]
LOW_PRECISION = ("float16", "bfloat16")
# How a layer is set up for its input dtype (mapped per adapter, like momentum):
#  pure:  parameters and running statistics in the input dtype, computed as the framework does it
#         (torch .half() / .bfloat16(), Keras dtype="float16", Flax dtype = param_dtype = float16);
#  mixed: 16-bit inputs with float32 parameters and running statistics (torch autocast, Keras
#         mixed_float16 / mixed_bfloat16, Flax dtype=float16 with param_dtype=float32).
Policy = Literal["pure", "mixed"]
# one call of the layer in a case's sequence (``calls``): a training call, an eval call, or a training call on a
# frozen layer (Keras trainable = False, torch parameters with requires_grad_(False)): what the framework does
# then is its convention (``Conventions.frozen_call``)
Call = Literal["train", "eval", "frozen"]
BATCH_CALLS = ("train", "frozen")  # the calls that take a training batch (train call i: batch i of these)
NOT_CASE_FILES = {"known_differences.toml", "bench.toml"}  # the ledger and the benchmark configurations
NAME_RE = re.compile(r"^[A-Za-z0-9_.+]+$")
GENERATOR_KINDS = ("normal", "uniform", "constant", "ramp", "student_t")

MAX_RANK = 5  # (N, C) plus up to three spatial axes: BatchNorm1d/2d/3d
MAX_ELEMENTS = 64 * 2**20
# Generator parameters: the float64 oracle squares deviations and sums them over up to 64M values;
# (1e100)^2 * 64M = 6.4e207, far inside float64's 1.8e308 even for heavy-tailed draws. Values beyond a
# low-precision dtype's range (float32 3.4e38, float16 65504) are still reachable, and become inf on the cast.
MAX_MAGNITUDE = 1e100
# A case may widen its error bound with a written reason, never tighten it (the bound is what a correct BN
# meets, measured in tests/unit/test_margins.py) and at most 100x: the planted bugs other than the subtlest
# exceed their bounds by 340x and more, so a wider bound would stop the comparison from telling them apart.
MAX_TOLERANCE_FACTOR = 100.0
MAX_TIMEOUT = 86_400.0  # a day; also far below threading.TIMEOUT_MAX, which a worker's wait must not exceed
MAX_DEPTH = 16  # tables and arrays nested in one file; a valid case file needs 8


class CaseError(ValueError):
    """A case file is malformed; the message names file, case and field."""


class FieldProblem(ValueError):
    """A check that names a field below where it is raised (a model validator has no location of its own):
    the message names ``<location>.<field>``."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class StrictModel(BaseModel):
    """TOML types its values already: nothing is coerced (strict: no "3" for 3, no true for 1), no unknown
    field, no inf or nan. Arrays are declared ``Field(strict=False)`` where the model holds a tuple (TOML
    gives lists); their items stay strict."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _name(v: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError("may hold only letters, digits, '_', '.', '+'")
    return v


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


Name = Annotated[str, AfterValidator(_name)]
Text = Annotated[str, AfterValidator(_not_blank)]
Magnitude = Annotated[float, Field(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
Spread = Annotated[float, Field(ge=0, le=MAX_MAGNITUDE)]


class _Generator(StrictModel):
    def value_range(self) -> tuple[float, float]:
        """The least and greatest value this generator can produce."""
        raise NotImplementedError


class Normal(_Generator):
    kind: Literal["normal"]
    loc: Magnitude = 0.0
    scale: Spread = 1.0

    def value_range(self) -> tuple[float, float]:
        return (self.loc, self.loc) if self.scale == 0 else (-math.inf, math.inf)


class Uniform(_Generator):
    kind: Literal["uniform"]
    low: Magnitude = 0.0
    high: Magnitude = 1.0

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low <= self.high:
            raise FieldProblem("low", f"low ({self.low}) must be <= high ({self.high})")
        return self

    def value_range(self) -> tuple[float, float]:
        return self.low, self.high


class Constant(_Generator):
    kind: Literal["constant"]
    value: Magnitude = 0.0

    def value_range(self) -> tuple[float, float]:
        return self.value, self.value


class Ramp(_Generator):
    """Evenly spaced values from start to stop over the flattened logical array."""

    kind: Literal["ramp"]
    start: Magnitude = 0.0
    stop: Magnitude = 1.0

    def value_range(self) -> tuple[float, float]:
        return min(self.start, self.stop), max(self.start, self.stop)


class StudentT(_Generator):
    """Heavy-tailed: loc + scale * t(df). ``df >= 1``: below it the draws reach 1e60 and beyond (df = 0.01
    overflows float64), so the "heavy tail" would be an overflow; plant non-finite values with ``specials``."""

    kind: Literal["student_t"]
    df: Annotated[float, Field(ge=1, le=MAX_MAGNITUDE)] = 2.0
    loc: Magnitude = 0.0
    scale: Spread = 1.0

    def value_range(self) -> tuple[float, float]:
        return (self.loc, self.loc) if self.scale == 0 else (-math.inf, math.inf)


Generator = Annotated[Normal | Uniform | Constant | Ramp | StudentT, Field(discriminator="kind")]


class ChannelOverride(StrictModel):
    """Replace the values of some channels with another generator."""

    channels: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    input: Generator


class Special(StrictModel):
    """Plant non-finite values at logical indices of every training batch."""

    value: Literal["nan", "inf", "-inf"]
    index: list[Annotated[int, Field(ge=0)]]


class ExpectRaise(StrictModel):
    type: str = Field(min_length=1)
    match: str = ""

    @field_validator("type")
    @classmethod
    def _class_name(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError("not an exception class name (the runner compares it with type(e).__name__)")
        return v

    @field_validator("match")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class ToleranceOverride(StrictModel):
    """Widen every bound of the case by ``factor`` (more than 1, at most 100), for a written reason."""

    factor: Annotated[float, Field(gt=1, le=MAX_TOLERANCE_FACTOR)]
    reason: str = Field(min_length=10)

    @field_validator("reason")
    @classmethod
    def _written(cls, v: str) -> str:
        if len(v.strip()) < 10:
            raise ValueError("give the reason in words (at least 10 characters)")
        return v


class Renorm(StrictModel):
    """Batch Renormalization (Ioffe 2017; Keras ``renorm=True``): in training the normalized values are corrected to
    ``r * xhat + d`` with ``r = sqrt(var + eps) / renorm_stddev`` and ``d = (mean - renorm_mean) / renorm_stddev``,
    each clipped (``rmin <= r <= rmax``, ``|d| <= dmax``; a bound left out does not clip that side) and held
    constant in the backward. ``momentum`` is the weight of the new batch statistic in the renorm moving mean and
    stddev, as the case's ``momentum`` is (Keras's ``renorm_momentum`` is ``1 - momentum``); the default 0.01 is
    Keras's default ``renorm_momentum=0.99``."""

    momentum: Annotated[float, Field(ge=0, le=1)] = 0.01
    rmin: Magnitude | None = None
    rmax: Magnitude | None = None
    dmax: Annotated[float, Field(ge=0, le=MAX_MAGNITUDE)] | None = None

    @model_validator(mode="after")
    def _ordered(self):
        if self.rmin is not None and self.rmax is not None and not self.rmin <= self.rmax:
            raise FieldProblem("rmax", f"rmax ({self.rmax}) must be >= rmin ({self.rmin}): r is clipped to "
                                       f"[rmin, rmax]")
        return self

    def clipping(self) -> dict[str, float]:
        """The clipping as Keras's ``renorm_clipping`` takes it: only the bounds given."""
        return {k: v for k, v in (("rmin", self.rmin), ("rmax", self.rmax), ("dmax", self.dmax)) if v is not None}


class Mask(StrictModel):
    """Which positions of each batch are unmasked (count in the statistics), framework-neutral: ``harness.inputs``
    builds the boolean mask from the case's seed and every adapter converts it to its framework's mask. A position
    is a sample and a spatial location; ``keep`` (the fraction of positions unmasked in each batch, drawn per batch
    from the seed) or ``samples`` (an explicit 0/1 per sample, the same in every batch) choose them, for every
    channel alike; ``masked_channels`` masks whole channels besides (a per-channel mask: Flax only). Every
    framework that takes a mask computes the statistics over the unmasked values and normalizes every position
    with them; the oracle defines the statistics exactly (``reference.masked_batch_stats``)."""

    keep: Annotated[float, Field(ge=0, le=1)] | None = None
    samples: Annotated[tuple[Annotated[int, Field(ge=0, le=1)], ...], Field(strict=False, min_length=1)] | None = None
    masked_channels: Annotated[tuple[Annotated[int, Field(ge=0)], ...], Field(strict=False)] = ()

    @model_validator(mode="after")
    def _one_way(self):
        if self.keep is not None and self.samples is not None:
            raise FieldProblem("samples", "give keep (a fraction of the positions) or samples (a 0/1 per sample), "
                                          "not both")
        return self


AdapterName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+*?\[\]-]+$")]


class SecondOrder(StrictModel):
    """``second_order = {}`` (or with ``direction``): the direction v of the Hessian-vector products, drawn per
    training call from its own seeded stream, in the input's shape (a generator table, as ``input``)."""

    direction: Generator = Normal(kind="normal")


class DataParallel(StrictModel):
    """``data_parallel = { replicas = 2, sync = true }``: each training batch is split along axis 0 into contiguous
    shards, one per replica (``split``: the shard sizes, in order, summing to N; default: N / replicas each), and
    every replica runs the layer on its shard. ``sync = true`` normalizes every shard with the statistics of the global
    batch (synchronized BN), ``false`` each with its own shard's; the gradients of parameters are reduced over the
    replicas as the adapter declares (``Conventions.replica_gradients``), and which running statistics survive the
    step is the adapter's convention too (``Conventions.replica_running``). Eval calls run on the whole eval batch
    with the running statistics kept."""

    replicas: Annotated[int, Field(ge=2, le=8)]
    sync: bool
    split: Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(strict=False)] | None = None

    @model_validator(mode="after")
    def _split_matches(self):
        if self.split is not None and len(self.split) != self.replicas:
            raise FieldProblem("split", f"{len(self.split)} shard sizes for {self.replicas} replicas: one per replica")
        return self

    @property
    def uneven(self) -> bool:
        return self.split is not None and len(set(self.split)) > 1


class Case(StrictModel):
    """One validated scenario. ``shape`` is logical: (N, C, *spatial)."""

    name: Name
    description: str = ""
    tags: Annotated[tuple[Name, ...], Field(strict=False)] = ()
    # N and the spatial sizes may be 0 (an empty batch, an empty shard): the layer then sees no value per channel
    shape: Annotated[tuple[Annotated[int, Field(ge=0)], ...], Field(strict=False)]
    layout: Literal["channels_first", "channels_last"] = "channels_first"
    # the channel axis as the layer is given it, for an input that is neither channels first nor last (2 of a rank-4
    # input: (N, H, C, W)); negative counts from the end; default: from layout (1 or -1)
    axis: int | None = None
    dtype: Dtype = "float32"
    param_dtype: Dtype | None = None
    precision: Policy | None = None
    momentum: Annotated[float, Field(ge=0, le=1)] | Literal["cumulative"] = 0.1
    eps: Annotated[float, Field(ge=0)] = 1e-5
    affine: bool = True
    # gamma and beta apart (Keras scale / center, Flax use_scale / use_bias); each defaults to ``affine``
    scale: bool | None = None
    center: bool | None = None
    track_running_stats: bool = True
    # Batch Renormalization (Keras renorm=True): None, or its momentum and clipping (``Renorm``)
    renorm: Renorm | None = None
    # a mask over the training batches' positions (``Mask``): the statistics come from the unmasked values only
    mask: Mask | None = None
    # ghost batch normalization (tf-keras ``virtual_batch_size``): a training call normalizes each of G = N / v groups
    # of v samples with the group's own statistics; group j is the strided set of samples {j, j + G, j + 2G, ...}
    # (``reference.ghost_groups``). v must divide N, except in a case that records a framework's refusal
    # (``_check_virtual_batch``)
    virtual_batch_size: Annotated[int, Field(ge=1)] | None = None
    # second-order derivatives: every training call also returns the Hessian-vector products of sum(y * g) in the
    # direction v (a seeded batch of its own, ``SecondOrder.direction``): hvp_x = d/de dx(x + e v) and
    # hvp_gamma = d/de dgamma(x + e v) (``_check_second_order``)
    second_order: SecondOrder | None = None
    # data parallelism (``DataParallel``): each training batch split into contiguous shards, one per replica, with
    # synchronized or per-replica statistics (``_check_data_parallel``)
    data_parallel: DataParallel | None = None
    contiguous: bool = True
    steps: Annotated[int, Field(ge=0, le=10_000)] = 3
    # the calls in order ("train": forward and backward in training mode; "eval": in inference mode; "frozen": in
    # training mode on a frozen layer); when given, ``steps`` is the number of its train and frozen calls (the
    # training batches it takes). Without it: ``steps`` train calls, then one eval
    calls: Annotated[tuple[Call, ...], Field(strict=False, min_length=1, max_length=10_000)] | None = None
    seed: Annotated[int, Field(ge=0)] = 0
    input: Generator = Normal(kind="normal")
    eval_input: Generator | None = None
    channel_overrides: Annotated[tuple[ChannelOverride, ...], Field(strict=False)] = ()
    specials: Annotated[tuple[Special, ...], Field(strict=False)] = ()
    grad: Generator = Normal(kind="normal")
    gamma: Generator = Uniform(kind="uniform", low=0.5, high=1.5)
    beta: Generator = Normal(kind="normal", loc=0.0, scale=0.5)
    running_mean: Generator = Constant(kind="constant", value=0.0)
    running_var: Generator = Constant(kind="constant", value=1.0)
    adapters: Annotated[tuple[AdapterName, ...], Field(strict=False, min_length=1)] | None = None
    use_defaults: bool = False
    timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)] | None = None
    expect_raise: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+-]+$")], ExpectRaise] = {}
    tolerance: ToleranceOverride | None = None
    sweep: dict[str, Any] | None = None  # set by the loader for a swept case: {name, param, value}
    file: str = ""  # set by the loader

    @model_validator(mode="before")
    @classmethod
    def _steps_of_calls(cls, data: Any) -> Any:
        """With ``calls``, ``steps`` counts its calls that take a training batch (and may be given only as that)."""
        if isinstance(data, dict) and isinstance(data.get("calls"), list | tuple):
            trains = sum(c in BATCH_CALLS for c in data["calls"])
            if "steps" in data and data["steps"] != trains:
                raise FieldProblem("steps", f"steps is {data['steps']!r} but calls has {trains} train call(s): give "
                                            f"one of them (with calls, steps is the number of its train and frozen "
                                            f"calls)")
            data = {**data, "steps": trains}
        return data

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not 2 <= len(v) <= MAX_RANK:
            raise ValueError(f"needs at least (N, C) and at most {MAX_RANK} axes (rank 2 to {MAX_RANK})")
        if v[1] < 1:
            raise ValueError(f"{list(v)} has no channel: C (the second size) is at least 1; N and the spatial sizes "
                             f"may be 0 (an empty batch)")
        if math.prod(v) > MAX_ELEMENTS:
            raise ValueError(f"{list(v)} has more than 64M elements")
        return v

    @field_validator("running_var")
    @classmethod
    def _variance(cls, v: _Generator) -> _Generator:
        low, _ = v.value_range()
        if low < 0:
            raise ValueError(f"a variance is never negative, but {v.kind!r} with these parameters can give {low}: "
                             "use constant, uniform or ramp with values >= 0")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        c = self.shape[1]
        for o in self.channel_overrides:
            bad = [ch for ch in o.channels if ch >= c]
            if bad:
                raise FieldProblem("channel_overrides", f"channels {bad} out of range for C={c}")
        for s in self.specials:
            if len(s.index) != len(self.shape) or any(i >= d for i, d in zip(s.index, self.shape)):
                raise FieldProblem("specials", f"index {s.index} outside logical shape {list(self.shape)}")
        if self.axis is not None:
            rank = len(self.shape)
            if self.layout == "channels_last":
                raise FieldProblem("axis", "give layout = channels_last or an axis, not both: the axis places the "
                                           "channels itself")
            if not -rank <= self.axis < rank:
                raise FieldProblem("axis", f"axis {self.axis} is outside a rank-{rank} input (-{rank} to {rank - 1})")
            if self.axis % rank == 0:
                raise FieldProblem("axis", f"axis {self.axis} is the batch axis (axis 0): the channel axis is another")
        if self.precision and self.param_dtype:
            raise FieldProblem("param_dtype", "give precision (pure or mixed) or param_dtype, not both: the "
                                              "policy decides the parameter dtype")
        if self.precision == "mixed" and self.dtype not in LOW_PRECISION:
            raise FieldProblem("precision", f"mixed precision is 16-bit inputs (float16, bfloat16) with float32 "
                                            f"parameters, not {self.dtype} inputs: leave precision out, or use pure")
        for name in ("scale", "center"):
            if getattr(self, name) and not self.affine:
                raise FieldProblem(name, f"affine = false is a layer without gamma and beta: leave affine out (or "
                                         f"true) to give {name} = true alone")
        if self.momentum == "cumulative" and not self.track_running_stats:
            raise FieldProblem("momentum", "momentum='cumulative' needs track_running_stats")
        self._check_renorm()
        self._check_mask()
        self._check_virtual_batch()
        self._check_second_order()
        self._check_data_parallel()
        return self

    def _check_data_parallel(self) -> None:
        """Shards are whole samples of a non-empty batch, every replica gets at least one; the oracle defines data
        parallelism for plain BN with running statistics and train and eval calls."""
        dp = self.data_parallel
        if dp is None:
            return
        n = self.shape[0]
        if dp.split is not None and sum(dp.split) != n:
            raise FieldProblem("data_parallel", f"split {list(dp.split)} sums to {sum(dp.split)}, not to the batch "
                                                f"size N = {n}")
        if dp.split is None and n % dp.replicas:
            raise FieldProblem("data_parallel", f"{dp.replicas} replicas do not divide N = {n}: give a divisor, or the "
                                                f"shard sizes in split")
        for what, problem in ((self.count == 0, "an empty batch has no sample to shard"),
                              (not self.track_running_stats, "data parallelism is defined with running statistics "
                                                             "only (what survives the step is the question)"),
                              (self.renorm is not None, "batch renormalization under data parallelism is not "
                                                        "defined by the oracle yet"),
                              (self.mask is not None, "a mask under data parallelism is not defined by the oracle "
                                                      "yet"),
                              (self.virtual_batch_size is not None, "virtual batches under data parallelism are not "
                                                                    "defined by the oracle yet"),
                              (self.second_order is not None, "second derivatives under data parallelism are not "
                                                              "defined by the oracle yet"),
                              (self.momentum == "cumulative", "a cumulative average under data parallelism is not "
                                                              "defined by the oracle yet"),
                              ("frozen" in self.schedule, "frozen calls under data parallelism are not defined by "
                                                          "the oracle yet")):
            if what:
                raise FieldProblem("data_parallel", problem)

    def _check_second_order(self) -> None:
        """The oracle's second derivatives are those of plain BN in training mode over a non-empty batch."""
        if self.second_order is None:
            return
        for what, problem in ((self.count == 0, "an empty batch has no second derivative (nothing to differentiate)"),
                              (self.renorm is not None, "second derivatives of batch renormalization are not "
                                                        "defined by the oracle yet"),
                              (self.mask is not None, "second derivatives with a mask are not defined by the oracle "
                                                      "yet"),
                              (self.virtual_batch_size is not None, "second derivatives of ghost BN are not "
                                                                    "defined by the oracle yet")):
            if what:
                raise FieldProblem("second_order", problem)

    def _check_virtual_batch(self) -> None:
        """A virtual batch splits each non-empty training batch into groups of ``virtual_batch_size`` samples whose
        statistics are averaged into the running statistics. The channel axis is never the batch axis (``axis``
        refuses 0), so the groups always split samples. An uneven split has no oracle: a case may give one only to
        record a framework's refusal, on the adapters whose ``expect_raise`` it names."""
        v = self.virtual_batch_size
        if v is None:
            return
        n = self.shape[0]
        for what, problem in ((self.count == 0, "an empty batch has no sample to split into virtual batches"),
                              (not self.track_running_stats, "ghost batch normalization is defined with running "
                                                             "statistics only (eval normalizes with them)"),
                              (self.renorm is not None, "batch renormalization with virtual batches is not defined "
                                                        "by the oracle yet"),
                              (self.mask is not None, "a mask with virtual batches is not defined by the oracle yet"),
                              (self.momentum == "cumulative", "no framework with virtual batches has a cumulative "
                                                              "average")):
            if what:
                raise FieldProblem("virtual_batch_size", problem)
        if n % v == 0:
            return
        names = set(self.expect_raise)
        if not names or self.adapters is None or not set(self.adapters) <= names:
            raise FieldProblem("virtual_batch_size", f"{v} does not divide the batch size N = {n}: the oracle "
                                                     f"defines no uneven split. Give a divisor of {n}, or record a "
                                                     f"framework's refusal: expect_raise for each adapter, and "
                                                     f"adapters = those names")

    def _check_mask(self) -> None:
        """A mask selects positions of a non-empty batch whose masked statistics go into running statistics."""
        mk = self.mask
        if mk is None:
            return
        if mk.samples is not None and len(mk.samples) != self.shape[0]:
            raise FieldProblem("mask", f"samples has {len(mk.samples)} entries for N = {self.shape[0]}: one 0/1 "
                                       f"per sample")
        bad = [ch for ch in mk.masked_channels if ch >= self.channels]
        if bad:
            raise FieldProblem("mask", f"masked_channels {bad} out of range for C={self.channels}")
        for what, problem in ((self.count == 0, "an empty batch has no position to mask"),
                              (not self.track_running_stats, "the masked statistics are defined with running "
                                                             "statistics only (eval ignores the mask)"),
                              (self.renorm is not None, "batch renormalization with a mask is not defined by the "
                                                        "oracle yet"),
                              (self.momentum == "cumulative", "no framework with a mask has a cumulative average")):
            if what:
                raise FieldProblem("mask", problem)

    def _check_renorm(self) -> None:
        """Batch Renormalization keeps moving statistics and averages them with a momentum of its own."""
        if self.renorm is None:
            return
        if not self.track_running_stats:
            raise FieldProblem("renorm", "batch renormalization corrects with moving statistics: it needs "
                                         "track_running_stats")
        if self.momentum == "cumulative":
            raise FieldProblem("renorm", "batch renormalization averages with a momentum (Keras has no cumulative "
                                         "average): give a numeric momentum")
        if self.count == 0:
            raise FieldProblem("renorm", "batch renormalization of an empty batch (N or a spatial size 0) is not "
                                         "defined by the oracle yet: give a non-empty shape")

    @property
    def schedule(self) -> tuple[str, ...]:
        """The calls in order: ``calls`` as given, else the short form, ``steps`` train calls and one eval call.
        Records name a call by its index here (``step``); the ``i``-th train or frozen call is fed training batch
        ``i``, every eval call the one held-out eval batch (validation on the same data each epoch)."""
        return tuple(self.calls) if self.calls is not None else ("train",) * self.steps + ("eval",)

    @property
    def batches(self) -> tuple[int | None, ...]:
        """The batch each call of ``schedule`` takes: the index of the training batch for a train or frozen call
        (its place among them), None for an eval call (the eval batch)."""
        out, batch = [], 0
        for kind in self.schedule:
            out.append(None if kind == "eval" else batch)
            batch += kind != "eval"
        return tuple(out)

    @property
    def groups(self) -> int:
        """G, the number of virtual batches a training batch is split into (N / virtual_batch_size; 1 without
        one)."""
        v = self.virtual_batch_size
        return 1 if v is None else max(self.shape[0] // v, 1)

    @property
    def shards(self) -> tuple[int, ...]:
        """The sizes of the replicas' shards of a training batch, in order (one shard, N, without data parallelism)."""
        dp = self.data_parallel
        if dp is None:
            return (self.shape[0],)
        split = getattr(dp, "split", None)  # (a reproducer's case holds only the fields given)
        return tuple(split) if split is not None else (self.shape[0] // dp.replicas,) * dp.replicas

    @property
    def has_scale(self) -> bool:
        """Does the layer have gamma (``scale``, which defaults to ``affine``)?"""
        return self.affine if self.scale is None else self.scale

    @property
    def has_center(self) -> bool:
        """Does the layer have beta (``center``, which defaults to ``affine``)?"""
        return self.affine if self.center is None else self.center

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def count(self) -> int:
        """Values per channel in one batch: N * prod(spatial)."""
        return math.prod(self.shape) // self.shape[1]

    @property
    def channel_axis(self) -> int:
        """The channel axis of the input as the layer is given it (the physical array): ``axis``, or 1 for
        channels_first and -1 for channels_last."""
        if self.axis is not None:
            return self.axis
        return 1 if self.layout == "channels_first" else -1

    @property
    def physical_shape(self) -> tuple[int, ...]:
        """The input's shape as the layer is given it: the logical (N, C, *spatial) with C moved to the channel
        axis."""
        dims = [self.shape[0], *self.shape[2:]]
        dims.insert(self.channel_axis % len(self.shape), self.shape[1])
        return tuple(dims)

    @property
    def resolved_param_dtype(self) -> str:
        """The dtype of gamma, beta and the initial running statistics."""
        if self.param_dtype:
            return self.param_dtype
        if self.precision == "pure":
            return self.dtype
        return "float64" if self.dtype == "float64" else "float32"

    @property
    def policy(self) -> str:
        """``pure``, ``mixed`` (a 16-bit input with float32 parameters, the default for 16-bit inputs), or
        ``custom`` (a ``param_dtype`` that is neither)."""
        if self.precision:
            return self.precision
        pd = self.resolved_param_dtype
        if pd == self.dtype:
            return "pure"
        return "mixed" if self.dtype in ("float16", "bfloat16") and pd == "float32" else "custom"

    def applies_to(self, adapter: str) -> bool:
        return self.adapters is None or any(fnmatch.fnmatchcase(adapter, p) for p in self.adapters)

    def summary(self) -> dict[str, Any]:
        """Plain-data view for results files and reports."""
        return self.model_dump(mode="json", exclude={"file"}, exclude_none=True)


LOADER_FIELDS = {"sweep", "file"}  # what the loader sets on a case; a file may not
CASE_FIELDS = set(Case.model_fields) - LOADER_FIELDS


class Sweep(StrictModel):
    """One ``[[sweep]]``: the cases ``<name>_<label>``, one per value of ``param``, over ``base``."""

    name: Name
    param: str
    values: list[Any] = Field(min_length=1)
    base: dict[str, Any] = {}
    tags: Annotated[tuple[Name, ...], Field(strict=False)] = ()
    labels: list[Name] | None = None
    description: str = ""

    @field_validator("param")
    @classmethod
    def _case_field(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)*", v):
            raise ValueError("must name a case field, or a dotted path into one ('eps', 'input.loc')")
        top = v.split(".")[0]
        if top not in CASE_FIELDS or top == "name":
            raise ValueError(f"{top!r} is not a case field a sweep can vary")
        return v

    @field_validator("base")
    @classmethod
    def _base(cls, v: dict[str, Any]) -> dict[str, Any]:
        owned = sorted(set(v) & (LOADER_FIELDS | {"name"}))
        if owned:
            raise FieldProblem(owned[0], "set by the sweep itself (the name is <sweep>_<label>)")
        return v

    @model_validator(mode="after")
    def _labelled(self):
        labels = self.case_labels()
        if len(labels) != len(self.values):
            raise FieldProblem("labels", f"{len(labels)} labels for {len(self.values)} values")
        seen: dict[str, Any] = {}
        for v, lab in zip(self.values, labels):
            if lab in seen:
                field = "labels" if self.labels else "values"
                raise FieldProblem(field, f"two values give the case name {self.name + '_' + lab!r} "
                                          f"({seen[lab]!r} and {v!r}); give distinct labels")
            seen[lab] = v
        return self

    def case_labels(self) -> list[str]:
        return list(self.labels) if self.labels is not None else [_label(v) for v in self.values]


# -- reading TOML --------------------------------------------------------------------------------------

_ARRAYS = ("case", "sweep", "difference")  # the arrays of tables a case file or a ledger holds


def table_label(raw: Any, loc: tuple) -> tuple[str, tuple]:
    """('case 'x'' / 'sweep 'x'' / '[defaults]', the rest of loc) for a location in a parsed file."""
    if not loc or not isinstance(raw, dict):
        return "", loc
    top = loc[0]
    if top == "defaults":
        return "[defaults]", loc[1:]
    if top in _ARRAYS and len(loc) > 1 and isinstance(loc[1], int):
        items = raw.get(top)
        item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        key = "id" if top == "difference" else "name"
        ident = item.get(key) if isinstance(item, dict) else None
        label = repr(ident) if isinstance(ident, str) and ident.isprintable() else f"#{loc[1] + 1}"
        return f"{top} {label}", loc[2:]
    return "", loc


def _dotted(parts) -> str:
    parts = [str(p) for p in parts]
    if len(parts) > MAX_DEPTH:
        parts = [*parts[:MAX_DEPTH], "..."]
    return ".".join(parts)


def _where(path: Path, raw: Any, loc: tuple) -> str:
    who, rest = table_label(raw, loc)
    head = f"{path}: {who}" if who else f"{path}"
    return f"{head}: field '{_dotted(rest)}'" if rest else head


def _walk(node: Any, found: Callable[[Any], bool]) -> tuple | None:
    """The location of the first key or value that ``found`` accepts, without recursion."""
    stack: list[tuple[tuple, Any]] = [((), node)]
    while stack:
        loc, cur = stack.pop()
        items = cur.items() if isinstance(cur, dict) else enumerate(cur) if isinstance(cur, list) else ()
        children = []
        for k, v in items:
            if found(k) or found(v):
                return (*loc, k)
            children.append(((*loc, k), v))
        stack.extend(reversed(children))
    return None


def _too_deep(node: Any) -> tuple | None:
    """The location where tables and arrays nest deeper than MAX_DEPTH, without recursion."""
    stack: list[tuple[tuple, Any]] = [((), node)]
    while stack:
        loc, cur = stack.pop()
        if not isinstance(cur, dict | list):
            continue
        if len(loc) >= MAX_DEPTH:
            return loc
        items = cur.items() if isinstance(cur, dict) else enumerate(cur)
        stack.extend(((*loc, k), v) for k, v in items)
    return None


def _has_surrogate(v: Any) -> bool:
    return isinstance(v, str) and any("\udc80" <= ch <= "\udcff" for ch in v)


def _not_utf8(path: Path, data: bytes, e: UnicodeDecodeError) -> str:
    line = data.count(b"\n", 0, e.start) + 1
    col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
    what = f"not UTF-8 text: byte 0x{data[e.start]:02x} on line {line}, column {col}"
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        what += " (a UTF-16 byte order mark: save the file as UTF-8)"
    try:  # name the case and the field when the byte is inside a string
        raw = tomllib.loads(data.decode("utf-8", "surrogateescape"))
        loc = _walk(raw, _has_surrogate)
    except (tomllib.TOMLDecodeError, RecursionError):
        loc = None
    if loc:
        return f"{_where(path, raw, loc)}: {what}"
    return f"{path}: {what}"


def _too_deep_text(text: str) -> tuple[int, int, int] | None:
    """(line, start, end) of the first bracket or brace, outside strings and comments, that opens more than
    MAX_DEPTH deep, and the end of its value (-1 when it never closes); None when nothing is that deep."""
    depth, line, i, n = 0, 1, 0, len(text)
    opened = None
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif ch in "\"'":
            q = ch * 3 if text.startswith(ch * 3, i) else ch
            j = i + len(q)
            while j < n and not text.startswith(q, j):
                j += 2 if ch == '"' and text[j] == "\\" else 1
            line += text.count("\n", i, j)
            i = j + len(q)
            continue
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH and opened is None:
                opened = (line, i, depth)
        elif ch in "]}":
            if opened and depth == opened[2]:
                return opened[0], opened[1], i + 1
            depth -= 1
        i += 1
    return (opened[0], opened[1], -1) if opened else None


_DEEP = "@bnparity: nested too deep@"


def _nested_too_deep(path: Path, text: str) -> str:
    """The message for a file tomllib cannot parse for its nesting: the too-deep value is cut out and the rest
    parsed again, so the message can name the case and the field that hold it."""
    found = _too_deep_text(text)
    what = f"tables or arrays nested more than {MAX_DEPTH} deep; no case needs it"
    if found is None:
        return f"{path}: {what}"
    line, start, end = found
    if end > 0:
        try:
            raw = tomllib.loads(f'{text[:start]}"{_DEEP}"{text[end:]}')
            loc = _walk(raw, lambda v: v == _DEEP)
        except (tomllib.TOMLDecodeError, RecursionError):
            loc = None
        if loc:
            return f"{_where(path, raw, loc)}: {what} (line {line})"
    return f"{path}: line {line}: {what}"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a UTF-8 TOML file; every way it can fail is a CaseError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CaseError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CaseError(_not_utf8(path, data, e)) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CaseError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise CaseError(_nested_too_deep(path, text)) from None
    loc = _too_deep(raw)
    if loc:
        raise CaseError(f"{_where(path, raw, loc)}: tables or arrays nested more than {MAX_DEPTH} deep; "
                        "no case needs it")
    return raw


# -- pydantic errors as messages -----------------------------------------------------------------------

def toml_type(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    return {int: "an integer", float: "a float", str: "a string", list: "an array", tuple: "an array",
            dict: "a table"}.get(type(v), f"a {type(v).__name__}")


_TYPE_MESSAGES = {
    "float_type": "must be a number", "int_type": "must be an integer", "string_type": "must be a string",
    "bool_type": "must be true or false", "list_type": "must be an array", "tuple_type": "must be an array",
    "dict_type": "must be a table", "model_type": "must be a table", "model_attributes_type": "must be a table",
    "finite_number": "must be a finite number (inf and nan are not allowed)",
}


_BOUNDS = {"greater_than": "greater than", "greater_than_equal": "greater than or equal to",
           "less_than": "less than", "less_than_equal": "less than or equal to"}


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _error_line(e: dict, data: Any, whole: str) -> tuple[str, str, str]:
    """(field, message, got) of one pydantic error. The location is mapped onto the data that was validated:
    a step that is not a key or index of it (a union member, a validator, a discriminator's tag) is left out,
    so no pydantic-internal name can reach the message (a missing field is the one step allowed past it)."""
    parts: list[Any] = []
    cur = data
    loc = list(e["loc"])
    for i, seg in enumerate(loc):
        if isinstance(cur, dict) and seg in cur:
            parts.append(seg)
            cur = cur[seg]
        elif isinstance(cur, list) and isinstance(seg, int) and 0 <= seg < len(cur):
            parts.append(seg)
            cur = cur[seg]
        elif e["type"] == "missing" and i == len(loc) - 1:
            parts.append(seg)
        # else: pydantic's own step (a union member, a discriminator's tag, a validator): not in the data
    typ, ctx = e["type"], e.get("ctx") or {}
    err = ctx.get("error")
    got = e.get("input")
    got_s = ""
    if typ == "extra_forbidden":
        msg = "unknown field"
    elif typ == "missing":
        msg = "required field is missing"
    elif typ in ("union_tag_not_found", "union_tag_invalid"):
        key = str(ctx.get("discriminator", "kind")).strip("'")
        parts.append(key)
        kinds = " | ".join(GENERATOR_KINDS)
        if typ == "union_tag_not_found":
            msg = f"required field is missing (one of {kinds})"
        else:
            msg = f"must be one of {kinds}"
            got_s = f" (got {_short(got.get(key) if isinstance(got, dict) else got)})"
    elif typ == "literal_error" and "expected" in ctx:
        msg = f"must be {ctx['expected']}"
        got_s = f" (got {_short(got)})"
    elif typ in _BOUNDS and len(ctx) == 1:
        bound = next(iter(ctx.values()))
        msg = f"Input should be {_BOUNDS[typ]} {bound:g}" if isinstance(bound, float) else e["msg"]
        got_s = f" (got {_short(got)})"
    elif typ in _TYPE_MESSAGES:
        msg = _TYPE_MESSAGES[typ]
        got_s = f" (got {toml_type(got)}: {_short(got)})"
    elif isinstance(err, Exception):
        if isinstance(err, FieldProblem):
            parts.append(err.field)
        msg = str(err)
        if not isinstance(got, dict | BaseModel):
            got_s = f" (got {_short(got)})"
    else:
        msg = e["msg"]
        if not isinstance(got, dict | BaseModel):
            got_s = f" (got {_short(got)})"
    return _dotted(parts) or whole, msg, got_s


def format_errors(err: ValidationError, where: str, data: Any, note: Callable[[str], str] = lambda f: "",
                  whole: str = "(case)") -> str:
    """One line per field: ``<where>: field '<field>': <message> (got <value>)``; ``whole`` names a check of
    the whole table. Errors that land on the same field (the members of a union) share a line, joined by
    ``or``."""
    by_field: dict[str, tuple[list[str], str]] = {}
    for e in err.errors():
        field, msg, got = _error_line(e, data, whole)
        msgs, _ = by_field.setdefault(field, ([], got))
        if msg not in msgs:
            msgs.append(msg)
    return "\n".join(f"{where}: field '{field}': {', or '.join(msgs)}{got}{note(field)}"
                     for field, (msgs, got) in by_field.items())


# -- loading -------------------------------------------------------------------------------------------

def _set_path(body: dict, dotted: str) -> tuple[dict, str]:
    """(the table that holds the swept key, the key). A generator or table the case leaves at its default is
    filled in from that default first, so ``param = "input.loc"`` varies the default input's mean."""
    keys = dotted.split(".")
    d = body
    for depth, k in enumerate(keys[:-1]):
        if k not in d:
            default = Case.model_fields[k].default if depth == 0 else None
            if isinstance(default, BaseModel):
                d[k] = default.model_dump()
            elif isinstance(default, dict) or depth > 0:
                d[k] = {}
            else:
                raise ValueError(f"{k!r} has no default table to set {keys[depth + 1]!r} in: give {k} in [sweep.base]")
        d = d[k]
        if not isinstance(d, dict):
            raise ValueError(f"{'.'.join(keys[:depth + 1])} is not a table")
    return d, keys[-1]


def _label(v: Any) -> str:
    """A name-safe label: 1e-05 -> 1em5, 1e+07 -> 1e7, -2.5 -> m2.5, [2, 3] -> 2_3."""
    if isinstance(v, float):
        s = f"{v:g}"
        s = re.sub(r"e([+-])0*(\d)", lambda m: ("em" if m.group(1) == "-" else "e") + m.group(2), s)
    elif isinstance(v, list):
        s = "_".join(_label(x) for x in v)
    else:
        s = str(v)
    return re.sub(r"[^A-Za-z0-9.+]", "_", s.replace("-", "m"))


def _expand_sweep(sw: Sweep, path: Path, defaults: dict) -> list[tuple[str, dict, set[str]]]:
    out = []
    for v, lab in zip(sw.values, sw.case_labels()):
        body = copy.deepcopy(defaults)
        body.update(copy.deepcopy(sw.base))
        body["name"] = f"{sw.name}_{lab}"
        tags = body.get("tags", [])
        if isinstance(tags, list) and all(isinstance(t, str) for t in tags):  # else the case names 'tags'
            body["tags"] = list(dict.fromkeys([*tags, *sw.tags, sw.name]))
        where = f"{path}: case {body['name']!r} (sweep {sw.name!r})"
        try:
            table, key = _set_path(body, sw.param)
        except ValueError as e:
            raise CaseError(f"{path}: sweep {sw.name!r}: field 'param': cannot set {sw.param!r}: {e}") from None
        table[key] = copy.deepcopy(v)
        body["sweep"] = {"name": sw.name, "param": sw.param, "value": v}
        if sw.description and not body.get("description"):
            body["description"] = sw.description
        out.append((where, body, set(defaults) - set(sw.base) - {sw.param.split(".")[0]}))
    return out


def _array_of_tables(raw: dict, key: str, path: Path) -> list[dict]:
    items = raw.get(key, [])
    if not isinstance(items, list):
        raise CaseError(f"{path}: field '{key}': must be an array of tables ([[{key}]]), "
                        f"got {toml_type(items)}: {_short(items)}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise CaseError(f"{path}: {key} #{i + 1}: must be a table ([[{key}]]), got {toml_type(item)}: "
                            f"{_short(item)}")
    return items


def load_file(path: Path) -> list[Case]:
    """Load and validate every case of one file."""
    path = Path(path)
    raw = read_toml(path)
    extra = set(raw) - {"defaults", "case", "sweep"}
    if extra:
        raise CaseError(f"{path}: top-level table '{sorted(extra)[0]}': unknown (allowed: defaults, case, sweep)")
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        raise CaseError(f"{path}: field 'defaults': must be a table ([defaults]), got {toml_type(defaults)}")
    for key in sorted(defaults):
        if key not in CASE_FIELDS:
            raise CaseError(f"{path}: [defaults]: field '{key}': unknown field")
        if key == "name":
            raise CaseError(f"{path}: [defaults]: field 'name': every case needs its own name")
    case_tables, sweep_tables = _array_of_tables(raw, "case", path), _array_of_tables(raw, "sweep", path)
    if not case_tables and not sweep_tables:
        raise CaseError(f"{path}: no [[case]] or [[sweep]]: a case file defines at least one case")
    bodies: list[tuple[str, dict, set[str]]] = []
    for i, body in enumerate(case_tables):
        who, _ = table_label(raw, ("case", i))
        owned = sorted(set(body) & LOADER_FIELDS)
        if owned:
            raise CaseError(f"{path}: {who}: field '{owned[0]}': unknown field (the loader sets it)")
        bodies.append((f"{path}: {who}", {**copy.deepcopy(defaults), **body}, set(defaults) - set(body)))
    for i, table in enumerate(sweep_tables):
        try:
            sw = Sweep.model_validate(table)
        except ValidationError as e:
            who, _ = table_label(raw, ("sweep", i))
            raise CaseError(format_errors(e, f"{path}: {who}", table)) from None
        bodies.extend(_expand_sweep(sw, path, defaults))
    cases = []
    for where, body, from_defaults in bodies:
        body["file"] = str(path)
        # steps and calls say one thing in two ways: the case's own one replaces the other from [defaults]
        for own, other in (("calls", "steps"), ("steps", "calls")):
            if own in body and own not in from_defaults and other in from_defaults:
                del body[other]

        def note(field: str, from_defaults=from_defaults) -> str:
            return " (set in [defaults])" if field.split(".")[0] in from_defaults else ""

        try:
            cases.append(Case.model_validate(body))
        except ValidationError as e:
            raise CaseError(format_errors(e, where, body, note)) from None
    return cases


def load_cases(paths) -> list[Case]:
    """Load every ``*.toml`` under the given files or folders; names must be unique."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.glob("*.toml") if f.name not in NOT_CASE_FILES))
        elif p.exists():
            files.append(p)
        else:
            raise CaseError(f"{p}: no such case file or folder")
    seen: dict[str, str] = {}
    out: list[Case] = []
    for f in files:
        for c in load_file(f):
            if c.name in seen:
                raise CaseError(f"{f}: case {c.name!r}: field 'name': duplicate, already defined in {seen[c.name]}")
            seen[c.name] = str(f)
            out.append(c)
    return out


def cases_hash(paths) -> str:
    """sha256 over the case files' bytes, in sorted path order."""
    h = hashlib.sha256()
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(f for f in p.glob("*.toml") if f.name != "bench.toml") if p.is_dir() else [p])
    for f in sorted(files):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()
