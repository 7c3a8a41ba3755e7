"""The weak tier: what a stable BN in the adapter's declared precision gets on the same inputs.

The conformance bound (``harness.expected``) admits every algorithm a correct framework may use, so
it is wide where the input is ill-conditioned: ``A = max|x|`` makes it enormous on a constant input at
a large offset, and it admits sequential sums at large ``n``. Inside that bound an implementation can
still lose digits that a careful one keeps. This module computes the careful one, in the dtypes the
adapter declares (``Precision``), and the runner compares the two errors:

* batch statistics two-pass (the mean, then the mean of squared deviations), each a pairwise sum
  (NumPy's pairwise summation along a contiguous axis), in ``statistics``; rounded to ``held``;
* the normalization unfolded, ``(x - mean) * invstd * gamma + beta``, and its gradient
  ``gamma * invstd * (g - mean(g) - xhat * mean(g xhat))``, in ``normalize``;
* running statistics updated in ``statistics`` and stored in ``running``; outputs rounded to
  ``output``, parameter gradients to ``params``;
* batch renormalization (a case's ``renorm``): ``r`` and ``d`` in ``statistics``, applied as
  ``(xhat * r + d) * gamma + beta``, and its four moving statistics (mean, stddev, renorm's mean and stddev)
  updated in ``statistics`` and stored in ``running``, the moving variance derived from the stddev;
* ghost BN (a case's ``virtual_batch_size``): the above per virtual batch, dgamma and dbeta summed over
  the groups, and the running statistics updated as the adapter declares (``virtual_batch_update``: once
  with the group statistics averaged in ``statistics``, or once per group).

A quantity whose error exceeds ``WEAK_FACTOR`` times the stable error (plus one ulp at the quantity's
scale, so that two answers that are both exact to the last place never compare as a ratio of
roundings) is ``weak``: informational, with the ratio, never failing a run by itself.
"""

from __future__ import annotations

import numpy as np

import reference as ref
from harness.adapters.base import Precision
from harness.cases import Case
from harness.inputs import CaseData, np_dtype

# How much worse than the stable baseline an error may be before it is called weak. Two careful
# implementations differ by their rounding order only, but the baseline's realized error can be lucky (a
# pairwise mean that happens to be exact): a careful float32 BN that sums in another order (fake-good, pairwise
# over the values reversed) reaches 8.4x on the catalogue (tests/unit/test_margins.py prints and checks it).
# 32x leaves a factor 4 above that; the mechanisms the tier exists for sit far above it: the folded affine
# form on a batch of one (~450x), fast or one-pass variance at an offset of 100 (~200-600x), constant inputs
# at an offset (1e3x and more), float32 sequential sums over 400k+ values (~1e3x).
WEAK_FACTOR = 32.0


def _cn(a: np.ndarray, axis: int) -> np.ndarray:
    """(C, n), contiguous: each channel's values in one row, so a sum along axis 1 is NumPy's pairwise sum."""
    return np.ascontiguousarray(np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1))


