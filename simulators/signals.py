"""Deterministic, piecewise-constant plant signals: the ground truth of the simulator.

Each signal maps plant time `t` (seconds since plant start; t = 0 is a Monday
00:00) to a value. The same definition serves the real-socket simulator
(`value(t)`, one point) and the virtual-time benchmark (`values(ts)`, numpy),
and the two agree bit for bit because both read the same precomputed chunk.

Why piecewise constant: real devices refresh a register at a finite rate, and
only a step function lets the benchmark list every change exactly
(`change_times`). Why chunks: a chunk of plant time (an hour or a day) is
generated on demand from a numpy Generator keyed by (seed, signal key, chunk
index), so any time is O(1) random access and nothing depends on the order in
which times are asked for. Chunks are kept compressed (only the points where
the value changes) in a small per-signal cache.
"""

from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "DAY",
    "HOUR",
    "WEEK",
    "Burst",
    "Combine",
    "Constant",
    "Counter",
    "Follower",
    "GridSignal",
    "NoisyAnalog",
    "OnOff",
    "PartialFollower",
    "Ramp",
    "RandomWalk",
    "Shift",
    "Signal",
    "Sine",
    "Solar",
    "Steps",
    "Triangle",
    "Wave",
]

HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY

# Chunks kept per signal: sequential access needs two (a chunk and the one
# before it, for change detection at the boundary); one more absorbs reads
# that straddle a boundary. Kept small because a 20k-tag plant holds this
# many chunks for every tag.
_CACHE_CHUNKS = 3

FloatArray = np.ndarray


def _key_hash(key: str) -> int:
    # crc32 is stable across processes (unlike hash()) and cheap.
    return zlib.crc32(key.encode("utf-8"))


def _quantise(x: FloatArray, quantum: float) -> FloatArray:
    if quantum <= 0:
        return x
    return np.round(x / quantum) * quantum


def _clip(x: FloatArray, lo: float | None, hi: float | None) -> FloatArray:
    if lo is None and hi is None:
        return x
    return np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)


class _Chunk:
    """One chunk of a signal: the value is vals[i] on [times[i], times[i+1])."""

    __slots__ = ("cum", "end", "times", "vals")

    def __init__(self, times: FloatArray, vals: FloatArray, end: float) -> None:
        self.times = times
        self.vals = vals
        self.end = end
        # Integral from the chunk start to each change point, built lazily by
        # Signal.integral_to (only counters need it).
        self.cum: FloatArray | None = None


