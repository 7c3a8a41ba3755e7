"""Each adapter's declared precision (``Adapter.precision``) against the dtypes its framework returns.

The oracle's bound is built from the declaration, so a declaration that is not what the framework does
would loosen or tighten it without anyone seeing. Every adapter runs float16 and bfloat16 cases in the pure
and the mixed policy (and float32 / float64) through the harness's own worker; the dtype of every array it
returns must be the declared one: y and dx ``output``, the running statistics ``running``, dgamma and dbeta
``params``. The one declared exception: flax-nnx with ``dtype`` set rounds dgamma / dbeta to it inside a
float32 container (``FlaxAdapter.precision``), so there ``params`` may be narrower than the stored dtype.
Needs the frameworks (marker ``frameworks``: tox's ``current`` env runs it).
"""

from __future__ import annotations

import pytest

from harness import runner
from harness.cases import Case
from harness.workers import Workers
from tests.unit.conftest import framework_adapters, installed_adapter

pytestmark = pytest.mark.frameworks

FIELD = {"y": "output", "dx": "output", "running_mean": "running", "running_var": "running",
         "dgamma": "params", "dbeta": "params"}
BODIES = ([{"dtype": dt, "precision": policy} for dt in ("float16", "bfloat16") for policy in ("pure", "mixed")]
          + [{"dtype": "float32"}, {"dtype": "float64"}])


def _names() -> list[str]:
    try:
        return sorted(framework_adapters())
    except Exception:  # a broken BNPARITY_ADAPTERS: the parity suite says so
        return []


@pytest.mark.parametrize("name", _names())
def test_returned_dtypes_are_the_declared_ones(name: str, workers: Workers) -> None:
    adapter, spec = installed_adapter(name)
    checked = 0
    for body in BODIES:
        case = Case.model_validate({"name": "declared_precision", "shape": [8, 3, 2, 2], "steps": 1, "seed": 7,
                                    **body})
        if adapter.supports(case):  # refused (declared and checked in test_declared_frameworks) or not expressible
            continue
        declared = adapter.precision(case).as_dict()
        res = runner.run_cell(case, adapter, spec, workers, env="selftest", ledger=[], timeout=300, repro="")
        for r in res.records:
            field = FIELD.get(str(getattr(r, "quantity", "")).removesuffix("_eval"))
            if field is None or not getattr(r, "observed_dtype", None):
                continue
            allowed = {declared[field]}
            if field == "params" and name.startswith("flax-nnx"):
                allowed.add(case.resolved_param_dtype)
            assert r.observed_dtype in allowed, (body, str(r.quantity), r.observed_dtype, declared)
            checked += 1
    assert checked
