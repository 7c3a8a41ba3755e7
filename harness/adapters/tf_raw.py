"""TensorFlow raw ops, no Keras: what a user who writes BN by hand gets.

* ``tf-raw``: ``tf.nn.moments`` + ``tf.nn.batch_normalization``, with the moving average
  written out as Keras does it (``r = m * r + (1 - m) * batch``, biased variance). The ops run
  in the input dtype, as a hand-written layer would call them: the float32 parameters are cast
  to the input dtype, because TF ops do not promote. ``tf.nn.moments`` upcasts float16 (not
  bfloat16) for its reductions. The moving average is kept in the parameter dtype.
* ``tf-fused``: ``tf.compat.v1.nn.fused_batch_norm`` (``FusedBatchNormV3``) with
  ``exponential_avg_factor`` = the weight of the new statistic, so the op itself returns the
  updated running statistics (the Bessel-corrected variance, ``n / max(n - 1, 1)``). It exists
  for 4D/5D inputs only and has no float64 kernel (attr ``T`` in {half, bfloat16, float}):
  other ranks are a skip; float64 is run and its ``InvalidArgumentError`` is recorded (the
  catalogue's float64 4D case expects it), so a TF release that adds float64 is noticed.

Both run eagerly, gradients from ``tf.GradientTape`` with the upstream gradient passed as
``output_gradients``. Sources: tensorflow/python/ops/nn_impl.py (moments,
batch_normalization, fused_batch_norm), tensorflow/core/kernels/fused_batch_norm_op.cc.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import numpy as np

from harness.adapters.base import Adapter, Conventions
from harness.adapters.keras3 import (
    TF_DISTRIBUTIONS,
    TFBench,
    keras_axis,
    setup_tf,
    tf_bench_call,
    tf_fwd_bwd,
    tf_info,
)
from harness.cases import Case
from harness.inputs import CaseData

TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3"}


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


class _TFAdapter(TFBench, Adapter):
    framework = "tensorflow"
    requires = ("tensorflow",)
    worker_env = TF_ENV

    def distributions(self) -> tuple[str, ...]:
        return tuple(d for d in TF_DISTRIBUTIONS if d == tf_distribution())

    def framework_version(self) -> str | None:
        """The ledger scopes entries by ``tensorflow``'s version, whichever distribution ships it."""
        return tf_version()

    def supports(self, case: Case) -> str | None:
        reason = super().supports(case)
        if reason:
            return reason
        if not case.track_running_stats:
            return f"{self.name} always updates running statistics (the case's untracked mode is torch's)"
        return None

    def setup(self) -> None:
        setup_tf()

    # -- benchmark hooks (bnparity bench; variants and devices from TFBench) -----------
    def bench_callable(self, case: Case, data: CaseData, mode: str, variant: str, device: str):
        """A zero-argument call of one hand-written BN step in ``mode``, inputs already on the device."""
        if variant not in self.bench_variants:
            return None
        state, (x, g) = self.bench_setup(case, data, device)
        fn = self._bench_fn(state, mode)
        return None if fn is None else tf_bench_call(fn, (x, g), variant, device)

    def _bench_fn(self, state, mode: str):
        """fn(x, g) for ``mode``, returning every result (see tf_bench_call)."""
        raise NotImplementedError

    def train_step(self, state, x, g):
        return self._run(state, x, g, training=True)

    def eval_step(self, state, x, g):
        return self._run(state, x, g, training=False)

    def describe(self, state, info):
        info["output_dtype"] = state.get("output_dtype")
        tf_info(info)


