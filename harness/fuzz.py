"""``bnparity fuzz``: search the case space for unexplained differences and shrink each to a ready case.

Hypothesis draws cases (rank 2 to 5 with small shapes, layout or a middle channel axis, dtype and precision policy,
input distributions with offsets, spreads, heavy tails, constant channels and planted NaN/Inf, eps, momentum, steps
or a sequence of train, eval and frozen calls, virtual batches, the affine (gamma and beta apart) and tracking
flags, parameters and initial running statistics) and runs each through the same workers, oracle, comparison and
ledger as the parity suite (``harness.runner.run_cell``). A *finding* is a record that fails a run (``fail``,
``raised``, ``crashed``, ``timeout``): ``pass``, ``weak``, ``known``, ``skip`` and ``expected-raise`` are not. The
search is steered toward large error/bound and weak ratios with ``hypothesis.target``, and Hypothesis shrinks each
finding to a minimal case. Findings are grouped by their signature (adapter, quantity, verdict and kind of
difference, or the exception type): one mechanism is reported once, with its smallest case.

Each finding is written to the output folder as a ready TOML case (loaded back by the case loader, tagged
``fuzz``, with the seed and the framework versions in its description), the reproducer script
(``bnparity repro``'s) and the message; ``results.jsonl`` there holds the findings' records, so
``bnparity report <folder>`` shows them like any environment, grouped by signature. Hypothesis's example
database (``--db``, in the tox environment by default) makes a re-run replay earlier findings first; a
fixed ``--seed`` gives a reproducible search.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.adapters.base import Broken, discover, load_spec
from harness.cases import Case, CaseError, load_file
from harness.ledger import Entry, load_ledger
from harness.schema import Result
from harness.workers import Workers

MAX_ELEMENTS = 4096  # per batch: small enough for many examples a minute, large enough for every layout
LOCS = (0.0, 0.5, -1.0, 3.0, -20.0, 100.0, -1e3, 3e3, 1e4, -5e4, 2e5)
SCALES = (1.0, 1e-3, 0.01, 0.1, 0.5, 2.0, 10.0, 300.0)
EPS = (1e-5, 0.0, 1e-8, 1e-6, 1e-3, 0.1)
MOMENTA = (0.1, 0.0, 0.01, 0.5, 0.9, 1.0, "cumulative")


def case_bodies():
    """A Hypothesis strategy of case tables (what a ``[[case]]`` holds, without its name)."""
    from hypothesis import strategies as st

    @st.composite
    def body(draw) -> dict[str, Any]:
        rank = draw(st.integers(2, 5))
        n = draw(st.integers(1, 16))
        c = draw(st.integers(1, 4))
        spatial = [draw(st.integers(1, 4)) for _ in range(rank - 2)]
        shape = [n, c, *spatial]
        while math.prod(shape) > MAX_ELEMENTS:
            shape[0] = max(1, shape[0] // 2)
        dtype = draw(st.sampled_from(("float32", "float16", "bfloat16", "float64")))
        out: dict[str, Any] = {"shape": shape, "dtype": dtype, "seed": draw(st.integers(0, 2**16))}
        if dtype in ("float16", "bfloat16"):
            policy = draw(st.sampled_from((None, "pure", "mixed")))
            if policy:
                out["precision"] = policy
        if rank > 3 and draw(st.integers(0, 4)) == 0:  # the channels at a middle axis
            out["axis"] = draw(st.sampled_from([k for k in range(2, rank - 1)] + [-k for k in range(2, rank - 1)]))
        elif rank > 2 or draw(st.booleans()):
            out["layout"] = draw(st.sampled_from(("channels_first", "channels_last")))
        loc = draw(st.sampled_from(LOCS))
        if dtype == "float16":
            loc = max(-3e3, min(3e3, loc))  # float16 holds values up to 65504: the offset, not the overflow
        scale = draw(st.sampled_from(SCALES))
        kind = draw(st.sampled_from(("normal", "uniform", "student_t", "constant", "ramp")))
        out["input"] = {
            "normal": {"kind": "normal", "loc": loc, "scale": scale},
            "uniform": {"kind": "uniform", "low": loc - scale, "high": loc + scale},
            "student_t": {"kind": "student_t", "df": draw(st.sampled_from((1.5, 3.0, 10.0))), "loc": loc,
                          "scale": scale},
            "constant": {"kind": "constant", "value": loc},
            "ramp": {"kind": "ramp", "start": loc - scale, "stop": loc + scale},
        }[kind]
        if c > 1 and draw(st.integers(0, 4)) == 0:  # one constant channel
            out["channel_overrides"] = [{"channels": [draw(st.integers(0, c - 1))],
                                         "input": {"kind": "constant", "value": draw(st.sampled_from(LOCS))}}]
        if draw(st.integers(0, 9)) == 0:  # a non-finite value at a chosen place
            out["specials"] = [{"value": draw(st.sampled_from(("nan", "inf", "-inf"))),
                                "index": [draw(st.integers(0, d - 1)) for d in shape]}]
        out["eps"] = draw(st.sampled_from(EPS))
        out["momentum"] = draw(st.sampled_from(MOMENTA))
        out["affine"] = draw(st.booleans()) or draw(st.booleans())
        if out["affine"] and draw(st.integers(0, 4)) == 0:  # gamma or beta alone
            out[draw(st.sampled_from(("scale", "center")))] = False
        out["track_running_stats"] = out["momentum"] == "cumulative" or draw(st.integers(0, 5)) > 0
        if draw(st.integers(0, 3)) == 0:  # a training loop's sequence: eval calls between and after training calls
            out["calls"] = draw(st.lists(st.sampled_from(("train", "eval", "frozen")), min_size=1, max_size=6))
        else:
            out["steps"] = draw(st.integers(0 if out["track_running_stats"] else 1, 4))
        if draw(st.integers(0, 3)) == 0:
            out["gamma"] = {"kind": "uniform", "low": draw(st.sampled_from((-2.0, 0.0, 0.5))), "high": 2.0}
        if draw(st.integers(0, 3)) == 0:
            out["running_mean"] = {"kind": "normal", "loc": draw(st.sampled_from(LOCS)), "scale": 1.0}
            out["running_var"] = {"kind": "uniform", "low": 0.0, "high": draw(st.sampled_from((1.0, 10.0, 1e4)))}
        if draw(st.integers(0, 3)) == 0:
            out["grad"] = {"kind": "normal", "loc": draw(st.sampled_from((0.0, 3.0, -50.0))),
                           "scale": draw(st.sampled_from((1.0, 0.01, 100.0)))}
        if out["track_running_stats"] and out["momentum"] != "cumulative" and draw(st.integers(0, 4)) == 0:
            n = shape[0]  # virtual batches (ghost BN): a divisor of N, the only split the oracle defines
            out["virtual_batch_size"] = draw(st.sampled_from([v for v in range(1, n + 1) if n % v == 0]))
        return out

    return body()


def to_case(body: dict[str, Any], name: str = "fuzz", description: str = "") -> Case:
    """The validated case of a drawn table (the case model checks it as it checks a file)."""
    return Case.model_validate({**body, "name": name, "tags": ["fuzz"], "description": description})


@dataclass
class Finding:
    """One signature: what differs, where, and the smallest case that shows it."""

    signature: str
    adapter: str
    body: dict[str, Any]
    records: list[Any]
    message: str
    ratio: float | None = None
    seen: int = 1
    size: int = field(default=0)


def root(failing: list[Result]) -> Result:
    """Where a failure starts: the outcome if the call itself failed, else the earliest failing quantity in the
    order the computation runs (the calls in order; within a call the batch statistics, y, then the
    gradients). What fails after it usually follows from it (a wrong running mean makes every eval output
    wrong), so the root names the mechanism."""
    from harness.report.model import result_order

    outcome = [r for r in failing if r.quantity is None or r.quantity == "outcome"]
    return outcome[0] if outcome else min(failing, key=result_order)


def signature(r: Result) -> str:
    """What a failing record says about its mechanism: adapter, quantity (train or eval), verdict and the kind of
    difference, or the exception type of an outcome."""
    if r.quantity is None or r.quantity == "outcome":
        what = r.exception_type or r.verdict.value
        return f"{r.adapter}.outcome.{r.verdict.value}.{re.sub(r'[^A-Za-z0-9_]', '_', what)}"
    return f"{r.adapter}.{r.quantity.value}.{r.verdict.value}.{(r.mismatch_kind or 'value')}"


def _log_ratio(v: float | None) -> float:
    if v is None or not math.isfinite(v) or v <= 0:
        return 0.0
    return math.log10(v)


class Search:
    """The fuzz loop for one adapter: Hypothesis drives, ``run_cell`` judges, findings are kept per signature."""

    def __init__(self, name: str, adapter: Any, spec: str, workers: Workers, ledger: list[Entry], timeout: float):
        self.name, self.adapter, self.spec = name, adapter, spec
        self.workers, self.ledger, self.timeout = workers, ledger, timeout
        self.findings: dict[str, Finding] = {}
        self.shrunk: set[str] = set()  # signatures already shrunk in an earlier round: counted, not searched again
        self.examples = 0
        self.deadline = math.inf

    def judge(self, body: dict[str, Any]) -> tuple[list[Result], list[Any]]:
        from harness.runner import run_cell

        case = to_case(body)
        res = run_cell(case, self.adapter, self.spec, self.workers, env="fuzz", ledger=self.ledger,
                       timeout=self.timeout, repro="")
        results = [r for r in res.records if isinstance(r, Result)]
        return results, res.records

    def check(self, body: dict[str, Any]) -> None:
        """The property Hypothesis tests: no finding. Raises a class per signature of the failure's root, so that
        Hypothesis shrinks each mechanism apart (``report_multiple_bugs``)."""
        from hypothesis import target

        if time.monotonic() > self.deadline:
            return  # out of time: the remaining examples pass unexamined
        self.examples += 1
        results, records = self.judge(body)
        target(max((_log_ratio(r.error_ratio) for r in results), default=0.0), label="log10 error/bound")
        target(max((_log_ratio(r.weak_ratio) for r in results), default=0.0), label="log10 weak ratio")
        failing = [r for r in results if r.verdict.fails_run]
        if not failing:
            return
        first = root(failing)
        sig = signature(first)
        if sig in self.shrunk:  # found and shrunk before: the search goes on for other mechanisms
            self.findings[sig].seen += 1
            return
        size = math.prod(body["shape"]) * max(len(body["calls"]) if "calls" in body else body.get("steps", 1), 1)
        old = self.findings.get(sig)
        if old is None or size <= old.size:  # the last of equal size is Hypothesis's shrunk example
            self.findings[sig] = Finding(sig, self.name, dict(body), records, first.message, first.error_ratio,
                                         (old.seen + 1) if old else 1, size)
        else:
            old.seen += 1
        raise _finding_class(sig)(f"{len(failing)} failing records, starting at {sig}")

    def run(self, max_examples: int, seed: int, db: Path | None, deadline: float) -> None:
        from hypothesis import HealthCheck, Phase, Verbosity, given, settings
        from hypothesis import seed as hseed
        from hypothesis.database import DirectoryBasedExampleDatabase

        self.deadline = deadline

        @settings(max_examples=max_examples, deadline=None, derandomize=False, report_multiple_bugs=True,
                  database=DirectoryBasedExampleDatabase(str(db / self.name)) if db else None,
                  verbosity=Verbosity.quiet,
                  phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
                  suppress_health_check=list(HealthCheck), print_blob=False)
        @hseed(seed)
        @given(case_bodies())
        def search(body):
            self.check(body)

        try:
            search()
        except BaseException as e:  # the findings (one exception, or a group of them) are kept in self.findings
            if isinstance(e, KeyboardInterrupt):
                raise
        self.shrunk |= set(self.findings)


_CLASSES: dict[str, type] = {}


def _finding_class(sig: str) -> type:
    """One exception class per signature (Hypothesis tells failures apart by their type, and shrinks each)."""
    if sig not in _CLASSES:
        _CLASSES[sig] = type("Finding_" + re.sub(r"\W", "_", sig), (AssertionError,), {})
    return _CLASSES[sig]


def write_findings(findings: list[Finding], out: Path, seed: int, versions: dict[str, dict[str, str]]) -> list[Path]:
    """Each finding as ``<out>/<signature>/case.toml`` (loaded back through the case loader), ``repro.py`` and
    ``message.txt``; ``<out>/results.jsonl`` holds their records. Returns the case files."""
    import tomli_w

    from harness import repro
    from harness.results import ResultsWriter, header
    from harness.schema import Cell

    out.mkdir(parents=True, exist_ok=True)
    env_versions = {k: v for vs in versions.values() for k, v in vs.items()}
    writer = ResultsWriter(out / "results.jsonl", header("fuzz", env_versions, "", mode="parity",
                                                         argv=sys.argv[1:], adapters=sorted(versions)))
    paths = []
    for f in sorted(findings, key=lambda f: f.signature):
        name = "fuzz_" + re.sub(r"[^A-Za-z0-9_]", "_", f.signature)
        vers = ", ".join(f"{k} {v}" for k, v in versions.get(f.adapter, {}).items())
        tag = re.sub(r"[^A-Za-z0-9_.+]", "_", f.signature)
        desc = (f"bnparity fuzz finding {f.signature} (seed {seed}; {vers}; seen in {f.seen} example(s)): "
                f"{f.message.splitlines()[0] if f.message else ''}")
        body = {**f.body, "name": name, "description": desc, "tags": ["fuzz", tag],
                "adapters": [f.adapter]}
        folder = out / name
        folder.mkdir(exist_ok=True)
        path = folder / "case.toml"
        path.write_text(tomli_w.dumps({"case": [body]}))
        (case,) = load_file(path)  # the finding is a ready case: the loader accepts it as written
        (folder / "repro.py").write_text(repro.script(case, f.adapter))
        (folder / "message.txt").write_text(f.message + "\n")
        recs = []
        for r in f.records:
            r = r.model_copy(update={"case": name, "env": "fuzz"})
            if isinstance(r, Cell):
                r = r.model_copy(update={"case_params": case.summary(), "tags": list(case.tags), "file": str(path)})
            recs.append(r)
        writer.write(recs)
        paths.append(path)
    writer.finish("complete")
    return paths


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bnparity fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--adapters", default=None, help="comma-separated adapter names or globs (default: all)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--max-examples", type=int, default=None, help="examples per adapter (default 100)")
    budget.add_argument("--minutes", type=float, default=None, help="wall-clock budget per adapter")
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed (a fixed seed gives a reproducible run)")
    p.add_argument("--out", default="reports/fuzz", help="findings folder (default reports/fuzz)")
    p.add_argument("--ledger", default="cases/known_differences.toml", help="the ledger of known differences")
    p.add_argument("--db", default=os.environ.get("BNPARITY_FUZZ_DB", ".hypothesis/bnparity-fuzz"),
                   help="Hypothesis example database ($BNPARITY_FUZZ_DB; 'none' for none)")
    p.add_argument("--case-timeout", type=float, default=120.0, help="per-example time limit in a worker")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import fnmatch

    try:
        ledger = load_ledger(Path(args.ledger)) if args.ledger else []
    except CaseError as e:
        print(e, file=sys.stderr)
        return 2
    specs = discover()
    wanted = [w.strip() for w in (args.adapters or "*").split(",") if w.strip()]
    names = sorted(n for n in specs if any(fnmatch.fnmatchcase(n, w) for w in wanted))
    if not names:
        print(f"bnparity fuzz: no adapter matches {args.adapters!r} (registered: {', '.join(sorted(specs))})",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    workers = Workers(out / "logs", in_process=args.in_process, max_live=2)
    db = None if args.db == "none" else Path(args.db)
    findings: list[Finding] = []
    versions: dict[str, dict[str, str]] = {}
    try:
        for name in names:
            adapter = load_spec(specs[name])
            why = adapter.available()
            if why or isinstance(adapter, Broken):
                print(f"{name}: skipped ({why})")
                continue
            versions[name] = adapter.versions()
            s = Search(name, adapter, specs[name], workers, ledger, args.case_timeout)
            t0 = time.monotonic()
            if args.minutes is not None:
                deadline = t0 + 60 * args.minutes
                chunk = 0
                while time.monotonic() < deadline:  # rounds of fresh seeds until the budget is spent; a round
                    # shrinks what it finds, later rounds count those signatures and search for others
                    s.run(200, args.seed + chunk, db, deadline)
                    chunk += 1
            else:
                s.run(args.max_examples or 100, args.seed, db, math.inf)
            print(f"{name}: {s.examples} examples in {time.monotonic() - t0:.0f} s, "
                  f"{len(s.findings)} finding(s)" + "".join(f"\n  {f.signature} (seen {f.seen}x, ratio "
                                                           f"{f.ratio if f.ratio is not None else '-'})"
                                                           for f in s.findings.values()))
            findings += s.findings.values()
    finally:
        workers.close()
    paths = write_findings(findings, out, args.seed, versions)
    print(f"{len(findings)} finding(s) in {out}" + "".join(f"\n  {p}" for p in paths))
    return 1 if findings else 0
