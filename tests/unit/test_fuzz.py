"""``bnparity fuzz``: a planted bug is found and shrunk to a small ready case within a small budget, the careful
fake yields no finding, and a re-run replays the finding from Hypothesis's database first. Fakes in-process:
no framework needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import fuzz
from harness.cases import load_file
from harness.results import read

pytest.importorskip("hypothesis")
pytest.importorskip("tomli_w")


def _fuzz(tmp_path: Path, monkeypatch, adapters: str, *args: str) -> tuple[int, Path]:
    monkeypatch.setenv("BNPARITY_ADAPTERS", "tests.fakes:MomentumFlipped,tests.fakes:NumpyBN")
    out = tmp_path / "findings"
    rc = fuzz.main(["--adapters", adapters, "--out", str(out), "--in-process", "--seed", "3", *args])
    return rc, out


def test_a_planted_bug_is_found_and_shrunk_to_a_ready_case(tmp_path, monkeypatch, capsys):
    rc, out = _fuzz(tmp_path, monkeypatch, "bug-momentum-flipped", "--max-examples", "40", "--db",
                    str(tmp_path / "db"))
    assert rc == 1
    cases = sorted(out.glob("*/case.toml"))
    # found where it starts (a running statistic), not in every quantity it spoils downstream (the eval outputs)
    names = [p.parent.name for p in cases]
    assert "fuzz_bug_momentum_flipped_running_mean_fail_value" in names
    assert set(names) <= {"fuzz_bug_momentum_flipped_running_mean_fail_value",
                          "fuzz_bug_momentum_flipped_running_var_fail_value"}, names
    (case,) = load_file(cases[names.index("fuzz_bug_momentum_flipped_running_mean_fail_value")])  # a ready case
    assert case.adapters == ("bug-momentum-flipped",) and "fuzz" in case.tags
    assert case.count * case.channels <= 4 and case.steps == 1  # shrunk: one small training step shows it
    assert "seed 3" in case.description and "running_mean after call 0 (train)" in case.description
    assert "momentum" in (cases[0].parent / "repro.py").read_text()
    rf = read(out / "results.jsonl")  # the report reads the findings as an environment
    assert rf.header.status == "complete" and not rf.skipped
    assert {r.case for r in rf.records} == set(names)
    assert any(getattr(r, "verdict", None) == "fail" and r.quantity == "running_mean" for r in rf.records)
    # a re-run replays the finding from the database before it draws anything new
    first = capsys.readouterr().out
    rc2, out2 = _fuzz(tmp_path, monkeypatch, "bug-momentum-flipped", "--max-examples", "1", "--db",
                      str(tmp_path / "db"), "--out", str(tmp_path / "again"))
    again = capsys.readouterr().out
    assert rc2 == 1 and "running_mean.fail.value" in again and "running_mean.fail.value" in first


def test_the_careful_bn_yields_no_finding(tmp_path, monkeypatch):
    rc, out = _fuzz(tmp_path, monkeypatch, "fake-good", "--max-examples", "60", "--db", "none")
    assert rc == 0 and not list(out.glob("*/case.toml"))
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == "complete"


def test_drawn_cases_are_valid_and_varied():
    from hypothesis import given, settings

    seen = set()
    ghost = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(fuzz.case_bodies())
    def draw(body):
        case = fuzz.to_case(body)
        seen.add((case.rank, case.dtype, case.layout, case.policy))
        if case.virtual_batch_size is not None:
            ghost.add(case.groups > 1)

    draw()
    assert {r for r, *_ in seen} == {2, 3, 4, 5}
    assert {d for _, d, *_ in seen} == {"float16", "bfloat16", "float32", "float64"}
    assert {p for *_, p in seen} >= {"pure", "mixed"}
    assert ghost == {True, False}  # virtual batches, one group (v = N) and several
