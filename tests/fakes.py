"""Fake adapters for the self-tests: a correct NumPy float32 BN, variants with planted bugs,
and variants that misbehave as processes (segfault, abort, hang, memory hog, stdout garbage).

They are loaded through BNPARITY_ADAPTERS, exactly like a third-party adapter, and run in
worker processes like the real ones. None of them imports a framework.
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import signal
import sys
import time
from dataclasses import replace

import numpy as np

from harness.adapters.base import Adapter, Conventions, Precision, Raises, Refusal

TORCH_LIKE = Conventions(momentum_style="weight_of_new", running_var_estimator="unbiased", default_eps=1e-5,
                         default_momentum=0.1, native_layout="channels_first", frozen_call="batch_statistics",
                         frozen_note="as torch: freezing the parameters does not change the mode")


class NumpyBN(Adapter):
    """A careful BN in the case dtype's working precision (float32, or float64 for float64 cases)."""

    name = "fake-good"
    framework = "numpy"
    conventions = TORCH_LIKE
    supports_cumulative = True
    no_renorm = None  # batch renormalization as Keras computes it (renorm_step)
    no_mask = None  # a mask: statistics over the unmasked values, every position normalized (masked_step)
    no_virtual_batch = None  # ghost BN as tf-keras computes it (ghost_step)
    no_second_order = None  # the Hessian-vector products along v (hvp)

    def work_dtype(self, case):
        return np.float64 if case.dtype == "float64" else np.float32

    def precision(self, case):
        """What this BN means to do (a planted bug that computes otherwise does not change the declaration)."""
        wd = "float64" if case.dtype == "float64" else "float32"
        return Precision(statistics=wd, held=wd, normalize=wd, running=wd, params=wd, output=case.dtype)

    @staticmethod
    def _sum(a, axes):
        """Each channel's pairwise sum (NumPy's, along a contiguous row), over the values in reverse order: a
        careful reduction whose rounding differs from the harness's stable baseline (harness.stable)."""
        keep = [i for i in range(a.ndim) if i not in axes]
        rows = np.ascontiguousarray(np.moveaxis(a, keep, list(range(len(keep)))).reshape(
            [a.shape[i] for i in keep] + [-1])[..., ::-1])
        out_shape = [1 if i in axes else a.shape[i] for i in range(a.ndim)]
        return rows.sum(axis=-1).reshape(out_shape)

    def _mean(self, a, axes):
        n = a.size // math.prod(a.shape[i] for i in range(a.ndim) if i not in axes)
        return self._sum(a, axes) / a.dtype.type(n)

    def build(self, case, data):
        wd = self.work_dtype(case)
        m = self.mapped(case)
        st = {"case": case, "wd": wd, "axis": data.channel_axis, "eps": m.eps, "momentum": m.momentum,
              "gamma": data.gamma.astype(wd), "beta": data.beta.astype(wd),
              "rm": data.running_mean.astype(wd), "rv": data.running_var.astype(wd), "t": 0,
              "out_dtype": data.x_eval.dtype}
        if case.renorm is not None:  # renorm's moving stddev and its own mean and stddev, as Keras initializes them
            sd = np.sqrt(data.running_var.astype(np.float64)).astype(wd)
            st.update(ms=sd, renorm_mean=st["rm"].copy(), renorm_stddev=sd.copy(),
                      renorm_momentum=self.conventions.framework_momentum(case.renorm.momentum))
        return st

    # the pieces a planted bug overrides -------------------------------------
    def stats(self, x, axes):
        mean = self._mean(x, axes)
        with np.errstate(over="ignore"):
            var = self._mean((x - mean) ** 2, axes)
        if np.isinf(var).any() and np.isfinite(x).all():
            # the squared deviations overflow the working dtype (float32 inputs ~1e20 and up): accumulate them in
            # float64, as pytorch/pytorch#178123 proposes for torch's kernel; the variance is then kept in float64
            # for the normalization, and rounds to the stored dtype (inf) only in the running statistics
            var = self._mean((x - mean).astype(np.float64) ** 2, axes)
        return mean, var

    def invstd(self, var, eps):
        return 1.0 / np.sqrt(var + eps)

    def new_weight(self, st):
        return 1.0 / st["t"] if st["momentum"] is None else st["momentum"]

    def stored_var(self, var, n):
        return var * (n / (n - 1)) if n > 1 else var * np.nan

    def dx_train(self, g, xhat, inv, gamma, axes, m=None):
        """``m``: (mask, unmasked count per channel) of a masked call: the statistics depend on the unmasked values
        only, so the mean terms reach those alone."""
        if m is None:
            return gamma * inv * (g - self._mean(g, axes) - xhat * self._mean(g * xhat, axes))
        mk, cnt = m
        with np.errstate(invalid="ignore", divide="ignore"):
            return gamma * inv * (g - mk * (self._sum(g, axes) / cnt) - mk * xhat * (self._sum(g * xhat, axes) / cnt))

    def masked_stats(self, x, mask, axes):
        """(mean, biased var, count) over the unmasked values of each channel, two-pass; 0/0 = NaN where none is."""
        zero = x.dtype.type(0)
        cnt = self._sum(mask.astype(x.dtype), axes)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self._sum(np.where(mask, x, zero), axes) / cnt
            return mean, self._sum(np.where(mask, (x - mean) ** 2, zero), axes) / cnt, cnt

    def renorm_rd(self, st, mean, var):
        """Batch renormalization's r and d from the state before the call, clipped (Keras's order: rmin, rmax)."""
        rn, eps = st["case"].renorm, st["wd"](st["eps"])
        rs = np.maximum(st["renorm_stddev"], np.sqrt(eps))
        r, d = np.sqrt(var + eps) / rs, (mean - st["renorm_mean"]) / rs
        if rn.rmin is not None:
            r = np.maximum(r, st["wd"](rn.rmin))
        if rn.rmax is not None:
            r = np.minimum(r, st["wd"](rn.rmax))
        if rn.dmax is not None:
            d = np.clip(d, -st["wd"](rn.dmax), st["wd"](rn.dmax))
        return r, d

    def ghost_groups(self, n, v):
        """The samples of each virtual batch: G = n / v groups, group j = samples j, j + G, ... (tf-keras reshapes
        (N, ...) to (v, G, ...) and normalizes over axis 0 and the spatial axes)."""
        if n % v:
            raise ValueError(f"virtual_batch_size {v} does not divide the batch size {n}")
        groups = n // v
        return [np.arange(j, n, groups) for j in range(groups)]

    def ghost_folded(self, x, means, variances, axes):
        """What one ghost call folds into the running statistics, in order: the averages of the group means and
        variances, once (``Conventions.virtual_batch_update = "group_average"``, as tf-keras)."""
        return [(sum(means) / x.dtype.type(len(means)), sum(variances) / x.dtype.type(len(variances)))]

    # --------------------------------------------------------------------------
    def _shape(self, st, v, ndim):
        shape = [1] * ndim
        shape[st["axis"] % ndim] = -1
        return v.reshape(shape)

    def _forward_backward(self, st, x, g, mean, inv, train, m=None):
        axes = tuple(i for i in range(x.ndim) if i != st["axis"] % x.ndim)
        b = lambda v: self._shape(st, v, x.ndim)  # noqa: E731
        with np.errstate(invalid="ignore"):
            xhat = (x - mean) * inv
            y = xhat * b(st["gamma"]) + b(st["beta"])
        if train:
            dx = self.dx_train(g, xhat, inv, b(st["gamma"]), axes, *([m] if m is not None else []))
        else:
            dx = g * b(st["gamma"]) * inv
        out = {"y": y.astype(st["out_dtype"]), "dx": dx.astype(st["out_dtype"])}
        if st["case"].has_scale:
            out["dgamma"] = self._sum(g * xhat, axes).reshape(-1)
        if st["case"].has_center:
            out["dbeta"] = self._sum(g, axes).reshape(-1)
        return out

    def renorm_step(self, st, x, g, axes):
        """A batch-renormalization training call: y = xhat (gamma r) + (gamma d + beta), r and d constants to the
        gradient, then the moving statistics (the variance derived from the averaged stddev) and renorm's own."""
        wd, b = st["wd"], (lambda v: self._shape(st, v, x.ndim))  # noqa: E731
        mean, var = self.stats(x, axes)
        m, v = mean.reshape(-1), var.reshape(-1)
        r, d = self.renorm_rd(st, m, v)
        inv = self.invstd(var, st["eps"])
        xhat = (x - mean) * inv
        y = xhat * b(st["gamma"] * r) + b(st["gamma"] * d + st["beta"])
        out = {"y": y.astype(st["out_dtype"]),
               "dx": self.dx_train(g, xhat, inv, b(st["gamma"] * r), axes).astype(st["out_dtype"])}
        if st["case"].has_scale:
            out["dgamma"] = r * self._sum(g * xhat, axes).reshape(-1) + d * self._sum(g, axes).reshape(-1)
        if st["case"].has_center:
            out["dbeta"] = self._sum(g, axes).reshape(-1)
        w, wr = wd(st["momentum"]), wd(st["renorm_momentum"])
        sd = np.sqrt(v + wd(st["eps"]))
        st["rm"] = ((1 - w) * st["rm"] + w * m).astype(wd)
        ms = (1 - w) * st["ms"] + w * sd
        st["ms"] = ms.astype(wd)
        st["rv"] = np.maximum(ms * ms - wd(st["eps"]), 0).astype(wd)
        st["renorm_mean"] = ((1 - wr) * st["renorm_mean"] + wr * m).astype(wd)
        st["renorm_stddev"] = ((1 - wr) * st["renorm_stddev"] + wr * sd).astype(wd)
        out["running_mean"], out["running_var"] = st["rm"].copy(), st["rv"].copy()
        return out

    def ghost_step(self, st, x, g, axes):
        """A ghost-BN training call: each virtual batch normalized with its own statistics (the gradient through
        them), dgamma and dbeta summed over the groups, one running update with the averaged group statistics and
        the Bessel factor of a group's count."""
        wd = st["wd"]
        groups = self.ghost_groups(x.shape[0], st["case"].virtual_batch_size)
        out = {"y": np.empty(x.shape, st["out_dtype"]), "dx": np.empty(x.shape, st["out_dtype"])}
        means, variances = [], []
        for idx in groups:
            xs, gs = x[idx], g[idx]
            mean, var = self.stats(xs, axes)
            part = self._forward_backward(st, xs, gs, mean, self.invstd(var, st["eps"]), True)
            out["y"][idx], out["dx"][idx] = part.pop("y"), part.pop("dx")
            for q, v in part.items():
                out[q] = out.get(q, wd(0)) + v
            means.append(mean)
            variances.append(var)
        n_v = x[groups[0]].size // x.shape[st["axis"]]
        for mean, var in self.ghost_folded(x, means, variances, axes):
            st["t"] += 1
            w = self.new_weight(st)
            with np.errstate(invalid="ignore", divide="ignore"):
                st["rm"] = ((1 - w) * st["rm"] + w * mean.reshape(-1)).astype(wd)
                st["rv"] = ((1 - w) * st["rv"] + w * self.stored_var(var.reshape(-1), n_v)).astype(wd)
        out["running_mean"], out["running_var"] = st["rm"].copy(), st["rv"].copy()
        return out

    def masked_step(self, st, x, g, mask, axes):
        """A masked training call: the statistics over the unmasked values, every position normalized with them;
        each channel's running statistics updated with its own count, a channel without unmasked values left."""
        wd = st["wd"]
        mask = np.broadcast_to(mask, x.shape)
        mean, var, cnt = self.masked_stats(x, mask, axes)
        with np.errstate(invalid="ignore", divide="ignore"):
            inv = self.invstd(var, st["eps"])
        out = self._forward_backward(st, x, g, mean, inv, True, (mask, cnt))
        counts = cnt.reshape(-1)
        if counts.any():
            st["t"] += 1
        w = self.new_weight(st)
        with np.errstate(invalid="ignore", divide="ignore"):
            sv = np.array([self.stored_var(v, int(k)) if k else 0.0 for v, k in zip(var.reshape(-1), counts)], wd)
            st["rm"] = np.where(counts > 0, (1 - w) * st["rm"] + w * mean.reshape(-1), st["rm"]).astype(wd)
            st["rv"] = np.where(counts > 0, (1 - w) * st["rv"] + w * sv, st["rv"]).astype(wd)
        out["running_mean"], out["running_var"] = st["rm"].copy(), st["rv"].copy()
        return out

    def hvp(self, st, x, g, v, mean, inv, axes):
        """hvp_x and hvp_gamma along v: the derivative of dx and dgamma (reference.train_hvp), in the working dtype."""
        b = lambda a: self._shape(st, a, x.ndim)  # noqa: E731
        xhat = (x - mean) * inv
        vc = self.centered_direction(v, axes)
        ds_s = self._mean((x - mean) * vc, axes) * inv * inv
        xhat_d = vc * inv - xhat * ds_s
        m1, m1_d = self._mean(g * xhat, axes), self._mean(g * xhat_d, axes)
        gamma = b(st["gamma"])
        dx = gamma * inv * (g - self._mean(g, axes) - xhat * m1)
        out = {"hvp_x": (-ds_s * dx - gamma * inv * (xhat_d * m1 + xhat * m1_d)).astype(st["out_dtype"])}
        if st["case"].has_scale:
            out["hvp_gamma"] = self._sum(g * xhat_d, axes).reshape(-1)
        return out

    def centered_direction(self, v, axes):
        """v - mean(v): the batch mean's derivative along v (what a second derivative through the mean needs)."""
        return v - self._mean(v, axes)

    def train_step(self, st, x, g, mask=None, v=None):
        wd = st["wd"]
        x, g = x.astype(wd), g.astype(wd)
        axes = tuple(i for i in range(x.ndim) if i != st["axis"] % x.ndim)
        if st["case"].renorm is not None:
            return self.renorm_step(st, x, g, axes)
        if mask is not None:
            return self.masked_step(st, x, g, mask, axes)
        if st["case"].virtual_batch_size is not None:
            return self.ghost_step(st, x, g, axes)
        mean, var = self.stats(x, axes)
        inv = self.invstd(var, st["eps"])
        out = self._forward_backward(st, x, g, mean, inv, True)
        if v is not None:
            out.update(self.hvp(st, x, g, v.astype(wd), mean, inv, axes))
        if st["case"].track_running_stats and x.size:  # an empty batch leaves the state as it was
            st["t"] += 1
            w = self.new_weight(st)
            n = x.size // x.shape[st["axis"]]
            with np.errstate(invalid="ignore", divide="ignore"):
                st["rm"] = ((1 - w) * st["rm"] + w * mean.reshape(-1)).astype(wd)
                st["rv"] = ((1 - w) * st["rv"] + w * self.stored_var(var.reshape(-1), n)).astype(wd)
        if st["case"].track_running_stats:
            out["running_mean"], out["running_var"] = st["rm"].copy(), st["rv"].copy()
        return out

    def eval_step(self, st, x, g, mask=None):  # eval ignores the mask, as every framework with one does
        wd = st["wd"]
        x, g = x.astype(wd), g.astype(wd)
        if not st["case"].track_running_stats:
            axes = tuple(i for i in range(x.ndim) if i != st["axis"] % x.ndim)
            mean, var = self.stats(x, axes)
            return self._forward_backward(st, x, g, mean, self.invstd(var, st["eps"]), True)
        b = lambda v: self._shape(st, v, x.ndim)  # noqa: E731
        out = self._forward_backward(st, x, g, b(st["rm"]), self.invstd(b(st["rv"]), st["eps"]), False)
        self.after_eval(st, x)
        out["running_mean"], out["running_var"] = st["rm"].copy(), st["rv"].copy()
        return out

    def frozen_step(self, st, x, g, mask=None):
        """Frozen the torch way: a training call whose parameters' gradients nobody asks for."""
        out = self.train_step(st, x, g, mask)
        return {q: v for q, v in out.items() if q not in ("dgamma", "dbeta")}

    def after_eval(self, st, x):
        """What the layer does to its state after an eval call: nothing."""

    def fold(self, st, x):
        """Fold batch ``x`` into the running statistics, as a training call does."""
        axes = tuple(i for i in range(x.ndim) if i != st["axis"] % x.ndim)
        mean, var = self.stats(x, axes)
        w = st["momentum"] if st["momentum"] is not None else 0.1
        n = x.size // x.shape[st["axis"]]
        with np.errstate(invalid="ignore", divide="ignore"):
            st["rm"] = ((1 - w) * st["rm"] + w * mean.reshape(-1)).astype(st["wd"])
            st["rv"] = ((1 - w) * st["rv"] + w * self.stored_var(var.reshape(-1), n)).astype(st["wd"])


