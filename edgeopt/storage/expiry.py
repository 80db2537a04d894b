"""cold → archive: cold blocks past the cold retention go to monthly archive files, or are deleted.

An archive move spans two files, so it is two commits: the block is written
to its archive file (fsync'd) before it is deleted here. A crash in between
leaves it in both; queries count it once (blocks keep their id), and the next
run finishes the move.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from edgeopt.clock import Clock
from edgeopt.storage import archive
from edgeopt.storage.hot import HotStore
from edgeopt.storage.moves import Run

#: Cold blocks exported or deleted per transaction (a month of one tag is 31).
BLOCK_BATCH = 256

_BLOCKS = (
    "SELECT c.id, c.tag_id, COALESCE(t.name, 'tag#' || c.tag_id), c.start_ts, c.end_ts, "
    "c.count, c.buckets, c.resolution, c.codec, c.blob "
    "FROM cold AS c LEFT JOIN tags AS t ON t.id = c.tag_id "
    "WHERE c.end_ts <= ? ORDER BY c.start_ts, c.id LIMIT ?"
)


class ColdExpiry:
    """Exports (or deletes) the oldest cold blocks."""

    def __init__(self, store: HotStore, clock: Clock, archive_dir: Path | None) -> None:
        self._store = store
        self._clock = clock
        self._archive_dir = archive_dir

    async def expire(self, cutoff: float, run: Run) -> None:
        """Archive (or delete) every cold block that ends at or before `cutoff`."""
        while not run.out_of_time():
            blocks = await self.blocks(cutoff)
            if not blocks:
                return
            await self.export_or_delete(blocks, run)
            await asyncio.sleep(0)

    async def blocks(self, cutoff: float) -> list[archive.Block]:
        """Up to BLOCK_BATCH of the oldest cold blocks ending at or before `cutoff`."""
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

    async def export_or_delete(self, blocks: Sequence[archive.Block], run: Run) -> None:
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
        report = run.report
        if directory is not None:
            report.archived_blocks += len(blocks)
            report.archived_samples += samples
        else:
            report.deleted_blocks += len(blocks)
            report.deleted_samples += samples
