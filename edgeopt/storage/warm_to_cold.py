"""warm → cold: a tag's chunks of one UTC day become one block of per-bucket aggregates.

The raw samples are gone after this move; the block keeps count, min, max,
mean and last per `cold_resolution` bucket (`edgeopt.storage.aggregates`).
The chunks are read, deleted and replaced here, in one transaction; the
storage codec worker decodes them and makes the block
(`edgeopt.storage.codec_worker.aggregate`).
"""

from __future__ import annotations

import asyncio
import math

from edgeopt.storage.codec_client import CodecClient
from edgeopt.storage.hot import HotStore
from edgeopt.storage.moves import COLD_BLOCK_SECONDS, Run, StorageInvariantError, oldest_window

_INSERT_COLD = (
    "INSERT INTO cold (tag_id, start_ts, end_ts, count, buckets, resolution, codec, blob) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class WarmToCold:
    """Aggregates warm chunks into cold blocks, one tag-day per transaction."""

    def __init__(self, store: HotStore, codec: CodecClient, resolution: float) -> None:
        self._store = store
        self._codec = codec
        self._resolution = resolution

    async def move(self, cutoff: float, run: Run) -> None:
        """Aggregate every complete UTC day of chunks that ends at or before `cutoff`."""
        conn = self._store.connection
        seen: dict[float, int] = {}
        while not run.out_of_time():
            day = await oldest_window(
                conn,
                "SELECT MIN(start_ts) FROM chunks",
                COLD_BLOCK_SECONDS,
                cutoff,
                seen,
                "warm chunks",
            )
            if day is None:
                return
            tags = await conn.execute_fetchall(
                "SELECT DISTINCT tag_id FROM chunks WHERE start_ts >= ? AND start_ts < ? "
                "ORDER BY tag_id",
                (day, day + COLD_BLOCK_SECONDS),
            )
            for (tag_id,) in tags:
                await self._move_day(int(tag_id), day, run)
                await asyncio.sleep(0)
                if run.out_of_time():
                    return

    async def oldest_day(self, now: float, run: Run) -> bool:
        """Aggregate the oldest day of chunks early (the disk budget); False if none may go."""
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
            await self._move_day(int(tag_id), day, run)
            await asyncio.sleep(0)
        return True

    async def _move_day(self, tag_id: int, day: float, run: Run) -> None:
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
            block = await self._codec.aggregate(
                [bytes(blob) for _, _, blob in chunks], self._resolution
            )
            if block.samples != sum(int(count) for _, count, _ in chunks):
                raise StorageInvariantError(
                    f"aggregating tag {tag_id} on day {day}: the block does not stand for "
                    "the samples of its chunks"
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
                    block.start,
                    block.end,
                    block.samples,
                    block.buckets,
                    self._resolution,
                    block.codec,
                    block.blob,
                ),
            )
        run.report.warm_to_cold += block.samples
        run.report.cold_blocks_written += 1
