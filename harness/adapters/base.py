"""The adapter interface.

An adapter wraps one framework path. It is a plain object with:

* ``name``: the id used in test ids, results and the ledger (``torch``).
* ``framework``: the distribution whose version scopes ledger entries.
* ``conventions``: what it declares about its framework (``Conventions``).
* ``available()``: None, or the reason it cannot run here (never imports).
* ``versions()``: ``{distribution: version}`` of what it uses (never imports).
* ``supports(case)``: None, or the reason this case is a skip (the base class reads
  ``refuses``: the dtype configurations the framework refuses, with what it says).
* ``settings(case)``: the settings as passed to the framework (for reports).
* ``precision(case)``: the dtypes it computes, stores and returns in (``Precision``).
* ``run(case, data) -> Observed``: the real work, called in a worker process.
* ``path``: how the framework's BN is run: ``eager`` (the layer called as users write it), or a compiled,
  graph, exported or converted path (``PATHS``), with ``source`` the eager adapter it starts from and ``omits``
  the quantities the path does not produce, with why (an inference-only export has no gradients). Only eager
  adapters run unless asked for by name, glob or ``path:<kind>`` (``select``).

Subclass ``Adapter`` and implement ``build``, ``train_step`` and
``eval_step``; ``run`` drives them and turns a framework exception into a
recorded outcome. ``build`` returns the adapter's own state object (any object;
the Keras, TensorFlow and Flax adapters use a small dataclass), which is
handed back to the other two. Register it in the ``bnparity.adapters`` entry-point group
(``name = "module:attr"``), or list ``module:attr`` in ``BNPARITY_ADAPTERS``.

An adapter that can be timed by ``bnparity bench`` also has the
``BenchHooks``: ``bench_variants``, ``bench_devices()`` and
``bench_callable(...)``. They are optional; the benchmark skips an adapter
without them.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import importlib.util
import os
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from harness.cases import Case
from harness.inputs import CaseData
from reference import GHOST_UPDATES, REPLICA_GRADIENTS, REPLICA_RUNNING

IN_WORKER = "BNPARITY_IN_WORKER"  # set inside worker processes (harness.workers)


@dataclass(frozen=True)
class Raises:
    """What a framework raises where it refuses a setting: the exception's class name, a regular
    expression its message matches, and where the framework decides it (a link or source location)."""

    type: str
    match: str
    source: str = ""

    def matches(self, type_name: str, message: str) -> bool:
        return type_name == self.type and re.search(self.match, message) is not None


COMPUTES = "computes"
# how an adapter runs the framework's BatchNorm (Adapter.path): the layer as users call it, a graph or compiler
# (tf.function, XLA, torch.compile), an exported program run by another runtime (ONNX Runtime, LiteRT, the ONNX
# reference evaluator), a model converted into another framework, or the layer under data parallelism
PATHS = ("eager", "graph", "compiled", "exported", "converted", "distributed")
FROZEN_CALLS = ("", "inference", "batch_statistics")  # Conventions.frozen_call


@dataclass(frozen=True)
class Conventions:
    """What a framework does that the case does not decide.

    ``momentum_style``: how the framework's momentum argument reads:
    ``weight_of_new`` (PyTorch) receives the case momentum, ``decay_of_old``
    (Keras, Flax) receives ``1 - momentum``. ``running_var_estimator`` is one
    of ``reference.ESTIMATORS``. ``default_momentum`` is in the framework's
    own style.

    ``single_value_training`` (one value per channel, N * prod(spatial) == 1) and
    ``zero_eps_training`` (eps == 0 as passed to the framework) say what the framework does in a
    call that normalizes with the batch statistics (a training step; eval too when the case keeps
    no running statistics): ``"computes"``, or ``Raises(type, match, source)``. A declared raise
    is the expected outcome of every case that triggers it (``raises_on``) unless the case's own
    ``expect_raise`` names the adapter: the verdict is ``expected-raise``, and ``fail`` if the
    call returns.

    ``frozen_call``: what a training-mode call does on a frozen layer (a case's ``"frozen"`` calls: the
    framework's way of freezing, Keras ``trainable = False``, torch ``requires_grad_(False)``):
    ``"inference"`` (it normalizes with the running statistics and leaves them as they are, as in eval) or
    ``"batch_statistics"`` (freezing the parameters changes nothing about the mode: batch statistics, and the
    running statistics updated); ``""``: the framework has no frozen layer (a skip, with ``frozen_note``).
    ``frozen_note`` says where the framework decides it.

    ``virtual_batch_update``: how a ghost-BN training call (a case's ``virtual_batch_size``) updates the running
    statistics, one of ``reference.GHOST_UPDATES``: ``"group_average"`` (once, with the averages over the virtual
    batches of their means and variances: tf-keras) or ``"sequential"`` (once per virtual batch, in order: the ghost
    BN paper's algorithm, a BN module called per chunk). Only adapters that run virtual batches read it.

    ``replica_running`` and ``replica_gradients``: under data parallelism (a case's ``data_parallel``), which copy of
    the running statistics survives a training step, one of ``reference.REPLICA_RUNNING`` (``"first"``: replica 0's,
    ``"mean"``: the replicas' average), and how the parameters' gradients are reduced over the replicas, one of
    ``reference.REPLICA_GRADIENTS`` (``"sum"``: the gradient of the global loss; ``"mean"``: torch DDP's average).
    Only data-parallel adapters read them.
    """

    momentum_style: str
    running_var_estimator: str
    default_eps: float
    default_momentum: float
    native_layout: str
    single_value_training: str | Raises = COMPUTES
    zero_eps_training: str | Raises = COMPUTES
    frozen_call: str = ""
    frozen_note: str = ""
    virtual_batch_update: str = "group_average"
    replica_running: str = "first"
    replica_gradients: str = "sum"
    notes: str = ""

    def __post_init__(self) -> None:
        if self.frozen_call not in FROZEN_CALLS:
            raise TypeError(f"Conventions.frozen_call is one of {FROZEN_CALLS}, not {self.frozen_call!r}")
        if self.virtual_batch_update not in GHOST_UPDATES:
            raise TypeError(f"Conventions.virtual_batch_update is one of {GHOST_UPDATES}, not "
                            f"{self.virtual_batch_update!r}")
        for name, allowed in (("replica_running", REPLICA_RUNNING), ("replica_gradients", REPLICA_GRADIENTS)):
            if getattr(self, name) not in allowed:
                raise TypeError(f"Conventions.{name} is one of {allowed}, not {getattr(self, name)!r}")
        for name in ("single_value_training", "zero_eps_training"):
            value = getattr(self, name)
            if value != COMPUTES and not isinstance(value, Raises):
                raise TypeError(f"Conventions.{name} is {COMPUTES!r} or Raises(type, match, source) naming the "
                                f"exception the framework raises, not {value!r}")

    def raises_on(self, case: Any, eps: float) -> list[tuple[str, Raises]]:
        """The declared raises that ``case`` triggers, with ``eps`` as the framework gets it: ``[(what, Raises)]``."""
        if case.steps == 0 and case.track_running_stats:
            return []  # no call normalizes with the batch statistics
        out = []
        if case.count == 1 and isinstance(self.single_value_training, Raises):
            out.append(("one value per channel in training", self.single_value_training))
        if eps == 0 and isinstance(self.zero_eps_training, Raises):
            out.append(("eps = 0 in training", self.zero_eps_training))
        return out

    def framework_momentum(self, case_momentum: float) -> float:
        """Translate a weight-of-new momentum into the framework's argument."""
        if self.momentum_style == "weight_of_new":
            return case_momentum
        if self.momentum_style == "decay_of_old":
            return 1.0 - case_momentum
        raise ValueError(f"unknown momentum_style {self.momentum_style!r}")

    def case_momentum(self, framework_momentum: float) -> float:
        """The inverse of ``framework_momentum``."""
        return self.framework_momentum(framework_momentum)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Refusal:
    """(input dtype, parameter dtype) pairs a framework refuses, and what it says: the exception's class
    name and the start of its message, verbatim (a tuple where the framework picks one of several
    messages, in no fixed order), and where the framework decides it.

    ``only_if`` narrows it to the cases it holds for (None: every case with one of the pairs).
    An adapter lists its refusals in ``Adapter.refuses``; ``supports`` turns them into skips.
    """

    pairs: frozenset[tuple[str, str]]
    type: str
    says: str | tuple[str, ...]
    source: str
    only_if: Callable[[Case], bool] | None = None

    @property
    def messages(self) -> tuple[str, ...]:
        return (self.says,) if isinstance(self.says, str) else self.says

    def applies(self, case: Case) -> bool:
        return ((case.dtype, case.resolved_param_dtype) in self.pairs
                and (self.only_if is None or self.only_if(case)))


@dataclass(frozen=True)
class Precision:
    """The dtypes a framework works in for one case, as the adapter declares them (``Adapter.precision``):

    * ``statistics``: the batch mean and variance are accumulated (reduced) in this dtype;
    * ``held``: they are rounded to this dtype before the normalization uses them;
    * ``normalize``: the element-wise normalization ``(x - mean) * invstd * gamma + beta`` and its
      gradient are computed in this dtype;
    * ``running``: the running mean and variance are stored in this dtype;
    * ``params``: gamma and beta are used in this dtype (rounded to it before use where the case gives them
      wider), and dgamma and dbeta returned in it;
    * ``output``: y and dx are returned in this dtype;
    * ``eval_held``, ``eval_normalize``: where the eval call differs from training (Flax nnx with ``dtype``
      set casts the running statistics to it and normalizes in it), the dtype the running statistics are
      rounded to before use and the one the eval normalization runs in; empty: as in training.

    The oracle's error bound is built from these (``harness.expected``), and the report shows them.
    """

    statistics: str
    held: str
    normalize: str
    running: str
    params: str
    output: str
    eval_held: str = ""
    eval_normalize: str = ""

    @classmethod
    def of(cls, case: Case) -> Precision:
        """What a framework that widens 16-bit math to float32 does: statistics and normalization in float32
        (float64 for a float64 input: the input's precision decides, float64 parameters on a float32 input do
        not widen the math), parameters and running statistics in the case's parameter dtype, outputs in the
        input dtype."""
        pd = case.resolved_param_dtype
        wide = "float64" if case.dtype == "float64" else "float32"
        return cls(statistics=wide, held=wide, normalize=wide, running=pd, params=pd, output=case.dtype)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Raised:
    type: str
    message: str
    stage: str
    traceback: str = ""

    @classmethod
    def of(cls, e: BaseException, stage: str) -> Raised:
        return cls(type(e).__name__, str(e)[:2000], stage, "".join(traceback.format_exception(e))[-4000:])


@dataclass
class Observed:
    """What an adapter returns: arrays keyed by (quantity, index of the call in ``case.schedule``)."""

    arrays: dict[tuple[str, int | None], np.ndarray] = field(default_factory=dict)
    raised: Raised | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def put(self, quantity: str, step: int | None, value) -> None:
        self.arrays[(quantity, step)] = np.asarray(value)


@dataclass
class Mapped:
    """Case settings translated for the framework (what ``settings()`` shows)."""

    momentum: float | None
    eps: float
    axis: int
    training_flags: dict[str, Any] = field(default_factory=dict)


class Adapter:
    """Base class for adapters; see the module docstring."""

    name: str = ""
    framework: str = ""
    requires: tuple[str, ...] = ()
    conventions: Conventions
    worker_env: dict[str, str] = {}
    supports_cumulative: bool = False
    supports_dtypes: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")
    # what the framework refuses to run (tried on the framework, not assumed): a skip with its words
    refuses: tuple[Refusal, ...] = ()
    # Batch Renormalization (a case's ``renorm``): None where the adapter runs it, else why not (a skip)
    no_renorm: str | None = "the framework has no Batch Renormalization"
    # a case's ``mask``: None where the adapter takes it (its steps then get ``mask=``, the batch's boolean mask in
    # the physical layout, True where a value counts), else why not (a skip)
    no_mask: str | None = "the framework's BatchNorm takes no mask"
    # a case's ``virtual_batch_size`` (ghost batch normalization): None where the adapter runs it, else why not (a
    # skip, unless the case expects the framework's raise); never emulated where the framework has no such option
    no_virtual_batch: str | None = "the framework's BatchNorm has no virtual batch size"
    # a case's ``second_order``: None where the adapter computes the Hessian-vector products (its train steps then get
    # ``v=``, the direction, and return ``hvp_x`` and ``hvp_gamma`` too), else why not (a skip)
    no_second_order: str | None = "the adapter does not compute second derivatives"
    # a case's ``data_parallel``: None where the adapter runs the layer over replicas (its ``run`` then gets each
    # training batch whole and shards it, ``case.shards``), else why not (a skip)
    no_data_parallel: str | None = "the adapter runs one replica (data-parallel cases run on the distributed path)"
    # how the BN is run (one of PATHS); a non-eager path names the eager adapter it starts from in ``source``
    path: str = "eager"
    source: str = ""
    # quantities (``Quantity`` values, e.g. "dx_eval") this path does not produce, with why: not compared, and the
    # cell record lists them (an exported inference graph has no gradient; the rest of its cell is still judged)
    omits: dict[str, str] = {}

    # -- cheap, parent-side -------------------------------------------------
    def available(self) -> str | None:
        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                return f"{mod} is not installed"
        return None

    def versions(self) -> dict[str, str]:
        # reading distribution metadata costs ~3 ms (an email-header parse): once per adapter object
        cached = self.__dict__.get("_versions")
        if cached is not None:
            return dict(cached)
        out = {}
        for dist in self.distributions():
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
        self.__dict__["_versions"] = out
        return dict(out)

    def distributions(self) -> tuple[str, ...]:
        return (self.framework,) if self.framework else ()

    def framework_version(self) -> str | None:
        return self.versions().get(self.framework)

    def supports(self, case: Case) -> str | None:
        if case.dtype not in self.supports_dtypes:
            return f"{self.name} does not support dtype {case.dtype}"
        if case.momentum == "cumulative" and not self.supports_cumulative:
            return f"{self.name} has no cumulative-average (momentum=None) mode"
        if case.renorm is not None and self.no_renorm and self.name not in case.expect_raise:  # (as a refusal)
            return f"{self.name}: no batch renormalization: {self.no_renorm}"
        if case.mask is not None and self.no_mask:
            return f"{self.name}: no mask: {self.no_mask}"
        if case.virtual_batch_size is not None and self.no_virtual_batch and self.name not in case.expect_raise:
            return f"{self.name}: no virtual batch (ghost BN): {self.no_virtual_batch}"
        if case.second_order is not None and self.no_second_order:
            return f"{self.name}: no second derivatives: {self.no_second_order}"
        if case.data_parallel is not None and self.no_data_parallel:
            return f"{self.name}: no data parallelism: {self.no_data_parallel}"
        if "frozen" in case.schedule and not self.conventions.frozen_call:
            return f"{self.name}: no frozen layer to call ({self.conventions.frozen_note or 'not declared'})"
        refusal = self.refusal(case)
        if refusal and self.name not in case.expect_raise:  # a case that expects the raise runs to check it
            return (f"{self.name}: {self.framework or 'the framework'} refuses {case.dtype} input with "
                    f"{case.resolved_param_dtype} parameters: {refusal.type}: {' | '.join(refusal.messages)} "
                    f"(source: {refusal.source})")
        return None

    def refusal(self, case: Case) -> Refusal | None:
        """The first of ``refuses`` that holds for ``case``, or None."""
        return next((r for r in self.refuses if r.applies(case)), None)

    def mapped(self, case: Case) -> Mapped:
        """The settings as passed to the framework: the one place momentum is translated."""
        if case.use_defaults:
            return Mapped(self.conventions.default_momentum, self.conventions.default_eps,
                          case.channel_axis)
        m = None if case.momentum == "cumulative" else self.conventions.framework_momentum(case.momentum)
        return Mapped(m, case.eps, case.channel_axis)

    def effective(self, case: Case) -> tuple[float | str, float]:
        """(momentum in weight-of-new style, eps) that the framework actually uses."""
        m = self.mapped(case)
        if m.momentum is None:
            return "cumulative", m.eps
        return self.conventions.case_momentum(m.momentum), m.eps

    def settings(self, case: Case) -> dict[str, Any]:
        """The settings as passed to the framework, and under ``precision`` the dtypes it works in (every cell
        record carries what the adapter declared, so a report reader sees which bound the oracle built)."""
        return {**asdict(self.mapped(case)), "precision": self.precision(case).as_dict()}

    def precision(self, case: Case) -> Precision:
        """The dtypes this framework works in for ``case`` (its precision policy mapped): see ``Precision``.
        The default is what torch, Keras and Flax document for float32 parameters: 16-bit inputs are
        widened to float32 for the statistics and the normalization."""
        return Precision.of(case)

    # -- worker-side ----------------------------------------------------------
    def setup(self) -> None:
        """Import the framework (called once per worker, timed as import)."""

    def build(self, case: Case, data: CaseData) -> Any:
        """The framework's layer (or program) for ``case``, with the case's parameters and statistics."""
        raise NotImplementedError

    def train_step(self, state: Any, x: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
        """One training call + backward of sum(y * g).

        Returns y, dx, dgamma, dbeta and the running_mean / running_var after
        the call (omit the running stats when the case does not track them).
        Where the case has ``second_order`` it gets ``v=`` (the direction) and
        returns ``hvp_x`` and ``hvp_gamma`` too (``reference.train_hvp``).
        """
        raise NotImplementedError

    def eval_step(self, state: Any, x: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
        """One eval-mode call + backward: returns y and dx, dgamma and dbeta where the layer is affine, and the
        running_mean / running_var as the framework holds them after the call (where the case tracks them), read
        back from the framework as after a training call: an eval call must leave them as they were."""
        raise NotImplementedError

    def frozen_step(self, state: Any, x: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
        """A training-mode call + backward on the layer frozen the framework's way (and unfrozen after): y, dx and
        the running statistics after the call (its parameters' gradients are not compared: a frozen layer's are
        not used, and torch does not compute them). Adapters that declare ``conventions.frozen_call`` have it."""
        raise NotImplementedError

    def run(self, case: Case, data: CaseData) -> Observed:
        """Build the layer and make the case's calls in order (``case.schedule``): each call's results are
        recorded under its index, eval and frozen ones as ``<quantity>_eval`` and ``<quantity>_frozen``."""
        obs = Observed()
        stage = "build"
        t0 = time.perf_counter()
        try:
            state = self.build(case, data)
            for i, (kind, batch) in enumerate(zip(case.schedule, case.batches)):
                stage = f"call {i} ({kind})"
                if batch is None:  # an eval call: the eval batch
                    kw = {} if data.mask is None else {"mask": data.mask_eval}  # (frameworks ignore it in eval)
                    out = self.eval_step(state, data.x_eval, data.g_eval, **kw)
                else:
                    step = self.train_step if kind == "train" else self.frozen_step
                    kw = {} if data.mask is None else {"mask": data.mask[batch]}
                    if data.v is not None and kind == "train":
                        kw["v"] = data.v[batch]
                    out = step(state, data.x[batch], data.g[batch], **kw)
                for q, v in out.items():
                    obs.put(q if kind == "train" else f"{q}_{kind}", i, v)
            self.describe(state, obs.info)
        except BaseException as e:  # the framework's own error, SystemExit and KeyboardInterrupt too, is an outcome
            if isinstance(e, KeyboardInterrupt) and not os.environ.get(IN_WORKER):
                raise  # Ctrl-C in an --in-process run stops the run
            obs.raised = Raised.of(e, stage)
        obs.info["compute_s"] = time.perf_counter() - t0
        return obs

    def describe(self, state: Any, info: dict[str, Any]) -> None:
        """Add what the framework actually did (path taken, dtypes) to ``info``."""


class CompileTally:
    """A mixin for the paths whose calls compile, export or convert a program (before an ``Adapter`` in the bases):
    ``compiled(seconds)`` counts one program and the time it took, and ``run`` reports a case's sum apart from
    compute, as ``info["compile_s"]`` and ``info["compiles"]``. Outside ``run`` nothing is counted."""

    _tally: list | None = None  # [seconds, programs] of the case ``run`` is making

    def compiled(self, seconds: float) -> None:
        if self._tally is not None:
            self._tally[0] += seconds
            self._tally[1] += 1

    def run(self, case: Case, data: CaseData) -> Observed:
        self._tally = [0.0, 0]
        try:
            obs = super().run(case, data)  # type: ignore[misc]
        finally:
            tally, self._tally = self._tally, None
        obs.info["compile_s"], obs.info["compiles"] = tally
        return obs


@runtime_checkable
class BenchHooks(Protocol):
    """What ``bnparity bench`` needs from an adapter; the benchmark skips an adapter without it.

    ``bench_variants`` are the ways users run the framework (``eager``, ``tf.function``, ``jit``,
    ``compile``...); ``bench_devices()`` the devices besides ``cpu`` that it sees (``gpu``,
    ``cuda``), asked without importing the framework in the calling process.
    ``bench_callable(case, data, mode, variant, device)`` runs in the adapter's worker and returns
    a zero-argument call of one BatchNorm step in ``mode`` (``train_fwd`` with the running-stat
    update, ``train_fwd_bwd``, ``eval_fwd``), inputs already on ``device`` and waiting for it; or
    None where the adapter does not offer that combination (a variant it does not list is refused
    before any framework is imported).
    """

    @property
    def bench_variants(self) -> tuple[str, ...]: ...

    def bench_devices(self) -> tuple[str, ...]: ...

    def bench_callable(self, case: Case, data: CaseData, mode: str, variant: str,
                       device: str) -> Callable[[], Any] | None: ...


class Broken(Adapter):
    """Stands in for an adapter that could not be imported: every cell is a ``raised`` outcome that names
    the load error (a broken adapter module is a bug to fix, never a quiet column of skips)."""

    conventions = Conventions("weight_of_new", "biased", 0.0, 0.0, "channels_first")

    def __init__(self, name: str, reason: str, error: BaseException | None = None):
        self.name, self.reason = name, reason
        self.error = Raised.of(error, "loading the adapter") if error is not None else None

    def available(self) -> str | None:
        return self.reason

    def versions(self) -> dict[str, str]:
        return {}


# -- registry ------------------------------------------------------------------

ENTRY_POINT_GROUP = "bnparity.adapters"
ENV_VAR = "BNPARITY_ADAPTERS"


def load_spec(spec: str) -> Adapter:
    """Resolve ``module:attr`` to an adapter instance (a class or factory is called)."""
    mod_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"adapter spec {spec!r} must be 'module:attr'")
    obj = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "run")):
        obj = obj()
    for needed in ("name", "run", "available", "conventions"):
        if not hasattr(obj, needed):
            raise TypeError(f"adapter {spec!r} has no {needed!r}")
    return obj


def discover(env: dict[str, str] | None = None) -> dict[str, str]:
    """``{adapter name: 'module:attr'}`` from entry points, then ``BNPARITY_ADAPTERS``."""
    import os

    env = os.environ if env is None else env
    specs: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        specs[ep.name] = ep.value
    for spec in filter(None, (s.strip() for s in env.get(ENV_VAR, "").split(","))):
        specs[load_spec(spec).name] = spec
    return specs


def select(specs: dict[str, str], wanted: str | None, path_of: Callable[[str], str],
           listed: frozenset[str] = frozenset()) -> dict[str, str]:
    """The adapters a run takes from ``specs``. Without ``wanted``: the eager ones, and those ``listed`` in
    ``BNPARITY_ADAPTERS`` (compiled, exported and data-parallel paths cost compiles and exports, so they run when
    asked for). ``wanted`` is comma-separated names, globs (``torch*``) or ``path:<kind>`` (``path:compiled``,
    ``path:*``), each of which must match something; ``path_of(name)`` is the adapter's ``path``."""
    if not wanted:
        return {n: s for n, s in specs.items() if n in listed or path_of(n) == "eager"}
    pats = [p.strip() for p in wanted.split(",") if p.strip()]
    chosen: dict[str, str] = {}
    unknown = []
    for pat in pats:
        if pat.startswith("path:"):
            kind = pat.removeprefix("path:")
            if kind != "*" and kind not in PATHS:
                raise ValueError(f"{pat!r}: the paths are {', '.join(PATHS)} (or path:*)")
            hit = {n: s for n, s in specs.items() if fnmatch.fnmatchcase(path_of(n), kind)}
        else:
            hit = {n: s for n, s in specs.items() if fnmatch.fnmatchcase(n, pat)}
        if not hit and not pat.startswith("path:"):
            unknown.append(pat)
        chosen.update(hit)
    if unknown:
        raise ValueError(f"no adapter matches {unknown}; known: {sorted(specs)}")
    return {n: s for n, s in specs.items() if n in chosen}  # (in discovery order)


def listed_in_env(env: dict[str, str] | None = None) -> frozenset[str]:
    """The names of the adapters that ``BNPARITY_ADAPTERS`` lists (asked for, whatever their path)."""
    import os

    env = os.environ if env is None else env
    return frozenset(load_spec(s).name for s in filter(None, (s.strip() for s in env.get(ENV_VAR, "").split(","))))
