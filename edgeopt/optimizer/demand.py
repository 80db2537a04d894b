"""From statistics to an allocation: the step every strategy's proposal goes through.

`tag_rates` turns the activity windows (and, when the pattern strategy has
switched it on, the forecast) into the change rate each tag is expected to
have over the coming period. `allocation_plan` turns those rates, the
trigger relations and the cost models into the cheapest intervals that keep
the fidelity the configured intervals really give (`allocate_for_budget`),
then widens them where a line is over its bus budget (`shed_to_budget`).

At 10k tags a search takes about a second and builds hundreds of thousands
of temporaries: its callers run it in a forked child (`edgeopt.forked`), so
the poll loop does not wait for it and the daemon's heap never holds them.
The search itself works on copies made for it (`PlanInputs`, `TagDemand`s,
which it fills in with their credit floors).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from edgeopt.modbus.planner import CostModel, DeviceLimits, PlanTag, Priority, plan_reads
from edgeopt.optimizer.activity import PRIOR_JUMPS, ActivityTracker
from edgeopt.optimizer.allocation import (
    Allocation,
    TagDemand,
    allocate_for_budget,
    predicted_ood,
    saturated_ood,
)
from edgeopt.optimizer.context import ParamValue, StrategyContext
from edgeopt.optimizer.costs import (
    DEFAULT_BUS_BUDGET,
    PlanTagSpec,
    ShedReport,
    bus_budget_of,
    shed_to_budget,
)
from edgeopt.poller import Poller

# Share of a trigger follower's changes its leader may miss (the cluster
# strategy's default min_recall is 1 - this): the allocation charges each
# follower for them, so a trigger pays for the fidelity it costs.
UNEXPLAINED = 0.2

# The allocation's knobs (the interval strategy's parameters).
ALLOCATION_DEFAULTS: dict[str, ParamValue] = {
    "rate_window": 1800.0,  # seconds of history behind a tag's rate
    "short_window": 600.0,  # with a forecast: recent activity still counts this far back
    "forecast_lead": 1200.0,  # with a forecast: read for the activity expected this far ahead
    "min_reads": 5,  # fewer reads than this in the window: the tag keeps its interval
    # A slowed tag's rate is at least its rate measured at the configured interval,
    # which counts half as much after each of these seconds.
    "reference_half_life": 3600.0,
    # Predicted out-of-deadband the allocation may add, as a share of what the
    # configured intervals already give (the benchmark allows 10 %; half of it
    # is left for estimation error).
    "fidelity_slack": 0.05,
    # ... and at least this much per tag, absolute: on a plant of quiet tags the
    # configured loss is near 0, and 5 % of nearly nothing would pin them all.
    "fidelity_floor": 0.0005,
    "weight_high": 2.0,  # how much a high/normal/low-priority tag's fidelity counts
    "weight_normal": 1.0,
    "weight_low": 0.5,
    "bus_budget": DEFAULT_BUS_BUDGET,  # max planned share of a line's time (per-device config wins)
}


@dataclass
class AllocationPlan:
    """An allocation with what it is measured against."""

    allocation: Allocation
    intervals: dict[str, float]  # after shedding
    demands: list[TagDemand]
    budget: float  # predicted out-of-deadband sum allowed (the configured intervals')
    slack: float  # of it, what the allocation may add to the configured intervals' loss
    current_bus: float  # planned bus s/s of the current allocation
    current_ood: float  # predicted out-of-deadband sum of the current allocation
    proposed_bus: float
    proposed_ood: float
    trigger_cost: float  # predicted bus s/s spent on trigger reads
    shed: list[ShedReport] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)
    inputs: PlanInputs | None = None  # for pricing variants (planned_bus) off the loop


def _param(params: Mapping[str, ParamValue], key: str) -> float:
    return float(params.get(key, ALLOCATION_DEFAULTS[key]))


def forecast_rate(
    activity: ActivityTracker,
    periods: Mapping[str, int],
    key: str,
    device: str,
    wall: float,
    lead: float,
) -> float | None:
    """The highest rate the profiles expect for `key` between now and `lead` ahead."""
    best: float | None = None
    steps = max(1, math.ceil(lead / 600.0))
    for i in range(steps + 1):
        at = wall + lead * i / steps
        rate = activity.profile_rate(key, at)
        period = periods.get(device)
        if period:
            by_period = period_rate(activity, key, device, wall, at, period)
            if by_period is not None:
                rate = by_period if rate is None else max(rate, by_period)
        if rate is not None:
            best = rate if best is None else max(best, rate)
    return best


def period_rate(
    activity: ActivityTracker, key: str, device: str, wall: float, at: float, period_hours: int
) -> float | None:
    """The tag's mean rate scaled by its device's activity one `period` before `at`."""
    series = activity.device_series.get(device)
    i = activity.index.get(key)
    if not series or i is None:
        return None
    mean = sum(series) / len(series)
    if mean <= 0:
        return None
    ahead = math.floor(at / 3600.0) - math.floor(wall / 3600.0)
    index = len(series) + ahead - period_hours
    if not 0 <= index < len(series):
        return None
    return activity.weekly_rate(i) * series[index] / mean


# A tag read within this factor of its configured interval is "at base".
AT_BASE = 1.05


def tag_rates(
    context: StrategyContext, forecast: bool, periods: Mapping[str, int] | None = None
) -> dict[str, float | None]:
    """Expected change rate per tag; None where there is too little data to say.

    A tag read at its configured interval refreshes its reference rate (see
    `PlanModel.reference_rates`); a slowed tag's rate is at least that
    reference, decaying with `reference_half_life`.

    Fast attack, slow decay: the higher of the long-window rate and the
    short-window one, so a tag that wakes up is read faster at the next
    cycle, and one that falls quiet is slowed only once it stayed quiet.
    With the forecast, the long window gives way to the profile's
    expectation for the coming `forecast_lead` (that is how quiet periods
    are slowed down early and active ones sped up ahead of time).
    """
    params = context.allocation_params
    activity = context.activity
    by_device = context.model.periods if periods is None else periods
    min_reads = _param(params, "min_reads")
    short = activity.rates(_param(params, "short_window"), prior=0.0)
    # The prior's pseudo-change is spread over all the time a tag has been read:
    # a register quiet for a day is not assumed to change every half hour.
    window = _param(params, "rate_window")
    priors: dict[str, float] = {}
    for key, tag in context.poller.tags.items():
        first = tag.state.stats.first_read_ts
        if first is not None and context.wall - first > window:
            priors[key] = PRIOR_JUMPS * window / (context.wall - first)
    long = activity.rates(window, priors=priors)
    lead = _param(params, "forecast_lead")
    half_life = _param(params, "reference_half_life")
    reference = context.model.reference_rates
    out: dict[str, float | None] = {}
    for key, tag in context.poller.tags.items():
        long_rate, long_reads = long.get(key, (0.0, 0.0))
        if long_reads < min_reads:
            out[key] = None
            continue
        short_rate, short_reads = short.get(key, (0.0, 0.0))
        recent = short_rate if short_reads >= min_reads else long_rate
        rate = max(recent, long_rate)
        if forecast:
            expected = forecast_rate(activity, by_device, key, tag.device, context.wall, lead)
            if expected is not None:
                rate = max(recent, expected)
        if tag.interval <= tag.base_interval * AT_BASE:
            # Read as configured: this rate is unbiased; remember it.
            reference[key] = (rate, context.wall)
        else:
            ref = reference.get(key)
            if ref is not None and half_life > 0:
                age = max(0.0, context.wall - ref[1])
                rate = max(rate, ref[0] * 0.5 ** (age / half_life))
        out[key] = rate
    return out


def build_demands(
    poller: Poller,
    rates: Mapping[str, float | None],
    allocated: Mapping[str, float],
    triggers: Mapping[str, frozenset[str] | tuple[str, ...]],
    params: Mapping[str, ParamValue],
    direction: str | None = None,
    misses: Mapping[str, float] | None = None,
) -> list[TagDemand]:
    """One `TagDemand` per tag; unknown rates pin the tag at its current interval.

    misses: per trigger follower, the share of its changes its leader misses
    (`UNEXPLAINED` where not known); each waits for the leader's next change.

    direction: "slower" lets no tag go faster than its current allocation, and
    "faster" none slower. A proposal that moves one way only never trades one
    tag's predicted gain for another's loss: the model over-states both for
    busy tags, and such trades were where its errors became real harm.
    """
    leader_of = {f: leader for leader, fs in triggers.items() for f in fs}
    missed: dict[str, float] = {}
    for follower, leader in leader_of.items():
        tag = poller.tags.get(follower)
        if tag is None:
            continue
        # Each missed change waits for the leader's next one, or the heartbeat.
        leader_rate = float(rates.get(leader) or 0.0)
        wait = float(tag.config.max_staleness)
        if leader_rate > 0.0:
            wait = min(wait, 1.0 / leader_rate)
        share = UNEXPLAINED if misses is None else misses.get(follower, UNEXPLAINED)
        missed[follower] = float(rates.get(follower) or 0.0) * share * wait
    carried: dict[str, float] = {}
    for follower, leader in leader_of.items():
        carried[leader] = carried.get(leader, 0.0) + float(rates.get(follower) or 0.0)
    weights = {
        Priority.HIGH: _param(params, "weight_high"),
        Priority.NORMAL: _param(params, "weight_normal"),
        Priority.LOW: _param(params, "weight_low"),
    }
    demands: list[TagDemand] = []
    for key, tag in poller.tags.items():
        priority = Priority(tag.config.priority)
        rate = rates.get(key)
        high = float(tag.config.max_staleness)
        # Never faster than configured: reading a busy tag faster "buys" predicted
        # fidelity that the rate model over-states (its loss saturates), and that
        # phantom credit was spent on slowing other tags. With every period at or
        # above its configured one, no allocation costs more than the configured plan.
        low = min(high, max(float(tag.config.min_interval), tag.base_interval))
        current = min(high, max(low, allocated.get(key, tag.base_interval)))
        if direction == "slower":
            low = current
        elif direction == "faster":
            high = current
        if rate is None:
            pinned = min(high, max(low, allocated.get(key, tag.base_interval)))
            low = high = pinned
            rate = 0.0
        demands.append(
            TagDemand(
                key=key,
                device=tag.device,
                table=tag.table,
                address=int(tag.config.address),
                width=int(tag.config.width),
                floor=low,
                ceiling=high,
                rate=rate,
                weight=weights[priority],
                priority=priority,
                carried=carried.get(key, 0.0),
                follower=key in leader_of,
                fixed=missed.get(key, 0.0),
            )
        )
    return demands


@dataclass(frozen=True)
class PlanInputs:
    """Everything an allocation needs, copied out of the poller: safe to use in a thread."""

    specs: list[PlanTagSpec]  # one per tag (the ceiling is its max_staleness)
    configured: dict[str, float]  # configured interval, clamped to its limits
    limits: dict[str, DeviceLimits]
    costs: dict[str, CostModel]
    line_of: dict[str, str]
    budgets: dict[str, float]  # per line


def plan_inputs(poller: Poller, params: Mapping[str, ParamValue]) -> PlanInputs:
    default_budget = _param(params, "bus_budget")
    budgets: dict[str, float] = {}
    for device in poller.devices.values():
        budget = bus_budget_of(device, default_budget)
        budgets[device.line] = min(budgets.get(device.line, budget), budget)
    return PlanInputs(
        specs=[
            PlanTagSpec(
                t.key,
                t.device,
                t.table,
                int(t.config.address),
                int(t.config.width),
                float(t.config.max_staleness),
                Priority(t.config.priority),
            )
            for t in poller.tags.values()
        ],
        configured={
            key: min(
                float(t.config.max_staleness), max(float(t.config.min_interval), t.base_interval)
            )
            for key, t in poller.tags.items()
        },
        limits={n: d.limits for n, d in poller.devices.items()},
        costs={n: d.cost for n, d in poller.devices.items()},
        line_of={n: d.line for n, d in poller.devices.items()},
        budgets=budgets,
    )


def planned_bus(inputs: PlanInputs, intervals: Mapping[str, float]) -> float:
    """Bus s/s of the cost-aware plan for these intervals (the poller's own planner)."""
    tags = [
        PlanTag(
            s.key,
            s.device,
            s.table,
            s.address,
            s.width,
            intervals.get(s.key, inputs.configured[s.key]),
            s.priority,
        )
        for s in inputs.specs
    ]
    if not tags:
        return 0.0
    return plan_reads(tags, inputs.limits, inputs.costs).bus_seconds_per_second()


def configured_line_costs(inputs: PlanInputs) -> dict[str, float]:
    """Per line: bus s/s of the cost-aware plan at the configured intervals (the guard's bar)."""
    tags = [
        PlanTag(s.key, s.device, s.table, s.address, s.width, inputs.configured[s.key], s.priority)
        for s in inputs.specs
    ]
    out = {line: 0.0 for line in inputs.line_of.values()}
    if tags:
        plan = plan_reads(tags, inputs.limits, inputs.costs)
        for device, line in inputs.line_of.items():
            out[line] += plan.bus_seconds_per_second(device)
    return out


def base_periods(inputs: PlanInputs) -> dict[str, float]:
    """Each tag's sampling period in the cost-aware plan of the configured intervals."""
    tags = [
        PlanTag(s.key, s.device, s.table, s.address, s.width, inputs.configured[s.key], s.priority)
        for s in inputs.specs
    ]
    out = dict(inputs.configured)
    if tags:
        for read in plan_reads(tags, inputs.limits, inputs.costs).reads:
            for key in read.tags:
                out[key] = min(out[key], read.period)
    return out


def trigger_cost(
    poller: Poller,
    triggers: Mapping[str, frozenset[str] | tuple[str, ...]],
    rates: Mapping[str, float | None],
) -> float:
    """Bus s/s of trigger reads: each leader change runs each follower's read once.

    Followers that share a planned read cost one read; a follower not planned
    yet is costed as a read of its own registers.
    """
    total = 0.0
    for leader, followers in triggers.items():
        rate = rates.get(leader) or 0.0
        reads: dict[object, float] = {}
        for key in followers:
            tag = poller.tags.get(key)
            if tag is None:
                continue
            cost = poller.devices[tag.device].cost
            read = poller.read_of(key)
            if read is not None:
                reads[read.key] = cost.read_seconds(read.table, read.count)
            else:
                reads[key] = cost.read_seconds(tag.table, int(tag.config.width))
        total += rate * sum(reads.values())
    return total


@dataclass(frozen=True)
class _Job:
    """An allocation to compute (pure: it may run anywhere)."""

    inputs: PlanInputs
    demands: list[TagDemand]
    known: frozenset[str]  # tags with a rate estimate (the others are pinned)
    allocated: dict[str, float]
    scale: float  # fidelity_slack × budget_scale: the allowed extra loss, relative
    floor: float  # fidelity_floor × budget_scale: the allowed extra loss per tag, absolute
    start: float | None


@dataclass(frozen=True)
class AllocationResult:
    """What `compute_allocation` found (the demands carry their credit floors)."""

    allocation: Allocation
    intervals: dict[str, float]
    shed: list[ShedReport]
    budget: float
    slack: float
    bus_now: float
    bus_after: float
    demands: list[TagDemand]


def compute_allocation(job: _Job) -> AllocationResult:
    """Pure: the allocation, its intervals after shedding, and what it is measured against."""
    inputs, demands = job.inputs, job.demands
    # The budget: the fidelity the configured intervals really give, which is
    # each tag read at its read's period in their plan (a tag that shares a
    # read with a faster one is sampled at that faster rate).
    base = base_periods(inputs)
    for d in demands:  # the job's own (build_demands made them for it): filled in place
        d.credit_floor = base.get(d.key, 0.0)

    # What the configured plan loses (the linear model, as the search counts
    # it), plus the allowed slack: a share of the loss the configured plan
    # really has, by the saturating model, so a busy tag whose linear estimate
    # is far above 1 does not inflate the allowance. Each known tag counts on
    # its own here (its rate alone), one demand at a time rather than a list
    # of copies: at 10k tags those were 1.4 MB of the search's peak.
    def alone() -> Iterator[TagDemand]:
        for d in demands:
            if d.key in job.known:
                yield TagDemand(
                    d.key, d.device, d.table, d.address, d.width, d.floor, d.ceiling, d.rate
                )

    known = sum(1 for d in demands if d.key in job.known)
    slack = job.scale * saturated_ood(alone(), base) + job.floor * known
    budget = predicted_ood(alone(), base) + slack
    budget += predicted_ood([d for d in demands if d.key not in job.known], job.allocated)
    allocation = allocate_for_budget(demands, inputs.limits, inputs.costs, budget, start=job.start)
    intervals, shed = shed_to_budget(
        inputs.specs,
        allocation.intervals,
        inputs.line_of,
        inputs.budgets,
        inputs.limits,
        inputs.costs,
    )
    return AllocationResult(
        allocation,
        intervals,
        shed,
        budget,
        slack,
        planned_bus(inputs, job.allocated),
        planned_bus(inputs, intervals),
        demands,
    )


def allocation_plan(
    context: StrategyContext,
    *,
    triggers: Mapping[str, frozenset[str] | tuple[str, ...]] | None = None,
    forecast: bool | None = None,
    rates: Mapping[str, float | None] | None = None,
    budget_scale: float = 1.0,
    periods: Mapping[str, int] | None = None,
    direction: str | None = None,
    misses: Mapping[str, float] | None = None,
) -> AllocationPlan:
    """The cheapest allocation that keeps the configured intervals' fidelity, searched here.

    Call it in a forked child (see the module's docstring). misses: per
    follower of `triggers`, the share of its changes the leader misses (the
    model's, for the followers it knows, by default). `budget_scale` below 1
    asks for a more cautious plan: it scales the fidelity slack, never the
    loss the configured intervals have anyway.
    """
    search = _AllocationSearch(
        context, triggers, forecast, rates, budget_scale, periods, direction, misses
    )
    return search.plan(compute_allocation(search.job))


class _AllocationSearch:
    """An allocation search's job, read from the statistics, and the plan its result makes."""

    def __init__(
        self,
        context: StrategyContext,
        triggers: Mapping[str, frozenset[str] | tuple[str, ...]] | None,
        forecast: bool | None,
        rates: Mapping[str, float | None] | None,
        budget_scale: float,
        periods: Mapping[str, int] | None,
        direction: str | None,
        misses: Mapping[str, float] | None,
    ) -> None:
        poller, model = context.poller, context.model
        params = context.allocation_params
        use_forecast = model.forecast if forecast is None else forecast
        trig = model.triggers if triggers is None else triggers
        self.rate_map = (
            dict(rates) if rates is not None else tag_rates(context, use_forecast, periods)
        )
        demands = build_demands(
            poller,
            self.rate_map,
            model.allocated,
            trig,
            params,
            direction,
            {**model.misses, **(misses or {})},
        )
        self.job = _Job(
            inputs=plan_inputs(poller, params),
            demands=demands,
            known=frozenset(k for k, v in self.rate_map.items() if v is not None),
            allocated=dict(model.allocated),
            scale=_param(params, "fidelity_slack") * budget_scale,
            floor=_param(params, "fidelity_floor") * budget_scale,
            start=model.weight,
        )
        self.trigger_cost = trigger_cost(poller, trig, self.rate_map)

    def plan(self, found: AllocationResult) -> AllocationPlan:
        job = self.job
        return AllocationPlan(
            allocation=found.allocation,
            intervals=found.intervals,
            demands=found.demands,
            budget=found.budget,
            slack=found.slack,
            current_bus=found.bus_now,
            current_ood=predicted_ood(found.demands, job.allocated),
            proposed_bus=found.bus_after,
            proposed_ood=predicted_ood(found.demands, found.intervals),
            trigger_cost=self.trigger_cost,
            shed=found.shed,
            rates={k: v for k, v in self.rate_map.items() if v is not None},
            inputs=job.inputs,
        )
