"""pytest plugin: options, parametrization over cases x adapters, results streaming, summary.

Hooks and options only; the state lives in ``config.stash``. Under
pytest-xdist each worker runs cells and attaches their records to the test
report; only the controller writes ``results.jsonl``, so nothing is lost or
written twice.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import signal
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from harness import __version__
from harness.adapters.base import Broken, discover, load_spec
from harness.cases import CaseError, cases_hash, load_cases
from harness.ledger import load_ledger
from harness.results import ResultsWriter, header
from harness.runner import run_cell
from harness.schema import Cell, Result, Verdict, dumps, parse
from harness.workers import DEFAULT_TIMEOUT, Workers

RECORD_KEY = "bnparity_records"
CELL_ID = re.compile(r"\[(.+)-[^-\]]+\]$")  # test_parity[ADAPTER-CASE]; case names have no '-'


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("bnparity", "BatchNorm parity")
    g.addoption("--cases", action="append", default=None, metavar="PATH",
                help="case file or folder (repeatable; default: <rootdir>/cases)")
    g.addoption("--ledger", default=None, metavar="FILE",
                help="known-differences ledger (default: <first cases folder>/known_differences.toml)")
    g.addoption("--adapters", default=None, metavar="A,B",
                help="comma-separated adapter names or globs to run (default: all registered)")
    g.addoption("--bnparity-env", default=None, metavar="NAME",
                help="environment name for results (default: $BNPARITY_ENV or 'local')")
    g.addoption("--results-dir", default=None, metavar="DIR",
                help="where <env>/results.jsonl goes (default: <rootdir>/reports)")
    g.addoption("--case-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                help=f"per-case time limit in a worker (default {DEFAULT_TIMEOUT:g}; a case's `timeout` wins)")
    g.addoption("--in-process", action="store_true",
                help="run adapters in the pytest process (debugging; no crash isolation)")
    g.addoption("--worker-threads", default="1", metavar="N",
                help="intra-op threads per framework worker (default 1: deterministic, no oversubscription)")


class State:
    """Per-process session state (in ``config.stash``)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        root = Path(config.rootpath)
        self.case_paths = [Path(p) for p in (config.getoption("cases") or [root / "cases"])]
        first_dir = next((p for p in self.case_paths if p.is_dir()), root / "cases")
        self.ledger_path = Path(config.getoption("ledger") or first_dir / "known_differences.toml")
        self.env = config.getoption("bnparity_env") or os.environ.get("BNPARITY_ENV", "local")
        self.results_dir = Path(config.getoption("results_dir") or root / "reports") / self.env
        self.timeout = config.getoption("case_timeout")
        self._cases = None
        self._ledger = None
        self._specs: dict[str, str] | None = None
        self.adapters: dict[str, Any] = {}
        self.workers: Workers | None = None
        self.writer: ResultsWriter | None = None
        self.matrix: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self.html: Path | None = None
        self.html_error: str | None = None
        self.cells: list[Cell] = []

    @property
    def cases(self):
        if self._cases is None:
            self._cases = {c.name: c for c in load_cases(self.case_paths)}
        return self._cases

    @property
    def ledger(self):
        if self._ledger is None:
            self._ledger = load_ledger(self.ledger_path)
        return self._ledger

    @property
    def specs(self) -> dict[str, str]:
        if self._specs is None:
            specs = discover()
            wanted = self.config.getoption("adapters")
            if wanted:
                pats = [p.strip() for p in wanted.split(",") if p.strip()]
                unknown = [p for p in pats if not any(fnmatch.fnmatchcase(n, p) for n in specs)]
                if unknown:
                    raise pytest.UsageError(f"--adapters: no adapter matches {unknown}; known: {sorted(specs)}")
                specs = {n: s for n, s in specs.items() if any(fnmatch.fnmatchcase(n, p) for p in pats)}
            self._specs = specs
        return self._specs

    def adapter(self, name: str):
        """The adapter object, or a ``Broken`` stand-in whose every cell is a skip with the load error."""
        if name not in self.adapters:
            try:
                self.adapters[name] = load_spec(self.specs[name])
            except Exception as e:
                self.adapters[name] = Broken(name, f"adapter {self.specs[name]!r} failed to load: "
                                                   f"{type(e).__name__}: {e}")
        return self.adapters[name]

    def get_workers(self) -> Workers:
        if self.workers is None:
            self.workers = Workers(self.results_dir / "logs", self.config.getoption("in_process"),
                                   self.config.getoption("worker_threads"))
        return self.workers


