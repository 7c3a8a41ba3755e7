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
import functools
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from harness.adapters import jax_support
from harness.adapters.base import Adapter, Conventions
from harness.cases import Case
from harness.inputs import CaseData

KERAS_CONVENTIONS = dict(
    momentum_style="decay_of_old",
    running_var_estimator="biased",
    default_eps=1e-3,
    default_momentum=0.99,
    native_layout="channels_last",
    single_value_training="computes",
)

# the distribution that provides each backend (for versions(); tensorflow ships under several names)
TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos", "tf-nightly")


def keras_axis(case: Case) -> int:
    """The channel axis of the physical array: 1 for channels_first, -1 for channels_last."""
    return 1 if case.layout == "channels_first" else -1


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


def thread_count() -> int:
    return int(os.environ.get("BNPARITY_THREADS", "1"))


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


def tape_call(state: dict, x: np.ndarray, g: np.ndarray, training: bool, params_of) -> dict[str, np.ndarray]:
    """Call a Keras layer on TensorFlow under a GradientTape; y, dx (and dgamma, dbeta in training)."""
    import tensorflow as tf

    layer, case = state["layer"], state["case"]
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=training)
    params = params_of(layer) if case.affine and training else []
    grads = tape.gradient(y, [xt, *params], output_gradients=tf.cast(tf.constant(g), y.dtype))
    state["output_dtype"] = y.dtype.name
    out = {"y": y.numpy(), "dx": grads[0].numpy()}
    if params:
        out["dgamma"], out["dbeta"] = grads[1].numpy(), grads[2].numpy()
    return out


# -- benchmark helpers (bnparity bench), shared by the TensorFlow-based adapters and Flax ----------

_GPU_PROBES = {
    "tensorflow": "import tensorflow as tf; print(bool(tf.config.list_physical_devices('GPU')))",
    "jax": "import jax; print(any(d.platform == 'gpu' for d in jax.devices()))",
    "torch": "import torch; print(torch.cuda.is_available())",
}


