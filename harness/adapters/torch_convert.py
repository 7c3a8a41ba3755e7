"""PyTorch's BatchNorm through a model converter (issue 18), trained and evaluated in the framework the converter
writes, and judged against the oracle under the SOURCE framework's conventions (torch's: ``TorchAdapter``'s
declaration, unchanged): a converter must keep momentum, eps, the running-variance estimator, the mode and the axis,
so a mismatch is the converter's finding, and a converter that refuses a module (raises) is a recorded outcome.

* ``torch-onnx2torch`` (converted): the module ``torch_adapter`` builds (the case's parameters and running
  statistics), exported in eval mode with ``torch.onnx.export(dynamo=False, opset_version=17)`` and converted back
  with ``onnx2torch.convert``; every call (training forward, backward and running update, frozen and eval calls)
  runs the converted ``torch.fx.GraphModule``. Opset 17: onnx2torch 1.5.15 registers ``Identity`` and ``Constant``
  up to the versions of opset 18 and refuses the exporter's default opset of torch 2.14 (``NotImplementedError:
  Converter is not implemented (... operation_type='Identity', version=19)``).
* ``torch-nobuco`` (converted): the same module converted to a Keras 2 model with ``nobuco.pytorch_to_keras``
  (``inputs_channel_order`` and ``outputs_channel_order`` PyTorch: the model takes and returns (N, C, ...) arrays);
  every call runs the Keras model, training calls with ``training=True`` under a ``tf.GradientTape``, eval calls
  with ``training=False``, frozen calls with the Keras layer's ``trainable = False`` (Keras' way of freezing).

The conversion happens once per case, in ``build``, from the module as the case starts; its time is reported apart
from compute as ``info["compile_s"]`` (export and conversion, or nobuco's trace and conversion), with
``info["compiles"]`` the conversions made. onnx2torch and nobuco each need their own worker process: nobuco patches
torch while it traces, and a process that ran it cannot run the modules onnx2torch writes.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from harness.adapters.base import COMPUTES, CompileTally, Refusal
from harness.adapters.torch_adapter import (
    TorchAdapter,
    TorchState,
    torch_build,
    torch_frozen_step,
    torch_step,
    torch_tensor,
)
from harness.cases import Case
from harness.inputs import CaseData

ONNX_OPSET = 17  # the newest opset whose Identity/Constant/BatchNormalization versions onnx2torch 1.5.15 registers
NOBUCO = "https://github.com/AlexanderLutsenko/nobuco/blob/594fab24bb4a4896dfd694a2bd87cd4468979699"  # 0.17.0
ONNX2TORCH = "https://github.com/ENOT-AutoDL/onnx2torch/blob/v1.5.15"

# what the converters refuse, tried on every (input, parameter) pair torch itself takes (test_declared_frameworks)
# onnx 1.17's numpy_helper.to_array hands a BFLOAT16 initializer over as uint16 bit patterns; onnx2torch makes a
# torch.uint16 tensor of it (torch.from_numpy) and assigns it to the new BatchNorm's weight.data, which refuses it. Only
# where the module path is taken: every parameter input an initializer (a weight and a bias, running statistics)
ONNX2TORCH_BFLOAT16 = Refusal(
    frozenset({("bfloat16", "bfloat16")}), "RuntimeError",
    "data set to a tensor that requires gradients must be floating point or complex dtype",
    f"{ONNX2TORCH}/onnx2torch/onnx_tensor.py#L29-L33 (to_torch) and "
    f"{ONNX2TORCH}/onnx2torch/node_converters/batch_norm.py#L82-L86 (weight.data = scale)",
    only_if=lambda case: case.has_scale and case.has_center and case.track_running_stats)
# nobuco moves every traced tensor to TensorFlow through NumPy, and torch's Tensor.numpy() has no bfloat16
NOBUCO_BFLOAT16 = Refusal(
    frozenset({("bfloat16", "bfloat16"), ("bfloat16", "float32")}), "TypeError", "Got unsupported ScalarType BFloat16",
    f"{NOBUCO}/nobuco/converters/channel_ordering.py#L28 (tf.convert_to_tensor(tensor_pt.cpu().detach().numpy()))")


def example_input(state: TorchState, case: Case, data: CaseData):
    """The tensor the converter traces or exports with: the case's first batch, as torch sees it."""
    first = data.x[0] if len(data.x) else data.x_eval
    return torch_tensor(state, first).contiguous().detach()


