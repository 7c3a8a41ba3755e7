"""The harness must flag every planted bug, and must pass a correct float32 implementation."""

from __future__ import annotations

from pathlib import Path

from tests import fakes

REPO = Path(__file__).resolve().parents[2]

CASES = """
[defaults]
steps = 3
momentum = 0.1
eps = 1e-5

[[case]]
name = "dense"
shape = [16, 4]
seed = 1

[[case]]
name = "conv2d_last"
shape = [4, 3, 5, 5]
layout = "channels_last"
seed = 2

[[case]]
name = "batch2"
shape = [2, 5]
seed = 3

[[case]]
name = "constant"
shape = [8, 3]
input = { kind = "constant", value = 3.0 }
seed = 4

[[case]]
name = "offset"
shape = [64, 3]
input = { kind = "normal", loc = 1e4, scale = 1.0 }
seed = 5

[[case]]
name = "eval_only"
shape = [8, 3]
steps = 0
running_mean = { kind = "normal", loc = 0.5, scale = 0.2 }
running_var = { kind = "uniform", low = 0.5, high = 1.5 }
seed = 6

[[case]]
name = "cumulative"
shape = [8, 3]
momentum = "cumulative"
steps = 4
seed = 7

[[case]]
name = "untracked"
shape = [8, 3]
track_running_stats = false
seed = 8

[[case]]
name = "half"
dtype = "float16"
shape = [8, 3, 2, 2]
seed = 9

[[case]]
name = "bf16"
dtype = "bfloat16"
shape = [8, 3, 2, 2]
seed = 10

[[case]]
name = "sequence"
shape = [8, 3]
calls = ["train", "eval", "eval", "train", "eval"]
seed = 12

[[case]]
name = "frozen"
shape = [8, 3]
calls = ["train", "frozen", "eval", "frozen", "train", "eval"]
seed = 13

[[case]]
name = "renorm"
shape = [16, 4]
input = { kind = "normal", loc = -2.0, scale = 3.0 }
renorm = { momentum = 0.2, rmin = 0.5, rmax = 2.0, dmax = 0.5 }
calls = ["train", "train", "eval", "train"]
seed = 14

[[case]]
name = "masked"
shape = [16, 4, 3]
layout = "channels_last"
mask = { keep = 0.5 }
calls = ["train", "train", "eval"]
seed = 15

[[case]]
name = "masked_all"
shape = [8, 3]
mask = { keep = 0.0 }
calls = ["train", "eval"]
seed = 16

[[case]]
name = "masked_channel"
shape = [8, 3, 2]
mask = { samples = [1, 1, 0, 1, 1, 0, 1, 1], masked_channels = [2] }
steps = 2
seed = 17

[[case]]
name = "ghost"
shape = [8, 3, 2]
layout = "channels_last"
virtual_batch_size = 4
input = { kind = "normal", loc = 1.0, scale = 2.0 }
calls = ["train", "train", "eval", "frozen"]
seed = 18

[[case]]
name = "double"
dtype = "float64"
shape = [8, 3, 2, 2]
input = { kind = "normal", loc = 1e4, scale = 1.0 }
seed = 11
"""

# each planted bug, the case it must be caught on, and the quantity that must flag it
EXPECT = {
    "EpsOutsideSqrt": ("dense", "y"),
    "EpsDroppedInTraining": ("dense", "y"),
    "MomentumFlipped": ("dense", "running_mean"),
    "EstimatorSwapped": ("dense", "running_var"),
    "GradIgnoresStats": ("dense", "dx"),
    "UpdatesInEval": ("dense", "y_eval"),
    "HalfPrecisionMath": ("dense", "y"),
    "EvalUsesBatchStats": ("dense", "y_eval"),
    "UpdatesAfterEval": ("sequence", "running_mean_eval"),
    "EvalNotRepeatable": ("sequence", "running_var_eval"),
    "FrozenStillUpdates": ("frozen", "running_mean_frozen"),
    "WrongRenormClipping": ("renorm", "y"),
    "IgnoresMask": ("masked", "y"),
    "GhostContiguousGroups": ("ghost", "y"),
    "GhostFoldsBatchVariance": ("ghost", "running_var"),
}


def test_correct_float32_implementation_passes_everything(run_parity):
    run = run_parity(CASES, ["NumpyBN"])
    assert run.result.ret == 0, run.result.stdout.str()[-3000:]
    assert {r.verdict for r in run.results()} == {"pass"}
    assert len({r.case for r in run.results()}) == 18


