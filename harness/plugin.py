"""pytest plugin: options, parametrization over cases x adapters, results streaming, summary.

Hooks and options only: the session state (``harness.session``) lives in ``config.stash`` and the
terminal summary is ``harness.terminal``. Under
pytest-xdist each worker runs cells and attaches their records to the test
report; only the controller writes ``results.jsonl``, so nothing is lost or
written twice.
"""

from __future__ import annotations

import json
import re
import signal

import pytest

from harness import __version__
from harness.cases import CaseError, cases_hash
from harness.results import ResultsWriter, header
from harness.schema import Cell, Result, parse
from harness.session import RECORD_KEY, SESSION, CellUnderTest, ParitySession
from harness.terminal import summary, timings
from harness.workers import DEFAULT_TIMEOUT

CELL_ID = re.compile(r"\[(.+)-[^-\]]+\]$")  # test_parity[ADAPTER-CASE]; case names have no '-'


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("bnparity", "BatchNorm parity")
    g.addoption("--cases", action="append", default=None, metavar="PATH",
                help="case file or folder (repeatable; default: <rootdir>/cases)")
    g.addoption("--ledger", default=None, metavar="FILE",
                help="known-differences ledger (default: <first cases folder>/known_differences.toml)")
    g.addoption("--adapters", default=None, metavar="A,B",
                help="comma-separated adapter names, globs or path:<kind> (path:compiled, path:*) to run "
                     "(default: every eager adapter, and those BNPARITY_ADAPTERS lists)")
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


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bnparity(*tags): a parity cell, marked with its case tags")
    state = ParitySession(config)
    config.stash[SESSION] = state
    if not _is_xdist_worker(config):
        config.pluginmanager.register(Controller(state), "bnparity-controller")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bn_cell" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[SESSION]
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
    state = config.stash[SESSION]
    for item in items:
        cs = getattr(item, "callspec", None)
        if cs and "bn_cell" in cs.params:
            case = state.cases[cs.params["bn_cell"][0]]
            item.extra_keyword_matches.update(case.tags)


@pytest.fixture
def bn_cell(request: pytest.FixtureRequest) -> CellUnderTest:
    case_name, adapter_name = request.param
    return CellUnderTest(request, case_name, adapter_name)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash[SESSION]
    if state.workers is not None:
        state.workers.close()


class Controller:
    """Runs once, in the process that reports (the xdist controller or the only process)."""

    def __init__(self, state: ParitySession):
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
            st.writer.finish(status, exit_status=int(exitstatus), timings=timings(st))
            _write_html(st)

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int, config: pytest.Config) -> None:
        summary(self.state, terminalreporter)


def _write_html(state: ParitySession) -> None:
    """Render reports/<env>/index.html; a failure is reported, never allowed to cost the results."""
    from harness.report import render_paths

    try:
        state.html = render_paths([state.writer.path], state.writer.path.parent / "index.html")
    except Exception as e:
        state.html_error = f"{type(e).__name__}: {e}"
