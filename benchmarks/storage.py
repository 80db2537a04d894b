"""BENCHMARK.md §3: storage, measured per tier on simulator data.

The data are the samples the daemon itself would store: a virtual-time
replay of the demo plant with a sink on the poller (changes beyond the
deadband, the value held before each change, heartbeats), exactly what the
daemon hands its storage. Each tier has one measuring function, registered
in `TIERS`: hot (raw rows in SQLite), warm (lossless chunks) and cold (1 min
aggregates), all three through the daemon's own `HotStore` and `TierManager`.

Per tier: bytes per sample on disk (hot: file size after a checkpoint; warm
and cold: the pages of their tables and indexes, from SQLite's dbstat),
divided by the samples written; ingest rate (hot: samples/s appended and
committed in batches; warm and cold: samples/s the lifecycle moves into the
tier); and the time to read back one tag's 24 h of 1 Hz data from that tier
(the warm note adds the same day read across hot and warm).

`measure_series` runs public float series (matplotlib's sample data, when the
`bench` extra is installed) through the warm-tier chunk codec and compares
it with plain Gorilla XOR.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.clock import SystemClock, VirtualClock
from edgeopt.storage import HotStore, Sample
from edgeopt.storage.tiers import TierManager
from simulators.plants import demo_plant
from simulators.signals import DAY, HOUR

from .replay import EPOCH, replay

__all__ = [
    "TIERS",
    "TierResult",
    "measure_cold",
    "measure_hot",
    "measure_series",
    "measure_storage",
    "measure_warm",
    "public_series",
    "simulator_samples",
]

BATCH = 5000


@dataclass
class TierResult:
    tier: str
    samples: int
    bytes_on_disk: int
    ingest_seconds: float
    query_points: int
    query_seconds: float
    note: str = ""

    @property
    def bytes_per_sample(self) -> float:
        return self.bytes_on_disk / self.samples if self.samples else 0.0

    @property
    def ingest_per_s(self) -> float:
        return self.samples / self.ingest_seconds if self.ingest_seconds else 0.0


def simulator_samples(hours: float = 6.0) -> list[Sample]:
    """What the daemon stores while polling the demo plant for `hours` (virtual time)."""
    got: list[Sample] = []

    def sink(samples: Sequence[Sample]) -> None:
        got.extend(samples)

    asyncio.run(
        replay(
            demo_plant(),
            hours * HOUR,
            start=2 * DAY + 6 * HOUR,
            optimizer_factory=False,
            sinks=[sink],
        )
    )
    return got


def one_tag_day(tag: str = "bench/one_hz") -> list[Sample]:
    """24 h of one tag at 1 Hz, a value changing every second (the read-back case)."""
    t0 = EPOCH + 2 * DAY
    return [Sample(tag, t0 + i, float(i % 1000) / 10, "good") for i in range(int(DAY))]


async def measure_hot(samples: Sequence[Sample], day: Sequence[Sample], work: Path) -> TierResult:
    """Hot tier: raw rows, batched inserts, WAL."""
    clock = SystemClock()
    path = work / "hot.db"
    store = await HotStore.open(path, clock=clock, flush_rows=BATCH, max_buffer=10 * BATCH)
    try:
        started = time.perf_counter()
        for i in range(0, len(samples), BATCH):
            store.extend(samples[i : i + BATCH])
            await store.flush()
        ingest = time.perf_counter() - started
    finally:
        await store.close()
    size = _db_bytes(path)
    # Read-back: one tag's day among the rest.
    store = await HotStore.open(path, clock=clock, flush_rows=BATCH, max_buffer=10 * BATCH)
    try:
        for i in range(0, len(day), BATCH):
            store.extend(day[i : i + BATCH])
            await store.flush()
        tag = day[0].tag
        best = float("inf")
        points = 0
        for _ in range(5):
            t = time.perf_counter()
            got = await store.query(tag, day[0].ts, day[-1].ts)
            best = min(best, time.perf_counter() - t)
            points = len(got)
    finally:
        await store.close()
    return TierResult("hot", len(samples), size, ingest, points, best)


def _tiers(store: HotStore, clock: VirtualClock, **kwargs: Any) -> TierManager:
    kwargs.setdefault("hot_retention", 60.0)
    kwargs.setdefault("warm_retention", DAY)
    kwargs.setdefault("cold_retention", 365 * DAY)
    return TierManager(store, clock=clock, **kwargs)


async def _fill(store: HotStore, samples: Sequence[Sample]) -> None:
    for i in range(0, len(samples), BATCH):
        store.extend(samples[i : i + BATCH])
        await store.flush()


async def _read_back(tiers: TierManager, day: Sequence[Sample]) -> tuple[int, float, list[str]]:
    """Best of 5 reads of `day`'s tag over its 24 h: (points, seconds, tiers that answered)."""
    best, points, answered = float("inf"), 0, []
    for _ in range(5):
        t = time.perf_counter()
        got = await tiers.query(day[0].tag, day[0].ts, day[-1].ts)
        best = min(best, time.perf_counter() - t)
        points, answered = len(got.points), got.tiers
    return points, best, answered


