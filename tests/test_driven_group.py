"""Correlated groups pay off on a generated plant (issue 14, item 7), seen in the read log.

A generated drive (development seed) on its own RS-485 line has a group of
registers driven by its speed, a static parameter block and a few fast
words. After 90 minutes of plant time at the field trial's cadence, the
replay's request log must show the static block split off and read near its
max_staleness, one cheap leader read often, and the group read on the
leader's changes (plus its heartbeat), at no worse fidelity than reading
every tag at its configured interval.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import numpy as np
import pytest

from benchmarks import baselines
from benchmarks.generated import FAST_CADENCE, START
from benchmarks.metrics import GroundTruth, ReadLog, score
from benchmarks.replay import ReplayResult, replay
from simulators.generated import DEV_SEEDS, HELDOUT_SEEDS, DrivenGroup, driven_group_plant
from simulators.plant import Plant

SEED = 87  # a drive: its group moves when the speed steps or the machine stops
assert SEED in DEV_SEEDS and SEED not in HELDOUT_SEEDS
DURATION = 5400.0
WINDOW = 1200.0  # the last 20 minutes are judged

pytestmark = pytest.mark.slow


def drive_on_rs485() -> tuple[Plant, DrivenGroup]:
    plant, group = driven_group_plant(SEED)
    device = next(d for d in plant.devices if d.name == group.device)
    serial = dataclasses.replace(device, transport="rtu", line="rs485", unit_id=1)
    return dataclasses.replace(plant, devices=[serial]), group


@pytest.fixture(scope="module")
def run() -> tuple[Plant, DrivenGroup, ReplayResult]:
    plant, group = drive_on_rs485()
    result = asyncio.run(
        replay(
            plant,
            DURATION,
            start=START,
            optimizer_factory=None,
            optimizer_config=dict(FAST_CADENCE),
        )
    )
    return plant, group, result


def reads_per_tag(log: ReadLog, t0: float) -> Counter[str]:
    counts: Counter[str] = Counter()
    for kid, key in enumerate(log.keys):
        n = int(np.count_nonzero((log.key == kid) & (log.t >= t0)))
        for tag in key.tags:
            counts[tag] += n
    return counts


def test_the_group_follows_one_cheap_leader(
    run: tuple[Plant, DrivenGroup, ReplayResult],
) -> None:
    _, group, result = run
    triggers = result.learner.model.triggers
    members = set(group.followers) | ({group.leader} if group.leader else set())
    assert len(triggers) == 1, triggers
    leader, followers = next(iter(triggers.items()))
    assert leader in members
    # The leader is one register or two (a float), not a block.
    tag = result.poller.tags[leader]
    assert int(tag.config.width) <= 2
    assert len(set(followers) & members) >= 0.75 * (len(members) - 1)
    assert result.poller.trigger_reads > 0


def test_the_request_log_shows_the_split(run: tuple[Plant, DrivenGroup, ReplayResult]) -> None:
    plant, group, result = run
    t1 = START + DURATION
    t0 = t1 - WINDOW
    log = result.log
    counts = reads_per_tag(log, t0)
    leader, followers = next(iter(result.learner.model.triggers.items()))
    static = set(group.static)
    fast = set(group.fast)
    # The static block is split off: no read holds both a static and a live register.
    for kid, key in enumerate(log.keys):
        if not np.any((log.key == kid) & (log.t >= t0)):
            continue
        if static & set(key.tags):
            assert not (set(key.tags) - static), key
    # ... and read near its max_staleness (120 s here), not at the configured 1 s.
    staleness = min(
        float(t.max_staleness)
        for d in plant.devices
        for t in d.tags
        if f"{d.name}/{t.name}" in static
    )
    for key in static:
        assert counts[key] <= 1.5 * WINDOW / staleness + 1, (key, counts[key])
    # The fast words stay at their configured 1 s.
    for key in fast:
        assert counts[key] >= 0.95 * WINDOW, (key, counts[key])
    # The leader is read far more often than its followers, which are read on its
    # changes and at their heartbeat: a fraction of what a block read at 1 s makes.
    follower_reads = [counts[f] for f in followers]
    assert counts[leader] >= 3 * float(np.median(follower_reads)), (counts[leader], follower_reads)
    assert max(follower_reads) <= 0.25 * WINDOW, follower_reads


def test_the_trigger_costs_no_fidelity(run: tuple[Plant, DrivenGroup, ReplayResult]) -> None:
    plant, group, result = run
    t1 = START + DURATION
    window = (t1 - WINDOW, t1)
    truth = GroundTruth.from_plant(plant, START, t1)
    live = sorted(set(truth.tags) - set(group.static))
    ours = score(result.log, truth, window=window, tags=live)
    configured = score(
        baselines.fixed_by_interval(plant, START, t1), truth, window=window, tags=live
    )
    fixed = score(baselines.fixed_coalesced(plant, 1.0, START, t1), truth, window=window)
    everything = score(result.log, truth, window=window)
    assert ours.out_of_deadband <= 1.1 * configured.out_of_deadband + 1e-4
    assert everything.sla >= 0.995
    # And the line carries far less than block reads at the configured 1 s.
    assert everything.bus_load_9600 <= 0.5 * fixed.bus_load_9600
