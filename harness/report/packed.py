"""The result records' columns as typed bytes: how a large report's data carries its numbers.

A packed page (``page.encode``, a blob too large for plain JSON) sends each numeric column of the
records (``blob.Columns``) as byte planes, in a gzip stream of their own ahead of the JSON's, and
the JSON holds a descriptor in the column's place. The values are exactly the ones the plain JSON
holds (``decode_column`` gives them back, and the page's ``unpackColumn`` in
``templates/js/data.js`` does the same): the planes change how the numbers travel, not which
numbers. A three-digit number as text (``1.23e-05,``) is about nine characters; here it is two
bytes: the mantissa's low byte, and one byte for its exponent, its sign and the mantissa's two high
bits, each kind of byte in a plane of its own. Deflate packs that about 30% tighter than the
digits, and a tenth tighter than exponent, low and high bytes in three planes (100k records, measured).

Descriptors (``n`` values, the planes from byte ``at`` of the planes' stream, ``x``: the values the planes
cannot say, by row, as JSON):

* ``{"c": "num", "k": K, "e0": E0, "h": H}``: numbers of ``K`` significant digits, each
  ``sign * m * 10**e`` (``e`` in -22..22: both powers are exact in a double, so ``m / 10**-e`` and
  ``m * 10**e`` are the correctly rounded number JSON would read; ``m`` = ``10**(K-1) + mm``). The code
  byte ``t`` of a row: ``0`` null, ``1`` in ``x``, ``2`` ``"="`` (``blob.SAME_AS_EXPECTED``), ``3``
  zero, else ``t = 4 + (2 * (e - E0) + sign) * H + (mm >> 8)`` with planes ``[mm & 255, t]`` (``H``: the
  values ``mm >> 8`` takes, 4 for three digits, 36 for four). A column whose exponents span too many
  decades for one byte has ``H`` 0 and ``E0`` -22: ``t = 4 + 2 * (e - E0) + sign`` and planes
  ``[t, mm & 255, mm >> 8]``.
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
from itertools import chain
from typing import Any

import numpy as np

NULL, EXCEPTION, SAME, ZERO = 0, 1, 2, 3
E_MAX = 22  # 10**e is exact in a double for |e| <= 22
_P10 = np.array([10.0 ** i for i in range(E_MAX + 1)])  # exact: every one is a double
_T0 = 4
_CODES = 256 - _T0  # of a byte, after null, in x, "=" and zero


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
    """The planes' stream: planes appended column after column (``at`` of each column: where its planes start)."""

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
        num = self.plain & ~same if same is not None else self.plain
        if same is not None:
            t[same] = SAME
        base = 10 ** (self.digits - 1)
        m = np.where(num, self.m - base, 0)  # 0 .. 9 * base - 1
        h = -(-9 * base // 256)  # how many high bytes a mantissa has (three digits: 4)
        e = self.e[num]
        e0 = int(e.min()) if len(e) else 0
        if len(e) and int(e.max()) - e0 >= _CODES // (2 * h):  # too many decades for one byte: a plane each
            e0, h = -E_MAX, 0
        s = 2 * (e - e0) + self.neg[num]
        if h:
            t[num] = _T0 + s * h + (m[num] >> 8)
            at = planes.add(m & 255, t)
        else:
            t[num] = _T0 + s
            at = planes.add(t, m & 255, m >> 8)
        xs = {str(i): self.rounded(i) for i in np.flatnonzero(t == EXCEPTION).tolist()}
        return {"c": "num", "k": self.digits, "e0": e0, "h": h, "n": n, "at": at, "x": xs}


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
    lens = [NULL if v is None else len(v) + 2 if type(v) is list and len(v) < 254 else EXCEPTION for v in values]
    flat = list(chain.from_iterable(v for v, c in zip(values, lens) if c > EXCEPTION))
    if set(map(type, flat)) - {int} or (flat and (min(flat) < 0 or max(flat) >= 1 << 31)):
        for i, c in enumerate(lens):  # a list with something else in it: that row travels in x
            if c > EXCEPTION and not all(type(j) is int and 0 <= j < (1 << 31) for j in values[i]):
                lens[i] = EXCEPTION
        flat = list(chain.from_iterable(v for v, c in zip(values, lens) if c > EXCEPTION))
    xs = {str(i): values[i] for i, c in enumerate(lens) if c == EXCEPTION}
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
        base, e0, h = 10 ** (desc["k"] - 1), desc["e0"], desc["h"]
        if h:
            lo, t = buf[at:at + n].astype(np.int64), buf[at + n:at + 2 * n].astype(np.int64)
        else:
            t, lo = buf[at:at + n].astype(np.int64), buf[at + n:at + 2 * n].astype(np.int64)
            hi = buf[at + 2 * n:at + 3 * n].astype(np.int64)
        for i in range(n):
            ti = int(t[i])
            if ti == EXCEPTION:
                out[i] = xs[str(i)]
            elif ti == SAME:
                out[i] = "="
            elif ti == ZERO:
                out[i] = 0.0
            elif ti >= _T0:
                s, high = divmod(ti - _T0, h) if h else (ti - _T0, int(hi[i]))
                e, neg = divmod(s, 2)
                e += e0
                m = float(base + int(lo[i]) + 256 * high)
                v = m / float(10 ** -e) if e < 0 else m * float(10 ** e)
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
