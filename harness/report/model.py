"""Results files -> the report's model: environments, cells, cases and matrix columns, as typed records.

Everything here reads results files only (``harness.results.read``, which validates every line
against ``harness.schema`` and raises ``SchemaError`` naming the file for one it cannot read);
nothing imports a framework or the adapter registry. Records that are not parity records
(``bandwidth``, ``benchmark``) are counted per environment and otherwise left to the benchmark
section.

    >>> model = load([Path("reports")])          # every reports/*/results.jsonl, merged
    >>> model.cells[("current", "dense_small", "torch")].verdict is Verdict.PASS
    True
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, namedtuple
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness.cases import Case
from harness.report.text import fmt_ratio, ratio_value
from harness.results import read
from harness.schema import Cell, Header, MismatchKind, Quantity, Result, Verdict


class Row(namedtuple("Row", Result.model_fields)):
    """A result record as the report keeps it: the validated ``Result``'s fields in a tuple, read by the
    same names (``r.verdict``, ``r.compared``), not a pydantic object: the object and its field dict take
    912 bytes, the tuple 376 (the values, shared or not, are the same). Code that reads result records
    in the report reads attributes only (no ``isinstance(r, Result)``, no ``model_dump``)."""

    __slots__ = ()
    compared = Result.compared

    @classmethod
    def of(cls, r: Result) -> Row:
        return tuple.__new__(cls, r.__dict__.values())  # a Result's __dict__ holds its fields in declaration order


_PHASES = list(dict.fromkeys(q.phase for q in Quantity))  # outcome, train, eval: the order they happen in
_RANK = {q: (_PHASES.index(q.phase), q.order) for q in Quantity}  # sorting 1e5 records reads it 1e5 times


def result_order(r: Result) -> tuple[int, int, int, int]:
    """The outcome first, then the calls in order (each in computation order), then stale ledger records."""
    q = r.quantity
    if q is None:
        return (2, 0, 0, 0)
    phase, order = _RANK[q]
    if phase == 0:  # the outcome
        return (0, 0, 0, 0)
    return (1, r.step or 0, phase, order)


_KIND_RANK = {k: i for i, k in enumerate(MismatchKind)}  # a later kind outranks an earlier one as a headline


@dataclass(frozen=True)
class Headline:
    """What a matrix cell shows for its records (all of them, or one quantity's): the worst error over its
    bound (1 = on the bound), or the kind of a difference that has no ratio (NaN, infinity, shape,
    missing). The page's ``headline`` (``templates/js/data.js``) computes the same from the blob."""

    ratio: float | None = None  # the largest error_ratio, at the page's three significant digits
    kind: MismatchKind | None = None  # a difference without a ratio: shown instead of the ratio
    over: bool = False  # a record at the largest ratio differs from the oracle (so it reads '>1', never '1')
    record: Result | None = None  # the record the ratio (or the kind) comes from
    weak: float | None = None  # the largest weak_ratio over the weak records (how much worse than a stable BN)

    @property
    def text(self) -> str:
        return self.kind.mark if self.kind is not None else fmt_ratio(self.ratio, self.over)

    def matrix_text(self, verdict: Verdict) -> str:
        """What a matrix cell of ``verdict`` reads: the headline where it explains the verdict, else the verdict's
        mark; a weak cell its mark and how many times a stable BN's error it is ('W450')."""
        if verdict.info.shows_weak_ratio and self.weak is not None:
            return verdict.info.mark + fmt_ratio(self.weak)
        return self.text if verdict.info.shows_error and self.explains(verdict) else verdict.info.mark

    @property
    def sort_value(self) -> float:
        """Larger is worse: a kind above every ratio, NaN as infinite, nothing to show -1."""
        if self.kind is not None:
            return math.inf
        if self.ratio is None:
            return -1.0
        return math.inf if math.isnan(self.ratio) else self.ratio

    def explains(self, verdict: Verdict) -> bool:
        """Does the headline show why the verdict differs from the oracle? (A cell that fails on its outcome
        alone, its arrays within the bound, shows the verdict's mark rather than a ratio below 1.)"""
        return bool(self.text) and (not verdict.differs or self.over or self.kind is not None)


def headline(results: Iterable[Result]) -> Headline:
    """The worst error/bound over ``results`` (compared records only), or the worst kind without a ratio."""
    ratio: float | None = None
    key = -math.inf
    over = False
    rec: Result | None = None
    kind: MismatchKind | None = None
    krec: Result | None = None
    weak: float | None = None
    for r in results:
        if r.verdict.info.shows_weak_ratio and r.weak_ratio is not None:
            weak = r.weak_ratio if weak is None else max(weak, r.weak_ratio)
        k = r.mismatch_kind
        if k is not None and not k.bounded:
            if kind is None or _KIND_RANK[k] > _KIND_RANK[kind]:
                kind, krec = k, r
            continue
        if r.error_ratio is None:
            continue
        v = ratio_value(r.error_ratio)
        kv = math.inf if math.isnan(v) else v
        if rec is None or kv > key:
            ratio, key, over, rec = v, kv, r.verdict.differs, r
        elif kv == key:
            over = over or r.verdict.differs
    if kind is not None:
        return Headline(ratio, kind, over, krec, weak)
    return Headline(ratio, None, over, rec, weak)


@dataclass
class Env:
    """One results file."""

    key: str  # unique within the report
    name: str
    path: str
    header: Header | None  # None: the file has no header line (torn at the start)
    verdicts: Counter[Verdict] = field(default_factory=Counter)  # result records
    cell_verdicts: Counter[Verdict] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)  # records that are not parity records
    adapters: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # damaged lines left out: "FILE:LINE: why"

    @property
    def status(self) -> str:
        return self.header.status if self.header else "no header"

    @property
    def partial(self) -> bool:
        return self.header is None or self.header.status != "complete"

    @property
    def versions(self) -> dict[str, str]:
        return self.header.versions if self.header else {}


