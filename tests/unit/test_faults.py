"""A framework that crashes, aborts, hangs, eats memory or scribbles on stdout costs exactly its case."""

from __future__ import annotations

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
    run = run_parity(CASES, list(EXPECT))
    out = run.result.stdout.str()
    assert run.result.ret == 1  # crashes, timeouts and unexpected raises fail the run
    assert run.header.status == "complete"
    for cls, verdict in EXPECT.items():
        name = getattr(fakes, cls).name
        outcome = run.results(adapter=name, case="fault_target", quantity="outcome")
        assert [r.verdict for r in outcome] == [verdict], (name, outcome)
        for neighbour in ("before", "after"):
            assert run.verdicts(name, neighbour) == {"pass"}, (name, neighbour, run.verdicts(name, neighbour))
    seg = run.results(adapter="fault-segfault", case="fault_target", quantity="outcome")[0]
    assert seg.exit_code == -11 and "SIGSEGV" in seg.message
    abort = run.results(adapter="fault-abort", case="fault_target", quantity="outcome")[0]
    assert "SIGABRT" in abort.message and "about to abort" in abort.stderr_tail
    mem = run.results(adapter="fault-memory", case="fault_target", quantity="outcome")[0]
    assert "SIGKILL" in mem.message
    hang = run.results(adapter="fault-hang", case="fault_target", quantity="outcome")[0]
    assert "no answer within 4 s" in hang.message
    raised = run.results(adapter="fault-raises", case="fault_target", quantity="outcome")[0]
    assert raised.exception_type == "RuntimeError" and "fake framework error" in raised.exception_message
    # the summary says what happened
    assert "crashed=3" in out and "timeout=1" in out and "raised=1" in out
    for name in ("fault-segfault", "fault-abort", "fault-hang", "fault-memory"):
        assert f"FAILED test_parity.py::test_parity[{name}-fault_target]" in out
    assert "FAILED test_parity.py::test_parity[fault-stdout" not in out
