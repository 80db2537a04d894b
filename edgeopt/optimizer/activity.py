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
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

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
# A window's counts (one tag's reads and change events in one window) are whole
# numbers, held in the narrowest of these that holds every count seen so far:
# uint8 while none exceeds 255 (a tag read every second shows about 60 in a
# 60 s window), widened, exactly, the first time one does not fit. Never
# saturated, so every sum over windows is what float32 counts gave (float32
# holds whole numbers exactly up to 2**24).
COUNT_TYPES = (np.uint8, np.uint16, np.uint32, np.uint64)

FloatArray = np.ndarray


def corrected_rate(
    jumps: float, reads: float, exposure: float, prior: float = PRIOR_JUMPS
) -> float:
    """Events per second from `jumps` events in `reads` reads over `exposure` seconds."""
    if reads <= 0 or exposure <= 0:
        return 0.0
    share = min(MAX_JUMP_SHARE, (jumps + prior) / (reads + PRIOR_READS))
    period = exposure / reads
    return -math.log1p(-share) / period


def corrected_rates(jumps: FloatArray, reads: FloatArray, exposure: float) -> FloatArray:
    """Vectorised `corrected_rate` (0 where a tag had no reads)."""
    if exposure <= 0:
        return np.zeros(jumps.shape, np.float64)
    share = np.minimum(MAX_JUMP_SHARE, (jumps + PRIOR_JUMPS) / (reads + PRIOR_READS))
    rates = -np.log1p(-share) * reads / exposure
    return np.where(reads > 0, rates, 0.0)


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
    """Reads and jumps of some tags in some windows (for evaluation)."""

    reads: FloatArray  # [tags, windows]
    jumps: FloatArray


def _fitting(counts: np.ndarray, values: FloatArray) -> np.ndarray:
    """`counts`, widened to the narrowest of COUNT_TYPES that also holds `values` (whole, >= 0)."""
    top = float(values.max()) if values.size else 0.0
    if top <= np.iinfo(counts.dtype).max:
        return counts
    for dtype in COUNT_TYPES:
        if top <= np.iinfo(dtype).max:
            return counts.astype(dtype)
    raise OverflowError(f"a window count of {top:.0f} does not fit 64 bits")


