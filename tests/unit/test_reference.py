"""The oracle is proven, not assumed: finite differences, hand-derived values, the EMA recurrence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref


def _loss(x, g, gamma, beta, eps, axis):
    return float((ref.train_forward(x, gamma, beta, eps, axis)[0] * g).sum())


def _central_diff(f, a, h=1e-6):
    grad = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + h
        fp = f()
        a[i] = old - h
        fm = f()
        a[i] = old
        grad[i] = (fp - fm) / (2 * h)
    return grad


def _rel(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


@pytest.mark.parametrize("shape,axis", [((5, 3), 1), ((4, 2, 3), 1), ((3, 2, 2, 3), -1), ((2, 3, 2, 2, 2), 1)])
def test_train_gradients_match_central_differences(shape, axis):
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.5, shape)
    g = rng.normal(size=shape)
    c = shape[axis]
    gamma, beta, eps = rng.uniform(0.5, 1.5, c), rng.normal(size=c), 1e-3
    dx, dgamma, dbeta = ref.train_backward(x, g, gamma, eps, axis)
    assert _rel(dx, _central_diff(lambda: _loss(x, g, gamma, beta, eps, axis), x)) <= 1e-7
    assert _rel(dgamma, _central_diff(lambda: _loss(x, g, gamma, beta, eps, axis), gamma)) <= 1e-7
    assert _rel(dbeta, _central_diff(lambda: _loss(x, g, gamma, beta, eps, axis), beta)) <= 1e-7


def test_eval_gradients_match_central_differences():
    rng = np.random.default_rng(1)
    x, g = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.normal(size=4)
    rm, rv = rng.normal(size=4), rng.uniform(0.5, 2, 4)

    def loss():
        return float((ref.eval_forward(x, gamma, beta, rm, rv, 1e-5, 1) * g).sum())

    dx, dgamma, dbeta = ref.backward(x, g, gamma, 1e-5, 1, training=False, running_mean=rm, running_var=rv)
    assert _rel(dx, _central_diff(loss, x)) <= 1e-7
    assert _rel(dgamma, _central_diff(loss, gamma)) <= 1e-7
    assert _rel(dbeta, _central_diff(loss, beta)) <= 1e-7


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 6), c=st.integers(1, 3), loc=st.floats(-5, 5), scale=st.floats(0.1, 5),
       seed=st.integers(0, 2**16))
def test_gradients_property(n, c, loc, scale, seed):
    rng = np.random.default_rng(seed)
    x = loc + scale * rng.normal(size=(n, c))
    g = rng.normal(size=(n, c))
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.normal(size=c)
    dx, _, _ = ref.train_backward(x, g, gamma, 1e-2, 1)
    num = _central_diff(lambda: _loss(x, g, gamma, beta, 1e-2, 1), x)
    assert np.abs(dx - num).max() <= 1e-7 * max(np.abs(num).max(), 1.0)


def test_hand_derived_two_values():
    # x = [1, 3] in one channel: mean 2, biased var 1; with eps 0: xhat = [-1, 1]
    x = np.array([[1.0], [3.0]])
    y, mean, var = ref.train_forward(x, np.array([2.0]), np.array([0.5]), 0.0, 1)
    assert mean.tolist() == [2.0] and var.tolist() == [1.0]
    assert y.ravel().tolist() == [-1.5, 2.5]
    # g = [1, 0]: mean(g) = 0.5, mean(g * xhat) = -0.5 -> dx = 2 * ([1, 0] - 0.5 - [-1, 1] * -0.5) = [0, 0]
    dx, dgamma, dbeta = ref.train_backward(x, np.array([[1.0], [0.0]]), np.array([2.0]), 0.0, 1)
    assert dx.ravel().tolist() == [0.0, 0.0]
    assert dgamma.tolist() == [-1.0] and dbeta.tolist() == [1.0]


def test_hand_derived_eps_inside_sqrt():
    # x = [0, 2]: var 1; eps 3 -> s = 2, xhat = [-0.5, 0.5]
    y, _, _ = ref.train_forward(np.array([[0.0], [2.0]]), [1.0], [0.0], 3.0, 1)
    assert y.ravel().tolist() == [-0.5, 0.5]


def test_running_recurrence_over_steps():
    rng = np.random.default_rng(2)
    rm, rv = np.zeros(3), np.ones(3)
    m, n = 0.1, 8
    xs = [rng.normal(size=(n, 3)) for _ in range(5)]
    for x in xs:
        mean, var = ref.batch_stats(x, 1)
        rm, rv = ref.update_running(rm, rv, mean, var, n, m, "unbiased")
    # closed form of the EMA: r_T = (1-m)^T r_0 + sum_t m (1-m)^(T-1-t) b_t
    T = len(xs)
    want_m = sum(m * (1 - m) ** (T - 1 - t) * xs[t].mean(0) for t in range(T))
    want_v = (1 - m) ** T + sum(m * (1 - m) ** (T - 1 - t) * xs[t].var(0, ddof=1) for t in range(T))
    np.testing.assert_allclose(rm, want_m, rtol=1e-14)
    np.testing.assert_allclose(rv, want_v, rtol=1e-14)


def test_cumulative_average_is_plain_mean():
    rng = np.random.default_rng(3)
    rm, rv = np.zeros(2), np.ones(2)
    xs = [rng.normal(size=(4, 2)) for _ in range(4)]
    for t, x in enumerate(xs, start=1):
        mean, var = ref.batch_stats(x, 1)
        rm, rv = ref.update_running(rm, rv, mean, var, 4, None, "unbiased", num_batches_tracked=t)
    np.testing.assert_allclose(rm, np.mean([x.mean(0) for x in xs], axis=0), rtol=1e-14)
    np.testing.assert_allclose(rv, np.mean([x.var(0, ddof=1) for x in xs], axis=0), rtol=1e-14)


def test_estimators():
    mean, var = np.array([1.0]), np.array([2.0])
    for est, want in (("biased", 2.0), ("unbiased", 2.0 * 4 / 3), ("unbiased_guarded", 2.0 * 4 / 3)):
        _, rv = ref.update_running([0.0], [0.0], mean, var, 4, 1.0, est)
        assert rv[0] == pytest.approx(want, rel=1e-15)
    with pytest.raises(ValueError, match="estimator"):
        ref.update_running([0.0], [0.0], mean, var, 4, 1.0, "sample")


def test_degenerate_count_one():
    x = np.array([[5.0, -1.0]])
    y, mean, var = ref.train_forward(x, [1.0, 2.0], [0.25, -0.5], 1e-5, 1)
    assert var.tolist() == [0.0, 0.0] and y.ravel().tolist() == [0.25, -0.5]
    _, rv = ref.update_running([0, 0], [1, 1], mean, var, 1, 0.1, "unbiased")
    assert np.isnan(rv).all()  # n/(n-1) = inf times a zero variance
    _, rv = ref.update_running([0, 0], [1, 1], mean, var, 1, 0.1, "unbiased_guarded")
    assert rv.tolist() == [0.9, 0.9]


def test_degenerate_zero_variance():
    x = np.full((4, 1), 7.0)
    g = np.array([[1.0], [2.0], [3.0], [6.0]])
    y, _, var = ref.train_forward(x, [3.0], [0.5], 1e-4, 1)
    assert var[0] == 0 and (y == 0.5).all()
    dx, dgamma, dbeta = ref.train_backward(x, g, [3.0], 1e-4, 1)
    np.testing.assert_allclose(dx.ravel(), 3.0 / np.sqrt(1e-4) * (g.ravel() - 3.0))
    assert dgamma[0] == 0 and dbeta[0] == 12.0


def test_degenerate_eps_zero():
    x = np.full((3, 1), 2.0)
    y, _, _ = ref.train_forward(x, [1.0], [0.0], 0.0, 1)
    assert np.isnan(y).all()
    dx, _, dbeta = ref.train_backward(x, np.ones((3, 1)), [1.0], 0.0, 1)
    assert np.isnan(dx).all() and dbeta[0] == 3.0
    # eps == 0 with a non-zero variance is fine
    y, _, _ = ref.train_forward(np.array([[0.0], [2.0]]), [1.0], [0.0], 0.0, 1)
    assert y.ravel().tolist() == [-1.0, 1.0]


def test_channels_last_equals_channels_first():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 4, 5))
    y1, m1, v1 = ref.train_forward(x, [1, 2, 3], [0, 1, 2], 1e-5, 1)
    y2, m2, v2 = ref.train_forward(np.moveaxis(x, 1, -1), [1, 2, 3], [0, 1, 2], 1e-5, -1)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_allclose(np.moveaxis(y1, 1, -1), y2, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(v1, v2, rtol=1e-15)


# -- Batch Renormalization -----------------------------------------------------------------------------------

def _renorm_batches():
    """The measured example (/tmp research notes, Scenario 4): two (8, 3) float32 batches, Keras 3 on TF, JAX and
    torch and tf-keras non-fused all returned the numbers below."""
    r = np.random.RandomState(5)
    b1 = (r.randn(8, 3) * np.array([2.0, 0.5, 1.0]) + np.array([3.0, -1.0, 0.0])).astype(np.float32)
    b2 = (r.randn(8, 3) * np.array([1.0, 3.0, 0.2]) + np.array([1.0, 2.0, 0.5])).astype(np.float32)
    return [b1, b2], np.random.RandomState(7).randn(8, 3).astype(np.float32)


def test_renorm_matches_the_measured_frameworks():
    """Keras momentum 0.9 (weight of new 0.1), renorm_momentum 0.8 (0.2), eps 1e-3, clipping rmax 1.5, rmin 0.5,
    dmax 0.3: r, d, the state after each step, the gradients and the eval output as Keras 3 (three backends) and
    tf-keras non-fused measured them (printed to 6 decimals)."""
    batches, w = _renorm_batches()
    gamma, beta, eps = np.array([1.0, 2.0, 0.5]), np.array([0.1, -0.2, 0.3]), 1e-3
    st = ref.renorm_initial(np.zeros(3), np.ones(3))
    measured = [
        dict(r=[1.078696, 0.5, 1.364256], d=[0.3, -0.3, 0.3], y0=[2.401707, -1.151379, 1.491298],
             moving_mean=[0.188075, -0.102986, 0.034818], moving_variance=[1.014801, 0.879937, 1.073178],
             moving_stddev=[1.00787, 0.938583, 1.036426], renorm_mean=[0.37615, -0.205973, 0.069635],
             renorm_stddev=[1.015739, 0.877165, 1.072851], dgamma=[4.562065, 2.465588, -1.746657],
             dbeta=[2.178503, -5.255454, 4.441899]),
        dict(r=[0.644019, 1.5, 0.5], d=[0.3, 0.3, 0.3], y0=[0.830045, 2.210104, 0.457607],
             moving_mean=[0.32523, 0.203147, 0.082325], moving_variance=[0.944753, 1.080834, 0.880999],
             moving_stddev=[0.972498, 1.040113, 0.939148], renorm_mean=[0.612845, 0.426892, 0.157687],
             renorm_stddev=[0.943422, 1.092509, 0.871011], dgamma=[-1.006771, 0.687566, 3.128644],
             dbeta=[2.178503, -5.255454, 4.441899]),
    ]
    for x, want in zip(batches, measured):
        mean, var = ref.batch_stats(x, 1)
        r, d = ref.renorm_correction(mean, var, st.renorm_mean, st.renorm_stddev, eps, rmin=0.5, rmax=1.5, dmax=0.3)
        y, _, _ = ref.renorm_train_forward(x, gamma, beta, eps, r, d, 1)
        _, dgamma, dbeta = ref.renorm_train_backward(x, w, gamma, eps, r, d, 1)
        st = ref.renorm_update(st, mean, var, eps, 0.1, 0.2)
        got = dict(r=r, d=d, y0=y[0], dgamma=dgamma, dbeta=dbeta, **st._asdict())
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, atol=2e-6, err_msg=key)
    y_eval = ref.eval_forward(batches[1], gamma, beta, st.moving_mean, st.moving_variance, eps, 1)
    np.testing.assert_allclose(y_eval[0], [1.818471, 7.364789, 0.528667], atol=2e-6)


def test_renorm_clipping_by_hand():
    """r = sd / max(renorm_stddev, sqrt(eps)) clipped to [rmin, rmax]; d = (mean - renorm_mean) / rs to +-dmax; a
    bound left out does not clip."""
    mean, var, eps = np.array([3.0, -3.0, 0.1]), np.array([16.0 - 1e-2, 0.0, 1.0 - 1e-2]), 1e-2
    rm, rsd = np.zeros(3), np.array([2.0, 1e-3, 1.0])
    r, d = ref.renorm_correction(mean, var, rm, rsd, eps)
    np.testing.assert_allclose(r, [2.0, 1.0, 1.0])  # rs floored at sqrt(eps) = 0.1 on channel 1: 0.1 / 0.1
    np.testing.assert_allclose(d, [1.5, -30.0, 0.1])
    r, d = ref.renorm_correction(mean, var, rm, rsd, eps, rmin=1.2, rmax=1.5, dmax=1.0)
    np.testing.assert_allclose(r, [1.5, 1.2, 1.2])
    np.testing.assert_allclose(d, [1.0, -1.0, 0.1])
    r, d = ref.renorm_correction(mean, var, rm, rsd, eps, rmax=1.5)
    np.testing.assert_allclose(r, [1.5, 1.0, 1.0])
    np.testing.assert_allclose(d, [1.5, -30.0, 0.1])


def _fd_inputs(rng, shape, axis, rows_differ=False):
    """x, g, gamma, beta and eps for a central-difference test, drawn in this order from ``rng``; ``rows_differ``
    shifts each sample by its index, so that how the batch is split (virtual batches, shards) matters."""
    x, g = rng.normal(0.5, 2.0, shape), rng.normal(size=shape)
    if rows_differ:
        x += np.arange(shape[0]).reshape(-1, *[1] * (len(shape) - 1))
    c = shape[axis]
    return x, g, rng.uniform(0.5, 1.5, c), rng.normal(size=c), 1e-3


@pytest.mark.parametrize("shape,axis", [((6, 3), 1), ((3, 2, 2, 3), -1)])
def test_renorm_gradients_match_central_differences_with_r_and_d_constant(shape, axis):
    """The forward differentiated numerically, r and d computed once and held fixed (stop_gradient): the oracle's
    dx, dgamma and dbeta."""
    rng = np.random.default_rng(3)
    x, g, gamma, beta, eps = _fd_inputs(rng, shape, axis)
    c = shape[axis]
    mean, var = ref.batch_stats(x, axis)
    r, d = ref.renorm_correction(mean, var, rng.normal(size=c), rng.uniform(0.5, 2.0, c), eps, rmin=0.8, rmax=1.2,
                                 dmax=0.5)
    assert not np.allclose(r, 1.0) and not np.allclose(d, 0.0)

    def loss():
        return float((ref.renorm_train_forward(x, gamma, beta, eps, r, d, axis)[0] * g).sum())

    dx, dgamma, dbeta = ref.renorm_train_backward(x, g, gamma, eps, r, d, axis)
    assert _rel(dx, _central_diff(loss, x)) <= 1e-7
    assert _rel(dgamma, _central_diff(loss, gamma)) <= 1e-7
    assert _rel(dbeta, _central_diff(loss, beta)) <= 1e-7
    # r = 1, d = 0 is plain BN
    ones, zeros = np.ones(c), np.zeros(c)
    np.testing.assert_allclose(ref.renorm_train_forward(x, gamma, beta, eps, ones, zeros, axis)[0],
                               ref.train_forward(x, gamma, beta, eps, axis)[0], rtol=1e-14, atol=1e-14)


def test_ghost_groups_are_strided_by_hand():
    """tf-keras reshapes (N, ...) to (v, N / v, ...) and keeps axis 1: virtual batch j holds samples j, j + G, ..."""
    assert [list(i) for i in ref.ghost_groups(8, 2)] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert [list(i) for i in ref.ghost_groups(8, 4)] == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert [list(i) for i in ref.ghost_groups(3, 3)] == [[0, 1, 2]]
    with pytest.raises(ValueError, match="does not divide"):
        ref.ghost_groups(8, 3)


def test_ghost_forward_and_update_by_hand():
    """x = [1, 2, 3, 5] (one channel), v = 2, eps = 0: the groups are {1, 3} (mean 2, var 1) and {2, 5} (mean 3.5,
    var 2.25), so y = [-1, -1, 1, 1] (contiguous blocks {1, 2}, {3, 5} would give [-1, 1, -1, 1]). The running
    mean takes the mean of the group means, 2.75 (the batch mean), the running variance the mean of the group
    variances, 1.625 (the batch variance is 2.1875): with momentum 0.5 from (0, 1), (1.375, 1.3125)."""
    x = np.array([[1.0], [2.0], [3.0], [5.0]])
    y, means, variances = ref.ghost_train_forward(x, [1.0], [0.0], 0.0, 2, 1)
    np.testing.assert_array_equal(y[:, 0], [-1.0, -1.0, 1.0, 1.0])
    np.testing.assert_array_equal(means[:, 0], [2.0, 3.5])
    np.testing.assert_array_equal(variances[:, 0], [1.0, 2.25])
    rm, rv = ref.ghost_update_running([0.0], [1.0], means, variances, 2, 0.5, "biased")
    np.testing.assert_array_equal(rm, [1.375])
    np.testing.assert_array_equal(rv, [1.3125])
    # the unbiased estimator takes the Bessel factor of a group's count (2): 2 * 1.625
    assert ref.ghost_update_running([0.0], [1.0], means, variances, 2, 0.5, "unbiased")[1][0] == 0.5 + 0.5 * 3.25
    # sequential (the paper's algorithm): group 0 then group 1, (0, 1) -> (1, 1) -> (2.25, 1.625)
    rm, rv = ref.ghost_update_running([0.0], [1.0], means, variances, 2, 0.5, "biased", "sequential")
    np.testing.assert_array_equal(rm, [2.25])
    np.testing.assert_array_equal(rv, [1.625])
    with pytest.raises(ValueError, match="update must be one of"):
        ref.ghost_update_running([0.0], [1.0], means, variances, 2, 0.5, "biased", "per_group")


def test_ghost_one_sample_per_group_and_whole_batch():
    """v = 1: each group is one sample, variance 0: y = beta and dx = 0 (eps > 0); the running variance decays toward
    0. v = N: one group, plain BN, bit for bit."""
    rng = np.random.default_rng(4)
    x, g = rng.normal(1.0, 2.0, (6, 3, 2)), rng.normal(size=(6, 3, 2))
    gamma, beta, eps = rng.uniform(0.5, 1.5, 3), rng.normal(size=3), 1e-3
    x1 = x[:, :, :1]  # one value per sample and channel
    y, means, variances = ref.ghost_train_forward(x1, gamma, beta, eps, 1, 1)
    np.testing.assert_array_equal(y, np.broadcast_to(beta[None, :, None], x1.shape))
    assert not variances.any()
    np.testing.assert_array_equal(ref.ghost_train_backward(x1, g[:, :, :1], gamma, eps, 1, 1)[0], 0.0)
    y, means, variances = ref.ghost_train_forward(x, gamma, beta, eps, 6, 1)
    np.testing.assert_array_equal(y, ref.train_forward(x, gamma, beta, eps, 1)[0])
    for a, b in zip(ref.ghost_train_backward(x, g, gamma, eps, 6, 1), ref.train_backward(x, g, gamma, eps, 1)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape,axis,v", [((8, 3), 1, 2), ((8, 3), 1, 4), ((4, 2, 2, 3), -1, 2),
                                          ((6, 3, 2, 2), 1, 3), ((4, 2, 3, 2), 2, 1)])
def test_ghost_gradients_match_central_differences(shape, axis, v):
    """The ghost forward differentiated numerically, through every virtual batch's statistics."""
    x, g, gamma, beta, eps = _fd_inputs(np.random.default_rng(5), shape, axis, rows_differ=True)

    def loss():
        return float((ref.ghost_train_forward(x, gamma, beta, eps, v, axis)[0] * g).sum())

    dx, dgamma, dbeta = ref.ghost_train_backward(x, g, gamma, eps, v, axis)
    assert _rel(dx, _central_diff(loss, x)) <= 1e-7
    assert _rel(dgamma, _central_diff(loss, gamma)) <= 1e-7
    assert _rel(dbeta, _central_diff(loss, beta)) <= 1e-7