class SlowImport(NumpyBN):
    """Takes a second to set up, as importing TensorFlow does: the first case of each worker pays it."""

    name = "fake-slow-import"
    IMPORT_S = 1.0

    def setup(self):
        time.sleep(self.IMPORT_S)


# -- planted numerical bugs: each must be flagged --------------------------------

class EpsOutsideSqrt(NumpyBN):
    name = "bug-eps-outside-sqrt"

    def invstd(self, var, eps):
        return 1.0 / (np.sqrt(var) + eps)


class EpsDroppedInTraining(NumpyBN):
    """eps only in eval: a training call normalizes with 1 / sqrt(var)."""

    name = "bug-eps-dropped-in-training"

    def train_step(self, st, x, g, mask=None, v=None):
        eps, st["eps"] = st["eps"], 0.0
        try:
            return super().train_step(st, x, g, mask, v)
        finally:
            st["eps"] = eps


class MomentumFlipped(NumpyBN):
    """Treats the weight-of-new momentum as a decay of the old value."""

    name = "bug-momentum-flipped"

    def new_weight(self, st):
        return 1.0 - super().new_weight(st)  # the cumulative average's 1/t flipped too


class EstimatorSwapped(NumpyBN):
    """Declares PyTorch's unbiased running variance but stores the biased one."""

    name = "bug-estimator-swapped"

    def stored_var(self, var, n):
        return var


