"""``[difference.when]``: the conditions of a mechanism, measured on the case and its inputs (no framework).

What each condition measures (``case_facts``), how a condition holds, the errors a malformed one gives
(file, entry and field), and that an entry is judged ``stale`` only where its conditions hold.
"""

from __future__ import annotations

import math

import pytest

from harness.cases import Case, CaseError
from harness.ledger import Entry, When, apply_ledger, case_facts, load_ledger
from harness.schema import Result, Verdict

ENTRY = """[[difference]]
id = "d1"
adapter = "torch"
quantity = ["y", "running_var", "y_eval"]
kind = "numerical weakness"
observed = "what was measured"
reason = "why it happens"
link = "https://github.com/pytorch/pytorch/issues/1"
evidence = ["c"]
"""


def case(**kw) -> Case:
    return Case.model_validate({"name": "c", "shape": [16, 3], "seed": 1, **kw})


def entry(when: dict, **kw) -> Entry:
    return Entry.model_validate({"id": "d1", "adapter": "torch", "quantity": ["y", "running_var", "y_eval"],
                                 "kind": "numerical weakness", "observed": "o", "reason": "r",
                                 "link": "https://github.com/pytorch/pytorch/issues/1", "when": when,
                                 **({"evidence": ["c"]} | kw)})


# -- what is measured ----------------------------------------------------------------------------------

def test_offset_ratio_is_the_largest_mean_over_std_of_any_channel_and_step():
    f = case_facts(case(input={"kind": "normal", "loc": 100.0, "scale": 1.0}, shape=[256, 3]))
    assert 90 < f.offset_ratio < 130
    assert case_facts(case()).offset_ratio < 1.5
    narrow = case(input={"kind": "normal", "loc": 1.0, "scale": 0.01}, shape=[256, 3], seed=2)
    assert 90 < case_facts(narrow).offset_ratio < 130


def test_a_constant_non_zero_channel_is_an_infinite_offset_ratio_a_zero_one_none():
    one = case(channel_overrides=[{"channels": [1], "input": {"kind": "constant", "value": -2.0}}])
    assert case_facts(one).offset_ratio == math.inf
    assert case_facts(case(input={"kind": "constant", "value": 0.0})).offset_ratio == 0.0
    # in float32, 1e7 + 0.01 * N(0, 1) rounds to 1e7: constant as the framework sees it
    assert case_facts(case(input={"kind": "normal", "loc": 1e7, "scale": 0.01})).offset_ratio == math.inf


def test_no_training_step_measures_only_what_the_eval_call_is_fed():
    """No batch is normalized with its own statistics (offset_ratio 0), but the eval batch and the initial
    running statistics are fed to the layer (max_abs)."""
    f = case_facts(case(steps=0, input={"kind": "normal", "loc": 1e4, "scale": 1.0}))
    assert f.offset_ratio == 0.0 and 9e3 < f.max_abs < 1.1e4 and f.steps == 0 and f.nonfinite == ("none",)
    untracked = case_facts(case(steps=1, track_running_stats=False, input={"kind": "constant", "value": 2.0},
                                eval_input={"kind": "normal", "loc": 0.0, "scale": 1.0}))
    assert untracked.offset_ratio == math.inf  # the training batch is constant (the eval batch is not)
    big_rm = case_facts(case(steps=0, running_mean={"kind": "constant", "value": 5e5}))
    assert big_rm.max_abs == 5e5


def test_max_abs_and_nonfinite():
    huge = case_facts(case(input={"kind": "normal", "loc": 0.0, "scale": 1e30}))
    assert 1e30 < huge.max_abs < 1e31 and huge.nonfinite == ("none",)
    inf = case_facts(case(specials=[{"value": "inf", "index": [0, 0]}]))
    assert inf.max_abs == math.inf and inf.nonfinite == ("inf",)
    nan = case_facts(case(specials=[{"value": "nan", "index": [0, 0]}]))
    assert nan.max_abs < 10 and nan.nonfinite == ("nan",) and math.isfinite(nan.offset_ratio)
    # beyond float16's range the cast makes inf: that is what the framework sees
    assert case_facts(case(dtype="float16", input={"kind": "constant", "value": 1e5})).nonfinite == ("inf",)


def test_case_fields_as_facts():
    f = case_facts(case(dtype="float16", shape=[4, 3, 5], layout="channels_last", affine=False, momentum=0.5,
                        eps=1e-3, steps=2))
    assert (f.dtype, f.policy, f.layout, f.affine, f.count, f.momentum, f.eps, f.steps) == (
        "float16", "mixed", "channels_last", False, 20, 0.5, 1e-3, 2)
    assert case_facts(case(momentum="cumulative")).momentum is None


