"""results.jsonl: complete under xdist, parseable after SIGTERM, reproducible, strict ledger."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from tests.unit.conftest import PARITY_TEST, REPO

CASES = "\n".join(f"""
[[case]]
name = "c{i}"
shape = [{4 + i}, 3{', 2' if i % 2 else ''}]
steps = {1 + i % 3}
seed = {i}
""" for i in range(10))


def _expected_records(case_text_index: int) -> int:
    steps = 1 + case_text_index % 3
    # outcome + (y, dx, dgamma, dbeta, running_mean, running_var) per train call + the same 6 of the eval call
    return 1 + steps * 6 + 6


def test_xdist_no_lost_or_duplicated_records(run_parity):
    run = run_parity(CASES, ["NumpyBN", "MomentumFlipped"], "-n", "2", "--dist", "loadgroup")
    assert run.result.ret == 1  # the flipped momentum fails
    assert all(json.loads(line) for line in run.lines)  # every line parses
    keys = Counter((r.case, r.adapter, r.quantity, r.step) for r in run.results())
    assert max(keys.values()) == 1, [k for k, v in keys.items() if v > 1]
    for adapter in ("fake-good", "bug-momentum-flipped"):
        for i in range(10):
            n = len(run.results(adapter=adapter, case=f"c{i}"))
            assert n == _expected_records(i), (adapter, i, n)
    cells = run.cells
    assert len(cells) == 20 == len({(c.case, c.adapter) for c in cells})
    assert run.header.status == "complete" and run.header.records == len(run.records)
    # --dist loadgroup: one xdist worker per adapter, so each framework worker starts once
    for adapter in ("fake-good", "bug-momentum-flipped"):
        assert len({c.worker["pid"] for c in cells if c.adapter == adapter}) == 1


def test_reruns_are_bit_identical(run_parity):
    a = run_parity(CASES, ["NumpyBN"], "-k", "c1 or c2 or c3")
    b = run_parity(CASES, ["NumpyBN"], "-k", "c1 or c2 or c3")
    da = {(r.case, r.quantity, r.step): r.digest for r in a.results() if r.digest}
    db = {(r.case, r.quantity, r.step): r.digest for r in b.results() if r.digest}
    assert da and da == db


def test_ledger_known_and_stale(run_parity):
    ledger = """
[[difference]]
id = "flipped-running-mean"
adapter = "bug-momentum-flipped"
cases = ["c1", "c2"]
quantity = ["running_*", "*_eval"]
kind = "framework bug"
observed = "running stats follow 1 - m"
reason = "planted bug"
link = "https://example.org/planted"

[[difference]]
id = "good-is-never-wrong"
adapter = "fake-good"
cases = "c1"
quantity = "y"
kind = "numerical weakness"
observed = "nothing"
reason = "an entry that matches no failure must be reported stale"
link = "https://example.org/stale"
"""
    run = run_parity(CASES, ["NumpyBN", "MomentumFlipped"], "-k", "c1 or c2 or c3", ledger=ledger)
    assert {r.verdict for r in run.results(adapter="bug-momentum-flipped", case="c1")} == {"pass", "known"}
    known = [r for r in run.results(adapter="bug-momentum-flipped", case="c1") if r.verdict == "known"]
    assert known[0].ledger.id == "flipped-running-mean"
    # not covered on c3: a plain failure
    assert "fail" in run.verdicts("bug-momentum-flipped", "c3")
    stale = run.results(adapter="fake-good", case="c1", verdict="stale")
    assert len(stale) == 1 and "good-is-never-wrong" in stale[0].message
    assert stale[0].quantity is None and stale[0].covers == ["y"]
    out = run.result.stdout.str()
    assert "FAILED test_parity.py::test_parity[fake-good-c1]" in out
    assert "FAILED test_parity.py::test_parity[bug-momentum-flipped-c3]" in out
    assert "FAILED test_parity.py::test_parity[bug-momentum-flipped-c1]" not in out


def test_sigterm_leaves_a_parseable_file_marked_interrupted(pytester, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "c.toml").write_text(CASES.replace('name = "c5"', 'name = "hang_target"\ntimeout = 600'))
    test = tmp_path / "test_parity.py"
    test.write_text(PARITY_TEST)
    env = {**os.environ, "BNPARITY_ADAPTERS": "tests.fakes:Hang", "PYTHONPATH": str(REPO)}
    results = tmp_path / "reports" / "t" / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", str(test), "--cases", str(cases), "--results-dir",
                             str(tmp_path / "reports"), "--bnparity-env", "t", "--adapters", "fault-hang",
                             "-p", "no:cacheprovider", "-q"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until the cases before the hang have been recorded
        if results.exists() and results.read_text().count('"kind": "cell"') >= 5:
            break
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    lines = results.read_text().splitlines()
    recs = [json.loads(line) for line in lines]  # every line parses
    assert recs[0]["kind"] == "header" and recs[0]["status"] == "interrupted", out.decode()[-2000:]
    assert sum(r["kind"] == "cell" for r in recs) >= 5
    assert proc.returncode != 0


def test_mechanism_entries_are_judged_in_their_evidence_cases(run_parity):
    """A mechanism entry (conditions, no case names) explains a difference wherever its conditions hold, and is
    judged stale only in its evidence cases: under xdist, per cell, whatever else the run holds."""
    ledger = """
[[difference]]
id = "flipped-momentum"
adapter = "bug-momentum-flipped"
quantity = ["running_*", "*_eval"]
evidence = ["c1"]
kind = "framework bug"
observed = "running stats follow 1 - m"
reason = "planted bug"
link = "https://example.org/planted"
[difference.when]
steps = { min = 1 }

[[difference]]
id = "good-mechanism-never-shows"
adapter = "fake-good"
quantity = "y"
evidence = ["c2"]
kind = "numerical weakness"
observed = "nothing"
reason = "a mechanism entry that explains nothing in its evidence case is stale there, and only there"
link = "https://example.org/stale"
[difference.when]
steps = { min = 1 }
"""
    run = run_parity(CASES, ["NumpyBN", "MomentumFlipped"], "-k", "c1 or c2 or c3", "-n", "2", "--dist",
                     "loadgroup", ledger=ledger)
    assert run.result.ret == 1
    assert not [r for r in run.results() if r.verdict == "fail"]
    assert {r.verdict for r in run.results(adapter="bug-momentum-flipped")} == {"pass", "known"}
    stale = [r for r in run.results() if r.verdict == "stale"]
    assert [(r.case, r.adapter, r.ledger.id) for r in stale] == [("c2", "fake-good", "good-mechanism-never-shows")]
    assert "one of its evidence cases" in stale[0].message and "steps >= 1" in stale[0].message
    out = run.result.stdout.str()
    assert "FAILED test_parity.py::test_parity[fake-good-c2]" in out
    assert "FAILED test_parity.py::test_parity[fake-good-c1]" not in out
