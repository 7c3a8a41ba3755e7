"""Flax: ``flax.linen.BatchNorm`` and ``flax.nnx.BatchNorm``, jitted, gradients by ``jax.vjp``.

Four adapters: linen and nnx, each with the default ``use_fast_variance=True`` (one-pass
``max(0, E[x^2] - E[x]^2)``, what users run) and with ``use_fast_variance=False`` (two-pass),
so the report shows what the flag buys.

What is compared is what a user's *jitted* training and eval steps return: one ``jax.jit``
program per step computes y, the running statistics and the vjp of ``sum(y * g)`` with respect
to the input and scale/bias (through the batch statistics), as a ``jit``-ed train step would.
Eager (op-by-op) execution can round differently from the fused program; users jit.

Compile once per structure. ``momentum`` and ``epsilon`` are plain module attributes that
Flax only uses arithmetically, so the module is constructed (linen) or merged from a graphdef
built with placeholder values (nnx) *inside* the jitted function, with momentum and eps as
traced arguments. They are passed as Python floats, which JAX traces as weakly typed scalars:
with x64 on, ``1 - momentum`` is computed in float64 and cast into the statistics' dtype
exactly as a Python constant baked into the trace would be, so the values are those of the
user's program (checked bitwise against constant-baked programs when this adapter was written),
and a new eps or momentum costs no compilation. Programs are cached by ``jax.jit`` on module
level functions, keyed by static structure (axis, flags, nnx graphdef) and argument shapes and
dtypes, so they persist across cases in the worker. Compilations are counted by a
``jax.monitoring`` listener (every trace, lowering and backend compile in the worker during
the case, the adapter's own or not) and reported as ``info["compiles"]`` and ``info["compile_s"]``.

float64: the worker runs with ``JAX_ENABLE_X64=1`` (and every call runs under
``jax.enable_x64(True)``, so ``--in-process`` runs match without leaking the setting to other
JAX adapters). Float32 and lower cases still compute in float32: their arrays are float32 and
the only float64 values in those programs are the weakly typed eps/momentum scalars, which
``info["program_f64_arrays"]`` records per program (False means no float64 array anywhere).

Threads: with ``BNPARITY_THREADS=1`` (the default) the worker sets the XLA CPU single-thread
flag before jaxlib loads (``jax_support.limit_xla_threads``, as Keras 3 on JAX does); other counts
leave XLA's own threading. ``BNPARITY_JAX_CACHE_DIR``
turns on JAX's persistent compilation cache (``jax_support``); hits are reported as
``info["compile_cache_hits"]``, not as compiles.

Cases without running statistics (``track_running_stats = false``) are run the way a Flax user
gets that behaviour: eval also calls with ``use_running_average=False`` and drops the update.

Sources: flax/linen/normalization.py (_compute_stats, _normalize, BatchNorm),
flax/nnx/nn/normalization.py (BatchNorm), at
https://github.com/google/flax/tree/18f8f311c275d57f46d95e41b15aa97b454754c0 (identical to 0.12.8).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from harness.adapters import jax_support
from harness.adapters.base import Adapter, Conventions, Mapped, Precision
from harness.adapters.devices import gpu_visible
from harness.cases import Case
from harness.inputs import CaseData

_F64_ARRAY = re.compile(r"tensor<(?:\d+x)+f64>")

# -- the jitted programs (module level, so jax.jit's cache lives as long as the worker) ----------

_PROGRAMS: dict[tuple, Any] = {}
_F64_CHECKED: dict[tuple, bool] = {}


def _linen_module(axis: int, fast: bool, uses: tuple[bool, bool], dtype: str | None, param_dtype: str, momentum, eps,
                  use_running_average: bool):
    """A linen BatchNorm with momentum and eps as given (traced values inside the programs)."""
    import flax.linen as nn

    return nn.BatchNorm(use_running_average=use_running_average, axis=axis, momentum=momentum, epsilon=eps,
                        use_scale=uses[0], use_bias=uses[1], use_fast_variance=fast, dtype=dtype,
                        param_dtype=param_dtype)


def _linen_train_apply(bn, params, stats, x, mask=None):
    """(y, updated batch_stats) of a linen BatchNorm called in training mode (``mask``: its ``mask=``)."""
    y, updated = bn.apply({"params": params, "batch_stats": stats}, x, mask=mask, mutable=["batch_stats"])
    return y, updated["batch_stats"]


def _nnx_module(graphdef, params, stats, momentum, eps, train: bool):
    """An nnx BatchNorm merged from ``graphdef``, with momentum and eps set and in train or eval mode."""
    from flax import nnx

    # copy=True: fresh Variables at the current trace level, so the stat update may mutate them
    bn = nnx.merge(graphdef, nnx.State({**params, **stats}), copy=True)
    bn.momentum, bn.epsilon = momentum, eps
    if train:
        bn.train()
    else:
        bn.eval()
    return bn


def _nnx_stats(bn) -> dict[str, Any]:
    return {"mean": bn.mean[...], "var": bn.var[...]}


def _train_vjp(f, x, g, params):
    """y, dx, dparams and the updated statistics of ``f(x, params) -> (y, stats)``, for the upstream gradient g."""
    import jax

    y, vjp, new_stats = jax.vjp(f, x, params, has_aux=True)
    dx, dparams = vjp(g.astype(y.dtype))
    return y, dx, dparams, new_stats


def _train_hvp(f, x, g, v, params):
    """``_train_vjp``'s outputs and, forward over reverse, the Hessian-vector products: ``jax.jvp`` of the vjp along
    (v, 0), so hvp_x = d/de dx(x + e v) and the parameters' tangents d/de dparams(x + e v)."""
    import jax
    import jax.numpy as jnp

    def first(x, params):
        y, vjp, new_stats = jax.vjp(f, x, params, has_aux=True)
        dx, dparams = vjp(g.astype(y.dtype))
        return (dx, dparams), (y, new_stats)

    zeros = jax.tree.map(jnp.zeros_like, params)
    (dx, dparams), (hx, hparams), (y, new_stats) = jax.jvp(first, (x, params), (v.astype(x.dtype), zeros),
                                                          has_aux=True)
    return y, dx, dparams, new_stats, hx, hparams


