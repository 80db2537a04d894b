"""BENCHMARK.md §4: the daemon on a baud-accurate RS-485 line, against the wire's ceiling.

The simulated devices (`simulators.server.PlantServer`, in this process)
answer behind a `PtyLine` that delays every byte by 11 bits at the baud rate
and enforces 3.5-character silences between frames (`silence_chars=3.5`,
so the ceiling comparison is honest). The daemon (`edgeopt run`, its own
process) polls them as fast as the line allows: four separate reads whose
tags ask for a 10 ms interval keep a read always due. Throughput is counted
from the simulator's request log.

Ceilings, per read of N registers (request 8 bytes, response 5 + 2N bytes,
11 bits a character, c = 11 / baud seconds):

- spec, zero turnaround: (8 + 5 + 2N + 7) c per read, BENCHMARK.md's 404
  registers/s (N = 125) and 39.7 transactions/s (N = 1) at 9600 baud;
- spec + turnaround τ: the same plus τ per read, the goal's reference;
- the line as simulated: the relay lets the device's turnaround run during
  the 3.5-character silence after the request, so a read takes
  (8 + 5 + 2N + 3.5) c + max(τ, 3.5 c): slightly more than the spec allows
  when τ ≥ 3.5 c.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simulators.plant import Endpoint, Plant, PlantDevice, PlantTag
from simulators.server import PlantServer, RequestLog
from simulators.signals import NoisyAnalog

from .procs import start_daemon, stop_process, write_config

__all__ = ["SerialPoint", "ceilings", "measure_serial"]

TURNAROUND = 0.005
FAST = 0.01  # interval asked for: faster than any read can complete
# Several reads, so that one is always due: a single read asking for more
# than the line carries would wait for its own next period after each run
# (the schedule skips missed periods rather than bursting).
BLOCKS = 4


def _plant(registers: int, blocks: int = BLOCKS) -> Plant:
    """`blocks` separate reads of `registers` registers each (gaps keep them apart)."""
    tags = [
        PlantTag(
            f"b{b}_r{i:03d}",
            "input",
            b * (registers + 100) + i,
            "uint16",
            NoisyAnalog(f"serial/{b}/{i}", 1, base=1000.0, noise_sd=5.0, quantum=1.0, period=1.0),
            interval=FAST,
            min_interval=FAST,
            max_staleness=1.0,
        )
        for b in range(blocks)
        for i in range(registers)
    ]
    device = PlantDevice(
        "rtu1", 1, tags, transport="rtu", line="bus", turnaround=TURNAROUND, timeout=2.0
    )
    return Plant(f"serial-{blocks}x{registers}", [device])


def ceilings(baud: int, registers: int, turnaround: float) -> dict[str, float]:
    """Reads/s ceilings of one line (see the module docstring)."""
    c = 11 / baud
    chars = 8 + 5 + 2 * registers
    return {
        "spec_zero": 1 / ((chars + 7) * c),
        "spec_turnaround": 1 / ((chars + 7) * c + turnaround),
        "line_model": 1 / ((chars + 3.5) * c + max(turnaround, 3.5 * c)),
    }


@dataclass
class SerialPoint:
    baud: int
    registers: int  # per read
    seconds: float
    reads: int
    failed: int
    ceilings: dict[str, float]

    @property
    def reads_per_s(self) -> float:
        return self.reads / self.seconds

    @property
    def registers_per_s(self) -> float:
        return self.reads_per_s * self.registers

    def share(self, ceiling: str) -> float:
        return self.reads_per_s / self.ceilings[ceiling]


async def _one(baud: int, registers: int, warmup: float, seconds: float) -> SerialPoint:
    plant = _plant(registers)
    requests = RequestLog(keep=None)
    with tempfile.TemporaryDirectory(prefix="edgeopt-serial-") as tmp:
        work = Path(tmp)
        async with PlantServer(
            plant, baudrate=baud, silence_chars=3.5, request_log=requests, base_port=0
        ) as server:
            ep = server.endpoints["rtu1"]
            endpoints = {"rtu1": Endpoint("rtu", ep.unit, port=ep.port, baudrate=baud)}
            config = write_config(
                plant, endpoints, work, sections={"optimizer": {"enabled": False}}
            )
            daemon = start_daemon(config, work / "daemon.log")
            try:
                await asyncio.sleep(warmup)
                w0 = time.time()
                await asyncio.sleep(seconds)
                w1 = time.time()
            finally:
                stop_process(daemon)
    recs = [r for r in requests.records if w0 <= r["ts"] < w1]
    ok = [r for r in recs if r["outcome"] == "ok"]
    return SerialPoint(
        baud,
        registers,
        w1 - w0,
        len(ok),
        len(recs) - len(ok),
        ceilings(baud, registers, TURNAROUND),
    )


def measure_serial(
    bauds: tuple[int, ...] = (9600, 19200),
    sizes: tuple[int, ...] = (125, 1),
    *,
    warmup: float = 3.0,
    seconds: float = 10.0,
    progress: Callable[[str], None] | None = None,
) -> list[SerialPoint]:
    out = []
    for baud in bauds:
        for n in sizes:
            if progress:
                progress(f"{baud} baud, {n}-register reads")
            out.append(asyncio.run(_one(baud, n, warmup, seconds)))
    return out