@functools.cache
def gpu_visible(module: str) -> bool:
    """Whether ``module`` (tensorflow, jax, torch) sees a GPU, asked in a child interpreter.

    ``bench_devices`` runs in the bench driver's process: importing TensorFlow or JAX there would
    initialize them outside the adapter's worker environment, and JAX would preallocate most of the
    GPU's memory for a process that never computes.
    """
    if module not in _GPU_PROBES or importlib.util.find_spec(module) is None:
        return False
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    try:
        res = subprocess.run([sys.executable, "-c", _GPU_PROBES[module]], env=env, capture_output=True, text=True,
                             timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and res.stdout.strip().endswith("True")


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
    """Benchmark hooks shared by the tf-keras and raw-TF adapters: eager and tf.function, CPU and any visible GPU."""

    bench_variants = ("eager", "tf.function")  # tf.function is what Model.fit runs unless run_eagerly=True

    def bench_devices(self) -> tuple[str, ...]:
        return ("gpu",) if gpu_visible("tensorflow") else ()

    def bench_setup(self, case: Case, data: CaseData, device: str) -> tuple[Any, tuple]:
        """The adapter's state built on ``device``, and (x, g) placed there."""
        import tensorflow as tf

        scope = tf_scope(device)
        with tf.device(scope) if scope else contextlib.nullcontext():
            state = self.build(case, data)
        return state, tf_tensors(device, data.x[0], data.g[0])


class Keras3Adapter(Adapter):
    """``keras.layers.BatchNormalization`` on one Keras 3 backend."""

    framework = "keras"
    conventions = Conventions(
        **KERAS_CONVENTIONS,
        notes=("momentum is the decay of the old value; the moving variance is the biased batch variance; "
               "statistics from ops.moments (one-pass E[x^2]-E[x]^2 on the torch backend)"),
    )

    def __init__(self, backend: str):
        self.backend = backend
        self.name = f"keras3-{backend}"
        module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
        self.requires = ("keras", module)
        env = {"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_HOME": os.path.join(
            os.environ.get("TMPDIR", "/tmp"), "bnparity-keras-home")}
        if backend == "jax":
            env["JAX_ENABLE_X64"] = "1"
            env["JAX_PLATFORMS"] = "cpu"
        if backend == "torch":
            env.update(MKL_NUM_THREADS="1")
        self.worker_env = env
        self._jit_cache: dict[tuple, Any] = {}

    # -- parent side ------------------------------------------------------------------
    def available(self) -> str | None:
        reason = super().available()
        if reason is None:
            version = self.versions().get("keras", "")
            if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 3:
                reason = f"keras {version} is Keras 2, not Keras 3 (the tf-keras adapters cover it)"
        return reason

    def distributions(self) -> tuple[str, ...]:
        backend = {"tensorflow": TF_DISTRIBUTIONS, "jax": ("jax", "jaxlib"), "torch": ("torch",)}[self.backend]
        return ("keras", *backend)

    def supports(self, case: Case) -> str | None:
        reason = super().supports(case)
        if reason:
            return reason
        if not case.track_running_stats:
            return "Keras BatchNormalization always tracks moving statistics (no track_running_stats=False)"
        if dtype_policy(case) is None:
            return (f"no Keras dtype policy has variables in {case.resolved_param_dtype} "
                    f"and compute in {case.dtype}")
        return None

    def settings(self, case: Case) -> dict[str, Any]:
        out = super().settings(case)
        out["axis"] = keras_axis(case)
        out["dtype_policy"] = dtype_policy(case)
        out["backend"] = self.backend
        return out

    # -- worker side ------------------------------------------------------------------
    def setup(self) -> None:
        os.environ.setdefault("KERAS_BACKEND", self.backend)
        n = thread_count()
        if self.backend == "jax":
            if n == 1:  # XLA has no thread-count flag; this keeps its Eigen ops on the calling thread
                os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
            import jax

            jax.config.update("jax_enable_x64", os.environ.get("JAX_ENABLE_X64", "1") not in ("0", "false"))
            jax_support.watch()
            jax_support.enable_compilation_cache()
        elif self.backend == "tensorflow":
            setup_tf()
        elif self.backend == "torch":
            import torch

            torch.set_num_threads(n)
            torch.use_deterministic_algorithms(True)
        import keras

        if keras.backend.backend() != self.backend:
            raise RuntimeError(f"keras was imported with backend {keras.backend.backend()!r}, not {self.backend!r}: "
                               f"KERAS_BACKEND must be set before keras is imported (use a worker, not --in-process)")

    def _layer(self, case: Case):
        import keras

        m = self.mapped(case)
        kwargs: dict[str, Any] = dict(axis=keras_axis(case), center=case.affine, scale=case.affine,
                                      dtype=dtype_policy(case))
        if not case.use_defaults:  # defaults cases construct the layer as a user who passes nothing would
            kwargs.update(momentum=m.momentum, epsilon=m.eps)
        return keras.layers.BatchNormalization(**kwargs)

    def build(self, case: Case, data: CaseData) -> Any:
        layer = self._layer(case)
        layer.build(case.physical_shape)
        if case.affine:
            layer.gamma.assign(data.gamma)
            layer.beta.assign(data.beta)
        layer.moving_mean.assign(data.running_mean)
        layer.moving_variance.assign(data.running_var)
        state: dict[str, Any] = {"layer": layer, "case": case, "compiles": 0, "compile_s": 0.0}
        if self.backend == "jax":
            state["tv"] = [v.value for v in layer.trainable_variables]
            state["ntv"] = [v.value for v in layer.non_trainable_variables]
        return state

    def _running_stats(self, state) -> dict[str, np.ndarray]:
        if self.backend == "jax":  # stateless: the updated values live in the state, not the layer
            mean, var = self._ntv_stats(state)
            return {"running_mean": np.asarray(mean), "running_var": np.asarray(var)}
        layer = state["layer"]
        return {"running_mean": layer.moving_mean.numpy(), "running_var": layer.moving_variance.numpy()}

    # -- TensorFlow ---------------------------------------------------------------------
    def _tf_call(self, state, x, g, training: bool) -> dict[str, np.ndarray]:
        return tape_call(state, x, g, training, lambda layer: [layer.gamma.value, layer.beta.value])

    # -- torch ---------------------------------------------------------------------------
    def _torch_call(self, state, x, g, training: bool) -> dict[str, np.ndarray]:
        import torch

        from harness.adapters.torch_adapter import to_numpy, to_torch

        layer, case = state["layer"], state["case"]
        xt = to_torch(torch, x).clone().requires_grad_(True)
        params = [layer.gamma.value, layer.beta.value] if case.affine else []
        for p in params:
            p.grad = None
        y = layer(xt, training=training)
        y.backward(to_torch(torch, g).to(y.dtype))
        state["output_dtype"] = str(y.dtype).removeprefix("torch.")
        out = {"y": to_numpy(y), "dx": to_numpy(xt.grad)}
        if params and training:
            out["dgamma"], out["dbeta"] = to_numpy(params[0].grad), to_numpy(params[1].grad)
        return out

    # -- JAX -------------------------------------------------------------------------------
    def _jit_key(self, case: Case, training: bool) -> tuple:
        m = self.mapped(case)
        return (case.physical_shape, case.dtype, dtype_policy(case), keras_axis(case), case.affine,
                case.use_defaults, m.momentum, m.eps, training)

    def _jax_fn(self, state, training: bool, args: tuple):
        """The jitted train/eval step for this case's settings, compiled once per shape and setting.

        The function only reads the layer's configuration: variables are passed in, so a layer
        built for an earlier case with the same settings serves as its template.
        """
        import jax

        key = self._jit_key(state["case"], training)
        hit = self._jit_cache.get(key)
        if hit is not None:
            return hit
        template = state["layer"]

        def step(tv, ntv, x, g):
            def fwd(tv, x):
                return template.stateless_call(tv, ntv, x, training=training)

            y, vjp, new_ntv = jax.vjp(fwd, tv, x, has_aux=True)
            dtv, dx = vjp(g.astype(y.dtype))
            return y, dx, dtv, new_ntv

        t0 = time.perf_counter()
        mark = jax_support.watch()
        compiled = jax.jit(step).lower(*args).compile()
        state["compile_s"] += time.perf_counter() - t0
        if jax_support.compiled_since(mark).get("compile_cache_hits"):  # read back from the persistent cache
            state["compile_cache_hits"] = state.get("compile_cache_hits", 0) + 1
        else:
            state["compiles"] += 1
        self._jit_cache[key] = compiled
        return compiled

    def _ntv_stats(self, state):
        layer = state["layer"]
        by_id = {id(v): a for v, a in zip(layer.non_trainable_variables, state["ntv"])}
        return by_id[id(layer.moving_mean)], by_id[id(layer.moving_variance)]

    def _jax_call(self, state, x, g, training: bool) -> dict[str, np.ndarray]:
        import jax.numpy as jnp

        layer, case = state["layer"], state["case"]
        args = (state["tv"], state["ntv"], jnp.asarray(x), jnp.asarray(g))
        y, dx, dtv, new_ntv = self._jax_fn(state, training, args)(*args)
        if training:
            state["ntv"] = list(new_ntv)
        state["output_dtype"] = str(y.dtype)
        out = {"y": np.asarray(y), "dx": np.asarray(dx)}
        if case.affine and training:
            grads = {id(v): d for v, d in zip(layer.trainable_variables, dtv)}
            out["dgamma"] = np.asarray(grads[id(layer.gamma)])
            out["dbeta"] = np.asarray(grads[id(layer.beta)])
        return out

    def _call(self, state, x, g, training: bool) -> dict[str, np.ndarray]:
        fn = {"tensorflow": self._tf_call, "jax": self._jax_call, "torch": self._torch_call}[self.backend]
        return fn(state, x, g, training)

    def train_step(self, state, x, g):
        out = self._call(state, x, g, training=True)
        out.update(self._running_stats(state))
        return out

    def eval_step(self, state, x, g):
        return self._call(state, x, g, training=False)


    # -- benchmark hooks (bnparity bench) ------------------------------------------
    @property
    def bench_variants(self) -> tuple[str, ...]:
        """TensorFlow: eager and XLA (``jit_compile=True``); JAX: the stateless call is always jitted; torch: eager."""
        return {"tensorflow": ("eager", "jit"), "jax": ("jit",), "torch": ("eager",)}[self.backend]

    def bench_devices(self) -> tuple[str, ...]:
        if self.worker_env.get("JAX_PLATFORMS") == "cpu":  # the keras3-jax worker is pinned to the CPU
            return ()
        module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[self.backend]
        return (("cuda",) if self.backend == "torch" else ("gpu",)) if gpu_visible(module) else ()

    def bench_callable(self, case: Case, data: CaseData, mode: str, variant: str, device: str):
        """A zero-argument call of one BatchNormalization call in ``mode``, inputs already on the device."""
        if variant not in self.bench_variants:
            return None
        bench = {"tensorflow": self._bench_tf, "jax": self._bench_jax, "torch": self._bench_torch}[self.backend]
        return bench(case, data, mode, variant, device)

    def _bench_tf(self, case, data, mode, variant, device):
        import tensorflow as tf

        scope = tf_scope(device)
        with tf.device(scope) if scope else contextlib.nullcontext():
            layer = self.build(case, data)["layer"]
        x, g = tf_tensors(device, data.x[0], data.g[0])
        params = [layer.gamma.value, layer.beta.value] if case.affine else []
        fns = {"train_fwd": lambda x, g: layer(x, training=True),
               "train_fwd_bwd": tf_fwd_bwd(lambda x: layer(x, training=True), params),
               "eval_fwd": lambda x, g: layer(x, training=False)}
        return tf_bench_call(fns[mode], (x, g), variant, device)

    def _bench_jax(self, case, data, mode, variant, device):
        """The compiled train step of parity runs for fwd+bwd; forward-only programs compiled alike."""
        import jax
        import jax.numpy as jnp

        state = self.build(case, data)
        layer = state["layer"]
        x, g = jnp.asarray(data.x[0]), jnp.asarray(data.g[0])
        if mode == "train_fwd_bwd":
            step = self._jax_fn(state, True, (state["tv"], state["ntv"], x, g))

            def train_fwd_bwd():
                y, dx, dtv, ntv = step(state["tv"], state["ntv"], x, g)
                state["ntv"] = list(ntv)  # carried, as a training loop does
                return jax.block_until_ready((y, dx, dtv, state["ntv"]))

            return train_fwd_bwd
        training = mode == "train_fwd"

        def forward(tv, ntv, x):
            return layer.stateless_call(tv, ntv, x, training=training)

        fwd = jax.jit(forward).lower(state["tv"], state["ntv"], x).compile()

        def call():
            y, ntv = fwd(state["tv"], state["ntv"], x)
            if training:
                state["ntv"] = list(ntv)
            return jax.block_until_ready((y, ntv))

        return call

    def _bench_torch(self, case, data, mode, variant, device):
        import keras
        import torch

        from harness.adapters.torch_adapter import to_torch

        # Keras places torch variables on its own default device (cuda when present): pin it when that differs
        default = "cuda" if torch.cuda.is_available() else "cpu"
        scope = (lambda: keras.device(device)) if device != default else contextlib.nullcontext
        with scope():
            layer = self.build(case, data)["layer"]
        x = to_torch(torch, data.x[0]).to(device)
        g = to_torch(torch, data.g[0]).to(device)
        xg = x.detach().clone().requires_grad_(True)
        params = [layer.gamma.value, layer.beta.value] if case.affine else []
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

    def describe(self, state, info):
        import keras

        layer = state["layer"]
        info["backend"] = keras.backend.backend()
        info["dtype_policy"] = layer.dtype_policy.name
        info["output_dtype"] = state.get("output_dtype")
        info["moving_stats_dtype"] = str(layer.moving_mean.dtype)
        info["epsilon"] = float(layer.epsilon)
        info["momentum"] = float(layer.momentum)
        if self.backend == "jax":
            import jax

            info["compiles"] = state["compiles"]
            info["compile_s"] = state["compile_s"]
            if state.get("compile_cache_hits"):
                info["compile_cache_hits"] = state["compile_cache_hits"]
            info["jax_enable_x64"] = bool(jax.config.jax_enable_x64)
            info["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
        if self.backend == "tensorflow":
            tf_info(info)


TENSORFLOW = Keras3Adapter("tensorflow")
JAX = Keras3Adapter("jax")
TORCH = Keras3Adapter("torch")
