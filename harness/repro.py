"""Standalone reproducer scripts: ``bnparity repro CASE ADAPTER``.

For ``torch`` the script needs only NumPy and PyTorch: it rebuilds the case's
seeded inputs with the harness's generator code, calls ``torch.nn.BatchNorm*d``
exactly as the torch adapter does, and prints every quantity observed against
the float64 oracle (written out inline), with a digest of the observed bits
that matches the ``digest`` of the results file when the run is the same.

For any other adapter the script imports that adapter from the installed
harness and calls ``adapter.run(case, data)`` in-process with the case rebuilt
from its parameters (the adapter's worker environment applied first), then
prints the same comparison against the same inline oracle.

A script is a template plus the case as JSON (``CASE_PLACEHOLDER``); the HTML
report embeds the templates and fills them in the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CASE_PLACEHOLDER = "__BNPARITY_CASE_JSON__"

_HEAD = '''#!/usr/bin/env python3
"""bnparity reproducer: the case in CASE below, on adapter {adapter_lit}.

{what}
Run it with `python THIS_FILE`. It prints, for every quantity, the observed value against
the NumPy float64 oracle (written out below): largest absolute difference, the same in ULPs
of the dtype at the quantity's scale, and expected vs observed at the worst element. The
harness's tolerance and verdict for each quantity are in the bnparity report.
"""

import json
import math
import sys

import numpy as np

CASE = json.loads(r"""
{placeholder}
""")
ADAPTER = {adapter_lit}
'''

# the NumPy float64 oracle: reference/__init__.py, inlined so the script stands alone
_ORACLE = '''

# -- the float64 oracle (reference/__init__.py) ---------------------------------------------------

def _b(v, ndim, ax):
    shape = [1] * ndim
    shape[ax % ndim] = -1
    return np.asarray(v, dtype=np.float64).reshape(shape)


def _axes(ndim, ax):
    return tuple(i for i in range(ndim) if i != ax % ndim)


def batch_stats(x, ax):
    """mean = sum(x)/n; var = sum((x - mean)**2)/n (two-pass, biased)."""
    with np.errstate(invalid="ignore", over="ignore"):
        mean = x.mean(axis=_axes(x.ndim, ax))
        var = ((x - _b(mean, x.ndim, ax)) ** 2).mean(axis=_axes(x.ndim, ax))
    return mean, var


def normalize(x, mean, var, gamma, beta, eps, ax):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta."""
    b = lambda v: _b(v, x.ndim, ax)  # noqa: E731
    with np.errstate(invalid="ignore", divide="ignore"):
        return b(gamma) * ((x - b(mean)) * b(1.0 / np.sqrt(np.asarray(var) + eps))) + b(beta)


def train_backward(x, g, gamma, eps, ax):
    """dx = gamma/s * (g - mean(g) - xhat * mean(g * xhat)); dgamma = sum(g * xhat); dbeta = sum(g)."""
    axes, b = _axes(x.ndim, ax), (lambda v: _b(v, x.ndim, ax))
    mean, var = batch_stats(x, ax)
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = 1.0 / np.sqrt(var + eps)
        xhat = (x - b(mean)) * b(inv)
        dx = b(gamma * inv) * (g - b(g.mean(axis=axes)) - xhat * b((g * xhat).mean(axis=axes)))
        return dx, (g * xhat).sum(axis=axes), g.sum(axis=axes)


def bessel_factor(n, estimator):
    """biased: 1; unbiased: n/(n-1) (inf at n == 1); unbiased_guarded: n/max(n-1, 1)."""
    if estimator == "biased":
        return 1.0
    if estimator == "unbiased":
        return float("inf") if n == 1 else n / (n - 1)
    return n / max(n - 1, 1)


