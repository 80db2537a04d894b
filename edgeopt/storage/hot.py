"""Hot storage tier: raw samples in SQLite (WAL), buffered in memory, written in batches.

The poll loop calls `HotStore.append` for every sample it keeps; that only
touches an in-memory buffer. `HotStore.run` writes the buffer with one
`executemany` per transaction. A failing disk degrades storage (samples wait in
a bounded buffer and are retried) but never stops acquisition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

import aiosqlite

from edgeopt.clock import Clock
from edgeopt.storage.schema import (
    QUALITY_CODES,
    SampleValue,
    bucket_of,
    decode_value,
    encode_value,
    migrate,
)

log = logging.getLogger(__name__)

Point = tuple[float, SampleValue]

_INSERT_SAMPLE = (
    "INSERT OR REPLACE INTO samples (bucket, tag_id, ts, value, quality, kind) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
# One tag's points: walk the time buckets of the range (a recursive CTE) and
# seek (bucket, tag_id) in each; CROSS JOIN keeps the buckets as the outer loop,
# so rows come out ascending by ts (buckets ascend, and within one the primary
# key orders by ts) and LIMIT keeps the oldest, without an ORDER BY that would
# sort the whole result in a temporary b-tree (a third of a day's read time).
# The walk is clamped to the oldest / newest bucket in the table (also when a
# bound is missing), so asking for a year of a tag walks only what the hot tier
# holds. MIN and MAX are separate subqueries: SQLite answers each from the
# primary key, but one SELECT of both would scan the table.
QUERY_TAG_SQL = """
WITH RECURSIVE
    span(lo, hi) AS (SELECT (SELECT MIN(bucket) FROM samples), (SELECT MAX(bucket) FROM samples)),
    b(k) AS (
        SELECT COALESCE(MAX(?1, lo), lo) FROM span
        UNION ALL
        SELECT k + 1 FROM b, span WHERE k < COALESCE(MIN(?2, hi), hi)
    )
