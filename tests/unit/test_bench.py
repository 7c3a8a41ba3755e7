"""`bnparity bench --quick` end to end (no timing is asserted), and the values of its NumPy reference row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def test_quick_bench_writes_benchmark_and_bandwidth_records(tmp_path):
    out = tmp_path / "bench.jsonl"
    env = {**os.environ, "BNPARITY_ADAPTERS": "tests.fakes:NumpyBN", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "harness.bench", "--quick", "--adapters", "numpy-ref,fake-good",
                          "--config", str(REPO / "cases" / "bench.toml"), "--out", str(out), "--env", "t"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    # progress within an adapter: rows done of the total after each configuration, and the time left
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("numpy-ref: ") and " rows (" in ln]
    assert [ln.split()[1] for ln in lines] == ["3/6", "6/6"], res.stdout
    assert "quick.float32.channels_first" in lines[0] and lines[0].endswith(" left") and "~0 s left" in lines[1]
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    head, rest = recs[0], recs[1:]
    assert head["kind"] == "header" and head["mode"] == "bench" and head["status"] == "complete"
    assert head["machine"]["cores"] >= 1 and head["threads"] == "1"
    bw = [r for r in rest if r["kind"] == "bandwidth"]
    assert bw and any(r["beyond_llc"] for r in bw) and all(r["copy_gbs"] > 0 for r in bw)
    rows = [r for r in rest if r["kind"] == "benchmark" and r["adapter"] == "numpy-ref"]
    assert {r["mode"] for r in rows} == {"train_fwd", "train_fwd_bwd", "eval_fwd"}
    for r in rows:
        assert r["status"] == "ok" and r["min_s"] <= r["median_s"] and r["q1_s"] <= r["q3_s"]
        assert r["bytes"] > 0 and r["gbs"] > 0 and r["bw_fraction"] > 0 and isinstance(r["stable"], bool)
    fake = [r for r in rest if r["kind"] == "benchmark" and r["adapter"] == "fake-good"]
    assert fake and fake[0]["status"] == "skip" and "bench_callable" in fake[0]["reason"]
    # the report's benchmark section is built from the same file
    from harness.report import bench as report_bench

    sec = report_bench.section([out])
    assert sec and sec["machines"][0]["bandwidth"] and sec["fraction_plot"].startswith("data:image/svg+xml;base64,")
    assert [c["case"] for c in sec["charts"]] == ["quick.float32.channels_first", "quick.float32.channels_last"]
    assert any(r.adapter == "fake-good" and r.status == "skip" for r in sec["skipped"])


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_numpy_reference_row_computes_the_oracle_in_float32_with_the_case_settings(layout):
    import reference
    from harness.bench import NUMPY_REF
    from harness.cases import Case
    from harness.inputs import build

    case = Case.model_validate({"name": "c", "shape": [8, 3, 4, 4], "momentum": 0.3, "eps": 1e-2, "layout": layout})
    data = build(case)
    x, g, axis = data.x[0], data.g[0], case.channel_axis
    call = lambda mode: NUMPY_REF.bench_callable(case, data, mode, "eager", "cpu")()  # noqa: E731
    y_ref, mean, var = reference.train_forward(x, data.gamma, data.beta, 1e-2, axis)
    rm_ref, rv_ref = reference.update_running(data.running_mean, data.running_var, mean, var, case.count, 0.3,
                                              "unbiased")
    dx_ref, dgamma_ref, dbeta_ref = reference.train_backward(x, g, data.gamma, 1e-2, axis)
    y, rm, rv = call("train_fwd")
    _, dx, dgamma, dbeta = call("train_fwd_bwd")
    y_eval = call("eval_fwd")
    y_eval_ref = reference.eval_forward(x, data.gamma, data.beta, data.running_mean, data.running_var, 1e-2, axis)
    for got, want in ((y, y_ref), (rm, rm_ref), (rv, rv_ref), (dx, dx_ref), (dgamma.reshape(-1), dgamma_ref),
                      (dbeta.reshape(-1), dbeta_ref), (y_eval, y_eval_ref)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert NUMPY_REF.bench_callable(case, data, "train_fwd", "eager", "gpu") is None


def test_progress_counts_rows_and_estimates_the_time_left():
    import io

    from harness.bench import Progress, _duration

    out = io.StringIO()
    p = Progress("torch", 12, out)
    p.t0 -= 30.0  # 30 s spent on the first quarter: 90 s to go
    first = p.done(3, "cnn on cpu")
    assert first.startswith("torch: 3/12 rows (cnn on cpu), 30 s spent, ~1 min 30 s left"), first
    assert p.done(9, "dense on cpu").endswith("~0 s left")
    assert out.getvalue().count("\n") == 2
    assert (_duration(59.4), _duration(185), _duration(3720)) == ("59 s", "3 min 05 s", "1 h 02 min")
