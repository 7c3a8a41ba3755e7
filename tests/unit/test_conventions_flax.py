"""Convention translation of the Flax adapters, with no framework needed.

The adapter module imports JAX and Flax inside methods only, so everything checked here
(names, momentum, eps, axis, conventions, worker environment, the ledger's Flax entries)
runs where JAX and Flax are missing.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.adapters import flax_adapter, jax_support
from harness.adapters.flax_adapter import LINEN, LINEN_TWOPASS, NNX, NNX_TWOPASS
from harness.cases import Case, load_cases
from harness.ledger import load_ledger

REPO = Path(__file__).resolve().parents[2]
ALL = [LINEN, LINEN_TWOPASS, NNX, NNX_TWOPASS]
FRAMEWORKS = ("jax", "jaxlib", "flax", "optax", "orbax")


def case(**kw) -> Case:
    body = {"name": "c", "shape": [8, 3, 4, 4]}
    body.update(kw)
    return Case.model_validate(body)


def test_names_and_flags_match_the_entry_points():
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="bnparity.adapters")}
    want = {"flax-linen": ("LINEN", "linen", True), "flax-linen-twopass": ("LINEN_TWOPASS", "linen", False),
            "flax-nnx": ("NNX", "nnx", True), "flax-nnx-twopass": ("NNX_TWOPASS", "nnx", False)}
    for name, (attr, api, fast) in want.items():
        assert eps.get(name) == f"harness.adapters.flax_adapter:{attr}"
        adapter = getattr(flax_adapter, attr)
        assert (adapter.name, adapter.api, adapter.fast) == (name, api, fast)
        assert adapter.framework == "flax"


@pytest.mark.parametrize("adapter", ALL, ids=lambda a: a.name)
def test_momentum_is_the_decay_of_the_old_value(adapter):
    c = case(momentum=0.1, eps=1e-3)
    m = adapter.mapped(c)
    assert adapter.conventions.momentum_style == "decay_of_old"
    assert m.momentum == pytest.approx(0.9) and m.eps == 1e-3
    momentum, eps = adapter.effective(c)
    assert momentum == pytest.approx(0.1) and eps == 1e-3
    assert adapter.mapped(case(momentum=0.0)).momentum == 1.0  # never update
    assert adapter.mapped(case(momentum=1.0)).momentum == 0.0  # replace with the batch statistic
    assert adapter.mapped(case(eps=0.0)).eps == 0.0  # Flax takes eps = 0 as given


@pytest.mark.parametrize("adapter", ALL, ids=lambda a: a.name)
def test_defaults_are_flax_defaults(adapter):
    m = adapter.mapped(case(use_defaults=True, momentum=0.3, eps=0.5))
    assert (m.momentum, m.eps) == (0.99, 1e-5)
    assert adapter.effective(case(use_defaults=True))[0] == pytest.approx(0.01)
    conv = adapter.conventions
    assert (conv.running_var_estimator, conv.native_layout, conv.single_value_training) == (
        "biased", "channels_last", "computes")


@pytest.mark.parametrize("shape", [[8, 3], [8, 3, 5], [8, 3, 4, 4], [2, 3, 2, 2, 2]])
def test_axis_follows_the_physical_layout(shape):
    for a in ALL:
        assert a.settings(case(shape=shape))["axis"] == 1
        assert a.settings(case(shape=shape, layout="channels_last"))["axis"] == -1


def test_settings_show_the_variance_algorithm():
    for a in ALL:
        flags = a.settings(case())["training_flags"]
        assert flags["use_fast_variance"] is a.fast
        assert flags["api"] == f"flax.{a.api}.BatchNorm" and flags["jit"] is True
        assert flags["dtype"] is None  # the default: output promoted with the params (float32 for float16 input)
        assert ("use_fast_variance=True" if a.fast else "use_fast_variance=False") in a.conventions.notes
    assert LINEN.settings(case(affine=False))["training_flags"]["use_scale"] is False
    assert LINEN.settings(case(dtype="float16"))["training_flags"]["param_dtype"] == "float32"


@pytest.mark.parametrize("adapter", ALL, ids=lambda a: a.name)
def test_supported_cases(adapter):
    assert "cumulative" in adapter.supports(case(momentum="cumulative"))
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        assert adapter.supports(case(dtype=dtype)) is None
    assert adapter.supports(case(track_running_stats=False)) is None  # eval with batch statistics
    assert adapter.supports(case(contiguous=False)) is None  # same values; JAX arrays have no strides


def test_worker_environment_and_distributions():
    for a in ALL:
        assert a.worker_env == {"JAX_ENABLE_X64": "1"}
        assert a.distributions() == ("flax", "jax", "jaxlib")
        assert set(a.versions()) <= {"flax", "jax", "jaxlib"}


def test_one_thread_xla_flag_is_added_before_jax_loads_and_keeps_the_users_flags(monkeypatch):
    # shared with Keras 3 on JAX; XLA reads XLA_FLAGS when its CPU backend starts
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    monkeypatch.setenv("BNPARITY_THREADS", "1")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert jax_support.limit_xla_threads() is True
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=false"
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/d")
    jax_support.limit_xla_threads()
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/d --xla_cpu_multi_thread_eigen=false"
    for flags in ("--xla_cpu_multi_thread_eigen=true", ""):  # the user's choice; or more threads asked for
        monkeypatch.setenv("XLA_FLAGS", flags)
        monkeypatch.setenv("BNPARITY_THREADS", "1" if flags else "2")
        jax_support.limit_xla_threads()
        assert os.environ["XLA_FLAGS"] == flags
    monkeypatch.setitem(sys.modules, "jax", object())  # too late: an --in-process run after another JAX adapter
    monkeypatch.setenv("BNPARITY_THREADS", "1")
    assert jax_support.limit_xla_threads() is False and os.environ["XLA_FLAGS"] == ""


def test_float64_array_check_ignores_weak_scalars():
    # the float32 programs carry eps and momentum as 0-d float64 (weakly typed) parameters
    assert flax_adapter._F64_ARRAY.search("%arg6: tensor<f64>") is None
    assert flax_adapter._F64_ARRAY.search("func(%arg0: tensor<16x8xf32>, %arg1: tensor<8xf32>)") is None
    assert flax_adapter._F64_ARRAY.search("%3 = stablehlo.convert %2 : (tensor<16x8xf32>) -> tensor<16x8xf64>")
    assert flax_adapter._F64_ARRAY.search("tensor<8xf64>")


def test_flax_ledger_entries_are_scoped_to_catalogue_cases():
    cases = {c.name: c for c in load_cases([REPO / "cases"])}
    ledger = load_ledger(REPO / "cases" / "known_differences.toml")
    entries = [e for e in ledger if any(a.startswith("flax") for a in e.adapter)]
    assert entries
    from harness.adapters.dist_flax import LINEN_DP, NNX_DP

    names = [a.name for a in (*ALL, LINEN_DP, NNX_DP)]  # (the distributed ones carry an entry of their own)
    for e in entries:
        assert e.link.startswith("https://github.com/google/flax/"), e.id
        assert any(e.applies(c, n, "0.12.8") for c in cases.values() for n in names), e.id
        for pattern in e.cases:
            assert any(e.applies(c, n, "0.12.8") for c in cases.values() if c.name == pattern for n in names), (
                e.id, pattern)
        # the two-pass adapters never carry a fast-variance entry, and vice versa
        if "fast-variance" in e.id:
            assert not any(e.applies(c, a.name, "0.12.8") for c in cases.values() for a in ALL if not a.fast), e.id


def test_flax_offset_sweep_expands():
    names = [c.name for c in load_cases([REPO / "cases" / "flax.toml"])]
    assert names == [f"flax_offset_{v}" for v in ("1", "10", "100", "1000", "10000", "100000")]


BLOCKED = textwrap.dedent(f"""
    import importlib.abc, sys
    BLOCK = {FRAMEWORKS!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCK:
                raise ImportError(f"{{name}} is blocked")

    sys.meta_path.insert(0, Block())
    from harness.adapters.flax_adapter import LINEN, LINEN_TWOPASS, NNX, NNX_TWOPASS
    from harness.cases import Case
    c = Case.model_validate({{"name": "c", "shape": [4, 3, 2, 2], "momentum": 0.25, "layout": "channels_last"}})
    for a in (LINEN, LINEN_TWOPASS, NNX, NNX_TWOPASS):
        assert a.supports(c) is None, a.name
        assert a.settings(c)["axis"] == -1 and abs(a.settings(c)["momentum"] - 0.75) < 1e-12
        a.effective(c), a.versions(), a.conventions.as_dict()
    assert not set(BLOCK) & {{m.split(".")[0] for m in sys.modules}}
    print("ok")
""")


def test_adapters_work_without_jax_or_flax_importable():
    out = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