@dataclass
class ReportCell:
    """One (environment, case, adapter) cell of the matrix: its result records and its cell record."""

    env: str
    case: str
    adapter: str
    results: list[Row | Result] = field(default_factory=list)  # Row when loaded from files
    record: Cell | None = None  # absent for skips and torn runs

    @cached_property
    def verdict(self) -> Verdict:
        """The cell's worst verdict (read after loading: cached)."""
        own = [self.record.verdict] if self.record else []
        return Verdict.worst([*own, *(r.verdict for r in self.results)])

    @property
    def framework_version(self) -> str | None:
        if self.record:
            return self.record.framework_version
        return self.results[0].framework_version if self.results else None

    def max_ulp(self, quantity: Quantity | None = None) -> float | None:
        """The largest error in ULPs over the cell's records (of one quantity), NaN left out."""
        if quantity is None:
            return self._max_ulp
        vals = [r.max_ulp_err for r in self.results if r.max_ulp_err is not None and not math.isnan(r.max_ulp_err)
                and r.quantity == quantity]
        return max(vals) if vals else None

    @cached_property
    def _max_ulp(self) -> float | None:  # read by the matrix's tooltip, the blob and the drift view (cached)
        vals = [u for r in self.results for u in (r.max_ulp_err,) if u is not None and not math.isnan(u)]
        return max(vals) if vals else None

    def headline(self, quantity: Quantity | None = None) -> Headline:
        """The worst error over its bound over the cell's records (of one quantity): what the matrix shows."""
        if quantity is None:
            return self._headline
        return headline(r for r in self.results if r.quantity == quantity)

    @cached_property
    def _headline(self) -> Headline:  # read by the matrix, its tooltip and several views (after loading: cached)
        return headline(self.results)

    @cached_property
    def outcome(self) -> Result | None:
        return next((r for r in self.results if r.quantity == Quantity.OUTCOME), None)


@dataclass
class CaseInfo:
    """A matrix row: the case's parameters as the first cell record naming it recorded them."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    file: str = ""

    # params is the case's Case.summary() as the producing harness wrote it (a free-form dict in the
    # schema, so a newer catalogue still renders); these are the parameters the report reads
    @property
    def description(self) -> str:
        return str(self.params.get("description", ""))

    @property
    def use_defaults(self) -> bool:
        return bool(self.params.get("use_defaults"))

    @property
    def steps(self) -> int:
        return int(self.params.get("steps", 0) or 0)

    @property
    def schedule(self) -> tuple[str, ...]:
        """The case's calls in order, as ``harness.cases.Case.schedule`` reads them from its parameters."""
        return Case.schedule.fget(SimpleNamespace(calls=self.params.get("calls"), steps=self.steps))

    @property
    def group(self) -> str:
        """The family a row is listed under: the case's first tag (the catalogue's file family)."""
        if self.tags:
            return str(self.tags[0])
        return Path(self.file).stem if self.file else "untagged"

    @property
    def sweep(self) -> dict[str, Any] | None:
        s = self.params.get("sweep")
        return s if isinstance(s, dict) and "name" in s else None

    def sort_key(self) -> tuple:
        sw = self.sweep
        if sw:
            x = sweep_x(sw.get("value"))
            return (str(sw["name"]), 0 if x is None else 1, x if x is not None else 0.0, self.name)
        return (self.name, 0, 0.0, self.name)


