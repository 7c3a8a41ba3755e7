"""PyTorch BatchNorm under ``DistributedDataParallel``: one process per replica in a ``gloo`` process group.

Each case spawns its own ranks from the adapter's worker (``torch.multiprocessing``, spawn; a rendezvous file in a
fresh temporary folder, so no port is shared between cases or runs) and joins them before it returns, so a hang or a
crash of a rank costs that case only: the worker's case time limit covers the whole group, and the ranks live in the
worker's process group, which the harness kills with it. Every rank builds the eager adapter's module
(``torch_build``), wraps it in ``DistributedDataParallel`` (``broadcast_buffers=True``, the default) and runs each
training call on its contiguous shard of the batch: ``y`` and ``dx`` are gathered from the ranks in order,
``dgamma`` and ``dbeta`` read from rank 0's ``.grad`` after DDP's all-reduce (DDP averages the ranks' gradients),
the running statistics from rank 0's buffers. Eval calls run rank 0's module (DDP's ``.module``) on the whole eval
batch, as a user evaluates the unwrapped model.

``sync = false``: plain ``BatchNorm{1,2,3}d``, each rank normalizes with its own shard's statistics and updates its
own buffers; DDP broadcasts rank 0's buffers at the start of the next forward, so rank 0's survive
(``replica_running = "first"``). ``sync = true``: ``SyncBatchNorm.convert_sync_batchnorm``, which torch 2.13 runs on
CUDA, HPU, XPU and PrivateUse1 tensors only: on a CPU-only machine that is a skip quoting torch's own error; where
torch sees a GPU the ranks use ``cuda:<rank>`` and ``nccl`` (one GPU per rank).
"""

from __future__ import annotations

import os
import queue as queue_mod
import tempfile
import time
from typing import Any

import numpy as np

from harness.adapters.base import Observed, Raised
from harness.adapters.devices import gpu_visible
from harness.adapters.replicas import kept_summary
from harness.adapters.torch_adapter import (
    TorchAdapter,
    to_numpy,
    torch_back,
    torch_build,
    torch_leaf,
    torch_setup,
    torch_step,
    torch_tensor,
)
from harness.cases import Case
from harness.inputs import CaseData
from reference import shard_slices

# torch 2.13.0, torch/nn/modules/batchnorm.py l.843-854 (SyncBatchNorm.forward), tried here on CPU tensors
SYNC_CPU_ERROR = "ValueError: SyncBatchNorm expected input tensor to be on GPU or XPU or privateuseone"
SYNC_CPU_SOURCE = "https://github.com/pytorch/pytorch/blob/v2.13.0/torch/nn/modules/batchnorm.py#L843-L854"
RANK_TIMEOUT_S = 120.0  # a collective that waits longer than this raises in the rank (gloo's own timeout)


def _rank_main(rank: int, world: int, store: str, case: Case, data: CaseData, momentum, eps, device: str,
               out: Any) -> None:
    """One rank: join the group, run the case's calls on this rank's shards, put ``(rank, call, results)`` on
    ``out``; ``(rank, None, Raised)`` if anything raises, ``(rank, None, None)`` when done."""
    stage = "joining the process group"
    import faulthandler
    import sys

    # a rank that hangs leaves its stacks in the worker's log before the parent gives up on it
    faulthandler.dump_traceback_later(RANK_TIMEOUT_S, exit=False, file=sys.stderr)
    try:
        from datetime import timedelta

        import torch
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        torch_setup(1)
        if device == "cuda":
            torch.cuda.set_device(rank)
        dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method=f"file://{store}", rank=rank,
                                world_size=world, timeout=timedelta(seconds=RANK_TIMEOUT_S))
        stage = "build"
        state = torch_build(case, data, momentum, eps)
        if case.data_parallel.sync:
            state.bn = torch.nn.SyncBatchNorm.convert_sync_batchnorm(state.bn)
        dev = torch.device(f"cuda:{rank}" if device == "cuda" else "cpu")
        state.bn = state.bn.to(dev)
        ddp = DistributedDataParallel(state.bn, device_ids=[rank] if device == "cuda" else None)
        mine = shard_slices(case.shards)[rank]
        for i, (kind, batch) in enumerate(zip(case.schedule, case.batches)):
            stage = f"call {i} ({kind})"
            if batch is None:  # eval: rank 0's module on the whole eval batch
                if rank == 0:
                    out.put((rank, i, torch_step(state, data.x_eval, data.g_eval, training=False)))
                continue
            ddp.train()
            xt = torch_leaf(state, data.x[batch][mine]).to(dev)
            xt.retain_grad()
            ddp.zero_grad(set_to_none=True)
            y = ddp(xt)
            y.backward(torch_tensor(state, data.g[batch][mine]).to(dev))
            res = {"y": torch_back(state, y), "dx": torch_back(state, xt.grad)}
            bn = state.bn
            res.update(running_mean=to_numpy(bn.running_mean), running_var=to_numpy(bn.running_var))
            if rank == 0:
                res.update({q: to_numpy(p.grad) for q, p, on in (("dgamma", bn.weight, state.scale),
                                                                 ("dbeta", bn.bias, state.center)) if on})
            out.put((rank, i, res))
        # no teardown: after the last backward no rank waits on another, and a barrier with destroy_process_group
        # hung about one case in ten here (four gloo ranks on two cores); the rank's exit closes its sockets
        out.put((rank, None, None))
    except BaseException as e:  # the rank's own error is the case's outcome
        out.put((rank, None, Raised.of(e, f"rank {rank}: {stage}")))


