"""Keras BatchNormalization under ``tf.distribute.MirroredStrategy`` on logical CPUs: Keras 3 (TensorFlow backend)
and tf-keras (non-fused).

The worker splits its one physical CPU into ``LOGICAL_CPUS`` logical devices
(``tf.config.set_logical_device_configuration``, before TensorFlow's runtime starts) and, per replica count, builds
a ``MirroredStrategy`` over the first ``replicas`` of them. The layer is created and loaded inside the strategy's
scope (``synchronized=True`` or ``False``, as the case says); each training call gives every replica its contiguous
shard (``experimental_distribute_values_from_function``, uneven shards too) and runs, in ``strategy.run``, the layer
in training mode under a ``GradientTape``: ``y`` and ``dx`` are gathered from the replicas in order, ``dgamma`` and
``dbeta`` reduced with ``ReduceOp.SUM`` (the gradient of the global loss, what the optimizer's all-reduce applies).
The running statistics are what the layer's variables read in cross-replica context after the step, where a
training loop or ``model.evaluate`` reads them: Keras 3 creates them as plain ``MirroredVariable``s (aggregation
``NONE``): each replica writes its own copy and a read returns replica 0's (``replica_running = "first"``); tf-keras
creates them ``ON_READ`` with aggregation ``MEAN``: a read averages the replicas' copies (``"mean"``). Eval calls
run the layer on the whole eval batch in cross-replica context.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from harness.adapters.keras3 import Keras3TF
from harness.adapters.replicas import kept_summary
from harness.adapters.tf_keras import TFKerasAdapter, flat, keras2
from harness.adapters.tf_support import setup_tf, taped_params
from harness.cases import Case
from harness.inputs import CaseData
from reference import shard_slices

LOGICAL_CPUS = 8  # the most replicas a case may ask for (harness.cases.DataParallel)
_STRATEGIES: dict[int, Any] = {}


def split_cpu() -> None:
    """Split the CPU into LOGICAL_CPUS logical devices; only possible before TensorFlow's runtime starts (an
    in-process run after another TensorFlow adapter keeps one, and ``strategy_for`` says so)."""
    tf = setup_tf()
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS)
    except RuntimeError:
        pass


def strategy_for(replicas: int):
    import tensorflow as tf

    if replicas not in _STRATEGIES:
        devices = tf.config.list_logical_devices("CPU")
        if len(devices) < replicas:
            raise RuntimeError(f"{replicas} replicas need as many logical CPUs; TensorFlow has {len(devices)} (the "
                               f"split must happen before its runtime starts: run in a worker)")
        # each MirroredStrategy numbers its collective groups from 1 + _collective_key_base: two strategies of
        # different sizes in one process then share group 1, and the second's all-reduce aborts every collective
        # of the process ("Device CPU:0 is joining a group with size4, but that group has size 2 (group_key=1)",
        # tensorflow 2.21). The class attribute ("Only set this in tests", mirrored_strategy.py) keeps them apart
        cls = tf.distribute.MirroredStrategy
        cls._collective_key_base = 100_000 * replicas
        try:
            _STRATEGIES[replicas] = cls([d.name for d in devices[:replicas]])
        finally:
            cls._collective_key_base = 0
    return _STRATEGIES[replicas]


@dataclass
class StrategyState:
    layer: Any
    case: Case
    data: CaseData
    strategy: Any
    step: Any  # the tf.function each replica runs
    output_dtype: str | None = None
    copies_spread: float = 0.0  # how far the replicas' copies of the moving variance part after the last training call


class StrategyRun:
    """What both Keras adapters do under the strategy (mixed into the eager adapters' classes)."""

    path = "distributed"
    no_data_parallel = None
    bench_variants = ()  # bnparity bench times the eager adapter's BN; the replicas' cost is the parity cells' own
    no_second_order = "the data-parallel path computes first derivatives only"
    no_mask = "a mask under data parallelism is not defined by the oracle yet"

    def supports(self, case: Case) -> str | None:
        if case.data_parallel is None:
            return f"{self.name}: runs the data-parallel cases only (the eager path is {self.source})"
        return super().supports(case)

    def settings(self, case: Case) -> dict[str, Any]:
        out = super().settings(case)
        if case.data_parallel is not None:
            out.update(synchronized=case.data_parallel.sync, strategy="MirroredStrategy",
                       replicas=case.data_parallel.replicas)
        return out

    def setup(self) -> None:
        split_cpu()
        super().setup()

    def params(self, layer) -> dict[str, Any]:
        return taped_params(layer.gamma, layer.beta)

    def moving(self, state: StrategyState) -> dict[str, np.ndarray]:
        return {"running_mean": np.asarray(state.layer.moving_mean.numpy()).reshape(-1),
                "running_var": np.asarray(state.layer.moving_variance.numpy()).reshape(-1)}

    def build(self, case: Case, data: CaseData) -> StrategyState:
        import tensorflow as tf

        strategy = strategy_for(case.data_parallel.replicas)
        with strategy.scope():
            layer = self.dp_layer(case, data)

        def step(xt, gt):
            with tf.GradientTape() as tape:
                tape.watch(xt)
                y = layer(xt, training=True)
            params = self.params(layer)
            grads = tape.gradient(y, [xt, *params.values()], output_gradients=tf.cast(gt, y.dtype))
            return y, grads[0], dict(zip(params, grads[1:]))

        return StrategyState(layer, case, data, strategy, tf.function(step, reduce_retracing=True))

    def train_step(self, state: StrategyState, x, g, mask=None, v=None):
        import tensorflow as tf

        s = state.strategy
        shards = shard_slices(state.case.shards)
        dist = [s.experimental_distribute_values_from_function(
            lambda ctx, a=a: tf.constant(a[shards[ctx.replica_id_in_sync_group]])) for a in (x, g)]
        y, dx, grads = s.run(state.step, args=tuple(dist))
        out = {"y": np.concatenate([t.numpy() for t in s.experimental_local_results(y)]),
               "dx": np.concatenate([t.numpy() for t in s.experimental_local_results(dx)])}
        state.output_dtype = s.experimental_local_results(y)[0].dtype.name
        for q, gr in grads.items():
            out[q] = flat(q, s.reduce(tf.distribute.ReduceOp.SUM, gr, axis=None).numpy())
        copies = [np.asarray(c).reshape(-1)
                  for c in s.experimental_local_results(self.raw(state.layer.moving_variance))]
        state.copies_spread = float(np.max(np.ptp(np.stack(copies).astype(np.float64), axis=0)))
        out.update(self.moving(state))
        return out

    def raw(self, variable):
        """The tf.distribute variable that holds the per-replica copies."""
        return variable

    def eval_step(self, state: StrategyState, x, g, mask=None):
        """The eager adapter's eval call on a twin of the layer built outside the strategy, holding what a
        cross-replica read of the variables gives (what a saved and reloaded model keeps): Keras 3 cannot call a
        layer with MirroredVariables outside ``strategy.run`` (``DistributedVariable.handle is not available
        outside the replica context``)."""
        kept = self.moving(state)
        values = {"gamma": state.layer.gamma, "beta": state.layer.beta}
        twin = super().build(state.case, state.data)
        for name, var in values.items():
            if var is not None:
                getattr(twin.layer, name).assign(np.asarray(var.numpy()).reshape(tuple(getattr(twin.layer,
                                                                                                name).shape)))
        twin.layer.moving_mean.assign(kept["running_mean"].reshape(tuple(twin.layer.moving_mean.shape)))
        twin.layer.moving_variance.assign(kept["running_var"].reshape(tuple(twin.layer.moving_variance.shape)))
        return super().eval_step(twin, x, g)

    def describe(self, state: StrategyState, info):
        info["strategy"] = f"MirroredStrategy over {state.case.data_parallel.replicas} logical CPUs"
        info["synchronized"] = state.case.data_parallel.sync
        info["moving_variable"] = type(self.raw(state.layer.moving_mean)).__name__
        info.update(kept_summary(self.moving(state)["running_var"], state.copies_spread))
        info["output_dtype"] = state.output_dtype


class Keras3Mirrored(StrategyRun, Keras3TF):
    source = "keras3-tensorflow"

    def __init__(self) -> None:
        super().__init__()
        self.name = "keras3-tensorflow-dp"
        self.conventions = replace(
            self.conventions, replica_running="first", replica_gradients="sum",
            notes=(f"{self.conventions.notes}; MirroredStrategy: moving statistics are MirroredVariables with "
                   f"aggregation NONE, a cross-replica read returns replica 0's copy").lstrip("; "))

    def params(self, layer) -> dict[str, Any]:
        return {q: p.value for q, p in taped_params(layer.gamma, layer.beta).items()}

    def raw(self, variable):
        return variable.value  # the keras.Variable's tf.distribute variable

    def dp_layer(self, case: Case, data: CaseData):
        import keras

        from harness.adapters.keras3 import dtype_policy, layer_kwargs, load_layer

        layer = keras.layers.BatchNormalization(**layer_kwargs(case, self.mapped(case), self.conventions),
                                                synchronized=case.data_parallel.sync, dtype=dtype_policy(case))
        return load_layer(layer, case, data)


class TFKerasMirrored(StrategyRun, TFKerasAdapter):
    source = "tf-keras-nonfused"

    def __init__(self) -> None:
        super().__init__(fused=False)
        self.name = "tf-keras-nonfused-dp"
        self.conventions = replace(
            self.conventions, replica_running="mean", replica_gradients="sum",
            notes=f"{self.conventions.notes}; MirroredStrategy: moving statistics are SyncOnRead variables "
                  f"(aggregation MEAN), a cross-replica read averages the replicas' copies")

    def dp_layer(self, case: Case, data: CaseData):
        from harness.adapters.keras3 import dtype_policy, layer_kwargs, load_layer

        tf_keras = keras2()
        layer = tf_keras.layers.BatchNormalization(**layer_kwargs(case, self.mapped(case), self.conventions),
                                                   fused=False, synchronized=case.data_parallel.sync,
                                                   dtype=tf_keras.mixed_precision.Policy(dtype_policy(case)))
        return load_layer(layer, case, data)


KERAS3_TF = Keras3Mirrored()
TF_KERAS = TFKerasMirrored()