class GradIgnoresStats(NumpyBN):
    """Backward as if the batch mean and variance were constants (a detached-statistics bug)."""

    name = "bug-grad-ignores-stats"

    def dx_train(self, g, xhat, inv, gamma, axes, m=None):
        return gamma * inv * g


class UpdatesInEval(NumpyBN):
    """Eval mode folds the eval batch into the running stats before using them."""

    name = "bug-updates-in-eval"

    def eval_step(self, st, x, g, mask=None):
        self.fold(st, x.astype(st["wd"]))
        return super().eval_step(st, x, g)


class UpdatesAfterEval(NumpyBN):
    """Eval mode returns the right output, then folds the eval batch into the running statistics: only the state
    after the eval call (and the next call) shows it."""

    name = "bug-updates-after-eval"

    def after_eval(self, st, x):
        self.fold(st, x)


class DropsMeanSecondOrder(NumpyBN):
    """Right first derivatives, but the second derivative treats the batch mean as a constant (its derivative along v,
    mean(v), is dropped): what a backward that detaches the mean it saved (TF's moments take the variance around
    stop_gradient(mean)) does to a double backward. Only hvp_x and hvp_gamma show it."""

    name = "bug-drops-mean-second-order"

    def centered_direction(self, v, axes):
        return v


NO_GRADIENT = "an exported inference program has no gradient"