def test_every_planted_bug_is_flagged(run_parity):
    run = run_parity(CASES, list(EXPECT), "-k", "dense or sequence or frozen or renorm or ghost or (masked and not "
                                                "all and not channel)")
    out = run.result.stdout.str()
    assert run.result.ret == 1
    for cls, (case, quantity) in EXPECT.items():
        name = getattr(fakes, cls).name
        bad = run.failing_quantities(name, case)
        assert quantity in bad, f"{name}: expected {quantity} to fail on {case}, failing: {bad}"
        assert f"FAILED test_parity.py::test_parity[{name}-{case}]" in out
    # the message says what, where, by how much, and how to reproduce
    rec = next(r for r in run.results(adapter="bug-eps-outside-sqrt", case="dense", quantity="y")
               if r.verdict == "fail")
    assert "y of call 0 (train): values differ" in rec.message
    assert "Worst element (largest error over its bound) at index" in rec.message
    assert "ulp of float32" in rec.message
    assert rec.repro == 'pytest "test_parity.py::test_parity[bug-eps-outside-sqrt-dense]"'
    assert f"Reproduce: {rec.repro}" in out
    assert rec.max_abs_err > rec.threshold
    # the README shows this very message
    readme = (REPO / "README.md").read_text()
    shown = readme.split("A failure message reads like this:\n\n```\n", 1)[1].split("```", 1)[0].splitlines()
    assert shown[:-1] == rec.message.splitlines(), rec.message
    assert shown[-1] == f'  Reproduce: pytest "tests/parity/{rec.repro.split(chr(34))[1]}"'


def test_gradient_bug_leaves_forward_alone(run_parity):
    run = run_parity(CASES, ["GradIgnoresStats"], "-k", "dense")
    bad = run.failing_quantities("bug-grad-ignores-stats", "dense")
    assert "dx" in bad and "y" not in bad and "running_var" not in bad


def test_eval_calls_leave_the_state_and_repeat(run_parity):
    """An eval call must leave the running statistics as they were, and the same eval call twice in a row must
    give the same bits: a layer that drifts by one ulp passes every bound and is still caught, as ``changed``."""
    run = run_parity(CASES, ["EvalNotRepeatable", "UpdatesAfterEval", "NumpyBN"], "-k", "sequence")
    recs = {(r.adapter, r.quantity, r.step): r for r in run.results(case="sequence")}
    nudged = recs[("bug-eval-not-repeatable", "running_var_eval", 1)]
    assert (nudged.verdict, nudged.mismatch_kind) == ("fail", "changed"), nudged.message
    assert nudged.error_ratio < 1, "a one-ulp drift is inside the bound: only the bits show it"
    assert "running_var after call 1 (eval)" in nudged.message and "running_var after call 0 (train)" in nudged.message
    again = recs[("bug-eval-not-repeatable", "y_eval", 2)]
    assert (again.verdict, again.mismatch_kind) == ("fail", "changed"), again.message
    assert recs[("bug-eval-not-repeatable", "running_var", 0)].verdict == "pass"
    # folding the eval batch in after the output: that call's output is right, the state after it is not
    assert recs[("bug-updates-after-eval", "y_eval", 1)].verdict == "pass"
    assert recs[("bug-updates-after-eval", "running_mean_eval", 1)].verdict == "fail"
    assert recs[("bug-updates-after-eval", "running_mean", 3)].verdict == "fail"  # and the training after it
    # the careful fake: every call of the sequence compared, eval calls' state included, all pass
    good = [r for r in run.results(case="sequence", adapter="fake-good") if r.quantity != "outcome"]
    assert {(r.quantity, r.step) for r in good} >= {("running_mean_eval", 1), ("running_var_eval", 2), ("y_eval", 4),
                                                    ("running_mean", 3), ("dx", 0)}
    assert {r.verdict for r in good} == {"pass"}


def test_frozen_calls_follow_each_adapters_convention(run_parity):
    """A training call on a frozen layer: torch-like (batch statistics, the running statistics updated) and
    Keras-like (inference mode, left as they are) are each right for their own convention; a layer that declares
    inference but still updates is caught where its bug lives, the state after the frozen call."""
    run = run_parity(CASES, ["NumpyBN", "FrozenLikeKeras", "FrozenStillUpdates"], "-k", "frozen")
    recs = {(r.adapter, r.quantity, r.step): r for r in run.results(case="frozen")}
    for adapter in ("fake-good", "fake-frozen-inference"):
        mine = [r for (a, _, _), r in recs.items() if a == adapter and r.quantity != "outcome"]
        assert {r.verdict for r in mine} == {"pass"}, [r.message for r in mine if r.verdict != "pass"]
        assert {("y_frozen", 1), ("dx_frozen", 3), ("running_var_frozen", 1)} <= {(r.quantity, r.step) for r in mine}
        assert not any(r.quantity in ("dgamma_frozen", "dbeta_frozen") for r in mine)
    bug = "bug-frozen-still-updates"
    assert recs[(bug, "y_frozen", 1)].verdict == "pass"  # the output of the frozen call is right
    assert recs[(bug, "running_mean_frozen", 1)].verdict == "fail"  # its state is not
    # the conventions differ, so do the oracles: torch-like updates at call 1, Keras-like does not
    assert recs[("fake-good", "running_mean_frozen", 1)].digest != recs[("fake-frozen-inference",
                                                                          "running_mean_frozen", 1)].digest


