"""What the optimizer learns from: per-tag activity over time, in fixed windows.

`ActivityTracker` samples the poller's counters (reads, jumps, change events
per tag; reads and registers per device) once per window and keeps:

- a ring of recent windows (the evaluation compares windows before and after
  a change, and the interval strategy reads recent rates from it);
- activity profiles by hour of day and day of week (the pattern strategy);
- per hour-of-day mean and spread of each tag's hourly activity (anomalies);
- an hourly activity series per device (autocorrelation: shift cycles).

Rates are *change event* rates: how often the value leaves the deadband
around its value at the previous event, the benchmark's own definition. (The
"jump" arrays below count these events; their names are kept for the saved
state.) Counting read-to-read jumps instead made a rate depend on the tag's
own period: a triangle wave read every second jumped at every read and
looked 2.5 times busier than it is, and slowing a tag made it look busier
still. A read every P seconds can show at most one event, so the raw share
j of event reads saturates; the Poisson correction `rate = -ln(1 - j) / P`
undoes that. Pure: time is passed in.

Plain Python over `array.array` columns, without numpy: the daemon imports
this module, and numpy would cost it 20 MB. Every per-tag quantity is a
column of n values, one per tag in `keys` order: one window's counts, one
hour of day's or one weekday's profile sums. Closing a window replaces a few
whole columns, each in one C-level pass; only the jump sums of the tags that
changed in it are updated one at a time (most tags do not change).
"""

from __future__ import annotations

import math
import sys
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import add, sub
from typing import TypeVar

from edgeopt.poller import Poller

HOURS_PER_DAY = 24
DAYS_PER_WEEK = 7
# Device activity history for period detection: two weeks of hours.
SERIES_HOURS = 14 * 24
# A jump share above this is treated as this (ln(1 - j) needs j < 1).
MAX_JUMP_SHARE = 0.95
# Prior pseudo-counts: a tag never seen to change is not known never to change.
PRIOR_JUMPS = 0.02
PRIOR_READS = 1.0
# A window's counts (each tag's reads and change events in one window) are
# whole numbers, held in the narrowest of these array typecodes that holds
# every count of that window: one byte while none exceeds 255 (a tag read
# every second shows about 60 in a 60 s window), wider for a window that needs
# it. Never saturated, so every sum over windows is exact (what float32 counts
# gave: float32 holds whole numbers exactly up to 2**24).
COUNT_TYPES = ("B", "H", "I", "Q")
_COUNT_MAX = {code: (1 << 8 * array(code).itemsize) - 1 for code in COUNT_TYPES}
# Unsigned typecodes by item size: the lanes `column_sums` adds in.
_LANES = {array(code).itemsize: code for code in ("H", "I", "Q")}

_T = TypeVar("_T", int, float)


def corrected_rate(
    jumps: float, reads: float, exposure: float, prior: float = PRIOR_JUMPS
) -> float:
    """Events per second from `jumps` events in `reads` reads over `exposure` seconds."""
    if reads <= 0 or exposure <= 0:
        return 0.0
    share = min(MAX_JUMP_SHARE, (jumps + prior) / (reads + PRIOR_READS))
    period = exposure / reads
    return -math.log1p(-share) / period


def corrected_rates(jumps: Sequence[float], reads: Sequence[float], exposure: float) -> list[float]:
    """`corrected_rate` of each (jumps, reads) pair, by the prior `PRIOR_JUMPS` (0: no reads)."""
    if exposure <= 0:
        return [0.0] * len(jumps)
    # A plain loop, no min() call: it runs over every tag, every window.
    log1p = math.log1p
    out: list[float] = []
    for j, r in zip(jumps, reads, strict=True):
        if r > 0:
            share = (j + PRIOR_JUMPS) / (r + PRIOR_READS)
            out.append(
                -log1p(-(share if share < MAX_JUMP_SHARE else MAX_JUMP_SHARE)) * r / exposure
            )
        else:
            out.append(0.0)
    return out


def hour_of_day(wall: float) -> int:
    return time.localtime(wall).tm_hour


def day_of_week(wall: float) -> int:
    """0 is Monday."""
    return time.localtime(wall).tm_wday


@dataclass(frozen=True, slots=True)
class WindowSample:
    """One closed window: when, and what the bus did in it."""

    start: float  # monotonic
    end: float
    wall: float  # wall time at the end
    bus: float  # bus seconds per second (under each device's cost model)
    reads_per_s: float
    bus_by_line: dict[str, float]


