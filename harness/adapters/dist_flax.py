"""Flax BatchNorm under data parallelism: linen and nnx over JAX host devices with ``jax.shard_map``.

The worker asks XLA for ``HOST_DEVICES`` CPU devices (``--xla_force_host_platform_device_count``, set in the worker's
environment before JAX is imported) and runs each training call as one ``shard_map`` over a 1-D mesh of
``replicas`` of them: the batch is split into contiguous shards along axis 0 (``P("data")``), gamma and beta are
replicated, and each device keeps its own copy of ``batch_stats`` (``P("data")`` over a leading replica axis), as a
Flax data-parallel loop does unless it averages them. ``sync = true`` passes ``axis_name="data"`` to the layer, which
then averages the statistics with ``lax.pmean`` (synchronized BN); ``sync = false`` leaves it out (each device its
own shard's statistics). Each device differentiates its shard's ``sum(y * g)``; the parameters' gradients are summed
over the devices with ``lax.psum`` (the gradient of the global loss). What survives the step: replica 0's
``batch_stats`` (what ``flax.jax_utils.unreplicate`` reads and an evaluation uses); eval runs the eager layer on the
whole eval batch with that copy. ``shard_map`` splits an array into equal blocks only, so an uneven split is a skip.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from harness.adapters.flax_adapter import (
    FlaxAdapter,
    FlaxState,
    _linen_program,
    _nnx_graphdef,
    _nnx_module,
    _nnx_program,
    _nnx_stats,
    _train_vjp,
    batch_stats_dtype,
    flax_dtype,
    uses_of,
)
from harness.adapters.replicas import kept_summary
from harness.cases import Case
from harness.inputs import CaseData

HOST_DEVICES = 8  # the most replicas a case may ask for (harness.cases.DataParallel)
AXIS = "data"
_DP_PROGRAMS: dict[tuple, Any] = {}


def _graphdef_synced(channels: int, axis: int, fast: bool, uses, dtype, param_dtype, axis_name: str | None):
    key = ("nnx-graphdef-dp", channels, axis, fast, uses, dtype, param_dtype, axis_name)
    if key not in _DP_PROGRAMS:
        from flax import nnx

        abstract = nnx.eval_shape(lambda: nnx.BatchNorm(channels, axis=axis, use_scale=uses[0], use_bias=uses[1],
                                                        use_fast_variance=fast, dtype=dtype, param_dtype=param_dtype,
                                                        axis_name=axis_name, rngs=nnx.Rngs(0)))
        _DP_PROGRAMS[key] = nnx.graphdef(abstract)
    return _DP_PROGRAMS[key]


def _dp_program(api: str, replicas: int, sync: bool, channels: int, axis: int, fast: bool, uses, dtype, param_dtype):
    """A jitted shard_map training step: (x, g, params, per-device stats (R, C), momentum, eps) -> y, dx, the summed
    parameter gradients, the per-device stats after the call."""
    key = (api, replicas, sync, channels, axis, fast, uses, dtype, param_dtype)
    if key in _DP_PROGRAMS:
        return _DP_PROGRAMS[key]
    import jax
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    if len(jax.devices()) < replicas:
        raise RuntimeError(f"{replicas} replicas need as many JAX devices, this process has {len(jax.devices())} "
                           f"(XLA_FLAGS={HOST_DEVICES_FLAG!r} must be set before jax is imported)")
    mesh = Mesh(np.array(jax.devices()[:replicas]), (AXIS,))
    axis_name = AXIS if sync else None
    graphdef = (_graphdef_synced(channels, axis, fast, uses, dtype, param_dtype, axis_name) if api == "nnx"
                else None)

    def local(x, g, params, stats, momentum, eps):
        stats = jax.tree.map(lambda a: a[0], stats)  # this device's copy
        if api == "linen":
            import flax.linen as nn

            bn = nn.BatchNorm(use_running_average=False, axis=axis, momentum=momentum, epsilon=eps,
                              use_scale=uses[0], use_bias=uses[1], use_fast_variance=fast, dtype=dtype,
                              param_dtype=param_dtype, axis_name=axis_name)

            def f(x, params):
                y, upd = bn.apply({"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
                return y, upd["batch_stats"]
        else:
            def f(x, params):
                bn = _nnx_module(graphdef, params, stats, momentum, eps, True)
                return bn(x), _nnx_stats(bn)

        y, dx, dparams, new = _train_vjp(f, x, g, params)
        return y, dx, jax.lax.psum(dparams, AXIS), jax.tree.map(lambda a: a[None], new)

    fn = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(AXIS), P(AXIS), P(), P(AXIS), P(), P()),
                               out_specs=(P(AXIS), P(AXIS), P(), P(AXIS)), check_vma=False))
    _DP_PROGRAMS[key] = fn
    return fn


HOST_DEVICES_FLAG = f"--xla_force_host_platform_device_count={HOST_DEVICES}"


@dataclass
class DPState:
    flax: FlaxState  # the eager adapter's state: its eval program, parameters, hyper-parameters
    train: Any  # the shard_map program
    stats: dict[str, Any]  # per-device batch_stats, (replicas, C)
    spread: float = 0.0  # how far the devices' copies of the running variance part after the last training call


class FlaxDataParallel(FlaxAdapter):
    """A Flax BatchNorm over ``replicas`` host devices (see the module docstring)."""

    path = "distributed"
    no_data_parallel = None
    bench_variants = ()  # bnparity bench times the eager adapter's BN; the replicas' cost is the parity cells' own
    worker_env = {**FlaxAdapter.worker_env, "XLA_FLAGS": HOST_DEVICES_FLAG}

    def __init__(self, name: str, api: str, source: str):
        super().__init__(name, api, fast=True)
        self.source = source
        self.conventions = replace(
            self.conventions, replica_running="first", replica_gradients="sum",
            notes=(f"{self.conventions.notes}; data parallel: jax.shard_map over host devices, axis_name='data' "
                   f"when synchronized (lax.pmean of the statistics), per-device batch_stats, replica 0's kept "
                   f"(flax.jax_utils.unreplicate), parameter gradients lax.psum'd"))

    def supports(self, case: Case) -> str | None:
        if case.data_parallel is None:
            return f"{self.name}: runs the data-parallel cases only (the eager path is {self.source})"
        if case.data_parallel.uneven:
            return (f"{self.name}: jax.shard_map splits an array into equal blocks along a mesh axis (and pmap takes "
                    f"one equal slice per device): no uneven split {list(case.shards)}")
        return super().supports(case)

    def mapped(self, case: Case):
        m = super().mapped(case)
        if case.data_parallel is not None:
            m.training_flags.update(axis_name=AXIS if case.data_parallel.sync else None,
                                    replicas=case.data_parallel.replicas, parallelism="jax.shard_map")
        return m

    def build(self, case: Case, data: CaseData) -> DPState:
        m = self.mapped(case)
        fdt, pdt = flax_dtype(case), case.resolved_param_dtype
        flax_state = super().build(case, data)
        if self.api == "linen":
            flax_state.evaluate = _linen_program("eval", m.axis, self.fast, uses_of(case), fdt, pdt)
        else:
            gd = _nnx_graphdef(case.channels, m.axis, self.fast, uses_of(case), fdt, pdt)
            flax_state.evaluate = _nnx_program("eval", gd)
        dp = case.data_parallel
        train = _dp_program(self.api, dp.replicas, dp.sync, case.channels, m.axis, self.fast, uses_of(case), fdt, pdt)
        sdt = np.dtype(batch_stats_dtype(self.api, case))
        stats = {k: np.tile(v.astype(sdt), (dp.replicas, 1)) for k, v in flax_state.stats.items()}
        return DPState(flax_state, train, stats)

    def train_step(self, state: DPState, x, g, mask=None, v=None):
        y, dx, dparams, stats = state.train(x, g, state.flax.params, state.stats, *state.flax.hyper)
        state.stats = stats
        kept = {k: np.asarray(a)[0] for k, a in stats.items()}  # replica 0's copy
        state.flax.stats = kept
        out = {"y": np.asarray(y), "dx": np.asarray(dx), "running_mean": kept["mean"], "running_var": kept["var"]}
        out.update({q: np.asarray(dparams[k]) for q, k in (("dgamma", "scale"), ("dbeta", "bias")) if k in dparams})
        state.spread = float(np.max(np.ptp(np.asarray(stats["var"], dtype=np.float64), axis=0)))
        return out

    def eval_step(self, state: DPState, x, g, mask=None):
        return super().eval_step(state.flax, x, g, mask)

    def describe(self, state: DPState, info):
        super().describe(state.flax, info)
        info["module"] += " under jax.shard_map"
        info["devices"] = len(__import__("jax").devices())
        info.update(kept_summary(state.flax.stats["var"], state.spread))


LINEN_DP = FlaxDataParallel("flax-linen-dp", "linen", "flax-linen")
NNX_DP = FlaxDataParallel("flax-nnx-dp", "nnx", "flax-nnx")
