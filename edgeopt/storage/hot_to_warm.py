"""hot → warm: raw rows older than the hot retention become one lossless chunk per tag and hour.

Tags with a swinging-door `compression_deviation` are thinned first; every
other tag's rows come back bit for bit from the chunk (`edgeopt.storage.chunks`).
The rows are read, deleted and replaced here, in one transaction; the storage
codec worker makes the chunks (`edgeopt.storage.codec_worker.encode_hot`).

Several tags' chunks move in one transaction (up to MOVE_BATCH_SAMPLES rows in
all): hot rows are clustered by time, then tag, so every tag's delete dirties
nearly every page of the hour, and a commit per tag would write those pages
to the WAL once per tag. A tag with more rows than that moves alone, a chunk
(MAX_CHUNK_SAMPLES) per transaction.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import cast

import aiosqlite

from edgeopt.storage.codec_client import CodecClient, HotRecord, WarmChunk
from edgeopt.storage.hot import HotStore
from edgeopt.storage.moves import (
    CHUNK_SECONDS,
    MAX_CHUNK_SAMPLES,
    Run,
    StorageInvariantError,
    changes,
    oldest_window,
)
from edgeopt.storage.schema import bucket_of

#: Most hot rows one move transaction reads, encodes and deletes (several
#: tags' chunks). It bounds how long a move holds the write lock (flushes wait)
#: to what one full chunk takes.
MOVE_BATCH_SAMPLES = MAX_CHUNK_SAMPLES

# The rows of a range of tags in a time window, in the order of the primary
# key walk: bucket, then tag, then ts (so each tag's rows ascend by ts).
_READ_HOT_TAGS = """
WITH RECURSIVE b(k) AS (SELECT ?1 UNION ALL SELECT k + 1 FROM b WHERE k < ?2)
SELECT s.tag_id, s.ts, s.value, s.quality, s.kind
FROM b CROSS JOIN samples AS s ON s.bucket = b.k AND s.tag_id >= ?3 AND s.tag_id <= ?4
WHERE s.ts >= ?5 AND s.ts < ?6
"""
_DELETE_HOT_TAGS = """
WITH RECURSIVE b(k) AS (SELECT ?1 UNION ALL SELECT k + 1 FROM b WHERE k < ?2)
DELETE FROM samples
WHERE bucket IN (SELECT k FROM b) AND tag_id >= ?3 AND tag_id <= ?4 AND ts >= ?5 AND ts < ?6
"""
# One tag's rows in a time window: walk the window's buckets and seek
# (bucket, tag_id) in each, as the hot tier's own query does.
_READ_HOT = """
WITH RECURSIVE b(k) AS (SELECT ?1 UNION ALL SELECT k + 1 FROM b WHERE k < ?2)
SELECT s.tag_id, s.ts, s.value, s.quality, s.kind
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
    "SELECT tag_id, COUNT(*) FROM samples "
    "WHERE bucket >= ? AND bucket <= ? AND ts >= ? AND ts < ? GROUP BY tag_id ORDER BY tag_id"
)
_INSERT_CHUNK = (
    "INSERT INTO chunks (tag_id, start_ts, end_ts, count, codec, blob) VALUES (?, ?, ?, ?, ?, ?)"
)


