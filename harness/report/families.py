"""Scenario families side by side: for each family of cases (the matrix's groups: a case's first tag) and each
environment, one row per adapter with what the framework does there.

A row says what a user porting a model across frameworks needs for that family at a glance: the convention the
adapter declares for it (``FAMILY_CONVENTIONS``: a frozen layer runs in inference mode in Keras, with batch
statistics in torch and Flax), how many cases ran and with which cell verdicts, why the others were skipped (the
framework has no mask, no frozen layer, refuses float64), the worst error over its bound, and the ledger
mechanisms its known differences cite: the differences between frameworks that the family reveals. The page's
"Families" section shows the rows; ``markdown`` writes them as tables for an issue or a release note
(``bnparity report --families FILE``).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from harness.report.model import Model, ReportCell
from harness.report.text import fmt_ratio
from harness.schema import Quantity, Verdict

# the declared conventions (``harness.adapters.base.Conventions`` fields) a family is about: (field, note field)
FAMILY_CONVENTIONS: dict[str, tuple[str, str]] = {
    "frozen": ("frozen_call", "frozen_note"),
}


@dataclass
class Mechanism:
    id: str
    link: str
    kind: str
    records: int = 0


@dataclass
class FamilyRow:
    """One adapter in one family and environment."""

    adapter: str
    verdicts: Counter[Verdict] = field(default_factory=Counter)  # cell verdicts (skips included)
    skips: Counter[str] = field(default_factory=Counter)  # skip reason -> cells
    does: str = ""  # the family's declared convention, with its note
    worst: float | None = None  # the largest error/bound over the family's compared records
    mechanisms: dict[str, Mechanism] = field(default_factory=dict)  # ledger id -> what cites it

    @property
    def ran(self) -> int:
        return sum(n for v, n in self.verdicts.items() if v is not Verdict.SKIP)

    def verdict_text(self) -> str:
        """'12 pass, 3 known' in severity order (worst first), skips left out (``skips`` says why)."""
        return ", ".join(f"{n} {v}" for v, n in sorted(self.verdicts.items(), key=lambda kv: kv[0].severity)
                         if v is not Verdict.SKIP)


@dataclass
class Family:
    name: str
    env: str
    cases: list[str]
    rows: list[FamilyRow]


def _does(cell: ReportCell, family: str) -> str:
    conv = FAMILY_CONVENTIONS.get(family)
    if conv is None or cell.record is None:
        return ""
    value, note = (cell.record.conventions.get(f, "") for f in conv)
    if not value and not note:
        return ""
    return f"{value or 'none'}: {note}" if note else str(value)


def families(model: Model) -> list[Family]:
    """The families of ``model`` (the matrix's groups), per environment, each adapter that has a cell in it."""
    out = []
    for group, infos in model.groups():
        names = [c.name for c in infos]
        for env in model.envs:
            rows = []
            for adapter in env.adapters:
                cells = [c for n in names if (c := model.cells.get((env.key, n, adapter))) is not None]
                if not cells:
                    continue
                row = FamilyRow(adapter)
                for c in cells:
                    row.verdicts[c.verdict] += 1
                    if c.verdict is Verdict.SKIP:
                        row.skips[(c.outcome.message if c.outcome else "") or "skipped"] += 1
                        continue
                    row.does = row.does or _does(c, group)
                    ratio = c.headline().ratio
                    if ratio is not None and not math.isnan(ratio):
                        row.worst = ratio if row.worst is None else max(row.worst, ratio)
                    for r in c.results:
                        if r.ledger is not None and r.verdict is Verdict.KNOWN and r.quantity is not Quantity.OUTCOME:
                            m = row.mechanisms.setdefault(r.ledger.id, Mechanism(r.ledger.id, r.ledger.link,
                                                                                 r.ledger.kind))
                            m.records += 1
                rows.append(row)
            if rows:
                out.append(Family(group, env.key, names, rows))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(fams: list[Family]) -> str:
    """The families as Markdown: one table per family and environment, adapters as rows."""
    parts = []
    for f in fams:
        conv = FAMILY_CONVENTIONS.get(f.name)
        head = ["adapter", "cells run", "verdicts", "worst error/bound"]
        head += [conv[0]] if conv else []
        head += ["skipped (why)", "ledger mechanisms"]
        lines = [f"### {f.name} ({f.env}, {len(f.cases)} cases)", "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]
        for r in f.rows:
            skips = "; ".join(f"{n}: {reason[:160]}" for reason, n in r.skips.most_common())
            mech = ", ".join(f"{m.id} ({m.records})" for m in sorted(r.mechanisms.values(), key=lambda m: m.id))
            cols = [r.adapter, str(r.ran), r.verdict_text(), fmt_ratio(r.worst) if r.worst is not None else ""]
            cols += [r.does] if conv else []
            cols += [skips, mech]
            lines.append("| " + " | ".join(_cell(c) for c in cols) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
