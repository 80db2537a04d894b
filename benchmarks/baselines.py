"""The baselines of BENCHMARK.md §1, as read logs generated analytically (no poller needed).

- fixed_naive: one request per tag, every tag at its configured `interval`.
- fixed_coalesced@P: Telegraf `max_insert`-style block reads per device and
  table (`edgeopt.modbus.planner.fixed_block_plan`: gap ≤ max_gap,
  ≤ 125 registers), every block at the fixed period P. P ∈ 0.5, 1, 2, 3, 5 s
  traces the fixed frontier.
- fixed_by_interval: block reads per device, table and configured interval,
  every tag read at exactly its configured interval (one Telegraf instance
  per interval).
- oracle: a clairvoyant poller with the same blocks that reads each block as
  late as the SLA allows (at the earliest deadline, event + max_staleness,
  of the events not yet seen). Per block this is the classic interval
  stabbing problem, which the earliest-deadline greedy solves optimally, so
  it is a lower bound on reads/s for the SLA alone (it ignores fidelity, so
  its out_of_deadband is poor by design).

Phases: reads of one device are spread over min(P, 1 s), as edgeopt's
schedule staggers a line's first reads, so a device's reads do not all fall
at the same instant; each device's reads start at an offset of their own (a
hash of its name), since no real poller is phase-locked to a device's
internal update clock.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from edgeopt.modbus.planner import DeviceLimits, PlanTag, Priority, Read, Table, fixed_block_plan
from simulators.plant import Plant

from .metrics import GroundTruth, ReadKey, ReadLog

__all__ = [
    "COALESCED_PERIODS",
    "device_limits",
    "fixed_by_interval",
    "fixed_coalesced",
    "fixed_naive",
    "oracle",
    "plan_tags",
    "reads_log",
]

COALESCED_PERIODS = (0.5, 1.0, 2.0, 3.0, 5.0)
STAGGER = 1.0


def plan_tags(plant: Plant) -> list[PlanTag]:
    """The planner's view of every tag of the plant, at its configured interval."""
    return [
        PlanTag(
            key=f"{d.name}/{t.name}",
            device=d.name,
            table=Table(t.table),
            address=t.address,
            width=t.width,
            interval=float(t.interval),
            priority=Priority(t.priority),
        )
        for d, t in plant.iter_tags()
    ]


def device_limits(plant: Plant) -> dict[str, DeviceLimits]:
    """Each device's limits as a fixed poller must respect them.

    A device strict about holes refuses a block read across one (ILLEGAL DATA
    ADDRESS), so a working fixed configuration for it merges only contiguous
    tags (max_gap 0): the baseline must be one a user could actually run.
    """
    return {
        d.name: DeviceLimits(
            max_registers=d.max_registers_per_read, max_gap=0 if d.strict_gaps else d.max_gap
        )
        for d in plant.devices
    }


def _key(read: Read) -> ReadKey:
    return ReadKey(read.device, read.table.value, read.start, read.count, read.tags)


def reads_log(reads: Sequence[Read], t0: float, t1: float, name: str) -> ReadLog:
    """Every read at its period from t0 (staggered per device) until t1."""
    by_device: dict[str, list[Read]] = {}
    for r in reads:
        by_device.setdefault(r.device, []).append(r)
    series: list[tuple[ReadKey, np.ndarray]] = []
    for device, dev_reads in by_device.items():
        n = len(dev_reads)
        # A device's own update clock is not locked to its poller's: without an
        # offset of its own, a baseline reading at whole seconds would catch every
        # 1 s signal update the instant it happens, a luck no real poller has.
        offset = (zlib.crc32(device.encode()) % 1000) / 1000.0
        for i, r in enumerate(dev_reads):
            phase = min(r.period, STAGGER) * ((i / n + offset) % 1.0)
            times = np.arange(t0 + phase, t1, r.period)
            series.append((_key(r), times))
    return ReadLog.from_series(series, t0, t1, name)


def fixed_naive(plant: Plant, t0: float, t1: float) -> ReadLog:
    """One request per tag at its configured interval."""
    reads = [
        Read(t.device, t.table, t.address, t.width, t.interval, (t.key,), t.priority)
        for t in plan_tags(plant)
    ]
    return reads_log(reads, t0, t1, "fixed_naive")


def fixed_coalesced(plant: Plant, period: float, t0: float, t1: float) -> ReadLog:
    """Telegraf max_insert block reads, everything at `period`."""
    reads = fixed_block_plan(plan_tags(plant), device_limits(plant), period)
    return reads_log(reads, t0, t1, f"fixed_coalesced@{period:g}s")


def fixed_by_interval(plant: Plant, t0: float, t1: float) -> ReadLog:
    """Block reads per configured interval: what Telegraf or Neuron users run.

    Both read one interval per plugin instance (or group), so tags configured
    at 5 s are block-read at 5 s apart from the 1 s ones: every tag is read at
    exactly the interval its user asked for. The fidelity bar of do-no-harm.
    """
    by_interval: dict[float, list[PlanTag]] = {}
    for tag in plan_tags(plant):
        by_interval.setdefault(tag.interval, []).append(tag)
    limits = device_limits(plant)
    reads = [r for tags in by_interval.values() for r in fixed_block_plan(tags, limits)]
    return reads_log(reads, t0, t1, "fixed_by_interval")


def oracle(plant: Plant, truth: GroundTruth, t0: float, t1: float) -> ReadLog:
    """Clairvoyant: each block read once at t0, then at the earliest unmet SLA deadline."""
    blocks = fixed_block_plan(plan_tags(plant), device_limits(plant))
    series: list[tuple[ReadKey, np.ndarray]] = []
    for block in blocks:
        starts: list[np.ndarray] = []
        deadlines: list[np.ndarray] = []
        for tag in block.tags:
            tt = truth.tags.get(tag)
            if tt is None or tt.events.size == 0:
                continue
            starts.append(tt.events)
            deadlines.append(tt.events + tt.max_staleness)
        times = [t0]
        if starts:
            ev = np.concatenate(starts)
            dl = np.concatenate(deadlines)
            order = np.argsort(dl, kind="stable")
            # Earliest-deadline greedy: read at the first deadline not yet
            # met; that read sees every event that happened by then.
            last = t0
            for e, d in zip(ev[order].tolist(), dl[order].tolist(), strict=True):
                if e > last:
                    last = min(d, t1)
                    times.append(last)
        series.append((_key(block), np.unique(np.asarray(times))))
    return ReadLog.from_series(series, t0, t1, "oracle")