class HotToWarm:
    """Moves hot rows into warm chunks, a batch of tag-hours per transaction."""

    def __init__(self, store: HotStore, codec: CodecClient) -> None:
        self._store = store
        self._codec = codec
        #: swinging-door deviation by tag name; tags not listed stay lossless.
        self.deviations: Mapping[str, float] = {}
        self._tag_names: dict[int, str] = {}

    async def move(self, cutoff: float, run: Run) -> None:
        """Chunk every complete hour window that ends at or before `cutoff`, oldest first."""
        conn = self._store.connection
        seen: dict[float, int] = {}
        while not run.out_of_time():
            window = await oldest_window(conn, _OLDEST_HOT, CHUNK_SECONDS, cutoff, seen, "hot rows")
            if window is None:
                return
            end = window + CHUNK_SECONDS
            counts = await conn.execute_fetchall(
                _HOT_TAGS, (bucket_of(window), bucket_of(end), window, end)
            )
            for lo, hi, rows in move_batches([(int(t), int(n)) for t, n in counts]):
                if rows <= MOVE_BATCH_SAMPLES:
                    await self._move_tags(lo, hi, window, run)
                else:  # one busy tag: a chunk per transaction
                    while await self._move_rows(lo, window, run) >= MAX_CHUNK_SAMPLES:
                        if run.out_of_time():
                            return
                        await asyncio.sleep(0)
                await asyncio.sleep(0)  # let polls, flushes and queries run between moves
                if run.out_of_time():
                    return

    async def _move_tags(self, lo: int, hi: int, window: float, run: Run) -> None:
        """Move the rows of tags `lo`..`hi` in one window into chunks, in one transaction."""
        end = window + CHUNK_SECONDS
        bounds = (bucket_of(window), bucket_of(end), lo, hi, window, end)
        async with self._store.transaction() as conn:
            records = cast(
                list[HotRecord], list(await conn.execute_fetchall(_READ_HOT_TAGS, bounds))
            )
            if not records:
                return
            chunks = await self._encode(records, f"tags {lo}..{hi} at {window}")
            await conn.execute(_DELETE_HOT_TAGS, bounds)
            deleted = await changes(conn)
            if deleted != len(records):
                raise StorageInvariantError(
                    f"moving tags {lo}..{hi} at {window}: read {len(records)} rows, "
                    f"delete would remove {deleted}"
                )
            await self._insert(conn, chunks)
        self._count(run, len(records), chunks)

    async def _move_rows(self, tag_id: int, window: float, run: Run) -> int:
        """Move up to MAX_CHUNK_SAMPLES of one tag's rows in one window into a chunk."""
        end = window + CHUNK_SECONDS
        async with self._store.transaction() as conn:
            bounds = (bucket_of(window), bucket_of(end), tag_id, window, end, MAX_CHUNK_SAMPLES)
            read = await conn.execute_fetchall(_READ_HOT, bounds)
            records = cast(list[HotRecord], list(read))
            if not records:
                return 0
            chunks = await self._encode(records, f"tag {tag_id} at {window}")
            first, last = records[0][1], records[-1][1]  # ordered by ts
            await conn.execute(
                _DELETE_HOT, (bucket_of(first), bucket_of(last), tag_id, first, last)
            )
            deleted = await changes(conn)
            if deleted != len(records):
                raise StorageInvariantError(
                    f"moving tag {tag_id} at {window}: read {len(records)} rows, "
                    f"delete would remove {deleted}"
                )
            await self._insert(conn, chunks)
        self._count(run, len(records), chunks)
        return len(records)

    async def _encode(self, records: list[HotRecord], what: str) -> list[WarmChunk]:
        """The chunks of `records`, from the codec worker, checked to hold every row once."""
        deviations: dict[int, float] = {}
        if self.deviations:
            for tag_id in {r[0] for r in records}:
                deviation = await self._deviation_of(tag_id)
                if deviation is not None:
                    deviations[tag_id] = deviation
        chunks = await self._codec.encode_hot(records, deviations)
        # A reply that does not account for every row it was sent must never
        # replace them.
        got: Counter[int] = Counter()
        for c in chunks:
            got[c.tag_id] += c.rows
        if got != Counter(map(itemgetter(0), records)) or any(c.count > c.rows for c in chunks):
            raise StorageInvariantError(f"moving {what}: the chunks do not hold the rows read")
        return chunks

    async def _insert(self, conn: aiosqlite.Connection, chunks: Sequence[WarmChunk]) -> None:
        await conn.executemany(
            _INSERT_CHUNK, [(c.tag_id, c.start, c.end, c.count, c.codec, c.blob) for c in chunks]
        )

    @staticmethod
    def _count(run: Run, rows: int, chunks: Sequence[WarmChunk]) -> None:
        report = run.report
        report.hot_to_warm += rows
        report.chunks_written += len(chunks)
        report.swinging_door_dropped += rows - sum(c.count for c in chunks)

    async def _deviation_of(self, tag_id: int) -> float | None:
        if not self.deviations:
            return None
        name = self._tag_names.get(tag_id)
        if name is None:
            rows = await self._store.connection.execute_fetchall("SELECT id, name FROM tags")
            self._tag_names = {int(i): str(n) for i, n in rows}
            name = self._tag_names.get(tag_id)
        return self.deviations.get(name) if name is not None else None


def move_batches(counts: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """`(first tag, last tag, rows)` of consecutive tags with up to MOVE_BATCH_SAMPLES rows.

    `counts` are `(tag_id, rows)` ascending by tag; a tag with more rows than
    that makes a batch of its own.
    """
    out: list[tuple[int, int, int]] = []
    for tag_id, rows in counts:
        if out and out[-1][2] + rows <= MOVE_BATCH_SAMPLES:
            lo, _, total = out[-1]
            out[-1] = (lo, tag_id, total + rows)
        else:
            out.append((tag_id, tag_id, rows))
    return out