def sweep_x(value: Any, varying: int | None = None) -> float | None:
    """The number a swept value stands for on a plot axis (a list: its ``varying`` component)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list) and value:
        i = varying if varying is not None and varying < len(value) else 0
        return sweep_x(value[i])
    return None


@dataclass
class Model:
    envs: list[Env]
    cells: dict[tuple[str, str, str], ReportCell]  # (env key, case, adapter)
    cases: dict[str, CaseInfo]
    columns: list[tuple[str, str]]  # (env key, adapter), grouped by environment

    @property
    def adapters(self) -> list[str]:
        return sorted({a for _, a in self.columns})

    def groups(self) -> list[tuple[str, list[CaseInfo]]]:
        by: dict[str, list[CaseInfo]] = defaultdict(list)
        for c in self.cases.values():
            by[c.group].append(c)
        return [(g, sorted(cs, key=CaseInfo.sort_key)) for g, cs in sorted(by.items())]

    def tags(self) -> list[str]:
        return sorted({t for c in self.cases.values() for t in c.tags})


def resolve(paths: Iterable[Path | str]) -> list[Path]:
    """Results files named directly, or found in folders (DIR/results.jsonl, else DIR/*/results.jsonl, else deeper)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            if (p / "results.jsonl").is_file():
                found = [p / "results.jsonl"]
            else:
                found = sorted(p.glob("*/results.jsonl")) or sorted(p.rglob("results.jsonl"))
            if not found:
                raise FileNotFoundError(f"{p}: no results.jsonl in this folder or below")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such results file or folder")
    seen: set[Path] = set()
    return [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]


def _unique_key(name: str, path: Path, taken: set[str]) -> str:
    key = name
    if key in taken:
        key = f"{name} ({path.parent.parent.name or path.parent})"
    n = 2
    base = key
    while key in taken:
        key, n = f"{base} #{n}", n + 1
    taken.add(key)
    return key


def load(paths: Iterable[Path | str]) -> Model:
    """Every results file under ``paths`` merged into one model (raises ``SchemaError`` for a file it cannot read)."""
    envs: list[Env] = []
    cells: dict[tuple[str, str, str], ReportCell] = {}
    cases: dict[str, CaseInfo] = {}
    taken: set[str] = set()
    for path in resolve(paths):
        rf = read(path, result=Row.of)
        name = rf.header.env if rf.header else path.parent.name
        env = Env(_unique_key(name, path, taken), name, str(path), rf.header, skipped=rf.skipped)
        envs.append(env)
        adapters: dict[str, None] = dict.fromkeys((rf.header.adapters or []) if rf.header else [])
        for r in rf.records:
            if not isinstance(r, (Row, Result, Cell)):
                env.ignored[r.kind] += 1
                continue
            adapters.setdefault(r.adapter)
            key = (env.key, r.case, r.adapter)
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = ReportCell(*key)
            info = cases.get(r.case)
            if info is None:
                info = cases[r.case] = CaseInfo(r.case)
            if not isinstance(r, Cell):
                cell.results.append(r)
                env.verdicts[r.verdict] += 1
            else:
                cell.record = r
                if not info.params:
                    info.params = r.case_params
                    info.tags = [str(t) for t in r.tags or r.case_params.get("tags") or []]
                    info.file = r.file
        env.adapters = sorted(adapters)
    by_key = {e.key: e for e in envs}
    for c in cells.values():
        c.results.sort(key=result_order)
        by_key[c.env].cell_verdicts[c.verdict] += 1
    columns = [(e.key, a) for e in envs for a in e.adapters]
    return Model(envs, cells, cases, columns)