def _rank_context():
    """forkserver: a clean server process (started once per worker, torch imported there once) forks each rank in
    milliseconds. spawn re-imports torch per rank (10 s and more on a loaded machine); a plain fork of the worker
    deadlocked a rank once in five cases here (a lock held by another of the worker's threads)."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("forkserver")
    # DistributedDataParallel imports torch._dynamo (and sympy) on first construction: 3 s and more per rank
    ctx.set_forkserver_preload(["torch", "torch.distributed", "torch.nn.parallel", "torch._dynamo", __name__])
    return ctx


class TorchDataParallel(TorchAdapter):
    """torch ``DistributedDataParallel`` over ``replicas`` processes (see the module docstring)."""

    name = "torch-dp"
    path = "distributed"
    source = "torch"
    no_data_parallel = None
    bench_variants = ()  # bnparity bench times the eager adapter's BN; the replicas' cost is the parity cells' own
    no_second_order = "the data-parallel path computes first derivatives only"
    conventions = TorchAdapter.conventions.__class__(**{
        **TorchAdapter.conventions.as_dict(),
        "single_value_training": TorchAdapter.conventions.single_value_training,
        "zero_eps_training": TorchAdapter.conventions.zero_eps_training,
        "replica_running": "first", "replica_gradients": "mean",
        "notes": ("DistributedDataParallel on a gloo group: rank 0's buffers are broadcast at each forward "
                  "(broadcast_buffers=True), gradients averaged over the ranks; "
                  + TorchAdapter.conventions.notes)})

    def supports(self, case: Case) -> str | None:
        if case.data_parallel is None:
            return f"{self.name}: runs the data-parallel cases only (the eager path is {self.source})"
        if case.data_parallel.sync and not gpu_visible("torch"):
            return (f"{self.name}: torch.nn.SyncBatchNorm runs on GPU, XPU, HPU or PrivateUse1 tensors only; on this "
                    f"CPU-only machine it raises {SYNC_CPU_ERROR} (torch 2.13.0, {SYNC_CPU_SOURCE})")
        return super().supports(case)

    def setup(self) -> None:
        super().setup()
        from multiprocessing import forkserver

        _rank_context()
        forkserver.ensure_running()  # the server's imports count as the worker's setup, not as the first case's

    def mapped(self, case: Case):
        m = super().mapped(case)
        if case.data_parallel is not None:
            m.training_flags = {**m.training_flags, "module": "SyncBatchNorm" if case.data_parallel.sync else
                                "BatchNorm", "wrapper": "DistributedDataParallel(broadcast_buffers=True)",
                                "backend": "gloo", "replicas": case.data_parallel.replicas}
        return m

    def run(self, case: Case, data: CaseData) -> Observed:
        obs = Observed()
        t0 = time.perf_counter()
        world = case.data_parallel.replicas
        device = "cuda" if case.data_parallel.sync and gpu_visible("torch") else "cpu"
        m = self.mapped(case)
        ctx = _rank_context()
        results: dict[int, dict[int, dict[str, np.ndarray]]] = {}
        with tempfile.TemporaryDirectory(prefix="bnparity-ddp-") as tmp:
            out = ctx.Queue()
            procs = [ctx.Process(target=_rank_main, args=(r, world, os.path.join(tmp, "store"), case, data,
                                                          m.momentum, m.eps, device, out), daemon=True)
                     for r in range(world)]
            for p in procs:
                p.start()
            done: set[int] = set()
            last = time.monotonic()
            try:
                while len(done) < world and obs.raised is None:
                    try:
                        rank, call, res = out.get(timeout=1.0)
                        last = time.monotonic()
                    except queue_mod.Empty:
                        if time.monotonic() - last > RANK_TIMEOUT_S + 10:
                            obs.raised = Raised("RankTimeout", f"no rank reported for {RANK_TIMEOUT_S + 10:g} s",
                                                "the process group")
                        dead = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (None, 0)
                                and r not in done]
                        if dead:
                            obs.raised = Raised("RankExited", f"rank {dead[0][0]} exited with status {dead[0][1]} "
                                                f"before it finished", "the process group")
                        continue
                    if isinstance(res, Raised):
                        obs.raised = res
                    elif call is None:
                        done.add(rank)
                    else:
                        results.setdefault(call, {})[rank] = res
            finally:
                deadline = time.monotonic() + (5.0 if obs.raised is None else 0.5)
                for p in procs:
                    p.join(timeout=max(deadline - time.monotonic(), 0.0))
                    if p.is_alive():
                        p.kill()
                        p.join()
        spread, kept = 0.0, None
        for i, by_rank in sorted(results.items()):
            kind = case.schedule[i]
            sfx = "" if kind == "train" else f"_{kind}"
            if kind == "eval":
                for q, v in by_rank[0].items():
                    obs.put(f"{q}{sfx}", i, v)
                continue
            if len(by_rank) < world:
                continue  # a rank raised during this call: obs.raised says so
            for q in ("y", "dx"):
                obs.put(q, i, np.concatenate([by_rank[r][q] for r in range(world)]))
            copies = np.stack([by_rank[r]["running_var"] for r in range(world)]).astype(np.float64)
            spread, kept = float(np.max(np.ptp(copies, axis=0))), by_rank[0]["running_var"]
            for q, v in by_rank[0].items():
                if q not in ("y", "dx"):
                    obs.put(q, i, v)
        obs.info.update(module=("SyncBatchNorm" if case.data_parallel.sync else "BatchNorm") + " in "
                        "DistributedDataParallel", backend="nccl" if device == "cuda" else "gloo",
                        ranks=world, compute_s=time.perf_counter() - t0)
        if kept is not None:
            obs.info.update(kept_summary(kept, spread))
        return obs


ADAPTER = TorchDataParallel()