class TFRawAdapter(_TFAdapter):
    name = "tf-raw"
    conventions = Conventions(
        momentum_style="decay_of_old",
        running_var_estimator="biased",
        default_eps=1e-3,
        default_momentum=0.99,
        native_layout="channels_last",
        single_value_training="computes",
        notes=("tf.nn.batch_normalization has no default epsilon and tf.nn.moments no moving average: "
               "defaults cases use Keras' (epsilon 1e-3, decay 0.99), the moving average is Keras' decay form"),
    )

    def build(self, case: Case, data: CaseData) -> Any:
        import tensorflow as tf

        m = self.mapped(case)
        rank = len(case.physical_shape)
        axis = keras_axis(case) % rank
        state: dict[str, Any] = {
            "case": case, "eps": m.eps, "decay": m.momentum,
            "axes": [i for i in range(rank) if i != axis],
            "bshape": [case.channels if i == axis else 1 for i in range(rank)],
            "rm": tf.Variable(data.running_mean), "rv": tf.Variable(data.running_var),
        }
        if case.affine:
            state["gamma"], state["beta"] = tf.Variable(data.gamma), tf.Variable(data.beta)
        return state

    def _bn(self, state, x, mean, var):
        """tf.nn.batch_normalization in x's dtype, per-channel vectors reshaped to broadcast."""
        import tensorflow as tf

        shape, dt = state["bshape"], x.dtype
        b = lambda v: None if v is None else tf.reshape(tf.cast(v, dt), shape)  # noqa: E731
        return tf.nn.batch_normalization(x, b(mean), b(var), b(state.get("beta")), b(state.get("gamma")),
                                         state["eps"])

    def _run(self, state, x, g, training: bool) -> dict[str, np.ndarray]:
        import tensorflow as tf

        case = state["case"]
        xt = tf.constant(x)
        params = [state["gamma"], state["beta"]] if case.affine and training else []
        with tf.GradientTape() as tape:
            tape.watch(xt)
            if training:
                mean, var = tf.nn.moments(xt, state["axes"])
                y = self._bn(state, xt, mean, var)
            else:
                y = self._bn(state, xt, state["rm"], state["rv"])
        grads = tape.gradient(y, [xt, *params], output_gradients=tf.constant(g))
        state["output_dtype"] = y.dtype.name
        out = {"y": y.numpy(), "dx": grads[0].numpy()}
        if params:
            out["dgamma"], out["dbeta"] = grads[1].numpy(), grads[2].numpy()
        if training:
            state["stats_dtype"] = mean.dtype.name
            d = state["decay"]
            for var_name, batch in (("rm", mean), ("rv", var)):
                r = state[var_name]
                r.assign(r * d + tf.cast(batch, r.dtype) * (1.0 - d))
            out["running_mean"], out["running_var"] = state["rm"].numpy(), state["rv"].numpy()
        return out


    def _bench_fn(self, state, mode: str):
        import tensorflow as tf

        case = state["case"]
        params = [state["gamma"], state["beta"]] if case.affine else []

        def update(mean, var):  # the moving average as _run writes it
            d = state["decay"]
            for name, batch in (("rm", mean), ("rv", var)):
                r = state[name]
                r.assign(r * d + tf.cast(batch, r.dtype) * (1.0 - d))

        def train_fwd(x, g):
            mean, var = tf.nn.moments(x, state["axes"])
            update(mean, var)
            return self._bn(state, x, mean, var)

        def train_fwd_bwd(x, g):
            with tf.GradientTape() as tape:
                tape.watch(x)
                mean, var = tf.nn.moments(x, state["axes"])
                y = self._bn(state, x, mean, var)
            grads = tape.gradient(y, [x, *params], output_gradients=g)
            update(mean, var)
            return y, grads

        def eval_fwd(x, g):
            return self._bn(state, x, state["rm"], state["rv"])

        return {"train_fwd": train_fwd, "train_fwd_bwd": train_fwd_bwd, "eval_fwd": eval_fwd}[mode]

    def describe(self, state, info):
        super().describe(state, info)
        info["moments_dtype"] = state.get("stats_dtype")


