"""The report in a real browser: Debian's chromium driven by Playwright (the Python package only).

Opens a generated report from disk (file://, no network), applies filters, sorts, opens a
cell's detail and checks the reproducer is there, for both the plain and the gzip-packed data
blob; saves a screenshot under tmp_path (and to docs/report.png when that file is missing or
BNPARITY_UPDATE_SCREENSHOT=1). Skips only when chromium or Playwright is missing and CI is
not set; under CI a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness import report
from harness.cases import Case, load_cases
from harness.report.text import fmt_ratio
from harness.schema import MismatchKind, Quantity, Result, Verdict
from tests.report_sample import cell_records, header, synthetic, write
from tests.unit.test_report import _case, _ratio_cases, _rng, _set

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-quic", "--disable-sync"]
EVIL = "<img src=x onerror=window.__pwned=1>"


def _chromium() -> str | None:
    for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if p and Path(p).exists():
            return p
    return None


def _need_browser():
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the playwright Python package is not installed (pip install playwright; no browser download)"
        sync_playwright = None
    exe = _chromium()
    if exe is None and reason is None:
        reason = "chromium is not installed (apt-get install chromium)"
    if reason:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"browser test under CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return sync_playwright, exe


@pytest.fixture(scope="module")
def browser():
    sync_playwright, exe = _need_browser()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two environments of sample data over part of the catalogue, one of them interrupted."""
    tmp = tmp_path_factory.mktemp("results")
    cases = [c for c in load_cases([REPO / "cases"])
             if c.sweep and c.sweep["name"] in ("offset", "eps") or "batch1" in c.tags or c.use_defaults]
    adapters = ["torch", "keras3-tensorflow", "keras3-jax", "tf-keras-fused", "flax-linen", "flax-nnx"]
    return synthetic(tmp, ["current", "tf215"], adapters, cases=cases, seed=4, bad_fraction=0.12,
                     statuses={"tf215": "interrupted"})


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.wait_for_selector("body[data-ready]", timeout=30_000)
    assert page.get_attribute("body", "data-ready") == "1", errors
    return page, errors, requests


def _visible_rows(page) -> int:
    return page.evaluate("""() => [...document.querySelectorAll('#matrix-table tbody tr[data-r]')]
        .filter(tr => tr.style.display !== 'none').length""")


