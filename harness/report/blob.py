"""What the page's JavaScript reads: the report's data as one JSON object, compact but named.

The page renders a cell's detail, the per-quantity matrix and the portability view from this
object (``D`` in the page), and has no vocabulary of its own:

* ``verdicts`` is ``Verdict.table()`` (name, severity, fails_run, differs, shows_error, mark,
  meaning, in severity order); ``quantities`` and ``kinds`` are the ``Quantity`` and
  ``MismatchKind`` tables.
* The result records travel column by column: ``rows`` holds one list per name in
  ``fields.result`` (``Blob.fields``, field names of ``harness.schema.Result``), each with one
  value per record, and a cell names its records as ``rows: [start, count]`` in those lists. The
  page rebuilds a cell's rows when it first reads them (``cell.results``, ``templates/js/data.js``)
  and looks a column up by name (``r[F.mismatch_kind]``). Verdicts, quantities and mismatch kinds
  are indices into their tables and numbers are rounded (every digit of a failure's worst element
  is kept); an observed value that rounds to the expected one is ``"="`` (``SAME_AS_EXPECTED``).
  A column of like values compresses far better than rows of mixed ones (a million records: see
  the README's At scale table), and the columns are encoded one at a time (``Columns``), so the
  blob is never held as one big object. A packed (large) page sends the numeric columns as byte
  planes with a descriptor in the column's place (``Columns.packed``, ``harness.report.packed``):
  the same values, fewer bytes.
* Every other object is keyed by the schema's field names.

    >>> blob = Blob(model, builder).build()
    >>> F = {f: i for i, f in enumerate(blob["fields"]["result"])}
    >>> start, n = blob["cells"]["0:0"]["rows"]                # blob["rows"]: a Columns, encoded lazily
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from harness import __version__, repro
from harness.report.model import Model, ReportCell
from harness.report.packed import Planes, Rounded, pack_indices, pack_ints
from harness.report.text import safe_link
from harness.schema import Cell, LedgerRef, MismatchKind, OutcomeStatus, Quantity, Result, Verdict
from harness.stable import WEAK_FACTOR

if TYPE_CHECKING:
    from harness.report.views import Builder

MESSAGE_CHARS = 4000  # of a record's message
STDERR_CHARS = 3000  # of a dead worker's stderr tail

_FMT = {d: f"%.{d}g" for d in range(1, 18)}
_INF = (math.inf, -math.inf)


def rounded(v: Any, digits: int) -> Any:
    """A number rounded for the blob; non-finite numbers as the strings results files use."""
    if type(v) is float:  # the hot path: ~500k calls for 100k records
        if v != v or v in _INF:
            return "nan" if v != v else ("inf" if v > 0 else "-inf")
        x = float(_FMT[digits] % v)
        return x if x - x == 0 else v  # rounding the largest floats (1.8e308) up overflows to inf
    return v


class _Index:
    """Item -> small int in order of first use (the blob stores indices, not repeated values)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._pos: dict[str, int] = {}

    def __call__(self, item: Any, key: str | None = None) -> int:
        key = item if key is None else key
        if key not in self._pos:
            self._pos[key] = len(self.items)
            self.items.append(item)
        return self._pos[key]


_VERDICTS = Verdict.ordered()
_VERDICT_INDEX = {v: i for i, v in enumerate(_VERDICTS)}
_QUANTITY_INDEX = {q: i for i, q in enumerate(Quantity)}
_KIND_INDEX = {k: i for i, k in enumerate(MismatchKind)}
Encode = Callable[[Any, Result], Any]


def _metric(v: Any, r: Result) -> Any:
    return rounded(v, 3)


def _value(v: Any, r: Result) -> Any:
    """A pass's worst element needs four digits; a failure's gets every digit."""
    return rounded(v, 4 if r.verdict is Verdict.PASS else 17)


SAME_AS_EXPECTED = "="  # an observed value that reads as the expected one, as rounded


def _observed(v: Any, r: Result) -> Any:
    """A pass's observed value rounds, as a rule, to its expected one: the blob says so in one character (the
    page puts the expected value back, ``cellRows`` in ``templates/js/data.js``)."""
    x = _value(v, r)
    return SAME_AS_EXPECTED if r.expected is not None and x == _value(r.expected, r) else x


def _message(v: Any, r: Result) -> Any:
    """Compared arrays are described by the columns; the message is kept for everything else."""
    return None if r.compared or not v else v[:MESSAGE_CHARS]