STATE = pytest.StashKey[State]()


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bnparity(*tags): a parity cell, marked with its case tags")
    state = State(config)
    config.stash[STATE] = state
    if not _is_xdist_worker(config):
        config.pluginmanager.register(Controller(state), "bnparity-controller")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bn_cell" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[STATE]
    error = None
    try:
        cases = state.cases
        state.ledger  # noqa: B018 - validate the ledger at collection too
    except CaseError as e:
        error = str(e)
    if error:
        pytest.fail(error, pytrace=False)
    params, ids = [], []
    for name in sorted(state.specs):
        for case in cases.values():
            if case.applies_to(name):
                params.append(pytest.param((case.name, name), marks=[pytest.mark.bnparity(*case.tags)]))
                ids.append(f"{name}-{case.name}")
    metafunc.parametrize("bn_cell", params, ids=ids, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[STATE]
    for item in items:
        cs = getattr(item, "callspec", None)
        if cs and "bn_cell" in cs.params:
            case = state.cases[cs.params["bn_cell"][0]]
            item.extra_keyword_matches.update(case.tags)


class CellUnderTest:
    """What a parity test receives: ``bn_cell.check()`` runs and judges the cell."""

    def __init__(self, request: pytest.FixtureRequest, case_name: str, adapter_name: str):
        self.request = request
        self.state: State = request.config.stash[STATE]
        self.case = self.state.cases[case_name]
        self.adapter_name = adapter_name

    def check(self) -> None:
        st = self.state
        adapter = st.adapter(self.adapter_name)
        repro = f'pytest "{self.request.node.nodeid}"'
        res = run_cell(self.case, adapter, st.specs[self.adapter_name], st.get_workers(), env=st.env,
                       ledger=st.ledger, timeout=st.timeout, repro=repro)
        self.request.node.user_properties.append((RECORD_KEY, json.dumps([dumps(r) for r in res.records])))
        if res.skip_reason:
            pytest.skip(res.skip_reason)
        if res.failures:
            pytest.fail(f"{len(res.failures)} discrepancies in {self.adapter_name} on {self.case.name}:\n\n"
                        + res.failure_text(), pytrace=False)


@pytest.fixture
def bn_cell(request: pytest.FixtureRequest) -> CellUnderTest:
    case_name, adapter_name = request.param
    return CellUnderTest(request, case_name, adapter_name)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash[STATE]
    if state.workers is not None:
        state.workers.close()


class Controller:
    """Runs once, in the process that reports (the xdist controller or the only process)."""

    def __init__(self, state: State):
        self.state = state

    def _writer(self) -> ResultsWriter:
        st = self.state
        if st.writer is None:
            versions = {"bnparity": __version__}
            for name in st.specs:
                try:
                    versions.update(st.adapter(name).versions())
                except Exception as e:  # a broken plugin is reported, not fatal
                    versions[f"{name} (error)"] = str(e)
            import numpy

            versions["numpy"] = numpy.__version__
            try:
                h = cases_hash(st.case_paths)
            except OSError:
                h = ""
            st.writer = ResultsWriter(st.results_dir / "results.jsonl",
                                      header(st.env, versions, h, mode="parity", adapters=sorted(st.specs),
                                             argv=list(st.config.invocation_params.args),
                                             ledger=str(st.ledger_path)))
        return st.writer

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log):
        """``--dist loadgroup`` sends all cells of one adapter to the same xdist worker.

        Each framework is then imported once per run, not once per xdist worker. (xdist's own
        ``xdist_group`` marker cannot do it under pytest 9.2, whose node ids no longer take
        xdist's ``@group`` suffix.)
        """
        if config.getvalue("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadScopeScheduling

        class ByAdapter(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                m = CELL_ID.search(nodeid)
                return f"adapter:{m.group(1)}" if m else nodeid

        return ByAdapter(config, log)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        def _term(signum, frame):  # SIGTERM ends the run like Ctrl-C: records kept, header says so
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, _term)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        st = self.state
        for key, value in report.user_properties:
            if key != RECORD_KEY:
                continue
            records = [parse(line) for line in json.loads(value)]
            self._writer().write(records)
            for r in records:
                if isinstance(r, Result):
                    st.matrix[(r.case, r.adapter)][r.verdict] += 1
                elif isinstance(r, Cell):
                    st.cells.append(r)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        st = self.state
        if st.writer is not None:
            status = "interrupted" if exitstatus == pytest.ExitCode.INTERRUPTED else "complete"
            st.writer.finish(status, exit_status=int(exitstatus), timings=_timings(st))
            _write_html(st)

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int, config: pytest.Config) -> None:
        _summary(self.state, terminalreporter)