class Signal(ABC):
    """A piecewise-constant function of plant time, deterministic from (seed, key).

    Subclasses implement `_build(k)`: the change points and values of chunk k,
    i.e. of [k*chunk, (k+1)*chunk). Times before 0 read as time 0.
    """

    def __init__(self, key: str = "", seed: int = 0, *, chunk: float = HOUR) -> None:
        if not chunk > 0:
            raise ValueError("chunk must be positive")
        self.key = key
        self.seed = int(seed)
        self.chunk = float(chunk)
        self._sid = _key_hash(key)
        self._cache: dict[int, _Chunk] = {}
        # Integral of the signal from 0 to the start of chunk k (counters).
        self._integral_base: dict[int, float] = {0: 0.0}

    # ----------------------------------------------------------- subclass API
    @abstractmethod
    def _build(self, k: int) -> tuple[FloatArray, FloatArray]:
        """Return (times, values) for chunk k; times sorted, times[0] == k * chunk."""

    @property
    def period(self) -> float | None:
        """Nominal update period in seconds, or None for event-driven signals."""
        return None

    def _rng(self, k: int, salt: int = 0) -> np.random.Generator:
        """The random stream of chunk k; independent of every other (signal, chunk, salt)."""
        return np.random.default_rng([self.seed & 0xFFFFFFFF, self._sid, salt, k])

    # ------------------------------------------------------------- internals
    def _get(self, k: int) -> _Chunk:
        c = self._cache.get(k)
        if c is not None:
            return c
        times, vals = self._build(k)
        times = np.asarray(times, dtype=np.float64)
        vals = np.asarray(vals, dtype=np.float64)
        if times.shape != vals.shape or times.size == 0:
            raise RuntimeError(f"{type(self).__name__}._build({k}) returned bad arrays")
        # Keep only real changes (and the chunk start), so segments are maximal
        # and change_times is a plain slice.
        if vals.size > 1:
            keep = np.empty(vals.size, dtype=bool)
            keep[0] = True
            np.not_equal(vals[1:], vals[:-1], out=keep[1:])
            if not keep.all():
                times, vals = times[keep], vals[keep]
        c = _Chunk(times, vals, (k + 1) * self.chunk)
        if len(self._cache) >= _CACHE_CHUNKS:
            del self._cache[next(iter(self._cache))]
        self._cache[k] = c
        return c

    def _chunk_index(self, t: float) -> int:
        # Same expression as the vectorised path (np.floor(ts / chunk)), so
        # both pick the same chunk even at boundaries.
        return math.floor(t / self.chunk)

    # ------------------------------------------------------------ public API
    def value(self, t: float) -> float:
        """The value at plant time t."""
        t = max(float(t), 0.0)
        c = self._get(self._chunk_index(t))
        i = int(np.searchsorted(c.times, t, side="right")) - 1
        return float(c.vals[max(i, 0)])

    def segment(self, t: float) -> tuple[float, float, float]:
        """(value, start, end): the value at t holds at least on [start, end)."""
        t = max(float(t), 0.0)
        c = self._get(self._chunk_index(t))
        i = max(int(np.searchsorted(c.times, t, side="right")) - 1, 0)
        end = float(c.times[i + 1]) if i + 1 < c.times.size else c.end
        return float(c.vals[i]), float(c.times[i]), end

    def _groups(self, ts: FloatArray) -> tuple[FloatArray, list[tuple[int, np.ndarray | slice]]]:
        """Clamp ts and split its indices by chunk (slices when ts is sorted)."""
        tt = np.maximum(np.asarray(ts, dtype=np.float64), 0.0)
        if tt.size == 0:
            return tt, []
        ks = np.floor(tt / self.chunk).astype(np.int64)
        groups: list[tuple[int, np.ndarray | slice]] = []
        if ks.size == 1 or bool(np.all(ks[1:] >= ks[:-1])):
            bounds = np.flatnonzero(ks[1:] != ks[:-1]) + 1
            starts = np.concatenate(([0], bounds))
            ends = np.concatenate((bounds, [ks.size]))
            for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
                groups.append((int(ks[s]), slice(s, e)))
        else:
            order = np.argsort(ks, kind="stable")
            sk = ks[order]
            bounds = np.flatnonzero(sk[1:] != sk[:-1]) + 1
            for idx in np.split(order, bounds):
                groups.append((int(ks[idx[0]]), idx))
        return tt, groups

    def values(self, ts: FloatArray) -> FloatArray:
        """Vectorised `value`: equal to it element for element."""
        tt, groups = self._groups(ts)
        out = np.empty(tt.shape, dtype=np.float64)
        for k, sel in groups:
            c = self._get(k)
            i = np.searchsorted(c.times, tt[sel], side="right") - 1
            out[sel] = c.vals[np.maximum(i, 0)]
        return out

    def change_times(self, t0: float, t1: float) -> FloatArray:
        """Times tc in (t0, t1] at which the value changes: value(tc) != value just before."""
        if t1 <= t0 or t1 < 0:
            return np.empty(0, dtype=np.float64)
        # Times before 0 read as 0, so nothing changes before or at 0.
        lo = max(float(t0), 0.0)
        k0 = self._chunk_index(lo)
        k1 = self._chunk_index(float(t1))
        parts: list[FloatArray] = []
        prev_last: float | None = None
        if k0 > 0:
            prev_last = float(self._get(k0 - 1).vals[-1])
        for k in range(k0, k1 + 1):
            c = self._get(k)
            times = c.times
            first = 1
            if prev_last is not None and c.vals[0] != prev_last:
                first = 0
            sel = times[first:]
            sel = sel[(sel > t0) & (sel <= t1)]
            if sel.size:
                parts.append(sel)
            prev_last = float(c.vals[-1])
        if not parts:
            return np.empty(0, dtype=np.float64)
        return np.concatenate(parts)

    # -------------------------------------------------------------- integrals
    def _base_integral(self, k: int) -> float:
        """Integral of the signal over [0, k * chunk], built up chunk by chunk."""
        base = self._integral_base
        if k in base:
            return base[k]
        j = max(i for i in base if i <= k)
        acc = base[j]
        while j < k:
            c = self._get(j)
            widths = np.diff(np.append(c.times, c.end))
            acc = acc + float(np.dot(c.vals, widths))
            j += 1
            base[j] = acc
        return acc

    def integral_to(self, ts: FloatArray) -> FloatArray:
        """Integral of the signal from 0 to each t (vectorised)."""
        tt, groups = self._groups(ts)
        out = np.empty(tt.shape, dtype=np.float64)
        for k, sel in groups:
            base = self._base_integral(k)
            c = self._get(k)
            if c.cum is None:
                c.cum = np.concatenate(([0.0], np.cumsum(c.vals[:-1] * np.diff(c.times))))
            x = tt[sel]
            i = np.maximum(np.searchsorted(c.times, x, side="right") - 1, 0)
            out[sel] = base + c.cum[i] + c.vals[i] * (x - c.times[i])
        return out


