"""Helper process for the tier-migration crash test: runs the lifecycle until killed.

Usage: python tests/storage_lifecycle_proc.py DB_PATH ARCHIVE_DIR START STEP STEPS

Opens the store, prints "ready", then runs `TierManager.run_lifecycle()` with
a virtual clock at START, START + STEP, … (STEPS runs), printing one line per run. The test
kills it with SIGKILL at random moments and checks that every sample is still
in exactly one tier. Retentions are short (hot 2 h, warm 6 h, cold 12 h) so
each run has something to move.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from edgeopt.clock import VirtualClock
from edgeopt.storage import HotStore
from edgeopt.storage.tiers import TierManager

HOT, WARM, COLD = 2 * 3600.0, 6 * 3600.0, 12 * 3600.0


async def run(path: Path, archive_dir: Path, start: float, step: float, steps: int) -> None:
    clock = VirtualClock(start)
    store = await HotStore.open(path, clock=clock)
    tiers = TierManager(
        store,
        clock=clock,
        hot_retention=HOT,
        warm_retention=WARM,
        cold_retention=COLD,
        cold_resolution=60.0,
        archive_dir=archive_dir,
    )
    print("ready", flush=True)
    for _ in range(steps):
        report = await tiers.run_lifecycle()
        print(
            f"{clock.now():.0f} hot→warm {report.hot_to_warm} warm→cold {report.warm_to_cold} "
            f"archived {report.archived_blocks} errors {report.errors}",
            flush=True,
        )
        clock.advance(step)
    await tiers.close()
    await store.close()
    print("done", flush=True)


def main() -> None:
    path, archive_dir = Path(sys.argv[1]), Path(sys.argv[2])
    start, step, steps = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    asyncio.run(run(path, archive_dir, start, step, steps))


if __name__ == "__main__":
    main()
