"""Expected quantities for one (case, adapter): the oracle under the adapter's conventions,
with an element-wise error bound for each quantity.

The tolerance model
-------------------
A BN makes errors that follow from the conditioning of the input and from the dtypes it works in,
not from a per-case constant. The dtypes are what the adapter declares (``Adapter.precision``, a
``Precision``): ``u`` below is the unit roundoff of the dtype the statistics are accumulated in
(float32 for float16/bfloat16/float32 inputs, float64 for float64, unless the adapter declares
otherwise). Per channel, with ``A = max|x|``, ``s = sqrt(var + eps)``, ``G = max|g|`` and
``k = max(2 + log2 n, LAMBDA sqrt(n) / SAFETY)`` (``reduction_growth``: the error growth of a sum
over ``n`` values in whatever order a correct framework sums, see below):

* batch mean: ``k u A``; biased batch variance (two-pass):
  ``k u var + (k u A)^2`` (the variance is insensitive to first order to an
  error in the mean, so only its square enters);
* ``y = gamma (x - mean) / s + beta``: ``k u |gamma| A / s + k u |gamma xhat|
  + u |beta|``. ``A / s`` is the condition number: a mean offset of 1e4 over
  a unit spread costs four digits in any precision, and the bound says so;
* running statistics: ``r_t = (1 - w) r_(t-1) + w f b_t`` (``w`` the weight of the new
  statistic, ``f`` the Bessel factor of the declared estimator) is linear in its inputs, so
  its error obeys the same recurrence: ``e_t = (1 - w) e_(t-1) + w f e(b_t)``, plus the
  update's own roundings and one rounding to the stored dtype per step (``ulp_of(r_t)``). The
  update's roundings cover every standard form of it: ``(1 - w) r + w b`` costs
  ``u ((1 - w) |r| + w |b|)``, Keras's ``r - (r - b) w`` also ``2 u w |r - b|`` (at ``w = 1`` it
  returns ``b`` through ``r - (r - b)``: a cancellation of ``|r|``);
* ``dx = gamma / s (g - mean(g) - xhat mean(g xhat))``: each of the three terms in the
  bracket is a reduction or a product over ``n`` values bounded by ``G``, ``G`` and
  ``G max|xhat|^2``; ``xhat`` itself carries the error of ``x - mean`` (``A / s`` relative to
  ``s``), which enters the last term twice, through ``xhat`` and through ``mean(g xhat)``
  (each up to ``G max|xhat|``), giving ``k u |gamma| / s * G * (2 + (1 + 2 max|xhat|) A / s +
  max|xhat|^2)`` (the ``2 max|xhat|`` factor was missing until bnparity fuzz found a heavy-tailed
  input at an offset with a large mean gradient, where a two-pass BN's dx exceeded the bound); ``dgamma = sum(g xhat)``:
  ``k u sum|g| (A / s + max|xhat|)``; ``dbeta = sum(g)``: ``k u sum|g|``;
* eval mode uses the stored statistics: ``y = gamma (x - rm) / sqrt(rv + eps) + beta`` is a
  subtraction, a multiplication and an addition (three roundings of ``|gamma xhat|``, hence the
  ``3`` there), ``k u |gamma| (A + |rm|) / s`` for the conditioning, and the running
  statistics' own error: ``|gamma| e(rm) / s`` and, through
  ``d(1/sqrt(v + eps))/dv = -1 / (2 (v + eps)^(3/2))``, a relative ``e(rv) / (2 (rv + eps))`` of
  ``|gamma xhat|``; ``dx = g gamma / s`` (three roundings, plus that relative error);
  ``dgamma = sum(g (x - rm) / s)``: ``k u sum|g| ((A + |rm|) / s + max|xhat|)`` plus
  ``sum|g| e(rm) / s`` and ``|dgamma| e(rv) / (2 (rv + eps))``; ``dbeta``: ``k u sum|g|``.

Batch renormalization (a case's ``renorm``) is BN with a per-channel affine correction: a training call
computes ``y = gamma r xhat + (gamma d + beta)``, so its bounds are the ones above with the effective
parameters ``gamma r`` and ``gamma d + beta``, plus what the errors of ``r`` and ``d`` add
(``renorm_like``):

* ``sd = sqrt(var + eps)``: ``e(var) / (2 sd)`` and two roundings; ``rs = max(renorm_stddev, sqrt(eps))``:
  renorm's stddev's own error and a rounding; ``r = sd / rs``: ``r (e(sd) / sd + e(rs) / rs + u)``;
  ``d = (mean - renorm_mean) / rs``: ``(e(mean) + e(renorm_mean) + u |mean - renorm_mean|) / rs +
  |d| (e(rs) / rs + u)``. Clipping is monotone: the error of ``clip(v)`` is at most how far ``clip`` moves
  over ``v +- e(v)`` (0 where that whole interval is clipped to one bound);
* ``y`` gains ``|gamma xhat| e(r) + |gamma| e(d)`` and the roundings of forming ``gamma r`` and
  ``gamma d + beta``; ``dx`` (proportional to ``gamma r``, r and d constants) the relative ``e(r) / r`` and
  one rounding; ``dgamma = r sum(g xhat) + d sum(g)``: ``|r|`` and ``|d|`` times the two sums' bounds, plus
  ``e(r) |sum(g xhat)| + e(d) |sum(g)|``; ``dbeta`` is BN's;
* the state: the moving mean, the moving stddev, renorm's mean and stddev are each an average
  ``(1 - w) old + w batch`` and carry their error as the running statistics do (the batch's ``e(sd)`` for
  the stddevs), starting from the rounding of ``sqrt(running_var)`` to ``running``; the compared running
  variance ``relu(ms^2 - eps)`` has ``2 ms e(ms)``, three roundings of ``ms^2 + eps`` and one to ``running``.
  Eval is BN's eval with that mean and variance.

Ghost batch normalization (a case's ``virtual_batch_size = v``): a training call is BN on each of the
``G = N / v`` virtual batches (``reference.ghost_groups``), so each group's ``y`` and ``dx`` get the bounds
above with that group's own statistics, ``A`` and ``G`` and ``n_v = v * prod(spatial)`` values per channel
(``ghost_like``). Across groups:

* ``dgamma`` and ``dbeta`` sum the groups' sums: the groups' bounds add up, plus the reduction of the
  ``G`` partial sums, ``k_n u sum_j |partial_j|`` (``k_n`` of the whole batch: whatever order the
  framework sums the ``n`` terms in, one reduction over them is inside that growth, and a sum of
  partial sums is one);
* the running statistics (``Conventions.virtual_batch_update``): ``group_average`` updates them once with
  the average over the groups of the group means and of the group variances: an average is linear, so its
  error is the average of the groups' bounds, plus the rounding of the average itself,
  ``k_G u mean_j |b_j|`` (a sum of ``G`` values and a division); the update then propagates it as above,
  with the Bessel factor of a group's ``n_v`` values. ``sequential`` makes ``G`` updates in turn, each
  with its group's statistics and their bounds, propagated through the recurrence above.

Data parallelism (a case's ``data_parallel``: ``R`` replicas, contiguous shards of the batch, ``dp_like``): with
``sync`` a training call is BN over the global batch (the frameworks all-reduce the replicas' partial sums: one
reduction over the ``n`` values, inside the growth above), so its bounds are BN's; without it each shard gets BN's
bounds with its own ``n_r``, ``A`` and ``G``, and ``dgamma`` and ``dbeta`` add up as ghost BN's groups do. A
``"mean"`` gradient reduction (``Conventions.replica_gradients``) divides value and bound by ``R`` and adds one
rounding. The running statistics (``Conventions.replica_running``): ``first`` is replica 0's update, with its
statistics and bounds; ``mean`` averages the replicas' updates, each with its own bound, plus the average's rounding.

Eval and inference-mode calls use the running statistics and are plain BN. A case whose ``v`` does not
divide ``N`` exists only to record a framework's refusal: the oracle defines nothing for it (no
quantity).

Declared precision beyond the statistics' dtype (each term is zero when the dtype is the statistics'
own, whose few roundings the reduction terms above already cover, ``k >= 3``):

Where a channel's spread is below the spacing of its partial sums (``sqrt(var) <= 2 u n |mean|``: a
constant or nearly constant channel at an offset), every addition of a sequential sum rounds the same
way and the probabilistic bound does not hold: ``k`` there is the deterministic ``(n - 1) / SAFETY``
(``SAFETY k u = (n - 1) u``, the bound of recursive summation). Such a channel's ``y`` bound is already
dominated by ``A / s``; what this adds is room in the running statistics.

* ``held``: the batch mean and variance are rounded to it before use (``uh``): ``y`` gains
  ``uh (|gamma| |mean| / s + |gamma xhat|)`` (the rounded mean shifts ``x - mean``, the rounded
  variance scales ``xhat``), ``dx`` and ``dgamma`` the same relative errors of ``xhat`` and ``1 / s``;
* ``normalize``: the element-wise normalization runs in it (``un``): a subtraction, two
  multiplications and an addition, ``un (3 |gamma xhat| + |beta|)`` on ``y``; ``dx``'s three
  terms and their two products ``un |gamma| / s G (4 + 2 max|xhat|^2)``;
* ``params``: where the framework uses gamma and beta in a narrower dtype than the case gives them
  (``up``), ``y`` gains ``up (|gamma xhat| + |beta|)`` and ``dx`` the same relative error;
* ``eval_held``, ``eval_normalize``: the eval call's own (``uhe``: the running statistics rounded
  before use, ``|gamma| uhe |rm| / s + uhe |gamma xhat|`` on ``y``);
* ``running``, ``params``, ``output``: one rounding to the stored dtype (the ulp terms), and the
  initial running statistics are rounded to ``running`` exactly as the framework holds them.

What the bound assumes, and where a correct implementation can still exceed it (measured by
``tests/unit/test_margins.py`` and stated in the README):

* summation order: a pairwise (tree) reduction grows like ``2 + log2 n``; a recursive
  (sequential) float32 sum like ``(n - 1)`` in the worst case. The bound admits the
  probabilistic bound of recursive summation, ``lambda sqrt(n) u sum|x_i|`` (Higham and Mary,
  SIAM J. Sci. Comput. 41(5), 2019; it holds with probability at least ``1 - 2 exp(-lambda^2/2)``
  when the rounding errors are independent, ``1 - 1e-6`` at ``LAMBDA = 5.4``), as ``k`` above.
  Sums of non-negative terms (the squared deviations) round with a bias when the terms fall below
  half an ulp of the partial sum (swamping), which the independence model does not cover: a
  sequential float32 sum of 450,000 squares of N(0, 1) values measured 2,400 ``u var`` against
  the admitted ``5.4 sqrt(n) = 3,600``. The deterministic worst case ``(n - 1) u`` is not admitted:
  at catalogue sizes it would hide every bug the bound exists to catch. What sequential sums lose
  next to pairwise ones is reported by the weak tier (``harness.stable``), not failed;
* overflow: a result beyond the dtype's range must be stored as the same infinity
  (``harness.compare``); an intermediate that overflows (the float32 squared deviations of
  ``huge_float32``) is not admitted: the bound is for the mathematically defined result, and a
  framework whose squares overflow fails (the ledger names the mechanism).

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
from harness.adapters.base import Precision
from harness.cases import Case
from harness.inputs import CaseData, as_stored, finfo, np_dtype

SAFETY = 4.0
# The probabilistic bound of recursive summation (Higham & Mary, "A new approach to probabilistic rounding
# error analysis", SISC 2019; the n-independent form of Connolly, Higham & Mary 2021): |error| <= lambda sqrt(n) u
# sum|x_i| with probability at least 1 - 2 exp(-lambda^2 / 2); lambda = 5.4 makes that 1 - 1e-6.
LAMBDA = 5.4


def unit_roundoff(dtype: str) -> float:
    """u = 2**-p for a p-bit significand (half the machine epsilon)."""
    return float(finfo(dtype).eps) / 2.0


def ulp_of(value: np.ndarray, dtype: str) -> np.ndarray:
    """One ulp of ``dtype`` at each |value| (2u|v|, and the subnormal spacing near zero)."""
    fi = finfo(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.maximum(2 * unit_roundoff(dtype) * np.abs(value), float(fi.smallest_subnormal))


def rounding_error(value: np.ndarray, dtype: str) -> np.ndarray:
    """|value - value rounded to dtype|: what storing a float64 value in ``dtype`` costs, exactly."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.abs(value - np.asarray(value).astype(np_dtype(dtype)).astype(np.float64))


