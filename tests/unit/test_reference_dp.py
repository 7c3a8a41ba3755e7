"""The data-parallel oracle is proven, not assumed: central differences of the global loss through per-replica or
synchronized statistics, and the running statistics each convention keeps, by hand."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from tests.unit.test_reference import _central_diff, _fd_inputs, _rel


@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize("shape,axis,sizes", [((8, 3), 1, (4, 4)), ((6, 2, 3), 1, (2, 2, 2)),
                                              ((7, 2, 2, 3), -1, (3, 4)), ((8, 3, 2), 1, (1, 3, 2, 2)),
                                              ((6, 2, 3, 2), 2, (2, 4))])
def test_dp_gradients_match_central_differences(shape, axis, sizes, sync):
    """The global loss sum_r sum(y_r g_r) differentiated numerically: with sync every shard's dx depends on the
    other shards (through the global statistics), without it only on its own."""
    x, g, gamma, beta, eps = _fd_inputs(np.random.default_rng(7), shape, axis, rows_differ=True)

    def loss():
        return float((ref.dp_train_forward(x, gamma, beta, eps, sizes, sync, axis)[0] * g).sum())

    dx, dgamma, dbeta = ref.dp_train_backward(x, g, gamma, eps, sizes, sync, axis)
    assert _rel(dx, _central_diff(loss, x)) <= 1e-7
    assert _rel(dgamma, _central_diff(loss, gamma)) <= 1e-7
    assert _rel(dbeta, _central_diff(loss, beta)) <= 1e-7
    mean_dg = ref.dp_train_backward(x, g, gamma, eps, sizes, sync, axis, reduce="mean")[1]
    np.testing.assert_allclose(mean_dg * len(sizes), dgamma, rtol=1e-15)


def test_sync_is_plain_bn_and_unsynced_is_per_shard_bn():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(6, 3))
    gamma, beta = rng.uniform(0.5, 1.5, 3), rng.normal(size=3)
    y, means, variances = ref.dp_train_forward(x, gamma, beta, 1e-5, (2, 4), True, 1)
    np.testing.assert_array_equal(y, ref.train_forward(x, gamma, beta, 1e-5, 1)[0])
    assert means.shape == (2, 3) and np.array_equal(means[0], means[1])
    y, means, variances = ref.dp_train_forward(x, gamma, beta, 1e-5, (2, 4), False, 1)
    np.testing.assert_array_equal(y[2:], ref.train_forward(x[2:], gamma, beta, 1e-5, 1)[0])
    np.testing.assert_allclose(means[0], x[:2].mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(variances[1], x[2:].var(axis=0), rtol=1e-14)
    assert list(ref.dp_replica_stats(np.zeros((6, 3, 2)), (2, 4), False, 1)[2]) == [4, 8]
    assert list(ref.dp_replica_stats(np.zeros((6, 3, 2)), (2, 4), True, 1)[2]) == [12, 12]


def test_running_statistics_each_convention_keeps_by_hand():
    """Two replicas, shards [0, 2] and [4, 6, 8] (mean 1, biased var 1; mean 6, var 8/3), momentum 0.5, unbiased
    estimator: replica 0 folds in (1, 1 * 2), replica 1 (6, 8/3 * 3/2 = 4); from (0, 1)."""
    x = np.array([[0.0], [2.0], [4.0], [6.0], [8.0]])
    means, variances, counts = ref.dp_replica_stats(x, (2, 3), False, 1)
    first = ref.dp_update_running([0.0], [1.0], means, variances, counts, 0.5, "unbiased", "first")
    mean = ref.dp_update_running([0.0], [1.0], means, variances, counts, 0.5, "unbiased", "mean")
    np.testing.assert_allclose(np.ravel(first), [0.5, 1.5], rtol=1e-15)
    np.testing.assert_allclose(np.ravel(mean), [(0.5 + 3.0) / 2, (1.5 + 2.5) / 2], rtol=1e-15)
    with pytest.raises(ValueError, match="kept"):
        ref.dp_update_running([0.0], [1.0], means, variances, counts, 0.5, "unbiased", "last")
