"""How the report writes numbers and links.

The page's JavaScript (``templates/js/util.js``) mirrors ``fmt_ratio`` as ``fmtRatio``, ``fmt_ulp``
as ``fmtUlp`` and ``fmt_setting`` as ``fmtSetting``, with the same float operations, so a cell
reads the same before and after the page repaints it (a self-test compares them in chromium).
"""

from __future__ import annotations

import math
import re
from typing import Any

from harness.repro_runtime import num

RATIO_DIGITS = 3  # significant digits of error/bound in the page's data (and so in the matrix)


def ratio_value(r: float | None) -> float | None:
    """Error / bound as the page holds it: rounded to ``RATIO_DIGITS`` significant digits."""
    if r is None or not math.isfinite(r):
        return r
    x = float(f"{r:.{RATIO_DIGITS}g}")
    return x if math.isfinite(x) else r  # rounding 1.8e308 up overflows


def fmt_ratio(r: float | None, over: bool = False) -> str:
    """Error / bound for a matrix cell (1 = on the bound): '0', '<.01', '0.31', '4.2', '42', '3e4', 'inf',
    'NaN'; '' for none.

    From the value rounded to three significant digits (``ratio_value``), then two significant
    digits below 1000 and one above, rounding half up. ``over`` (the record it comes from differs
    from the oracle) turns a '1' into '>1': a failure never reads as on the bound.
    """
    if r is None:
        return ""
    if math.isnan(r):
        return "NaN"
    if math.isinf(r):
        return "inf" if r > 0 else "-inf"
    r = ratio_value(r)
    if r <= 0:
        return "0"
    if r < 0.01:
        return "<.01"
    if r < 1000:
        q = 1000 if r < 0.1 else 100 if r < 1 else 10 if r < 10 else 1
        t = math.floor(r * q + 0.5) / q
        text = str(int(t)) if t.is_integer() else repr(t)
        return ">1" if over and text == "1" else text
    e = 0
    while r >= 10:
        r /= 10
        e += 1
    m = math.floor(r + 0.5)
    if m == 10:
        m, e = 1, e + 1
    return f"{m}e{e}"


def fmt_ulp(u: float | None) -> str:
    """Short ULP text: '0', '<.01', '2.3', '123', '1.2e5', 'inf'; '' for none or NaN."""
    if u is None or math.isnan(u):
        return ""
    if math.isinf(u):
        return "inf"
    if u == 0:
        return "0"
    if u < 0.01:
        return "<.01"
    if u < 10:
        return f"{u:.2g}"
    if u < 1000:
        return f"{u:.0f}"
    return f"{u:.1e}".replace("e+0", "e").replace("e+", "e")


def fmt_g(v: float | None, digits: int = 3) -> str:
    """A number to ``digits`` significant digits, exponents short: 0.0261, 1.58e5, 3.2e-7; '' for None."""
    if v is None:
        return ""
    return f"{v:.{digits}g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def fmt_setting(v: Any) -> str:
    """A setting (momentum, eps, a case parameter) as a person wrote it: 0.3, not 0.30000000000000004.

    ``harness.repro_runtime.num``: 12 significant digits, then the shortest text that reads back as
    that number; '' for None.
    """
    return "" if v is None else str(num(v))


def fmt_value(v: float | None) -> str:
    """An expected or observed value: six significant digits, 'nan', or 'n/a' when there is none."""
    if v is None:
        return "n/a"
    return "nan" if math.isnan(v) else f"{v:.6g}"


SAFE_LINK = re.compile(r"^https?://[^\s\"'<>]+$")


def safe_link(link: Any) -> str | None:
    """Only http(s) links become anchors: a results file must not plant ``javascript:`` URLs."""
    return link if isinstance(link, str) and SAFE_LINK.match(link) else None
