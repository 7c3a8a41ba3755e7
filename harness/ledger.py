"""The ledger of known differences (``cases/known_differences.toml``).

Each ``[[difference]]`` scopes one real, understood discrepancy:

    [[difference]]
    id = "torch-...";  adapter = "torch";  versions = ">=2.0"   # adapter: glob or list; PEP 440 versions
    cases = "batch1_*"      # name glob (or a list); or tags = ["..."]; not_cases = [...] excludes
    quantity = "running_var*"   # glob (or list of globs) over quantity names; "outcome" = raise/crash/timeout
    kind = "framework bug" | "numerical weakness" | "undocumented behaviour"
    observed = "what was measured"; reason = "why"; link = "https://..."

Strict both ways: a failing quantity that no entry covers fails; an entry
that applies to a (case, adapter) cell but covers no failure there is stale
and fails too (``apply_ledger``).
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from harness.cases import Case, CaseError
from harness.schema import LedgerRef, Result, Verdict

KINDS = ("framework bug", "numerical weakness", "undocumented behaviour")
REQUIRED = ("id", "adapter", "quantity", "kind", "observed", "reason", "link")
ALLOWED = set(REQUIRED) | {"versions", "cases", "tags", "not_cases"}


@dataclass(frozen=True)
class Entry:
    id: str
    adapter: tuple[str, ...]
    quantity: tuple[str, ...]
    kind: str
    observed: str
    reason: str
    link: str
    versions: str = ""
    cases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    not_cases: tuple[str, ...] = ()

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


def _tuple(v) -> tuple[str, ...]:
    return (v,) if isinstance(v, str) else tuple(v)


def load_ledger(path: Path | None) -> list[Entry]:
    if path is None or not Path(path).exists():
        return []
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise CaseError(f"{path}: not valid TOML: {e}") from None
    entries, seen = [], set()
    for i, body in enumerate(raw.get("difference", [])):
        where = f"{path}: difference {body.get('id', f'#{i + 1}')!r}"
        for key in REQUIRED:
            if not str(body.get(key, "")).strip():
                raise CaseError(f"{where}: field '{key}': required field is missing")
        extra = set(body) - ALLOWED
        if extra:
            raise CaseError(f"{where}: field '{sorted(extra)[0]}': unknown field")
        if body["kind"] not in KINDS:
            raise CaseError(f"{where}: field 'kind': must be one of {KINDS}, got {body['kind']!r}")
        if not str(body["link"]).startswith("https://"):
            raise CaseError(f"{where}: field 'link': must be an https:// link to source or an issue")
        if body.get("versions"):
            try:
                SpecifierSet(body["versions"])
            except InvalidSpecifier:
                raise CaseError(f"{where}: field 'versions': not a PEP 440 specifier: {body['versions']!r}") from None
        if not (body.get("cases") or body.get("tags")):
            raise CaseError(f"{where}: field 'cases': give a case glob or tags (an entry must be scoped)")
        if body["id"] in seen:
            raise CaseError(f"{where}: field 'id': duplicate")
        seen.add(body["id"])
        entries.append(Entry(**{**body, "cases": _tuple(body.get("cases", ())), "tags": _tuple(body.get("tags", ())),
                                "not_cases": _tuple(body.get("not_cases", ())),
                                "quantity": _tuple(body["quantity"]), "adapter": _tuple(body["adapter"])}))
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
