"""The ledger file: validated like a case file, every error a CaseError naming the file, the entry and the
field; the catalogue's ledger loads unchanged."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from harness.cases import CaseError
from harness.ledger import KINDS, Entry, load_ledger

REPO = Path(__file__).resolve().parents[2]

ENTRY = """[[difference]]
id = "d1"
adapter = "torch"
versions = ">=2.0"
cases = "offset_*"
quantity = ["y", "running_var"]
kind = "numerical weakness"
observed = "what was measured"
reason = "why it happens"
link = "https://github.com/pytorch/pytorch/issues/1"
"""


def _with(line: str, value: str | None) -> str:
    """ENTRY with one field replaced (value None: removed) or added."""
    lines = [ln for ln in ENTRY.splitlines() if not ln.startswith(f"{line} =")]
    if value is not None:
        lines.append(f"{line} = {value}")
    return "\n".join(lines) + "\n"


BAD = [
    # (what, file text or bytes, what the message must name besides the file)
    ("unknown field", _with("colour", '"red"'), ["difference 'd1'", "field 'colour'", "unknown field"]),
    ("kind not one of three", _with("kind", '"bug"'), ["difference 'd1'", "field 'kind'", "framework bug"]),
    ("kind a number", _with("kind", "5"), ["difference 'd1'", "field 'kind'"]),
    ("http link", _with("link", '"http://example.com/x"'), ["difference 'd1'", "field 'link'", "https"]),
    ("link without host", _with("link", '"https://"'), ["difference 'd1'", "field 'link'", "https"]),
    ("link with a space", _with("link", '"https://a.org/x y"'), ["difference 'd1'", "field 'link'"]),
    ("versions not PEP 440", _with("versions", '"2.0+"'), ["difference 'd1'", "field 'versions'", "PEP 440"]),
    ("versions a number", _with("versions", "2.0"), ["difference 'd1'", "field 'versions'", "string"]),
    ("versions empty", _with("versions", '""'), ["difference 'd1'", "field 'versions'"]),
    ("missing reason", _with("reason", None), ["difference 'd1'", "field 'reason'", "missing"]),
    ("blank observed", _with("observed", '"   "'), ["difference 'd1'", "field 'observed'", "empty"]),
    ("missing id", _with("id", None), ["difference #1", "field 'id'", "missing"]),
    ("adapter a number", _with("adapter", "5"), ["difference 'd1'", "field 'adapter'"]),
    ("adapter list with a number", _with("adapter", '["torch", 5]'), ["difference 'd1'", "field 'adapter.1'"]),
    ("adapter empty list", _with("adapter", "[]"), ["difference 'd1'", "field 'adapter'"]),
    ("quantity matches none", _with("quantity", '"runing_var"'),
     ["difference 'd1'", "field 'quantity'", "matches no quantity"]),
    ("quantity a table", _with("quantity", "{ y = 1 }"), ["difference 'd1'", "field 'quantity'"]),
    ("unscoped", _with("cases", None), ["difference 'd1'", "field 'cases'", "scoped"]),
    ("tags a string of spaces", _with("tags", '" "'), ["difference 'd1'", "field 'tags'", "without spaces"]),
    ("duplicate id", ENTRY + ENTRY, ["difference 'd1'", "field 'id'", "duplicate"]),
    ("difference = 5", "difference = 5\n", ["field 'difference'", "array of tables"]),
    ("difference = [5]", "difference = [5]\n", ["difference #1", "must be a table"]),
    ("unknown top-level table", ENTRY + "[notes]\nx = 1\n", ["top-level table 'notes'"]),
    ("not TOML", "[[difference]\n", ["not valid TOML"]),
    ("non-UTF-8 in a field", ENTRY.encode().replace(b"why it", b"why \xff it"),
     ["difference 'd1'", "field 'reason'", "not UTF-8"]),
    ("UTF-16", ENTRY.encode("utf-16"), ["not UTF-8", "UTF-16"]),
    ("nested 50000 deep", ENTRY + "tags = " + "[" * 50_000 + "]" * 50_000 + "\n",
     ["difference 'd1'", "field 'tags", "nested more than"]),
]


@pytest.mark.parametrize("what,data,must", BAD, ids=[b[0] for b in BAD])
def test_bad_ledger_names_file_entry_and_field(tmp_path, what, data, must):
    f = tmp_path / "known_differences.toml"
    f.write_bytes(data if isinstance(data, bytes) else data.encode())
    with pytest.raises(CaseError) as ei:
        load_ledger(f)
    msg = str(ei.value)
    assert msg.startswith(f"{f}: "), msg
    for m in must:
        assert m in msg, (m, msg)


def test_good_entry_and_its_scope(tmp_path):
    f = tmp_path / "l.toml"
    f.write_text(ENTRY + _with("id", '"d2"').replace('"offset_*"', '["a", "b*"]')
                 .replace('adapter = "torch"', 'adapter = ["keras3-*", "torch"]'))
    a, b = load_ledger(f)
    assert isinstance(a, Entry) and a.adapter == ("torch",) and a.cases == ("offset_*",)
    assert b.adapter == ("keras3-*", "torch") and b.cases == ("a", "b*") and a.quantity == ("y", "running_var")
    assert a.kind in KINDS and a.as_record().link == a.link


def test_catalogue_ledger_loads():
    entries = load_ledger(REPO / "cases" / "known_differences.toml")
    assert len(entries) >= 20 and len({e.id for e in entries}) == len(entries)


def test_no_ledger_file_is_an_empty_ledger(tmp_path):
    assert load_ledger(tmp_path / "absent.toml") == [] and load_ledger(None) == []


def test_every_evidence_case_is_in_the_catalogue_and_inside_its_entry():
    """An entry is judged stale in its evidence cases: each must exist, and lie inside the entry's scope and
    conditions (measured on the case's inputs), or the entry could never be judged and would rot unnoticed."""
    from harness import inputs
    from harness.cases import load_cases
    from harness.ledger import case_facts

    cases = {c.name: c for c in load_cases([REPO / "cases"])}
    for e in load_ledger(REPO / "cases" / "known_differences.toml"):
        for glob in e.evidence:
            names = [n for n in cases if fnmatch.fnmatchcase(n, glob)]
            assert names, f"{e.id}: evidence {glob!r} names no catalogue case"
            for n in names:
                c = cases[n]
                assert not e.cases or any(fnmatch.fnmatchcase(n, p) for p in e.cases), (e.id, n)
                assert not any(fnmatch.fnmatchcase(n, p) for p in e.not_cases), (e.id, n)
                assert not e.tags or set(e.tags) & set(c.tags), (e.id, n)
                assert not e.when or e.when.holds(case_facts(c, inputs.build(c))), \
                    f"{e.id}: its conditions do not hold on its evidence case {n}"
