"""PyTorch's BatchNorm on its compiled and exported paths (issue 18): the module ``torch_adapter`` builds, run
through torch.compile (inductor), inductor's freezing, or exported to ONNX and run by ONNX Runtime or the ONNX
reference evaluator. Each is its own adapter (``path`` and ``source = "torch"``), judged against the same oracle
under torch's conventions: a path that keeps them is expected to pass where eager torch does.

* ``torch-compile`` (compiled): ``torch.compile(module)`` (inductor) for every call: training forward, backward and
  running update, frozen and eval calls. Second derivatives are a skip: AOTAutograd refuses double backward.
* ``torch-compile-freezing`` (compiled): training calls in eager torch, each eval call compiled afresh with
  ``torch._inductor.config.freezing = True`` under ``torch.no_grad()`` (inductor folds the parameters and running
  statistics into constants): an inference program, so eval gradients are not produced.
* ``torch-onnxruntime`` / ``torch-onnx-reference`` (exported): training calls in eager torch; each eval call exports
  the module as it stands (``torch.onnx.export(dynamo=True)``) and runs the program in ONNX Runtime's CPU provider,
  or in ``onnx.reference.ReferenceEvaluator`` (the standard's own definition of the operator). The running
  statistics of an eval call are the program's initializers, read back from the ONNX model.
* ``torch-onnxruntime-training`` (exported): every call in ONNX Runtime, from one training-mode export
  (``torch.onnx.export(dynamo=False, training=TrainingMode.TRAINING)``: a BatchNormalization node with
  ``training_mode = 1``) whose running mean and variance are made graph inputs and outputs, so the running
  statistics it returns feed its next call; eval calls set ``training_mode = 0`` on the same node. No gradients.

Compile and export time is reported apart from compute: ``info["compile_s"]`` (dynamo + inductor, forward and
backward; for an exported path the export and the runtime's session), ``info["compiles"]`` (inductor FX graphs
compiled, or programs exported) and ``info["compile_cache_hits"]`` (FX graphs read back from inductor's cache).
``BNPARITY_TORCH_CACHE_DIR`` (tox sets it inside the environment) is inductor's cache folder
(``TORCHINDUCTOR_CACHE_DIR``), so a re-run reads the compiled graphs back.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from harness.adapters.base import Conventions, Observed, Raises, Refusal
from harness.adapters.torch_adapter import (
    TorchAdapter,
    TorchState,
    memory_format,
    to_numpy,
    to_torch,
    torch_back,
    torch_tensor,
)
from harness.cases import Case
from harness.inputs import CaseData

CACHE_ENV = "BNPARITY_TORCH_CACHE_DIR"
NO_EVAL_GRADIENT = "an inference program: no gradient of an eval call"
NO_TRAIN_GRADIENT = "ONNX Runtime's inference session runs the forward only: no gradient"
NO_EVAL_CALL = "no eval call in the case: this path only replaces the eval calls, its training calls are eager torch's"


# ONNX Runtime 1.32's CPU provider has no BatchNormalization kernel for bfloat16 (creating the session raises); tried
# on every (input, parameter) pair torch itself takes with a bfloat16 input
ORT_BFLOAT16 = Refusal(
    frozenset({("bfloat16", "bfloat16"), ("bfloat16", "float32")}), "NotImplemented",
    "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for BatchNormalization(",
    "https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/providers/cpu/nn/batch_norm.cc "
    "(the CPU kernels' type constraints: no BFloat16)")


def _compile_metrics() -> tuple[float, int, int]:
    """(seconds in dynamo + inductor so far, FX graphs compiled, FX graphs read back from the cache)."""
    from torch._dynamo.utils import compilation_time_metrics, counters

    seconds = sum(sum(compilation_time_metrics.get(k, ())) for k in
                  ("_compile.compile_inner", "compile_fx.<locals>.bw_compiler"))
    ind = counters["inductor"]
    return seconds, int(ind.get("fxgraph_cache_miss", 0)), int(ind.get("fxgraph_cache_hit", 0))


class _CompileAccounting:
    """Compile time apart from compute, with inductor's FX graph cache in ``BNPARITY_TORCH_CACHE_DIR``."""

    # inductor compiles in this process (no subprocess pool): the worker's one thread, as for the other frameworks
    worker_env = {**TorchAdapter.worker_env, "TORCHINDUCTOR_COMPILE_THREADS": "1"}
    bench_variants = ()  # bnparity bench times torch.compile as the torch adapter's "compile" variant
    no_second_order = ("torch.compile (inductor, torch 2.13): a double backward raises RuntimeError 'torch.compile "
                       "with aot_autograd does not currently support double backward' (torch/_functorch/_aot_autograd/"
                       "runtime_wrappers.py)")

    def setup(self) -> None:
        cache = os.environ.get(CACHE_ENV)
        if cache:  # before torch reads its configuration
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        super().setup()
        import torch._dynamo  # noqa: F401  (import cost belongs to the worker, not to the first case)
        import torch._inductor.config  # noqa: F401

    def run(self, case: Case, data: CaseData) -> Observed:
        import torch._dynamo

        torch._dynamo.reset()  # every case its own graphs: a worker's cases would otherwise hit the recompile limit
        s0, miss0, hit0 = _compile_metrics()
        obs = super().run(case, data)
        s1, miss1, hit1 = _compile_metrics()
        obs.info.update({"compile_s": s1 - s0, "compiles": miss1 - miss0})
        if hit1 > hit0:
            obs.info["compile_cache_hits"] = hit1 - hit0
        return obs