class Columns:
    """The blob's ``rows``: the result records' columns, each made (a list, one value a record) only when
    iterated, so that ``harness.report.page.encode`` writes one column at a time. ``list(Columns)`` is the
    whole table (tests; small reports)."""

    def __init__(self, blob: Blob, records: list[Result]):
        self.blob = blob
        self.records = records

    def __len__(self) -> int:
        return len(self.blob.fields)

    def __iter__(self) -> Iterator[list[Any]]:
        for (_, encode), get in zip(self.blob.columns, self.blob._getters):
            yield self._column(encode, get)

    def _column(self, encode: Encode | None, get: Callable[[Result], Any]) -> list[Any]:
        if encode is None:
            return [get(r) for r in self.records]
        return [None if v is None else encode(v, r) for r in self.records for v in (get(r),)]

    def packed(self, planes: Planes) -> Iterator[Any]:
        """Each column for a packed page: a numeric column's descriptor (its planes go into ``planes``,
        ``harness.report.packed``), any other column its list; the values are the ones ``__iter__`` gives."""
        full = None
        expected: Rounded | None = None
        for (field, encode), get in zip(self.blob.columns, self.blob._getters):
            how = _PACKING.get(field)
            if how is None:
                yield self._column(encode, get)
                continue
            if how == "int":
                yield pack_ints(self._column(encode, get), planes)
            elif how == "index":
                yield pack_indices([get(r) for r in self.records], planes)
            elif how == "metric":
                yield Rounded([get(r) for r in self.records], 3).pack(planes)
            else:  # "value": four digits, every digit off a pass (_value); observed: "=" where it reads as expected
                if full is None:
                    full = np.array([r.verdict is not Verdict.PASS for r in self.records], dtype=bool)
                col = Rounded([get(r) for r in self.records], 4, full)
                if field == "expected":
                    expected = col
                same = col.same_as(expected) if encode is _observed and expected is not None else None
                yield col.pack(planes, same)

    def json(self) -> Iterator[str]:
        """Each column as compact JSON text. A column of metrics is written in one pass (``_metric_json``:
        the numbers ``_metric`` rounds, as ``'%.3g'`` writes them, which JSON reads as the same doubles);
        the rest, and a metric column holding a non-finite number, through ``json.dumps`` of ``__iter__``'s
        list. Strings are left for the caller to make script-safe."""
        for (_, encode), get in zip(self.blob.columns, self.blob._getters):
            text = _metric_json([get(r) for r in self.records]) if encode is _metric else None
            if text is None:
                text = json.dumps(self._column(encode, get), separators=(",", ":"), allow_nan=False,
                                  ensure_ascii=False)
            yield text


# how ``packed`` sends a column (the rest: JSON lists); "value": ``_value`` or ``_observed``
_PACKING = {"quantity": "int", "step": "int", "verdict": "int", "total": "int", "mismatched": "int",
            "mismatch_kind": "int", "max_abs_err": "metric", "max_rel_err": "metric", "max_ulp_err": "metric",
            "threshold": "metric", "error_ratio": "metric", "weak_ratio": "metric", "stable_abs_err": "metric",
            "greatest_rel_diff": "metric", "expected": "value", "observed": "value", "greatest_abs_diff": "value",
            "worst_index": "index", "greatest_abs_index": "index", "greatest_rel_index": "index"}

_G3 = _FMT[3]


def _metric_json(values: list[Any]) -> str | None:
    """``[rounded(v, 3) ...]`` as JSON text, or None where one pass cannot say it: a NaN or an infinity (the
    blob writes them as strings) or a number that rounds past the largest float."""
    text = "[" + ",".join(["null" if v is None else _G3 % v for v in values]) + "]"
    return None if "inf" in text or "nan" in text or "e+308" in text else text