@pytest.mark.parametrize("shape,axis", [((5, 3), 1), ((4, 2, 3), 1), ((3, 2, 2, 3), -1), ((6, 2, 3), 2)])
def test_second_derivatives_match_central_differences_of_the_first(shape, axis):
    """hvp_x and hvp_gamma are the derivatives of train_backward's dx and dgamma along v: central differences of
    the (proven) first derivatives, in float64, agree to 1e-8."""
    rng = np.random.default_rng(2)
    x, g, v = rng.normal(0.3, 1.5, shape), rng.normal(size=shape), rng.normal(0.4, 1.0, shape)
    gamma, eps, h = rng.uniform(0.5, 1.5, shape[axis]), 1e-3, 1e-5
    hx, hg = ref.train_hvp(x, g, gamma, eps, v, axis)
    (dxp, dgp, _), (dxm, dgm, _) = (ref.train_backward(x + s * h * v, g, gamma, eps, axis) for s in (1, -1))
    assert _rel(hx, (dxp - dxm) / (2 * h)) <= 1e-8
    assert _rel(hg, (dgp - dgm) / (2 * h)) <= 1e-8
    # and hvp_x is the Hessian of the loss times v: the gradient of <dx, v> (symmetric second derivatives)
    assert _rel(hx, _central_diff(lambda: float((ref.train_backward(x, g, gamma, eps, axis)[0] * v).sum()), x,
                                  1e-5)) <= 1e-6


