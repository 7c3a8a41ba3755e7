"""PyTorch: ``torch.nn.BatchNorm1d/2d/3d`` chosen by rank, autograd for gradients.

Sources: torch/nn/modules/batchnorm.py (_BatchNorm.forward),
torch/nn/functional.py (batch_norm, _verify_batch_size),
aten/src/ATen/native/Normalization.cpp (running var uses var_sum / (n - 1)).

What the adapter does to torch is in the plain functions below (``torch_setup``,
``torch_build``, ``torch_step`` and their helpers):
``TorchAdapter`` calls them, and ``bnparity repro`` copies their source into the
standalone torch reproducer (``harness/repro.py``). They use NumPy, torch
(imported inside) and ml_dtypes for bfloat16 only, never the harness.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from packaging.version import Version

from harness.adapters.base import Adapter, Conventions, Precision, Raises, Refusal
from harness.cases import Case
from harness.inputs import CaseData


@dataclass
class TorchState:
    """What ``torch_build`` makes for one case and every step uses."""

    bn: Any  # the torch.nn.BatchNorm1d/2d/3d module
    axis: int  # the channel axis of the arrays as they arrive (1: channels first; rank - 1: channels last)
    contiguous: bool  # False: inputs are strided views (every other element along the batch axis)
    scale: bool  # the module has a weight (gamma)
    center: bool  # the module has a bias (beta)
    memory_format: str | None = None  # of the last input as torch saw it: channels_last, contiguous or strided


def torch_setup(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def to_torch(torch, a: np.ndarray):
    """NumPy -> torch without a copy of the values' bits (bfloat16 via an int16 view)."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a))


def to_numpy(t) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()  # not a view of the live buffer
    return t.numpy().copy()


def memory_format(t) -> str:
    """How torch lays ``t`` out: channels_last (4D), channels_last_3d (5D), contiguous or strided."""
    import torch

    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d):
        return "channels_last_3d"
    return "contiguous" if t.is_contiguous() else "strided"


def torch_build(case: Case, data: CaseData, momentum: float | None, eps: float) -> TorchState:
    """``BatchNorm{1,2,3}d`` for the case's rank, in its param dtype, with gamma, beta and running stats set.

    ``momentum`` and ``eps`` as passed to torch (``None``: the cumulative average).
    """
    import torch

    cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d,
           5: torch.nn.BatchNorm3d}.get(case.rank)
    if cls is None:
        raise ValueError(f"torch has no BatchNorm for rank {case.rank}")
    # a weight without a bias is bias=False (torch >= 2.13); there is no bias without a weight (TorchAdapter.supports)
    scale_only = {"bias": False} if case.has_scale and not case.has_center else {}
    bn = cls(case.channels, eps=eps, momentum=momentum, affine=case.has_scale or case.has_center,
             track_running_stats=case.track_running_stats, **scale_only)
    bn = bn.to(getattr(torch, case.resolved_param_dtype))
    with torch.no_grad():
        if case.has_scale:
            bn.weight.copy_(to_torch(torch, data.gamma))
        if case.has_center:
            bn.bias.copy_(to_torch(torch, data.beta))
        if case.track_running_stats:
            bn.running_mean.copy_(to_torch(torch, data.running_mean))
            bn.running_var.copy_(to_torch(torch, data.running_var))
    return TorchState(bn, case.channel_axis % case.rank, case.contiguous, case.has_scale, case.has_center)


def torch_tensor(state: TorchState, a: np.ndarray):
    """Physical array -> logical (N, C, ...) tensor (the channels moved to dim 1, as a torch user permutes them);
    channels_last keeps NHWC strides.

    ``contiguous = false`` cases get a strided view: every other element of a buffer twice
    as long along the batch axis.
    """
    import torch

    t = to_torch(torch, a)
    if not state.contiguous:
        buf = torch.zeros((2 * t.shape[0], *t.shape[1:]), dtype=t.dtype)
        buf[::2] = t
        t = buf[::2]
    if state.axis != 1:
        t = t.movedim(state.axis, 1)
    return t


