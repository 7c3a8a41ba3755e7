"""What a reproducer script does besides the harness's own code: the oracle over a case's steps, the printout.

Both reproducer scripts (``bnparity repro``, ``harness/repro.py``) end in ``reproduce``. The
in-process script imports this module from the installed harness; the standalone torch script
gets these functions' source copied in, after the harness code they call (``reference``, the
input generators of ``harness.inputs``, ``harness.compare.ulp``), so everything here uses only
the standard library, NumPy and the names imported below, never another harness module.
"""

from __future__ import annotations

import json
import math
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np

from harness.compare import ulp
from harness.inputs import as_stored, build, digest, np_dtype
from reference import (
    dp_replica_stats,
    dp_train_backward,
    dp_train_forward,
    dp_update_running,
    eval_backward,
    eval_forward,
    ghost_train_backward,
    ghost_train_forward,
    ghost_update_running,
    masked_train_backward,
    masked_train_forward,
    masked_update_running,
    renorm_correction,
    renorm_initial,
    renorm_train_backward,
    renorm_train_forward,
    renorm_update,
    train_backward,
    train_forward,
    update_running,
)

ORDER = ("running_mean", "running_var", "y", "dx", "dgamma", "dbeta", "y_eval", "dx_eval", "dgamma_eval",
         "dbeta_eval", "running_mean_eval", "running_var_eval", "y_frozen", "dx_frozen", "running_mean_frozen",
         "running_var_frozen")
PARAM_QUANTITIES = ("running_mean", "running_var", "dgamma", "dbeta", "dgamma_eval", "dbeta_eval",
                    "running_mean_eval", "running_var_eval", "running_mean_frozen",
                    "running_var_frozen")  # in the parameter dtype