def oracle(x_steps, g_steps, x_eval, g_eval, gamma, beta, rm, rv, ax, momentum, eps, estimator, tracked, affine):
    """Every quantity of the case, in float64: {(quantity, step): array}; step None for eval."""
    out = {}
    n = x_eval.size // x_eval.shape[ax]
    for step, (x, g) in enumerate(zip(x_steps, g_steps)):
        mean, var = batch_stats(x, ax)
        out[("y", step)] = normalize(x, mean, var, gamma, beta, eps, ax)
        dx, dgamma, dbeta = train_backward(x, g, gamma, eps, ax)
        out[("dx", step)] = dx
        if affine:
            out[("dgamma", step)], out[("dbeta", step)] = dgamma, dbeta
        if tracked:
            w = 1.0 / (step + 1) if momentum == "cumulative" else float(momentum)
            with np.errstate(invalid="ignore"):
                rm = (1 - w) * rm + w * mean
                rv = (1 - w) * rv + w * var * bessel_factor(n, estimator)
            out[("running_mean", step)], out[("running_var", step)] = rm, rv
    if tracked:
        out[("y_eval", None)] = normalize(x_eval, rm, rv, gamma, beta, eps, ax)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[("dx_eval", None)] = g_eval * _b(gamma / np.sqrt(rv + eps), x_eval.ndim, ax)
    else:  # nothing stored: eval normalizes with the batch statistics
        mean, var = batch_stats(x_eval, ax)
        out[("y_eval", None)] = normalize(x_eval, mean, var, gamma, beta, eps, ax)
        out[("dx_eval", None)] = train_backward(x_eval, g_eval, gamma, eps, ax)[0]
    return out


# -- printing ---------------------------------------------------------------------------------------

def _np_dtype(dtype_name):
    if dtype_name == "bfloat16":
        import ml_dtypes  # NumPy has no bfloat16; the harness rounds to it with ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype_name)


def _finfo(dtype_name):
    if dtype_name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(ml_dtypes.bfloat16)
    return np.finfo(_np_dtype(dtype_name))


def ulp(value, dtype_name):
    """Spacing of the dtype at |value| (the subnormal spacing near zero)."""
    fi = _finfo(dtype_name)
    v = abs(float(value))
    if not math.isfinite(v):
        return float("nan")
    if v < float(fi.smallest_normal):
        return float(fi.smallest_normal) * float(fi.eps)
    return 2.0 ** math.floor(math.log2(v)) * float(fi.eps)


def num(v):
    """A setting for printing: 1 - 0.9 reads 0.1."""
    return v if isinstance(v, str) or v is None else f"{v:.12g}"


def digest(a):
    """The harness's digest of an observed array (dtype, shape and bytes): equal digests, equal bits."""
    import hashlib

    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


