"""The ledger of known differences (``cases/known_differences.toml``).

Each ``[[difference]]`` scopes one real, understood discrepancy:

    [[difference]]
    id = "torch-...";  adapter = "torch";  versions = ">=2.0"   # adapter: glob or list; PEP 440 versions
    cases = "batch1_*"      # name glob (or a list); or tags = ["..."]; not_cases = [...] excludes
    quantity = "running_var*"   # glob (or list of globs) over quantity names; "outcome" = raise/crash/timeout
    kind = "framework bug" | "numerical weakness" | "undocumented behaviour"
    observed = "what was measured"; reason = "why"; link = "https://..."

An entry is validated like a case (the pydantic model ``Entry``, errors naming the file, the entry and
the field): no unknown field, no coercion, ``kind`` one of the three, ``link`` an https:// address,
``versions`` a PEP 440 specifier, every ``quantity`` glob matching some quantity (one that matches
none would never be judged, not even as stale), and a scope (``cases`` or ``tags``).

Strict both ways: a failing quantity that no entry covers fails; an entry
that applies to a (case, adapter) cell but covers no failure there is stale
and fails too (``apply_ledger``).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, field_validator, model_validator

from harness.cases import (
    Case,
    CaseError,
    FieldProblem,
    StrictModel,
    Text,
    format_errors,
    read_toml,
    table_label,
    toml_type,
)
from harness.schema import LedgerRef, Quantity, Result, Verdict

Kind = Literal["framework bug", "numerical weakness", "undocumented behaviour"]
KINDS: tuple[str, ...] = Kind.__args__


def _listed(v):
    """A glob may be given alone or in a list."""
    return [v] if isinstance(v, str) else v


def _glob(v: str) -> str:
    if not v or any(ch.isspace() for ch in v):
        raise ValueError("must be a name or glob, without spaces")
    return v


Glob = Annotated[str, AfterValidator(_glob)]
Globs = Annotated[tuple[Glob, ...], BeforeValidator(_listed), Field(strict=False)]


class Entry(StrictModel):
    """One ``[[difference]]``: strict like a case (no unknown field, no coercion)."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+-]+$")]
    adapter: Annotated[Globs, Field(min_length=1)]
    quantity: Annotated[Globs, Field(min_length=1)]
    kind: Kind
    observed: Text
    reason: Text
    link: str
    versions: str = ""
    cases: Globs = ()
    tags: Globs = ()
    not_cases: Globs = ()

    @field_validator("quantity")
    @classmethod
    def _known_quantity(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        names = [q.value for q in Quantity]
        for glob in v:  # a glob that covers no quantity would never be judged, not even as stale
            if not fnmatch.filter(names, glob):
                raise ValueError(f"{glob!r} matches no quantity ({', '.join(names)})")
        return v

    @field_validator("link")
    @classmethod
    def _https(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme != "https" or not parts.netloc or any(ch.isspace() for ch in v):
            raise ValueError("must be an https:// link to source or an issue")
        return v

    @field_validator("versions")
    @classmethod
    def _pep440(cls, v: str) -> str:
        try:
            SpecifierSet(v)
        except InvalidSpecifier:
            raise ValueError("not a PEP 440 version specifier (like '>=2.0' or '>=3.0,<3.12')") from None
        if not v.strip():
            raise ValueError("empty: leave versions out to mean every version")
        return v

    @model_validator(mode="after")
    def _scoped(self):
        if not (self.cases or self.tags):
            raise FieldProblem("cases", "give a case glob or tags (an entry must be scoped)")
        return self

    def applies(self, case: Case, adapter: str, version: str | None) -> bool:
        """Does this entry scope the (case, adapter) cell at this framework version?"""
        if not any(fnmatch.fnmatchcase(adapter, a) for a in self.adapter):
            return False
        if self.versions:
            if version is None:
                return False
            try:
                if Version(version) not in SpecifierSet(self.versions):
                    return False
            except InvalidVersion:
                return False
        if self.cases and not any(fnmatch.fnmatchcase(case.name, p) for p in self.cases):
            return False
        if self.tags and not set(self.tags) & set(case.tags):
            return False
        return not any(fnmatch.fnmatchcase(case.name, p) for p in self.not_cases)

    def covers(self, quantity: str) -> bool:
        return any(fnmatch.fnmatchcase(quantity, q) for q in self.quantity)

    def as_record(self) -> LedgerRef:
        return LedgerRef(id=self.id, kind=self.kind, reason=self.reason, link=self.link, observed=self.observed,
                         versions=self.versions)


def load_ledger(path: Path | None) -> list[Entry]:
    """The entries of a ledger file (none when there is no file); every error is a CaseError naming the file,
    the entry and the field."""
    if path is None or not Path(path).exists():
        return []
    path = Path(path)
    raw = read_toml(path)
    extra = set(raw) - {"difference"}
    if extra:
        raise CaseError(f"{path}: top-level table '{sorted(extra)[0]}': unknown (a ledger holds [[difference]])")
    items = raw.get("difference", [])
    if not isinstance(items, list):
        raise CaseError(f"{path}: field 'difference': must be an array of tables ([[difference]]), "
                        f"got {toml_type(items)}")
    entries: list[Entry] = []
    seen: set[str] = set()
    for i, body in enumerate(items):
        who, _ = table_label(raw, ("difference", i))
        if not isinstance(body, dict):
            raise CaseError(f"{path}: difference #{i + 1}: must be a table ([[difference]]), got {toml_type(body)}")
        try:
            entry = Entry.model_validate(body)
        except ValidationError as e:
            raise CaseError(format_errors(e, f"{path}: {who}", body, whole="(entry)")) from None
        if entry.id in seen:
            raise CaseError(f"{path}: {who}: field 'id': duplicate")
        seen.add(entry.id)
        entries.append(entry)
    return entries


def apply_ledger(case: Case, adapter: str, version: str | None, ledger: list[Entry],
                 records: list[Result]) -> list[Result]:
    """Mark every failing record an applicable entry covers ``known``; return a ``stale`` record for each
    applicable entry that covered nothing where what it covers was compared."""
    entries = [e for e in ledger if e.applies(case, adapter, version)]
    used: set[str] = set()
    for r in records:
        if r.verdict.fails_run and r.verdict != Verdict.STALE:
            explaining = [e for e in entries if e.covers(r.quantity)]
            if explaining:  # every entry that explains a failure is in use, the first is shown
                r.verdict = Verdict.KNOWN
                r.ledger = explaining[0].as_record()
                r.ledger_ids = [e.id for e in explaining]
                used.update(e.id for e in explaining)
    compared = {r.quantity for r in records if r.verdict != Verdict.SKIP and r.quantity != "outcome"}
    head = records[0]
    stale = []
    for e in entries:
        # an entry is judged only where what it covers was compared (not when the call raised or crashed)
        if e.id not in used and (any(e.covers(q) for q in compared) or e.covers("outcome")):
            covers = "|".join(e.quantity)
            stale.append(Result(env=head.env, case=head.case, adapter=head.adapter, framework=head.framework,
                                framework_version=head.framework_version, quantity=None, covers=list(e.quantity),
                                verdict=Verdict.STALE, ledger=e.as_record(),
                                message=(f"ledger entry {e.id!r} expects a difference in {covers!r} here, but nothing "
                                         "differed: the framework changed or the entry is too wide")))
    return stale