class TFFusedAdapter(_TFAdapter):
    name = "tf-fused"
    conventions = Conventions(
        momentum_style="weight_of_new",
        running_var_estimator="unbiased_guarded",
        default_eps=1e-3,
        default_momentum=1.0,
        native_layout="channels_last",
        single_value_training="computes",
        notes=("exponential_avg_factor is the weight of the new statistic (default 1.0: replace); the returned "
               "variance is Bessel-corrected with n/max(n-1, 1) on CPU; epsilon default 1e-3 (the wrapper's)"),
    )

    def supports(self, case: Case) -> str | None:
        reason = super().supports(case)
        if reason:
            return reason
        if case.rank not in (4, 5):
            return f"FusedBatchNormV3 takes 4D or 5D inputs only (this case is {case.rank}D)"
        return None

    def settings(self, case: Case) -> dict[str, Any]:
        out = super().settings(case)
        out["data_format"] = self._data_format(case)
        return out

    @staticmethod
    def _data_format(case: Case) -> str:
        spatial = "DHW" if case.rank == 5 else "HW"
        return f"NC{spatial}" if case.layout == "channels_first" else f"N{spatial}C"

    def build(self, case: Case, data: CaseData) -> Any:
        import tensorflow as tf

        m = self.mapped(case)
        pdt = case.resolved_param_dtype
        state: dict[str, Any] = {
            "case": case, "data_format": self._data_format(case),
            "kwargs": {} if case.use_defaults else {"epsilon": m.eps, "exponential_avg_factor": m.momentum},
            "rm": tf.Variable(data.running_mean), "rv": tf.Variable(data.running_var),
        }
        if case.affine:
            state["gamma"], state["beta"] = tf.Variable(data.gamma), tf.Variable(data.beta)
        else:  # what tf-keras passes when center/scale are off
            state["gamma"] = tf.constant(np.ones(case.channels, pdt))
            state["beta"] = tf.constant(np.zeros(case.channels, pdt))
        return state

    def _run(self, state, x, g, training: bool) -> dict[str, np.ndarray]:
        import tensorflow as tf

        case = state["case"]
        xt = tf.constant(x)
        params = [state["gamma"], state["beta"]] if case.affine and training else []
        kwargs = state["kwargs"] if training else {k: v for k, v in state["kwargs"].items() if k == "epsilon"}
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                xt, state["gamma"], state["beta"], mean=state["rm"], variance=state["rv"],
                data_format=state["data_format"], is_training=training, **kwargs)
        grads = tape.gradient(y, [xt, *params], output_gradients=tf.constant(g))
        state["output_dtype"] = y.dtype.name
        out = {"y": y.numpy(), "dx": grads[0].numpy()}
        if params:
            out["dgamma"], out["dbeta"] = grads[1].numpy(), grads[2].numpy()
        if training:  # with exponential_avg_factor the op returns the updated running statistics
            state["rm"].assign(mean)
            state["rv"].assign(var)
            out["running_mean"], out["running_var"] = mean.numpy(), var.numpy()
        return out


    def _bench_fn(self, state, mode: str):
        import tensorflow as tf

        case = state["case"]
        params = [state["gamma"], state["beta"]] if case.affine else []
        training = mode != "eval_fwd"
        kwargs = state["kwargs"] if training else {k: v for k, v in state["kwargs"].items() if k == "epsilon"}

        def forward(x):
            y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                x, state["gamma"], state["beta"], mean=state["rm"], variance=state["rv"],
                data_format=state["data_format"], is_training=training, **kwargs)
            if training:  # the op returns the updated running statistics, as in _run
                state["rm"].assign(mean)
                state["rv"].assign(var)
            return y

        if mode == "train_fwd_bwd":
            return tf_fwd_bwd(forward, params)
        return lambda x, g: forward(x)

    def describe(self, state, info):
        super().describe(state, info)
        info["data_format"] = state["data_format"]


RAW = TFRawAdapter()
FUSED = TFFusedAdapter()