def _as_signal(x: Signal | float) -> Signal:
    return x if isinstance(x, Signal) else Constant(float(x))


class Constant(Signal):
    """A value that never changes: configuration, nameplate data, a fixed setpoint."""

    def __init__(self, value: float, key: str = "", seed: int = 0) -> None:
        super().__init__(key, seed, chunk=WEEK)
        self.constant = float(value)

    def _build(self, k: int) -> tuple[FloatArray, FloatArray]:
        return np.array([k * self.chunk]), np.array([self.constant])

    def integral_to(self, ts: FloatArray) -> FloatArray:
        # Closed form: counters of a constant rate stay O(1) at any time.
        return np.maximum(np.asarray(ts, dtype=np.float64), 0.0) * self.constant


class GridSignal(Signal):
    """A signal the device refreshes every `period` seconds (a regular update grid).

    Subclasses implement `_grid(k, ts)`: the values at the grid times ts of
    chunk k. The chunk length is rounded to a whole number of periods.
    """

    def __init__(self, key: str, seed: int, *, period: float, chunk: float = HOUR) -> None:
        if not period > 0:
            raise ValueError("period must be positive")
        n = max(1, round(chunk / period))
        super().__init__(key, seed, chunk=n * period)
        self._period = float(period)
        self._n = n

    @property
    def period(self) -> float:
        return self._period

    def grid(self, k: int) -> FloatArray:
        """The update times of chunk k."""
        return k * self.chunk + np.arange(self._n, dtype=np.float64) * self._period

    @abstractmethod
    def _grid(self, k: int, ts: FloatArray) -> FloatArray:
        """Values at the grid times ts of chunk k."""

    def _build(self, k: int) -> tuple[FloatArray, FloatArray]:
        ts = self.grid(k)
        return ts, self._grid(k, ts)


def _fast_chunk(period: float) -> float:
    # A few hundred updates per chunk: cheap to build (one Generator per
    # chunk) and about 4 KiB to cache, which matters at 20k tags.
    return max(120.0, min(HOUR * 6, period * 250))


class RandomWalk(GridSignal):
    """A slow quantised walk, e.g. a tank temperature.

    Random access without replaying history: every chunk boundary gets an
    independent anchor ~ N(mean, sd), and the walk inside a chunk is a
    Brownian bridge of N(0, step_sd) steps between its two anchors. Optional
    daily cycle (peak at `peak_hour`), clipping and quantisation on top.
    """

    def __init__(
        self,
        key: str,
        seed: int,
        *,
        mean: float,
        sd: float,
        step_sd: float,
        quantum: float = 0.1,
        period: float = 10.0,
        lo: float | None = None,
        hi: float | None = None,
        daily_amplitude: float = 0.0,
        peak_hour: float = 15.0,
        chunk: float = HOUR,
    ) -> None:
        super().__init__(key, seed, period=period, chunk=chunk)
        self.mean, self.sd, self.step_sd = float(mean), float(sd), float(step_sd)
        self.quantum, self.lo, self.hi = float(quantum), lo, hi
        self.daily_amplitude, self.peak_hour = float(daily_amplitude), float(peak_hour)
        self._anchors: dict[int, float] = {}

    def _anchor(self, k: int) -> float:
        # Each chunk needs its own anchor and the next one's; remember a few.
        a = self._anchors.get(k)
        if a is None:
            a = self.mean + self.sd * float(self._rng(k, salt=1).standard_normal())
            if len(self._anchors) > 8:
                del self._anchors[next(iter(self._anchors))]
            self._anchors[k] = a
        return a

    def _grid(self, k: int, ts: FloatArray) -> FloatArray:
        n = ts.size
        a0, a1 = self._anchor(k), self._anchor(k + 1)
        steps = self._rng(k).normal(0.0, self.step_sd, n)
        w = np.concatenate(([0.0], np.cumsum(steps)))  # w[n] is the whole walk
        frac = np.arange(n, dtype=np.float64) / n
        x = a0 + (a1 - a0) * frac + w[:n] - frac * w[n]
        if self.daily_amplitude:
            hours = (ts % DAY) / HOUR
            x = x + self.daily_amplitude * np.cos(2 * np.pi * (hours - self.peak_hour) / 24.0)
        return _quantise(_clip(x, self.lo, self.hi), self.quantum)


