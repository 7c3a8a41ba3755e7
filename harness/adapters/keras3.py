"""Keras 3: ``keras.layers.BatchNormalization`` on the TensorFlow, JAX and torch backends.

The backend is fixed when keras is imported, so each adapter runs in its own worker with
``KERAS_BACKEND`` set. Gradients come from the backend's own autodiff: ``tf.GradientTape``,
``jax.vjp`` over ``layer.stateless_call`` (jitted, as Keras' own JAX trainer does), torch
autograd. Running statistics are read from ``moving_mean`` / ``moving_variance`` after each
``training=True`` call; eval is ``training=False``.

Dtypes are what a user would set: float32 and float64 cases build the layer with that dtype;
float16 / bfloat16 cases use the ``mixed_float16`` / ``mixed_bfloat16`` policy (float32
variables, 16-bit compute and output), which is how Keras is told to train in low precision.
The layer itself upcasts to ``result_type(x, float32)`` for the statistics (and, since Keras
3.12, to float32 for float64 inputs on every backend but TensorFlow).

JAX runs with ``JAX_ENABLE_X64=1`` in its worker: without it a float64 case would silently be
fed float32 arrays, and the harness would test the input cast, not Keras. float32 cases stay
float32 under x64 (every array we feed is typed; ``info["output_dtype"]`` records it).

Sources: keras/src/layers/normalization/batch_normalization.py (call), keras/src/backend/
{tensorflow,jax,torch}/nn.py (moments, batch_normalization).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from packaging.version import Version

from harness.adapters import jax_support
from harness.adapters.base import Adapter, Conventions, Mapped, Precision
from harness.adapters.devices import gpu_visible, thread_count
from harness.adapters.tf_support import (
    KERAS_CONVENTIONS,
    KERAS_FROZEN,
    TF_DISTRIBUTIONS,
    TF_ENV,
    TFBench,
    TFStep,
    setup_tf,
    tape_call,
    taped_params,
    tf_info,
)
from harness.cases import Case
from harness.inputs import CaseData

RENORM_SINCE = Version("3.14.0")  # keras-team/keras#22047 (git tag --contains 019d9ed: v3.14.0 first)


def keras_axis(case: Case) -> int:
    """The channel axis of the physical array: 1 for channels_first, -1 for channels_last, the case's axis."""
    return case.channel_axis


def dtype_policy(case: Case) -> str | None:
    """The Keras dtype policy name a user would pick for this case, or None if none fits.

    The policy fixes the variable dtype (param dtype) and the compute dtype (case dtype).
    """
    dt, pdt = case.dtype, case.resolved_param_dtype
    if dt == pdt:
        return dt
    if pdt == "float32" and dt in ("float16", "bfloat16"):
        return f"mixed_{dt}"
    return None


# -- what Keras 3 and tf-keras (Keras 2) share ---------------------------------------------------

def keras_supports(case: Case, keras: str) -> str | None:
    """Why a ``keras`` ("Keras", "tf-keras") BatchNormalization cannot run ``case``, or None."""
    if not case.track_running_stats:
        return f"{keras} BatchNormalization always tracks moving statistics (no track_running_stats=False)"
    if dtype_policy(case) is None:
        return f"no {keras} dtype policy has variables in {case.resolved_param_dtype} and compute in {case.dtype}"
    return None


def keras_mask_refusal(case: Case, keras: str) -> str | None:
    """Why a ``keras`` BatchNormalization cannot take ``case``'s mask, or None. Its mask has the input's rank minus
    one and covers every axis but the last, whatever ``axis`` is (``expand_dims(mask, -1)``): one mask for every
    channel of a channels-last input, none that fits a channels-first one of rank 3 or more (its last axis is
    spatial), and no per-channel mask."""
    if case.mask is None:
        return None
    if case.channel_axis % case.rank != case.rank - 1:
        return (f"{keras} BatchNormalization's mask covers every axis but the last (expand_dims(mask, -1)), whatever "
                f"the axis: an input whose channels are at axis {case.channel_axis} of rank {case.rank} has no mask "
                f"it can take")
    if case.mask.masked_channels:
        return (f"{keras} BatchNormalization's mask has no channel axis: a per-channel mask (masked_channels) has no "
                f"form")
    return None