def _back(a_cn: np.ndarray, like: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(like, axis, 0).shape
    return np.moveaxis(a_cn.reshape(moved), 0, axis)


def stable_quantities(case: Case, data: CaseData, estimator: str, momentum: float | str, eps: float,
                      precision: Precision | None = None, frozen_call: str = "batch_statistics",
                      virtual_batch_update: str = "group_average", replica_running: str = "first",
                      replica_gradients: str = "sum") -> dict[tuple[str, int | None], np.ndarray]:
    """The stable BN's value of every quantity the oracle has (float64 arrays of the stored values), over the
    calls as ``harness.expected`` composes them."""
    p = precision or Precision.of(case)
    ws, wh, wn = np_dtype(p.statistics), np_dtype(p.held), np_dtype(p.normalize)
    wr, wp, wo = np_dtype(p.running), np_dtype(p.params), np_dtype(p.output)
    ax = data.channel_axis % len(case.shape)
    n = case.count
    gamma = data.gamma.astype(wp).astype(wn)[:, None]  # used in the declared parameter dtype
    beta = data.beta.astype(wp).astype(wn)[:, None]
    rm = data.running_mean.astype(wr)
    rv = data.running_var.astype(wr)
    out: dict[tuple[str, int | None], np.ndarray] = {}
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731

    def stats(x, m=None, n=n):
        """Two-pass mean and biased variance per channel (row); ``m``: over the unmasked values only."""
        xs = x.astype(ws)
        cnt = ws.type(n) if m is None else m.sum(axis=1).astype(ws)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            mean = (xs if m is None else np.where(m, xs, ws.type(0))).sum(axis=1) / cnt
            d = xs - mean[:, None]
            if m is not None:
                d = np.where(m, d, ws.type(0))
            var = (d * d).sum(axis=1) / cnt
        return mean, var

    def normalize(x, g, mean, var, wh=wh, wn=wn):
        """y, dx (through the statistics when ``mean``/``var`` are the batch's), dgamma, dbeta."""
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            m = mean.astype(wh).astype(wn)[:, None]
            inv = (wn.type(1) / np.sqrt(var.astype(wh).astype(wn) + wn.type(eps)))[:, None]
            xhat = (x.astype(wn) - m) * inv
            y = xhat * gamma.astype(wn) + beta.astype(wn)
            gs = g.astype(ws)
            sum_g = gs.sum(axis=1)
            sum_gx = (gs * xhat.astype(ws)).sum(axis=1)
        return y, xhat, inv, sum_g, sum_gx

    def train(x, g, m=None, n=n):
        mean, var = stats(x, m, n)
        y, xhat, inv, sum_g, sum_gx = normalize(x, g, mean, var)
        cnt = ws.type(n) if m is None else m.sum(axis=1).astype(ws)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            mg = (sum_g / cnt).astype(wn)[:, None]
            mgx = (sum_gx / cnt).astype(wn)[:, None]
            if m is None:
                dx = gamma * inv * (g.astype(wn) - mg - xhat * mgx)
            else:  # the statistics depend on the unmasked values only (reference.masked_train_backward)
                dx = gamma * inv * (g.astype(wn) - np.where(m, mg, wn.type(0)) - np.where(m, xhat * mgx, wn.type(0)))
        return mean, var, {"y": y, "dx": dx, "dgamma": sum_gx, "dbeta": sum_g}

    def store(q, vals, step, x_like):
        for name, v in vals.items():
            if name in ("dgamma", "dbeta"):
                if case.has_scale if name == "dgamma" else case.has_center:
                    out[(f"{name}{q}", step)] = f64(v.astype(wp))
            else:
                out[(f"{name}{q}", step)] = f64(_back(v.astype(wo), x_like, ax))

    rn = case.renorm
    if rn is not None:  # batch renormalization's state, stored in ``running`` like the moving statistics
        st = {"mm": rm, "ms": np.sqrt(data.running_var.astype(np.float64)).astype(wr), "rmean": rm,
              "rsd": np.sqrt(data.running_var.astype(np.float64)).astype(wr)}

    def renorm_train(x, g):
        """Batch renormalization, careful: r and d from the statistics above in ``statistics``, applied to xhat as
        gamma (r xhat + d) + beta; the state updated in ``statistics`` and stored in ``running``."""
        mean, var = stats(x)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            sd = np.sqrt(var + ws.type(eps))
            rs = np.maximum(st["rsd"].astype(ws), np.sqrt(ws.type(eps)))
            r, d = sd / rs, (mean - st["rmean"].astype(ws)) / rs
            r = np.clip(r, -np.inf if rn.rmin is None else rn.rmin, np.inf if rn.rmax is None else rn.rmax).astype(ws)
            d = (d if rn.dmax is None else np.clip(d, -rn.dmax, rn.dmax)).astype(ws)
        y, xhat, inv, sum_g, sum_gx = normalize(x, g, mean, var)
        with np.errstate(invalid="ignore", over="ignore"):
            rn_, dn = r.astype(wn)[:, None], d.astype(wn)[:, None]
            y = (xhat * rn_ + dn) * gamma.astype(wn) + beta.astype(wn)
            mg = (sum_g / ws.type(n)).astype(wn)[:, None]
            mgx = (sum_gx / ws.type(n)).astype(wn)[:, None]
            dx = gamma * rn_ * inv * (g.astype(wn) - mg - xhat * mgx)
            dgamma = r * sum_gx + d * sum_g
            w, wr_ = ws.type(momentum), ws.type(rn.momentum)
            one = ws.type(1)
            ms = (one - w) * st["ms"].astype(ws) + w * sd
            st["mm"] = ((one - w) * st["mm"].astype(ws) + w * mean).astype(wr)
            st["ms"] = ms.astype(wr)
            st["mv"] = np.maximum(ms * ms - ws.type(eps), ws.type(0)).astype(wr)
            st["rmean"] = ((one - wr_) * st["rmean"].astype(ws) + wr_ * mean).astype(wr)
            st["rsd"] = ((one - wr_) * st["rsd"].astype(ws) + wr_ * sd).astype(wr)
        return {"y": y, "dx": dx, "dgamma": dgamma, "dbeta": sum_g}

    def ghost_train(x_like, g_like):
        """Ghost BN, careful: ``train`` on each virtual batch, dgamma and dbeta the sum of the groups' sums, in
        ``statistics``; (the group means, the group variances, the values), y and dx as (C, n) of the whole batch."""
        groups = ref.ghost_groups(x_like.shape[0], case.virtual_batch_size)
        y, dx = np.empty(x_like.shape, wn), np.empty(x_like.shape, wn)
        means, variances, sum_gx, sum_g = [], [], ws.type(0), ws.type(0)
        for idx in groups:
            mean, var, vals = train(_cn(x_like[idx], ax), _cn(g_like[idx], ax), n=n // len(groups))
            y[idx], dx[idx] = _back(vals["y"], x_like[idx], ax), _back(vals["dx"], x_like[idx], ax)
            means.append(mean)
            variances.append(var)
            sum_gx, sum_g = sum_gx + vals["dgamma"], sum_g + vals["dbeta"]
        return means, variances, {"y": _cn(y, ax), "dx": _cn(dx, ax), "dgamma": sum_gx, "dbeta": sum_g}

    def dp_train(x_like, g_like):
        """Data parallelism, careful: with sync ``train`` on the whole batch (what an all-reduce of the shards' sums
        gives), else on each shard; dgamma and dbeta reduced over the replicas in ``statistics``; the replicas' (means,
        variances, value counts), y and dx as (C, n) of the whole batch."""
        sizes = case.shards
        if case.data_parallel.sync:
            mean, var, vals = train(_cn(x_like, ax), _cn(g_like, ax))
            stats_ = [(mean, var, n)] * len(sizes)
        else:
            y, dx = np.empty(x_like.shape, wn), np.empty(x_like.shape, wn)
            stats_, sum_gx, sum_g = [], ws.type(0), ws.type(0)
            for sl, size in zip(ref.shard_slices(sizes), sizes):
                nr = n // case.shape[0] * size
                mean, var, part = train(_cn(x_like[sl], ax), _cn(g_like[sl], ax), n=nr)
                y[sl], dx[sl] = _back(part["y"], x_like[sl], ax), _back(part["dx"], x_like[sl], ax)
                stats_.append((mean, var, nr))
                sum_gx, sum_g = sum_gx + part["dgamma"], sum_g + part["dbeta"]
            vals = {"y": _cn(y, ax), "dx": _cn(dx, ax), "dgamma": sum_gx, "dbeta": sum_g}
        if replica_gradients == "mean":
            vals["dgamma"], vals["dbeta"] = vals["dgamma"] / ws.type(len(sizes)), vals["dbeta"] / ws.type(len(sizes))
        return stats_, vals

    if case.virtual_batch_size and case.shape[0] % case.virtual_batch_size:
        return out  # an uneven split: the oracle defines nothing (harness.expected)
    updates = 0
    for i, (kind, batch) in enumerate(zip(case.schedule, case.batches)):
        x_like, g_like = (data.x_eval, data.g_eval) if batch is None else (data.x[batch], data.g[batch])
        x, g = _cn(x_like, ax), _cn(g_like, ax)
        sfx = "" if kind == "train" else f"_{kind}"
        keep = ("y", "dx") if kind == "frozen" else ("y", "dx", "dgamma", "dbeta")
        if kind == "eval" or (kind == "frozen" and frozen_call == "inference"):
            if not case.track_running_stats:
                vals = train(x, g)[2]
            else:
                we = np_dtype(p.eval_normalize or p.normalize)
                y, xhat, inv, sum_g, sum_gx = normalize(x, g, rm, rv, wh=np_dtype(p.eval_held or p.held), wn=we)
                with np.errstate(invalid="ignore", over="ignore"):
                    dx = g.astype(we) * gamma.astype(we) * inv
                vals = {"y": y, "dx": dx, "dgamma": sum_gx, "dbeta": sum_g}
                out[(f"running_mean{sfx}", i)] = f64(rm)
                out[(f"running_var{sfx}", i)] = f64(rv)
            store(sfx, {k: v for k, v in vals.items() if k in keep}, i, x_like)
            continue
        if rn is not None:
            vals = renorm_train(x, g)
            store(sfx, {k: v for k, v in vals.items() if k in keep}, i, x_like)
            rm, rv = st["mm"], st["mv"]
            out[(f"running_mean{sfx}", i)] = f64(rm)
            out[(f"running_var{sfx}", i)] = f64(rv)
            continue
        if case.data_parallel is not None:  # replicas: each updates its copy; the first, or their average, is kept
            stats_, vals = dp_train(x_like, g_like)
            store(sfx, {k: v for k, v in vals.items() if k in keep}, i, x_like)
            w = float(momentum)
            kept = []
            with np.errstate(invalid="ignore", over="ignore"):
                for mean, var, nr in stats_[:1] if replica_running == "first" else stats_:
                    f = ref.bessel_factor(nr, estimator)
                    kept.append(((ws.type(1 - w) * rm.astype(ws) + ws.type(w) * mean).astype(wr),
                                 (ws.type(1 - w) * rv.astype(ws) + ws.type(w) * (var * ws.type(f))).astype(wr)))
                cnt = ws.type(len(kept))
                rm = (np.sum([a for a, _ in kept], axis=0, dtype=ws) / cnt).astype(wr)
                rv = (np.sum([b for _, b in kept], axis=0, dtype=ws) / cnt).astype(wr)
            out[(f"running_mean{sfx}", i)] = f64(rm)
            out[(f"running_var{sfx}", i)] = f64(rv)
            continue
        if case.virtual_batch_size is not None:  # ghost BN: the averaged group statistics, or each group in turn
            means, variances, vals = ghost_train(x_like, g_like)
            store(sfx, {k: v for k, v in vals.items() if k in keep}, i, x_like)
            w, f = float(momentum), ref.bessel_factor(n // case.groups, estimator)
            with np.errstate(invalid="ignore", over="ignore"):
                if virtual_batch_update == "group_average":
                    cnt = ws.type(len(means))
                    means, variances = [np.sum(means, axis=0, dtype=ws) / cnt], [np.sum(variances, axis=0,
                                                                                        dtype=ws) / cnt]
                for mean, var in zip(means, variances):
                    rm = (ws.type(1 - w) * rm.astype(ws) + ws.type(w) * mean).astype(wr)
                    rv = (ws.type(1 - w) * rv.astype(ws) + ws.type(w) * (var * ws.type(f))).astype(wr)
            out[(f"running_mean{sfx}", i)] = f64(rm)
            out[(f"running_var{sfx}", i)] = f64(rv)
            continue
        mk = _cn(data.mask[batch], ax) if data.mask is not None else None
        mean, var, vals = train(x, g, mk)
        store(sfx, {k: v for k, v in vals.items() if k in keep}, i, x_like)
        if mk is not None:  # masked: per channel, with its unmasked count; an empty channel keeps its statistics
            cnt = mk.sum(axis=1)
            w = float(momentum)
            f = np.array([ref.bessel_factor(int(c), estimator) if c else 1.0 for c in cnt], dtype=ws)
            with np.errstate(invalid="ignore", over="ignore"):
                rm = np.where(cnt > 0, (ws.type(1 - w) * rm.astype(ws) + ws.type(w) * mean).astype(wr), rm)
                rv = np.where(cnt > 0, (ws.type(1 - w) * rv.astype(ws) + ws.type(w) * (var * f)).astype(wr), rv)
            out[(f"running_mean{sfx}", i)] = f64(rm)
            out[(f"running_var{sfx}", i)] = f64(rv)
            continue
        if case.track_running_stats and n > 0:  # an empty batch leaves the state as it was
            updates += 1
            w = 1.0 / updates if momentum == "cumulative" else float(momentum)
            f = ref.bessel_factor(n, estimator)
            with np.errstate(invalid="ignore", over="ignore"):
                rm = (ws.type(1 - w) * rm.astype(ws) + ws.type(w) * mean).astype(wr)
                rv = (ws.type(1 - w) * rv.astype(ws) + ws.type(w) * (var * ws.type(f))).astype(wr)
        if case.track_running_stats:
            out[(f"running_mean{sfx}", i)] = f64(rm)
            out[(f"running_var{sfx}", i)] = f64(rv)
    return out


def stable_error(expected: np.ndarray, stable: np.ndarray) -> float:
    """max |stable - expected| over the elements finite in both (0 when there are none)."""
    e, s = np.broadcast_arrays(np.asarray(expected, dtype=np.float64), np.asarray(stable, dtype=np.float64))
    both = np.isfinite(e) & np.isfinite(s)
    if not both.any():
        return 0.0
    return float(np.abs(s[both] - e[both]).max())


def weak_ratio(expected: np.ndarray, dtype: str, observed_err: float | None,
               stable: np.ndarray | None) -> tuple[float, float] | None:
    """(the stable BN's error, the observed error over it plus one ulp of ``dtype`` at the quantity's scale),
    or None where there is nothing to compare (no stable value, or no finite observed error)."""
    if stable is None or observed_err is None or not np.isfinite(observed_err):
        return None
    from harness.compare import ulp

    e = np.asarray(expected, dtype=np.float64)
    fin = np.isfinite(e)
    scale = float(np.abs(e[fin]).max()) if fin.any() else 0.0
    s_err = stable_error(e, stable)
    return s_err, float(observed_err) / (s_err + ulp(scale, dtype))
