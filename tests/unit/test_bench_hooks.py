"""The benchmark hooks of the Keras, TensorFlow and Flax adapters, with no framework needed.

What runs here is declarations and the parent-side device probe: the timed callables themselves
are exercised by ``bnparity bench --quick`` where the frameworks are installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.adapters import flax_adapter, keras3, tf_keras, tf_raw
from harness.adapters.base import BenchHooks

REPO = Path(__file__).resolve().parents[2]

VARIANTS = {
    keras3.TENSORFLOW: ("eager", "jit"),
    keras3.JAX: ("jit",),
    keras3.TORCH: ("eager",),
    tf_keras.FUSED: ("eager", "tf.function"),
    tf_keras.NONFUSED: ("eager", "tf.function"),
    tf_raw.RAW: ("eager", "tf.function"),
    tf_raw.FUSED: ("eager", "tf.function"),
    flax_adapter.LINEN: ("jit",),
    flax_adapter.LINEN_TWOPASS: ("jit",),
    flax_adapter.NNX: ("jit",),
    flax_adapter.NNX_TWOPASS: ("jit",),
}


@pytest.mark.parametrize("adapter", list(VARIANTS), ids=lambda a: a.name)
def test_each_adapter_declares_the_variants_its_users_run(adapter):
    assert tuple(adapter.bench_variants) == VARIANTS[adapter]
    assert isinstance(adapter, BenchHooks)


def test_undeclared_variants_are_refused_before_any_framework_is_imported():
    # a child interpreter: other tests in this process may have imported a framework already
    code = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
from harness.adapters import flax_adapter, keras3, tf_keras, tf_raw
from harness.cases import Case
case = Case.model_validate({{"name": "c", "shape": [8, 3, 4, 4]}})
adapters = [keras3.TENSORFLOW, keras3.JAX, keras3.TORCH, tf_keras.FUSED, tf_keras.NONFUSED, tf_raw.RAW,
            tf_raw.FUSED, flax_adapter.LINEN, flax_adapter.NNX]
refused = {{a.name: a.bench_callable(case, None, "train_fwd", v, "cpu") is None
           for a in adapters for v in ("compile", "graph") if v not in a.bench_variants}}
refused["keras3-jax:eager"] = keras3.JAX.bench_callable(case, None, "train_fwd", "eager", "cpu") is None
devices = list(keras3.JAX.bench_devices())  # its worker pins JAX to the CPU: no probe
imported = sorted(m for m in ("tensorflow", "jax", "torch", "keras", "flax", "tf_keras") if m in sys.modules)
print(json.dumps({{"refused": refused, "devices": devices, "imported": imported}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["refused"] and all(out["refused"].values())
    assert out["devices"] == []
    assert out["imported"] == []


def test_gpu_probe_never_imports_the_framework_in_the_calling_process():
    # JAX would preallocate most of a GPU's memory for the bench driver, which never computes
    code = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from harness.adapters import devices, flax_adapter
print(flax_adapter.NNX.bench_devices(), devices.gpu_visible("no_such_framework"), "jax" in sys.modules)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr
    devices, unknown, imported = res.stdout.strip().splitlines()[-1].rsplit(" ", 2)
    assert devices in ("()", "('gpu',)") and unknown == "False" and imported == "False"
