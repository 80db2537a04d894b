"""Storage tiers on real SQLite files: moves, queries across tiers, budget, full disk, kill -9."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from edgeopt.clock import VirtualClock
from edgeopt.events import EventLog
from edgeopt.storage import HotStore, Sample
from edgeopt.storage import archive as archive_files
from edgeopt.storage.aggregates import aggregate_points
from edgeopt.storage.chunks import decode_aggregates, decode_samples
from edgeopt.storage.hot_to_warm import MOVE_BATCH_SAMPLES, move_batches
from edgeopt.storage.tiers import CHUNK_SECONDS, MAX_CHUNK_SAMPLES, TierManager
from edgeopt.worker import WorkerProcess, WorkerStartFailed

HOUR = 3600.0
DAY = 86400.0
D0 = 1_700_006_400.0  # a UTC midnight (2023-11-15)
assert D0 % DAY == 0
PROC = Path(__file__).with_name("storage_lifecycle_proc.py")
CODEC_PROC = Path(__file__).with_name("storage_codec_proc.py")


# --- helpers ------------------------------------------------------------------------------


# Everything a test opens, closed after it even when it fails (an open
# aiosqlite connection's thread would keep the test process alive).
_OPEN: list[HotStore | TierManager] = []


@pytest.fixture(autouse=True)
async def _close_everything() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().close()


async def open_store(path: Path, clock: VirtualClock) -> HotStore:
    store = await HotStore.open(path, clock=clock, flush_rows=100_000, max_buffer=1_000_000)
    _OPEN.append(store)
    return store


async def write(store: HotStore, samples: list[Sample]) -> None:
    store.extend(samples)
    assert await store.flush() == len(samples)


def minutes(tag: str, start: float, count: int, step: float = 60.0) -> list[Sample]:
    """A temperature-like tag: 0.1-resolution values (as Modbus scaling gives)."""
    return [
        Sample(tag, start + i * step, round(20 + 5 * math.sin(i / 30), 1), "good")
        for i in range(count)
    ]


@dataclass
class Census:
    """Where every sample is: raw (hot + warm) by (tag, ts), aggregated (cold + archive) by tag."""

    raw: Counter[tuple[str, float]] = field(default_factory=Counter)
    aggregated: Counter[str] = field(default_factory=Counter)
    per_tier: Counter[str] = field(default_factory=Counter)

    def total(self, tag: str) -> int:
        return sum(n for (t, _), n in self.raw.items() if t == tag) + self.aggregated[tag]


def census(db: Path, archive_dir: Path | None) -> Census:
    """Count every sample in every tier with plain sqlite3, as an operator's tool would."""
    out = Census()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        names = {int(i): str(n) for i, n in conn.execute("SELECT id, name FROM tags")}
        for tag_id, ts in conn.execute("SELECT tag_id, ts FROM samples"):
            out.raw[(names[tag_id], ts)] += 1
            out.per_tier["hot"] += 1
        for tag_id, count, blob in conn.execute("SELECT tag_id, count, blob FROM chunks"):
            rows = decode_samples(blob)
            assert len(rows) == count
            for ts in rows.ts.tolist():
                out.raw[(names[tag_id], ts)] += 1
            out.per_tier["warm"] += count
        cold_ids = set()
        for block_id, tag_id, count, blob in conn.execute(
            "SELECT id, tag_id, count, blob FROM cold"
        ):
            assert decode_aggregates(blob).samples == count
            cold_ids.add(block_id)
            out.aggregated[names[tag_id]] += count
            out.per_tier["cold"] += count
    finally:
        conn.close()
    if archive_dir is not None:
        for path in archive_files.archive_files(archive_dir):
            a = sqlite3.connect(path)  # read-write: may roll back a killed writer's journal
            try:
                assert a.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                rows = a.execute(
                    "SELECT c.id, t.name, c.count FROM cold c JOIN tags t ON t.id = c.tag_id"
                ).fetchall()
            finally:
                a.close()
            for block_id, name, count in rows:
                if block_id not in cold_ids:  # copied, not yet deleted: the same block
                    out.aggregated[name] += count
                    out.per_tier["archive"] += count
    return out


def assert_each_sample_once(c: Census, written: dict[str, list[float]]) -> None:
    for tag, stamps in written.items():
        raw = {ts for (t, ts) in c.raw if t == tag}
        assert all(c.raw[(tag, ts)] == 1 for ts in raw), f"{tag}: a raw sample twice"
        assert raw <= set(stamps), f"{tag}: a raw sample that was never written"
        assert c.total(tag) == len(stamps), f"{tag}: {c.total(tag)} samples, wrote {len(stamps)}"


