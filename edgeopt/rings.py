"""Bounded histories of numbers kept in C arrays, read like `deque(maxlen=...)`.

Per-tag and per-device histories fill up as a daemon runs: a float object in a
deque slot costs 32 bytes, a double in an array 8, a time to the millisecond
4. At 10k tags and 100 devices that is tens of MB of the gateway's memory.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from itertools import chain
from typing import Any

__all__ = ["CostSamples", "FloatRing", "TimeRing"]


class _ArrayRing:
    """The last `maxlen` items of a C array of `typecode`, oldest first."""

    __slots__ = ("_start", "_values", "maxlen")
    typecode = "d"

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._values: array[Any] = array(self.typecode)  # doubles or int32s
        self._start = 0  # index of the oldest once the ring is full

    def _append(self, value: float) -> None:
        values = self._values
        if len(values) < self.maxlen:
            values.append(value)
        else:
            values[self._start] = value
            self._start = (self._start + 1) % self.maxlen

    def __len__(self) -> int:
        return len(self._values)

    def _item(self, i: int) -> float:
        n = len(self._values)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("ring index out of range")
        return self._values[(self._start + i) % n]

    def _items(self) -> Iterator[float]:
        start, values = self._start, self._values
        if start == 0:
            return iter(values)
        return chain(values[start:], values[:start])


class FloatRing(_ArrayRing):
    """The last `maxlen` numbers, oldest first: a ring of C doubles.

    Reads like a `deque(maxlen=...)` (len, iteration, indexing from either
    end, `maxlen`, `append`), 80 bytes empty instead of 760.
    """

    __slots__ = ()

    def append(self, value: float) -> None:
        self._append(value)

    def __getitem__(self, i: int) -> float:
        return self._item(i)

    def __iter__(self) -> Iterator[float]:
        return self._items()

    def __repr__(self) -> str:
        return f"FloatRing({list(self)!r}, maxlen={self.maxlen})"


# int32 milliseconds: times up to about 24.8 days either side of the base.
_MS = 1000.0
_SPAN_MS = 2**31 - 1


class TimeRing(_ArrayRing):
    """The last `maxlen` times (epoch seconds), oldest first, to the millisecond.

    Kept as int32 milliseconds from a base time, 4 bytes a time against a
    double's 8: a tag that changes at every read fills its 512 event times,
    and at 10k such tags that is 20 MB instead of 40. Reads like FloatRing.
    A time more than 24.8 days from the base becomes the base, and the times
    it leaves out of range (that much older) are dropped.
    """

    __slots__ = ("_base",)
    typecode = "i"

    def __init__(self, maxlen: int) -> None:
        super().__init__(maxlen)
        self._base: float | None = None

    def append(self, value: float) -> None:
        base = self._base
        if base is None:
            base = self._base = value
        offset = round((value - base) * _MS)
        if not -_SPAN_MS <= offset <= _SPAN_MS:
            self._rebase(value)
            offset = 0
        self._append(offset)

    def _rebase(self, base: float) -> None:
        kept = [t for t in self if abs(round((t - base) * _MS)) <= _SPAN_MS]
        self._values = array(self.typecode, [round((t - base) * _MS) for t in kept])
        self._start, self._base = 0, base

    def __getitem__(self, i: int) -> float:
        return (self._base or 0.0) + self._item(i) / _MS

    def __iter__(self) -> Iterator[float]:
        base = self._base or 0.0
        return (base + offset / _MS for offset in self._items())

    def __repr__(self) -> str:
        return f"TimeRing({list(self)!r}, maxlen={self.maxlen})"


class CostSamples:
    """The last `maxlen` (registers, latency) pairs of a device's good reads.

    Iterates as pairs, like the deque of tuples it replaces (88 bytes a
    sample there, 16 here).
    """

    __slots__ = ("_latencies", "_units")

    def __init__(self, maxlen: int) -> None:
        self._units = FloatRing(maxlen)
        self._latencies = FloatRing(maxlen)

    @property
    def maxlen(self) -> int:
        return self._units.maxlen

    def append(self, sample: tuple[int, float]) -> None:
        units, latency = sample
        self._units.append(units)
        self._latencies.append(latency)

    def __len__(self) -> int:
        return len(self._units)

    def __iter__(self) -> Iterator[tuple[int, float]]:
        return zip((int(u) for u in self._units), self._latencies, strict=True)
