"""Bytes as text for the page, 7 characters per 6 bytes (base-85: 5 per 4; base64: 4 per 3).

The alphabet is the 120 one-byte characters of UTF-8 (U+0001 to U+007F) less the five whitespace
controls and the space (HTML normalizes a carriage return, and both ends of the text may be trimmed)
and ``<`` (so no ``</script`` can form): the text sits in a ``<script>`` element as it is. The other
C0 controls and DEL are in it: the HTML parser calls them a parse error and keeps them, as
``textContent`` does. Six bytes are a 48-bit number, written as seven base-120 digits, most
significant first (120**7 > 2**48); the last ``r`` bytes (``r`` < 6) take ``r + 1`` digits.
``templates/js/data.js`` (``b120decode``) reads it back; ``decode`` does the same in Python.

    >>> decode(encode(b"batch norm")) == b"batch norm"
    True
"""

from __future__ import annotations

import numpy as np

_SKIP = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, ord("<")}
ALPHABET = "".join(chr(c) for c in range(1, 128) if c not in _SKIP)
BASE = len(ALPHABET)  # 120
GROUP, DIGITS = 6, 7
_CODES = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)


def _digits(values: np.ndarray, n: int) -> np.ndarray:
    """``values`` (uint64) as ``n`` base-120 digits each, most significant first."""
    out = np.empty((len(values), n), dtype=np.uint8)
    v = values.copy()
    for i in range(n - 1, -1, -1):
        out[:, i] = v % BASE
        v //= BASE
    return out


def encode(data: bytes) -> str:
    """The text of ``data``, a whole array at a time."""
    full = len(data) // GROUP * GROUP
    b = np.frombuffer(data, dtype=np.uint8, count=full).reshape(-1, GROUP).astype(np.uint64)
    words = np.zeros(len(b), dtype=np.uint64)
    for j in range(GROUP):
        words = (words << np.uint64(8)) | b[:, j]
    text = _CODES[_digits(words, DIGITS)].tobytes()
    rest = data[full:]
    if rest:
        text += _CODES[_digits(np.array([int.from_bytes(rest, "big")], dtype=np.uint64), len(rest) + 1)].tobytes()
    return text.decode("ascii")


def decode(text: str) -> bytes:
    value = {c: i for i, c in enumerate(ALPHABET)}
    out = bytearray()
    for at in range(0, len(text), DIGITS):
        group = text[at:at + DIGITS]
        v = 0
        for c in group:
            v = v * BASE + value[c]
        out += v.to_bytes(GROUP if len(group) == DIGITS else len(group) - 1, "big")
    return bytes(out)
