"""Each strategy's proposals on hand-made statistics, and the learning arithmetic."""

from __future__ import annotations

import math
import os
import time
from array import array
from collections.abc import Iterator

import numpy as np
import pytest
from test_optimizer_sim import MONDAY, config, device, tag

from edgeopt.config import StrategyConfig
from edgeopt.optimizer.activity import ActivityTracker
from edgeopt.optimizer.context import StrategyContext
from edgeopt.optimizer.demand import allocation_plan, tag_rates
from edgeopt.optimizer.model import PlanModel
from edgeopt.optimizer.strategies import (
    ClusterStrategy,
    IntervalStrategy,
    ParameterError,
    PatternStrategy,
    StrategyLearning,
)
from edgeopt.optimizer.strategies.cluster import indicator_bits, recall
from edgeopt.optimizer.strategies.pattern import autocorrelation, strongest_period
from edgeopt.poller import Poller

Window = dict[str, tuple[float, float]]  # key -> (reads, change events) in one window


def tracked(
    devices: list[dict[str, object]], windows: list[Window], window: float = 60.0
) -> tuple[Poller, ActivityTracker, float]:
    """A poller whose tags' counters grow window by window as given, sampled by a tracker."""
    cfg = config(devices)
    poller = Poller(cfg.devices)
    poller.replan(0.0)
    tracker = ActivityTracker(window, slots=max(8, len(windows) + 2))
    tracker.sample(poller, 0.0, MONDAY)
    t = 0.0
    for counts in windows:
        for key, (reads, jumps) in counts.items():
            stats = poller.tags[key].state.stats
            stats.reads += int(reads)
            stats.jumps += int(jumps)
            stats.changes += int(jumps)  # rates count change events
        t += window
        tracker.sample(poller, t, MONDAY + t)
    return poller, tracker, t


def context(poller: Poller, tracker: ActivityTracker, t: float, **extra: object) -> StrategyContext:
    return StrategyContext(
        poller=poller,
        model=PlanModel(poller),
        activity=tracker,
        now=t,
        wall=MONDAY + t,
        **extra,  # type: ignore[arg-type]
    )


INTERVAL = StrategyConfig(cooldown=600)
TAGS = [
    tag("busy", 0, interval="1s", min_interval="500ms", max_staleness="10s"),
    tag("quiet", 40, interval="1s", max_staleness="30s"),
    tag("setting", 80, interval="60s", max_staleness="600s"),
]


async def test_interval_slows_quiet_tags_to_max_staleness_and_keeps_busy_ones_fast() -> None:
    windows = [{"d/busy": (60, 30), "d/quiet": (60, 0), "d/setting": (0, 0)}] * 26
    windows += [{"d/busy": (60, 30), "d/quiet": (60, 0), "d/setting": (1, 0)}] * 4
    poller, tracker, t = tracked([device("d", TAGS)], windows)
    strategy = IntervalStrategy(INTERVAL)
    proposal = await strategy.propose(context(poller, tracker, t))
    assert proposal is not None
    assert proposal.intervals["d/quiet"] == 30.0
    assert "d/busy" not in proposal.intervals or proposal.intervals["d/busy"] <= 1.0
    assert proposal.predicted["bus_after"] < proposal.predicted["bus_before"]
    assert not proposal.repair
    # A tag with too few reads to judge keeps its interval (it is not in the proposal).
    assert "d/setting" not in proposal.intervals


async def test_interval_proposes_nothing_when_nothing_is_worth_changing() -> None:
    windows = [{"d/busy": (60, 30), "d/quiet": (60, 30)}] * 30
    poller, tracker, t = tracked([device("d", TAGS[:2])], windows)
    strategy = IntervalStrategy(INTERVAL)
    ctx = context(poller, tracker, t)
    first = await strategy.propose(ctx)
    if first is not None:
        strategy.apply(ctx, first)
    assert await strategy.propose(ctx) is None


async def test_interval_repairs_a_busy_tag_that_was_slowed() -> None:
    windows = [{"d/busy": (6, 5), "d/quiet": (60, 0)}] * 30
    poller, tracker, t = tracked([device("d", TAGS[:2])], windows)
    ctx = context(poller, tracker, t)
    ctx.model.allocated["d/busy"] = 10.0
    ctx.model.push(t)
    proposal = await IntervalStrategy(INTERVAL).propose(ctx)
    assert proposal is not None and proposal.repair
    assert proposal.intervals["d/busy"] < 10.0


def test_fast_attack_rates_follow_a_tag_that_wakes_up() -> None:
    quiet = [{"d/busy": (60, 0), "d/quiet": (60, 0)}] * 25
    awake = [{"d/busy": (60, 40), "d/quiet": (60, 0)}] * 5
    poller, tracker, t = tracked([device("d", TAGS[:2])], quiet + awake)
    rates = tag_rates(context(poller, tracker, t), forecast=False)
    long_only = tracker.rates(1800.0)["d/busy"][0]
    assert rates["d/busy"] is not None and rates["d/busy"] > 2 * long_only