# -- how a condition holds -----------------------------------------------------------------------------

@pytest.mark.parametrize("when,kw,holds", [
    ({"dtype": "float64"}, {"dtype": "float64"}, True),
    ({"dtype": "float64"}, {}, False),
    ({"dtype": ["float16", "bfloat16"]}, {"dtype": "bfloat16"}, True),
    ({"policy": "mixed"}, {"dtype": "float16"}, True),
    ({"policy": "mixed"}, {"dtype": "float16", "precision": "pure"}, False),
    ({"policy": "custom"}, {"param_dtype": "float64"}, True),
    ({"layout": "channels_last"}, {"layout": "channels_last"}, True),
    ({"affine": False}, {}, False),
    ({"track_running_stats": True}, {}, True),
    ({"count": {"min": 3}}, {"shape": [2, 3]}, False),
    ({"count": {"max": 2}}, {"shape": [1, 3, 2]}, True),
    ({"count": {"min": 3, "not_in": [16.0]}}, {}, False),
    ({"steps": {"min": 1}}, {"steps": 0}, False),
    ({"eps": {"max": 0.0}}, {"eps": 0.0}, True),
    ({"momentum": {"not_in": [0.0, 0.5, 1.0]}}, {"momentum": 0.5}, False),
    ({"momentum": {"not_in": [0.0, 0.5, 1.0]}}, {"momentum": 0.2}, True),
    ({"momentum": {"min": 0.0}}, {"momentum": "cumulative"}, False),  # a range holds for a number only
    ({"offset_ratio": {"min": 10.0, "max": 1e12}}, {"input": {"kind": "normal", "loc": 50.0}}, True),
    ({"offset_ratio": {"min": 10.0, "max": 1e12}}, {"input": {"kind": "constant", "value": 3.0}}, False),
    ({"offset_ratio": {"min": 1e12}}, {"input": {"kind": "constant", "value": 3.0}}, True),
    ({"max_abs": {"min": 1.85e19}}, {"input": {"kind": "normal", "scale": 1e25}}, True),
    ({"max_abs": {"min": 1.85e19}}, {"input": {"kind": "normal", "scale": 1e15}}, False),
    ({"nonfinite": "none"}, {"specials": [{"value": "nan", "index": [1, 1]}]}, False),
    ({"nonfinite": ["inf", "nan"]}, {"specials": [{"value": "nan", "index": [1, 1]}]}, True),
    ({"dtype": "float32", "steps": {"min": 1}, "count": {"min": 100}}, {}, False),  # all must hold
    ({"rank": {"max": 3}}, {}, True),
    ({"rank": {"max": 3}}, {"shape": [2, 3, 4, 4]}, False),
    ({"rank": {"min": 5}}, {"shape": [2, 3, 2, 2, 2]}, True),
    ({"center": False}, {"affine": False}, True),
    ({"center": False}, {"scale": True, "center": False}, True),
    ({"center": False}, {}, False),
    ({"frozen": True}, {"calls": ["train", "frozen", "eval"]}, True),
    ({"frozen": True}, {}, False),
    ({"cumulative": True}, {"momentum": "cumulative"}, True),
    ({"cumulative": True}, {"momentum": 0.1}, False),
    ({"renorm": True}, {"renorm": {"momentum": 0.2, "rmax": 2.0}}, True),
    ({"renorm": True}, {}, False),
    ({"equal_initializers": True}, {"gamma": {"kind": "constant", "value": 1.0}}, True),  # gamma == running var 1
    ({"equal_initializers": True}, {"beta": {"kind": "constant", "value": 0.0}}, True),  # beta == running mean 0
    ({"equal_initializers": True}, {}, False),  # drawn gamma and beta
    ({"equal_initializers": True}, {"gamma": {"kind": "constant", "value": 1.0}, "affine": False}, False),
])
def test_condition(when, kw, holds):
    c = case(**kw)
    assert When.model_validate(when).holds(case_facts(c)) is holds
    assert entry(when).applies(c, "torch", "2.13.0") is holds


def test_other_scopes_still_narrow_an_entry_with_conditions():
    e = entry({"dtype": "float32"}, cases="offset_*", versions=">=2.0")
    assert not e.applies(case(), "torch", "2.13.0")  # name
    assert e.applies(case(name="offset_x"), "torch", "2.13.0")
    assert not e.applies(case(name="offset_x"), "torch", "1.13.0")  # version
    assert not e.applies(case(name="offset_x"), "tf-raw", "2.13.0")  # adapter


