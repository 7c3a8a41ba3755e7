"""The HTML report, on synthetic results files and on a real run's (the reproducer scripts: test_repro.py)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from markupsafe import Markup

from harness import report, repro
from harness.cases import Case, load_cases
from harness.report import blob as blob_module
from harness.report import page as page_module
from harness.report.analysis import drift, first_divergence, orders_apart
from harness.report.cli import main as report_main
from harness.report.gaps import bound, oracle_gaps, signature
from harness.report.model import ReportCell, load, resolve
from harness.report.page import JS, TEMPLATES
from harness.report.text import fmt_ratio, fmt_ulp
from harness.schema import (
    SCHEMA_VERSION,
    Bandwidth,
    Benchmark,
    Cell,
    Header,
    LedgerRef,
    MismatchKind,
    Quantity,
    Result,
    Verdict,
    dumps,
)
from tests.report_sample import cell_records, header, synthetic, write

REPO = Path(__file__).resolve().parents[2]
EVIL = '<script>window.__pwned = 1</script>'
EVIL_MSG = 'boom </script><script>window.__pwned = 2</script> <!-- & "quotes"'


def _case(name: str = "dense_small", **kw) -> Case:
    body = {"name": name, "shape": [16, 4], "seed": 3, "tags": ["structure", "dense"], **kw}
    return Case.model_validate(body)


def _rng(k: int = 0) -> np.random.Generator:
    return np.random.default_rng(k)


def _evil_records(env: str) -> list[Result | Cell]:
    """A cell whose case name and exception message are markup: both must render as text."""
    recs = cell_records(_case("evil"), "torch", env, "2.13.0", _rng(9), "raised")
    for r in recs:
        r.case = EVIL
        if isinstance(r, Cell):
            r.case_params = {**r.case_params, "name": EVIL, "description": EVIL_MSG}
        elif r.quantity is Quantity.OUTCOME:
            r.exception_message = EVIL_MSG
            r.message = f"unexpected exception during call 0 (train): ValueError: {EVIL_MSG}"
    return recs


@pytest.fixture
def two_envs(tmp_path: Path) -> list[Path]:
    """env 'new' (complete) and env 'old' (interrupted) with every kind of verdict, drift between them,
    a <script> case name, an unsafe ledger link and a benchmark record among the parity records."""
    dense, conv = _case(), _case("conv_cl", shape=[4, 3, 2, 2], layout="channels_last", tags=["structure", "rank4"])
    new: list = []
    new += cell_records(dense, "torch", "new", "2.13.0", _rng(1), "pass")
    new += cell_records(dense, "keras3-jax", "new", "3.15.1", _rng(2), "fail")
    new += cell_records(conv, "torch", "new", "2.13.0", _rng(3), "known")
    new += cell_records(conv, "keras3-jax", "new", "3.15.1", _rng(4), "crashed")
    new += cell_records(conv, "flax-nnx", "new", "0.12.8", _rng(5), "skip")
    new += cell_records(dense, "flax-nnx", "new", "0.12.8", _rng(6), "stale")
    new += _evil_records("new")
    for r in new:
        if isinstance(r, Result) and r.ledger is not None:
            r.ledger.link = "javascript:alert(1)"
    new.append(Benchmark(env="new", adapter="torch", status="ok", median_s=0.001))
    old: list = []
    old += cell_records(dense, "torch", "old", "2.1.0", _rng(7), "raised")
    old += cell_records(dense, "keras3-jax", "old", "3.0.4", _rng(8), "fail")
    h_new = header("new", ["torch", "keras3-jax", "flax-nnx"])
    h_new.versions.update({"torch": "2.13.0", "keras": "3.15.1", "flax": "0.12.8"})
    h_old = header("old", ["torch", "keras3-jax"], status="interrupted")
    h_old.versions.update({"torch": "2.1.0", "keras": "3.0.4"})
    return [write(tmp_path / "reports" / "new" / "results.jsonl", h_new, new),
            write(tmp_path / "reports" / "old" / "results.jsonl", h_old, old)]


def _blob(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="bn-data" data-encoding="([^"]+)" data-planes="(\d+)">(.*?)'
                  r'</script>', page, re.S)
    assert m, "the data blob is missing"
    return page_module.decode(page_module.Payload(Markup(m.group(3)), m.group(1), int(m.group(2))))


def _rows(blob: dict, cell: dict) -> list[dict]:
    """A cell's result rows as {field: value}, the way the page reads them (by the column names it ships)."""
    fields = blob["fields"]["result"]
    start, n = cell["rows"]
    rows = [dict(zip(fields, (col[i] for col in blob["rows"]))) for i in range(start, start + n)]
    for r in rows:  # as the page's cellRows reads blob.SAME_AS_EXPECTED
        if r["observed"] == blob_module.SAME_AS_EXPECTED:
            r["observed"] = r["expected"]
    return rows


def _cell_of(blob: dict, case: str, env: str, adapter: str) -> dict:
    row = next(i for i, c in enumerate(blob["cases"]) if c["name"] == case)
    col = next(i for i, c in enumerate(blob["cols"]) if (c["env"], c["adapter"]) == (env, adapter))
    return blob["cells"][f"{row}:{col}"]


