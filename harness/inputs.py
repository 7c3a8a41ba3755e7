"""Seeded inputs for a case, built once in float64 and cast once to the case dtype.

Every adapter receives the same cast arrays (bit-identical), and the oracle
receives those arrays converted back to float64, so rounding of the inputs is
never counted as a framework error. Arrays are in the case's physical layout:
(N, C, *spatial) for channels_first, (N, *spatial, C) for channels_last, the channels at ``axis`` otherwise.

This module needs only NumPy (and ml_dtypes for bfloat16): ``bnparity repro``
copies it into the standalone torch reproducer (``harness/repro.py``), where
``case`` is a plain object with ``harness.cases.Case``'s fields and properties.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from harness.cases import Case

DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")

# one independent stream per component, so adding a step never changes another
_STREAMS = {"x": 1, "g": 2, "x_eval": 3, "g_eval": 4, "gamma": 5, "beta": 6,
            "running_mean": 7, "running_var": 8, "override": 9,
            "mask": 10, "mask_eval": 11, "v": 12}


def np_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a case dtype name; NumPy has no bfloat16, ml_dtypes provides it."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    if name not in DTYPE_NAMES:
        raise KeyError(name)
    return np.dtype(name)


def finfo(name: str):
    """Machine limits of a float dtype name, bfloat16 included."""
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(ml_dtypes.bfloat16)
    return np.finfo(np_dtype(name))


def generate(spec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draw a float64 array of ``shape`` from a generator spec."""
    kind = spec.kind
    if kind == "normal":
        return spec.loc + spec.scale * rng.standard_normal(shape)
    if kind == "uniform":
        return rng.uniform(spec.low, spec.high, shape)
    if kind == "constant":
        return np.full(shape, spec.value, dtype=np.float64)
    if kind == "ramp":
        return np.linspace(spec.start, spec.stop, int(np.prod(shape))).reshape(shape)
    if kind == "student_t":
        return spec.loc + spec.scale * rng.standard_t(spec.df, shape)
    raise ValueError(f"unknown generator kind {kind!r}")


def _rng(case: Case, stream: str, step: int = 0) -> np.random.Generator:
    return np.random.default_rng([case.seed, _STREAMS[stream], step])


def _batch(case: Case, spec, stream: str, step: int) -> np.ndarray:
    """A logical-layout float64 batch with channel overrides and specials applied."""
    x = generate(spec, case.shape, _rng(case, stream, step))
    if stream in ("x", "x_eval"):
        for k, o in enumerate(case.channel_overrides):
            sub = generate(o.input, (case.shape[0], len(o.channels), *case.shape[2:]),
                           _rng(case, "override", step * 1000 + k))
            x[:, o.channels] = sub
    if stream == "x":
        for s in case.specials:
            x[tuple(s.index)] = float(s.value)
    return x


def to_physical(a: np.ndarray, channel_axis: int) -> np.ndarray:
    """A logical (N, C, *spatial) array with its channels moved to ``channel_axis``, contiguous."""
    return np.ascontiguousarray(np.moveaxis(a, 1, channel_axis))


@dataclass
class CaseData:
    """Inputs for one case: what every adapter is fed.

    ``x[i]`` and ``g[i]`` are the input and upstream gradient of training step
    ``i``; ``x_eval`` / ``g_eval`` the held-out eval batch. Arrays are in the
    case dtype (params and running stats in the param dtype), physical layout.
    """

    x: list[np.ndarray]
    g: list[np.ndarray]
    x_eval: np.ndarray
    g_eval: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    channel_axis: int
    digests: dict[str, str] = field(default_factory=dict)
    # a case's ``mask``: per training batch and for the eval batch, boolean, the physical shape (True = unmasked)
    mask: list[np.ndarray] | None = None
    mask_eval: np.ndarray | None = None
    # a case's ``second_order``: per training batch, the direction of the Hessian-vector products (the case dtype)
    v: list[np.ndarray] | None = None

    def f64(self, name: str, step: int | None = None) -> np.ndarray:
        a = getattr(self, name)
        if step is not None:
            a = a[step]
        return np.asarray(a, dtype=np.float64)