def tiers_for(store: HotStore, clock: VirtualClock, tmp: Path, **kwargs: Any) -> TierManager:
    kwargs.setdefault("hot_retention", DAY)
    kwargs.setdefault("warm_retention", 2 * DAY)
    kwargs.setdefault("cold_retention", 3 * DAY)
    kwargs.setdefault("cold_resolution", 600.0)
    kwargs.setdefault("archive_dir", tmp / "archive")
    tiers = TierManager(store, clock=clock, **kwargs)
    _OPEN.append(tiers)
    return tiers


def hot_records(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(db)
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        for name, ts, value, quality, kind in conn.execute(
            "SELECT t.name, s.ts, s.value, s.quality, s.kind FROM samples s "
            "JOIN tags t ON t.id = s.tag_id ORDER BY t.name, s.ts"
        ):
            out.setdefault(name, []).append((ts, value, quality, kind))
        return out
    finally:
        conn.close()


# --- hot → warm ------------------------------------------------------------------------------


async def test_hot_rows_become_chunks_that_hold_exactly_the_same_rows(tmp_path: Path) -> None:
    db = tmp_path / "edgeopt.db"
    clock = VirtualClock(D0)
    store = await open_store(db, clock)
    rng = random.Random(5)
    samples = [
        *minutes("plc/temp", D0, 180),
        *(Sample("plc/pump", D0 + i * 7.5, i % 3 == 0, "good") for i in range(1000)),
        *(Sample("meter/energy", D0 + i, 2**64 - 1 - i, "good") for i in range(0, 7200, 60)),
        *(Sample("meter/raw", D0 + i * 0.25, rng.uniform(-1e6, 1e6), "good") for i in range(3000)),
        Sample("plc/temp", D0 + 30.5, math.nan, "bad"),
        Sample("plc/temp", D0 + 31.5, None, "bad"),
        Sample("plc/temp", D0 + 32.5, 21.5, "stale"),
        *(
            Sample("plc/state", D0 + i * 90, ["run", "idle", "fault"][i % 3], "good")
            for i in range(80)
        ),
    ]
    await write(store, samples)
    before = hot_records(db)
    tiers = tiers_for(store, clock, tmp_path, hot_retention=HOUR)
    points_before = {tag: await store.query(tag) for tag in before}
    clock.advance(4 * HOUR)
    report = await tiers.run_lifecycle()
    assert report.errors == [] and report.hot_to_warm == len(samples)
    # Nothing stays raw in the hot tier; the chunks decode to the very same rows.
    assert hot_records(db) == {}
    conn = sqlite3.connect(db)
    after: dict[str, list[tuple[Any, ...]]] = {}
    for name, blob in conn.execute(
        "SELECT t.name, c.blob FROM chunks c JOIN tags t ON t.id = c.tag_id ORDER BY c.start_ts"
    ):
        after.setdefault(name, []).extend(decode_samples(blob).records())
    conn.close()
    assert sorted(after) == sorted(before)
    for tag, rows in before.items():
        assert sorted(after[tag], key=lambda r: r[0]) == rows, tag
        # The cross-tier query gives what the hot tier's own query gave.
        result = await tiers.query(tag)
        assert result.tiers == ["warm"]
        got, want = result.points, points_before[tag]
        assert [ts for ts, _ in got] == [ts for ts, _ in want]
        for (_, a), (_, b) in zip(got, want, strict=True):
            assert (a == b and type(a) is type(b)) or (a != a and b != b), (tag, a, b)
    # Each chunk lies in one aligned hour and holds at most MAX_CHUNK_SAMPLES.
    conn = sqlite3.connect(db)
    for start, end, count in conn.execute("SELECT start_ts, end_ts, count FROM chunks"):
        assert math.floor(start / CHUNK_SECONDS) == math.floor(end / CHUNK_SECONDS)
        assert count <= MAX_CHUNK_SAMPLES
    conn.close()
    figures = tiers.figures()
    assert figures is not None
    assert figures["hot"]["samples"] == 0 and figures["warm"]["samples"] == len(samples)
    assert sum(c["samples"] for c in figures["warm"]["codecs"].values()) == len(samples)
    await tiers.close()
    await store.close()


async def test_many_tags_move_together_and_a_busy_tag_in_chunks_of_max_samples(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edgeopt.db"
    clock = VirtualClock(D0)
    store = await open_store(db, clock)
    busy = [Sample("a/busy", D0 + i * 0.175, round(i * 0.01, 2), "good") for i in range(20_000)]
    mid = [Sample("b/mid", D0 + i * 0.5, float(i % 97), "good") for i in range(6_000)]
    # Quiet tags that only start late in the hour (not in its first bucket).
    quiet = [
        Sample(f"c/q{k:02d}", D0 + 1800 + k + i * 30.0, k + i / 10, "good")
        for k in range(40)
        for i in range(50)
    ]
    rng = np.random.default_rng(9)
    walk = 50 + np.cumsum(rng.normal(0, 0.05, 3600))
    lossy = [Sample("d/lossy", D0 + i, float(v), "good") for i, v in enumerate(walk)]
    samples = sorted(busy + mid + quiet + lossy, key=lambda s: s.ts)
    await write(store, samples)
    before = hot_records(db)
    tiers = tiers_for(store, clock, tmp_path, hot_retention=HOUR, deviations={"d/lossy": 0.25})
    clock.advance(2 * HOUR)
    report = await tiers.run_lifecycle()
    assert report.errors == [] and report.hot_to_warm == len(samples)
    assert hot_records(db) == {}
    conn = sqlite3.connect(db)
    chunks: dict[str, list[tuple[float, float, int]]] = {}
    after: dict[str, list[tuple[Any, ...]]] = {}
    for name, start, end, count, blob in conn.execute(
        "SELECT t.name, c.start_ts, c.end_ts, c.count, c.blob FROM chunks c "
        "JOIN tags t ON t.id = c.tag_id ORDER BY c.start_ts"
    ):
        chunks.setdefault(name, []).append((start, end, count))
        after.setdefault(name, []).extend(decode_samples(blob).records())
    conn.close()
    # The busy tag: its oldest MAX_CHUNK_SAMPLES first, chunks that do not overlap.
    assert [c for _, _, c in chunks["a/busy"]] == [MAX_CHUNK_SAMPLES, MAX_CHUNK_SAMPLES, 3_616]
    spans = chunks["a/busy"]
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    # Every other tag: one chunk, holding exactly its rows (the lossy tag thinned).
    for tag in before:
        if tag != "a/busy":
            assert len(chunks[tag]) == 1, tag
        if tag != "d/lossy":
            assert after[tag] == before[tag], tag
    assert report.chunks_written == sum(len(c) for c in chunks.values()) == 3 + 1 + 40 + 1
    kept = len(after["d/lossy"])
    assert kept < 3600 and report.swinging_door_dropped == 3600 - kept
    await tiers.close()
    await store.close()


def test_move_batches_group_consecutive_tags_up_to_the_batch_size() -> None:
    n = MOVE_BATCH_SAMPLES
    counts = [(1, n // 2), (2, n // 4), (3, n // 4), (4, 1), (5, n + 1), (6, 10), (7, n)]
    assert move_batches(counts) == [
        (1, 3, n),
        (4, 4, 1),
        (5, 5, n + 1),
        (6, 6, 10),
        (7, 7, n),
    ]
    assert move_batches([]) == []


async def test_hot_windows_younger_than_retention_stay_and_late_samples_get_their_own_chunk(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edgeopt.db"
    clock = VirtualClock(D0 + 5 * HOUR + 10)
    store = await open_store(db, clock)
    tiers = tiers_for(store, clock, tmp_path, hot_retention=2 * HOUR)
    await write(store, minutes("d/t", D0, 5 * 60))
    report = await tiers.run_lifecycle()
    # Cutoff 3 h 10 s after D0: hours 0, 1 and 2 are complete before it.
    assert report.hot_to_warm == 180 and report.chunks_written == 3
    assert census(db, None).per_tier == {"warm": 180, "hot": 120}
    # A late sample for hour 0 arrives, and a newer value for a moved timestamp.
    await write(
        store, [Sample("d/t", D0 + 90, 99.5, "good"), Sample("d/t", D0 + 120, -1.0, "good")]
    )
    result = await tiers.query("d/t", D0, D0 + 180)
    assert result.points == [
        (D0, 20.0),
        (D0 + 60, 20.2),
        (D0 + 90, 99.5),
        (D0 + 120, -1.0),
        (D0 + 180, 20.5),
    ]
    assert result.tiers == ["hot", "warm"]
    report = await tiers.run_lifecycle()
    assert report.chunks_written == 1 and report.hot_to_warm == 2
    # The newer chunk wins for the repeated timestamp, as the newer write does in hot.
    result = await tiers.query("d/t", D0, D0 + 180)
    assert result.points == [
        (D0, 20.0),
        (D0 + 60, 20.2),
        (D0 + 90, 99.5),
        (D0 + 120, -1.0),
        (D0 + 180, 20.5),
    ]
    await tiers.close()
    await store.close()


async def test_swinging_door_tags_keep_their_error_bound_and_others_stay_lossless(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edgeopt.db"
    clock = VirtualClock(D0)
    store = await open_store(db, clock)
    rng = np.random.default_rng(2)
    walk = 50 + np.cumsum(rng.normal(0, 0.05, 3600))
    lossy = [Sample("d/lossy", D0 + i, float(v), "good") for i, v in enumerate(walk)]
    exact = [Sample("d/exact", D0 + i, float(v), "good") for i, v in enumerate(walk)]
    await write(store, lossy + exact)
    tiers = tiers_for(store, clock, tmp_path, hot_retention=HOUR, deviations={"d/lossy": 0.25})
    clock.advance(2 * HOUR)
    report = await tiers.run_lifecycle()
    assert report.errors == [] and report.swinging_door_dropped > 3000
    kept = (await tiers.query("d/lossy")).points
    assert (await tiers.query("d/exact")).points == [(s.ts, s.value) for s in exact]
    ts = np.array([t for t, _ in kept])
    values = np.array([v for _, v in kept])
    error = np.abs(np.interp([s.ts for s in lossy], ts, values) - walk)
    assert error.max() <= 0.25
    with pytest.raises(ValueError, match="compression_deviation"):
        tiers.set_deviations({"d/x": 0.0})
    await tiers.close()
    await store.close()


# --- all tiers, and the query across them ----------------------------------------------------


async def _four_tiers(
    tmp_path: Path, *, archive: bool
) -> tuple[HotStore, TierManager, dict[str, list[Sample]], EventLog]:
    db = tmp_path / "edgeopt.db"
    clock = VirtualClock(D0)
    store = await open_store(db, clock)
    data = {
        "plc/temp": minutes("plc/temp", D0, 4 * 1440),
        "plc/state": [
            Sample("plc/state", D0 + i * 1800, ["run", "idle"][i % 2], "good")
            for i in range(4 * 48)
        ],
    }
    await write(store, sorted((s for v in data.values() for s in v), key=lambda s: s.ts))
    events = EventLog()
    tiers = tiers_for(
        store,
        clock,
        tmp_path,
        archive_dir=tmp_path / "archive" if archive else None,
        emit=events.emit,
    )
    clock.advance(4 * DAY + HOUR)
    report = await tiers.run_lifecycle()
    assert report.errors == []
    return store, tiers, data, events


async def test_a_query_reads_hot_warm_cold_and_archive_as_one(tmp_path: Path) -> None:
    store, tiers, data, _ = await _four_tiers(tmp_path, archive=True)
    temp = data["plc/temp"]
    c = census(tmp_path / "edgeopt.db", tmp_path / "archive")
    assert_each_sample_once(c, {tag: [s.ts for s in v] for tag, v in data.items()})
    assert set(c.per_tier) == {"hot", "warm", "cold", "archive"}
    assert archive_files.archive_files(tmp_path / "archive") == [
        tmp_path / "archive" / "edgeopt-2023-11.sqlite"
    ]

    result = await tiers.query("plc/temp")
    assert result.tiers == ["hot", "warm", "cold", "archive"]
    # Raw where raw exists: days 2 and 3 come back sample for sample.
    raw = [(s.ts, s.value) for s in temp if s.ts >= D0 + 2 * DAY]
    assert result.points[-len(raw) :] == raw
    # Aggregates beyond: days 0 (archive) and 1 (cold) in 10 min buckets.
    expected = aggregate_points(
        np.array([s.ts for s in temp if s.ts < D0 + 2 * DAY]),
        [s.value for s in temp if s.ts < D0 + 2 * DAY],
        600.0,
    )
    assert len(result.aggregates) == len(expected) == 2 * 144
    for got, want in zip(result.aggregates, expected.rows(), strict=True):
        assert (got.ts, got.count, got.numeric, got.min, got.max, got.last) == (
            want[0],
            want[1],
            want[2],
            want[3],
            want[4],
            want[6],
        )
        assert got.mean == pytest.approx(want[5])
    assert result.points[: len(expected)] == [(a.ts, a.mean) for a in result.aggregates]
    assert result.to_dict()["tiers"] == result.tiers

    # A range inside one tier says so; limit keeps the oldest points.
    inside = await tiers.query("plc/temp", D0 + 2 * DAY + HOUR, D0 + 2 * DAY + 2 * HOUR)
    assert inside.tiers == ["warm"] and len(inside.points) == 61
    assert (await tiers.query("plc/temp", limit=3)).points == result.points[:3]
    # Hourly means across every tier.
    hourly = await tiers.query("plc/temp", resolution=HOUR)
    assert len(hourly.points) == 4 * 24 and hourly.resolution == HOUR
    for agg in hourly.aggregates:
        values = [s.value for s in temp if agg.ts <= s.ts < agg.ts + HOUR]
        assert agg.count == len(values) and agg.mean == pytest.approx(sum(values) / len(values))
    # Strings have no numeric aggregates but keep their counts.
    state = await tiers.query("plc/state", D0, D0 + DAY - 1)
    assert state.tiers == ["archive"] and sum(a.count for a in state.aggregates) == 48
    assert all(math.isnan(a.mean) for a in state.aggregates)
    assert (await tiers.query("no/such")).points == []

    figures = tiers.figures()
    assert figures is not None
    for tier in ("hot", "warm", "cold", "archive"):
        assert figures[tier]["samples"] == c.per_tier[tier] and figures[tier]["bytes"] > 0
    assert figures["warm"]["bytes_per_sample"] < figures["hot"]["bytes_per_sample"]
    await tiers.close()
    await store.close()


async def test_without_archive_expired_cold_data_is_deleted(tmp_path: Path) -> None:
    store, tiers, data, _ = await _four_tiers(tmp_path, archive=False)
    assert not (tmp_path / "archive").exists()
    c = census(tmp_path / "edgeopt.db", None)
    assert set(c.per_tier) == {"hot", "warm", "cold"}
    result = await tiers.query("plc/temp")
    assert result.tiers == ["hot", "warm", "cold"]
    assert result.points[0][0] == D0 + DAY  # day 0 is gone
    assert c.total("plc/temp") == len(data["plc/temp"]) - 1440
    await tiers.close()
    await store.close()


# --- budget, deferral, failures ------------------------------------------------------------


async def test_over_budget_compacts_then_drops_the_oldest_cold_data_and_says_so(
    tmp_path: Path,
) -> None:
    store, tiers, data, events = await _four_tiers(tmp_path, archive=True)
    await tiers.close()
    archived_before = census(tmp_path / "edgeopt.db", tmp_path / "archive").per_tier["archive"]
    events_before = len(events.recent())
    # A budget no database can meet: every step of the cascade runs.
    budget = 8192
    clock = VirtualClock(D0 + 4 * DAY + HOUR)
    tiers = tiers_for(
        store, clock, tmp_path, max_disk=budget, cold_retention=365 * DAY, emit=events.emit
    )
    report = await tiers.run_lifecycle()
    assert report.over_budget and report.compacted and report.errors == []
    # Compaction gave the freed pages back to the filesystem (auto-vacuum) ...
    assert (await tiers.disk_usage()).free_pages == 0
    assert report.hot_to_warm > 0  # ... encoded the hot tier early (lossless) ...
    assert report.archived_samples > 0  # ... then the oldest cold data went to the archive
    kinds = [e.kind for e in events.recent()[events_before:]]
    assert kinds == ["storage_over_budget", "storage_budget_dropped"]
    assert events.recent()[-1].data["archived_samples"] == report.archived_samples
    # Archiving is on, so nothing is lost: only older data moved further out.
    c = census(tmp_path / "edgeopt.db", tmp_path / "archive")
    assert_each_sample_once(c, {tag: [s.ts for s in v] for tag, v in data.items()})
    assert c.per_tier["archive"] > archived_before and c.per_tier["cold"] == 0
    # Everything before today was aggregated early and exported; acquisition goes on.
    assert (await tiers.query("plc/temp")).tiers == ["archive"]
    await write(store, minutes("plc/temp", D0 + 5 * DAY, 10))
    # Still over on the next run: no second over-budget event (logged on change).
    await tiers.run_lifecycle()
    assert [e.kind for e in events.recent()[events_before:]].count("storage_over_budget") == 1
    await tiers.close()
    await store.close()


async def test_deferred_runs_skip_encoding_but_still_expire_cold_data(tmp_path: Path) -> None:
    db = tmp_path / "edgeopt.db"
    clock = VirtualClock(D0)
    store = await open_store(db, clock)
    await write(store, minutes("d/t", D0, 3 * 1440))
    tiers = tiers_for(
        store, clock, tmp_path, hot_retention=HOUR, warm_retention=DAY, cold_retention=2 * DAY
    )
    clock.advance(2 * DAY + 2 * HOUR)
    await tiers.run_lifecycle()  # day 0 → cold
    clock.advance(DAY)
    report = await tiers.run_lifecycle(defer=True)
    assert report.deferred and report.hot_to_warm == 0 and report.warm_to_cold == 0
    assert report.archived_blocks == 1  # day 0 expired: cheap, done anyway
    report = await tiers.run_lifecycle()
    assert report.hot_to_warm > 0 and report.warm_to_cold > 0
    await tiers.close()
    await store.close()


async def _fill_to_the_brim(store: HotStore) -> None:
    conn = store.connection
    await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    [(pages,)] = await conn.execute_fetchall("PRAGMA page_count")
    # The file may not grow by a single page: SQLite reports SQLITE_FULL for real.
    await conn.execute(f"PRAGMA max_page_count = {pages}")


async def test_tier_moves_on_a_full_disk_roll_back_lose_nothing_and_resume(tmp_path: Path) -> None:
    db = tmp_path / "edgeopt.db"
    clock = VirtualClock(D0)
    store = await open_store(db, clock)
    rng = random.Random(1)
    # Ten tags interleaved in every page, random values: deleting one tag's
    # rows frees no page, and its chunk needs new ones.
    written = [
        Sample(f"d/t{k}", D0 + i, rng.random(), "good") for i in range(3600) for k in range(10)
    ]
    await write(store, written)
    events = EventLog()
    tiers = tiers_for(store, clock, tmp_path, hot_retention=60.0, emit=events.emit)
    await _fill_to_the_brim(store)
    late = [Sample("d/new", D0 + 4000 + i, float(i), "good") for i in range(2000)]
    store.extend(late)
    assert await store.flush() == 0 and store.status().state == "degraded"
    clock.advance(2 * HOUR)
    report = await tiers.run_lifecycle()
    assert report.errors and "full" in report.errors[0]
    assert [e.kind for e in events.recent()] == ["storage_lifecycle_failed"]
    expected = {f"d/t{k}": [D0 + i for i in range(3600)] for k in range(10)}
    assert_each_sample_once(census(db, tmp_path / "archive"), expected)
    assert len((await tiers.query("d/new")).points) == 2000  # buffered, still visible

    await store.connection.execute("PRAGMA max_page_count = 1000000000")  # space is back
    assert await store.flush() == 2000
    report = await tiers.run_lifecycle()
    assert report.errors == [] and report.hot_to_warm == 36000
    assert [e.kind for e in events.recent()][-1] == "storage_lifecycle_recovered"
    expected["d/new"] = [s.ts for s in late]
    assert_each_sample_once(census(db, tmp_path / "archive"), expected)
    await tiers.close()
    await store.close()


async def test_on_a_full_disk_a_move_that_frees_its_own_pages_still_goes_through(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edgeopt.db"
    clock = VirtualClock(D0)
    store = await open_store(db, clock)
    samples = [Sample("d/one", D0 + i, round(20 + i % 50 / 10, 1), "good") for i in range(3 * 3600)]
    await write(store, samples)
    await _fill_to_the_brim(store)
    tiers = tiers_for(store, clock, tmp_path, hot_retention=HOUR)
    clock.advance(3 * HOUR)
    # Rows are deleted before the chunk is inserted, in one transaction: the
    # freed pages hold the far smaller chunk, so a full disk gets room back.
    report = await tiers.run_lifecycle()
    assert report.errors == [] and report.hot_to_warm == 2 * 3600
    assert_each_sample_once(census(db, None), {"d/one": [s.ts for s in samples]})
    await tiers.close()
    await store.close()


async def test_flushes_interleave_with_a_lifecycle_run(tmp_path: Path) -> None:
    db = tmp_path / "edgeopt.db"
    clock = VirtualClock(D0)
    store = await open_store(db, clock)
    old = [
        Sample(f"d/t{k}", D0 + i * 5, float(i % 100), "good")
        for i in range(2000)
        for k in range(20)
    ]
    await write(store, old)
    tiers = tiers_for(store, clock, tmp_path, hot_retention=HOUR)
    clock.advance(DAY)
    new = [Sample(f"d/t{k}", D0 + DAY + i, float(i), "good") for i in range(500) for k in range(20)]

    async def keep_polling() -> int:
        flushed = 0
        for i in range(0, len(new), 100):
            store.extend(new[i : i + 100])
            flushed += await store.flush()
            await asyncio.sleep(0)
        return flushed

    report, flushed = await asyncio.gather(tiers.run_lifecycle(), keep_polling())
    assert report.errors == [] and flushed == len(new)
    expected = {f"d/t{k}": [] for k in range(20)}  # type: dict[str, list[float]]
    for s in old + new:
        expected[s.tag].append(s.ts)
    assert_each_sample_once(census(db, None), expected)
    await tiers.close()
    await store.close()


# --- the codec worker -------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def test_importing_storage_leaves_numpy_out_until_a_codec_name_is_used() -> None:
    code = (
        "import sys\n"
        "import edgeopt.storage, edgeopt.storage.tiers, edgeopt.storage.hot\n"
        "print('numpy' in sys.modules)\n"
        "from edgeopt.storage import CodecError, Rows, decode_aggregates, decode_samples\n"
        "print('numpy' in sys.modules, Rows.__module__, CodecError.__module__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True
    )
    assert out.stdout.split("\n")[:2] == [
        "False",
        "True edgeopt.storage.chunks edgeopt.storage.codecs",
    ]


def test_moves_and_queries_do_their_numpy_work_in_the_codec_worker(tmp_path: Path) -> None:
    # A process that imports nothing but what the daemon does (not this test's numpy).
    done = subprocess.run(
        [sys.executable, str(CODEC_PROC), str(tmp_path / "edgeopt.db"), str(tmp_path / "archive")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=True,
    )
    out = json.loads(done.stdout)
    assert out["numpy"] is False
    assert out["worker_pid"] not in (None, out["pid"]) and "numpy" in out["worker_modules"]
    assert out["worker_after_close"] is None  # closed with the tier manager
    report = out["report"]
    assert report["errors"] == []
    assert report["hot_to_warm"] > 0 and report["warm_to_cold"] > 0 and report["archived_blocks"]
    raw, hourly = out["raw"], out["hourly"]
    assert raw["tiers"] == hourly["tiers"] == ["hot", "warm", "cold", "archive"]
    temp = [round(20 + 5 * math.sin(i / 30), 1) for i in range(4 * 1440)]
    # Raw where raw exists (days 2 and 3), 10 min means beyond (days 0 and 1).
    assert [v for _, v in raw["points"][2 * 144 :]] == temp[2 * 1440 :]
    assert raw["points"][0] == [D0, pytest.approx(sum(temp[:10]) / 10)]
    assert len(hourly["points"]) == 4 * 24
    assert hourly["points"][-1] == [D0 + 4 * DAY - HOUR, pytest.approx(sum(temp[-60:]) / 60)]


async def test_a_codec_worker_killed_mid_move_loses_nothing_and_the_next_run_moves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "edgeopt.db"
    clock = VirtualClock(D0)
    store = await open_store(db, clock)
    rng = random.Random(3)
    written = [
        Sample(f"d/t{k}", D0 + i, rng.random(), "good") for i in range(3600) for k in range(6)
    ]
    await write(store, written)
    events = EventLog()
    tiers = tiers_for(store, clock, tmp_path, hot_retention=60.0, emit=events.emit)
    receive = WorkerProcess._receive
    killed: list[int] = []

    async def kill_mid_move(self: WorkerProcess, proc: asyncio.subprocess.Process) -> bytes:
        if not killed:  # the first move's rows are sent: the worker dies before it answers
            killed.append(proc.pid)
            proc.kill()
            await proc.wait()
        return await receive(self, proc)

    monkeypatch.setattr(WorkerProcess, "_receive", kill_mid_move)
    clock.advance(2 * HOUR)
    report = await tiers.run_lifecycle()
    assert killed and report.hot_to_warm == 0
    assert len(report.errors) == 1 and report.errors[0].startswith("hot → warm: WorkerDied:")
    assert "killed by signal 9" in report.errors[0]
    assert [e.kind for e in events.recent()] == ["storage_lifecycle_failed"]
    expected = {f"d/t{k}": [D0 + i for i in range(3600)] for k in range(6)}
    c = census(db, tmp_path / "archive")
    assert_each_sample_once(c, expected)
    assert set(c.per_tier) == {"hot"}  # the move rolled back
    report = await tiers.run_lifecycle()
    assert report.errors == [] and report.hot_to_warm == len(written)
    assert tiers.codec_worker.pid not in (None, killed[0])
    assert [e.kind for e in events.recent()][-1] == "storage_lifecycle_recovered"
    c = census(db, tmp_path / "archive")
    assert_each_sample_once(c, expected)
    assert set(c.per_tier) == {"warm"}
    await tiers.close()
    await store.close()


async def test_a_codec_worker_that_cannot_start_fails_the_run_clearly_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "edgeopt.db"
    clock = VirtualClock(D0)
    store = await open_store(db, clock)
    samples = minutes("d/t", D0, 180)
    await write(store, samples)
    tiers = tiers_for(store, clock, tmp_path, hot_retention=HOUR)
    clock.advance(4 * HOUR)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))  # exec fails
    with caplog.at_level(logging.WARNING, logger="edgeopt.storage.tiers"):
        report = await tiers.run_lifecycle()
    assert report.hot_to_warm == 0 and len(report.errors) == 1
    assert report.errors[0].startswith(
        "hot → warm: WorkerStartFailed: cannot start the storage codec worker"
    )
    assert "no-such-python" in caplog.text and "will retry on the next run" in caplog.text
    assert census(db, None).per_tier == {"hot": 180}
    with pytest.raises(WorkerStartFailed):  # a query that needs the worker says so too
        await tiers.query("d/t", resolution=HOUR)
    monkeypatch.undo()
    report = await tiers.run_lifecycle()
    assert report.errors == [] and report.hot_to_warm == 180
    assert_each_sample_once(census(db, None), {"d/t": [s.ts for s in samples]})
    await tiers.close()
    await store.close()


async def test_a_chunk_the_codec_worker_cannot_decode_fails_its_move_and_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "edgeopt.db"
    clock = VirtualClock(D0)
    store = await open_store(db, clock)
    await write(store, minutes("d/bad", D0, 1440) + minutes("d/good", D0, 1440))
    tiers = tiers_for(store, clock, tmp_path, hot_retention=HOUR, warm_retention=DAY)
    clock.advance(DAY + HOUR)
    assert (await tiers.run_lifecycle()).hot_to_warm == 2 * 1440
    await store.connection.execute(
        "UPDATE chunks SET blob = substr(blob, 1, 12) WHERE id = (SELECT MIN(c.id) FROM chunks c "
        "JOIN tags t ON t.id = c.tag_id WHERE t.name = 'd/bad')"
    )
    await store.connection.commit()
    clock.advance(DAY)
    with caplog.at_level(logging.ERROR, logger="edgeopt.storage.tiers"):
        report = await tiers.run_lifecycle()
    assert len(report.errors) == 1 and report.errors[0].startswith("warm → cold: WorkerFailed:")
    assert "CodecError" in report.errors[0]
    assert "Traceback" in caplog.text and "decode_samples" in caplog.text
    assert report.warm_to_cold == 0  # the move rolled back, and the phase stopped there
    conn = sqlite3.connect(db)
    tables = {
        table: dict(
            conn.execute(
                f"SELECT t.name, SUM(x.count) FROM {table} x JOIN tags t ON t.id = x.tag_id "
                "GROUP BY t.name"
            ).fetchall()
        )
        for table in ("chunks", "cold")
    }
    conn.close()
    assert tables == {"chunks": {"d/bad": 1440, "d/good": 1440}, "cold": {}}
    await tiers.close()
    await store.close()


async def test_the_codec_worker_starts_only_for_encoded_data_and_stops_when_idle_or_closed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edgeopt.db"
    clock = VirtualClock(D0)
    store = await open_store(db, clock)
    await write(store, minutes("d/t", D0, 180))
    tiers = tiers_for(store, clock, tmp_path, hot_retention=HOUR, codec_idle_exit=0.5)
    worker = tiers.codec_worker
    # A range of hot rows alone is answered without the worker.
    assert len((await tiers.query("d/t")).points) == 180 and not worker.started
    clock.advance(2 * HOUR + 1)
    report = await tiers.run_lifecycle()
    assert report.chunks_written == 1 and worker.started
    pid = worker.pid
    await asyncio.sleep(1.0)
    assert not worker.started  # idle: stopped, its memory given back
    result = await tiers.query("d/t")
    assert result.tiers == ["hot", "warm"] and len(result.points) == 180
    assert worker.started and worker.pid != pid
    await tiers.close()
    assert not worker.started
    assert psutil.Process().children(recursive=True) == []
    await store.close()


# --- kill -9 during migration -------------------------------------------------------------------


def test_kill_9_during_tier_moves_leaves_every_sample_in_exactly_one_tier(tmp_path: Path) -> None:
    db = tmp_path / "edgeopt.db"
    archive_dir = tmp_path / "archive"
    written = {f"crash/t{k}": [D0 + i * 60.0 for i in range(30 * 60)] for k in range(12)}

    async def prepare() -> None:
        store = await HotStore.open(
            db, clock=VirtualClock(D0), flush_rows=100_000, max_buffer=10**6
        )
        await write(
            store,
            [
                Sample(tag, ts, round(ts % 997 / 10, 1), "good")
                for tag, stamps in written.items()
                for ts in stamps
            ],
        )
        await store.close()

    asyncio.run(prepare())
    env = _env()
    rng = random.Random(7)
    step = 1800.0
    kills = 0
    for i in range(8):
        # Each process covers 5 h of virtual time, 7 h after the previous one
        # started: hot → warm all along, warm → cold of day 0 from 30 h, its
        # archiving from 36 h. A killed process's leftovers are the next one's.
        start = D0 + 3 * HOUR + i * 7 * HOUR
        proc = subprocess.Popen(
            [sys.executable, str(PROC), str(db), str(archive_dir), str(start), str(step), "10"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # imports done, store open: moves start now
        assert ready.startswith("ready"), proc.stderr.read() if proc.stderr else ""
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        assert_each_sample_once(census(db, archive_dir), written)
    assert kills >= 6
    # A last run to the end: everything ends up in the archive, once.
    done = subprocess.run(
        [sys.executable, str(PROC), str(db), str(archive_dir), str(D0 + 60 * HOUR), str(step), "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert done.stdout.rstrip().endswith("done")
    final = census(db, archive_dir)
    assert_each_sample_once(final, written)
    assert set(final.per_tier) == {"archive"}


# --- configuration --------------------------------------------------------------------------


async def test_from_config_follows_the_storage_section(tmp_path: Path) -> None:
    from edgeopt.config.model import StorageConfig, TagConfig

    store = await open_store(tmp_path / "edgeopt.db", VirtualClock(D0))
    on = TierManager.from_config(
        store, StorageConfig(max_disk=10**9), clock=VirtualClock(D0), state_dir=tmp_path
    )
    off = TierManager.from_config(
        store, StorageConfig(archive=False), clock=VirtualClock(D0), state_dir=tmp_path
    )
    _OPEN.extend([on, off])
    assert on.archive_dir == tmp_path / "archive" and off.archive_dir is None
    assert StorageConfig().lifecycle_interval == 600.0
    tag = TagConfig.model_validate(
        {
            "name": "t",
            "table": "input",
            "address": 0,
            "type": "float32",
            "compression_deviation": 0.5,
        }
    )
    assert tag.compression_deviation == 0.5
    with pytest.raises(ValueError, match="only used by numeric types"):
        TagConfig.model_validate(
            {"name": "b", "table": "coil", "address": 0, "compression_deviation": 0.5}
        )
