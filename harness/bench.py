"""``bnparity bench``: how fast is BatchNorm in each adapter, against what this machine delivers?

Configurations come from ``cases/bench.toml``. For each adapter that implements
``bench_callable(case, data, mode, variant, device)`` (and each variant it lists in
``bench_variants``: eager, compiled, ...), each configuration, dtype, layout and mode
(``train_fwd`` with the running-stat update, ``train_fwd_bwd``, ``eval_fwd``) is timed in the
adapter's own worker process, one adapter at a time, with the same thread count everywhere.

The limit is measured, not assumed: a STREAM-like copy and add with NumPy on one thread, at
each configuration's working-set size and far beyond the last-level cache. Each BN call must
at least read x and write y (plus read g and write dx for the backward); achieved GB/s over the
median time, as a fraction of the measured bandwidth, says how close an adapter gets.

Records (``kind: "benchmark"`` and ``kind: "bandwidth"``, after a ``header``) go to
``reports/<env>/bench.jsonl`` and merge in ``bnparity report`` like parity results.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import statistics
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import reference
from harness.adapters.base import Adapter, BenchHooks, Conventions, discover, load_spec
from harness.cases import Case
from harness.inputs import build, np_dtype
from harness.results import ResultsWriter, header
from harness.schema import Bandwidth, Benchmark, BenchStatus

MODES = ("train_fwd", "train_fwd_bwd", "eval_fwd")
TARGET_CV = 0.03


# -- timing ------------------------------------------------------------------------

def _autorange(fn: Callable[[], Any], floor_s: float = 2e-3) -> int:
    """Calls per sample so that one sample lasts at least ``floor_s`` (timer resolution)."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 >= floor_s or n >= 1 << 16:
            return n
        n *= 2


def measure(fn: Callable[[], Any], budget_s: float, min_reps: int = 10) -> dict[str, Any]:
    """Warm up until compilation and caches are done, then sample until CV <= 3% or the budget ends."""
    warm_t0 = time.perf_counter()
    prev = None
    for _ in range(50):  # warm-up: until two consecutive calls agree within 20%
        t0 = time.perf_counter()
        fn()
        t = time.perf_counter() - t0
        if prev is not None and abs(t - prev) <= 0.2 * max(t, prev):
            break
        prev = t
        if time.perf_counter() - warm_t0 > max(budget_s, 30.0):
            break
    warmup_s = time.perf_counter() - warm_t0
    number = _autorange(fn)
    samples: list[float] = []
    t_start = time.perf_counter()
    cv = math.inf
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
        if len(samples) >= min_reps:
            cv = statistics.pstdev(samples) / statistics.fmean(samples)
            if cv <= TARGET_CV or time.perf_counter() - t_start > budget_s:
                break
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return {"median_s": float(med), "min_s": float(min(samples)), "q1_s": float(q1), "q3_s": float(q3),
            "reps": len(samples) * number, "samples": len(samples), "cv": float(cv),
            "stable": bool(cv <= TARGET_CV), "warmup_s": warmup_s}


# -- the machine's limit ------------------------------------------------------------

def llc_bytes() -> int | None:
    """The largest cache the OS reports (may be huge on a VM: only used to pick sizes)."""
    best = None
    for p in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = p.read_text().strip()
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        val = int(text.rstrip("KMG")) * mult
        best = max(best or 0, val)
    return best


