"""Run-time reactions between cycles: snap-backs, broken triggers and anomaly bursts.

The poller calls `on_change` for every change event and `on_write` for every
verified write; the loop's tick calls `check_anomalies`. Each reacts at once,
through the plan model's overrides and triggers, without waiting for a cycle.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from edgeopt.events import EventLog
from edgeopt.optimizer.model import BURST, SNAP, PlanModel
from edgeopt.optimizer.strategies import (
    ClusterStrategy,
    PatternStrategy,
    Strategy,
    StrategyContext,
)
from edgeopt.poller import Poller, TagRuntime

log = logging.getLogger(__name__)

SNAP_FACTOR = 2.0  # a tag read this many times slower than configured may snap back
SNAP_READS = 4  # a snap-back needs two changes within this many reads of the slowed tag
ANOMALIES_KEPT = 100


class Reactions:
    """What the optimizer does between cycles when the plant surprises it.

    context: the strategies' context now (for the strategy given, or none).
    """

    def __init__(
        self,
        poller: Poller,
        model: PlanModel,
        events: EventLog,
        strategies: Mapping[str, Strategy],
        context: Callable[[Strategy | None], StrategyContext],
    ) -> None:
        self.poller = poller
        self.model = model
        self.events = events
        self.strategies = strategies
        self._context = context
        # Follower -> its leader, for the triggers of the plan in force.
        self.leader_of: dict[str, str] = {}
        self.anomalies: deque[dict[str, Any]] = deque(maxlen=ANOMALIES_KEPT)

    def follow(self, poller: Poller, model: PlanModel) -> None:
        """React for this poller and plan model from now on (a config reload)."""
        self.poller, self.model = poller, model
        self.follow_plan()

    def follow_plan(self) -> None:
        """Take the triggers of the plan now in force."""
        self.leader_of = self.model.followers()

    def on_change(self, tag: TagRuntime, wall: float, now: float) -> None:
        """A change event: a follower's tests its trigger; a slowed tag's burst snaps it back."""
        leader = self.leader_of.get(tag.key)
        if leader is not None:
            cluster = self.strategies.get("cluster")
            if isinstance(cluster, ClusterStrategy):
                broken = cluster.observe_follower_change(self._context(None), tag.key, leader)
                if broken is not None:
                    self._break_trigger(
                        broken.leader, broken.follower, broken.unexplained, now, wall
                    )
            return
        params = self.strategies["interval"].params
        if not params.get("snap_back", True) or tag.key in self.model.overrides:
            return
        base = tag.base_interval
        if tag.interval < SNAP_FACTOR * base:
            return
        # One change of a slowed tag is expected sooner or later: its rate says
        # how often. Snap back only on a burst the rate cannot explain: a second
        # change within SNAP_READS reads when fewer than `surprise` were expected.
        span = SNAP_READS * tag.interval
        expected = self.model.rates.get(tag.key, 0.0) * span
        if expected >= float(params.get("surprise", 0.1)):
            return
        recent = tag.state.stats.recent_events
        if len(recent) < 2 or recent[-1] - recent[-2] > span:
            return
        hold = float(params.get("snap_hold", 300.0))
        self.model.override(tag.key, base, now + hold, SNAP, now)

    def on_write(self, tag: TagRuntime, wall: float, now: float) -> None:
        """A verified write: someone acts on this tag, so it is read at its base rate a while."""
        if tag.key in self.model.overrides or tag.interval <= tag.base_interval * 1.01:
            return
        hold = float(self.strategies["interval"].params.get("snap_hold", 300.0))
        self.model.override(tag.key, tag.base_interval, now + hold, SNAP, now)

    def _break_trigger(
        self, leader: str, follower: str, unexplained: int, now: float, wall: float
    ) -> None:
        followers = set(self.model.triggers.get(leader, ())) - {follower}
        if followers:
            self.model.triggers[leader] = frozenset(followers)
        else:
            self.model.triggers.pop(leader, None)
        tag = self.poller.tags.get(follower)
        if tag is not None:
            self.model.allocated[follower] = tag.base_interval
        self.follow_plan()
        self.model.push(now, [follower])
        log.warning(
            "trigger %s -> %s broken: %d of the follower's last changes came without the leader",
            leader,
            follower,
            unexplained,
        )
        self.events.emit(
            wall,
            "trigger_broken",
            f"{follower} no longer follows {leader}; read at its own interval again",
            leader=leader,
            follower=follower,
        )

    def check_anomalies(self, now: float, wall: float) -> None:
        """Report what the pattern strategy finds unusual; read a tag busier than usual at base."""
        pattern = self.strategies.get("pattern")
        if not isinstance(pattern, PatternStrategy) or not pattern.enabled:
            return
        found = pattern.anomalies(self._context(pattern))
        duration = pattern.param_float("burst_duration")
        for anomaly in found:
            data = anomaly.to_dict()
            self.anomalies.append({"ts": wall, **data})
            tag = self.poller.tags.get(anomaly.key)
            if anomaly.busier and tag is not None:
                self.model.override(anomaly.key, tag.base_interval, now + duration, BURST, now)
            message = (
                f"{anomaly.key}: {anomaly.observed:.0f} changes/h, expected "
                f"{anomaly.expected_low:.3g}..{anomaly.expected_high:.3g} ({anomaly.severity})"
            )
            loud = anomaly.severity == "critical" and anomaly.busier
            (log.warning if loud else log.info)("anomaly: %s", message)
            self.events.emit(wall, "anomaly", message, **data)