def keras_mask(mask: np.ndarray | None) -> np.ndarray | None:
    """The case's mask (physical shape, channels last) as Keras takes it: without the channel axis."""
    return None if mask is None else np.ascontiguousarray(mask[..., 0])


def layer_kwargs(case: Case, m: Mapped, conventions: Conventions) -> dict[str, Any]:
    """BatchNormalization arguments other than the dtype; a defaults case passes no momentum or epsilon. A renorm
    case passes renorm=True, its clipping (only the bounds it gives) and its momentum in the framework's style."""
    kwargs: dict[str, Any] = dict(axis=keras_axis(case), center=case.has_center, scale=case.has_scale)
    if not case.use_defaults:  # defaults cases construct the layer as a user who passes nothing would
        kwargs.update(momentum=m.momentum, epsilon=m.eps)
    if case.renorm is not None:
        kwargs.update(renorm=True, renorm_clipping=case.renorm.clipping(),
                      renorm_momentum=conventions.framework_momentum(case.renorm.momentum))
    return kwargs


def load_layer(layer: Any, case: Case, data: CaseData) -> Any:
    """Build ``layer`` for the case's physical shape and give its variables the case's values."""
    layer.build(case.physical_shape)
    # a per-channel vector in the variable's own shape: (C,), or tf-keras's (1, ..., C, ...) with virtual batches
    fit = lambda var, value: np.reshape(value, tuple(var.shape))  # noqa: E731
    if case.has_scale:
        layer.gamma.assign(fit(layer.gamma, data.gamma))
    if case.has_center:
        layer.beta.assign(fit(layer.beta, data.beta))
    layer.moving_mean.assign(fit(layer.moving_mean, data.running_mean))
    layer.moving_variance.assign(fit(layer.moving_variance, data.running_var))
    if case.renorm is not None:
        # what the layer's own initializers do from moving_mean / moving_variance (renorm_mean = moving mean,
        # moving_stddev = renorm_stddev = sqrt(moving variance), no eps; keras batch_normalization.py build(),
        # tf-keras build()), done for the case's initial statistics: reference.renorm_initial
        sd = np.sqrt(data.running_var.astype(np.float64))
        for var, value in ((layer.moving_stddev, sd), (layer.renorm_stddev, sd), (layer.renorm_mean,
                                                                                   data.running_mean)):
            var.assign(value.astype(var.numpy().dtype))  # rounded once, to the variable's own dtype
    return layer


@dataclass
class LayerState:
    """A built Keras BatchNormalization, and the output dtype its last call returned."""

    layer: Any
    case: Case
    output_dtype: str | None = None

    def moving_stats(self) -> dict[str, np.ndarray]:
        return {"running_mean": self.layer.moving_mean.numpy(), "running_var": self.layer.moving_variance.numpy()}


@dataclass
class JaxLayerState(LayerState):
    """Keras 3 on JAX calls the layer statelessly: the variables' current values live here, not in the layer."""

    tv: list = field(default_factory=list)  # trainable: gamma, beta
    ntv: list = field(default_factory=list)  # non-trainable: moving mean and variance
    compiles: int = 0
    compile_s: float = 0.0
    compile_cache_hits: int = 0

    def moving_stats(self) -> dict[str, np.ndarray]:
        by_id = {id(v): a for v, a in zip(self.layer.non_trainable_variables, self.ntv)}
        return {"running_mean": np.asarray(by_id[id(self.layer.moving_mean)]),
                "running_var": np.asarray(by_id[id(self.layer.moving_variance)])}


# -- the adapters ----------------------------------------------------------------------------------

