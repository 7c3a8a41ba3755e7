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