TORCH_EAGER = TorchAdapter()


def eval_raises_wrapped(adapter: TorchAdapter, case: Case, how: str) -> str | None:
    """A skip where the case's first call is an eval call that normalizes with the batch (no running statistics) and
    trips one of torch's declared refusals: on a path that replaces the eval calls that refusal is raised inside the
    compiler or exporter, wrapped in its own exception type, while the same refusal in a training call is eager
    torch's ValueError; one declared Raises per case cannot name both."""
    if case.track_running_stats or not case.schedule or case.schedule[0] != "eval" or case.expect_raise:
        return None
    raised = adapter.conventions.raises_on(case, adapter.mapped(case).eps)
    if not raised:
        return None
    return (f"{adapter.name}: {raised[0][0]} in an eval call without running statistics: torch's ValueError is raised "
            f"inside {how} and wrapped in its exception type there (torch 2.13), not the declared one")


WRAPPED = ("torch/nn/functional.py batch_norm's check, raised under dynamo's fake-tensor trace and wrapped: "
           "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/_dynamo/utils.py#L4153-L4162")


class TorchCompileAdapter(_CompileAccounting, TorchAdapter):
    """torch.compile (inductor, default options) of the module: every call runs the compiled module."""

    name = "torch-compile"
    path = "compiled"
    source = "torch"
    # torch's own refusals (F.batch_norm's checks) raise while dynamo traces the call with fake tensors, and dynamo
    # re-raises them as TorchRuntimeError with torch's message inside: torch 2.13 torch/_dynamo/utils.py
    # (get_fake_value, "RuntimeError when making fake tensor call")
    conventions = replace(
        TorchAdapter.conventions,
        single_value_training=Raises("TorchRuntimeError", "Expected more than 1 value per channel when training",
                                     WRAPPED),
        zero_eps_training=Raises("TorchRuntimeError", "eps must be positive during training", WRAPPED))

    refuses = ()  # inductor does not make the eager CPU kernel's mixed-dtype check: see supports

    def supports(self, case: Case) -> str | None:
        eager = TorchAdapter.refusal(TORCH_EAGER, case)
        if eager is not None and self.name not in case.expect_raise:
            return (f"{self.name}: eager torch refuses {case.dtype} input with {case.resolved_param_dtype} parameters "
                    f"({eager.type}: {eager.messages[0]}); torch.compile (inductor, torch 2.13) runs the pair (the "
                    "decomposition casts), but its precision there is not declared and its eager source has no "
                    "result: not judged")
        return super().supports(case)

    def build(self, case: Case, data: CaseData) -> TorchState:
        import torch

        state = super().build(case, data)
        state.bn = torch.compile(state.bn)  # an OptimizedModule: attributes, train() and parameters reach the module
        return state

    def describe(self, state: TorchState, info: dict[str, Any]) -> None:
        info["module"] = type(state.bn._orig_mod).__name__
        info["compiled"] = "torch.compile (inductor)"
        info["memory_format"] = state.memory_format


