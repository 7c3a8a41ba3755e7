"""Compiled, exported and other non-eager paths: which adapters a run takes, and what a path leaves out."""

from __future__ import annotations

import pytest

from harness.adapters.base import PATHS, select
from harness.schema import Cell, MismatchKind, Quantity, Result, Verdict

SPECS = {"torch": "m:a", "torch-compile": "m:b", "torch-onnxruntime": "m:c", "flax-linen": "m:d",
         "torch-dp": "m:e"}
PATH = {"torch": "eager", "torch-compile": "compiled", "torch-onnxruntime": "exported", "flax-linen": "eager",
        "torch-dp": "distributed"}


def test_a_run_takes_the_eager_adapters_unless_others_are_asked_for():
    assert list(select(SPECS, None, PATH.get)) == ["torch", "flax-linen"]
    assert list(select(SPECS, None, PATH.get, frozenset({"torch-dp"}))) == ["torch", "flax-linen", "torch-dp"]


@pytest.mark.parametrize("wanted, chosen", [
    ("torch*", ["torch", "torch-compile", "torch-onnxruntime", "torch-dp"]),
    ("path:compiled", ["torch-compile"]),
    ("path:exported,flax-linen", ["torch-onnxruntime", "flax-linen"]),
    ("path:*", list(SPECS)),
    ("path:graph", []),  # a path with no adapter here is not an error: this environment may not install it
])
def test_names_globs_and_paths_select_adapters(wanted, chosen):
    assert list(select(SPECS, wanted, PATH.get)) == chosen


@pytest.mark.parametrize("wanted, says", [("tensorflow", "no adapter matches ['tensorflow']"),
                                          ("path:jit", "the paths are eager, graph")])
def test_an_unknown_name_or_path_is_an_error_that_says_what_exists(wanted, says):
    with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("]", r"\]")):
        select(SPECS, wanted, PATH.get)
    assert "compiled" in PATHS


CASES = """
[[case]]
name = "export_after_training"
shape = [6, 3, 4]
calls = ["train", "train", "eval", "eval"]
"""


def test_a_path_that_declares_what_it_omits_is_judged_on_the_rest(run_parity):
    run = run_parity(CASES, ["InferenceExport"])
    assert run.result.ret == 0, run.result.stdout.str()
    cell = next(r for r in run.records if isinstance(r, Cell))
    assert (cell.path, cell.source) == ("exported", "fake-good")
    assert set(cell.omits) == {"dx_eval", "dgamma_eval", "dbeta_eval"}
    judged = {r.quantity for r in run.records if isinstance(r, Result)}
    assert Quantity.Y_EVAL in judged and Quantity.RUNNING_VAR_EVAL in judged and Quantity.DX in judged
    assert not judged & {Quantity.DX_EVAL, Quantity.DGAMMA_EVAL, Quantity.DBETA_EVAL}


def test_a_path_that_leaves_out_a_quantity_without_saying_so_fails_on_it(run_parity):
    run = run_parity(CASES, ["ExportOmitsUndeclared"])
    assert run.result.ret == 1
    missing = {(r.quantity, r.step) for r in run.records
               if isinstance(r, Result) and r.mismatch_kind == MismatchKind.MISSING and r.verdict == Verdict.FAIL}
    assert missing == {(q, s) for q in (Quantity.DX_EVAL, Quantity.DGAMMA_EVAL, Quantity.DBETA_EVAL) for s in (2, 3)}


def test_the_paths_view_pairs_each_path_with_its_eager_adapter(run_parity, tmp_path):
    """Eager passes everywhere; an export that keeps the layer's eps is bit-identical to it in eval, one that writes
    its own default eps fails in eval on every case: the view says which path parts from eager, and where."""
    from harness.report import paths
    from harness.report.model import load
    from harness.report.page import render

    cases = CASES + """
[[case]]
name = "export_channels_last"
shape = [5, 4, 3]
layout = "channels_last"
calls = ["train", "eval"]
seed = 4
"""
    run = run_parity(cases, ["NumpyBN", "InferenceExport", "ExportLosesEps"])
    assert run.result.ret == 1
    model = load([run.path])
    (group,) = paths.path_groups(model)
    assert group.source == "fake-good"
    rows = {r.adapter: r for r in group.rows}
    good, bad = rows["fake-export"], rows["bug-export-loses-eps"]
    assert (good.cases, good.both_ok, good.path_fails) == (2, 2, 0)
    assert good.identical == good.compared > 0  # the same arithmetic as eager, in eval too
    assert (bad.cases, bad.both_ok, bad.path_fails) == (2, 0, 2)
    assert {d.case for d in bad.diffs} == {"export_after_training", "export_channels_last"}
    assert all(d.eager is Verdict.PASS and d.path is Verdict.FAIL for d in bad.diffs)
    assert all(lbl.startswith("y of call") for d in bad.diffs for lbl in d.failing)
    assert set(bad.omits) == {"dx_eval", "dgamma_eval", "dbeta_eval"}
    # the cost beside eager's, from the cells' info: the fakes compile nothing, so no compile part is claimed
    assert good.compute_s > 0 and good.eager_compute_s > 0 and (good.compile_s, good.compiles) == (0.0, 0)
    assert paths.cost_text(good) == f"{good.compute_s:.2f} s; eager {good.eager_compute_s:.2f} s"  # fakes: < 1 s
    text = paths.markdown([group])
    assert "| bug-export-loses-eps | exported | 2 | 0 | 2 | 0 | 0 | 0 |" in text
    assert "| bug-export-loses-eps | export_channels_last | pass" in text
    page = render(model, plots=False)
    assert 'id="paths"' in page and "bug-export-loses-eps: 2 cases where it and fake-good part" in page


def test_without_paths_the_page_has_no_paths_section(run_parity):
    from harness.report.model import load
    from harness.report.page import render

    run = run_parity(CASES, ["NumpyBN"])
    assert 'id="paths"' not in render(load([run.path]), plots=False)
