"""Damaged case files made from the valid catalogue: each one a file the loader must refuse, with what its
error message must name (besides the file: the case or sweep where one is identifiable, and the field).

Used by ``tests/unit/test_case_damage.py`` (Hypothesis draws the damage) and, as a script, to count on any
checkout of the harness how many damaged files give a clear ``CaseError``, another exception, or are
accepted:

    PYTHONPATH=<checkout> python tests/case_damage.py [EXAMPLES]

The generator reads only ``cases/*.toml`` of this checkout and needs no harness code, so both counts see
the same files.
"""

from __future__ import annotations

import copy
import math
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import strategies as st

CATALOGUE = Path(__file__).resolve().parents[1] / "cases"
NOT_CASE_FILES = {"known_differences.toml", "bench.toml"}
MARK = "@@bnparity-damage@@"  # a string value that render() replaces with raw bytes

GENERATOR_FIELDS = ("input", "eval_input", "grad", "gamma", "beta", "running_mean", "running_var")
GENERATOR_PARAMS = {"normal": ("loc", "scale"), "uniform": ("low", "high"), "constant": ("value",),
                    "ramp": ("start", "stop"), "student_t": ("df", "loc", "scale")}
INT_LEAVES = {"seed", "steps"}  # integer fields; and the items of these arrays:
INT_ARRAYS = {"shape", "channels", "index"}
BAD_UTF8 = (b"\xff", b"\xfe\xfe", b"\xc0\x80", b"\x80", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80")
REASON = "a reason written in words"


def catalogue() -> dict[str, dict]:
    """{file name: parsed TOML} of every case file."""
    return {f.name: tomllib.loads(f.read_text(encoding="utf-8"))
            for f in sorted(CATALOGUE.glob("*.toml")) if f.name not in NOT_CASE_FILES}


@dataclass
class Damaged:
    """One damaged file: ``raw`` rendered as TOML, with the quoted MARK replaced by ``splice`` and ``prefix``
    put first. ``must`` lists what the message must contain besides the file's path."""

    kind: str
    name: str  # the file name
    raw: dict
    must: list[str]
    splice: bytes | None = None
    prefix: bytes = b""
    whole: bytes | None = None  # the file's bytes, when they are not rendered from raw

    def render(self) -> bytes:
        if self.whole is not None:
            return self.whole
        text = tomli_w.dumps(self.raw).encode()
        if self.splice is not None:
            assert f'"{MARK}"'.encode() in text, "the mark must be a string value"
            text = text.replace(f'"{MARK}"'.encode(), self.splice)
        return self.prefix + text

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        body = self.render()
        shown = body if len(body) < 3000 else body[:1500] + b"\n...\n" + body[-500:]
        return f"Damaged({self.kind}, {self.name}, must={self.must}):\n{shown.decode('utf-8', 'replace')}"


def case_label(body: Any, i: int) -> str:
    name = body.get("name") if isinstance(body, dict) else None
    return f"case {name!r}" if isinstance(name, str) and name.isprintable() else f"case #{i + 1}"


def sweep_label(body: Any, j: int) -> str:
    name = body.get("name") if isinstance(body, dict) else None
    return f"sweep {name!r}" if isinstance(name, str) and name.isprintable() else f"sweep #{j + 1}"


def dotted(path) -> str:
    return ".".join(str(p) for p in path)


def leaves(node: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """Every (path, value) below node: tables, arrays and scalars, depth first."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append(((*path, k), v))
        out.extend(leaves(v, (*path, k)))
    return out


def wrong_types(path: tuple, v: Any) -> list[Any]:
    """Values of another TOML type than v, none of which the field at path may accept."""
    if isinstance(v, bool):
        return ["true", 1, 0.5, [v], {"x": v}]
    if isinstance(v, int):
        is_int = path[-1] in INT_LEAVES or (len(path) > 1 and path[-2] in INT_ARRAYS)
        return ["4", True, [v], {"x": v}, *([4.5] if is_int else [])]
    if isinstance(v, float):
        return ["1.0", True, [v], {"x": v}]
    if isinstance(v, str):
        return [7, 7.5, True, [v], {"x": v}]
    if isinstance(v, list):
        return ["x", 7, 7.5, True, {"x": 1}]
    if isinstance(v, dict):
        return ["x", 7, 7.5, True, [1]]
    return []


def set_path(node: Any, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value


def del_path(node: Any, path: tuple) -> None:
    for k in path[:-1]:
        node = node[k]
    del node[path[-1]]


# -- where a damage can go --------------------------------------------------------------------------------

def case_sites(files: dict[str, dict]) -> list[tuple[str, int]]:
    return [(f, i) for f, raw in files.items() for i, c in enumerate(raw.get("case", []))]


def sweep_sites(files: dict[str, dict]) -> list[tuple[str, int]]:
    return [(f, j) for f, raw in files.items() for j, _ in enumerate(raw.get("sweep", []))]


def live_defaults(raw: dict) -> list[str]:
    """Keys of [defaults] that reach at least one case (not overridden everywhere)."""
    out = []
    for k in raw.get("defaults", {}):
        if (any(k not in c for c in raw.get("case", []))
                or any(k not in s.get("base", {}) and s["param"].split(".")[0] != k for s in raw.get("sweep", []))):
            out.append(k)
    return out


# -- the damage families ------------------------------------------------------------------------------------

@st.composite
def _case_target(draw, files):
    fname, i = draw(st.sampled_from(case_sites(files)))
    raw = copy.deepcopy(files[fname])
    return fname, raw, i, raw["case"][i]


@st.composite
def wrong_type(draw, files):
    """A value of another type anywhere in a case, a sweep or [defaults]."""
    where = draw(st.sampled_from(["case", "sweep", "sweep_value", "defaults"]))
    if where == "case":
        fname, raw, i, body = draw(_case_target(files))
        path, v = draw(st.sampled_from(leaves(body)))
        new = draw(st.sampled_from(wrong_types(path, v)))
        set_path(body, path, new)
        return Damaged("wrong type in a case", fname, raw, [case_label(body, i), f"field '{dotted(path)}"])
    if where == "defaults":
        fname = draw(st.sampled_from([f for f, raw in files.items() if live_defaults(raw)]))
        raw = copy.deepcopy(files[fname])
        key = draw(st.sampled_from(live_defaults(raw)))
        path, v = draw(st.sampled_from([((key,), raw["defaults"][key]),
                                        *(((key, *p), x) for p, x in leaves(raw["defaults"][key]))]))
        set_path(raw["defaults"], path, draw(st.sampled_from(wrong_types(path, v))))
        return Damaged("wrong type in [defaults]", fname, raw, [f"field '{dotted(path)}", "[defaults]"])
    fname, j = draw(st.sampled_from(sweep_sites(files)))
    raw = copy.deepcopy(files[fname])
    sw = raw["sweep"][j]
    label = sweep_label(sw, j)
    if where == "sweep_value":  # one swept value of the wrong type: the case made from it names the param
        k = draw(st.sampled_from(range(len(sw["values"]))))
        sw["values"][k] = draw(st.sampled_from(["x", True]))
        return Damaged("wrong type in a sweep's values", fname, raw, [label, f"field '{sw['param']}"])
    param = sw["param"]
    candidates = [(p, v) for p, v in leaves(sw) if (p[0] != "values" or len(p) == 1)
                  and not (p[0] == "base" and len(p) > 1 and (dotted(p[1:]) == param
                                                                or dotted(p[1:]).startswith(param + ".")
                                                                or param.startswith(dotted(p[1:]) + ".")))]
    path, v = draw(st.sampled_from(candidates))
    set_path(sw, path, draw(st.sampled_from(wrong_types(path, v))))
    field = dotted(path[1:]) if path[0] == "base" and len(path) > 1 else dotted(path)
    return Damaged("wrong type in a sweep", fname, raw, [sweep_label(sw, j), f"field '{field}"])


def _gen(kind: str, **kw) -> dict:
    return {"kind": kind, **kw}


OUT_OF_RANGE: list[tuple[str, Callable[[], Any], str]] = [
    # (field, bad value, field the message names)
    ("shape", lambda: [4], "shape"), ("shape", lambda: [2] * 6, "shape"), ("shape", lambda: [2] * 10, "shape"),
    ("shape", lambda: [], "shape"), ("shape", lambda: [-1, 3], "shape.0"), ("shape", lambda: [4, 0], "shape"),
    ("shape", lambda: [4, -3], "shape.1"),
    ("shape", lambda: [2**20, 2**20], "shape"),
    ("eps", lambda: -1e-5, "eps"), ("eps", lambda: -1, "eps"),
    ("momentum", lambda: -0.1, "momentum"), ("momentum", lambda: 1.5, "momentum"),
    ("momentum", lambda: "average", "momentum"),
    ("steps", lambda: -1, "steps"), ("steps", lambda: 10_001, "steps"), ("seed", lambda: -1, "seed"),
    ("timeout", lambda: 0, "timeout"), ("timeout", lambda: -5.0, "timeout"), ("timeout", lambda: 1e9, "timeout"),
    ("layout", lambda: "NHWC", "layout"), ("dtype", lambda: "int8", "dtype"),
    ("param_dtype", lambda: "float8", "param_dtype"),
    ("name", lambda: "has space", "name"), ("name", lambda: "", "name"),
    ("adapters", lambda: [], "adapters"), ("adapters", lambda: [""], "adapters.0"),
    ("tags", lambda: ["a b"], "tags.0"), ("tags", lambda: [""], "tags.0"),
    ("tolerance", lambda: {"factor": 0.5, "reason": REASON}, "tolerance.factor"),
    ("tolerance", lambda: {"factor": 1.0, "reason": REASON}, "tolerance.factor"),
    ("tolerance", lambda: {"factor": 0.0, "reason": REASON}, "tolerance.factor"),
    ("tolerance", lambda: {"factor": 1e6, "reason": REASON}, "tolerance.factor"),
    ("tolerance", lambda: {"factor": 2.0, "reason": "why"}, "tolerance.reason"),
    ("tolerance", lambda: {"factor": 2.0, "reason": " " * 12}, "tolerance.reason"),
    ("running_var", lambda: _gen("constant", value=-1.0), "running_var"),
    ("running_var", lambda: _gen("uniform", low=-0.5, high=1.0), "running_var"),
    ("running_var", lambda: _gen("normal", loc=1.0, scale=0.1), "running_var"),
    ("running_var", lambda: _gen("student_t", loc=5.0), "running_var"),
    ("running_var", lambda: _gen("ramp", start=-1.0, stop=1.0), "running_var"),
    ("channel_overrides", lambda: [{"channels": [10**6], "input": _gen("constant")}], "channel_overrides"),
    ("channel_overrides", lambda: [{"channels": [], "input": _gen("constant")}], "channel_overrides.0.channels"),
    ("channel_overrides", lambda: [{"channels": [-1], "input": _gen("constant")}], "channel_overrides.0.channels.0"),
    ("specials", lambda: [{"value": "nan", "index": [10**6, 0]}], "specials"),
    ("specials", lambda: [{"value": "NaN", "index": [0, 0]}], "specials.0.value"),
    ("specials", lambda: [{"value": "inf", "index": [-1, 0]}], "specials.0.index.0"),
    ("expect_raise", lambda: {"torch": {"type": "not a class"}}, "expect_raise.torch.type"),
    ("expect_raise", lambda: {"torch": {"type": "ValueError", "match": "("}}, "expect_raise.torch.match"),
    ("expect_raise", lambda: {"torch": {"type": ""}}, "expect_raise.torch.type"),
]
for _g in GENERATOR_FIELDS:
    OUT_OF_RANGE += [
        (_g, lambda: _gen("normal", scale=-1.0), f"{_g}.scale"),
        (_g, lambda: _gen("uniform", low=2.0, high=1.0), f"{_g}.low"),
        (_g, lambda: _gen("student_t", df=0.5), f"{_g}.df"),
        (_g, lambda: _gen("student_t", df=0.0), f"{_g}.df"),
        (_g, lambda: _gen("constant", value=1e200), f"{_g}.value"),
        (_g, lambda: _gen("normal", loc=-1e101), f"{_g}.loc"),
        (_g, lambda: _gen("gaussian"), f"{_g}.kind"),
    ]


@st.composite
def out_of_range(draw, files):
    fname, raw, i, body = draw(_case_target(files))
    key, bad, field = draw(st.sampled_from(OUT_OF_RANGE))
    body[key] = bad()
    return Damaged(f"out of range: {key}", fname, raw, [case_label(body, i), f"field '{field}'"])


NON_FINITE = (math.inf, -math.inf, math.nan)


@st.composite
def non_finite(draw, files):
    """inf, -inf or nan in a float field, a generator parameter, an override's generator or a swept value."""
    x = draw(st.sampled_from(NON_FINITE))
    where = draw(st.sampled_from(["field", "generator", "override", "sweep"]))
    if where == "sweep":
        fname, j = draw(st.sampled_from(sweep_sites(files)))
        raw = copy.deepcopy(files[fname])
        sw = raw["sweep"][j]
        if sw["param"] == "shape":
            sw["values"][0] = [sw["values"][0][0], x]
            field = "shape.1"
        else:
            sw["values"][0] = x
            field = sw["param"]
        return Damaged("non-finite swept value", fname, raw, [sweep_label(sw, j), f"field '{field}'"])
    fname, raw, i, body = draw(_case_target(files))
    if where == "field":
        key = draw(st.sampled_from(["eps", "momentum", "timeout", "tolerance"]))
        if key == "tolerance":
            body[key], field = {"factor": x, "reason": REASON}, "tolerance.factor"
        else:
            body[key], field = x, key
    else:
        kind = draw(st.sampled_from(sorted(GENERATOR_PARAMS)))
        param = draw(st.sampled_from(GENERATOR_PARAMS[kind]))
        gen = _gen(kind, **{param: x})
        if where == "generator":
            g = draw(st.sampled_from(GENERATOR_FIELDS))
            body[g], field = gen, f"{g}.{param}"
        else:
            body["channel_overrides"] = [{"channels": [0], "input": gen}]
            field = f"channel_overrides.0.input.{param}"
    return Damaged(f"non-finite {where}", fname, raw, [case_label(body, i), f"field '{field}'"])


@st.composite
def unknown_field(draw, files):
    where = draw(st.sampled_from(["case", "generator", "tolerance", "expect_raise", "override", "special",
                                  "sweep", "sweep_base", "defaults", "top"]))
    extra = draw(st.sampled_from(["colour", "Name", "shape_", "kind2", "steps ", "é"]))
    if where in ("sweep", "sweep_base"):
        fname, j = draw(st.sampled_from(sweep_sites(files)))
        raw = copy.deepcopy(files[fname])
        sw = raw["sweep"][j]
        (sw if where == "sweep" else sw.setdefault("base", {}))[extra] = 1
        return Damaged(f"unknown field in {where}", fname, raw, [sweep_label(sw, j), f"field '{extra}'"])
    if where in ("defaults", "top"):
        fname = draw(st.sampled_from(sorted(files)))
        raw = copy.deepcopy(files[fname])
        if where == "top":
            raw[extra] = {"x": 1}
            return Damaged("unknown top-level table", fname, raw, [f"top-level table '{extra}'"])
        raw.setdefault("defaults", {})[extra] = 1
        return Damaged("unknown field in [defaults]", fname, raw, ["[defaults]", f"field '{extra}'"])
    fname, raw, i, body = draw(_case_target(files))
    if where == "case":
        body[extra], field = 1, extra
    elif where == "generator":
        g = draw(st.sampled_from(GENERATOR_FIELDS))
        body[g] = {**body.get(g, {"kind": "normal"}), extra: 1.0}
        field = f"{g}.{extra}"
    elif where == "tolerance":
        body["tolerance"], field = {"factor": 2.0, "reason": REASON, extra: 1}, f"tolerance.{extra}"
    elif where == "expect_raise":
        body["expect_raise"] = {"torch": {"type": "ValueError", extra: "x"}}
        field = f"expect_raise.torch.{extra}"
    elif where == "override":
        body["channel_overrides"] = [{"channels": [0], "input": {"kind": "constant"}, extra: 1}]
        field = f"channel_overrides.0.{extra}"
    else:
        body["specials"] = [{"value": "nan", "index": [0] * len(body.get("shape", [1, 1])), extra: 1}]
        field = f"specials.0.{extra}"
    return Damaged(f"unknown field in a {where}", fname, raw, [case_label(body, i), f"field '{field}'"])


@st.composite
def structure(draw, files):
    """A case or sweep that is not a table, a required field missing, sections of the wrong shape."""
    what = draw(st.sampled_from(["case_not_table", "cases_not_array", "sweep_not_table", "sweeps_not_array",
                                 "defaults_not_table", "case_missing", "sweep_missing", "nested_missing",
                                 "no_cases", "loader_field"]))
    fname = draw(st.sampled_from(sorted(files)))
    raw = copy.deepcopy(files[fname])
    bad = draw(st.sampled_from([5, "x", 1.5, True, [1]]))
    if what == "case_not_table" and raw.get("case"):
        i = draw(st.sampled_from(range(len(raw["case"]))))
        raw["case"][i] = bad if bad != [1] else 5
        return Damaged("a case that is not a table", fname, raw, [f"case #{i + 1}"])
    if what == "sweep_not_table" and raw.get("sweep"):
        raw["sweep"][0] = bad if bad != [1] else 5
        return Damaged("a sweep that is not a table", fname, raw, ["sweep #1"])
    if what == "cases_not_array":
        raw["case"] = bad if bad != [1] else {"name": "x", "shape": [2, 2]}
        return Damaged("case is not an array of tables", fname, raw, ["field 'case'"])
    if what == "sweeps_not_array":
        raw["sweep"] = bad if bad != [1] else {"name": "x", "param": "eps", "values": [1.0]}
        return Damaged("sweep is not an array of tables", fname, raw, ["field 'sweep'"])
    if what == "defaults_not_table":
        raw["defaults"] = bad
        return Damaged("defaults is not a table", fname, raw, ["field 'defaults'"])
    if what == "no_cases":
        raw.pop("case", None)
        raw.pop("sweep", None)
        return Damaged("no case at all", fname, raw, ["no [[case]] or [[sweep]]"])
    if what == "sweep_missing" and raw.get("sweep"):
        j = draw(st.sampled_from(range(len(raw["sweep"]))))
        sw = raw["sweep"][j]
        key = draw(st.sampled_from(["name", "param", "values"]))
        del sw[key]
        return Damaged("a sweep without a required field", fname, raw, [sweep_label(sw, j), f"field '{key}'"])
    if what == "loader_field" and raw.get("case"):
        i = draw(st.sampled_from(range(len(raw["case"]))))
        key = draw(st.sampled_from(["sweep", "file"]))
        raw["case"][i][key] = {"name": "x"} if key == "sweep" else "other.toml"
        return Damaged("a case sets what the loader sets", fname, raw,
                       [case_label(raw["case"][i], i), f"field '{key}'"])
    if what == "nested_missing" and raw.get("case"):
        i = draw(st.sampled_from(range(len(raw["case"]))))
        body = raw["case"][i]
        key, value, field = draw(st.sampled_from([
            ("tolerance", {"factor": 2.0}, "tolerance.reason"),
            ("tolerance", {"reason": REASON}, "tolerance.factor"),
            ("specials", [{"value": "nan"}], "specials.0.index"),
            ("specials", [{"index": [0, 0]}], "specials.0.value"),
            ("channel_overrides", [{"channels": [0]}], "channel_overrides.0.input"),
            ("channel_overrides", [{"input": {"kind": "constant"}}], "channel_overrides.0.channels"),
            ("expect_raise", {"torch": {"match": "x"}}, "expect_raise.torch.type"),
            ("input", {"loc": 1.0}, "input.kind"),
            ("running_var", {}, "running_var.kind"),
        ]))
        body[key] = value
        return Damaged("a nested required field missing", fname, raw, [case_label(body, i), f"field '{field}'"])
    # a case without its name, or without a shape that no [defaults] gives
    sites = [(f, i, k) for f, r in files.items() for i, c in enumerate(r.get("case", []))
             for k in ("name", "shape") if k in c and k not in r.get("defaults", {})]
    fname, i, key = draw(st.sampled_from(sites))
    raw = copy.deepcopy(files[fname])
    del raw["case"][i][key]
    return Damaged("a case without a required field", fname, raw, [case_label(raw["case"][i], i), f"field '{key}'"])


@st.composite
def bad_encoding(draw, files):
    """Bytes that are not UTF-8: in a string of a case or a sweep (the message names it), in a comment, at
    any position, or a whole file in UTF-16."""
    bad = draw(st.sampled_from(BAD_UTF8))
    where = draw(st.sampled_from(["case", "sweep", "comment", "anywhere", "utf16"]))
    if where in ("comment", "anywhere", "utf16"):
        fname = draw(st.sampled_from(sorted(files)))
        text = (CATALOGUE / fname).read_bytes()
        if where == "utf16":
            whole = text.decode("utf-8").encode("utf-16")
            return Damaged("UTF-16 file", fname, files[fname], ["not UTF-8"], whole=whole)
        if where == "comment":
            lines = text.split(b"\n")
            k = draw(st.sampled_from(range(len(lines))))
            lines.insert(k, b"# a note " + bad + b" in a comment")
            return Damaged("non-UTF-8 comment", fname, files[fname], ["not UTF-8", f"line {k + 1}"],
                           whole=b"\n".join(lines))
        k = draw(st.sampled_from(range(len(text))))
        return Damaged("non-UTF-8 byte anywhere", fname, files[fname], ["not UTF-8"],
                       whole=text[:k] + bad + text[k + 1:])
    if where == "case":
        fname, raw, i, body = draw(_case_target(files))
        strings = [(p, v) for p, v in leaves(body) if isinstance(v, str)]
        path, v = draw(st.sampled_from(strings))
        label = f"case #{i + 1}" if path == ("name",) else case_label(body, i)
    else:
        fname, j = draw(st.sampled_from(sweep_sites(files)))
        raw = copy.deepcopy(files[fname])
        body = raw["sweep"][j]
        strings = [(p, v) for p, v in leaves(body) if isinstance(v, str)]
        path, v = draw(st.sampled_from(strings))
        label = f"sweep #{j + 1}" if path == ("name",) else sweep_label(body, j)
    cut = draw(st.sampled_from(range(len(v) + 1)))
    set_path(body, path, MARK)
    splice = tomli_w.dumps({"x": v[:cut]})[4:].strip().encode()[:-1] + bad + \
        tomli_w.dumps({"x": v[cut:]})[4:].strip().encode()[1:]
    return Damaged(f"non-UTF-8 byte in a {where} string", fname, raw,
                   [label, f"field '{dotted(path)}'", "not UTF-8"], splice=splice)


@st.composite
def deep_nesting(draw, files):
    """A value nested far deeper than any case needs: inline tables or arrays, up to 50,000 deep."""
    depth = draw(st.sampled_from([17, 40, 300, 1000, 50_000]))
    table = draw(st.booleans())
    nested = (b"{a = " * depth + b"1" + b"}" * depth) if table else (b"[" * depth + b"1" + b"]" * depth)
    if draw(st.booleans()):
        fname, raw, i, body = draw(_case_target(files))
        key = draw(st.sampled_from(["description", "input", "tags", "colour", "shape"]))
        body[key] = MARK
        label = case_label(body, i)
    else:
        fname, j = draw(st.sampled_from(sweep_sites(files)))
        raw = copy.deepcopy(files[fname])
        sw = raw["sweep"][j]
        key = draw(st.sampled_from(["values", "base", "description"]))
        sw[key] = MARK
        label = sweep_label(sw, j)
    return Damaged(f"nested {depth} deep", fname, raw, [label, f"field '{key}", "nested"], splice=nested)


FAMILIES = {"wrong type": wrong_type, "out of range": out_of_range, "non-finite": non_finite,
            "unknown field": unknown_field, "structure": structure, "encoding": bad_encoding,
            "deep nesting": deep_nesting}


def damaged_files(files: dict[str, dict] | None = None):
    files = catalogue() if files is None else files
    return st.one_of(*(f(files) for f in FAMILIES.values()))


# -- judging one file ------------------------------------------------------------------------------------

def judge(d: Damaged, folder: Path) -> tuple[str, str]:
    """('clear', message) for a CaseError naming the file and everything in d.must; ('unclear', message) for a
    CaseError that names the file but not all of it; ('vague', ...) for one that does not name the file;
    ('exception', ...) for any other exception; ('accepted', ...) when the file loads."""
    from harness.cases import CaseError, load_file

    path = folder / d.name
    path.write_bytes(d.render())
    try:
        load_file(path)
    except CaseError as e:
        msg = str(e)
        if str(path) not in msg:
            return "vague", msg
        missing = [m for m in d.must if m not in msg]
        return ("unclear" if missing else "clear"), msg + (f"\n  (does not name {missing})" if missing else "")
    except BaseException as e:  # noqa: BLE001 - counting what the loader lets through
        if isinstance(e, KeyboardInterrupt):
            raise
        return "exception", f"{type(e).__name__}: {str(e)[:200]}"
    return "accepted", ""


def main(argv: list[str]) -> int:
    import collections
    import hashlib
    import tempfile

    from hypothesis import HealthCheck, Phase, given, settings

    numbers = [a for a in argv if a.isdigit()]
    n = int(numbers[0]) if numbers else 1000
    counts: collections.Counter = collections.Counter()
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    examples: dict[tuple[str, str], str] = {}
    unique: set[str] = set()
    folder = Path(tempfile.mkdtemp())
    files = catalogue()

    @settings(max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(damaged_files(files))
    def count(d: Damaged) -> None:
        unique.add(hashlib.sha256(d.render()).hexdigest())
        outcome, msg = judge(d, folder)
        counts[outcome] += 1
        by_kind[d.kind][outcome] += 1
        examples.setdefault((d.kind, outcome), msg.replace(str(folder) + "/", ""))

    count()
    total = sum(counts.values())
    print(f"{total} damaged files ({len(unique)} distinct): " + ", ".join(f"{k} {counts[k]}" for k in
                                                 ("clear", "unclear", "vague", "exception", "accepted")))
    for kind in sorted(by_kind):
        print(f"  {kind:45s} " + " ".join(f"{k}={v}" for k, v in sorted(by_kind[kind].items())))
    if "-v" in argv:
        for (kind, outcome), msg in sorted(examples.items()):
            print(f"--- {kind} / {outcome}\n{msg[:400]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