@contextlib.contextmanager
def quiet():
    """Converters print progress bars and tables: keep them out of the worker's output."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


class _Converted(CompileTally, TorchAdapter):
    path = "converted"
    source = "torch"
    bench_variants = ()  # bnparity bench times BatchNorm in the frameworks, not a converter's output


# -- onnx2torch -------------------------------------------------------------------------------------------------------

class ConvertedModule:
    """The converted GraphModule, with the handles ``torch_step`` reads from a BatchNorm module: ``weight``, ``bias``,
    ``running_mean`` and ``running_var`` are the tensors the converted graph feeds its batch norm (a ``BatchNorm*d``
    module's own, or, where onnx2torch wrote its functional ``OnnxBatchNorm``, the graph's buffers those inputs come
    from: what the converted model holds)."""

    def __init__(self, model, kind: str, tensors: dict[str, Any]):
        self.model, self.kind, self._tensors = model, kind, tensors

    def __call__(self, x):
        return self.model(x)

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.model.zero_grad(set_to_none=set_to_none)

    def parameters(self):
        return self.model.parameters()

    def _get(self, name: str):
        bn = self._tensors.get("module")
        return getattr(bn, name) if bn is not None else self._tensors.get(name)

    weight = property(lambda self: self._get("weight"))
    bias = property(lambda self: self._get("bias"))
    running_mean = property(lambda self: self._get("running_mean"))
    running_var = property(lambda self: self._get("running_var"))

    @property
    def track_running_stats(self) -> bool:
        bn = self._tensors.get("module")
        if bn is not None:
            return bool(bn.track_running_stats)
        return self._tensors.get("running_mean") is not None


def find_batch_norm(model) -> ConvertedModule:
    """The one batch norm of an onnx2torch GraphModule: a ``torch.nn.BatchNorm*d`` submodule, or onnx2torch's
    ``OnnxBatchNorm`` (F.batch_norm on tensors the graph passes in), whose weight, bias and running statistics are
    traced back through the graph (``Identity`` nodes, ``OnnxCopyIdentity``: a clone) to the buffers they come from."""
    import torch

    calls = [n for n in model.graph.nodes if n.op == "call_module"
             and (isinstance(model.get_submodule(n.target), torch.nn.modules.batchnorm._BatchNorm)
                  or type(model.get_submodule(n.target)).__name__ == "OnnxBatchNorm")]
    if len(calls) != 1:
        raise RuntimeError(f"the converted graph has {len(calls)} batch norms: "
                           f"{[(n.op, str(n.target)) for n in model.graph.nodes]}")
    node = calls[0]
    module = model.get_submodule(node.target)
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        return ConvertedModule(model, type(module).__name__, {"module": module})

    def source(arg):
        while arg is not None and arg.op == "call_module" and type(model.get_submodule(arg.target)).__name__ in (
                "OnnxCopyIdentity", "Identity"):
            arg = arg.args[0]
        if arg is None or arg.op != "get_attr":
            return None
        obj = model
        for part in str(arg.target).split("."):
            obj = getattr(obj, part)
        return obj

    args = list(node.args) + [None] * (5 - len(node.args))
    tensors = dict(zip(("weight", "bias", "running_mean", "running_var"), (source(a) for a in args[1:5])))
    return ConvertedModule(model, "OnnxBatchNorm", tensors)


@dataclass
class Onnx2TorchState:
    torch: TorchState  # its ``bn`` is the ConvertedModule after build
    opset: int = ONNX_OPSET
    module: str = ""
    momentum: float | None = None
    eps: float | None = None


class TorchOnnx2TorchAdapter(_Converted):
    """torch -> ONNX (TorchScript exporter, eval mode, opset 17) -> onnx2torch; every call on the converted module."""

    name = "torch-onnx2torch"
    requires = ("torch", "onnx", "onnx2torch")
    refuses = (*TorchAdapter.refuses, ONNX2TORCH_BFLOAT16)

    def distributions(self) -> tuple[str, ...]:
        return ("torch", "torchvision", "onnx", "onnx2torch")

    def setup(self) -> None:
        super().setup()
        import onnx  # noqa: F401
        import onnx2torch  # noqa: F401  (imports torchvision)
        import torch.onnx  # noqa: F401

    def build(self, case: Case, data: CaseData) -> Onnx2TorchState:
        import onnx
        import onnx2torch
        import torch

        m = self.mapped(case)
        ts = torch_build(case, data, m.momentum, m.eps)
        example = example_input(ts, case, data)
        t0 = time.perf_counter()
        buf = io.BytesIO()
        with quiet():
            torch.onnx.export(ts.bn.eval(), (example,), buf, dynamo=False, opset_version=ONNX_OPSET)
        model = onnx2torch.convert(onnx.load_from_string(buf.getvalue()))
        self.compiled(time.perf_counter() - t0)
        ts.bn = find_batch_norm(model)
        inner = ts.bn._tensors.get("module")
        if inner is None:
            inner = model.get_submodule(next(n.target for n in model.graph.nodes if n.op == "call_module"
                                             and type(model.get_submodule(n.target)).__name__ == "OnnxBatchNorm"))
        return Onnx2TorchState(ts, module=ts.bn.kind, momentum=getattr(inner, "momentum", None),
                               eps=getattr(inner, "eps", getattr(inner, "epsilon", None)))

    def train_step(self, state: Onnx2TorchState, x, g, v=None):
        return torch_step(state.torch, x, g, training=True, v=v)

    def eval_step(self, state: Onnx2TorchState, x, g):
        return torch_step(state.torch, x, g, training=False)

    def frozen_step(self, state: Onnx2TorchState, x, g):
        return torch_frozen_step(state.torch, x, g)

    def describe(self, state: Onnx2TorchState, info: dict[str, Any]) -> None:
        info["module"] = state.module
        info["converted"] = (f"torch.onnx.export(dynamo=False, opset_version={state.opset}) -> onnx2torch.convert: "
                             f"{state.module}(momentum={state.momentum!r}, eps={state.eps!r})")
        info["memory_format"] = state.torch.memory_format


# -- nobuco ------------------------------------------------------------------------------------------------------------

@dataclass
class NobucoState:
    model: Any  # the Keras 2 functional model nobuco wrote
    layer: Any  # its keras.layers.BatchNormalization
    axis: int  # the channel axis of the physical arrays
    scale: bool
    center: bool
    track: bool
    config: dict[str, Any]


def _logical(state: NobucoState, a: np.ndarray) -> np.ndarray:
    """Physical array -> (N, C, ...) array (the model takes PyTorch's channel order)."""
    return np.ascontiguousarray(np.moveaxis(a, state.axis, 1)) if state.axis != 1 else np.ascontiguousarray(a)


def _physical(state: NobucoState, a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, 1, state.axis) if state.axis != 1 else a


def nobuco_call(state: NobucoState, x: np.ndarray, g: np.ndarray, training: bool,
                frozen: bool = False) -> dict[str, np.ndarray]:
    """One call of the Keras model (``training``) and the gradient of sum(y * g) with respect to the input and the
    layer's gamma and beta; the moving statistics after it. ``frozen``: the layer's ``trainable = False`` for the
    call."""
    import tensorflow as tf

    layer = state.layer
    xk = tf.constant(_logical(state, x))
    params = [w for w, on in ((getattr(layer, "gamma", None), state.scale), (getattr(layer, "beta", None),
                                                                            state.center)) if on and w is not None]
    if frozen:
        layer.trainable = False
    try:
        with tf.GradientTape() as tape:
            tape.watch(xk)
            y = state.model(xk, training=training)
            loss = tf.reduce_sum(y * tf.cast(tf.constant(_logical(state, g)), y.dtype))
        grads = tape.gradient(loss, [xk, *([] if frozen else params)])
    finally:
        layer.trainable = True
    out = {"y": _physical(state, y.numpy()), "dx": _physical(state, grads[0].numpy())}
    if not frozen:
        named = [q for q, on in (("dgamma", state.scale), ("dbeta", state.center)) if on]
        out.update({q: gr.numpy() for q, gr in zip(named, grads[1:]) if gr is not None})
    if state.track:
        out["running_mean"] = layer.moving_mean.numpy().copy()
        out["running_var"] = layer.moving_variance.numpy().copy()
    return out


class TorchNobucoAdapter(_Converted):
    """torch -> Keras 2 (nobuco.pytorch_to_keras, PyTorch channel order); every call on the Keras model."""

    name = "torch-nobuco"
    requires = ("torch", "tensorflow", "nobuco")
    # torch's conventions, but for the two refusals: torch's F.batch_norm raises on one value per channel and on eps = 0
    # in training; those checks are torch's Python, not part of the module nobuco converts, and the Keras layer
    # computes (its values are judged against the oracle's)
    conventions = replace(TorchAdapter.conventions, single_value_training=COMPUTES, zero_eps_training=COMPUTES,
                          notes=TorchAdapter.conventions.notes + "; the converted Keras model computes where torch "
                          "raises (one value per channel, eps = 0 in training)")
    no_second_order = ("not implemented in this adapter: the Keras model's Hessian-vector products would need "
                       "nested GradientTapes over the converted model")
    worker_env = {**TorchAdapter.worker_env, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_NUM_INTRAOP_THREADS": "1",
                  "TF_NUM_INTEROP_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    refuses = (*TorchAdapter.refuses, NOBUCO_BFLOAT16)

    def distributions(self) -> tuple[str, ...]:
        return ("torch", "nobuco", "tensorflow-cpu", "keras")

    def setup(self) -> None:
        super().setup()
        import nobuco  # noqa: F401  (imports tensorflow and Keras 2)
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)

    def build(self, case: Case, data: CaseData) -> NobucoState:
        import keras
        import nobuco

        m = self.mapped(case)
        ts = torch_build(case, data, m.momentum, m.eps)
        example = example_input(ts, case, data)
        t0 = time.perf_counter()
        with quiet():
            model = nobuco.pytorch_to_keras(ts.bn.eval(), args=[example],
                                            inputs_channel_order=nobuco.ChannelOrder.PYTORCH,
                                            outputs_channel_order=nobuco.ChannelOrder.PYTORCH)
        self.compiled(time.perf_counter() - t0)
        layers = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
        if len(layers) != 1:
            raise RuntimeError(f"nobuco wrote {len(layers)} BatchNormalization layers: "
                               f"{[type(la).__name__ for la in model.layers]}")
        layer = layers[0]
        config = {k: layer.get_config().get(k) for k in ("dtype", "axis", "momentum", "epsilon", "center", "scale")}
        config["fused"] = getattr(layer, "_fused", getattr(layer, "fused", None))
        return NobucoState(model, layer, case.channel_axis % case.rank, case.has_scale, case.has_center,
                           case.track_running_stats, config)

    def train_step(self, state: NobucoState, x, g, v=None):
        return nobuco_call(state, x, g, training=True)

    def eval_step(self, state: NobucoState, x, g):
        return nobuco_call(state, x, g, training=False)

    def frozen_step(self, state: NobucoState, x, g):
        return nobuco_call(state, x, g, training=True, frozen=True)

    def describe(self, state: NobucoState, info: dict[str, Any]) -> None:
        info["module"] = "keras.layers.BatchNormalization"
        info["converted"] = "nobuco.pytorch_to_keras (ChannelOrder.PYTORCH in and out): " + ", ".join(
            f"{k}={v!r}" for k, v in state.config.items())


TORCH_ONNX2TORCH = TorchOnnx2TorchAdapter()
TORCH_NOBUCO = TorchNobucoAdapter()
