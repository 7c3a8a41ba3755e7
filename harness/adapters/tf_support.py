"""What the TensorFlow-based adapters (Keras 3 on TensorFlow, tf-keras, raw TF) share.

Import and identity: which distribution ships ``tensorflow``, the worker environment, a quiet
single-threaded deterministic import, and the oneDNN note for ``info``. Computing: one eager call
under a ``tf.GradientTape`` with the upstream gradient as ``output_gradients``. Benchmarks: the
device scope, tensors placed once, and eager / ``tf.function`` / XLA calls that wait for the device.

Nothing here imports TensorFlow at module level: the parent process reads names and versions only.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from harness.adapters.devices import gpu_visible, thread_count
from harness.cases import Case
from harness.inputs import CaseData

# tensorflow ships under several distribution names
TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos", "tf-nightly")
# TF_ENABLE_ONEDNN_OPTS=0: TensorFlow's own (Eigen) CPU kernels on every machine. TF turns its oneDNN kernels on
# by itself on CPUs with AVX-512 VNNI/BF16 or AMX, and they compute otherwise (measured on TF 2.21: the fused
# kernel's mean of a constant channel of 7 values is exact with oneDNN, one ulp off without it), so a verdict would
# depend on which CPU the run lands on. oneDNN is a path of its own, to be compared as one (not a silent switch).
TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
# what Keras' BatchNormalization declares (Keras 3, tf-keras non-fused); raw TF ops default to the same
KERAS_CONVENTIONS = dict(
    momentum_style="decay_of_old", running_var_estimator="biased",
    default_eps=1e-3, default_momentum=0.99,
    native_layout="channels_last", single_value_training="computes",
)
# Keras 3 and tf-keras: a layer with trainable = False runs in inference mode even when called with training=True
KERAS_FROZEN = dict(
    frozen_call="inference",
    frozen_note=("Keras: 'setting trainable = False on the layer means that the layer will be subsequently run in "
                 "inference mode' (keras/src/layers/normalization/batch_normalization.py, call: "
                 "`if training and self.trainable`; tf-keras: _get_training_value, `if not self.trainable: "
                 "training = False`)"),
)
NO_LAYER_TO_FREEZE = "raw TF ops have no layer to freeze (no trainable flag; the caller decides the mode)"


def fused_rank_refusal(case: Case) -> str | None:
    """Why the fused kernel (FusedBatchNormV3, behind tf-keras fused=True too) cannot take the case, if it cannot."""
    if case.rank not in (4, 5):
        return f"FusedBatchNormV3 takes 4D or 5D inputs only (this case is {case.rank}D)"
    if case.channel_axis % case.rank not in (1, case.rank - 1):
        # tf-keras: "Passing `fused=True` is only supported when axis is 1 or 3 for input rank = 4 or 1 or 4 for
        # input rank = 5" (tf_keras/src/layers/normalization/batch_normalization.py, __init__)
        return (f"FusedBatchNormV3 takes the channels first or last (data_format NC... or N...C), not at axis "
                f"{case.channel_axis} of a rank-{case.rank} input (tf-keras: 'Passing `fused=True` is only supported "
                f"when axis is 1 or 3 for input rank = 4 or 1 or 4 for input rank = 5')")
    return None


def tf_distribution() -> str | None:
    """The installed distribution that provides ``tensorflow`` (tensorflow, tensorflow-cpu, ...)."""
    for dist in TF_DISTRIBUTIONS:
        try:
            importlib.metadata.version(dist)
            return dist
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def tf_version() -> str | None:
    """TensorFlow's version, whichever distribution ships it (a PEP 440 string: '2.21.0')."""
    dist = tf_distribution()
    return importlib.metadata.version(dist) if dist else None


# -- the worker side -----------------------------------------------------------------------------

def quiet_tf_env() -> None:
    """Environment for TensorFlow set before it is imported: quiet, single-threaded as asked."""
    n = str(thread_count())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", n)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", n)


def setup_tf() -> Any:
    """Import TensorFlow once, with fixed threads and deterministic ops."""
    quiet_tf_env()
    import tensorflow as tf

    n = thread_count()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:  # the runtime was already initialized (in-process runs): keep its settings
        pass
    tf.config.experimental.enable_op_determinism()
    tf.get_logger().setLevel("ERROR")
    return tf