def _eval_vjp(f, x, g, params):
    """y, dx, dparams and the statistics after the call, of ``f(x, params) -> (y, stats)`` for the upstream
    gradient g (the statistics are not differentiated: an eval call holds them constant)."""
    import jax

    y, vjp, stats = jax.vjp(f, x, params, has_aux=True)
    dx, dparams = vjp(g.astype(y.dtype))
    return y, dx, dparams, stats


def _linen_program(mode: str, axis: int, fast: bool, uses: tuple[bool, bool], dtype: str | None, param_dtype: str):
    """A jitted linen train or eval step: (x, g, params, stats, momentum, eps) -> outputs."""
    key = ("linen", mode, axis, fast, uses, dtype, param_dtype)
    if key in _PROGRAMS:
        return _PROGRAMS[key]
    import jax

    def train(x, g, params, stats, momentum, eps, mask=None):
        bn = _linen_module(axis, fast, uses, dtype, param_dtype, momentum, eps, False)
        return _train_vjp(lambda x, params: _linen_train_apply(bn, params, stats, x, mask), x, g, params)

    def train_hvp(x, g, v, params, stats, momentum, eps):
        bn = _linen_module(axis, fast, uses, dtype, param_dtype, momentum, eps, False)
        return _train_hvp(lambda x, params: _linen_train_apply(bn, params, stats, x), x, g, v, params)

    def evaluate(x, g, params, stats, momentum, eps, mask=None):
        # without stored statistics (track_running_stats = false) eval normalizes with the batch's own
        bn = _linen_module(axis, fast, uses, dtype, param_dtype, momentum, eps, mode == "eval")

        def f(x, params):
            # mutable: the batch_stats come back as the call leaves them (an eval call must not change them)
            y, after = bn.apply({"params": params, "batch_stats": stats}, x, mask=mask, mutable=["batch_stats"])
            return y, (after["batch_stats"] if mode == "eval" else stats)

        return _eval_vjp(f, x, g, params)

    fn = jax.jit({"train": train, "train_hvp": train_hvp}.get(mode, evaluate))
    _PROGRAMS[key] = fn
    return fn


