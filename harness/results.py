"""Results files: written line by line as results arrive, read back as typed records.

The first line is the ``Header``; its ``status`` is ``running`` while the run goes on and is
rewritten to ``complete`` or ``interrupted`` at the end (a run killed outright keeps
``running``: readers treat it as partial). The records are defined in ``harness.schema``.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.schema import RECORD, SCHEMA_VERSION, Cell, Header, Record, Result, SchemaError, Verdict, dumps, parse


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def platform_info() -> dict[str, Any]:
    return {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
            "processor": platform.processor(), "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
            "node": platform.node()}


def header(env: str, versions: dict[str, str], cases_hash: str, **extra: Any) -> Header:
    """A new file's header: status ``running``, started now, on this platform."""
    return Header(env=env, versions=versions, cases_hash=cases_hash, started=now(), platform=platform_info(),
                  **extra)


class ResultsWriter:
    """Appends records line by line (flushed), and rewrites the header at the end."""

    def __init__(self, path: Path, head: Header):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.head = head
        self._f = open(self.path, "w", encoding="utf-8")
        self._write(head)
        self.count = 0

    def _write(self, rec: Record) -> None:
        self._f.write(dumps(rec) + "\n")
        self._f.flush()

    def write(self, records: Iterable[Record]) -> None:
        for r in records:
            self._write(r)
            self.count += 1

    def finish(self, status: str, **extra: Any) -> None:
        """Close the file and rewrite line 1 with the final status (atomically)."""
        if self._f.closed:
            return
        self._f.close()
        self.head = self.head.model_copy(update=dict(status=status, finished=now(), records=self.count, **extra))
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(self.path, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
            src.readline()
            dst.write(dumps(self.head) + "\n")
            for line in src:
                dst.write(line)
        os.replace(tmp, self.path)


@dataclass
class ResultsFile:
    path: Path
    header: Header | None
    records: list[Record] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "FILE:LINE: why", one per line that was not read


def _upgrade_v1(obj: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 record in schema-2 terms: the repro command out of the message, NaN at the worst
    element as "nan" (schema 1 wrote null), a stale record's quantity globs as `covers`."""
    kind = obj.get("kind")
    if kind == "header":
        return {**obj, "schema_version": SCHEMA_VERSION}
    if kind == "result":
        obj = dict(obj)
        msg = obj.get("message") or ""
        i = msg.find("\n  Reproduce: ")
        if i >= 0:
            obj["message"], obj["repro"] = msg[:i], msg[i + len("\n  Reproduce: "):]
        if obj.get("verdict") == Verdict.STALE and isinstance(obj.get("quantity"), str):
            obj["covers"], obj["quantity"] = obj["quantity"].split("|"), None
        if obj.get("worst_index") is not None and obj.get("mismatch_kind") not in (None, "match", "value", "shape"):
            for k in ("expected", "observed"):
                if obj.get(k) is None:
                    obj[k] = "nan"
    return obj


def _upgrade_eval_steps(records: list[Record]) -> None:
    """Schema 1-3 records of the eval call in schema-4 terms: the call's index (the short form's eval call
    follows the ``steps`` training calls, so it is call ``steps``), from the cell's own ``case_params``."""
    steps = {(c.env, c.case, c.adapter): c.case_params.get("steps") for c in records if isinstance(c, Cell)}
    for r in records:
        if isinstance(r, Result) and r.step is None and r.quantity is not None and r.quantity.phase == "eval":
            r.step = steps.get((r.env, r.case, r.adapter))


def read(path: Path | str, result: Callable[[Result], Any] | None = None) -> ResultsFile:
    """The header and records of one results file, each validated against the schema.

    Results files travel between machines, so one damaged line costs that line only: a line that is
    not a JSON object or does not validate is left out and listed in ``skipped`` with its line number
    and why (a torn last line, from a run killed mid-write, is dropped silently). A file written by a
    newer schema raises ``SchemaError`` naming the file: its records may mean something else.

    A results file may hold a million records, so reading is lean: lines are read one at a time, each
    validated straight from its JSON text (pydantic reuses the strings that repeat, such as the
    environment, case and adapter names), and records with the same fields present share one
    ``model_fields_set`` (half of a record's memory otherwise; nothing here reads it). A line that
    does not validate is decoded again to say why. ``result``, when given, turns each validated
    ``Result`` into what the caller keeps (the report keeps a slim tuple of its fields,
    ``harness.report.model.Row``), so that a million full objects are never held at once.
    """
    path = Path(path)
    out = ResultsFile(path, None)
    version = SCHEMA_VERSION
    fields_sets: dict[frozenset[str], set[str]] = {}
    gc_was_on = gc.isenabled()
    gc.disable()  # records hold no cycles: collecting while 1e5 of them arrive costs a third of the time
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                rec = None
                if out.header is not None and version != 1:
                    try:
                        rec = RECORD.validate_json(line)
                    except ValidationError:
                        pass  # the path below names what is wrong
                if rec is None:
                    rec, version = _read_line(path, n, line, out, version)
                    if rec is None:
                        continue
                if isinstance(rec, Header):
                    if out.header is not None:
                        out.skipped.append(f"{path}:{n}: a second header")
                        continue
                    out.header = rec
                elif result is not None and version >= 4 and isinstance(rec, Result):
                    out.records.append(result(rec))
                else:
                    fs = rec.__pydantic_fields_set__
                    object.__setattr__(rec, "__pydantic_fields_set__", fields_sets.setdefault(frozenset(fs), fs))
                    out.records.append(rec)
    finally:
        if gc_was_on:
            gc.enable()
    if version < 4:
        _upgrade_eval_steps(out.records)
        if result is not None:  # converted after the upgrade, which sets fields on the full records
            out.records = [result(r) if isinstance(r, Result) else r for r in out.records]
    return out


def _read_line(path: Path, n: int, line: str, out: ResultsFile, version: int) -> tuple[Record | None, int]:
    """One line decoded and validated, or None with the reason added to ``out.skipped``; and the schema
    version in force (a first header sets it)."""
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        if line.endswith("\n"):  # not the torn last line of a killed run (every other line ends with one)
            out.skipped.append(f"{path}:{n}: not a JSON line")
        return None, version
    if not isinstance(obj, dict):
        out.skipped.append(f"{path}:{n}: not a JSON object")
        return None, version
    if obj.get("kind") == "header" and out.header is None:
        v = obj.get("schema_version")
        if isinstance(v, int) and v > SCHEMA_VERSION:
            raise SchemaError(f"{path}: written with results schema {v}; this bnparity reads schema 1 to "
                              f"{SCHEMA_VERSION}: upgrade bnparity to read this file")
        version = v if isinstance(v, int) else version
    if version == 1:
        obj = _upgrade_v1(obj)
    try:
        return parse(obj), version
    except ValidationError as e:
        err = e.errors()[0]
        loc = err["loc"]  # (kind, field, ...); empty or the kind alone when the kind itself is wrong
        where = (f"field {'.'.join(str(x) for x in loc[1:])!r}" if len(loc) > 1
                 else "field 'kind'" if err["type"].startswith("union_tag") else "the record as a whole")
        out.skipped.append(f"{path}:{n}: {str(obj.get('kind', 'record'))[:40]} record, {where}: {err['msg']}")
        return None, version
