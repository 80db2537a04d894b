"""The learning loop in virtual time: cycles, evaluation, rollback, triggers, persistence."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np
import pytest
from test_optimizer_sim import MONDAY, Sim, config, constant, device, steps, tag

from edgeopt.config import ResourcesConfig
from edgeopt.optimizer import build_optimizer
from edgeopt.optimizer import memory as memory_module
from edgeopt.optimizer.cluster_worker import ClusterRunner
from edgeopt.optimizer.clustering import pack_indicators
from edgeopt.optimizer.evaluation import Outcome
from edgeopt.optimizer.loop import Optimizer
from edgeopt.optimizer.persistence import create_tables, load_state, save_state
from edgeopt.optimizer.strategies import (
    ClusterStrategy,
    IntervalStrategy,
    PatternStrategy,
    Proposal,
)
from edgeopt.resources import Pressure, PressureMonitor, ResourceSample

FAST_LOOP = {"quick_every": "60s", "full_every": "600s", "evaluate_after": "120s"}


def plant(**optimizer: Any) -> tuple[Sim, Optimizer]:
    """One device: a busy tag, three quiet ones, a setting; the optimizer on a fast loop."""
    tags = [
        tag("busy", 0, interval="1s", min_interval="500ms", max_staleness="10s"),
        tag("quiet1", 30, interval="1s", max_staleness="30s"),
        tag("quiet2", 60, interval="1s", max_staleness="30s"),
        tag("quiet3", 90, interval="1s", max_staleness="30s", priority="low"),
        tag("setting", 200, interval="10s", max_staleness="120s"),
    ]
    cfg = config([device("d", tags)], **{**FAST_LOOP, **optimizer})
    signals = {
        "d/busy": steps(2.0),
        "d/quiet1": constant(1),
        "d/quiet2": constant(2),
        "d/quiet3": constant(3),
        "d/setting": constant(50),
    }
    sim = Sim(cfg.devices, signals)
    opt = build_optimizer(sim.poller, cfg, sim.clock, sim.events)
    return sim, opt


async def test_the_loop_learns_slower_reads_for_quiet_tags() -> None:
    sim, opt = plant()
    before = sim.poller.plan.bus_seconds_per_second()
    await sim.run(1500.0, opt)
    records = opt.history(50)
    assert records, "the interval strategy never applied a change"
    assert any(r["outcome"] == "kept" for r in records)
    tags = sim.poller.tags
    assert tags["d/quiet1"].interval > 5 * tags["d/quiet1"].base_interval
    assert tags["d/busy"].interval <= tags["d/busy"].base_interval
    assert sim.poller.plan.bus_seconds_per_second() < 0.5 * before
    # CONTRACT.md shapes.
    row = records[-1]
    contract = {"id", "strategy", "started", "evaluated", "before", "after", "improvement"}
    assert contract | {"outcome"} <= set(row)
    assert row["outcome"] in ("kept", "rolled_back", "pending")
    stats = opt.get_statistics()
    assert {
        "optimizations",
        "successful",
        "rolled_back",
        "strategies",
        "avg_improvement",
    } <= stats.keys()
    assert {"runs", "success_rate", "cooldown_until", "params"} <= stats["strategies"][
        "interval"
    ].keys()
    status = opt.status()
    assert {"enabled", "last_quick", "last_full", "pending_evaluations"} <= set(status)
    assert status["last_quick"] is not None
    await opt.close()


async def test_strategies_on_cooldown_are_skipped_with_a_debug_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim, opt = plant()
    for _ in range(10):  # measure a few windows without running any cycle
        await sim.run(20.0)
        opt.tick()
    opt.interval.learning.cooldown_until = sim.clock.monotonic() + 1000
    with caplog.at_level(logging.DEBUG, logger="edgeopt.optimizer.loop"):
        result = await opt.run_quick_optimization()
    assert result["strategies"]["interval"] == {"status": "skipped", "reason": "on cooldown"}
    assert "Skipping strategy interval (on cooldown)" in caplog.text
    # An operator's run ignores the cooldown.
    manual = await opt.run_strategy("interval")
    assert manual["strategies"]["interval"]["status"] in ("applied", "no_change")
    await opt.close()


def record_plan_pid(
    cls: type[IntervalStrategy | PatternStrategy], where: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Make `cls.plan` write the pid of the process it runs in to `where`."""
    plan = cls.plan

    def recording(self: Any, context: Any) -> Proposal | None:
        where.write_text(str(os.getpid()))
        return plan(self, context)

    monkeypatch.setattr(cls, "plan", recording)
    return where