class InferenceExport(NumpyBN):
    """fake-good's layer trained eagerly, then exported and run for eval (a path ``exported``, as the ONNX Runtime
    and LiteRT adapters are): its eval calls return y and the state, not the gradients, and it declares so."""

    name = "fake-export"
    path = "exported"
    source = "fake-good"
    omits = {"dx_eval": NO_GRADIENT, "dgamma_eval": NO_GRADIENT, "dbeta_eval": NO_GRADIENT}

    def eval_step(self, st, x, g, mask=None):
        out = super().eval_step(st, x, g)
        return {q: v for q, v in out.items() if q not in ("dx", "dgamma", "dbeta")}


class ExportOmitsUndeclared(InferenceExport):
    """The same program, with nothing declared omitted: every eval gradient is a missing array."""

    name = "bug-export-omits-undeclared"
    omits = {}


class ExportLosesEps(InferenceExport):
    """An export that writes its own default eps (1e-3, Keras's) into the program instead of the layer's: what a
    converter that drops an attribute does. Training (eager) is right; every eval output is off."""

    name = "bug-export-loses-eps"

    def eval_step(self, st, x, g, mask=None):
        return super().eval_step({**st, "eps": 1e-3}, x, g)


NO_TRAIN_GRADIENT = "the exported program runs the forward only"
GRADIENTS = ("dx", "dgamma", "dbeta")