class WindowRates(Mapping[str, tuple[float, float]]):
    """`ActivityTracker.rates`: each tag's (rate, reads), worked out when asked for.

    The window sums stay two arrays; a dict of 10k (rate, reads) tuples would
    be 1.3 MB more of the quick cycle's peak, twice over.
    """

    __slots__ = ("_exposure", "_index", "_jumps", "_prior", "_priors", "_reads")

    def __init__(
        self,
        index: Mapping[str, int],
        jumps: np.ndarray,
        reads: np.ndarray,
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
    """Windows of per-tag and per-device activity, plus the learned profiles."""

    def __init__(self, window: float, slots: int = 120) -> None:
        if window <= 0 or slots < 2:
            raise ValueError("window must be positive and slots >= 2")
        self.window = float(window)
        self.slots = slots
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        n = 0
        # Window counts per tag, a ring of `slots` windows (see COUNT_TYPES).
        self._reads = np.zeros((n, slots), COUNT_TYPES[0])
        self._jumps = np.zeros((n, slots), COUNT_TYPES[0])
        self._last = np.zeros((n, 2), np.float64)  # cumulative reads, change events
        self.samples: list[WindowSample | None] = [None] * slots
        self.closed = 0  # windows closed so far (the ring position is closed % slots)
        self._window_start: float | None = None
        self._device_last: dict[str, tuple[int, int, int]] = {}
        # Profiles (pattern): jumps and reads per tag by hour of day and by weekday.
        self.hod_jumps = np.zeros((n, HOURS_PER_DAY), np.float32)
        self.hod_reads = np.zeros((n, HOURS_PER_DAY), np.float32)
        self.dow_jumps = np.zeros((n, DAYS_PER_WEEK), np.float32)
        self.dow_reads = np.zeros((n, DAYS_PER_WEEK), np.float32)
        self.hod_exposure = np.zeros(HOURS_PER_DAY, np.float64)
        self.dow_exposure = np.zeros(DAYS_PER_WEEK, np.float64)
        # Hourly jump counts per tag: mean and spread per hour of day (anomalies).
        self._hour_key: tuple[int, int] | None = None  # (day number, hour) being filled
        self.hour_jumps = np.zeros(n, np.float32)
        self.hour_reads = np.zeros(n, np.float32)
        self.hour_seconds = 0.0
        self.hourly_n = np.zeros(HOURS_PER_DAY, np.float64)
        # Sums of the counts and of their squares: allocated when the first whole
        # hour closes or saved sums are restored (None reads as zeros until then).
        self.hourly_s1: FloatArray | None = None
        self.hourly_s2: FloatArray | None = None
        # Hourly jump totals per device (autocorrelation of shift cycles).
        self.device_series: dict[str, list[float]] = {}
        self._device_hour: dict[str, float] = {}
        self.device_of: list[str] = []

    # -- tags come and go (config reload) ----------------------------------

    def sync(self, poller: Poller) -> None:
        """Follow the poller's tag set; rows of tags that stay are kept."""
        keys = list(poller.tags)
        if keys == self.keys:
            return
        old_index = self.index
        take = [old_index.get(k, -1) for k in keys]

        def remap(a: FloatArray) -> FloatArray:
            out = np.zeros((len(keys), *a.shape[1:]), a.dtype)
            for new, old in enumerate(take):
                if old >= 0:
                    out[new] = a[old]
            return out

        self._reads, self._jumps = remap(self._reads), remap(self._jumps)
        self.hod_jumps, self.hod_reads = remap(self.hod_jumps), remap(self.hod_reads)
        self.dow_jumps, self.dow_reads = remap(self.dow_jumps), remap(self.dow_reads)
        self.hour_jumps, self.hour_reads = remap(self.hour_jumps), remap(self.hour_reads)
        if self.hourly_s1 is not None and self.hourly_s2 is not None:
            self.hourly_s1, self.hourly_s2 = remap(self.hourly_s1), remap(self.hourly_s2)
        last = remap(self._last)
        for new, old in enumerate(take):
            if old < 0:  # a new tag: count from what it has now
                s = poller.tags[keys[new]].state.stats
                last[new] = (s.reads, s.changes)
        self._last = last
        self.keys = keys
        self.index = {k: i for i, k in enumerate(keys)}
        self.device_of = [poller.tags[k].device for k in keys]

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
        counts = np.array(
            [
                (t.state.stats.reads, t.state.stats.changes)
                for t in (poller.tags[k] for k in self.keys)
            ],
            np.float64,
        ).reshape(len(self.keys), 2)
        delta = np.maximum(counts - self._last, 0.0)
        self._last = counts
        slot = self.closed % self.slots
        self._reads = _fitting(self._reads, delta[:, 0])
        self._jumps = _fitting(self._jumps, delta[:, 1])
        self._reads[:, slot] = delta[:, 0]
        self._jumps[:, slot] = delta[:, 1]
        self.samples[slot] = self._bus_sample(poller, self._window_start, now, wall)
        self.closed += 1
        self._profile(delta, span, wall)
        self._window_start = now
        return True

    def _snapshot(self, poller: Poller) -> None:
        for i, key in enumerate(self.keys):
            s = poller.tags[key].state.stats
            self._last[i] = (s.reads, s.changes)
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

    def _profile(self, delta: FloatArray, span: float, wall: float) -> None:
        mid = wall - span / 2
        hod, dow = hour_of_day(mid), day_of_week(mid)
        reads, jumps = delta[:, 0].astype(np.float32), delta[:, 1].astype(np.float32)
        self.hod_jumps[:, hod] += jumps
        self.hod_reads[:, hod] += reads
        self.dow_jumps[:, dow] += jumps
        self.dow_reads[:, dow] += reads
        self.hod_exposure[hod] += span
        self.dow_exposure[dow] += span
        key = (int(mid // 86400), hod)
        if self._hour_key is not None and key != self._hour_key:
            self._close_hour()
        self._hour_key = key
        self.hour_jumps += jumps
        self.hour_reads += reads
        self.hour_seconds += span
        for i, device in enumerate(self.device_of):
            self._device_hour[device] = self._device_hour.get(device, 0.0) + float(jumps[i])

    def _close_hour(self) -> None:
        assert self._hour_key is not None
        hod = self._hour_key[1]
        # Only (nearly) whole hours describe an hour of day.
        if self.hour_seconds >= 0.9 * 3600:
            counts = self.hour_rates() * 3600.0
            s1, s2 = self.hourly_sums()
            self.hourly_n[hod] += 1
            s1[:, hod] += counts
            s2[:, hod] += counts * counts
        for device, total in self._device_hour.items():
            series = self.device_series.setdefault(device, [])
            series.append(total)
            del series[:-SERIES_HOURS]
        self._device_hour = {}
        self.hour_jumps[:] = 0
        self.hour_reads[:] = 0
        self.hour_seconds = 0.0

    def hourly_sums(self) -> tuple[FloatArray, FloatArray]:
        """`hourly_s1`, `hourly_s2`, allocated (zeros) if they were not yet."""
        if self.hourly_s1 is None or self.hourly_s2 is None:
            shape = (len(self.keys), HOURS_PER_DAY)
            self.hourly_s1 = np.zeros(shape, np.float32)
            self.hourly_s2 = np.zeros(shape, np.float32)
        return self.hourly_s1, self.hourly_s2

    def nbytes(self) -> int:
        """Bytes of the per-tag arrays held (what grows with the tag count)."""
        arrays: list[np.ndarray | None] = [
            self._reads,
            self._jumps,
            self._last,
            self.hod_jumps,
            self.hod_reads,
            self.dow_jumps,
            self.dow_reads,
            self.hour_jumps,
            self.hour_reads,
            self.hourly_s1,
            self.hourly_s2,
        ]
        return sum(a.nbytes for a in arrays if a is not None)

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
            return WindowRates({}, np.zeros(0), np.zeros(0), exposure, prior, priors)
        return WindowRates(
            self.index,
            self._jumps[:, slots].sum(axis=1),
            self._reads[:, slots].sum(axis=1),
            exposure,
            prior,
            priors,
        )

    def window_samples(self, slots: Iterable[int]) -> list[WindowSample]:
        return [s for s in (self.samples[i] for i in slots) if s is not None]

    def tag_windows(self, keys: Iterable[str], slots: list[int]) -> TagWindowStats:
        rows = [self.index[k] for k in keys if k in self.index]
        return TagWindowStats(
            self._reads[np.ix_(rows, slots)].astype(np.float64),
            self._jumps[np.ix_(rows, slots)].astype(np.float64),
        )

    def profile_rate(self, key: str, wall: float) -> float | None:
        """Expected jump rate at `wall` from the hour-of-day and weekday profiles.

        rate(h, d) = rate(h) × rate(d) / mean rate; None until a whole day is seen.
        """
        i = self.index.get(key)
        if i is None or self.hod_exposure.min() <= 0:
            return None
        hod, dow = hour_of_day(wall), day_of_week(wall)
        by_hour = corrected_rate(
            float(self.hod_jumps[i, hod]), float(self.hod_reads[i, hod]), self.hod_exposure[hod]
        )
        if self.dow_exposure.min() <= 0:
            return by_hour
        total_exposure = float(self.dow_exposure.sum())
        mean = corrected_rate(
            float(self.dow_jumps[i].sum()), float(self.dow_reads[i].sum()), total_exposure
        )
        if mean <= 0:
            return by_hour
        by_day = corrected_rate(
            float(self.dow_jumps[i, dow]), float(self.dow_reads[i, dow]), self.dow_exposure[dow]
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
        s1 = 0.0 if self.hourly_s1 is None else float(self.hourly_s1[i, hod])
        s2 = 0.0 if self.hourly_s2 is None else float(self.hourly_s2[i, hod])
        mean = s1 / n
        var = max(0.0, (s2 - n * mean * mean) / (n - 1))
        return mean, math.sqrt(var), n

    def hour_rates(self) -> FloatArray:
        """Each tag's corrected jump rate so far in the hour being filled."""
        return corrected_rates(
            self.hour_jumps.astype(np.float64),
            self.hour_reads.astype(np.float64),
            self.hour_seconds,
        )

    def weekday_factors(self, wall: float) -> FloatArray | None:
        """Per tag: its rate on `wall`'s weekday over its mean rate (None: weekday never seen)."""
        dow = day_of_week(wall)
        if self.dow_exposure[dow] <= 0:
            return None
        on_day = corrected_rates(
            self.dow_jumps[:, dow].astype(np.float64),
            self.dow_reads[:, dow].astype(np.float64),
            float(self.dow_exposure[dow]),
        )
        overall = corrected_rates(
            self.dow_jumps.sum(axis=1).astype(np.float64),
            self.dow_reads.sum(axis=1).astype(np.float64),
            float(self.dow_exposure.sum()),
        )
        safe = np.where(overall > 0, overall, 1.0)
        return np.where(overall > 0, on_day / safe, 1.0)

    def hourly_expectations(self, wall: float) -> tuple[FloatArray, FloatArray, int]:
        """Per tag: mean and sd of changes per hour at `wall`'s hour of day, and days seen."""
        hod = hour_of_day(wall)
        n = int(self.hourly_n[hod])
        if n < 2:
            zeros = np.zeros(len(self.keys))
            return zeros, zeros, n
        s1, s2 = self.hourly_sums()
        s1, s2 = s1[:, hod].astype(np.float64), s2[:, hod].astype(np.float64)
        mean = s1 / n
        var = np.maximum(0.0, (s2 - n * mean * mean) / (n - 1))
        return mean, np.sqrt(var), n

    # -- persistence -------------------------------------------------------------

    def export_profiles(
        self, keys: Iterable[str] | None = None
    ) -> dict[str, dict[str, list[float]]]:
        """Per-tag learned profiles (of `keys` still tracked; default all), for the state store."""
        out: dict[str, dict[str, list[float]]] = {}
        none = [0.0] * HOURS_PER_DAY  # hourly sums not allocated yet: zeros, as saved before
        for key in self.keys if keys is None else keys:
            i = self.index.get(key)
            if i is None:
                continue
            out[key] = {
                "hod_jumps": self.hod_jumps[i].tolist(),
                "hod_reads": self.hod_reads[i].tolist(),
                "dow_jumps": self.dow_jumps[i].tolist(),
                "dow_reads": self.dow_reads[i].tolist(),
                "hourly_s1": none if self.hourly_s1 is None else self.hourly_s1[i].tolist(),
                "hourly_s2": none if self.hourly_s2 is None else self.hourly_s2[i].tolist(),
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
                target[:] = values
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
            for name, array in fields.items():
                values = profile.get(name)
                if values is not None and len(values) == array.shape[1]:
                    array[i] = values
            for name in hourly:
                values = profile.get(name)
                if values is not None and len(values) == HOURS_PER_DAY and any(values):
                    s1, s2 = self.hourly_sums()
                    (s1 if name == "hourly_s1" else s2)[i] = values