def _nnx_graphdef(channels: int, axis: int, fast: bool, uses: tuple[bool, bool], dtype: str | None, param_dtype: str):
    """The static structure of an nnx.BatchNorm (built abstractly: no arrays, no compilation)."""
    key = ("nnx-graphdef", channels, axis, fast, uses, dtype, param_dtype)
    if key not in _PROGRAMS:
        from flax import nnx

        # momentum and epsilon here are placeholders: the programs set the traced values
        abstract = nnx.eval_shape(lambda: nnx.BatchNorm(channels, axis=axis, use_scale=uses[0], use_bias=uses[1],
                                                        use_fast_variance=fast, dtype=dtype,
                                                        param_dtype=param_dtype,
                                                        rngs=nnx.Rngs(0)))
        _PROGRAMS[key] = nnx.graphdef(abstract)
    return _PROGRAMS[key]


def _nnx_program(mode: str, graphdef):
    key = ("nnx", mode, graphdef)
    if key in _PROGRAMS:
        return _PROGRAMS[key]
    import jax

    def train(x, g, params, stats, momentum, eps, mask=None):
        def f(x, params):
            bn = _nnx_module(graphdef, params, stats, momentum, eps, True)
            y = bn(x, mask=mask)
            return y, _nnx_stats(bn)

        return _train_vjp(f, x, g, params)

    def train_hvp(x, g, v, params, stats, momentum, eps):
        def f(x, params):
            bn = _nnx_module(graphdef, params, stats, momentum, eps, True)
            return bn(x), _nnx_stats(bn)

        return _train_hvp(f, x, g, v, params)

    def evaluate(x, g, params, stats, momentum, eps, mask=None):
        def f(x, params):
            bn = _nnx_module(graphdef, params, stats, momentum, eps, mode != "eval")
            y = bn(x, mask=mask)
            return y, (_nnx_stats(bn) if mode == "eval" else stats)  # as the call leaves them

        return _eval_vjp(f, x, g, params)

    fn = jax.jit({"train": train, "train_hvp": train_hvp}.get(mode, evaluate))
    _PROGRAMS[key] = fn
    return fn


def _bench_forward_program(api: str, train: bool, axis: int, fast: bool, uses: tuple[bool, bool], dtype: str | None,
                           param_dtype: str, graphdef=None):
    """A jitted forward-only call for ``bnparity bench``: (x, params, stats, momentum, eps) -> y (, new stats).

    The module is built as in the parity programs above; fwd+bwd reuses the parity train program itself.
    """
    key = ("bench", api, train, axis, fast, uses, dtype, param_dtype, graphdef)
    if key in _PROGRAMS:
        return _PROGRAMS[key]
    import jax

    if api == "linen":
        def forward(x, params, stats, momentum, eps):
            bn = _linen_module(axis, fast, uses, dtype, param_dtype, momentum, eps, not train)
            if not train:
                return bn.apply({"params": params, "batch_stats": stats}, x)
            return _linen_train_apply(bn, params, stats, x)
    else:
        def forward(x, params, stats, momentum, eps):
            bn = _nnx_module(graphdef, params, stats, momentum, eps, train)
            if not train:
                return bn(x)
            y = bn(x)
            return y, _nnx_stats(bn)

    fn = jax.jit(forward)
    _PROGRAMS[key] = fn
    return fn


def uses_of(case: Case) -> tuple[bool, bool]:
    """(use_scale, use_bias) of the case's layer."""
    return case.has_scale, case.has_center


def _enable_x64(jax):
    """``jax.enable_x64`` (new JAX) or ``jax.experimental.enable_x64`` (JAX 0.4.x)."""
    fn = getattr(jax, "enable_x64", None)
    if fn is None:
        from jax.experimental import enable_x64 as fn
    return fn