class TrainingExport(NumpyBN):
    """fake-good's layer exported in training mode, every call run by another runtime that returns y and the updated
    running statistics, not the gradients (as torch-onnxruntime-training does), and declares so."""

    name = "fake-export-training"
    path = "exported"
    source = "fake-good"
    no_second_order = NO_TRAIN_GRADIENT
    omits = {q: NO_TRAIN_GRADIENT for q in (*GRADIENTS, "dx_frozen", "dx_eval", "dgamma_eval", "dbeta_eval")}

    def train_step(self, st, x, g, mask=None, v=None):
        return {q: a for q, a in super().train_step(st, x, g, mask).items() if q not in GRADIENTS}

    def frozen_step(self, st, x, g, mask=None):
        return {q: a for q, a in super().frozen_step(st, x, g, mask).items() if q not in GRADIENTS}

    def eval_step(self, st, x, g, mask=None):
        return {q: a for q, a in super().eval_step(st, x, g).items() if q not in GRADIENTS}


class ExportMomentumInverted(TrainingExport):
    """A converter that writes torch's momentum (the weight of the new value) into an attribute the runtime reads as
    the weight of the old one (ONNX's BatchNormalization momentum): every running update, and each eval after it,
    is off; y of the training calls is right."""

    name = "bug-export-momentum-inverted"

    def new_weight(self, st):
        return 1.0 - super().new_weight(st)


