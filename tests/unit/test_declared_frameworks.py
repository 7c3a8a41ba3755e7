"""What the adapters declare their frameworks refuse or raise, checked on the real frameworks.

A declared refusal (``Adapter.refuses``) turns a configuration into a skip, and a declared raise
(``Conventions.single_value_training`` / ``zero_eps_training``) into the expected outcome, so a
declaration that is no longer true would hide what the framework does. Here every declared
(input dtype, parameter dtype) pair the adapter can express is run through the harness's own
worker with an ``expect_raise`` built from the declaration (type and message, verbatim): it must
come out ``expected-raise``. Every pair an adapter runs (declares nothing against) must return.
Each declared raise is triggered the ways ``Conventions.raises_on`` reads it and must come out
``expected-raise`` with no ``expect_raise`` in the case. Needs the frameworks (marker
``frameworks``: tox's ``current`` env runs it).
"""

from __future__ import annotations

import re

import pytest

from harness import runner
from harness.adapters.base import load_spec
from harness.cases import Case
from harness.schema import Quantity, Verdict
from harness.workers import Workers
from tests.unit.conftest import framework_adapters, installed_adapter

pytestmark = pytest.mark.frameworks

DTYPES = ("float16", "bfloat16", "float32", "float64")




def _declaring() -> list[str]:
    try:
        specs = framework_adapters()
        # the distributed adapters run data-parallel cases only: the refusals they inherit are checked on their source
        return sorted(n for n, s in specs.items() if getattr(load_spec(s), "refuses", ())
                      and getattr(load_spec(s), "path", "eager") != "distributed")
    except Exception:  # a broken BNPARITY_ADAPTERS: the parity suite says so
        return []


def _outcome(case: Case, adapter, spec: str, workers: Workers):
    res = runner.run_cell(case, adapter, spec, workers, env="selftest", ledger=[], timeout=300, repro="")
    return next(r for r in res.records if r.quantity == Quantity.OUTCOME)


@pytest.mark.parametrize("name", _declaring())
def test_every_declared_refusal_is_what_the_framework_raises(name: str, workers: Workers) -> None:
    adapter, spec = installed_adapter(name)
    checked, runs = [], []
    for x in DTYPES:
        for p in DTYPES:
            body = {"name": f"refusal_{x}_{p}", "shape": [4, 3, 2, 2], "dtype": x, "param_dtype": p, "steps": 1,
                    "seed": 3}
            refusal = adapter.refusal(Case.model_validate(body))
            if refusal:
                body["expect_raise"] = {name: {"type": refusal.type,
                                               "match": "|".join(map(re.escape, refusal.messages))}}
            case = Case.model_validate(body)
            if adapter.supports(case):  # not expressible through this adapter (a Keras dtype policy, a rank)
                continue
            out = _outcome(case, adapter, spec, workers)
            if refusal:
                checked.append((x, p))
                assert out.verdict == Verdict.EXPECTED_RAISE, (x, p, out.message)
            else:
                runs.append((x, p))
                assert out.exception_type is None, (x, p, out.message)
    assert checked, f"{name} declares refusals but none could be run to check"
    print(f"{name}: refuses {sorted(checked)}; runs {sorted(runs)}")


def _raising() -> list[str]:
    try:
        specs = framework_adapters()
        return sorted(n for n, s in specs.items() if load_spec(s).conventions.raises_on(
            Case.model_validate({"name": "c", "shape": [1, 3], "eps": 0.0}), 0.0)
            and getattr(load_spec(s), "path", "eager") != "distributed")  # (checked on their source, as above)
    except Exception:
        return []


# cases that trigger each declared raise: in training, 2D and 4D channels-last, and in eval without running
# statistics; eps = 0 with and without affine parameters
TRIGGERS = {
    "single_value_training": [{"shape": [1, 3]}, {"shape": [1, 3, 1, 1], "layout": "channels_last"},
                              {"shape": [1, 3], "steps": 0, "track_running_stats": False}],
    "zero_eps_training": [{"shape": [8, 3], "eps": 0.0}, {"shape": [8, 3, 2, 2], "eps": 0.0, "affine": False}],
}


