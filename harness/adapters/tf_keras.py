"""tf-keras (legacy Keras 2): ``tf_keras.layers.BatchNormalization(fused=True / fused=False)``.

The two paths store different running variances: the fused kernel (``FusedBatchNormV3``)
returns the Bessel-corrected batch variance, ``n / max(n - 1, 1)`` on CPU, and the layer keeps
it (``_bessels_correction_test_only = True`` disables the undo); the non-fused path uses
``tf.nn.moments``, biased. Each adapter declares its own estimator.

``fused=True`` is accepted only for 4D inputs with axis 1 or 3, 5D with axis 1 or 4, and a
float16 / bfloat16 / float32 compute dtype; elsewhere the layer raises, so the fused adapter
skips those cases with the reason (the float64 compute dtype as a declared refusal, with the
layer's message). ``info["fused"]`` records the path the built layer took.

Dtypes as in the Keras 3 adapters: the case dtype as the layer dtype for float32 / float64,
the ``mixed_float16`` / ``mixed_bfloat16`` policy for 16-bit cases. Eager calls, gradients from
``tf.GradientTape``. Source: tf_keras/src/layers/normalization/batch_normalization.py.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import replace
from typing import Any

import numpy as np

from harness.adapters.base import Adapter, Conventions, Precision, Raises, Refusal
from harness.adapters.keras3 import (
    LayerState,
    dtype_policy,
    keras_axis,
    keras_mask,
    keras_mask_refusal,
    keras_supports,
    layer_kwargs,
    load_layer,
)
from harness.adapters.tf_support import (
    KERAS_CONVENTIONS,
    KERAS_FROZEN,
    TF_ENV,
    TFBench,
    TFStep,
    fused_rank_refusal,
    setup_tf,
    tape_call,
    taped_params,
    tf_distribution,
    tf_info,
)
from harness.cases import Case
from harness.inputs import CaseData


def keras2_distribution() -> str | None:
    """Which distribution provides legacy Keras 2: ``tf-keras``, or ``keras`` 2.x (TF <= 2.15's ``tf.keras``)."""
    for dist in ("tf-keras", "keras"):
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        if dist == "tf-keras" or version.startswith("2."):
            return dist
    return None


def keras2():
    """The Keras 2 module: ``tf_keras``, or ``tf.keras`` where TensorFlow still ships Keras 2."""
    if keras2_distribution() == "tf-keras":
        import tf_keras

        return tf_keras
    import tensorflow as tf

    return tf.keras


# BatchNormalization(fused=True) with a float64 compute dtype: _raise_if_fused_cannot_be_used raises it
# from the constructor (tf-keras 2.21). The float64 policy is the only one with that compute dtype.
FUSED_FLOAT64 = Refusal(
    frozenset({("float64", "float64")}), "ValueError",
    "Passing `fused=True` is only supported when the compute dtype is float16, bfloat16, or float32. "
    "Got dtype: float64",
    "https://github.com/keras-team/tf-keras/blob/v2.21.0/tf_keras/layers/normalization/batch_normalization.py "
    "(BatchNormalizationBase._raise_if_fused_cannot_be_used)")


def _constructor_refusal(message: str) -> tuple[Raises, str]:
    """A ValueError tf-keras 2.21's BatchNormalization constructor raises, in its own words: the expectation and
    the skip reason that quotes it."""
    raises = Raises("ValueError", re.escape(message),
                    "https://github.com/keras-team/tf-keras/blob/v2.21.0/tf_keras/layers/normalization/"
                    "batch_normalization.py (BatchNormalizationBase.__init__)")
    return raises, f"tf-keras refuses it: {raises.type}: {message} (source: {raises.source})"


# BatchNormalization(fused=True, renorm=True) and (fused=True, virtual_batch_size=v) raise from the constructor
FUSED_RENORM_RAISES, FUSED_RENORM = _constructor_refusal("Passing both `fused=True` and `renorm=True` is not supported")
FUSED_VIRTUAL_RAISES, FUSED_VIRTUAL = _constructor_refusal(
    "Passing `fused=True` is not supported when `virtual_batch_size` is specified.")


# BatchNormalization(fused=True) called with a mask normalizes with the statistics of every position and warns
# (measured on tf-keras 2.21: y equals the unmasked layer's); the non-fused path uses tf.nn.weighted_moments
FUSED_MASK = ("tf-keras ignores it: UserWarning: Masking is not supported with `fused=True`. You should either turn "
              "off fusing (`fused=False`) or you should not pass a `mask` argument when calling the layer. For the "
              "moment `mask` will be ignored for the normalization. (source: https://github.com/keras-team/tf-keras/"
              "blob/v2.21.0/tf_keras/layers/normalization/batch_normalization.py, BatchNormalizationBase.call)")


def flat(quantity: str, value: np.ndarray) -> np.ndarray:
    """A per-channel quantity as (C,): with virtual_batch_size the layer's variables, so their gradients and moving
    statistics, have the input's rank plus one, every size 1 but the channels' ((1, 1, C) for a rank-2 input)."""
    return value if quantity in ("y", "dx", "hvp_x") else value.reshape(-1)


def moving_stats(state: LayerState) -> dict[str, np.ndarray]:
    return {q: flat(q, v) for q, v in state.moving_stats().items()}


class TFKerasAdapter(TFStep, TFBench, Adapter):
    framework = "tf-keras"
    requires = ("tensorflow",)
    no_second_order = None  # nested GradientTapes (tf_support.tape_call)

    @property
    def worker_env(self) -> dict[str, str]:  # type: ignore[override]
        """TF_USE_LEGACY_KERAS=1 routes tf.keras to tf-keras on TF >= 2.16; TF 2.15's tf.keras is Keras 2
        already, and setting it there without tf-keras installed sends the lazy loader into a recursion."""
        legacy = {"TF_USE_LEGACY_KERAS": "1"} if keras2_distribution() == "tf-keras" else {}
        return {**TF_ENV, **legacy}

    def __init__(self, fused: bool):
        self.fused = fused
        self.name = "tf-keras-fused" if fused else "tf-keras-nonfused"
        self.refuses = (FUSED_FLOAT64,) if fused else ()
        # fused=True refuses renorm in the constructor; the non-fused path runs it (fused=None resolves to it)
        self.no_renorm = FUSED_RENORM if fused else None
        # fused=True takes a mask and ignores it, with a warning (a mask it cannot use is one it does not take)
        self.no_mask = FUSED_MASK if fused else None
        # virtual batches (ghost BN): the non-fused path reshapes (N, ...) to (v, N / v, ...); fused=True refuses them
        self.no_virtual_batch = FUSED_VIRTUAL if fused else None
        self.conventions = Conventions(
            **{**KERAS_CONVENTIONS, "running_var_estimator": "unbiased_guarded" if fused else "biased"}, **KERAS_FROZEN,
            # virtual_batch_size: one moving-average update with tf.reduce_mean over the virtual batches of their
            # means and variances ("not strictly correct since in ghost batch norm, you are supposed to sequentially
            # update ... with each sub-batch", tf_keras/layers/normalization/batch_normalization.py, call)
            virtual_batch_update="group_average",
            notes=("fused=True: FusedBatchNormV3 stores the Bessel-corrected variance, n/max(n-1, 1) on CPU"
                   if fused else "fused=False: tf.nn.moments (two-pass, biased); moving average as assign_sub"),
        )

    def available(self) -> str | None:
        reason = super().available()
        if reason is None and keras2_distribution() is None:
            reason = "no Keras 2: neither tf-keras nor keras 2.x (TensorFlow <= 2.15) is installed"
        return reason

    def distributions(self) -> tuple[str, ...]:
        tf_dist = tf_distribution()
        return (keras2_distribution() or "tf-keras", *((tf_dist,) if tf_dist else ()))

    def framework_version(self) -> str | None:
        """The Keras 2 version: tf-keras's, or the keras 2.x that TensorFlow <= 2.15 ships as tf.keras."""
        dist = keras2_distribution()
        return self.versions().get(dist) if dist else None

    def supports(self, case: Case) -> str | None:
        reason = super().supports(case) or keras_supports(case, "tf-keras") or keras_mask_refusal(case, "tf-keras")
        return reason or (fused_rank_refusal(case) if self.fused else None)

    def settings(self, case: Case) -> dict[str, Any]:
        out = super().settings(case)
        out.update(axis=keras_axis(case), dtype_policy=dtype_policy(case), fused=self.fused)
        if case.virtual_batch_size is not None:
            out["virtual_batch_size"] = case.virtual_batch_size
        return out

    def precision(self, case: Case) -> Precision:
        """Both paths compute in float32 for 16-bit inputs (non-fused: call casts them; fused: FusedBatchNormV3
        with U = float), and tf-keras raises the variables of a float16 / bfloat16 layer to float32: under the
        pure policy ("float16") gamma, beta and the moving statistics are float32 all the same (probed on tf-keras
        2.21, fused and non-fused: gamma, moving_mean and dgamma float32, y float16)."""
        p = super().precision(case)
        if case.dtype in ("float16", "bfloat16"):
            # tf_keras/src/layers/normalization/batch_normalization.py:319-324 (_param_dtype: fp16 -> fp32),
            # :607-612 (non-fused: 16-bit inputs cast to float32 for all the math)
            p = replace(p, running="float32", params="float32")
        return p

    def setup(self) -> None:
        setup_tf()
        keras2()  # imported once here, timed as the worker's import

    def build(self, case: Case, data: CaseData) -> LayerState:
        tf_keras = keras2()
        ghost = {} if case.virtual_batch_size is None else {"virtual_batch_size": case.virtual_batch_size}
        layer = tf_keras.layers.BatchNormalization(**layer_kwargs(case, self.mapped(case), self.conventions),
                                                   fused=self.fused, **ghost,
                                                   dtype=tf_keras.mixed_precision.Policy(dtype_policy(case)))
        return LayerState(load_layer(layer, case, data), case)

    def _call(self, state: LayerState, x, g, training: bool, mask=None, v=None) -> dict[str, np.ndarray]:
        layer = state.layer
        params = taped_params(layer.gamma, layer.beta)
        kw = {} if mask is None else {"mask": self.tf_mask(keras_mask(mask))}
        taped = tape_call(lambda xt: (layer(xt, training=training, **kw),), x, g, params, v, self.tf_step())
        state.output_dtype = taped.output_dtype
        return {q: flat(q, v) for q, v in taped.out.items()}

    def train_step(self, state: LayerState, x, g, mask=None, v=None):
        out = self._call(state, x, g, training=True, mask=mask, v=v)
        out.update(moving_stats(state))
        return out

    def eval_step(self, state: LayerState, x, g, mask=None):
        out = self._call(state, x, g, training=False, mask=mask)
        out.update(moving_stats(state))
        return out

    def frozen_step(self, state: LayerState, x, g, mask=None):
        """``layer.trainable = False``, a call with training=True, then trainable again."""
        state.layer.trainable = False
        try:
            out = self._call(state, x, g, training=True, mask=mask)
        finally:
            state.layer.trainable = True
        return {"y": out["y"], "dx": out["dx"], **moving_stats(state)}

    # -- benchmark hooks (bnparity bench; variants and devices from TFBench) -----------
    def bench_callable(self, case: Case, data: CaseData, mode: str, variant: str, device: str):
        """A zero-argument call of one BatchNormalization call in ``mode``, inputs already on the device."""
        return self.bench_layer(case, data, mode, variant, device, lambda layer: list(
            taped_params(layer.gamma, layer.beta).values()))

    def describe(self, state: LayerState, info):
        layer = state.layer
        info["fused"] = bool(layer.fused)
        info["data_format"] = getattr(layer, "_data_format", None) if layer.fused else None
        info["dtype_policy"] = layer.dtype_policy.name
        info["output_dtype"] = state.output_dtype
        info["moving_stats_dtype"] = layer.moving_mean.dtype.name
        info["epsilon"] = float(layer.epsilon)
        info["momentum"] = float(layer.momentum)
        tf_info(info)


FUSED = TFKerasAdapter(fused=True)
NONFUSED = TFKerasAdapter(fused=False)