async def _started_worker(tiers: TierManager) -> float:
    """Start the codec worker; returns the seconds its start took.

    Ingest is timed with the worker up, as a daemon's worker serves a whole
    lifecycle run; its start is reported beside the rate.
    """
    t = time.perf_counter()
    await tiers.codec_worker.loaded_modules()
    return time.perf_counter() - t


def _start_note(seconds: float) -> str:
    return f"codec worker start {seconds:.2f} s (not in the rate)"


def _codec_note(figures: dict[str, Any]) -> str:
    codecs = figures["warm"]["codecs"]
    total = sum(c["samples"] for c in codecs.values()) or 1
    return "codecs (share of samples): " + ", ".join(
        f"{name} {100 * c['samples'] / total:.0f}%" for name, c in codecs.items()
    )


async def measure_warm(samples: Sequence[Sample], day: Sequence[Sample], work: Path) -> TierResult:
    """Warm tier: the same samples as lossless chunks; ingest = hot → warm moves per second.

    The read-back is the day moved to the warm tier as a whole; the note adds
    the same day read across tiers (its first 12 h warm, the rest hot).
    """
    end = max(s.ts for s in samples)
    clock = VirtualClock(end + 2 * HOUR)
    store = await HotStore.open(
        work / "edgeopt.db", clock=clock, flush_rows=BATCH, max_buffer=10 * BATCH
    )
    try:
        await _fill(store, samples)
        async with _tiers(store, clock) as tiers:
            start_up = await _started_worker(tiers)
            started = time.perf_counter()
            report = await tiers.run_lifecycle()
            moving = time.perf_counter() - started
            figures = (await tiers.refresh_figures()).to_dict()
        note = f"{report.chunks_written} chunks; {_codec_note(figures)}; {_start_note(start_up)}"
        await _fill(store, day)
        async with _tiers(store, VirtualClock(day[0].ts + DAY / 2 + 1), hot_retention=1.0) as half:
            await half.run_lifecycle()
            _, across, answered = await _read_back(half, day)
        note += f"; 24 h read across {' + '.join(answered)} (12 h each): {1000 * across:.0f} ms"
        async with _tiers(store, VirtualClock(day[-1].ts + 2 * HOUR), hot_retention=1.0) as whole:
            await whole.run_lifecycle()
            points, best, _ = await _read_back(whole, day)
    finally:
        await store.close()
    warm = figures["warm"]
    assert warm["samples"] == len(samples), "every sample must reach the warm tier"
    return TierResult("warm", warm["samples"], warm["bytes"], moving, points, best, note)


async def measure_cold(samples: Sequence[Sample], day: Sequence[Sample], work: Path) -> TierResult:
    """Cold tier: 1 min aggregates of the same samples; ingest = warm → cold moves per second."""
    end = max(s.ts for s in samples)
    store = await HotStore.open(
        work / "edgeopt.db", clock=VirtualClock(end), flush_rows=BATCH, max_buffer=10 * BATCH
    )
    try:
        await _fill(store, samples)
        async with _tiers(store, VirtualClock(end + 2 * HOUR)) as tiers:
            await tiers.run_lifecycle()  # hot → warm
        async with _tiers(store, VirtualClock(end + 2 * DAY)) as tiers:
            start_up = await _started_worker(tiers)
            started = time.perf_counter()
            report = await tiers.run_lifecycle()  # warm → cold
            moving = time.perf_counter() - started
            cold = (await tiers.refresh_figures()).to_dict()["cold"]
        # Read-back: the 1 Hz day, moved to the cold tier in turn (1440 buckets).
        await _fill(store, day)
        async with _tiers(store, VirtualClock(day[-1].ts + 2 * DAY)) as tiers:
            await tiers.run_lifecycle()
            points, best, _ = await _read_back(tiers, day)
    finally:
        await store.close()
    if report.errors:
        raise RuntimeError(f"cold tier moves failed: {report.errors}")
    note = (
        f"{cold['buckets']} buckets of 1 min in {cold['blocks']} blocks, "
        f"{cold['bytes_per_bucket']} B/bucket; {_start_note(start_up)}"
    )
    return TierResult("cold", cold["samples"], cold["bytes"], moving, points, best, note)


