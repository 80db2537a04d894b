"""Float32 values as people write them: the shortest decimal that is the same float32.

A float32 register holding 17.97 decodes to the double 17.969999313354492.
Both are the same float32, and 17.97 is what the device means, so that is what
edgeoptctl and scripts see. Pure functions, no I/O.
"""

from __future__ import annotations

import math
import struct

_F32 = struct.Struct("<f")
# 9 significant digits always round-trip a float32 (IEEE 754: ceil(1 + 24·log10 2)).
_MAX_DIGITS = 9


def as_float32(value: float) -> float:
    """The float32 nearest to value, as a Python float (a double)."""
    try:
        return float(_F32.unpack(_F32.pack(value))[0])
    except OverflowError:  # beyond float32's range: it rounds to infinity
        return math.copysign(math.inf, value)


def shortest_float32(value: float) -> float:
    """The double with the shortest repr that rounds to the same float32 as value.

    >>> shortest_float32(17.969999313354492)
    17.97

    NaN and infinities are returned as they are.
    """
    if not math.isfinite(value):
        return value
    target = as_float32(value)
    for digits in range(1, _MAX_DIGITS + 1):
        candidate = float(f"{value:.{digits}g}")
        # as_float32, not a bare pack: near float32's largest value a rounded
        # candidate may lie beyond its range.
        if as_float32(candidate) == target:
            return candidate
    return value
