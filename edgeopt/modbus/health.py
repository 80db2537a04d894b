"""Device health and read statistics: online → degraded → offline, and back.

Pure: callers pass monotonic time in. A failed read makes a device degraded;
`offline_after` failures in a row make it offline, and an offline device is
only probed, with exponential backoff, until a read succeeds again.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from enum import StrEnum


class DeviceState(StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


@dataclass(slots=True)
class DeviceHealth:
    """The health state machine of one device."""

    offline_after: int = 3
    probe_min: float = 1.0
    probe_max: float = 60.0
    state: DeviceState = DeviceState.ONLINE
    failures_in_row: int = 0
    last_error: str | None = None
    next_probe: float = 0.0
    _backoff: float = 0.0

    def success(self, now: float) -> DeviceState | None:
        """Record a good read; returns the previous state if it changed."""
        self.failures_in_row = 0
        self._backoff = 0.0
        if self.state is DeviceState.ONLINE:
            return None
        previous, self.state = self.state, DeviceState.ONLINE
        return previous

    def failure(self, error: str, now: float) -> DeviceState | None:
        """Record a failed read; returns the previous state if it changed."""
        self.failures_in_row += 1
        self.last_error = error
        previous = self.state
        if self.failures_in_row >= self.offline_after:
            self.state = DeviceState.OFFLINE
            self._backoff = min(self.probe_max, max(self.probe_min, self._backoff * 2))
            self.next_probe = now + self._backoff
        else:
            self.state = DeviceState.DEGRADED
        return previous if previous is not self.state else None

    def may_poll(self, now: float) -> bool:
        """Offline devices are read only when their probe is due."""
        return self.state is not DeviceState.OFFLINE or now >= self.next_probe


@dataclass(slots=True)
class ReadStats:
    """Counters and a latency window for one device."""

    reads: int = 0
    errors: int = 0
    registers: int = 0  # units read: registers, and bits on coil/discrete tables
    bits: int = 0  # of those units, bits (a serial line carries eight to a byte)
    busy: float = 0.0  # seconds spent waiting on this device's answers
    exceptions: Counter[int] = field(default_factory=Counter)
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=2048))

    def record(
        self,
        latency: float,
        units: int,
        error: str | None,
        exception_code: int | None,
        is_bits: bool = False,
    ) -> None:
        self.reads += 1
        self.busy += latency
        self.latencies.append(latency)
        if error is None:
            self.registers += units
            if is_bits:
                self.bits += units
            return
        self.errors += 1
        self.errors_by_kind[error] += 1
        if exception_code is not None:
            self.exceptions[exception_code] += 1

    def latency_ms(self) -> dict[str, float | None]:
        """p50/p95/p99 of the recent latencies, in milliseconds."""
        if not self.latencies:
            return {"p50": None, "p95": None, "p99": None}
        ordered = sorted(self.latencies)
        last = len(ordered) - 1

        def pick(q: float) -> float:
            return round(ordered[min(last, int(q * len(ordered)))] * 1000, 3)

        return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99)}