class TorchCompileFreezingAdapter(_CompileAccounting, TorchAdapter):
    """Eager training; each eval call compiled with inductor's freezing under torch.no_grad()."""

    name = "torch-compile-freezing"
    path = "compiled"
    source = "torch"
    no_second_order = None  # the training calls are eager torch's
    omits = {"dx_eval": NO_EVAL_GRADIENT, "dgamma_eval": NO_EVAL_GRADIENT, "dbeta_eval": NO_EVAL_GRADIENT}

    def supports(self, case: Case) -> str | None:
        return (super().supports(case) or (None if "eval" in case.schedule else f"{self.name}: {NO_EVAL_CALL}")
                or eval_raises_wrapped(self, case, "dynamo's trace (TorchRuntimeError)"))

    def eval_step(self, state: TorchState, x: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
        import torch
        import torch._dynamo
        import torch._inductor.config

        bn = state.bn.eval()
        torch._dynamo.reset()  # the folded constants are the module's now: a program compiled before is stale
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):
            xt = torch_tensor(state, x)
            y = torch.compile(bn)(xt)
        state.memory_format = memory_format(xt)
        out = {"y": torch_back(state, y)}
        if bn.track_running_stats:
            out["running_mean"] = to_numpy(bn.running_mean)
            out["running_var"] = to_numpy(bn.running_var)
        return out

    def describe(self, state: TorchState, info: dict[str, Any]) -> None:
        super().describe(state, info)
        info["compiled"] = "eval: torch.compile (inductor) with torch._inductor.config.freezing = True, torch.no_grad()"


# -- exported: ONNX ---------------------------------------------------------------------------------------------------

@dataclass
class OnnxState:
    """The torch module (eager training) and what the ONNX paths keep between calls."""

    torch: TorchState
    export_s: float = 0.0
    exports: int = 0
    opset: int | None = None
    notes: list[str] = field(default_factory=list)
    train_model: Any = None  # torch-onnxruntime-training: the training-mode program (running stats as inputs)
    running: dict[str, np.ndarray] = field(default_factory=dict)  # ... and the statistics it returned last


def onnx_array(a: np.ndarray) -> np.ndarray:
    """An array as the ONNX runtimes take it (bfloat16 as ml_dtypes' bfloat16, which onnx and onnxruntime read)."""
    return np.ascontiguousarray(a)


def bn_node(model) -> Any:
    """The model's one BatchNormalization node (a clear error where the exporter wrote something else)."""
    nodes = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    if len(nodes) != 1:
        raise RuntimeError(f"the exported ONNX graph has {len(nodes)} BatchNormalization nodes, not one: "
                           f"{[n.op_type for n in model.graph.node]}")
    return nodes[0]


