"""TensorFlow and Keras BatchNormalization on the graph and compiled paths (issue 18).

Each adapter here is an eager adapter (``keras3-tensorflow``, ``tf-keras-fused``, ``tf-keras-nonfused``,
``tf-raw``, ``tf-fused``) whose every call (the forward, both tapes, and the running-statistics update the layer or
the hand-written step makes) runs as one ``tf.function``:

* ``graph``: ``tf.function`` without XLA (``tf-raw-function``): TensorFlow's graph runtime, Grappler's rewrites;
* ``compiled``: ``tf.function(jit_compile=True)``, what ``model.compile(jit_compile=True)`` wraps a Keras train and
  predict step in (``keras3-tensorflow-xla``, ``tf-keras-fused-xla``, ``tf-keras-nonfused-xla``, ``tf-raw-xla``,
  ``tf-fused-xla``): tf2xla lowers the ops to HLO and XLA compiles them for the CPU. ``FusedBatchNormV3`` becomes
  XLA's ``BatchNormTraining`` / ``BatchNormGrad`` / ``BatchNormInference``, which XLA's batchnorm expander rewrites
  into reductions (xla/service/batchnorm_expander.cc).

The step is traced and compiled afresh for each call (the program of a given shape and setting is the same, so this
costs compile time, not fidelity). Compile time is reported apart from compute, as for JAX: ``info["compile_s"]`` is
the trace (``get_concrete_function``: Python, the tape, the graph) plus what the first run of the program costs
beyond a second run of it (Grappler's rewrites; tf2xla and XLA's compile on the compiled path), the second run made
from the variables as they were before the first and the variables then put back as the first left them (the
results are the first run's); ``info["compiles"]`` counts the programs. ``info["compute_s"]`` covers both runs.
Everything else (the layer, its dtypes, conventions, declared precision and refusals) is the eager adapter's: the
only hook is ``TFStep.tf_step`` (harness.adapters.tf_support), which ``tape_call`` uses to run the step.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.adapters.base import CompileTally, Refusal
from harness.adapters.keras3 import Keras3TF
from harness.adapters.tf_keras import TFKerasAdapter
from harness.adapters.tf_raw import TFFusedAdapter, TFRawAdapter


class TFFunction(CompileTally):
    """The graph / compiled hook: ``tf_step`` wraps the taped step in ``tf.function`` (``jit_compile`` = XLA)."""

    jit_compile: bool = True
    path = "compiled"
    source = ""

    def tf_step(self) -> Callable[[Callable], Callable]:
        import tensorflow as tf

        def wrap(step: Callable) -> Callable:
            fn = tf.function(step, jit_compile=self.jit_compile, reduce_retracing=False)
            return lambda *args: self._timed(fn, args)

        return wrap

    def _timed(self, fn, args: tuple):
        """``fn(*args)``, its compile time apart from its compute added to the case's (the module docstring)."""
        t0 = time.perf_counter()
        program = fn.get_concrete_function(*args)
        traced = time.perf_counter() - t0
        state = program.variables  # the variables the step reads or updates: the running statistics among them
        before = [v.read_value() for v in state]
        t1 = time.perf_counter()
        out = fn(*args)
        first = time.perf_counter() - t1
        after = [v.read_value() for v in state]
        for v, b in zip(state, before):
            v.assign(b)
        t2 = time.perf_counter()
        fn(*args)
        again = time.perf_counter() - t2
        for v, a in zip(state, after):
            v.assign(a)
        self.compiled(traced + max(first - again, 0.0))
        return out

    def tf_mask(self, mask):
        import tensorflow as tf

        return tf.constant(mask)

    def describe(self, state, info) -> None:
        super().describe(state, info)  # type: ignore[misc]
        info["tf_function"] = True
        info["jit_compile"] = self.jit_compile


def _named(obj, name: str, source: str, path: str, jit_compile: bool):
    obj.name, obj.source, obj.path, obj.jit_compile = name, source, path, jit_compile
    return obj