class Blob:
    """The model (and the view models' inferences) as the page's data object."""

    def __init__(self, model: Model, builder: Builder):
        self.model = model
        self.builder = builder
        self.conventions = _Index()
        self.ledger: dict[str, dict[str, Any]] = {}
        # (field of Result, how it is written); None: as it is
        self.columns: list[tuple[str, Encode | None]] = [
            ("quantity", lambda q, r: _QUANTITY_INDEX[q]),
            ("step", None),
            ("verdict", lambda v, r: _VERDICT_INDEX[v]),
            ("max_abs_err", _metric), ("max_rel_err", _metric), ("max_ulp_err", _metric),
            ("threshold", _metric), ("error_ratio", _metric), ("weak_ratio", _metric), ("stable_abs_err", _metric),
            ("worst_index", None), ("expected", _value), ("observed", _observed),
            ("total", None),
            ("mismatched", lambda n, r: n or None),
            ("mismatch_kind", lambda k, r: None if k is MismatchKind.MATCH else _KIND_INDEX[k]),
            ("greatest_abs_diff", _value), ("greatest_abs_index", None),
            ("greatest_rel_diff", _metric), ("greatest_rel_index", None),
            ("ledger", lambda e, r: self._ledger(e)),
            ("covers", None),
            ("message", _message),
        ]
        unknown = [f for f, _ in self.columns if f not in Result.model_fields]
        if unknown:  # a field renamed in the schema must be renamed here (and in the page's script)
            raise TypeError(f"not fields of harness.schema.Result: {unknown}")
        for f, encode in self.columns:  # the packed page rounds as the plain one does (packed.Rounded)
            how = _PACKING.get(f)
            if (how == "metric") != (encode is _metric) or (how == "value") != (encode in (_value, _observed)):
                raise TypeError(f"blob column {f}: its packing ({how}) does not match its rounding")
        self.fields = [f for f, _ in self.columns]
        self._getters = [attrgetter(f) for f in self.fields]
        self._records: list[Result] = []  # every cell's result rows, in the order the cells are built

    def _ledger(self, e: LedgerRef) -> str:
        if e.id not in self.ledger:
            self.ledger[e.id] = {"kind": e.kind, "reason": e.reason, "observed": e.observed, "versions": e.versions,
                                 "link": safe_link(e.link), "raw_link": e.link}
        return e.id

    @staticmethod
    def outcome(r: Result) -> dict[str, Any]:
        o: dict[str, Any] = {"verdict": _VERDICT_INDEX[r.verdict], "message": r.message[:MESSAGE_CHARS]}
        for name in ("exception_type", "exception_message", "exception_stage", "exit_code"):
            if getattr(r, name) is not None:
                o[name] = getattr(r, name)
        if r.stderr_tail:
            o["stderr_tail"] = r.stderr_tail[-STDERR_CHARS:]
        return o

    def cell(self, cell: ReportCell) -> dict[str, Any]:
        start = len(self._records)
        self._records.extend(r for r in cell.results if r.quantity is not Quantity.OUTCOME)
        d: dict[str, Any] = {"verdict": _VERDICT_INDEX[cell.verdict], "max_ulp": rounded(cell.max_ulp(), 3),
                             "rows": [start, len(self._records) - start], "tip": self.builder.cell_tip(cell)}
        if cell.outcome is not None:
            d["outcome"] = self.outcome(cell.outcome)
        rec = cell.record
        if rec is not None:
            d.update(self._record(rec))
            s = self.builder.portability.signature_index(cell)
            if s is not None:
                d["oracle"] = s
        if cell.framework_version:
            d["framework_version"] = cell.framework_version
        fd = self.builder.starts.get((cell.env, cell.case, cell.adapter))
        if fd is not None:
            d["start"] = fd.text
        cmd = next((r.repro for r in cell.results if r.repro), None)
        if cmd:
            d["repro"] = cmd
        return d

    def _record(self, rec: Cell) -> dict[str, Any]:
        conv_key = repr(sorted(rec.conventions.items()))
        # what the adapter reports: settings it read back (epsilon, momentum) keep 12 digits for the page's
        # fmtSetting; timings (*_s) three
        info = {k: rounded(v, 3 if k.endswith("_s") else 12) for k, v in rec.info.items()
                if isinstance(v, (str, int, float, bool))}
        if rec.case_s is not None:
            info["case s (in the worker)"] = rounded(rec.case_s, 3)
        if "import_s" in rec.worker:
            info["import s (this worker's first case)"] = rounded(rec.worker["import_s"], 3)
        info["round trip s" + (" (with starting the worker and the import)" if "import_s" in rec.worker
                               else "")] = rounded(rec.wall_s, 3)
        d = {"conventions": self.conventions(rec.conventions, conv_key), "settings": rec.settings,
             "effective": {"momentum": rounded(rec.effective.momentum, 17), "eps": rounded(rec.effective.eps, 17)},
             "info": info}
        if rec.precision:
            d["precision"] = rec.precision
        if rec.status is not OutcomeStatus.RETURNED:
            d["status"] = rec.status.value  # how the worker's call ended, when it did not return
        return d

    def build(self) -> dict[str, Any]:
        m, b = self.model, self.builder
        cells = {b.key(env, case, adapter): self.cell(cell) for (env, case, adapter), cell in m.cells.items()}
        cases = [{"name": name, "description": info.description, "tags": info.tags,
                  "params_json": repro.case_json(info.params) if info.params else None}
                 for name in b.rows for info in [m.cases[name]]]
        gaps = {}
        for name in b.rows:
            sigs, g = b.portability.of(name)
            if len(sigs) > 1:
                gaps[str(b.row_of[name])] = {
                    "signatures": [list(s) for s in sigs],
                    "oracle_gaps": {p: {k: rounded(v, 3) for k, v in d.items()} for p, d in g.items()} if g else None}
        worker_env: dict[tuple[str, str], dict[str, str]] = {}
        for (env, _, adapter), cell in m.cells.items():
            if cell.record is not None:
                worker_env.setdefault((env, adapter), cell.record.worker_env)
        # the reproducer comes from the results alone: the worker environment the cell records recorded
        templates = _Index()
        cols = [{"env": env, "adapter": adapter,
                 "template": templates(repro.template(adapter, worker_env=worker_env.get((env, adapter), {})))}
                for env, adapter in m.columns]
        return {"version": __version__, "fields": {"result": self.fields}, "verdicts": Verdict.table(),
                "quantities": [{"name": q.value, "phase": q.phase, "stage": q.stage, "label": q.label()}
                               for q in Quantity],
                # note: the kind is named next to the verdict (a plain value difference is what the numbers show)
                "kinds": [{"name": k.value, "headline": k.headline, "note": not k.bounded, "bounded": k.bounded,
                           "mark": k.mark} for k in MismatchKind],
                "conventions": self.conventions.items, "ledger": self.ledger, "cols": cols,
                "envs": [e.key for e in m.envs], "cases": cases, "cells": cells, "rows": Columns(self, self._records),
                "gaps": gaps,
                "templates": templates.items, "placeholder": repro.CASE_PLACEHOLDER, "weak_factor": WEAK_FACTOR}

