"""The comparison and its mismatch message, pinned as snapshots: a person reads these numbers."""

from __future__ import annotations

import warnings

import numpy as np

from harness.compare import compare, describe
from harness.expected import Expected
from harness.schema import MismatchKind


def _exp(values, tol, dtype="float32") -> Expected:
    return Expected(np.asarray(values, dtype=np.float64), np.asarray(tol, dtype=np.float64), dtype)


def test_worst_element_states_its_own_difference():
    """The worst element by error/bound is index 1; the largest |diff| is at index 0 (within its bound there).
    The message once printed index 0's |diff| (0.5) next to index 1's values."""
    m = compare(_exp([100.0, 1.0], [1.0, 1e-3]), np.array([100.5, 1.01]))
    assert m.worst_index == [1] and m.mismatched == 1
    assert describe("y of call 0 (train)", m, "float32") == (
        "y of call 0 (train): values differ\n"
        "  Mismatched elements: 1 / 2 (50.0%)\n"
        "  Worst element (largest error over its bound) at index (1,): expected 1, observed 1.01 "
        "(|diff| 0.01, up to 0.001 allowed there)\n"
        "  Greatest absolute difference: 0.01 at index (1,); greatest relative difference: 0.01 at index (1,) "
        "(over the mismatched elements)\n"
        "  Largest error over all elements: 65536 ulp of float32 at the quantity's scale (|diff| 0.5)")


def test_greatest_differences_are_over_mismatches_each_with_its_index():
    # index 0: large allowed diff; index 1: largest absolute mismatch; index 2: largest relative mismatch
    e, tol = [1000.0, 10.0, 1e-3], [10.0, 1e-3, 1e-6]
    o = [1005.0, 10.5, 2e-3]
    m = compare(_exp(e, tol), np.array(o))
    assert m.mismatched == 2
    assert (m.greatest_abs_diff, m.greatest_abs_index) == (0.5, [1])
    assert m.greatest_rel_index == [2] and np.isclose(m.greatest_rel_diff, 1.0)
    assert m.max_abs_err == 5.0  # over every element, as the matrix shows it
    text = describe("dx of call 1 (train)", m, "float32")
    assert "Greatest absolute difference: 0.5 at index (1,); greatest relative difference: 1 at index (2,)" in text


def test_nan_at_the_worst_element_is_nan_not_missing():
    m = compare(_exp([1.0, 2.0], [1e-3, 1e-3]), np.array([1.0, np.nan]))
    assert m.mismatch_kind == MismatchKind.NAN and m.worst_index == [1]
    assert m.expected == 2.0 and np.isnan(m.observed) and m.nan_observed == 1
    assert describe("y (eval)", m, "float32").splitlines()[:3] == [
        "y (eval): NaN where the oracle is finite",
        "  Mismatched elements: 1 / 2 (50.0%)",
        "  Worst element (largest error over its bound) at index (1,): expected 2, observed nan "
        "(|diff| n/a, up to 0.001 allowed there)"]


def test_any_non_finite_value_agrees_where_the_oracle_is_undefined():
    """eps = 0 on a constant channel: 0/0 is NaN in the oracle; a float32 x - mean that is not exactly 0 gives
    +-inf. Both are the undefined answer (once reported as 'finite value where the oracle is NaN', '0 ulp')."""
    m = compare(_exp([np.nan, np.nan, np.nan, 1.0], [np.nan] * 3 + [1e-3]), np.array([np.inf, -np.inf, np.nan, 1.0]))
    assert m.ok, m


def test_a_finite_value_where_the_oracle_is_undefined():
    m = compare(_exp([np.nan, 1.0], [np.nan, 1e-3]), np.array([0.5, 1.0]))
    assert m.mismatch_kind == MismatchKind.FINITE_WHERE_NAN and m.worst_index == [0]
    assert np.isnan(m.expected) and m.observed == 0.5
    text = describe("y of call 0 (train)", m, "float32")
    assert text.startswith("y of call 0 (train): a finite value where the oracle is undefined (NaN)")
    assert "Largest error over the elements finite in both" in text


def test_an_infinity_where_the_oracle_is_finite():
    m = compare(_exp([2.0, 1.0], [1e-3, 1e-3]), np.array([-np.inf, 1.0]))
    assert m.mismatch_kind == MismatchKind.INF and m.worst_index == [0]
    assert describe("dx", m, "float32").startswith("dx: an infinity where the oracle is finite, or the other infinity")


def test_all_nan_expectation_warns_nothing():
    """An all-NaN oracle (eps = 0 on a constant channel) once printed 'All-NaN slice encountered' on every run."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compare(_exp([np.nan, np.nan], [np.nan, np.nan]), np.array([np.nan, np.nan]))
    assert m.ok and m.nan_expected == 2 and m.nan_observed == 2


def test_shape_mismatch():
    m = compare(_exp([1.0, 2.0], [1e-3, 1e-3]), np.zeros((2, 1)))
    assert not m.ok and describe("dgamma", m, "float32") == "dgamma: shape differs: expected (2,), observed (2, 1)"


def test_a_match_has_no_mismatch_fields():
    m = compare(_exp([1.0, -2.0], [1e-3, 1e-3]), np.array([1.0005, -2.0]))
    assert m.ok and m.mismatch_kind == MismatchKind.MATCH and m.greatest_abs_diff is None
    assert m.worst_index == [0] and np.isclose(m.max_abs_err, 5e-4) and 0 < m.error_ratio < 1


def test_a_value_beyond_the_dtype_range_accepts_its_infinity_or_a_finite_value_within_the_bound():
    """The exact value 70000 is beyond float16's range: its stored form is inf, and a computation whose bound
    reaches back inside the range may also round to a large finite value (bnparity fuzz found both on TF's fused
    kernel); a finite value outside the bound, NaN or the other infinity still differ."""
    exp = Expected(np.array([-70000.0, 1.0]), np.array([1e4, 1e-3]), "float16")
    for obs, ok in (([-np.inf, 1.0], True), ([-63104.0, 1.0], True), ([-65504.0, 1.0], True),
                    ([-50000.0, 1.0], False), ([np.inf, 1.0], False), ([np.nan, 1.0], False)):
        m = compare(exp, np.array(obs, dtype=np.float16))
        assert m.ok == ok, (obs, m.mismatch_kind)
