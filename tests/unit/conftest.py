"""Run the parity plugin in a child pytest on fake adapters (no framework needed)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.adapters.base import discover, load_spec
from harness.results import read
from harness.schema import Cell, Header, Record, Result

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
PARITY_TEST = "def test_parity(bn_cell):\n    bn_cell.check()\n"


@dataclass
class InnerRun:
    result: pytest.RunResult
    header: Header | None
    records: list[Record]
    lines: list[str]
    path: Path | None = None  # the results file

    def results(self, **match) -> list[Result]:
        return [r for r in self.records if isinstance(r, Result) and all(getattr(r, k) == v for k, v in match.items())]

    @property
    def cells(self) -> list[Cell]:
        return [r for r in self.records if isinstance(r, Cell)]

    def verdicts(self, adapter: str, case: str) -> set[str]:
        return {r.verdict for r in self.results(adapter=adapter, case=case)}

    def failing_quantities(self, adapter: str, case: str) -> set[str]:
        return {r.quantity for r in self.results(adapter=adapter, case=case) if r.verdict.fails_run}


@pytest.fixture
def run_parity(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """run_parity(cases_toml, adapters=[fake classes], *args, ledger=None) -> InnerRun."""

    def run(cases_toml: str, adapters: list[str], *args: str, ledger: str | None = None) -> InnerRun:
        cases = pytester.path / "cases"
        cases.mkdir(exist_ok=True)
        (cases / "c.toml").write_text(cases_toml)
        if ledger is not None:
            (cases / "known_differences.toml").write_text(ledger)
        pytester.makepyfile(test_parity=PARITY_TEST)
        specs = ",".join(f"tests.fakes:{a}" for a in adapters)
        monkeypatch.setenv("BNPARITY_ADAPTERS", specs)
        monkeypatch.setenv("PYTHONPATH", str(REPO))
        from tests import fakes

        names = ",".join(getattr(fakes, a).name for a in adapters)
        res = pytester.runpytest_subprocess(
            "--cases", str(cases), "--results-dir", str(pytester.path / "reports"), "--bnparity-env", "t",
            "--adapters", names, "-p", "no:cacheprovider", "-p", "no:randomly", *args)
        # the plugin renders the environment's HTML after the run; a failure there fails the self-test
        assert not [ln for ln in res.outlines if "report NOT written" in ln], res.stdout.str()
        path = pytester.path / "reports" / "t" / "results.jsonl"
        if not path.exists():
            return InnerRun(res, None, [], [])
        rf = read(path)
        assert not rf.skipped, rf.skipped  # every record the harness wrote validates against the schema
        return InnerRun(res, rf.header, rf.records, path.read_text().splitlines(), path)

    return run


def framework_adapters() -> dict[str, str]:
    """``{name: spec}`` of the registered adapters the framework self-tests check: the eager ones, and the compiled,
    exported and other paths where ``BNPARITY_PATHS=1`` (tox's ``paths`` env, which installs what they need)."""
    specs = discover()
    if os.environ.get("BNPARITY_PATHS") == "1":
        return specs
    return {n: s for n, s in specs.items() if getattr(load_spec(s), "path", "eager") == "eager"}


def installed_adapter(name: str):
    """(adapter, spec) of a registered adapter whose framework imports here; else skip, or fail where
    ``BNPARITY_REQUIRE_FRAMEWORKS=1`` (tox's current env) says the frameworks must be there."""
    specs = discover()
    adapter = load_spec(specs[name])
    reason = adapter.available()
    if reason:
        if os.environ.get("BNPARITY_REQUIRE_FRAMEWORKS") == "1":
            pytest.fail(f"frameworks required here but {name} cannot run: {reason}")
        pytest.skip(f"{name}: {reason} (tox -e current runs this)")
    return adapter, specs[name]


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """Framework worker processes shared by one test module's cells (started on first use, closed after)."""
    from harness.workers import Workers

    w = Workers(log_dir=tmp_path_factory.mktemp("workers"))
    yield w
    w.close()
