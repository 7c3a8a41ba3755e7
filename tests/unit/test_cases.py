"""Case files: validation errors name the file, the case and the field; inputs are deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness import inputs
from harness.cases import CaseError, load_cases, load_file

REPO = Path(__file__).resolve().parents[2]

GOOD = """
name = "c1"
shape = [4, 3]
"""

BAD = [
    # (what, case body, field named in the message, words in the message)
    ("unknown field", GOOD + "colour = 'red'\n", "colour", "unknown field"),
    ("wrong type", 'name = "c1"\nshape = [4, 3]\nsteps = "three"\n', "steps", "integer"),
    ("negative eps", GOOD + "eps = -1e-5\n", "eps", "greater than or equal to 0"),
    ("empty shape", 'name = "c1"\nshape = []\n', "shape", "at least (N, C)"),
    ("zero dimension", 'name = "c1"\nshape = [0, 3]\n', "shape.0", "greater than or equal to 1"),
    ("bad layout", GOOD + 'layout = "NHWC"\n', "layout", "channels_first"),
    ("bad dtype", GOOD + 'dtype = "int8"\n', "dtype", "float16"),
    ("momentum above 1", GOOD + "momentum = 1.5\n", "momentum", "less than or equal to 1"),
    ("missing shape", 'name = "c1"\n', "shape", "required field is missing"),
    ("unknown generator", GOOD + 'input = { kind = "gaussian" }\n', "input", "kind"),
    ("generator field", GOOD + 'input = { kind = "normal", sigma = 2.0 }\n', "input.sigma", "unknown field"),
    ("negative scale", GOOD + 'input = { kind = "normal", scale = -1.0 }\n', "input.scale", "greater than"),
    ("uniform reversed", GOOD + 'input = { kind = "uniform", low = 2.0, high = 1.0 }\n', "input", "low"),
    ("bad name", 'name = "has space"\nshape = [4, 3]\n', "name", "letters"),
    ("override channel", GOOD + 'channel_overrides = [{ channels = [5], input = { kind = "constant" } }]\n',
     "(case)", "out of range"),
    ("bad regex", GOOD + '[case.expect_raise.torch]\ntype = "ValueError"\nmatch = "("\n',
     "expect_raise.torch.match", "regular expression"),
    ("short tolerance reason", GOOD + "tolerance = { factor = 2.0, reason = 'why' }\n", "tolerance.reason", ""),
]


@pytest.mark.parametrize("what,body,field,words", BAD, ids=[b[0] for b in BAD])
def test_bad_case_names_file_case_and_field(tmp_path, what, body, field, words):
    f = tmp_path / "bad.toml"
    f.write_text("[[case]]\n" + body)
    with pytest.raises(CaseError) as ei:
        load_file(f)
    msg = str(ei.value)
    assert msg.startswith(f"{f}: case "), msg
    assert "case 'c1'" in msg or "case 'has space'" in msg, msg
    assert f"field '{field}'" in msg, msg
    assert words in msg, msg


def test_duplicate_name_across_files(tmp_path):
    (tmp_path / "a.toml").write_text("[[case]]\n" + GOOD)
    (tmp_path / "b.toml").write_text("[[case]]\n" + GOOD)
    with pytest.raises(CaseError, match=r"b\.toml: case 'c1': field 'name': duplicate, already defined in .*a\.toml"):
        load_cases([tmp_path])


def test_not_toml(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text("[[case]\nname=")
    with pytest.raises(CaseError, match=r"x\.toml: not valid TOML"):
        load_file(f)


def test_unknown_top_level_table(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text("[[cases]]\nname='a'\n")
    with pytest.raises(CaseError, match="top-level table 'cases': unknown"):
        load_file(f)


def test_defaults_merge_and_sweep_expansion(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("""
[defaults]
eps = 1e-3
tags = ["base"]

[[sweep]]
name = "off"
param = "input.loc"
values = [1.0, 1e4, -2.5]
tags = ["offset"]
[sweep.base]
shape = [8, 2]
input = { kind = "normal", scale = 1.0 }
""")
    cases = load_file(f)
    assert [c.name for c in cases] == ["off_1", "off_10000", "off_m2.5"]
    assert all(c.eps == 1e-3 and set(c.tags) == {"base", "offset", "off"} for c in cases)
    assert cases[1].input.loc == 1e4 and cases[1].sweep == {"name": "off", "param": "input.loc", "value": 1e4}


def test_sweep_errors_name_the_sweep(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[[sweep]]\nname = "off"\nparam = "input.loc"\nvalues = [1.0]\n[sweep.base]\nshape = [4]\n')
    with pytest.raises(CaseError, match=r"case 'off_1' \(sweep 'off'\): field 'shape'"):
        load_file(f)


def test_catalogue_loads_and_is_unique():
    cases = load_cases([REPO / "cases"])
    assert len(cases) >= 15
    assert len({c.name for c in cases}) == len(cases)


def test_inputs_are_deterministic_and_bit_identical_across_layouts(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[[case]]\nname = "a"\nshape = [2, 3, 4]\nseed = 7\ndtype = "bfloat16"\n'
                 '[[case]]\nname = "b"\nshape = [2, 3, 4]\nseed = 7\ndtype = "bfloat16"\nlayout = "channels_last"\n')
    a, b = load_file(f)
    d1, d2, d3 = inputs.build(a), inputs.build(a), inputs.build(b)
    assert d1.x[0].dtype.name == "bfloat16" and d1.x[0].shape == (2, 3, 4) and d3.x[0].shape == (2, 4, 3)
    assert d1.digests == d2.digests
    np.testing.assert_array_equal(np.moveaxis(d1.x[2], 1, -1), d3.x[2])
    # the oracle sees exactly what the framework sees
    assert np.array_equal(d1.f64("x", 0).astype(d1.x[0].dtype), d1.x[0])


def test_specials_and_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[[case]]\nname = "a"\nshape = [4, 3]\n'
                 'channel_overrides = [{ channels = [1], input = { kind = "constant", value = 5.0 } }]\n'
                 'specials = [{ value = "nan", index = [0, 2] }]\n')
    (c,) = load_file(f)
    d = inputs.build(c)
    assert (d.x[0][:, 1] == 5.0).all() and np.isnan(d.x[0][0, 2]) and (d.x_eval[:, 1] == 5.0).all()
    assert not np.isnan(d.x_eval).any()