def test_renorm_clipping_bug_is_flagged_where_it_lives(run_parity):
    """d clipped on one side only: y fails in every training call (d < -dmax there), dgamma with it (it sums
    g * (r xhat + d)); dx, dbeta and the moving statistics do not depend on d and pass; the correct renorm passes
    everything, eval calls included."""
    run = run_parity(CASES, ["WrongRenormClipping", "NumpyBN"], "-k", "renorm")
    recs = {(r.adapter, r.quantity, r.step): r for r in run.results(case="renorm")}
    bug = "bug-wrong-renorm-clipping"
    for step in (0, 1, 3):
        assert recs[(bug, "y", step)].verdict == "fail", step
        assert recs[(bug, "dgamma", step)].verdict == "fail", step
        for q in ("dx", "dbeta", "running_mean", "running_var"):
            assert recs[(bug, q, step)].verdict == "pass", (q, step, recs[(bug, q, step)].message)
    assert recs[(bug, "y_eval", 2)].verdict == "pass"  # eval has no d
    good = [r for (a, _, _), r in recs.items() if a == "fake-good" and r.quantity != "outcome"]
    assert {r.verdict for r in good} == {"pass"}, [r.message for r in good if r.verdict != "pass"]
    assert {("y", 0), ("running_var", 3), ("y_eval", 2)} <= {(r.quantity, r.step) for r in good}


def test_mask_bug_is_flagged_where_it_lives(run_parity):
    """A layer that takes a mask and ignores it (tf-keras fused=True does, with a warning): its masked training
    calls' y, dx and running statistics fail, and the eval after them (normalized with those statistics); on a fully
    masked batch it returns finite values where the statistics are undefined. Its unmasked case and the fully masked
    channel's other channels are right. The correct masked BN passes every masked case: NaN where no value is
    unmasked (y, dx, dgamma), a finite dbeta, the running statistics of such a channel left as they were."""
    run = run_parity(CASES, ["IgnoresMask", "NumpyBN"], "-k", "masked or dense")
    recs = {(r.adapter, r.case, r.quantity, r.step): r for r in run.results()}
    bug = "bug-ignores-mask"
    for q in ("y", "dx", "running_mean", "running_var"):
        for step in (0, 1):
            assert recs[(bug, "masked", q, step)].verdict == "fail", (q, step)
    assert recs[(bug, "masked", "y_eval", 2)].verdict == "fail"
    assert recs[(bug, "masked", "dbeta", 0)].verdict == "pass"  # sum(g) does not depend on the statistics
    nan = recs[(bug, "masked_all", "y", 0)]
    assert (nan.verdict, nan.mismatch_kind) == ("fail", "finite_where_nan"), nan.message
    assert {r.verdict for r in run.results(adapter=bug, case="dense")} == {"pass"}
    good = [r for (a, *_), r in recs.items() if a == "fake-good" and r.quantity != "outcome"]
    assert {r.case for r in good} >= {"masked", "masked_all", "masked_channel"}
    assert {r.verdict for r in good} == {"pass"}, [r.message for r in good if r.verdict != "pass"]
    undefined = recs[("fake-good", "masked_all", "y", 0)]
    assert undefined.nan_expected == undefined.total == undefined.nan_observed  # every y undefined, and NaN
    assert recs[("fake-good", "masked_channel", "dgamma", 0)].nan_expected == 1  # channel 2 only



def test_families_view_sets_frameworks_side_by_side(run_parity, tmp_path):
    """The report's Families view: per family, each adapter's declared convention (a frozen layer in inference mode
    or with batch statistics), its verdicts, and why it skipped (a framework without a mask)."""
    from harness.report.families import families, markdown
    from harness.report.model import load

    cases = """
[[case]]
name = "frozen"
shape = [8, 3]
calls = ["train", "frozen", "eval", "frozen", "train", "eval"]
tags = ["frozen"]
seed = 13

[[case]]
name = "masked_sample"
shape = [8, 3]
mask = { keep = 0.5 }
steps = 2
tags = ["frozen"]
seed = 18
"""
    run = run_parity(cases, ["NumpyBN", "FrozenLikeKeras", "RefusesLikeTorch"])
    fams = [f for f in families(load([run.path])) if f.name == "frozen"]
    assert len(fams) == 1
    rows = {r.adapter: r for r in fams[0].rows}
    assert rows["fake-frozen-inference"].does.startswith("inference: as Keras")
    assert rows["fake-good"].does.startswith("batch_statistics")
    assert rows["fake-good"].verdict_text() == "2 pass"
    refuses = rows[fakes.RefusesLikeTorch.name]
    assert sum(refuses.skips.values()) == 1 and "no mask" in next(iter(refuses.skips))
    text = markdown(fams)
    assert "| fake-frozen-inference | 2 | 2 pass |" in text and "frozen_call" in text


