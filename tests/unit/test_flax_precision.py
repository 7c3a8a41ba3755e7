"""The Flax adapters set BatchNorm up the way a Flax user does for each precision policy, on real Flax.

* ``batch_stats``: Flax creates them in float32 whatever ``param_dtype`` is (linen and nnx), so the adapter
  must hand its programs the initial running statistics in that dtype, not in the parameter dtype (which made
  nnx keep float16 statistics and update them in float16, and linen run its eval from float16 statistics).
* ``dtype``: mixed precision in Flax is ``dtype=float16, param_dtype=float32`` (output in float16); pure is
  ``dtype = param_dtype = float16``. The adapter once always passed ``dtype=None``, so a mixed case returned
  float32 outputs, a configuration the user's mixed model never runs.

Each check compares the adapter with the same module built and called as a user would (``init``, values
assigned into the variables Flax made, a jitted ``apply`` / a called nnx module): dtypes exactly, values to a
few ulps (the adapter's jitted vjp programs fuse differently from a forward call). Marker ``frameworks``:
tox's ``current`` env runs it.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.adapters.flax_adapter import _enable_x64
from harness.cases import Case
from harness.inputs import build
from tests.unit.conftest import installed_adapter

pytestmark = pytest.mark.frameworks

POLICIES = [(dt, policy) for dt in ("float16", "bfloat16") for policy in ("pure", "mixed")]


def _case(dtype: str, policy: str, steps: int = 2) -> Case:
    return Case.model_validate({"name": f"flax_{dtype}_{policy}", "shape": [8, 3, 2, 2], "dtype": dtype,
                                "precision": policy, "steps": steps, "momentum": 0.3, "eps": 1e-3,
                                "layout": "channels_last", "seed": 5})


def _user_module(api: str, case: Case, momentum: float = 0.7, eps: float = 1e-3):
    """The module as a Flax user writes it for the policy: (module, its variables or None for nnx)."""
    import jax
    import jax.numpy as jnp

    dtype = case.dtype  # pure and mixed alike compute in the 16-bit dtype
    pdt = case.resolved_param_dtype
    if api == "linen":
        import flax.linen as nn

        bn = nn.BatchNorm(axis=-1, momentum=momentum, epsilon=eps, dtype=dtype,
                          param_dtype=pdt)
        variables = bn.init(jax.random.PRNGKey(0), jnp.zeros(case.physical_shape, dtype), use_running_average=False)
        return bn, variables
    from flax import nnx

    bn = nnx.BatchNorm(case.channels, axis=-1, momentum=momentum, epsilon=eps, dtype=dtype, param_dtype=pdt,
                       rngs=nnx.Rngs(0))
    return bn, None


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize(("dtype", "policy"), POLICIES)
def test_initial_batch_stats_are_in_the_dtype_flax_keeps_them_in(api, dtype, policy):
    adapter, _ = installed_adapter(f"flax-{api}")
    case = _case(dtype, policy)
    module, variables = _user_module(api, case)
    real = (variables["batch_stats"]["mean"].dtype if api == "linen" else module.mean[...].dtype)
    state = adapter.build(case, build(case))
    assert str(real) == "float32"  # Flax's own choice, whatever param_dtype is
    assert {k: str(v.dtype) for k, v in state.stats.items()} == {"mean": str(real), "var": str(real)}


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize(("dtype", "policy"), POLICIES)
def test_policy_maps_to_flax_dtype_and_param_dtype(api, dtype, policy):
    adapter, _ = installed_adapter(f"flax-{api}")
    case = _case(dtype, policy)
    flags = adapter.settings(case)["training_flags"]
    assert flags["dtype"] == dtype
    assert flags["param_dtype"] == (dtype if policy == "pure" else "float32")


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize(("dtype", "policy"), POLICIES)
def test_adapter_matches_the_users_module(api, dtype, policy):
    """Output and running-statistic dtypes, and the running statistics and eval output values, per step."""
    adapter, _ = installed_adapter(f"flax-{api}")
    import jax
    import jax.numpy as jnp

    case = _case(dtype, policy)
    data = build(case)
    obs = adapter.run(case, data)
    assert obs.raised is None, obs.raised
    m = adapter.mapped(case)  # momentum as the adapter computes it (1 - 0.3, not the literal 0.7)
    module, variables = _user_module(api, case, m.momentum, m.eps)
    x = [jnp.asarray(a) for a in data.x]
    with _enable_x64(jax)(True):  # as the adapter runs (its worker has x64 on)
        if api == "linen":
            stats_dtype = variables["batch_stats"]["mean"].dtype
            v = {"params": {"scale": jnp.asarray(data.gamma), "bias": jnp.asarray(data.beta)},
                 "batch_stats": {"mean": jnp.asarray(data.running_mean, stats_dtype),
                                 "var": jnp.asarray(data.running_var, stats_dtype)}}
            step = jax.jit(lambda v, x: module.apply(v, x, use_running_average=False, mutable=["batch_stats"]))
            for s in range(case.steps):
                y, upd = step(v, x[s])
                v = {"params": v["params"], "batch_stats": upd["batch_stats"]}
                ref = {"y": y, "running_mean": upd["batch_stats"]["mean"], "running_var": upd["batch_stats"]["var"]}
                _same(obs, ref, s)
            y_eval = jax.jit(lambda v, x: module.apply(v, x, use_running_average=True))(v, jnp.asarray(data.x_eval))
        else:
            module.scale[...] = jnp.asarray(data.gamma)
            module.bias[...] = jnp.asarray(data.beta)
            module.mean[...] = jnp.asarray(data.running_mean, module.mean[...].dtype)
            module.var[...] = jnp.asarray(data.running_var, module.var[...].dtype)
            module.train()
            for s in range(case.steps):
                y = module(x[s])
                _same(obs, {"y": y, "running_mean": module.mean[...], "running_var": module.var[...]}, s)
            module.eval()
            y_eval = module(jnp.asarray(data.x_eval))
    got = obs.arrays[("y_eval", case.steps)]  # the eval call follows the training calls
    assert str(got.dtype) == str(y_eval.dtype) == dtype
    tol = float(np.finfo(np.float16).eps) if dtype == "float16" else 2.0**-7  # one ulp at 1 of the output dtype
    np.testing.assert_allclose(got.astype(np.float64), np.asarray(y_eval).astype(np.float64), rtol=tol, atol=tol)


def _same(obs, ref: dict, step: int) -> None:
    for q, want in ref.items():
        got = obs.arrays[(q, step)]
        assert str(got.dtype) == str(want.dtype), f"{q} step {step}: {got.dtype}, the user's module {want.dtype}"
        # values to a few float32 ulps: the adapter's programs are the vjp ones, which XLA fuses differently
        rtol = 1e-6 if q != "y" else float(np.finfo(np.float16).eps if got.dtype == np.float16 else 2.0**-7)
        np.testing.assert_allclose(got.astype(np.float64), np.asarray(want).astype(np.float64), rtol=rtol,
                                   atol=rtol, err_msg=f"{q} step {step}")
