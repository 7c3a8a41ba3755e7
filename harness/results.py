"""Results files: written line by line as results arrive, read back as typed records.

The first line is the ``Header``; its ``status`` is ``running`` while the run goes on and is
rewritten to ``complete`` or ``interrupted`` at the end (a run killed outright keeps
``running``: readers treat it as partial). The records are defined in ``harness.schema``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.schema import SCHEMA_VERSION, Header, Record, SchemaError, Verdict, dumps, parse


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


def read(path: Path | str) -> ResultsFile:
    """The header and records of one results file. A torn last line (a run killed mid-write) is dropped;
    a file written by a newer schema, or a record that does not validate, raises ``SchemaError``
    naming the file and line."""
    path = Path(path)
    out = ResultsFile(path, None)
    version = SCHEMA_VERSION
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for n, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # torn by a kill mid-write
                continue
            raise SchemaError(f"{path}:{n}: not a JSON line") from None
        if not isinstance(obj, dict):
            raise SchemaError(f"{path}:{n}: not a JSON object")
        if obj.get("kind") == "header":
            if out.header is not None:
                raise SchemaError(f"{path}:{n}: a second header")
            version = obj.get("schema_version")
            if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
                raise SchemaError(f"{path}: written with results schema {version!r}; this bnparity reads "
                                  f"schema 1 to {SCHEMA_VERSION}: upgrade bnparity to read this file")
        if version == 1:
            obj = _upgrade_v1(obj)
        try:
            rec = parse(obj)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"][1:]) or str(err["loc"][0])  # loc[0] is the record kind
            raise SchemaError(f"{path}:{n}: {obj.get('kind', 'record')} record, field {where!r}: {err['msg']}") \
                from None
        if isinstance(rec, Header):
            out.header = rec
        else:
            out.records.append(rec)
    return out
