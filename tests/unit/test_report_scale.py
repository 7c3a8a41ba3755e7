"""The report at scale (issue 21): what keeps a million-record report within its time, memory and size
goes through the same checks as the small one. The report keeps each result record as a slim ``Row``
(``results.read(path, result=Row.of)``), ships the records column by column, and encodes the blob a
column at a time; these self-tests pin that nothing is lost on the way."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from markupsafe import Markup

from harness import results
from harness.report import base120, page
from harness.report.blob import Blob, Columns
from harness.report.model import Row, load
from harness.report.views import Builder
from harness.schema import Quantity, Result
from tests.report_sample import synthetic

RESULT = {"kind": "result", "env": "e", "case": "c", "adapter": "a", "framework": "f", "quantity": "y", "step": 0,
          "verdict": "pass"}


def _write(path: Path, objs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


@pytest.fixture
def sample(tmp_path: Path) -> list[Path]:
    from harness.cases import load_cases
    from tests.report_sample import ADAPTERS

    cases = [c.model_copy(update={"steps": 2}) for c in load_cases([Path(__file__).parents[2] / "cases"])][:6]
    return synthetic(tmp_path / "reports", ["current", "older"], ADAPTERS[:4], cases=cases)


def test_a_row_is_the_records_fields(sample: list[Path]) -> None:
    """Every field of every result record reads the same from its Row as from the validated Result."""
    full, slim = results.read(sample[0]), results.read(sample[0], result=Row.of)
    assert len(full.records) == len(slim.records) and full.header == slim.header
    n = 0
    for a, b in zip(full.records, slim.records):
        if isinstance(a, Result):
            assert isinstance(b, Row)
            assert {f: getattr(b, f) for f in Result.model_fields} == {f: getattr(a, f) for f in Result.model_fields}
            assert b.compared == a.compared
            n += 1
        else:
            assert b == a  # cell records stay as they are
    assert n > 100


def test_old_files_are_upgraded_before_the_records_are_slimmed(tmp_path: Path) -> None:
    cell = {"kind": "cell", "env": "e", "case": "c", "adapter": "a", "framework": "f", "verdict": "pass",
            "case_params": {"steps": 2}, "effective": {"momentum": 0.1, "eps": 1e-5}, "status": "returned"}
    p = _write(tmp_path / "results.jsonl", [{"kind": "header", "schema_version": 3, "env": "e", "status": "complete"},
                                            {**RESULT, "quantity": "y_eval", "step": None}, cell])
    y_eval, _ = results.read(p, result=Row.of).records
    assert isinstance(y_eval, Row) and y_eval.step == 2


def test_the_columns_hold_every_record_of_every_cell(sample: list[Path]) -> None:
    """Each cell's range of the columns is its own records (the outcome apart), value for value as the blob
    encodes them, and the ranges tile the columns."""
    model = load(sample)
    blob = Blob(model, Builder(model))
    built = blob.build()
    columns = list(built["rows"])
    assert isinstance(built["rows"], Columns) and len(columns) == len(blob.fields)
    total = len(columns[0])
    assert all(len(c) == total for c in columns)
    seen = 0
    at = {f: i for i, f in enumerate(blob.fields)}
    verdicts = [v["name"] for v in built["verdicts"]]
    for (env, case, adapter), cell in model.cells.items():
        start, n = built["cells"][blob.builder.key(env, case, adapter)]["rows"]
        own = [r for r in cell.results if r.quantity is not Quantity.OUTCOME]
        assert start == seen and n == len(own)
        got = [(verdicts[columns[at["verdict"]][i]], columns[at["step"]][i], columns[at["digest"]][i]
                if "digest" in at else None) for i in range(start, start + n)]
        assert got == [(r.verdict.value, r.step, r.digest if "digest" in at else None) for r in own]
        seen += n
    assert seen == total and total > 100


@pytest.mark.parametrize("compress", [False, True, None])
def test_the_blob_encoded_a_column_at_a_time_is_the_whole_blob_as_json(sample: list[Path], compress) -> None:
    """The streamed encoding decodes to exactly what one json.dumps of the whole blob gives, plain or packed
    (the records' numbers as planes), and the plain JSON stays script-safe."""
    model = load(sample)
    payload = page.encode(Blob(model, Builder(model)).build(), compress)
    whole = Blob(model, Builder(model)).build()
    whole["rows"] = list(whole["rows"])
    want = json.loads(json.dumps(whole, allow_nan=False))
    assert page.decode(payload) == want
    plain = len(json.dumps(want, separators=(",", ":"), ensure_ascii=False))
    assert payload.encoding == ("json" if compress is False or (compress is None and plain <= page.COMPRESS_ABOVE)
                                else "gzip+base120")
    assert (payload.planes > 0) == (payload.encoding == "gzip+base120")
    if payload.encoding == "json":
        assert "<" not in str(payload.text) and "&" not in str(payload.text)


def test_a_metric_column_in_one_pass_reads_as_the_rounded_numbers() -> None:
    """The one-pass text of a metric column is the rounded numbers exactly (as JSON reads them back); a column
    with a number it cannot write (NaN, infinity, one that rounds past the largest float) is left to the
    general path, which writes those as the blob always did."""
    from harness.report.blob import _metric_json, rounded

    plain = [None, 0.0, -0.0, 1.0, 3.0396153687405007e-10, 0.020770195930292605, 12345.678, -2.5e-300, 7, 1e300,
             5e-324]
    text = _metric_json(plain)
    assert text is not None and json.loads(text) == [rounded(v, 3) for v in plain]
    for odd in (float("nan"), float("inf"), -float("inf"), 1.7976931348623157e308):
        assert _metric_json([1.0, odd]) is None


def test_oracle_gaps_are_kept_by_content(tmp_path: Path) -> None:
    """A re-render reads the portability view's oracle gaps back (the same numbers); another signature, or an
    entry that cannot be read, is computed again."""
    from harness.cases import load_cases
    from harness.report.gaps import GapCache, oracle_gaps

    case = next(c for c in load_cases([Path(__file__).parents[2] / "cases"]) if c.steps)
    params = case.summary()
    sigs = [("unbiased", 0.1, 1e-5), ("biased", 0.1, 1e-5)]
    want = oracle_gaps(params, sigs)
    assert want and want["0,1"]
    first = GapCache(tmp_path / "cache")
    assert first.get(params, sigs) == want and first.hits == 0
    files = sorted((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].name.startswith("gaps-")
    again = GapCache(tmp_path / "cache")
    assert again.get(params, sigs) == want and again.hits == 1
    other = [("unbiased", 0.1, 1e-3), ("biased", 0.1, 1e-5)]
    assert again.get(params, other) == oracle_gaps(params, other) and again.hits == 1
    files[0].write_text("{torn")
    third = GapCache(tmp_path / "cache")
    assert third.get(params, sigs) == want and third.hits == 0


def test_base120_reads_back_every_length_and_stays_in_a_script_element() -> None:
    """The page's text of the packed blob: every length of the last group read back; no whitespace at either
    end to trim, no carriage return for HTML to rewrite, no NUL, no '<' (so no '</script' can form), one byte
    a character in UTF-8."""
    import os

    for n in [*range(0, 14), 1000, 4097]:
        data = os.urandom(n)
        text = base120.encode(data)
        assert base120.decode(text) == data and len(text) == n // 6 * 7 + (n % 6 + 1 if n % 6 else 0)
        assert len(text.encode()) == len(text)
    edge = b"\xff" * 12 + b"\x00" * 12
    assert base120.decode(base120.encode(edge)) == edge
    assert len(base120.ALPHABET) == len(set(base120.ALPHABET)) == 120 and 120 ** 7 >= 2 ** 48
    assert not set(base120.ALPHABET) & set("\x00\t\n\x0b\x0c\r <")


def _odd_numbers(paths: list[Path]) -> list[Path]:
    """The first results file with numbers the planes cannot say in their usual way planted in its result
    records: NaN, infinities, signed zeros, the largest and smallest doubles, ties of the rounding, integers,
    numbers past 10**22; a pass's observed value apart from its expected one, and one equal to it."""
    odd = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.7976931348623157e308, 5e-324,
           2.2250738585072014e-308, 0.125, 2.5e-5, 9.995, 999.5, 0.00099995, 1e22, 1.23456e23, 1e-21,
           3.14159e-24, 7, 123456, -2.675, 1e300]
    lines = paths[0].read_text().splitlines()
    out, k = [lines[0]], 0
    for line in lines[1:]:
        obj = json.loads(line)
        if obj["kind"] == "result" and obj.get("max_abs_err") is not None:
            for field in ("max_abs_err", "max_rel_err", "max_ulp_err", "threshold", "error_ratio", "weak_ratio",
                          "stable_abs_err", "expected", "observed"):
                if k % 3 == 0:
                    obj[field] = odd[k % len(odd)]
                k += 1
            if k % 7 == 0:
                obj["observed"] = obj["expected"]
            elif k % 7 == 1 and isinstance(obj["expected"], float):
                obj["observed"] = obj["expected"] * (1 + 1e-9)  # the same to four digits: "="
        out.append(json.dumps(obj))
    paths[0].write_text("\n".join(out) + "\n")
    return paths


def test_a_packed_page_carries_every_shown_number_of_every_record(tmp_path: Path) -> None:
    """No loss in the packed page (issue 21): its data, unpacked as the page unpacks it (``page.decode``,
    ``unpackColumn`` in ``data.js``), holds for every record of every cell each value the detail view
    shows, at the precision it is rounded to for the page (the error metrics three significant digits;
    a pass's expected and observed values four; any other verdict's every digit; ``"="`` where the
    observed value reads as the expected one), and every other column as the records hold it. The records
    are read from the results files here, not through the report's model."""
    from harness.cases import load_cases
    from harness.report.blob import MESSAGE_CHARS, SAME_AS_EXPECTED, rounded
    from harness.schema import MismatchKind, Verdict, parse
    from tests.report_sample import ADAPTERS

    cases = [c.model_copy(update={"steps": 2}) for c in load_cases([Path(__file__).parents[2] / "cases"])][:8]
    paths = _odd_numbers(synthetic(tmp_path / "reports", ["current", "older"], ADAPTERS[:5], cases=cases,
                                   bad_fraction=0.5, seed=3))
    out = tmp_path / "index.html"
    page.render_paths(paths, out, compress=True, plots=False, plot_cache=False)
    html = out.read_text()
    m = re.search(r'id="bn-data" data-encoding="([^"]+)" data-planes="(\d+)">(.*?)</script>', html, re.S)
    assert m and m.group(1) == "gzip+base120" and int(m.group(2)) > 0
    blob = page.decode(page.Payload(Markup(m.group(3)), m.group(1), int(m.group(2))))
    fields = blob["fields"]["result"]
    col = {f: blob["rows"][i] for i, f in enumerate(fields)}
    env_of = {e: i for i, e in enumerate(blob["envs"])}
    col_of = {(c["env"], c["adapter"]): i for i, c in enumerate(blob["cols"])}
    row_of = {c["name"]: i for i, c in enumerate(blob["cases"])}
    records: dict[tuple[str, str, str], list] = {}
    for p in paths:
        for line in p.read_text().splitlines()[1:]:
            r = parse(line)
            if isinstance(r, Result) and r.quantity is not Quantity.OUTCOME:
                records.setdefault((r.env, r.case, r.adapter), []).append(r)
    assert set(env_of) == {"current", "older"}

    def same(a, b) -> bool:  # NaN reads as the string "nan" in the data
        return type(a) is type(b) and (a == b or (a != a and b != b))

    checked = planted = 0
    for (env, case, adapter), recs in records.items():
        start, n = blob["cells"][f"{row_of[case]}:{col_of[(env, adapter)]}"]["rows"]
        assert n == len(recs)
        got = sorted(range(start, start + n), key=lambda i: (col["step"][i] is None, col["step"][i] or 0,
                                                               col["quantity"][i] or 0))
        want = sorted(recs, key=lambda r: (r.step is None, r.step or 0, list(Quantity).index(r.quantity)
                                           if r.quantity else 0))
        for i, r in zip(got, want):
            digits = 4 if r.verdict is Verdict.PASS else 17
            assert blob["verdicts"][col["verdict"][i]]["name"] == r.verdict.value
            assert col["step"][i] == r.step
            q = col["quantity"][i]
            assert (blob["quantities"][q]["name"] if q is not None else None) == (r.quantity and r.quantity.value)
            for f in ("max_abs_err", "max_rel_err", "max_ulp_err", "threshold", "error_ratio", "weak_ratio",
                      "stable_abs_err", "greatest_rel_diff"):
                v = getattr(r, f)
                assert same(col[f][i], None if v is None else rounded(v, 3)), (f, v, col[f][i])
                if isinstance(v, float) and math.isfinite(v) and v:
                    assert f"{col[f][i]:.3g}" == f"{v:.3g}"  # the three digits the detail shows
            for f in ("expected", "greatest_abs_diff"):
                v = getattr(r, f)
                assert same(col[f][i], None if v is None else rounded(v, digits)), (f, v, col[f][i])
            obs, exp = r.observed, r.expected
            if obs is None:
                assert col["observed"][i] is None
            elif exp is not None and rounded(obs, digits) == rounded(exp, digits):
                assert col["observed"][i] == SAME_AS_EXPECTED
            else:
                assert same(col["observed"][i], rounded(obs, digits)), (obs, col["observed"][i])
            for f in ("worst_index", "total", "greatest_abs_index", "greatest_rel_index", "covers"):
                assert col[f][i] == getattr(r, f)
            assert col["mismatched"][i] == (r.mismatched or None)
            k = col["mismatch_kind"][i]
            assert (list(MismatchKind)[k] if k is not None else None) == (
                None if r.mismatch_kind in (None, MismatchKind.MATCH) else r.mismatch_kind)
            assert col["ledger"][i] == (r.ledger.id if r.ledger else None)
            assert col["message"][i] == (None if r.compared or not r.message else r.message[:MESSAGE_CHARS])
            checked += 1
            planted += any(not isinstance(getattr(r, f), float) or not math.isfinite(getattr(r, f))
                           or getattr(r, f) in (0.0, 7, 123456) for f in ("max_abs_err", "expected")
                           if getattr(r, f) is not None)
    assert checked == sum(map(len, records.values())) > 500 and planted > 20


def test_the_planes_round_as_the_blob_rounds_and_read_back_every_value() -> None:
    """``packed.Rounded`` rounds a column at once as ``blob.rounded`` rounds one number (three and four
    significant digits; log-uniform numbers over 50 decades, both signs, ties of the rounding, powers of ten
    and their neighbours, the extremes of a double), and what the planes cannot say (NaN, infinities, -0.0,
    integers, strings, numbers past 10**22) travels as it is; integer and index columns likewise."""
    import numpy as np

    from harness.report.blob import rounded
    from harness.report.packed import Planes, Rounded, decode_column, pack_indices, pack_ints

    rng = np.random.default_rng(1)
    vals = list(10 ** rng.uniform(-25, 25, 50_000) * rng.choice([-1, 1], 50_000))
    for d in range(-30, 30):
        for m in (1, 0.125, 0.5, 9.995, 9.9995, 9.9949999, 1.0005, 1.005, 2.5, 99.95, 999.5, 9999.5, 1.2345, 2.675):
            vals += [m * 10.0 ** d, -m * 10.0 ** d]
    tens = np.array([10.0 ** d for d in range(-23, 24)])
    vals += [*np.nextafter(tens, 0), *np.nextafter(tens, np.inf), *tens]
    vals = [float(v) for v in vals] + [0.0, -0.0, float("nan"), float("inf"), -float("inf"), None, 5e-324,
                                       1.7976931348623157e308, 2.2250738585072014e-308]

    def same(a, b) -> bool:
        return type(a) is type(b) and (a == b or (a != a and b != b))

    narrow = [float(v) for v in 10 ** rng.uniform(-5, 2, 20_000) * rng.choice([-1, 1], 20_000)] + vals[-9:]
    narrower = [float(v) for v in 10 ** rng.uniform(0, 2.9, 20_000) * rng.choice([-1, 1], 20_000)] + vals[-9:]
    layouts = set()
    for column in (vals, narrow, narrower, [*vals[:100], 7, 123456, 2**60, True, "x"]):
        for k in (3, 4):
            planes = Planes()
            desc = Rounded(column, k).pack(planes)
            layouts.add((k, desc["h"]))
            got = decode_column(desc, b"".join(planes.parts))
            want = [None if v is None else rounded(v, k) for v in column]
            bad = [(v, g, w) for v, g, w in zip(column, got, want) if not same(g, w)]
            assert not bad, bad[:5]
            assert len(desc["x"]) < len(column) / 2  # most numbers are in the planes
    assert layouts == {(3, 0), (3, 4), (4, 0), (4, 36)}  # exponent, sign and high mantissa bits in one byte, or not
    ints = [0, 1, None, 300, 70_000, 2**31, -1, True, 2.0, "a"]
    planes = Planes()
    assert decode_column(pack_ints(ints, planes), b"".join(planes.parts)) == ints
    lists = [[1, 2], [3], None, [], [5, 300_000], [1, "a"], [1.5], [-1], [2**40], "x", [0] * 300, [True]]
    planes = Planes()
    desc = pack_indices(lists, planes)
    got = decode_column(desc, b"".join(planes.parts))
    assert got == lists and [type(v) for v in got[5:]] == [type(v) for v in lists[5:]]
    assert sorted(desc["x"], key=int) == [str(i) for i in range(5, 12)]  # (a list of 300 is one too long)
