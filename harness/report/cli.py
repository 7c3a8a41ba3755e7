"""``bnparity report``: render results files into one self-contained HTML report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.report import paths as paths_view
from harness.report import replicas as replicas_view
from harness.report.families import families, markdown
from harness.report.page import write
from harness.report.views import DEFAULT_BASELINE
from harness.schema import SchemaError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bnparity report",
                                description="Render results files into one self-contained HTML report.")
    p.add_argument("paths", nargs="+", metavar="DIR_OR_FILE",
                   help="results.jsonl files, or folders holding them (DIR/results.jsonl or DIR/*/results.jsonl)")
    p.add_argument("-o", "--output", default="reports/index.html", metavar="FILE",
                   help="where the HTML goes (default: reports/index.html)")
    p.add_argument("--compress", choices=("auto", "yes", "no"), default="auto",
                   help="gzip the embedded detail data (auto: only when it is large)")
    p.add_argument("--no-plots", action="store_true",
                   help="leave out the figures (no matplotlib needed); the benchmark's tables stay")
    p.add_argument("--plot-cache", default=None, metavar="DIR",
                   help="where figures (and the portability view's oracle gaps) are cached by content, so that a "
                        "re-render of unchanged results draws and recomputes nothing (default: .bnparity-cache/plots "
                        "beside the output)")
    p.add_argument("--no-plot-cache", action="store_true",
                   help="draw every figure and recompute every oracle gap, keep none")
    p.add_argument("--baseline", default=DEFAULT_BASELINE, metavar="ADAPTER",
                   help=f"the adapter the defaults-vs-defaults view compares the others with (default: "
                        f"{DEFAULT_BASELINE})")
    p.add_argument("--families", default=None, metavar="FILE",
                   help="also write the Families view as Markdown tables (one per family and environment) to FILE")
    p.add_argument("--paths", default=None, metavar="FILE", dest="paths_md",
                   help="also write the Paths view (each eager adapter beside its compiled, graph, exported and "
                        "converted paths) as Markdown tables to FILE")
    p.add_argument("--replicas", default=None, metavar="FILE",
                   help="also write the data-parallel view (per case configuration and framework, sync on and off "
                        "side by side, with the running statistics kept and the cost) as Markdown tables to FILE")
    args = p.parse_args(argv)
    compress = {"auto": None, "yes": True, "no": False}[args.compress]
    try:
        cache = False if args.no_plot_cache else (args.plot_cache or True)
        done = write(args.paths, args.output, compress=compress, plots=not args.no_plots, baseline=args.baseline,
                     plot_cache=cache)
    except (FileNotFoundError, SchemaError) as e:
        print(f"bnparity report: {e}", file=sys.stderr)
        return 2
    m = done.model
    partial = [e.key for e in m.envs if e.partial]
    print(f"wrote {done.path} ({done.chars / 1e6:.2f} MB): {len(m.envs)} environment(s), {len(m.cases)} cases, "
          f"{len(m.cells)} cells" + (f"; PARTIAL: {', '.join(partial)}" if partial else ""))
    if args.families:
        Path(args.families).write_text(markdown(families(m)))
        print(f"wrote {args.families}: the Families view as Markdown")
    if args.paths_md:
        Path(args.paths_md).write_text(paths_view.markdown(paths_view.path_groups(m)))
        print(f"wrote {args.paths_md}: the Paths view as Markdown")
    if args.replicas:
        Path(args.replicas).write_text(replicas_view.markdown(replicas_view.replica_rows(m)))
        print(f"wrote {args.replicas}: the data-parallel view (sync on and off side by side) as Markdown")
    skipped = [s for e in m.envs for s in e.skipped]
    if skipped:
        print(f"bnparity report: {len(skipped)} damaged line(s) left out (the page lists them):", file=sys.stderr)
        for s in skipped[:20]:
            print(f"  {s}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