def torch_leaf(state: TorchState, a: np.ndarray):
    """The input as a tensor that autograd fills ``.grad`` of, with the case's strides kept."""
    t = torch_tensor(state, a)
    if state.contiguous:
        return t.clone().requires_grad_(True)  # preserve_format keeps channels_last strides
    t.requires_grad_(True)  # a view of a fresh buffer: already a leaf with its own strides
    return t


def torch_back(state: TorchState, t) -> np.ndarray:
    """Logical tensor -> array in the case's physical layout."""
    if state.axis != 1:
        t = t.movedim(1, state.axis)
    return to_numpy(t)


def torch_call(state: TorchState, x: np.ndarray, g: np.ndarray, v: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One call of the module in its current mode, and the backward of sum(y * g); with a direction ``v``, also the
    double backward: the gradients taken with ``create_graph=True``, then those of sum(dx * v) (hvp_x, hvp_gamma)."""

    bn = state.bn
    xt = torch_leaf(state, x)
    bn.zero_grad(set_to_none=True)
    y = bn(xt)
    if v is not None:
        return torch_second_order(state, xt, y, g, v)
    y.backward(torch_tensor(state, g))
    out = {"y": torch_back(state, y), "dx": torch_back(state, xt.grad)}
    if state.scale and bn.weight.grad is not None:  # none where the parameters are frozen
        out["dgamma"] = to_numpy(bn.weight.grad)
    if state.center and bn.bias.grad is not None:
        out["dbeta"] = to_numpy(bn.bias.grad)
    state.memory_format = memory_format(xt)
    return out


def torch_second_order(state: TorchState, xt, y, g: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """First derivatives with a graph (torch.autograd.grad, create_graph=True), then the gradient of sum(dx * v)
    with respect to x and the weight: the Hessian-vector products along v."""
    import torch

    bn = state.bn
    params = [p for p in (bn.weight if state.scale else None, bn.bias if state.center else None) if p is not None]
    first = torch.autograd.grad(y, [xt, *params], grad_outputs=torch_tensor(state, g), create_graph=True)
    dx = first[0]
    wrt = [xt, *([bn.weight] if state.scale else [])]
    second = torch.autograd.grad((dx * torch_tensor(state, v)).sum(), wrt, allow_unused=True)
    out = {"y": torch_back(state, y.detach()), "dx": torch_back(state, dx.detach()),
           "hvp_x": torch_back(state, second[0] if second[0] is not None else torch.zeros_like(xt))}
    named = dict(zip([n for n, on in (("dgamma", state.scale), ("dbeta", state.center)) if on], first[1:]))
    out.update({q: to_numpy(t.detach()) for q, t in named.items()})
    if state.scale:
        out["hvp_gamma"] = to_numpy(second[1] if second[1] is not None else torch.zeros_like(bn.weight))
    state.memory_format = memory_format(xt)
    return out


def torch_step(state: TorchState, x: np.ndarray, g: np.ndarray, training: bool,
               v: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A call in training or eval mode: y, dx, dgamma, dbeta (with ``v``, hvp_x and hvp_gamma), and the running
    statistics after it (where tracked: the module's buffers as the call left them)."""
    bn = state.bn
    bn.train(training)
    out = torch_call(state, x, g, v)
    if bn.track_running_stats:
        out["running_mean"] = to_numpy(bn.running_mean)
        out["running_var"] = to_numpy(bn.running_var)
    return out


def torch_frozen_step(state: TorchState, x: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
    """A training call with the parameters frozen the torch way (``requires_grad_(False)``), unfrozen after."""
    params = list(state.bn.parameters())
    for p in params:
        p.requires_grad_(False)
    try:
        out = torch_step(state, x, g, training=True)
    finally:
        for p in params:
            p.requires_grad_(True)
    return {q: v for q, v in out.items() if q not in ("dgamma", "dbeta")}


class TorchAdapter(Adapter):
    name = "torch"
    framework = "torch"
    no_renorm = ("torch.nn.BatchNorm1d/2d/3d have no renorm option (torch's only 'renorm' is torch.renorm / "
                 "F.embedding's max_norm, unrelated)")
    no_mask = "torch.nn.BatchNorm1d/2d/3d and F.batch_norm take no mask argument"
    no_second_order = None  # double backward: torch.autograd.grad(create_graph=True), then grad of sum(dx * v)
    no_virtual_batch = ("torch.nn.BatchNorm1d/2d/3d have no virtual batch size (arguments: num_features, eps, "
                        "momentum, affine, track_running_stats, device, dtype, bias; torch 2.13)")
    requires = ("torch",)
    supports_cumulative = True
    # F.batch_norm checks the batch size, then eps, where it normalizes with the batch statistics
    # (training, or any call without running statistics): torch 2.13 torch/nn/functional.py l.2840-2894
    conventions = Conventions(
        momentum_style="weight_of_new", running_var_estimator="unbiased",
        default_eps=1e-5, default_momentum=0.1, native_layout="channels_first",
        single_value_training=Raises("ValueError", "Expected more than 1 value per channel when training",
                                     "torch/nn/functional.py _verify_batch_size (called by batch_norm)"),
        zero_eps_training=Raises("ValueError", "eps must be positive during training",
                                 "torch/nn/functional.py batch_norm"),
        frozen_call="batch_statistics",
        frozen_note=("torch/nn/modules/batchnorm.py (_BatchNorm.forward: batch statistics and the running update "
                     "follow self.training, not the parameters' requires_grad)"),
        notes="normalizes with the biased batch variance, stores the unbiased one",
    )
    # the CPU kernel takes parameters and running statistics in the input dtype, or float32 with a
    # float16/bfloat16 input; otherwise it raises (tried on torch 2.13 for every pair). A module
    # with neither affine parameters nor running statistics has no tensor to mismatch.
    refuses = tuple(
        Refusal(frozenset(pairs), "RuntimeError", says,
                "https://github.com/pytorch/pytorch/blob/v2.13.0/aten/src/ATen/native/cpu/mixed_data_type.h "
                "(check_mixed_data_type)",
                only_if=lambda case: case.has_scale or case.has_center or case.track_running_stats)
        for pairs, says in (
            ({("float16", "bfloat16"), ("float16", "float64"), ("bfloat16", "float16"), ("bfloat16", "float64"),
              ("float32", "float16"), ("float32", "bfloat16"), ("float32", "float64"),
              ("float64", "float16"), ("float64", "bfloat16")},
             "mixed dtype (CPU): expect parameter to have scalar type of Float"),
            ({("float64", "float32")}, "mixed dtype (CPU): all inputs must share same datatype."),
        ))
    worker_env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    SCALE_ONLY_SINCE = "2.13"  # BatchNorm's bias=False (a weight without a bias)

    def supports(self, case: Case) -> str | None:
        reason = super().supports(case)
        if reason is None and case.has_center and not case.has_scale:
            reason = ("torch: BatchNorm has no bias without a weight (affine=True has both; bias=False, since torch "
                      "2.13, drops the bias): a shift-only layer is not a torch module")
        if reason is None and case.has_scale and not case.has_center:
            version = self.framework_version() or "0"
            if Version(version.split("+")[0]) < Version(self.SCALE_ONLY_SINCE):
                reason = f"torch {version}: BatchNorm has no bias=False before torch {self.SCALE_ONLY_SINCE}"
        return reason

    def setup(self) -> None:
        torch_setup(int(os.environ.get("BNPARITY_THREADS", "1")))

    def precision(self, case: Case) -> Precision:
        """Pure 16-bit (``.half()`` / ``.bfloat16()``): the CPU kernel accumulates the statistics in float32
        (opmath) but stores save_mean / save_invstd in the parameter dtype, and normalizes (forward and backward)
        from those rounded values; mixed (a float32 module fed 16-bit input) keeps them in float32. Probed on
        torch 2.13: native_batch_norm's save_mean is float16 for half input with half weight, equal to the
        float32 mean rounded, and y matches float32 math from the rounded mean/invstd bit for bit."""
        p = Precision.of(case)  # not super(): bnparity repro copies this method into a class with no base
        # a layer with no parameter tensor at all (affine=False, track_running_stats=False) is not "mixed" to
        # the kernel (is_mixed_type looks at the tensors that are defined): it runs the pure 16-bit path
        # (found by bnparity fuzz: n = 2 float16 layers without parameters, dx off by 30x a float32 bound)
        bare = not (case.has_scale or case.has_center or case.track_running_stats)
        if case.dtype in ("float16", "bfloat16") and (case.resolved_param_dtype == case.dtype or bare):
            # https://github.com/pytorch/pytorch/blob/v2.13.0/aten/src/ATen/native/cpu/batch_norm_kernel.cpp
            # (batch_norm_cpu_collect_stats_contiguous_internal<scalar_t, param_t>: opmath sums, mean/var_sum
            # written as param_t; batch_norm_cpu_contiguous_impl builds alpha/beta from those)
            p = Precision(p.statistics, case.dtype, p.normalize, p.running, p.params, p.output)  # held
        return p

    def build(self, case: Case, data: CaseData) -> TorchState:
        m = self.mapped(case)
        return torch_build(case, data, m.momentum, m.eps)

    def train_step(self, state: TorchState, x: np.ndarray, g: np.ndarray, v=None) -> dict[str, np.ndarray]:
        return torch_step(state, x, g, training=True, v=v)

    def eval_step(self, state: TorchState, x: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
        return torch_step(state, x, g, training=False)

    def frozen_step(self, state: TorchState, x: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
        return torch_frozen_step(state, x, g)

    # -- benchmark hooks (bnparity bench) ------------------------------------------
    bench_variants = ("eager", "compile")

    def bench_devices(self) -> tuple[str, ...]:
        import torch

        return ("cuda",) if torch.cuda.is_available() else ()

    def bench_callable(self, case: Case, data: CaseData, mode: str, variant: str, device: str):
        """A zero-argument call of BN alone (inputs already on the device), synchronized."""
        import torch

        state = self.build(case, data)
        bn = state.bn.to(device)
        fmt = torch.contiguous_format
        if case.layout == "channels_last" and case.rank in (4, 5):
            fmt = torch.channels_last if case.rank == 4 else torch.channels_last_3d
        # x and g dense in the layout a channels-last model holds its activations in
        x = torch_tensor(state, data.x[0]).to(device).contiguous(memory_format=fmt)
        g = torch_tensor(state, data.g[0]).to(device).contiguous(memory_format=fmt)
        xg = x.detach().clone().requires_grad_(True)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        fwd = torch.compile(bn, dynamic=False) if variant == "compile" else bn

        def train_fwd():
            bn.train()
            with torch.no_grad():
                fwd(x)
            sync()

        def train_fwd_bwd():
            bn.train()
            xg.grad = None
            bn.zero_grad(set_to_none=True)
            fwd(xg).backward(g)
            sync()

        def eval_fwd():
            bn.eval()
            with torch.no_grad():
                fwd(x)
            sync()

        return {"train_fwd": train_fwd, "train_fwd_bwd": train_fwd_bwd, "eval_fwd": eval_fwd}[mode]

    def describe(self, state: TorchState, info: dict[str, Any]) -> None:
        info["module"] = type(state.bn).__name__
        info["memory_format"] = state.memory_format


ADAPTER = TorchAdapter()
