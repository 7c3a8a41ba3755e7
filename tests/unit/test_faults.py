"""A framework that crashes, aborts, hangs, eats memory or scribbles on stdout costs exactly its case."""

from __future__ import annotations

from harness.adapters.base import Broken, load_spec
from harness.cases import load_cases
from harness.runner import run_cell
from harness.schema import Verdict
from harness.workers import Workers
from tests import fakes

CASES = """
[defaults]
shape = [8, 3]
steps = 2

[[case]]
name = "before"
seed = 1

[[case]]
name = "fault_target"
seed = 2
timeout = 120

[[case]]
name = "hang_target"
seed = 4
timeout = 4

[[case]]
name = "after"
seed = 3
"""

EXPECT = {  # fake -> verdict of its target case
    "Segfault": "crashed",
    "Abort": "crashed",
    "Hang": "timeout",
    "MemoryHog": "crashed",
    "StdoutGarbage": "pass",
    "Raises": "raised",
}


def test_each_fault_costs_exactly_its_case(run_parity):
    """Only the hang races the clock, on a case of its own with a 4 s limit; the other faults' target has a
    long one (120 s), so a busy machine that takes seconds to fill a memory cap cannot turn a crash into a
    timeout: each verdict is the fault's, whatever the load."""
    run = run_parity(CASES, list(EXPECT))
    out = run.result.stdout.str()
    assert run.result.ret == 1  # crashes, timeouts and unexpected raises fail the run
    assert run.header.status == "complete"
    for cls, verdict in EXPECT.items():
        name = getattr(fakes, cls).name
        target = fakes.HANG_CASE if cls == "Hang" else "fault_target"
        outcome = run.results(adapter=name, case=target, quantity="outcome")
        assert [r.verdict for r in outcome] == [verdict], (name, outcome)
        for neighbour in {"before", "fault_target", "hang_target", "after"} - {target}:
            assert run.verdicts(name, neighbour) == {"pass"}, (name, neighbour, run.verdicts(name, neighbour))
    seg = run.results(adapter="fault-segfault", case="fault_target", quantity="outcome")[0]
    assert seg.exit_code == -11 and "SIGSEGV" in seg.message
    abort = run.results(adapter="fault-abort", case="fault_target", quantity="outcome")[0]
    assert "SIGABRT" in abort.message and "about to abort" in abort.stderr_tail
    mem = run.results(adapter="fault-memory", case="fault_target", quantity="outcome")[0]
    assert "SIGKILL" in mem.message
    hang = run.results(adapter="fault-hang", case="hang_target", quantity="outcome")[0]
    assert "no answer within 4 s" in hang.message
    raised = run.results(adapter="fault-raises", case="fault_target", quantity="outcome")[0]
    assert raised.exception_type == "RuntimeError" and "fake framework error" in raised.exception_message
    # the summary says what happened
    assert "crashed=3" in out and "timeout=1" in out and "raised=1" in out
    for name in ("fault-segfault", "fault-abort", "fault-memory"):
        assert f"FAILED test_parity.py::test_parity[{name}-fault_target]" in out
    assert "FAILED test_parity.py::test_parity[fault-hang-hang_target]" in out
    assert "FAILED test_parity.py::test_parity[fault-stdout" not in out


ESCAPES = {  # fake -> (verdict of its target case, what the outcome record says)
    "RaisesKeyboardInterrupt": ("raised", "KeyboardInterrupt"),
    "RaisesSystemExit": ("raised", "SystemExit"),
    "ExitsZero": ("crashed", "exit code 0"),
    "ClosesStdio": ("pass", ""),
    "ForksChild": ("pass", ""),
}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def test_faults_that_escape_an_exception_handler_cost_exactly_their_case(run_parity, tmp_path, monkeypatch):
    """BaseExceptions, a worker ending with status 0, closed stdio and forked processes. The target case's
    limit is long (120 s): a worker that exits is found by polling its process, not by the clock."""
    pidfile = tmp_path / "grandchild.pid"
    monkeypatch.setenv("BNPARITY_FAULT_PIDFILE", str(pidfile))
    run = run_parity(CASES, list(ESCAPES), "-n", "2", "--dist", "loadgroup")
    assert run.header.status == "complete"
    for cls, (verdict, said) in ESCAPES.items():
        name = getattr(fakes, cls).name
        outcome = run.results(adapter=name, case="fault_target", quantity="outcome")
        assert [r.verdict for r in outcome] == [verdict], (name, outcome)
        assert said in f"{outcome[0].exception_type} {outcome[0].message}", (name, outcome[0])
        for neighbour in ("before", "after"):
            assert run.verdicts(name, neighbour) == {"pass"}, (name, neighbour, run.results(adapter=name,
                                                                                          case=neighbour))
    exited = run.results(adapter="fault-exit-zero", case="fault_target", quantity="outcome")[0]
    assert exited.exit_code == 0
    cell = next(c for c in run.cells if c.adapter == "fault-exit-zero" and c.case == "fault_target")
    assert cell.wall_s < 60, "found when the worker exited, not at the case's time limit"
    # the worker whose stdio was closed answered, and was replaced for the next case
    closed = {c.case: c.worker["pid"] for c in run.cells if c.adapter == "fault-closes-stdio"}
    assert closed["after"] != closed["fault_target"]
    # the forked process did not outlive the run
    assert not _alive(int(pidfile.read_text()))


def test_an_adapter_that_fails_to_load_fails_its_cells(tmp_path):
    """A registered adapter whose module does not import (a bug in a plugin's or the harness's code) once made
    every one of its cells a skip: a green run that tested nothing. Each cell is now a raised outcome naming the
    load error (the session wraps the error in ``Broken``, as here)."""
    try:
        load_spec("tests.no_such_module:ADAPTER")
    except ImportError as e:
        broken = Broken("plugin-x", f"adapter 'tests.no_such_module:ADAPTER' failed to load: {e}", e)
    (tmp_path / "c.toml").write_text(CASES)
    case = load_cases([tmp_path])[0]
    res = run_cell(case, broken, "tests.no_such_module:ADAPTER", Workers(tmp_path / "logs", in_process=True),
                   env="t", ledger=[], timeout=10, repro="pytest x")
    (outcome,) = res.records
    assert outcome.verdict == Verdict.RAISED and res.failures == [outcome] and res.skip_reason is None
    assert outcome.exception_type == "ModuleNotFoundError" and "no_such_module" in outcome.message
    assert outcome.exception_stage == "loading the adapter" and outcome.repro == "pytest x"
