"""The report at scale (issue 21): what keeps a million-record report within its time, memory and size
goes through the same checks as the small one. The report keeps each result record as a slim ``Row``
(``results.read(path, result=Row.of)``), ships the records column by column, and encodes the blob a
column at a time; these self-tests pin that nothing is lost on the way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import results
from harness.report import base85, page
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
    """The streamed encoding decodes to exactly what one json.dumps of the whole blob gives, plain or packed,
    and stays script-safe."""
    import gzip

    model = load(sample)
    payload, encoding = page.encode(Blob(model, Builder(model)).build(), compress)
    whole = Blob(model, Builder(model)).build()
    whole["rows"] = list(whole["rows"])
    text = base85.decode(str(payload)) if encoding == "gzip+base85" else str(payload).encode()
    if encoding == "gzip+base85":
        text = gzip.decompress(text)
    assert json.loads(text) == json.loads(json.dumps(whole, allow_nan=False))
    assert encoding == ("json" if compress is False or (compress is None and len(text) <= page.COMPRESS_ABOVE)
                        else "gzip+base85")
    if encoding == "json":
        assert "<" not in str(payload) and "&" not in str(payload)


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


def test_base85_is_rfc1924_without_the_less_than_sign() -> None:
    """The page's text of the packed blob: the standard base-85 with '.' for '<' (so no '</script' can form),
    every length of the last group read back."""
    import base64
    import os

    for n in [*range(0, 12), 1000, 4097]:
        data = os.urandom(n)
        text = base85.encode(data)
        assert "<" not in text and base85.decode(text) == data
        assert text.replace(".", "<") == base64.b85encode(data).decode()
    assert len(base85.ALPHABET) == len(set(base85.ALPHABET)) == 85 and "<" not in base85.ALPHABET
