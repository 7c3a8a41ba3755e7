"""Compare one observed array with its float64 expectation.

Every float quantity gets: max absolute and relative error, the error in
ulps of its dtype at the quantity's scale, the worst element (by error over
its bound) with expected and observed values, and NaN/Inf placement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.expected import Expected
from harness.inputs import finfo, np_dtype

QUANTITY_LABELS = {
    "y": "y", "dx": "dx", "dgamma": "dgamma", "dbeta": "dbeta",
    "running_mean": "running_mean", "running_var": "running_var",
    "y_eval": "y (eval)", "dx_eval": "dx (eval)",
}


def quantity_label(quantity: str, step: int | None) -> str:
    """'running_var after train step 2', 'y (eval)'."""
    base = QUANTITY_LABELS.get(quantity, quantity)
    return base if step is None else f"{base} after train step {step}"


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


@dataclass
class Metrics:
    ok: bool
    kind: str  # "match", "value", "shape", "nan", "finite_where_nan", "inf"
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    max_ulp_err: float | None = None
    threshold: float | None = None
    error_ratio: float | None = None
    worst_index: list[int] | None = None
    expected: float | None = None
    observed: float | None = None
    mismatched: int = 0
    total: int = 0
    observed_dtype: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def _f(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else (None if math.isnan(v) else v)


def _compare_finite(e: np.ndarray, o: np.ndarray, tol: np.ndarray, dtype: str, obs_dtype: str) -> Metrics:
    """The common case, everything finite: the same metrics with a fraction of the array passes."""
    err = np.abs(o - e)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(tol > 0, err / tol, np.where(err > 0, np.inf, 0.0))
        rel = np.where(e != 0, err / np.abs(e), np.where(err > 0, np.inf, 0.0))
    bad = err > tol
    nbad = int(np.count_nonzero(bad))
    idx = np.unravel_index(int(np.argmax(ratio)), e.shape)
    max_err = float(err.max())
    u = ulp(float(np.abs(e).max()), dtype)
    return Metrics(ok=nbad == 0, kind="value" if nbad else "match", max_abs_err=max_err,
                   max_rel_err=_f(rel.max()), max_ulp_err=_f(max_err / u) if u > 0 else None,
                   threshold=_f(tol[idx]), error_ratio=_f(ratio[idx]), worst_index=[int(i) for i in idx],
                   expected=float(e[idx]), observed=float(o[idx]), mismatched=nbad, total=int(e.size),
                   observed_dtype=obs_dtype,
                   detail={"nan_expected": 0, "nan_observed": 0, "inf_expected": 0, "inf_observed": 0})


def compare(exp: Expected, observed: np.ndarray) -> Metrics:
    """Element-wise check of ``observed`` against ``exp.value`` within ``exp.tol``."""
    obs_dtype = str(np.asarray(observed).dtype)
    e = exp.value
    if np.shape(observed) != e.shape:
        return Metrics(False, "shape", observed_dtype=obs_dtype, total=int(e.size),
                       detail={"expected_shape": list(e.shape), "observed_shape": list(np.shape(observed))})
    o = np.asarray(observed, dtype=np.float64)
    if e.size and np.nanmax(np.abs(np.where(np.isinf(e), 0.0, e))) > float(finfo(exp.dtype).max):
        with np.errstate(over="ignore"):
            stored = e.astype(np_dtype(exp.dtype)).astype(np.float64)
        # a finite value beyond the dtype's range is stored as inf: that is the right answer there
        e = np.where(np.isfinite(e) & np.isinf(stored), stored, e)
    tol = exp.tol if np.isfinite(exp.tol).all() else np.nan_to_num(exp.tol, nan=np.inf)
    tol = np.broadcast_to(tol, e.shape)
    if e.size and np.isfinite(e).all() and np.isfinite(o).all():
        return _compare_finite(e, o, tol, exp.dtype, obs_dtype)
    e_nan, o_nan = np.isnan(e), np.isnan(o)
    e_inf, o_inf = np.isinf(e), np.isinf(o)
    finite = ~(e_nan | o_nan | e_inf | o_inf)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        err = np.where(finite, np.abs(o - e), 0.0)
        rel = np.where(finite & (e != 0), err / np.abs(e), np.where(err > 0, np.inf, 0.0))
        ratio = np.where(finite, np.where(tol > 0, err / tol, np.where(err > 0, np.inf, 0.0)), 0.0)
    bad_nan = o_nan & ~e_nan
    bad_finite = e_nan & ~o_nan
    bad_inf = (e_inf | o_inf) & ~(e_nan | o_nan) & (o != e)
    bad_val = finite & (err > tol)
    bad = bad_nan | bad_finite | bad_inf | bad_val
    m = Metrics(ok=not bad.any(), kind="match", total=int(e.size), mismatched=int(bad.sum()),
                observed_dtype=obs_dtype)
    if e.size == 0:
        return m
    for kind, mask in (("nan", bad_nan), ("finite_where_nan", bad_finite), ("inf", bad_inf)):
        if mask.any():
            m.kind = kind
            idx = np.unravel_index(int(np.argmax(mask)), e.shape)
            break
    else:
        if bad_val.any():
            m.kind = "value"
        idx = np.unravel_index(int(np.argmax(ratio)), e.shape)
    m.max_abs_err = _f(err.max())
    m.max_rel_err = _f(rel.max())
    scale = np.abs(e[np.isfinite(e)]).max() if np.isfinite(e).any() else 0.0
    u = ulp(scale, exp.dtype)
    m.max_ulp_err = _f(err.max() / u) if u > 0 else None
    m.worst_index = [int(i) for i in idx]
    m.threshold = _f(tol[idx])
    m.error_ratio = _f(ratio[idx]) if finite[idx] else None
    m.expected = _f(e[idx]) if not np.isnan(e[idx]) else None
    m.observed = _f(o[idx]) if not np.isnan(o[idx]) else None
    m.detail = {"nan_expected": int(e_nan.sum()), "nan_observed": int(o_nan.sum()),
                "inf_expected": int(e_inf.sum()), "inf_observed": int(o_inf.sum())}
    if np.isnan(e[idx]):
        m.detail["expected_text"] = "nan"
    if np.isnan(o[idx]):
        m.detail["observed_text"] = "nan"
    return m


def _g(v) -> str:
    return "nan" if v is None else f"{v:.6g}"


def describe(label: str, m: Metrics, dtype: str) -> str:
    """A mismatch message a person can act on (after torch.testing.assert_close)."""
    if m.kind == "shape":
        return (f"{label}: shape differs: expected {tuple(m.detail['expected_shape'])}, "
                f"observed {tuple(m.detail['observed_shape'])}")
    pct = 100.0 * m.mismatched / max(m.total, 1)
    at = tuple(m.worst_index or ())
    head = {
        "value": "values differ",
        "nan": "NaN where the oracle is finite",
        "finite_where_nan": "finite value where the oracle is NaN",
        "inf": "infinity placement differs",
    }.get(m.kind, m.kind)
    exp_s = m.detail.get("expected_text", _g(m.expected))
    obs_s = m.detail.get("observed_text", _g(m.observed))
    lines = [
        f"{label}: {head}",
        f"  Mismatched elements: {m.mismatched} / {m.total} ({pct:.1f}%)",
        f"  Worst element at index {at}: expected {exp_s}, observed {obs_s} "
        f"(|diff| {_g(m.max_abs_err) if m.kind == 'value' else 'n/a'}, up to {_g(m.threshold)} allowed there)",
        f"  Greatest absolute difference: {_g(m.max_abs_err)}; greatest relative difference: {_g(m.max_rel_err)}; "
        f"{_g(m.max_ulp_err)} ulp of {dtype} at the quantity's scale",
    ]
    if m.detail.get("nan_observed") or m.detail.get("nan_expected"):
        lines.append(f"  NaN count: expected {m.detail['nan_expected']}, observed {m.detail['nan_observed']}")
    return "\n".join(lines)