class Keras3TFXLA(TFFunction, Keras3TF):
    """Keras 3 on TensorFlow, each call under ``tf.function(jit_compile=True)``."""


class TFKerasXLA(TFFunction, TFKerasAdapter):
    """tf-keras fused=True / fused=False, each call under ``tf.function(jit_compile=True)``."""


class TFRawFunction(TFFunction, TFRawAdapter):
    """tf.nn.moments + tf.nn.batch_normalization under ``tf.function`` (graph) or with XLA."""


_OP_DEF = ('https://github.com/tensorflow/tensorflow/blob/v2.21.0/tensorflow/core/ops/nn_ops.cc '
           '(REGISTER_OP("FusedBatchNormV3"): T in {half, bfloat16, float}, U in {bfloat16, float}; a graph checks '
           'the attrs when the op is added, tensorflow/python/framework/op_def_library.py)')
_GRAD_U = ('https://github.com/tensorflow/tensorflow/blob/v2.21.0/tensorflow/python/ops/nn_grad.py '
           '(_BaseFusedBatchNormGrad: the gradient op is added to the graph with a bfloat16 scale and the '
           'forward\'s other inputs as float32; observed on TF 2.21, not traced further)')


def _scale(dtype: str) -> str:
    return f"Value passed to parameter 'scale' has DataType {dtype} not in list of allowed values: bfloat16, float32"


_X_DOUBLE = ("Value passed to parameter 'x' has DataType float64 not in list of allowed values: float16, bfloat16, "
             "float32")
_GRAD_BFLOAT16 = ("Input 'scale' of 'FusedBatchNormGradV3' Op has type bfloat16 that does not match expected type of "
                  "float32.")


class TFFusedXLA(TFFunction, TFFusedAdapter):
    """tf.compat.v1.nn.fused_batch_norm (FusedBatchNormV3) under ``tf.function(jit_compile=True)``.

    A graph refuses the dtype pairs that eager TensorFlow refuses, in other words: the op's attrs are checked when
    the op is added to the graph (TypeError, where eager raises InvalidArgumentError when it runs), and with
    bfloat16 parameters the forward is built but its gradient is not (eager: no CPU kernel, NotFoundError). Tried on
    TF 2.21 for all 16 pairs (float16/bfloat16/float32 inputs with float32 parameters run)."""

    refuses = tuple(
        Refusal(frozenset(pairs), "TypeError", says, source)
        for pairs, says, source in (
            ({("float16", "float16"), ("bfloat16", "float16"), ("float32", "float16")}, _scale("float16"), _OP_DEF),
            ({("float16", "float64"), ("bfloat16", "float64"), ("float32", "float64")}, _scale("float64"), _OP_DEF),
            ({("float64", d) for d in ("float16", "bfloat16", "float32", "float64")}, _X_DOUBLE, _OP_DEF),
            ({("float16", "bfloat16"), ("bfloat16", "bfloat16"), ("float32", "bfloat16")}, _GRAD_BFLOAT16, _GRAD_U),
        ))


KERAS3_TF_XLA = _named(Keras3TFXLA(), "keras3-tensorflow-xla", "keras3-tensorflow", "compiled", True)
TF_KERAS_FUSED_XLA = _named(TFKerasXLA(fused=True), "tf-keras-fused-xla", "tf-keras-fused", "compiled", True)
TF_KERAS_NONFUSED_XLA = _named(TFKerasXLA(fused=False), "tf-keras-nonfused-xla", "tf-keras-nonfused", "compiled",
                               True)
TF_RAW_FUNCTION = _named(TFRawFunction(), "tf-raw-function", "tf-raw", "graph", False)
TF_RAW_XLA = _named(TFRawFunction(), "tf-raw-xla", "tf-raw", "compiled", True)
TF_FUSED_XLA = _named(TFFusedXLA(), "tf-fused-xla", "tf-fused", "compiled", True)
