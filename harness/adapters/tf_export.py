"""Keras 3 on TensorFlow, exported for inference: ONNX Runtime and LiteRT (issue 18, the ``exported`` path).

The layer is trained as ``keras3-tensorflow`` trains it (its training and frozen calls are that adapter's, eager).
Each eval call exports the layer as it stands then (a ``keras.Model`` around it, the running statistics baked into
the program) and runs the exported program on the eval batch:

* ``keras3-tensorflow-onnxruntime``: ``Model.export(path, format="onnx")`` (Keras hands the model's serving
  function to tf2onnx) and an ``onnxruntime.InferenceSession`` on the CPU execution provider;
* ``keras3-tensorflow-litert``: ``tf.lite.TFLiteConverter.from_keras_model`` and the LiteRT interpreter
  (``ai_edge_litert.interpreter.Interpreter``), what TensorFlow points users to for on-device inference.

An exported inference program has no gradient: the eval calls return y and the running statistics (read from the
Keras layer, which the export leaves as it was), and ``omits`` says so. The export and the runtime's session are
timed apart from compute (``info["compile_s"]``, one of ``info["compiles"]`` per eval call). The packages are not in
the framework environment's pins; ``available()`` names what is missing.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from harness.adapters.base import CompileTally, Refusal
from harness.adapters.keras3 import Keras3TF, LayerState
from harness.cases import Case

NO_GRADIENT = "an exported inference program has no gradient"
OMITS = {"dx_eval": NO_GRADIENT, "dgamma_eval": NO_GRADIENT, "dbeta_eval": NO_GRADIENT}


def keras_model(layer: Any, case: Case) -> Any:
    """A ``keras.Model`` whose only layer is the built BatchNormalization, called in inference mode, for an input
    of the case's shape with any batch size (the export's batch dimension is dynamic)."""
    import keras

    inp = keras.Input(shape=tuple(case.physical_shape[1:]), dtype=case.dtype)
    return keras.Model(inp, layer(inp, training=False))


class _Exported(CompileTally, Keras3TF):
    """The eval calls of ``keras3-tensorflow`` run through an exported program (``_export``)."""

    path = "exported"
    source = "keras3-tensorflow"
    omits = OMITS
    export_requires: tuple[str, ...] = ()
    export_distributions: tuple[str, ...] = ()

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.requires = (*self.requires, *self.export_requires)

    def distributions(self) -> tuple[str, ...]:
        return (*super().distributions(), *self.export_distributions)

    def eval_step(self, state: LayerState, x, g, mask=None):
        del g, mask  # no gradient; Keras ignores a mask in inference
        t0 = time.perf_counter()
        infer = self._export(state, np.ascontiguousarray(x))
        self.compiled(time.perf_counter() - t0)  # the export and the runtime's session: apart from compute
        y = infer()
        state.output_dtype = str(y.dtype)
        return {"y": y, **state.moving_stats()}

    def _export(self, state: LayerState, x: np.ndarray) -> Callable[[], np.ndarray]:
        """Export the layer as it stands and load the program into its runtime, fed ``x``; the returned call runs it."""
        raise NotImplementedError



class Keras3ONNXRuntime(_Exported):
    """ONNX Runtime's Python binding takes no bfloat16 NumPy array as an input (tried with onnxruntime 1.32.0 on the
    Keras 3 bfloat16 cases, mixed and pure: the eval call raises when it feeds the batch); float16, float32 and
    float64 run."""

    export_requires = ("tf2onnx", "onnx", "onnxruntime")
    export_distributions = ("tf2onnx", "onnx", "onnxruntime")
    refuses = (
        Refusal(frozenset({("bfloat16", "float32"), ("bfloat16", "bfloat16")}), "RuntimeError",
                "Numpy_type 256 can't be converted to MLDataType.",
                "https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/python/"
                "onnxruntime_pybind_mlvalue.cc (its NumPy-type map has no entry for ml_dtypes bfloat16)"),
    )

    def _export(self, state: LayerState, x: np.ndarray) -> Callable[[], np.ndarray]:
        import onnxruntime
        import tensorflow as tf

        model = keras_model(state.layer, state.case)
        spec = tf.TensorSpec((None, *state.case.physical_shape[1:]), state.case.dtype)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bn.onnx")
            model.export(path, format="onnx", verbose=False, input_signature=[spec])
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda: np.asarray(session.run(None, {name: x})[0])


class Keras3LiteRT(_Exported):
    """The TFLite converter takes no bfloat16 model input and has no float64 builtin kernels (tried on TF 2.21 with
    ai-edge-litert 2.3.0: the Keras 3 cases in bfloat16, mixed and pure, and in float64 raise when the eval call
    converts): those pairs are declared refusals, so the cases are skips that quote the converter."""

    export_requires = ("ai_edge_litert",)
    export_distributions = ("ai-edge-litert",)
    refuses = (
        Refusal(frozenset({("bfloat16", "float32"), ("bfloat16", "bfloat16")}), "ValueError",
                "Unsupported TensorFlow type `<dtype: 'bfloat16'>` provided for the input type of the TensorFlow model",
                "https://github.com/tensorflow/tensorflow/blob/v2.21.0/tensorflow/lite/python/convert.py "
                "(convert_tensor_tf_type_to_tflite_type: its type mapping has no bfloat16)"),
        Refusal(frozenset({("float64", "float64")}), "ConverterError", "Could not translate MLIR to FlatBuffer.",
                "https://github.com/tensorflow/tensorflow/blob/v2.21.0/tensorflow/compiler/mlir/lite/"
                "flatbuffer_export.cc (the float64 AddV2 of the batch norm 'is neither a custom op nor a flex op')"),
    )

    def _export(self, state: LayerState, x: np.ndarray) -> Callable[[], np.ndarray]:
        import tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter

        model = keras_model(state.layer, state.case)
        flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        interpreter = Interpreter(model_content=flat, num_threads=1)
        inp = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(inp["index"], list(x.shape), strict=False)
        interpreter.allocate_tensors()

        def infer() -> np.ndarray:
            interpreter.set_tensor(inp["index"], x)
            interpreter.invoke()
            return np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))

        return infer


ONNXRUNTIME = Keras3ONNXRuntime("keras3-tensorflow-onnxruntime")
LITERT = Keras3LiteRT("keras3-tensorflow-litert")
