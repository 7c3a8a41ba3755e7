"""Compare one observed array with its float64 expectation.

Every float quantity gets: max absolute and relative error, the error in ulps of its dtype at
the quantity's scale, the worst element (by error over its bound) with expected and observed
values, the greatest absolute and relative differences over the mismatched elements (each with
its own index, as ``torch.testing`` reports them), and NaN/Inf placement.

Non-finite values: where the oracle is NaN the quantity is mathematically undefined (0/0: eps = 0
on a constant channel, a Bessel factor at n = 1), and any non-finite observation agrees with it,
NaN or either infinity (a float32 ``x - mean`` that is not exactly 0 turns 0/0 into +-inf); a
finite number there is a mismatch. Where the oracle is +-inf (an infinite input) only the same infinity
agrees; where its value is finite but beyond the dtype's range, the same infinity (its stored form) agrees, and
so does a finite observation within the bound of the exact value. Where the oracle is finite, NaN and
+-inf are mismatches, named apart.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import ConfigDict

from harness.expected import Expected
from harness.inputs import finfo, np_dtype
from harness.schema import Comparison, MismatchKind


def ulp(value: float, dtype: str) -> float:
    """Spacing of ``dtype`` at |value| (the smallest subnormal spacing near zero)."""
    fi = finfo(dtype)
    v = abs(float(value))
    if not math.isfinite(v):
        return float("nan")
    tiny = float(fi.smallest_normal)
    if v < tiny:
        return tiny * float(fi.eps)
    return 2.0 ** math.floor(math.log2(v)) * float(fi.eps)


class Metrics(Comparison):
    """The comparison of one array, as the fields of its results record."""

    model_config = ConfigDict(frozen=True)

    @property
    def ok(self) -> bool:
        return self.mismatch_kind == MismatchKind.MATCH

    def fields(self) -> dict[str, object]:
        """The record fields (``schema.Result``) this comparison fills."""
        return dict(self)


def _finite_or_none(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
    return [int(i) for i in np.unravel_index(flat, shape)]


def compare(exp: Expected, observed: np.ndarray) -> Metrics:
    """Element-wise check of ``observed`` against ``exp.value`` within ``exp.tol``."""
    obs_dtype = str(np.asarray(observed).dtype)
    e = exp.value
    if np.shape(observed) != e.shape:
        return Metrics(mismatch_kind=MismatchKind.SHAPE, observed_dtype=obs_dtype, total=int(e.size),
                       mismatched=int(e.size), expected_shape=list(e.shape), observed_shape=list(np.shape(observed)))
    o = np.asarray(observed, dtype=np.float64)
    if e.size == 0:
        return Metrics(mismatch_kind=MismatchKind.MATCH, observed_dtype=obs_dtype, mismatched=0, total=0)
    e_fin = np.isfinite(e)
    tol = exp.tol if np.isfinite(exp.tol).all() else np.nan_to_num(exp.tol, nan=np.inf)
    tol = np.broadcast_to(tol, e.shape)
    if e_fin.any() and np.abs(e[e_fin]).max() > float(finfo(exp.dtype).max):
        with np.errstate(over="ignore", invalid="ignore"):
            stored = e.astype(np_dtype(exp.dtype)).astype(np.float64)
            o_near = np.abs(np.asarray(observed, dtype=np.float64) - e) <= tol
        # a finite value beyond the dtype's range is stored as inf: that is the right answer there, and so is a
        # finite value within the bound of the exact one (a computation whose error bound reaches back inside the
        # range may round to the largest finite values instead)
        beyond = e_fin & np.isinf(stored)
        e = np.where(beyond & ~o_near, stored, e)
        e_fin = np.isfinite(e)
    all_finite = bool(e_fin.all()) and bool(np.isfinite(o).all())
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        err = np.abs(o - e)
        if not all_finite:
            finite = e_fin & np.isfinite(o)
            err = np.where(finite, err, 0.0)
        rel = np.where(e != 0, err / np.abs(e), np.where(err > 0, np.inf, 0.0))
        ratio = np.where(tol > 0, err / tol, np.where(err > 0, np.inf, 0.0))
    bad_val = err > tol
    kind = MismatchKind.VALUE if bad_val.any() else MismatchKind.MATCH
    nan_e = nan_o = 0
    if all_finite:
        bad = bad_val
        worst = int(np.argmax(ratio))
    else:
        e_nan, o_nan = np.isnan(e), np.isnan(o)
        nan_e, nan_o = int(e_nan.sum()), int(o_nan.sum())
        bad_nan = o_nan & ~e_nan
        bad_finite = e_nan & np.isfinite(o)  # undefined in the oracle: only a finite answer disagrees
        bad_inf = (np.isinf(e) | np.isinf(o)) & ~(e_nan | o_nan) & (o != e)
        bad = bad_nan | bad_finite | bad_inf | bad_val
        ratio = np.where(finite, ratio, 0.0)
        worst = int(np.argmax(ratio))
        for k, mask in ((MismatchKind.NAN, bad_nan), (MismatchKind.FINITE_WHERE_NAN, bad_finite),
                        (MismatchKind.INF, bad_inf)):
            if mask.any():
                kind, worst = k, int(np.argmax(mask))
                break
    nbad = int(np.count_nonzero(bad))
    max_err = float(err.max())
    scale = float(np.abs(e[e_fin]).max()) if e_fin.any() else 0.0
    u = ulp(scale, exp.dtype)
    greatest: dict[str, object] = {}
    if nbad and bad_val.any():  # over the mismatched values, each with its own index (torch.testing)
        ia = int(np.argmax(np.where(bad_val, err, -1.0)))
        ir = int(np.argmax(np.where(bad_val, rel, -1.0)))
        greatest = {"greatest_abs_diff": float(err.flat[ia]), "greatest_abs_index": _index(ia, e.shape),
                    "greatest_rel_diff": float(rel.flat[ir]),
                    "greatest_rel_index": _index(ir, e.shape)}
    return Metrics(mismatch_kind=kind, mismatched=nbad, total=int(e.size), observed_dtype=obs_dtype,
                   max_abs_err=max_err, max_rel_err=float(rel.max()),
                   max_ulp_err=_finite_or_none(max_err / u) if u > 0 else None, threshold=float(tol.flat[worst]),
                   error_ratio=float(ratio.flat[worst]) if all_finite or finite.flat[worst] else None,
                   worst_index=_index(worst, e.shape), expected=float(e.flat[worst]), observed=float(o.flat[worst]),
                   nan_expected=nan_e or None, nan_observed=nan_o or None, **greatest)


def _g(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.6g}"


def describe(label: str, m: Metrics, dtype: str) -> str:
    """A mismatch message a person can act on (after torch.testing.assert_close).

    >>> print(describe("y of call 0 (train)", metrics, "float32"))
    y of call 0 (train): values differ
      Mismatched elements: 1 / 2 (50.0%)
      Worst element (largest error over its bound) at index (1,): expected 1, observed 1.01 (|diff| 0.01, ...
      ...
    """
    if m.mismatch_kind == MismatchKind.SHAPE:
        return (f"{label}: shape differs: expected {tuple(m.expected_shape or ())}, "
                f"observed {tuple(m.observed_shape or ())}")
    pct = 100.0 * m.mismatched / max(m.total, 1)
    at = tuple(m.worst_index or ())
    own = (abs(m.observed - m.expected) if m.expected is not None and m.observed is not None
           and math.isfinite(m.observed - m.expected) else None)
    lines = [
        f"{label}: {m.mismatch_kind.headline}",
        f"  Mismatched elements: {m.mismatched} / {m.total} ({pct:.1f}%)",
        f"  Worst element (largest error over its bound) at index {at}: expected {_g(m.expected)}, "
        f"observed {_g(m.observed)} (|diff| {_g(own)}, up to {_g(m.threshold)} allowed there)",
    ]
    if m.greatest_abs_diff is not None:
        lines.append(f"  Greatest absolute difference: {_g(m.greatest_abs_diff)} at index "
                     f"{tuple(m.greatest_abs_index or ())}; greatest relative difference: {_g(m.greatest_rel_diff)} "
                     f"at index {tuple(m.greatest_rel_index or ())} (over the mismatched elements)")
    over = "all elements" if m.mismatch_kind in (MismatchKind.VALUE, MismatchKind.MATCH) else \
        "the elements finite in both"
    lines.append(f"  Largest error over {over}: {_g(m.max_ulp_err)} ulp of {dtype} at the quantity's scale "
                 f"(|diff| {_g(m.max_abs_err)})")
    if m.nan_observed or m.nan_expected:
        lines.append(f"  NaN count: expected {m.nan_expected or 0}, observed {m.nan_observed or 0} (where the oracle "
                     "is NaN the quantity is undefined and any non-finite value agrees)")
    return "\n".join(lines)
