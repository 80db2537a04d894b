"""Storage tier lifecycle: hot → warm → cold → archive, the disk budget, figures and queries.

`TierManager.run_lifecycle()` is the maintenance job (the daemon schedules it):

1. hot → warm: raw rows older than `hot_retention` become one compressed
   chunk per tag and aligned hour (`edgeopt.storage.hot_to_warm`), optionally
   thinned by swinging-door compression for tags with a `compression_deviation`;
2. warm → cold: chunks older than `warm_retention` become per-bucket
   aggregates (`cold_resolution`), one block per tag and UTC day
   (`edgeopt.storage.warm_to_cold`);
3. cold → archive: blocks older than `cold_retention` go to a file per month
   under `archive/` (`edgeopt.storage.expiry`), or are deleted when
   archiving is off;
4. the disk budget (`max_disk`, `edgeopt.storage.budget`): over it, compact
   first, then drop (export) the oldest cold data, and raise an event.
   Acquisition never stops.

Every move is one small transaction through `HotStore.transaction()` (so it
never interleaves with a flush): read a few tag-hours (up to MAX_CHUNK_SAMPLES
rows in all) or one tag-day, have the storage codec worker encode them, delete
the source rows and insert the chunks, commit, then yield to the event loop.
Source and destination change in the same commit, so a kill -9 at any moment
leaves each sample in exactly one tier. The delete comes before the insert:
on a full disk the pages it frees can hold the (smaller) chunks. A failed
move (SQLITE_FULL, I/O error, a codec worker that could not start or died)
rolls back, is reported, and is retried on the next run.

The codec worker (`python -m edgeopt.storage.codec_worker`, through
`edgeopt.storage.codec_client`) holds all the numpy work: encoding and
aggregating for the moves, decoding chunks and blocks for queries. It starts
when first needed and stops when idle (`edgeopt.worker.IDLE_EXIT`) or when
the manager closes, so the daemon never imports numpy.

Archive moves span two files, so they are two commits: the block is written
to the archive file (fsync'd) before it is deleted here. A crash in between
leaves it in both; queries count it once (blocks keep their id), and the next
run finishes the move.

This module is the entry point; the phases live in their own modules, and
their public names are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from edgeopt.clock import Clock
from edgeopt.storage import archive
from edgeopt.storage.budget import EARLY_HOT_KEEP, VACUUM_STEP, DiskBudget
from edgeopt.storage.codec_client import CodecClient
from edgeopt.storage.expiry import BLOCK_BATCH, ColdExpiry
from edgeopt.storage.figures import (
    FIGURES_BIG_EVERY,
    FIGURES_SCAN_BYTES,
    DiskUsage,
    TierFigures,
    measure_figures,
)
from edgeopt.storage.hot import HotStore
from edgeopt.storage.hot_to_warm import HotToWarm
from edgeopt.storage.moves import (
    CHUNK_SECONDS,
    COLD_BLOCK_SECONDS,
    MAX_CHUNK_SAMPLES,
    Emit,
    LifecycleReport,
    Run,
    StorageInvariantError,
)
from edgeopt.storage.query import QueryResult, TierData, merge_result, read_tiers
from edgeopt.storage.warm_to_cold import WarmToCold
from edgeopt.worker import IDLE_EXIT, WorkerError, WorkerFailed, WorkerProcess

if TYPE_CHECKING:
    from edgeopt.config.model import StorageConfig
    from edgeopt.storage.codecs import Compressor

__all__ = [
    "BLOCK_BATCH",
    "CHUNK_SECONDS",
    "COLD_BLOCK_SECONDS",
    "EARLY_HOT_KEEP",
    "FIGURES_BIG_EVERY",
    "FIGURES_SCAN_BYTES",
    "MAX_CHUNK_SAMPLES",
    "VACUUM_STEP",
    "DiskUsage",
    "Emit",
    "LifecycleReport",
    "StorageInvariantError",
    "TierFigures",
    "TierManager",
]

log = logging.getLogger(__name__)


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
        compressors: Sequence[Compressor] | None = None,
        codec_idle_exit: float = IDLE_EXIT,
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
            compressors: the compressors each chunk may choose from; None: all.
            codec_idle_exit: seconds without work after which the codec worker stops.
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
        if compressors is not None and not compressors:
            raise ValueError("compressors must name at least one compressor")
        self._store = store
        self._clock = clock
        self._hot_retention = hot_retention
        self._warm_retention = warm_retention
        self._cold_retention = cold_retention
        self._archive_dir = archive_dir
        self._max_disk = max_disk
        self._emit = emit
        self._codec = CodecClient(compressors=compressors, idle_exit=codec_idle_exit)
        # The phases of a run, each in its own module.
        self._hot_to_warm = HotToWarm(store, self._codec)
        self._warm_to_cold = WarmToCold(store, self._codec, cold_resolution)
        self._expiry = ColdExpiry(store, clock, archive_dir)
        self._budget = DiskBudget(
            store,
            max_disk=max_disk,
            archive_dir=archive_dir,
            hot_to_warm=self._hot_to_warm,
            warm_to_cold=self._warm_to_cold,
            expiry=self._expiry,
            event=self._event,
        )
        self.set_deviations(deviations or {})

        # One lifecycle run at a time (an overrunning scheduler job must not
        # start a second one next to it).
        self._run_lock = asyncio.Lock()
        # The read-only connection, used from worker threads one at a time.
        self._reader_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._closed = False
        self._failing = False  # a lifecycle phase failed on the last run (events on change)
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
        """Wait for a lifecycle run in progress, then stop the codec worker and the reader.

        Idempotent.
        """
        async with self._run_lock:
            self._closed = True
            await self._codec.aclose()
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
        self._hot_to_warm.deviations = dict(deviations)

    @property
    def archive_dir(self) -> Path | None:
        return self._archive_dir

    @property
    def codec_worker(self) -> WorkerProcess:
        """The process that encodes and decodes for the moves and queries (started when needed)."""
        return self._codec.worker

    async def disk_usage(self) -> DiskUsage:
        """The database's pages, free pages and WAL size (three cheap PRAGMAs)."""
        return await self._budget.disk_usage()

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
            run = Run(report, self._clock, deadline)
            phases: list[tuple[str, Callable[[], Any]]] = []
            if not defer:
                phases.append(
                    ("hot → warm", lambda: self._hot_to_warm.move(now - self._hot_retention, run))
                )
                phases.append(
                    (
                        "warm → cold",
                        lambda: self._warm_to_cold.move(now - self._warm_retention, run),
                    )
                )
            phases.append(
                ("cold → archive", lambda: self._expiry.expire(now - self._cold_retention, run))
            )
            phases.append(("disk budget", lambda: self._budget.enforce(now, run, defer)))
            for name, phase in phases:
                try:
                    await phase()
                except (sqlite3.Error, OSError, StorageInvariantError, WorkerError) as exc:
                    if isinstance(exc, WorkerFailed):
                        # Data a codec refuses (a CodecError in the worker): a bug,
                        # but it must not stop the other phases or the next runs.
                        log.error("storage %s failed in the codec worker:\n%s", name, exc.details)
                    report.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                except (ValueError, TypeError) as exc:
                    # Data a move did not expect: a bug, as above.
                    log.exception("storage %s failed on data it cannot handle", name)
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

        Raises:
            edgeopt.worker.WorkerError: the range holds chunks or blocks (or
                `resolution` is given) and the codec worker could not answer.
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
        data = await asyncio.to_thread(self._read_tiers, tag, since, until)
        if resolution is not None:
            return await self._codec.build_result(tag, data, pending, resolution, limit)
        # A range of hot rows alone (the usual recent one) needs no worker.
        decoded = await self._codec.decode(data) if data.encoded else None
        return merge_result(tag, data, decoded, pending, limit)

    def _read_tiers(self, tag: str, since: float | None, until: float | None) -> TierData:
        with self._reading() as conn:
            return read_tiers(
                conn,
                self._archive_dir,
                tag,
                since,
                until,
                chunk_span=CHUNK_SECONDS,
                block_span=COLD_BLOCK_SECONDS,
            )

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
            return measure_figures(
                conn,
                self._store.path,
                self._archive_dir,
                clock=self._clock,
                max_disk=self._max_disk,
            )