# -- cluster -------------------------------------------------------------------------

CLUSTER_TAGS = [
    tag("lead", 0, interval="1s", max_staleness="10s"),
    tag("f1", 50, interval="1s", max_staleness="30s"),
    tag("f2", 70, interval="1s", max_staleness="30s"),
    tag("loner", 90, interval="1s", max_staleness="30s"),
]


def test_recall_counts_follower_changes_explained_by_the_leader() -> None:
    leader = [100.0, 200.0, 300.0]
    assert recall([100.5, 200.4, 300.2], leader, before=2, after=2) == 1.0
    assert recall([100.5, 250.0], leader, before=2, after=2) == 0.5
    assert recall([], leader, before=2, after=2) == 0.0


def test_indicator_bits_mark_bins_and_their_neighbours() -> None:
    m = indicator_bits([[0.0, 25.0], []], 0.0, 100.0, 10.0)
    assert (m.rows, m.bins) == (2, 10)
    # Bins 0 and 1 (the change at 0 s), 1 to 3 (at 25 s); the first bin is the high bit.
    assert m.bits == bytes([0b1111_0000, 0b00_000000, 0, 0])


def test_cluster_picks_the_leader_that_explains_its_followers() -> None:
    cfg = config([device("d", CLUSTER_TAGS)])
    poller = Poller(cfg.devices)
    poller.replan(0.0)
    lead = [600.0 * i for i in range(1, 7)]
    series = {
        "d/lead": lead,
        "d/f1": [t + 0.5 for t in lead],
        "d/f2": [t + 0.8 for t in lead],
        "d/loner": [123.0, 1777.0, 2999.0],
    }
    strategy = ClusterStrategy(StrategyConfig(cooldown=3600))
    ctx = StrategyContext(poller, PlanModel(poller), ActivityTracker(60.0), 4000.0, MONDAY + 4000)
    keys = sorted(series)
    labels = [0 if k != "d/loner" else 1 for k in keys]
    triggers = strategy.choose_triggers(ctx, keys, labels, series, {"d/lead": 6 / 21600})
    assert triggers == {"d/lead": ("d/f1", "d/f2")}


def test_a_follower_changing_without_its_leader_breaks_the_trigger() -> None:
    cfg = config([device("d", CLUSTER_TAGS)])
    poller = Poller(cfg.devices)
    poller.replan(0.0)
    strategy = ClusterStrategy(StrategyConfig(cooldown=3600))
    model = PlanModel(poller)
    lead_stats = poller.tags["d/lead"].state.stats

    def ctx(wall: float) -> StrategyContext:
        return StrategyContext(poller, model, ActivityTracker(60.0), wall - MONDAY, wall)

    lead_stats.last_event_ts = MONDAY + 100.0
    assert strategy.observe_follower_change(ctx(MONDAY + 100.5), "d/f1", "d/lead") is None
    assert strategy.observe_follower_change(ctx(MONDAY + 500.0), "d/f1", "d/lead") is None
    broken = strategy.observe_follower_change(ctx(MONDAY + 900.0), "d/f1", "d/lead")
    assert broken is not None and broken.follower == "d/f1" and broken.unexplained == 2


# -- pattern -------------------------------------------------------------------------


def test_strongest_period_finds_a_shift_cycle() -> None:
    hours = np.arange(24 * 6)
    series = [10.0 if h % 8 < 3 else 0.0 for h in hours]
    assert strongest_period(series, 0.5) == 8
    assert autocorrelation(series, 8) > 0.9
    assert strongest_period([1.0] * 100, 0.5) is None


def active_day_windows(days: int, window: float) -> list[Window]:
    """A tag busy from 08:00 to 16:00 (UTC), quiet otherwise; a companion always quiet."""
    out: list[Window] = []
    per_day = int(86400 / window)
    for i in range(days * per_day):
        hour = (i * window % 86400) / 3600
        busy = 8 <= hour < 16
        out.append({"d/busy": (window, window / 2 if busy else 0), "d/quiet": (window, 0)})
    return out