def test_ghost_bugs_are_flagged_where_they_live(run_parity):
    """Ghost BN over contiguous blocks instead of tf-keras's strided virtual batches: y, dx and the running variance of
    its training calls fail (other groups, other statistics), the running mean passes (the mean of equal groups'
    means is the batch mean however the samples are grouped). Folding the whole batch's variance instead of the mean
    of the group variances: only the running variance fails (and the eval after it). The correct ghost BN passes
    every call, the frozen one (a training call, torch-like) included, under either declared running update: the
    groups' averages once (tf-keras) or each group in turn (the paper's algorithm), which the oracle tells apart."""
    run = run_parity(CASES, ["GhostContiguousGroups", "GhostFoldsBatchVariance", "NumpyBN", "GhostSequential"], "-k",
                     "ghost")
    recs = {(r.adapter, r.quantity, r.step): r for r in run.results(case="ghost")}
    contiguous, folds = "bug-ghost-contiguous-groups", "bug-ghost-folds-batch-variance"
    for step in (0, 1):
        for q in ("y", "dx", "running_var"):
            assert recs[(contiguous, q, step)].verdict == "fail", (q, step)
        assert recs[(contiguous, "running_mean", step)].verdict == "pass", step
        assert recs[(folds, "running_var", step)].verdict == "fail", step
        for q in ("y", "dx", "dgamma", "dbeta", "running_mean"):
            assert recs[(folds, q, step)].verdict == "pass", (q, step, recs[(folds, q, step)].message)
    assert recs[(folds, "y_eval", 2)].verdict == "fail"  # normalized with the wrong running variance
    for adapter in ("fake-good", "fake-ghost-sequential"):
        good = [r for (a, _, _), r in recs.items() if a == adapter and r.quantity != "outcome"]
        assert {r.verdict for r in good} == {"pass"}, [r.message for r in good if r.verdict != "pass"]
        assert {("y", 0), ("running_var", 1), ("y_eval", 2), ("dx_frozen", 3)} <= {(r.quantity, r.step) for r in good}
    # the conventions differ, so do the oracles: the running statistics after the first call, and y of the eval
    for q, step in (("running_mean", 0), ("running_var", 0), ("y_eval", 2)):
        assert recs[("fake-good", q, step)].digest != recs[("fake-ghost-sequential", q, step)].digest, (q, step)
    assert recs[("fake-good", "y", 0)].digest == recs[("fake-ghost-sequential", "y", 0)].digest


SECOND_ORDER = """
[[case]]
name = "second_order"
shape = [8, 3, 4]
calls = ["train", "eval", "train"]
second_order = { direction = { kind = "normal", loc = 0.5 } }
seed = 41

[[case]]
name = "second_order_last_f64"
shape = [6, 2, 3, 3]
layout = "channels_last"
dtype = "float64"
second_order = {}
seed = 42
"""


def test_a_second_derivative_that_drops_the_mean_is_flagged_on_it_alone(run_parity):
    """A BN whose first derivatives are right but whose double backward treats the batch mean as a constant: every
    training call's hvp_x and hvp_gamma fail, y, dx, dgamma, dbeta and the state pass; the correct fake passes all,
    and the second derivatives exist for training calls only (not for the eval call)."""
    run = run_parity(SECOND_ORDER, ["NumpyBN", "DropsMeanSecondOrder"])
    assert run.result.ret == 1
    for case in ("second_order", "second_order_last_f64"):
        recs = {(r.adapter, r.quantity, r.step): r for r in run.results(case=case)}
        trains = [s for (a, q, s) in recs if a == "fake-good" and q == "dx"]
        assert trains
        for step in trains:
            for q in ("hvp_x", "hvp_gamma"):
                assert recs[("fake-good", q, step)].verdict == "pass", (case, q, step)
                assert recs[("bug-drops-mean-second-order", q, step)].verdict == "fail", (case, q, step)
        bug = [r for (a, q, _), r in recs.items() if a == "bug-drops-mean-second-order" and q != "outcome"
               and not q.startswith("hvp_")]
        assert bug and {r.verdict for r in bug} == {"pass"}, [r.message for r in bug if r.verdict != "pass"]
    assert ("fake-good", "hvp_x", 1) not in {(r.adapter, r.quantity, r.step) for r in run.results(case="second_order")}