def show(quantity, step, expected, observed, dtype_name):
    label = quantity if step is None else f"{quantity} after train step {step}"
    o = np.asarray(observed, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if o.shape != e.shape:
        print(f"{label:34s} shape differs: expected {e.shape}, observed {o.shape}")
        return
    with np.errstate(invalid="ignore", over="ignore"):
        # a finite value beyond the dtype's range is stored as inf: that is the right answer there
        stored = e.astype(_np_dtype(dtype_name)).astype(np.float64)
        e = np.where(np.isfinite(e) & np.isinf(stored), stored, e)
        both = np.isfinite(o) & np.isfinite(e)
        err = np.where(both, np.abs(o - e), 0.0)
        placed = int(((np.isnan(o) != np.isnan(e)) | ((np.isinf(o) | np.isinf(e)) & (o != e)
                                                    & ~np.isnan(o) & ~np.isnan(e))).sum())
    i = np.unravel_index(int(np.argmax(err)), e.shape) if e.size else ()
    scale = float(np.abs(e[np.isfinite(e)]).max()) if np.isfinite(e).any() else 0.0
    u = ulp(scale, dtype_name)
    extra = f"  NaN/Inf placement differs at {placed} element(s)" if placed else ""
    if e.size:
        print(f"{label:34s} max|diff| {err.max():<11.4g} = {err.max() / u:<10.4g} ulp of {dtype_name:8s}"
              f" worst at {tuple(int(k) for k in i)}: expected {e[i]:.9g}, observed {o[i]:.9g}"
              f"  digest {digest(observed)}{extra}")
'''

_TORCH = '''

# -- inputs: the harness's seeded generators (harness/inputs.py) ------------------------------------

STREAMS = {"x": 1, "g": 2, "x_eval": 3, "g_eval": 4, "gamma": 5, "beta": 6, "running_mean": 7,
           "running_var": 8, "override": 9}
SHAPE = tuple(CASE["shape"])
AX = 1 if CASE.get("layout", "channels_first") == "channels_first" else -1
DTYPE = CASE.get("dtype", "float32")
PARAM_DTYPE = CASE.get("param_dtype") or ("float64" if DTYPE == "float64" else "float32")


def rng(stream, step=0):
    return np.random.default_rng([CASE.get("seed", 0), STREAMS[stream], step])


def generate(spec, shape, r):
    kind = spec["kind"]
    if kind == "normal":
        return spec.get("loc", 0.0) + spec.get("scale", 1.0) * r.standard_normal(shape)
    if kind == "uniform":
        return r.uniform(spec.get("low", 0.0), spec.get("high", 1.0), shape)
    if kind == "constant":
        return np.full(shape, spec.get("value", 0.0), dtype=np.float64)
    if kind == "ramp":
        return np.linspace(spec.get("start", 0.0), spec.get("stop", 1.0), int(np.prod(shape))).reshape(shape)
    if kind == "student_t":
        return spec.get("loc", 0.0) + spec.get("scale", 1.0) * r.standard_t(spec.get("df", 2.0), shape)
    raise ValueError(f"unknown generator kind {kind!r}")


DEFAULT_SPECS = {"input": {"kind": "normal"}, "grad": {"kind": "normal"},
                 "gamma": {"kind": "uniform", "low": 0.5, "high": 1.5},
                 "beta": {"kind": "normal", "loc": 0.0, "scale": 0.5},
                 "running_mean": {"kind": "constant", "value": 0.0},
                 "running_var": {"kind": "constant", "value": 1.0}}


def spec(name):
    return CASE.get(name) or DEFAULT_SPECS[name]


def batch(gen, stream, step):
    x = generate(gen, SHAPE, rng(stream, step))
    if stream in ("x", "x_eval"):
        for k, o in enumerate(CASE.get("channel_overrides", [])):
            sub = generate(o["input"], (SHAPE[0], len(o["channels"]), *SHAPE[2:]), rng("override", step * 1000 + k))
            x[:, o["channels"]] = sub
    if stream == "x":
        for s in CASE.get("specials", []):
            x[tuple(s["index"])] = float(s["value"])
    return x


def cast(a):
    """Logical float64 -> physical layout, rounded once to the case dtype (what every adapter gets)."""
    a = a if AX == 1 else np.moveaxis(a, 1, -1)
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(a).astype(_np_dtype(DTYPE))


steps = CASE.get("steps", 3)
x_steps = [cast(batch(spec("input"), "x", i)) for i in range(steps)]
g_steps = [cast(generate(spec("grad"), SHAPE, rng("g", i))) for i in range(steps)]
x_eval = cast(batch(CASE.get("eval_input") or spec("input"), "x_eval", 0))
g_eval = cast(generate(spec("grad"), SHAPE, rng("g_eval")))
C, pdt = (SHAPE[1],), _np_dtype(PARAM_DTYPE)
affine, tracked = CASE.get("affine", True), CASE.get("track_running_stats", True)
gamma = generate(spec("gamma"), C, rng("gamma")).astype(pdt) if affine else np.ones(C, pdt)
beta = generate(spec("beta"), C, rng("beta")).astype(pdt) if affine else np.zeros(C, pdt)
rm0 = generate(spec("running_mean"), C, rng("running_mean")).astype(pdt)
rv0 = generate(spec("running_var"), C, rng("running_var")).astype(pdt)
print(f"case {CASE['name']} on {ADAPTER}: shape {list(SHAPE)} {CASE.get('layout', 'channels_first')} {DTYPE}, "
      f"{steps} train steps; input digests x {digest(np.stack(x_steps)) if steps else ''} x_eval {digest(x_eval)}")

# -- PyTorch, as harness/adapters/torch_adapter.py calls it ------------------------------------------

import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def to_torch(a):
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a))