def plain(value: Any) -> Any:
    """JSON data as attributes, the way ``harness.cases.Case`` holds it: dicts become namespaces."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: plain(v) for k, v in value.items()})
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def case_from_params(params: dict[str, Any], defaults: dict[str, Any], case_class: type) -> Any:
    """A case object without pydantic: ``Case``'s defaults under the case's parameters, as attributes."""
    fields = {k: plain(v) for k, v in {**defaults, **params}.items()}
    fields["shape"] = tuple(fields["shape"])
    fields["expect_raise"] = {k: plain(v) for k, v in params.get("expect_raise", {}).items()}
    return case_class(**fields)


def oracle(case, data, momentum: float | str, eps: float, estimator: str, frozen_call: str = "batch_statistics",
           virtual_batch_update: str = "group_average", replica_running: str = "first",
           replica_gradients: str = "sum") -> dict[tuple[str, int | None], np.ndarray]:
    """The float64 value of every quantity: ``reference`` composed over the calls as ``harness.expected`` does.

    ``momentum`` is the weight of the new statistic (or ``"cumulative"``), ``eps`` the one the
    framework uses, ``estimator`` the adapter's running-variance estimator, ``frozen_call`` what its training
    call on a frozen layer does (``inference`` or ``batch_statistics``), ``virtual_batch_update`` how a ghost-BN
    call updates the running statistics (``group_average`` or ``sequential``), ``replica_running`` and
    ``replica_gradients`` what a data-parallel step keeps and how it reduces the parameters' gradients.
    """
    ax = data.channel_axis
    gamma, beta = data.f64("gamma"), data.f64("beta")
    rm, rv = data.f64("running_mean"), data.f64("running_var")
    m = None if momentum == "cumulative" else momentum
    out: dict[tuple[str, int | None], np.ndarray] = {}
    rn = getattr(case, "renorm", None)  # batch renormalization: its state, the moving mean and variance in rm, rv
    state = renorm_initial(rm, rv) if rn is not None else None
    v = getattr(case, "virtual_batch_size", None)
    if v and case.shape[0] % v:
        return out  # an uneven split, in a case that records a framework's refusal: the oracle defines nothing
    updates = 0
    for i, (kind, batch) in enumerate(zip(case.schedule, case.batches)):  # the calls in order, under their index
        x, g = ((data.f64("x_eval"), data.f64("g_eval")) if batch is None
                else (data.f64("x", batch), data.f64("g", batch)))
        sfx = "" if kind == "train" else f"_{kind}"
        params = kind != "frozen"  # a frozen layer's parameter gradients are not compared
        if (kind == "eval" or frozen_call == "inference") and case.track_running_stats and kind != "train":
            # stored in the parameter dtype: a running statistic beyond its range is inf, and eval uses that
            rm_s, rv_s = as_stored(rm, case.resolved_param_dtype), as_stored(rv, case.resolved_param_dtype)
            y = eval_forward(x, gamma, beta, rm_s, rv_s, eps, ax)
            dx, dgamma, dbeta = eval_backward(x, g, gamma, rm_s, rv_s, eps, ax)
            out[f"running_mean{sfx}", i], out[f"running_var{sfx}", i] = rm, rv  # the call leaves them
        elif rn is not None and kind != "eval":  # a batch-renormalization training call
            _, mean, var = train_forward(x, gamma, beta, eps, ax)  # the batch statistics
            r, d = renorm_correction(mean, var, state.renorm_mean, state.renorm_stddev, eps, getattr(rn, "rmin", None),
                                     getattr(rn, "rmax", None), getattr(rn, "dmax", None))
            y, _, _ = renorm_train_forward(x, gamma, beta, eps, r, d, ax)
            dx, dgamma, dbeta = renorm_train_backward(x, g, gamma, eps, r, d, ax)
            state = renorm_update(state, mean, var, eps, momentum, rn.momentum)
            rm, rv = state.moving_mean, state.moving_variance
            out[f"running_mean{sfx}", i], out[f"running_var{sfx}", i] = rm, rv
        elif getattr(case, "data_parallel", None) is not None and kind != "eval":  # a data-parallel training call
            sync = case.data_parallel.sync
            y, means, variances = dp_train_forward(x, gamma, beta, eps, case.shards, sync, ax)
            dx, dgamma, dbeta = dp_train_backward(x, g, gamma, eps, case.shards, sync, ax, replica_gradients)
            counts = dp_replica_stats(x, case.shards, sync, ax)[2]
            rm, rv = dp_update_running(rm, rv, means, variances, counts, momentum, estimator, replica_running)
            out[f"running_mean{sfx}", i], out[f"running_var{sfx}", i] = rm, rv
        elif v and kind != "eval":  # a ghost-BN training call
            y, means, variances = ghost_train_forward(x, gamma, beta, eps, v, ax)
            dx, dgamma, dbeta = ghost_train_backward(x, g, gamma, eps, v, ax)
            rm, rv = ghost_update_running(rm, rv, means, variances, case.count // case.groups, momentum,
                                          estimator, virtual_batch_update)
            out[f"running_mean{sfx}", i], out[f"running_var{sfx}", i] = rm, rv
        elif getattr(data, "mask", None) is not None and kind != "eval":  # a masked training call
            mask = data.mask[batch]
            y, mean, var = masked_train_forward(x, mask, gamma, beta, eps, ax)
            dx, dgamma, dbeta = masked_train_backward(x, g, mask, gamma, eps, ax)
            count = np.moveaxis(np.broadcast_to(mask, x.shape), ax, 0).reshape(x.shape[ax], -1).sum(axis=1)
            rm, rv = masked_update_running(rm, rv, mean, var, count, momentum, estimator)
            out[f"running_mean{sfx}", i], out[f"running_var{sfx}", i] = rm, rv
        else:  # batch statistics (a training call; eval without stored statistics)
            y, mean, var = train_forward(x, gamma, beta, eps, ax)
            dx, dgamma, dbeta = train_backward(x, g, gamma, eps, ax)
            if case.track_running_stats and kind != "eval":
                if case.count:  # an empty batch leaves the state as it was
                    updates += 1
                    rm, rv = update_running(rm, rv, mean, var, case.count, m, estimator, num_batches_tracked=updates)
                out[f"running_mean{sfx}", i], out[f"running_var{sfx}", i] = rm, rv
        out[f"y{sfx}", i], out[f"dx{sfx}", i] = y, dx
        if params and case.has_scale:
            out[f"dgamma{sfx}", i] = dgamma
        if params and case.has_center:
            out[f"dbeta{sfx}", i] = dbeta
    return out


def num(v: Any) -> Any:
    """A number as a person wrote it: 1 - 0.7 (0.30000000000000004 in float64) reads 0.3.

    The rule (the report's page mirrors it as ``fmtSetting``): round to 12 significant digits, which
    drops float64 arithmetic noise and keeps every digit a person writes; then the shortest text that
    reads back as that number (Python's ``repr``: ``0.3``, ``1e-05``, ``1.5e-07``), an integral value
    without ``.0``. Strings and None are returned as they are; the records keep the exact float.
    """
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    x = float(v)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    x = float(f"{x:.12g}")
    return str(int(x)) if x.is_integer() and abs(x) < 1e16 else repr(x)


def settings_text(v: Any) -> str:
    """Settings (a dict of numbers, strings, lists, dicts) for printing, every number through ``num``."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {settings_text(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(settings_text(x) for x in v) + "]"
    if v is None or isinstance(v, (str, bool)):
        return json.dumps(v)
    return num(v)


def show(label: str, expected: np.ndarray, observed: np.ndarray, dtype_name: str) -> None:
    """One line: largest |diff|, the same in ULPs of the dtype at the quantity's scale, the worst element, digest."""
    o = np.asarray(observed, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if o.shape != e.shape:
        print(f"{label:34s} shape differs: expected {e.shape}, observed {o.shape}")
        return
    with np.errstate(invalid="ignore", over="ignore"):
        # a finite value beyond the dtype's range is stored as inf: that is the right answer there
        stored = e.astype(np_dtype(dtype_name)).astype(np.float64)
        e = np.where(np.isfinite(e) & np.isinf(stored), stored, e)
        both = np.isfinite(o) & np.isfinite(e)
        err = np.where(both, np.abs(o - e), 0.0)
        placed = int(((np.isnan(o) != np.isnan(e)) | ((np.isinf(o) | np.isinf(e)) & (o != e)
                                                    & ~np.isnan(o) & ~np.isnan(e))).sum())
    if not e.size:
        return
    i = np.unravel_index(int(np.argmax(err)), e.shape)
    scale = float(np.abs(e[np.isfinite(e)]).max()) if np.isfinite(e).any() else 0.0
    u = ulp(scale, dtype_name)
    extra = f"  NaN/Inf placement differs at {placed} element(s)" if placed else ""
    print(f"{label:34s} max|diff| {err.max():<11.4g} = {err.max() / u:<10.4g} ulp of {dtype_name:8s}"
          f" worst at {tuple(int(k) for k in i)}: expected {e[i]:.9g}, observed {o[i]:.9g}"
          f"  digest {digest(observed)}{extra}")


def reproduce(adapter, case, adapter_name: str) -> int:
    """Run the case on the adapter as the harness's worker does, print every quantity against the oracle.

    Returns the exit status: 1 when the framework raised.
    """
    data = build(case)  # the seeded inputs, bit-identical to the harness run
    print(f"case {case.name} on {adapter_name}: shape {list(case.shape)} {case.layout} {case.dtype}, "
          f"calls {list(case.schedule)}; input digests x {data.digests['x']} x_eval {data.digests['x_eval']}")
    print(f"{adapter_name} versions {adapter.versions()}; "
          f"settings as passed: {settings_text(adapter.settings(case))}")
    adapter.setup()
    obs = adapter.run(case, data)
    momentum, eps = adapter.effective(case)
    estimator = adapter.conventions.running_var_estimator
    expected = oracle(case, data, momentum, eps, estimator, adapter.conventions.frozen_call or "batch_statistics",
                      getattr(adapter.conventions, "virtual_batch_update", "group_average"),
                      getattr(adapter.conventions, "replica_running", "first"),
                      getattr(adapter.conventions, "replica_gradients", "sum"))
    print(f"oracle: float64, momentum (weight of new) {num(momentum)}, eps {num(eps)}, "
          f"running variance estimator {estimator}")
    rank = {q: i for i, q in enumerate(ORDER)}
    for q, step in sorted(obs.arrays, key=lambda k: (k[1], rank.get(k[0], len(ORDER)))):
        if (q, step) in expected:
            what = "after" if q.startswith("running") else "of"
            kind = case.schedule[step]
            label = f"{q.removesuffix('_' + kind)} {what} call {step} ({kind})"
            show(label, expected[q, step], obs.arrays[q, step],
                 case.resolved_param_dtype if q in PARAM_QUANTITIES else case.dtype)
    if obs.info:
        print(f"adapter info: {settings_text(obs.info)}")
    if obs.raised is None:
        return 0
    print(f"raised during {obs.raised.stage}: {obs.raised.type}: {obs.raised.message}")
    want = case.expect_raise.get(adapter_name)
    if want:
        print(f"(the case expects {want.type} matching {want.match!r})")
    for what, declared in ([] if want else adapter.conventions.raises_on(case, eps)):
        print(f"(the adapter declares that {what} raises {declared.type} matching {declared.match!r})")
    return 1


def reproduce_in_process(params: dict[str, Any], adapter_name: str) -> int:
    """The in-process script's run: load the adapter from the installed harness, then ``reproduce``.

    The script has applied the worker environment it carries; the adapter's own is applied again
    here, before its framework is imported (``setup``), for a script made without it.
    """
    import os

    from harness.adapters.base import discover, load_spec
    from harness.cases import Case

    specs = discover()
    if adapter_name not in specs:
        print(f"adapter {adapter_name!r} is not registered here: install the package that provides it (entry "
              f"point group bnparity.adapters) or set BNPARITY_ADAPTERS=module:attr; registered: {sorted(specs)}",
              file=sys.stderr)
        return 2
    adapter = load_spec(specs[adapter_name])
    os.environ.update(getattr(adapter, "worker_env", {}) or {})
    return reproduce(adapter, Case.model_validate(params), adapter_name)