def tf_info(info: dict[str, Any]) -> None:
    """Record whether TensorFlow's oneDNN (MKL) kernels are on: they replace some CPU kernels."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        info["tf_onednn"] = bool(_pywrap_util_port.IsMklEnabled())
    except Exception:  # private module: its absence only loses the note
        pass
    info["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "")


class Taped(NamedTuple):
    """What ``tape_call`` returns: the arrays, y's dtype name, and what else the forward returned."""

    out: dict[str, np.ndarray]
    output_dtype: str
    aux: tuple


def taped_params(gamma: Any, beta: Any) -> dict[str, Any]:
    """``{"dgamma": gamma, "dbeta": beta}`` for the parameters a layer has (None: it has not that one)."""
    return {q: v for q, v in (("dgamma", gamma), ("dbeta", beta)) if v is not None}


def taped_tensors(forward: Callable[[Any], tuple], xt: Any, gt: Any, params: dict[str, Any],
                  vt: Any = None) -> tuple[dict[str, Any], Any, tuple]:
    """The taped step on tensors (graph-safe: a ``tf.function`` may trace it): ``(arrays, y, aux)``; see
    ``tape_call``."""
    import tensorflow as tf

    outer = tf.GradientTape(persistent=False) if vt is not None else contextlib.nullcontext()
    with outer:
        if vt is not None:
            outer.watch(xt)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y, *aux = forward(xt)
        grads = tape.gradient(y, [xt, *params.values()], output_gradients=tf.cast(gt, y.dtype))
        if vt is not None:
            along = tf.reduce_sum(grads[0] * tf.cast(vt, grads[0].dtype))
    out = {"y": y, "dx": grads[0]}
    out.update(zip(params, grads[1:]))
    if vt is not None:
        wrt = [xt, *([params["dgamma"]] if "dgamma" in params else [])]
        second = outer.gradient(along, wrt, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        out["hvp_x"] = second[0]
        if "dgamma" in params:
            out["hvp_gamma"] = second[1]
    return out, y, tuple(aux)


def tape_call(forward: Callable[[Any], tuple], x: np.ndarray, g: np.ndarray, params: dict[str, Any],
              v: np.ndarray | None = None, wrap: Callable[[Callable], Callable] | None = None) -> Taped:
    """``forward(x)`` under a GradientTape, then the gradient of ``sum(y * g)``.

    ``forward`` takes the input tensor and returns ``(y, *aux)``. The arrays are y and dx, plus the gradient
    of each of ``params`` under its name (``taped_params``: dgamma, dbeta). With a direction ``v``, nested tapes:
    the outer one records the inner gradient computation, and its gradient of sum(dx * v) gives hvp_x and (of the
    ``dgamma`` parameter) hvp_gamma. ``wrap`` runs the whole step (forward, tapes, any variable update the forward
    makes) another way: the adapter's ``TFStep.tf_step`` (None: eagerly; ``tf.function``, with or without XLA, on
    the graph and compiled paths).
    """
    import tensorflow as tf

    def step(xt, gt, *vt):
        return taped_tensors(forward, xt, gt, params, vt[0] if vt else None)

    if wrap is not None:
        step = wrap(step)
    out, y, aux = step(tf.constant(x), tf.constant(g), *(() if v is None else (tf.constant(v),)))
    return Taped({q: t.numpy() for q, t in out.items()}, y.dtype.name, tuple(aux))


class TFStep:
    """How a TensorFlow-based adapter runs its taped step (``tape_call``'s ``wrap``): eagerly here; the graph and
    compiled paths (harness.adapters.tf_paths) return a ``tf.function`` wrapper."""

    def tf_step(self) -> Callable[[Callable], Callable] | None:
        return None

    def tf_mask(self, mask: np.ndarray) -> Any:
        """The mask as the step's layer call takes it: a NumPy array in eager (tf-keras converts it); the graph
        paths hand a tensor to tf-keras, whose traced call sets attributes on the mask."""
        return mask


# -- benchmark helpers (bnparity bench) ------------------------------------------------------------

def tf_scope(device: str) -> str | None:
    """The ``tf.device`` name that pins work to ``device`` ("cpu" | "gpu"), or None where no pin is needed.

    Without a GPU every op runs on the CPU anyway, and leaving the scope out keeps its ~5 us off each timed call.
    """
    import tensorflow as tf

    if device == "cpu" and not tf.config.list_logical_devices("GPU"):
        return None
    return "/GPU:0" if device == "gpu" else "/CPU:0"


def tf_bench_call(fn: Callable[..., Any], args: tuple, variant: str, device: str) -> Callable[[], Any] | None:
    """A zero-argument call of ``fn(*args)``: eager, ``tf.function`` or ``tf.function(jit_compile=True)``.

    ``fn`` must return every result: a ``tf.function`` prunes what no output or stateful op needs.
    On the CPU eager ops and function calls return when done; on a GPU they return once enqueued,
    so the call waits for the device.
    """
    import tensorflow as tf

    if variant in ("tf.function", "jit"):
        fn = tf.function(fn, jit_compile=True) if variant == "jit" else tf.function(fn)
    elif variant != "eager":
        return None
    scope = tf_scope(device)
    if scope is None:
        return lambda: fn(*args)
    sync = getattr(getattr(tf.test, "experimental", None), "sync_devices", None)

    def call():
        with tf.device(scope):
            out = fn(*args)
        if device == "gpu":
            if sync is not None:
                sync()
            else:  # older TensorFlow: one element back to the host waits for the stream
                tf.reshape(tf.nest.flatten(out)[0], [-1])[:1].numpy()
        return out

    return call


def tf_tensors(device: str, *arrays: np.ndarray) -> tuple:
    """NumPy arrays as TensorFlow tensors on ``device``, converted once, outside the timed call."""
    import tensorflow as tf

    scope = tf_scope(device)
    if scope is None:
        return tuple(tf.constant(a) for a in arrays)
    with tf.device(scope):
        return tuple(tf.identity(tf.constant(a)) for a in arrays)


def tf_fwd_bwd(forward: Callable[[Any], Any], params: list) -> Callable[[Any, Any], Any]:
    """forward(x) under a GradientTape, then (dx, *dparams) for the upstream gradient g."""
    import tensorflow as tf

    def fwd_bwd(x, g):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = forward(x)
        return y, tape.gradient(y, [x, *params], output_gradients=g)

    return fwd_bwd


class TFBench:
    """Benchmark hooks of the TensorFlow-based adapters: eager and tf.function, CPU and any visible GPU.

    A mixin for an ``Adapter``: ``bench_setup`` calls its ``build``.
    """

    bench_variants: tuple[str, ...] = ("eager", "tf.function")  # tf.function is what Model.fit runs by default

    def bench_devices(self) -> tuple[str, ...]:
        return ("gpu",) if gpu_visible("tensorflow") else ()

    def bench_setup(self, case: Case, data: CaseData, device: str) -> tuple[Any, tuple]:
        """The adapter's state built on ``device``, and (x, g) placed there."""
        import tensorflow as tf

        scope = tf_scope(device)
        with tf.device(scope) if scope else contextlib.nullcontext():
            state = self.build(case, data)  # type: ignore[attr-defined]
        return state, tf_tensors(device, data.x[0], data.g[0])

    def bench_layer(self, case: Case, data: CaseData, mode: str, variant: str, device: str,
                    params_of: Callable[[Any], list]) -> Callable[[], Any] | None:
        """A zero-argument call of a Keras layer (``state.layer``) in ``mode``, inputs already on the device."""
        if variant not in self.bench_variants:
            return None
        state, (x, g) = self.bench_setup(case, data, device)
        layer = state.layer
        params = params_of(layer)
        fns = {"train_fwd": lambda x, g: layer(x, training=True),
               "train_fwd_bwd": tf_fwd_bwd(lambda x: layer(x, training=True), params),
               "eval_fwd": lambda x, g: layer(x, training=False)}
        return tf_bench_call(fns[mode], (x, g), variant, device)