@pytest.mark.parametrize("name", _raising())
def test_every_declared_raise_is_what_the_framework_raises(name: str, workers: Workers) -> None:
    adapter, spec = installed_adapter(name)
    checked = 0
    for field, bodies in TRIGGERS.items():
        if getattr(adapter.conventions, field) == "computes":
            continue
        for body in bodies:
            case = Case.model_validate({"name": "declared", "steps": 2, "seed": 5, **body})
            assert adapter.conventions.raises_on(case, adapter.effective(case)[1]), (field, body)
            if adapter.supports(case):
                continue
            out = _outcome(case, adapter, spec, workers)
            assert out.verdict == Verdict.EXPECTED_RAISE, (field, body, out.message)
            checked += 1
    assert checked


# the same configurations with no training call and running statistics (eval only): eager frameworks compute them,
# and a path that still raises (a training-mode export traces the module in training mode) must declare it
EVAL_ONLY = [{"shape": [1, 3], "steps": 0}, {"shape": [1, 3, 1, 1], "layout": "channels_last", "steps": 0},
             {"shape": [4, 3], "steps": 0, "eps": 0.0}]


@pytest.mark.parametrize("name", _raising())
def test_eval_only_cases_raise_exactly_where_declared(name: str, workers: Workers) -> None:
    adapter, spec = installed_adapter(name)
    checked = 0
    for body in EVAL_ONLY:
        case = Case.model_validate({"name": "eval_only_declared", "seed": 6, **body})
        if adapter.supports(case):
            continue
        declared = adapter.conventions.raises_on(case, adapter.effective(case)[1])
        out = _outcome(case, adapter, spec, workers)
        want = Verdict.EXPECTED_RAISE if declared else Verdict.PASS
        assert out.verdict == want, (body, declared, out.message)
        checked += 1
    assert checked


def test_tf_keras_fused_refuses_renorm_in_the_words_the_skip_quotes(workers: Workers) -> None:
    """tf-keras-fused skips renorm cases quoting the constructor's ValueError: a case that expects that raise runs,
    and must come out expected-raise (a tf-keras that starts accepting fused renorm fails this)."""
    from harness.adapters.tf_keras import FUSED_RENORM_RAISES

    adapter, spec = installed_adapter("tf-keras-fused")
    body = {"name": "fused_renorm", "shape": [4, 3, 2, 2], "steps": 1, "renorm": {"rmax": 2.0}}
    assert "fused=True" in (adapter.supports(Case.model_validate(body)) or "")
    body["expect_raise"] = {"tf-keras-fused": {"type": FUSED_RENORM_RAISES.type, "match": FUSED_RENORM_RAISES.match}}
    out = _outcome(Case.model_validate(body), adapter, spec, workers)
    assert out.verdict == Verdict.EXPECTED_RAISE, out.message


def test_tf_keras_fused_refuses_virtual_batches_in_the_words_the_skip_quotes(workers: Workers) -> None:
    """tf-keras-fused skips ghost-BN cases quoting the constructor's ValueError: a case that expects that raise runs,
    and must come out expected-raise (a tf-keras whose fused path starts taking virtual_batch_size fails this)."""
    from harness.adapters.tf_keras import FUSED_VIRTUAL_RAISES

    adapter, spec = installed_adapter("tf-keras-fused")
    body = {"name": "fused_ghost", "shape": [4, 3, 2, 2], "layout": "channels_last", "steps": 1,
            "virtual_batch_size": 2}
    assert "fused=True" in (adapter.supports(Case.model_validate(body)) or "")
    body["expect_raise"] = {"tf-keras-fused": {"type": FUSED_VIRTUAL_RAISES.type,
                                               "match": FUSED_VIRTUAL_RAISES.match}}
    out = _outcome(Case.model_validate(body), adapter, spec, workers)
    assert out.verdict == Verdict.EXPECTED_RAISE, out.message
