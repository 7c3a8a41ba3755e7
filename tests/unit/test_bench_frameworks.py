"""``bnparity bench --quick`` on the real frameworks: every installed adapter's timed calls run.

The framework-free self-tests check the benchmark's bookkeeping with fake adapters; this one runs
each real adapter's ``bench_callable`` in every variant and mode, in both layouts, and fails on any
row a framework could not time (a wrong memory format, a dtype the hook mishandles). Timings are
not asserted. It needs the frameworks, so it runs in tox's ``current`` environment (marker
``frameworks``), where ``BNPARITY_REQUIRE_FRAMEWORKS=1`` makes a missing framework a failure; ``unit``
installs none and skips it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.adapters.base import load_spec
from harness.bench import MODES
from harness.results import read
from harness.schema import Benchmark
from tests.unit.conftest import framework_adapters

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.frameworks


def test_quick_bench_times_every_installed_adapter(tmp_path: Path) -> None:
    adapters = {name: load_spec(spec) for name, spec in framework_adapters().items()}
    why_not = {name: a.available() for name, a in adapters.items()}  # None where the framework imports
    installed = sorted(name for name, reason in why_not.items() if not reason)
    missing = {name: reason for name, reason in why_not.items() if reason}
    if os.environ.get("BNPARITY_REQUIRE_FRAMEWORKS") == "1":
        assert not missing, f"frameworks required here but missing: {missing}"
    if not installed:
        pytest.skip("no framework installed (tox -e current runs this)")
    out = tmp_path / "bench.jsonl"
    res = subprocess.run([sys.executable, "-m", "harness.bench", "--quick", "--adapters", ",".join(installed),
                          "--out", str(out), "--env", "selftest"],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rf = read(out)  # every record validates against the schema
    assert rf.header.status == "complete" and rf.header.mode == "bench"
    bench = [r for r in rf.records if isinstance(r, Benchmark)]
    failed = [(r.adapter, r.variant, r.mode, r.layout, r.reason) for r in bench if r.status not in ("ok", "skip")]
    assert not failed, failed
    for name in installed:
        ok = [r for r in bench if r.adapter == name and r.status == "ok"]
        timed = {(r.variant, r.mode, r.layout) for r in ok}
        wanted = {(v, m, lay) for v in adapters[name].bench_variants for m in MODES
                  for lay in ("channels_first", "channels_last")}
        assert timed == wanted, (name, sorted(wanted - timed))
        assert all(r.median_s > 0 and r.reps >= 10 for r in ok)