class NoisyAnalog(GridSignal):
    """A fast analog value: `base` (a level, or another signal) plus Gaussian noise.

    With `quiet_when_zero`, there is no noise while the base is 0 (a stopped
    motor reads exactly 0, not jitter), which is what makes nights and idle
    shifts quiet. With `relative`, noise_sd is a fraction of the base.
    """

    def __init__(
        self,
        key: str,
        seed: int,
        *,
        base: Signal | float,
        noise_sd: float,
        quantum: float = 0.0,
        period: float = 1.0,
        lo: float | None = None,
        hi: float | None = None,
        relative: bool = False,
        quiet_when_zero: bool = True,
        chunk: float | None = None,
    ) -> None:
        super().__init__(key, seed, period=period, chunk=chunk or _fast_chunk(period))
        self.base = _as_signal(base)
        self.noise_sd, self.quantum = float(noise_sd), float(quantum)
        self.lo, self.hi = lo, hi
        self.relative, self.quiet_when_zero = relative, quiet_when_zero

    def _grid(self, k: int, ts: FloatArray) -> FloatArray:
        b = self.base.values(ts)
        noise = self._rng(k).normal(0.0, self.noise_sd, ts.size)
        if self.relative:
            noise = noise * np.abs(b)
        if self.quiet_when_zero:
            noise = np.where(b == 0.0, 0.0, noise)
        x = _quantise(_clip(b + noise, self.lo, self.hi), self.quantum)
        if self.quiet_when_zero:
            x = np.where(b == 0.0, 0.0, x)
        return x


class Solar(GridSignal):
    """Irradiance-like daily curve: a sine from sunrise to sunset, zero at night.

    Clouds scale it by a slow factor (two random sinusoids per day, so it is
    continuous within a day); relative noise on top. Exactly 0 at night.
    """

    def __init__(
        self,
        key: str,
        seed: int,
        *,
        peak: float = 1000.0,
        sunrise: float = 6.0,
        sunset: float = 20.0,
        cloudiness: float = 0.3,
        noise: float = 0.01,
        quantum: float = 1.0,
        period: float = 5.0,
        chunk: float | None = None,
    ) -> None:
        super().__init__(key, seed, period=period, chunk=chunk or _fast_chunk(period))
        if not 0 <= sunrise < sunset <= 24:
            raise ValueError("need 0 <= sunrise < sunset <= 24")
        self.peak, self.sunrise, self.sunset = float(peak), float(sunrise), float(sunset)
        self.cloudiness, self.noise, self.quantum = float(cloudiness), float(noise), float(quantum)

    def _grid(self, k: int, ts: FloatArray) -> FloatArray:
        hours = (ts % DAY) / HOUR
        phase = (hours - self.sunrise) / (self.sunset - self.sunrise)
        clear = np.where((phase > 0) & (phase < 1), np.sin(np.pi * np.clip(phase, 0, 1)), 0.0)
        clouds = np.ones_like(ts)
        if self.cloudiness:
            days = np.floor(ts / DAY).astype(np.int64)
            for d in np.unique(days).tolist():
                m = days == d
                r = self._rng(int(d), salt=7)
                p1, p2 = r.uniform(600, 3600), r.uniform(3600, 4 * 3600)
                f1, f2 = r.uniform(0, 2 * np.pi, 2)
                depth = self.cloudiness * r.uniform(0.2, 1.0)
                wave = 0.5 + 0.25 * np.sin(2 * np.pi * ts[m] / p1 + f1)
                wave = wave + 0.25 * np.sin(2 * np.pi * ts[m] / p2 + f2)
                clouds[m] = 1.0 - depth * wave
        x = self.peak * clear * clouds
        x = x * (1.0 + self.noise * self._rng(k).standard_normal(ts.size))
        x = _quantise(np.maximum(x, 0.0), self.quantum)
        return np.where(clear > 0, x, 0.0)