@pytest.fixture
def utc() -> Iterator[None]:
    """Profiles bin by local time: pin it to UTC for the test."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.usefixtures("utc")
async def test_pattern_speeds_up_before_the_predicted_active_period() -> None:
    window = 600.0
    # Two whole days, then the third day up to 07:50: the tag is quiet right now.
    windows = active_day_windows(2, window) + active_day_windows(1, window)[: int(7.83 * 6)]
    poller, tracker, t = tracked([device("d", TAGS[:2])], windows, window)
    ctx = context(poller, tracker, t)
    assert 7 <= (ctx.wall % 86400) / 3600 < 8
    strategy = PatternStrategy(StrategyConfig(cooldown=21600))
    assert strategy.ready(ctx)
    without = allocation_plan(ctx, forecast=False)
    proposal = await strategy.propose(ctx)
    assert proposal is not None and proposal.forecast is True
    with_forecast = allocation_plan(ctx, forecast=True)
    # Before 08:00 the forecast already expects the busy period (lead 20 min).
    assert with_forecast.intervals["d/busy"] < without.intervals["d/busy"]
    assert with_forecast.rates["d/busy"] > 10 * without.rates["d/busy"]


@pytest.mark.usefixtures("utc")
def test_pattern_flags_an_hour_far_busier_than_its_profile() -> None:
    cfg = config([device("d", TAGS[:2])])
    poller = Poller(cfg.devices)
    poller.replan(0.0)
    tracker = ActivityTracker(60.0)
    tracker.sync(poller)
    i = tracker.index["d/busy"]
    tracker.dow_exposure[:] = array("d", [3600.0] * 7)  # every weekday seen, all alike
    tracker.hourly_n[:] = array("d", [5.0] * 24)
    s1, s2 = tracker.hourly_sums()
    for hour in range(24):
        s1[hour][i] = 5 * 10.0  # mean 10 changes/h
        s2[hour][i] = 5 * 101.0  # sd 1
    tracker.hour_seconds = 1200.0
    tracker.hour_reads[:] = array("f", [1200.0] * len(tracker.keys))
    tracker.hour_jumps[i] = 40.0  # ~120 changes/h
    strategy = PatternStrategy(StrategyConfig(cooldown=21600))
    ctx = StrategyContext(poller, PlanModel(poller), tracker, 1200.0, MONDAY + 1200)
    found = strategy.anomalies(ctx)
    assert [a.key for a in found] == ["d/busy"]
    (anomaly,) = found
    assert anomaly.busier and anomaly.severity == "critical"
    assert anomaly.expected_low < 10 < anomaly.expected_high < anomaly.observed
    assert strategy.anomalies(ctx) == []  # once an hour


# -- learning and parameters ------------------------------------------------------------


def test_success_shortens_and_failure_doubles_the_cooldown() -> None:
    learning = StrategyLearning(base_cooldown=600.0)
    assert learning.success_rate == 0.5 and learning.cooldown == 600.0
    learning.learn(True, 0.3, now=0.0)
    assert learning.cooldown == 300.0
    assert learning.success_rate == pytest.approx(0.6)
    assert learning.cooldown_until == 300.0
    learning.learn(True, 0.3, now=0.0)
    learning.learn(True, 0.3, now=0.0)
    assert learning.cooldown == 150.0  # floor: a quarter of the base
    learning.learn(False, -0.1, now=1000.0)
    assert learning.cooldown == 300.0
    assert learning.cooldown_until == 1300.0
    for _ in range(10):
        learning.learn(False, 0.0, now=0.0)
    assert learning.cooldown == 600.0 * 16  # cap
    assert learning.success_rate < 0.1
    assert learning.aggressiveness == pytest.approx(0.25 + 0.75 * learning.success_rate)
    assert learning.kept == 3 and learning.rolled_back == 11


def test_cooldown_survives_a_restart_as_wall_time() -> None:
    learning = StrategyLearning(base_cooldown=600.0)
    learning.started(now=100.0)  # on cooldown until monotonic 700
    saved = learning.to_json(now=100.0, wall=MONDAY + 100)
    restored = StrategyLearning(base_cooldown=600.0)
    # After a restart monotonic time starts again near 0, 200 s of wall time later.
    restored.load_json(saved, now=5.0, wall=MONDAY + 300)
    assert restored.on_cooldown(5.0)
    assert restored.cooldown_until == pytest.approx(5.0 + 400.0)
    assert not restored.on_cooldown(406.0)


def test_parameters_are_checked_and_coerced() -> None:
    strategy = IntervalStrategy(StrategyConfig(cooldown=600, params={"min_gain": 0.2}))
    assert strategy.params["min_gain"] == 0.2
    changes = strategy.update_parameters(rate_window="900", snap_back="off", min_reads=7)
    assert changes["rate_window"] == {"before": 1800.0, "after": 900.0}
    assert strategy.params["snap_back"] is False
    assert strategy.params["min_reads"] == 7
    with pytest.raises(ParameterError, match="no parameter"):
        strategy.update_parameters(nonsense=1)
    with pytest.raises(ParameterError, match="must be"):
        strategy.update_parameters(snap_back=3)
    with pytest.raises(ParameterError, match="whole number"):
        strategy.update_parameters(min_reads=2.5)
    assert math.isclose(float(strategy.params["rate_window"]), 900.0)
