"""Helper process for the codec worker test: tier moves and queries in a process without numpy.

Usage: python tests/storage_codec_proc.py DB_PATH ARCHIVE_DIR

Writes four days of a tag sampled every minute, runs the lifecycle so that
every tier (hot, warm, cold, archive) holds some of it, queries it across the
tiers (raw, and hourly means), and prints one JSON line: this process's pid
and whether it imported numpy, the codec worker's pid and modules, the
lifecycle report and the query results. Nothing here imports numpy, as in
the daemon.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from pathlib import Path

from edgeopt.clock import VirtualClock
from edgeopt.storage import HotStore, Sample
from edgeopt.storage.tiers import TierManager

D0 = 1_700_006_400.0  # a UTC midnight
DAY, HOUR = 86400.0, 3600.0


async def run(path: Path, archive_dir: Path) -> dict[str, object]:
    clock = VirtualClock(D0)
    store = await HotStore.open(path, clock=clock, flush_rows=100_000, max_buffer=10**6)
    samples = [
        Sample("plc/temp", D0 + i * 60, round(20 + 5 * math.sin(i / 30), 1), "good")
        for i in range(4 * 1440)
    ]
    store.extend(samples)
    await store.flush()
    tiers = TierManager(
        store,
        clock=clock,
        hot_retention=DAY,
        warm_retention=2 * DAY,
        cold_retention=3 * DAY,
        cold_resolution=600.0,
        archive_dir=archive_dir,
    )
    clock.advance(4 * DAY + HOUR)
    report = await tiers.run_lifecycle()
    raw = await tiers.query("plc/temp")
    hourly = await tiers.query("plc/temp", resolution=HOUR)
    worker = tiers.codec_worker
    out = {
        "pid": os.getpid(),
        "numpy": "numpy" in sys.modules,
        "worker_pid": worker.pid,
        "worker_modules": await worker.loaded_modules(),
        "report": report.to_dict(),
        "raw": raw.to_dict(),
        "hourly": hourly.to_dict(),
    }
    await tiers.close()
    out["worker_after_close"] = worker.pid
    await store.close()
    return out


def main() -> None:
    out = asyncio.run(run(Path(sys.argv[1]), Path(sys.argv[2])))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