def test_render_merged_report(two_envs: list[Path], tmp_path: Path) -> None:
    out = report.render_paths([tmp_path / "reports"], tmp_path / "index.html", compress=False)
    page = out.read_text()
    # partial environment is flagged loudly, with its status
    assert "PARTIAL" in page and 'id="partial-banner"' in page
    assert "<code>old</code> did not complete (status <code>interrupted</code>)" in page
    # framework versions of every environment
    for v in ("2.13.0", "3.15.1", "0.12.8", "2.1.0", "3.0.4"):
        assert f"<dd>{v}</dd>" in page
    # the matrix: one column per (env, adapter), cells coloured by worst verdict, ULPs or a mark
    assert page.count('class="ad-h sorter"') == 5
    for verdict in ("pass", "fail", "known", "crashed", "skip", "stale", "raised"):
        assert f'class="v-{verdict}"' in page
    # a benchmark record among parity records is counted, not fatal
    assert "benchmark ×1" in page
    # drift: dense_small on torch raised in 'old' and passes in 'new'
    drift_html = page[page.index('id="drift"'):page.index('id="portability"')]
    assert "dense_small" in drift_html and "raised" in drift_html and "verdict" in drift_html
    # where it starts: the failing keras3-jax cell diverges in running_var at step 0
    starts = page[page.index('id="starts"'):page.index('id="drift"')]
    assert "batch variance -&gt; running_var" in starts
    assert "what is stored differs" in starts
    # the legend and the filters come from the verdict table, in severity order
    assert all(f'class="legend v-{v}"' in page for v in Verdict)
    failing = ", ".join(v for v in Verdict.ordered() if v.fails_run)
    assert f'title="{failing}: what fails a run"' in page


def test_markup_in_results_renders_as_text(two_envs: list[Path], tmp_path: Path) -> None:
    for compress in (False, True):
        page = report.render(load([tmp_path / "reports"]), compress=compress)
        # only the page's own two <script> elements exist; the case name and message are escaped text
        assert len(re.findall(r"<script\b", page, re.I)) == 2
        assert "<script>window.__pwned" not in page and "</script><script>" not in page
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
        blob_text = page.split('id="bn-data"', 1)[1].split("</script>", 1)[0]
        assert "</" not in blob_text and "<!--" not in blob_text
        blob = _blob(page)
        assert EVIL in [c["name"] for c in blob["cases"]]
        assert _cell_of(blob, EVIL, "new", "torch")["outcome"]["exception_message"] == EVIL_MSG
        # a javascript: ledger link never becomes an href
        assert blob["ledger"] and all(e["link"] is None for e in blob["ledger"].values())
        assert 'href="javascript:' not in page


def test_blob_detail_is_complete(two_envs: list[Path], tmp_path: Path) -> None:
    blob = _blob(report.render(load([tmp_path / "reports"]), compress=False))
    # the vocabulary travels with the data: the page has none of its own
    assert blob["verdicts"] == json.loads(json.dumps(Verdict.table()))
    assert [q["name"] for q in blob["quantities"]] == [q.value for q in Quantity]
    assert [k["name"] for k in blob["kinds"]] == [k.value for k in MismatchKind]
    assert set(blob["fields"]["result"]) <= set(Result.model_fields)
    cell = _cell_of(blob, "dense_small", "new", "keras3-jax")
    rows = _rows(blob, cell)
    q = [x["name"] for x in blob["quantities"]]
    # every quantity per call: 3 train calls x 6 quantities + the eval call's 4 and the state after it
    assert len(rows) == 24
    assert {q[r["quantity"]] for r in rows} == {"running_mean", "running_var", "y", "dx", "dgamma", "dbeta",
                                               "y_eval", "dx_eval", "dgamma_eval", "dbeta_eval",
                                               "running_mean_eval", "running_var_eval"}
    verdict = [v["name"] for v in blob["verdicts"]]
    bad = [r for r in rows if verdict[r["verdict"]] == "fail"]
    assert bad and all(r["worst_index"] is not None and r["expected"] is not None and r["observed"] is not None
                       and r["greatest_abs_diff"] is not None for r in bad)
    assert all(blob["kinds"][r["mismatch_kind"]]["name"] == "value" for r in bad)
    # the conventions as used: momentum as passed (Keras: 1 - m), effective weight-of-new momentum, eps, axis
    assert cell["settings"]["momentum"] == pytest.approx(0.9) and cell["effective"]["momentum"] == pytest.approx(0.1)
    assert blob["conventions"][cell["conventions"]]["running_var_estimator"] == "biased"
    assert "running_var" in cell["start"]
    assert cell["repro"].startswith("pytest ")  # the command the runner recorded for the failing records
    # the reproducer template of each column, filled in the page from the case JSON
    case_json = next(c for c in blob["cases"] if c["name"] == "dense_small")["params_json"]
    col = next(c for c in blob["cols"] if (c["env"], c["adapter"]) == ("new", "torch"))
    text = blob["templates"][col["template"]].replace(blob["placeholder"], case_json)
    assert text == repro.script(json.loads(case_json), "torch")
    compile(text, "repro.py", "exec")
    # the crashed cell carries its exit code and stderr tail, and how its worker ended
    crashed = _cell_of(blob, "conv_cl", "new", "keras3-jax")
    assert crashed["outcome"]["exit_code"] == -11 and "Segmentation fault" in crashed["outcome"]["stderr_tail"]
    assert crashed["status"] == "crashed"
    # a stale ledger record names the quantities its entry covers (it has no quantity of its own)
    stale = [r for r in _rows(blob, _cell_of(blob, "dense_small", "new", "flax-nnx")) if r["quantity"] is None]
    assert stale and stale[0]["covers"] == ["dx", "dgamma"] and verdict[stale[0]["verdict"]] == "stale"


def test_reproducer_uses_the_recorded_worker_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's in-process reproducer takes WORKER_ENV from the cell record, never from the adapter registry."""
    recs = cell_records(_case(), "keras3-jax", "e", "3.15.1", _rng(), "pass")
    for r in recs:
        if isinstance(r, Cell):
            r.worker_env = {"KERAS_BACKEND": "jax", "RECORDED": "1"}
    paths = [write(tmp_path / "e" / "results.jsonl", header("e", ["keras3-jax"]), recs)]

    def no_registry(*a, **k):
        raise AssertionError("the report loaded the adapter registry")

    monkeypatch.setattr("harness.adapters.base.discover", no_registry)
    monkeypatch.setattr("harness.adapters.base.load_spec", no_registry)
    blob = _blob(report.render(load(paths), compress=False, plots=False))
    line = next(ln for ln in blob["templates"][0].splitlines() if ln.startswith("WORKER_ENV = "))
    assert '"KERAS_BACKEND": "jax"' in line and '"RECORDED": "1"' in line