def bandwidth(nbytes: int, budget_s: float = 0.5, trials: int = 3) -> dict[str, float]:
    """STREAM-like copy (read a, write b) and add (read a, b; write c) on one thread, in GB/s.

    Each trial allocates fresh arrays and takes the median time; the best trial counts. The relative
    placement of the arrays matters (4K aliasing between source and destination): one allocation gave
    a 1 MiB copy of 83 GB/s with a CV of 2%, another 159 GB/s, so a single trial is not the limit.
    """
    n = max(nbytes // 8, 1024)
    item = np.dtype(np.float32).itemsize
    copies, adds = [], []
    for _ in range(trials):
        a, b, c = (np.ones(n, np.float32) for _ in range(3))  # touched, so no page faults are timed
        copies.append(measure(functools.partial(np.copyto, b, a), budget_s / trials))
        adds.append(measure(functools.partial(np.add, a, b, out=c), budget_s / trials))
    copy = min(copies, key=lambda m: m["median_s"])
    add = min(adds, key=lambda m: m["median_s"])
    return {"size_bytes": int(n * item * 2), "copy_gbs": 2 * n * item / copy["median_s"] / 1e9,
            "add_gbs": 3 * n * item / add["median_s"] / 1e9, "copy_cv": copy["cv"], "add_cv": add["cv"],
            "trials": trials, "copy_gbs_trials": [2 * n * item / m["median_s"] / 1e9 for m in copies]}


def min_bytes(shape: tuple[int, ...], dtype: str, mode: str) -> int:
    """Bytes a BN call must move at least: x in, y out (+ g in, dx out for the backward)."""
    n = math.prod(shape) * np_dtype(dtype).itemsize
    return 4 * n if mode == "train_fwd_bwd" else 2 * n


# -- configurations -------------------------------------------------------------------

def load_configs(path: Path, quick: bool) -> list[Case]:
    raw = tomllib.loads(Path(path).read_text())
    out = []
    for cfg in raw.get("config", []):
        if bool(cfg.get("quick")) != quick:
            continue
        for dtype in cfg.get("dtypes", ["float32"]):
            for layout in cfg.get("layouts", ["channels_first"]):
                out.append(Case(name=f"{cfg['name']}.{dtype}.{layout}", shape=tuple(cfg["shape"]), dtype=dtype,
                                layout=layout, steps=1, momentum=0.1, eps=1e-5, tags=(cfg["name"],),
                                description=cfg.get("description", ""), file=str(path)))
    return out


# -- the worker side ------------------------------------------------------------------

def _steady_malloc() -> dict[str, str]:
    """glibc settings every benchmark worker inherits, so freed tensors are reused instead of unmapped.

    By default glibc serves large blocks with mmap and trims the heap on free, so an output buffer of a
    few MB can come back from the kernel on every call and be page-faulted in again: on this VM that made
    the same jitted fwd+bwd take 9 ms in one process and 17-26 ms in another. Keeping blocks up to 32 MiB
    (glibc's largest mmap threshold; the largest configuration's tensor is 25.7 MB) in the heap, and never
    trimming it, times BN rather than the kernel's page faults, for every framework alike. Set before the
    workers are spawned (glibc reads them at start-up); a value already in the environment wins.
    """
    for key, value in (("MALLOC_MMAP_THRESHOLD_", str(32 << 20)), ("MALLOC_TRIM_THRESHOLD_", str(4 << 30))):
        os.environ.setdefault(key, value)
    return {k: os.environ[k] for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}


def _pin_worker() -> list[int]:
    """Pin a one-thread benchmark worker to one CPU, before any framework is imported.

    The thread flags (``BNPARITY_THREADS``, OMP/MKL, XLA's intra-op flags) bound the compute threads, but XLA
    and TF keep helper threads that still spread work over other cores: JAX measured about 1.75 cores busy with
    every flag set. Affinity is the only bound every framework obeys, so with one thread the worker gets one CPU
    (the lowest it may use) and the record says which. With more threads the affinity is left as it is.
    """
    threads = os.environ.get("BNPARITY_THREADS", "1")
    if threads == "1" and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _bench_task(spec: str, cases: list[Case], modes: tuple[str, ...], budget_s: float,
                devices: tuple[str, ...]) -> list[dict[str, Any]]:
    from harness.workers import worker_adapter

    cpus = _pin_worker()  # before the adapter imports its framework
    adapter, _ = worker_adapter(spec)
    rows = []
    for device in devices:
        for case in cases:
            reason = adapter.supports(case)
            data = build(case)
            for variant in adapter.bench_variants:
                for mode in modes:
                    row = {"config": case.tags[0], "case": case.name, "shape": list(case.shape), "dtype": case.dtype,
                           "layout": case.layout, "mode": mode, "variant": variant, "device": device, "cpus": cpus}
                    if reason:
                        rows.append({**row, "status": BenchStatus.SKIP, "reason": reason})
                        continue
                    try:
                        fn = adapter.bench_callable(case, data, mode, variant, device)
                        if fn is None:
                            rows.append({**row, "status": BenchStatus.SKIP, "reason": f"{variant} {mode} not offered"})
                            continue
                        rows.append({**row, "status": BenchStatus.OK, **measure(fn, budget_s)})
                    except Exception as e:  # a framework error costs that row only
                        rows.append({**row, "status": BenchStatus.ERROR,
                                     "reason": f"{type(e).__name__}: {str(e)[:300]}"})
    return rows


class NumpyReference(Adapter):
    """A float32 two-pass BN in NumPy: the reference row of the benchmark (not a parity adapter).

    The formulas of ``reference/`` (batch_stats, normalize, update_running with the unbiased stored
    variance, train_backward, eval_forward) in the case's float32 rather than float64, driven by the
    case's momentum and eps. Per-channel factors are formed first (``gamma * inv``), so each full-size
    array is touched as few times as a careful float32 implementation would.
    """

    name = "numpy-ref"
    framework = "numpy"
    conventions = Conventions("weight_of_new", "unbiased", 1e-5, 0.1, "channels_first")
    supports_dtypes = ("float32",)
    bench_variants = ("eager",)

    def bench_devices(self) -> tuple[str, ...]:
        return ()

    def bench_callable(self, case, data, mode, variant, device):
        if device != "cpu" or variant not in self.bench_variants:
            return None
        mapped = self.mapped(case)
        eps, m = np.float32(mapped.eps), np.float32(mapped.momentum)
        x, g = data.x[0], data.g[0]
        ax = mapped.axis % x.ndim
        axes = tuple(i for i in range(x.ndim) if i != ax)
        shape = [1] * x.ndim
        shape[ax] = -1
        gamma, beta = data.gamma.reshape(shape), data.beta.reshape(shape)
        rm, rv = data.running_mean.copy(), data.running_var.copy()
        n = x.size // x.shape[ax]
        bessel = np.float32(reference.bessel_factor(n, self.conventions.running_var_estimator))

        def forward():
            mean = x.mean(axis=axes, keepdims=True)  # batch_stats: two-pass, biased
            xc = x - mean
            var = np.mean(xc * xc, axis=axes, keepdims=True)
            inv = 1 / np.sqrt(var + eps)
            rm[:] = (1 - m) * rm + m * mean.reshape(-1)  # update_running
            rv[:] = (1 - m) * rv + m * (var.reshape(-1) * bessel)
            return xc * (inv * gamma) + beta, xc, inv  # normalize

        def train_fwd():
            return forward()[0], rm, rv

        def train_fwd_bwd():  # train_backward, with mean(v) = sum(v) / n
            y, xc, inv = forward()
            xhat = xc * inv
            dbeta = g.sum(axis=axes, keepdims=True)
            dgamma = (g * xhat).sum(axis=axes, keepdims=True)
            return y, gamma * inv * (g - dbeta / n - xhat * dgamma / n), dgamma, dbeta

        def eval_fwd():  # eval_forward
            return (x - rm.reshape(shape)) * (gamma / np.sqrt(rv.reshape(shape) + eps)) + beta

        return {"train_fwd": train_fwd, "train_fwd_bwd": train_fwd_bwd, "eval_fwd": eval_fwd}[mode]


NUMPY_REF = NumpyReference()


# -- the command ----------------------------------------------------------------------

class Progress:
    """One line per configuration within an adapter: rows done of the total, time spent and left.

    The time left is the time per row so far times the rows to go (configurations differ in size,
    so it is an estimate, and says so with '~')."""

    def __init__(self, name: str, total: int, out: Any = None):
        self.name, self.total, self.rows = name, total, 0
        self.out = out if out is not None else sys.stdout
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def done(self, rows: int, what: str) -> str:
        self.rows = min(self.rows + rows, self.total)
        spent = self.elapsed()
        left = spent / self.rows * (self.total - self.rows) if self.rows else 0.0
        line = (f"{self.name}: {self.rows}/{self.total} rows ({what}), {_duration(spent)} spent, "
                f"~{_duration(left)} left")
        print(line, file=self.out, flush=True)
        return line


def _duration(s: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'."""
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bnparity bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapters", default="", help="comma-separated adapter names (default: all that offer bench)")
    ap.add_argument("--quick", action="store_true", help="one small configuration, a short budget")
    ap.add_argument("--config", default="cases/bench.toml")
    ap.add_argument("--budget", type=float, default=None, help="seconds of sampling per row (default 1.0; quick 0.05)")
    ap.add_argument("--env", default=os.environ.get("BNPARITY_ENV", "local"))
    ap.add_argument("--out", default=None, help="default: reports/<env>/bench.jsonl")
    ap.add_argument("--threads", default="1", help="intra-op threads for every framework (default 1)")
    args = ap.parse_args(argv)
    budget = args.budget if args.budget is not None else (0.05 if args.quick else 1.0)
    cases = load_configs(Path(args.config), args.quick)
    specs = {"numpy-ref": "harness.bench:NUMPY_REF", **discover()}
    wanted = [a for a in args.adapters.split(",") if a] or list(specs)
    out = Path(args.out or Path("reports") / args.env / "bench.jsonl")
    from harness.workers import Workers

    adapters = {}
    for name in wanted:
        if name not in specs:
            print(f"bnparity bench: unknown adapter {name!r}; known: {sorted(specs)}", file=sys.stderr)
            return 2
        try:
            adapters[name] = load_spec(specs[name])
        except Exception as e:
            print(f"{name}: cannot load ({e})")
    versions = {}
    for a in adapters.values():
        versions.update(a.versions())
    versions["numpy"] = np.__version__
    malloc = _steady_malloc()
    writer = ResultsWriter(out, header(args.env, versions, "", mode="bench", threads=args.threads,
                                       machine=_machine(args.threads), malloc=malloc))
    sizes = sorted({min_bytes(c.shape, c.dtype, "train_fwd") for c in cases})
    llc = llc_bytes() or 32 << 20
    big = min(max(8 * llc, 256 << 20), 2 << 30)
    bws: list[dict[str, Any]] = []
    for size in [*sizes, big]:
        bw = bandwidth(size, 0.2 if args.quick else 0.5)
        bws.append(bw)
        writer.write([Bandwidth(**bw, env=args.env, threads=args.threads, beyond_llc=size == big,
                                llc_reported_bytes=llc)])
        print(f"bandwidth at {bw['size_bytes'] / 2**20:8.1f} MiB: copy {bw['copy_gbs']:6.1f} GB/s, "
              f"add {bw['add_gbs']:6.1f} GB/s{'  (beyond the LLC)' if size == big else ''}")
    workers = Workers(out.parent / "logs", threads=args.threads)
    try:
        for name, adapter in adapters.items():
            reason = adapter.available() or (None if isinstance(adapter, BenchHooks) else "no bench_callable")
            if not reason and not adapter.bench_variants:  # (no worker started to time nothing)
                source = getattr(adapter, "source", None) or "its eager adapter"
                reason = f"no bench variant: it runs the BN of {source} on another path, and bnparity bench times that"
            if reason:
                writer.write([Benchmark(env=args.env, adapter=name, status=BenchStatus.SKIP, reason=reason)])
                print(f"{name}: skip ({reason})")
                continue
            devices = ("cpu", *adapter.bench_devices())
            progress = Progress(name, len(devices) * len(cases) * len(adapter.bench_variants) * len(MODES))
            rows: list[dict[str, Any]] = []
            for device in devices:
                for case in cases:  # one call per configuration, so that progress shows within an adapter
                    try:
                        got = workers.call(name, specs[name], adapter.worker_env, _bench_task,
                                           (specs[name], [case], MODES, budget, (device,)), timeout=3600)
                    except Exception as e:  # a dead or stuck worker costs this configuration; the next gets a new one
                        got = [{"config": case.tags[0], "case": case.name, "device": device,
                                "status": BenchStatus.ERROR, "reason": f"worker: {type(e).__name__}: {e}"}]
                    for r in got:
                        if r.get("status") == BenchStatus.OK:
                            _bandwidth_fields(r, bws)
                    writer.write([Benchmark(**r, env=args.env, adapter=name, framework=adapter.framework,
                                            framework_version=adapter.framework_version(), threads=args.threads)
                                  for r in got])
                    rows += got
                    progress.done(len(adapter.bench_variants) * len(MODES), f"{case.name} on {device}")
            ok = [r for r in rows if r.get("status") == BenchStatus.OK]
            print(f"{name}: {len(ok)} rows timed, {len(rows) - len(ok)} skipped/failed, "
                  f"{progress.elapsed():.1f} s", flush=True)
    finally:
        workers.close()
        writer.finish("complete")
    print(f"results: {out}")
    return 0


def _bandwidth_fields(r: dict[str, Any], bws: list[dict[str, Any]]) -> None:
    """Achieved GB/s, and its fraction of the copy bandwidth measured nearest the working set and beyond the LLC."""
    nbytes = min_bytes(tuple(r["shape"]), r["dtype"], r["mode"])
    r["bytes"] = nbytes
    r["gbs"] = nbytes / r["median_s"] / 1e9
    near = min(bws, key=lambda b: abs(math.log(b["size_bytes"]) - math.log(max(nbytes, 1))))
    far = max(bws, key=lambda b: b["size_bytes"])
    r["bw_fraction"] = r["gbs"] / near["copy_gbs"]
    r["bw_fraction_dram"] = r["gbs"] / far["copy_gbs"]


def _machine(threads: str) -> dict[str, Any]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "threads_used": threads, "memory_bytes": mem,
            "llc_reported_bytes": llc_bytes()}


if __name__ == "__main__":
    sys.exit(main())