def _timings(state: State) -> dict[str, dict[str, float]]:
    """Per adapter: worker starts, import, compile and compute seconds, harness overhead."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for c in state.cells:
        t = out[c.adapter]
        w, info, wall = c.worker, c.info, c.wall_s or 0.0
        t["cells"] += 1
        if "import_s" in w:  # a worker's first case: spawn + import + this case
            t["worker_starts"] += 1
            t["import_s"] += w["import_s"]
            t["startup_s"] += max(wall - w["import_s"] - info.get("compute_s", 0.0), 0.0)
        t["compute_s"] += info.get("compute_s", 0.0)
        t["compile_s"] += info.get("compile_s", 0.0)
        t["compiles"] += info.get("compiles", 0)
        t["compile_cache_hits"] += info.get("compile_cache_hits", 0)
        t["worker_wall_s"] += wall
    return {a: dict(v) for a, v in out.items()}


def _write_html(state: State) -> None:
    """Render reports/<env>/index.html; a failure is reported, never allowed to cost the results."""
    from harness.report import render_paths

    try:
        state.html = render_paths([state.writer.path], state.writer.path.parent / "index.html")
    except Exception as e:
        state.html_error = f"{type(e).__name__}: {e}"


def _summary(state: State, tr) -> None:
    if not state.matrix:
        return
    tr.section("bnparity: cases x adapters (worst verdict per cell)")
    cases = sorted({c for c, _ in state.matrix})
    adapters = sorted({a for _, a in state.matrix})
    width = max(len(c) for c in cases)
    cols = [max(len(a), 3) for a in adapters]
    tr.write_line(" " * width + "  " + "  ".join(a.rjust(w) for a, w in zip(adapters, cols)))
    totals: Counter = Counter()
    for c in cases:
        row = []
        for a, w in zip(adapters, cols):
            cnt = state.matrix.get((c, a))
            if not cnt:
                row.append(" " * (w - 1) + ".")
                continue
            totals.update(cnt)
            row.append(Verdict.worst(cnt).info.letter.rjust(w))
        tr.write_line(c.ljust(width) + "  " + "  ".join(row))
    tr.write_line("legend: " + ", ".join(f"{v.info.letter}={v}" for v in Verdict.ordered()) + ", .=not run")
    tr.write_line("records by verdict: " + ", ".join(f"{v}={n}" for v, n in sorted(totals.items())))
    t = _timings(state)
    if t:
        tr.write_line("time per adapter (s): " + "; ".join(
            f"{a}: {int(v.get('worker_starts', 0))} worker start(s) {v.get('startup_s', 0):.1f}, "
            f"import {v.get('import_s', 0):.1f}, "
            f"compute {v.get('compute_s', 0):.2f}, compile {v.get('compile_s', 0):.2f} "
            f"({int(v.get('compiles', 0))}x"
            + (f", {int(v['compile_cache_hits'])} from the cache" if v.get("compile_cache_hits") else "")
            + f"), worker round-trips {v.get('worker_wall_s', 0):.2f}"
            for a, v in sorted(t.items())))
    if state.writer is not None:
        tr.write_line(f"results: {state.writer.path}")
    if state.html is not None:
        tr.write_line(f"report: {state.html}")
    if state.html_error:
        tr.write_line(f"report NOT written: {state.html_error}", red=True)
