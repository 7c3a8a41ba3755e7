"""The result records' columns as typed bytes: how a large report's data carries its numbers.

A packed page (``page.encode``, a blob too large for plain JSON) sends each numeric column of the
records (``blob.Columns``) as byte planes in front of the blob's JSON, inside the one gzip stream, and
the JSON holds a descriptor in the column's place. The values are exactly the ones the plain JSON
holds (``decode`` gives them back, and the page's ``unpackColumn`` in ``templates/js/data.js`` does the
same): the planes change how the numbers travel, not which numbers. A three-digit number as text
(``1.23e-05,``) is about nine characters; here it is one byte of exponent and sign and two of mantissa,
each kind of byte in a plane of its own, which deflate packs tighter than the digits.

Descriptors (``n`` values, the planes from byte ``at`` of the binary part, ``x``: the values the planes
cannot say, by row, as JSON):

* ``{"c": "num", "k": K}``: numbers of ``K`` significant digits. Plane ``t`` (one byte a row):
  ``0`` null, ``1`` in ``x``, ``2`` ``"="`` (``blob.SAME_AS_EXPECTED``), ``3`` zero, else
  ``t = 4 + 2 * (e + 22) + sign``: the value is ``m * 10**e`` (``e`` in -22..22, both powers exact in
  a double, so ``m / 10**-e`` and ``m * 10**e`` are the correctly rounded number JSON would read),
  ``m`` in planes ``lo`` and ``hi`` (a 16-bit unsigned integer, low byte first).
* ``{"c": "int", "w": W}``: non-negative integers; ``W`` planes of ``v + 2`` (little end first),
  ``0`` null, ``1`` in ``x``.
* ``{"c": "idx", "w": W, "len": L}``: lists of non-negative integers (an element's index): plane of
  ``len(list) + 2`` (``0`` null, ``1`` in ``x``), then ``W`` planes of the ``L`` elements, row after row.

A column of anything else (strings, ledger ids) stays a JSON list.

    >>> planes = Planes()
    >>> desc = Rounded(raw, 3).pack(planes)        # raw: the records' floats (None: not recorded)
    >>> decode_column(desc, b"".join(planes.parts)) == [rounded(v, 3) for v in raw]
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

NULL, EXCEPTION, SAME, ZERO = 0, 1, 2, 3
E_MAX = 22  # 10**e is exact in a double for |e| <= 22
_P10 = np.array([10.0 ** i for i in range(E_MAX + 1)])  # exact: every one is a double
_T0 = 4


def _exact(m: np.ndarray, e: np.ndarray) -> np.ndarray:
    """``m * 10**e`` correctly rounded (m, 10**|e| exact doubles; one IEEE operation), as the page computes it."""
    p = _P10[np.abs(e)]
    return np.where(e < 0, m / p, m * p)


def round_digits(x: np.ndarray, digits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(m, e, ok)`` for finite nonzero ``x``: ``|x|`` rounded to ``digits`` significant digits is ``m * 10**e``
    (``10**(digits-1) <= m < 10**digits``), as ``'%.{digits}g' % x`` rounds it, where ``ok``. Not ok: ``e``
    outside -22..22, and a quotient too near a tie for the floating-point arithmetic to settle it (the caller
    rounds those through ``'%g'``)."""
    ax = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e = np.floor(np.log10(ax)).astype(np.int64) - (digits - 1)
        ec = np.clip(e, -E_MAX, E_MAX)
        p = _P10[np.abs(ec)]
        q = np.where(ec < 0, ax * p, ax / p)  # within a few ulps of |x| / 10**e
        m = np.rint(q)
        frac = np.abs(q - np.floor(q) - 0.5)
    top = 10.0 ** digits
    up = m >= top  # 999.6 -> 1000: one digit more, the exponent one up
    m = np.where(up, m / 10, m)
    e = np.where(up, e + 1, e)
    ok = (np.abs(e) <= E_MAX) & (np.abs(ec - (e - up)) == 0) & (frac > 1e-6) & (m >= top / 10) & (m < top)
    return m, e, ok


