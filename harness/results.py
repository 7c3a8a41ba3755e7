"""``reports/<env>/results.jsonl``: one JSON object per line, streamed as results arrive.

The first line is the ``header`` record; its ``status`` is ``running`` while
the run goes on and is rewritten to ``complete`` or ``interrupted`` at the
end (a run killed outright keeps ``running``: readers treat it as partial).
See the README for the schema.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def _clean(v: Any) -> Any:
    """JSON has no NaN/Inf: non-finite floats become strings ("nan", "inf", "-inf")."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(_clean(record), allow_nan=False, default=str)


def header(env: str, versions: dict[str, str], cases_hash: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "header", "schema_version": SCHEMA_VERSION, "env": env, "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions, "cases_hash": cases_hash,
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                     "processor": platform.processor(), "python": sys.version.split()[0],
                     "cpu_count": os.cpu_count(), "node": platform.node()},
        **extra,
    }


class ResultsWriter:
    """Appends records line by line (flushed), and rewrites the header at the end."""

    def __init__(self, path: Path, head: dict[str, Any]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.head = head
        self._f = open(self.path, "w", encoding="utf-8")
        self._write(head)
        self.count = 0

    def _write(self, rec: dict[str, Any]) -> None:
        self._f.write(dumps(rec) + "\n")
        self._f.flush()

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self._write(r)
            self.count += 1

    def finish(self, status: str, **extra: Any) -> None:
        """Close the file and rewrite line 1 with the final status (atomically)."""
        if self._f.closed:
            return
        self._f.close()
        self.head.update(status=status, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), records=self.count, **extra)
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(self.path, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
            src.readline()
            dst.write(dumps(self.head) + "\n")
            for line in src:
                dst.write(line)
        os.replace(tmp, self.path)


def read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, records) of one results file; a torn last line is dropped."""
    head: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("kind") == "header" and not head:
                head = rec
            else:
                records.append(rec)
    return head, records
