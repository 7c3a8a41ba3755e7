"""Fake data-parallel adapters for the self-tests: a correct NumPy BN over replicas (each replica computes its shard's
sums; a synchronized one all-reduces them), and planted bugs that synchronize only part of what synchronized BN must.
They import no framework and run in worker processes like the real distributed adapters."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from harness.adapters.replicas import kept_summary
from tests.fakes import TORCH_LIKE, NumpyBN


class ReplicatedBN(NumpyBN):
    """A careful BN on ``R`` replicas: per-shard sums, all-reduced (summed over the replicas) where the case
    synchronizes; each replica updates its own copy of the running statistics with what it normalized with, and the
    average of the copies is what survives (a variable aggregated on read); the parameters' gradients are summed."""

    name = "fake-dp"
    path = "distributed"
    source = "fake-good"
    no_data_parallel = None
    conventions = replace(TORCH_LIKE, replica_running="mean", replica_gradients="sum")
    keeps: str | None = None  # which copy the fake keeps: None, the one it declares (a planted bug keeps another)

    def supports(self, case):
        if case.data_parallel is None:
            return f"{self.name}: runs the data-parallel cases only (the eager path is {self.source})"
        return super().supports(case)

    # the all-reduces a synchronized BN makes, each replica's (sum over the replicas) / (global count); a planted bug
    # keeps one of them local
    @staticmethod
    def all_reduce_mean(local_sums, local_counts):
        return [sum(local_sums) / sum(local_counts)] * len(local_sums)

    def reduce_mean(self, local_sums, local_counts):
        return self.all_reduce_mean(local_sums, local_counts)

    def reduce_var(self, local_sq, local_counts):
        return self.all_reduce_mean(local_sq, local_counts)

    def reduce_grad(self, local_sums, local_counts):
        return self.all_reduce_mean(local_sums, local_counts)

    def train_step(self, st, x, g, mask=None, v=None):
        case, wd = st["case"], st["wd"]
        x, g = x.astype(wd), g.astype(wd)
        axes = tuple(i for i in range(x.ndim) if i != st["axis"] % x.ndim)
        per = x.size // x.shape[st["axis"] % x.ndim] // x.shape[0]
        edges = np.cumsum([0, *case.shards])
        xs = [x[a:b] for a, b in zip(edges[:-1], edges[1:])]
        gs = [g[a:b] for a, b in zip(edges[:-1], edges[1:])]
        counts = [wd(len(s) * per) for s in xs]
        sync = case.data_parallel.sync
        if sync:
            means = self.reduce_mean([self._sum(s, axes) for s in xs], counts)
            with np.errstate(over="ignore"):
                variances = self.reduce_var([self._sum((s - m) ** 2, axes) for s, m in zip(xs, means)], counts)
            kept_counts = [sum(counts)] * len(xs)  # each replica folds in the global batch's statistics
        else:
            means, variances = zip(*(self.stats(s, axes) for s in xs))
            kept_counts = counts
        b = lambda a: self._shape(st, a, x.ndim)  # noqa: E731
        invs = [self.invstd(var, st["eps"]) for var in variances]
        xhats = [(s - m) * inv for s, m, inv in zip(xs, means, invs)]
        with np.errstate(invalid="ignore"):
            ys = [xh * b(st["gamma"]) + b(st["beta"]) for xh in xhats]
            sum_g = [self._sum(gg, axes) for gg in gs]
            sum_gx = [self._sum(gg * xh, axes) for gg, xh in zip(gs, xhats)]
            if sync:
                mg, mgx = self.reduce_grad(sum_g, counts), self.reduce_grad(sum_gx, counts)
            else:
                mg, mgx = [s / c for s, c in zip(sum_g, counts)], [s / c for s, c in zip(sum_gx, counts)]
            dxs = [b(st["gamma"]) * inv * (gg - a - xh * c)
                   for gg, xh, inv, a, c in zip(gs, xhats, invs, mg, mgx)]
        out = {"y": np.concatenate(ys).astype(st["out_dtype"]), "dx": np.concatenate(dxs).astype(st["out_dtype"])}
        scale = wd(len(xs)) if self.conventions.replica_gradients == "mean" else wd(1)
        if case.has_scale:
            out["dgamma"] = (sum(sum_gx) / scale).reshape(-1)
        if case.has_center:
            out["dbeta"] = (sum(sum_g) / scale).reshape(-1)
        w = st["momentum"]
        copies = []
        with np.errstate(invalid="ignore", divide="ignore"):
            for m, var, c in zip(means, variances, kept_counts):
                copies.append((((1 - w) * st["rm"] + w * m.reshape(-1)).astype(wd),
                               ((1 - w) * st["rv"] + w * self.stored_var(var.reshape(-1), int(c))).astype(wd)))
        st["spread"] = float(np.max(np.ptp(np.stack([c[1] for c in copies]).astype(np.float64), axis=0)))
        if (self.keeps or self.conventions.replica_running) == "first":
            st["rm"], st["rv"] = copies[0]
        else:
            st["rm"] = (sum(c[0] for c in copies) / wd(len(copies))).astype(wd)
            st["rv"] = (sum(c[1] for c in copies) / wd(len(copies))).astype(wd)
        out["running_mean"], out["running_var"] = st["rm"].copy(), st["rv"].copy()
        return out

    def describe(self, st, info):
        info.update(kept_summary(st["rv"], st.get("spread", 0.0)))


class ReplicatedBNFirst(ReplicatedBN):
    """Correct too, under torch DDP's conventions: rank 0's running statistics survive (its buffers are broadcast),
    the parameters' gradients are averaged over the ranks."""

    name = "fake-dp-first"
    conventions = replace(TORCH_LIKE, replica_running="first", replica_gradients="mean")


class SyncsMeanOnly(ReplicatedBN):
    """BUG: synchronizes the mean, but each replica's variance is taken around it over its own shard only."""

    name = "fake-dp-mean-only"

    def reduce_var(self, local_sq, local_counts):
        return [sq / c for sq, c in zip(local_sq, local_counts)]


class SyncsForwardOnly(ReplicatedBN):
    """BUG: synchronizes the statistics in the forward pass, but the backward's reductions (sum(g), sum(g xhat))
    stay per replica, so each shard's dx misses the other shards' part of the gradient through the statistics."""

    name = "fake-dp-forward-only"

    def reduce_grad(self, local_sums, local_counts):
        return [s / c for s, c in zip(local_sums, local_counts)]


class DeclaresFirstKeepsMean(ReplicatedBN):
    """BUG (in the declaration): says replica 0's running statistics survive, keeps the replicas' mean: the
    per-replica cases tell the two conventions apart on the running statistics (and the eval that uses them)."""

    name = "fake-dp-declares-first"
    conventions = replace(TORCH_LIKE, replica_running="first", replica_gradients="sum")
    keeps = "mean"
