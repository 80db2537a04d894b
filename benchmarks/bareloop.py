"""A bare pymodbus read loop: the reference the daemon's acquisition overhead is measured against.

`python -m benchmarks.bareloop PLAN.json SECONDS` makes the reads listed in
PLAN.json (device endpoints, and reads as device, table, start, count,
period), each at its period, with one client and one request in flight per
device, as the daemon does, and nothing else: no decoding, no tag state, no
storage, no control socket. It prints one JSON line with what it did.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import sys
import time
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

__all__ = ["main", "run"]


async def _read(client: Any, table: str, start: int, count: int, unit: int) -> Any:
    if table == "holding":
        return await client.read_holding_registers(start, count=count, device_id=unit)
    if table == "input":
        return await client.read_input_registers(start, count=count, device_id=unit)
    if table == "coil":
        return await client.read_coils(start, count=count, device_id=unit)
    return await client.read_discrete_inputs(start, count=count, device_id=unit)


async def _device(
    endpoint: dict[str, Any], reads: list[list[Any]], stop_at: float, totals: dict[str, int]
) -> None:
    client = AsyncModbusTcpClient(endpoint["host"], port=int(endpoint["port"]), timeout=1.0)
    await client.connect()
    loop = asyncio.get_running_loop()
    now = loop.time()
    # Staggered first reads, then each at its period, skipping missed periods.
    heap = [(now + min(1.0, r[4]) * i / len(reads), i) for i, r in enumerate(reads)]
    heapq.heapify(heap)
    unit = int(endpoint.get("unit", 1))
    try:
        while True:
            due, i = heap[0]
            now = loop.time()
            if now >= stop_at:
                break
            if due > now:
                await asyncio.sleep(min(due, stop_at) - now)
                continue
            heapq.heappop(heap)
            _device_name, table, start, count, period = reads[i]
            try:
                rr = await _read(client, table, int(start), int(count), unit)
                if rr.isError():
                    totals["errors"] += 1
                else:
                    totals["reads"] += 1
                    totals["registers"] += int(count)
            except Exception:
                totals["errors"] += 1
            nxt = due + float(period)
            now = loop.time()
            if nxt <= now:
                nxt += float(period) * ((now - nxt) // float(period) + 1)
            heapq.heappush(heap, (nxt, i))
    finally:
        client.close()


async def run(plan: dict[str, Any], seconds: float) -> dict[str, Any]:
    by_device: dict[str, list[list[Any]]] = {}
    for r in plan["reads"]:
        by_device.setdefault(r[0], []).append(r)
    totals = {"reads": 0, "registers": 0, "errors": 0}
    stop_at = asyncio.get_running_loop().time() + seconds
    cpu0 = time.process_time()
    await asyncio.gather(
        *(_device(plan["devices"][d], reads, stop_at, totals) for d, reads in by_device.items())
    )
    return {**totals, "cpu_seconds": time.process_time() - cpu0, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m benchmarks.bareloop PLAN.json SECONDS", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as fh:
        plan = json.load(fh)
    print(json.dumps(asyncio.run(run(plan, float(args[1])))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