def initializer(model, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None


def export_eval(state: OnnxState, xt) -> Any:
    """The module in eval mode, as it stands, exported with torch.onnx.export(dynamo=True): an ONNX ModelProto."""
    import torch

    bn = state.torch.bn.eval()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(None):  # the exporter prints its progress
        program = torch.onnx.export(bn, (xt.detach(),), dynamo=True, verbose=False)
    model = program.model_proto
    state.export_s += time.perf_counter() - t0
    state.exports += 1
    state.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return model


class _OnnxEval(TorchAdapter):
    """Eager training in torch; each eval call exports the module and runs the ONNX program."""

    path = "exported"
    source = "torch"
    requires = ("torch", "onnx", "onnxscript")
    bench_variants = ()  # what bnparity bench would time here is eager torch's training and a fresh export per call
    omits = {"dx_eval": NO_EVAL_GRADIENT, "dgamma_eval": NO_EVAL_GRADIENT, "dbeta_eval": NO_EVAL_GRADIENT}
    runtime = ""

    def distributions(self) -> tuple[str, ...]:
        return ("torch", "onnx", "onnxscript", "onnx-ir")

    def supports(self, case: Case) -> str | None:
        return (super().supports(case) or (None if "eval" in case.schedule else f"{self.name}: {NO_EVAL_CALL}")
                or eval_raises_wrapped(self, case, "torch.onnx.export"))

    def setup(self) -> None:
        super().setup()
        import onnx  # noqa: F401
        import torch.onnx  # noqa: F401

    def run(self, case: Case, data: CaseData) -> Observed:
        self.__dict__["_state"] = None
        obs = super().run(case, data)
        st = self.__dict__.pop("_state", None)
        if st is not None:  # (a case that raised part-way still reports what its exports cost)
            obs.info.update({"compile_s": st.export_s, "compiles": st.exports, "export_s": st.export_s})
        return obs

    def build(self, case: Case, data: CaseData) -> OnnxState:
        state = OnnxState(super().build(case, data))
        self.__dict__["_state"] = state
        return state

    def train_step(self, state: OnnxState, x, g, v=None):
        return super().train_step(state.torch, x, g, v=v)

    def frozen_step(self, state: OnnxState, x, g):
        return super().frozen_step(state.torch, x, g)

    def execute(self, state: OnnxState, model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def eval_step(self, state: OnnxState, x: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        ts = state.torch
        xt = torch_tensor(ts, x).contiguous()
        model = export_eval(state, xt)
        y = self.execute(state, model, {model.graph.input[0].name: onnx_array(to_numpy(xt))})[0]
        out = {"y": torch_back(ts, to_torch(torch, np.asarray(y)))}
        if not ts.bn.track_running_stats:
            return out
        ops = [n.op_type for n in model.graph.node]
        if "BatchNormalization" not in ops:  # the exporter wrote the layer as other operators (an empty batch)
            note = f"no BatchNormalization node in the exported graph ({ops}): running statistics read from the module"
            if note not in state.notes:
                state.notes.append(note)
            out.update(running_mean=to_numpy(ts.bn.running_mean), running_var=to_numpy(ts.bn.running_var))
            return out
        node = bn_node(model)
        for q, name in (("running_mean", node.input[3]), ("running_var", node.input[4])):  # what the program holds
            held = initializer(model, name)
            if held is None:
                raise RuntimeError(f"the exported BatchNormalization's {q} ({name!r}) is not an initializer")
            out[q] = held
        return out

    def describe(self, state: OnnxState, info: dict[str, Any]) -> None:
        info["module"] = type(state.torch.bn).__name__
        info["exported"] = f"torch.onnx.export(dynamo=True), opset {state.opset}; eval run in {self.runtime}"
        if state.notes:
            info["notes"] = list(state.notes)


class TorchOnnxRuntimeAdapter(_OnnxEval):
    name = "torch-onnxruntime"
    requires = ("torch", "onnx", "onnxscript", "onnxruntime")
    runtime = "onnxruntime (CPUExecutionProvider)"
    refuses = (*TorchAdapter.refuses, ORT_BFLOAT16)

    def distributions(self) -> tuple[str, ...]:
        return (*super().distributions(), "onnxruntime")

    def setup(self) -> None:
        super().setup()
        import onnxruntime  # noqa: F401

    def supports(self, case: Case) -> str | None:
        if ORT_BFLOAT16.applies(case) and self.name not in case.expect_raise:  # ONNX Runtime's refusal, not torch's
            return (f"{self.name}: onnxruntime {self.versions().get('onnxruntime', '?')} refuses {case.dtype} input: "
                    f"{ORT_BFLOAT16.type}: {ORT_BFLOAT16.says} (source: {ORT_BFLOAT16.source})")
        return super().supports(case)

    def execute(self, state: OnnxState, model, feeds):
        return ort_run(state, model, feeds)


class TorchOnnxReferenceAdapter(_OnnxEval):
    name = "torch-onnx-reference"
    runtime = "onnx.reference.ReferenceEvaluator"

    def execute(self, state: OnnxState, model, feeds):
        from onnx.reference import ReferenceEvaluator

        t0 = time.perf_counter()
        ev = ReferenceEvaluator(model)
        state.export_s += time.perf_counter() - t0
        return ev.run(None, feeds)


def ort_run(state: OnnxState, model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """One run of ``model`` in an ONNX Runtime CPU session, one thread (its session creation counted as export)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("BNPARITY_THREADS", "1"))
    opts.inter_op_num_threads = 1
    t0 = time.perf_counter()
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    state.export_s += time.perf_counter() - t0
    return sess.run(None, feeds)


@dataclass(frozen=True)
class TrainingExportConventions(Conventions):
    """torch's conventions for a path exported in training mode: the export traces the module in training mode
    whatever the case's calls, so torch's eps check raises at export even where no call trains (eager torch
    allows eps = 0 in eval: eps_zero_eval_only)."""

    def raises_on(self, case: Any, eps: float) -> list[tuple[str, Raises]]:
        out = super().raises_on(case, eps)
        if eps == 0 and isinstance(self.zero_eps_training, Raises) and all(
                r is not self.zero_eps_training for _, r in out):
            out.append(("eps = 0 in the training-mode export", self.zero_eps_training))
        return out


class TorchOnnxRuntimeTrainingAdapter(TorchOnnxRuntimeAdapter):
    """Every call in ONNX Runtime: a training-mode export (BatchNormalization training_mode = 1) whose running
    statistics are graph inputs and outputs; eval calls run the same node with training_mode = 0."""

    name = "torch-onnxruntime-training"
    conventions = TrainingExportConventions(**{f.name: getattr(TorchAdapter.conventions, f.name)
                                               for f in fields(Conventions)})
    no_second_order = f"{NO_TRAIN_GRADIENT} (the case's second derivatives need the backward)"
    omits = {"dx": NO_TRAIN_GRADIENT, "dgamma": NO_TRAIN_GRADIENT, "dbeta": NO_TRAIN_GRADIENT,
             "dx_frozen": NO_TRAIN_GRADIENT, **_OnnxEval.omits}

    def supports(self, case: Case) -> str | None:
        if ORT_BFLOAT16.applies(case) and self.name not in case.expect_raise:
            return super().supports(case)
        return TorchAdapter.supports(self, case)  # every call runs in ONNX Runtime: eval calls are not needed

    def build(self, case: Case, data: CaseData) -> OnnxState:
        import torch

        state = OnnxState(TorchAdapter.build(self, case, data))
        self.__dict__["_state"] = state
        ts = state.torch
        xt = torch_tensor(ts, data.x[0] if len(data.x) else data.x_eval).contiguous()
        if ts.bn.track_running_stats:  # before the export: tracing a training-mode module runs it (an update)
            state.running = {"running_mean": to_numpy(ts.bn.running_mean), "running_var": to_numpy(ts.bn.running_var)}
        # tracing a training-mode module checks its batch as a training call does: a case with no training call and
        # one value per channel (an eval-only batch of one, normalized with the running statistics) is traced on
        # that batch twice, with a dynamic batch axis
        names: dict[str, Any] = {}
        if not len(data.x) and ts.bn.track_running_stats and xt.numel() == xt.shape[1]:
            xt, names = torch.cat([xt, xt]), {"input_names": ["x"], "dynamic_axes": {"x": {0: "batch"}}}
        t0 = time.perf_counter()
        path = f"/tmp/bnparity-ortt-{os.getpid()}.onnx"
        try:
            torch.onnx.export(ts.bn.train(), (xt,), path, dynamo=False, training=torch.onnx.TrainingMode.TRAINING,
                              do_constant_folding=False, **names)
            import onnx

            model = onnx.load(path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        state.export_s += time.perf_counter() - t0
        state.exports += 1
        state.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        state.train_model = stats_as_io(model)
        return state

    def call(self, state: OnnxState, x: np.ndarray, training: bool) -> dict[str, np.ndarray]:
        import torch

        ts = state.torch
        model = state.train_model if training else with_training_mode(state.train_model, 0)
        xt = torch_tensor(ts, x).contiguous()
        feeds = {model.graph.input[0].name: onnx_array(to_numpy(xt))}
        node = bn_node(model)
        if state.running:
            feeds.update({node.input[3]: state.running["running_mean"], node.input[4]: state.running["running_var"]})
        res = ort_run(state, model, feeds)
        named = dict(zip([o.name for o in model.graph.output], res))
        out = {"y": torch_back(ts, to_torch(torch, np.asarray(named[node.output[0]])))}
        if state.running:
            if training and len(node.output) == 3:
                state.running = {"running_mean": named[node.output[1]], "running_var": named[node.output[2]]}
            out.update({q: np.asarray(v).copy() for q, v in state.running.items()})
        return out

    def train_step(self, state: OnnxState, x, g, v=None):
        return self.call(state, x, training=True)

    def frozen_step(self, state: OnnxState, x, g):
        return self.call(state, x, training=True)

    def eval_step(self, state: OnnxState, x, g):
        return self.call(state, x, training=False)

    def describe(self, state: OnnxState, info: dict[str, Any]) -> None:
        super().describe(state, info)
        info["exported"] = (f"torch.onnx.export(dynamo=False, training=TRAINING), opset {state.opset}; every call in "
                            f"{self.runtime}, running statistics fed back")


def stats_as_io(model) -> Any:
    """The training-mode model with its BatchNormalization's running mean and variance as graph inputs (fed each call)
    and its updated running statistics (the node's outputs 1 and 2) as graph outputs."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = bn_node(m)
    stats = [n for n in node.input[3:5] if n]
    keep = [t for t in m.graph.initializer if t.name not in stats]
    moved = [t for t in m.graph.initializer if t.name in stats]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    for t in moved:
        m.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    outputs = {o.name for o in m.graph.output}
    for name in node.output[1:]:
        if name and name not in outputs:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return m


def with_training_mode(model, mode: int) -> Any:
    """A copy of ``model`` whose BatchNormalization has ``training_mode = mode`` and (in eval) only its y output."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = bn_node(m)
    for a in node.attribute:
        if a.name == "training_mode":
            a.i = mode
    if mode == 0:
        extra = set(node.output[1:])
        del node.output[1:]
        kept = [o for o in m.graph.output if o.name not in extra]
        del m.graph.output[:]
        m.graph.output.extend(kept)
    return m


TORCH_COMPILE = TorchCompileAdapter()
TORCH_COMPILE_FREEZING = TorchCompileFreezingAdapter()
TORCH_ONNXRUNTIME = TorchOnnxRuntimeAdapter()
TORCH_ONNX_REFERENCE = TorchOnnxReferenceAdapter()
TORCH_ONNXRUNTIME_TRAINING = TorchOnnxRuntimeTrainingAdapter()
