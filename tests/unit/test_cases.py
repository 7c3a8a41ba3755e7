"""Case files: validation errors name the file, the case and the field; inputs are deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness import inputs
from harness.cases import Case, CaseError, load_cases, load_file

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
    ("no channel", 'name = "c1"\nshape = [4, 0]\n', "shape", "has no channel"),
    ("bad layout", GOOD + 'layout = "NHWC"\n', "layout", "channels_first"),
    ("bad dtype", GOOD + 'dtype = "int8"\n', "dtype", "float16"),
    ("momentum above 1", GOOD + "momentum = 1.5\n", "momentum", "less than or equal to 1"),
    ("missing shape", 'name = "c1"\n', "shape", "required field is missing"),
    ("unknown generator", GOOD + 'input = { kind = "gaussian" }\n', "input.kind", "normal | uniform"),
    ("generator field", GOOD + 'input = { kind = "normal", sigma = 2.0 }\n', "input.sigma", "unknown field"),
    ("negative scale", GOOD + 'input = { kind = "normal", scale = -1.0 }\n', "input.scale", "greater than"),
    ("uniform reversed", GOOD + 'input = { kind = "uniform", low = 2.0, high = 1.0 }\n', "input.low", "high"),
    ("bad name", 'name = "has space"\nshape = [4, 3]\n', "name", "letters"),
    ("override channel", GOOD + 'channel_overrides = [{ channels = [5], input = { kind = "constant" } }]\n',
     "channel_overrides", "out of range"),
    ("bad regex", GOOD + '[case.expect_raise.torch]\ntype = "ValueError"\nmatch = "("\n',
     "expect_raise.torch.match", "regular expression"),
    ("short tolerance reason", GOOD + "tolerance = { factor = 2.0, reason = 'why' }\n", "tolerance.reason", ""),
    ("virtual batch zero", GOOD + "virtual_batch_size = 0\n", "virtual_batch_size", "greater than or equal to 1"),
    ("virtual batch uneven", GOOD + "virtual_batch_size = 3\n", "virtual_batch_size",
     "3 does not divide the batch size N = 4"),
    ("virtual batch uneven, other adapters", GOOD + "virtual_batch_size = 3\nadapters = ['tf-keras-*']\n"
     "expect_raise = { tf-keras-nonfused = { type = 'InvalidArgumentError' } }\n", "virtual_batch_size",
     "expect_raise for each adapter"),
    ("virtual batch empty", 'name = "c1"\nshape = [0, 3]\nvirtual_batch_size = 2\n', "virtual_batch_size",
     "empty batch"),
    ("virtual batch untracked", GOOD + "virtual_batch_size = 2\ntrack_running_stats = false\n",
     "virtual_batch_size", "running statistics"),
    ("virtual batch renorm", GOOD + "virtual_batch_size = 2\nrenorm = { rmax = 2.0 }\n", "virtual_batch_size",
     "batch renormalization"),
    ("virtual batch mask", GOOD + "virtual_batch_size = 2\nmask = { keep = 0.5 }\n", "virtual_batch_size", "mask"),
    ("virtual batch cumulative", GOOD + "virtual_batch_size = 2\nmomentum = 'cumulative'\n", "virtual_batch_size",
     "cumulative"),
    ("second order empty", 'name = "c1"\nshape = [0, 3]\nsecond_order = {}\n', "second_order", "empty batch"),
    ("second order renorm", GOOD + "second_order = {}\nrenorm = { rmax = 2.0 }\n", "second_order", "renormalization"),
    ("second order mask", GOOD + "second_order = {}\nmask = { keep = 0.5 }\n", "second_order", "mask"),
    ("second order ghost", GOOD + "second_order = {}\nvirtual_batch_size = 2\n", "second_order", "ghost BN"),
    ("second order unknown key", GOOD + "second_order = { direktion = { kind = 'normal' } }\n",
     "second_order.direktion", "unknown field"),
    ("renorm rmax below rmin", GOOD + "renorm = { rmin = 2.0, rmax = 1.0 }\n", "renorm.rmax", "must be >= rmin"),
    ("renorm negative dmax", GOOD + "renorm = { dmax = -0.5 }\n", "renorm.dmax", "greater than or equal to 0"),
    ("renorm unknown key", GOOD + "renorm = { rmax = 2.0, dmin = 1.0 }\n", "renorm.dmin", "unknown field"),
    ("renorm momentum above 1", GOOD + "renorm = { momentum = 1.5 }\n", "renorm.momentum", "less than or equal to 1"),
    ("renorm untracked", GOOD + "renorm = { rmax = 2.0 }\ntrack_running_stats = false\n", "renorm",
     "needs track_running_stats"),
    ("renorm cumulative", GOOD + "renorm = { rmax = 2.0 }\nmomentum = 'cumulative'\n", "renorm", "numeric momentum"),
    ("data parallel one replica", GOOD + "data_parallel = { replicas = 1, sync = true }\n", "data_parallel.replicas",
     "greater than or equal to 2"),
    ("data parallel no sync", GOOD + "data_parallel = { replicas = 2 }\n", "data_parallel.sync", "missing"),
    ("data parallel uneven without split", GOOD + "data_parallel = { replicas = 3, sync = true }\n", "data_parallel",
     "3 replicas do not divide N = 4"),
    ("data parallel split sum", GOOD + "data_parallel = { replicas = 2, sync = true, split = [1, 2] }\n",
     "data_parallel", "sums to 3"),
    ("data parallel split length", GOOD + "data_parallel = { replicas = 2, sync = true, split = [1, 1, 2] }\n",
     "data_parallel.split", "3 shard sizes for 2 replicas"),
    ("data parallel empty shard", GOOD + "data_parallel = { replicas = 2, sync = true, split = [0, 4] }\n",
     "data_parallel.split.0", "greater than or equal to 1"),
    ("data parallel untracked", GOOD + "data_parallel = { replicas = 2, sync = true }\ntrack_running_stats = false\n",
     "data_parallel", "running statistics"),
    ("data parallel ghost", GOOD + "data_parallel = { replicas = 2, sync = true }\nvirtual_batch_size = 2\n",
     "data_parallel", "virtual batches"),
    ("data parallel frozen", GOOD + "data_parallel = { replicas = 2, sync = true }\ncalls = ['train', 'frozen']\n",
     "data_parallel", "frozen calls"),
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


# -- what an outside tester's 295 malformed files found (each failed before the loader was hardened) --------

CASE = '[[case]]\nname = "c1"\nshape = [4, 3]\n'
SWEEP = '[[sweep]]\nname = "s"\nparam = "eps"\nvalues = [1e-5, 1e-3]\n[sweep.base]\nshape = [4, 3]\n'

REGRESSIONS = [
    # (id, file bytes, what the message must name besides the file)
    # tracebacks before
    ("non-utf8 byte", CASE.encode() + b'description = "caf\xe9"\n', ["case 'c1'", "field 'description'", "UTF-8"]),
    ("non-utf8 comment", b"# caf\xe9\n" + CASE.encode(), ["line 1", "UTF-8"]),
    ("case = 5", b"case = 5\n", ["field 'case'", "array of tables"]),
    ("sweep = 5", b"sweep = 5\n", ["field 'sweep'", "array of tables"]),
    ("sweep = [5]", b"sweep = [5]\n", ["sweep #1", "must be a table"]),
    ("sweep param = 5", SWEEP.replace('param = "eps"', "param = 5").encode(), ["sweep 's'", "field 'param'"]),
    ("sweep base not a table", b'[[sweep]]\nname = "s"\nparam = "eps"\nvalues = [1.0]\nbase = "notatable"\n',
     ["sweep 's'", "field 'base'", "must be a table"]),
    ("nested 50000 deep", (CASE + "description = " + "{a = " * 50_000 + "1" + "}" * 50_000 + "\n").encode(),
     ["case 'c1'", "field 'description", "nested more than"]),
    ("arrays nested 50000 deep", (CASE + "tags = " + "[" * 50_000 + "]" * 50_000 + "\n").encode(),
     ["case 'c1'", "field 'tags", "nested more than"]),
    ("tables nested by dotted keys", (CASE + "[case." + ".".join(["a"] * 40) + "]\nb = 1\n").encode(),
     ["case 'c1'", "field 'a.a.a", "nested more than"]),
    # accepted silently before
    ("tolerance factor inf", (CASE + 'tolerance = { factor = inf, reason = "the comparison is off" }\n').encode(),
     ["case 'c1'", "field 'tolerance.factor'", "finite"]),
    ("shape of booleans", CASE.replace("[4, 3]", "[true, 3]").encode(), ["case 'c1'", "field 'shape.0'", "integer"]),
    ("momentum = true", (CASE + "momentum = true\n").encode(), ["case 'c1'", "field 'momentum'", "number"]),
    ("string for a number", (CASE + 'eps = "1e-5"\n').encode(), ["case 'c1'", "field 'eps'", "number"]),
    ("string for an integer", (CASE + 'seed = "3"\n').encode(), ["case 'c1'", "field 'seed'", "integer"]),
    ("string for a boolean", (CASE + 'affine = "false"\n').encode(), ["case 'c1'", "field 'affine'", "true or false"]),
    ("string in a generator", (CASE + 'input = { kind = "normal", scale = "2" }\n').encode(),
     ["case 'c1'", "field 'input.scale'", "number"]),
    ("rank 6", CASE.replace("[4, 3]", "[2, 2, 2, 2, 2, 2]").encode(), ["case 'c1'", "field 'shape'", "rank 2 to 5"]),
    ("rank 10", CASE.replace("[4, 3]", "[1, 2, 1, 1, 1, 1, 1, 1, 1, 1]").encode(),
     ["case 'c1'", "field 'shape'", "rank 2 to 5"]),
    ("eps = inf", (CASE + "eps = inf\n").encode(), ["case 'c1'", "field 'eps'", "finite"]),
    ("nan in input", (CASE + 'input = { kind = "normal", loc = nan }\n').encode(),
     ["case 'c1'", "field 'input.loc'", "finite"]),
    ("inf in gamma", (CASE + 'gamma = { kind = "uniform", low = 0.5, high = inf }\n').encode(),
     ["case 'c1'", "field 'gamma.high'", "finite"]),
    ("-inf in an override", (CASE + 'channel_overrides = [{ channels = [0], input = { kind = "ramp", '
                             'start = -inf } }]\n').encode(),
     ["case 'c1'", "field 'channel_overrides.0.input.start'", "finite"]),
    ("negative running_var constant", (CASE + 'running_var = { kind = "constant", value = -1.0 }\n').encode(),
     ["case 'c1'", "field 'running_var'", "never negative"]),
    ("running_var uniform below 0", (CASE + 'running_var = { kind = "uniform", low = -0.5, high = 1.0 }\n').encode(),
     ["case 'c1'", "field 'running_var'", "never negative"]),
    ("running_var normal", (CASE + 'running_var = { kind = "normal", loc = 1.0, scale = 0.1 }\n').encode(),
     ["case 'c1'", "field 'running_var'", "never negative"]),
    ("adapters = []", (CASE + "adapters = []\n").encode(), ["case 'c1'", "field 'adapters'", "at least 1"]),
    ("tolerance factor below 1", (CASE + 'tolerance = { factor = 0.5, reason = "tighter than the model" }\n').encode(),
     ["case 'c1'", "field 'tolerance.factor'", "greater than 1"]),
    ("tolerance factor 1e4", (CASE + 'tolerance = { factor = 1e4, reason = "hides every planted bug" }\n').encode(),
     ["case 'c1'", "field 'tolerance.factor'", "less than or equal to 100"]),
    ("sweep labels a string", SWEEP.replace("[sweep.base]", 'labels = "ab"\n[sweep.base]').encode(),
     ["sweep 's'", "field 'labels'", "must be an array"]),
]


@pytest.mark.parametrize("what,data,must", REGRESSIONS, ids=[r[0] for r in REGRESSIONS])
def test_regression_malformed_file_is_a_clear_error(tmp_path, what, data, must):
    f = tmp_path / "bad.toml"
    f.write_bytes(data)
    with pytest.raises(CaseError) as ei:
        load_file(f)
    msg = str(ei.value)
    assert msg.startswith(f"{f}: "), msg
    for m in must:
        assert m in msg, (m, msg)


def test_sweep_over_a_field_of_the_default_generator(tmp_path):
    """The README's sweep: ``param = "input.loc"`` with no ``input`` in the base varies the default input
    (normal, scale 1), where it failed with "Unable to extract tag using discriminator 'kind'"."""
    f = tmp_path / "s.toml"
    f.write_text('[[sweep]]\nname = "offset"\nparam = "input.loc"\nvalues = [1.0, 10.0]\n'
                 '[sweep.base]\nshape = [8, 2]\n')
    a, b = load_file(f)
    assert (a.input.kind, a.input.loc, a.input.scale, b.input.loc) == ("normal", 1.0, 1.0, 10.0)


def test_integers_are_numbers_and_booleans_are_not(tmp_path):
    """Strict mode keeps what TOML means: an integer where a float is due is that number; nothing else is
    coerced."""
    f = tmp_path / "c.toml"
    f.write_text(CASE + 'momentum = 1\neps = 0\ninput = { kind = "uniform", low = -2, high = 5 }\n')
    (c,) = load_file(f)
    assert (c.momentum, c.eps, c.input.low, c.input.high) == (1.0, 0.0, -2.0, 5.0)
    assert all(isinstance(x, float) for x in (c.momentum, c.eps, c.input.low))


def test_scale_and_center_apart_default_to_affine(tmp_path):
    both = Case.model_validate({"name": "a", "shape": [4, 2]})
    scale_only = Case.model_validate({"name": "a", "shape": [4, 2], "center": False})
    bare = Case.model_validate({"name": "a", "shape": [4, 2], "affine": False})
    assert (both.has_scale, both.has_center, scale_only.has_scale, scale_only.has_center) == (True, True, True, False)
    assert (bare.has_scale, bare.has_center) == (False, False)
    data = inputs.build(Case.model_validate({"name": "a", "shape": [4, 2], "scale": False}))
    assert (data.gamma == 1).all() and (data.beta != 0).any()  # a layer without gamma scales by 1
    path = tmp_path / "c.toml"
    path.write_text('[[case]]\nname = "x"\nshape = [4, 2]\naffine = false\nscale = true\n')
    with pytest.raises(CaseError, match=r"case 'x': field 'scale': affine = false is a layer without gamma and beta"):
        load_file(path)


def test_calls_and_steps(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[defaults]\nsteps = 3\n\n'
                    '[[case]]\nname = "loop"\nshape = [4, 2]\ncalls = ["train", "eval", "train"]\n'
                    '\n[[case]]\nname = "short"\nshape = [4, 2]\n\n[[case]]\nname = "both"\nshape = [4, 2]\nsteps = 1\n'
                    'calls = ["eval"]\n')
    with pytest.raises(CaseError, match=r"case 'both': field 'steps': steps is 1 but calls has 0 train call"):
        load_file(path)
    path.write_text(path.read_text().rsplit("\n[[case]]\nname = \"both\"", 1)[0])
    loop, short = load_file(path)
    # the case's own calls replace the steps of [defaults]: steps counts its train calls
    assert (loop.steps, loop.schedule) == (2, ("train", "eval", "train"))
    assert (short.steps, short.schedule) == (3, ("train", "train", "train", "eval"))
    assert Case.model_validate(loop.summary()).schedule == loop.schedule  # a results file's case_params read back


def test_renorm_defaults_and_clipping(tmp_path):
    """A renorm table's bounds are each optional (no clipping on that side); momentum defaults to Keras's."""
    f = tmp_path / "c.toml"
    f.write_text("[[case]]\n" + GOOD + "renorm = { rmax = 3.0, dmax = 0.0 }\n\n[[case]]\nname = 'c2'\nshape = [4, 3]\n")
    with_renorm, plain = load_file(f)
    assert with_renorm.renorm.momentum == 0.01 and with_renorm.renorm.clipping() == {"rmax": 3.0, "dmax": 0.0}
    assert plain.renorm is None


def test_any_channel_axis(tmp_path):
    mid = Case.model_validate({"name": "a", "shape": [2, 3, 4, 5], "axis": 2})
    assert (mid.channel_axis, mid.physical_shape) == (2, (2, 4, 3, 5))
    data = inputs.build(mid)
    assert data.x[0].shape == (2, 4, 3, 5) and data.channel_axis == 2
    # the same logical values, the channels moved: channel c of the logical batch is [:, :, c] of the physical one
    logical = inputs.build(Case.model_validate({"name": "a", "shape": [2, 3, 4, 5]})).x[0]
    assert np.array_equal(np.moveaxis(data.x[0], 2, 1), logical)
    last = Case.model_validate({"name": "a", "shape": [2, 3, 4, 5], "layout": "channels_last"})
    assert Case.model_validate({"name": "a", "shape": [2, 3, 4, 5], "axis": -1}).physical_shape == last.physical_shape
    for axis, words in ((0, "is the batch axis"), (-4, "is the batch axis"), (4, "outside a rank-4 input")):
        path = tmp_path / "c.toml"
        path.write_text(f'[[case]]\nname = "x"\nshape = [2, 3, 4, 5]\naxis = {axis}\n')
        with pytest.raises(CaseError, match=rf"case 'x': field 'axis': .*{words}"):
            load_file(path)


def test_virtual_batch_groups_and_recorded_refusal(tmp_path):
    """v divides N: G = N / v virtual batches; an uneven v is a case only where it records the refusal of every
    adapter it runs on."""
    f = tmp_path / "c.toml"
    f.write_text('[[case]]\nname = "c1"\nshape = [8, 3, 2]\nvirtual_batch_size = 2\n\n'
                 '[[case]]\nname = "c2"\nshape = [8, 3]\nvirtual_batch_size = 3\nadapters = ["tf-keras-nonfused"]\n'
                 'expect_raise = { tf-keras-nonfused = { type = "InvalidArgumentError" } }\n\n'
                 '[[case]]\nname = "c3"\nshape = [8, 3]\n')
    ghost, uneven, plain = load_file(f)
    assert (ghost.virtual_batch_size, ghost.groups) == (2, 4)
    assert uneven.virtual_batch_size == 3 and plain.virtual_batch_size is None and plain.groups == 1


def test_data_parallel_shards(tmp_path):
    """Even shards by default, the split as given, one shard without data parallelism."""
    f = tmp_path / "dp.toml"
    f.write_text('[[case]]\nname = "even"\nshape = [8, 3]\ndata_parallel = { replicas = 4, sync = false }\n\n'
                 '[[case]]\nname = "uneven"\nshape = [8, 3]\ndata_parallel = { replicas = 2, sync = true, '
                 'split = [3, 5] }\n\n[[case]]\nname = "plain"\nshape = [8, 3]\n')
    even, uneven, plain = load_file(f)
    assert even.shards == (2, 2, 2, 2) and not even.data_parallel.uneven
    assert uneven.shards == (3, 5) and uneven.data_parallel.uneven and uneven.data_parallel.sync
    assert plain.shards == (8,) and plain.data_parallel is None
