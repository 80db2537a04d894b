"""Helper process for the kill -9 test: writes samples through HotStore until killed.

Usage: python tests/storage_writer_proc.py DB_PATH FIRST BATCH

Sample number i (counting from FIRST) is tag `crash/t{i % 10}`, ts
`1.7e9 + i / 1000`, value `i`, so the test can tell exactly which samples
exist. After every successful flush it prints the number of samples committed
so far (one line, flushed at once): a printed count is an acknowledgement.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from edgeopt.clock import SystemClock
from edgeopt.storage import HotStore, Sample


def sample(i: int) -> Sample:
    return Sample(f"crash/t{i % 10}", 1.7e9 + i / 1000, i, "good")


async def write_forever(path: Path, first: int, batch: int) -> None:
    store = await HotStore.open(path, clock=SystemClock(), flush_rows=batch, max_buffer=batch * 4)
    i = first
    acked = 0
    while True:
        store.extend(sample(n) for n in range(i, i + batch))
        i += batch
        written = await store.flush()
        if written != batch:  # a storage error: the test wants to hear about it
            print(f"error {store.status().last_error}", flush=True)
            sys.exit(1)
        acked += written
        print(acked, flush=True)


def main() -> None:
    path, first, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    asyncio.run(write_forever(path, first, batch))


if __name__ == "__main__":
    main()
