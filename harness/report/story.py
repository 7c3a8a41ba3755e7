"""Drift as a story: per adapter and pair of versions, what changed and which known mechanisms came or went.

``analysis.drift`` lists one row per (case, adapter) whose behaviour differs between environments.
This module reads those rows per adapter, walks its environments in the order of its framework
version (older first; environments of one version in the report's order), and for each step from
one environment to the next says, counted in cases:

* per quantity: ``fixed`` (differed from the oracle, now does not), ``broken`` (the reverse),
  ``known -> fail``-style verdict changes between two differing verdicts, and ``error 10x larger``
  or ``smaller`` (the worst error in ULPs an order of magnitude apart, the verdict the same);
* the call's outcome: ``raised -> pass`` and the like;
* the mechanisms, the ledger entries (``cases/known_differences.toml``) that explain this adapter's
  differences: ``gone`` (matched cases in the older environment, none in the newer), ``stale`` (gone,
  and the newer environment reports the entry stale: an expected difference that no longer happens),
  ``new``, ``unchanged`` (the same cases counts in both) or ``changed``.

    >>> for s in summaries(model, drift(model)): print(s.text)
    keras3-torch 3.0.4 -> 3.15.1 (keras30 -> current): dx fixed on 55 cases; ledger: keras-dx gone (55 -> 0 cases)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version

from harness.report.analysis import Drift, orders_apart
from harness.report.model import Model, ReportCell
from harness.schema import Quantity, Verdict


@dataclass(frozen=True)
class Mechanism:
    """A ledger entry and how many of the adapter's cases it explains (known) or is stale on, in each
    environment of a pair."""

    id: str
    reason: str
    before: int  # cases whose records name it as the explanation (known), in the older environment
    after: int
    stale_before: int = 0  # cases where it applies but matched nothing (stale)
    stale_after: int = 0

    @property
    def change(self) -> str:
        if self.before and not self.after:
            return "stale" if self.stale_after else "gone"
        if self.after and not self.before:
            return "new"
        return "unchanged" if (self.before, self.stale_before) == (self.after, self.stale_after) else "changed"

    @staticmethod
    def _count(known: int, stale: int) -> str:
        parts = [f"{known} case{'s' if known != 1 else ''}"] if known or not stale else []
        return ", ".join(parts + ([f"stale on {stale}"] if stale else []))

    @property
    def text(self) -> str:
        before, after = self._count(self.before, self.stale_before), self._count(self.after, self.stale_after)
        if self.change == "unchanged":
            return f"{self.id} unchanged ({before})"
        return f"{self.id} {self.change} ({before} -> {after})"


@dataclass
class Summary:
    """One adapter's change from one environment to the next."""

    adapter: str
    env_from: str
    env_to: str
    version_from: str | None
    version_to: str | None
    changes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (quantity, what) -> cases
    cases: set[str] = field(default_factory=set)  # the cases whose behaviour changed
    ledger_only: int = 0  # cases whose verdict changed only through the ledger's version scope
    mechanisms: list[Mechanism] = field(default_factory=list)

    @property
    def title(self) -> str:
        return (f"{self.adapter} {self.version_from or '?'} -> {self.version_to or '?'} "
                f"({self.env_from} -> {self.env_to})")

    def change_texts(self) -> list[str]:
        """'dx fixed on 55 cases', most cases first."""
        out = []
        for (q, what), n in sorted(self.changes.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"{q} {what} on {n} case{'s' if n != 1 else ''}")
        if self.ledger_only:
            out.append(f"{self.ledger_only} case{'s' if self.ledger_only != 1 else ''} changed only through the "
                       "ledger's version scope (same bits)")
        return out

    @property
    def text(self) -> str:
        parts = self.change_texts() or ["no change of verdict or error magnitude"]
        mech = [m.text for m in self.mechanisms]
        return f"{self.title}: " + "; ".join(parts) + (f"; ledger: {', '.join(mech)}" if mech else "")


