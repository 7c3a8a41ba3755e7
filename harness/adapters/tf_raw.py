"""TensorFlow raw ops, no Keras: what a user who writes BN by hand gets.

* ``tf-raw``: ``tf.nn.moments`` + ``tf.nn.batch_normalization``, with the moving average
  written out as Keras does it (``r = m * r + (1 - m) * batch``, biased variance). The ops run
  in the input dtype, as a hand-written layer would call them: the float32 parameters are cast
  to the input dtype, because TF ops do not promote. ``tf.nn.moments`` upcasts float16 (not
  bfloat16) for its reductions. The moving average is kept in the parameter dtype.
* ``tf-fused``: ``tf.compat.v1.nn.fused_batch_norm`` (``FusedBatchNormV3``) with
  ``exponential_avg_factor`` = the weight of the new statistic, so the op itself returns the
  updated running statistics (the Bessel-corrected variance, ``n / max(n - 1, 1)``). It exists
  for 4D/5D inputs only (other ranks are a skip) and runs float16/bfloat16/float32 inputs with
  float32 parameters only: the op takes ``T`` in {half, bfloat16, float} and ``U`` in {bfloat16,
  float}, and the CPU kernels exist for ``U`` = float alone. The other dtype pairs are declared
  in ``refuses`` with TensorFlow's message, so they are skips; a case that lists ``expect_raise``
  for tf-fused runs anyway (the catalogue's float64 4D case does, so a TF release that adds
  float64 is noticed).

Both run eagerly, gradients from ``tf.GradientTape`` with the upstream gradient passed as
``output_gradients``. Sources: tensorflow/python/ops/nn_impl.py (moments,
batch_normalization, fused_batch_norm), tensorflow/core/kernels/fused_batch_norm_op.cc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.adapters.base import Adapter, Conventions, Precision, Refusal
from harness.adapters.tf_support import (
    KERAS_CONVENTIONS,
    NO_LAYER_TO_FREEZE,
    TF_DISTRIBUTIONS,
    TF_ENV,
    TFBench,
    TFStep,
    fused_rank_refusal,
    setup_tf,
    tape_call,
    taped_params,
    tf_bench_call,
    tf_distribution,
    tf_fwd_bwd,
    tf_info,
    tf_version,
)
from harness.cases import Case
from harness.inputs import CaseData


@dataclass(kw_only=True)
class TFState:
    """The variables of one hand-written BN, and the output dtype of its last call."""

    case: Case
    rm: Any  # tf.Variable: running mean
    rv: Any  # tf.Variable: running variance
    gamma: Any = None  # tf.Variable, or None (raw without affine) / a constant (fused without affine)
    beta: Any = None
    output_dtype: str | None = None


@dataclass(kw_only=True)
class RawState(TFState):
    eps: float
    decay: float  # Keras' momentum: the weight of the old value
    axes: list[int]  # reduced over
    bshape: list[int]  # per-channel vectors reshaped to broadcast
    stats_dtype: str | None = None


@dataclass(kw_only=True)
class FusedState(TFState):
    data_format: str
    kwargs: dict[str, float]  # epsilon and exponential_avg_factor, or nothing for the wrapper's defaults


class _TFAdapter(TFStep, TFBench, Adapter):
    """One BN step written with TF ops: ``_forward`` and ``_store`` are what the two adapters differ in."""

    framework = "tensorflow"
    no_second_order = None  # nested GradientTapes (tf_support.tape_call)
    no_renorm = ("tf.nn.batch_normalization and fused_batch_norm are the plain transform; Batch Renormalization "
                 "lives in the Keras layers (renorm=True)")
    no_mask = ("tf.nn.moments, tf.nn.batch_normalization and fused_batch_norm take no mask (masked statistics are "
               "tf.nn.weighted_moments, which the tf-keras non-fused layer uses)")
    no_virtual_batch = ("tf.nn.moments, tf.nn.batch_normalization and fused_batch_norm are the plain transform; "
                        "virtual batches live in the tf-keras layer (virtual_batch_size)")
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

    def _forward(self, state: Any, x: Any, training: bool) -> tuple:
        """(y,) in eval; (y, batch mean, batch variance or updated running statistics) in training."""
        raise NotImplementedError

    def _store(self, state: Any, mean: Any, var: Any) -> None:
        """Update the running statistics from what ``_forward`` returned (graph-safe: no NumPy)."""
        raise NotImplementedError

    def _stored(self, state: Any, mean: Any, var: Any) -> dict[str, np.ndarray]:
        """The running statistics after ``_store``, as NumPy arrays."""
        raise NotImplementedError

    def _run(self, state: TFState, x: np.ndarray, g: np.ndarray, training: bool, v=None) -> dict[str, np.ndarray]:
        # the fused adapter's stand-ins for an absent parameter are constants: no gradient of theirs is recorded
        params = taped_params(state.gamma if state.case.has_scale else None,
                              state.beta if state.case.has_center else None)

        def forward(xt):
            y, *stats = self._forward(state, xt, training)
            if training:  # the update is part of the step (a tf.function step updates its variables in the graph)
                self._store(state, *stats)
            return (y, *stats)

        taped = tape_call(forward, x, g, params, v, self.tf_step())
        state.output_dtype = taped.output_dtype
        out = taped.out
        if training:
            out.update(self._stored(state, *taped.aux))
        else:  # the variables as the eval call left them
            out.update(running_mean=state.rm.numpy(), running_var=state.rv.numpy())
        return out

    def train_step(self, state, x, g, v=None):
        return self._run(state, x, g, training=True, v=v)

    def eval_step(self, state, x, g):
        return self._run(state, x, g, training=False)

    def describe(self, state: TFState, info):
        info["output_dtype"] = state.output_dtype
        tf_info(info)

    # -- benchmark hooks (bnparity bench; variants and devices from TFBench) -----------
    def bench_callable(self, case: Case, data: CaseData, mode: str, variant: str, device: str):
        """A zero-argument call of one hand-written BN step in ``mode``, inputs already on the device."""
        if variant not in self.bench_variants:
            return None
        state, (x, g) = self.bench_setup(case, data, device)
        return tf_bench_call(self._bench_fn(state, mode), (x, g), variant, device)

    def _bench_fn(self, state: TFState, mode: str):
        """fn(x, g) for ``mode``, the running statistics updated in training, returning every result."""
        training = mode != "eval_fwd"

        def forward(x):
            y, *stats = self._forward(state, x, training)
            if training:
                self._store(state, *stats)
            return y

        if mode == "train_fwd_bwd":
            return tf_fwd_bwd(forward, list(taped_params(state.gamma if state.case.has_scale else None,
                                                         state.beta if state.case.has_center else None).values()))
        return lambda x, g: forward(x)


class TFRawAdapter(_TFAdapter):
    name = "tf-raw"
    conventions = Conventions(
        **KERAS_CONVENTIONS,
        frozen_note=NO_LAYER_TO_FREEZE,
        notes=("tf.nn.batch_normalization has no default epsilon and tf.nn.moments no moving average: "
               "defaults cases use Keras' (epsilon 1e-3, decay 0.99), the moving average is Keras' decay form"),
    )

    def precision(self, case: Case) -> Precision:
        """The ops run in the input dtype (the parameters are cast to it, TF ops do not promote):

        * statistics: ``tf.nn.moments`` casts float16 (only) to float32 and the result back to float16; a
          bfloat16 input stays bfloat16 (reduce_mean accumulates wider and rounds once, probed on TF 2.21: 20 of
          20 means equal the float32 sum rounded, but each squared deviation is a bfloat16 product of the
          bfloat16-rounded mean), so bfloat16 is declared for its statistics;
        * held, normalize, output: the input dtype (``tf.nn.batch_normalization`` on casts to x.dtype);
        * running, params: the parameter dtype (the variables; the moving average is written in their dtype).
        """
        dt, pd = case.dtype, case.resolved_param_dtype
        # tensorflow/python/ops/nn_impl.py:1268 (moments: float16 -> float32) and :1283-1285 (cast back)
        stats = "float32" if dt == "float16" else dt
        # tensorflow/python/ops/nn_impl.py:1491-1497 (batch_normalization: x * cast(inv, x.dtype) + cast(...))
        return Precision(statistics=stats, held=dt, normalize=dt, running=pd, params=pd, output=dt)

    def build(self, case: Case, data: CaseData) -> RawState:
        import tensorflow as tf

        m = self.mapped(case)
        rank = len(case.physical_shape)
        axis = m.axis % rank
        affine = dict(gamma=tf.Variable(data.gamma) if case.has_scale else None,
                      beta=tf.Variable(data.beta) if case.has_center else None)
        return RawState(case=case, eps=m.eps, decay=m.momentum, axes=[i for i in range(rank) if i != axis],
                        bshape=[case.channels if i == axis else 1 for i in range(rank)],
                        rm=tf.Variable(data.running_mean), rv=tf.Variable(data.running_var), **affine)

    def _bn(self, state: RawState, x, mean, var):
        """tf.nn.batch_normalization in x's dtype, per-channel vectors reshaped to broadcast."""
        import tensorflow as tf

        shape, dt = state.bshape, x.dtype
        b = lambda v: None if v is None else tf.reshape(tf.cast(v, dt), shape)  # noqa: E731
        return tf.nn.batch_normalization(x, b(mean), b(var), b(state.beta), b(state.gamma), state.eps)

    def _forward(self, state: RawState, x, training: bool) -> tuple:
        import tensorflow as tf

        if not training:
            return (self._bn(state, x, state.rm, state.rv),)
        mean, var = tf.nn.moments(x, state.axes)
        return self._bn(state, x, mean, var), mean, var

    def _store(self, state: RawState, mean, var) -> None:
        """The moving average as Keras writes it, in the variables' dtype: r = d * r + (1 - d) * batch."""
        import tensorflow as tf

        d = state.decay
        for r, batch in ((state.rm, mean), (state.rv, var)):
            r.assign(r * d + tf.cast(batch, r.dtype) * (1.0 - d))

    def _stored(self, state: RawState, mean, var) -> dict[str, np.ndarray]:
        state.stats_dtype = mean.dtype.name
        return {"running_mean": state.rm.numpy(), "running_var": state.rv.numpy()}

    def describe(self, state: RawState, info):
        super().describe(state, info)
        info["moments_dtype"] = state.stats_dtype