@pytest.mark.parametrize("compress", [False, True], ids=["json", "gzip"])
def test_report_in_chromium(browser, results: list[Path], tmp_path: Path, compress: bool) -> None:
    html = report.render_paths(results, tmp_path / "index.html", compress=compress)
    page, errors, requests = _open(browser, html.as_uri())
    all_rows = _visible_rows(page)
    assert all_rows > 10
    assert page.locator("#partial-banner").is_visible()

    # filter: failing cells only -> fewer rows, each with a failing cell left undimmed
    page.select_option("#f-verdict", "failing")
    failing_rows = _visible_rows(page)
    assert 0 < failing_rows < all_rows
    assert page.evaluate("""() => [...document.querySelectorAll('#matrix-table tbody tr[data-r]')]
        .filter(tr => tr.style.display !== 'none')
        .every(tr => [...tr.querySelectorAll('td')].some(td => !td.classList.contains('dim')
            && /v-(fail|stale|raised|crashed|timeout)/.test(td.className)))""")
    # filter: one adapter -> only its columns are displayed
    page.select_option("#f-adapter", "keras3-jax")
    shown = page.evaluate("""() => [...document.querySelectorAll('#matrix-table th.ad-h')]
        .filter(th => getComputedStyle(th).display !== 'none').map(th => th.textContent.trim())""")
    assert shown and set(shown) == {"keras3-jax"}
    page.click("#f-reset")
    assert _visible_rows(page) == all_rows
    # free text and tag
    page.fill("#f-text", "offset_1e")
    page.wait_for_timeout(300)
    names = page.evaluate("""() => [...document.querySelectorAll('#matrix-table tbody tr[data-r]')]
        .filter(tr => tr.style.display !== 'none').map(tr => tr.querySelector('th').textContent)""")
    assert names and all("offset_1e" in n for n in names)
    page.click("#f-reset")
    page.select_option("#f-tag", "defaults")
    assert 0 < _visible_rows(page) < all_rows
    page.click("#f-reset")
    # quantity filter repaints the cells from the detail data
    page.select_option("#f-quantity", "running_var")
    assert page.locator("#matrix-table td.v-pass").count() > 0
    page.click("#f-reset")

    # sort by a column: the worst cell comes first in its group
    first_col = page.locator("#matrix-table th.ad-h").first
    first_col.click()
    assert first_col.get_attribute("aria-sort") == "ascending"

    # open the detail of a failing cell
    page.select_option("#f-verdict", "fail")
    cell = page.locator("#matrix-table td.v-fail:not(.dim)").first
    # its tooltip, put on it from the blob when the pointer comes over it (Builder.cell_tip)
    assert cell.get_attribute("title") is None
    cell.hover()
    name = cell.locator("xpath=../th").inner_text()
    col = page.locator(f'#matrix-table th.ad-h[data-c="{cell.get_attribute("data-c")}"]').get_attribute("title")
    title = cell.get_attribute("title")
    assert title.startswith(f"{name} × {col.split(':')[0]}: fail; ") and "error/bound" in title, (title, col)
    cell.click()
    drawer = page.locator("#detail")
    assert drawer.is_visible()
    assert page.locator("#d-body table.q tbody tr").count() >= 8
    assert page.locator("#d-body .start").count() == 1
    script = page.locator("#repro-script").inner_text()
    assert "CASE = json.loads" in script and "ADAPTER = " in script and "reproduce" in script
    assert page.locator("#d-body", has_text="momentum as passed").count() == 1
    page.select_option("#f-verdict", "")  # the matrix undimmed beside the open detail, for the screenshot
    assert drawer.is_visible()
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    page.click("#copy-repro")
    page.wait_for_function("() => /copied|select/.test(document.querySelector('#d-body .ok').textContent)")
    page.keyboard.press("Escape")
    assert not drawer.is_visible()

    # portability: a pair table for the first case
    page.select_option("#p-q", "running_var")
    assert page.locator("#p-table td").count() > 0

    assert not errors, errors
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests
    if not compress:
        docs = REPO / "docs" / "report.png"
        if not docs.exists() or os.environ.get("BNPARITY_UPDATE_SCREENSHOT") == "1":
            docs.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, docs)
    page.close()


def test_markup_in_results_stays_text_in_chromium(browser, tmp_path: Path) -> None:
    """A case name and an exception message holding markup render as text; nothing runs."""
    case = Case.model_validate({"name": "markup", "shape": [8, 2], "tags": ["structure"]})
    recs = cell_records(case, "torch", "e", "2.13.0", np.random.default_rng(0), "raised")
    recs += cell_records(case, "keras3-jax", "e", "3.15.1", np.random.default_rng(1), "fail")
    for r in recs:
        r.case = EVIL
        if isinstance(r, Result) and r.quantity is Quantity.OUTCOME and r.verdict is Verdict.RAISED:
            r.exception_message = f"</script><script>window.__pwned=2</script>{EVIL}"
    paths = [write(tmp_path / "e" / "results.jsonl", header("e", ["torch", "keras3-jax"]), recs)]
    for compress in (False, True):
        html = report.render_paths(paths, tmp_path / f"evil{int(compress)}.html", compress=compress)
        page, errors, _ = _open(browser, html.as_uri())
        assert page.locator("th.case", has_text=EVIL).count() == 1
        page.locator("#matrix-table td.v-raised").first.click()
        assert EVIL in page.locator("#d-title").inner_text()
        assert "</script><script>window.__pwned=2</script>" in page.locator("#d-body").inner_text()
        assert page.evaluate("() => window.__pwned") is None
        assert page.locator("#d-body img").count() == 0 and page.locator("th.case img").count() == 0
        assert not errors, errors
        page.close()


# values where rounding could go two ways: ties at the page's 3 digits and at the 2 (or 1) shown
RATIOS = [0.0, 0.004, 0.0125, 0.0996, 0.125, 0.15, 0.31, 0.345, 0.996, 1.0, 1.0004, 1.04, 1.25, 4.25, 4.2471, 9.96,
          42.5, 994.9, 999.6, 2.5e4, 24996.0, 31234.0, 9.6e4, 1.2e30, 5.69e15]


def _column(page, adapter: str) -> str:
    return page.locator("#matrix-table th.ad-h", has_text=adapter).get_attribute("data-c")