def test_conditions_are_described_in_words():
    w = When.model_validate({"dtype": ["float16", "bfloat16"], "momentum": {"not_in": [0.5]},
                             "offset_ratio": {"min": 10.0, "max": 1e12}})
    assert w.describe() == "dtype float16|bfloat16; momentum not 0.5; offset_ratio >= 10 and <= 1e+12"


# -- errors: file, entry, field ------------------------------------------------------------------------

BAD = [
    ("empty when", "[difference.when]\n", ["field 'when'", "at least one condition"]),
    ("unknown condition", "[difference.when]\ncolour = \"red\"\n", ["field 'when.colour'", "unknown field"]),
    ("dtype not a dtype", "[difference.when]\ndtype = \"float8\"\n", ["field 'when.dtype", "float16"]),
    ("policy not a policy", "[difference.when]\npolicy = [\"half\"]\n", ["field 'when.policy.0'", "pure"]),
    ("affine a string", "[difference.when]\naffine = \"yes\"\n", ["field 'when.affine'", "true or false"]),
    ("range a number", "[difference.when]\ncount = 3\n", ["field 'when.count'", "table"]),
    ("empty range", "[difference.when]\ncount = {}\n", ["field 'when.count.min'", "min, max or not_in"]),
    ("min above max", "[difference.when]\ncount = { min = 4, max = 2 }\n", ["field 'when.count.max'", ">= min"]),
    ("inf bound", "[difference.when]\nmax_abs = { min = inf }\n", ["field 'when.max_abs.min'", "finite"]),
    ("negative bound", "[difference.when]\neps = { min = -1.0 }\n", ["field 'when.eps.min'", "greater than"]),
    ("unknown range key", "[difference.when]\nsteps = { least = 1 }\n", ["field 'when.steps.least'", "unknown"]),
    ("not_in a string", "[difference.when]\nmomentum = { not_in = [\"0.5\"] }\n",
     ["field 'when.momentum.not_in.0'", "number"]),
    ("nonfinite unknown", "[difference.when]\nnonfinite = \"inf_only\"\n", ["field 'when.nonfinite", "none"]),
    ("unscoped", "", ["field 'cases'", "scoped", "[difference.when]"]),
]


@pytest.mark.parametrize("what,tail,must", BAD, ids=[b[0] for b in BAD])
def test_bad_conditions_name_file_entry_and_field(tmp_path, what, tail, must):
    f = tmp_path / "known_differences.toml"
    f.write_text(ENTRY + tail)
    with pytest.raises(CaseError) as ei:
        load_ledger(f)
    msg = str(ei.value)
    assert msg.startswith(f"{f}: difference 'd1': "), msg
    for m in must:
        assert m in msg, (m, msg)


def test_good_conditions_load(tmp_path):
    f = tmp_path / "l.toml"
    f.write_text(ENTRY + "[difference.when]\ndtype = \"float64\"\ncount = { min = 2 }\n"
                 "momentum = { not_in = [0, 0.5] }\n")
    (e,) = load_ledger(f)
    assert e.when.dtype == ("float64",) and e.when.count.min == 2 and e.when.momentum.not_in == (0, 0.5)


# -- stale only where the conditions hold --------------------------------------------------------------

def records(c: Case, verdicts: dict[str, Verdict]) -> list[Result]:
    ids = dict(env="e", case=c.name, adapter="torch", framework="torch", framework_version="2.13.0")
    return [Result(**ids, quantity="outcome", verdict=Verdict.PASS)] + [
        Result(**ids, quantity=q, step=None if q.endswith("_eval") else 0, verdict=v) for q, v in verdicts.items()]


PASSING = {"y": Verdict.PASS, "running_var": Verdict.PASS, "y_eval": Verdict.PASS}