async def test_the_interval_plan_is_searched_in_a_child_and_its_references_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, opt = plant()
    for _ in range(10):  # measure a few windows without running any cycle
        await sim.run(20.0)
        opt.tick()
    searched_in = record_plan_pid(IntervalStrategy, tmp_path / "pid", monkeypatch)
    opt.model.reference_rates.clear()
    result = await opt.run_strategy("interval")
    assert result["strategies"]["interval"]["status"] == "applied"
    assert int(searched_in.read_text()) != os.getpid()
    # The tags read at their configured rate refreshed their reference rates
    # in the child; the parent has them now, stamped with the cycle's time.
    references = opt.model.reference_rates
    assert {"d/busy", "d/quiet1", "d/quiet2", "d/quiet3"} <= set(references)
    assert {when for _, when in references.values()} == {sim.clock.now()}
    assert references["d/busy"][0] > references["d/quiet1"][0]
    await opt.close()


async def test_the_pattern_plan_is_searched_in_a_child_and_its_references_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, opt = plant()
    for _ in range(10):  # measure a few windows without running any cycle
        await sim.run(20.0)
        opt.tick()
    # Profiles of whole days, as a restart restores them, and an 8-hour shift
    # cycle in the device's activity: the strategy is ready and finds it.
    shift = [10.0 if h % 8 < 3 else 0.0 for h in range(24 * 6)]
    opt.activity.import_profiles(
        {},
        {
            "hod_exposure": [3600.0] * 24,
            "dow_exposure": [86400.0] * 7,
            "device_series": {"d": shift},
        },
    )
    searched_in = record_plan_pid(PatternStrategy, tmp_path / "pid", monkeypatch)
    opt.model.reference_rates.clear()
    result = await opt.run_strategy("pattern")
    assert result["strategies"]["pattern"]["status"] == "applied"
    assert int(searched_in.read_text()) != os.getpid()
    # The period found in the child came back with its proposal.
    assert opt.model.forecast and opt.model.periods == {"d": 8}
    # The tags read at their configured rate refreshed their reference rates
    # in the child; the parent has them now, stamped with the cycle's time.
    references = opt.model.reference_rates
    assert {"d/busy", "d/quiet1", "d/quiet2", "d/quiet3"} <= set(references)
    assert {when for _, when in references.values()} == {sim.clock.now()}
    await opt.close()


