"""How long does ``bnparity report`` take, how much memory, and how big is the page, for a large merged run?

Fabricates results (``tests/report_sample.py``: made-up metrics on the real catalogue's cases, 3
training steps each) for 12 adapters x 4 environments, with renamed copies of cases until the
files hold about ``--records`` result records, then runs ``bnparity report`` on them in a fresh
process, twice: first with an empty cache (every figure drawn, every oracle gap computed), then
again (both read back from the cache, as on a re-render of unchanged results). Prints per run the
wall time, the CPU time (user + system: on a machine that other work shares, the steadier figure),
the peak resident memory, the HTML size and how much of it is the data (and of that the records'
planes). ``--results DIR`` measures existing results files instead (real runs: ``reports/``).

    python benchmarks/bench_report.py [--records 100000] [--keep DIR] [--results DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ENVS = ["current", "tf215", "keras30", "flax08"]
# the report in a fresh process: what ``bnparity report`` costs, start-up and imports included
_CHILD = """
import json, resource, sys
from harness.report.cli import main
rc = main(sys.argv[1:])
u = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rc": rc, "peak_mb": u.ru_maxrss / 1024, "cpu_s": u.ru_utime + u.ru_stime}))
"""


def fabricate(out: Path, records: int) -> list[Path]:
    """Results files of about ``records`` result records (4 environments x 12 adapters)."""
    from harness.cases import load_cases
    from tests.report_sample import ADAPTERS, synthetic

    cases = [c.model_copy(update={"steps": 3}) for c in load_cases([REPO / "cases"])]
    per_case = 23 * len(ADAPTERS) * len(ENVS)  # ~23 records a cell: 6 quantities x 3 steps, eval, outcome, less skips
    n = max(1, math.ceil(records / per_case))
    chosen = [c if i < len(cases) else c.model_copy(update={"name": f"{c.name}_copy{i // len(cases)}"})
              for i in range(n) for c in [cases[i % len(cases)]]]
    return synthetic(out, ENVS, ADAPTERS, cases=chosen)


def measure(paths: list[Path], html: Path, label: str) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _CHILD, *map(str, paths), "-o", str(html)], cwd=REPO,
                       capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    got = json.loads(p.stdout.strip().splitlines()[-1])
    summary = next((ln for ln in p.stdout.splitlines() if ln.startswith("wrote")), "")
    size = html.stat().st_size
    data = _data_size(html)
    print(f"  {label}: {wall:.2f} s ({got['cpu_s']:.2f} s CPU), peak {got['peak_mb']:.0f} MB, "
          f"HTML {size / 1e6:.2f} MB, {data}  ({summary})", flush=True)
    return {"wall_s": wall, "cpu_s": got["cpu_s"], "peak_mb": got["peak_mb"], "html_mb": size / 1e6}


def _data_size(html: Path) -> str:
    """How much of the page is its data, and of that the records' planes (``harness/report/packed.py``)."""
    text = html.read_text(encoding="utf-8")
    m = re.search(r'id="bn-data" data-encoding="([^"]+)" data-planes="(\d+)">', text)
    if m is None:
        return "data: not found"
    n = text.index("</script>", m.end()) - m.end()
    return f"data {n / 1e6:.2f} MB ({m.group(1)}; the records' planes {int(m.group(2)) / 1e6:.2f} MB)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000, help="about how many records to fabricate")
    p.add_argument("--results", default=None, metavar="DIR", help="measure these results files instead")
    p.add_argument("--keep", default=None, metavar="DIR", help="write into DIR and keep it (default: a temp dir)")
    args = p.parse_args(argv)
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bnparity-bench-report-"))
    try:
        if args.results:
            paths = [Path(args.results)]
            what = str(args.results)
        else:
            t0 = time.perf_counter()
            paths = fabricate(out / "reports", args.records)
            what = f"{sum(1 for p in paths for _ in open(p)) - len(paths):,} records (fabricated in " \
                   f"{time.perf_counter() - t0:.0f} s)"
        print(f"bnparity report on {what}:", flush=True)
        html = out / "index.html"
        cache = html.parent / ".bnparity-cache"
        shutil.rmtree(cache, ignore_errors=True)
        measure(paths, html, "first render (empty cache)")
        measure(paths, html, "re-render (figures and oracle gaps from the cache)")
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
