"""Convention translation of the Keras / TensorFlow adapters, with no framework needed.

The adapter modules import their frameworks inside methods only, so everything checked here
(momentum, eps, axis, dtype policy, which cases each path supports, worker environments)
runs where TensorFlow, Keras, JAX and torch are all missing.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import pytest
from packaging.version import Version

from harness.adapters import keras3, tf_keras, tf_raw, tf_support
from harness.cases import Case

KERAS_LIKE = [keras3.TENSORFLOW, keras3.JAX, keras3.TORCH, tf_keras.FUSED, tf_keras.NONFUSED, tf_raw.RAW]
ALL = [*KERAS_LIKE, tf_raw.FUSED]
FRAMEWORKS = ("tensorflow", "keras", "tf_keras", "jax", "jaxlib", "torch")


def case(**kw) -> Case:
    body = {"name": "c", "shape": [8, 3, 4, 4]}
    body.update(kw)
    return Case.model_validate(body)


def test_names_match_the_entry_points():
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="bnparity.adapters")}
    by_attr = {"harness.adapters.keras3:TENSORFLOW": keras3.TENSORFLOW, "harness.adapters.keras3:JAX": keras3.JAX,
               "harness.adapters.keras3:TORCH": keras3.TORCH, "harness.adapters.tf_keras:FUSED": tf_keras.FUSED,
               "harness.adapters.tf_keras:NONFUSED": tf_keras.NONFUSED, "harness.adapters.tf_raw:RAW": tf_raw.RAW,
               "harness.adapters.tf_raw:FUSED": tf_raw.FUSED}
    for spec, adapter in by_attr.items():
        assert eps.get(adapter.name) == spec


@pytest.mark.parametrize("adapter", KERAS_LIKE, ids=lambda a: a.name)
def test_keras_momentum_is_the_decay_of_the_old_value(adapter):
    c = case(momentum=0.1, eps=1e-5)
    m = adapter.mapped(c)
    assert adapter.conventions.momentum_style == "decay_of_old"
    assert m.momentum == pytest.approx(0.9)
    assert m.eps == 1e-5
    momentum, eps = adapter.effective(c)
    assert momentum == pytest.approx(0.1) and eps == 1e-5
    assert adapter.mapped(case(momentum=0.0)).momentum == 1.0  # never update
    assert adapter.mapped(case(momentum=1.0)).momentum == 0.0  # replace with the batch statistic


def test_fused_op_momentum_is_the_weight_of_the_new_statistic():
    m = tf_raw.FUSED.mapped(case(momentum=0.1, eps=1e-4))
    assert tf_raw.FUSED.conventions.momentum_style == "weight_of_new"
    assert (m.momentum, m.eps) == (0.1, 1e-4)


@pytest.mark.parametrize("adapter", KERAS_LIKE, ids=lambda a: a.name)
def test_keras_defaults(adapter):
    m = adapter.mapped(case(use_defaults=True, momentum=0.3, eps=0.5))
    assert (m.momentum, m.eps) == (0.99, 1e-3)
    assert adapter.effective(case(use_defaults=True))[0] == pytest.approx(0.01)
    assert adapter.conventions.native_layout == "channels_last"


def test_fused_op_defaults_are_the_wrappers():
    # tf.compat.v1.nn.fused_batch_norm(epsilon=0.001, exponential_avg_factor=1.0): replace, not average
    m = tf_raw.FUSED.mapped(case(use_defaults=True))
    assert (m.momentum, m.eps) == (1.0, 1e-3)
    assert tf_raw.FUSED.effective(case(use_defaults=True)) == (1.0, 1e-3)


def test_running_variance_estimators():
    for a in (keras3.TENSORFLOW, keras3.JAX, keras3.TORCH, tf_keras.NONFUSED, tf_raw.RAW):
        assert a.conventions.running_var_estimator == "biased", a.name
    for a in (tf_keras.FUSED, tf_raw.FUSED):
        assert a.conventions.running_var_estimator == "unbiased_guarded", a.name
    assert all(a.conventions.single_value_training == "computes" for a in ALL)


@pytest.mark.parametrize("shape", [[8, 3], [8, 3, 5], [8, 3, 4, 4], [2, 3, 2, 2, 2]])
def test_axis_follows_the_physical_layout(shape):
    first, last = case(shape=shape), case(shape=shape, layout="channels_last")
    assert keras3.keras_axis(first) == 1
    assert keras3.keras_axis(last) == -1
    for a in KERAS_LIKE:
        assert a.settings(first)["axis"] == 1 and a.settings(last)["axis"] == -1


def test_fused_data_format():
    assert tf_raw.FUSED.settings(case())["data_format"] == "NCHW"
    assert tf_raw.FUSED.settings(case(layout="channels_last"))["data_format"] == "NHWC"
    assert tf_raw.FUSED.settings(case(shape=[2, 3, 2, 2, 2]))["data_format"] == "NCDHW"
    assert tf_raw.FUSED.settings(case(shape=[2, 3, 2, 2, 2], layout="channels_last"))["data_format"] == "NDHWC"


def test_dtype_policy_is_what_a_user_sets():
    assert keras3.dtype_policy(case(dtype="float32")) == "float32"
    assert keras3.dtype_policy(case(dtype="float64")) == "float64"
    assert keras3.dtype_policy(case(dtype="float16")) == "mixed_float16"
    assert keras3.dtype_policy(case(dtype="bfloat16")) == "mixed_bfloat16"
    assert keras3.dtype_policy(case(dtype="float16", param_dtype="float16")) == "float16"
    assert keras3.dtype_policy(case(dtype="float32", param_dtype="float64")) is None
    assert "dtype policy" in keras3.TENSORFLOW.supports(case(dtype="float32", param_dtype="float64"))


def test_fused_paths_skip_what_the_kernel_cannot_take():
    for shape in ([8, 3], [8, 3, 5]):
        assert "4D or 5D" in tf_keras.FUSED.supports(case(shape=shape))
        assert "4D or 5D" in tf_raw.FUSED.supports(case(shape=shape))
        assert tf_keras.NONFUSED.supports(case(shape=shape)) is None
    for shape in ([8, 3, 4, 4], [2, 3, 2, 2, 2]):
        for layout in ("channels_first", "channels_last"):
            assert tf_keras.FUSED.supports(case(shape=shape, layout=layout)) is None
            assert tf_raw.FUSED.supports(case(shape=shape, layout=layout)) is None
    assert "compute dtype is float16, bfloat16, or float32" in tf_keras.FUSED.supports(case(dtype="float64"))
    assert "attr 'U' of double" in tf_raw.FUSED.supports(case(dtype="float64"))
    # a case that expects the raise runs, so the raise is checked (and a TF that adds float64 is noticed)
    expecting = case(dtype="float64", expect_raise={"tf-fused": {"type": "InvalidArgumentError"}})
    assert tf_raw.FUSED.supports(expecting) is None


def test_fused_refusals_are_the_dtype_pairs_tensorflow_refuses():
    """FusedBatchNormV3 on CPU runs float16/bfloat16/float32 input with float32 parameters, nothing else."""
    dtypes = ("float16", "bfloat16", "float32", "float64")
    runs = {(x, p) for x in dtypes for p in dtypes if tf_raw.FUSED.refusal(case(dtype=x, param_dtype=p)) is None}
    assert runs == {("float16", "float32"), ("bfloat16", "float32"), ("float32", "float32")}
    assert tf_raw.FUSED.refusal(case(dtype="float32", param_dtype="bfloat16")).type == "NotFoundError"
    assert "attr 'T' of double" in tf_raw.FUSED.supports(case(dtype="float64", param_dtype="float32"))
    assert tf_raw.RAW.refuses == () and tf_keras.NONFUSED.refuses == ()


@pytest.mark.parametrize("adapter", ALL, ids=lambda a: a.name)
def test_modes_no_keras_or_tf_path_has(adapter):
    assert "cumulative" in adapter.supports(case(momentum="cumulative"))
    assert adapter.supports(case(track_running_stats=False)) is not None
    assert adapter.supports(case(contiguous=False)) is None  # same values; no strides to vary


def test_worker_environments(monkeypatch):
    for a, backend in ((keras3.TENSORFLOW, "tensorflow"), (keras3.JAX, "jax"), (keras3.TORCH, "torch")):
        assert a.worker_env["KERAS_BACKEND"] == backend
        assert a.framework == "keras"
    assert keras3.JAX.worker_env["JAX_ENABLE_X64"] == "1"
    for a in (tf_keras.FUSED, tf_keras.NONFUSED):
        assert a.framework == "tf-keras"
        # tf-keras provides Keras 2: route tf.keras to it; TF <= 2.15's own Keras 2: leave it alone
        monkeypatch.setattr(tf_keras, "keras2_distribution", lambda: "tf-keras")
        assert a.worker_env["TF_USE_LEGACY_KERAS"] == "1"
        monkeypatch.setattr(tf_keras, "keras2_distribution", lambda: "keras")
        assert "TF_USE_LEGACY_KERAS" not in a.worker_env
    assert tf_raw.RAW.framework == tf_raw.FUSED.framework == "tensorflow"
    assert all(a.worker_env["TF_CPP_MIN_LOG_LEVEL"] == "3" for a in ALL)


def test_tensorflow_version_is_pep440_whichever_distribution_ships_it():
    version = tf_raw.RAW.framework_version()
    if version is None:
        assert tf_support.tf_distribution() is None
        return
    Version(version)
    assert tf_raw.RAW.versions() == {tf_support.tf_distribution(): version}


BLOCKED = textwrap.dedent(f"""
    import importlib.abc, sys
    BLOCK = {FRAMEWORKS!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCK:
                raise ImportError(f"{{name}} is blocked")

    sys.meta_path.insert(0, Block())
    from harness.adapters import keras3, tf_keras, tf_raw
    from harness.cases import Case
    c = Case.model_validate({{"name": "c", "shape": [4, 3, 2, 2], "momentum": 0.25}})
    for a in (keras3.TENSORFLOW, keras3.JAX, keras3.TORCH, tf_keras.FUSED, tf_keras.NONFUSED, tf_raw.RAW, tf_raw.FUSED):
        assert a.supports(c) is None, a.name
        a.settings(c), a.effective(c), a.versions(), a.conventions.as_dict()
    assert not set(BLOCK) & {{m.split(".")[0] for m in sys.modules}}
    print("ok")
""")


def test_adapters_work_without_any_framework_importable():
    out = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
