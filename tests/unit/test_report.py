"""The HTML report, on hand-made and synthetic results files (the reproducer scripts: test_repro.py)."""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from harness import report, repro
from harness.cases import Case, load_cases
from harness.report_gaps import bound, oracle_gaps, signature
from harness.report_model import Cell, drift, first_divergence, fmt_ulp, load, magnitude, orders_apart, resolve
from harness.report_sample import cell_records, conventions_for, header, settings_for, synthetic, write

REPO = Path(__file__).resolve().parents[2]
EVIL = '<script>window.__pwned = 1</script>'
EVIL_MSG = 'boom </script><script>window.__pwned = 2</script> <!-- & "quotes"'


def _case(name: str = "dense_small", **kw) -> Case:
    body = {"name": name, "shape": [16, 4], "seed": 3, "tags": ["structure", "dense"], **kw}
    return Case.model_validate(body)


def _rng(k: int = 0) -> np.random.Generator:
    return np.random.default_rng(k)


def _evil_records(env: str) -> list[dict]:
    """A cell whose case name and exception message are markup: both must render as text."""
    case = _case("evil")
    recs = cell_records(case, "torch", env, "2.13.0", _rng(9), "raised")
    for r in recs:
        r["case"] = EVIL
        if r.get("quantity") == "outcome":
            r["exception_message"] = EVIL_MSG
            r["message"] = f"unexpected exception during train step 0: ValueError: {EVIL_MSG}"
        if r["kind"] == "cell":
            r["case_params"] = {**r["case_params"], "name": EVIL, "description": EVIL_MSG}
    return recs


@pytest.fixture
def two_envs(tmp_path: Path) -> list[Path]:
    """env 'new' (complete) and env 'old' (interrupted) with every kind of verdict, drift between them,
    a <script> case name, an unsafe ledger link and a record of an unknown kind."""
    dense, conv = _case(), _case("conv_cl", shape=[4, 3, 2, 2], layout="channels_last", tags=["structure", "rank4"])
    new: list[dict] = []
    new += cell_records(dense, "torch", "new", "2.13.0", _rng(1), "pass")
    new += cell_records(dense, "keras3-jax", "new", "3.15.1", _rng(2), "fail")
    new += cell_records(conv, "torch", "new", "2.13.0", _rng(3), "known")
    new += cell_records(conv, "keras3-jax", "new", "3.15.1", _rng(4), "crashed")
    new += cell_records(conv, "flax-nnx", "new", "0.12.8", _rng(5), "skip")
    new += cell_records(dense, "flax-nnx", "new", "0.12.8", _rng(6), "stale")
    new += _evil_records("new")
    for r in new:
        if r.get("ledger"):
            r["ledger"]["link"] = "javascript:alert(1)"
    new.append({"kind": "benchmark", "adapter": "torch", "median_s": 0.001})
    old: list[dict] = []
    old += cell_records(dense, "torch", "old", "2.1.0", _rng(7), "raised")
    old += cell_records(dense, "keras3-jax", "old", "3.0.4", _rng(8), "fail")
    h_new = header("new", ["torch", "keras3-jax", "flax-nnx"])
    h_new["versions"].update({"torch": "2.13.0", "keras": "3.15.1", "flax": "0.12.8"})
    h_old = header("old", ["torch", "keras3-jax"], status="interrupted")
    h_old["versions"].update({"torch": "2.1.0", "keras": "3.0.4"})
    return [write(tmp_path / "reports" / "new" / "results.jsonl", h_new, new),
            write(tmp_path / "reports" / "old" / "results.jsonl", h_old, old)]


def _blob(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="bn-data" data-encoding="([^"]+)">(.*?)</script>', page, re.S)
    assert m, "the data blob is missing"
    if m.group(1) == "gzip+base64":
        return json.loads(gzip.decompress(base64.b64decode(m.group(2))))
    return json.loads(m.group(2))


def test_render_merged_report(two_envs: list[Path], tmp_path: Path) -> None:
    out = report.render_paths([tmp_path / "reports"], tmp_path / "index.html", compress=False)
    page = out.read_text()
    # partial environment is flagged loudly, with its status
    assert "PARTIAL" in page and 'id="partial-banner"' in page
    assert "<code>old</code> did not complete (status <code>interrupted</code>)" in page
    # framework versions of every environment
    for v in ("2.13.0", "3.15.1", "0.12.8", "2.1.0", "3.0.4"):
        assert f"<dd>{v}</dd>" in page
    # the matrix: one column per (env, adapter), cells coloured by worst verdict, ULPs or a symbol
    assert page.count('class="ad-h sorter"') == 5
    for verdict in ("pass", "fail", "known", "crashed", "skip", "stale", "raised"):
        assert f'class="v-{verdict}"' in page
    # the unknown record kind is reported as ignored, not fatal
    assert "benchmark ×1" in page
    # drift: dense_small on torch raised in 'old' and passes in 'new'
    drift_html = page[page.index('id="drift"'):page.index('id="portability"')]
    assert "dense_small" in drift_html and "raised" in drift_html and "verdict" in drift_html
    # where it starts: the failing keras3-jax cell diverges in running_var at step 0
    starts = page[page.index('id="starts"'):page.index('id="drift"')]
    assert "batch variance -&gt; running_var" in starts
    assert "what is stored differs" in starts


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
        names = [c["n"] for c in blob["cases"]]
        assert EVIL in names
        cell = next(v for k, v in blob["cells"].items() if blob["cases"][int(k.split(":")[0])]["n"] == EVIL)
        assert cell["o"]["e"] == EVIL_MSG
        # a javascript: ledger link never becomes an href
        assert all(e["link"] is None for e in blob["ledger"].values())
        assert 'href="javascript:' not in page