class Planes:
    """The binary part: planes appended column after column (``at`` of each column: where its planes start)."""

    def __init__(self, write: Callable[[bytes], Any] | None = None) -> None:
        self.parts: list[bytes] = []  # kept when there is no ``write`` (the page compresses them as they come)
        self.write = write if write is not None else self.parts.append
        self.size = 0

    def add(self, *planes: np.ndarray) -> int:
        at = self.size
        for p in planes:
            b = p.astype(np.uint8).tobytes()
            self.write(b)
            self.size += len(b)
        return at


def _width(top: int) -> int:
    return 1 if top < 1 << 8 else 2 if top < 1 << 16 else 3 if top < 1 << 24 else 4


def _byte_planes(codes: np.ndarray, w: int) -> list[np.ndarray]:
    return [(codes >> (8 * i)) & 255 for i in range(w)]


class Rounded:
    """A column of the records' numbers (float, int, None; NaN and infinities as they are) rounded as
    ``blob.rounded(v, digits)`` rounds them, ``full`` rows (a mask) to every digit (``blob.rounded(v, 17)``).
    ``values``: the rounded numbers where the planes say them (``plain``), zero where ``zero``; the rest
    (``exc``) are ``rounded`` one by one."""

    def __init__(self, raw: Sequence[Any], digits: int, full: np.ndarray | None = None):
        n = len(raw)
        self.raw, self.digits, self.full = raw, digits, full
        self.null = np.equal(np.array(raw, dtype=object), None) if n else np.zeros(0, dtype=bool)
        types = set(map(type, raw))
        if types <= {float, type(None)}:
            x = np.array(raw, dtype=np.float64) if n else np.zeros(0)  # None -> NaN
            exc = np.zeros(n, dtype=bool)
        else:  # ints (left as they are), strings, anything else: through the general rule
            odd = np.array([type(v) is not float for v in raw], dtype=bool)
            x = np.array([v if type(v) is float else np.nan for v in raw], dtype=np.float64)
            exc = odd & ~self.null
        if full is not None:
            exc |= full & ~self.null
        finite = ~self.null & ~exc & np.isfinite(x)
        self.zero = finite & (x == 0) & ~np.signbit(x)
        num = finite & (x != 0)
        m, e, ok = round_digits(np.where(num, x, 1.0), digits)
        self.plain = num & ok
        self.exc = ~self.null & ~self.zero & ~self.plain
        self.m = np.where(self.plain, m, 0).astype(np.int64)
        self.e = np.where(self.plain, e, 0)
        self.neg = self.plain & (x < 0)
        self.values = np.full(n, np.nan)
        self.values[self.plain] = np.copysign(_exact(self.m[self.plain], self.e[self.plain]), x[self.plain])
        self.values[self.zero] = 0.0

    def rounded(self, i: int) -> Any:
        """Row ``i`` as the blob writes it."""
        from harness.report.blob import rounded  # the one rule (the rows the planes cannot say)

        v = self.raw[i]
        if v is None:
            return None
        return rounded(v, 17 if self.full is not None and self.full[i] else self.digits)

    def same_as(self, other: Rounded) -> np.ndarray:
        """Rows where both are recorded and round to the same blob value."""
        both = ~self.null & ~other.null
        same = both & (self.plain | self.zero) & (other.plain | other.zero) & (self.values == other.values)
        for i in np.flatnonzero(both & (self.exc | other.exc)).tolist():
            same[i] = self.rounded(i) == other.rounded(i)
        return same

    def pack(self, planes: Planes, same: np.ndarray | None = None) -> dict[str, Any]:
        """The descriptor; the planes go into ``planes``. ``same``: rows the blob writes as ``"="``."""
        n = len(self.raw)
        t = np.zeros(n, dtype=np.int64)
        t[self.exc] = EXCEPTION
        t[self.zero] = ZERO
        t[self.plain] = _T0 + 2 * (self.e[self.plain] + E_MAX) + self.neg[self.plain]
        if same is not None:
            t[same] = SAME
        m = np.where(t >= _T0, self.m, 0)
        at = planes.add(t, m & 255, m >> 8)
        xs = {str(i): self.rounded(i) for i in np.flatnonzero(t == EXCEPTION).tolist()}
        return {"c": "num", "k": self.digits, "n": n, "at": at, "x": xs}


