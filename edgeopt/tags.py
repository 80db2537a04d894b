"""Per-tag state: last value, quality, and the change statistics the optimizer reads.

Pure: callers pass the time in. `TagState.observe` also decides which samples
are worth storing: a change beyond the deadband (with the value held just
before it, so trends stay true), or a heartbeat once `max_staleness` passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from edgeopt.rings import TimeRing

Value = int | float | str | bool


class Quality(StrEnum):
    GOOD = "good"
    STALE = "stale"
    BAD = "bad"


_GOOD = Quality.GOOD.value

EVENT_HISTORY = 512  # change event times kept per tag


class _NoEvents(TimeRing):
    """The history of a tag that has not changed yet: empty, and it stays so."""

    __slots__ = ()

    def append(self, value: float) -> None:
        raise TypeError("a tag's event history is made at its first change")


NO_EVENTS: TimeRing = _NoEvents(EVENT_HISTORY)


@dataclass(frozen=True, slots=True)
class Sample:
    """One stored point of a tag: what sinks (storage, later MQTT) receive."""

    tag: str  # "DEVICE/NAME"
    ts: float  # epoch seconds
    value: Value | None
    quality: str  # a Quality value


def moved_beyond(a: Value | None, b: Value | None, deadband: float) -> bool:
    """Whether `b` differs from `a` by more than the deadband (any change if 0)."""
    if a is None or b is None:
        return a is not b
    if isinstance(a, str) or isinstance(b, str):
        return a != b
    fa, fb = float(a), float(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) != math.isnan(fb)
    if deadband <= 0:
        return fa != fb
    return abs(fb - fa) > deadband


@dataclass(slots=True)
class TagStats:
    """Online change statistics: what the strategies learn from.

    A change event is the value leaving the deadband around its value at the
    previous event (the same definition the benchmark scores against).
    """

    reads: int = 0
    changes: int = 0
    # Reads whose value moved beyond the deadband since the previous read: the
    # share of such reads is what a slower rate would have shown late.
    jumps: int = 0
    first_read_ts: float | None = None
    last_read_ts: float | None = None
    last_event_ts: float | None = None
    last_event_value: Value | None = None
    previous_value: Value | None = None
    # Recent event times (`recent_events`), made at the first event: most tags
    # of a plant never change, and an empty ring still costs 136 bytes.
    _events: TimeRing | None = None
    # The read-to-read steps |value - previous value| (`step_count`, `mean_step`),
    # kept up to date lazily: most reads of a quiet tag repeat the previous value
    # (a step of 0), and those are only counted here and merged when next looked at.
    _step_count: int = 0
    _step_total: float = 0.0
    _repeats: int = 0

    @property
    def recent_events(self) -> TimeRing:
        """Recent change event times, oldest first: for rates, correlation and snap-backs."""
        return NO_EVENTS if self._events is None else self._events

    @property
    def step_count(self) -> int:
        """Consecutive pairs of (numeric, finite) reads: the steps `mean_step` averages."""
        if self._repeats:
            self._merge_repeats()
        return self._step_count

    @property
    def mean_step(self) -> float:
        """Mean |value - previous value| between consecutive reads: the read-to-read noise."""
        count = self.step_count
        return self._step_total / count if count else 0.0

    def _merge_repeats(self) -> None:
        k, self._repeats = self._repeats, 0
        x = self.previous_value
        if isinstance(x, int | float) and math.isfinite(x):
            self._step_count += k  # steps of 0

    def repeat(self, ts: float) -> None:
        """Count one good read of the same value as the previous read (never an event).

        The caller has checked that the value equals `previous_value` (same
        type, not NaN): such a read moves nothing beyond any deadband, so it
        only counts, which is what makes a quiet tag's read cheap.
        """
        self.reads += 1
        self.last_read_ts = ts
        self._repeats += 1

    def observe(self, value: Value, ts: float, deadband: float) -> bool:
        """Count one good read; returns whether it was a change event."""
        if self._repeats:
            self._merge_repeats()
        self.reads += 1
        if self.first_read_ts is None:
            self.first_read_ts = ts
        self.last_read_ts = ts
        previous, self.previous_value = self.previous_value, value
        if previous is not None and moved_beyond(previous, value, deadband):
            self.jumps += 1
        if (
            isinstance(value, int | float)
            and isinstance(previous, int | float)
            and math.isfinite(value)
            and math.isfinite(previous)
        ):
            self._step_count += 1
            self._step_total += abs(float(value) - float(previous))
        if self.last_event_ts is None:
            self.last_event_ts, self.last_event_value = ts, value
            return False
        if not moved_beyond(self.last_event_value, value, deadband):
            return False
        self.changes += 1
        self.last_event_ts, self.last_event_value = ts, value
        if self._events is None:
            self._events = TimeRing(EVENT_HISTORY)
        self._events.append(ts)
        return True

    def event_rate(self) -> float:
        """Change events per second over the observed span (0 before two reads)."""
        if self.first_read_ts is None or self.last_read_ts is None:
            return 0.0
        span = self.last_read_ts - self.first_read_ts
        return self.changes / span if span > 0 else 0.0


@dataclass(slots=True)
class TagState:
    """Everything the daemon knows right now about one tag."""

    key: str  # "DEVICE/NAME"
    deadband: float
    max_staleness: float
    value: Value | None = None
    quality: Quality = Quality.BAD
    reason: str = "not read yet"
    ts: float | None = None  # epoch of the last read (good or not)
    changed_ts: float | None = None  # epoch of the last stored change
    stats: TagStats = field(default_factory=TagStats)
    event: bool = False  # whether the last observe() was a change event
    # The recorder's memory: the last stored sample, and the last read since
    # (value, time, quality), kept as plain fields: most reads store nothing.
    _stored_value: Value | None = None
    _stored_ts: float | None = None
    _held_value: Value | None = None
    _held_ts: float | None = None
    _held_quality: str = ""
    # The poller's block read whose registers `value` was decoded from (None:
    # it came from elsewhere): while the block's registers are unchanged, the
    # poller repeats the value without decoding it again.
    decoded_from: object | None = None

    def observe(self, value: Value, ts: float) -> list[Sample]:
        """Apply one good read; returns the samples worth storing (maybe none)."""
        out: list[Sample] = []
        self.observe_into(value, ts, out)
        return out

    def observe_into(self, value: Value, ts: float, out: list[Sample]) -> None:
        """`observe`, appending the samples worth storing to `out` (the poller's hot path)."""
        stats = self.stats
        previous = stats.previous_value
        # The same value again (NaN never equals itself, so never here): no
        # event, no change beyond any deadband; a heartbeat at most.
        if value == previous and type(value) is type(previous) and self.repeat_into(ts, out):
            return
        self.decoded_from = None  # a new value: not what a block read's registers said
        was_good = self.quality is Quality.GOOD
        nan = isinstance(value, float) and math.isnan(value)
        self.quality = Quality.BAD if nan else Quality.GOOD
        self.reason = "device reports not-a-number" if nan else ""
        self.value, self.ts = value, ts
        self.event = False if nan else stats.observe(value, ts, self.deadband)
        quality = self.quality.value
        n = len(out)
        if self._stored_ts is None or not was_good:
            out.append(Sample(self.key, ts, value, quality))
        elif moved_beyond(self._stored_value, value, self.deadband):
            # Keep the value held just before the change, so a plot of the
            # stored points shows a step here rather than a slow ramp.
            held_ts = self._held_ts
            if held_ts is not None and held_ts > self._stored_ts:
                out.append(Sample(self.key, held_ts, self._held_value, self._held_quality))
            out.append(Sample(self.key, ts, value, quality))
        elif ts - self._stored_ts >= self.max_staleness:
            out.append(Sample(self.key, ts, value, quality))  # heartbeat: still current
        if len(out) > n:
            self._stored_value, self._stored_ts = value, ts
            self.changed_ts = ts
            self._held_ts = None
        else:
            self._held_value, self._held_ts, self._held_quality = value, ts, quality

    def repeat_into(self, ts: float, out: list[Sample]) -> bool:
        """Apply a good read of the value the tag already holds, if that is all it takes.

        Returns False, doing nothing, unless the tag is good and has a stored
        sample (the caller then observes the value in full). Otherwise it
        counts the read and appends a heartbeat to `out` once `max_staleness`
        has passed since the last stored sample.
        """
        stored_ts = self._stored_ts
        if self.quality is not Quality.GOOD or stored_ts is None:
            return False
        self.ts, self.event = ts, False
        self.stats.repeat(ts)
        value = self.value
        if ts - stored_ts >= self.max_staleness:
            out.append(Sample(self.key, ts, value, _GOOD))
            self._stored_value, self._stored_ts = value, ts
            self.changed_ts = ts
            self._held_ts = None
        else:
            self._held_value, self._held_ts, self._held_quality = value, ts, _GOOD
        return True

    def fail(self, reason: str, ts: float) -> list[Sample]:
        """Mark the tag bad after a failed read; stores one sample on the transition."""
        self.ts = ts
        if self.quality is Quality.BAD and self.reason == reason:
            return []
        first = self.quality is not Quality.BAD
        self.quality, self.reason = Quality.BAD, reason
        self._held_ts = None
        return [Sample(self.key, ts, None, Quality.BAD.value)] if first else []

    def check_stale(self, now: float) -> list[Sample]:
        """Turn a good tag stale when it has not been read for max_staleness."""
        if self.quality is not Quality.GOOD or self.ts is None:
            return []
        age = now - self.ts
        if age <= self.max_staleness:
            return []
        self.quality = Quality.STALE
        self.reason = f"not read for {age:.1f}s (max_staleness {self.max_staleness:g}s)"
        self._held_ts = None
        return [Sample(self.key, now, self.value, Quality.STALE.value)]