class Keras3Adapter(Adapter):
    """``keras.layers.BatchNormalization`` on one Keras 3 backend; a subclass per backend."""

    framework = "keras"
    no_renorm = None  # renorm=True, renorm_clipping, renorm_momentum
    no_mask = None  # layer(x, training=..., mask=...): keras_mask_refusal says which masks it cannot take
    no_second_order = None  # TF: nested GradientTapes; JAX: jax.jvp of the jitted vjp; torch: create_graph=True
    # Keras 3 dropped Keras 2's virtual_batch_size: BatchNormalization(virtual_batch_size=2) raises ValueError:
    # Unrecognized keyword arguments passed to BatchNormalization: {'virtual_batch_size': 2} (keras 3.15.1)
    no_virtual_batch = ("Keras 3 BatchNormalization has no virtual_batch_size (keras 3.15.1: ValueError: Unrecognized "
                        "keyword arguments passed to BatchNormalization: {'virtual_batch_size': 2})")
    conventions = Conventions(
        **KERAS_CONVENTIONS, **KERAS_FROZEN,
        notes=("momentum is the decay of the old value; the moving variance is the biased batch variance; "
               "statistics from ops.moments (one-pass E[x^2]-E[x]^2 on the torch backend)"),
    )
    backend: str = ""  # KERAS_BACKEND, and the module that provides it
    backend_distributions: tuple[str, ...] = ()
    backend_env: dict[str, str] = {}
    bench_variants: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.name = f"keras3-{self.backend}"
        self.requires = ("keras", self.backend)
        self.worker_env = {"KERAS_BACKEND": self.backend, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_HOME": os.path.join(
            os.environ.get("TMPDIR", "/tmp"), "bnparity-keras-home"), **self.backend_env}

    # -- parent side ------------------------------------------------------------------
    def available(self) -> str | None:
        reason = super().available()
        if reason is None:
            version = self.versions().get("keras", "")
            if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 3:
                reason = f"keras {version} is Keras 2, not Keras 3 (the tf-keras adapters cover it)"
        return reason

    def distributions(self) -> tuple[str, ...]:
        return ("keras", *self.backend_distributions)

    def supports(self, case: Case) -> str | None:
        return (super().supports(case) or keras_supports(case, "Keras") or self.renorm_missing(case)
            or keras_mask_refusal(case, "Keras"))

    def renorm_missing(self, case: Case) -> str | None:
        """Keras 3 dropped Keras 2's renorm and brought it back in 3.14.0; before that BatchNormalization raises
        ValueError: Unrecognized keyword arguments passed to BatchNormalization: {'renorm': True}."""
        version = self.versions().get("keras", "")
        if case.renorm is not None and version and Version(version) < RENORM_SINCE:
            return (f"{self.name}: no batch renormalization: keras {version} has no renorm (added in {RENORM_SINCE}, "
                    f"https://github.com/keras-team/keras/pull/22047)")
        return None

    def settings(self, case: Case) -> dict[str, Any]:
        out = super().settings(case)
        out["axis"] = keras_axis(case)
        out["dtype_policy"] = dtype_policy(case)
        out["backend"] = self.backend
        return out

    def precision(self, case: Case) -> Precision:
        """The default, on every backend: call() casts the input to result_type(x, float32) and the variables to
        that dtype before the moments and the normalization, and casts y back to the compute dtype; the variables
        keep the policy's variable dtype (float16 under "float16", float32 under "mixed_float16"), assign()
        casting the float32 update to it."""
        # keras/src/layers/normalization/batch_normalization.py:345-359 (upcast), :405 (cast to compute_dtype);
        # keras/src/backend/common/variables.py:283 (assign converts to the variable's dtype)
        return super().precision(case)

    # -- worker side ------------------------------------------------------------------
    def setup(self) -> None:
        os.environ.setdefault("KERAS_BACKEND", self.backend)
        self.setup_backend()
        import keras

        if keras.backend.backend() != self.backend:
            raise RuntimeError(f"keras was imported with backend {keras.backend.backend()!r}, not {self.backend!r}: "
                               f"KERAS_BACKEND must be set before keras is imported (use a worker, not --in-process)")

    def setup_backend(self) -> None:
        """Import and configure the backend framework, before keras is imported."""
        raise NotImplementedError

    def _layer(self, case: Case, data: CaseData) -> Any:
        import keras

        layer = keras.layers.BatchNormalization(**layer_kwargs(case, self.mapped(case), self.conventions),
                                                dtype=dtype_policy(case))
        return load_layer(layer, case, data)

    def build(self, case: Case, data: CaseData) -> LayerState:
        return LayerState(self._layer(case, data), case)

    def _call(self, state: Any, x: np.ndarray, g: np.ndarray, training: bool,
              mask: np.ndarray | None = None, v: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """One call in ``training`` mode and its backward: y, dx (and dgamma, dbeta where the layer is affine);
        ``mask`` as Keras takes it (``keras_mask``), or None for no mask argument; with a direction ``v``, the
        backend's second derivatives too (hvp_x, hvp_gamma)."""
        raise NotImplementedError

    def train_step(self, state, x, g, mask=None, v=None):
        out = self._call(state, x, g, training=True, mask=keras_mask(mask), v=v)
        out.update(state.moving_stats())
        return out

    def eval_step(self, state, x, g, mask=None):
        out = self._call(state, x, g, training=False, mask=keras_mask(mask))
        out.update(state.moving_stats())
        return out

    def frozen_step(self, state, x, g, mask=None):
        """``layer.trainable = False``, a call with training=True, then trainable again (as a fine-tuning loop
        unfreezes)."""
        state.layer.trainable = False
        try:
            out = self._call(state, x, g, training=True, mask=keras_mask(mask))
        finally:
            state.layer.trainable = True
        return {"y": out["y"], "dx": out["dx"], **state.moving_stats()}

    def describe(self, state, info):
        import keras

        layer = state.layer
        info["backend"] = keras.backend.backend()
        info["dtype_policy"] = layer.dtype_policy.name
        info["output_dtype"] = state.output_dtype
        info["moving_stats_dtype"] = str(layer.moving_mean.dtype)
        info["epsilon"] = float(layer.epsilon)
        info["momentum"] = float(layer.momentum)

    # -- benchmark hooks (bnparity bench; see base.BenchHooks) ------------------------
    def bench_devices(self) -> tuple[str, ...]:
        return ("gpu",) if gpu_visible(self.backend) else ()

    def bench_callable(self, case: Case, data: CaseData, mode: str, variant: str, device: str):
        """A zero-argument call of one BatchNormalization call in ``mode``, inputs already on the device."""
        if variant not in self.bench_variants:
            return None
        return self._bench(case, data, mode, variant, device)

    def _bench(self, case: Case, data: CaseData, mode: str, variant: str, device: str):
        raise NotImplementedError


class Keras3TF(TFStep, TFBench, Keras3Adapter):
    """Keras 3 on TensorFlow: eager calls, gradients from ``tf.GradientTape``."""

    backend = "tensorflow"
    backend_distributions = TF_DISTRIBUTIONS
    backend_env = {"TF_ENABLE_ONEDNN_OPTS": TF_ENV["TF_ENABLE_ONEDNN_OPTS"]}  # see tf_support.TF_ENV
    bench_variants = ("eager", "jit")  # eager, and XLA (jit_compile=True)

    def setup_backend(self) -> None:
        setup_tf()

    def _call(self, state: LayerState, x, g, training: bool, mask=None, v=None) -> dict[str, np.ndarray]:
        layer = state.layer
        params = {q: p.value for q, p in taped_params(layer.gamma, layer.beta).items()}
        kw = {} if mask is None else {"mask": mask}
        taped = tape_call(lambda xt: (layer(xt, training=training, **kw),), x, g, params, v, self.tf_step())
        state.output_dtype = taped.output_dtype
        return taped.out

    def bench_callable(self, case: Case, data: CaseData, mode: str, variant: str, device: str):
        return self.bench_layer(case, data, mode, variant, device, lambda layer: [
            v.value for v in taped_params(layer.gamma, layer.beta).values()])

    def describe(self, state, info):
        super().describe(state, info)
        tf_info(info)


class Keras3Jax(Keras3Adapter):
    """Keras 3 on JAX: ``jax.vjp`` over ``layer.stateless_call``, jitted as Keras' own JAX trainer does."""

    backend = "jax"
    backend_distributions = ("jax", "jaxlib")
    backend_env = {"JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"}
    bench_variants = ("jit",)  # the stateless call is always jitted

    def __init__(self) -> None:
        super().__init__()
        self._jit_cache: dict[tuple, Any] = {}

    def setup_backend(self) -> None:
        jax_support.limit_xla_threads()
        import jax

        jax.config.update("jax_enable_x64", os.environ.get("JAX_ENABLE_X64", "1") not in ("0", "false"))
        jax_support.watch()
        jax_support.enable_compilation_cache()

    def build(self, case: Case, data: CaseData) -> JaxLayerState:
        layer = self._layer(case, data)
        return JaxLayerState(layer, case, tv=[v.value for v in layer.trainable_variables],
                             ntv=[v.value for v in layer.non_trainable_variables])

    def _jit_key(self, case: Case, training: bool, frozen: bool = False, second: bool = False) -> tuple:
        m = self.mapped(case)
        return (case.physical_shape, case.dtype, dtype_policy(case), keras_axis(case), case.has_scale, case.has_center,
                case.use_defaults, m.momentum, m.eps, training, frozen, case.renorm, case.mask is not None, second)

    def _jax_fn(self, state: JaxLayerState, training: bool, args: tuple, frozen: bool = False,
                second: bool = False):
        """The jitted train/eval step for this case's settings, compiled once per shape and setting.

        The function only reads the layer's configuration: variables are passed in, so a layer
        built for an earlier case with the same settings serves as its template.
        """
        import jax

        key = self._jit_key(state.case, training, frozen, second)
        hit = self._jit_cache.get(key)
        if hit is not None:
            return hit
        template = state.layer

        def step(tv, ntv, x, g, *mask):  # the mask, where the case has one, comes last
            kw = {"mask": mask[0]} if mask else {}

            def fwd(tv, x):
                return template.stateless_call(tv, ntv, x, training=training, **kw)

            y, vjp, new_ntv = jax.vjp(fwd, tv, x, has_aux=True)
            dtv, dx = vjp(g.astype(y.dtype))
            return y, dx, dtv, new_ntv

        def step_hvp(tv, ntv, x, g, v):  # forward over reverse: jax.jvp of the vjp along (v, 0)
            import jax.numpy as jnp

            def first(x, tv):
                y, vjp, new_ntv = jax.vjp(lambda tv, x: template.stateless_call(tv, ntv, x, training=training),
                                          tv, x, has_aux=True)
                dtv, dx = vjp(g.astype(y.dtype))
                return (dx, dtv), (y, new_ntv)

            (dx, dtv), (hx, htv), (y, new_ntv) = jax.jvp(first, (x, tv), (v.astype(x.dtype),
                                                                           [jnp.zeros_like(t) for t in tv]),
                                                         has_aux=True)
            return y, dx, dtv, new_ntv, hx, htv

        t0 = time.perf_counter()
        mark = jax_support.watch()
        compiled = jax.jit(step_hvp if second else step).lower(*args).compile()
        state.compile_s += time.perf_counter() - t0
        if jax_support.compiled_since(mark).get("compile_cache_hits"):  # read back from the persistent cache
            state.compile_cache_hits += 1
        else:
            state.compiles += 1
        self._jit_cache[key] = compiled
        return compiled

    def _call(self, state: JaxLayerState, x, g, training: bool, mask=None, v=None) -> dict[str, np.ndarray]:
        import jax.numpy as jnp

        layer = state.layer
        args = (state.tv, state.ntv, jnp.asarray(x), jnp.asarray(g), *(() if mask is None else (jnp.asarray(mask),)),
                *(() if v is None else (jnp.asarray(v),)))
        res = self._jax_fn(state, training, args, second=v is not None)(*args)
        y, dx, dtv, new_ntv = res[:4]
        state.ntv = list(new_ntv)  # what the stateless call returns, in eval too (it must return them unchanged)
        state.output_dtype = str(y.dtype)
        out = {"y": np.asarray(y), "dx": np.asarray(dx)}
        grads = {id(p): d for p, d in zip(layer.trainable_variables, dtv)}
        out.update({q: np.asarray(grads[id(p)]) for q, p in taped_params(layer.gamma, layer.beta).items()})
        if v is not None:
            hx, htv = res[4:]
            out["hvp_x"] = np.asarray(hx)
            if layer.gamma is not None:
                by_id = {id(p): d for p, d in zip(layer.trainable_variables, htv)}
                out["hvp_gamma"] = np.asarray(by_id[id(layer.gamma)])
        return out

    def frozen_step(self, state: JaxLayerState, x, g, mask=None):
        """The stateless call of a layer with ``trainable = False`` (gamma and beta move to its non-trainable
        variables while it is frozen): the variables are handed over by identity, not by position."""
        import jax.numpy as jnp

        layer = state.layer
        values = {id(v): a for v, a in zip(layer.trainable_variables, state.tv)}
        values.update({id(v): a for v, a in zip(layer.non_trainable_variables, state.ntv)})
        layer.trainable = False
        try:
            frozen_ntv = list(layer.non_trainable_variables)
            args = ([values[id(v)] for v in layer.trainable_variables], [values[id(v)] for v in frozen_ntv],
                    jnp.asarray(x), jnp.asarray(g), *(() if mask is None else (jnp.asarray(keras_mask(mask)),)))
            y, dx, _, new_ntv = self._jax_fn(state, True, args, frozen=True)(*args)
        finally:
            layer.trainable = True
        values.update({id(v): a for v, a in zip(frozen_ntv, new_ntv)})
        state.tv = [values[id(v)] for v in layer.trainable_variables]
        state.ntv = [values[id(v)] for v in layer.non_trainable_variables]
        state.output_dtype = str(y.dtype)
        return {"y": np.asarray(y), "dx": np.asarray(dx), **state.moving_stats()}

    def bench_devices(self) -> tuple[str, ...]:
        if self.worker_env.get("JAX_PLATFORMS") == "cpu":  # the keras3-jax worker is pinned to the CPU
            return ()
        return super().bench_devices()

    def _bench(self, case, data, mode, variant, device):
        """The compiled train step of parity runs for fwd+bwd; forward-only programs compiled alike."""
        import jax
        import jax.numpy as jnp

        state = self.build(case, data)
        layer = state.layer
        x, g = jnp.asarray(data.x[0]), jnp.asarray(data.g[0])
        if mode == "train_fwd_bwd":
            step = self._jax_fn(state, True, (state.tv, state.ntv, x, g))

            def train_fwd_bwd():
                y, dx, dtv, ntv = step(state.tv, state.ntv, x, g)
                state.ntv = list(ntv)  # carried, as a training loop does
                return jax.block_until_ready((y, dx, dtv, state.ntv))

            return train_fwd_bwd
        training = mode == "train_fwd"

        def forward(tv, ntv, x):
            return layer.stateless_call(tv, ntv, x, training=training)

        fwd = jax.jit(forward).lower(state.tv, state.ntv, x).compile()

        def call():
            y, ntv = fwd(state.tv, state.ntv, x)
            if training:
                state.ntv = list(ntv)
            return jax.block_until_ready((y, ntv))

        return call

    def describe(self, state: JaxLayerState, info):
        import jax

        super().describe(state, info)
        info["compiles"] = state.compiles
        info["compile_s"] = state.compile_s
        if state.compile_cache_hits:
            info["compile_cache_hits"] = state.compile_cache_hits
        info["jax_enable_x64"] = bool(jax.config.jax_enable_x64)
        info["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")


class Keras3Torch(Keras3Adapter):
    """Keras 3 on torch: eager calls, torch autograd."""

    backend = "torch"
    backend_distributions = ("torch",)
    backend_env = {"MKL_NUM_THREADS": "1"}
    bench_variants = ("eager",)

    def setup_backend(self) -> None:
        import torch

        torch.set_num_threads(thread_count())
        torch.use_deterministic_algorithms(True)

    def _call(self, state: LayerState, x, g, training: bool, mask=None, v=None) -> dict[str, np.ndarray]:
        import torch

        from harness.adapters.torch_adapter import to_numpy, to_torch

        layer = state.layer
        xt = to_torch(torch, x).clone().requires_grad_(True)
        params = {q: p.value for q, p in taped_params(layer.gamma, layer.beta).items()}
        for p in params.values():
            p.grad = None
        kw = {} if mask is None else {"mask": torch.from_numpy(mask)}
        y = self.layer_call(state)(xt, training=training, **kw)
        state.output_dtype = str(y.dtype).removeprefix("torch.")
        if v is not None:  # double backward: the gradients with a graph, then those of sum(dx * v)
            first = torch.autograd.grad(y, [xt, *params.values()], grad_outputs=to_torch(torch, g).to(y.dtype),
                                        create_graph=True)
            wrt = [xt, *([params["dgamma"]] if "dgamma" in params else [])]
            second = torch.autograd.grad((first[0] * to_torch(torch, v).to(first[0].dtype)).sum(), wrt,
                                         allow_unused=True, materialize_grads=True)
            out = {"y": to_numpy(y.detach()), "dx": to_numpy(first[0].detach()), "hvp_x": to_numpy(second[0])}
            out.update({q: to_numpy(d.detach()) for q, d in zip(params, first[1:])})
            if "dgamma" in params:
                out["hvp_gamma"] = to_numpy(second[1])
            return out
        y.backward(to_torch(torch, g).to(y.dtype))
        out = {"y": to_numpy(y), "dx": to_numpy(xt.grad)}
        out.update({q: to_numpy(p.grad) for q, p in params.items() if p.grad is not None})  # frozen: no grad
        return out

    def layer_call(self, state: LayerState) -> Any:
        """What a call of the layer runs: the layer itself, eagerly (keras_torch_compile: under torch.compile)."""
        return state.layer

    def bench_devices(self) -> tuple[str, ...]:
        return ("cuda",) if gpu_visible("torch") else ()

    def _bench(self, case, data, mode, variant, device):
        import keras
        import torch

        from harness.adapters.torch_adapter import to_torch

        # Keras places torch variables on its own default device (cuda when present): pin it when that differs
        default = "cuda" if torch.cuda.is_available() else "cpu"
        scope = (lambda: keras.device(device)) if device != default else contextlib.nullcontext
        with scope():
            layer = self.build(case, data).layer
        x = to_torch(torch, data.x[0]).to(device)
        g = to_torch(torch, data.g[0]).to(device)
        xg = x.detach().clone().requires_grad_(True)
        params = [v.value for v in taped_params(layer.gamma, layer.beta).values()]
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

        def train_fwd():
            with scope(), torch.no_grad():
                y = layer(x, training=True)
            sync()
            return y

        def train_fwd_bwd():
            xg.grad = None
            for p in params:
                p.grad = None
            with scope():
                layer(xg, training=True).backward(g)
            sync()

        def eval_fwd():
            with scope(), torch.no_grad():
                y = layer(x, training=False)
            sync()
            return y

        return {"train_fwd": train_fwd, "train_fwd_bwd": train_fwd_bwd, "eval_fwd": eval_fwd}[mode]


TENSORFLOW = Keras3TF()
JAX = Keras3Jax()
TORCH = Keras3Torch()