@dataclass(frozen=True, slots=True)
class TagWindowStats:
    """Reads and jumps of some tags in some windows (for evaluation).

    One row per window asked for, holding one count per tag asked for.
    """

    reads: list[array[float]]  # [window][tag]
    jumps: list[array[float]]


def counts(values: list[int]) -> array[int]:
    """`values` (whole, >= 0) in the narrowest of COUNT_TYPES that holds them all."""
    top = max(values, default=0)
    for code in COUNT_TYPES:
        if top <= _COUNT_MAX[code]:
            return array(code, values)
    raise OverflowError(f"a window count of {top} does not fit 64 bits")


def column_sums(columns: Sequence[array[int]]) -> Sequence[int]:
    """Each row's sum over `columns` of whole counts >= 0, exactly.

    Each column is laid into the lanes of one big integer, lanes wide enough
    that no lane's total can carry into the next; adding the big integers adds
    every row at once, in C. Over 120 windows of 10k tags that takes a few
    milliseconds, where summing row by row took forty.
    """
    n = len(columns[0])
    top = len(columns) * max((1 << 8 * c.itemsize) - 1 for c in columns)
    lane = next((size for size in sorted(_LANES) if top < 1 << 8 * size), 0)
    if not lane:  # wider than any lane can hold: row by row
        return list(map(sum, zip(*columns, strict=True)))
    order = sys.byteorder
    total = 0
    lanes = bytearray()
    laid = 0  # the item size the lanes hold now
    for column in columns:
        size = column.itemsize
        if size != laid:  # a narrower column must not inherit a wider one's high bytes
            lanes, laid = bytearray(lane * n), size
        raw = column.tobytes()
        offset = 0 if order == "little" else lane - size  # where a lane's low bytes sit
        for k in range(size):
            lanes[offset + k :: lane] = raw[k::size]
        total += int.from_bytes(lanes, order)
    return array(_LANES[lane], total.to_bytes(lane * n, order))


def _floats(n: int) -> array[float]:
    """A float32 column of n zeros."""
    return array("f", bytes(4 * n))


def _taken(column: array[_T], take: Sequence[int]) -> array[_T]:
    """`column`'s values in `take`'s order, and 0 where `take` has -1 (a new tag)."""
    padded = column + array(column.typecode, bytes(column.itemsize))  # [-1] reads the 0
    return array(column.typecode, map(padded.__getitem__, take))


def _plus(column: array[float], values: Iterable[float]) -> array[float]:
    """A float32 column plus `values`, each sum rounded to float32 (as numpy's float32 added)."""
    return array("f", list(map(add, column, values)))  # from a list: faster than the iterator


def _increase(now: array[int], before: array[int]) -> list[int]:
    """How far each counter went up (0 for one that went back: a tag's state replaced)."""
    out = list(map(sub, now, before))
    if out and min(out) < 0:
        out = [max(0, d) for d in out]
    return out


class WindowRates(Mapping[str, tuple[float, float]]):
    """`ActivityTracker.rates`: each tag's (rate, reads), worked out when asked for.

    The window sums stay two arrays; a dict of 10k (rate, reads) tuples would
    be 1.3 MB more of the quick cycle's peak, twice over.
    """

    __slots__ = ("_exposure", "_index", "_jumps", "_prior", "_priors", "_reads")

    def __init__(
        self,
        index: Mapping[str, int],
        jumps: Sequence[int],
        reads: Sequence[int],
        exposure: float,
        prior: float,
        priors: Mapping[str, float] | None,
    ) -> None:
        self._index, self._jumps, self._reads = index, jumps, reads
        self._exposure, self._prior, self._priors = exposure, prior, priors

    def __getitem__(self, key: str) -> tuple[float, float]:
        i = self._index[key]
        own = self._prior if self._priors is None else self._priors.get(key, self._prior)
        reads = float(self._reads[i])
        return corrected_rate(float(self._jumps[i]), reads, self._exposure, own), reads

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