def test_second_derivatives_by_hand():
    """Exact identities of BN's second derivatives, per channel: dx sums to zero for every x, so does hvp_x; dx does
    not change when x shifts by a constant, so the second derivatives along a constant direction are zero; with
    eps = 0, dx(lam x) = dx(x) / lam and dgamma(lam x) = dgamma(x), so along v = x - mean they are -dx and 0; and two
    values per channel with eps = 0 normalize to -1 and 1 whatever they are: every derivative is zero."""
    rng = np.random.default_rng(3)
    x, g = rng.normal(0.5, 2.0, (7, 3)), rng.normal(size=(7, 3))
    gamma = np.array([0.5, 1.0, 2.0])
    hx, _ = ref.train_hvp(x, g, gamma, 1e-2, rng.normal(size=(7, 3)), 1)
    assert np.abs(hx.sum(axis=0)).max() <= 1e-13
    hx, hg = ref.train_hvp(x, g, gamma, 1e-2, np.full((7, 3), 2.5), 1)
    assert np.abs(hx).max() <= 1e-13 and np.abs(hg).max() <= 1e-12
    dx = ref.train_backward(x, g, gamma, 0.0, 1)[0]
    hx, hg = ref.train_hvp(x, g, gamma, 0.0, x - x.mean(axis=0), 1)
    np.testing.assert_allclose(hx, -dx, rtol=0, atol=1e-13)
    assert np.abs(hg).max() <= 1e-12
    two = np.array([[3.0, -1.0], [5.0, 4.0]])  # per channel: (3, 5) and (-1, 4)
    hx, hg = ref.train_hvp(two, rng.normal(size=(2, 2)), np.ones(2), 0.0, rng.normal(size=(2, 2)), 1)
    assert np.abs(hx).max() <= 1e-14 and np.abs(hg).max() <= 1e-14
