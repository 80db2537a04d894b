"""hot → warm: raw rows older than the hot retention become one lossless chunk per tag and hour.

Tags with a swinging-door `compression_deviation` are thinned first; every
other tag's rows come back bit for bit from the chunk (`edgeopt.storage.chunks`).

Several tags' chunks move in one transaction (up to MOVE_BATCH_SAMPLES rows in
all): hot rows are clustered by time, then tag, so every tag's delete dirties
nearly every page of the hour, and a commit per tag would write those pages
to the WAL once per tag. A tag with more rows than that moves alone, a chunk
(MAX_CHUNK_SAMPLES) per transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np

from edgeopt.storage.chunks import Encoded, Rows, StoredValue, encode_samples
from edgeopt.storage.codecs import Compressor
from edgeopt.storage.hot import HotStore
from edgeopt.storage.moves import (
    CHUNK_SECONDS,
    MAX_CHUNK_SAMPLES,
    Run,
    StorageInvariantError,
    changes,
    oldest_window,
)
from edgeopt.storage.schema import ValueKind, bucket_of
from edgeopt.storage.swinging_door import keep_mask

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
    "SELECT tag_id, COUNT(*) FROM samples "
    "WHERE bucket >= ? AND bucket <= ? AND ts >= ? AND ts < ? GROUP BY tag_id ORDER BY tag_id"
)
_INSERT_CHUNK = (
    "INSERT INTO chunks (tag_id, start_ts, end_ts, count, codec, blob) VALUES (?, ?, ?, ?, ?, ?)"
)


class HotToWarm:
    """Moves hot rows into warm chunks, a batch of tag-hours per transaction."""

    def __init__(self, store: HotStore, compressors: Sequence[Compressor]) -> None:
        self._store = store
        self._compressors = tuple(compressors)
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
            records = list(await conn.execute_fetchall(_READ_HOT_TAGS, bounds))
            if not records:
                return
            by_tag: dict[int, list[tuple[float, StoredValue, int, int]]] = {}
            for tag_id, ts, value, quality, kind in records:
                by_tag.setdefault(tag_id, []).append((ts, value, quality, kind))
            pieces: list[tuple[int, Rows, float | None]] = []
            for tag_id in sorted(by_tag):
                deviation = await self._deviation_of(tag_id)
                rows = _by_ts(Rows.from_records(by_tag[tag_id]))
                # Cut as the tag's own moves would: the oldest MAX_CHUNK_SAMPLES first.
                for i in range(0, len(rows), MAX_CHUNK_SAMPLES):
                    piece = rows
                    if len(rows) > MAX_CHUNK_SAMPLES:
                        piece = rows.take(np.arange(i, min(i + MAX_CHUNK_SAMPLES, len(rows))))
                    pieces.append((tag_id, piece, deviation))
            encoded = await asyncio.to_thread(self._encode_all, pieces)
            await conn.execute(_DELETE_HOT_TAGS, bounds)
            deleted = await changes(conn)
            if deleted != len(records):
                raise StorageInvariantError(
                    f"moving tags {lo}..{hi} at {window}: read {len(records)} rows, "
                    f"delete would remove {deleted}"
                )
            await conn.executemany(
                _INSERT_CHUNK,
                [
                    (tag_id, e.start, e.end, e.count, e.codec, e.blob)
                    for (tag_id, _, _), (e, _) in zip(pieces, encoded, strict=True)
                ],
            )
        report = run.report
        report.hot_to_warm += len(records)
        report.chunks_written += len(pieces)
        report.swinging_door_dropped += len(records) - sum(kept for _, kept in encoded)

    async def _move_rows(self, tag_id: int, window: float, run: Run) -> int:
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
            encoded, kept = await asyncio.to_thread(self._encode, rows, deviation)
            first, last = float(rows.ts[0]), float(rows.ts[-1])
            await conn.execute(
                _DELETE_HOT, (bucket_of(first), bucket_of(last), tag_id, first, last)
            )
            deleted = await changes(conn)
            if deleted != len(rows):
                raise StorageInvariantError(
                    f"moving tag {tag_id} at {window}: read {len(rows)} rows, "
                    f"delete would remove {deleted}"
                )
            await conn.execute(
                _INSERT_CHUNK,
                (tag_id, encoded.start, encoded.end, encoded.count, encoded.codec, encoded.blob),
            )
        report = run.report
        report.hot_to_warm += len(rows)
        report.chunks_written += 1
        report.swinging_door_dropped += len(rows) - kept
        return len(rows)

    def _encode_all(
        self, pieces: Sequence[tuple[int, Rows, float | None]]
    ) -> list[tuple[Encoded, int]]:
        return [self._encode(rows, deviation) for _, rows, deviation in pieces]

    def _encode(self, rows: Rows, deviation: float | None) -> tuple[Encoded, int]:
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


def _by_ts(rows: Rows) -> Rows:
    """`rows` ascending by ts (they nearly always are already)."""
    if len(rows) > 1 and not bool((np.diff(rows.ts) > 0).all()):
        return rows.take(np.argsort(rows.ts, kind="stable"))
    return rows
