"""The generated-plant benchmark on development seeds: figures, do-no-harm, verdicts, report.

Short runs (minutes of plant time) on development seeds only: the held-out
range is for the benchmark's report alone. No timing is asserted.
"""

from __future__ import annotations

import math

import pytest

from benchmarks import baselines
from benchmarks import generated as gen
from benchmarks.metrics import GroundTruth, score
from benchmarks.report import Stamp
from benchmarks.section_generated import render_generated
from simulators.generated import DEV_SEEDS, HELDOUT_SEEDS
from simulators.plants import build_plant

SEEDS = (3, 5)  # development seeds, one with an RS-485 line among the first few
assert all(s in DEV_SEEDS and s not in HELDOUT_SEEDS for s in SEEDS)


@pytest.fixture(scope="module")
def runs() -> list[gen.PlantRun]:
    return [gen.run_plant(s, "development", duration=900.0, warmup=300.0) for s in SEEDS]


def test_each_plant_is_scored_against_its_own_baselines(runs: list[gen.PlantRun]) -> None:
    for run in runs:
        plant = build_plant(f"gen:{run.seed}")
        assert run.n_tags == plant.n_tags and run.n_devices == len(plant.devices)
        for figure in (run.bus, run.reads, run.ood, run.ood_vs_configured, run.plan_bus):
            assert math.isfinite(figure) and figure >= 0.0
        assert 0.0 <= run.sla <= 1.0
        # One line per TCP device and one per RS-485 line, each in its own currency.
        tcp = sum(1 for d in plant.devices if d.transport == "tcp")
        assert len(run.lines) == tcp + len(plant.lines())
        assert {c.kind for c in run.lines} <= {"tcp", "serial"}
        # The learner ran, and what it did is recorded with what the truth says of it.
        assert run.changes >= 1
        for v in run.verdicts:
            assert {"id", "strategy", "kept", "true_loss", "agrees", "design"} <= set(v)


def test_the_optimizer_saves_and_does_no_harm_on_development_plants(
    runs: list[gen.PlantRun],
) -> None:
    for run in runs:
        assert run.worst_line <= 1.0 + gen.COUNT_TOLERANCE, run.lines
        assert run.sla >= 0.995
        assert run.bus < run.plan_bus  # learning beats the configured plan alone


def test_the_by_interval_baseline_reads_each_tag_at_its_configured_interval() -> None:
    plant = build_plant("gen:3")
    t0, t1 = gen.START, gen.START + 120.0
    log = baselines.fixed_by_interval(plant, t0, t1)
    reads = log.tag_read_times()
    for device, tag in plant.iter_tags():
        times = reads[f"{device.name}/{tag.name}"]
        gaps = set((times[1:] - times[:-1]).round(6).tolist())
        assert gaps == {round(tag.interval, 6)}
    truth = GroundTruth.from_plant(plant, t0, t1)
    assert 0.0 <= score(log, truth).out_of_deadband <= 1.0


def test_the_summary_and_the_report(runs: list[gen.PlantRun]) -> None:
    summary = gen.summarize(runs)
    assert summary["plants"] == len(runs)
    for key in ("bus", "reads", "ood", "ood_vs_configured", "sla"):
        row = summary[key]
        assert row["worst_seed"] in SEEDS
        values = [getattr(r, key) for r in runs]
        assert min(values) <= row["median"] <= max(values)
    assert summary["no_harm"] + len(summary["harm_seeds"]) == len(runs)
    cal = summary["calibration"]
    assert cal["tags"] > 0 and cal["sum_true"] >= 0.0
    data = {
        "stamp": Stamp.now(["generated"]).to_dict(),
        "duration": 900.0,
        "warmup": 300.0,
        "cadence": gen.FAST_CADENCE,
        "ranges": {
            "development": {
                "seeds": list(SEEDS),
                "summary": summary,
                "plants": [gen.run_dict(r) for r in runs],
            }
        },
    }
    text = render_generated(data)
    assert "## 5. Generated plants nobody tuned for" in text
    assert "### development range: 2 plants" in text
    for seed in SEEDS:
        assert f"gen:{seed}" in text
    assert "Do no harm held on" in text and "calibration" in text


async def test_on_a_development_plant_a_forced_bad_state_returns_to_the_configured_cost() -> None:
    """The guard on a generated plant: every tag forced to its min_interval, learning off."""
    from benchmarks.replay import plant_config, replay
    from edgeopt.clock import VirtualClock
    from edgeopt.events import EventLog
    from edgeopt.optimizer import build_optimizer
    from edgeopt.optimizer.loop import Optimizer
    from edgeopt.poller import Poller

    plant = build_plant("gen:3")

    def forced(poller: Poller, clock: VirtualClock, events: EventLog) -> Optimizer:
        cfg = plant_config(plant, "/tmp/unused", optimizer=dict(gen.FAST_CADENCE))
        opt = build_optimizer(poller, cfg, clock, events)
        for s in opt.strategies.values():
            s.enabled = False  # only the guard may act
        for key, tag in poller.tags.items():
            opt.model.allocated[key] = float(tag.config.min_interval)
        opt.model.push(clock.monotonic())
        return opt

    t0 = gen.START
    result = await replay(plant, 300.0, start=t0, optimizer_factory=forced)
    opt, poller = result.learner, result.poller
    assert opt.guard_trips >= 1
    configured = opt.configured_costs()
    for line, cost in configured.items():
        planned = sum(
            poller.plan.bus_seconds_per_second(d.name)
            for d in poller.devices.values()
            if d.line == line
        )
        assert planned <= cost * (1 + 1e-6), (line, planned, cost)
    # And it was measured: the last minute's reads cost no more than the configured plan's.
    truth = GroundTruth.from_plant(plant, t0, t0 + 300.0)
    late = score(result.log, truth, window=(t0 + 240.0, t0 + 300.0))
    fixed = score(
        baselines.reads_log(
            baselines.fixed_block_plan(baselines.plan_tags(plant), baselines.device_limits(plant)),
            t0,
            t0 + 300.0,
            "cfg",
        ),
        truth,
        window=(t0 + 240.0, t0 + 300.0),
    )
    assert late.reads_per_s <= fixed.reads_per_s * 1.05
