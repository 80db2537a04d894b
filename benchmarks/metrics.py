"""The ruler: BENCHMARK.md §1 metrics of a poller, computed from the reads it made.

Pure and vectorised with numpy. Two inputs:

- `GroundTruth`: each tag's exact piecewise-constant truth over the run, from
  the plant's signals (`Signal.change_times` + `PlantTag.truth`), so events
  are exact, not sampled; and each tag's change *events* (the value leaving
  the deadband around its value at the previous event; deadband 0 = any
  change). Built once per plant and run, shared by every poller scored.
- `ReadLog`: one row per successful read (its plant time `t` and a key:
  device, table, start, count and the tags it covered). A read's values are
  not stored: they are the truth at `t`, which is what a device answers.

`score()` then gives, over a scoring window:

- **SLA**: share of judged events seen by a read of the tag within its
  `max_staleness` (a read at or after the event, at most max_staleness
  later). Events closer than max_staleness to either end of the window are
  not judged: near the end there is not enough run left to judge, near the
  start the poller may not have started yet.
- **out_of_deadband**: sample-and-hold rebuild of each tag from the values
  read (the truth at each read time), compared with the truth; the share of
  window time it is off by more than the deadband (any difference for
  deadband 0, or before the tag's first read), averaged over tags.
- **bus_load_9600**: bus seconds the reads would take on a 9600-baud RS-485
  line (request 8 bytes; response 5 + 2N bytes for N registers or
  5 + ⌈N/8⌉ for N bits; 7 characters of silence; 11 bits a character; a
  5 ms turnaround), divided by the window length. Can exceed 1: a plant of
  many devices would need several lines.
- **reads/s**: reads in the window per second (the cost that counts on TCP).

String tags are skipped (they never change in the plants).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from simulators.plant import BIT_TABLES, Plant, PlantTag

__all__ = [
    "BITS_PER_CHAR",
    "REQUEST_BYTES",
    "SILENCE_CHARS",
    "TURNAROUND",
    "GroundTruth",
    "ReadKey",
    "ReadLog",
    "ReadLogBuilder",
    "Score",
    "TagTruth",
    "events_from_values",
    "read_bus_seconds",
    "score",
]

# BENCHMARK.md §1: the serial cost of one FC1-4 read.
REQUEST_BYTES = 8
SILENCE_CHARS = 7  # two 3.5-character silences
TURNAROUND = 0.005
BITS_PER_CHAR = 11


def read_bus_seconds(
    count: int,
    is_bits: bool,
    *,
    baudrate: int = 9600,
    turnaround: float = TURNAROUND,
) -> float:
    """Seconds one read of `count` registers (or bits) holds an RS-485 line."""
    response = 5 + (math.ceil(count / 8) if is_bits else 2 * count)
    chars = REQUEST_BYTES + response + SILENCE_CHARS
    return chars * BITS_PER_CHAR / baudrate + turnaround


# --------------------------------------------------------------------- reads
@dataclass(frozen=True, slots=True)
class ReadKey:
    """What one read asked for, and which tags it delivered."""

    device: str
    table: str
    start: int
    count: int
    tags: tuple[str, ...]

    @property
    def is_bits(self) -> bool:
        return self.table in BIT_TABLES


@dataclass
class ReadLog:
    """Successful reads: `t[i]` (plant seconds, when the device sampled) and `key[i]`.

    Rows are grouped by key and sorted by time within a key (per-tag read
    times are then slices, with no sort over millions of reads). t0, t1: the
    run the log covers (plant seconds).
    """

    t: np.ndarray
    key: np.ndarray
    keys: list[ReadKey]
    t0: float
    t1: float
    name: str = ""

    def __len__(self) -> int:
        return int(self.t.size)

    @classmethod
    def from_series(
        cls, series: Sequence[tuple[ReadKey, np.ndarray]], t0: float, t1: float, name: str = ""
    ) -> ReadLog:
        """A log from each key's read times (the analytic baselines)."""
        keys: list[ReadKey] = []
        ts: list[np.ndarray] = []
        ks: list[np.ndarray] = []
        ids: dict[ReadKey, int] = {}
        for key, times in series:
            kid = ids.setdefault(key, len(keys))
            if kid == len(keys):
                keys.append(key)
            ts.append(np.asarray(times, dtype=np.float64))
            ks.append(np.full(np.size(times), kid, dtype=np.int32))
        if not ts:
            return cls(np.empty(0), np.empty(0, dtype=np.int32), keys, t0, t1, name)
        t = np.concatenate(ts)
        k = np.concatenate(ks)
        order = np.lexsort((t, k))
        return cls(t[order], k[order], keys, t0, t1, name)

    def key_times(self) -> list[np.ndarray]:
        """Each key's sorted read times (views into `t`)."""
        bounds = np.searchsorted(self.key, np.arange(len(self.keys) + 1))
        return [self.t[bounds[k] : bounds[k + 1]] for k in range(len(self.keys))]

    def tag_read_times(self) -> dict[str, np.ndarray]:
        """Sorted read times of every tag that was read at least once."""
        parts: dict[str, list[np.ndarray]] = {}
        for key, times in zip(self.keys, self.key_times(), strict=True):
            if times.size == 0:
                continue
            for tag in key.tags:
                parts.setdefault(tag, []).append(times)
        out: dict[str, np.ndarray] = {}
        for tag, arrays in parts.items():
            # One key per tag unless the plan changed; only then sort again.
            out[tag] = arrays[0] if len(arrays) == 1 else np.sort(np.concatenate(arrays))
        return out


