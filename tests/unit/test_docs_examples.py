"""Every TOML example in README.md and docs/*.md loads as what it shows: a case file through the case
loader, a ledger entry through the ledger loader, a pyproject snippet as an entry point of the adapters'
group; the tox.ini example parses as INI; the error message the README quotes is the loader's own."""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

import pytest

from harness.adapters.base import ENTRY_POINT_GROUP
from harness.cases import CaseError, load_file
from harness.ledger import load_ledger

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\n(.*?)^```$", re.M | re.S)


def blocks(lang: str | None = None) -> list[tuple[str, str, str]]:
    """(where, language, text) of every fenced block; where is 'file:line'."""
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if lang is None or m.group(1) == lang:
                line = text.count("\n", 0, m.start()) + 1
                out.append((f"{doc.relative_to(REPO)}:{line}", m.group(1), m.group(2)))
    return out


TOML = blocks("toml")


@pytest.mark.parametrize("where,lang,text", TOML, ids=[b[0] for b in TOML])
def test_toml_example_loads(tmp_path, where, lang, text):
    top = set(tomllib.loads(text))
    f = tmp_path / "example.toml"
    f.write_text(text, encoding="utf-8")
    if top == {"difference"}:
        assert load_ledger(f), where
    elif top == {"project"}:  # a pyproject.toml snippet registering an adapter
        group = tomllib.loads(text)["project"]["entry-points"][ENTRY_POINT_GROUP]
        assert group and all(re.fullmatch(r"[\w.]+:[\w.]+", v) for v in group.values()), (where, group)
    else:
        assert top <= {"defaults", "case", "sweep"}, (where, top)
        assert load_file(f), where


def test_every_kind_of_toml_example_is_there():
    """The README shows a case, a sweep and a ledger entry; the test above must have run them all."""
    kinds = [set(tomllib.loads(text)) for _, _, text in TOML]
    assert {"case"} in kinds and {"sweep"} in kinds and {"difference"} in kinds, kinds


def test_no_toml_example_hides_under_another_fence():
    for where, lang, text in blocks():
        if lang != "toml":
            assert not re.search(r"^\[\[(case|sweep|difference)\]\]", text, re.M), f"{where}: fence it ```toml"


def test_ini_example_parses():
    ini = blocks("ini")
    assert ini
    for where, _, text in ini:
        p = configparser.ConfigParser(interpolation=None)
        p.read_string(text)
        env = [s for s in p.sections() if s.startswith("testenv:")]
        assert env and all(p.has_option(s, "deps") and p.has_option(s, "commands") for s in env), where


def test_quoted_error_message_is_the_loaders(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (quoted,) = re.findall(r"`(cases/x\.toml: case [^`]+)`", readme)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cases").mkdir()
    Path("cases/x.toml").write_text('[[case]]\nname = "c1"\nshape = [4, 3]\neps = -1\n')
    with pytest.raises(CaseError) as ei:
        load_file(Path("cases/x.toml"))
    assert str(ei.value) == quoted


def test_every_tox_command_shown_names_an_environment_and_valid_arguments():
    """`tox -e ENV [-- ARGS]` lines in the README: ENV is in tox.ini, and ARGS of `tox -e fuzz` parse as
    bnparity fuzz's own (the fuzz self-test runs the command itself)."""
    import shlex

    from harness import fuzz

    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    envs = {s.split(":", 1)[1] for s in ini.sections() if s.startswith("testenv:")} | {"unit"}
    shown = [ln.split("#")[0].strip() for _, lang, text in blocks() if lang in ("", "sh", "bash")
             for ln in text.splitlines() if ln.strip().startswith("tox -e ")]
    assert any(ln.startswith("tox -e fuzz") for ln in shown)
    for ln in shown:
        words = shlex.split(ln)
        assert all(e in envs for e in words[2].split(",")), ln
        if words[2] == "fuzz" and "--" in words:
            args = words[words.index("--") + 1:]
            fuzz.parser().parse_args(args)  # exits (SystemExit) on an argument it does not take
