"""The weak tier: a careless but correct BN comes out weak (or fails) where it loses digits a stable BN keeps,
and a careful one stays pass. Fakes from tests/fakes.py, run in-process through the real runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cases import load_cases
from harness.runner import run_cell
from harness.schema import Result, Verdict
from harness.stable import WEAK_FACTOR
from harness.workers import Workers
from tests import fakes

# Cases written for this test (none is in the catalogue): each shows one mechanism where it costs digits.
CASES = """
[[case]]
name = "constant_2e5"
shape = [8, 3, 2, 2]
input = { kind = "constant", value = 2e5 }
steps = 1
seed = 1

[[case]]
name = "batch1_offset_300"
shape = [1, 4]
input = { kind = "normal", loc = 300.0, scale = 50.0 }
steps = 1
seed = 5

[[case]]
name = "narrow_offset_3e3"
shape = [96, 2]
input = { kind = "normal", loc = 3e3, scale = 0.02 }
steps = 1
seed = 2

[[case]]
name = "many_values"
shape = [64, 2, 40, 40]
input = { kind = "uniform", low = 0.0, high = 1.0 }
steps = 1
seed = 3

[[case]]
name = "plain"
shape = [32, 4]
steps = 2
seed = 4
"""

# the mechanism, the case where it must show, and a quantity it must make weak or fail there
EXPECT = [
    (fakes.FoldedAffine, "constant_2e5", "y"),
    (fakes.FoldedAffine, "batch1_offset_300", "y"),
    (fakes.SequentialSums, "many_values", "dgamma"),
    (fakes.FastVariance, "narrow_offset_3e3", "dx"),
]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weak-cases")
    (folder / "c.toml").write_text(CASES)
    return {c.name: c for c in load_cases([folder])}


def _records(adapter, case, tmp_path: Path) -> list[Result]:
    workers = Workers(tmp_path / "logs", in_process=True)
    res = run_cell(case, adapter, f"tests.fakes:{type(adapter).__name__}", workers, env="weak", ledger=[],
                   timeout=600, repro="")
    return [r for r in res.records if isinstance(r, Result) and r.quantity is not None and r.quantity != "outcome"]


@pytest.mark.parametrize("cls,case,quantity", EXPECT, ids=lambda v: getattr(v, "name", str(v)))
def test_a_careless_bn_is_weak_where_it_loses_digits(cls, case, quantity, cases, tmp_path):
    recs = [r for r in _records(cls(), cases[case], tmp_path) if r.quantity == quantity]
    assert recs
    flagged = [r for r in recs if r.verdict in (Verdict.WEAK, Verdict.FAIL)]
    assert flagged, [(r.verdict, r.error_ratio, r.weak_ratio) for r in recs]
    weak = [r for r in flagged if r.verdict == Verdict.WEAK]
    for r in weak:  # within the bound, with the ratio in the record and the message
        assert r.error_ratio <= 1 and r.weak_ratio > WEAK_FACTOR and f"{r.weak_ratio:.3g}x" in r.message


@pytest.mark.parametrize("cls", [fakes.FoldedAffine, fakes.SequentialSums, fakes.FastVariance])
def test_where_the_input_is_well_conditioned_the_careless_bn_passes(cls, cases, tmp_path):
    """Weak names a loss of digits, not an algorithm: on unit data with few values all three are as good."""
    verdicts = {r.verdict for r in _records(cls(), cases["plain"], tmp_path)}
    assert verdicts == {Verdict.PASS}


def test_the_careful_bn_is_never_weak_here(cases, tmp_path):
    for case in cases.values():
        recs = _records(fakes.NumpyBN(), case, tmp_path)
        assert {r.verdict for r in recs} == {Verdict.PASS}, case.name
        assert max(r.weak_ratio for r in recs if r.weak_ratio is not None) < WEAK_FACTOR