def _db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


Tier = Callable[[Sequence[Sample], Sequence[Sample], Path], Coroutine[Any, Any, TierResult]]
# One measuring function per tier, in storage order.
TIERS: dict[str, Tier] = {"hot": measure_hot, "warm": measure_warm, "cold": measure_cold}


def measure_storage(
    hours: float = 6.0, progress: Callable[[str], None] | None = None
) -> list[TierResult]:
    if progress:
        progress(f"simulator data: {hours:g} h of the demo plant (virtual time)")
    samples = simulator_samples(hours)
    day = one_tag_day()
    out: list[TierResult] = []
    for name, measure in TIERS.items():
        if progress:
            progress(f"{name} tier")
        with tempfile.TemporaryDirectory(prefix=f"edgeopt-{name}-") as tmp:
            out.append(asyncio.run(measure(samples, day, Path(tmp))))
    return out


# --- Public float series --------------------------------------------------------------


@dataclass
class SeriesResult:
    """One float series through the warm-tier chunk codec, against plain Gorilla XOR."""

    name: str
    source: str
    samples: int
    chunk_bytes: int  # edgeopt chunks (timestamps, values, quality, kind, headers)
    gorilla_value_bytes: int  # Gorilla XOR bit-stream of the values alone, uncompressed
    codecs: dict[str, int]  # chunk codec label → samples

    @property
    def bytes_per_sample(self) -> float:
        return self.chunk_bytes / self.samples

    @property
    def gorilla_bytes_per_sample(self) -> float:
        return self.gorilla_value_bytes / self.samples


def public_series() -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Public float series: `name → (source, ts, values)`.

    Real data where matplotlib (the `bench` extra) ships it: Google's daily
    prices 2004–2008 (two-decimal floats) and a membrane-potential recording
    (float32 samples). One synthetic series stands for full-precision
    float64 sensor data, the case no codec squeezes much.
    """
    out: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    try:
        import matplotlib  # the `bench` extra

        data = Path(matplotlib.get_data_path()) / "sample_data"
        prices = np.load(data / "goog.npz")["price_data"]
        days = prices["date"].astype("datetime64[s]").astype(np.int64).astype(np.float64)
        for column in ("open", "high", "low", "close"):
            out[f"goog_{column}"] = ("matplotlib sample_data/goog.npz", days, prices[column])
        membrane = np.fromfile(data / "membrane.dat", dtype=np.float32).astype(np.float64)
        out["membrane"] = (
            "matplotlib sample_data/membrane.dat, taken as 1 kHz",
            EPOCH + np.arange(membrane.size) / 1000.0,
            membrane,
        )
    except (ImportError, OSError, KeyError):
        pass
    rng = np.random.default_rng(42)
    n = 4 * 3600
    out["float64_walk"] = (
        "synthetic: 1 Hz random walk in full float64 precision",
        EPOCH + np.arange(n, dtype=np.float64),
        50 + np.cumsum(rng.normal(0, 0.05, n)),
    )
    return out


def measure_series(
    series: dict[str, tuple[str, np.ndarray, np.ndarray]] | None = None, chunk: int = 3600
) -> list[SeriesResult]:
    """Encode each series in warm-tier chunks of `chunk` samples and compare with Gorilla XOR."""
    from edgeopt.storage.chunks import Rows, encode_samples
    from edgeopt.storage.codecs import encode_xor

    out: list[SeriesResult] = []
    for name, (source, ts, values) in (series or public_series()).items():
        keep = ~np.isnan(values)
        ts, values = ts[keep], values[keep]
        size = gorilla = 0
        codecs: dict[str, int] = {}
        for i in range(0, ts.size, chunk):
            t, v = ts[i : i + chunk], values[i : i + chunk]
            zeros = np.zeros(t.size, np.uint8)
            encoded = encode_samples(Rows(t, v.tolist(), zeros, zeros))
            size += len(encoded.blob)
            gorilla += len(encode_xor(v, 64))
            codecs[encoded.codec] = codecs.get(encoded.codec, 0) + t.size
        out.append(SeriesResult(name, source, int(ts.size), size, gorilla, codecs))
    return out
