"""Interval allocation: read periods that buy the most fidelity per second of bus time.

Pure: no I/O, no clock. The fidelity model is the one the benchmark scores:
a tag whose value leaves its deadband `rate` times a second, read every `P`
seconds, shows a wrong value for about `rate × P / 2` of the time (each change
waits half a period on average to be seen). Its "out of deadband" share is
therefore linear in P with slope `rate / 2`.

Tags that sit in one read share its period. So the allocation is a dynamic
programme over contiguous partitions of each (device, table), like the cost
planner's, where a segment's period is chosen in closed form: minimising
`cost / P + λ · W · P` (W: the segment's summed, priority-weighted slopes)
gives `P = sqrt(cost / (λ W))`, clamped to the members' limits. A quiet tag
(slope 0) therefore goes to its max_staleness, and a busy tag that shares a
read with others pays only its share of it.

`allocate_for_budget` searches λ (bisection on a log scale) for the cheapest
allocation whose predicted out-of-deadband total stays within a budget; the
budget is what the user's own intervals would give, so edgeopt keeps the
fidelity the config asks for at less bus time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from edgeopt.modbus.planner import CostModel, DeviceLimits, Priority, Table, read_links

# Periods snap to a geometric grid (about 9 % steps), so small changes in
# the estimates do not re-plan the line every cycle.
_GRID_STEPS_PER_OCTAVE = 8
_LAMBDA_LOW = 1e-9
_LAMBDA_HIGH = 1e9
_LAMBDA_CEILING = 1e30


@dataclass(slots=True)
class TagDemand:
    """One tag as the allocation sees it.

    rate: change events per second expected over the coming period.
    weight: how much its fidelity counts (priority).
    carried: the summed rates of the trigger followers this tag leads: their
        changes are seen when this tag's read sees its own, so its period
        decides their fidelity too.
    follower: a trigger follower; its own period does not matter for
        fidelity (its leader's does), so it may sit at its ceiling.
    floor / ceiling: the interval range the tag may be given.
    """

    key: str
    device: str
    table: Table
    address: int
    width: int
    floor: float
    ceiling: float
    rate: float
    weight: float = 1.0
    priority: Priority = Priority.NORMAL
    carried: float = 0.0
    follower: bool = False
    # The period the tag is read at anyway in the configured plan. Sharing a
    # faster read than that earns no credit: the model over-states what a busy
    # tag gains from speed, and such credit paid for real losses elsewhere.
    credit_floor: float = 0.0
    # Out-of-deadband no period choice changes: a follower's changes its leader
    # missed, each seen only at the leader's next change (or its own heartbeat).
    fixed: float = 0.0

    @property
    def end(self) -> int:
        return self.address + self.width

    @property
    def slope(self) -> float:
        """Out-of-deadband share (its own and its followers') per second of read period."""
        return 0.0 if self.follower else (self.rate + self.carried) / 2.0


@dataclass(frozen=True)
class Allocation:
    """A period for every tag, with what it is predicted to cost and lose."""

    intervals: dict[str, float]
    bus: float  # predicted bus seconds per second (sum over devices)
    ood: float  # predicted out-of-deadband, summed over tags (divide by tag count for the mean)
    weight: float  # the λ that produced it
    bus_by_device: dict[str, float] = field(default_factory=dict)


def snap_period(period: float) -> float:
    """The nearest point of the period grid (powers of 2^(1/8))."""
    if period <= 0 or not math.isfinite(period):
        return period
    steps = round(math.log2(period) * _GRID_STEPS_PER_OCTAVE)
    return float(2.0 ** (steps / _GRID_STEPS_PER_OCTAVE))


def predicted_ood(demands: Iterable[TagDemand], intervals: Mapping[str, float]) -> float:
    """Σ rate × P / 2 over tags that have an interval (P no lower than the tag's credit floor).

    Not capped at 1 per tag: the sum stands for expected seconds of lag per
    second, and a cap would make slowing a busy tag further look free.
    """
    total = 0.0
    for d in demands:
        period = intervals.get(d.key)
        if period is not None:
            total += d.slope * max(period, d.credit_floor) + d.fixed
    return total


def saturated_loss(rate: float, period: float) -> float:
    """Expected out-of-deadband share of a tag with Poisson change events, read every `period`.

    After each read the held value is right until the next event, so the share
    is 1 - (1 - e^(-rP)) / (rP): rP / 2 for a quiet tag, tending to 1 for a
    busy one (unlike the linear rP / 2, which grows without bound).
    """
    x = rate * period
    if x <= 0.0:
        return 0.0
    if x < 1e-6:
        return x / 2.0
    return 1.0 - (1.0 - math.exp(-x)) / x


def saturated_ood(demands: Iterable[TagDemand], intervals: Mapping[str, float]) -> float:
    """Σ `saturated_loss` over tags that have an interval (followers count at their leader's)."""
    total = 0.0
    for d in demands:
        period = intervals.get(d.key)
        if period is not None:
            if not d.follower:
                total += saturated_loss(d.rate + d.carried, period)
            total += d.fixed
    return total


@dataclass(slots=True)
class _Table:
    """One (device, table) prepared for repeated DP runs: plain lists for a fast inner loop."""

    device: str
    table: Table
    ordered: list[TagDemand]
    linked: list[bool]
    max_span: int
    per_read: float
    per_unit: float
    address: list[int]
    end: list[int]
    floor: list[float]
    ceiling: list[float]
    wslope: list[float]  # weight × slope


def _prepare(
    demands: Iterable[TagDemand],
    limits: Mapping[str, DeviceLimits],
    costs: Mapping[str, CostModel],
) -> list[_Table]:
    groups: dict[tuple[str, Table], list[TagDemand]] = {}
    for d in demands:
        groups.setdefault((d.device, d.table), []).append(d)
    out: list[_Table] = []
    for (device, table), members in sorted(groups.items()):
        lim = limits.get(device, DeviceLimits())
        ordered = sorted(members, key=lambda t: (t.address, t.width))
        linked = read_links(ordered, lim, table)
        cost = costs[device]
        out.append(
            _Table(
                device,
                table,
                ordered,
                linked,
                lim.max_span(table),
                cost.per_read,
                cost.per_bit if table.is_bits else cost.per_register,
                [t.address for t in ordered],
                [t.end for t in ordered],
                [t.floor for t in ordered],
                [t.ceiling for t in ordered],
                [t.weight * t.slope for t in ordered],
            )
        )
    return out


def _clamp(period: float, low: float, high: float) -> float:
    # The ceiling wins over the floor: max_staleness is a promise, min_interval a courtesy.
    return min(high, max(low, period))


def _solve_table(tab: _Table, lam: float) -> tuple[list[tuple[int, int, float]], float]:
    """Optimal partition of one table at weight λ: [(first, last+1, period)] and bus cost.

    The search uses each segment's exact optimal period; only the chosen
    segments' periods are then snapped to the grid.
    """
    n = len(tab.ordered)
    address, end_, floor_, ceiling, wslope = (
        tab.address,
        tab.end,
        tab.floor,
        tab.ceiling,
        tab.wslope,
    )
    linked, max_span, per_read, per_unit = tab.linked, tab.max_span, tab.per_read, tab.per_unit
    sqrt, inf = math.sqrt, math.inf
    best = [0.0] * (n + 1)
    cut = [0] * (n + 1)
    for i in range(1, n + 1):
        end = end_[i - 1]
        w, low, high = 0.0, inf, inf
        best_total, best_j = inf, i - 1
        for j in range(i - 1, -1, -1):
            if j < i - 1 and not linked[j]:
                break
            if end_[j] > end:
                end = end_[j]
            span = end - address[j]
            if span > max_span:
                break
            w += wslope[j]
            if floor_[j] < low:
                low = floor_[j]
            if ceiling[j] < high:
                high = ceiling[j]
            cost = per_read + per_unit * span
            if w > 0.0 and lam > 0.0:
                period = sqrt(cost / (lam * w))
                if period < low:
                    period = low
                if period > high:
                    period = high
            else:
                period = high
            total = best[j] + cost / period + lam * w * period
            if total < best_total:
                best_total, best_j = total, j
        best[i] = best_total
        cut[i] = best_j
    segments: list[tuple[int, int, float]] = []
    bus = 0.0
    i = n
    while i > 0:
        j = cut[i]
        w = sum(wslope[j:i])
        low, high = min(floor_[j:i]), min(ceiling[j:i])
        span = max(end_[j:i]) - address[j]
        cost = per_read + per_unit * span
        raw = sqrt(cost / (lam * w)) if w > 0.0 and lam > 0.0 else high
        # At a limit the limit itself is the period; in between, the grid point.
        period = _clamp(raw if raw <= low or raw >= high else snap_period(raw), low, high)
        segments.append((j, i, period))
        bus += cost / period
        i = j
    segments.reverse()
    return segments, bus


def _allocate_prepared(tables: Sequence[_Table], lam: float) -> Allocation:
    intervals: dict[str, float] = {}
    bus_by_device: dict[str, float] = {}
    ood = 0.0
    for tab in tables:
        segments, bus = _solve_table(tab, lam)
        bus_by_device[tab.device] = bus_by_device.get(tab.device, 0.0) + bus
        for first, last, period in segments:
            for tag in tab.ordered[first:last]:
                intervals[tag.key] = period
                ood += tag.slope * max(period, tag.credit_floor) + tag.fixed
    return Allocation(intervals, sum(bus_by_device.values()), ood, lam, bus_by_device)


def allocate(
    demands: Iterable[TagDemand],
    limits: Mapping[str, DeviceLimits],
    costs: Mapping[str, CostModel],
    lam: float,
) -> Allocation:
    """The allocation minimising bus + λ × weighted out-of-deadband."""
    return _allocate_prepared(_prepare(demands, limits, costs), lam)


def allocate_for_budget(
    demands: Sequence[TagDemand],
    limits: Mapping[str, DeviceLimits],
    costs: Mapping[str, CostModel],
    budget: float,
    *,
    start: float | None = None,
    iterations: int = 24,
) -> Allocation:
    """The cheapest allocation whose predicted out-of-deadband sum is at most `budget`.

    Bisection over log λ. `start` (the λ found last time) narrows the bracket,
    since the estimates move little between cycles. If even the fastest
    allocation misses the budget, that one is returned: it is the best there is.
    """
    tables = _prepare(demands, limits, costs)
    low, high = _LAMBDA_LOW, _LAMBDA_HIGH
    if start is not None and _LAMBDA_LOW < start < _LAMBDA_HIGH:
        # Widen around the previous answer until it is bracketed.
        lo_try, hi_try = start / 4.0, start * 4.0
        if _allocate_prepared(tables, lo_try).ood > budget:
            low = lo_try
            if _allocate_prepared(tables, hi_try).ood <= budget:
                high = hi_try
        else:
            high = lo_try
    best = _allocate_prepared(tables, high)
    while best.ood > budget and high < _LAMBDA_CEILING:
        # Rates of 1e-12/s need a λ beyond the usual bracket to reach their floors.
        low, high = high, high * 1e3
        best = _allocate_prepared(tables, high)
    if best.ood > budget:
        return best  # the fastest allowed allocation still misses: nothing cheaper will do
    cheapest = _allocate_prepared(tables, low)
    if cheapest.ood <= budget:
        return cheapest
    for _ in range(iterations):
        if high / low < 1.05:
            break
        mid = math.sqrt(low * high)
        trial = _allocate_prepared(tables, mid)
        if trial.ood <= budget:
            high, best = mid, trial
        else:
            low = mid
    return best
