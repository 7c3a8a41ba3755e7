"""The declared precision as the report sees it, with no framework needed: ``settings(case)["precision"]`` is
``Adapter.precision(case)`` for every registered adapter, and the declarations that differ from the default
(``Precision.of``) say what their adapters' docstrings and sources say (``test_declared_precision`` checks the
returned dtypes on the real frameworks)."""

from __future__ import annotations

import pytest

from harness.adapters.base import Precision, discover, load_spec
from harness.adapters.flax_adapter import LINEN, NNX
from harness.adapters.tf_keras import FUSED as TFK_FUSED
from harness.adapters.tf_keras import NONFUSED as TFK_NONFUSED
from harness.adapters.tf_raw import RAW
from harness.adapters.torch_adapter import ADAPTER as TORCH
from harness.cases import Case


def case(**kw) -> Case:
    return Case.model_validate({"name": "c", "shape": [8, 3, 2, 2], **kw})


POLICY_CASES = [case(dtype=dt, precision=p) for dt in ("float16", "bfloat16") for p in ("pure", "mixed")]


@pytest.mark.parametrize("name", sorted(discover()))
def test_settings_carry_the_declared_precision(name):
    adapter = load_spec(discover()[name])
    for c in [*POLICY_CASES, case(), case(dtype="float64")]:
        assert adapter.settings(c)["precision"] == adapter.precision(c).as_dict()


def test_torch_pure_holds_the_batch_statistics_in_the_parameter_dtype():
    for c in POLICY_CASES:
        p = TORCH.precision(c)
        assert p.held == (c.dtype if c.precision == "pure" else "float32")
        assert p.statistics == p.normalize == "float32" and p.running == p.params == c.resolved_param_dtype


def test_tf_raw_computes_in_the_input_dtype():
    for c in POLICY_CASES:
        p = RAW.precision(c)
        assert p.statistics == ("float32" if c.dtype == "float16" else "bfloat16")
        assert p.held == p.normalize == p.output == c.dtype and p.running == c.resolved_param_dtype


def test_tf_keras_has_no_pure_16_bit_variables():
    for adapter in (TFK_FUSED, TFK_NONFUSED):
        for c in POLICY_CASES:
            assert adapter.precision(c) == Precision("float32", "float32", "float32", "float32", "float32", c.dtype)


def test_flax_policies_and_batch_stats():
    for adapter in (LINEN, NNX):
        for c in POLICY_CASES:
            flags = adapter.settings(c)["training_flags"]
            assert flags["dtype"] == c.dtype and flags["param_dtype"] == c.resolved_param_dtype
            assert flags["batch_stats_dtype"] == "float32" == adapter.precision(c).running
        assert adapter.settings(case())["training_flags"]["dtype"] is None  # float32: inferred, as users leave it
        assert adapter.settings(case(dtype="float32", param_dtype="float16"))["training_flags"]["dtype"] is None
    assert LINEN.precision(case(dtype="float64")).running == "float64"  # the first update promotes linen's
    assert NNX.precision(case(dtype="float64")).running == "float32"  # nnx casts the update back to float32
    mixed = case(dtype="float16", precision="mixed")
    assert LINEN.precision(mixed).params == "float32" and NNX.precision(mixed).params == "float16"