def test_compressed_blob_round_trips(two_envs: list[Path], tmp_path: Path) -> None:
    model = load([tmp_path / "reports"])
    plain, packed = report.render(model, compress=False), report.render(model, compress=True)
    assert 'data-encoding="json"' in plain and 'data-encoding="gzip+base120"' in packed
    assert _blob(plain) == _blob(packed)


def test_largest_float_survives_rounding() -> None:
    """Rounding 1.8e308 to three digits overflowed to inf: the page showed an infinite threshold."""
    big = 1.7976931348623157e308
    assert blob_module.rounded(big, 3) == big and blob_module.rounded(-big, 4) == -big
    assert blob_module.rounded(float("inf"), 3) == "inf" and blob_module.rounded(float("nan"), 3) == "nan"
    assert blob_module.rounded(0.123456, 3) == 0.123


def test_single_env_and_status(tmp_path: Path) -> None:
    paths = synthetic(tmp_path, ["only"], ["torch"], cases=[_case()], statuses={"only": "running"})
    page = report.render_paths(paths, tmp_path / "one.html").read_text()
    assert "PARTIAL" in page and "status <code>running</code>" in page
    assert 'id="drift"' not in page  # one environment: nothing to drift against
    assert "SAMPLE DATA" in page


def test_missing_header_is_partial(tmp_path: Path) -> None:
    p = tmp_path / "torn" / "results.jsonl"
    recs = cell_records(_case(), "torch", "torn", "2.13.0", _rng(), "pass")
    p.parent.mkdir(parents=True)
    p.write_text("\n".join(dumps(r) for r in recs) + '\n{"kind": "result", "ca')
    model = load([p])
    assert model.envs[0].status == "no header" and model.envs[0].partial
    assert "PARTIAL" in report.render(model)


def test_resolve_paths(two_envs: list[Path], tmp_path: Path) -> None:
    assert resolve([tmp_path / "reports"]) == sorted(two_envs)
    assert resolve([two_envs[0].parent]) == [two_envs[0]]
    assert resolve([two_envs[0], two_envs[0]]) == [two_envs[0]]
    with pytest.raises(FileNotFoundError):
        resolve([tmp_path / "nowhere"])


