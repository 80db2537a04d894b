"""The disk budget (`max_disk`): over it, compact first, then drop (export) the oldest cold data.

Acquisition never stops for the budget; an event says when data was dropped.
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

from edgeopt.storage.expiry import BLOCK_BATCH, ColdExpiry
from edgeopt.storage.figures import DiskUsage, file_size
from edgeopt.storage.hot import HotStore
from edgeopt.storage.hot_to_warm import HotToWarm
from edgeopt.storage.moves import CHUNK_SECONDS, Event, Run
from edgeopt.storage.warm_to_cold import WarmToCold

# The lifecycle's messages keep the logger they had before the tier modules were split.
log = logging.getLogger("edgeopt.storage.tiers")

#: Pages given back per `PRAGMA incremental_vacuum` step (4 MiB of 4 KiB pages).
VACUUM_STEP = 1024
#: Compaction under the disk budget moves hot data to the warm tier early, but
#: keeps the newest hour raw.
EARLY_HOT_KEEP = CHUNK_SECONDS


class DiskBudget:
    """Keeps the database (live pages + WAL) under `max_disk`, if there is one."""

    def __init__(
        self,
        store: HotStore,
        *,
        max_disk: int | None,
        archive_dir: Path | None,
        hot_to_warm: HotToWarm,
        warm_to_cold: WarmToCold,
        expiry: ColdExpiry,
        event: Event,
    ) -> None:
        self._store = store
        self._max_disk = max_disk
        self._archive_dir = archive_dir
        self._hot_to_warm = hot_to_warm
        self._warm_to_cold = warm_to_cold
        self._expiry = expiry
        self._event = event
        self._over = False  # over budget on the last run (a warning and an event on change)

    async def disk_usage(self) -> DiskUsage:
        """The database's pages, free pages and WAL size (three cheap PRAGMAs)."""
        conn = self._store.connection
        values = []
        for pragma in ("page_size", "page_count", "freelist_count"):
            rows = list(await conn.execute_fetchall(f"PRAGMA {pragma}"))
            values.append(int(rows[0][0]))
        return DiskUsage(
            values[0], values[1], values[2], file_size(Path(f"{self._store.path}-wal"))
        )

    async def enforce(self, now: float, run: Run, defer: bool) -> None:
        """Measure the database; over budget, compact (unless `defer`) and drop the oldest."""
        report = run.report
        budget = self._max_disk
        if budget is None:
            report.disk_bytes = (await self.disk_usage()).budget_bytes
            return
        usage = await self.disk_usage()
        if usage.budget_bytes <= budget:
            report.disk_bytes = usage.budget_bytes
            self._over = False
            return
        report.over_budget = True
        before = usage.budget_bytes
        if not self._over:
            self._over = True
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
            await self._hot_to_warm.move(now - EARLY_HOT_KEEP, run)
            usage = await self._compact(run)
        # 2. Drop (or export) the oldest cold data until under budget.
        dropped_before = (report.archived_samples, report.deleted_samples)
        usage = await self._drop_cold(budget, run, usage)
        # 3. Still over: turn the oldest warm days into aggregates early, drop again.
        while usage.budget_bytes > budget and not defer and not run.out_of_time():
            if not await self._warm_to_cold.oldest_day(now, run):
                break
            usage = await self._drop_cold(budget, run, await self._compact(run))
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

    async def _compact(self, run: Run) -> DiskUsage:
        """Checkpoint the WAL and give free pages back (if the file has auto-vacuum)."""
        await self._checkpoint()
        conn = self._store.connection
        mode = list(await conn.execute_fetchall("PRAGMA auto_vacuum"))
        if mode and int(mode[0][0]) == 2:  # INCREMENTAL
            free = (await self.disk_usage()).free_pages
            while free > 0 and not run.out_of_time():
                async with self._store.locked() as locked:
                    await locked.execute_fetchall(f"PRAGMA incremental_vacuum({VACUUM_STEP})")
                await asyncio.sleep(0)
                left = (await self.disk_usage()).free_pages
                if left >= free:
                    break  # nothing more to give back
                free = left
            await self._checkpoint()
        run.report.compacted = True
        return await self.disk_usage()

    async def _checkpoint(self) -> None:
        async with self._store.locked() as conn:
            # TRUNCATE resets the WAL to zero bytes; a busy reader makes it a no-op.
            await conn.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")

    async def _drop_cold(self, budget: int, run: Run, usage: DiskUsage) -> DiskUsage:
        while usage.budget_bytes > budget and not run.out_of_time():
            blocks = await self._expiry.blocks(math.inf)
            if not blocks:
                break
            # Only as many as needed: blocks are small; a batch at a time.
            await self._expiry.export_or_delete(blocks[: max(1, BLOCK_BATCH // 8)], run)
            await self._checkpoint()
            usage = await self.disk_usage()
            await asyncio.sleep(0)
        return usage
