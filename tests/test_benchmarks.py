"""Smoke tests of the benchmark suite: the metrics on hand-made cases with known answers,
the device model against the codec, the baselines, and a short replay through the Poller.

No timing is asserted anywhere: benchmarks measure speed, tests check behaviour.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import baselines
from benchmarks.answer import PlantAnswers, encode_many
from benchmarks.metrics import (
    GroundTruth,
    ReadKey,
    ReadLog,
    events_from_values,
    read_bus_seconds,
    score,
)
from benchmarks.procs import read_request_log
from benchmarks.replay import EPOCH, replay
from benchmarks.report import md_table
from benchmarks.sections import render_frontier
from simulators.plant import Plant, PlantDevice, PlantTag
from simulators.plants import demo_plant, large_plant, week_plant
from simulators.signals import DAY, HOUR, Signal


class Staircase(Signal):
    """Steps up by 1 every `step` seconds, from 0 at t = 0: a change exactly every step."""

    def __init__(self, step: float) -> None:
        super().__init__("staircase", 0, chunk=100 * step)
        self.step = step

    def _build(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        times = k * self.chunk + np.arange(100) * self.step
        return times, np.round(times / self.step)


def stair_plant(deadband: float = 0.0) -> Plant:
    tag = PlantTag(
        "x",
        "holding",
        0,
        "uint16",
        Staircase(10.0),
        interval=2.0,
        max_staleness=5.0,
        deadband=deadband,
    )
    return Plant("stairs", [PlantDevice("d", 1, [tag])])


KEY = ReadKey("d", "holding", 0, 1, ("d/x",))


def log_of(times: np.ndarray, t0: float, t1: float) -> ReadLog:
    return ReadLog.from_series([(KEY, times)], t0, t1, "hand")


# -------------------------------------------------------------------- metrics
def test_events_follow_the_deadband_around_the_last_event() -> None:
    values = np.array([0.0, 0.4, 0.8, 1.2, 0.1, 2.5, 2.5])
    assert events_from_values(values, 1.0).tolist() == [3, 4, 5]
    assert events_from_values(values, 0.0).tolist() == [1, 2, 3, 4, 5]


def test_truth_lists_every_step_as_an_event() -> None:
    truth = GroundTruth.from_plant(stair_plant(), 0.0, 200.0)
    tt = truth.tags["d/x"]
    assert tt.events.tolist() == [10.0 * k for k in range(1, 21)]
    assert tt.at(np.array([0.0, 9.99, 10.0, 35.0])).tolist() == [0.0, 0.0, 1.0, 3.0]


def test_reading_every_2s_a_10s_staircase_sees_every_step_and_lags_one_second() -> None:
    """Reads at 1, 3, 5, ...: each step is seen 1 s late, so the rebuild is off 10 % of the time."""
    truth = GroundTruth.from_plant(stair_plant(), 0.0, 200.0)
    s = score(log_of(np.arange(1.0, 200.0, 2.0), 0.0, 200.0), truth, window=(5.0, 195.0))
    assert s.sla == 1.0
    # Judged: events in [5 + 5, 195 - 5] = 10, 20, ..., 190.
    assert s.events_judged == 19
    assert s.out_of_deadband == pytest.approx(19 / 190)
    assert s.reads_per_s == pytest.approx(95 / 190)


def test_reading_every_7s_with_a_5s_staleness_misses_one_step_in_seven() -> None:
    """Steps at 10k, reads at 7j: the delay cycles through 4, 1, 5, 2, 6, 3, 0 s."""
    truth = GroundTruth.from_plant(stair_plant(), 0.0, 705.0)
    s = score(log_of(np.arange(0.0, 705.0, 7.0), 0.0, 705.0), truth)
    assert s.events_judged == 70
    assert s.missed == 10
    assert s.sla == pytest.approx(6 / 7)


def test_a_deadband_wider_than_the_steps_is_never_off() -> None:
    truth = GroundTruth.from_plant(stair_plant(deadband=1.5), 0.0, 200.0)
    s = score(log_of(np.arange(1.0, 200.0, 2.0), 0.0, 200.0), truth, window=(5.0, 195.0))
    assert s.out_of_deadband == 0.0
    # Events every second step (the value leaves ±1.5 around the last event).
    assert truth.tags["d/x"].events.tolist() == [20.0 * k for k in range(1, 11)]


def test_never_read_is_always_off_and_misses_every_event() -> None:
    truth = GroundTruth.from_plant(stair_plant(), 0.0, 200.0)
    s = score(log_of(np.empty(0), 0.0, 200.0), truth)
    assert s.out_of_deadband == 1.0
    assert s.sla == 0.0
    assert s.reads == 0 and s.bus_load_9600 == 0.0


def test_bus_load_is_the_serial_formula_over_the_run() -> None:
    # 125 registers: 8 + (5 + 250) + 7 characters of 11 bits at 9600 baud, plus 5 ms.
    assert read_bus_seconds(125, False) == pytest.approx(270 * 11 / 9600 + 0.005)
    # 20 coils: 5 + ceil(20 / 8) = 8 response bytes.
    assert read_bus_seconds(20, True) == pytest.approx(23 * 11 / 9600 + 0.005)
    # The spec's ceilings: 404 registers/s and 39.7 transactions/s with zero turnaround.
    assert 125 / read_bus_seconds(125, False, turnaround=0) == pytest.approx(404.0, abs=0.1)
    assert 1 / read_bus_seconds(1, False, turnaround=0) == pytest.approx(39.67, abs=0.01)
    regs = ReadKey("d", "holding", 0, 125, ("d/x",))
    coils = ReadKey("d", "coil", 0, 20, ())
    log = ReadLog.from_series(
        [(regs, np.arange(0.0, 100.0, 10.0)), (coils, np.arange(0.0, 100.0, 50.0))], 0.0, 100.0
    )
    truth = GroundTruth.from_plant(stair_plant(), 0.0, 100.0)
    s = score(log, truth)
    expected = 10 * read_bus_seconds(125, False) + 2 * read_bus_seconds(20, True)
    assert s.bus_load_9600 == pytest.approx(expected / 100.0)
    assert s.reads == 12


# -------------------------------------------------------------- device model
@pytest.mark.parametrize(
    "plant",
    [demo_plant(), week_plant(), large_plant(300, 3)],
    ids=["demo", "week", "large"],
)
def test_vectorised_encoding_is_the_codecs(plant: Plant) -> None:
    ts = 2 * DAY + 12 * HOUR + np.array([0.0, 1.5, 333.3, 4000.0])
    for _, tag in plant.iter_tags():
        if isinstance(tag.signal, str) or tag.table in ("coil", "discrete"):
            continue
        values = tag.signal.values(ts)
        expected = [tag.codec.encode(tag.value(float(t))) for t in ts]
        assert encode_many(tag, values).tolist() == expected, tag.name


def test_answers_hold_the_registers_the_server_would() -> None:
    plant = demo_plant()
    answers = PlantAnswers(plant, window=120.0)
    t = 2 * DAY + 10 * HOUR + 0.25
    meter = plant.device("meter1")
    regs = answers.answer("meter1", "input", 0, 20, t)
    assert regs is not None
    for tag in meter.tags_in("input"):
        if tag.address + tag.width <= 20:
            got = regs[tag.address : tag.address + tag.width]
            assert got == tag.encode(t), tag.name
    bits = answers.answer("plc1", "coil", 0, 3, t)
    assert bits == [bool(plant.tag(f"plc1/{n}").value(t)) for n in ("pump1", "pump2", "heater1")]
    # plc1 has strict gaps: a read across one is refused, as the server refuses it.
    assert answers.answer("plc1", "holding", 100, 3, t) is None
    # The overhead benchmark's plant serves every gap (`--no-strict-gaps`).
    relaxed = PlantAnswers(plant.without_strict_gaps(), window=120.0)
    assert relaxed.answer("plc1", "holding", 100, 3, t) is not None


# ----------------------------------------------------------------- baselines
def test_the_fixed_frontier_gets_cheaper_and_coarser_as_the_period_grows() -> None:
    plant = demo_plant()
    t0, t1 = 2 * DAY + 9 * HOUR, 2 * DAY + 9 * HOUR + 900.0
    truth = GroundTruth.from_plant(plant, t0, t1)
    window = (t0 + 300.0, t1)
    fixed = [
        score(baselines.fixed_coalesced(plant, p, t0, t1), truth, window=window)
        for p in baselines.COALESCED_PERIODS
    ]
    rates = [s.reads_per_s for s in fixed]
    loads = [s.bus_load_9600 for s in fixed]
    assert rates == sorted(rates, reverse=True) and rates[0] > rates[-1]
    assert loads == sorted(loads, reverse=True)
    assert fixed[0].out_of_deadband < fixed[-1].out_of_deadband
    naive = score(baselines.fixed_naive(plant, t0, t1), truth, window=window)
    assert naive.reads_per_s > fixed[1].reads_per_s  # one request per tag costs more
    oracle = score(baselines.oracle(plant, truth, t0, t1), truth, window=window)
    assert oracle.sla == 1.0
    assert oracle.reads_per_s < fixed[-1].reads_per_s


# -------------------------------------------------------------------- replay
async def test_a_short_replay_runs_the_daemons_poller_against_the_truth() -> None:
    plant = demo_plant()
    t0 = 2 * DAY + 10 * HOUR
    result = await replay(plant, 120.0, start=t0, optimizer_factory=False)
    poller = result.poller
    assert poller is not None
    assert result.optimizer == "none" and result.reads > 100
    # plc1's strict gaps were refused and split, as by the real device.
    assert result.failed_reads > 0 and len(result.plans) > 1
    read_tags = {tag for key in result.log.keys for tag in key.tags}
    assert read_tags == set(poller.tags)
    # Every tag holds the truth at its last read (TCP: sampled half an RTT before apply).
    for key, tag in poller.tags.items():
        assert tag.state.ts is not None
        sampled = tag.state.ts - EPOCH - 0.001
        assert tag.state.value == plant.tag(key).read_value(sampled), key
    truth = GroundTruth.from_plant(plant, t0, t0 + 120.0)
    s = score(result.log, truth, window=(t0 + 40.0, t0 + 120.0))
    assert 0.0 <= s.out_of_deadband < 0.2 and 0.0 <= s.sla <= 1.0
    assert s.reads_per_s == pytest.approx(result.log.t[result.log.t >= t0 + 40].size / 80.0)


class ScriptedOptimizer:
    """Stands in for edgeopt.optimizer: slows every tag down at its first quick cycle."""

    def __init__(self, poller: Any, clock: Any, events: Any) -> None:
        self.poller, self.clock = poller, clock
        self.calls: list[tuple[str, float]] = []

    async def run_quick_optimization(self) -> None:
        self.calls.append(("quick", self.clock.monotonic()))
        if sum(name == "quick" for name, _ in self.calls) == 1:
            slow = {k: float(t.config.max_staleness) for k, t in self.poller.tags.items()}
            self.poller.set_intervals(slow, self.clock.monotonic())

    async def run_full_optimization(self) -> None:
        self.calls.append(("full", self.clock.monotonic()))

    async def evaluate_optimizations(self) -> None:
        self.calls.append(("evaluate", self.clock.monotonic()))


async def test_the_optimizer_runs_on_virtual_time_and_its_plan_is_what_gets_read() -> None:
    plant = demo_plant()
    made: list[ScriptedOptimizer] = []

    def factory(poller: Any, clock: Any, events: Any) -> ScriptedOptimizer:
        made.append(ScriptedOptimizer(poller, clock, events))
        return made[0]

    t0 = 2 * DAY + 10 * HOUR
    result = await replay(
        plant,
        600.0,
        start=t0,
        optimizer_factory=factory,
        optimizer_config={"quick_every": "2m", "full_every": "5m", "evaluate_after": "4m"},
    )
    calls = made[0].calls
    assert [t - t0 for name, t in calls if name == "quick"] == [120.0, 240.0, 360.0, 480.0, 600.0]
    assert [t - t0 for name, t in calls if name == "full"] == [300.0, 600.0]
    assert [t - t0 for name, t in calls if name == "evaluate"][:2] == [60.0, 120.0]
    assert result.optimizer == "ScriptedOptimizer"
    log = result.log
    before = np.count_nonzero((log.t >= t0 + 60) & (log.t < t0 + 120)) / 60
    after = np.count_nonzero((log.t >= t0 + 300) & (log.t < t0 + 600)) / 300
    assert after < before / 3  # the slowed plan is what the replay read


class TriggerOptimizer(ScriptedOptimizer):
    """At its first quick cycle: slow everything, and make the irradiance lead active power."""

    async def run_quick_optimization(self) -> None:
        first = not any(name == "quick" for name, _ in self.calls)
        await super().run_quick_optimization()
        if first:
            self.poller.set_triggers({"inverter1/irradiance": ["meter1/active_power"]})


async def test_a_trigger_reads_the_follower_on_another_line_at_once() -> None:
    """The Poller's own triggers run in the replay: a leader's change wakes the follower's line."""
    plant = demo_plant()
    t0 = 2 * DAY + 10 * HOUR  # the sun is up: irradiance moves
    result = await replay(
        plant,
        300.0,
        start=t0,
        optimizer_factory=TriggerOptimizer,
        optimizer_config={"quick_every": "2m", "full_every": "1h", "evaluate_after": "1h"},
    )
    assert result.poller is not None and result.poller.trigger_reads > 0
    log = result.log
    times = log.key_times()
    leader = [times[i] for i, k in enumerate(log.keys) if "inverter1/irradiance" in k.tags]
    follower = [times[i] for i, k in enumerate(log.keys) if "meter1/active_power" in k.tags]
    lead_t = np.concatenate(leader)
    follow_t = np.concatenate(follower)
    follow_t = follow_t[follow_t > t0 + 121]
    # A triggered read starts as the leader's read completes (on TCP: sampled
    # half an RTT after the leader's sample, plus the leader's other half).
    gaps = follow_t[:, None] - lead_t[None, :]
    triggered = np.any(np.isclose(gaps, 0.002, atol=1e-6), axis=1)
    assert triggered.sum() >= 3


