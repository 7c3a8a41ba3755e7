"""The TensorFlow and Keras graph, compiled and exported paths (harness.adapters.tf_paths, tf_export).

Without frameworks: each path adapter is registered, names an eager adapter it starts from and shares its
conventions, and declares only quantities that exist. With TensorFlow (marker ``frameworks``): the hook really runs
the step as asked (an XLA program is not the eager one: it shows XLA's own arithmetic, the mean as a product with
the reciprocal of the count), a hand-written step's running update made inside the compiled step lands in the
variables once, and the compile time is reported apart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from harness.adapters import tf_export, tf_paths
from harness.adapters.base import PATHS, load_spec
from harness.schema import Quantity

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["bnparity.adapters"]
PATH_ADAPTERS = [tf_paths.KERAS3_TF_XLA, tf_paths.TF_KERAS_FUSED_XLA, tf_paths.TF_KERAS_NONFUSED_XLA,
                 tf_paths.TF_RAW_FUNCTION, tf_paths.TF_RAW_XLA, tf_paths.TF_FUSED_XLA, tf_export.ONNXRUNTIME,
                 tf_export.LITERT]


@pytest.mark.parametrize("adapter", PATH_ADAPTERS, ids=lambda a: a.name)
def test_each_path_is_registered_and_starts_from_a_registered_eager_adapter(adapter):
    assert load_spec(ENTRY_POINTS[adapter.name]) is adapter
    assert adapter.path in PATHS and adapter.path != "eager"
    source = load_spec(ENTRY_POINTS[adapter.source])
    assert source.path == "eager"
    assert (source.framework, source.conventions) == (adapter.framework, adapter.conventions)
    assert set(adapter.omits) <= {q.value for q in Quantity}


def test_graph_and_compiled_paths_differ_only_in_jit_compile():
    assert {a.name: (a.path, a.jit_compile) for a in PATH_ADAPTERS[:6]} == {
        "keras3-tensorflow-xla": ("compiled", True), "tf-keras-fused-xla": ("compiled", True),
        "tf-keras-nonfused-xla": ("compiled", True), "tf-raw-function": ("graph", False),
        "tf-raw-xla": ("compiled", True), "tf-fused-xla": ("compiled", True)}
    assert {a.name: a.omits for a in PATH_ADAPTERS[6:]} == {n: tf_export.OMITS for n in (
        "keras3-tensorflow-onnxruntime", "keras3-tensorflow-litert")}


PROBE = textwrap.dedent("""
    import numpy as np
    from harness.adapters.tf_support import setup_tf, tape_call
    from harness.adapters import tf_paths
    from harness.adapters.tf_raw import RAW
    from harness.cases import Case
    from harness.inputs import build

    tf = setup_tf()
    # a constant channel of 7 values: TensorFlow's Mean kernel divides the sum by 7 (exactly -1000); XLA multiplies it
    # by the float32 reciprocal of 7, one ulp off, so x - mean is not 0 and a tiny eps makes it visible in y
    x = np.full((7, 1), -1000.0, np.float32)
    g = np.ones((7, 1), np.float32)

    def forward(xt):
        mean, var = tf.nn.moments(xt, [0])
        return (tf.nn.batch_normalization(xt, mean, var, None, None, 1e-8),)

    wrapped = []

    def counting(wrap):
        def outer(step):
            wrapped.append(step)
            return wrap(step)
        return outer

    eager = tape_call(forward, x, g, {}).out["y"]
    graph = tape_call(forward, x, g, {}, wrap=counting(tf_paths.TF_RAW_FUNCTION.tf_step())).out["y"]
    xla = tape_call(forward, x, g, {}, wrap=counting(tf_paths.TF_RAW_XLA.tf_step())).out["y"]
    assert len(wrapped) == 2
    assert not eager.any() and not graph.any(), (eager, graph)
    assert np.abs(xla).min() > 0.1, xla

    # the running update is part of the compiled step: after one train call, tf-raw-xla's variables hold what tf-raw's
    # eager step stores (to float32 rounding) and differ from the initial ones
    case = Case.model_validate({"name": "c", "shape": [6, 3, 2], "steps": 1, "seed": 5})
    data = build(case)
    eager_out = RAW.run(case, data)
    xla_out = tf_paths.TF_RAW_XLA.run(case, data)
    assert eager_out.raised is None and xla_out.raised is None, (eager_out.raised, xla_out.raised)
    for q in ("running_mean", "running_var"):
        a, b = eager_out.arrays[(q, 0)], xla_out.arrays[(q, 0)]
        assert not np.array_equal(b, getattr(data, q)), q
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    # (the step is run twice to time its compile apart, the variables put back in between: a second update would
    # have moved them again.) Every call is one program, its compile part of the case's time
    info = xla_out.info
    assert info["compiles"] == len(case.schedule) >= 2, info
    assert 0 < info["compile_s"] <= info["compute_s"], info
    print("ok")
""")


@pytest.mark.frameworks
def test_the_hook_runs_the_step_as_a_graph_or_an_xla_program_with_the_update_inside():
    pytest.importorskip("tensorflow")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