def to_numpy(t):
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(_np_dtype("bfloat16"))
    return t.numpy().copy()


def tensor(a):
    """Physical array -> logical (N, C, ...) tensor; channels_last keeps its strides, non-contiguous is a view."""
    t = to_torch(a)
    if not CASE.get("contiguous", True):
        buf = torch.zeros((2 * t.shape[0], *t.shape[1:]), dtype=t.dtype)
        buf[::2] = t
        t = buf[::2]
    if AX == -1 and t.dim() > 2:
        t = t.movedim(-1, 1)
    return t


def leaf(a):
    t = tensor(a)
    if CASE.get("contiguous", True):
        return t.clone().requires_grad_(True)
    return t.requires_grad_(True)


def back(t):
    return to_numpy(t.movedim(1, -1) if AX == -1 and t.dim() > 2 else t)


# momentum as passed to torch (weight of the new statistic; None = cumulative average)
if CASE.get("use_defaults"):
    momentum, eps = 0.1, 1e-5  # torch's own defaults
else:
    momentum = None if CASE.get("momentum", 0.1) == "cumulative" else CASE.get("momentum", 0.1)
    eps = CASE.get("eps", 1e-5)
cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}[len(SHAPE)]
bn = cls(SHAPE[1], eps=eps, momentum=momentum, affine=affine, track_running_stats=tracked)
bn = bn.to(getattr(torch, PARAM_DTYPE))
print(f"torch {torch.__version__}: {cls.__name__}({SHAPE[1]}, eps={eps}, momentum={momentum}, affine={affine}, "
      f"track_running_stats={tracked})")
with torch.no_grad():
    if affine:
        bn.weight.copy_(to_torch(gamma))
        bn.bias.copy_(to_torch(beta))
    if tracked:
        bn.running_mean.copy_(to_torch(rm0))
        bn.running_var.copy_(to_torch(rv0))


def call(x, g):
    xt = leaf(x)
    bn.zero_grad(set_to_none=True)
    y = bn(xt)
    y.backward(tensor(g))
    out = {"y": back(y), "dx": back(xt.grad)}
    if affine:
        out["dgamma"], out["dbeta"] = to_numpy(bn.weight.grad), to_numpy(bn.bias.grad)
    return out


observed, stage = {}, "build"
try:
    for step in range(steps):
        stage = f"train step {step}"
        bn.train()
        out = call(x_steps[step], g_steps[step])
        if tracked:
            out["running_mean"], out["running_var"] = to_numpy(bn.running_mean), to_numpy(bn.running_var)
        observed.update({(q, step): v for q, v in out.items()})
    stage = "eval"
    bn.eval()
    out = call(x_eval, g_eval)
    observed[("y_eval", None)], observed[("dx_eval", None)] = out["y"], out["dx"]
    raised = None
except Exception as e:  # the framework's own error is the finding
    raised = e

f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
expected = oracle([f64(x) for x in x_steps], [f64(g) for g in g_steps], f64(x_eval), f64(g_eval), f64(gamma),
                  f64(beta), f64(rm0), f64(rv0), AX, "cumulative" if momentum is None else momentum, eps,
                  "unbiased", tracked, affine)
print(f"oracle: float64, momentum (weight of new) {'cumulative' if momentum is None else momentum}, eps {eps}, "
      "running variance stored unbiased (Bessel n/(n-1), torch's convention)")
