"""The learning loop (after seed 004): cycles, evaluation, rollback, learning.

- `run_quick_optimization()` runs the interval strategy (every `quick_every`);
  `run_full_optimization()` runs pattern, cluster and interval, in that
  order (every `full_every`). Strategies on cooldown are skipped (DEBUG).
- One change is in flight at a time: while a change waits for its
  evaluation, the cycles leave the plan alone, so before and after windows
  belong to exactly one change.
- `evaluate_optimizations()` judges the change once `evaluate_after` has
  passed: Welch's t-test over per-window bus time and fidelity samples, and
  probe bursts (a few slowed tags read at their configured rate for a while,
  to count what the slow rate misses). Kept, or rolled back exactly.
- `tick()` (call it every few seconds, or call `run_due()`, which also runs
  whatever cycle is due) closes measurement windows, runs probes, expires
  snap-backs and bursts, checks anomalies, refits cost models and follows
  the resource pressure. What happens between cycles when the plant
  surprises the plan (snap-backs, broken triggers, anomaly bursts) is in
  `reactions`.

What it learned (`memory`), the do-no-harm guard (`harm`) and its reports
(`reports`) are parts of their own, over the shared state in `parts`.

All time comes from the injected clock; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from edgeopt.clock import Clock
from edgeopt.config import DEFAULT_COOLDOWNS, Config, OptimizerConfig, StrategyConfig
from edgeopt.events import EventLog
from edgeopt.forked import ForkedWork
from edgeopt.modbus.planner import CostModel
from edgeopt.optimizer.activity import ActivityTracker
from edgeopt.optimizer.cluster_worker import ClusterRunner
from edgeopt.optimizer.costs import refit_costs
from edgeopt.optimizer.demand import (
    allocation_plan,
    plan_inputs,
    planned_bus,
)
from edgeopt.optimizer.evaluation import Outcome, Verdict
from edgeopt.optimizer.experiment import AB, BEFORE_AFTER, MIN_UNITS, split_units
from edgeopt.optimizer.guard import CostGuard
from edgeopt.optimizer.harm import DoNoHarm
from edgeopt.optimizer.judgement import MIN_WINDOWS, judge
from edgeopt.optimizer.measure import ChangeMeter, fidelity_sample
from edgeopt.optimizer.memory import HISTORY_KEEP, OptimizerMemory
from edgeopt.optimizer.model import PlanModel
from edgeopt.optimizer.probes import ProbeBook
from edgeopt.optimizer.reactions import Reactions
from edgeopt.optimizer.records import OptimizationRecord
from edgeopt.optimizer.reports import OptimizerReports
from edgeopt.optimizer.state import LearnedState
from edgeopt.optimizer.strategies import (
    STRATEGIES,
    ClusterStrategy,
    Proposal,
    Strategy,
    StrategyContext,
)
from edgeopt.poller import Poller, default_cost
from edgeopt.resources import Pressure, PressureMonitor

log = logging.getLogger(__name__)

# Measurement windows: evaluate_after / 8, within these bounds.
MIN_WINDOW = 5.0
MAX_WINDOW = 60.0
REFIT_EVERY = 10  # windows between cost-model refits
READS_KEPT = 1000  # planned reads listed per record (those of the devices it touched)
# KMeans on a few hundred tags costs milliseconds: the cluster strategy is heavy
# work (deferred under machine pressure) only above this many tags.
CLUSTER_HEAVY_TAGS = 2000


class Optimizer(OptimizerMemory, DoNoHarm, OptimizerReports):
    """Self-optimization for one poller: its cycles, evaluations and reactions."""

    def __init__(
        self,
        poller: Poller,
        config: OptimizerConfig,
        clock: Clock,
        events: EventLog,
        *,
        resources: PressureMonitor | None = None,
        state: LearnedState | None = None,
        cluster_runner: ClusterRunner | None = None,
    ) -> None:
        self.poller = poller
        self.config = config
        self.clock = clock
        self.events = events
        self.resources = resources
        self.enabled = bool(config.enabled)
        self.window = min(MAX_WINDOW, max(MIN_WINDOW, float(config.evaluate_after) / 8))
        slots = math.ceil(max(3600.0, 4 * float(config.evaluate_after)) / self.window) + 8
        self.activity = ActivityTracker(self.window, slots)
        self.model = PlanModel(poller)
        self.strategies: dict[str, Strategy] = {}
        for name, cls in sorted(STRATEGIES.items(), key=lambda kv: kv[1].priority):
            cfg = config.strategies.get(name) or StrategyConfig(cooldown=DEFAULT_COOLDOWNS[name])
            self.strategies[name] = cls(cfg)
        self.records: list[OptimizationRecord] = []
        self.pending: OptimizationRecord | None = None
        self.last_quick: float | None = None  # wall
        self.last_full: float | None = None
        now = clock.monotonic()
        self._next_quick = now + float(config.quick_every)
        self._next_full = now + float(config.full_every)
        self._next_id = 1
        self._lock = asyncio.Lock()
        self._plan_changed_at = 0  # activity window index since which the plan is unchanged
        self._record_from = 0  # first window that counts as "after" for the pending record
        self.probes = ProbeBook()
        # Lines the last allocation had to shed load on (ShedReport.to_dict rows).
        self.shed_reports: list[dict[str, Any]] = []
        self._device_trend: dict[str, deque[float]] = {}
        self._default_costs: dict[str, CostModel] = {
            n: default_cost(d.config) for n, d in poller.devices.items()
        }
        self.cluster_runner = cluster_runner or ClusterRunner()
        self.guard = CostGuard()
        self._configured_costs: dict[str, float] | None = None
        self.guard_trips = 0
        self._store: Any = None
        self.reactions = Reactions(poller, self.model, events, self.strategies, self.context)
        self._attach(poller)
        if state is not None:
            self.restore(state)
        self.activity.sample(poller, now, clock.now())

    async def close(self) -> None:
        """Stop the cluster worker and detach from the poller."""
        await self.cluster_runner.aclose()
        self._detach()

    # -- scheduling ------------------------------------------------------------------

    async def run_due(self) -> list[str]:
        """Tick, then run whatever evaluation or cycle is due by the clock."""
        self.tick()
        done: list[str] = []
        if not self.enabled:
            return done
        now, wall = self.clock.monotonic(), self.clock.now()
        if self.pending is not None and wall >= self.pending.evaluate_at:
            result = await self.evaluate_optimizations()
            if result["evaluated"]:
                done.append("evaluate")
        if now >= self._next_full:
            await self.run_full_optimization()
            done.append("full")
        elif now >= self._next_quick:
            await self.run_quick_optimization()
            done.append("quick")
        return done

    async def run_quick_optimization(self) -> dict[str, Any]:
        """The quick cycle: the interval strategy only."""
        async with self._lock:
            self.tick()
            now, wall = self.clock.monotonic(), self.clock.now()
            self._next_quick = now + float(self.config.quick_every)
            result: dict[str, Any] = {"cycle": "quick", "started": wall, "strategies": {}}
            if not self.enabled:
                result["skipped"] = "optimizer disabled"
                return result
            if now + float(self.config.evaluate_after) >= self._next_full:
                # A change made now would still be in evaluation when the full cycle
                # comes, and the full cycle's heavier strategies would lose their turn.
                log.debug("Skipping quick optimization cycle (full cycle due)")
                result["skipped"] = "full cycle due"
                return result
            log.info("Running quick optimization cycle")
            self.last_quick = wall
            await self._run(["interval"], result)
        await self._persist()
        return result

    async def run_full_optimization(self) -> dict[str, Any]:
        """The full cycle: pattern, cluster, interval (one change at most)."""
        async with self._lock:
            self.tick()
            now, wall = self.clock.monotonic(), self.clock.now()
            self._next_full = now + float(self.config.full_every)
            self._next_quick = now + float(self.config.quick_every)
            result: dict[str, Any] = {"cycle": "full", "started": wall, "strategies": {}}
            if not self.enabled:
                result["skipped"] = "optimizer disabled"
                return result
            log.info("Running full optimization cycle")
            self.last_full = wall
            refit = refit_costs(self.poller.devices.values(), self._default_costs)
            if refit:
                self.poller.replan(now, refit)
                result["refit_costs"] = refit
            await self._run(list(self.strategies), result)
        await self._persist()
        return result

    async def run_strategy(self, name: str) -> dict[str, Any]:
        """Run one strategy now, cooldown or not (an operator's request)."""
        if name not in self.strategies:
            raise KeyError(f"unknown strategy {name!r} (known: {', '.join(self.strategies)})")
        async with self._lock:
            self.tick()
            result: dict[str, Any] = {
                "cycle": "manual",
                "started": self.clock.now(),
                "strategies": {},
            }
            await self._run([name], result, manual=True)
        await self._persist()
        return result

    async def _run(
        self, names: Iterable[str], result: dict[str, Any], manual: bool = False
    ) -> None:
        rows: dict[str, Any] = result["strategies"]
        for name in sorted(names, key=lambda n: self.strategies[n].priority):
            strategy = self.strategies[name]
            context = self.context(strategy)
            reason = self._blocked(strategy, context, manual)
            if reason is not None:
                log.debug("Skipping strategy %s (%s)", name, reason)
                rows[name] = {"status": "skipped", "reason": reason}
                continue
            try:
                proposal = await strategy.propose(context)
            except Exception as exc:
                log.error("Error in %s optimization: %s", name, exc, exc_info=True)
                rows[name] = {"status": "error", "error": str(exc)}
                continue
            if proposal is None:
                rows[name] = {"status": "no_change"}
                continue
            design = await self._design(strategy, proposal, manual)
            record = self._apply(strategy, context, proposal, manual, design)
            rows[name] = {"status": "applied", "record": record.id, "summary": proposal.summary}

    def _blocked(self, strategy: Strategy, context: StrategyContext, manual: bool) -> str | None:
        """Why `strategy` may not run now, or None.

        Machine pressure is asked last, so a deferral is counted only when it
        is the one reason; after `resources.max_deferrals` deferrals in a row
        the strategy runs anyway. An operator's run is never deferred.
        """
        if not strategy.enabled:
            return "disabled"
        if self.pending is not None:
            return f"change #{self.pending.id} is being evaluated"
        if self.activity.closed - self._plan_changed_at < MIN_WINDOWS:
            return "measuring the current plan"
        if not manual and strategy.learning.on_cooldown(context.now):
            return "on cooldown"
        if not strategy.ready(context):
            return "not enough data yet"
        heavy = strategy.heavy and not (
            isinstance(strategy, ClusterStrategy) and len(self.poller.tags) <= CLUSTER_HEAVY_TAGS
        )
        resources = self.resources
        if heavy and not manual and resources is not None:
            job = f"strategy {strategy.name}"
            if resources.defer(job):
                limit = int(resources.config.max_deferrals)
                return (
                    f"resource pressure {resources.level_for()}: "
                    f"deferred {resources.deferred[job]} of {limit} times"
                )
        return None

    # -- applying ------------------------------------------------------------------

    def _apply(
        self,
        strategy: Strategy,
        context: StrategyContext,
        proposal: Proposal,
        manual: bool,
        split: tuple[str, list[str], dict[str, float]] = (BEFORE_AFTER, [], {}),
    ) -> OptimizationRecord:
        """Adopt `proposal` and open its record; `split` is what `_design` made of it."""
        now, wall = context.now, context.wall
        design, control, rollout = split
        touched = proposal.touched(self.model)
        sample = fidelity_sample(touched)
        before_slots = self.activity.recent_slots(
            min(self.activity.closed - self._plan_changed_at, self._windows_per_evaluation())
        )
        meter = self._meter()
        before_metrics = meter.metrics(before_slots, sample)
        ab_before = meter.ab_pairs(before_slots, sample, control)
        snapshot = strategy.apply(context, proposal)
        weight = proposal.details.get("weight")
        if isinstance(weight, float) and math.isfinite(weight):
            self.model.weight = weight
        rates = proposal.details.get("rates")
        if isinstance(rates, dict):
            self.model.rates.update({str(k): float(v) for k, v in rates.items()})
        shed = proposal.details.get("shed")
        if isinstance(shed, list):
            self.shed_reports = [dict(r) for r in shed if isinstance(r, dict)]
        self.reactions.follow_plan()
        strategy.learning.started(now)
        record = OptimizationRecord(
            id=self._next_id,
            strategy=strategy.name,
            summary=proposal.summary,
            started=wall,
            evaluate_at=wall + float(self.config.evaluate_after),
            before=snapshot,
            after=self.model.snapshot(touched),
            changed=touched,
            reads_after=self._reads_of(touched),
            before_metrics=before_metrics,
            predicted=dict(proposal.predicted),
            params=dict(strategy.params),
            repair=proposal.repair,
            manual=manual,
            design=design,
            control=control,
            rollout=rollout,
            ab_before=ab_before,
        )
        self._next_id += 1
        self.records.append(record)
        del self.records[:-HISTORY_KEEP]
        self.pending = record
        self._plan_changed()
        log.info("optimization #%d (%s): %s", record.id, strategy.name, proposal.summary)
        self.events.emit(
            wall,
            "optimization",
            f"#{record.id} {strategy.name}: {proposal.summary}",
            id=record.id,
            strategy=strategy.name,
            changed=len(touched),
        )
        return record

    async def _design(
        self, strategy: Strategy, proposal: Proposal, manual: bool
    ) -> tuple[str, list[str], dict[str, float]]:
        """Split an interval change into treatment and control when it can be split.

        Returns (design, control tags, the control's intended intervals); the
        proposal is cut down to the treatment in place.
        """
        splittable = (
            strategy.name == "interval"
            and not proposal.repair
            and not manual
            and proposal.triggers is None
            and len(proposal.intervals) >= 2 * MIN_UNITS
        )
        if not splittable:
            return BEFORE_AFTER, [], {}
        treatment, control = split_units(proposal.intervals, self._meter().unit_of, self._next_id)
        if not control:
            return BEFORE_AFTER, [], {}
        rollout = {k: proposal.intervals[k] for k in control}
        proposal.intervals = {k: proposal.intervals[k] for k in treatment}
        params = self.context().allocation_params

        def work() -> Iterator[float]:
            intervals = {**self.model.allocated, **proposal.intervals}
            yield planned_bus(plan_inputs(self.poller, params), intervals)

        before = float(proposal.predicted.get("bus_before", 0.0))
        # Priced in a forked child, like the allocation itself: at 10k tags it
        # takes a while, and its temporaries would stay in the daemon's heap.
        (after,) = await ForkedWork(work).items()
        proposal.predicted["bus_after"] = after
        proposal.predicted["gain"] = (before - after) / before if before > 0 else 0.0
        proposal.summary += f"; A/B: {len(treatment)} tags changed, {len(control)} held as control"
        return AB, control, rollout

    def _reads_of(self, keys: list[str]) -> list[list[Any]]:
        """The planned reads on the devices these tags belong to (at most READS_KEPT)."""
        devices = {self.poller.tags[k].device for k in keys if k in self.poller.tags}
        return [
            [r.device, r.table.value, r.start, r.count, round(r.period, 4)]
            for r in self.poller.plan.reads
            if r.device in devices
        ][:READS_KEPT]

    def _meter(self) -> ChangeMeter:
        return ChangeMeter(self.activity, self.poller, self.reactions.leader_of)

    def _windows_per_evaluation(self) -> int:
        return max(MIN_WINDOWS, round(float(self.config.evaluate_after) / self.window))

    # -- the tick ----------------------------------------------------------------------

    def tick(self) -> None:
        """Bookkeeping; cheap unless a measurement window closes."""
        now, wall = self.clock.monotonic(), self.clock.now()
        self._follow_pressure(now)
        for key in self.model.expire(now):
            self.probes.finish(key, self.poller.tags, self.records, self.model, now, wall)
        if self.model.sync():
            self.model.push(now)
        if not self.activity.sample(self.poller, now, wall):
            return
        record = self.pending
        if record is not None and self.activity.closed > self._record_from:
            last = self.activity.recent_slots(1)
            sample = self.activity.samples[last[0]]
            if sample is not None and self.probes.overlaps(record.id, sample.start, sample.end):
                sample = None
            if sample is not None:
                meter, changed = self._meter(), fidelity_sample(record.changed)
                fid = meter.fidelity(last, changed)[0]
                record.after_metrics.add(sample.bus, sample.reads_per_s, fid)
                record.ab_after += meter.ab_pairs(last, changed, record.control)
                record.dirty = True
            elapsed = wall - record.started
            if (
                record.id not in self.probes.probed
                and elapsed >= float(self.config.evaluate_after) / 2
            ):
                duration = min(120.0, max(10.0, float(self.config.evaluate_after) / 4))
                self.probes.start(
                    record,
                    self.poller.tags,
                    self.model,
                    self._meter().effective_period,
                    duration,
                    now,
                )
        # Anomaly checks are optional work: critical machine pressure defers them (a while).
        resources = self.resources
        if self.enabled and not (
            resources is not None and resources.defer("anomaly checks", at=Pressure.CRITICAL)
        ):
            self.reactions.check_anomalies(now, wall)
        if self.activity.closed % REFIT_EVERY == 0:
            changed = refit_costs(self.poller.devices.values(), self._default_costs)
            if changed:
                log.info("cost models refitted for %s", ", ".join(changed))
                self.poller.replan(now, changed)
                self._configured_costs = None
                self.guard.reset()
        self._check_guard(now, wall)
        self._sample_device_trends()

    def _follow_pressure(self, now: float) -> None:
        """Follow the resources: machine pressure (no read changes) and acquisition shedding."""
        resources = self.resources
        level = self.pressure
        if level is not self.model.pressure:
            self.model.pressure = level
            if resources is not None and resources.memory_short:
                self.cluster_runner.close()  # give the worker's memory back
        stages = resources.shedding.stages() if resources is not None else {}
        if stages != self.model.shedding:
            self.model.shedding = stages
            self.model.push(now)  # only shedding, the daemon's own lag or memory, slows reads

    # -- evaluation ---------------------------------------------------------------------

    async def evaluate_optimizations(self, force: bool = False) -> dict[str, Any]:
        """Judge the pending change if its time has come (or now, with `force`)."""
        async with self._lock:
            self.tick()
            result = self._evaluate(force)
        if result["evaluated"]:
            await self._persist()
        return result

    def _evaluate(self, force: bool) -> dict[str, Any]:
        record = self.pending
        wall, now = self.clock.now(), self.clock.monotonic()
        if record is None:
            return {"evaluated": [], "pending": 0}
        if wall < record.evaluate_at and not force:
            return {"evaluated": [], "pending": 1, "due": record.evaluate_at}
        verdict = judge(record, wall, self.config)
        if isinstance(verdict, str):
            return {"evaluated": [], "pending": 1, "waiting": verdict}
        strategy = self.strategies[record.strategy]
        if verdict.outcome is Outcome.ROLLED_BACK:
            strategy.rollback(self.context(strategy), record.before)
            self.reactions.follow_plan()
            self._plan_changed()
        elif record.design == AB and record.rollout:
            # The control half was drawn from the same tags: roll the change out to it.
            self.model.adopt(record.rollout, None, None, now)
            self._plan_changed()
            verdict = Verdict(
                verdict.outcome,
                f"{verdict.reason}; rolled out to the {len(record.rollout)} control tags",
                verdict.improvement,
                verdict.fidelity_loss,
                verdict.confidence,
            )
        record.outcome = verdict.outcome
        record.dirty = True
        record.evaluated = wall
        record.improvement = verdict.improvement
        record.fidelity_loss = verdict.fidelity_loss
        record.confidence = verdict.confidence
        record.reason = verdict.reason
        strategy.learning.learn(verdict.outcome is Outcome.KEPT, verdict.improvement, now)
        self.pending = None
        log.info(
            "optimization #%d (%s) %s: %s",
            record.id,
            record.strategy,
            verdict.outcome.value.replace("_", " "),
            verdict.reason,
        )
        self.events.emit(
            wall,
            "optimization_evaluated",
            f"#{record.id} {record.strategy} {verdict.outcome.value}: {verdict.reason}",
            id=record.id,
            outcome=verdict.outcome.value,
            improvement=verdict.improvement,
            confidence=verdict.confidence,
        )
        return {"evaluated": [record.to_history()], "pending": 0}

    # -- control ------------------------------------------------------------------------

    def strategy(self, name: str) -> Strategy:
        try:
            return self.strategies[name]
        except KeyError:
            known = ", ".join(self.strategies)
            raise KeyError(f"unknown strategy {name!r} (known: {known})") from None

    async def update_strategy_parameters(self, name: str, **params: object) -> dict[str, Any]:
        """Change a strategy's parameters at once (and persist them); returns before/after."""
        changes = self.strategy(name).update_parameters(**params)
        log.info("strategy %s parameters updated: %s", name, changes)
        await self._persist()
        return {"strategy": name, "changes": changes}

    async def set_strategy_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        strategy = self.strategy(name)
        before, strategy.enabled = strategy.enabled, bool(enabled)
        log.info("strategy %s %s", name, "enabled" if enabled else "disabled")
        await self._persist()
        return {"strategy": name, "enabled": strategy.enabled, "was": before}

    async def predicted(self) -> dict[str, float]:
        """The allocation the interval strategy would make now (changing nothing).

        Searched in a forked child, as the strategy's own is; like every plan, it
        refreshes the reference rates of the tags read at their configured rate.
        """
        context = self.context(self.interval)
        references = context.model.reference_rates

        def work() -> Iterator[tuple[dict[str, float], dict[str, tuple[float, float]]]]:
            before = dict(references)
            plan = allocation_plan(context)
            yield (
                {
                    "current_bus": plan.current_bus,
                    "proposed_bus": plan.proposed_bus,
                    "current_ood": plan.current_ood,
                    "proposed_ood": plan.proposed_ood,
                    "budget": plan.budget,
                },
                {k: v for k, v in references.items() if before.get(k) is not v},
            )

        forked = ForkedWork(work, keys=list(self.poller.tags))
        ((predicted, refreshed),) = await forked.items()
        references.update(refreshed)
        return predicted


def build_optimizer(
    poller: Poller,
    config: OptimizerConfig | Config,
    clock: Clock,
    events: EventLog,
    *,
    state: LearnedState | None = None,
    resources: PressureMonitor | None = None,
) -> Optimizer:
    """The optimizer for `poller`; the daemon and the benchmark replay build it the same way.

    config: the `optimizer:` section (or the whole config, whose section is used).
    state: learned state from `persistence.load_state` (None: start fresh).
    resources: the pressure monitor (None: always normal).
    """
    section = config.optimizer if isinstance(config, Config) else config
    return Optimizer(poller, section, clock, events, state=state, resources=resources)