class Steps(Signal):
    """A value that jumps at Poisson times, e.g. a setpoint an operator changes.

    Each jump draws a new level from `levels` (with `weights`); a jump to the
    same level is no change. Jump times are on a `resolution` grid, because a
    device refreshes its registers at a finite rate. The level at a chunk
    start is that of the latest jump before it (looked up chunk by chunk), or
    `initial` before the first jump.
    """

    def __init__(
        self,
        key: str,
        seed: int,
        *,
        levels: Sequence[float],
        rate_per_hour: float,
        weights: Sequence[float] | None = None,
        initial: float | None = None,
        resolution: float = 1.0,
        chunk: float = DAY,
    ) -> None:
        super().__init__(key, seed, chunk=chunk)
        if not levels:
            raise ValueError("levels must not be empty")
        self.levels = np.asarray(levels, dtype=np.float64)
        w = np.ones(len(levels)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != self.levels.shape or w.sum() <= 0:
            raise ValueError("weights must match levels and be positive")
        self.weights = w / w.sum()
        self.rate = float(rate_per_hour) / HOUR
        self.initial = float(self.levels[0] if initial is None else initial)
        self.resolution = float(resolution)
        self._start: dict[int, float] = {}

    def _events(self, k: int) -> tuple[FloatArray, FloatArray]:
        r = self._rng(k)
        n = int(r.poisson(self.rate * self.chunk))
        if n == 0:
            return np.empty(0), np.empty(0)
        t = np.sort(r.uniform(0.0, self.chunk, n))
        if self.resolution > 0:
            t = np.floor(t / self.resolution) * self.resolution
        vals = r.choice(self.levels, size=n, p=self.weights)
        t = k * self.chunk + t
        # Two jumps in one refresh slot: the device shows only the last.
        keep = np.append(t[1:] != t[:-1], True)
        return t[keep], vals[keep]

    def _start_value(self, k: int) -> float:
        if k in self._start:
            return self._start[k]
        j = k - 1
        value = self.initial
        while j >= 0:
            if j in self._start:
                _, v = self._events(j)
                value = float(v[-1]) if v.size else self._start[j]
                break
            _, v = self._events(j)
            if v.size:
                value = float(v[-1])
                break
            j -= 1
        self._start[k] = value
        return value

    def _build(self, k: int) -> tuple[FloatArray, FloatArray]:
        t, v = self._events(k)
        start = k * self.chunk
        if t.size and t[0] == start:
            return t, v
        return np.append(start, t), np.append(self._start_value(k), v)


class OnOff(Steps):
    """On/off state (1.0/0.0), e.g. a motor running: switches at Poisson times, on with P=duty."""

    def __init__(
        self,
        key: str,
        seed: int,
        *,
        rate_per_hour: float,
        duty: float = 0.5,
        initial: float = 0.0,
        resolution: float = 1.0,
        chunk: float = DAY,
    ) -> None:
        if not 0 <= duty <= 1:
            raise ValueError("duty must be in [0, 1]")
        super().__init__(
            key,
            seed,
            levels=(0.0, 1.0),
            weights=(1.0 - duty, duty),
            rate_per_hour=rate_per_hour,
            initial=initial,
            resolution=resolution,
            chunk=chunk,
        )


class Shift(Signal):
    """A weekly schedule: `level` during each shift on the given weekdays, `idle` otherwise.

    shifts: (start_hour, end_hour, level); a shift may run past midnight
    (22 -> 6) and then belongs to the day it starts on. weekdays: 0 = Monday
    (plant time 0 is Monday 00:00). Deterministic: no seed needed.
    """

    def __init__(
        self,
        shifts: Sequence[tuple[float, float, float]],
        *,
        weekdays: Sequence[int] = (0, 1, 2, 3, 4),
        idle: float = 0.0,
        key: str = "",
        seed: int = 0,
    ) -> None:
        super().__init__(key, seed, chunk=DAY)
        for a, b, _ in shifts:
            if not (0 <= a < 24 and 0 < b <= 24 and a != b):
                raise ValueError(f"bad shift {a}..{b}")
        self.shifts = [(float(a), float(b), float(v)) for a, b, v in shifts]
        self.weekdays = frozenset(int(d) % 7 for d in weekdays)
        self.idle = float(idle)

    def _intervals(self, day: int) -> list[tuple[float, float, float]]:
        if day < 0 or day % 7 not in self.weekdays:
            return []
        out = []
        for a, b, v in self.shifts:
            start = day * DAY + a * HOUR
            end = day * DAY + (b if b > a else b + 24) * HOUR
            out.append((start, end, v))
        return out

    def _build(self, k: int) -> tuple[FloatArray, FloatArray]:
        lo, hi = k * DAY, (k + 1) * DAY
        spans = sorted(
            (max(s, lo), min(e, hi), v)
            for s, e, v in self._intervals(k - 1) + self._intervals(k)
            if e > lo and s < hi
        )
        times, vals = [lo], [self.idle]
        for s, e, v in spans:
            if s == times[-1]:
                vals[-1] = v
            else:
                times.append(s)
                vals.append(v)
            if e < hi:
                times.append(e)
                vals.append(self.idle)
        return np.asarray(times), np.asarray(vals)


class Combine(Signal):
    """fn(*sources) point by point, e.g. motor running = permission x shift active.

    The result changes only where a source changes, so its change points are
    the union of the sources' change points.
    """

    def __init__(
        self,
        fn: Callable[..., FloatArray],
        *sources: Signal,
        key: str = "",
        seed: int = 0,
        chunk: float | None = None,
    ) -> None:
        if not sources:
            raise ValueError("Combine needs at least one source")
        # As long as the sources' chunks (a day for event signals): few
        # chunks to build, each touching few source chunks.
        super().__init__(key, seed, chunk=chunk or min(DAY, max(s.chunk for s in sources)))
        self.fn = fn
        self.sources = sources

    def _build(self, k: int) -> tuple[FloatArray, FloatArray]:
        lo, hi = k * self.chunk, (k + 1) * self.chunk
        pts = [np.array([lo])]
        for s in self.sources:
            ct = s.change_times(lo, hi)
            pts.append(ct[ct < hi])
        times = np.unique(np.concatenate(pts))
        vals = np.asarray(self.fn(*(s.values(times) for s in self.sources)), dtype=np.float64)
        return times, np.broadcast_to(vals, times.shape).copy()


class Counter(GridSignal):
    """A monotonic counter (energy, run hours, parts): initial + gain x integral of source.

    Refreshed every `period`, floored to `quantum` (a counter register never
    rounds up). The integral is exact for piecewise-constant sources; the
    first read far into plant time integrates the source's chunks once.
    """

    def __init__(
        self,
        key: str,
        seed: int,
        *,
        source: Signal | float,
        gain: float,
        quantum: float = 1.0,
        initial: float = 0.0,
        period: float = 1.0,
        chunk: float | None = None,
    ) -> None:
        super().__init__(key, seed, period=period, chunk=chunk or _fast_chunk(period))
        self.source = _as_signal(source)
        self.gain, self.quantum, self.initial = float(gain), float(quantum), float(initial)

    def _grid(self, k: int, ts: FloatArray) -> FloatArray:
        x = self.initial + self.gain * self.source.integral_to(ts)
        if self.quantum > 0:
            x = np.floor(x / self.quantum) * self.quantum
        return x


class Follower(GridSignal):
    """gain x leader + offset + small noise, quantised: correlated with its leader.

    Example: an inverter's string currents follow irradiance. Noise is off
    while the leader is 0 (`quiet_when_zero`). After `break_at` (plant
    seconds) the correlation breaks: the follower holds its level at that
    time plus an independent random walk of sd `break_sd`, so a poller that
    only reads it when the leader moves starts missing its changes.
    """

    def __init__(
        self,
        key: str,
        seed: int,
        *,
        leader: Signal,
        gain: float = 1.0,
        offset: float = 0.0,
        noise_sd: float = 0.0,
        quantum: float = 0.0,
        period: float | None = None,
        quiet_when_zero: bool = True,
        lo: float | None = None,
        hi: float | None = None,
        break_at: float | None = None,
        break_sd: float | None = None,
        chunk: float | None = None,
    ) -> None:
        p = period or leader.period or 1.0
        super().__init__(key, seed, period=p, chunk=chunk or _fast_chunk(p))
        self.leader = leader
        self.gain, self.offset = float(gain), float(offset)
        self.noise_sd, self.quantum = float(noise_sd), float(quantum)
        self.quiet_when_zero = quiet_when_zero
        self.lo, self.hi = lo, hi
        self.break_at = break_at
        self._break_walk: RandomWalk | None = None
        if break_at is not None:
            sd = (
                break_sd if break_sd is not None else max(10 * self.noise_sd, 5 * self.quantum, 1.0)
            )
            self._break_walk = RandomWalk(
                key + "/break",
                seed,
                mean=0.0,
                sd=sd,
                step_sd=sd / 10,
                quantum=0.0,
                period=p,
            )

    def _following(self, k: int, ts: FloatArray) -> FloatArray:
        """gain x leader + offset + noise at the grid times ts of chunk k (before any break)."""
        lead = self.leader.values(ts)
        x = self.gain * lead + self.offset
        if self.noise_sd:
            noise = self._rng(k).normal(0.0, self.noise_sd, ts.size)
            if self.quiet_when_zero:
                noise = np.where(lead == 0.0, 0.0, noise)
            x = x + noise
        return x

    def _grid(self, k: int, ts: FloatArray) -> FloatArray:
        x = self._following(k, ts)
        if self.break_at is not None and self._break_walk is not None:
            after = ts >= self.break_at
            if after.any():
                level = self.gain * self.leader.value(self.break_at) + self.offset
                x = np.where(after, level + self._break_walk.values(ts), x)
        return _quantise(_clip(x, self.lo, self.hi), self.quantum)


class Burst(GridSignal):
    """A quiet `base` that becomes very active (noise of `noise_sd`) inside given windows.

    windows: (start, end) in plant seconds; with `repeat`, the windows recur
    every `repeat` seconds (e.g. DAY). Outside the windows the value is the
    base sampled on this signal's grid.
    """

    def __init__(
        self,
        key: str,
        seed: int,
        *,
        base: Signal | float,
        windows: Sequence[tuple[float, float]],
        noise_sd: float,
        quantum: float = 0.0,
        period: float = 1.0,
        repeat: float | None = None,
        lo: float | None = None,
        hi: float | None = None,
        chunk: float | None = None,
    ) -> None:
        super().__init__(key, seed, period=period, chunk=chunk or _fast_chunk(period))
        self.base = _as_signal(base)
        self.windows = [(float(a), float(b)) for a, b in windows]
        self.noise_sd, self.quantum, self.repeat = float(noise_sd), float(quantum), repeat
        self.lo, self.hi = lo, hi

    def active(self, ts: FloatArray) -> np.ndarray:
        """True where ts falls in a burst window."""
        tt = np.asarray(ts, dtype=np.float64)
        if self.repeat:
            tt = tt % self.repeat
        m = np.zeros(tt.shape, dtype=bool)
        for a, b in self.windows:
            m |= (tt >= a) & (tt < b)
        return m

    def _grid(self, k: int, ts: FloatArray) -> FloatArray:
        b = self.base.values(ts)
        noise = self._rng(k).normal(0.0, self.noise_sd, ts.size)
        x = np.where(self.active(ts), b + noise, b)
        return _quantise(_clip(x, self.lo, self.hi), self.quantum)


class Wave(GridSignal):
    """A periodic wave, refreshed every `period` seconds.

    value = mean + amplitude x shape(t / wave_period + phase), where
    subclasses give the shape over one cycle, in [-1, 1]. Optional Gaussian
    noise on top. With a `gate`, the value holds at `idle` while the gate
    reads 0 (a stopped machine does not cycle); noise is off then too.
    """

    def __init__(
        self,
        key: str,
        seed: int,
        *,
        wave_period: float,
        amplitude: float,
        mean: float = 0.0,
        phase: float = 0.0,
        noise_sd: float = 0.0,
        quantum: float = 0.0,
        period: float = 1.0,
        gate: Signal | None = None,
        idle: float | None = None,
        lo: float | None = None,
        hi: float | None = None,
        chunk: float | None = None,
    ) -> None:
        if not wave_period > 0:
            raise ValueError("wave_period must be positive")
        super().__init__(key, seed, period=period, chunk=chunk or _fast_chunk(period))
        self.wave_period, self.amplitude = float(wave_period), float(amplitude)
        self.mean, self.phase = float(mean), float(phase)
        self.noise_sd, self.quantum = float(noise_sd), float(quantum)
        self.gate = gate
        self.idle = self.mean if idle is None else float(idle)
        self.lo, self.hi = lo, hi

    @staticmethod
    @abstractmethod
    def shape(cycles: FloatArray) -> FloatArray:
        """The wave at `cycles` (time in wave periods), in [-1, 1]."""

    def _grid(self, k: int, ts: FloatArray) -> FloatArray:
        x = self.mean + self.amplitude * self.shape(ts / self.wave_period + self.phase)
        if self.noise_sd:
            x = x + self._rng(k).normal(0.0, self.noise_sd, ts.size)
        if self.gate is not None:
            x = np.where(self.gate.values(ts) != 0.0, x, self.idle)
        return _quantise(_clip(x, self.lo, self.hi), self.quantum)


class Sine(Wave):
    """A sine wave, e.g. a tank level breathing with a batch cycle."""

    @staticmethod
    def shape(cycles: FloatArray) -> FloatArray:
        return np.sin(2.0 * np.pi * cycles)


class Triangle(Wave):
    """A triangle wave: linear up, linear down, e.g. a compressor's receiver pressure."""

    @staticmethod
    def shape(cycles: FloatArray) -> FloatArray:
        frac = cycles - np.floor(cycles)
        return 4.0 * np.abs(frac - 0.5) - 1.0


class Ramp(Signal):
    """A setpoint that ramps linearly to new targets, e.g. a valve or speed reference.

    The targets jump like `Steps` (levels, weights, rate_per_hour). At each
    jump the value moves from the old target to the new one at `slope`
    units per second, refreshed every `resolution` seconds and quantised; a
    ramp lasts at most `max_ramp` seconds (then it is steeper) and ends by
    the next jump, so the value is continuous up to the refresh grid.
    """

    def __init__(
        self,
        key: str,
        seed: int,
        *,
        levels: Sequence[float],
        rate_per_hour: float,
        slope: float,
        weights: Sequence[float] | None = None,
        initial: float | None = None,
        resolution: float = 1.0,
        quantum: float = 0.0,
        max_ramp: float = HOUR,
        chunk: float = DAY,
    ) -> None:
        if not slope > 0 or not resolution > 0:
            raise ValueError("slope and resolution must be positive")
        super().__init__(key, seed, chunk=chunk)
        # Jumps on the refresh grid, so every ramp sample is on it too.
        self.targets = Steps(
            key + "/targets",
            seed,
            levels=levels,
            rate_per_hour=rate_per_hour,
            weights=weights,
            initial=initial,
            resolution=resolution,
            chunk=chunk,
        )
        self.slope, self.resolution = float(slope), float(resolution)
        self.quantum = float(quantum)
        # A ramp may reach into the next chunk but not past it: _build looks
        # back one chunk only.
        self.max_ramp = min(float(max_ramp), self.chunk)

    def _build(self, k: int) -> tuple[FloatArray, FloatArray]:
        lo, hi = k * self.chunk, (k + 1) * self.chunk
        tg = self.targets
        # Jumps from one chunk back (ramps still running at lo) to one chunk
        # ahead (a jump just after hi ends a ramp that started before it).
        ct = tg.change_times(max(lo - self.chunk, 0.0), hi + self.chunk)
        if ct.size == 0:
            return np.array([lo]), np.array([tg.value(lo)])
        new = tg.values(ct)
        old = tg.values(np.nextafter(ct, -np.inf))
        nxt = np.append(ct[1:], np.inf)
        dur = np.minimum(np.abs(new - old) / self.slope, np.minimum(nxt - ct, self.max_ramp))
        times: list[FloatArray] = [np.array([lo])]
        vals: list[FloatArray] = [np.array([tg.value(lo)])]
        for c, a, b, d, n in zip(
            ct.tolist(), old.tolist(), new.tolist(), dur.tolist(), nxt.tolist(), strict=True
        ):
            steps = max(1, math.ceil(d / self.resolution))
            if c >= hi or c + steps * self.resolution < lo:
                continue
            st = c + np.arange(steps + 1, dtype=np.float64) * self.resolution
            frac = np.minimum(1.0, (st - c) / d) if d > 0 else np.ones(st.size)
            sv = _quantise(a + (b - a) * frac, self.quantum)
            sv[-1] = b  # the target itself, not its quantised neighbour
            keep = st < n
            st, sv = st[keep], sv[keep]
            if c <= lo:
                # Running at the chunk start: the chunk opens at the last sample <= lo.
                i = int(np.searchsorted(st, lo, side="right")) - 1
                vals[0] = np.array([sv[max(i, 0)]])
                st, sv = st[i + 1 :], sv[i + 1 :]
            inside = st < hi
            times.append(st[inside])
            vals.append(sv[inside])
        return np.concatenate(times), np.concatenate(vals)


def _last_change_at_or_before(sig: Signal, t: float, max_chunks: int = 64) -> float:
    """The latest change time of `sig` at or before t (0.0 if none since plant start)."""
    hi = t
    for _ in range(max_chunks):
        lo = max(hi - sig.chunk, 0.0)
        ct = sig.change_times(lo, hi)
        if ct.size:
            return float(ct[-1])
        if lo <= 0.0:
            return 0.0
        hi = lo
    return hi


class PartialFollower(Follower):
    """Follows `leader` (gain x leader + offset + noise) only while `coupled` reads non-zero.

    Example: a loop's output tracks its demand in auto and wanders in
    manual, or a sensor tracks the process except during maintenance. When
    a decoupled window opens the value starts from where it was and moves by
    an independent random walk (sd `wander_sd`); when it closes the value
    snaps back to following. Unlike `Follower(break_at=...)` the
    correlation comes and goes, so a poller must keep checking it.
    """

    def __init__(
        self,
        key: str,
        seed: int,
        *,
        leader: Signal,
        coupled: Signal,
        gain: float = 1.0,
        offset: float = 0.0,
        noise_sd: float = 0.0,
        quantum: float = 0.0,
        wander_sd: float = 1.0,
        period: float | None = None,
        quiet_when_zero: bool = True,
        lo: float | None = None,
        hi: float | None = None,
        chunk: float | None = None,
    ) -> None:
        super().__init__(
            key,
            seed,
            leader=leader,
            gain=gain,
            offset=offset,
            noise_sd=noise_sd,
            quantum=quantum,
            period=period,
            quiet_when_zero=quiet_when_zero,
            lo=lo,
            hi=hi,
            chunk=chunk,
        )
        p = self.period
        self.coupled = coupled
        self._wander = RandomWalk(
            key + "/wander",
            seed,
            mean=0.0,
            sd=wander_sd,
            step_sd=wander_sd / 10,
            quantum=0.0,
            period=p,
        )

    def _grid(self, k: int, ts: FloatArray) -> FloatArray:
        x = self._following(k, ts)
        off = self.coupled.values(ts) == 0.0
        if off.any():
            # Where each decoupled window opened: the coupling's last change at or before t.
            first = _last_change_at_or_before(self.coupled, float(ts[0]))
            starts = np.concatenate(([first], self.coupled.change_times(ts[0], ts[-1])))
            s = starts[np.searchsorted(starts, ts[off], side="right") - 1]
            level = self.gain * self.leader.values(s) + self.offset
            x[off] = level + self._wander.values(ts[off]) - self._wander.values(s)
        return _quantise(_clip(x, self.lo, self.hi), self.quantum)