ORDER = ["running_mean", "running_var", "y", "dx", "dgamma", "dbeta"]
for (q, step) in sorted(observed, key=lambda k: (k[1] is None, k[1] or 0, (ORDER + ["y_eval", "dx_eval"]).index(k[0]))):
    show(q, step, expected[(q, step)], observed[(q, step)],
         PARAM_DTYPE if q in ("running_mean", "running_var", "dgamma", "dbeta") else DTYPE)
if raised is not None:
    want = (CASE.get("expect_raise") or {}).get(ADAPTER)
    print(f"raised during {stage}: {type(raised).__name__}: {raised}")
    if want:
        print(f"(the case expects {want['type']} matching {want.get('match', '')!r})")
    sys.exit(1)
'''

_IN_PROCESS = '''

# -- the adapter, in this process: its worker environment first, before any framework is imported ----

import os  # noqa: E402

WORKER_ENV = {worker_env}
os.environ.update(WORKER_ENV)
os.environ.setdefault("BNPARITY_THREADS", "1")

from harness import inputs  # noqa: E402
from harness.adapters.base import discover, load_spec  # noqa: E402
from harness.cases import Case  # noqa: E402

specs = discover()
if ADAPTER not in specs:
    sys.exit(f"adapter {{ADAPTER!r}} is not registered here: install the package that provides it (entry point "
             f"group bnparity.adapters) or set BNPARITY_ADAPTERS=module:attr; registered: {{sorted(specs)}}")
adapter = load_spec(specs[ADAPTER])
os.environ.update(getattr(adapter, "worker_env", {{}}))
case = Case.model_validate(CASE)
data = inputs.build(case)  # the seeded inputs, bit-identical to the harness run
print(f"case {{case.name}} on {{ADAPTER}}: shape {{list(case.shape)}} {{case.layout}} {{case.dtype}}, "
      f"{{case.steps}} train steps; input digests x {{data.digests['x']}} x_eval {{data.digests['x_eval']}}")
print(f"{{ADAPTER}} versions {{adapter.versions()}}; settings as passed: {{adapter.settings(case)}}")
adapter.setup()
obs = adapter.run(case, data)
momentum, eps = adapter.effective(case)
estimator = adapter.conventions.running_var_estimator
f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
expected = oracle([f64(x) for x in data.x], [f64(g) for g in data.g], f64(data.x_eval), f64(data.g_eval),
                  f64(data.gamma), f64(data.beta), f64(data.running_mean), f64(data.running_var), data.channel_axis,
                  momentum, eps, estimator, case.track_running_stats, case.affine)
print(f"oracle: float64, momentum (weight of new) {{num(momentum)}}, eps {{num(eps)}}, "
      f"running variance estimator {{estimator}}")
ORDER = ["running_mean", "running_var", "y", "dx", "dgamma", "dbeta", "y_eval", "dx_eval"]
for (q, step) in sorted(obs.arrays, key=lambda k: (k[1] is None, k[1] or 0, ORDER.index(k[0]) if k[0] in ORDER else 9)):
    if (q, step) in expected:
        show(q, step, expected[(q, step)], obs.arrays[(q, step)],
             case.resolved_param_dtype if q in ("running_mean", "running_var", "dgamma", "dbeta") else case.dtype)
if obs.info:
    print(f"adapter info: {{obs.info}}")
if obs.raised is not None:
    want = case.expect_raise.get(ADAPTER)
    print(f"raised during {{obs.raised.stage}}: {{obs.raised.type}}: {{obs.raised.message}}")
    if want:
        print(f"(the case expects {{want.type}} matching {{want.match!r}})")
    sys.exit(1)
