"""One pytest session's parity state: the catalogue, the ledger, the adapters and their workers, the results
writer, and the cell a parity test runs (``bn_cell``). The plugin keeps one ``ParitySession`` in ``config.stash``."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from harness.adapters.base import Broken, discover, listed_in_env, load_spec, select
from harness.cases import load_cases
from harness.ledger import load_ledger
from harness.results import ResultsWriter
from harness.runner import run_cell
from harness.schema import Cell, dumps
from harness.workers import Workers

RECORD_KEY = "bnparity_records"  # a cell's records travel to the controller in the test report's user_properties


class ParitySession:
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
            try:
                def path_of(name: str) -> str:
                    return getattr(self.adapter_for(name, specs), "path", "eager")

                specs = select(specs, self.config.getoption("adapters"), path_of, listed_in_env())
            except ValueError as e:
                raise pytest.UsageError(f"--adapters: {e}") from None
            self._specs = specs
        return self._specs

    def adapter(self, name: str):
        """The adapter object, or a ``Broken`` stand-in whose every cell is a raised outcome with the load error."""
        return self.adapter_for(name, self.specs)

    def adapter_for(self, name: str, specs: dict[str, str]):
        if name not in self.adapters:
            try:
                self.adapters[name] = load_spec(specs[name])
            except Exception as e:
                self.adapters[name] = Broken(name, f"adapter {specs[name]!r} failed to load: "
                                                   f"{type(e).__name__}: {e}", e)
        return self.adapters[name]

    def get_workers(self) -> Workers:
        if self.workers is None:
            self.workers = Workers(self.results_dir / "logs", self.config.getoption("in_process"),
                                   self.config.getoption("worker_threads"))
        return self.workers


class CellUnderTest:
    """What a parity test receives: ``bn_cell.check()`` runs and judges the cell."""

    def __init__(self, request: pytest.FixtureRequest, case_name: str, adapter_name: str):
        self.request = request
        self.state: ParitySession = request.config.stash[SESSION]
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


SESSION = pytest.StashKey[ParitySession]()