def test_blob_detail_is_complete(two_envs: list[Path], tmp_path: Path) -> None:
    blob = _blob(report.render(load([tmp_path / "reports"]), compress=False))
    cols = [tuple(c) for c in blob["cols"]]
    rows = {c["n"]: i for i, c in enumerate(blob["cases"])}
    cell = blob["cells"][f"{rows['dense_small']}:{cols.index(('new', 'keras3-jax'))}"]
    q = blob["quantities"]
    # every quantity per step: 3 steps x 6 train quantities + 2 eval
    assert len(cell["r"]) == 20
    assert {q[r[0]] for r in cell["r"]} == {"running_mean", "running_var", "y", "dx", "dgamma", "dbeta",
                                            "y_eval", "dx_eval"}
    bad = [r for r in cell["r"] if blob["verdicts"][r[2]] == "fail"]
    assert bad and all(r[8] is not None and r[9] is not None and r[10] is not None for r in bad)
    # the conventions as used: momentum as passed (Keras: 1 - m), effective weight-of-new momentum, eps, axis
    assert cell["set"]["momentum"] == pytest.approx(0.9) and cell["eff"]["momentum"] == pytest.approx(0.1)
    assert blob["conventions"][cell["k"]]["running_var_estimator"] == "biased"
    assert "running_var" in cell["start"]
    # the reproducer template for every adapter, filled in the page from the case JSON
    case_json = blob["cases"][rows["dense_small"]]["j"]
    text = blob["templates"]["torch"].replace(blob["placeholder"], case_json)
    assert text == repro.script(json.loads(case_json), "torch")
    compile(text, "repro.py", "exec")
    # the crashed cell carries its exit code and stderr tail
    crashed = blob["cells"][f"{rows['conv_cl']}:{cols.index(('new', 'keras3-jax'))}"]
    assert crashed["o"]["x"] == -11 and "Segmentation fault" in crashed["o"]["tail"]


def test_compressed_blob_round_trips(two_envs: list[Path], tmp_path: Path) -> None:
    model = load([tmp_path / "reports"])
    plain, packed = report.render(model, compress=False), report.render(model, compress=True)
    assert 'data-encoding="json"' in plain and 'data-encoding="gzip+base64"' in packed
    assert _blob(plain) == _blob(packed)


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
    p.write_text("\n".join(json.dumps(r) for r in recs) + '\n{"kind": "result", "ca')
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
    assert report.main([str(tmp_path / "reports"), "-o", str(out), "--no-plots"]) == 0
    assert out.exists() and "PARTIAL: old" in capsys.readouterr().out
    assert report.main([str(tmp_path / "missing"), "-o", str(out)]) == 2


def _cell(results: list[dict]) -> Cell:
    return Cell("e", "c", "a", results=[{"verdict": "pass", "quantity": "outcome", "step": None}, *results])


def _r(q: str, step: int | None, verdict: str = "fail") -> dict:
    return {"quantity": q, "step": step, "verdict": verdict, "expected": 1.0, "observed": 2.0, "max_ulp_err": 1e6,
            "worst_index": [0]}


@pytest.mark.parametrize("bad, first, says", [
    ([("running_var", 0), ("y_eval", None)], "running_var", "what is stored differs"),
    ([("running_mean", 1), ("running_var", 1)], "running_mean", "running-mean update"),
    ([("running_mean", 0), ("y", 0), ("dx", 0)], "running_mean", "statistics themselves"),
    ([("y", 2), ("dx", 2)], "y", "normalization itself differs"),
    ([("dgamma", 0)], "dgamma", "backward pass"),
    ([("dx_eval", None), ("y_eval", None)], "y_eval", "only eval mode differs"),
])
def test_first_divergence(bad: list, first: str, says: str) -> None:
    results = []
    for step in range(3):
        for q in ("running_mean", "running_var", "y", "dx", "dgamma", "dbeta"):
            results.append(_r(q, step, "fail" if (q, step) in bad else "pass"))
    results += [_r(q, None, "fail" if (q, None) in bad else "pass") for q in ("y_eval", "dx_eval")]
    fd = first_divergence(_cell(results))
    assert fd is not None and fd["quantity"] == first and says in fd["text"]
    step = min((s for q, s in bad if s is not None), default=None)
    assert fd["step"] == step
    if step:
        assert f"train steps 0..{step - 1} agree" in fd["text"]


