"""Storage tier lifecycle: hot → warm → cold → archive, the disk budget, figures and queries.

`TierManager.run_lifecycle()` is the maintenance job (the daemon schedules it):

1. hot → warm: raw rows older than `hot_retention` become one compressed
   chunk per tag and aligned hour (`edgeopt.storage.chunks`), optionally
   thinned by swinging-door compression for tags with a `compression_deviation`;
2. warm → cold: chunks older than `warm_retention` become per-bucket
   aggregates (`cold_resolution`), one block per tag and UTC day;
3. cold → archive: blocks older than `cold_retention` go to a file per month
   under `archive/` (`edgeopt.storage.archive`), or are deleted when
   archiving is off;
4. the disk budget (`max_disk`): over it, compact first, then drop (export)
   the oldest cold data, and raise an event. Acquisition never stops.

Every move is one small transaction through `HotStore.transaction()` (so it
never interleaves with a flush): read one tag-hour (or tag-day), encode it in
a worker thread, delete the source rows and insert the chunk, commit, then
yield to the event loop. Source and destination change in the same commit,
so a kill -9 at any moment leaves each sample in exactly one tier. The delete
comes before the insert: on a full disk the pages it frees can hold the
(smaller) chunk. A failed move (SQLITE_FULL, I/O error) rolls back, is
reported, and is retried on the next run.

Archive moves span two files, so they are two commits: the block is written
to the archive file (fsync'd) before it is deleted here. A crash in between
leaves it in both; queries count it once (blocks keep their id), and the next
run finishes the move.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiosqlite
import numpy as np

from edgeopt.clock import Clock
from edgeopt.storage import archive
from edgeopt.storage.aggregates import aggregate
from edgeopt.storage.chunks import (
    ALL_COMPRESSORS,
    Encoded,
    Rows,
    decode_samples,
    encode_aggregates,
    encode_samples,
)
from edgeopt.storage.codecs import Compressor
from edgeopt.storage.hot import HotStore
from edgeopt.storage.query import QueryResult, build_result, read_tiers
from edgeopt.storage.schema import ValueKind, bucket_of
from edgeopt.storage.swinging_door import keep_mask

if TYPE_CHECKING:
    from edgeopt.config.model import StorageConfig

log = logging.getLogger(__name__)

#: Width of a warm chunk's time window: an aligned hour. A chunk never spans
#: two windows, which bounds how far back a query looks for chunks reaching
#: into its range. Part of the on-disk layout (queries rely on it).
CHUNK_SECONDS = 3600.0
#: Most samples in one chunk (one transaction). A tag polled at 10 Hz makes
#: 36k samples an hour; cutting at 8192 keeps each move's transaction and
#: decode buffer small, while compression has long gained what it can
#: (the ratio barely improves beyond a few thousand samples).
MAX_CHUNK_SAMPLES = 8192
#: Width of a cold block: an aligned UTC day (also part of the layout).
COLD_BLOCK_SECONDS = 86400.0
#: Cold blocks exported or deleted per transaction (a month of one tag is 31).
BLOCK_BATCH = 256
#: Pages given back per `PRAGMA incremental_vacuum` step (4 MiB of 4 KiB pages).
VACUUM_STEP = 1024
#: Compaction under the disk budget moves hot data to the warm tier early, but
#: keeps the newest hour raw.
EARLY_HOT_KEEP = CHUNK_SECONDS

#: Up to this database size, figures are measured after every lifecycle run;
#: beyond it at most every FIGURES_BIG_EVERY seconds (a measurement reads every page).
FIGURES_SCAN_BYTES = 256 * 2**20
FIGURES_BIG_EVERY = 3600.0

#: `emit(ts, kind, message, **data)`, e.g. `EventLog.emit`.
Emit = Callable[..., object]


class StorageInvariantError(RuntimeError):
    """Raised when a tier move would not delete exactly the rows it encoded.

    The transaction rolls back; nothing is lost. It means another writer
    bypassed `HotStore.transaction()`, or a bug.
    """


@dataclass(slots=True)
class LifecycleReport:
    """What one `run_lifecycle()` did, for logs, events and tests."""

    started: float  # clock.now() at the start
    deferred: bool  # compaction (encoding, vacuum) was postponed
    duration_s: float = 0.0
    hot_to_warm: int = 0  # samples that left the hot tier
    chunks_written: int = 0
    swinging_door_dropped: int = 0  # samples lossy compression left out
    warm_to_cold: int = 0  # samples that left the warm tier for aggregates
    cold_blocks_written: int = 0
    archived_blocks: int = 0
    archived_samples: int = 0
    deleted_blocks: int = 0  # cold blocks deleted (archive off, or the budget)
    deleted_samples: int = 0
    compacted: bool = False
    over_budget: bool = False
    disk_bytes: int | None = None  # live database bytes + WAL after the run
    incomplete: bool = False  # the time budget ran out; the next run goes on
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """The state database's size: live pages, free pages, WAL."""

    page_size: int
    pages: int
    free_pages: int
    wal_bytes: int

    @property
    def live_bytes(self) -> int:
        return (self.pages - self.free_pages) * self.page_size

    @property
    def file_bytes(self) -> int:
        return self.pages * self.page_size

    @property
    def budget_bytes(self) -> int:
        """What `max_disk` is compared with: live pages plus the WAL.

        Free pages are not counted: SQLite reuses them before growing the
        file, and without auto-vacuum they cannot be given back anyway, so
        counting them would drop data for no gain.
        """
        return self.live_bytes + self.wal_bytes


