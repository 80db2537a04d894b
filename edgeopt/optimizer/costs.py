"""Cost models measured online, and each line's bus budget.

A read costs `α + β·registers` bus seconds.

- Serial (RTU): the wire time follows from the baud rate (11 bits a
  character, 8 request bytes, 5 + 2n response bytes, two 3.5-character
  silences); only the device's turnaround is unknown, so it is the median of
  `latency - wire time` over recent reads.
  RTU over TCP is priced the same way: the RS-485 side of the converter is
  the bottleneck, so its cost is bus time at the line's baud rate.
- TCP: α and β are a least-squares fit of latency on
  register count over recent reads; with too little spread in the counts to
  see a slope, α is the median latency and β keeps the default's ratio.

`bus_budget` is the share of a line's time the plan may use (the rest absorbs
retries, trigger reads and probes). Over budget, `shed_to_budget` widens
intervals, lowest priority first, and says which tags it slowed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from edgeopt.modbus.planner import (
    CostModel,
    DeviceLimits,
    PlanTag,
    Priority,
    Table,
    plan_reads,
)
from edgeopt.poller import SERIAL_TRANSPORTS, DeviceRuntime

DEFAULT_BUS_BUDGET = 0.7
MIN_COST_SAMPLES = 16
# A new fit replaces the model only if it moved this much (re-planning has a price).
REFIT_CHANGE = 0.2
# Step by which shedding widens an interval.
SHED_STEP = 1.5


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of `values`, linear between the two nearest ranks (numpy's default).

    Exact where both ranks hold the same value: a run of equal latencies has
    itself as its percentile, so none of it is dropped as an outlier.
    """
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    a, b, t = ordered[low], ordered[high], position - low
    return b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t


def fit_cost(
    samples: Sequence[tuple[int, float]],
    *,
    transport: str,
    baudrate: int,
    default: CostModel,
) -> CostModel | None:
    """A cost model fitted to (registers, latency) samples; None with too few of them."""
    if len(samples) < MIN_COST_SAMPLES:
        return None
    # Retries and hiccups are not the bus's price: drop the slowest tenth.
    cut = quantile([lat for _, lat in samples], 0.9)
    kept = [(float(n), float(lat)) for n, lat in samples if lat <= cut]
    counts = [n for n, _ in kept]
    latencies = [lat for _, lat in kept]
    if transport in SERIAL_TRANSPORTS:
        wire = CostModel.serial(baudrate, turnaround=0.0)
        spare = [lat - (wire.per_read + wire.per_register * n) for n, lat in kept]
        turnaround = max(0.0, statistics.median(spare))
        return CostModel.serial(baudrate, turnaround=turnaround)
    if len(counts) >= 2 and max(counts) - min(counts) >= 4:
        slope, intercept = statistics.linear_regression(counts, latencies)
        per_register = max(0.0, slope)
        per_read = max(1e-4, intercept)
    else:
        ratio = default.per_register / default.per_read if default.per_read > 0 else 0.0
        per_read = max(
            1e-4, statistics.median(latencies) / (1.0 + ratio * statistics.median(counts))
        )
        per_register = per_read * ratio
    return CostModel(per_read=per_read, per_register=per_register, per_bit=per_register / 16)


def _moved(old: CostModel, new: CostModel) -> bool:
    def rel(a: float, b: float) -> float:
        return abs(a - b) / max(abs(a), 1e-9)

    return rel(old.per_read, new.per_read) > REFIT_CHANGE or (
        rel(old.per_register, new.per_register) > REFIT_CHANGE
        and abs(old.per_register - new.per_register) * 125 > 0.05 * old.per_read
    )


def refit_costs(devices: Iterable[DeviceRuntime], defaults: Mapping[str, CostModel]) -> list[str]:
    """Refit every device's cost model from its samples; returns the devices that changed."""
    changed: list[str] = []
    for device in devices:
        fitted = fit_cost(
            list(device.cost_samples),
            transport=device.config.transport,
            baudrate=device.config.baudrate,
            default=defaults.get(device.name, device.cost),
        )
        if fitted is not None and _moved(device.cost, fitted):
            device.cost = fitted
            changed.append(device.name)
    return changed


def bus_budget_of(device: DeviceRuntime, default: float = DEFAULT_BUS_BUDGET) -> float:
    """The device's configured bus budget (a `bus_budget` key, when the config has one)."""
    value = getattr(device.config, "bus_budget", None)
    return float(value) if isinstance(value, int | float) and value > 0 else default


@dataclass(frozen=True, slots=True)
class PlanTagSpec:
    """What shedding needs about a tag besides its interval."""

    key: str
    device: str
    table: Table
    address: int
    width: int
    ceiling: float
    priority: Priority


@dataclass(frozen=True, slots=True)
class ShedReport:
    """One line over its budget, and what was done about it."""

    line: str
    budget: float
    load_before: float
    load_after: float
    slowed: tuple[str, ...]

    @property
    def met(self) -> bool:
        return self.load_after <= self.budget + 1e-9

    def to_dict(self) -> dict[str, object]:
        return {
            "line": self.line,
            "budget": round(self.budget, 4),
            "load_before": round(self.load_before, 4),
            "load_after": round(self.load_after, 4),
            "slowed": len(self.slowed),
            "met": self.met,
        }


def line_load(
    specs: Sequence[PlanTagSpec],
    intervals: Mapping[str, float],
    limits: Mapping[str, DeviceLimits],
    costs: Mapping[str, CostModel],
) -> float:
    """Planned bus seconds per second of the given tags at the given intervals."""
    tags = [
        PlanTag(s.key, s.device, s.table, s.address, s.width, intervals[s.key], s.priority)
        for s in specs
    ]
    if not tags:
        return 0.0
    return plan_reads(tags, limits, costs).bus_seconds_per_second()


def shed_to_budget(
    specs: Sequence[PlanTagSpec],
    intervals: Mapping[str, float],
    line_of: Mapping[str, str],
    budgets: Mapping[str, float],
    limits: Mapping[str, DeviceLimits],
    costs: Mapping[str, CostModel],
) -> tuple[dict[str, float], list[ShedReport]]:
    """Widen intervals on lines over budget, low priority first; returns new intervals."""
    out = dict(intervals)
    reports: list[ShedReport] = []
    by_line: dict[str, list[PlanTagSpec]] = {}
    for spec in specs:
        by_line.setdefault(line_of[spec.device], []).append(spec)
    for line, members in sorted(by_line.items()):
        budget = budgets.get(line, DEFAULT_BUS_BUDGET)
        load = before = line_load(members, out, limits, costs)
        if load <= budget:
            continue
        slowed: set[str] = set()
        for priority in (Priority.LOW, Priority.NORMAL, Priority.HIGH):
            group = [s for s in members if s.priority is priority]
            while load > budget:
                movable = [s for s in group if out[s.key] < s.ceiling]
                if not movable:
                    break
                for s in movable:
                    out[s.key] = min(s.ceiling, out[s.key] * SHED_STEP)
                    slowed.add(s.key)
                load = line_load(members, out, limits, costs)
            if load <= budget:
                break
        reports.append(ShedReport(line, budget, before, load, tuple(sorted(slowed))))
    return out, reports


def median_latency(device: DeviceRuntime) -> float | None:
    """The device's median latency over its recent reads, in seconds."""
    latencies = list(device.stats.latencies)
    return statistics.median(latencies) if latencies else None