def test_first_divergence_of_a_raise_and_a_pass() -> None:
    raised = Cell("e", "c", "a", results=[{"quantity": "outcome", "step": None, "verdict": "raised",
                                            "exception_type": "ValueError", "exception_message": "no",
                                            "exception_stage": "train step 0"}])
    fd = first_divergence(raised)
    assert fd and fd["text"].startswith("raised during train step 0: ValueError: no")
    assert first_divergence(_cell([_r("y", 0, "pass")])) is None


def test_magnitude_and_drift(two_envs: list[Path], tmp_path: Path) -> None:
    assert magnitude(0.3) == magnitude(1.0) == "<=1" and magnitude(3.0) == magnitude(9.9) == "1e0"
    assert magnitude(12.0) == "1e1" and magnitude(None) == "-" and magnitude(float("inf")) == "inf"
    assert not orders_apart(0.2, 9.0) and orders_apart(0.2, 10.0) and not orders_apart(30.0, 299.0)
    assert orders_apart(30.0, float("inf")) and not orders_apart(None, 1e9)
    rows = drift(load([tmp_path / "reports"]))
    by = {(r["case"], r["adapter"]): r for r in rows}
    assert by[("dense_small", "torch")]["values"]["old"]["verdict"] == "raised"
    assert by[("dense_small", "torch")]["values"]["new"]["verdict"] == "pass"
    assert fmt_ulp(0) == "0" and fmt_ulp(0.004) == "<.01" and fmt_ulp(2.345) == "2.3" and fmt_ulp(123456) == "1.2e5"


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
    assert 1e-4 < g["running_var@0"] < 1e-1 and g["y_eval@"] > 0
    assert gaps["1,2"]["y@0"] > 0 and gaps["1,2"]["running_var@0"] == 0  # eps moves y, not the stored variance
    assert bound(1e-7, 2e-7, 0.0) == (0.0, pytest.approx(3e-7))
    lo, hi = bound(1e-7, 2e-7, 1e-3)
    assert lo == pytest.approx(1e-3 - 3e-7) and hi == pytest.approx(1e-3 + 3e-7)
    assert bound(None, 1e-7, 0.0) is None
    assert oracle_gaps({"name": "not a case"}, [torch_sig, keras_sig]) is None


def test_defaults_vs_defaults_and_portability(tmp_path: Path) -> None:
    cases = [c for c in load_cases([REPO / "cases"]) if c.use_defaults][:1]
    assert cases, "cases/defaults.toml holds use_defaults cases"
    paths = synthetic(tmp_path, ["current"], ["torch", "keras3-jax", "flax-nnx"], cases=cases, bad_fraction=0)
    page = report.render_paths(paths, tmp_path / "d.html", compress=False).read_text()
    section = page[page.index('id="defaults"'):page.index('id="plots"')]
    assert cases[0].name in section and "baseline torch" in section
    assert section.count('class="num conv"') >= 3  # Keras' and Flax's defaults move the running statistics
    blob = _blob(page)
    gaps = blob["gaps"][str(next(i for i, c in enumerate(blob["cases"]) if c["n"] == cases[0].name))]
    sigs = [tuple(x) for x in gaps["sigs"]]
    assert len(sigs) == 3
    t = next(i for i, x in enumerate(sigs) if x[0] == "unbiased")
    for i in range(3):
        if i != t:  # torch's momentum 0.1 against Keras' and Flax's 0.99 (0.01 of the new statistic)
            assert gaps["d"][f"{min(i, t)},{max(i, t)}"]["running_mean@4"] > 0
    k, f = (i for i in range(3) if i != t)
    same_m = gaps["d"][f"{min(k, f)},{max(k, f)}"]  # Keras and Flax: same momentum, eps 1e-3 vs 1e-5
    assert same_m["running_mean@4"] == 0 and same_m["y@0"] > 0


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


def test_settings_match_the_adapter_base() -> None:
    """The sample data maps momentum like Adapter.mapped, so the report's labels are checked on real shapes."""
    from tests.fakes import NumpyBN

    case = _case(momentum=0.2)
    settings, eff = settings_for(case, conventions_for("torch"))
    a = NumpyBN()
    assert settings["momentum"] == a.mapped(case).momentum and eff["momentum"] == a.effective(case)[0]
    assert signature({"effective": eff, "conventions": conventions_for("torch")}) == ("unbiased", 0.2, 1e-5)