_FUSED_OP = ('https://github.com/tensorflow/tensorflow/blob/v2.21.0/tensorflow/core/ops/nn_ops.cc '
             '(REGISTER_OP("FusedBatchNormV3"): T in {half, bfloat16, float}, U in {bfloat16, float})')
_U_HALF = "Value for attr 'U' of half is not in the list of allowed values: bfloat16, float"
_U_DOUBLE = "Value for attr 'U' of double is not in the list of allowed values: bfloat16, float"
_T_DOUBLE = "Value for attr 'T' of double is not in the list of allowed values: half, bfloat16, float"
_FUSED_CPU_KERNELS = ('https://github.com/tensorflow/tensorflow/blob/v2.21.0/tensorflow/core/kernels/'
                      'fused_batch_norm_op.cc (the CPU kernels are registered for U = float only)')


class TFFusedAdapter(_TFAdapter):
    name = "tf-fused"
    conventions = Conventions(
        momentum_style="weight_of_new", running_var_estimator="unbiased_guarded",
        default_eps=1e-3, default_momentum=1.0,
        native_layout="channels_last", single_value_training="computes", frozen_note=NO_LAYER_TO_FREEZE,
        notes=("exponential_avg_factor is the weight of the new statistic (default 1.0: replace); the returned "
               "variance is Bessel-corrected with n/max(n-1, 1) on CPU; epsilon default 1e-3 (the wrapper's)"),
    )

    # what FusedBatchNormV3 says for each (input, parameter) dtype pair it refuses, tried on TF 2.21 (CPU);
    # where both attrs are out of range it names either, in no fixed order
    refuses = tuple(
        Refusal(frozenset(pairs), error, says, source)
        for pairs, error, says, source in (
            ({("float16", "float16"), ("bfloat16", "float16"), ("float32", "float16")}, "InvalidArgumentError",
             _U_HALF, _FUSED_OP),
            ({("float16", "float64"), ("bfloat16", "float64"), ("float32", "float64")}, "InvalidArgumentError",
             _U_DOUBLE, _FUSED_OP),
            ({("float64", "float32"), ("float64", "bfloat16")}, "InvalidArgumentError", _T_DOUBLE, _FUSED_OP),
            ({("float64", "float16")}, "InvalidArgumentError", (_T_DOUBLE, _U_HALF), _FUSED_OP),
            ({("float64", "float64")}, "InvalidArgumentError", (_T_DOUBLE, _U_DOUBLE), _FUSED_OP),
            ({("float16", "bfloat16"), ("bfloat16", "bfloat16"), ("float32", "bfloat16")}, "NotFoundError",
             "Could not find device for node: {{node FusedBatchNormV3}}", _FUSED_CPU_KERNELS),
        ))

    def supports(self, case: Case) -> str | None:
        return super().supports(case) or fused_rank_refusal(case)

    def precision(self, case: Case) -> Precision:
        """The default: FusedBatchNormV3 runs only with U = float on CPU (``refuses`` has the rest), and its CPU
        kernel casts x to U for the statistics and the normalization, returns mean/variance in U and y in T.
        Not established from the C++ source (not installed): from the op's attrs and the returned dtypes."""
        # https://github.com/tensorflow/tensorflow/blob/v2.21.0/tensorflow/core/kernels/fused_batch_norm_op.cc
        # (FusedBatchNorm<CPUDevice, T, U>: x.template cast<U>(), y cast back to T)
        return super().precision(case)

    def settings(self, case: Case) -> dict[str, Any]:
        out = super().settings(case)
        out["data_format"] = self._data_format(case)
        return out

    @staticmethod
    def _data_format(case: Case) -> str:
        spatial = "DHW" if case.rank == 5 else "HW"
        return f"NC{spatial}" if case.channel_axis % case.rank == 1 else f"N{spatial}C"

    def build(self, case: Case, data: CaseData) -> FusedState:
        import tensorflow as tf

        m = self.mapped(case)
        pdt = case.resolved_param_dtype
        # what tf-keras passes for a parameter the layer does not have: a constant 1 (scale) or 0 (center)
        gamma = tf.Variable(data.gamma) if case.has_scale else tf.constant(np.ones(case.channels, pdt))
        beta = tf.Variable(data.beta) if case.has_center else tf.constant(np.zeros(case.channels, pdt))
        return FusedState(case=case, data_format=self._data_format(case),
                          kwargs={} if case.use_defaults else {"epsilon": m.eps, "exponential_avg_factor": m.momentum},
                          rm=tf.Variable(data.running_mean), rv=tf.Variable(data.running_var), gamma=gamma, beta=beta)

    def _forward(self, state: FusedState, x, training: bool) -> tuple:
        """(y, mean, variance): in training, with exponential_avg_factor, the updated running statistics."""
        import tensorflow as tf

        kwargs = state.kwargs if training else {k: v for k, v in state.kwargs.items() if k == "epsilon"}
        return tf.compat.v1.nn.fused_batch_norm(x, state.gamma, state.beta, mean=state.rm, variance=state.rv,
                                                data_format=state.data_format, is_training=training, **kwargs)

    def _store(self, state: FusedState, mean, var) -> None:
        state.rm.assign(mean)
        state.rv.assign(var)

    def _stored(self, state: FusedState, mean, var) -> dict[str, np.ndarray]:
        return {"running_mean": mean.numpy(), "running_var": var.numpy()}

    def describe(self, state: FusedState, info):
        super().describe(state, info)
        info["data_format"] = state.data_format


RAW = TFRawAdapter()
FUSED = TFFusedAdapter()