def _texts(page, adapter: str = "torch") -> dict[str, str]:
    """{case: text} of one adapter's column."""
    return page.evaluate("""c => Object.fromEntries([...document.querySelectorAll('#matrix-table tbody tr[data-r]')]
        .map(tr => [tr.querySelector('th').textContent, tr.querySelector(`td[data-c="${c}"]`).textContent]))""",
                         _column(page, adapter))


def test_matrix_numbers_in_chromium(browser, tmp_path: Path) -> None:
    """The page paints the cells as the server wrote them (error/bound, the kind where there is no ratio),
    sorts a column by that number, and shows settings as a person wrote them."""
    recs = _ratio_cases()
    for i, r in enumerate(RATIOS):
        recs += _set(cell_records(_case(f"r{i:02d}"), "torch", "e", "2.13.0", _rng(i)),
                     Verdict.FAIL if r > 1 else None, rest=0.0, error_ratio=r, max_ulp_err=10.0 ** (40 - i),
                     mismatch_kind=MismatchKind.VALUE if r > 1 else MismatchKind.MATCH)
    keras = Case.model_validate({"name": "momentum_07", "shape": [8, 2], "momentum": 0.7, "tags": ["other"]})
    recs += cell_records(keras, "keras3-jax", "e", "3.15.1", _rng(99))
    paths = [write(tmp_path / "e" / "results.jsonl", header("e", ["torch", "keras3-jax"]), recs)]
    html = report.render_paths(paths, tmp_path / "n.html", compress=False, plots=False)
    page, errors, _ = _open(browser, html.as_uri())
    served = _texts(page)
    assert served["tiny_scale"] == "0.31" and served["nan_out"] == "NaN" and served["outcome_fail"] == "F"
    want = {f"r{i:02d}": fmt_ratio(r, r > 1) for i, r in enumerate(RATIOS)}
    assert {k: served[k] for k in want} == want
    page.click("#f-reset")  # the script repaints every cell from the data blob: the same text
    assert _texts(page) == served
    page.select_option("#f-quantity", "dx")  # one quantity: its own number
    assert _texts(page)["tiny_scale"] == "0.011" and _texts(page)["r06"] == "0"
    page.click("#f-reset")

    # sort by the torch column: worst verdict first, then by error/bound (not by ULPs)
    page.locator(f'#matrix-table th.ad-h[data-c="{_column(page, "torch")}"]').click()
    order = page.evaluate("""() => [...document.querySelectorAll('#matrix-table tbody tr[data-r]')]
        .map(tr => tr.querySelector('th').textContent)""")
    passes = [n for n in order if n in ("tiny_scale", "r06", "r08", "r04")]  # ULPs 1.1e47, 1e34, 1e32, 1e36
    assert passes == ["r08", "r06", "tiny_scale", "r04"], passes  # 0.996, 0.31, 0.31 (row order), 0.125
    fails = [n for n in order if n in ("outside", "just_outside", "far_outside", "nan_out", "r20")]
    assert fails == ["r20", "outside", "just_outside", "nan_out", "far_outside"], fails

    # settings as a person wrote them: Keras gets 1 - 0.7 = 0.30000000000000004 and eps 1e-05
    row = page.locator("#matrix-table th.case", has_text="momentum_07").locator("xpath=..")
    row.locator(f'td[data-c="{_column(page, "keras3-jax")}"]').click()
    body = page.locator("#d-body").inner_text()
    assert "momentum as passed to keras3-jax\t0.3\n" in body and "weight of the new statistic\t0.7\n" in body, body
    assert "\neps\t1e-05\n" in body and "30000000000000004" not in body
    assert not errors, errors
    page.close()


