"""Data parallelism in the harness, without a framework: the correct replicated fakes (both conventions) pass every
case of cases/distributed.toml, and the planted bugs of synchronized BN are flagged where they live (syncing the mean
but not the variance: y and dx; syncing the forward but not the gradient: dx only), while the per-replica cases, which
need no all-reduce, pass them. Eager adapters skip data-parallel cases; distributed ones skip the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cases import load_cases
from harness.runner import run_cell
from harness.schema import Result, Verdict
from harness.workers import Workers
from tests import fakes, fakes_dp

REPO = Path(__file__).resolve().parents[2]
CASES = {c.name: c for c in load_cases([REPO / "cases" / "distributed.toml"])}


def _failing(cls: str, case: str, tmp_path: Path) -> set[str]:
    res = run_cell(CASES[case], getattr(fakes_dp, cls)(), f"tests.fakes_dp:{cls}", Workers(tmp_path, in_process=True),
                   env="dp", ledger=[], timeout=60, repro="")
    rec = [r for r in res.records if isinstance(r, Result)]
    assert not [r for r in rec if r.verdict not in (Verdict.PASS, Verdict.FAIL)], [r.message for r in rec]
    return {r.quantity.value for r in rec if r.verdict == Verdict.FAIL}


@pytest.mark.parametrize("cls", ["ReplicatedBN", "ReplicatedBNFirst"])
def test_a_correct_replicated_bn_passes_every_distributed_case(cls, tmp_path):
    assert {name: bad for name in CASES if (bad := _failing(cls, name, tmp_path))} == {}


@pytest.mark.parametrize("cls,flagged", [("SyncsMeanOnly", {"y", "dx"}), ("SyncsForwardOnly", {"dx"})])
def test_partial_synchronization_is_flagged(cls, flagged, tmp_path):
    for name in CASES:
        bad = _failing(cls, name, tmp_path)
        if name.endswith("_local"):
            assert not bad, (name, bad)  # nothing to synchronize: the bug is not on this path
        elif cls == "SyncsMeanOnly" and name == "dp2_ramp_sync":
            # each half of a ramp has the same spread, and its deviations from the global mean give the global variance
            assert not bad, bad
        else:
            assert flagged <= bad, (name, bad)
            if cls == "SyncsForwardOnly":
                assert bad == {"dx"}, (name, bad)  # the forward is right: y and the running statistics pass


def test_the_cases_tell_the_running_statistics_conventions_apart(tmp_path):
    """A fake that keeps the replicas' mean but declares replica 0's copy fails the per-replica cases on the running
    variance (and the synchronized ones pass it: every copy is the same there)."""
    for name in CASES:
        bad = _failing("DeclaresFirstKeepsMean", name, tmp_path)
        if name.endswith("_sync"):
            assert not bad, (name, bad)
        elif name != "dp2_ramp_local":  # (the ramp's halves have the same spread: equal copies of running_var)
            assert "running_var" in bad, (name, bad)


def test_replicas_view_puts_sync_on_and_off_side_by_side(tmp_path):
    """bnparity report --replicas: one table per configuration, a row per adapter with both verdicts, the running
    variance kept and the declared conventions."""
    from harness.report.model import load
    from harness.report.replicas import markdown, replica_rows
    from tests.report_sample import header, write

    records = []
    for cls in ("ReplicatedBN", "ReplicatedBNFirst"):
        for name in ("dp2_sync", "dp2_local", "dp2_uneven_sync", "dp2_uneven_local"):
            res = run_cell(CASES[name], getattr(fakes_dp, cls)(), f"tests.fakes_dp:{cls}",
                           Workers(tmp_path, in_process=True), env="dp", ledger=[], timeout=60, repro="")
            records += res.records
    path = write(tmp_path / "dp" / "results.jsonl", header("dp", ["fake-dp", "fake-dp-first"]), records)
    rows = replica_rows(load([path]))
    assert sorted((r.config, r.adapter) for r in rows) == [
        ("dp2: 2 replicas", "fake-dp"), ("dp2: 2 replicas", "fake-dp-first"),
        ("dp2_uneven: 2 replicas, split [2, 6]", "fake-dp"), ("dp2_uneven: 2 replicas, split [2, 6]", "fake-dp-first")]
    text = markdown(rows)
    assert "### dp2_uneven: 2 replicas, split [2, 6] (dp)" in text
    line = next(x for x in text.splitlines() if x.startswith("| fake-dp-first |"))
    cols = [c.strip() for c in line.strip("|").split("|")]
    assert cols[1] == cols[4] == "pass" and "keeps replica 0's copy; gradients mean" in cols[7]
    assert "copies part by" in cols[5] and "copies part by" not in cols[2]  # synchronized copies are equal
    # the page's Data parallelism section shows the same rows
    from harness.report.page import render

    html = render(load([path]), plots=False)
    section = html[html.index('<section id="replicas">'):]
    section = section[:section.index("</section>")]
    assert "dp2_uneven: 2 replicas, split [2, 6]" in section and 'href="#replicas"' in html
    row = section[section.index('<tr data-adapter="fake-dp-first">'):]
    row = row[:row.index("</tr>")]
    assert row.count(">pass<") == 2 and "keeps replica 0&#39;s copy; gradients mean" in row and "copies part by" in row


def test_eager_adapters_skip_data_parallel_cases_and_distributed_ones_the_rest():
    dp_case, plain = CASES["dp2_sync"], load_cases([REPO / "cases" / "defaults.toml"])[0]
    assert "no data parallelism" in fakes.NumpyBN().supports(dp_case)
    assert fakes_dp.ReplicatedBN().supports(dp_case) is None
    assert "data-parallel cases only" in fakes_dp.ReplicatedBN().supports(plain)