class ExportBiasedRunningVar(TrainingExport):
    """A converter whose runtime keeps the population (biased) batch variance in the running variance while the
    source framework declares the unbiased one (ONNX's training-mode BatchNormalization under torch's conventions)."""

    name = "bug-export-biased-running-var"

    def stored_var(self, var, n):
        return var


class EvalNotRepeatable(NumpyBN):
    """Eval mode nudges its running variance by one ulp after each call: every eval output is within the bound,
    but two eval calls in a row disagree bit for bit and the state changes."""

    name = "bug-eval-not-repeatable"

    def after_eval(self, st, x):
        st["rv"] = np.nextafter(st["rv"], np.inf, dtype=st["rv"].dtype)


class FrozenLikeKeras(NumpyBN):
    """Declares what Keras does with a frozen layer (inference mode, the running statistics left as they are),
    and does it: a correct fake of the other convention."""

    name = "fake-frozen-inference"
    conventions = replace(TORCH_LIKE, frozen_call="inference", frozen_note="as Keras: trainable = False")

    def frozen_step(self, st, x, g, mask=None):
        out = self.eval_step(st, x, g)
        return {q: v for q, v in out.items() if q not in ("dgamma", "dbeta")}


class FrozenStillUpdates(FrozenLikeKeras):
    """A frozen layer that normalizes in inference mode as declared, but still folds its batch into the running
    statistics (the trap of fine-tuning: the statistics drift while the layer is 'frozen')."""

    name = "bug-frozen-still-updates"

    def frozen_step(self, st, x, g, mask=None):
        out = super().frozen_step(st, x, g)
        self.fold(st, x.astype(st["wd"]))
        out["running_mean"], out["running_var"] = st["rm"].copy(), st["rv"].copy()
        return out


class WrongRenormClipping(NumpyBN):
    """Batch renormalization that clips d on one side only (min(d, dmax), no -dmax): a batch mean below renorm's
    by more than dmax stddevs shifts y too far. r, the gradient with respect to x and the moving statistics are
    right; y (and dgamma, through d) are not."""

    name = "bug-wrong-renorm-clipping"

    def renorm_rd(self, st, mean, var):
        rn = st["case"].renorm
        r, _ = super().renorm_rd(st, mean, var)
        rs = np.maximum(st["renorm_stddev"], np.sqrt(st["wd"](st["eps"])))
        d = (mean - st["renorm_mean"]) / rs
        return r, (d if rn.dmax is None else np.minimum(d, st["wd"](rn.dmax)))


class IgnoresMask(NumpyBN):
    """Takes a mask and ignores it: the statistics over every position (what tf-keras fused=True does, with a
    warning). y, dx and the running statistics of a masked training call are off; eval and unmasked cases are
    right."""

    name = "bug-ignores-mask"

    def masked_stats(self, x, mask, axes):
        return super().masked_stats(x, np.ones_like(mask), axes)


