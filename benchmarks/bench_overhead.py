"""How much does the harness add to what the frameworks spend?

For each adapter, the default catalogue runs two ways, each in a warm process (framework
imported, one untimed pass so compilation and caches are done), then timed:

* bare: a plain loop calling ``adapter.run(case, data)`` on pre-built inputs, in a subprocess
  with the adapter's environment: the same framework calls, no harness;
* harness: ``run_cell`` for each case through the adapter's worker process, as the pytest plugin
  does: inputs, oracle, transfer, comparison, ledger and records included.

It prints the ratio harness / bare per adapter (goal <= 1.10, imports excluded), and with
``--xdist`` the wall time of the whole parity suite with ``-n 0`` and ``-n 2``.

    python benchmarks/bench_overhead.py [--adapters torch,flax-linen] [--repeat 3] [--xdist]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.adapters.base import discover, load_spec  # noqa: E402
from harness.cases import load_cases  # noqa: E402
from harness.ledger import load_ledger  # noqa: E402
from harness.runner import run_cell  # noqa: E402
from harness.workers import Workers  # noqa: E402

BARE = r"""
import json, os, sys, time
sys.path.insert(0, {repo!r})
from harness import inputs
from harness.adapters.base import load_spec
from harness.cases import load_cases
adapter = load_spec({spec!r})
adapter.setup()
cases = [c for c in load_cases([{cases!r}]) if c.name in {names!r}]
data = {{c.name: inputs.build(c) for c in cases}}
for c in cases:  # warm-up: compilation and caches
    adapter.run(c, data[c.name])
best = None
for _ in range({repeat}):
    t0 = time.perf_counter()
    for c in cases:
        adapter.run(c, data[c.name])
    t = time.perf_counter() - t0
    best = t if best is None else min(best, t)
print(json.dumps({{"bare_s": best}}))
"""


def bare_time(name: str, spec: str, adapter, names: list[str], repeat: int) -> float:
    env = {**os.environ, "BNPARITY_THREADS": "1", "OMP_NUM_THREADS": "1", **adapter.worker_env}
    code = BARE.format(repo=str(REPO), spec=spec, cases=str(REPO / "cases"), names=names, repeat=repeat)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["bare_s"]


def harness_time(name: str, spec: str, adapter, cases, ledger, repeat: int) -> float:
    workers = Workers()
    try:
        for c in cases:  # warm-up: worker start, import, compilation
            run_cell(c, adapter, spec, workers, env="bench", ledger=ledger, timeout=600, repro="")
        best = None
        for _ in range(repeat):
            t0 = time.perf_counter()
            for c in cases:
                run_cell(c, adapter, spec, workers, env="bench", ledger=ledger, timeout=600, repro="")
            t = time.perf_counter() - t0
            best = t if best is None else min(best, t)
        return best
    finally:
        workers.close()


def suite_wall(n: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "tests/parity", "-q", "-p", "no:cacheprovider", "-n", n,
                    "--dist", "loadgroup", "--bnparity-env", f"bench-n{n}"], cwd=REPO, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapters", default="")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--xdist", action="store_true", help="also time the whole parity suite with -n 0 and -n 2")
    args = ap.parse_args()
    specs = discover()
    wanted = [a for a in args.adapters.split(",") if a] or sorted(specs)
    catalogue = load_cases([REPO / "cases"])
    ledger = load_ledger(REPO / "cases" / "known_differences.toml")
    print(f"{'adapter':22s} {'cases':>5s} {'bare s':>8s} {'harness s':>10s} {'ratio':>6s}  per-case overhead ms")
    for name in wanted:
        try:
            adapter = load_spec(specs[name])
        except Exception as e:
            print(f"{name:22s} could not load: {e}")
            continue
        if adapter.available():
            print(f"{name:22s} skipped: {adapter.available()}")
            continue
        cases = [c for c in catalogue if c.applies_to(name) and not adapter.supports(c)]
        bare = bare_time(name, specs[name], adapter, [c.name for c in cases], args.repeat)
        full = harness_time(name, specs[name], adapter, cases, ledger, args.repeat)
        per_case = 1000 * (full - bare) / max(len(cases), 1)
        print(f"{name:22s} {len(cases):5d} {bare:8.3f} {full:10.3f} {full / bare:6.2f}  {per_case:.1f}")
    if args.xdist:
        w0, w2 = suite_wall("0"), suite_wall("2")
        print(f"whole parity suite: -n 0 {w0:.1f} s, -n 2 {w2:.1f} s, speed-up {w0 / w2:.2f}x")


if __name__ == "__main__":
    main()