def test_the_optimizer_never_imports_numpy() -> None:
    # numpy costs the daemon 20 MB: it is for forked children and the cluster worker.
    code = (
        "import sys\n"
        "import edgeopt.optimizer.loop, edgeopt.optimizer.strategies\n"
        "import edgeopt.optimizer.cluster_worker, edgeopt.optimizer.strategies.pattern\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'sklearn')"
        " or m == 'edgeopt.optimizer.clustering'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


async def test_rollback_restores_the_exact_prior_plan() -> None:
    sim, opt = plant()
    await sim.run(300.0, opt)
    if opt.pending is not None:
        await opt.evaluate_optimizations(force=True)
    plan_before = sim.poller.plan.reads
    allocated_before = dict(opt.model.allocated)
    strategy = opt.interval
    ctx = opt.context(strategy)
    proposal = Proposal(
        "interval",
        "test",
        {"d/quiet1": 29.0, "d/busy": 7.0},
        triggers={"d/busy": ("d/quiet2",)},
    )
    snapshot = strategy.apply(ctx, proposal)
    assert sim.poller.plan.reads != plan_before
    assert sim.poller.triggers == {"d/busy": frozenset({"d/quiet2"})}
    strategy.rollback(ctx, snapshot)
    assert sim.poller.plan.reads == plan_before
    assert opt.model.allocated == allocated_before
    assert sim.poller.triggers == {}
    await opt.close()


async def test_a_forced_bad_change_is_rolled_back_by_evaluation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A 10 min cooldown: no change of the loop's own may be pending at the forced one.
    sim, opt = plant(strategies={"interval": {"cooldown": "10m"}})
    await sim.run(300.0, opt)
    if opt.pending is not None:
        await opt.evaluate_optimizations(force=True)
    await sim.run(60.0)
    opt.tick()
    busy_before = opt.model.allocated["d/busy"]

    async def bad(self: IntervalStrategy, context: Any) -> Proposal:
        # The busy tag (a change every 2 s) read every 10 s: a big loss, a small saving.
        return Proposal("interval", "forced: busy tag at 10 s", {"d/busy": 10.0})

    monkeypatch.setattr(IntervalStrategy, "propose", bad)
    result = await opt.run_strategy("interval")
    assert result["strategies"]["interval"]["status"] == "applied", result
    assert sim.poller.tags["d/busy"].interval == 10.0
    monkeypatch.undo()
    await sim.run(200.0, opt)  # past evaluate_after; run_due evaluates it
    record = next(r for r in opt.history(50) if r["summary"].startswith("forced"))
    assert record["outcome"] == "rolled_back"
    assert "fidelity" in record["reason"]
    assert opt.model.allocated["d/busy"] == busy_before
    assert sim.poller.tags["d/busy"].interval == busy_before
    assert opt.interval.learning.rolled_back >= 1
    await opt.close()


async def test_a_verified_write_reads_a_slowed_tag_at_its_base_rate_again() -> None:
    sim, opt = plant()
    await sim.run(1500.0, opt)
    quiet = sim.poller.tags["d/quiet1"]
    assert quiet.interval > 5 * quiet.base_interval
    now = sim.clock.monotonic()
    sim.poller.record_write("d/quiet1", 7, sim.clock.now(), now)
    assert quiet.interval == quiet.base_interval
    assert "d/quiet1" in opt.model.overrides
    # Only for a while: the override ends and the learned interval comes back.
    await sim.run(400.0, opt)
    assert "d/quiet1" not in opt.model.overrides
    await opt.close()
    assert opt.reactions.on_write not in sim.poller.write_listeners


# A leader read every second, a follower configured at 5 s and slowed to 60 s.
LEAD_FOLLOW = [
    tag("lead", 0, interval="1s", max_staleness="10s"),
    tag("follow", 50, interval="5s", max_staleness="60s"),
]


async def test_trigger_reads_follower_when_the_leader_changes() -> None:
    cfg = config([device("d", LEAD_FOLLOW)])
    sim = Sim(cfg.devices, {"d/lead": steps(20.0), "d/follow": steps(20.0, (1.0, 2.0))})
    sim.poller.set_triggers({"d/lead": ["d/follow"]})
    sim.poller.set_intervals({"d/follow": 60.0}, 0.0)
    await sim.run(200.0)
    follow_reads = sim.read_times["d/follow"]
    # The follower is read right after every leader change, not only every 60 s.
    assert sim.poller.trigger_reads >= 8
    for change in (20.0, 40.0, 60.0, 80.0, 100.0):
        assert any(change <= t <= change + 1.1 for t in follow_reads), change


async def test_a_burst_of_leader_changes_reads_followers_no_faster_than_configured() -> None:
    cfg = config([device("d", LEAD_FOLLOW)])
    # The leader changes at every read from 30 s to 50 s, then holds.
    burst = steps(1.0)

    def lead(t: float) -> float:
        return burst(t) if 30.0 <= t < 50.0 else 0.0

    sim = Sim(cfg.devices, {"d/lead": lead, "d/follow": lead})
    sim.poller.set_triggers({"d/lead": ["d/follow"]})
    sim.poller.set_intervals({"d/follow": 60.0}, 0.0)
    await sim.run(120.0)
    during = [t for t in sim.read_times["d/follow"] if 29.0 <= t <= 58.0]
    # About one read per configured interval (5 s), not one per leader change (1 s)...
    assert 3 <= len(during) <= 6, during
    assert all(b - a >= 4.9 for a, b in itertools.pairwise(during)), during
    # ...and the burst's last change is still read, within an interval of its end.
    assert any(50.0 <= t <= 55.5 for t in during), during


async def test_a_slowed_tag_snaps_back_when_it_changes_unexpectedly() -> None:
    cfg = config([device("d", [tag("rare", 0, interval="1s", max_staleness="30s")])], **FAST_LOOP)
    # Two changes within a few slow reads: more than its rate can explain.
    sim = Sim(cfg.devices, {"d/rare": lambda t: 1.0 if t < 500 else (2.0 if t < 530 else 3.0)})
    opt = build_optimizer(sim.poller, cfg, sim.clock, sim.events)
    opt.model.allocated["d/rare"] = 30.0
    opt.model.push(0.0)
    await sim.run(580.0)
    override = opt.model.overrides.get("d/rare")
    assert override is not None and override.reason == "snap"
    assert sim.poller.tags["d/rare"].interval == 1.0
    await opt.close()


async def test_one_expected_change_of_a_slowed_tag_does_not_snap_it_back() -> None:
    # A slowed tag changes sooner or later; one change alone says nothing new,
    # and snapping back on it would hold the tag's whole read at base.
    cfg = config([device("d", [tag("rare", 0, interval="1s", max_staleness="30s")])], **FAST_LOOP)
    sim = Sim(cfg.devices, {"d/rare": lambda t: 1.0 if t < 500 else 2.0})
    opt = build_optimizer(sim.poller, cfg, sim.clock, sim.events)
    opt.model.allocated["d/rare"] = 30.0
    opt.model.push(0.0)
    await sim.run(580.0)
    assert "d/rare" not in opt.model.overrides
    assert sim.poller.tags["d/rare"].interval == 30.0
    await opt.close()


async def test_a_follower_that_changes_alone_loses_its_trigger() -> None:
    cfg = config(
        [
            device(
                "d",
                [
                    tag("lead", 0, interval="1s", max_staleness="10s"),
                    tag("follow", 50, interval="1s", max_staleness="30s"),
                ],
            )
        ],
        **FAST_LOOP,
    )
    sim = Sim(cfg.devices, {"d/lead": constant(5), "d/follow": steps(45.0)})
    opt = build_optimizer(sim.poller, cfg, sim.clock, sim.events)
    opt.model.adopt({"d/follow": 30.0}, {"d/lead": ("d/follow",)}, None, 0.0)
    opt.reactions.follow_plan()
    await sim.run(300.0)
    assert opt.model.triggers == {}
    assert sim.poller.triggers == {}
    assert opt.model.allocated["d/follow"] == 1.0
    assert [e.kind for e in sim.events.recent()].count("trigger_broken") == 1
    await opt.close()


async def test_machine_pressure_never_slows_a_read() -> None:
    # DESIGN.md §9: pressure from other processes only defers optional work
    # (tests/test_acquisition_shedding.py has the rest of it).
    sim, opt = plant()
    monitor = PressureMonitor(ResourcesConfig(cpu_high=80), hold=1)
    opt.resources = monitor
    await sim.run(120.0)
    before = {k: t.interval for k, t in sim.poller.tags.items()}
    monitor.update(ResourceSample(cpu_percent=85), MONDAY)
    assert monitor.level is Pressure.ELEVATED
    opt.tick()
    assert {k: t.interval for k, t in sim.poller.tags.items()} == before
    result = await opt.run_full_optimization()
    # Five tags: KMeans costs milliseconds, so the cluster strategy is not heavy here.
    assert "pressure" not in result["strategies"]["cluster"].get("reason", "")
    after_cycle = {k: t.interval for k, t in sim.poller.tags.items()}
    monitor.update(ResourceSample(cpu_percent=99), MONDAY)
    assert monitor.level is Pressure.CRITICAL
    opt.tick()
    assert {k: t.interval for k, t in sim.poller.tags.items()} == after_cycle
    assert opt.model.shedding == {}
    await opt.close()


async def test_learned_state_survives_a_restart(tmp_path: Path) -> None:
    sim, opt = plant()
    await sim.run(900.0, opt)
    assert opt.records
    learned = dict(opt.model.allocated)
    references = dict(opt.model.reference_rates)
    assert references
    opt.model.misses["d/quiet3"] = 0.125  # as a trigger's choice left it
    opt.interval.learning.cooldown_until = sim.clock.monotonic() + 3000  # clearly on cooldown
    await opt.update_strategy_parameters("interval", min_gain=0.2)
    await opt.set_strategy_enabled("pattern", False)
    db = tmp_path / "state.db"
    async with aiosqlite.connect(db, isolation_level=None) as conn:
        await create_tables(conn)
        await save_state(conn, opt.export_state())
    await opt.close()

    # A new process: new clock (monotonic from 0), same wall time, the tag config
    # of quiet2 changed (its learned interval must not be reused).
    sim2, _ = plant()
    cfg = dataclasses.replace(sim2.poller.tags["d/quiet2"].config, deadband=1.0)
    sim2.poller.tags["d/quiet2"].config = cfg
    sim2.clock = type(sim2.clock)(MONDAY + sim.clock.monotonic())
    async with aiosqlite.connect(db, isolation_level=None) as conn:
        state = await load_state(conn)
    assert state is not None
    restored = build_optimizer(sim2.poller, opt.config, sim2.clock, sim2.events, state=state)
    assert restored.model.allocated["d/quiet1"] == learned["d/quiet1"]
    assert sim2.poller.tags["d/quiet1"].interval == pytest.approx(learned["d/quiet1"])
    assert restored.model.allocated["d/quiet2"] == sim2.poller.tags["d/quiet2"].base_interval
    # The rates measured at the configured interval, and the trigger miss share, too.
    assert restored.model.reference_rates["d/quiet1"] == pytest.approx(references["d/quiet1"])
    assert "d/quiet2" not in restored.model.reference_rates
    assert restored.model.misses == {"d/quiet3": 0.125}
    assert restored.interval.learning.on_cooldown(sim2.clock.monotonic())
    assert restored.interval.params["min_gain"] == 0.2
    assert restored.strategies["pattern"].enabled is False
    assert [r["id"] for r in restored.history(100)] == [r["id"] for r in opt.history(100)]
    await restored.close()


async def test_save_writes_changed_records_and_keeps_stored_profiles(tmp_path: Path) -> None:
    sim, opt = plant()
    await sim.run(600.0, opt)
    assert opt.records
    async with aiosqlite.connect(tmp_path / "s.db", isolation_level=None) as conn:
        await create_tables(conn)
        await opt.save(conn, profiles=True)
        assert not any(r.dirty for r in opt.records)
        assert opt.export_state(only_dirty=True).records == []
        await sim.run(300.0, opt)
        await opt.save(conn, profiles=False)
        state = await load_state(conn)
        _, fresh = plant()
        assert await fresh.load(conn)
    assert state is not None
    assert state.tags["d/busy"]["profile"] is not None
    assert state.meta["activity"] is not None
    assert [r["id"] for r in state.records] == [r.id for r in opt.records]
    assert fresh.model.allocated == opt.model.allocated
    await opt.close()
    await fresh.close()


async def test_older_judged_records_keep_only_their_history_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A record's snapshots and tag lists are the bulk of it; once judged and
    # saved, only its history row stays in memory, and the database keeps it whole.
    monkeypatch.setattr(memory_module, "RECORDS_WHOLE", 1)  # this plant makes few changes
    sim, opt = plant()
    await sim.run(2400.0, opt)
    assert len(opt.records) >= 2 and not opt.records[0].pending
    history = opt.history(100)
    async with aiosqlite.connect(tmp_path / "s.db", isolation_level=None) as conn:
        await create_tables(conn)
        await opt.save(conn, profiles=False)
        saved = await load_state(conn)
        _, fresh = plant()
        assert await fresh.load(conn)
    assert saved is not None
    stored = {r["id"]: r for r in saved.records}
    older, latest = opt.records[:-1], opt.records[-1]
    assert all(r.settled and not r.after.intervals and not r.changed for r in older)
    assert not latest.settled
    assert opt.history(100) == history  # what `history` shows is unchanged
    assert all(stored[r.id]["after"]["intervals"] for r in older)  # the database has it all
    # A later save writes no settled record over its whole row.
    await sim.run(120.0, opt)
    async with aiosqlite.connect(tmp_path / "s.db", isolation_level=None) as conn:
        await opt.save(conn, profiles=False)
        again = await load_state(conn)
    assert again is not None
    assert all(r == stored[r["id"]] for r in again.records if r["id"] in {o.id for o in older})
    # Loaded from the database: the same split, the same history.
    assert [r.settled for r in fresh.records] == [r.settled for r in opt.records]
    assert fresh.history(100) == history
    # A config reload (an export and a restore) keeps the settled ones.
    opt.reload(opt.poller)
    assert [r.id for r in opt.records[: len(older)]] == [r.id for r in older]
    assert opt.history(100)[-len(older) :] == history[-len(older) :]
    await opt.close()
    await fresh.close()


async def test_load_state_from_an_empty_database_is_none(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "e.db", isolation_level=None) as conn:
        assert await load_state(conn) is None
        await create_tables(conn)
        assert await load_state(conn) is None


async def test_kmeans_runs_in_a_worker_process_and_never_in_this_one() -> None:
    rng = np.random.default_rng(3)
    base_a = rng.random(400) < 0.05
    base_b = rng.random(400) < 0.05
    rows = [base_a ^ (rng.random(400) < 0.005) for _ in range(4)]
    rows += [base_b ^ (rng.random(400) < 0.005) for _ in range(4)]
    runner = ClusterRunner()
    try:
        result = await runner.run(pack_indicators(np.array(rows, np.uint8)), max_k=4, seed=0)
    finally:
        await runner.aclose()
    labels = result.labels
    assert len(set(labels[:4])) == 1 and len(set(labels[4:])) == 1
    assert labels[0] != labels[4]
    assert result.k == 2 and result.silhouette > 0.5
    assert "sklearn" not in sys.modules


def _led_group() -> tuple[Sim, Optimizer]:
    """Three followers in another read than their step leader; only the cluster strategy on."""
    tags = [
        tag("lead", 0, interval="1s", max_staleness="10s"),
        tag("f1", 40, interval="1s", max_staleness="60s"),
        tag("f2", 41, interval="1s", max_staleness="60s"),
        tag("f3", 42, interval="1s", max_staleness="60s"),
    ]
    cfg = config(
        [device("d", tags)],
        quick_every="60s",
        full_every="900s",
        evaluate_after="120s",
        strategies={"interval": {"enabled": False}, "pattern": {"enabled": False}},
    )
    lead = steps(97.0)
    signals = {
        "d/lead": lead,
        "d/f1": lambda t: 2 * lead(t),
        "d/f2": lambda t: 3 * lead(t),
        "d/f3": lambda t: lead(t) + 7,
    }
    sim = Sim(cfg.devices, signals)
    return sim, build_optimizer(sim.poller, cfg, sim.clock, sim.events)


async def test_the_cluster_strategys_own_work_runs_in_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reading every tag's history before the worker's KMeans, and choosing
    # triggers and planning after it, run in forked children; the reference
    # rates the plans refresh come back to the daemon.
    sim, opt = _led_group()
    ran_in = tmp_path / "pids"
    indicators, proposal = ClusterStrategy._indicators, ClusterStrategy._proposal

    def recording_indicators(self: ClusterStrategy, context: Any) -> Any:
        with ran_in.open("a") as f:
            f.write(f"indicators {os.getpid()}\n")
        return indicators(self, context)

    def recording_proposal(self: ClusterStrategy, *args: Any) -> Any:
        with ran_in.open("a") as f:
            f.write(f"proposal {os.getpid()}\n")
        return proposal(self, *args)

    monkeypatch.setattr(ClusterStrategy, "_indicators", recording_indicators)
    monkeypatch.setattr(ClusterStrategy, "_proposal", recording_proposal)
    for _ in range(45):  # 900 s of windows, no cycle run
        await sim.run(20.0)
        opt.tick()
    opt.model.reference_rates.clear()
    result = await opt.run_strategy("cluster")
    assert result["strategies"]["cluster"]["status"] == "applied"
    assert opt.model.triggers == {"d/lead": frozenset({"d/f1", "d/f2", "d/f3"})}
    stages = [line.split() for line in ran_in.read_text().splitlines()]
    assert [name for name, _ in stages] == ["indicators", "proposal"]
    assert all(int(pid) != os.getpid() for _, pid in stages)
    # Refreshed in the child, at the cycle's time, and kept here.
    assert {when for _, when in opt.model.reference_rates.values()} == {sim.clock.now()}
    assert set(opt.model.reference_rates) == {"d/lead", "d/f1", "d/f2", "d/f3"}
    await opt.close()


async def test_cluster_strategy_triggers_followers_and_reads_fewer_registers() -> None:
    """Followers in another read follow a step leader: after clustering they are read on
    the leader's change, sit at max_staleness otherwise, and their changes are still seen."""
    sim, opt = _led_group()
    await sim.run(1200.0, opt)
    regs_before = sim.registers
    assert opt.model.triggers == {"d/lead": frozenset({"d/f1", "d/f2", "d/f3"})}
    assert opt.history(10)[-1]["strategy"] == "cluster"
    start = sim.clock.monotonic()
    await sim.run(1200.0, opt)
    assert sim.registers - regs_before < 0.8 * regs_before
    # Every leader change in the second run is seen by the followers within a second.
    changes = [97.0 * k for k in range(int(start // 97) + 1, int((start + 1100) // 97))]
    for key in ("d/f1", "d/f2", "d/f3"):
        reads = np.array(sim.read_times[key])
        for c in changes:
            assert ((reads >= c) & (reads <= c + 1.5)).any(), (key, c)
    assert "sklearn" not in sys.modules
    await opt.close()


def test_history_and_recommendations_on_a_fresh_optimizer() -> None:
    _, opt = plant()
    assert opt.history() == []
    assert opt.recommendations() == []
    assert opt.get_statistics()["optimizations"] == 0
    assert opt.status()["pending_evaluations"] == 0
    assert [s["name"] for s in opt.strategy_list()] == ["pattern", "cluster", "interval"]


async def test_recommendations_name_noisy_and_unchanging_tags() -> None:
    tags = [
        tag("noisy", 0, interval="1s", deadband=0.5),
        tag("frozen", 50, interval="60s", max_staleness="600s"),
    ]
    cfg = config([device("d", tags)])
    sim = Sim(cfg.devices, {"d/noisy": steps(1.0, (10, 12, 11, 13)), "d/frozen": constant(4)})
    opt = build_optimizer(sim.poller, cfg, sim.clock, sim.events)
    await sim.run(86400.0 + 120)
    kinds = {(r["kind"], r["target"]) for r in opt.recommendations()}
    assert ("deadband_below_noise", "d/noisy") in kinds
    assert ("never_changes", "d/frozen") in kinds
    for r in opt.recommendations():
        assert r["priority"] in ("high", "medium", "low")
        assert "bus_s_per_s" in r["expected_impact"]
    await opt.close()


async def test_evaluation_outcome_enum_round_trips_through_history() -> None:
    sim, opt = plant()
    await sim.run(600.0, opt)
    for row in opt.history(50):
        assert Outcome(row["outcome"])
    await opt.close()


async def test_config_reload_keeps_what_was_learned_about_unchanged_tags() -> None:
    sim, opt = plant()
    await sim.run(900.0, opt)
    learned = dict(opt.model.allocated)
    assert learned["d/quiet1"] > 1.0
    # The reloaded config: quiet2's deadband changed, a tag was added, setting was removed.
    tags = [
        tag("busy", 0, interval="1s", min_interval="500ms", max_staleness="10s"),
        tag("quiet1", 30, interval="1s", max_staleness="30s"),
        tag("quiet2", 60, interval="1s", max_staleness="30s", deadband=2.0),
        tag("quiet3", 90, interval="1s", max_staleness="30s", priority="low"),
        tag("extra", 120, interval="2s"),
    ]
    cfg = config([device("d", tags)], **FAST_LOOP)
    sim2 = Sim(cfg.devices, {})
    sim2.clock = sim.clock
    opt.reload(sim2.poller)
    assert opt.model.allocated["d/quiet1"] == learned["d/quiet1"]
    assert sim2.poller.tags["d/quiet1"].interval == pytest.approx(learned["d/quiet1"])
    assert opt.model.allocated["d/quiet2"] == 1.0
    assert opt.model.allocated["d/extra"] == 2.0
    assert "d/setting" not in opt.model.allocated
    assert opt.reactions.on_change in sim2.poller.change_listeners
    await sim2.run(60.0, opt)
    await opt.close()


async def test_the_schema_applies_as_a_storage_migration(tmp_path: Path) -> None:
    from edgeopt.clock import SystemClock
    from edgeopt.storage.schema import MIGRATIONS, OPTIMIZER_SCHEMA_SQL, migrate

    assert any(m.sql == OPTIMIZER_SCHEMA_SQL for m in MIGRATIONS)
    sim, opt = plant()
    await sim.run(300.0, opt)
    async with aiosqlite.connect(tmp_path / "edgeopt.db", isolation_level=None) as conn:
        assert await migrate(conn, clock=SystemClock(), migrations=MIGRATIONS) == len(MIGRATIONS)
        await opt.save(conn)
        state = await load_state(conn)
    assert state is not None and state.tags.keys() == sim.poller.tags.keys()
    await opt.close()


async def test_replans_and_trigger_reads_wake_the_lines_they_touch() -> None:
    cfg = config(
        [
            device("a", [tag("lead", 0, interval="1s")]),
            {**device("b", [tag("follow", 0, interval="30s")]), "host": "192.0.2.2"},
        ]
    )
    sim = Sim(cfg.devices, {"a/lead": steps(10.0), "b/follow": constant(1)})
    woken: list[str] = []
    sim.poller.wake_listeners.append(woken.append)
    line_b = sim.poller.devices["b"].line
    sim.poller.set_intervals({"b/follow": 60.0}, 0.0)
    assert woken == [line_b]
    sim.poller.set_triggers({"a/lead": ["b/follow"]})
    woken.clear()
    await sim.run(25.0)
    assert woken.count(line_b) >= 2  # the leader changed at 10 s and 20 s


def test_a_tag_fingerprint_changes_with_its_byte_or_bit_field() -> None:
    from edgeopt.optimizer.state import tag_fingerprint
    from edgeopt.poller import Poller

    def fingerprint(**extra: Any) -> str:
        poller = Poller(config([device("d", [tag("t", 0, **extra)])]).devices)
        return tag_fingerprint(poller.tags["d/t"])

    # A kind of tag older versions knew keeps the fingerprint they saved.
    assert "=" not in fingerprint() and "=" not in fingerprint(type="bool", bit=4)
    assert fingerprint(type="uint8", byte="high") != fingerprint(type="uint8", byte="low")
    assert fingerprint(bit=4, bits=3) != fingerprint(bit=4, bits=2)
