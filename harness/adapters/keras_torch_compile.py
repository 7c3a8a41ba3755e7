"""Keras 3 on torch with ``jit_compile=True`` (issue 18, the ``compiled`` path): ``keras3-torch-compile``.

With the torch backend, ``model.compile(jit_compile=True)`` wraps the train, test and predict steps in
``torch.compile`` (keras/src/backend/torch/trainer.py, ``_should_torch_compile``; ``jit_compile="auto"`` stays eager
on torch, keras/src/trainers/trainer.py ``_resolve_auto_jit_compile``). Here every call of the layer (the case's
training, frozen and eval calls) is ``torch.compile`` (inductor) of ``layer(x, training=..., mask=...)``: dynamo
traces Keras's Python (the moments, the moving-average assigns to the layer's variables) and the backward is
AOTAutograd's. Everything else (the layer, conventions, declared precision and refusals) is ``keras3-torch``'s, and
the verdicts are judged against the same oracle: a path that keeps the layer's semantics passes where its source
does.

Compile time is reported apart from compute as for ``torch-compile`` (``info["compile_s"]``, ``info["compiles"]``,
``info["compile_cache_hits"]`` from inductor's FX graph cache in ``BNPARITY_TORCH_CACHE_DIR``). It is the costliest
path here: dynamo traces Keras's layer code, about a minute of compile for a case's first call on this 2-core
machine (README, Paths), so ``tox -e paths`` runs it on a few cases and the whole ``paths`` set is run by hand.
Second derivatives are a skip: AOTAutograd refuses double backward.
"""

from __future__ import annotations

from typing import Any

from harness.adapters.keras3 import Keras3Torch, LayerState
from harness.adapters.torch_paths import _CompileAccounting


class Keras3TorchCompile(_CompileAccounting, Keras3Torch):
    """``keras3-torch`` with each layer call under ``torch.compile`` (inductor, default options)."""

    path = "compiled"
    source = "keras3-torch"
    # inductor compiles in the worker's one thread, as torch-compile does
    backend_env = {**Keras3Torch.backend_env, "TORCHINDUCTOR_COMPILE_THREADS": "1"}

    def __init__(self) -> None:
        super().__init__()
        self.name = "keras3-torch-compile"

    def layer_call(self, state: LayerState) -> Any:
        import torch

        compiled = getattr(state, "compiled", None)
        if compiled is None:  # one compiled callable a case: dynamo guards on training, the mask and the shapes
            layer = state.layer
            compiled = state.compiled = torch.compile(lambda x, **kw: layer(x, **kw))
        return compiled

    def describe(self, state: LayerState, info: dict[str, Any]) -> None:
        super().describe(state, info)
        info["compiled"] = "torch.compile (inductor) of the layer call"


ADAPTER = Keras3TorchCompile()