class GhostContiguousGroups(NumpyBN):
    """Ghost BN over contiguous blocks of samples ([0, v), [v, 2v), ...) instead of tf-keras's strided virtual batches:
    y, dx and the running variance (the mean of other groups' variances) are off; the running mean is not (the mean
    of equal groups' means is the batch mean, however the samples are grouped)."""

    name = "bug-ghost-contiguous-groups"

    def ghost_groups(self, n, v):
        return [np.arange(j * v, (j + 1) * v) for j in range(n // v)]


class GhostFoldsBatchVariance(NumpyBN):
    """Ghost BN that normalizes each virtual batch right but folds the whole batch's variance into the running
    variance (tf-keras folds the mean of the group variances): running_var is off, y and dx are right."""

    name = "bug-ghost-folds-batch-variance"

    def ghost_folded(self, x, means, variances, axes):
        return [(super().ghost_folded(x, means, variances, axes)[0][0], self.stats(x, axes)[1])]


class GhostSequential(NumpyBN):
    """Declares the ghost BN paper's running update (once per virtual batch, in order) and does it: a correct fake of
    the other convention (a BN module called per chunk, with tf-keras's strided chunks)."""

    name = "fake-ghost-sequential"
    conventions = replace(TORCH_LIKE, virtual_batch_update="sequential")

    def ghost_folded(self, x, means, variances, axes):
        return list(zip(means, variances))


class HalfPrecisionMath(NumpyBN):
    """Computes float32 cases in float16: subtle (a few hundred ulps), must still be caught."""

    name = "bug-half-precision"

    def work_dtype(self, case):
        return np.float16 if case.dtype != "float64" else np.float64


class EvalUsesBatchStats(NumpyBN):
    name = "bug-eval-uses-batch-stats"

    def eval_step(self, st, x, g, mask=None):
        wd = st["wd"]
        x, g = x.astype(wd), g.astype(wd)
        axes = tuple(i for i in range(x.ndim) if i != st["axis"] % x.ndim)
        mean, var = self.stats(x, axes)
        return self._forward_backward(st, x, g, mean, self.invstd(var, st["eps"]), False)


# -- correct but careless: within the bound, digits lost that a stable BN keeps (the weak tier) ----------

class FoldedAffine(NumpyBN):
    """y = x * a + (beta - mean * a), a = gamma * invstd: the folded form Keras, tf-keras and raw TF use. It is
    algebraically the same; where |mean| * a is large (a constant input, eps alone under the root) the two
    products cancel and y loses its digits."""

    name = "weak-folded-affine"

    def _forward_backward(self, st, x, g, mean, inv, train):
        out = super()._forward_backward(st, x, g, mean, inv, train)
        b = lambda v: self._shape(st, v, x.ndim)  # noqa: E731
        a = b(st["gamma"]) * inv
        out["y"] = (x * a + (b(st["beta"]) - mean * a)).astype(st["out_dtype"])
        return out


class SequentialSums(NumpyBN):
    """Two-pass, but every sum is a running (sequential) float32 sum: np.cumsum accumulates in order."""

    name = "weak-sequential-sums"

    @staticmethod
    def _sum(a, axes):
        keep = [i for i in range(a.ndim) if i not in axes]
        rows = np.moveaxis(a, keep, list(range(len(keep)))).reshape([a.shape[i] for i in keep] + [-1])
        out_shape = [1 if i in axes else a.shape[i] for i in range(a.ndim)]
        return np.cumsum(rows, axis=-1, dtype=a.dtype)[..., -1].reshape(out_shape)


class FastVariance(NumpyBN):
    """The one-pass variance max(0, E[x^2] - E[x]^2) (Flax's use_fast_variance, Keras on torch)."""

    name = "weak-fast-variance"

    def stats(self, x, axes):
        mean = self._mean(x, axes)
        return mean, np.maximum(self._mean(x * x, axes) - mean * mean, 0)


# -- declared behaviour: what the conventions and supports() say becomes the expectation --------

SINGLE_VALUE = Raises("ValueError", "Expected more than 1 value per channel", "tests/fakes.py")
ZERO_EPS = Raises("ValueError", "eps must be positive", "tests/fakes.py")


class RefusesLikeTorch(NumpyBN):
    """Raises, as its conventions declare, where it normalizes with the batch statistics of one value
    per channel or with eps = 0 (what torch does), and cannot run float16 parameters with float32
    input, which it declares in ``refuses``."""

    name = "fake-refuses"
    conventions = replace(TORCH_LIKE, single_value_training=SINGLE_VALUE, zero_eps_training=ZERO_EPS)
    no_mask = "as torch: BatchNorm takes no mask"
    refuses = (Refusal(frozenset({("float32", "float16")}), "RuntimeError", "no kernel for float16 parameters",
                       "tests/fakes.py RefusesLikeTorch.build"),)

    def build(self, case, data):
        if (case.dtype, case.resolved_param_dtype) == ("float32", "float16"):
            raise RuntimeError("no kernel for float16 parameters with float32 input")
        return super().build(case, data)

    def _check(self, st, x):
        if x.size // x.shape[st["axis"]] == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
        if st["eps"] <= 0:
            raise ValueError(f"eps must be positive during training, but got {st['eps']}")

    def train_step(self, st, x, g, mask=None, v=None):
        self._check(st, x)
        return super().train_step(st, x, g, mask, v)

    def eval_step(self, st, x, g, mask=None):
        if not st["case"].track_running_stats:  # eval normalizes with the batch statistics too
            self._check(st, x)
        return super().eval_step(st, x, g)


class DeclaresButComputes(NumpyBN):
    """Declares torch's raises but computes: a declaration that is wrong must fail the run."""

    name = "fake-declares-but-computes"
    conventions = RefusesLikeTorch.conventions


# -- process faults: each must cost exactly its case ----------------------------

def _is_target(case) -> bool:
    return case.name == os.environ.get("BNPARITY_FAULT_CASE", "fault_target")


# the hang has a case of its own (with a short limit): the other faults' target keeps a long one, so that none
# of them races the clock on a busy machine
HANG_CASE = "hang_target"


class Segfault(NumpyBN):
    name = "fault-segfault"

    def build(self, case, data):
        if _is_target(case):
            ctypes.string_at(0)
        return super().build(case, data)


class Abort(NumpyBN):
    name = "fault-abort"

    def build(self, case, data):
        if _is_target(case):
            sys.stderr.write("fake adapter: about to abort\n")
            os.abort()
        return super().build(case, data)


class Hang(NumpyBN):
    name = "fault-hang"

    def build(self, case, data):
        if case.name == os.environ.get("BNPARITY_FAULT_CASE", HANG_CASE):
            time.sleep(3600)
        return super().build(case, data)


class MemoryHog(NumpyBN):
    """Allocates until it is killed, as the OOM killer would kill it.

    Its address space is capped first (RLIMIT_AS) so the machine is never at risk; when the cap
    refuses an allocation it sends itself SIGKILL, which is what the kernel's OOM killer does to a
    process that exhausts real memory.
    """

    name = "fault-memory"

    def build(self, case, data):
        if _is_target(case):
            # 256 MiB beyond what the worker maps: filled in a fraction of a second, far inside the case's
            # time limit (a 1 GiB cap took 4.6 s on a busy 2-core machine and raced the 4 s limit)
            cap = 256 << 20
            with open("/proc/self/statm") as f:
                mapped = int(f.read().split()[0]) * resource.getpagesize()
            resource.setrlimit(resource.RLIMIT_AS, (mapped + cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
            hoard = []
            try:
                while True:
                    hoard.append(np.ones(16 << 20, dtype=np.uint8))
            except MemoryError:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().build(case, data)


class StdoutGarbage(NumpyBN):
    """Writes garbage to stdout (both Python's and the raw fd) and then answers correctly."""

    name = "fault-stdout"

    def build(self, case, data):
        if _is_target(case):
            print("\x00\xff garbage {not json", flush=True)
            os.write(1, bytes(range(256)) * 64)
        return super().build(case, data)


class Raises(NumpyBN):
    name = "fault-raises"

    def build(self, case, data):
        if _is_target(case):
            raise RuntimeError("fake framework error on the target case")
        return super().build(case, data)



class RaisesKeyboardInterrupt(NumpyBN):
    """A framework that raises KeyboardInterrupt itself (not a Ctrl-C): a raised outcome of its case only."""

    name = "fault-keyboard-interrupt"

    def build(self, case, data):
        if _is_target(case):
            raise KeyboardInterrupt("raised by the framework")
        return super().build(case, data)


class RaisesSystemExit(NumpyBN):
    name = "fault-system-exit"

    def build(self, case, data):
        if _is_target(case):
            raise SystemExit(3)
        return super().build(case, data)


class ExitsZero(NumpyBN):
    """Ends its worker with status 0 in the middle of the case (pebble takes that for a planned exit)."""

    name = "fault-exit-zero"

    def build(self, case, data):
        if _is_target(case):
            os._exit(0)
        return super().build(case, data)


class ClosesStdio(NumpyBN):
    """Closes the worker's stdout and stderr, then answers correctly: its later cases must still run."""

    name = "fault-closes-stdio"

    def build(self, case, data):
        if _is_target(case):
            os.close(1)
            os.close(2)
        else:
            print(f"building {case.name}", flush=True)  # a framework that logs: fails on a closed stdout
        return super().build(case, data)


class ForksChild(NumpyBN):
    """Forks a process that would sleep for an hour; its pid goes to $BNPARITY_FAULT_PIDFILE."""

    name = "fault-forks-child"

    def build(self, case, data):
        if _is_target(case):
            pid = os.fork()
            if pid == 0:
                time.sleep(3600)
                os._exit(0)
            with open(os.environ["BNPARITY_FAULT_PIDFILE"], "w") as f:
                f.write(str(pid))
        return super().build(case, data)
