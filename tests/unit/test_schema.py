"""The results data model: one vocabulary, a versioned format, and a JSON Schema tools outside Python can use."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from harness import results
from harness.schema import SCHEMA_VERSION, Header, Quantity, Result, SchemaError, Verdict, dumps, json_schema, parse

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "docs" / "results.schema.json"
CASES = """
[[case]]
name = "c1"
shape = [6, 3]
seed = 1
[[case]]
name = "fault_target"
shape = [2, 3, 4]
seed = 2
"""


def test_the_shipped_json_schema_is_generated_from_the_models():
    assert json.loads(SHIPPED.read_text()) == json_schema(), "regenerate: python -m harness.schema > " \
                                                             "docs/results.schema.json"


def test_a_real_results_file_validates_against_the_json_schema(run_parity):
    run = run_parity(CASES, ["NumpyBN", "MomentumFlipped", "Raises"])
    validator = jsonschema.Draft202012Validator(json.loads(SHIPPED.read_text()))
    kinds = set()
    for line in run.lines:
        obj = json.loads(line)
        validator.validate(obj)
        kinds.add(obj["kind"])
    assert kinds == {"header", "result", "cell"}
    assert any(r.verdict == Verdict.FAIL for r in run.results()) and any(r.verdict == Verdict.RAISED
                                                                         for r in run.results())


def test_verdict_order_and_failing_set():
    assert [v.value for v in Verdict.ordered()] == ["pass", "skip", "weak", "expected-raise", "known", "stale",
                                                    "fail", "raised", "timeout", "crashed"]
    assert {v for v in Verdict if v.fails_run} == {Verdict.FAIL, Verdict.STALE, Verdict.RAISED, Verdict.TIMEOUT,
                                                   Verdict.CRASHED}
    assert Verdict.worst(["pass", "weak"]) == Verdict.WEAK and Verdict.worst(["weak", "known"]) == Verdict.KNOWN
    assert Verdict.worst([]) == Verdict.PASS and Verdict.worst(["known", "stale", "skip"]) == Verdict.STALE
    with pytest.raises(ValueError):
        Verdict.worst(["pass", "mystery"])  # an unknown verdict is an error, never silently a pass
    assert [q.value for q in Quantity.of_phase("train")] == ["running_mean", "running_var", "y", "dx", "dgamma",
                                                             "dbeta", "hvp_x", "hvp_gamma"]
    assert Quantity.DX_EVAL.label() == "dx (eval)" and Quantity.Y.label(0) == "y of call 0 (train)"


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


RESULT = {"kind": "result", "env": "e", "case": "c", "adapter": "a", "framework": "f", "quantity": "y", "step": 0,
          "verdict": "pass"}


def test_a_newer_schema_is_refused_naming_the_file(tmp_path):
    p = _write(tmp_path / "results.jsonl", [{"kind": "header", "schema_version": SCHEMA_VERSION + 1, "env": "e"},
                                            {**RESULT, "verdict": "some-future-verdict"}])
    with pytest.raises(SchemaError, match=rf"{p}: written with results schema {SCHEMA_VERSION + 1}"):
        results.read(p)


def test_a_damaged_line_costs_that_line_only(tmp_path):
    """Results files are exchanged between machines: each bad line is skipped, named, and the rest is read."""
    p = tmp_path / "results.jsonl"
    lines = [json.dumps(Header(env="e").to_json_dict()), json.dumps(RESULT), json.dumps({**RESULT, "step": "two"}),
             "[1, 2, 3]", '"hello"', "null", json.dumps({**RESULT, "verdict": 3}),
             json.dumps({**RESULT, "quantity": None}), "{not json", json.dumps({"kind": "mystery"}),
             json.dumps({**RESULT, "case": "ok2"})]
    p.write_text("\n".join(lines) + "\n")
    rf = results.read(p)
    assert [r.case for r in rf.records] == ["c", "ok2"]
    assert [s.split(": ", 1)[0] for s in rf.skipped] == [f"{p}:{n}" for n in range(3, 11)]
    assert "result record, field 'step'" in rf.skipped[0] and "not a JSON object" in rf.skipped[1]
    assert "field 'verdict'" in rf.skipped[4] and "not a JSON line" in rf.skipped[6]


def test_a_torn_last_line_is_dropped(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_text(json.dumps(Header(env="e").to_json_dict()) + "\n" + json.dumps(RESULT) + '\n{"kind": "res')
    rf = results.read(p)
    assert rf.header.env == "e" and len(rf.records) == 1


def test_schema_1_files_are_read_in_schema_2_terms(tmp_path):
    p = _write(tmp_path / "results.jsonl", [
        {"kind": "header", "schema_version": 1, "env": "old", "status": "complete"},
        {**RESULT, "verdict": "fail", "mismatch_kind": "nan", "worst_index": [3], "expected": 1.5, "observed": None,
         "message": 'y: NaN where the oracle is finite\n  Reproduce: pytest "t.py::test_parity[a-c]"'},
        {**RESULT, "quantity": "running_*|*_eval", "step": None, "verdict": "stale", "message": "stale"}])
    rf = results.read(p)
    fail, stale = rf.records
    assert fail.message == "y: NaN where the oracle is finite" and fail.repro == 'pytest "t.py::test_parity[a-c]"'
    assert fail.expected == 1.5 and fail.observed != fail.observed  # NaN
    assert stale.quantity is None and stale.covers == ["running_*", "*_eval"]


def test_schema_3_eval_records_get_the_index_of_the_eval_call(tmp_path):
    """Before schema 4 a case was ``steps`` training calls and one eval call, whose records had no step: read
    back, they are call ``steps`` of that cell (taken from its own case_params), as a schema-4 run records them."""
    cell = {"kind": "cell", "env": "e", "case": "c", "adapter": "a", "framework": "f", "verdict": "pass",
            "case_params": {"steps": 2}, "effective": {"momentum": 0.1, "eps": 1e-5}, "status": "returned"}
    p = _write(tmp_path / "results.jsonl", [
        {"kind": "header", "schema_version": 3, "env": "e", "status": "complete"},
        {**RESULT, "quantity": "running_var", "step": 1}, {**RESULT, "quantity": "y_eval", "step": None},
        {**RESULT, "quantity": "outcome", "step": None}, cell,
        {**RESULT, "case": "other", "quantity": "dx_eval", "step": None}])  # no cell: left as it was
    train, y_eval, outcome, _, orphan = results.read(p).records
    assert (train.step, y_eval.step, outcome.step, orphan.step) == (1, 2, None, None)
    assert y_eval.quantity.label(y_eval.step) == "y of call 2 (eval)"


def test_non_finite_floats_round_trip_as_strings(tmp_path):
    r = Result(**{**RESULT, "verdict": "fail"}, max_abs_err=float("inf"), expected=float("nan"), observed=-1.0)
    line = dumps(r)
    assert '"max_abs_err": "inf"' in line and '"expected": "nan"' in line
    back = parse(line)
    assert back.max_abs_err == float("inf") and back.expected != back.expected and back.observed == -1.0


def test_the_readme_verdict_table_is_the_schemas():
    text = (REPO / "README.md").read_text()
    table = text.split("| verdict | meaning | fails the run? |", 1)[1].split("\n\n", 1)[0]
    rows = table.splitlines()[2:]
    assert rows == [f"| `{v.value}` | {v.info.meaning} | {'yes' if v.fails_run else 'no'} |" for v in Verdict.ordered()]
