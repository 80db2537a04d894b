"""The cluster strategy: tags that change together are read when their leader changes.

1. Event series: each candidate tag's change times over a window (tags that
   change too often to be worth triggering, or too rarely to say anything
   about, are left out).
2. Features: each tag's row of the correlation matrix of binned (and
   dilated by a bin, since slow reads see a change late) change indicators.
   The indicators are made in a forked child and cross the daemon as packed
   bits; the worker builds the matrix and the features (numpy stays there).
3. KMeans on those rows in a worker process, k by silhouette score.
4. Per cluster a leader: the tag of the followers' device (a member, or a
   busier tag such as a line's total) whose changes explain most of the
   members' at the least trigger cost. A follower's change is explained when
   the leader changed within the two reads' intervals around it; the leader
   must explain at least `min_recall` of them, and far more than a leader
   changing at random at its rate would (probability `max_chance`).
   Followers keep only members whose saving beats their trigger reads.
   Members that drift on their own between the leader's changes (a group on
   a slow common signal, each crossing its deadband at its own moment) fail
   this: read on the leader's changes, they would be late by up to a
   leader's gap. The allocation charges each follower for the changes its
   leader may miss (`UNEXPLAINED` in `demand`).
5. The allocation then lets followers sit at max_staleness, and reads the
   leader fast enough for itself and its followers.

At run time (`observe_follower_change`), a follower that changes with no
leader change around it counts against its trigger; `break_after` such
changes out of the last five break the trigger and the follower returns to
its configured interval.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

from edgeopt.config import StrategyConfig
from edgeopt.forked import ForkedWork
from edgeopt.optimizer.cluster_worker import ClusterResult, ClusterRunner, PackedIndicators
from edgeopt.optimizer.demand import allocation_plan, tag_rates
from edgeopt.optimizer.strategies.base import ParamValue, Proposal, Strategy, StrategyContext
from edgeopt.poller import Poller

# How long a follower's recent change verdicts are remembered.
EVIDENCE = 5


@dataclass(frozen=True, slots=True)
class TriggerBreak:
    """A follower whose changes no longer come with its leader's."""

    leader: str
    follower: str
    unexplained: int


def event_series(
    poller: Poller, keys: list[str], start: float, end: float, *, busy: bool = False
) -> dict[str, list[float]]:
    """Change times of each tag in [start, end]; tags whose history is too short are left out.

    busy: the other way round, only the tags busier than their history holds,
    with the changes it still has (they cover less than [start, end]).
    """
    out: dict[str, list[float]] = {}
    for key in keys:
        events = poller.tags[key].state.stats.recent_events
        full = events.maxlen is not None and len(events) == events.maxlen and events[0] > start
        if full == busy:
            out[key] = [t for t in events if start <= t <= end]
    return out