@dataclass(frozen=True, slots=True)
class TierFigures:
    """Bytes and samples per tier (see `TierManager.figures`)."""

    updated: float
    hot_bytes: int
    hot_samples: int
    warm_bytes: int
    warm_samples: int
    warm_chunks: int
    cold_bytes: int
    cold_samples: int  # raw samples the aggregates stand for
    cold_buckets: int
    cold_blocks: int
    archive_bytes: int
    archive_samples: int
    archive_files: int
    archive_blocks: int
    disk: DiskUsage
    max_disk: int | None
    codecs: dict[str, dict[str, int]]  # warm chunks by codec: chunks, samples, bytes
    exact: bool  # bytes per tier from SQLite's dbstat; False: estimated from blob sizes

    def to_dict(self) -> dict[str, Any]:
        """For `status` and the `edgeopt_storage_bytes{tier}` / `_samples{tier}` metrics."""
        hot_bps = _per(self.hot_bytes, self.hot_samples)
        warm_bps = _per(self.warm_bytes, self.warm_samples)
        return {
            "hot": {
                "bytes": self.hot_bytes,
                "samples": self.hot_samples,
                "bytes_per_sample": hot_bps,
            },
            "warm": {
                "bytes": self.warm_bytes,
                "samples": self.warm_samples,
                "chunks": self.warm_chunks,
                "bytes_per_sample": warm_bps,
                # How much smaller a sample gets when it leaves the hot tier.
                "compression_ratio": _ratio(hot_bps, warm_bps),
                # Against a raw (float64 ts, float64 value) pair, the reference
                # of the Gorilla paper's 1.37 B/point.
                "ratio_vs_16_bytes": _ratio(16.0, warm_bps),
                "codecs": self.codecs,
            },
            "cold": {
                "bytes": self.cold_bytes,
                "samples": self.cold_samples,
                "buckets": self.cold_buckets,
                "blocks": self.cold_blocks,
                "bytes_per_sample": _per(self.cold_bytes, self.cold_samples),
                "bytes_per_bucket": _per(self.cold_bytes, self.cold_buckets),
            },
            "archive": {
                "bytes": self.archive_bytes,
                "samples": self.archive_samples,
                "files": self.archive_files,
                "blocks": self.archive_blocks,
            },
            "disk": {
                "file_bytes": self.disk.file_bytes,
                "live_bytes": self.disk.live_bytes,
                "wal_bytes": self.disk.wal_bytes,
                "max_disk": self.max_disk,
            },
            "exact": self.exact,
            "updated": self.updated,
        }


def _per(num: int, den: int) -> float | None:
    return round(num / den, 3) if den else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


# --- SQL -------------------------------------------------------------------------

# One tag's rows in a time window: walk the window's buckets and seek
# (bucket, tag_id) in each, as the hot tier's own query does.
_READ_HOT = """
WITH RECURSIVE b(k) AS (SELECT ?1 UNION ALL SELECT k + 1 FROM b WHERE k < ?2)
SELECT s.ts, s.value, s.quality, s.kind
FROM b CROSS JOIN samples AS s ON s.bucket = b.k AND s.tag_id = ?3
WHERE s.ts >= ?4 AND s.ts < ?5
ORDER BY s.ts
LIMIT ?6
"""
_DELETE_HOT = """
WITH RECURSIVE b(k) AS (SELECT ?1 UNION ALL SELECT k + 1 FROM b WHERE k < ?2)
DELETE FROM samples
WHERE bucket IN (SELECT k FROM b) AND tag_id = ?3 AND ts >= ?4 AND ts <= ?5
"""
_OLDEST_HOT = "SELECT MIN(ts) FROM samples WHERE bucket = (SELECT MIN(bucket) FROM samples)"
_HOT_TAGS = (
    "SELECT DISTINCT tag_id FROM samples "
    "WHERE bucket >= ? AND bucket <= ? AND ts >= ? AND ts < ? ORDER BY tag_id"
)
_INSERT_CHUNK = (
    "INSERT INTO chunks (tag_id, start_ts, end_ts, count, codec, blob) VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_COLD = (
    "INSERT INTO cold (tag_id, start_ts, end_ts, count, buckets, resolution, codec, blob) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_BLOCKS = (
    "SELECT c.id, c.tag_id, COALESCE(t.name, 'tag#' || c.tag_id), c.start_ts, c.end_ts, "
    "c.count, c.buckets, c.resolution, c.codec, c.blob "
    "FROM cold AS c LEFT JOIN tags AS t ON t.id = c.tag_id "
    "WHERE c.end_ts <= ? ORDER BY c.start_ts, c.id LIMIT ?"
)


