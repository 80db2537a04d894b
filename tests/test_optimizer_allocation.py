"""Interval allocation, cost fitting and bus-budget shedding (pure functions)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.modbus.planner import (
    CostModel,
    DeviceLimits,
    PlanTag,
    Priority,
    Table,
    fixed_block_plan,
    plan_reads,
)
from edgeopt.optimizer.allocation import (
    TagDemand,
    allocate,
    allocate_for_budget,
    predicted_ood,
    snap_period,
)
from edgeopt.optimizer.costs import PlanTagSpec, fit_cost, line_load, shed_to_budget

SERIAL = CostModel.serial(9600)
LIMITS = {"d": DeviceLimits(max_gap=10)}
COSTS = {"d": SERIAL}


def demand(
    address: int,
    rate: float,
    *,
    floor: float = 0.5,
    ceiling: float = 60.0,
    weight: float = 1.0,
    follower: bool = False,
    carried: float = 0.0,
    priority: Priority = Priority.NORMAL,
) -> TagDemand:
    return TagDemand(
        key=f"d/t{address}",
        device="d",
        table=Table.HOLDING,
        address=address,
        width=1,
        floor=floor,
        ceiling=ceiling,
        rate=rate,
        weight=weight,
        priority=priority,
        carried=carried,
        follower=follower,
    )


def test_snap_period_is_a_geometric_grid() -> None:
    assert snap_period(1.0) == 1.0
    assert snap_period(2.0) == 2.0
    assert snap_period(1.04) == 1.0
    assert snap_period(1.1) == pytest.approx(2 ** (1 / 8))


def test_quiet_tag_goes_to_its_ceiling_and_busy_tag_stays_fast() -> None:
    quiet = demand(0, 0.0, ceiling=60.0)
    busy = demand(100, 0.5, floor=0.5, ceiling=10.0)
    result = allocate([quiet, busy], LIMITS, COSTS, lam=1.0)
    assert result.intervals["d/t0"] == 60.0
    assert 0.5 <= result.intervals["d/t100"] < 2.0


def test_a_tag_sharing_a_fast_read_gets_that_read_for_free() -> None:
    # On TCP a register more costs next to nothing: one read holds both, so the
    # quiet tag is read as fast as the busy one rather than on a request of its own.
    busy, quiet = demand(0, 0.5, ceiling=10.0), demand(1, 0.0, ceiling=60.0)
    result = allocate([busy, quiet], LIMITS, {"d": CostModel.tcp()}, lam=1.0)
    assert result.intervals["d/t1"] == result.intervals["d/t0"]


def test_followers_sit_at_their_ceiling_and_the_leader_carries_their_rate() -> None:
    leader = demand(0, 0.01, carried=0.3, ceiling=10.0)
    follower = demand(100, 0.3, follower=True, ceiling=30.0)
    alone = demand(0, 0.01, ceiling=10.0)
    with_trigger = allocate([leader, follower], LIMITS, COSTS, lam=1.0)
    without = allocate([alone], LIMITS, COSTS, lam=1.0)
    assert with_trigger.intervals["d/t100"] == 30.0
    assert with_trigger.intervals["d/t0"] < without.intervals["d/t0"]


def test_budget_search_meets_the_budget_at_the_least_cost() -> None:
    demands = [demand(a, r) for a, r in [(0, 0.2), (40, 0.01), (80, 0.001), (120, 0.05)]]
    base = {d.key: 1.0 for d in demands}
    budget = predicted_ood(demands, base)
    result = allocate_for_budget(demands, LIMITS, COSTS, budget)
    assert result.ood <= budget * 1.0001
    # Reading every tag at 1 s costs more than the allocation at the same fidelity.
    fixed = plan_reads(
        [PlanTag(d.key, "d", Table.HOLDING, d.address, 1, 1.0) for d in demands], LIMITS, COSTS
    )
    assert result.bus < fixed.bus_seconds_per_second()
    # A looser budget is never more expensive.
    looser = allocate_for_budget(demands, LIMITS, COSTS, budget * 2)
    assert looser.bus <= result.bus + 1e-12


def test_budget_out_of_reach_gives_the_fastest_allocation() -> None:
    demands = [demand(0, 1.0, floor=1.0, ceiling=10.0)]
    result = allocate_for_budget(demands, LIMITS, COSTS, budget=0.01)
    assert result.intervals["d/t0"] == 1.0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.floats(0.0, 0.5), st.sampled_from([1.0, 5.0, 60.0])),
        min_size=1,
        max_size=12,
        unique_by=lambda x: x[0],
    )
)
def test_allocation_at_the_configured_fidelity_never_costs_more_than_block_reads(
    spec: list[tuple[int, float, float]],
) -> None:
    """At the budget of the configured intervals, the plan beats max_insert at those intervals."""
    demands = [demand(a, r, floor=min(1.0, base), ceiling=max(10.0, base)) for a, r, base in spec]
    configured = {f"d/t{a}": base for a, _, base in spec}
    budget = predicted_ood(demands, configured)
    result = allocate_for_budget(demands, LIMITS, COSTS, budget)
    tags = [PlanTag(d.key, "d", Table.HOLDING, d.address, 1, configured[d.key]) for d in demands]
    fixed = fixed_block_plan(tags, LIMITS)
    fixed_cost = sum(SERIAL.read_seconds(r.table, r.count) / r.period for r in fixed)
    assert result.bus <= fixed_cost * (1 + 1e-9) or result.ood <= budget * (1 + 1e-9)
    assert result.ood <= budget * (1 + 1e-6) + 1e-12


def test_fit_cost_tcp_regresses_latency_on_registers() -> None:
    samples = [(n, 0.004 + 0.0001 * n) for n in (1, 10, 20, 50, 100, 125) for _ in range(5)]
    fitted = fit_cost(samples, transport="tcp", baudrate=9600, default=CostModel.tcp())
    assert fitted is not None
    assert fitted.per_read == pytest.approx(0.004, rel=0.05)
    assert fitted.per_register == pytest.approx(0.0001, rel=0.05)


def test_fit_cost_tcp_without_spread_keeps_the_default_ratio() -> None:
    samples = [(10, 0.01)] * 20
    default = CostModel.tcp(0.002)
    fitted = fit_cost(samples, transport="tcp", baudrate=9600, default=default)
    assert fitted is not None
    assert fitted.read_seconds(Table.HOLDING, 10) == pytest.approx(0.01, rel=1e-6)


def test_fit_cost_serial_measures_the_turnaround() -> None:
    wire = CostModel.serial(9600, turnaround=0.0)
    samples = [(n, wire.read_seconds(Table.HOLDING, n) + 0.012) for n in (1, 8, 30) * 8]
    fitted = fit_cost(samples, transport="rtu", baudrate=9600, default=wire)
    assert fitted is not None
    assert fitted.per_read == pytest.approx(CostModel.serial(9600, turnaround=0.012).per_read)
    assert fitted.per_register == wire.per_register


def test_fit_cost_needs_enough_samples() -> None:
    assert fit_cost([(1, 0.01)] * 3, transport="tcp", baudrate=9600, default=SERIAL) is None


def test_shedding_slows_low_priority_tags_first_and_reports_it() -> None:
    specs = [
        PlanTagSpec("d/hi", "d", Table.HOLDING, 0, 1, 10.0, Priority.HIGH),
        PlanTagSpec("d/lo", "d", Table.HOLDING, 100, 1, 60.0, Priority.LOW),
    ]
    intervals = {"d/hi": 0.1, "d/lo": 0.1}
    load = line_load(specs, intervals, LIMITS, COSTS)
    assert load > 0.5
    budget = load * 0.6
    out, reports = shed_to_budget(specs, intervals, {"d": "line"}, {"line": budget}, LIMITS, COSTS)
    assert out["d/hi"] == 0.1  # shedding the low-priority tag was enough
    assert out["d/lo"] > 0.1
    (report,) = reports
    assert report.met and report.slowed == ("d/lo",)
    assert report.load_after <= budget


def test_shedding_within_budget_changes_nothing() -> None:
    specs = [PlanTagSpec("d/a", "d", Table.HOLDING, 0, 1, 10.0, Priority.NORMAL)]
    out, reports = shed_to_budget(specs, {"d/a": 1.0}, {"d": "line"}, {"line": 0.9}, LIMITS, COSTS)
    assert out == {"d/a": 1.0} and reports == []


def test_predicted_ood_is_linear_in_the_period() -> None:
    d = demand(0, 0.2)
    assert predicted_ood([d], {"d/t0": 2.0}) == pytest.approx(0.2)
    assert predicted_ood([d], {"d/t0": 20.0}) == pytest.approx(2.0)  # not capped
    assert math.isclose(predicted_ood([demand(0, 0.2, follower=True)], {"d/t0": 5.0}), 0.0)