NNX_MIN_FLAX = "0.10"
_WIDTH = {"bfloat16": 16, "float16": 16, "float32": 32, "float64": 64}


def _promote(*dtypes: str) -> str:
    """JAX's type promotion among the float dtypes a case has (float16 with bfloat16 is float32)."""
    out = dtypes[0]
    for dt in dtypes[1:]:
        if dt != out:
            out = "float32" if {dt, out} == {"float16", "bfloat16"} else max(dt, out, key=_WIDTH.__getitem__)
    return out


def flax_dtype(case: Case) -> str | None:
    """The ``dtype`` argument a Flax user passes for the case's precision policy: the 16-bit input dtype for
    pure (``dtype = param_dtype = float16``) and mixed (``dtype = float16, param_dtype = float32``) cases; None
    (inferred from the input and the parameters) for float32 / float64 and other parameter dtypes."""
    if case.dtype in ("float16", "bfloat16") and case.policy in ("pure", "mixed"):
        return case.dtype
    return None


def batch_stats_dtype(api: str, case: Case) -> str:
    """The dtype Flax holds ``batch_stats`` in. Both APIs create them in float32 whatever param_dtype is
    (linen: ``force_float32_reductions=True``, the default; nnx: ``jnp.float32`` in ``__init__``). nnx keeps its
    BatchStat variables' dtype when it writes the update (a float64 update is cast back to float32, with a JAX
    FutureWarning); linen replaces the collection with the update, which float64 statistics promote to float64 on
    the first training call, so a float64 case starts from the float64 state it holds from then on."""
    # flax/linen/normalization.py:358-373 (batch_stats in float32), :400-403 (the update)
    # flax/nnx/nn/normalization.py:312-313 (BatchStat float32), :404-409 (update written into the variables)
    if api == "linen" and case.dtype == "float64":
        return "float64"
    return "float32"


@dataclass
class FlaxState:
    """One case's jitted programs, variables and hyperparameters, and what the calls reported."""

    case: Case
    train: Callable
    evaluate: Callable
    params: dict[str, Any]  # scale and bias, those the layer has
    stats: dict[str, Any]  # mean and var: the running statistics, updated by each training step
    hyper: tuple[float, float]  # (momentum, eps) as Python floats: traced as weakly typed scalars
    dtypes: dict[str, str] = field(default_factory=dict)
    f64_arrays: bool | None = None  # whether a program has a float64 array; None: not checked (float64 cases)


