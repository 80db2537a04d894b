"""Injected time: the daemon reads time only through a Clock.

`SystemClock` is the real one. `VirtualClock` lets the benchmark replay days of
plant time in seconds through the same planner, scheduler and strategies.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Where the daemon gets the time from."""

    def now(self) -> float:
        """Wall-clock time in epoch seconds (used for timestamps)."""
        ...

    def monotonic(self) -> float:
        """A monotonic time in seconds (used for deadlines and durations)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """A clock that only moves when told to; `sleep` advances it at once.

    Monotonic time and wall time move together, from `start` (epoch seconds).
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._epoch = start
        self._t = 0.0

    def now(self) -> float:
        return self._epoch + self._t

    def monotonic(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._t += seconds

    def set_monotonic(self, t: float) -> None:
        """Jump forward to monotonic time `t` (never backwards)."""
        if t > self._t:
            self._t = t

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)