class ReadLogBuilder:
    """Collects reads one at a time (the replay, the request log) into a `ReadLog`."""

    def __init__(self) -> None:
        self._t = array("d")
        self._key = array("i")
        self._ids: dict[ReadKey, int] = {}
        self._keys: list[ReadKey] = []

    def key_id(self, key: ReadKey) -> int:
        kid = self._ids.get(key)
        if kid is None:
            kid = self._ids[key] = len(self._keys)
            self._keys.append(key)
        return kid

    def add(self, t: float, key_id: int) -> None:
        self._t.append(t)
        self._key.append(key_id)

    def add_key(self, t: float, key: ReadKey) -> None:
        self.add(t, self.key_id(key))

    def build(self, t0: float, t1: float, name: str = "") -> ReadLog:
        t = np.frombuffer(self._t, dtype=np.float64).copy()
        key = np.frombuffer(self._key, dtype=np.int32).copy()
        order = np.lexsort((t, key))
        return ReadLog(t[order], key[order], list(self._keys), t0, t1, name)


# --------------------------------------------------------------------- truth
def events_from_values(values: np.ndarray, deadband: float) -> np.ndarray:
    """Indices (≥ 1) where `values` leaves the deadband around the last event's value.

    values[0] is the reference (the value at the start of the run; not an
    event). Deadband 0 means any change. Matches `edgeopt.tags.moved_beyond`.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return np.empty(0, dtype=np.int64)
    if deadband <= 0:
        return np.flatnonzero(v[1:] != v[:-1]) + 1
    # Sequential by nature (the reference moves with each event); a plain
    # loop over Python floats is the fastest portable way, and it only runs
    # over the changes of the signal, not over time.
    out: list[int] = []
    vals = v.tolist()
    ref = vals[0]
    for i in range(1, len(vals)):
        x = vals[i]
        if abs(x - ref) > deadband:
            out.append(i)
            ref = x
    return np.asarray(out, dtype=np.int64)


@dataclass(frozen=True)
class TagTruth:
    """One tag's truth over the run: value seg_v[i] on [seg_t[i], seg_t[i+1])."""

    key: str
    device: str
    deadband: float
    max_staleness: float
    seg_t: np.ndarray
    seg_v: np.ndarray
    events: np.ndarray  # event times

    def at(self, ts: np.ndarray) -> np.ndarray:
        """The truth at times ts (all within the run)."""
        i = np.searchsorted(self.seg_t, ts, side="right") - 1
        return self.seg_v[np.maximum(i, 0)]


@dataclass
class GroundTruth:
    """Every numeric tag's truth and events over [t0, t1] (plant seconds)."""

    t0: float
    t1: float
    tags: dict[str, TagTruth]

    @classmethod
    def from_plant(cls, plant: Plant, t0: float, t1: float) -> GroundTruth:
        tags: dict[str, TagTruth] = {}
        for device, tag in plant.iter_tags():
            if isinstance(tag.signal, str):
                continue
            key = f"{device.name}/{tag.name}"
            tags[key] = tag_truth(key, device.name, tag, t0, t1)
        return cls(t0, t1, tags)

    @property
    def n_events(self) -> int:
        return sum(int(t.events.size) for t in self.tags.values())