SELECT s.ts, s.value, s.kind
FROM b CROSS JOIN samples AS s ON s.bucket = b.k AND s.tag_id = ?3
WHERE s.ts >= ?4 AND s.ts <= ?5
LIMIT ?6
"""
# Old SQLite builds allow 999 host parameters per statement; stay below that.
_IN_CHUNK = 500
# A flush of a large backlog can grow the WAL far beyond its usual size; after
# the next checkpoint SQLite truncates it back to this, so disk use stays bounded.
_JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024
_BUSY_TIMEOUT_MS = 5000


class SampleLike(Protocol):
    """What `append` needs of a sample; any object with these attributes will do.

    The poll loop's own record (e.g. `edgeopt.tags.Sample`) can be stored
    without copying it into a `Sample` first.
    """

    @property
    def tag(self) -> str: ...
    @property
    def ts(self) -> float: ...
    @property
    def value(self) -> SampleValue: ...
    @property
    def quality(self) -> str: ...


@dataclass(frozen=True, slots=True)
class StorageStatus:
    """A snapshot of the hot store's health, for `status` and monitoring.

    `last_error` keeps the most recent storage error even after a recovery, so
    an operator can see what happened; `state` says whether it still applies.
    """

    state: Literal["ok", "degraded"]
    rows_written: int  # rows committed since open
    buffered: int  # samples accepted but not yet committed (incl. a flush in progress)
    dropped: int  # samples lost: buffer overflow, appended after close, unwritable at close
    last_error: str | None
    db_bytes: int  # database file plus its WAL
    flushes: int  # successful flushes
    failed_flushes: int
    rejected: int  # samples whose value or quality cannot be stored (a producer bug)
    last_flush: float | None  # clock.now() of the last successful flush


class HotStore:
    """Raw samples of every tag, in one SQLite file.

    Create it with `await HotStore.open(...)`, run `run()` as a background task,
    and `close()` it on shutdown (or use it as an async context manager).
    """

    def __init__(
        self,
        path: Path,
        conn: aiosqlite.Connection,
        *,
        clock: Clock,
        flush_interval: float,
        flush_rows: int,
        max_buffer: int,
        tag_ids: dict[str, int],
    ) -> None:
        """Use `HotStore.open`; this only wires up an already-migrated connection."""
        self._path = path
        self._conn = conn
        self._clock = clock
        self._flush_interval = flush_interval
        self._flush_rows = flush_rows
        self._max_buffer = max_buffer
        self._tag_ids = tag_ids

        # New samples go to `_buffer`. A flush swaps it out for an empty one and
        # keeps the batch in `_inflight` until it is committed, so queries see
        # both and a failed batch can go back in front of newer samples.
        self._buffer: deque[SampleLike] = deque(maxlen=max_buffer)
        self._inflight: deque[SampleLike] = deque()
        # One writer at a time on the shared connection: flushes and any other
        # module's `transaction()` must not interleave their statements.
        self._write_lock = asyncio.Lock()
        self._close_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        # Flush tasks survive the cancellation of whoever awaited them, so a
        # cancelled run() never leaves a transaction half done.
        self._flush_tasks: set[asyncio.Task[int]] = set()
        self._closing = False
        self._closed = False

        self._degraded = False
        self._dropping = False  # logged that the buffer overflowed, this episode
        self._rows_written = 0
        self._dropped = 0
        self._rejected = 0
        self._flushes = 0
        self._failed_flushes = 0
        self._failures_this_episode = 0
        self._last_error: str | None = None
        self._last_flush: float | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        clock: Clock,
        flush_interval: float = 1.0,
        flush_rows: int = 5000,
        max_buffer: int = 500_000,
    ) -> HotStore:
        """Open (creating if needed) the database at `path` and migrate it.

        Args:
            path: the SQLite file; its directory is created if missing.
            clock: where flush timing and timestamps come from.
            flush_interval: seconds between background flushes in `run()`.
            flush_rows: flush early once this many samples are buffered.
            max_buffer: most samples waiting in memory; beyond it the oldest are
                dropped (and counted). While a batch is being written, up to
                max_buffer more may arrive; a failed batch is trimmed back to it.
        """
        if flush_interval <= 0:
            raise ValueError(f"flush_interval must be > 0 seconds, got {flush_interval}")
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {flush_rows}")
        if max_buffer < flush_rows:
            raise ValueError(
                f"max_buffer ({max_buffer}) must be at least flush_rows ({flush_rows})"
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: we issue BEGIN IMMEDIATE / COMMIT ourselves, so a
        # transaction is exactly what the code says (see `transaction()`).
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await _configure(conn, path)
            await migrate(conn, clock=clock)
            rows = await conn.execute_fetchall("SELECT name, id FROM tags")
            tag_ids = {str(name): int(tag_id) for name, tag_id in rows}
        except BaseException:
            await conn.close()
            raise
        log.info("hot storage open at %s (%d tags known)", path, len(tag_ids))
        return cls(
            path,
            conn,
            clock=clock,
            flush_interval=flush_interval,
            flush_rows=flush_rows,
            max_buffer=max_buffer,
            tag_ids=tag_ids,
        )

    async def __aenter__(self) -> HotStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def connection(self) -> aiosqlite.Connection:
        """The shared aiosqlite connection (autocommit mode).

        Reads may use it directly. Writes must go through `transaction()`, which
        serialises them with the hot tier's own flushes.
        """
        return self._conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """`async with store.transaction() as conn:` runs a write transaction.

        It commits on normal exit and rolls back on any exception, holding the
        write lock so no flush interleaves with it.
        """
        async with self._write_lock, _transaction(self._conn) as conn:
            yield conn

    async def audit(
        self, ts: float, uid: int, pid: int, command: str, args: str, result: str
    ) -> None:
        """One row of the audit trail: who ran which command, with what, and how it ended."""
        async with self.transaction() as conn:
            await conn.execute(
                "INSERT INTO audit (ts, uid, pid, command, args, result) VALUES (?, ?, ?, ?, ?, ?)",
                (ts, uid, pid, command, args, result),
            )

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[aiosqlite.Connection]:
        """`async with store.locked() as conn:` holds the write lock without a transaction.

        For statements that must run outside one (`PRAGMA wal_checkpoint`,
        `PRAGMA incremental_vacuum` in its own steps) yet must not interleave
        with a flush.
        """
        async with self._write_lock:
            if self._closed:
                raise RuntimeError(f"hot storage at {self._path} is closed")
            yield self._conn

    # --- Ingest (sync, O(1), never raises on storage trouble) -----------------

    def append(self, sample: SampleLike) -> None:
        """Queue one sample for the next flush."""
        if self._closed or self._closing:
            self._drop(1)
            return
        buffer = self._buffer
        if len(buffer) == self._max_buffer:
            # deque(maxlen) discards the oldest by itself; we only count it.
            self._drop(1)
        buffer.append(sample)
        if len(buffer) >= self._flush_rows and not self._degraded:
            # While degraded, retry only on the interval: waking on every
            # append would hammer a full disk.
            self._wake.set()

    def extend(self, samples: Iterable[SampleLike]) -> None:
        """Queue several samples for the next flush."""
        for sample in samples:
            self.append(sample)

    def _drop(self, count: int) -> None:
        if count <= 0:
            return
        self._dropped += count
        if self._dropping:
            return
        self._dropping = True
        if self._closing:
            log.warning("hot storage is closed: dropping samples appended after close()")
        elif self._degraded:
            log.warning(
                "hot storage is dropping the oldest samples: storage is failing (%s) and "
                "the buffer is full (max_buffer=%d)",
                self._last_error,
                self._max_buffer,
            )
        else:
            log.warning(
                "hot storage is dropping the oldest samples: more arrive than the disk can "
                "write (%d waiting, max_buffer=%d); store fewer (deadbands) or use faster storage",
                len(self._buffer) + len(self._inflight),
                self._max_buffer,
            )

    # --- Writing ---------------------------------------------------------------

    async def flush(self) -> int:
        """Write everything buffered in one transaction; return the rows written.

        On a storage error the samples stay buffered, the store turns
        "degraded" and 0 is returned; the next flush retries.
        """
        if self._closed or not self._buffer:
            return 0
        task = asyncio.create_task(self._flush_once(), name="edgeopt.storage.hot.flush")
        self._flush_tasks.add(task)
        task.add_done_callback(self._flush_tasks.discard)
        return await asyncio.shield(task)

    async def _flush_once(self) -> int:
        async with self._write_lock:
            if not self._buffer:
                return 0
            batch = self._buffer
            self._buffer = deque(maxlen=self._max_buffer)
            self._inflight = batch
            try:
                written = await self._write(batch)
            except sqlite3.Error as exc:
                self._requeue(batch)
                self._on_failure(exc, len(batch))
                return 0
            except BaseException:
                # Not a storage error (a bug): keep the samples, let it surface.
                self._requeue(batch)
                raise
            finally:
                self._inflight = deque()
            self._on_success(written)
            return written

    async def _write(self, batch: deque[SampleLike]) -> int:
        """INSERT the batch (and any new tag names) in one transaction."""
        known = self._tag_ids
        new_names = {s.tag for s in batch if s.tag not in known}
        new_ids: dict[str, int] = {}
        rejects: list[SampleLike] = []
        async with _transaction(self._conn) as conn:
            if new_names:
                names = sorted(new_names)
                await conn.executemany(
                    "INSERT OR IGNORE INTO tags (name) VALUES (?)", [(n,) for n in names]
                )
                for i in range(0, len(names), _IN_CHUNK):
                    chunk = names[i : i + _IN_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = await conn.execute_fetchall(
                        f"SELECT name, id FROM tags WHERE name IN ({marks})", chunk
                    )
                    new_ids.update((str(name), int(tag_id)) for name, tag_id in rows)
            # A generator, so encoding runs on aiosqlite's thread inside
            # executemany instead of holding up the event loop.
            await conn.executemany(_INSERT_SAMPLE, _rows(batch, known, new_ids, rejects))
        # Only now are the new ids real: a rolled-back INSERT may hand them out again.
        known.update(new_ids)
        if rejects:
            self._rejected += len(rejects)
            first = rejects[0]
            log.warning(
                "hot storage skipped %d samples it cannot store (a bug in their producer), "
                "e.g. tag %r ts %r value %r (%s) quality %r; ts must be finite epoch seconds, "
                "values int, float, str, bool or None, and quality one of %s",
                len(rejects),
                first.tag,
                first.ts,
                first.value,
                type(first.value).__name__,
                first.quality,
                ", ".join(QUALITY_CODES),
            )
        return len(batch) - len(rejects)

    def _requeue(self, batch: deque[SampleLike]) -> None:
        """Put a failed batch back in front of what arrived meanwhile, within max_buffer."""
        overflow = len(batch) + len(self._buffer) - self._max_buffer
        batch.extend(self._buffer)  # `batch` has maxlen=max_buffer: the oldest fall off
        self._buffer = batch
        self._drop(overflow)

    def _on_failure(self, exc: sqlite3.Error, batch_size: int) -> None:
        self._failed_flushes += 1
        self._failures_this_episode += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        if not self._degraded:
            self._degraded = True
            log.warning(
                "hot storage degraded: cannot write %d samples to %s (%s). Acquisition "
                "continues; up to %d samples are kept in memory and retried every %.1f s. %s",
                batch_size,
                self._path,
                self._last_error,
                self._max_buffer,
                self._flush_interval,
                _remedy(exc),
            )

    def _on_success(self, written: int) -> None:
        self._flushes += 1
        self._rows_written += written
        self._last_flush = self._clock.now()
        if self._degraded:
            log.info(
                "hot storage recovered: wrote %d samples to %s after %d failed flushes "
                "(%d samples dropped so far)",
                written,
                self._path,
                self._failures_this_episode,
                self._dropped,
            )
        self._degraded = False
        self._failures_this_episode = 0
        if self._dropping and len(self._buffer) < self._max_buffer // 2:
            # Caught up: a later overflow is a new episode and gets logged again.
            self._dropping = False
            log.info("hot storage caught up (%d samples dropped since open)", self._dropped)

    async def run(self) -> None:
        """Flush every `flush_interval`, or early once `flush_rows` are buffered, until close()."""
        while not self._closing:
            await self._wait_until_due()
            if self._closing:
                break  # close() does the final flush
            try:
                await self.flush()
            except Exception:
                # Storage errors are handled inside flush(); this is a bug. Keep
                # going: the samples are still buffered and acquisition goes on.
                log.exception(
                    "hot storage flush failed unexpectedly; retrying in %.1f s",
                    self._flush_interval,
                )

    async def _wait_until_due(self) -> None:
        if len(self._buffer) >= self._flush_rows and not self._degraded:
            return
        self._wake.clear()
        sleeper = asyncio.create_task(self._clock.sleep(self._flush_interval))
        waker = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def close(self) -> None:
        """Flush everything still buffered, then close the database. Idempotent."""
        async with self._close_lock:
            if self._closed:
                return
            self._closing = True
            self._wake.set()  # let run() return
            try:
                # A flush cancelled out of run() may still be writing; wait for it.
                if self._flush_tasks:
                    await asyncio.gather(*self._flush_tasks, return_exceptions=True)
                await self.flush()
                left = len(self._buffer)
                if left:
                    self._dropped += left
                    log.error(
                        "hot storage closed with %d samples that could not be written to %s "
                        "and are lost (%s)",
                        left,
                        self._path,
                        self._last_error,
                    )
            finally:
                self._closed = True
                async with self._write_lock:  # let a transaction() in progress finish
                    await self._conn.close()
            log.info("hot storage closed (%d rows written since open)", self._rows_written)

    # --- Reading ---------------------------------------------------------------

    async def query(
        self,
        tag: str,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[Point]:
        """Points `(ts, value)` of `tag` with since <= ts <= until, ascending by ts.

        Samples still in the buffer are included, so a value is visible as soon
        as it is appended. `limit` keeps the first (oldest) `limit` points of
        the range; page forward by passing the last ts as `since`.
        """
        if self._closed:
            raise RuntimeError(f"hot storage at {self._path} is closed")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if limit == 0:
            return []
        # Take the uncommitted samples first: anything committed after this
        # point was among them, and the ts de-duplication below absorbs overlap.
        pending = self.pending(tag, since, until)
        points = await self._query_db(tag, since, until, limit)
        if pending:
            merged = dict(points)
            merged.update(pending)  # the newer sample wins, as INSERT OR REPLACE does
            points = sorted(merged.items())
            if limit is not None:
                del points[limit:]
        return points

    def pending(
        self, tag: str, since: float | None, until: float | None
    ) -> dict[float, SampleValue]:
        """Samples of `tag` accepted but not yet committed, `{ts: value}` (no database access).

        For readers with their own connection (the cross-tier query): merged
        over the committed rows, these win, as they would once written.
        """
        lo = -math.inf if since is None else since
        hi = math.inf if until is None else until
        return {
            s.ts: s.value
            for s in chain(self._inflight, self._buffer)
            if s.tag == tag and lo <= s.ts <= hi
        }

    async def _query_db(
        self, tag: str, since: float | None, until: float | None, limit: int | None
    ) -> list[Point]:
        tag_id = self._tag_ids.get(tag)
        if tag_id is None:
            # Not written by this store; another module may have created it.
            sql = "SELECT id FROM tags WHERE name = ?"
            found = list(await self._conn.execute_fetchall(sql, (tag,)))
            if not found:
                return []
            tag_id = int(found[0][0])
        params = (
            None if since is None else bucket_of(since),
            None if until is None else bucket_of(until),
            tag_id,
            -math.inf if since is None else since,
            math.inf if until is None else until,
            -1 if limit is None else limit,  # SQLite: a negative LIMIT means none
        )
        rows = await self._conn.execute_fetchall(QUERY_TAG_SQL, params)
        return [(float(ts), decode_value(value, kind)) for ts, value, kind in rows]

    def status(self) -> StorageStatus:
        """Current health and counters (cheap: no database access)."""
        return StorageStatus(
            state="degraded" if self._degraded else "ok",
            rows_written=self._rows_written,
            buffered=len(self._buffer) + len(self._inflight),
            dropped=self._dropped,
            last_error=self._last_error,
            db_bytes=_file_size(self._path) + _file_size(Path(f"{self._path}-wal")),
            flushes=self._flushes,
            failed_flushes=self._failed_flushes,
            rejected=self._rejected,
            last_flush=self._last_flush,
        )


async def _configure(conn: aiosqlite.Connection, path: Path) -> None:
    # Only a new, empty database takes this (it must come before WAL mode and
    # the first table); an existing one keeps its mode. With it, pages freed by
    # the tier moves can be given back to the filesystem in small steps
    # (`PRAGMA incremental_vacuum`) when the disk budget is exceeded, instead
    # of a full VACUUM that rewrites the whole file.
    await conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    rows = list(await conn.execute_fetchall("PRAGMA journal_mode=WAL"))
    mode = str(rows[0][0]) if rows else "unknown"
    if mode.lower() != "wal":
        log.warning(
            "SQLite at %s runs in journal_mode=%s, not WAL (the filesystem may not support "
            "shared memory); writes will be slower and block readers",
            path,
            mode,
        )
    # synchronous=NORMAL is safe with WAL for our promise. A commit appends to the
    # WAL with write() and fsyncs only at checkpoints, so:
    #  - kill -9 of the process loses nothing committed: the kernel already holds
    #    the WAL pages and the next open replays them;
    #  - a power loss or kernel crash may lose the last few commits, but never
    #    corrupts the database: WAL frames are checksummed and a torn tail is
    #    simply ignored on recovery.
    # FULL would fsync every flush, which costs the gateway's SD card/eMMC wear
    # and latency for no gain against process crashes.
    await conn.execute("PRAGMA synchronous=NORMAL")
    # Wait for a lock (e.g. an admin's sqlite3 shell reading) instead of failing.
    await conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    await conn.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")


@contextlib.asynccontextmanager
async def _transaction(conn: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    # IMMEDIATE takes the write lock up front, so a busy database makes us wait
    # (busy_timeout) at BEGIN rather than fail halfway through the batch.
    await conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        await conn.execute("COMMIT")
    except BaseException:
        # SQLite rolls some errors back by itself (e.g. SQLITE_FULL); roll back
        # whatever is left so the connection is usable for the retry.
        if conn.in_transaction:
            try:
                await conn.rollback()
            except sqlite3.Error as exc:
                log.error("rollback of a failed hot storage transaction failed: %s", exc)
        raise


def _rows(
    batch: Iterable[SampleLike],
    known: dict[str, int],
    new_ids: dict[str, int],
    rejects: list[SampleLike],
) -> Iterator[tuple[int, int, float, int | float | str | None, int, int]]:
    # Anything SQLite would refuse must be filtered here: one bad row would
    # fail the whole batch on every retry and block all storage behind it.
    qualities = QUALITY_CODES
    for sample in batch:
        encoded = encode_value(sample.value)
        quality = qualities.get(sample.quality)
        tag_id = known.get(sample.tag)
        if tag_id is None:
            tag_id = new_ids.get(sample.tag)
        ts = sample.ts
        if (
            encoded is None
            or quality is None
            or tag_id is None
            or not isinstance(ts, int | float)
            or not math.isfinite(ts)
        ):
            rejects.append(sample)
            continue
        value, kind = encoded
        yield bucket_of(ts), tag_id, float(ts), value, quality, int(kind)


def _remedy(exc: sqlite3.Error) -> str:
    """What an operator can do about a write error."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL":
        return "Free space on that filesystem to recover."
    if name.startswith("SQLITE_BUSY"):
        return "Another process holds the database's write lock; stop it to recover."
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
        return "Check the permissions of the file and its directory."
    return "Check the disk (dmesg) and the file; writes are retried meanwhile."


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
