"""The do-no-harm guard: a learned state that costs more than the configured plan is undone."""

from __future__ import annotations

from test_optimizer_sim import Sim, config, constant, device, steps, tag

from edgeopt.optimizer import build_optimizer
from edgeopt.optimizer.demand import build_demands
from edgeopt.optimizer.guard import CostGuard

FAST_LOOP = {"quick_every": "60s", "full_every": "600s", "evaluate_after": "120s"}


def test_guard_needs_a_sustained_excess_and_names_the_line() -> None:
    guard = CostGuard(tolerance=0.05, windows=3)
    configured = {"a": 0.10, "b": 0.10}
    assert guard.observe({"a": 0.20, "b": 0.10}, configured) == []  # one window is not enough
    assert guard.observe({"a": 0.20, "b": 0.104}, configured) == []
    (breach,) = guard.observe({"a": 0.20, "b": 0.104}, configured)  # b is within tolerance
    assert breach.line == "a" and breach.ratio > 1.9
    assert "line a" in breach.describe()
    guard.reset(["a"])
    assert guard.observe({"a": 0.20, "b": 0.10}, configured) == []


async def test_an_optimizer_forced_into_an_expensive_state_returns_to_the_configured_plan() -> None:
    tags = [
        tag("fast", 0, interval="2s", min_interval="100ms", max_staleness="10s"),
        tag("far", 100, interval="2s", min_interval="100ms", max_staleness="30s"),
    ]
    cfg = config([device("d", tags, max_gap=0)], **FAST_LOOP)
    sim = Sim(cfg.devices, {"d/fast": steps(5.0), "d/far": constant(1)})
    opt = build_optimizer(sim.poller, cfg, sim.clock, sim.events)
    for s in opt.strategies.values():
        s.enabled = False  # nothing but the guard may act
    configured = sum(opt.configured_costs().values())
    # A bad state: both tags read 10x faster than configured.
    opt.model.allocated.update({"d/fast": 0.2, "d/far": 0.2})
    opt.model.push(0.0)
    assert sim.poller.plan.bus_seconds_per_second() > 5 * configured
    await sim.run(300.0, opt)
    assert opt.guard_trips >= 1
    assert sim.poller.plan.bus_seconds_per_second() <= configured * 1.0001
    assert {e.kind for e in sim.events.recent(100)} >= {"guard"}
    assert opt.status()["guard_trips"] == opt.guard_trips
    await opt.close()


def test_no_allocation_reads_a_tag_faster_than_configured() -> None:
    # The floor of every demand is the configured interval: faster reads bought
    # phantom fidelity under the old model, and cost more than the user's plan.
    cfg = config(
        [device("d", [tag("t", 0, interval="1s", min_interval="100ms", max_staleness="60s")])]
    )
    sim = Sim(cfg.devices, {"d/t": constant(1)})
    (demand,) = build_demands(sim.poller, {"d/t": 50.0}, {}, {}, {})
    assert demand.floor == 1.0 and demand.ceiling == 60.0


def test_cooldowns_left_out_follow_a_faster_cadence_and_set_ones_stay() -> None:
    default = config([device("d", [tag("t", 0)])])
    assert default.optimizer.strategies["interval"].cooldown == 600.0  # CONTRACT defaults
    fast = config(
        [device("d", [tag("t", 0)])],
        evaluate_after="30s",
        strategies={"cluster": {"cooldown": "2h"}},
    )
    assert fast.optimizer.strategies["interval"].cooldown == 30.0
    assert fast.optimizer.strategies["pattern"].cooldown == 1080.0
    assert fast.optimizer.strategies["cluster"].cooldown == 7200.0  # the user's own