def test_a_mechanism_entry_is_judged_in_its_evidence_cases_only():
    """Where its conditions hold and nothing differs, a mechanism entry is stale in the cases where the mechanism
    is known to show (``evidence``) and not judged elsewhere: a numerical mechanism need not exceed the bound on
    every case where it can occur, and a run of other cases cannot vouch for it either way."""
    e = entry({"dtype": "float64", "steps": {"min": 1}}, evidence=["c", "witness_*"])
    for name in ("c", "witness_1"):
        c = case(name=name, dtype="float64")
        (stale,) = apply_ledger(c, "torch", "2.13.0", [e], records(c, PASSING))
        assert stale.verdict == Verdict.STALE and "one of its evidence cases" in stale.message
        assert "its conditions hold: dtype float64; steps >= 1" in stale.message
    other = case(name="someone_elses", dtype="float64")
    assert apply_ledger(other, "torch", "2.13.0", [e], records(other, PASSING)) == []
    # where it explains a failure, in an evidence case or not, it is known and never stale
    for c in (case(name="c", dtype="float64"), other):
        recs = records(c, {**PASSING, "y": Verdict.FAIL})
        assert apply_ledger(c, "torch", "2.13.0", [e], recs) == []
        assert [r.verdict for r in recs if r.quantity == "y"] == [Verdict.KNOWN]


def test_an_entry_that_names_its_cases_is_judged_in_them():
    e = entry({"dtype": "float64"}, cases="c")
    c = case(dtype="float64")
    (stale,) = apply_ledger(c, "torch", "2.13.0", [e], records(c, PASSING))
    assert stale.verdict == Verdict.STALE and "a case it names" in stale.message


def test_a_mechanism_entry_must_name_its_evidence(tmp_path):
    f = tmp_path / "l.toml"
    f.write_text(ENTRY.replace('evidence = ["c"]\n', "") + "[difference.when]\ndtype = \"float64\"\n")
    with pytest.raises(CaseError) as ei:
        load_ledger(f)
    assert "field 'evidence': name the cases where the mechanism shows" in str(ei.value)


def test_an_entry_is_not_judged_where_its_conditions_do_not_hold():
    e = entry({"dtype": "float64", "steps": {"min": 1}, "momentum": {"not_in": [0.0, 0.5]}})
    for c in (case(), case(dtype="float64", steps=0), case(dtype="float64", momentum=0.5)):
        # eval-only (y_eval compared, nothing differs), another dtype, a momentum where the mechanism is exact
        assert apply_ledger(c, "torch", "2.13.0", [e], records(c, PASSING)) == [], c


def test_a_failure_outside_the_conditions_stays_a_fail():
    e = entry({"dtype": "float64"})
    c = case()
    recs = records(c, {**PASSING, "y": Verdict.FAIL})
    assert apply_ledger(c, "torch", "2.13.0", [e], recs) == []
    assert [r.verdict for r in recs if r.quantity == "y"] == [Verdict.FAIL]


def test_a_failure_inside_the_conditions_is_known_and_only_in_the_quantities_listed():
    e = entry({"dtype": "float64"})
    c = case(dtype="float64")
    recs = records(c, {**PASSING, "y": Verdict.FAIL, "dx": Verdict.FAIL})
    assert apply_ledger(c, "torch", "2.13.0", [e], recs) == []
    got = {r.quantity: r.verdict for r in recs}
    assert got["y"] == Verdict.KNOWN and got["dx"] == Verdict.FAIL  # dx: not a quantity the entry explains


def test_the_case_data_given_is_what_is_measured():
    from harness import inputs

    c = case(name="measured_once", input={"kind": "normal", "loc": 1e3, "scale": 1.0})
    data = inputs.build(c)
    assert case_facts(c, data) is case_facts(c)  # computed once per case


def test_every_catalogue_entry_states_the_conditions_of_its_mechanism():
    from pathlib import Path

    ledger = load_ledger(Path(__file__).resolve().parents[2] / "cases" / "known_differences.toml")
    assert ledger and all(e.when is not None for e in ledger), [e.id for e in ledger if e.when is None]
    assert not [e.id for e in ledger if e.tags]  # a tag covered every quantity of every tagged case


def test_the_state_and_a_frozen_calls_results_are_covered_as_the_call_runs():
    """The running statistics after an eval or frozen call are the state a training entry speaks of (unless an eval
    call changed them: that is a mechanism of its own); a frozen call's y is a training y or an eval y, as the
    adapter declares."""
    e = entry({"dtype": "float32"})  # covers y, running_var, y_eval
    assert e.covers("running_var_eval") and e.covers("running_var_frozen")
    assert not e.covers("running_var_eval", same_state=False)
    assert not e.covers("y_frozen")  # without the adapter's convention nothing says which y it is
    assert e.covers("y_frozen", frozen_call="batch_statistics") and e.covers("y_frozen", frozen_call="inference")
    only_eval = entry({"dtype": "float32"}, quantity=["dx_eval"])
    assert only_eval.covers("dx_frozen", frozen_call="inference")
    assert not only_eval.covers("dx_frozen", frozen_call="batch_statistics")