# ---------------------------------------------------------- request log, report
def test_the_request_log_becomes_a_read_log_of_the_tags_each_read_covered(
    tmp_path: Path,
) -> None:
    plant = demo_plant()
    records = [
        {"t": 10.0, "device": "meter1", "fc": 4, "address": 0, "count": 20, "outcome": "ok"},
        {"t": 11.0, "device": "plc1", "fc": 1, "address": 0, "count": 3, "outcome": "ok"},
        {"t": 12.0, "device": "plc1", "fc": 3, "address": 100, "count": 3, "outcome": "exception"},
        {"t": 99.0, "device": "meter1", "fc": 4, "address": 0, "count": 20, "outcome": "ok"},
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn', encoding="utf-8")
    log, outcomes = read_request_log(path, plant, 0.0, 50.0)
    assert outcomes == {"ok": 3, "exception": 1}
    assert len(log) == 2
    keys = {k.device: k for k in log.keys}
    assert set(keys["meter1"].tags) == {
        "meter1/voltage_l1",
        "meter1/voltage_l2",
        "meter1/voltage_l3",
        "meter1/current_l1",
        "meter1/current_l2",
        "meter1/current_l3",
        "meter1/active_power",
        "meter1/frequency",
    }
    assert keys["plc1"].tags == ("plc1/pump1", "plc1/pump2", "plc1/heater1")


def test_the_frontier_section_renders_every_poller_with_its_stamp() -> None:
    score_row = {
        "kind": "baseline",
        "reads": 10,
        "reads_per_s": 1.0,
        "bus_load_9600": 0.5,
        "sla": 1.0,
        "events_judged": 4,
        "missed": 0,
        "out_of_deadband": 0.02,
    }
    plant = {
        "label": "demo",
        "plant_name": "demo",
        "n_tags": 64,
        "n_devices": 4,
        "start": 2 * DAY,
        "duration": DAY,
        "window": [2 * DAY + 8 * HOUR, 3 * DAY],
        "events": 4,
        "scores": [
            {**score_row, "name": "fixed_coalesced@1s", "period": 1.0},
            {**score_row, "name": "edgeopt: plan only", "kind": "edgeopt", "bus_load_9600": 0.2},
        ],
        "replays": [],
        "plot": "benchmarks/results/frontier_demo.png",
    }
    stamp = {"machine": "test box", "command": "python -m benchmarks frontier", "date": "today"}
    text = render_frontier({"stamp": stamp, "optimizer_available": False, "plants": [plant]})
    assert "| **edgeopt: plan only** |" in text and "0.40×" in text
    assert "yes / yes / moonshot" not in text and "yes / yes / yes" in text
    assert "test box" in text and "python -m benchmarks frontier" in text and "today" in text
    assert md_table(["a", "b"], [[1, 2]]).splitlines()[1] == "|:--|--:|"
