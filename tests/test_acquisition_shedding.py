"""Machine pressure defers optional work only; acquisition sheds only when the daemon lags.

DESIGN.md §9: pressure from other processes never reads a tag slower than
the plan. Reads are shed (low priority first, then normal, high never) only
when the daemon's own reads start late, or its own RSS is at its limit.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_optimizer_sim import MONDAY, Sim, config, constant, device, tag

from edgeopt.config import Config, ResourcesConfig
from edgeopt.events import EventLog
from edgeopt.modbus.transport import ReadResult
from edgeopt.optimizer import build_optimizer
from edgeopt.optimizer import loop as loop_module
from edgeopt.optimizer.loop import Optimizer
from edgeopt.optimizer.model import SHED_WIDENING, PlanModel
from edgeopt.optimizer.strategies import ClusterStrategy, Proposal
from edgeopt.poller import LAG_FLOOR, Poller
from edgeopt.resources import (
    AcquisitionSample,
    LagMeter,
    Pressure,
    PressureMonitor,
    ResourceSample,
    Shedding,
    ShedStage,
)

FAST_LOOP = {"quick_every": "60s", "full_every": "600s", "evaluate_after": "120s"}


def three_priorities(**optimizer: Any) -> tuple[Sim, Config]:
    """One device, one tag of each priority, each in its own read (far apart)."""
    tags = [
        tag("hi", 0, interval="1s", max_staleness="10s", priority="high"),
        tag("mid", 200, interval="1s", max_staleness="30s", priority="normal"),
        tag("lo", 400, interval="1s", max_staleness="60s", priority="low"),
    ]
    cfg = config([device("d", tags)], **optimizer)
    signals = {"d/hi": constant(1), "d/mid": constant(2), "d/lo": constant(3)}
    return Sim(cfg.devices, signals), cfg


def intervals(poller: Poller) -> dict[str, float]:
    return {k: t.interval for k, t in poller.tags.items()}


def read_periods(poller: Poller) -> dict[tuple[str, str, int, int], float]:
    return {(r.device, r.table.value, r.start, r.count): r.period for r in poller.plan.reads}


# -- (a) machine pressure changes no read ----------------------------------------------


@pytest.mark.parametrize("level", list(Pressure))
def test_machine_pressure_changes_no_effective_interval(level: Pressure) -> None:
    sim, _ = three_priorities()
    model = PlanModel(sim.poller)
    before = {k: model.effective(t) for k, t in sim.poller.tags.items()}
    model.pressure = level
    assert {k: model.effective(t) for k, t in sim.poller.tags.items()} == before


async def test_critical_machine_pressure_through_the_optimizer_changes_no_read() -> None:
    sim, cfg = three_priorities()
    monitor = PressureMonitor(ResourcesConfig(cpu_high=50), EventLog(), hold=1)
    opt = build_optimizer(sim.poller, cfg, sim.clock, sim.events, resources=monitor)
    await sim.run(30.0)
    before, periods = intervals(sim.poller), read_periods(sim.poller)
    monitor.update(ResourceSample(cpu_percent=99, memory_percent=99, disk_percent=99), MONDAY)
    assert monitor.level is Pressure.CRITICAL
    opt.tick()
    await sim.run(30.0, opt)
    assert intervals(sim.poller) == before
    assert read_periods(sim.poller) == periods
    assert opt.status()["pressure"] == "critical" and opt.status()["shedding"] == "none"
    await opt.close()


# -- (c) shedding: only the daemon's own lateness or memory ---------------------------


def test_shedding_needs_persistent_lateness_and_recovers_with_hysteresis() -> None:
    events = EventLog()
    shed = Shedding(ResourcesConfig(lag_limit=0.5), events, hold=3, recover_hold=3)
    late, between, calm = (AcquisitionSample({"l": x}, "l", x, reads=50) for x in (0.8, 0.4, 0.0))
    seen = []
    shed.listeners.append(lambda line, old, new, _why: seen.append((line, old, new)))
    # One or two late samples are a spike, not a trend.
    assert shed.update(late, 0.0) is ShedStage.NONE
    assert shed.update(calm, 1.0) is ShedStage.NONE
    assert shed.update(late, 2.0) is ShedStage.NONE
    assert shed.update(late, 3.0) is ShedStage.NONE
    assert shed.update(late, 4.0) is ShedStage.LOW
    assert "line l: reads start 0.80 periods late" in shed.reason
    assert shed.active and shed.since == 4.0 and shed.stage_for("l") is ShedStage.LOW
    assert shed.stage_for("other") is ShedStage.NONE  # only the late line is shed
    for t in (5.0, 6.0):
        assert shed.update(late, t) is ShedStage.LOW
    assert shed.update(late, 7.0) is ShedStage.NORMAL
    assert shed.update(late, 8.0) is ShedStage.NORMAL  # high priority is never shed
    # Between calm and the limit the stage holds, however long.
    for t in range(9, 30):
        assert shed.update(between, float(t)) is ShedStage.NORMAL
    for t in (30.0, 31.0):
        assert shed.update(calm, t) is ShedStage.NORMAL
    assert shed.update(calm, 32.0) is ShedStage.LOW
    for t in (33.0, 34.0):
        assert shed.update(calm, t) is ShedStage.LOW
    assert shed.update(calm, 35.0) is ShedStage.NONE
    assert not shed.active
    kinds = [(e.data["previous"], e.data["stage"]) for e in events.recent() if e.kind == "shedding"]
    assert kinds == [("none", "low"), ("low", "normal"), ("normal", "low"), ("low", "none")]
    assert seen == [
        ("l", ShedStage.NONE, ShedStage.LOW),
        ("l", ShedStage.LOW, ShedStage.NORMAL),
        ("l", ShedStage.NORMAL, ShedStage.LOW),
        ("l", ShedStage.LOW, ShedStage.NONE),
    ]
    assert shed.status()["active"] is False and shed.status()["sample"]["lag"] == 0.0


def test_shedding_that_returns_soon_after_recovery_waits_longer_next_time() -> None:
    shed = Shedding(ResourcesConfig(lag_limit=0.5), hold=1, recover_hold=2)
    late, calm = AcquisitionSample({"l": 0.9}), AcquisitionSample({"l": 0.0})
    assert shed.update(late, 0.0) is ShedStage.LOW
    shed.update(calm, 1.0)
    assert shed.update(calm, 2.0) is ShedStage.NONE
    assert shed.update(late, 3.0) is ShedStage.LOW  # back at once: the plan only fits shed
    for t in range(4, 7):
        assert shed.update(calm, float(t)) is ShedStage.LOW  # 2 × 2 calm samples now
    assert shed.update(calm, 7.0) is ShedStage.NONE


def test_own_rss_at_its_limit_sheds_and_machine_memory_does_not() -> None:
    cfg = ResourcesConfig.model_validate({"memory_high": 50, "own_rss_limit": "100MB"})
    monitor = PressureMonitor(cfg, EventLog(), hold=1)
    monitor.shedding.hold = 1
    monitor.update(ResourceSample(memory_percent=99), 0.0)
    assert monitor.level is Pressure.CRITICAL
    assert monitor.shedding.update(AcquisitionSample(rss=50_000_000), 0.0) is ShedStage.NONE
    assert monitor.shedding.update(AcquisitionSample(rss=120_000_000), 1.0) is ShedStage.LOW
    assert "own RSS 120 MB >= limit 100 MB" in monitor.shedding.reason
    status = monitor.status()
    assert status["level"] == "critical" and "memory_percent" in status["reason"]
    assert status["shedding"]["active"] is True
    assert status["shedding"]["own_rss_limit"] == 100_000_000


def test_the_poller_measures_how_late_reads_start() -> None:
    sim, _ = three_priorities()
    poller, line = sim.poller, next(iter(sim.poller.schedules))
    meter = LagMeter(min_reads=3)
    delays: list[float] = []
    for _ in range(30):  # the earliest deadline's read starts 0.5 s late
        due = poller.schedules[line].next_due()
        assert due is not None
        t = due + 0.5
        item = poller.next_read(line, t)
        assert item is not None
        read, when = item
        delays.append(t - when)  # another read due by then may go first (priority)
        poller.apply(read, sim.answer(read, t), MONDAY + t, t, when)
    sample = meter.sample(poller.lag, rss=123)
    assert sample.line == line and sample.reads == 30 and sample.rss == 123
    assert all(d > LAG_FLOOR for d in delays) and max(delays) == pytest.approx(0.5)
    # Every read here has a 1 s period: lateness in periods equals lateness in seconds.
    assert sample.lag == pytest.approx(sum(delays) / 30)
    assert sample.late_s == pytest.approx(sum(delays) / 30)
    assert sample.late_share == 1.0
    # Nothing new since: no lateness to judge.
    assert meter.sample(poller.lag).lag is None
    # On time (within the floor): counted, never late.
    for _ in range(10):
        due = poller.schedules[line].next_due()
        assert due is not None
        item = poller.next_read(line, due + LAG_FLOOR / 2)
        assert item is not None
        poller.apply(item[0], ReadResult([0], 0.001), MONDAY, due, item[1])
    on_time = meter.sample(poller.lag)
    assert on_time.reads == 10 and on_time.lag == 0.0 and on_time.late_s is None


def run_late(sim: Sim, opt: Optimizer, meter: LagMeter, samples: int, delay: float) -> None:
    """Poll with reads starting `delay` s late, for `samples` shedding samples 10 s apart
    (as the daemon's resources job takes them); returns right after the last one."""
    poller, line = sim.poller, next(iter(sim.poller.schedules))
    assert opt.resources is not None
    next_sample = sim.clock.monotonic() + 10.0
    while samples > 0:
        due = poller.schedules[line].next_due()
        assert due is not None
        t = max(due + delay, sim.clock.monotonic())
        if t >= next_sample:
            sim.clock.set_monotonic(next_sample)
            opt.resources.shedding.update(meter.sample(poller.lag), sim.clock.now())
            opt.tick()
            next_sample += 10.0
            samples -= 1
            continue
        sim.clock.set_monotonic(t)
        item = poller.next_read(line, t)
        if item is None:
            continue
        read, when = item
        poller.apply(read, sim.answer(read, t), sim.clock.now(), t, when)


async def test_late_reads_shed_low_then_normal_never_high_and_come_back() -> None:
    sim, cfg = three_priorities()
    monitor = PressureMonitor(ResourcesConfig(lag_limit=0.5), sim.events)
    opt = build_optimizer(sim.poller, cfg, sim.clock, sim.events, resources=monitor)
    meter = LagMeter()
    tags = sim.poller.tags
    base = intervals(sim.poller)
    run_late(sim, opt, meter, 3, delay=0.0)
    assert intervals(sim.poller) == base and not monitor.shedding.active
    # Two late samples are not yet persistent.
    run_late(sim, opt, meter, 2, delay=0.9)
    assert intervals(sim.poller) == base and not monitor.shedding.active

    # Reads start most of a period late, persistently: low-priority tags slow first.
    run_late(sim, opt, meter, 1, delay=0.9)
    assert monitor.shedding.stage is ShedStage.LOW
    assert tags["d/lo"].interval == SHED_WIDENING * base["d/lo"]
    assert tags["d/mid"].interval == base["d/mid"]
    assert tags["d/hi"].interval == base["d/hi"]
    # Still late (the high tag's reads are): normal tags go next, high never.
    run_late(sim, opt, meter, 3, delay=0.9)
    assert monitor.shedding.stage is ShedStage.NORMAL
    assert tags["d/lo"].interval == float(tags["d/lo"].config.max_staleness)
    assert tags["d/mid"].interval == SHED_WIDENING * base["d/mid"]
    assert tags["d/hi"].interval == base["d/hi"]
    run_late(sim, opt, meter, 6, delay=0.9)
    assert monitor.shedding.stage is ShedStage.NORMAL
    assert tags["d/hi"].interval == base["d/hi"]
    status = monitor.status()["shedding"]
    assert status["active"] is True and status["stage"] == "normal"
    assert "periods late" in status["reason"]

    # On time again: one priority comes back per 3 calm samples.
    run_late(sim, opt, meter, 2, delay=0.0)
    assert monitor.shedding.stage is ShedStage.NORMAL
    run_late(sim, opt, meter, 1, delay=0.0)
    assert monitor.shedding.stage is ShedStage.LOW
    run_late(sim, opt, meter, 3, delay=0.0)
    assert monitor.shedding.stage is ShedStage.NONE
    assert intervals(sim.poller) == base
    changes = [e for e in sim.events.recent() if e.kind == "shedding"]
    assert [e.data["stage"] for e in changes] == ["low", "normal", "low", "none"]
    assert [e.data["active"] for e in changes] == [True, True, True, False]
    await opt.close()


# -- deferring optional work --------------------------------------------------------------


def test_disk_pressure_defers_only_compaction_and_every_deferral_is_bounded() -> None:
    monitor = PressureMonitor(ResourcesConfig(disk_high=80, max_deferrals=2), EventLog(), hold=1)
    monitor.update(ResourceSample(cpu_percent=5, disk_percent=95), 0.0)
    assert monitor.level is Pressure.CRITICAL
    assert not monitor.defer("strategy cluster")  # a full disk is no reason to skip KMeans
    assert [monitor.defer("storage compaction", uses_disk=True) for _ in range(7)] == [
        True,
        True,
        False,  # deferred twice in a row: it runs
        True,
        True,
        False,
        True,
    ]
    monitor.update(ResourceSample(cpu_percent=5, disk_percent=10), 1.0)
    assert monitor.level is Pressure.NORMAL
    assert not monitor.defer("storage compaction", uses_disk=True)
    assert monitor.deferred == {}


def cluster_plant() -> tuple[Sim, Config]:
    tags = [tag(f"t{i}", 10 * i, interval="1s", max_staleness="30s") for i in range(6)]
    cfg = config(
        [device("d", tags)],
        **FAST_LOOP,
        strategies={"interval": {"enabled": False}, "pattern": {"enabled": False}},
    )
    return Sim(cfg.devices, {f"d/t{i}": constant(i) for i in range(6)}), cfg


async def test_a_full_cycle_deferred_three_times_runs_its_heavy_strategies_on_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Six tags stand in for a big plant: above this the cluster strategy is heavy.
    monkeypatch.setattr(loop_module, "CLUSTER_HEAVY_TAGS", 5)
    runs: list[float] = []

    async def propose(self: ClusterStrategy, context: Any) -> Proposal | None:
        runs.append(context.now)
        return None

    monkeypatch.setattr(ClusterStrategy, "propose", propose)
    sim, cfg = cluster_plant()
    monitor = PressureMonitor(ResourcesConfig(cpu_high=50), EventLog())
    opt = build_optimizer(sim.poller, cfg, sim.clock, sim.events, resources=monitor)
    await sim.run(90.0, opt)  # measurement windows close on the optimizer's ticks
    monitor.update(ResourceSample(cpu_percent=55), MONDAY)
    assert monitor.level is Pressure.ELEVATED
    reasons = []
    for _ in range(3):
        result = await opt.run_full_optimization()
        row = result["strategies"]["cluster"]
        assert row["status"] == "skipped"
        reasons.append(row["reason"])
    assert reasons == [
        "resource pressure elevated: deferred 1 of 3 times",
        "resource pressure elevated: deferred 2 of 3 times",
        "resource pressure elevated: deferred 3 of 3 times",
    ]
    assert runs == []
    result = await opt.run_full_optimization()
    assert result["strategies"]["cluster"] == {"status": "no_change"}
    assert len(runs) == 1
    # The count starts again.
    result = await opt.run_full_optimization()
    assert result["strategies"]["cluster"]["reason"].endswith("deferred 1 of 3 times")
    # An operator's run is never deferred.
    manual = await opt.run_strategy("cluster")
    assert manual["strategies"]["cluster"] == {"status": "no_change"}
    assert len(runs) == 2
    await opt.close()


async def test_kmeans_on_a_small_plant_is_not_heavy(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[float] = []

    async def propose(self: ClusterStrategy, context: Any) -> Proposal | None:
        runs.append(context.now)
        return None

    monkeypatch.setattr(ClusterStrategy, "propose", propose)
    sim, cfg = cluster_plant()
    monitor = PressureMonitor(ResourcesConfig(cpu_high=50), EventLog())
    opt = build_optimizer(sim.poller, cfg, sim.clock, sim.events, resources=monitor)
    await sim.run(90.0, opt)  # measurement windows close on the optimizer's ticks
    monitor.update(ResourceSample(cpu_percent=99), MONDAY)
    assert monitor.level is Pressure.CRITICAL
    result = await opt.run_full_optimization()
    assert result["strategies"]["cluster"] == {"status": "no_change"}
    assert runs and "strategy cluster" not in monitor.deferred
    await opt.close()


async def test_a_late_line_sheds_only_its_own_tags_and_own_memory_sheds_every_line() -> None:
    cfg = config(
        [
            device("a", [tag("lo", 0, interval="1s", priority="low")]),
            {**device("b", [tag("lo", 0, interval="1s", priority="low")]), "host": "192.0.2.2"},
        ]
    )
    sim = Sim(cfg.devices, {})
    line_a, line_b = (sim.poller.devices[d].line for d in ("a", "b"))
    assert line_a != line_b
    limit = ResourcesConfig.model_validate({"own_rss_limit": "100MB"})
    monitor = PressureMonitor(limit, sim.events)
    monitor.shedding.hold = 1
    opt = build_optimizer(sim.poller, cfg, sim.clock, sim.events, resources=monitor)
    tags = sim.poller.tags
    monitor.shedding.update(AcquisitionSample({line_a: 0.9, line_b: 0.0}, rss=1), 0.0)
    opt.tick()
    assert tags["a/lo"].interval == SHED_WIDENING and tags["b/lo"].interval == 1.0
    assert opt.status()["shedding"] == "low"
    monitor.shedding.update(AcquisitionSample({line_a: 0.9, line_b: 0.0}, rss=200_000_000), 1.0)
    opt.tick()
    assert monitor.shedding.stages() == {"*": ShedStage.LOW, line_a: ShedStage.NORMAL}
    assert tags["a/lo"].interval == float(tags["a/lo"].config.max_staleness)
    assert tags["b/lo"].interval == SHED_WIDENING  # own memory: every line
    lines = monitor.status()["shedding"]["lines"]
    assert set(lines) == {"*", line_a} and "own RSS" in lines["*"]["reason"]
    await opt.close()


def test_a_line_with_few_reads_is_judged_once_it_has_enough() -> None:
    from edgeopt.poller import LineLag

    lag = LineLag()
    meter = LagMeter(min_reads=5)
    lag.reads, lag.late, lag.periods, lag.seconds = 3, 3, 2.4, 2.4
    first = meter.sample({"slow": lag})
    assert first.lines == {} and first.reads == 3  # no verdict on three reads
    lag.reads, lag.late, lag.periods, lag.seconds = 6, 6, 4.8, 4.8
    second = meter.sample({"slow": lag})
    assert second.lines == {"slow": pytest.approx(0.8)} and second.reads == 3
    assert second.late_s == pytest.approx(0.8) and second.late_share == 1.0