class FlaxAdapter(Adapter):
    """One Flax BatchNorm path: ``api`` is "linen" or "nnx", ``fast`` is ``use_fast_variance``."""

    framework = "flax"
    no_renorm = "flax.linen.BatchNorm and flax.nnx.BatchNorm have no renorm option"
    no_mask = None  # mask= broadcast to the input: the case's full mask, per channel too
    no_second_order = None  # forward over reverse: jax.jvp of the jitted vjp along (v, 0)
    no_virtual_batch = ("flax.linen.BatchNorm and flax.nnx.BatchNorm have no virtual batch option (fields: "
                        "use_running_average, axis, momentum, epsilon, dtype, param_dtype, use_bias, use_scale, "
                        "bias_init, scale_init, axis_name, axis_index_groups, use_fast_variance, "
                        "force_float32_reductions; flax 0.12.8)")
    requires = ("flax", "jax")
    conventions = Conventions(
        momentum_style="decay_of_old", running_var_estimator="biased",
        default_eps=1e-5, default_momentum=0.99,
        native_layout="channels_last", single_value_training="computes",
        frozen_call="batch_statistics",
        frozen_note=("Flax has no trainable flag: freezing parameters is the optimizer's (optax masks), and the call "
                     "with use_running_average=False is unchanged (batch statistics, batch_stats updated); "
                     "use_running_average=True is an eval call"),
        notes="stats in at least float32; output dtype = result_type(x, scale, bias) (float32 for float16/bfloat16 "
              "inputs with float32 params); centered form (x - mean) * rsqrt(var + eps) * scale + bias",
    )
    # float64 cases need x64; float32 cases stay float32 (see the module docstring)
    worker_env = {"JAX_ENABLE_X64": "1"}

    def __init__(self, name: str, api: str, fast: bool):
        self.name, self.api, self.fast = name, api, fast
        variance = "one-pass max(0, E[x^2] - E[x]^2)" if fast else "two-pass E[(x - E[x])^2]"
        self.conventions = replace(self.conventions,
                                   notes=f"use_fast_variance={fast}: {variance}; {self.conventions.notes}")

    def distributions(self) -> tuple[str, ...]:
        return ("flax", "jax", "jaxlib")

    def available(self) -> str | None:
        reason = super().available()
        if reason is None and self.api == "nnx":
            from packaging.version import Version

            version = self.versions().get("flax", "0")
            if Version(version) < Version(NNX_MIN_FLAX):
                reason = (f"flax {version}: its flax.nnx predates the API this adapter drives (nnx.merge(copy=...), "
                          f"BatchNorm.train()/.eval(); seen missing in 0.8.5); needs flax >= {NNX_MIN_FLAX}")
        return reason

    def mapped(self, case: Case) -> Mapped:
        m = super().mapped(case)
        m.training_flags = {"api": f"flax.{self.api}.BatchNorm", "use_fast_variance": self.fast,
                            "use_scale": case.has_scale, "use_bias": case.has_center, "dtype": flax_dtype(case),
                            "param_dtype": case.resolved_param_dtype,
                            "batch_stats_dtype": batch_stats_dtype(self.api, case), "jit": True}
        return m

    def precision(self, case: Case) -> Precision:
        """What Flax 0.12.8 computes in, read from the source and probed (see ``flax_dtype`` for the mapping):

        * statistics: ``_compute_stats`` promotes ``dtype`` (or x's dtype) to at least float32; nnx first casts x,
          the running statistics, scale and bias to ``dtype`` (or to their common type: ``promote_dtype``);
        * held, normalize: the statistics' dtype (``x - mean`` promotes to it);
        * running: ``batch_stats_dtype``;
        * params: param_dtype; but nnx with ``dtype`` set computes with scale and bias cast to ``dtype`` (stored in
          param_dtype), so they are rounded to it before use and dgamma / dbeta are rounded to it on the way back
          (returned in param_dtype, holding 16-bit values): ``dtype`` is declared;
        * output: ``dtype``; without it, x's dtype: dx comes back in it, and y in the result type of x and the
          parameters (nnx: and the float32 running statistics), which is wider only for float64 parameters on
          float32 input, where y's centering ran in float32 all the same.

        * eval: nnx with ``dtype`` set also casts the running statistics to it in eval, so its eval
          normalization runs in 16-bit (probed: y_eval bit-equal to float16 math), while its training call
          normalizes in float32: ``eval_held`` and ``eval_normalize``; linen's eval stays in float32.
        """
        dt, pd, fdt = case.dtype, case.resolved_param_dtype, flax_dtype(case)
        if self.api == "linen":
            # flax/linen/normalization.py:107-114 (_compute_stats: promote_types(dtype, float32)),
            # :206-226 (_normalize: y = x - mean, ..., asarray(y, canonicalize_dtype(x, scale, bias, dtype=dtype)))
            common = dt
        else:
            # flax/nnx/nn/normalization.py:385-387 (promote_dtype of x, mean, var, scale, bias to dtype)
            common = fdt or _promote(dt, "float32", *((pd,) if case.has_scale or case.has_center else ()))
        stats = _promote(fdt or common, "float32")
        eval_dt = fdt if self.api == "nnx" and fdt else ""
        return Precision(statistics=stats, held=stats, normalize=stats, running=batch_stats_dtype(self.api, case),
                         params=pd if self.api == "linen" else (fdt or pd), output=fdt or dt,
                         eval_held=eval_dt, eval_normalize=eval_dt)

    # -- worker side ------------------------------------------------------------------
    def setup(self) -> None:
        self._flags_applied = jax_support.limit_xla_threads()
        jax_support.watch()
        jax_support.enable_compilation_cache()
        import flax.linen  # noqa: F401  (import cost belongs to the worker, not to the first case)
        import flax.nnx  # noqa: F401

    def run(self, case: Case, data: CaseData):
        import jax

        mark = jax_support.watch()
        with _enable_x64(jax)(True):
            obs = super().run(case, data)
        obs.info.update(jax_support.compiled_since(mark))
        return obs

    def build(self, case: Case, data: CaseData) -> FlaxState:
        m = self.mapped(case)
        pdt, fdt = case.resolved_param_dtype, flax_dtype(case)
        train_mode = "train" if case.second_order is None else "train_hvp"
        if self.api == "linen":
            train = _linen_program(train_mode, m.axis, self.fast, uses_of(case), fdt, pdt)
            evaluate = _linen_program("eval" if case.track_running_stats else "eval_batch_stats", m.axis, self.fast,
                                      uses_of(case), fdt, pdt)
        else:
            gd = _nnx_graphdef(case.channels, m.axis, self.fast, uses_of(case), fdt, pdt)
            train = _nnx_program(train_mode, gd)
            evaluate = _nnx_program("eval" if case.track_running_stats else "eval_batch_stats", gd)
        params = {k: v for k, v, has in (("scale", data.gamma, case.has_scale), ("bias", data.beta, case.has_center))
                  if has}
        # in the dtype Flax keeps them in, not the parameters' (a user's initial values land in Flax's float32
        # variables); the oracle starts from the same values where that dtype holds them exactly
        sdt = np.dtype(batch_stats_dtype(self.api, case))
        stats = {"mean": data.running_mean.astype(sdt), "var": data.running_var.astype(sdt)}
        # Python floats: traced as weakly typed scalars (see the module docstring)
        return FlaxState(case, train, evaluate, params, stats, (float(m.momentum), float(m.eps)))

    def _check_program(self, state: FlaxState, fn, args) -> None:
        """Record once per program whether a float64 array appears in a non-float64 case's program."""
        if state.case.dtype == "float64":
            return
        import jax

        key = (id(fn), tuple((np.shape(a), str(a.dtype)) for a in jax.tree.leaves((*args[:4], *args[6:]))))
        if key not in _F64_CHECKED:
            _F64_CHECKED[key] = bool(_F64_ARRAY.search(fn.lower(*args).as_text()))
        state.f64_arrays = bool(state.f64_arrays) or _F64_CHECKED[key]

    def train_step(self, state: FlaxState, x, g, mask=None, v=None):
        if v is not None:  # the second-order program: (x, g, v, params, ...), forward over reverse
            y, dx, dparams, new_stats, hx, hparams = state.train(x, g, v, state.params, state.stats, *state.hyper)
            second = {"hvp_x": np.asarray(hx), **({"hvp_gamma": np.asarray(hparams["scale"])} if "scale" in hparams
                                                  else {})}
        else:
            args = (x, g, state.params, state.stats, *state.hyper, *(() if mask is None else (mask,)))
            self._check_program(state, state.train, args)
            y, dx, dparams, new_stats = state.train(*args)
            second = {}
        out = {"y": np.asarray(y), "dx": np.asarray(dx), **second}
        out.update({q: np.asarray(dparams[k]) for q, k in (("dgamma", "scale"), ("dbeta", "bias")) if k in dparams})
        if state.case.track_running_stats:
            state.stats = new_stats
            out["running_mean"] = np.asarray(new_stats["mean"])
            out["running_var"] = np.asarray(new_stats["var"])
        state.dtypes.update({"y": str(y.dtype), "dx": str(dx.dtype), "running_var": str(new_stats["var"].dtype)})
        return out

    def frozen_step(self, state: FlaxState, x, g, mask=None):
        """The training program: a frozen Flax layer is called as an unfrozen one (see ``frozen_note``)."""
        out = self.train_step(state, x, g, mask)
        return {q: v for q, v in out.items() if q not in ("dgamma", "dbeta")}

    def eval_step(self, state: FlaxState, x, g, mask=None):
        args = (x, g, state.params, state.stats, *state.hyper, *(() if mask is None else (mask,)))
        self._check_program(state, state.evaluate, args)
        y, dx, dparams, after = state.evaluate(*args)
        state.dtypes.update({"y_eval": str(y.dtype), "dx_eval": str(dx.dtype)})
        out = {"y": np.asarray(y), "dx": np.asarray(dx)}
        out.update({q: np.asarray(dparams[k]) for q, k in (("dgamma", "scale"), ("dbeta", "bias")) if k in dparams})
        if state.case.track_running_stats:
            state.stats = after  # what a Flax user carries on: the collection the call returned
            out["running_mean"] = np.asarray(after["mean"])
            out["running_var"] = np.asarray(after["var"])
        return out


    # -- benchmark hooks (bnparity bench) ------------------------------------------
    bench_variants = ("jit",)  # Flax users jit their steps; op-by-op Flax is not a configuration anyone runs

    def bench_devices(self) -> tuple[str, ...]:
        return ("gpu",) if gpu_visible("jax") else ()

    def bench_callable(self, case: Case, data: CaseData, mode: str, variant: str, device: str):
        """A zero-argument call of one jitted BatchNorm step in ``mode``, inputs already on the device.

        fwd+bwd calls the parity train program itself (x64 is on in the worker, as for parity runs);
        the forward-only modes call programs that build the module the same way.
        """
        if variant not in self.bench_variants or (mode == "eval_fwd" and not case.track_running_stats):
            return None
        import jax

        state = self.build(case, data)
        m = self.mapped(case)
        dev = jax.devices(device)[0]
        # device_put keeps the Python floats weakly typed, as the parity calls trace them, without a per-call transfer
        x, g, params, momentum, eps = jax.device_put((data.x[0], data.g[0], state.params, *state.hyper), dev)
        held = {"stats": jax.device_put(state.stats, dev)}
        tracked = case.track_running_stats
        if mode == "train_fwd_bwd":
            step = state.train

            def train_fwd_bwd():
                y, dx, dparams, new_stats = step(x, g, params, held["stats"], momentum, eps)
                if tracked:
                    held["stats"] = new_stats  # carried, as a training loop does
                return jax.block_until_ready((y, dx, dparams, new_stats))

            return train_fwd_bwd
        fdt = flax_dtype(case)
        graphdef = (None if self.api == "linen" else
                    _nnx_graphdef(case.channels, m.axis, self.fast, uses_of(case), fdt, case.resolved_param_dtype))
        fwd = _bench_forward_program(self.api, mode == "train_fwd", m.axis, self.fast, uses_of(case), fdt,
                                     case.resolved_param_dtype, graphdef)
        if mode == "eval_fwd":
            return lambda: fwd(x, params, held["stats"], momentum, eps).block_until_ready()

        def train_fwd():
            y, new_stats = fwd(x, params, held["stats"], momentum, eps)
            if tracked:
                held["stats"] = new_stats
            return jax.block_until_ready((y, new_stats))

        return train_fwd

    def describe(self, state: FlaxState, info):
        import jax

        info["module"] = f"flax.{self.api}.BatchNorm"
        info["use_fast_variance"] = self.fast
        info["output_dtypes"] = state.dtypes
        info["jit"] = True
        info["backend"] = jax.default_backend()
        info["x64"] = True
        if state.f64_arrays is not None:
            info["program_f64_arrays"] = state.f64_arrays
        info["xla_flags"] = os.environ.get("XLA_FLAGS", "") if getattr(self, "_flags_applied", False) else (
            "not applied: jax was imported before this adapter's setup (in-process run)")
        if not state.case.contiguous:
            info["strides"] = "JAX arrays have no strides: the same values, contiguous"


LINEN = FlaxAdapter("flax-linen", "linen", fast=True)
LINEN_TWOPASS = FlaxAdapter("flax-linen-twopass", "linen", fast=False)
NNX = FlaxAdapter("flax-nnx", "nnx", fast=True)
NNX_TWOPASS = FlaxAdapter("flax-nnx-twopass", "nnx", fast=False)