def _version_key(v: str | None) -> tuple[int, Version | str]:
    try:
        return (0, Version(v or ""))
    except InvalidVersion:
        return (1, v or "")


def _worst(cell: ReportCell, q: Quantity) -> Verdict | None:
    vs = [r.verdict for r in cell.results if r.quantity == q]
    return Verdict.worst(vs) if vs else None


def quantity_changes(a: ReportCell, b: ReportCell) -> list[tuple[str, str]]:
    """(quantity, what) for each quantity whose behaviour changed from cell ``a`` to cell ``b``."""
    out = []
    for q in Quantity:
        va, vb = _worst(a, q), _worst(b, q)
        if va is None or vb is None:
            continue
        if q is Quantity.OUTCOME:
            if va != vb:
                out.append(("outcome", f"{va} -> {vb}"))
            continue
        if va.differs and not vb.differs:
            out.append((q.value, "fixed"))
        elif vb.differs and not va.differs:
            out.append((q.value, "broken"))
        elif va != vb and va.differs:
            out.append((q.value, f"{va} -> {vb}"))
        else:
            ua, ub = a.max_ulp(q), b.max_ulp(q)
            if orders_apart(ua, ub) and ua is not None and ub is not None:
                out.append((q.value, "error 10x larger" if ub > ua else "error 10x smaller"))
    return out


def _ledger_cases(model: Model, adapters: Iterable[str]) -> dict[tuple[str, str], dict[str, tuple[set, set, str]]]:
    """(env, adapter) -> {ledger id: (cases it explains, cases where it is stale, reason)}."""
    wanted = set(adapters)
    out: dict[tuple[str, str], dict[str, tuple[set, set, str]]] = defaultdict(dict)
    for (env, case, adapter), cell in model.cells.items():
        if adapter not in wanted:
            continue
        for r in cell.results:
            if r.ledger is None:
                continue
            known, stale, _ = out[(env, adapter)].setdefault(r.ledger.id, (set(), set(), r.ledger.reason))
            (stale if r.verdict is Verdict.STALE else known).add(case)
    return out


def summaries(model: Model, drifts: list[Drift]) -> list[Summary]:
    """Per adapter and consecutive pair of its environments (by framework version), what changed."""
    by_adapter: dict[str, list[Drift]] = defaultdict(list)
    for d in drifts:
        by_adapter[d.adapter].append(d)
    order = {e.key: i for i, e in enumerate(model.envs)}
    ledger = _ledger_cases(model, by_adapter)
    out = []
    for adapter, rows in sorted(by_adapter.items()):
        versions: dict[str, Counter[str | None]] = defaultdict(Counter)
        for d in rows:
            for env, c in d.cells.items():
                versions[env][c.framework_version] += 1
        version = {env: cnt.most_common(1)[0][0] for env, cnt in versions.items()}
        envs = sorted(version, key=lambda e: (_version_key(version[e]), order.get(e, len(order))))
        for a, b in zip(envs, envs[1:]):
            s = Summary(adapter, a, b, version[a], version[b])
            for d in rows:
                ca, cb = d.cells.get(a), d.cells.get(b)
                if ca is None or cb is None:
                    continue
                if d.ledger_only:
                    if ca.verdict != cb.verdict:
                        s.ledger_only += 1
                    continue
                found = quantity_changes(ca, cb)
                for key in found:
                    s.changes[key] += 1
                if found:
                    s.cases.add(d.case)
            la, lb = ledger.get((a, adapter), {}), ledger.get((b, adapter), {})
            for lid in sorted(set(la) | set(lb)):
                ka, sa, reason = la.get(lid, (set(), set(), ""))
                kb, sb, reason_b = lb.get(lid, (set(), set(), ""))
                s.mechanisms.append(Mechanism(lid, reason or reason_b, len(ka), len(kb), len(sa), len(sb)))
            if s.changes or s.ledger_only or any(m.change != "unchanged" for m in s.mechanisms):
                out.append(s)
    return out
