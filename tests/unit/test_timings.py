"""What a case cost: the cell's ``case_s`` leaves out starting the worker and importing the framework."""

from __future__ import annotations

import pytest

from tests.fakes import SlowImport

CASES = """
[defaults]
shape = [8, 3]
steps = 2

[[case]]
name = "one"
seed = 1

[[case]]
name = "two"
seed = 2

[[case]]
name = "three"
seed = 3
"""


def test_case_time_leaves_out_the_worker_start_and_the_import(run_parity):
    run = run_parity(CASES, ["SlowImport"])
    cells = run.cells
    assert len(cells) == 3 and all(c.verdict == "pass" for c in cells)
    first = [c for c in cells if "import_s" in c.worker]
    assert len(first) == 1, "one worker, started once"
    f = first[0]
    assert f.worker["import_s"] >= SlowImport.IMPORT_S
    # the round trip carries the worker's start and the import; the case's own time does not
    assert f.wall_s >= f.worker["import_s"] + f.case_s
    for c in cells:
        assert c.case_s is not None and 0 < c.case_s <= c.wall_s
        assert c.case_s < SlowImport.IMPORT_S / 2, (c.case, c.case_s)
    # the header's timings per adapter add up to the round trips
    t = run.header.timings[SlowImport.name]
    assert t["cells"] == 3 and t["worker_starts"] == 1 and t["import_s"] >= SlowImport.IMPORT_S
    assert t["case_s"] == pytest.approx(sum(c.case_s for c in cells))
    assert t["worker_wall_s"] == pytest.approx(t["case_s"] + t["startup_s"] + t["import_s"] + t["overhead_s"])
    out = run.result.stdout.str()
    assert "time per adapter:" in out and f"{SlowImport.name}: 3 cases " in out and "1 worker start(s)" in out
