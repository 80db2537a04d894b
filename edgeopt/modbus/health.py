"""Device health and read statistics: online → degraded → offline, and back.

Pure: callers pass monotonic time in. Degraded is a share of failed reads
over the recent window, not the last read: a device that answers one read
in five with "busy" while the others succeed stays online, instead of going
degraded and recovered every second. It recovers (with hysteresis) once the
share falls well below. `offline_after` failures in a row with no answer at
all make it offline (an exception reply is an answer: the device is alive),
and an offline device is only probed, with exponential backoff, until a
read succeeds again.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from enum import StrEnum

from edgeopt.rings import FloatRing


class DeviceState(StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


# Degraded: at least DEGRADE_FAILURES failed reads, DEGRADE_SHARE of the window;
# back online at RECOVER_SHARE or less (hysteresis: no flapping at the edge).
HEALTH_WINDOW = 20
DEGRADE_SHARE = 0.3
DEGRADE_FAILURES = 2
RECOVER_SHARE = 0.1


@dataclass(slots=True)
class DeviceHealth:
    """The health state machine of one device."""

    offline_after: int = 3
    probe_min: float = 1.0
    probe_max: float = 60.0
    state: DeviceState = DeviceState.ONLINE
    failures_in_row: int = 0  # reads in a row with no answer at all
    last_error: str | None = None
    last_error_at: float | None = None  # monotonic time of last_error
    last_error_ts: float | None = None  # the same moment, epoch seconds (for display)
    # Epoch seconds of the first good read after last_error with the device
    # online again; None while the error still stands.
    recovered_ts: float | None = None
    next_probe: float = 0.0
    _backoff: float = 0.0
    _recent: deque[bool] = field(default_factory=lambda: deque(maxlen=HEALTH_WINDOW))

    @property
    def failure_share(self) -> float:
        """Failed reads among the recent window (half a window at least: a young
        device's first failure is not yet a share)."""
        return sum(self._recent) / max(len(self._recent), HEALTH_WINDOW // 2)

    def success(self, now: float, wall: float | None = None) -> DeviceState | None:
        """Record a good read; returns the previous state if it changed.

        wall: epoch seconds of `now`, for `recovered_ts` (default: `now`).
        """
        changed = self._success(now)
        if (
            self.last_error is not None
            and self.recovered_ts is None
            and self.state is DeviceState.ONLINE
        ):
            self.recovered_ts = now if wall is None else wall
        return changed

    def _success(self, now: float) -> DeviceState | None:
        self._recent.append(False)
        self.failures_in_row = 0
        self._backoff = 0.0
        previous = self.state
        if previous is DeviceState.OFFLINE:
            # Answering again; how well is what the window says.
            degraded = self.failure_share > RECOVER_SHARE
            self.state = DeviceState.DEGRADED if degraded else DeviceState.ONLINE
        elif previous is DeviceState.DEGRADED and self.failure_share <= RECOVER_SHARE:
            self.state = DeviceState.ONLINE
        return previous if previous is not self.state else None

    def failure(
        self, error: str, now: float, *, answered: bool = False, wall: float | None = None
    ) -> DeviceState | None:
        """Record a failed read; returns the previous state if it changed.

        answered: the device replied (an exception): it is alive, so this
        counts towards degraded but never towards offline.
        wall: epoch seconds of `now`, for `last_error_ts` (default: `now`).
        """
        self._recent.append(True)
        self.note(error, now, wall)
        if not answered:
            self.failures_in_row += 1
        previous = self.state
        if self.failures_in_row >= self.offline_after:
            self.state = DeviceState.OFFLINE
            self._backoff = min(self.probe_max, max(self.probe_min, self._backoff * 2))
            self.next_probe = now + self._backoff
        elif previous is DeviceState.ONLINE:
            failed = sum(self._recent)
            if failed >= DEGRADE_FAILURES and self.failure_share >= DEGRADE_SHARE:
                self.state = DeviceState.DEGRADED
        return previous if previous is not self.state else None

    def note(self, error: str, now: float, wall: float | None = None) -> None:
        """Remember an error as the last one, with its time, without judging health.

        For a refusal that says nothing about the device's health (ILLEGAL DATA
        ADDRESS on a read): the device answered, so `success` counted it, but
        the read failed and `devices` must say so.
        """
        self.last_error, self.last_error_at = error, now
        self.last_error_ts = now if wall is None else wall
        self.recovered_ts = None

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
    # Latency of each read from its first request to its last answer, resends
    # included: a read that needed a resend counts as slow as it was.
    latencies: FloatRing = field(default_factory=lambda: FloatRing(2048))
    retried: int = 0  # reads that needed more than one request
    resends: int = 0  # the extra requests those reads sent
    reconnects: int = 0  # reads that had to open the connection again first

    def record(
        self,
        latency: float,
        units: int,
        error: str | None,
        exception_code: int | None,
        is_bits: bool = False,
        *,
        attempts: int = 1,
        reconnected: bool = False,
    ) -> None:
        self.reads += 1
        self.busy += latency
        self.latencies.append(latency)
        if attempts > 1:
            self.retried += 1
            self.resends += attempts - 1
        if reconnected:
            self.reconnects += 1
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