class ActivityTracker:
    """Windows of per-tag and per-device activity, plus the learned profiles.

    Per-tag state is held in columns, one value per tag (see the module's
    docstring): `hod_jumps[hour][i]` is tag i's change events in that hour of
    day, `dow_reads[day][i]` its reads on that weekday.
    """

    def __init__(self, window: float, slots: int = 120) -> None:
        if window <= 0 or slots < 2:
            raise ValueError("window must be positive and slots >= 2")
        self.window = float(window)
        self.slots = slots
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        # Window counts, a ring of `slots` windows: per window, a column of each
        # tag's reads and one of its change events (see COUNT_TYPES).
        self._reads: list[array[int]] = [array("B") for _ in range(slots)]
        self._jumps: list[array[int]] = [array("B") for _ in range(slots)]
        # Each tag's cumulative reads and change events when the last window closed.
        self._last_reads: array[int] = array("q")
        self._last_changes: array[int] = array("q")
        self.samples: list[WindowSample | None] = [None] * slots
        self.closed = 0  # windows closed so far (the ring position is closed % slots)
        self._window_start: float | None = None
        self._device_last: dict[str, tuple[int, int, int]] = {}
        # Profiles (pattern): jumps and reads per tag by hour of day and by weekday,
        # float32 columns.
        self.hod_jumps = [_floats(0) for _ in range(HOURS_PER_DAY)]
        self.hod_reads = [_floats(0) for _ in range(HOURS_PER_DAY)]
        self.dow_jumps = [_floats(0) for _ in range(DAYS_PER_WEEK)]
        self.dow_reads = [_floats(0) for _ in range(DAYS_PER_WEEK)]
        self.hod_exposure = array("d", bytes(8 * HOURS_PER_DAY))
        self.dow_exposure = array("d", bytes(8 * DAYS_PER_WEEK))
        # Hourly jump counts per tag: mean and spread per hour of day (anomalies).
        self._hour_key: tuple[int, int] | None = None  # (day number, hour) being filled
        self.hour_jumps = _floats(0)
        self.hour_reads = _floats(0)
        self.hour_seconds = 0.0
        self.hourly_n = array("d", bytes(8 * HOURS_PER_DAY))
        # Sums of the counts and of their squares, a column per hour of day:
        # allocated when the first whole hour closes or saved sums are restored
        # (None reads as zeros until then).
        self.hourly_s1: list[array[float]] | None = None
        self.hourly_s2: list[array[float]] | None = None
        # Hourly jump totals per device (autocorrelation of shift cycles).
        self.device_series: dict[str, list[float]] = {}
        self._device_hour: dict[str, float] = {}
        self.device_of: list[str] = []
        self._devices: list[str] = []  # device_of's devices, each once, in order

    # -- tags come and go (config reload) ----------------------------------

    def sync(self, poller: Poller) -> None:
        """Follow the poller's tag set; the values of tags that stay are kept."""
        keys = list(poller.tags)
        if keys == self.keys:
            return
        take = [self.index.get(k, -1) for k in keys]

        def remap(columns: list[array[_T]]) -> list[array[_T]]:
            return [_taken(c, take) for c in columns]

        self._reads, self._jumps = remap(self._reads), remap(self._jumps)
        self.hod_jumps, self.hod_reads = remap(self.hod_jumps), remap(self.hod_reads)
        self.dow_jumps, self.dow_reads = remap(self.dow_jumps), remap(self.dow_reads)
        self.hour_jumps = _taken(self.hour_jumps, take)
        self.hour_reads = _taken(self.hour_reads, take)
        if self.hourly_s1 is not None and self.hourly_s2 is not None:
            self.hourly_s1, self.hourly_s2 = remap(self.hourly_s1), remap(self.hourly_s2)
        last_reads = _taken(self._last_reads, take)
        last_changes = _taken(self._last_changes, take)
        for new, old in enumerate(take):
            if old < 0:  # a new tag: count from what it has now
                s = poller.tags[keys[new]].state.stats
                last_reads[new], last_changes[new] = s.reads, s.changes
        self._last_reads, self._last_changes = last_reads, last_changes
        self.keys = keys
        self.index = {k: i for i, k in enumerate(keys)}
        self.device_of = [poller.tags[k].device for k in keys]
        self._devices = list(dict.fromkeys(self.device_of))

    # -- sampling --------------------------------------------------------------

    def sample(self, poller: Poller, now: float, wall: float) -> bool:
        """Close the current window if it is over; returns whether one closed."""
        self.sync(poller)
        if self._window_start is None:
            self._window_start = now
            self._snapshot(poller)
            return False
        span = now - self._window_start
        if span < self.window:
            return False
        # In `keys` order (sync made them the poller's).
        stats = [t.state.stats for t in poller.tags.values()]
        reads = array("q", [s.reads for s in stats])
        changes = array("q", [s.changes for s in stats])
        new_reads = _increase(reads, self._last_reads)
        new_jumps = _increase(changes, self._last_changes)
        self._last_reads, self._last_changes = reads, changes
        slot = self.closed % self.slots
        self._reads[slot] = counts(new_reads)
        self._jumps[slot] = counts(new_jumps)
        self.samples[slot] = self._bus_sample(poller, self._window_start, now, wall)
        self.closed += 1
        self._profile(new_reads, new_jumps, span, wall)
        self._window_start = now
        return True

    def _snapshot(self, poller: Poller) -> None:
        stats = [t.state.stats for t in poller.tags.values()]  # in `keys` order
        self._last_reads = array("q", [s.reads for s in stats])
        self._last_changes = array("q", [s.changes for s in stats])
        self._device_last = {
            name: (d.stats.reads, d.stats.registers, d.stats.bits)
            for name, d in poller.devices.items()
        }

    def _bus_sample(self, poller: Poller, start: float, end: float, wall: float) -> WindowSample:
        span = max(end - start, 1e-9)
        bus_by_line: dict[str, float] = {}
        reads = 0
        for name, device in poller.devices.items():
            st = device.stats
            now_counts = (st.reads, st.registers, st.bits)
            r0, u0, b0 = self._device_last.get(name, now_counts)
            dr, du, db = st.reads - r0, st.registers - u0, st.bits - b0
            self._device_last[name] = now_counts
            reads += dr
            # Priced as the plan prices it (bits are an eighth of a byte on serial),
            # so the do-no-harm guard compares like with like.
            cost = device.cost
            seconds = dr * cost.per_read + (du - db) * cost.per_register + db * cost.per_bit
            bus_by_line[device.line] = bus_by_line.get(device.line, 0.0) + seconds / span
        return WindowSample(start, end, wall, sum(bus_by_line.values()), reads / span, bus_by_line)

    def _profile(self, reads: list[int], jumps: list[int], span: float, wall: float) -> None:
        mid = wall - span / 2
        hod, dow = hour_of_day(mid), day_of_week(mid)
        # Most tags do not change in a window: only the changed ones' jump sums move.
        changed = [(i, n) for i, n in enumerate(jumps) if n]
        hod_jumps, dow_jumps = self.hod_jumps[hod], self.dow_jumps[dow]
        for i, n in changed:
            hod_jumps[i] += n
            dow_jumps[i] += n
        self.hod_reads[hod] = _plus(self.hod_reads[hod], reads)
        self.dow_reads[dow] = _plus(self.dow_reads[dow], reads)
        self.hod_exposure[hod] += span
        self.dow_exposure[dow] += span
        key = (int(mid // 86400), hod)
        if self._hour_key is not None and key != self._hour_key:
            self._close_hour()
        self._hour_key = key
        self.hour_reads = _plus(self.hour_reads, reads)
        self.hour_seconds += span
        hour_jumps, hours, device_of = self.hour_jumps, self._device_hour, self.device_of
        for device in self._devices:  # a quiet device's hour counts too (as 0)
            hours.setdefault(device, 0.0)
        for i, n in changed:
            hour_jumps[i] += n
            hours[device_of[i]] += n

    def _close_hour(self) -> None:
        assert self._hour_key is not None
        hod = self._hour_key[1]
        # Only (nearly) whole hours describe an hour of day.
        if self.hour_seconds >= 0.9 * 3600:
            per_hour = [rate * 3600.0 for rate in self.hour_rates()]
            s1, s2 = self.hourly_sums()
            self.hourly_n[hod] += 1
            s1[hod] = _plus(s1[hod], per_hour)
            s2[hod] = _plus(s2[hod], [c * c for c in per_hour])
        for device, total in self._device_hour.items():
            series = self.device_series.setdefault(device, [])
            series.append(total)
            del series[:-SERIES_HOURS]
        self._device_hour = {}
        self.hour_jumps = _floats(len(self.keys))
        self.hour_reads = _floats(len(self.keys))
        self.hour_seconds = 0.0

    def hourly_sums(self) -> tuple[list[array[float]], list[array[float]]]:
        """`hourly_s1`, `hourly_s2`, allocated (zeros) if they were not yet."""
        if self.hourly_s1 is None or self.hourly_s2 is None:
            n = len(self.keys)
            self.hourly_s1 = [_floats(n) for _ in range(HOURS_PER_DAY)]
            self.hourly_s2 = [_floats(n) for _ in range(HOURS_PER_DAY)]
        return self.hourly_s1, self.hourly_s2

    def nbytes(self) -> int:
        """Bytes of the per-tag columns held (what grows with the tag count)."""
        columns: list[array[int] | array[float]] = [
            *self._reads,
            *self._jumps,
            self._last_reads,
            self._last_changes,
            *self.hod_jumps,
            *self.hod_reads,
            *self.dow_jumps,
            *self.dow_reads,
            self.hour_jumps,
            self.hour_reads,
            *(self.hourly_s1 or ()),
            *(self.hourly_s2 or ()),
        ]
        return sum(len(c) * c.itemsize for c in columns)

    # -- queries -----------------------------------------------------------------

    def recent_slots(self, count: int) -> list[int]:
        """Ring positions of the last `count` closed windows, oldest first."""
        count = min(count, self.closed, self.slots)
        return [(self.closed - count + i) % self.slots for i in range(count)]

    def rates(
        self,
        seconds: float,
        prior: float = PRIOR_JUMPS,
        priors: Mapping[str, float] | None = None,
    ) -> WindowRates:
        """Per tag: (event rate per second, reads) over about the last `seconds`.

        prior: pseudo-events added to every tag's count, so a tag never seen to
        change is not taken to never change. Give it once, on the longest window
        (a short window with the prior would claim a quiet tag changes every
        few minutes). priors: a tag's own prior, where it differs.
        """
        count = max(1, round(seconds / self.window))
        slots = self.recent_slots(count)
        exposure = 0.0
        for s in slots:
            sample = self.samples[s]
            if sample is not None:
                exposure += sample.end - sample.start
        if not slots:
            return WindowRates({}, [], [], exposure, prior, priors)
        return WindowRates(
            self.index,
            column_sums([self._jumps[s] for s in slots]),
            column_sums([self._reads[s] for s in slots]),
            exposure,
            prior,
            priors,
        )

    def window_samples(self, slots: Iterable[int]) -> list[WindowSample]:
        return [s for s in (self.samples[i] for i in slots) if s is not None]

    def tag_windows(self, keys: Iterable[str], slots: list[int]) -> TagWindowStats:
        rows = [self.index[k] for k in keys if k in self.index]

        def pick(column: array[int]) -> array[float]:
            return array("d", map(column.__getitem__, rows))

        return TagWindowStats(
            [pick(self._reads[s]) for s in slots], [pick(self._jumps[s]) for s in slots]
        )

    def weekly_rate(self, i: int) -> float:
        """Tag i's corrected jump rate over every weekday seen (its mean rate)."""
        return corrected_rate(
            sum(c[i] for c in self.dow_jumps),
            sum(c[i] for c in self.dow_reads),
            sum(self.dow_exposure),
        )

    def profile_rate(self, key: str, wall: float) -> float | None:
        """Expected jump rate at `wall` from the hour-of-day and weekday profiles.

        rate(h, d) = rate(h) × rate(d) / mean rate; None until a whole day is seen.
        """
        i = self.index.get(key)
        if i is None or min(self.hod_exposure) <= 0:
            return None
        hod, dow = hour_of_day(wall), day_of_week(wall)
        by_hour = corrected_rate(
            self.hod_jumps[hod][i], self.hod_reads[hod][i], self.hod_exposure[hod]
        )
        if min(self.dow_exposure) <= 0:
            return by_hour
        mean = self.weekly_rate(i)
        if mean <= 0:
            return by_hour
        by_day = corrected_rate(
            self.dow_jumps[dow][i], self.dow_reads[dow][i], self.dow_exposure[dow]
        )
        return by_hour * by_day / mean

    def hourly_expectation(self, key: str, wall: float) -> tuple[float, float, int] | None:
        """(mean, sd, days seen) of this tag's jumps per hour at `wall`'s hour of day."""
        i = self.index.get(key)
        if i is None:
            return None
        hod = hour_of_day(wall)
        n = int(self.hourly_n[hod])
        if n < 2:
            return None
        s1 = 0.0 if self.hourly_s1 is None else self.hourly_s1[hod][i]
        s2 = 0.0 if self.hourly_s2 is None else self.hourly_s2[hod][i]
        mean = s1 / n
        var = max(0.0, (s2 - n * mean * mean) / (n - 1))
        return mean, math.sqrt(var), n

    def hour_rates(self) -> list[float]:
        """Each tag's corrected jump rate so far in the hour being filled."""
        return corrected_rates(self.hour_jumps, self.hour_reads, self.hour_seconds)

    def weekday_factors(self, wall: float, rows: Sequence[int] | None = None) -> list[float] | None:
        """Per tag: its rate on `wall`'s weekday over its mean rate (None: weekday never seen).

        rows: the tags (their indices) to work it out for, in this order; default all.
        """
        dow = day_of_week(wall)
        if self.dow_exposure[dow] <= 0:
            return None

        def chosen(column: array[float]) -> Sequence[float]:
            return column if rows is None else [column[i] for i in rows]

        jumps = [chosen(c) for c in self.dow_jumps]
        reads = [chosen(c) for c in self.dow_reads]
        on_day = corrected_rates(jumps[dow], reads[dow], self.dow_exposure[dow])
        overall = corrected_rates(
            list(map(sum, zip(*jumps, strict=True))),
            list(map(sum, zip(*reads, strict=True))),
            sum(self.dow_exposure),
        )
        return [d / o if o > 0 else 1.0 for d, o in zip(on_day, overall, strict=True)]

    def hourly_expectations(self, wall: float) -> tuple[list[float], list[float], int]:
        """Per tag: mean and sd of changes per hour at `wall`'s hour of day, and days seen."""
        hod = hour_of_day(wall)
        n = int(self.hourly_n[hod])
        if n < 2:
            return [0.0] * len(self.keys), [0.0] * len(self.keys), n
        s1, s2 = self.hourly_sums()
        means = [s / n for s in s1[hod]]
        sds: list[float] = []
        for s, m in zip(s2[hod], means, strict=True):
            var = (s - n * m * m) / (n - 1)
            sds.append(math.sqrt(var) if var > 0 else 0.0)
        return means, sds, n

    # -- persistence -------------------------------------------------------------

    def export_profiles(
        self, keys: Iterable[str] | None = None
    ) -> dict[str, dict[str, list[float]]]:
        """Per-tag learned profiles (of `keys` still tracked; default all), for the state store."""
        out: dict[str, dict[str, list[float]]] = {}
        none = [0.0] * HOURS_PER_DAY  # hourly sums not allocated yet: zeros, as saved before
        s1, s2 = self.hourly_s1, self.hourly_s2
        for key in self.keys if keys is None else keys:
            i = self.index.get(key)
            if i is None:
                continue
            out[key] = {
                "hod_jumps": [c[i] for c in self.hod_jumps],
                "hod_reads": [c[i] for c in self.hod_reads],
                "dow_jumps": [c[i] for c in self.dow_jumps],
                "dow_reads": [c[i] for c in self.dow_reads],
                "hourly_s1": none if s1 is None else [c[i] for c in s1],
                "hourly_s2": none if s2 is None else [c[i] for c in s2],
            }
        return out

    def export_globals(self) -> dict[str, list[float] | dict[str, list[float]]]:
        return {
            "hod_exposure": self.hod_exposure.tolist(),
            "dow_exposure": self.dow_exposure.tolist(),
            "hourly_n": self.hourly_n.tolist(),
            "device_series": {k: list(v) for k, v in self.device_series.items()},
        }

    def import_profiles(
        self,
        profiles: Mapping[str, Mapping[str, list[float]]],
        globals_: Mapping[str, object],
    ) -> None:
        """Restore learned profiles for the tags that exist now (call after `sync`)."""
        for name, target in (
            ("hod_exposure", self.hod_exposure),
            ("dow_exposure", self.dow_exposure),
            ("hourly_n", self.hourly_n),
        ):
            values = globals_.get(name)
            if isinstance(values, list) and len(values) == len(target):
                target[:] = array("d", values)
        series = globals_.get("device_series")
        if isinstance(series, dict):
            self.device_series = {
                str(k): [float(x) for x in v][-SERIES_HOURS:]
                for k, v in series.items()
                if isinstance(v, list)
            }
        fields = {
            "hod_jumps": self.hod_jumps,
            "hod_reads": self.hod_reads,
            "dow_jumps": self.dow_jumps,
            "dow_reads": self.dow_reads,
        }
        hourly = ("hourly_s1", "hourly_s2")
        for key, profile in profiles.items():
            i = self.index.get(key)
            if i is None:
                continue
            for name, columns in fields.items():
                values = profile.get(name)
                if values is not None and len(values) == len(columns):
                    for column, value in zip(columns, values, strict=True):
                        column[i] = value
            for name in hourly:
                values = profile.get(name)
                if values is not None and len(values) == HOURS_PER_DAY and any(values):
                    s1, s2 = self.hourly_sums()
                    for column, value in zip(
                        s1 if name == "hourly_s1" else s2, values, strict=True
                    ):
                        column[i] = value