def indicator_bits(
    series: list[list[float]], start: float, end: float, bin_s: float
) -> PackedIndicators:
    """One row per tag: a bit set in each bin with a change, and in its neighbours.

    Packed as the worker unpacks them (see `PackedIndicators`): the daemon
    holds and passes on an eighth of a byte matrix, and never needs numpy.
    """
    bins = max(1, math.ceil((end - start) / bin_s))
    last = bins - 1
    width = (bins + 7) // 8
    bits = bytearray(width * len(series))
    for row, times in enumerate(series):
        base = row * width
        changed = {min(max(int((t - start) // bin_s), 0), last) for t in times}
        for b in changed:
            for c in (b - 1, b, b + 1):
                if 0 <= c <= last:
                    bits[base + (c >> 3)] |= 0x80 >> (c & 7)  # first bin: the high bit
    return PackedIndicators(len(series), bins, bytes(bits))


def recall(follower: list[float], leader: list[float], before: float, after: float) -> float:
    """Share of follower changes with a leader change in [t - before, t + after]."""
    return explanation(follower, leader, 0.0, before, after).share


@dataclass(frozen=True, slots=True)
class Explanation:
    """How many of a follower's changes came with a leader change, against coincidence."""

    hits: int
    changes: int
    chance: float  # hits a leader changing at random, at its rate, would give
    spread: float  # their standard deviation

    @property
    def share(self) -> float:
        return self.hits / self.changes if self.changes else 0.0

    def p_coincidence(self) -> float:
        """Probability of at least `hits` by coincidence (normal approximation)."""
        if self.spread <= 0.0:
            return 0.0 if self.hits > self.chance else 1.0
        z = (self.hits - 0.5 - self.chance) / self.spread
        return 0.5 * math.erfc(z / math.sqrt(2.0))


def explanation(
    follower: list[float], leader: list[float], leader_rate: float, before: float, after: float
) -> Explanation:
    """Follower changes with a leader change in [t - before, t + after], and what chance gives.

    A busy leader explains many changes by coincidence alone; what counts is
    explaining far more than that (`Explanation.p_coincidence`).
    """
    hits = 0
    for t in follower:
        i = bisect.bisect_left(leader, t - before)
        if i < len(leader) and leader[i] <= t + after:
            hits += 1
    n = len(follower)
    p = 1.0 - math.exp(-leader_rate * (before + after))
    return Explanation(hits, n, n * p, math.sqrt(n * p * (1.0 - p)))


class ClusterStrategy(Strategy):
    name: ClassVar[str] = "cluster"
    priority: ClassVar[int] = 20
    heavy: ClassVar[bool] = True
    description: ClassVar[str] = (
        "KMeans over change correlations: followers read on their leader's change"
    )
    defaults: ClassVar[dict[str, ParamValue]] = {
        "window": 21600.0,  # seconds of change history clustered
        "bin": 10.0,  # seconds per indicator bin
        "min_events": 3,  # fewer changes in the window: nothing to learn from
        "max_rate": 0.1,  # changes/s above which a tag is too busy to trigger or be triggered
        "max_k": 12,
        "min_recall": 0.8,  # share of a follower's changes its leader must explain
        "max_chance": 0.01,  # largest probability of explaining as many by coincidence
        "min_gain": 0.05,  # predicted bus saving a new trigger map needs
        "slack": 1.0,  # seconds added to the coincidence tolerance
        "break_after": 2,  # unexplained follower changes (of the last 5) that break a trigger
        "seed": 0,
    }

    def __init__(self, config: StrategyConfig) -> None:
        super().__init__(config)
        self._evidence: dict[str, deque[bool]] = {}
        self.last_result: ClusterResult | None = None

    def ready(self, context: StrategyContext) -> bool:
        return isinstance(context.services, ClusterRunner) and context.activity.closed >= 2

    async def propose(self, context: StrategyContext) -> Proposal | None:
        """Cluster the tags' changes in the worker, then choose triggers and plan.

        The parts before and after the worker's KMeans read every tag's
        event history and plan twice: at 10k tags they run in forked children
        (see `edgeopt.forked`), so their temporaries never enter the daemon's
        heap. The reference rates the plans refresh come back with them.
        """
        runner = context.services
        if not isinstance(runner, ClusterRunner):
            return None
        keys = list(context.poller.tags)
        ((candidates, indicators),) = await ForkedWork(
            lambda: [self._indicators(context)], keys=keys
        ).items()
        if indicators is None:
            return None
        result = await runner.run(indicators, int(self.params["max_k"]), int(self.params["seed"]))
        del indicators
        self.last_result = result
        references = context.model.reference_rates

        def work() -> Iterator[tuple[Proposal | None, dict[str, tuple[float, float]]]]:
            before = dict(references)
            proposal = self._proposal(context, candidates, result)
            yield proposal, {k: v for k, v in references.items() if before.get(k) is not v}

        ((proposal, refreshed),) = await ForkedWork(work, keys=keys).items()
        references.update(refreshed)
        return proposal

    def _window(self, context: StrategyContext) -> tuple[float, float, list[str]]:
        # Only the time actually observed counts: a young daemon has seen minutes,
        # not the whole window, and rates over the window would be too low.
        keys = [k for k, t in context.poller.tags.items() if not isinstance(t.state.value, str)]
        return self.observed_since(context), context.wall, keys

    def _indicators(self, context: StrategyContext) -> tuple[list[str], PackedIndicators | None]:
        """The candidates (tags changing neither too little nor too much) and their indicators."""
        start, end, keys = self._window(context)
        max_events = self.param_float("max_rate") * (end - start)
        min_events = self.param_float("min_events")
        series = event_series(context.poller, keys, start, end)
        candidates = sorted(
            k for k, times in series.items() if min_events <= len(times) <= max_events
        )
        if len(candidates) < 3:
            return candidates, None
        return candidates, indicator_bits(
            [series[k] for k in candidates], start, end, self.param_float("bin")
        )

    def _proposal(
        self, context: StrategyContext, candidates: list[str], result: ClusterResult
    ) -> Proposal | None:
        """The triggers the clusters make worth it, and the plan with them (searched here)."""
        poller, model = context.poller, context.model
        start, end, keys = self._window(context)
        series = event_series(poller, keys, start, end)
        rates = tag_rates(context, model.forecast)
        # Busy tags cannot be followers, but may lead: a line's total power.
        busy = event_series(poller, keys, start, end, busy=True)
        series.update(busy)
        misses: dict[str, float] = {}
        triggers = self.choose_triggers(
            context,
            candidates,
            result.labels,
            series,
            rates,
            span=end - start,
            partial=set(busy),
            misses=misses,
        )
        current = {k: tuple(sorted(v)) for k, v in model.triggers.items()}
        if triggers == current:
            return None
        with_new = allocation_plan(context, triggers=triggers, rates=rates, misses=misses)
        with_old = allocation_plan(context, rates=rates)
        cost_new = with_new.proposed_bus + with_new.trigger_cost
        cost_old = with_old.proposed_bus + with_old.trigger_cost
        gain = (cost_old - cost_new) / cost_old if cost_old > 0 else 0.0
        if gain < self.param_float("min_gain") and len(triggers) >= len(current):
            return None
        changed = {
            k: v
            for k, v in with_new.intervals.items()
            if abs(v - model.allocated.get(k, v)) > 1e-9 * max(v, 1.0)
        }
        followers = sum(len(v) for v in triggers.values())
        return Proposal(
            strategy=self.name,
            summary=(
                f"{len(triggers)} leaders trigger {followers} followers "
                f"(k={result.k}, silhouette {result.silhouette:.2f}); "
                f"predicted bus {cost_old:.4f} -> {cost_new:.4f} s/s"
            ),
            intervals=changed,
            triggers=triggers,
            misses=misses,
            predicted={
                "bus_before": with_old.current_bus + with_old.trigger_cost,
                "bus_after": cost_new,
                "ood_before": with_old.current_ood,
                "ood_after": with_new.proposed_ood,
                "gain": gain,
            },
            confidence=max(0.0, min(1.0, result.silhouette)),
            details={
                "k": result.k,
                "silhouette": result.silhouette,
                "candidates": len(candidates),
                "weight": with_new.allocation.weight,
            },
        )

    def choose_triggers(
        self,
        context: StrategyContext,
        candidates: list[str],
        labels: list[int],
        series: Mapping[str, list[float]],
        rates: Mapping[str, float | None],
        span: float | None = None,
        partial: Collection[str] = (),
        misses: dict[str, float] | None = None,
    ) -> dict[str, tuple[str, ...]]:
        """Per cluster the leader that saves most, and the followers worth triggering.

        The leader may be any tag of the followers' device with enough changes,
        not only a cluster member: a busy tag (a line's total power) that
        changes whenever the group does is often the cheapest trigger.
        span: seconds the series cover (default: the whole window); partial:
        tags whose series starts later (busier than their history holds).
        misses: filled with each chosen follower's share of changes its leader missed.
        """
        poller, model = context.poller, context.model
        followers_now = model.followers()
        span = max(self.param_float("window") if span is None else span, 1.0)
        slack = self.param_float("slack")
        min_recall = self.param_float("min_recall")
        max_chance = self.param_float("max_chance")
        min_events = self.param_float("min_events")
        end = context.wall
        # A cluster's members on one device form a group: a trigger never crosses devices.
        clusters: dict[tuple[int, str], list[str]] = {}
        for key, label in zip(candidates, labels, strict=True):
            clusters.setdefault((label, poller.tags[key].device), []).append(key)
        by_device: dict[str, list[str]] = {}
        for key, times in series.items():
            if len(times) >= min_events:
                by_device.setdefault(poller.tags[key].device, []).append(key)

        def read_cost(key: str) -> float:
            tag = poller.tags[key]
            return poller.devices[tag.device].cost.read_seconds(tag.table, int(tag.config.width))

        def interval(key: str) -> float:
            return poller.tags[key].interval

        out: dict[str, tuple[str, ...]] = {}
        for members in clusters.values():
            if len(members) < 2:
                continue
            best: tuple[float, str, list[str], dict[str, float]] | None = None
            device = poller.tags[members[0]].device
            for leader in sorted(set(members) | set(by_device.get(device, ()))):
                lead = series[leader]
                # A busy leader's history may not reach back to the window's start.
                since = lead[0] if leader in partial and lead else None
                leader_rate = len(lead) / (span if since is None else max(end - since, 1.0))
                chosen: list[str] = []
                missed: dict[str, float] = {}
                score = 0.0
                for follower in members:
                    if follower == leader:
                        continue
                    # A triggered follower sees its changes right after the leader's;
                    # otherwise a change is seen up to a read of either late.
                    own = slack if followers_now.get(follower) == leader else interval(follower)
                    before = own + slack
                    changes = series[follower]
                    if since is not None:
                        changes = [t for t in changes if t >= since + before]
                    explained = explanation(
                        changes,
                        lead,
                        leader_rate,
                        before=before,
                        after=interval(leader) + slack,
                    )
                    if explained.share < min_recall or explained.p_coincidence() > max_chance:
                        continue
                    tag = poller.tags[follower]
                    cost = read_cost(follower)
                    saving = cost / max(interval(follower), 1e-3) - cost / float(
                        tag.config.max_staleness
                    )
                    net = saving - (rates.get(leader) or leader_rate) * cost
                    if followers_now.get(follower) == leader:
                        net = max(net, 1e-9)  # keep a working trigger unless it costs
                    if net > 0:
                        chosen.append(follower)
                        score += net
                        # Read on the trigger, a follower's misses are hidden (each is
                        # seen at the leader's next change): keep what was measured before.
                        missed[follower] = 1.0 - explained.share
                        if followers_now.get(follower) == leader:
                            missed[follower] = max(
                                missed[follower], model.misses.get(follower, 0.0)
                            )
                if chosen and (best is None or score > best[0]):
                    best = (score, leader, chosen, missed)
            if best is not None:
                out[best[1]] = tuple(sorted(best[2]))
                if misses is not None:
                    misses.update(best[3])
        # A tag is a leader or a follower, never both: drop followers that lead.
        leaders = set(out)
        out = {k: tuple(f for f in v if f not in leaders) for k, v in out.items()}
        return {k: v for k, v in sorted(out.items()) if v}

    def observed_since(self, context: StrategyContext) -> float:
        """Start of the change history worth clustering: the window, or less if younger."""
        first = [
            t.state.stats.first_read_ts
            for t in context.poller.tags.values()
            if t.state.stats.first_read_ts is not None
        ]
        start = context.wall - self.param_float("window")
        return max(start, min(first)) if first else start

    # -- run time: does the correlation still hold? -------------------------------

    def observe_follower_change(
        self, context: StrategyContext, follower: str, leader: str
    ) -> TriggerBreak | None:
        """Judge one follower change; returns a break when its trigger no longer holds."""
        poller = context.poller
        lead = poller.tags.get(leader)
        if lead is None:
            return None
        last = lead.state.stats.last_event_ts
        tolerance = lead.interval + self.param_float("slack")
        explained = last is not None and context.wall - last <= tolerance
        evidence = self._evidence.setdefault(follower, deque(maxlen=EVIDENCE))
        evidence.append(explained)
        unexplained = sum(1 for e in evidence if not e)
        if unexplained >= int(self.params["break_after"]):
            del self._evidence[follower]
            return TriggerBreak(leader, follower, unexplained)
        return None

    def forget(self, follower: str) -> None:
        self._evidence.pop(follower, None)