@pytest.fixture(scope="module")
def large_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A merged report of four version sets x 12 adapters plus their benchmark files (sample data), or the
    report named by BNPARITY_LARGE_REPORT (e.g. the 1,000,000-record page that benchmarks/bench_report.py
    --keep leaves), to measure first paint on."""
    given = os.environ.get("BNPARITY_LARGE_REPORT")
    if given:
        return Path(given)
    from tests.unit.test_report import _bench_file

    tmp = tmp_path_factory.mktemp("large")
    cases = [c.model_copy(update={"steps": 3}) for c in load_cases([REPO / "cases"])][:24]
    envs = ["current", "tf215", "keras30", "flax08"]
    paths = synthetic(tmp / "reports", envs, cases=cases, seed=7)
    for p in paths:
        _bench_file(p.parent / "bench.jsonl", p.parent.name)
    return report.render_paths([tmp / "reports"], tmp / "reports" / "index.html")


def test_large_merged_report_in_chromium(browser, large_report: Path, record_property) -> None:
    """Every environment's columns, the drift story and a cell's detail in the last environment, on a large
    merged report. First paint and the time until the script is ready are measured and printed (and
    recorded in the junit XML), never asserted: they depend on the machine."""
    page, errors, requests = _open(browser, large_report.as_uri())
    timing = page.evaluate("""() => ({
        fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,
        dom: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
        ready: +document.body.getAttribute('data-ready-ms')})""")
    mb = large_report.stat().st_size / 1e6
    print(f"\n{large_report.name} ({mb:.1f} MB): first contentful paint {timing['fcp']:.0f} ms, DOM content loaded "
          f"{timing['dom']:.0f} ms, script ready {timing['ready']:.0f} ms")
    for k, v in timing.items():
        record_property(f"large_report_{k}_ms", round(v or -1))
    record_property("large_report_mb", round(mb, 2))
    envs = page.evaluate("() => [...document.querySelectorAll('#matrix-table th.env-h')].map(th => th.dataset.env)")
    assert len(envs) >= 2
    assert page.locator("#drift-summary tbody tr").count() > 0
    page.locator("#drift-cells > summary").click()
    assert page.locator("#drift-table tbody tr").first.is_visible()
    # a cell of the last environment's last column opens with its records
    last = page.locator("#matrix-table th.ad-h").last.get_attribute("data-c")
    page.select_option("#f-verdict", "fail")
    cell = page.locator(f'#matrix-table td.v-fail[data-c="{last}"]:not(.dim)')
    if cell.count() == 0:
        cell = page.locator("#matrix-table td.v-fail:not(.dim)")
    cell.first.click()
    assert page.locator("#d-body table.q tbody tr").count() >= 4
    if not os.environ.get("BNPARITY_LARGE_REPORT"):
        assert page.locator("#bench figure.plot img").count() >= 2  # the benchmark files, merged
    assert not errors, errors
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests
    page.close()


_SHOWN = """() => {
  const out = {};
  const sel = document.querySelector('#f-quantity');
  const quantities = [...sel.options].map(o => o.value).filter(q => q).concat(['']);
  for (const q of quantities) {  // the matrix as each quantity paints it (the headlines come from the records)
    sel.value = q;
    sel.dispatchEvent(new Event('change'));
    out['matrix ' + q] = [...document.querySelectorAll('#matrix-table td[data-c]')]
      .map(td => td.className + ' ' + td.textContent).join('|');
  }
  for (const td of document.querySelectorAll('#matrix-table td[data-c]')) {  // every cell's detail
    if (td.classList.contains('none')) continue;
    td.click();
    out[td.parentNode.dataset.r + ':' + td.dataset.c] = document.querySelector('#d-body').innerText;
  }
  return out;
}"""


def test_a_packed_page_shows_what_the_plain_page_shows(browser, tmp_path: Path) -> None:
    """No loss in a real browser (issue 21): the same results as plain JSON and packed (the records' numbers
    as byte planes, unpacked by the page's script) read the same, every matrix cell for every quantity and
    every cell's detail, text for text; the records carry NaN, infinities, signed zeros, ties of the
    rounding and numbers past 10**22 (test_report_scale._odd_numbers)."""
    from tests.unit.test_report_scale import _odd_numbers

    cases = [c.model_copy(update={"steps": 2}) for c in load_cases([REPO / "cases"])][:8]
    paths = _odd_numbers(synthetic(tmp_path / "reports", ["current", "older"],
                                   ["torch", "keras3-jax", "tf-keras-fused", "flax-linen", "flax-nnx"], cases=cases,
                                   bad_fraction=0.5, seed=3))
    shown = {}
    for compress in (False, True):
        html = report.render_paths(paths, tmp_path / f"index-{compress}.html", compress=compress, plots=False)
        assert ('data-encoding="gzip+base120"' in html.read_text()) is compress
        page, errors, _ = _open(browser, html.as_uri())
        shown[compress] = page.evaluate(_SHOWN)
        assert not errors, errors
        page.close()
    assert len(shown[False]) > 60 and sum(k.startswith("matrix ") for k in shown[False]) > 5
    assert any("nan" in t.lower() or "inf" in t for t in shown[False].values())
    for key, text in shown[False].items():
        assert shown[True][key] == text, key
    assert shown[True].keys() == shown[False].keys()