def pack_ints(values: Sequence[Any], planes: Planes) -> dict[str, Any]:
    """A column of non-negative integers (or None); anything else travels in ``x``."""
    n = len(values)
    codes = [0 if v is None else v + 2 if type(v) is int and 0 <= v < (1 << 31) else 1 for v in values]
    arr = np.array(codes, dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
    w = _width(int(arr.max()) if n else 0)
    at = planes.add(*_byte_planes(arr, w))
    xs = {str(i): values[i] for i in np.flatnonzero(arr == EXCEPTION).tolist()}
    return {"c": "int", "w": w, "n": n, "at": at, "x": xs}


def pack_indices(values: Sequence[Any], planes: Planes) -> dict[str, Any]:
    """A column of lists of non-negative integers (an element's index), or None."""
    n = len(values)
    lens: list[int] = []
    flat: list[int] = []
    xs: dict[str, Any] = {}
    for i, v in enumerate(values):
        if v is None:
            lens.append(NULL)
        elif type(v) is list and len(v) < 254 and all(type(j) is int and 0 <= j < (1 << 31) for j in v):
            lens.append(len(v) + 2)
            flat.extend(v)
        else:
            lens.append(EXCEPTION)
            xs[str(i)] = v
    arr = np.array(flat, dtype=np.int64) if flat else np.zeros(0, dtype=np.int64)
    w = _width(int(arr.max()) if len(arr) else 0)
    at = planes.add(np.array(lens, dtype=np.int64), *_byte_planes(arr, w))
    return {"c": "idx", "w": w, "len": len(flat), "n": n, "at": at, "x": xs}


def decode_column(desc: Any, binary: bytes | memoryview, base: int = 0) -> list[Any]:
    """A column as the plain JSON holds it (the page's ``unpackColumn`` in Python; self-tests)."""
    if isinstance(desc, list):
        return desc
    n, at, xs = desc["n"], base + desc["at"], desc["x"]
    buf = np.frombuffer(binary, dtype=np.uint8)
    out: list[Any] = [None] * n
    if desc["c"] == "num":
        t = buf[at:at + n].astype(np.int64)
        m = buf[at + n:at + 2 * n].astype(np.int64) | (buf[at + 2 * n:at + 3 * n].astype(np.int64) << 8)
        for i in range(n):
            ti = int(t[i])
            if ti == EXCEPTION:
                out[i] = xs[str(i)]
            elif ti == SAME:
                out[i] = "="
            elif ti == ZERO:
                out[i] = 0.0
            elif ti >= _T0:
                e, neg = divmod(ti - _T0, 2)
                e -= E_MAX
                v = float(m[i]) / float(10 ** -e) if e < 0 else float(m[i]) * float(10 ** e)
                out[i] = -v if neg else v
        return out
    w = desc["w"]
    if desc["c"] == "int":
        codes = sum(buf[at + j * n:at + (j + 1) * n].astype(np.int64) << (8 * j) for j in range(w))
        for i in range(n):
            c = int(codes[i])
            out[i] = None if c == NULL else xs[str(i)] if c == EXCEPTION else c - 2
        return out
    total = desc["len"]
    lens = buf[at:at + n].astype(np.int64)
    start = at + n
    vals = sum(buf[start + j * total:start + (j + 1) * total].astype(np.int64) << (8 * j) for j in range(w))
    vals = vals.tolist() if total else []
    pos = 0
    for i in range(n):
        c = int(lens[i])
        if c == EXCEPTION:
            out[i] = xs[str(i)]
        elif c != NULL:
            out[i] = vals[pos:pos + c - 2]
            pos += c - 2
    return out
