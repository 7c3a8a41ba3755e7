"""The ``bnparity`` command: run, report, repro, cases."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _run(argv: list[str]) -> int:
    import pytest

    here = Path.cwd() / "tests" / "parity"
    if not here.exists():
        print("bnparity run: run it from a bnparity checkout (tests/parity not found here)", file=sys.stderr)
        return 4
    return int(pytest.main([str(here), *argv]))


def _cases(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bnparity cases", description="Validate and list the case catalogue.")
    p.add_argument("paths", nargs="*", default=["cases"])
    p.add_argument("--ledger", default=None,
                   help="also validate this ledger (default: <first path>/known_differences.toml)")
    args = p.parse_args(argv)
    from harness.cases import CaseError, load_cases
    from harness.ledger import load_ledger

    try:
        cases = load_cases(args.paths)
        ledger = load_ledger(Path(args.ledger or Path(args.paths[0]) / "known_differences.toml"))
    except CaseError as e:
        print(e, file=sys.stderr)
        return 2
    for c in cases:
        print(f"{c.name:32s} {c.dtype:9s} {str(list(c.shape)):22s} {','.join(c.tags)}")
    print(f"{len(cases)} cases, {len(ledger)} ledger entries: valid")
    return 0


COMMANDS = {
    "run": ("run the parity suite (pytest tests/parity; extra arguments go to pytest)", _run),
    "report": ("render results files into one HTML report", None),
    "repro": ("print a standalone reproducer script for CASE ADAPTER", None),
    "cases": ("validate and list the case catalogue", _cases),
    "bench": ("benchmark BN speed per adapter", None),
    "fuzz": ("search the case space for unexplained differences; shrink each to a case", None),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: bnparity {" + ",".join(COMMANDS) + "} ...\n")
        for name, (text, _) in COMMANDS.items():
            print(f"  {name:8s} {text}")
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "report":
        from harness.report import cli

        return int(cli.main(rest) or 0)
    if cmd == "repro":
        from harness import repro

        return int(repro.main(rest) or 0)
    if cmd == "fuzz":
        from harness import fuzz

        return int(fuzz.main(rest) or 0)
    if cmd == "bench":
        from harness import bench

        return int(bench.main(rest) or 0)
    return COMMANDS[cmd][1](rest)


if __name__ == "__main__":
    sys.exit(main())