def build_mask(case: Case, stream: str, step: int) -> np.ndarray:
    """The logical-layout boolean mask of one batch (True: unmasked, counted in the statistics): the positions
    ``case.mask`` keeps (``keep``: that fraction of the N x spatial positions, rounded, drawn from the seed per batch;
    ``samples``: every position of the samples marked 1), in every channel but ``masked_channels``."""
    spec = case.mask  # (in a reproducer, a namespace of the fields given: getattr for those left out)
    samples, frac = getattr(spec, "samples", None), getattr(spec, "keep", None)
    n, c, spatial = case.shape[0], case.shape[1], case.shape[2:]
    positions = n * int(np.prod(spatial, dtype=np.int64))
    if samples is not None:
        keep = np.repeat(np.asarray(samples, dtype=bool), positions // n)
    else:
        frac = 1.0 if frac is None else frac
        keep = np.zeros(positions, dtype=bool)
        keep[_rng(case, stream, step).permutation(positions)[:int(round(frac * positions))]] = True
    mask = np.repeat(keep.reshape(n, 1, *spatial), c, axis=1)
    mask[:, list(getattr(spec, "masked_channels", ()))] = False
    return mask


def as_stored(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` (float64) where it fits ``dtype``, and the infinity it is stored as where it is beyond its range: a
    running statistic kept in ``dtype`` that overflows is inf, and what follows (eval) uses that."""
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(over="ignore"):
        stored = a.astype(np_dtype(dtype)).astype(np.float64)
    return np.where(np.isinf(stored) & np.isfinite(a), stored, a)


def digest(a: np.ndarray) -> str:
    """Short content hash of an array (dtype, shape and bytes)."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


def build(case: Case) -> CaseData:
    """Build every input of ``case`` from its seed."""
    dt, pdt = np_dtype(case.dtype), np_dtype(case.resolved_param_dtype)
    def cast(a: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # beyond the dtype's range is inf, as the framework would see it
            return to_physical(a, case.channel_axis).astype(dt)

    x = [cast(_batch(case, case.input, "x", i)) for i in range(case.steps)]
    g = [cast(generate(case.grad, case.shape, _rng(case, "g", i))) for i in range(case.steps)]
    x_eval = cast(_batch(case, case.eval_input or case.input, "x_eval", 0))
    g_eval = cast(generate(case.grad, case.shape, _rng(case, "g_eval")))
    c = (case.channels,)
    # a layer without gamma scales by 1, one without beta shifts by 0
    gamma = generate(case.gamma, c, _rng(case, "gamma")).astype(pdt) if case.has_scale else np.ones(c, pdt)
    beta = generate(case.beta, c, _rng(case, "beta")).astype(pdt) if case.has_center else np.zeros(c, pdt)
    rm = generate(case.running_mean, c, _rng(case, "running_mean")).astype(pdt)
    rv = generate(case.running_var, c, _rng(case, "running_var")).astype(pdt)
    data = CaseData(x, g, x_eval, g_eval, gamma, beta, rm, rv, case.channel_axis)
    data.digests = {"x": digest(np.stack(x)) if x else "", "x_eval": digest(x_eval)}
    second = getattr(case, "second_order", None)  # (a reproducer's case may not have the field)
    if second is not None:
        data.v = [cast(generate(second.direction, case.shape, _rng(case, "v", i))) for i in range(case.steps)]
    if case.mask is not None:
        data.mask = [to_physical(build_mask(case, "mask", i), case.channel_axis) for i in range(case.steps)]
        data.mask_eval = to_physical(build_mask(case, "mask_eval", 0), case.channel_axis)
    return data
