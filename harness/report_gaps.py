"""How far apart two adapters' outputs can be, from what results files hold.

Results keep metrics against each adapter's own oracle, not the arrays, so the
distance between two adapters' outputs is bounded, not measured:

    |a - b| <= |a - oracle_a| + |oracle_a - oracle_b| + |oracle_b - b|

per element, hence ``max|a - b| <= err_a + gap + err_b`` with ``err`` the recorded
``max_abs_err`` and ``gap = max|oracle_a - oracle_b|``, and by the same triangle
``max|a - b| >= gap - err_a - err_b``. The gap is zero when both adapters run under
the same effective momentum, eps and running-variance estimator; when they do not
(framework defaults, Bessel correction) it is recomputed here from the case
parameters with the float64 oracle, which needs no framework.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

Signature = tuple[str, Any, float]  # (running_var_estimator, effective momentum or "cumulative", eps)


def signature(meta: dict[str, Any] | None) -> Signature | None:
    """The settings that decide a cell's oracle, from its ``cell`` record."""
    if not meta:
        return None
    eff = meta.get("effective") or {}
    conv = meta.get("conventions") or {}
    est, m, eps = conv.get("running_var_estimator"), eff.get("momentum"), eff.get("eps")
    if est is None or m is None or eps is None:
        return None
    return (str(est), m if isinstance(m, str) else float(m), float(eps))


def _maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| where NaN matches NaN and an infinity matches itself; a NaN against a number is inf."""
    with np.errstate(invalid="ignore", over="ignore"):
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        d = np.where(same, 0.0, np.abs(a - b))
    d = np.where(np.isnan(d), np.inf, d)
    return float(d.max()) if d.size else 0.0


def oracle_gaps(case_params: dict[str, Any], sigs: list[Signature]) -> dict[str, dict[str, float]] | None:
    """``{"i,j": {"quantity@step": max|oracle_i - oracle_j|}}`` for every pair of distinct signatures.

    None when the case cannot be rebuilt by this version of the harness (a results file written
    by another version may hold fields this one does not know).

        >>> g = oracle_gaps(params, [("unbiased", 0.1, 1e-5), ("biased", 0.1, 1e-5)])
        >>> g["0,1"]["running_var@0"]   # Bessel's n/(n-1) on the stored variance
    """
    from harness import inputs
    from harness.cases import Case
    from harness.expected import expected_quantities

    try:
        case = Case.model_validate(case_params)
        data = inputs.build(case)
        values = []
        for est, m, eps in sigs:
            exp = expected_quantities(case, data, est, m, eps)
            values.append({f"{q}@{'' if s is None else s}": e.value for (q, s), e in exp.items()})
    except Exception:
        return None
    out: dict[str, dict[str, float]] = {}
    for i in range(len(sigs)):
        for j in range(i + 1, len(sigs)):
            out[f"{i},{j}"] = {k: _maxdiff(values[i][k], values[j][k]) for k in values[i] if k in values[j]}
    return out


class GapCache:
    """Oracle gaps per (case parameters, signatures), computed once per report."""

    def __init__(self) -> None:
        self._memo: dict[str, dict[str, dict[str, float]] | None] = {}

    def get(self, case_params: dict[str, Any], sigs: list[Signature]) -> dict[str, dict[str, float]] | None:
        key = json.dumps([case_params, sigs], sort_keys=True, default=str)
        if key not in self._memo:
            self._memo[key] = oracle_gaps(case_params, sigs)
        return self._memo[key]


def bound(err_a: float | None, err_b: float | None, gap: float | None) -> tuple[float, float] | None:
    """(lower, upper) bound on max|a - b| from the two recorded errors and the oracle gap."""
    if err_a is None or err_b is None or gap is None:
        return None
    if any(math.isnan(v) for v in (err_a, err_b, gap)):
        return None
    return max(gap - err_a - err_b, 0.0), gap + err_a + err_b
