"""NumPy float64 oracle for Batch Normalization.

Every function works on float64 copies of its inputs and returns float64.
``channel_axis`` names the axis that holds the channels; every other axis is
reduced over. ``n`` below is the number of values per channel (batch size
times the product of the spatial sizes).

Degenerate inputs are defined, not accidental:

* zero variance with ``eps > 0``: ``xhat = 0``, so ``y = beta`` and the
  gradient is ``gamma / sqrt(eps) * (g - mean(g))``.
* zero variance with ``eps == 0``: ``1/sqrt(0)`` is infinite and
  ``0 * inf`` is NaN, so ``y`` and ``dx`` are NaN (``dbeta`` stays finite).
* an empty batch (``count == 0``: N or a spatial size is 0): the batch mean and variance are 0/0, NaN;
  ``y`` and ``dx`` are empty, ``dgamma`` and ``dbeta`` empty sums, 0. The running statistics are left as they
  were: an empty batch has no statistics to fold in (``harness.expected`` applies this; torch does it,
  Keras and Flax fold the NaN in).
* ``count == 1`` with ``estimator="unbiased"``: the Bessel factor
  ``n/(n-1)`` is infinite and the batch variance is 0, so the stored running
  variance is NaN (what PyTorch's kernel does when its Python check is
  bypassed). ``estimator="unbiased_guarded"`` uses ``n/max(n-1, 1)``, which
  gives 0 there (TensorFlow's fused kernel).

A mask (Keras 3, tf-keras and Flax ``mask=``; ``mask`` is boolean, broadcastable to ``x``,
True where a value counts): the batch statistics are over the unmasked values only, exactly
``mean = sum(mask x) / M`` and ``var = sum(mask (x - mean)^2) / M`` with ``M`` the unmasked
count per channel, and every position, masked ones too, is normalized with them
(``masked_batch_stats``, ``masked_train_forward``, ``masked_train_backward``). A channel with
no unmasked value has undefined statistics, 0/0 = NaN: its ``y``, ``dx`` and ``dgamma`` are
NaN (``dbeta = sum(g)`` stays finite), and, as for an empty batch, there is nothing to fold
into its running statistics, which are left as they were (``masked_update_running``).

Batch Renormalization (Ioffe 2017, Keras ``renorm=True``) is BN with a
per-channel affine correction in training: ``y = gamma * (r * xhat + d) +
beta``, where ``r`` and ``d`` compare the batch statistics with renorm's own
moving mean and standard deviation, are clipped, and are constants to the
gradient (``renorm_correction``, ``renorm_train_forward``,
``renorm_train_backward``). Its moving statistics average the standard
deviation ``sqrt(var + eps)``, not the variance; the moving variance is derived
from them (``renorm_update``), and eval is plain BN with it (``eval_forward``).

Ghost batch normalization (tf-keras ``virtual_batch_size=v``): a training call splits the batch
(axis 0) into ``G = N / v`` virtual batches of ``v`` samples and normalizes each with its own
mean and biased variance. Virtual batch ``j`` is the strided set of samples ``{j, j + G, ...}``
(tf-keras reshapes ``(N, ...)`` to ``(v, G, ...)`` and keeps the new axis 1 out of the
reduction), not a contiguous block (``ghost_groups``). The gradient flows through each group's
statistics only; ``dgamma`` and ``dbeta`` sum over the groups (``ghost_train_forward``,
``ghost_train_backward``). The running statistics are updated once per call with the average
over the groups of the group means and of the group variances (``update="group_average"``,
tf-keras), so the running variance takes the mean within-group variance, not the batch
variance; or once per virtual batch, in order (``update="sequential"``, the ghost BN paper's
algorithm, and what a BN module called per chunk does) (``ghost_update_running``). Eval is
plain BN with the running statistics, for any N.

Data parallelism (``replicas`` shards of a training batch, contiguous along axis 0, of sizes
``sizes``; ``shard_slices``): with ``sync=True`` (synchronized BN) every replica normalizes with
the statistics of the global batch, so ``y`` and the gradient of the global loss
``sum_r sum(y_r g_r)`` are those of plain BN over the whole batch (the gradient of each shard
depends on the others through the global mean and variance); with ``sync=False`` each replica
normalizes with its own shard's statistics and the gradient flows through them only
(``dp_train_forward``, ``dp_train_backward``). ``dgamma`` and ``dbeta`` are the replicas'
gradients reduced by ``"sum"`` (the gradient of the global loss) or ``"mean"`` (torch DDP averages
over ranks). Each replica updates its own running statistics with the statistics it normalized
with (the Bessel factor of its shard's count, or of the global count when synchronized); which
copy survives is a convention (``dp_update_running``): ``"first"`` (replica 0's: torch DDP
broadcasts rank 0's buffers, per-device copies read on device 0) or ``"mean"`` (the replicas'
average, a variable aggregated on read).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "ESTIMATORS",
    "GHOST_UPDATES",
    "batch_stats",
    "bessel_factor",
    "normalize",
    "train_forward",
    "eval_forward",
    "backward",
    "train_backward",
    "eval_backward",
    "update_running",
    "masked_batch_stats",
    "masked_train_forward",
    "masked_train_backward",
    "masked_update_running",
    "RenormState",
    "renorm_initial",
    "renorm_correction",
    "renorm_train_forward",
    "renorm_train_backward",
    "renorm_update",
    "ghost_groups",
    "ghost_batch_stats",
    "ghost_train_forward",
    "ghost_train_backward",
    "ghost_update_running",
    "REPLICA_RUNNING",
    "REPLICA_GRADIENTS",
    "shard_slices",
    "dp_replica_stats",
    "dp_train_forward",
    "dp_train_backward",
    "dp_update_running",
]

ESTIMATORS = ("biased", "unbiased", "unbiased_guarded")
GHOST_UPDATES = ("group_average", "sequential")  # how a ghost-BN call updates the running statistics
REPLICA_RUNNING = ("first", "mean")  # which replica's running statistics survive a data-parallel step
REPLICA_GRADIENTS = ("sum", "mean")  # how the replicas' parameter gradients are reduced


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _axes(ndim: int, channel_axis: int) -> tuple[int, ...]:
    c = channel_axis % ndim
    return tuple(i for i in range(ndim) if i != c)


def _mean(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """sum / count over ``axes`` (what ``np.mean`` computes, bit for bit); 0/0 = NaN over no value, silently."""
    count = int(np.prod([a.shape[i] for i in axes]))
    with np.errstate(invalid="ignore", divide="ignore"):
        return a.sum(axis=axes) / float(count)


def _bcast(v, ndim: int, channel_axis: int) -> np.ndarray:
    """Reshape a per-channel vector so it broadcasts against an ``ndim`` array."""
    shape = [1] * ndim
    shape[channel_axis % ndim] = -1
    return _f64(v).reshape(shape)


def batch_stats(x, channel_axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """mean = sum(x)/n; var = sum((x - mean)**2)/n (two-pass, biased)."""
    x = _f64(x)
    axes = _axes(x.ndim, channel_axis)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = _mean(x, axes)
        var = _mean((x - _bcast(mean, x.ndim, channel_axis)) ** 2, axes)
    return mean, var


def _invstd(var, eps) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(_f64(var) + float(eps))


def normalize(x, mean, var, gamma, beta, eps, channel_axis: int = 1) -> np.ndarray:
    """y = gamma * (x - mean) / sqrt(var + eps) + beta."""
    x = _f64(x)
    b = lambda v: _bcast(v, x.ndim, channel_axis)  # noqa: E731
    with np.errstate(invalid="ignore"):
        return b(gamma) * ((x - b(mean)) * b(_invstd(var, eps))) + b(beta)


def train_forward(x, gamma, beta, eps, channel_axis: int = 1):
    """y = normalize(x, batch mean, biased batch var); returns (y, mean, var)."""
    mean, var = batch_stats(x, channel_axis)
    return normalize(x, mean, var, gamma, beta, eps, channel_axis), mean, var


def eval_forward(x, gamma, beta, running_mean, running_var, eps, channel_axis: int = 1):
    """y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta."""
    return normalize(x, running_mean, running_var, gamma, beta, eps, channel_axis)


def train_backward(x, g, gamma, eps, channel_axis: int = 1):
    """Gradients of sum(y * g) through the batch statistics.

    dx = gamma/s * (g - mean(g) - xhat * mean(g * xhat)), s = sqrt(var + eps);
    dgamma = sum(g * xhat); dbeta = sum(g).
    """
    x, g = _f64(x), _f64(g)
    axes = _axes(x.ndim, channel_axis)
    b = lambda v: _bcast(v, x.ndim, channel_axis)  # noqa: E731
    mean, var = batch_stats(x, channel_axis)
    inv = _invstd(var, eps)
    with np.errstate(invalid="ignore"):
        xhat = (x - b(mean)) * b(inv)
        dgamma = (g * xhat).sum(axis=axes)
        dbeta = g.sum(axis=axes)
        dx = b(_f64(gamma) * inv) * (g - b(_mean(g, axes)) - xhat * b(_mean(g * xhat, axes)))
    return dx, dgamma, dbeta


def train_hvp(x, g, gamma, eps, v, channel_axis: int = 1):
    """Second derivatives of L = sum(y * g) in training mode, along a direction ``v`` of the input: the
    Hessian-vector products hvp_x = d/de dx(x + e v) (= d2L/dx2 v) and hvp_gamma = d/de dgamma(x + e v)
    (= d2L/dgamma dx v). Differentiating ``train_backward``'s dx = gamma/s (g - mean(g) - xhat mean(g xhat)) and
    dgamma = sum(g xhat) along v, per channel (xc = x - mean, vc = v - mean(v)):

        var' = 2 mean(xc vc),  s' = var' / (2 s),  xhat' = vc / s - xhat s' / s,
        hvp_x = -(s' / s) dx - gamma / s (xhat' mean(g xhat) + xhat mean(g xhat')),
        hvp_gamma = sum(g xhat').

    The mean's dependence on x enters through vc (mean(v) is the mean's derivative), the variance's through s';
    both are second-order terms a first derivative does not see (tests/unit/test_reference.py proves these by
    finite differences of ``train_backward``)."""
    x, g, v = _f64(x), _f64(g), _f64(v)
    axes = _axes(x.ndim, channel_axis)
    b = lambda a: _bcast(a, x.ndim, channel_axis)  # noqa: E731
    mean, var = batch_stats(x, channel_axis)
    inv = _invstd(var, eps)
    with np.errstate(invalid="ignore", over="ignore"):
        xc = x - b(mean)
        vc = v - b(_mean(v, axes))
        xhat = xc * b(inv)
        ds_s = _mean(xc * vc, axes) * inv * inv  # s' / s = var' / (2 s^2)
        xhat_d = vc * b(inv) - xhat * b(ds_s)
        m1 = _mean(g * xhat, axes)
        m1_d = _mean(g * xhat_d, axes)
        dx = b(_f64(gamma) * inv) * (g - b(_mean(g, axes)) - xhat * b(m1))
        hvp_x = -b(ds_s) * dx - b(_f64(gamma) * inv) * (xhat_d * b(m1) + xhat * b(m1_d))
        hvp_gamma = (g * xhat_d).sum(axis=axes)
    return hvp_x, hvp_gamma


def eval_backward(x, g, gamma, running_mean, running_var, eps, channel_axis: int = 1):
    """Gradients of sum(y * g) with the running statistics held constant.

    dx = g * gamma / sqrt(running_var + eps); dgamma = sum(g * xhat); dbeta = sum(g).
    """
    x, g = _f64(x), _f64(g)
    axes = _axes(x.ndim, channel_axis)
    b = lambda v: _bcast(v, x.ndim, channel_axis)  # noqa: E731
    inv = _invstd(running_var, eps)
    with np.errstate(invalid="ignore"):
        xhat = (x - b(running_mean)) * b(inv)
        return g * b(_f64(gamma) * inv), (g * xhat).sum(axis=axes), g.sum(axis=axes)


def backward(x, g, gamma, eps, channel_axis: int = 1, *, training: bool = True,
             running_mean=None, running_var=None):
    """dx, dgamma, dbeta of sum(y * g): train mode (through the batch stats) or eval mode."""
    if training:
        return train_backward(x, g, gamma, eps, channel_axis)
    if running_mean is None or running_var is None:
        raise ValueError("eval-mode backward needs running_mean and running_var")
    return eval_backward(x, g, gamma, running_mean, running_var, eps, channel_axis)


def bessel_factor(count: int, estimator: str) -> float:
    """biased: 1; unbiased: n/(n-1) (inf at n == 1); unbiased_guarded: n/max(n-1, 1)."""
    if estimator == "biased":
        return 1.0
    if estimator == "unbiased":
        return float("inf") if count == 1 else count / (count - 1)
    if estimator == "unbiased_guarded":
        return count / max(count - 1, 1)
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


def update_running(running_mean, running_var, batch_mean, batch_var, count: int,
                   momentum: float | None, estimator: str = "unbiased", *,
                   num_batches_tracked: int | None = None):
    """r <- (1 - m) * r + m * batch, with batch var scaled by bessel_factor(count, estimator).

    ``momentum`` is the weight of the new statistic. ``momentum=None`` is
    PyTorch's cumulative average: m = 1 / num_batches_tracked, where
    ``num_batches_tracked`` counts this batch too.
    """
    if momentum is None:
        if not num_batches_tracked:
            raise ValueError("momentum=None needs num_batches_tracked >= 1")
        momentum = 1.0 / num_batches_tracked
    m = float(momentum)
    with np.errstate(invalid="ignore"):
        stored_var = _f64(batch_var) * bessel_factor(count, estimator)
        new_mean = (1.0 - m) * _f64(running_mean) + m * _f64(batch_mean)
        new_var = (1.0 - m) * _f64(running_var) + m * stored_var
    return new_mean, new_var


# -- masks ---------------------------------------------------------------------------------------------


def _mask_f64(mask, x: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(mask, dtype=bool), x.shape).astype(np.float64)


def masked_batch_stats(x, mask, channel_axis: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, biased var, count) over the unmasked values of each channel, two-pass: mean = sum(m x) / M,
    var = sum(m (x - mean)^2) / M, M = sum(m); 0/0 = NaN where a channel has no unmasked value. Masked values
    never reach a sum (a NaN or inf there does not spread)."""
    x = _f64(x)
    m = _mask_f64(mask, x)
    axes = _axes(x.ndim, channel_axis)
    count = m.sum(axis=axes)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = np.where(m > 0, x, 0.0).sum(axis=axes) / count
        dev = np.where(m > 0, x - _bcast(mean, x.ndim, channel_axis), 0.0)
        var = (dev * dev).sum(axis=axes) / count
    return mean, var, count


def masked_train_forward(x, mask, gamma, beta, eps, channel_axis: int = 1):
    """y = normalize(x, masked mean, masked biased var) at every position, masked ones too; (y, mean, var)."""
    mean, var, _ = masked_batch_stats(x, mask, channel_axis)
    return normalize(x, mean, var, gamma, beta, eps, channel_axis), mean, var


def masked_train_backward(x, g, mask, gamma, eps, channel_axis: int = 1):
    """Gradients of sum(y * g) over every position, through the masked statistics.

    With d mean / d x_j = m_j / M and d s / d x_j = m_j xhat_j / M:
    dx_j = gamma / s * (g_j - m_j / M * sum(g) - m_j xhat_j / M * sum(g xhat)) (sums over every position);
    dgamma = sum(g xhat); dbeta = sum(g). An all-ones mask gives ``train_backward``.
    """
    x, g = _f64(x), _f64(g)
    m = _mask_f64(mask, x)
    axes = _axes(x.ndim, channel_axis)
    b = lambda v: _bcast(v, x.ndim, channel_axis)  # noqa: E731
    mean, var, count = masked_batch_stats(x, mask, channel_axis)
    inv = _invstd(var, eps)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        xhat = (x - b(mean)) * b(inv)
        dgamma = (g * xhat).sum(axis=axes)
        dbeta = g.sum(axis=axes)
        dx = b(_f64(gamma) * inv) * (g - m * b(dbeta / count) - m * xhat * b(dgamma / count))
    return dx, dgamma, dbeta


def masked_update_running(running_mean, running_var, batch_mean, batch_var, count, momentum: float,
                          estimator: str = "biased"):
    """``update_running`` per channel with that channel's unmasked ``count`` (the Bessel factor's n); a channel
    with no unmasked value has no statistics to fold in and keeps its running statistics."""
    count = np.asarray(count)
    f = np.array([bessel_factor(int(c), estimator) if c > 0 else 1.0 for c in count.reshape(-1)])
    new_mean, new_var = update_running(running_mean, running_var, batch_mean, _f64(batch_var) * f, 1, momentum,
                                       "biased")
    empty = count == 0
    return np.where(empty, _f64(running_mean), new_mean), np.where(empty, _f64(running_var), new_var)


# -- Batch Renormalization -----------------------------------------------------------------------------


class RenormState(NamedTuple):
    """What a renorm layer keeps per channel: the moving mean and stddev it evaluates with (``moving_variance``
    derived from the stddev), and renorm's own moving mean and stddev that ``r`` and ``d`` compare against."""

    moving_mean: np.ndarray
    moving_stddev: np.ndarray
    moving_variance: np.ndarray
    renorm_mean: np.ndarray
    renorm_stddev: np.ndarray


def renorm_initial(running_mean, running_var) -> RenormState:
    """The state a layer starts from, given its initial moving mean and variance: Keras initializes
    ``moving_stddev`` and ``renorm_stddev`` to ``sqrt(moving_variance)`` (no eps) and ``renorm_mean`` to the
    moving mean."""
    rm, rv = _f64(running_mean), _f64(running_var)
    with np.errstate(invalid="ignore"):
        sd = np.sqrt(rv)
    return RenormState(rm.copy(), sd, rv.copy(), rm.copy(), sd.copy())


def renorm_correction(mean, var, renorm_mean, renorm_stddev, eps, rmin=None, rmax=None, dmax=None):
    """(r, d) of one training call, from the batch statistics and the state before the call.

    rs = max(renorm_stddev, sqrt(eps)) (no division by zero early on); r = sqrt(var + eps) / rs, then
    max(r, rmin), then min(r, rmax); d = (mean - renorm_mean) / rs clipped to [-dmax, dmax]. A bound that is None
    does not clip.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rs = np.maximum(_f64(renorm_stddev), np.sqrt(float(eps)))
        r = np.sqrt(_f64(var) + float(eps)) / rs
        d = (_f64(mean) - _f64(renorm_mean)) / rs
        if rmin is not None:
            r = np.maximum(r, float(rmin))
        if rmax is not None:
            r = np.minimum(r, float(rmax))
        if dmax is not None:
            d = np.clip(d, -float(dmax), float(dmax))
    return r, d


def renorm_train_forward(x, gamma, beta, eps, r, d, channel_axis: int = 1):
    """y = gamma * (r * xhat + d) + beta with the batch statistics; returns (y, mean, var)."""
    x = _f64(x)
    b = lambda v: _bcast(v, x.ndim, channel_axis)  # noqa: E731
    mean, var = batch_stats(x, channel_axis)
    with np.errstate(invalid="ignore", over="ignore"):
        xhat = (x - b(mean)) * b(_invstd(var, eps))
        y = b(gamma) * (b(r) * xhat + b(d)) + b(beta)
    return y, mean, var


def renorm_train_backward(x, g, gamma, eps, r, d, channel_axis: int = 1):
    """Gradients of sum(y * g) through the batch statistics, r and d held constant.

    With r constant, y is BN with the scale gamma * r plus a constant shift: dx = train_backward's with gamma * r;
    dgamma = sum(g * (r * xhat + d)) = r * sum(g * xhat) + d * sum(g); dbeta = sum(g).
    """
    dx, dgamma_bn, dbeta = train_backward(x, g, _f64(gamma) * _f64(r), eps, channel_axis)
    with np.errstate(invalid="ignore", over="ignore"):
        dgamma = _f64(r) * train_backward(x, g, np.ones_like(_f64(r)), eps, channel_axis)[1] + _f64(d) * dbeta
    return dx, dgamma, dbeta


def renorm_update(state: RenormState, batch_mean, batch_var, eps, momentum: float,
                  renorm_momentum: float) -> RenormState:
    """The state after a training call. Each average is ``(1 - m) * old + m * batch`` with ``m`` the weight of the
    new statistic: ``momentum`` for the moving mean and stddev, ``renorm_momentum`` for renorm's; the batch's
    stddev is sqrt(var + eps), and moving_variance = max(moving_stddev**2 - eps, 0) (derived, not averaged)."""
    m, mr = float(momentum), float(renorm_momentum)
    with np.errstate(invalid="ignore", over="ignore"):
        sd = np.sqrt(_f64(batch_var) + float(eps))
        mean = _f64(batch_mean)
        ms = (1.0 - m) * state.moving_stddev + m * sd
        return RenormState(
            moving_mean=(1.0 - m) * state.moving_mean + m * mean,
            moving_stddev=ms,
            moving_variance=np.maximum(ms * ms - float(eps), 0.0),
            renorm_mean=(1.0 - mr) * state.renorm_mean + mr * mean,
            renorm_stddev=(1.0 - mr) * state.renorm_stddev + mr * sd,
        )


# -- ghost batch normalization (virtual batches) -------------------------------------------------------


def ghost_groups(n: int, virtual_batch_size: int) -> list[np.ndarray]:
    """The sample indices of each virtual batch: G = n / v groups, group j = {j, j + G, ..., j + (v - 1) G}."""
    v = int(virtual_batch_size)
    if v < 1 or n % v:
        raise ValueError(f"virtual_batch_size {v} does not divide the batch size {n}")
    groups = n // v
    return [np.arange(j, n, groups) for j in range(groups)]


def ghost_batch_stats(x, virtual_batch_size: int, channel_axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(means, biased vars), each (G, C): ``batch_stats`` of every virtual batch (``ghost_groups``)."""
    x = _f64(x)
    stats = [batch_stats(x[idx], channel_axis) for idx in ghost_groups(x.shape[0], virtual_batch_size)]
    return np.array([m for m, _ in stats]), np.array([v for _, v in stats])


def ghost_train_forward(x, gamma, beta, eps, virtual_batch_size: int, channel_axis: int = 1):
    """y = normalize(x_j, mean_j, var_j) for every virtual batch j; returns (y, means, vars), means and vars (G, C)."""
    x = _f64(x)
    y = np.empty_like(x)
    for idx in ghost_groups(x.shape[0], virtual_batch_size):
        y[idx] = train_forward(x[idx], gamma, beta, eps, channel_axis)[0]
    means, variances = ghost_batch_stats(x, virtual_batch_size, channel_axis)
    return y, means, variances


def ghost_train_backward(x, g, gamma, eps, virtual_batch_size: int, channel_axis: int = 1):
    """Gradients of sum(y * g) through each virtual batch's own statistics: dx_j = train_backward(x_j, g_j);
    dgamma = sum_j dgamma_j; dbeta = sum_j dbeta_j."""
    x, g = _f64(x), _f64(g)
    dx = np.empty_like(x)
    dgamma = dbeta = 0.0
    for idx in ghost_groups(x.shape[0], virtual_batch_size):
        dx[idx], dg, db = train_backward(x[idx], g[idx], gamma, eps, channel_axis)
        dgamma, dbeta = dgamma + dg, dbeta + db
    return dx, dgamma, dbeta


def ghost_update_running(running_mean, running_var, group_means, group_vars, group_count: int, momentum: float,
                         estimator: str = "biased", update: str = "group_average"):
    """group_average: ``update_running`` once with mean_j(group means) and mean_j(group vars); sequential:
    ``update_running`` with each group's statistics in turn, j = 0 .. G - 1. The Bessel factor's n is a group's
    ``group_count`` (v times the spatial size)."""
    if update == "group_average":
        return update_running(running_mean, running_var, _f64(group_means).mean(axis=0),
                              _f64(group_vars).mean(axis=0), group_count, momentum, estimator)
    if update != "sequential":
        raise ValueError(f"update must be one of {GHOST_UPDATES}, got {update!r}")
    rm, rv = _f64(running_mean), _f64(running_var)
    for mean, var in zip(_f64(group_means), _f64(group_vars)):
        rm, rv = update_running(rm, rv, mean, var, group_count, momentum, estimator)
    return rm, rv


# -- data parallelism (replicas) -----------------------------------------------------------------------


def shard_slices(sizes) -> list[slice]:
    """The contiguous shards of axis 0, of ``sizes`` samples each, in order."""
    edges = np.cumsum([0, *[int(s) for s in sizes]])
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def dp_replica_stats(x, sizes, sync: bool, channel_axis: int = 1):
    """(means, biased vars, counts): what each replica normalizes with, (R, C), (R, C), (R,): its shard's
    ``batch_stats`` and value count per channel, or with ``sync`` the global batch's for every replica."""
    x = _f64(x)
    per = x.size // max(x.shape[channel_axis % x.ndim], 1) // max(x.shape[0], 1)  # values per sample and channel
    if sync:
        mean, var = batch_stats(x, channel_axis)
        r = len(sizes)
        return np.tile(mean, (r, 1)), np.tile(var, (r, 1)), np.full(r, x.shape[0] * per)
    stats = [batch_stats(x[s], channel_axis) for s in shard_slices(sizes)]
    return (np.array([m for m, _ in stats]), np.array([v for _, v in stats]),
            np.array([int(n) * per for n in sizes]))


def dp_train_forward(x, gamma, beta, eps, sizes, sync: bool, channel_axis: int = 1):
    """y of every shard, normalized with the global statistics (``sync``) or its own; returns (y, means, vars)."""
    x = _f64(x)
    if sync:
        y = train_forward(x, gamma, beta, eps, channel_axis)[0]
    else:
        y = np.concatenate([train_forward(x[s], gamma, beta, eps, channel_axis)[0] for s in shard_slices(sizes)])
    means, variances, _ = dp_replica_stats(x, sizes, sync, channel_axis)
    return y, means, variances


def dp_train_backward(x, g, gamma, eps, sizes, sync: bool, channel_axis: int = 1, reduce: str = "sum"):
    """Gradients of the global loss sum_r sum(y_r g_r): ``sync``: ``train_backward`` of the whole batch (each shard's
    dx through the global statistics); else each shard's ``train_backward``. dgamma, dbeta: summed over the
    replicas, or with ``reduce="mean"`` divided by their number."""
    x, g = _f64(x), _f64(g)
    if reduce not in REPLICA_GRADIENTS:
        raise ValueError(f"reduce must be one of {REPLICA_GRADIENTS}, got {reduce!r}")
    if sync:
        dx, dgamma, dbeta = train_backward(x, g, gamma, eps, channel_axis)
    else:
        parts = [train_backward(x[s], g[s], gamma, eps, channel_axis) for s in shard_slices(sizes)]
        dx = np.concatenate([p[0] for p in parts])
        dgamma, dbeta = sum(p[1] for p in parts), sum(p[2] for p in parts)
    if reduce == "mean":
        dgamma, dbeta = dgamma / len(sizes), dbeta / len(sizes)
    return dx, dgamma, dbeta


def dp_update_running(running_mean, running_var, means, variances, counts, momentum: float,
                      estimator: str = "unbiased", kept: str = "first"):
    """Each replica's ``update_running`` with the statistics it normalized with (``dp_replica_stats``), from the same
    state; ``kept="first"``: replica 0's result, ``"mean"``: the average of the replicas' results."""
    if kept not in REPLICA_RUNNING:
        raise ValueError(f"kept must be one of {REPLICA_RUNNING}, got {kept!r}")
    results = [update_running(running_mean, running_var, m, v, int(n), momentum, estimator)
               for m, v, n in zip(_f64(means), _f64(variances), counts)]
    if kept == "first":
        return results[0]
    return sum(r[0] for r in results) / len(results), sum(r[1] for r in results) / len(results)