def reduction_growth(n: int, biased: np.ndarray | bool = False) -> np.ndarray | float:
    """The error growth of a sum over ``n`` values, in units of ``u sum|x_i|``, for any order a correct
    framework may use: ``2 + log2 n`` for a pairwise (tree) reduction, and ``LAMBDA sqrt(n) / SAFETY`` for a
    recursive (sequential) one, whichever is larger (the ``SAFETY`` factor applied to every term is part of
    the probabilistic bound's ``lambda`` already). Where the rounding is ``biased`` (per channel: the values
    vary by less than the spacing of the partial sums, so every addition rounds the same way and the errors
    do not cancel), the deterministic bound of recursive summation, ``(n - 1) u sum|x_i|``, holds instead."""
    n = max(n, 1)
    k = max(2.0 + math.log2(n), LAMBDA * math.sqrt(n) / SAFETY)
    return np.where(biased, max(k, (n - 1) / SAFETY), k) if np.ndim(biased) else (
        max(k, (n - 1) / SAFETY) if biased else k)


def extra_roundoff(dtype: str, wide: str) -> float:
    """The unit roundoff of a step done in ``dtype`` where it is narrower than the reductions' ``wide`` dtype,
    else 0: in the reductions' own precision the few roundings of an element-wise step are already inside the
    reduction terms (whose growth is at least 3)."""
    u = unit_roundoff(dtype)
    return u if u > unit_roundoff(wide) else 0.0


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
                        eps: float, precision: Precision | None = None, frozen_call: str = "batch_statistics",
                        virtual_batch_update: str = "group_average", replica_running: str = "first",
                        replica_gradients: str = "sum") -> dict[tuple[str, int | None], Expected]:
    """Oracle values and bounds for every quantity an adapter reports.

    ``momentum`` is the weight of the new statistic (or ``"cumulative"``) and
    ``eps`` the value the framework actually uses; ``estimator`` is the
    adapter's declared running-variance estimator, ``precision`` the dtypes it
    declares it works in (``Precision.of(case)`` when not given), ``frozen_call``
    what its training call on a frozen layer does (``Conventions.frozen_call``) and
    ``virtual_batch_update`` how a ghost-BN call updates the running statistics
    (``Conventions.virtual_batch_update``); ``replica_running`` and ``replica_gradients`` what survives a data-parallel
    step and how its parameter gradients are reduced (``Conventions.replica_running``, ``replica_gradients``).
    """
    p = precision or Precision.of(case)
    ax = data.channel_axis
    nd = len(case.shape)
    b = lambda v: ref._bcast(v, nd, ax)  # noqa: E731
    n = case.count
    uc = unit_roundoff(p.statistics)
    k0 = reduction_growth(n)
    uh = extra_roundoff(p.held, p.statistics)  # batch statistics rounded before they are used
    un = extra_roundoff(p.normalize, p.statistics)  # element-wise normalization in a narrower dtype
    ue = max(uc, unit_roundoff(p.eval_normalize or p.normalize))  # eval mode is element-wise only
    uhe = extra_roundoff(p.eval_held or p.held, p.statistics)  # the running statistics rounded before use in eval
    up = extra_roundoff(p.params, case.resolved_param_dtype)  # gamma and beta rounded before use
    C = SAFETY * (case.tolerance.factor if case.tolerance else 1.0)
    gamma, beta = data.f64("gamma"), data.f64("beta")
    rm, rv = data.f64("running_mean"), data.f64("running_var")
    # the framework holds the initial running statistics in its own dtype: that rounding is exact and known
    tol_rm = rounding_error(rm, p.running)
    tol_rv = rounding_error(rv, p.running)
    out: dict[tuple[str, int | None], Expected] = {}
    absmax = lambda a: _per_channel(np.abs(a), ax, lambda v, axis: np.max(v, axis=axis, initial=0.0))  # noqa: E731
    abssum = lambda a: _per_channel(np.abs(a), ax, np.sum)  # noqa: E731

    def train_like(x, g, gamma=gamma, beta=beta, mask=None, n=n):
        """Train-mode y and grads with bounds, plus the batch stats and their bounds (``gamma``, ``beta``: the
        parameters the normalization applies; batch renormalization's effective ones in ``renorm_like``; ``mask``:
        the statistics over the unmasked values, whose bounds the same terms cover: a sum over fewer than ``n``
        values, each at most ``A``; ``n``: the values per channel of ``x``, one virtual batch's in ``ghost_like``)."""
        k0 = reduction_growth(n)
        if mask is None:
            y, mean, var = ref.train_forward(x, gamma, beta, eps, ax)
            dx, dgamma, dbeta = ref.train_backward(x, g, gamma, eps, ax)
        else:
            y, mean, var = ref.masked_train_forward(x, mask, gamma, beta, eps, ax)
            dx, dgamma, dbeta = ref.masked_train_backward(x, g, mask, gamma, eps, ax)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            # a channel whose spread is below the spacing of its partial sums (2 u n |mean|) rounds every
            # addition the same way: the deterministic bound of recursive summation holds there
            k = reduction_growth(n, np.sqrt(var) <= 2 * uc * n * np.abs(mean))
            s = np.sqrt(var + eps)
            A, G = absmax(x), absmax(g)
            xhat = (x - b(mean)) / b(s)
            xmax = absmax(xhat)
            M = np.abs(mean) / s  # the held mean's rounding, relative to the spread
            gx = np.abs(b(gamma) * xhat)
            tol_y = C * (uc * (b(k * np.abs(gamma) * A / s) + b(k) * gx + b(np.abs(beta)))
                         + uh * (b(np.abs(gamma) * M) + gx) + un * (3 * gx + b(np.abs(beta)))
                         + up * (gx + b(np.abs(beta))))
            tol_dx = C * b(np.abs(gamma) / s * G * (uc * k * (2 + (1 + 2 * xmax) * A / s + xmax**2)
                                                    + uh * (2 + xmax**2 + 2 * xmax * M) + un * (4 + 2 * xmax**2)
                                                    + up * (2 + xmax**2)))
            tol_dg = C * abssum(g) * (uc * k * (A / s + xmax) + uh * (M + xmax) + un * xmax)
            tol_db = C * uc * k0 * abssum(g)
            tol_mean = C * (uc * k * A + uh * np.abs(mean))
            # a mean held in a narrower dtype is off by up to uh |mean|: a variance taken around it (the running
            # statistics of torch's pure 16-bit layers) is larger by that offset squared
            tol_var = C * (uc * k * var + (uc * k * A) ** 2 + uh * var + (uh * np.abs(mean)) ** 2)
        if n == 0:  # an empty batch: dgamma and dbeta are empty sums, exactly 0 (the NaN statistics reach no term)
            tol_dg, tol_db = np.zeros_like(dgamma), np.zeros_like(dbeta)
        return results(y, tol_y, dx, tol_dx, dgamma, tol_dg, dbeta, tol_db), mean, var, tol_mean, tol_var

    def results(y, tol_y, dx, tol_dx, dgamma, tol_dg, dbeta, tol_db) -> dict[str, Expected]:
        """A call's y, dx and the gradients of the parameters the layer has, each bound with its own rounding."""
        q = {"y": Expected(y, tol_y + ulp_of(y, p.output), p.output),
             "dx": Expected(dx, tol_dx + ulp_of(dx, p.output), p.output)}
        if case.has_scale:
            q["dgamma"] = Expected(dgamma, tol_dg + ulp_of(dgamma, p.params), p.params)
        if case.has_center:
            q["dbeta"] = Expected(dbeta, tol_db + ulp_of(dbeta, p.params), p.params)
        return q

    def eval_like(x, g, rm, rv, tol_rm, tol_rv):
        """Eval-mode y and grads with bounds, normalized with the running statistics as stored."""
        # a running statistic beyond its storage dtype's range is stored as inf, and eval uses what is stored
        rm, rv = as_stored(rm, p.running), as_stored(rv, p.running)
        tol_rm = np.where(np.isinf(rm), 0.0, tol_rm)  # exact where stored as inf: eval's answer follows from inf
        tol_rv = np.where(np.isinf(rv), 0.0, tol_rv)
        y = ref.eval_forward(x, gamma, beta, rm, rv, eps, ax)
        dx, dgamma, dbeta = ref.eval_backward(x, g, gamma, rm, rv, eps, ax)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            s = np.sqrt(rv + eps)
            xhat = (x - b(rm)) / b(s)
            A = absmax(x)
            # compute error + what the running statistics' own error does to the output
            gx = np.abs(b(gamma) * xhat)
            tol_y = (C * (ue * (k0 * b(np.abs(gamma) * (A + np.abs(rm)) / s) + 3 * gx + b(np.abs(beta)))
                          + uhe * (b(np.abs(gamma) * np.abs(rm) / s) + gx) + up * (gx + b(np.abs(beta))))
                     + b(np.abs(gamma) * tol_rm / s) + gx * b(tol_rv / (2 * (rv + eps))))
            tol_dx = C * (ue * 3 + uhe + up) * np.abs(dx) + np.abs(dx) * b(tol_rv / (2 * (rv + eps)))
            # dgamma = sum(g * (x - rm) / s): a k-term reduction of g * xhat, each term with the error of
            # (x - rm) / s, plus what the running statistics' own error does (d/d rm: sum|g| / s; d/d rv: via 1/s)
            # the eval call's gradient reductions run in its own precision (ue: nnx in 16-bit)
            tol_dg = (C * abssum(g) * (ue * k0 * ((A + np.abs(rm)) / s + absmax(xhat))
                                       + (un + uhe) * 3 * absmax(xhat) + uhe * np.abs(rm) / s)
                      + abssum(g) * tol_rm / s + np.abs(dgamma) * tol_rv / (2 * (rv + eps)))
            tol_db = C * ue * k0 * abssum(g)
        return results(y, tol_y, dx, tol_dx, dgamma, tol_dg, dbeta, tol_db)

    rn = case.renorm
    if rn is not None:  # batch renormalization's state and its bounds (the moving mean and variance are rm, rv)
        st = ref.renorm_initial(rm, rv)
        tol_st = ref.RenormState(tol_rm, rounding_error(st.moving_stddev, p.running), tol_rv, tol_rm,
                                 rounding_error(st.renorm_stddev, p.running))

    def clipped_error(v, e, lo, hi):
        """The error of clip(v) given that of v: clipping is monotone, so at most what it does to v +- e (0 where
        the whole interval is clipped to one bound)."""
        lo = -np.inf if lo is None else lo
        hi = np.inf if hi is None else hi
        with np.errstate(invalid="ignore"):
            c = np.clip(v, lo, hi)
            return np.maximum(np.abs(np.clip(v + e, lo, hi) - c), np.abs(np.clip(v - e, lo, hi) - c))

    def renorm_like(x, g, st, tol_st):
        """A batch-renormalization training call: BN with the effective parameters gamma r and gamma d + beta
        (``train_like``'s bounds), plus what the errors of r and d add, and the state after it with its bounds."""
        mean, var = ref.batch_stats(x, ax)
        r, d = ref.renorm_correction(mean, var, st.renorm_mean, st.renorm_stddev, eps, rn.rmin, rn.rmax, rn.dmax)
        q, mean, var, tmean, tvar = train_like(x, g, gamma * r, gamma * d + beta)
        y = ref.renorm_train_forward(x, gamma, beta, eps, r, d, ax)[0]  # the oracle's own composition
        dx, dgamma, dbeta = ref.renorm_train_backward(x, g, gamma, eps, r, d, ax)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            sd = np.sqrt(var + eps)
            rs = np.maximum(st.renorm_stddev, np.sqrt(eps))
            # sd carries the variance's error through the square root, and two roundings (+ eps, sqrt)
            e_sd = tvar / (2 * sd) + C * uc * 2 * sd
            e_rs = tol_st.renorm_stddev + C * uc * rs
            r_raw, d_raw = sd / rs, (mean - st.renorm_mean) / rs
            e_r = clipped_error(r_raw, r_raw * (e_sd / sd + e_rs / rs) + C * uc * r_raw, rn.rmin, rn.rmax)
            e_d = clipped_error(d_raw, (tmean + tol_st.renorm_mean + C * uc * np.abs(mean - st.renorm_mean)) / rs
                                + np.abs(d_raw) * (e_rs / rs + C * uc), -rn.dmax if rn.dmax is not None else None,
                                rn.dmax)
            xhat = (x - b(mean)) / b(sd)
            gx = np.abs(b(gamma) * xhat)
            # y = gamma (r xhat + d) + beta: the errors of r and d, and forming gamma r and gamma d + beta
            tol_y = (q["y"].tol + gx * b(e_r) + b(np.abs(gamma) * e_d)
                     + C * uc * (gx * b(np.abs(r)) + b(np.abs(gamma * d) + np.abs(beta))))
            # dx is proportional to gamma r: relative error e(r) / r, and the rounding of gamma r
            rel_r = np.where(r != 0, e_r / np.abs(r), 0.0)
            tol_dx = q["dx"].tol + np.abs(dx) * b(rel_r + C * uc)
        q["y"] = Expected(y, tol_y, p.output)
        q["dx"] = Expected(dx, tol_dx, p.output)
        if case.has_scale:
            # dgamma = r sum(g xhat) + d sum(g): train_like's bounds of the two sums (its dgamma, dbeta), scaled
            s1, tol_s1 = q["dgamma"].value, q["dgamma"].tol  # sum(g xhat): train_like's dgamma
            tol_s0 = C * uc * k0 * abssum(g)
            tol_dg = (np.abs(r) * tol_s1 + np.abs(d) * tol_s0 + e_r * np.abs(s1) + e_d * np.abs(dbeta)
                      + C * uc * (np.abs(r * s1) + np.abs(d * dbeta)))
            q["dgamma"] = Expected(dgamma, tol_dg + ulp_of(dgamma, p.params), p.params)
        new = ref.renorm_update(st, mean, var, eps, momentum, rn.momentum)
        ur = unit_roundoff(p.running)

        def ema(e_old, e_batch, old, batch, w, value):
            """The error of (1 - w) old + w batch: the inputs' errors, the update's roundings (as for the running
            statistics below), one rounding to the stored dtype."""
            with np.errstate(invalid="ignore", over="ignore"):
                upd = ur * (2 * w * np.abs(old - batch) + (1 - w) * np.abs(old) + w * np.abs(batch))
                return (1 - w) * e_old + w * e_batch + upd + ulp_of(value, p.running)

        with np.errstate(invalid="ignore", over="ignore"):
            w, wr = float(momentum), rn.momentum
            e_ms = ema(tol_st.moving_stddev, e_sd, st.moving_stddev, sd, w, new.moving_stddev)
            # moving_variance = relu(ms^2 - eps), formed from ms in the statistics' dtype: 2 ms e(ms), three roundings
            e_mv = (2 * new.moving_stddev * e_ms + C * uc * (new.moving_stddev ** 2 + eps)
                    + ulp_of(new.moving_variance, p.running))
            tol_new = ref.RenormState(
                moving_mean=ema(tol_st.moving_mean, tmean, st.moving_mean, mean, w, new.moving_mean),
                moving_stddev=e_ms, moving_variance=e_mv,
                renorm_mean=ema(tol_st.renorm_mean, tmean, st.renorm_mean, mean, wr, new.renorm_mean),
                renorm_stddev=ema(tol_st.renorm_stddev, e_sd, st.renorm_stddev, sd, wr, new.renorm_stddev))
        return q, new, tol_new


    def ghost_like(x, g, rm0, rv0, tol_rm0, tol_rv0):
        """A ghost-BN training call: ``train_like`` per virtual batch for y and dx, the groups' sums for dgamma and
        dbeta, and the running statistics after one update with the averaged group statistics, with their bounds."""
        groups = ref.ghost_groups(x.shape[0], case.virtual_batch_size)
        n_v = n // len(groups)
        y, means, variances = ref.ghost_train_forward(x, gamma, beta, eps, case.virtual_batch_size, ax)
        dx, dgamma, dbeta = ref.ghost_train_backward(x, g, gamma, eps, case.virtual_batch_size, ax)
        tol_y, tol_dx = np.zeros_like(x), np.zeros_like(x)
        tol_dg = tol_db = part_dg = part_db = 0.0
        tmeans, tvars = [], []
        for idx in groups:
            q, _, _, tm, tv = train_like(x[idx], g[idx], n=n_v)
            tol_y[idx] = np.broadcast_to(q["y"].tol, x[idx].shape)
            tol_dx[idx] = np.broadcast_to(q["dx"].tol, x[idx].shape)
            if "dgamma" in q:
                tol_dg, part_dg = tol_dg + q["dgamma"].tol, part_dg + np.abs(q["dgamma"].value)
            if "dbeta" in q:
                tol_db, part_db = tol_db + q["dbeta"].tol, part_db + np.abs(q["dbeta"].value)
            tmeans.append(tm)
            tvars.append(tv)
        q = {"y": Expected(y, tol_y, p.output), "dx": Expected(dx, tol_dx, p.output)}
        if case.has_scale:
            q["dgamma"] = Expected(dgamma, tol_dg + C * uc * k0 * part_dg + ulp_of(dgamma, p.params), p.params)
        if case.has_center:
            q["dbeta"] = Expected(dbeta, tol_db + C * uc * k0 * part_db + ulp_of(dbeta, p.params), p.params)
        w, f = float(momentum), ref.bessel_factor(n_v, estimator)
        rm, rv = ref.ghost_update_running(rm0, rv0, means, variances, n_v, w, estimator, virtual_batch_update)
        if virtual_batch_update == "sequential":  # one update per virtual batch, each with that group's bounds
            tol_rm, tol_rv = tol_rm0, tol_rv0
            for mean, var, tm, tv in zip(means, variances, tmeans, tvars):
                rm1, rv1 = ref.update_running(rm0, rv0, mean, var, n_v, w, estimator)
                tol_rm, tol_rv = ema_bounds(rm0, rv0, rm1, rv1, mean, var, w, f, tol_rm, tol_rv, tm, tv)
                rm0, rv0 = rm1, rv1
            return q, rm, rv, tol_rm, tol_rv
        kg = reduction_growth(len(groups))
        mean, var = means.mean(axis=0), variances.mean(axis=0)
        with np.errstate(invalid="ignore", over="ignore"):
            # an average is linear: the average of the groups' bounds, plus the average's own rounding
            tmean = sum(tmeans) / len(groups) + C * uc * kg * np.abs(means).mean(axis=0)
            tvar = sum(tvars) / len(groups) + C * uc * kg * var
        tol_rm, tol_rv = ema_bounds(rm0, rv0, rm, rv, mean, var, w, f, tol_rm0, tol_rv0, tmean, tvar)
        return q, rm, rv, tol_rm, tol_rv

    def dp_like(x, g, rm0, rv0, tol_rm0, tol_rv0):
        """A data-parallel training call (``reference.dp_train_forward``): BN's bounds over the global batch (sync) or
        per shard, the parameters' gradients reduced over the replicas, and the running statistics the adapter's
        convention keeps, with their bounds."""
        dp, sizes = case.data_parallel, case.shards
        w = float(momentum)
        y, means, variances = ref.dp_train_forward(x, gamma, beta, eps, sizes, dp.sync, ax)
        dx, dgamma, dbeta = ref.dp_train_backward(x, g, gamma, eps, sizes, dp.sync, ax, replica_gradients)
        counts = ref.dp_replica_stats(x, sizes, dp.sync, ax)[2]
        if dp.sync:
            q, mean, var, tm, tv = train_like(x, g)
            parts = [(q, tm, tv)] * len(sizes)
        else:
            q = {}
            parts = [train_like(x[s], g[s], n=int(nr)) for s, nr in zip(ref.shard_slices(sizes), counts)]
            parts = [(pq, tm, tv) for pq, _, _, tm, tv in parts]
            for name in ("y", "dx"):
                q[name] = Expected(np.concatenate([pq[name].value for pq, _, _ in parts]),
                                   np.concatenate([np.broadcast_to(pq[name].tol, pq[name].value.shape)
                                                   for pq, _, _ in parts]), p.output)
            for name in ("dgamma", "dbeta"):
                if name in parts[0][0]:
                    tol = sum(pq[name].tol for pq, _, _ in parts)
                    part = sum(np.abs(pq[name].value) for pq, _, _ in parts)
                    q[name] = Expected(sum(pq[name].value for pq, _, _ in parts), tol + C * uc * k0 * part, p.params)
        q["y"], q["dx"] = Expected(y, q["y"].tol, p.output), Expected(dx, q["dx"].tol, p.output)
        for name, value in (("dgamma", dgamma), ("dbeta", dbeta)):
            if name in q:
                tol = q[name].tol / len(sizes) if replica_gradients == "mean" else q[name].tol
                q[name] = Expected(value, tol + C * uc * np.abs(value) + ulp_of(value, p.params), p.params)
        updated = []
        for mean, var, nr, (_, tm, tv) in zip(means, variances, counts, parts):
            rm, rv = ref.update_running(rm0, rv0, mean, var, int(nr), w, estimator)
            updated.append((rm, rv, *ema_bounds(rm0, rv0, rm, rv, mean, var, w, ref.bessel_factor(int(nr), estimator),
                                                tol_rm0, tol_rv0, tm, tv)))
            if replica_running == "first":
                break
        rm, rv = ref.dp_update_running(rm0, rv0, means, variances, counts, w, estimator, replica_running)
        kr = reduction_growth(len(updated))
        with np.errstate(invalid="ignore", over="ignore"):
            tol_rm = sum(u[2] for u in updated) / len(updated) + (C * uc * kr * np.abs(rm) if len(updated) > 1 else 0)
            tol_rv = sum(u[3] for u in updated) / len(updated) + (C * uc * kr * np.abs(rv) if len(updated) > 1 else 0)
        return q, rm, rv, tol_rm, tol_rv

    def ema_bounds(rm0, rv0, rm, rv, mean, var, w, f, tol_rm0, tol_rv0, tmean, tvar):
        """The bounds of the running statistics after one update ``r = (1 - w) r0 + w f b``: the earlier bounds and
        the batch statistics' carried through, plus the update's own roundings and one rounding to the stored
        dtype."""
        ur = unit_roundoff(p.running)
        with np.errstate(invalid="ignore", over="ignore"):
            # the update's own roundings, for any of its standard forms: (1 - w) r + w b, r + w (b - r), and
            # Keras's r - (r - b) w (assign_sub), whose subtraction costs u |r - b| even where w = 1
            upd_m = ur * (2 * w * np.abs(rm0 - mean) + (1 - w) * np.abs(rm0) + w * np.abs(mean))
            upd_v = ur * (2 * w * np.abs(rv0 - f * var) + (1 - w) * np.abs(rv0) + w * np.abs(f * var))
            return ((1 - w) * tol_rm0 + w * tmean + upd_m + ulp_of(rm, p.running),
                    (1 - w) * tol_rv0 + w * f * tvar + upd_v + ulp_of(rv, p.running))
    def hvp_like(x, g, v) -> dict[str, Expected]:
        """A training call's second derivatives along ``v`` (``reference.train_hvp``) with their bounds."""
        hx, hg = ref.train_hvp(x, g, gamma, eps, v, ax)
        mean, var = ref.batch_stats(x, ax)
        u = uc + uh + un + up
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            k = reduction_growth(n, np.sqrt(var) <= 2 * uc * n * np.abs(mean))
            s = np.sqrt(var + eps)
            A, G, V = absmax(x), absmax(g), absmax(v)
            X = absmax((x - b(mean)) / b(s))
            Vs = V / s
            # |s'/s| <= X Vs and |xhat'| <= Vs (1 + X^2) with Vs = max|v| / s: the terms' magnitudes, times the
            # growth of their reductions and the conditioning of x - mean (A / s), as for dx
            cond = C * u * k * (1 + A / s)
            tol_hx = b(cond * np.abs(gamma) / s * G * Vs * 2 * (2 + X) * (1 + X ** 2))
            tol_hg = cond * abssum(g) * Vs * 2 * (1 + X ** 2)
        q = {"hvp_x": Expected(hx, tol_hx + ulp_of(hx, p.output), p.output)}
        if case.has_scale:
            q["hvp_gamma"] = Expected(hg, tol_hg + ulp_of(hg, p.params), p.params)
        return q

    def masked_update(mask, rm0, rv0, tol_rm0, tol_rv0, mean, var, tmean, tvar):
        """The running statistics after a masked training call and their bounds, per channel (the Bessel factor of
        its unmasked count); a channel with no unmasked value keeps its statistics and their bounds."""
        count = ref.masked_batch_stats(np.zeros(mask.shape), mask, ax)[2]
        w = float(momentum)
        rm, rv = ref.masked_update_running(rm0, rv0, mean, var, count, w, estimator)
        f = np.array([ref.bessel_factor(int(c), estimator) if c > 0 else 1.0 for c in count])
        t_rm, t_rv = ema_bounds(rm0, rv0, rm, rv, mean, var, w, f, tol_rm0, tol_rv0, tmean, tvar)
        return rm, rv, np.where(count > 0, t_rm, tol_rm0), np.where(count > 0, t_rv, tol_rv0)

    # the calls in order (``case.schedule``), each recorded under its index; eval and frozen ones as
    # <quantity>_eval, <quantity>_frozen. A frozen call takes the next training batch; by the adapter's convention it
    # runs in inference mode (as an eval call: the running statistics, which it leaves as they are) or as a training
    # call whose parameters' gradients are not compared
    if case.virtual_batch_size and case.shape[0] % case.virtual_batch_size:
        return out  # an uneven split, only in a case that records a framework's refusal: nothing is defined
    updates = 0
    for i, (kind, batch) in enumerate(zip(case.schedule, case.batches)):
        x, g = ((data.f64("x_eval"), data.f64("g_eval")) if batch is None
                else (data.f64("x", batch), data.f64("g", batch)))
        sfx = "" if kind == "train" else f"_{kind}"
        keep = (lambda name: True) if kind != "frozen" else (lambda name: name in ("y", "dx"))  # noqa: E731
        if kind == "eval" or (kind == "frozen" and frozen_call == "inference"):
            if not case.track_running_stats:
                # nothing stored: eval normalizes with the batch statistics (PyTorch semantics)
                out.update({(f"{name}{sfx}", i): e for name, e in train_like(x, g)[0].items() if keep(name)})
                continue
            q = eval_like(x, g, rm, rv, tol_rm, tol_rv)
            out.update({(f"{name}{sfx}", i): e for name, e in q.items() if keep(name)})
            # the call leaves the state as it was: the same values, the same bound
            out[(f"running_mean{sfx}", i)] = Expected(rm, tol_rm, p.running)
            out[(f"running_var{sfx}", i)] = Expected(rv, tol_rv, p.running)
            continue
        if rn is not None:  # batch renormalization: the moving mean and (derived) variance are rm, rv
            q, st, tol_st = renorm_like(x, g, st, tol_st)
            out.update({(f"{name}{sfx}", i): e for name, e in q.items() if keep(name)})
            rm, rv, tol_rm, tol_rv = st.moving_mean, st.moving_variance, tol_st.moving_mean, tol_st.moving_variance
            out[(f"running_mean{sfx}", i)] = Expected(rm, tol_rm, p.running)
            out[(f"running_var{sfx}", i)] = Expected(rv, tol_rv, p.running)
            continue
        if case.data_parallel is not None:  # replicas: global or per-shard statistics, the kept running statistics
            q, rm, rv, tol_rm, tol_rv = dp_like(x, g, rm, rv, tol_rm, tol_rv)
            out.update({(f"{name}{sfx}", i): e for name, e in q.items() if keep(name)})
            out[(f"running_mean{sfx}", i)] = Expected(rm, tol_rm, p.running)
            out[(f"running_var{sfx}", i)] = Expected(rv, tol_rv, p.running)
            continue
        if case.virtual_batch_size is not None:  # ghost BN: per virtual batch, one update with their averages
            q, rm, rv, tol_rm, tol_rv = ghost_like(x, g, rm, rv, tol_rm, tol_rv)
            out.update({(f"{name}{sfx}", i): e for name, e in q.items() if keep(name)})
            out[(f"running_mean{sfx}", i)] = Expected(rm, tol_rm, p.running)
            out[(f"running_var{sfx}", i)] = Expected(rv, tol_rv, p.running)
            continue
        mask = data.mask[batch] if data.mask is not None else None  # the call's training batch's mask
        q, mean, var, tmean, tvar = train_like(x, g, mask=mask)
        if case.second_order is not None and kind == "train":
            q.update(hvp_like(x, g, data.f64("v", batch)))
        out.update({(f"{name}{sfx}", i): e for name, e in q.items() if keep(name)})
        if mask is not None:  # masked statistics, per channel over its unmasked count
            rm, rv, tol_rm, tol_rv = masked_update(mask, rm, rv, tol_rm, tol_rv, mean, var, tmean, tvar)
            out[(f"running_mean{sfx}", i)] = Expected(rm, tol_rm, p.running)
            out[(f"running_var{sfx}", i)] = Expected(rv, tol_rv, p.running)
            continue
        if case.track_running_stats and n > 0:  # an empty batch has nothing to fold in: the state is left as it was
            updates += 1
            m = momentum if momentum != "cumulative" else None
            rm0, rv0 = rm, rv
            rm, rv = ref.update_running(rm, rv, mean, var, n, m, estimator, num_batches_tracked=updates)
            w = 1.0 / updates if m is None else m
            tol_rm, tol_rv = ema_bounds(rm0, rv0, rm, rv, mean, var, w, ref.bessel_factor(n, estimator), tol_rm,
                                        tol_rv, tmean, tvar)
        if case.track_running_stats:
            out[(f"running_mean{sfx}", i)] = Expected(rm, tol_rm, p.running)
            out[(f"running_var{sfx}", i)] = Expected(rv, tol_rv, p.running)
    return out