'''

STANDALONE = {"torch": _TORCH}  # adapters with a framework-only script; every other adapter runs in-process


def case_json(case: Any) -> str:
    """The case's parameters as the JSON a script embeds (``Case.summary()`` or a ``case_params`` dict)."""
    params = case.summary() if hasattr(case, "summary") else dict(case)
    return json.dumps(params, indent=1, sort_keys=True, ensure_ascii=True)


def _worker_env(adapter_name: str) -> dict[str, str]:
    """The adapter's worker environment, when the adapter can be loaded here (it is applied again at run time)."""
    from harness.adapters.base import discover, load_spec

    try:
        return dict(getattr(load_spec(discover()[adapter_name]), "worker_env", {}) or {})
    except Exception:
        return {}


def template(adapter_name: str, standalone: bool = True, worker_env: dict[str, str] | None = None) -> str:
    """The script for ``adapter_name`` with ``CASE_PLACEHOLDER`` where the case JSON goes.

    ``standalone=False`` gives the in-process script even for adapters that have a standalone one.
    ``worker_env``: the adapter's worker environment as a results file recorded it (the report passes
    it, so rendering needs no adapter registry); None looks the adapter up here.
    """
    lit = json.dumps(str(adapter_name))  # a JSON string literal is a valid Python one
    if standalone and adapter_name in STANDALONE:
        what = ("Needs only NumPy and PyTorch (and ml_dtypes for bfloat16 cases): the inputs are rebuilt with the\n"
                "harness's seeded generators and BatchNorm is called exactly as the torch adapter calls it.")
        body = STANDALONE[adapter_name]
    else:
        what = ("Needs the bnparity harness installed (pip install -e .) and the adapter's framework: the adapter\n"
                "runs in this process with its worker environment, on inputs rebuilt from the case's seed.")
        env = _worker_env(adapter_name) if worker_env is None else worker_env
        body = _IN_PROCESS.format(worker_env=json.dumps(env, sort_keys=True))
    return _HEAD.format(adapter_lit=lit, what=what, placeholder=CASE_PLACEHOLDER) + _ORACLE + body


def fill(tmpl: str, case_text: str) -> str:
    return tmpl.replace(CASE_PLACEHOLDER, case_text, 1)


def script(case: Any, adapter_name: str, standalone: bool = True) -> str:
    """A runnable reproducer for one (case, adapter) cell.

    ``case`` is a ``Case`` or a ``case_params`` dict from a results file.

        >>> text = script(load_cases(["cases"])[0], "torch")
        >>> Path("repro.py").write_text(text)   # then: python repro.py
    """
    return fill(template(adapter_name, standalone), case_json(case))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bnparity repro",
                                description="Print a standalone script that reproduces one (case, adapter) cell.")
    p.add_argument("case", help="case name (from the catalogue)")
    p.add_argument("adapter", help="adapter name, e.g. torch, keras3-jax, flax-nnx")
    p.add_argument("--cases", action="append", default=None, metavar="PATH",
                   help="case file or folder (repeatable; default: ./cases)")
    p.add_argument("--results", default=None, metavar="FILE",
                   help="take the case's parameters from a results file instead (a run from another checkout)")
    p.add_argument("--in-process", action="store_true",
                   help="call the adapter through the harness even where a framework-only script exists")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write the script here instead of stdout")
    args = p.parse_args(argv)
    from harness.adapters.base import discover

    known = discover()
    if args.adapter not in known:
        print(f"bnparity repro: unknown adapter {args.adapter!r}; known: {', '.join(sorted(known))}", file=sys.stderr)
        return 2
    case: Any = None
    if args.results:
        from harness.report.model import load

        model = load([args.results])
        info = model.cases.get(args.case)
        case = info.params if info and info.params else None
        where = args.results
    else:
        from harness.cases import CaseError, load_cases

        where = ", ".join(args.cases or ["cases"])
        try:
            case = next((c for c in load_cases(args.cases or ["cases"]) if c.name == args.case), None)
        except CaseError as e:
            print(e, file=sys.stderr)
            return 2
    if case is None:
        print(f"bnparity repro: no case named {args.case!r} in {where}", file=sys.stderr)
        return 2
    text = script(case, args.adapter, standalone=not args.in_process)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
