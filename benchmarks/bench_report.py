"""How long does the HTML report take, and how big is it, for a large merged run?

Fabricates results (``tests/report_sample.py``: made-up metrics on the real catalogue's cases)
for 12 adapters x 4 environments, with renamed copies of cases until the files hold at least
100,000 records, then times ``render_paths`` (load, oracle gaps, plots, template) and prints
the time and the HTML size. A second figure is the issue's sizing target: ~60 cases x 12
adapters x 4 environments with the catalogue's own step counts.

    python benchmarks/bench_report.py [--records 100000] [--repeat 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.cases import load_cases  # noqa: E402
from harness.report import render_paths  # noqa: E402
from harness.results import read  # noqa: E402
from tests.report_sample import ADAPTERS, synthetic  # noqa: E402

ENVS = ["current", "tf215", "keras30", "flax08"]


def records_in(paths: list[Path]) -> int:
    return sum(len(read(p).records) for p in paths)


def run(label: str, out: Path, cases, repeat: int) -> None:
    paths = synthetic(out / "reports", ENVS, ADAPTERS, cases=cases)
    n = records_in(paths)
    html = out / "index.html"
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        render_paths(paths, html)
        times.append(time.perf_counter() - t0)
    size = html.stat().st_size
    print(f"{label}: {len({c.name for c in cases})} cases x {len(ADAPTERS)} adapters x {len(ENVS)} envs = "
          f"{n:,} records -> render_paths {min(times):.2f} s (best of {repeat}), HTML {size / 1e6:.2f} MB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000, help="about how many records to fabricate")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--keep", default=None, metavar="DIR", help="write into DIR and keep it (default: a temp dir)")
    args = p.parse_args(argv)
    cases = load_cases([REPO / "cases"])
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bnparity-bench-report-"))
    try:
        run("issue sizing", out / "sizing", cases[:60], args.repeat)
        # the catalogue with 3 steps per case, plus renamed copies of its cases up to --records records
        per_cell = 20  # 6 train quantities x 3 steps + eval + outcome + cell, less affine-off cases and skips
        per_case = per_cell * len(ADAPTERS) * len(ENVS)
        big = [c.model_copy(update={"steps": 3}) for c in cases]
        i = 0
        while len(big) * per_case < args.records:
            c = big[i % len(cases)]
            big.append(c.model_copy(update={"name": f"{c.name}_copy{i // len(cases) + 1}"}))
            i += 1
        run(f"{args.records // 1000}k records", out / "large", big, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