def tag_truth(key: str, device: str, tag: PlantTag, t0: float, t1: float) -> TagTruth:
    assert not isinstance(tag.signal, str)
    changes = tag.signal.change_times(t0, t1)
    times = np.concatenate(([t0], changes))
    values = tag.truth(times)
    # The register type may round two signal values to one (a scaled
    # integer): keep only the times the decoded value really changes.
    keep = np.ones(values.size, dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    seg_t, seg_v = times[keep], values[keep]
    idx = events_from_values(seg_v, float(tag.deadband))
    return TagTruth(
        key, device, float(tag.deadband), float(tag.max_staleness), seg_t, seg_v, seg_t[idx]
    )


# --------------------------------------------------------------------- score
@dataclass
class Score:
    """The §1 figures of one poller over one window."""

    name: str
    w0: float
    w1: float
    reads: int
    reads_per_s: float
    bus_load_9600: float
    events_judged: int
    events_seen: int
    out_of_deadband: float
    # Per tag: share of time off, and (judged, seen) events; for drill-down.
    tag_off: dict[str, float] = field(default_factory=dict, repr=False)
    tag_events: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    @property
    def sla(self) -> float:
        """Share of judged events seen in time (1.0 when there were none)."""
        return self.events_seen / self.events_judged if self.events_judged else 1.0

    @property
    def missed(self) -> int:
        return self.events_judged - self.events_seen

    def worst_tags(self, n: int = 5) -> list[tuple[str, float]]:
        return sorted(self.tag_off.items(), key=lambda kv: -kv[1])[:n]


def score(
    log: ReadLog,
    truth: GroundTruth,
    *,
    window: tuple[float, float] | None = None,
    name: str | None = None,
    tags: Iterable[str] | None = None,
) -> Score:
    """Score the reads in `log` against `truth` over `window` (default: the whole run).

    Reads before the window still count for the sample-and-hold rebuild (the
    value a poller holds when the window opens).
    """
    w0, w1 = window if window is not None else (truth.t0, truth.t1)
    if not w1 > w0:
        raise ValueError("empty scoring window")
    span = w1 - w0
    in_window = (log.t >= w0) & (log.t < w1)
    n_reads = int(np.count_nonzero(in_window))
    key_cost = np.array(
        [read_bus_seconds(k.count, k.is_bits) for k in log.keys] or [0.0], dtype=np.float64
    )
    bus = float(key_cost[log.key[in_window]].sum()) if n_reads else 0.0

    reads_of = log.tag_read_times()
    empty = np.empty(0, dtype=np.float64)
    judged_total = seen_total = 0
    tag_off: dict[str, float] = {}
    tag_events: dict[str, tuple[int, int]] = {}
    selected: Sequence[str] = list(tags) if tags is not None else list(truth.tags)
    for key in selected:
        tt = truth.tags[key]
        rt = reads_of.get(key, empty)
        judged, seen = _sla_counts(tt, rt, w0, w1)
        judged_total += judged
        seen_total += seen
        tag_events[key] = (judged, seen)
        tag_off[key] = _off_share(tt, rt, w0, w1)
    ood = float(np.mean(list(tag_off.values()))) if tag_off else 0.0
    return Score(
        name=name if name is not None else log.name,
        w0=w0,
        w1=w1,
        reads=n_reads,
        reads_per_s=n_reads / span,
        bus_load_9600=bus / span,
        events_judged=judged_total,
        events_seen=seen_total,
        out_of_deadband=ood,
        tag_off=tag_off,
        tag_events=tag_events,
    )


def _sla_counts(tt: TagTruth, reads: np.ndarray, w0: float, w1: float) -> tuple[int, int]:
    ms = tt.max_staleness
    ev = tt.events
    ev = ev[(ev >= w0 + ms) & (ev <= w1 - ms)]
    if ev.size == 0:
        return 0, 0
    if reads.size == 0:
        return int(ev.size), 0
    # The first read at or after each event (a read at the event's instant
    # already sees the new value: the truth is right-continuous).
    i = np.searchsorted(reads, ev, side="left")
    has_next = i < reads.size
    nxt = np.where(has_next, reads[np.minimum(i, reads.size - 1)], np.inf)
    seen = int(np.count_nonzero(nxt - ev <= ms))
    return int(ev.size), seen


def _off_share(tt: TagTruth, reads: np.ndarray, w0: float, w1: float) -> float:
    """Share of [w0, w1) during which the sample-and-hold rebuild is off the truth."""
    seg = tt.seg_t[(tt.seg_t > w0) & (tt.seg_t < w1)]
    rd = reads[(reads > w0) & (reads < w1)]
    # Breakpoints: the window start, every truth change and every read.
    bp = np.unique(np.concatenate(([w0], seg, rd)))
    widths = np.diff(np.append(bp, w1))
    truth_now = tt.at(bp)
    # The last read at or before each breakpoint, and what it returned.
    j = np.searchsorted(reads, bp, side="right") - 1
    have = j >= 0
    held = tt.at(reads[np.maximum(j, 0)]) if reads.size else np.zeros_like(bp)
    # Deadband 0: any difference is off; otherwise beyond the deadband.
    off = np.abs(held - truth_now) > tt.deadband if tt.deadband > 0 else held != truth_now
    off = off | ~have
    return float(widths[off].sum() / (w1 - w0))
