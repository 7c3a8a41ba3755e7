"""How the report writes numbers and links.

The page's JavaScript (``templates/js/util.js``) mirrors ``fmt_ulp`` as ``fmtUlp`` and
``fmt_setting`` as ``fmtSetting``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from harness.repro_runtime import num


def fmt_ulp(u: float | None) -> str:
    """Short ULP text for a matrix cell: '0', '<.01', '2.3', '123', '1.2e5', 'inf'; '' for none or NaN."""
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
