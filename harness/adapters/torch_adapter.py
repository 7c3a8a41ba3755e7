"""PyTorch: ``torch.nn.BatchNorm1d/2d/3d`` chosen by rank, autograd for gradients.

Sources: torch/nn/modules/batchnorm.py (_BatchNorm.forward),
torch/nn/functional.py (batch_norm, _verify_batch_size),
aten/src/ATen/native/Normalization.cpp (running var uses var_sum / (n - 1)).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from harness.adapters.base import Adapter, Conventions
from harness.cases import Case
from harness.inputs import CaseData


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

        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy().copy()


class TorchAdapter(Adapter):
    name = "torch"
    framework = "torch"
    requires = ("torch",)
    supports_cumulative = True
    conventions = Conventions(
        momentum_style="weight_of_new",
        running_var_estimator="unbiased",
        default_eps=1e-5,
        default_momentum=0.1,
        native_layout="channels_first",
        single_value_training="raises",
        notes="normalizes with the biased batch variance, stores the unbiased one",
    )
    worker_env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def setup(self) -> None:
        import torch

        torch.set_num_threads(int(os.environ.get("BNPARITY_THREADS", "1")))
        torch.use_deterministic_algorithms(True)

    def build(self, case: Case, data: CaseData) -> Any:
        import torch

        cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d,
               5: torch.nn.BatchNorm3d}.get(case.rank)
        if cls is None:
            raise ValueError(f"torch has no BatchNorm for rank {case.rank}")
        m = self.mapped(case)
        bn = cls(case.channels, eps=m.eps, momentum=m.momentum, affine=case.affine,
                 track_running_stats=case.track_running_stats)
        pdt = getattr(torch, case.resolved_param_dtype)
        bn = bn.to(pdt)
        with torch.no_grad():
            if case.affine:
                bn.weight.copy_(to_torch(torch, data.gamma))
                bn.bias.copy_(to_torch(torch, data.beta))
            if case.track_running_stats:
                bn.running_mean.copy_(to_torch(torch, data.running_mean))
                bn.running_var.copy_(to_torch(torch, data.running_var))
        return {"bn": bn, "case": case}

    def _tensor(self, case: Case, a: np.ndarray):
        """Physical array -> logical (N, C, ...) tensor; channels_last keeps NHWC strides.

        ``contiguous = false`` cases get a strided view: every other element of a buffer twice
        as long along the batch axis.
        """
        import torch

        t = to_torch(torch, a)
        if not case.contiguous:
            buf = torch.zeros((2 * t.shape[0], *t.shape[1:]), dtype=t.dtype)
            buf[::2] = t
            t = buf[::2]
        if case.layout == "channels_last" and case.rank > 2:
            t = t.movedim(-1, 1)
        return t

    def _leaf(self, case: Case, a: np.ndarray):
        """The input as a tensor that autograd fills ``.grad`` of, with the case's strides kept."""
        t = self._tensor(case, a)
        if case.contiguous:
            return t.clone().requires_grad_(True)  # preserve_format keeps channels_last strides
        t.requires_grad_(True)  # a view of a fresh buffer: already a leaf with its own strides
        return t

    def _back(self, case: Case, t) -> np.ndarray:
        if case.layout == "channels_last" and t.dim() > 2:
            t = t.movedim(1, -1)
        return to_numpy(t)

    def _call(self, state, x: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        bn, case = state["bn"], state["case"]
        xt = self._leaf(case, x)
        bn.zero_grad(set_to_none=True)
        y = bn(xt)
        y.backward(self._tensor(case, g))
        out = {"y": self._back(case, y), "dx": self._back(case, xt.grad)}
        if case.affine:
            out["dgamma"] = to_numpy(bn.weight.grad)
            out["dbeta"] = to_numpy(bn.bias.grad)
        state["memory_format"] = ("channels_last" if case.rank == 4 and xt.is_contiguous(
            memory_format=torch.channels_last) else "contiguous" if xt.is_contiguous() else "strided")
        return out

    def train_step(self, state, x, g):
        bn = state["bn"]
        bn.train()
        out = self._call(state, x, g)
        if bn.track_running_stats:
            out["running_mean"] = to_numpy(bn.running_mean)
            out["running_var"] = to_numpy(bn.running_var)
        return out

    def eval_step(self, state, x, g):
        state["bn"].eval()
        return self._call(state, x, g)

    # -- benchmark hooks (bnparity bench) ------------------------------------------
    bench_variants = ("eager", "compile")

    def bench_devices(self) -> tuple[str, ...]:
        import torch

        return ("cuda",) if torch.cuda.is_available() else ()

    def bench_callable(self, case: Case, data: CaseData, mode: str, variant: str, device: str):
        """A zero-argument call of BN alone (inputs already on the device), synchronized."""
        import torch

        state = self.build(case, data)
        bn = state["bn"].to(device)
        fmt = torch.contiguous_format
        if case.layout == "channels_last" and case.rank in (4, 5):
            fmt = torch.channels_last if case.rank == 4 else torch.channels_last_3d
        # x and g dense in the layout a channels-last model holds its activations in
        x = self._tensor(case, data.x[0]).to(device).contiguous(memory_format=fmt)
        g = self._tensor(case, data.g[0]).to(device).contiguous(memory_format=fmt)
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

    def describe(self, state, info):
        info["module"] = type(state["bn"]).__name__
        info["memory_format"] = state.get("memory_format")


ADAPTER = TorchAdapter()
