"""Expected quantities for one (case, adapter): the oracle under the adapter's conventions,
with an element-wise error bound for each quantity.

The tolerance model
-------------------
A stable BN in a working precision with unit roundoff ``u`` (float32 for
float16/bfloat16/float32 cases, float64 for float64 cases: every framework
accumulates low-precision inputs in float32) makes errors that follow from
the conditioning of the input, not from a per-case constant. Per channel,
with ``A = max|x|``, ``s = sqrt(var + eps)``, ``G = max|g|`` and
``k = 2 + log2(n)`` (the growth of a pairwise reduction over ``n`` values):

* batch mean: ``k u A``; biased batch variance (two-pass):
  ``k u var + (k u A)^2`` (the variance is insensitive to first order to an
  error in the mean, so only its square enters);
* ``y = gamma (x - mean) / s + beta``: ``k u |gamma| A / s + k u |gamma xhat|
  + u |beta|``. ``A / s`` is the condition number: a mean offset of 1e4 over
  a unit spread costs four digits in any precision, and the bound says so;
* running statistics: ``r_t = (1 - w) r_(t-1) + w f b_t`` (``w`` the weight of the new
  statistic, ``f`` the Bessel factor of the declared estimator) is linear in its inputs, so
  its error obeys the same recurrence: ``e_t = (1 - w) e_(t-1) + w f e(b_t)``, plus one
  rounding to the stored dtype per step (``ulp_of(r_t)``);
* ``dx = gamma / s (g - mean(g) - xhat mean(g xhat))``: each of the three terms in the
  bracket is a reduction or a product over ``n`` values bounded by ``G``, ``G`` and
  ``G max|xhat|^2``; ``xhat`` itself carries the error of ``x - mean`` (``A / s`` relative to
  ``s``), giving ``k u |gamma| / s * G * (2 + A / s + max|xhat|^2)``; ``dgamma = sum(g xhat)``:
  ``k u sum|g| (A / s + max|xhat|)``; ``dbeta = sum(g)``: ``k u sum|g|``;
* eval mode uses the stored statistics: ``y = gamma (x - rm) / sqrt(rv + eps) + beta`` is a
  subtraction, a multiplication and an addition (three roundings of ``|gamma xhat|``, hence the
  ``3`` there), ``k u |gamma| (A + |rm|) / s`` for the conditioning, and the running
  statistics' own error: ``|gamma| e(rm) / s`` and, through
  ``d(1/sqrt(v + eps))/dv = -1 / (2 (v + eps)^(3/2))``, a relative ``e(rv) / (2 (rv + eps))`` of
  ``|gamma xhat|``; ``dx = g gamma / s`` (three roundings, plus that relative error);
  ``dgamma = sum(g (x - rm) / s)``: ``k u sum|g| ((A + |rm|) / s + max|xhat|)`` plus
  ``sum|g| e(rm) / s`` and ``|dgamma| e(rv) / (2 (rv + eps))``; ``dbeta``: ``k u sum|g|``.

What the bound assumes, and where a correct implementation can still exceed it (measured by
``tests/unit/test_margins.py`` and stated in the README):

* summation order: ``k = 2 + log2 n`` is the growth of a pairwise (tree) reduction. A
  sequential float32 sum grows like ``n`` in the worst case and ``sqrt(n)`` typically, so at
  large ``n`` (hundreds of thousands of values per channel) or a large ``|mean| / spread``
  (``offset_narrow_1e7``) a correct sequential implementation can exceed the bound;
* overflow: a result beyond the dtype's range must be stored as the same infinity
  (``harness.compare``); an intermediate that overflows (the float32 squared deviations of
  ``huge_float32``) is not admitted: the bound is for the mathematically defined result.

Each bound is multiplied by ``SAFETY`` (the constant of the standard
floating-point error bounds, which are worst cases up to a small factor), and
rounding of the result to its stored dtype adds one ulp at the element's
magnitude (``2 u_out |value|``, or the subnormal spacing near zero). A case may widen the bound with a
``tolerance`` override, by a factor above 1 and at most 100 (``harness.cases.MAX_TOLERANCE_FACTOR``), only
with a written reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import reference as ref
from harness.cases import Case
from harness.inputs import CaseData, finfo

SAFETY = 4.0


def unit_roundoff(dtype: str) -> float:
    """u = 2**-p for a p-bit significand (half the machine epsilon)."""
    return float(finfo(dtype).eps) / 2.0


def ulp_of(value: np.ndarray, dtype: str) -> np.ndarray:
    """One ulp of ``dtype`` at each |value| (2u|v|, and the subnormal spacing near zero)."""
    fi = finfo(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.maximum(2 * unit_roundoff(dtype) * np.abs(value), float(fi.smallest_subnormal))


def compute_dtype(case_dtype: str) -> str:
    return "float64" if case_dtype == "float64" else "float32"


@dataclass
class Expected:
    value: np.ndarray  # float64
    tol: np.ndarray  # float64, broadcastable to value
    dtype: str  # dtype whose ulps measure this quantity


def _per_channel(a: np.ndarray, axis: int, fn) -> np.ndarray:
    axes = tuple(i for i in range(a.ndim) if i != axis % a.ndim)
    with np.errstate(invalid="ignore"):
        return fn(a, axis=axes)


def expected_quantities(case: Case, data: CaseData, estimator: str, momentum: float | str,
                        eps: float) -> dict[tuple[str, int | None], Expected]:
    """Oracle values and bounds for every quantity an adapter reports.

    ``momentum`` is the weight of the new statistic (or ``"cumulative"``) and
    ``eps`` the value the framework actually uses; ``estimator`` is the
    adapter's declared running-variance estimator.
    """
    ax = data.channel_axis
    nd = len(case.shape)
    b = lambda v: ref._bcast(v, nd, ax)  # noqa: E731
    n = case.count
    k = 2.0 + math.log2(max(n, 1))
    uc = unit_roundoff(compute_dtype(case.dtype))
    pd = case.resolved_param_dtype
    C = SAFETY * (case.tolerance.factor if case.tolerance else 1.0)
    gamma, beta = data.f64("gamma"), data.f64("beta")
    rm, rv = data.f64("running_mean"), data.f64("running_var")
    tol_rm = np.zeros_like(rm)
    tol_rv = np.zeros_like(rv)
    out: dict[tuple[str, int | None], Expected] = {}
    absmax = lambda a: _per_channel(np.abs(a), ax, np.max)  # noqa: E731
    abssum = lambda a: _per_channel(np.abs(a), ax, np.sum)  # noqa: E731

    def train_like(x, g):
        """Train-mode y and grads with bounds, plus the batch stats and their bounds."""
        y, mean, var = ref.train_forward(x, gamma, beta, eps, ax)
        dx, dgamma, dbeta = ref.train_backward(x, g, gamma, eps, ax)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            s = np.sqrt(var + eps)
            A, G = absmax(x), absmax(g)
            xhat = (x - b(mean)) / b(s)
            xmax = absmax(xhat)
            tol_y = C * uc * (k * b(np.abs(gamma) * A / s) + k * np.abs(b(gamma) * xhat) + b(np.abs(beta)))
            tol_dx = C * uc * k * b(np.abs(gamma) / s * G * (2 + A / s + xmax**2))
            tol_dg = C * uc * k * abssum(g) * (A / s + xmax)
            tol_db = C * uc * k * abssum(g)
            tol_mean = C * uc * k * A
            tol_var = C * (uc * k * var + (uc * k * A) ** 2)
        q = {"y": Expected(y, tol_y + ulp_of(y, case.dtype), case.dtype),
             "dx": Expected(dx, tol_dx + ulp_of(dx, case.dtype), case.dtype)}
        if case.affine:
            q["dgamma"] = Expected(dgamma, tol_dg + ulp_of(dgamma, pd), case.resolved_param_dtype)
            q["dbeta"] = Expected(dbeta, tol_db + ulp_of(dbeta, pd), case.resolved_param_dtype)
        return q, mean, var, tol_mean, tol_var

    for step in range(case.steps):
        x, g = data.f64("x", step), data.f64("g", step)
        q, mean, var, tmean, tvar = train_like(x, g)
        out.update({(name, step): e for name, e in q.items()})
        if case.track_running_stats:
            m = momentum if momentum != "cumulative" else None
            rm, rv = ref.update_running(rm, rv, mean, var, n, m, estimator, num_batches_tracked=step + 1)
            w = 1.0 / (step + 1) if m is None else m
            f = ref.bessel_factor(n, estimator)
            with np.errstate(invalid="ignore"):
                tol_rm = (1 - w) * tol_rm + w * tmean + ulp_of(rm, pd)
                tol_rv = (1 - w) * tol_rv + w * f * tvar + ulp_of(rv, pd)
            out[("running_mean", step)] = Expected(rm, tol_rm, case.resolved_param_dtype)
            out[("running_var", step)] = Expected(rv, tol_rv, case.resolved_param_dtype)

    x, g = data.f64("x_eval"), data.f64("g_eval")
    if not case.track_running_stats:
        # nothing stored: eval normalizes with the batch statistics (PyTorch semantics)
        q = train_like(x, g)[0]
        out.update({(f"{name}_eval", None): e for name, e in q.items()})
        return out
    y = ref.eval_forward(x, gamma, beta, rm, rv, eps, ax)
    dx, dgamma, dbeta = ref.eval_backward(x, g, gamma, rm, rv, eps, ax)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        s = np.sqrt(rv + eps)
        xhat = (x - b(rm)) / b(s)
        A = absmax(x)
        # compute error + what the running statistics' own error does to the output
        tol_y = (C * uc * (k * b(np.abs(gamma) * (A + np.abs(rm)) / s) + 3 * np.abs(b(gamma) * xhat) + b(np.abs(beta)))
                 + b(np.abs(gamma) * tol_rm / s) + np.abs(b(gamma) * xhat) * b(tol_rv / (2 * (rv + eps))))
        tol_dx = C * uc * 3 * np.abs(dx) + np.abs(dx) * b(tol_rv / (2 * (rv + eps)))
        # dgamma = sum(g * (x - rm) / s): a k-term reduction of g * xhat, each term with the error of
        # (x - rm) / s, plus what the running statistics' own error does (d/d rm: sum|g| / s; d/d rv: via 1/s)
        tol_dg = (C * uc * k * abssum(g) * ((A + np.abs(rm)) / s + absmax(xhat))
                  + abssum(g) * tol_rm / s + np.abs(dgamma) * tol_rv / (2 * (rv + eps)))
        tol_db = C * uc * k * abssum(g)
    out[("y_eval", None)] = Expected(y, tol_y + ulp_of(y, case.dtype), case.dtype)
    out[("dx_eval", None)] = Expected(dx, tol_dx + ulp_of(dx, case.dtype), case.dtype)
    if case.affine:
        out[("dgamma_eval", None)] = Expected(dgamma, tol_dg + ulp_of(dgamma, pd), pd)
        out[("dbeta_eval", None)] = Expected(dbeta, tol_db + ulp_of(dbeta, pd), pd)
    return out
