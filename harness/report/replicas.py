"""Data parallelism side by side: per case (a data-parallel configuration: replicas and split), environment and
framework, the synchronized and the per-replica case next to each other, with what each computes and keeps.

A row is one adapter on one configuration: the cell verdicts with ``sync = true`` and ``false``, the running
statistics convention it declares (``Conventions.replica_running``: replica 0's copy, or the replicas' mean) and how
it reduces the parameters' gradients (``replica_gradients``), the running variance that survived the last training
call in each (``harness.adapters.replicas``: the first channel, and how far the replicas' own copies parted), the
skip reasons, and what the case cost (the worker's wall time). ``markdown`` writes the rows as tables
(``bnparity report --replicas FILE``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from harness.adapters.replicas import COPIES_SPREAD, KEPT_VAR
from harness.report.model import Model, ReportCell

KEPT_WORDS = {"first": "replica 0's copy", "mean": "the replicas' mean"}


@dataclass
class ReplicaRow:
    env: str
    config: str  # "2 replicas", "2 replicas, split [2, 6]"
    adapter: str
    by_sync: dict[bool, ReportCell] = field(default_factory=dict)

    def convention(self) -> str:
        cell = next((c for c in self.by_sync.values() if c.record), None)
        if cell is None:
            return ""
        conv = cell.record.conventions
        return (f"keeps {KEPT_WORDS.get(conv.get('replica_running'), conv.get('replica_running'))}; gradients "
                f"{conv.get('replica_gradients')}")


def _config(params: dict) -> str | None:
    dp = params.get("data_parallel")
    if not isinstance(dp, dict):
        return None
    split = dp.get("split")
    return f"{dp.get('replicas')} replicas" + (f", split {list(split)}" if split else "")


def replica_rows(m: Model) -> list[ReplicaRow]:
    """One row per (environment, case configuration, adapter) of the data-parallel cells; a configuration is the case
    parameters but ``sync`` (the catalogue's ``<name>_sync`` / ``<name>_local`` sweeps)."""
    rows: dict[tuple, ReplicaRow] = {}
    for (env, case, adapter), cell in sorted(m.cells.items()):
        info = m.cases.get(case)
        params = dict(info.params) if info else {}
        config = _config(params)
        if config is None:
            continue
        dp = dict(params.pop("data_parallel"))
        sync = bool(dp.pop("sync", False))
        base = (params.get("sweep") or {}).get("name") or case
        key = (env, base, config, adapter)
        row = rows.setdefault(key, ReplicaRow(env, f"{base}: {config}", adapter))
        row.by_sync[sync] = cell
    return list(rows.values())


def _verdict(cell: ReportCell | None) -> str:
    if cell is None:
        return "-"
    return cell.verdict.value


def _kept(cell: ReportCell | None) -> str:
    if cell is None or cell.record is None or KEPT_VAR not in cell.record.info:
        return ""
    var = cell.record.info[KEPT_VAR]
    spread = cell.record.info.get(COPIES_SPREAD)
    return f"{var[0]:.6g}" + (f" (copies part by {spread:.3g})" if spread else "")


def _skip(cell: ReportCell | None) -> str:
    out = cell.outcome if cell is not None else None
    return out.message[:120] if out is not None and out.verdict.value == "skip" else ""


def _cost(cell: ReportCell | None) -> str:
    rec = cell.record if cell is not None else None
    return f"{rec.wall_s:.2f} s" if rec is not None and rec.wall_s is not None else ""


def side(cell: ReportCell | None) -> dict[str, str]:
    """One side (sync on or off) of a row, in words: the cell verdict, the running variance kept, the cost and the
    skip reason (the page's Data parallelism section and ``markdown`` both show these)."""
    return {"verdict": _verdict(cell), "kept": _kept(cell), "cost": _cost(cell), "skip": _skip(cell)}


def markdown(rows: list[ReplicaRow]) -> str:
    """One table per environment and configuration: adapters as rows, sync on and off side by side."""
    by: dict[tuple[str, str], list[ReplicaRow]] = defaultdict(list)
    for r in rows:
        by[(r.env, r.config)].append(r)
    head = ["adapter", "sync: verdict", "sync: running_var kept (ch 0)", "sync: cost", "local: verdict",
            "local: running_var kept (ch 0)", "local: cost", "convention", "skipped (why)"]
    parts = []
    for (env, config), rs in sorted(by.items()):
        lines = [f"### {config} ({env})", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in sorted(rs, key=lambda r: r.adapter):
            s, loc = side(r.by_sync.get(True)), side(r.by_sync.get(False))
            skips = "; ".join(dict.fromkeys(x for x in (s["skip"], loc["skip"]) if x))
            cols = [r.adapter, s["verdict"], s["kept"], s["cost"], loc["verdict"], loc["kept"], loc["cost"],
                    r.convention(), skips]
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cols) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
