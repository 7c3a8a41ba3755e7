"""Damaged copies of the valid catalogue (``tests/case_damage.py``): wrong types, out-of-range and
non-finite values, unknown fields, broken structure, bytes that are not UTF-8 and nesting 50,000 deep.
Loading each raises a CaseError, never another exception, and never loads; the message names the file,
the case or sweep where one is identifiable, and the field."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from harness.cases import load_file
from tests.case_damage import CATALOGUE, FAMILIES, Damaged, catalogue, damaged_files, judge

FILES = catalogue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("damaged")


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(d=damaged_files(FILES))
def test_damaged_catalogue_file_is_a_clear_error(folder, d: Damaged):
    outcome, message = judge(d, folder)
    assert outcome == "clear", f"{outcome}: {message}"


@pytest.mark.parametrize("name", sorted(FILES))
def test_undamaged_rendering_loads_as_the_original(tmp_path, name):
    """The generator's rendering (tomli_w) of an undamaged file means what the file means, so what the
    loader refuses above is the damage alone."""
    f = tmp_path / name
    f.write_bytes(Damaged("none", name, FILES[name], []).render())
    assert [c.summary() for c in load_file(f)] == [c.summary() for c in load_file(CATALOGUE / name)]


def test_every_family_is_drawn():
    assert set(FAMILIES) == {"wrong type", "out of range", "non-finite", "unknown field", "structure", "encoding",
                             "deep nesting"}