class TierManager:
    """Moves data between the storage tiers, enforces the disk budget, and answers queries.

    It shares the hot store's connection for writes (through
    `HotStore.transaction()`) and opens its own read-only connection for
    queries and figures, so reads never wait behind a move.
    """

    def __init__(
        self,
        store: HotStore,
        *,
        clock: Clock,
        hot_retention: float = 86400.0,
        warm_retention: float = 30 * 86400.0,
        cold_retention: float = 365 * 86400.0,
        cold_resolution: float = 60.0,
        archive_dir: Path | None = None,
        max_disk: int | None = None,
        emit: Emit | None = None,
        deviations: Mapping[str, float] | None = None,
        compressors: Sequence[Compressor] = ALL_COMPRESSORS,
    ) -> None:
        """Wire the tiers to an open `HotStore`.

        Args:
            store: the open hot store; its database holds every tier but the archive.
            clock: where "now" comes from (retention ages).
            hot_retention: seconds raw rows stay in the hot tier.
            warm_retention: seconds (from the sample's ts) data stays raw, in hot or warm.
            cold_retention: seconds data stays in the database at all.
            cold_resolution: bucket width of the cold aggregates, seconds.
            archive_dir: where monthly archive files go; None: data past
                `cold_retention` is deleted (`storage.archive: false`).
            max_disk: budget for the database (live pages + WAL), bytes; None: none.
            emit: called as `emit(ts, kind, message, **data)` for operator events.
            deviations: swinging-door `compression_deviation` by tag name
                ("DEVICE/NAME"); tags not listed stay lossless.
            compressors: the compressors each chunk may choose from.
        """
        for name, value in (
            ("hot_retention", hot_retention),
            ("warm_retention", warm_retention),
            ("cold_retention", cold_retention),
            ("cold_resolution", cold_resolution),
        ):
            if not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        if max_disk is not None and max_disk <= 0:
            raise ValueError(f"max_disk must be a positive number of bytes, got {max_disk}")
        if not compressors:
            raise ValueError("compressors must name at least one compressor")
        self._store = store
        self._clock = clock
        self._hot_retention = hot_retention
        self._warm_retention = warm_retention
        self._cold_retention = cold_retention
        self._cold_resolution = cold_resolution
        self._archive_dir = archive_dir
        self._max_disk = max_disk
        self._emit = emit
        self._compressors = tuple(compressors)
        self._deviations: dict[str, float] = {}
        self.set_deviations(deviations or {})
        self._tag_names: dict[int, str] = {}

        # One lifecycle run at a time (an overrunning scheduler job must not
        # start a second one next to it).
        self._run_lock = asyncio.Lock()
        # The read-only connection, used from worker threads one at a time.
        self._reader_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._closed = False
        self._failing = False  # a lifecycle phase failed on the last run (events on change)
        self._over_budget = False
        if archive_dir is not None:
            archive.clean_leftovers(archive_dir)  # at start: what a crash mid-write left
        self._figures: TierFigures | None = None
        # Keep the hot sample count live between measurements (which may be an
        # hour apart): the rows committed and moved to warm since the last one.
        self._written_at_measure = 0
        self._moved_since_measure = 0

    @classmethod
    def from_config(
        cls,
        store: HotStore,
        config: StorageConfig,
        *,
        clock: Clock,
        state_dir: Path,
        emit: Emit | None = None,
        deviations: Mapping[str, float] | None = None,
    ) -> TierManager:
        """A manager for the `storage:` section of the config (archive under `state_dir`)."""
        return cls(
            store,
            clock=clock,
            hot_retention=config.hot_retention,
            warm_retention=config.warm_retention,
            cold_retention=config.cold_retention,
            cold_resolution=config.cold_resolution,
            archive_dir=Path(state_dir) / "archive" if config.archive else None,
            max_disk=config.max_disk,
            emit=emit,
            deviations=deviations,
        )

    async def __aenter__(self) -> TierManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Wait for a lifecycle run in progress, then close the read connection. Idempotent."""
        async with self._run_lock:
            self._closed = True
            await asyncio.to_thread(self._close_reader)

    def _close_reader(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def set_deviations(self, deviations: Mapping[str, float]) -> None:
        """Replace the swinging-door deviations by tag name (e.g. on config reload)."""
        for tag, deviation in deviations.items():
            if not deviation > 0 or not math.isfinite(deviation):
                raise ValueError(f"compression_deviation of {tag} must be > 0, got {deviation}")
        self._deviations = dict(deviations)

    @property
    def archive_dir(self) -> Path | None:
        return self._archive_dir

    # --- The lifecycle job ---------------------------------------------------------

    async def run_lifecycle(
        self, *, defer: bool = False, time_budget: float | None = None
    ) -> LifecycleReport:
        """Move what is due between tiers and enforce the disk budget; never raises on I/O.

        Args:
            defer: postpone compaction (resource pressure): skip the CPU-heavy
                encoding moves (hot → warm, warm → cold) and vacuuming. Cheap
                work still runs: archiving or deleting expired cold data and
                dropping cold data over the disk budget.
            time_budget: stop starting new moves after this many seconds (of
                `clock.monotonic()`); the report says `incomplete`.
        """
        async with self._run_lock:
            if self._closed:
                raise RuntimeError("the tier manager is closed")
            now = self._clock.now()
            started = self._clock.monotonic()
            deadline = None if time_budget is None else started + time_budget
            report = LifecycleReport(started=now, deferred=defer)
            phases: list[tuple[str, Callable[[], Any]]] = []
            if not defer:
                phases.append(
                    (
                        "hot → warm",
                        lambda: self._hot_to_warm(now - self._hot_retention, report, deadline),
                    )
                )
                phases.append(
                    (
                        "warm → cold",
                        lambda: self._warm_to_cold(now - self._warm_retention, report, deadline),
                    )
                )
            phases.append(
                (
                    "cold → archive",
                    lambda: self._expire_cold(now - self._cold_retention, report, deadline),
                )
            )
            phases.append(
                ("disk budget", lambda: self._enforce_budget(now, report, deadline, defer))
            )
            for name, phase in phases:
                try:
                    await phase()
                except (sqlite3.Error, OSError, StorageInvariantError) as exc:
                    report.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                except (ValueError, TypeError) as exc:
                    # Data a codec refuses (CodecError is a ValueError): a bug,
                    # but it must not stop the other phases or the next runs.
                    log.exception("storage %s failed on data it cannot encode", name)
                    report.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            self._after_run(report, now)
            self._moved_since_measure += report.hot_to_warm
            if self._figures_due(now):
                try:
                    await self.refresh_figures()
                except sqlite3.Error as exc:
                    log.warning("storage figures not refreshed: %s", exc)
            report.duration_s = self._clock.monotonic() - started
            return report

    def _figures_due(self, now: float) -> bool:
        # Measuring reads every page (dbstat) and counts the hot rows: after
        # each run while the database is small, at most hourly once it is big.
        last = self._figures
        if last is None or last.disk.file_bytes <= FIGURES_SCAN_BYTES:
            return True
        return now - last.updated >= FIGURES_BIG_EVERY

    def _after_run(self, report: LifecycleReport, now: float) -> None:
        if report.errors and not self._failing:
            self._failing = True
            log.warning(
                "storage lifecycle failed, will retry on the next run (nothing is lost; "
                "data stays in its tier): %s",
                "; ".join(report.errors),
            )
            self._event(
                now,
                "storage_lifecycle_failed",
                "storage tier moves failed: " + "; ".join(report.errors),
                errors=list(report.errors),
            )
        elif not report.errors and self._failing:
            self._failing = False
            log.info("storage lifecycle recovered")
            self._event(now, "storage_lifecycle_recovered", "storage tier moves work again")

    def _event(self, ts: float, kind: str, message: str, **data: Any) -> None:
        if self._emit is None:
            return
        try:
            self._emit(ts, kind, message, **data)
        except Exception:  # an event sink must not break storage maintenance
            log.exception("storage event listener failed on %s", kind)

    def _out_of_time(self, deadline: float | None, report: LifecycleReport) -> bool:
        if deadline is not None and self._clock.monotonic() >= deadline:
            report.incomplete = True
            return True
        return False

    # --- hot → warm -------------------------------------------------------------------

    async def _oldest_window(
        self, oldest_sql: str, span: float, cutoff: float, seen: dict[float, int], what: str
    ) -> float | None:
        """Start of the oldest complete `span` window ending by `cutoff`, or None.

        `oldest_sql` selects the oldest timestamp of the source tier. A window
        still oldest after two passes is stuck (a bug, or rows our read cannot
        see): raise instead of spinning.
        """
        rows = list(await self._store.connection.execute_fetchall(oldest_sql))
        oldest = rows[0][0] if rows else None
        if oldest is None:
            return None
        window = math.floor(float(oldest) / span) * span
        if window + span > cutoff:
            return None
        seen[window] = seen.get(window, 0) + 1
        if seen[window] > 2:
            raise StorageInvariantError(f"{what} in the window at {window} do not move")
        return window

    async def _hot_to_warm(
        self, cutoff: float, report: LifecycleReport, deadline: float | None
    ) -> None:
        """Chunk every complete hour window that ends at or before `cutoff`, oldest first."""
        conn = self._store.connection
        seen: dict[float, int] = {}
        while not self._out_of_time(deadline, report):
            window = await self._oldest_window(_OLDEST_HOT, CHUNK_SECONDS, cutoff, seen, "hot rows")
            if window is None:
                return
            end = window + CHUNK_SECONDS
            tags = await conn.execute_fetchall(
                _HOT_TAGS, (bucket_of(window), bucket_of(end), window, end)
            )
            for (tag_id,) in tags:
                while await self._move_hot_rows(int(tag_id), window, report) >= MAX_CHUNK_SAMPLES:
                    if self._out_of_time(deadline, report):
                        return
                    await asyncio.sleep(0)
                await asyncio.sleep(0)  # let polls, flushes and queries run between moves
                if self._out_of_time(deadline, report):
                    return

    async def _move_hot_rows(self, tag_id: int, window: float, report: LifecycleReport) -> int:
        """Move up to MAX_CHUNK_SAMPLES of one tag's rows in one window into a chunk."""
        end = window + CHUNK_SECONDS
        deviation = await self._deviation_of(tag_id)
        async with self._store.transaction() as conn:
            records = await conn.execute_fetchall(
                _READ_HOT,
                (bucket_of(window), bucket_of(end), tag_id, window, end, MAX_CHUNK_SAMPLES),
            )
            if not records:
                return 0
            rows = Rows.from_records(records)
            encoded, kept = await asyncio.to_thread(self._encode_warm, rows, deviation)
            first, last = float(rows.ts[0]), float(rows.ts[-1])
            await conn.execute(
                _DELETE_HOT, (bucket_of(first), bucket_of(last), tag_id, first, last)
            )
            # sqlite3's rowcount is -1 for a statement starting with WITH: ask SQLite.
            deleted = await _changes(conn)
            if deleted != len(rows):
                raise StorageInvariantError(
                    f"moving tag {tag_id} at {window}: read {len(rows)} rows, "
                    f"delete would remove {deleted}"
                )
            await conn.execute(
                _INSERT_CHUNK,
                (tag_id, encoded.start, encoded.end, encoded.count, encoded.codec, encoded.blob),
            )
        report.hot_to_warm += len(rows)
        report.chunks_written += 1
        report.swinging_door_dropped += len(rows) - kept
        return len(rows)

    def _encode_warm(self, rows: Rows, deviation: float | None) -> tuple[Encoded, int]:
        if deviation is not None:
            mask, floats = rows.numeric()
            # Bools and NaN markers are states, not measurements: never thinned.
            eligible = mask & (rows.kind == ValueKind.NATIVE)
            group = rows.quality.astype(np.int64) * 256 + rows.kind
            keep = keep_mask(rows.ts, floats, eligible, group, deviation)
            if not keep.all():
                rows = rows.take(np.flatnonzero(keep))
        return encode_samples(rows, compressors=self._compressors), len(rows)

    async def _deviation_of(self, tag_id: int) -> float | None:
        if not self._deviations:
            return None
        name = self._tag_names.get(tag_id)
        if name is None:
            rows = await self._store.connection.execute_fetchall("SELECT id, name FROM tags")
            self._tag_names = {int(i): str(n) for i, n in rows}
            name = self._tag_names.get(tag_id)
        return self._deviations.get(name) if name is not None else None

    # --- warm → cold -----------------------------------------------------------------

    async def _warm_to_cold(
        self, cutoff: float, report: LifecycleReport, deadline: float | None
    ) -> None:
        """Aggregate every complete UTC day of chunks that ends at or before `cutoff`."""
        conn = self._store.connection
        seen: dict[float, int] = {}
        while not self._out_of_time(deadline, report):
            day = await self._oldest_window(
                "SELECT MIN(start_ts) FROM chunks", COLD_BLOCK_SECONDS, cutoff, seen, "warm chunks"
            )
            if day is None:
                return
            tags = await conn.execute_fetchall(
                "SELECT DISTINCT tag_id FROM chunks WHERE start_ts >= ? AND start_ts < ? "
                "ORDER BY tag_id",
                (day, day + COLD_BLOCK_SECONDS),
            )
            for (tag_id,) in tags:
                await self._move_warm_day(int(tag_id), day, report)
                await asyncio.sleep(0)
                if self._out_of_time(deadline, report):
                    return

    async def _move_warm_day(self, tag_id: int, day: float, report: LifecycleReport) -> None:
        async with self._store.transaction() as conn:
            chunks = list(
                await conn.execute_fetchall(
                    "SELECT id, count, blob FROM chunks "
                    "WHERE tag_id = ? AND start_ts >= ? AND start_ts < ?",
                    (tag_id, day, day + COLD_BLOCK_SECONDS),
                )
            )
            if not chunks:
                return
            encoded, samples = await asyncio.to_thread(
                self._encode_cold, [bytes(blob) for _, _, blob in chunks]
            )
            cursor = await conn.executemany(
                "DELETE FROM chunks WHERE id = ?", [(chunk_id,) for chunk_id, _, _ in chunks]
            )
            if cursor.rowcount != len(chunks):
                raise StorageInvariantError(
                    f"aggregating tag {tag_id} on day {day}: read {len(chunks)} chunks, "
                    f"deleted {cursor.rowcount}"
                )
            await conn.execute(
                _INSERT_COLD,
                (
                    tag_id,
                    encoded.start,
                    encoded.end,
                    samples,
                    encoded.count,
                    self._cold_resolution,
                    encoded.codec,
                    encoded.blob,
                ),
            )
        report.warm_to_cold += samples
        report.cold_blocks_written += 1

    def _encode_cold(self, blobs: Sequence[bytes]) -> tuple[Encoded, int]:
        ts_parts, float_parts, mask_parts = [], [], []
        for blob in blobs:
            rows = decode_samples(blob)
            mask, floats = rows.numeric()
            ts_parts.append(rows.ts)
            float_parts.append(floats)
            mask_parts.append(mask)
        ts = np.concatenate(ts_parts)
        agg = aggregate(
            ts, np.concatenate(float_parts), np.concatenate(mask_parts), self._cold_resolution
        )
        return encode_aggregates(agg, compressors=self._compressors), int(ts.size)

    # --- cold → archive (or deletion) ------------------------------------------------

    async def _expire_cold(
        self, cutoff: float, report: LifecycleReport, deadline: float | None
    ) -> None:
        """Archive (or delete) every cold block that ends at or before `cutoff`."""
        while not self._out_of_time(deadline, report):
            blocks = await self._cold_blocks(cutoff)
            if not blocks:
                return
            await self._export_or_delete(blocks, report)
            await asyncio.sleep(0)

    async def _cold_blocks(self, cutoff: float) -> list[archive.Block]:
        rows = await self._store.connection.execute_fetchall(_BLOCKS, (cutoff, BLOCK_BATCH))
        return [
            archive.Block(
                int(i),
                int(t),
                str(name),
                float(s),
                float(e),
                int(c),
                int(b),
                float(r),
                str(k),
                bytes(blob),
            )
            for i, t, name, s, e, c, b, r, k, blob in rows
        ]

    async def _export_or_delete(
        self, blocks: Sequence[archive.Block], report: LifecycleReport
    ) -> None:
        """Write blocks to their archive files (if archiving), then delete them here."""
        directory = self._archive_dir
        if directory is not None:
            by_file: dict[Path, list[archive.Block]] = {}
            for block in blocks:
                by_file.setdefault(archive.archive_path(directory, block.start_ts), []).append(
                    block
                )
            for path, group in by_file.items():
                await asyncio.to_thread(
                    archive.write_blocks, path, group, created=self._clock.now()
                )
        async with self._store.transaction() as conn:
            await conn.executemany("DELETE FROM cold WHERE id = ?", [(b.id,) for b in blocks])
        samples = sum(b.count for b in blocks)
        if directory is not None:
            report.archived_blocks += len(blocks)
            report.archived_samples += samples
        else:
            report.deleted_blocks += len(blocks)
            report.deleted_samples += samples

    # --- The disk budget -------------------------------------------------------------

    async def disk_usage(self) -> DiskUsage:
        """The database's pages, free pages and WAL size (three cheap PRAGMAs)."""
        conn = self._store.connection
        values = []
        for pragma in ("page_size", "page_count", "freelist_count"):
            rows = list(await conn.execute_fetchall(f"PRAGMA {pragma}"))
            values.append(int(rows[0][0]))
        return DiskUsage(
            values[0], values[1], values[2], _file_size(Path(f"{self._store.path}-wal"))
        )

    async def _enforce_budget(
        self, now: float, report: LifecycleReport, deadline: float | None, defer: bool
    ) -> None:
        budget = self._max_disk
        if budget is None:
            report.disk_bytes = (await self.disk_usage()).budget_bytes
            return
        usage = await self.disk_usage()
        if usage.budget_bytes <= budget:
            report.disk_bytes = usage.budget_bytes
            self._over_budget = False
            return
        report.over_budget = True
        before = usage.budget_bytes
        if not self._over_budget:
            self._over_budget = True
            log.warning(
                "storage is over its disk budget: %d bytes used, max_disk %d; compacting, "
                "then dropping the oldest cold data",
                before,
                budget,
            )
            self._event(
                now,
                "storage_over_budget",
                f"storage uses {before} bytes, over max_disk {budget}: compacting, then "
                "dropping the oldest cold data",
                used=before,
                max_disk=budget,
            )
        if not defer:
            # 1. Compact: encode the hot tier early (lossless) and give pages back.
            await self._hot_to_warm(now - EARLY_HOT_KEEP, report, deadline)
            usage = await self._compact(report, deadline)
        # 2. Drop (or export) the oldest cold data until under budget.
        dropped_before = (report.archived_samples, report.deleted_samples)
        usage = await self._drop_cold(budget, report, deadline, usage)
        # 3. Still over: turn the oldest warm days into aggregates early, drop again.
        while usage.budget_bytes > budget and not defer and not self._out_of_time(deadline, report):
            if not await self._oldest_warm_day_to_cold(now, report):
                break
            usage = await self._drop_cold(
                budget, report, deadline, await self._compact(report, deadline)
            )
        report.disk_bytes = usage.budget_bytes
        archived = report.archived_samples - dropped_before[0]
        deleted = report.deleted_samples - dropped_before[1]
        if archived or deleted:
            where = (
                f"exported {archived} samples to {self._archive_dir}"
                if archived
                else (f"deleted {deleted} samples")
            )
            self._event(
                now,
                "storage_budget_dropped",
                f"over max_disk: {where} of the oldest cold data "
                f"({before} → {usage.budget_bytes} bytes)",
                archived_samples=archived,
                deleted_samples=deleted,
                used=usage.budget_bytes,
                max_disk=budget,
            )
        if usage.budget_bytes > budget:
            log.warning(
                "storage still over its disk budget after dropping all it may (%d > %d bytes); "
                "raise max_disk or keep less raw data (hot_retention, deadbands)",
                usage.budget_bytes,
                budget,
            )

    async def _compact(self, report: LifecycleReport, deadline: float | None) -> DiskUsage:
        """Checkpoint the WAL and give free pages back (if the file has auto-vacuum)."""
        await self._checkpoint()
        conn = self._store.connection
        mode = list(await conn.execute_fetchall("PRAGMA auto_vacuum"))
        if mode and int(mode[0][0]) == 2:  # INCREMENTAL
            free = (await self.disk_usage()).free_pages
            while free > 0 and not self._out_of_time(deadline, report):
                async with self._store.locked() as locked:
                    await locked.execute_fetchall(f"PRAGMA incremental_vacuum({VACUUM_STEP})")
                await asyncio.sleep(0)
                left = (await self.disk_usage()).free_pages
                if left >= free:
                    break  # nothing more to give back
                free = left
            await self._checkpoint()
        report.compacted = True
        return await self.disk_usage()

    async def _checkpoint(self) -> None:
        async with self._store.locked() as conn:
            # TRUNCATE resets the WAL to zero bytes; a busy reader makes it a no-op.
            await conn.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")

    async def _drop_cold(
        self, budget: int, report: LifecycleReport, deadline: float | None, usage: DiskUsage
    ) -> DiskUsage:
        while usage.budget_bytes > budget and not self._out_of_time(deadline, report):
            blocks = await self._cold_blocks(math.inf)
            if not blocks:
                break
            # Only as many as needed: blocks are small; a batch at a time.
            await self._export_or_delete(blocks[: max(1, BLOCK_BATCH // 8)], report)
            await self._checkpoint()
            usage = await self.disk_usage()
            await asyncio.sleep(0)
        return usage

    async def _oldest_warm_day_to_cold(self, now: float, report: LifecycleReport) -> bool:
        conn = self._store.connection
        rows = list(await conn.execute_fetchall("SELECT MIN(start_ts) FROM chunks"))
        oldest = rows[0][0] if rows else None
        if oldest is None:
            return False
        day = math.floor(float(oldest) / COLD_BLOCK_SECONDS) * COLD_BLOCK_SECONDS
        if day + COLD_BLOCK_SECONDS > now:
            return False  # today stays raw
        tags = await conn.execute_fetchall(
            "SELECT DISTINCT tag_id FROM chunks WHERE start_ts >= ? AND start_ts < ?",
            (day, day + COLD_BLOCK_SECONDS),
        )
        for (tag_id,) in tags:
            await self._move_warm_day(int(tag_id), day, report)
            await asyncio.sleep(0)
        return True

    # --- Queries and figures -------------------------------------------------------------

    async def query(
        self,
        tag: str,
        since: float | None = None,
        until: float | None = None,
        resolution: float | None = None,
        limit: int | None = None,
    ) -> QueryResult:
        """Points of `tag` in [since, until] from every tier, ascending by ts.

        Raw points where they exist (hot, warm, and samples not yet flushed),
        `(bucket start, mean)` beyond (cold, archive); `result.tiers` names
        the tiers that had data, `result.aggregates` details the buckets.
        With `resolution` (seconds), every point is a bucket mean. `limit`
        keeps the oldest `limit` points.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if resolution is not None and not resolution > 0:
            raise ValueError(f"resolution must be > 0 seconds, got {resolution}")
        if since is not None and until is not None and since > until:
            return QueryResult(tag, [], [], [], resolution)
        # Unflushed samples first: one flushed meanwhile shows up twice at
        # worst (merged), never not at all.
        pending = self._store.pending(tag, since, until)

        def work() -> QueryResult:
            with self._reading() as conn:
                data = read_tiers(
                    conn,
                    self._archive_dir,
                    tag,
                    since,
                    until,
                    chunk_span=CHUNK_SECONDS,
                    block_span=COLD_BLOCK_SECONDS,
                )
            return build_result(tag, data, pending, resolution=resolution, limit=limit)

        return await asyncio.to_thread(work)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._reader_lock:
            if self._closed:
                raise RuntimeError("the tier manager is closed")
            if self._reader is None:
                # Read-only, autocommit (we BEGIN ourselves for a snapshot), usable
                # from whichever worker thread holds the lock.
                conn = sqlite3.connect(
                    f"file:{self._store.path}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=5.0,
                )
                self._reader = conn
            yield self._reader

    def figures(self) -> dict[str, Any] | None:
        """The last measured figures per tier (`TierFigures.to_dict()`), or None before any.

        Refreshed at the end of each lifecycle run (hourly at most once the
        database exceeds FIGURES_SCAN_BYTES) and by `refresh_figures()`;
        reading them costs nothing. `hot.samples` is kept current in between.
        """
        if self._figures is None:
            return None
        out = self._figures.to_dict()
        # The hot count follows the rows committed and moved since the measure;
        # bytes stay as measured at `updated`.
        written = self._store.status().rows_written - self._written_at_measure
        out["hot"]["samples"] = max(
            0, self._figures.hot_samples + written - self._moved_since_measure
        )
        return out

    async def refresh_figures(self) -> TierFigures:
        """Measure bytes and samples per tier now (scans the database's pages; seconds on GBs)."""
        written = self._store.status().rows_written
        self._figures = await asyncio.to_thread(self._measure)
        self._written_at_measure, self._moved_since_measure = written, 0
        return self._figures

    def _measure(self) -> TierFigures:
        with self._reading() as conn:
            conn.execute("BEGIN")
            try:
                sizes, exact = _table_bytes(conn)
                (hot_samples,) = conn.execute("SELECT COUNT(*) FROM samples").fetchone()
                chunks, warm_samples, warm_blobs = conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(count), 0), COALESCE(SUM(length(blob)), 0) "
                    "FROM chunks"
                ).fetchone()
                blocks, cold_samples, buckets, cold_blobs = conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(count), 0), COALESCE(SUM(buckets), 0), "
                    "COALESCE(SUM(length(blob)), 0) FROM cold"
                ).fetchone()
                codec_rows = conn.execute(
                    "SELECT codec, COUNT(*), SUM(count), SUM(length(blob)) FROM chunks "
                    "GROUP BY codec ORDER BY SUM(count) DESC"
                ).fetchall()
                page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
                pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
                free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            finally:
                conn.execute("COMMIT")
        disk = DiskUsage(page_size, pages, free, _file_size(Path(f"{self._store.path}-wal")))
        if exact:
            hot = sizes.get("samples", 0)
            warm = sum(sizes.get(n, 0) for n in ("chunks", "chunks_tag", "chunks_start"))
            cold = sum(sizes.get(n, 0) for n in ("cold", "cold_tag", "cold_start"))
        else:
            # Without dbstat: blobs plus ~40 bytes of row and index per chunk;
            # the hot tier is what remains of the live pages.
            warm = int(warm_blobs) + 40 * int(chunks)
            cold = int(cold_blobs) + 40 * int(blocks)
            hot = max(0, disk.live_bytes - warm - cold)
        arch = (
            archive.figures(self._archive_dir)
            if self._archive_dir is not None
            else archive.ArchiveFigures(0, 0, 0, 0)
        )
        return TierFigures(
            updated=self._clock.now(),
            hot_bytes=int(hot),
            hot_samples=int(hot_samples),
            warm_bytes=int(warm),
            warm_samples=int(warm_samples),
            warm_chunks=int(chunks),
            cold_bytes=int(cold),
            cold_samples=int(cold_samples),
            cold_buckets=int(buckets),
            cold_blocks=int(blocks),
            archive_bytes=arch.bytes,
            archive_samples=arch.samples,
            archive_files=arch.files,
            archive_blocks=arch.blocks,
            disk=disk,
            max_disk=self._max_disk,
            codecs={
                str(codec): {"chunks": int(n), "samples": int(s), "bytes": int(b)}
                for codec, n, s, b in codec_rows
            },
            exact=exact,
        )


async def _changes(conn: aiosqlite.Connection) -> int:
    rows = list(await conn.execute_fetchall("SELECT changes()"))
    return int(rows[0][0])


def _table_bytes(conn: sqlite3.Connection) -> tuple[dict[str, int], bool]:
    """Bytes per table and index from the dbstat virtual table, if SQLite has it."""
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:  # built without SQLITE_ENABLE_DBSTAT_VTAB
        return {}, False
    return {str(name): int(size) for name, size in rows}, True


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
