"""Where an outcome's expectation comes from, besides the case's ``expect_raise``: the adapter's
declared conventions (``single_value_training``, ``zero_eps_training``) and the configurations it
declares its framework refuses (``Adapter.refuses``, read by ``supports``).

Run on fake adapters (``tests/fakes.py``): ``fake-refuses`` raises where it declares it does, as
torch does; ``fake-declares-but-computes`` declares the same and computes, so its declaration is
wrong and must fail the run. None of these cases lists ``expect_raise`` unless its name says so.
"""

from __future__ import annotations

import pytest

from harness.adapters.base import COMPUTES, Conventions, Raises
from harness.cases import Case
from harness.schema import Quantity, Verdict
from tests import fakes

CASES = """
[defaults]
shape = [16, 4]
steps = 2

[[case]]
name = "one_value"
description = "N * spatial == 1 in training"
shape = [1, 4]
seed = 1

[[case]]
name = "one_value_eval_only"
description = "no training step: no call normalizes with batch statistics"
shape = [1, 4]
steps = 0
seed = 2

[[case]]
name = "one_value_untracked_eval"
description = "no running statistics: eval normalizes with the batch statistics"
shape = [1, 4]
steps = 0
track_running_stats = false
seed = 3

[[case]]
name = "eps_zero"
description = "eps = 0 in training"
eps = 0.0
seed = 4

[[case]]
name = "eps_zero_eval_only"
description = "eps = 0, eval only"
eps = 0.0
steps = 0
seed = 5

[[case]]
name = "half_params"
description = "a configuration fake-refuses declares it refuses"
param_dtype = "float16"
seed = 6

[[case]]
name = "half_params_expect_raise"
description = "the same, but the case asks to see the raise"
param_dtype = "float16"
seed = 7
[case.expect_raise.fake-refuses]
type = "RuntimeError"
match = "no kernel for float16 parameters"

[[case]]
name = "one_value_expect_raise_other"
description = "the case's own expect_raise wins over the declared convention"
shape = [1, 4]
seed = 8
[case.expect_raise.fake-refuses]
type = "RuntimeError"
match = "something else"
"""


def _outcome(run, adapter: str, case: str):
    (rec,) = run.results(adapter=adapter, case=case, quantity=Quantity.OUTCOME)
    return rec


def test_declared_raises_are_the_expected_outcome(run_parity):
    run = run_parity(CASES, ["RefusesLikeTorch"], "-k", "one_value or eps_zero")
    a = fakes.RefusesLikeTorch.name
    for case in ("one_value", "one_value_untracked_eval", "eps_zero"):
        out = _outcome(run, a, case)
        assert out.verdict == Verdict.EXPECTED_RAISE, (case, out.message)
        assert "as the adapter declares for" in out.message and out.exception_type == "ValueError"
    assert _outcome(run, a, "one_value_untracked_eval").exception_stage == "call 0 (eval)"
    # where nothing normalizes with batch statistics, the declaration does not apply: the values are compared
    for case in ("one_value_eval_only", "eps_zero_eval_only"):
        assert run.verdicts(a, case) == {Verdict.PASS}, case
    # the case's own expect_raise wins: the declared ValueError is not what this case expects
    other = _outcome(run, a, "one_value_expect_raise_other")
    assert other.verdict == Verdict.RAISED and "the case expects RuntimeError" in other.message
    assert {c.case for c in run.cells if c.verdict.fails_run} == {"one_value_expect_raise_other"}


def test_a_refused_configuration_is_a_skip_with_the_framework_s_words(run_parity):
    run = run_parity(CASES, ["RefusesLikeTorch"], "-k", "half_params")
    a = fakes.RefusesLikeTorch.name
    skip = _outcome(run, a, "half_params")
    assert skip.verdict == Verdict.SKIP, skip.message
    assert skip.message.startswith("fake-refuses: numpy refuses float32 input with float16 parameters: RuntimeError: "
                                   "no kernel for float16 parameters (source: tests/fakes.py"), skip.message
    # a case that expects the raise runs the refused configuration and checks it
    assert _outcome(run, a, "half_params_expect_raise").verdict == Verdict.EXPECTED_RAISE
    assert run.result.ret == 0


def test_a_declared_raise_that_does_not_happen_fails(run_parity):
    run = run_parity(CASES, ["DeclaresButComputes"], "-k", "one_value or eps_zero")
    a = fakes.DeclaresButComputes.name
    for case, what in (("one_value", "one value per channel in training"),
                       ("one_value_untracked_eval", "one value per channel in training"),
                       ("eps_zero", "eps = 0 in training")):
        out = _outcome(run, a, case)
        assert out.verdict == Verdict.FAIL, (case, out.message)
        assert out.message.startswith(f"the adapter declares that {what} raises ValueError matching "), out.message
        assert out.message.endswith("but the call returned normally")
    for case in ("one_value_eval_only", "eps_zero_eval_only"):
        assert run.verdicts(a, case) == {Verdict.PASS}, case
    assert run.result.ret == 1


def _case(**kw) -> Case:
    return Case.model_validate({"name": "c", "shape": [16, 4], **kw})


def test_raises_on_is_scoped_to_calls_with_batch_statistics():
    conv = fakes.RefusesLikeTorch.conventions
    assert [w for w, _ in conv.raises_on(_case(shape=[1, 4]), 1e-5)] == ["one value per channel in training"]
    assert [w for w, _ in conv.raises_on(_case(shape=[1, 4, 1, 1]), 0.0)] == [
        "one value per channel in training", "eps = 0 in training"]
    assert conv.raises_on(_case(shape=[1, 4, 2]), 1e-5) == []  # two values per channel
    assert conv.raises_on(_case(shape=[1, 4], steps=0), 0.0) == []
    assert len(conv.raises_on(_case(shape=[1, 4], steps=0, track_running_stats=False), 0.0)) == 2
    assert fakes.TORCH_LIKE.raises_on(_case(shape=[1, 4]), 0.0) == []  # declares "computes"


def test_a_bare_raises_is_refused():
    """A declared raise names the exception: the old string form says nothing to check."""
    with pytest.raises(TypeError, match="Raises"):
        Conventions("weight_of_new", "biased", 1e-5, 0.1, "channels_first", single_value_training="raises")
    assert Conventions("weight_of_new", "biased", 1e-5, 0.1, "channels_first").zero_eps_training == COMPUTES
    assert Raises("ValueError", "more than 1").matches("ValueError", "Expected more than 1 value")
