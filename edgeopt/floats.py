"""Float32 (and float16) values as people write them: the shortest decimal that is the same float.

A float32 register holding 17.97 decodes to the double 17.969999313354492.
Both are the same float32, and 17.97 is what the device means, so that is what
edgeoptctl and scripts see. Pure functions, no I/O.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

_F32 = struct.Struct("<f")
_F16 = struct.Struct("<e")
# 9 significant digits always round-trip a float32 (IEEE 754: ceil(1 + 24·log10 2)).
_MAX_DIGITS = 9


def as_float16(value: float) -> float:
    """The float16 nearest to value, as a Python float (a double)."""
    try:
        return float(_F16.unpack(_F16.pack(value))[0])
    except OverflowError:  # beyond float16's range (65504): it rounds to infinity
        return math.copysign(math.inf, value)


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
    return _shortest(value, as_float32, _MAX_DIGITS)


def shortest_float16(value: float) -> float:
    """The same for a float16: 0.1, not 0.0999755859375 (5 digits always round-trip)."""
    return _shortest(value, as_float16, 5)


def _shortest(value: float, narrow: Callable[[float], float], max_digits: int) -> float:
    if not math.isfinite(value):
        return value
    target = narrow(value)
    for digits in range(1, max_digits + 1):
        candidate = float(f"{value:.{digits}g}")
        # `narrow`, not a bare pack: near the largest value a rounded candidate
        # may lie beyond the range.
        if narrow(candidate) == target:
            return candidate
    return value
