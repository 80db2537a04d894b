"""Parse and format the durations and sizes used in the config and by edgeoptctl.

Durations are Go-style strings (`250ms`, `10s`, `1.5m`, `1h30m`, `7d`) or plain
numbers of seconds; sizes are `512MB`, `10KiB` or plain bytes. Both parsers
raise ValueError with a message fit to show a user as it is.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

__all__ = ["format_duration", "parse_duration", "parse_size"]

# Seconds per duration unit. Months and years are left out on purpose: they
# have no fixed length, and `m` already means minutes.
_DURATION_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
# `ms` comes before `m` and `s` so the alternation matches it whole.
_COMPONENT = rf"({_NUMBER})(ms|s|m|h|d|w)"
_DURATION_RE = re.compile(rf"([+-]?)((?:{_NUMBER}(?:ms|s|m|h|d|w))+)")
_COMPONENT_RE = re.compile(_COMPONENT)
_PLAIN_NUMBER_RE = re.compile(rf"[+-]?{_NUMBER}")

_DURATION_HINT = "expected a number with a unit ms, s, m, h, d or w (e.g. 250ms, 10s, 1h30m)"


def parse_duration(value: str | int | float) -> float:
    """Return `value` in seconds.

    A number (or a string holding only a number) is seconds. A string is one or
    more number+unit parts, optionally signed, so `-10m` gives -600.0 (callers
    that need a positive duration check the sign themselves).

    Raises:
        ValueError: the value is not a duration, or is not finite.
    """
    # bool is an int subclass, and `timeout: yes` is surely a mistake.
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"invalid duration {value!r}: too large") from None
        return _finite(seconds, value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    text = value.strip()
    if _PLAIN_NUMBER_RE.fullmatch(text):
        return _finite(float(text), value)
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    total = 0.0
    for number, unit in _COMPONENT_RE.findall(match.group(2)):
        if unit == "ms":
            # Divide rather than multiply by 0.001, so `250ms` is exactly 0.25.
            total += float(number) / 1000.0
        else:
            total += float(number) * _DURATION_UNITS[unit]
    if match.group(1) == "-":
        total = -total
    return _finite(total, value)


def _finite(seconds: float, original: object) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {original!r}: must be finite")
    return seconds


def format_duration(seconds: float) -> str:
    """Return the shortest readable string that `parse_duration` turns back into `seconds`.

    Whole days, hours, minutes, seconds or milliseconds use that unit (`5m`,
    `250ms`); anything else falls back to exact seconds (`1.2345s`).
    """
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format non-finite duration {seconds!r}")
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    magnitude = abs(float(seconds))
    candidates: list[str] = []
    for unit in ("d", "h", "m", "s"):
        factor = _DURATION_UNITS[unit]
        count = magnitude / factor
        if magnitude >= factor and count.is_integer():
            candidates.append(f"{sign}{int(count)}{unit}")
            break
    millis = magnitude * 1000.0
    if millis.is_integer():
        candidates.append(f"{sign}{int(millis)}ms")
    for text in candidates:
        # Check rather than trust the float arithmetic: huge values do not
        # always survive count * factor, and may even overflow.
        try:
            if parse_duration(text) == float(seconds):
                return text
        except ValueError:
            pass
    return f"{sign}{magnitude!r}s"


# Bytes per size unit, keyed by the lower-cased unit. Decimal units are
# 1000-based (as disk vendors and `df -H` count), the IEC ones 1024-based.
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")
_SIZE_HINT = "expected bytes or a number with a unit B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"


def parse_size(value: str | int) -> int:
    """Return `value` in bytes: `2GB` is 2 000 000 000, `10KiB` is 10 240, `512` is 512.

    Raises:
        ValueError: the value is not a size, is negative or is not whole bytes.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"invalid size {value!r}: {_SIZE_HINT}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value!r}: must not be negative")
        return value
    match = _SIZE_RE.fullmatch(value.strip())
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"invalid size {value!r}: {_SIZE_HINT}")
    try:
        amount = Decimal(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    except InvalidOperation:  # pragma: no cover - the regex admits only plain decimals
        raise ValueError(f"invalid size {value!r}: {_SIZE_HINT}") from None
    if amount != amount.to_integral_value():
        raise ValueError(f"invalid size {value!r}: not a whole number of bytes")
    return int(amount)