def test_cli(two_envs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "site" / "index.html"
    assert report_main([str(tmp_path / "reports"), "-o", str(out), "--no-plots"]) == 0
    assert out.exists() and "PARTIAL: old" in capsys.readouterr().out
    assert report_main([str(tmp_path / "missing"), "-o", str(out)]) == 2


def test_newer_schema_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A results file written by a newer bnparity: exit 2 with a message naming the file, no HTML."""
    path = tmp_path / "future" / "results.jsonl"
    path.parent.mkdir()
    head = header("future", ["torch"]).to_json_dict() | {"schema_version": SCHEMA_VERSION + 1}
    path.write_text(json.dumps(head) + "\n")
    out = tmp_path / "index.html"
    assert report_main([str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"schema {SCHEMA_VERSION + 1}" in err and "upgrade bnparity" in err
    assert not out.exists()
    from harness.cli import main as bnparity

    assert bnparity(["report", str(path), "-o", str(out)]) == 2


# one damaged line of each kind the hardening review found; each must cost that line only
DAMAGE = {
    "not an object (list)": lambda rec: "[1, 2, 3]",
    "not an object (string)": lambda rec: '"hello"',
    "not an object (null)": lambda rec: "null",
    "verdict a number": lambda rec: json.dumps({**rec, "verdict": 3}),
    "quantity null": lambda rec: json.dumps({**rec, "quantity": None}),
    "unknown kind": lambda rec: json.dumps({**rec, "kind": "mystery"}),
    "not JSON": lambda rec: '{"kind": "result", "case": ',
    "unknown field": lambda rec: json.dumps({**rec, "surprise": 1}),
}
CELL_DAMAGE = {
    "conventions a string": lambda rec: json.dumps({**rec, "conventions": "torch-like"}),
    "info a list": lambda rec: json.dumps({**rec, "info": [1, 2]}),
}
HEADER_DAMAGE = {
    "versions a list": lambda h: json.dumps({**h, "versions": ["torch"]}),
    "platform a string": lambda h: json.dumps({**h, "platform": "linux"}),
    "timings a number": lambda h: json.dumps({**h, "timings": 5}),
}


@pytest.mark.parametrize("what", [*DAMAGE, *CELL_DAMAGE, *HEADER_DAMAGE])
def test_a_damaged_line_does_not_stop_the_merged_report(what: str, two_envs: list[Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """Results files come from many machines: one bad line is left out, named, and the page says so."""
    path = two_envs[1]
    lines = path.read_text().splitlines()
    head = json.loads(lines[0])
    i_res = next(i for i, ln in enumerate(lines) if json.loads(ln)["kind"] == "result")
    i_cell = next(i for i, ln in enumerate(lines) if json.loads(ln)["kind"] == "cell")
    if what in HEADER_DAMAGE:
        i, lines[0] = 0, HEADER_DAMAGE[what](head)
    elif what in CELL_DAMAGE:
        i = i_cell
        lines[i] = CELL_DAMAGE[what](json.loads(lines[i]))
    else:
        i = i_res
        lines[i] = DAMAGE[what](json.loads(lines[i]))
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "index.html"
    assert report_main([str(tmp_path / "reports"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{path}:{i + 1}:" in err
    page = out.read_text()
    assert 'id="skipped-banner"' in page and f"{path}:{i + 1}:" in page
    model = load([tmp_path / "reports"])
    assert [len(e.skipped) for e in model.envs] == [0, 1]
    assert len(model.envs[0].adapters) == 3  # the other file renders whole


def _bench_file(path: Path, env: str) -> Path:
    head = Header(env=env, status="complete", mode="bench", threads="1",
                  machine={"cpu": "test cpu", "cores": 2, "threads_used": 1})
    recs = [Bandwidth(env=env, size_bytes=1 << 20, copy_gbs=50.0, add_gbs=40.0, copy_cv=0.01, add_cv=0.01,
                      trials=3, copy_gbs_trials=[50.0, 49.0, 48.0], threads="1", beyond_llc=False)]
    for mode in ("train_fwd", "train_fwd_bwd", "eval_fwd"):
        recs.append(Benchmark(env=env, adapter="torch", status="ok", case="cfg.float32", mode=mode, variant="default",
                              device="cpu", median_s=1e-3, min_s=9e-4, q1_s=9.5e-4, q3_s=1.1e-3, reps=10, cv=0.01,
                              stable=True, bytes=1 << 20, gbs=1.0, bw_fraction=0.02))
    return write(path, head, recs)


def test_no_plots_keeps_the_benchmark_section(two_envs: list[Path], tmp_path: Path) -> None:
    """--no-plots leaves out the figures, not the benchmark's machine and raw figures."""
    _bench_file(two_envs[0].parent / "bench.jsonl", "new")
    out = tmp_path / "np.html"
    assert report_main([str(tmp_path / "reports"), "-o", str(out), "--no-plots"]) == 0
    page = out.read_text()
    bench = page[page.index('<section id="bench">'):]
    assert "test cpu" in bench and "cfg.float32" in bench and "raw figures (3 rows)" in bench
    assert "<img" not in bench  # no figures
    with_plots = report.render_paths([tmp_path / "reports"], tmp_path / "p.html").read_text()
    assert with_plots[with_plots.index('<section id="bench">'):].count("<img") == 2


def _rec(q: Quantity, step: int | None, verdict: Verdict = Verdict.FAIL) -> Result:
    return Result(env="e", case="c", adapter="a", framework="a", quantity=q, step=step, verdict=verdict,
                  expected=1.0, observed=2.0, max_ulp_err=1e6, worst_index=[0])


def _cell(results: list[Result]) -> ReportCell:
    return ReportCell("e", "c", "a", results=[_rec(Quantity.OUTCOME, None, Verdict.PASS), *results])


@pytest.mark.parametrize("bad, first, says", [
    ([("running_var", 0), ("y_eval", 3)], "running_var", "what is stored differs"),
    ([("running_mean", 1), ("running_var", 1)], "running_mean", "running-mean update"),
    ([("running_mean", 0), ("y", 0), ("dx", 0)], "running_mean", "statistics themselves"),
    ([("y", 2), ("dx", 2)], "y", "normalization itself differs"),
    ([("dgamma", 0)], "dgamma", "backward pass"),
    ([("dx_eval", 3), ("y_eval", 3)], "y_eval", "only eval mode differs"),
    ([("running_var_eval", 3)], "running_var_eval", "changed the running statistics"),
])
def test_first_divergence(bad: list, first: str, says: str) -> None:
    results = []
    for step in range(3):
        for q in Quantity.of_phase("train"):
            results.append(_rec(q, step, Verdict.FAIL if (q, step) in bad else Verdict.PASS))
    results += [_rec(q, 3, Verdict.FAIL if (q, 3) in bad else Verdict.PASS) for q in Quantity.of_phase("eval")]
    fd = first_divergence(_cell(results))
    assert fd is not None and fd.quantity == first and says in fd.text, fd
    step = min(s for q, s in bad)
    assert fd.step == step
    if step and Quantity(first).phase == "train":
        assert f"calls 0..{step - 1} agree" in fd.text


def test_first_divergence_of_a_raise_a_nan_and_a_pass() -> None:
    raised = ReportCell("e", "c", "a", results=[Result(
        env="e", case="c", adapter="a", framework="a", quantity=Quantity.OUTCOME, verdict=Verdict.RAISED,
        exception_type="ValueError", exception_message="no", exception_stage="call 0 (train)")])
    fd = first_divergence(raised)
    assert fd and fd.text.startswith("raised during call 0 (train): ValueError: no")
    assert first_divergence(_cell([_rec(Quantity.Y, 0, Verdict.PASS)])) is None
    nan = _rec(Quantity.Y, 0)
    nan.observed = float("nan")  # schema 2: NaN at the worst element is NaN, not a missing value
    fd = first_divergence(_cell([nan]))
    assert fd and "expected 1, observed nan" in fd.text


def test_drift(two_envs: list[Path], tmp_path: Path) -> None:
    assert not orders_apart(0.2, 9.0) and orders_apart(0.2, 10.0) and not orders_apart(30.0, 299.0)
    assert orders_apart(30.0, float("inf")) and not orders_apart(None, 1e9)
    by = {(d.case, d.adapter): d for d in drift(load([tmp_path / "reports"]))}
    assert by[("dense_small", "torch")].cells["old"].verdict == Verdict.RAISED
    assert by[("dense_small", "torch")].cells["new"].verdict == Verdict.PASS
    assert by[("dense_small", "torch")].what == "verdict"
    assert fmt_ulp(0) == "0" and fmt_ulp(0.004) == "<.01" and fmt_ulp(2.345) == "2.3" and fmt_ulp(123456) == "1.2e5"


def _set(recs: list, verdict: Verdict | None = None, rest: float = 0.011, **fields) -> list:
    """The cell's y record at step 0 given ``fields`` (and ``verdict``); every other compared record
    within its bound (error/bound ``rest``) and tiny in ULPs; the cell record's verdict the worst again."""
    for r in recs:
        if isinstance(r, Result) and r.compared:
            r.error_ratio, r.max_ulp_err = rest, 0.02
            if r.quantity is Quantity.Y and r.step == 0:
                for k, v in fields.items():
                    setattr(r, k, v)
                if verdict is not None:
                    r.verdict = verdict
                    r.repro = "pytest x" if verdict.fails_run else None
    cell = next(r for r in recs if isinstance(r, Cell))
    cell.verdict = Verdict.worst(r.verdict for r in recs if isinstance(r, Result))
    return recs


def _ratio_cases(env: str = "e") -> list:
    """One cell per way the matrix's number can read, on torch."""
    ks = MismatchKind
    recs = []
    recs += _set(cell_records(_case("tiny_scale"), "torch", env, "2.13.0", _rng(1)), error_ratio=0.31,
                 max_ulp_err=1.1e47)  # an error in ulps of a quantity whose scale is ~1e-40
    recs += _set(cell_records(_case("outside"), "torch", env, "2.13.0", _rng(2)), Verdict.FAIL, error_ratio=4.2,
                 max_ulp_err=0.52, mismatch_kind=ks.VALUE)
    recs += _set(cell_records(_case("just_outside"), "torch", env, "2.13.0", _rng(3)), Verdict.FAIL,
                 error_ratio=1.0004, mismatch_kind=ks.VALUE)
    recs += _set(cell_records(_case("far_outside"), "torch", env, "2.13.0", _rng(4)), Verdict.KNOWN,
                 error_ratio=31234.0, max_ulp_err=2.0, mismatch_kind=ks.VALUE)
    recs += _set(cell_records(_case("nan_out"), "torch", env, "2.13.0", _rng(5)), Verdict.KNOWN, error_ratio=None,
                 mismatch_kind=ks.NAN, observed=float("nan"))
    recs += _set(cell_records(_case("inf_bound"), "torch", env, "2.13.0", _rng(6)), Verdict.FAIL,
                 error_ratio=float("inf"), mismatch_kind=ks.VALUE)
    recs += _set(cell_records(_case("wrong_shape"), "torch", env, "2.13.0", _rng(7)), Verdict.FAIL,
                 error_ratio=None, max_ulp_err=None, mismatch_kind=ks.SHAPE, expected_shape=[16, 4],
                 observed_shape=[4, 16])
    # the call returned where the case expects a raise: the arrays are within the bound, the verdict is F
    outcome_only = _set(cell_records(_case("outcome_fail"), "torch", env, "2.13.0", _rng(8)))
    outcome_only[0].verdict, outcome_only[0].message = Verdict.FAIL, "expected ValueError but the call returned"
    return recs + _set(outcome_only)


def _matrix_cells(page: str) -> dict[str, tuple[str, str, str]]:
    """{case: (class, text, title)} of the first column's cells in the rendered matrix; the title as the page puts
    it on the cell (cellTitle in templates/js/detail.js: the cell's name and verdict, then the blob's tip)."""
    m = page[page.index('id="matrix-table"'):page.index('id="environments"')]
    blob = _blob(page)
    col = blob["cols"][0]
    out = {}
    for r, name, cls, text in re.findall(r'<tr data-r="(\d+)"[^>]*><th class="case"[^>]*>([^<]+)</th>'
                                         r'<td class="([^"]*)" data-c="0">([^<]*)</td>', m):
        cell = blob["cells"][f"{r}:0"]
        verdict = blob["verdicts"][cell["verdict"]]["name"]
        out[name] = (cls, text, f"{name} × {col['adapter']} @ {col['env']}: {verdict}{cell['tip']}")
    return out


def test_matrix_shows_error_over_the_bound(tmp_path: Path) -> None:
    """The cell's number is error/bound (1 = on the bound), not ULPs of a quantity's near-zero scale."""
    paths = [write(tmp_path / "e" / "results.jsonl", header("e", ["torch"]), _ratio_cases())]
    page = report.render(load(paths), compress=False, plots=False)
    cells = _matrix_cells(page)
    got = {case: text for case, (_, text, _) in cells.items()}
    assert got == {"tiny_scale": "0.31", "outside": "4.2", "just_outside": "&gt;1", "far_outside": "3e4",
                   "nan_out": "NaN", "inf_bound": "inf", "wrong_shape": "shape", "outcome_fail": "F"}
    assert cells["tiny_scale"][0] == "v-pass" and cells["outside"][0] == "v-fail"
    # ULPs are still in the tooltip, with the quantity the number comes from
    assert "worst error/bound 0.31 (y of call 0 (train)); worst error 1.1e47 ulp" in cells["tiny_scale"][2]
    assert "NaN where the oracle is finite (y of call 0 (train))" in cells["nan_out"][2]
    # and in the cell's detail, per quantity (the blob keeps max_ulp_err and error_ratio)
    blob = _blob(page)
    rows = _rows(blob, _cell_of(blob, "tiny_scale", "e", "torch"))
    assert max(r["error_ratio"] for r in rows) == 0.31 and max(r["max_ulp_err"] for r in rows) == 1.1e47
    kinds = {k["name"]: k for k in blob["kinds"]}
    assert kinds["nan"]["mark"] == "NaN" and not kinds["nan"]["bounded"] and kinds["value"]["bounded"]


def test_the_cell_detail_keeps_settings_whole_and_says_what_the_case_cost(tmp_path: Path) -> None:
    """What an adapter reports reading back (epsilon, momentum) keeps its digits for the page to print as a
    person wrote it; timings are rounded; the case's own time is apart from the worker's start and import."""
    recs = cell_records(_case(momentum=0.7), "keras3-jax", "e", "3.15.1", _rng())
    cell = next(r for r in recs if isinstance(r, Cell))
    cell.info = {"epsilon": 1.0001e-05, "momentum": 0.99999, "compute_s": 0.123456}
    cell.worker, cell.wall_s, cell.case_s = {"pid": 7, "import_s": 1.5}, 1.75, 0.2
    blob = _blob(report.render(load([write(tmp_path / "e" / "results.jsonl", header("e", ["keras3-jax"]), recs)]),
                               compress=False, plots=False))
    got = _cell_of(blob, "dense_small", "e", "keras3-jax")
    assert got["settings"]["momentum"] == 1 - 0.7 and got["effective"]["momentum"] == pytest.approx(0.7)
    assert got["info"] == {"epsilon": 1.0001e-05, "momentum": 0.99999, "compute_s": 0.123,
                           "case s (in the worker)": 0.2, "import s (this worker's first case)": 1.5,
                           "round trip s (with starting the worker and the import)": 1.75}


@pytest.mark.parametrize("r, over, text", [
    (None, False, ""), (0.0, False, "0"), (0.004, False, "<.01"), (0.0123, False, "0.012"), (0.0996, False, "0.1"),
    (0.31, False, "0.31"), (0.996, False, "1"), (1.0, False, "1"), (1.0004, True, ">1"), (1.04, True, ">1"),
    (4.25, True, "4.3"), (9.96, True, "10"), (42.4, True, "42"), (994.9, True, "995"), (999.6, True, "1e3"),
    (2.5e4, True, "3e4"), (31234.0, True, "3e4"), (9.6e4, True, "1e5"), (1.2e100, True, "1e100"),
    (float("inf"), True, "inf"), (float("nan"), True, "NaN"),
])
def test_fmt_ratio(r: float | None, over: bool, text: str) -> None:
    assert fmt_ratio(r, over) == text


def _drift_cell(case: Case, env: str, version: str, verdict: Verdict, digest: str, seed: int,
                ratio: float = 3e4) -> list:
    """A cell whose running_var at step 0 is ``verdict`` with observed bits ``digest``; the other
    quantities' digests the same in every environment (same seed)."""
    recs = cell_records(case, "keras3-jax", env, version, _rng(seed), "known")
    for r in recs:
        if isinstance(r, Result) and r.compared:
            r.digest = f"{r.quantity}-{r.step}-same"
            r.verdict, r.ledger, r.error_ratio, r.max_ulp_err, r.mismatch_kind = \
                Verdict.PASS, None, 0.2, 1.0, MismatchKind.MATCH
            if r.quantity is Quantity.RUNNING_VAR and r.step == 0:
                r.verdict, r.digest, r.error_ratio, r.max_ulp_err = verdict, digest, ratio, 2e5
                r.mismatch_kind = MismatchKind.VALUE
                if verdict is Verdict.KNOWN:
                    r.ledger = LedgerRef(id="keras-var", kind="numerical weakness", reason="r", link="", observed="o",
                                         versions=">=3.10")
    return _set_cell_verdict(recs)


def _set_cell_verdict(recs: list) -> list:
    cell = next(r for r in recs if isinstance(r, Cell))
    cell.verdict = Verdict.worst(r.verdict for r in recs if isinstance(r, Result))
    return recs


def test_drift_leaves_out_what_only_the_ledger_changed(tmp_path: Path) -> None:
    """known <-> fail with the same observed bits is the ledger's version scope, not a change of behaviour;
    a changed digest, a changed magnitude, or a raise against a return is."""
    same, bits, raised, mag = _case("same_bits"), _case("new_bits"), _case("now_raises"), _case("magnitude")
    new = [*_drift_cell(same, "new", "3.15.1", Verdict.KNOWN, "aaaa", 1),
           *_drift_cell(bits, "new", "3.15.1", Verdict.KNOWN, "bbbb", 2),
           *_drift_cell(raised, "new", "3.15.1", Verdict.KNOWN, "cccc", 3),
           *_drift_cell(mag, "new", "3.15.1", Verdict.KNOWN, "dddd", 4, ratio=3e4)]
    old = [*_drift_cell(same, "old", "3.0.4", Verdict.FAIL, "aaaa", 1),   # the entry says >=3.10: fail here
           *_drift_cell(bits, "old", "3.0.4", Verdict.FAIL, "b000", 2),   # and other bits
           *cell_records(raised, "keras3-jax", "old", "3.0.4", _rng(3), "raised"),
           *_drift_cell(mag, "old", "3.0.4", Verdict.FAIL, "dddd", 4, ratio=3e4)]
    # same digest, but the error 100x apart (the oracle or the bound moved): not the ledger's alone
    next(r for r in old if isinstance(r, Result) and r.case == "magnitude" and r.digest == "dddd").max_ulp_err = 2e7
    paths = [write(tmp_path / "r" / "new" / "results.jsonl", header("new", ["keras3-jax"]), new),
             write(tmp_path / "r" / "old" / "results.jsonl", header("old", ["keras3-jax"]), old)]
    rows = {d.case: d for d in drift(load(paths))}
    assert rows["same_bits"].what == "ledger only" and rows["same_bits"].ledger_only
    assert rows["same_bits"].changed == ("running_var",)
    assert rows["new_bits"].what == "verdict" and not rows["new_bits"].ledger_only
    assert rows["now_raises"].what == "verdict"
    assert rows["magnitude"].what == "verdict"
    # the page: the drift table holds the behaviour changes only; the ledger's are listed apart
    page = report.render(load(paths), compress=False, plots=False)
    section = page[page.index('<section id="drift">'):page.index('id="portability"')]
    table = section[section.index('id="drift-table"'):section.index('id="drift-ledger"')]
    apart = section[section.index('id="drift-ledger"'):]
    assert "same_bits" not in table and all(c in table for c in ("new_bits", "now_raises", "magnitude"))
    assert "same_bits" in apart and "Ledger only: 1 cell " in apart and "new_bits" not in apart
    assert '<a href="#drift">Drift <span class="n">3</span>' in page
    # a results file without digests (older runs) cannot show the bits are the same: a behaviour change
    for p in paths:
        p.write_text(p.read_text().replace('"digest": "aaaa", ', ""))
        assert '"aaaa"' not in p.read_text()
    assert {d.case: d.what for d in drift(load(paths))}["same_bits"] == "verdict"


def test_oracle_gap_is_the_convention_difference() -> None:
    """Bessel's correction changes running_var by var/(n-1) per step and nothing upstream of it."""
    case = _case(steps=2)
    torch_sig = ("unbiased", 0.1, 1e-5)
    keras_sig = ("biased", 0.1, 1e-5)
    keras_eps = ("biased", 0.1, 1e-3)
    gaps = oracle_gaps(case.summary(), [torch_sig, keras_sig, keras_eps])
    assert gaps is not None
    g = gaps["0,1"]
    assert g["y@0"] == 0 and g["dx@1"] == 0 and g["running_mean@1"] == 0
    assert 1e-4 < g["running_var@0"] < 1e-1 and g["y_eval@2"] > 0 and g["running_var_eval@2"] == g["running_var@1"]
    assert gaps["1,2"]["y@0"] > 0 and gaps["1,2"]["running_var@0"] == 0  # eps moves y, not the stored variance
    assert bound(1e-7, 2e-7, 0.0) == (0.0, pytest.approx(3e-7))
    lo, hi = bound(1e-7, 2e-7, 1e-3)
    assert lo == pytest.approx(1e-3 - 3e-7) and hi == pytest.approx(1e-3 + 3e-7)
    assert bound(None, 1e-7, 0.0) is None
    assert oracle_gaps({"name": "not a case"}, [torch_sig, keras_sig]) is None


def test_signature_of_a_cell_record() -> None:
    """The oracle a cell ran under, from its record: the sample data takes it from the real adapters."""
    case = _case(momentum=0.2)
    torch_cell = next(r for r in cell_records(case, "torch", "e", "2.13.0", _rng()) if isinstance(r, Cell))
    keras_cell = next(r for r in cell_records(case, "keras3-jax", "e", "3.15.1", _rng()) if isinstance(r, Cell))
    assert signature(torch_cell) == ("unbiased", 0.2, 1e-5)
    est, momentum, _ = signature(keras_cell)
    assert keras_cell.settings["momentum"] == pytest.approx(0.8) and (est, momentum) == ("biased", pytest.approx(0.2))
    assert signature(None) is None


def test_defaults_vs_defaults_and_portability(tmp_path: Path) -> None:
    cases = [c for c in load_cases([REPO / "cases"]) if c.use_defaults][:1]
    assert cases, "cases/defaults.toml holds use_defaults cases"
    paths = synthetic(tmp_path, ["current"], ["torch", "keras3-jax", "flax-nnx"], cases=cases, bad_fraction=0)
    page = report.render_paths(paths, tmp_path / "d.html", compress=False).read_text()
    section = page[page.index('id="defaults"'):page.index('id="plots"')]
    assert cases[0].name in section and "baseline torch" in section
    assert section.count('class="num conv"') >= 3  # Keras' and Flax's defaults move the running statistics
    blob = _blob(page)
    gaps = blob["gaps"][str(next(i for i, c in enumerate(blob["cases"]) if c["name"] == cases[0].name))]
    sigs = [tuple(x) for x in gaps["signatures"]]
    assert len(sigs) == 3
    t = next(i for i, x in enumerate(sigs) if x[0] == "unbiased")
    for i in range(3):
        if i != t:  # torch's momentum 0.1 against Keras' and Flax's 0.99 (0.01 of the new statistic)
            assert gaps["oracle_gaps"][f"{min(i, t)},{max(i, t)}"]["running_mean@4"] > 0
    k, f = (i for i in range(3) if i != t)
    same_m = gaps["oracle_gaps"][f"{min(k, f)},{max(k, f)}"]  # Keras and Flax: same momentum, eps 1e-3 vs 1e-5
    assert same_m["running_mean@4"] == 0 and same_m["y@0"] > 0
    # the baseline is a parameter
    other = report.render(load(paths), compress=False, plots=False, baseline="flax-nnx")
    assert "baseline flax-nnx" in other[other.index('id="defaults"'):other.index('id="plots"')]


def test_no_defaults_and_no_sweeps(tmp_path: Path) -> None:
    paths = synthetic(tmp_path, ["e"], ["torch"], cases=[_case()])
    page = report.render_paths(paths, tmp_path / "x.html").read_text()
    assert "No defaults-vs-defaults cases in these results" in page
    assert "No swept cases in these results" in page


def test_sweep_plots_are_inline_svg(tmp_path: Path) -> None:
    cases = [c for c in load_cases([REPO / "cases"]) if c.sweep and c.sweep["name"] in ("eps", "batch_size")]
    paths = synthetic(tmp_path, ["a", "b"], ["torch", "flax-nnx"], cases=cases)
    page = report.render_paths(paths, tmp_path / "p.html").read_text()
    uris = re.findall(r'<img src="data:image/svg\+xml;base64,([^"]+)"', page)
    assert len(uris) == 2
    svg = base64.b64decode(uris[0]).decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "<script" not in svg
    assert "shape[0]" in page  # the batch-size sweep varies one component of the shape


def test_the_script_has_no_vocabulary_of_its_own() -> None:
    """Verdicts, their order and marks, and the result columns come from the blob, not from the JavaScript."""
    js = "\n".join((TEMPLATES / "js" / name).read_text() for name in JS)
    assert sorted(JS) == sorted(p.name for p in (TEMPLATES / "js").glob("*.js"))
    names = "|".join(re.escape(v.value) for v in Verdict)
    assert not re.findall(rf"[\"']({names})[\"']", js)
    assert not re.findall(r"\br\[\d", js)  # result rows are read by column name: r[F.max_ulp_err]


QUICK_CASES = """
[[case]]
name = "dense"
shape = [16, 4]
steps = 2
seed = 1

[[case]]
name = "batch1"
shape = [1, 4]
seed = 2
"""


def test_report_from_a_real_run(run_parity, tmp_path: Path) -> None:
    """The runner's own results file (fake adapters, one of them buggy) renders, and the blob says what ran."""
    run = run_parity(QUICK_CASES, ["NumpyBN", "MomentumFlipped"])
    results = run.path
    assert results is not None, run.result.stdout.str()
    out = report.render_paths([results], tmp_path / "index.html", compress=False)
    blob = _blob(out.read_text())
    assert {c["name"] for c in blob["cases"]} == {"dense", "batch1"}
    assert {c["adapter"] for c in blob["cols"]} == {"fake-good", "bug-momentum-flipped"}
    verdict = [v["name"] for v in blob["verdicts"]]
    for rec in run.cells:
        cell = _cell_of(blob, rec.case, "t", rec.adapter)
        assert verdict[cell["verdict"]] == rec.verdict
        rows = _rows(blob, cell)
        want = [r for r in run.results(case=rec.case, adapter=rec.adapter) if r.quantity is not Quantity.OUTCOME]
        assert len(rows) == len(want)
        assert {(blob["quantities"][r["quantity"]]["name"], r.get("step"), verdict[r["verdict"]]) for r in rows} == \
            {(r.quantity.value, r.step, r.verdict.value) for r in want}
    bug = _cell_of(blob, "dense", "t", "bug-momentum-flipped")
    assert verdict[bug["verdict"]] == "fail" and "running_mean" in bug["start"]
    assert "test_parity[bug-momentum-flipped-dense]" in bug["repro"]
    # the plugin wrote the environment's own page too (run_parity fails on "report NOT written")
    assert (results.parent / "index.html").exists()


def test_figures_are_cached_by_content(tmp_path: Path) -> None:
    """A re-render of unchanged results draws no figure; a changed sweep redraws its own figure only."""
    from harness.report.plots import PlotCache, sweep_plots

    cases = [c for c in load_cases([REPO / "cases"]) if c.sweep and c.sweep["name"] in ("eps", "batch_size")]
    paths = synthetic(tmp_path / "a", ["a", "b"], ["torch", "flax-nnx"], cases=cases)
    first = PlotCache(tmp_path / "cache")
    drawn = sweep_plots(load(paths), first)
    assert (first.drawn, first.hits) == (2, 0)
    again = PlotCache(tmp_path / "cache")
    assert sweep_plots(load(paths), again) == drawn and (again.drawn, again.hits) == (0, 2)
    other = synthetic(tmp_path / "b", ["a", "b"], ["torch", "flax-nnx"], cases=cases, seed=1)  # other errors
    changed = PlotCache(tmp_path / "cache")
    sweep_plots(load(other), changed)
    assert (changed.drawn, changed.hits) == (2, 0)
    # the command keeps its cache beside the report
    report.render_paths(paths, tmp_path / "out" / "index.html")
    assert len(list((tmp_path / "out" / ".bnparity-cache" / "plots").glob("*.uri"))) == 2


def _known(recs: list, quantity: Quantity, entry: str) -> list:
    """The cell's ``quantity`` records made ``known`` under ledger entry ``entry`` (10x outside the bound)."""
    for r in recs:
        if isinstance(r, Result) and r.quantity is quantity:
            r.verdict, r.error_ratio, r.mismatch_kind = Verdict.KNOWN, 10.0, MismatchKind.VALUE
            r.max_ulp_err = 1e4
            r.ledger = LedgerRef(id=entry, kind="framework bug", reason=f"why {entry}", link="https://example.org/1",
                                 observed="sample", versions="<3.0.5")
    cell = next(r for r in recs if isinstance(r, Cell))
    cell.verdict = Verdict.worst(r.verdict for r in recs if isinstance(r, Result))
    return recs


def test_drift_reads_as_a_story(tmp_path: Path) -> None:
    """Per adapter and pair of versions (older first, whatever the files' order): the quantities fixed or
    broken, counted in cases, and the ledger entries gone or unchanged; the per-cell rows stay below."""
    from harness.report.story import summaries

    adapter = "keras3-torch"
    cases = [_case(f"c{i}") for i in range(4)]
    new, old = [], []
    for i, c in enumerate(cases):
        n = cell_records(c, adapter, "current", "3.15.1", _rng(i), "pass")
        o = cell_records(c, adapter, "keras30", "3.0.4", _rng(10 + i), "pass")
        for recs in (n, o):  # errors far inside the bound everywhere, so only the planted changes count
            _set(recs)
        if i < 3:
            _known(o, Quantity.DX, "keras-torch-dx")  # dx fixed on 3 cases
        if i == 3:
            _set(n, Verdict.FAIL, error_ratio=50.0, max_ulp_err=1e5, mismatch_kind=MismatchKind.VALUE)  # y broken
            _known(o, Quantity.RUNNING_VAR, "one-pass-variance")  # on one case in both
            _known(n, Quantity.RUNNING_VAR, "one-pass-variance")
        new += n
        old += o
    paths = [write(tmp_path / "current" / "results.jsonl", header("current", [adapter]), new),
             write(tmp_path / "keras30" / "results.jsonl", header("keras30", [adapter]), old)]
    model = load(paths)
    (s,) = summaries(model, drift(model))
    assert s.title == "keras3-torch 3.0.4 -> 3.15.1 (keras30 -> current)"
    assert s.change_texts() == ["dx fixed on 3 cases", "y broken on 1 case"]
    assert [m.text for m in s.mechanisms] == ["keras-torch-dx gone (3 cases -> 0 cases)",
                                             "one-pass-variance unchanged (1 case)"]
    page = report.render(model, compress=False, plots=False)
    section = page[page.index('<section id="drift">'):page.index('<section id="portability">')]
    assert section.index('id="drift-summary"') < section.index('id="drift-table"')
    assert "dx fixed on 3 cases" in section and "keras-torch-dx gone" in section
    assert section.count("<tr data-adapter=") == 1 + 4  # the summary row, then the four changed cells
