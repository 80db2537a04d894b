"""Do no harm: a line whose learned plan costs more than its configured plan goes back to it.

Each closed measurement window, the guard compares every line's measured
bus time with what the plan at the configured intervals costs (priced in a
forked child, and again before acting). A line over it by more than the
tolerance, with anything learned on it, returns to its configured plan; a
change under evaluation that touches it is rolled back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from edgeopt.forked import ChildLost, ForkedWork
from edgeopt.optimizer.demand import configured_line_costs, plan_inputs
from edgeopt.optimizer.evaluation import Outcome
from edgeopt.optimizer.guard import Breach
from edgeopt.optimizer.parts import OptimizerParts

__all__ = ["DoNoHarm"]

log = logging.getLogger(__name__)


class DoNoHarm(OptimizerParts):
    """The do-no-harm guard over the optimizer's plan."""

    def configured_costs(self) -> dict[str, float]:
        """Per line: what the plan at the configured intervals costs (cached until a refit)."""
        if self._configured_costs is None:
            params = self.context().allocation_params

            def work() -> Iterator[dict[str, float]]:
                yield configured_line_costs(plan_inputs(self.poller, params))

            # Priced in a forked child: the plan's temporaries stay out of the heap.
            try:
                (self._configured_costs,) = ForkedWork(work).items_now()
            except ChildLost:
                (self._configured_costs,) = work()
        return self._configured_costs

    def _check_guard(self, now: float, wall: float) -> None:
        """Put lines that cost more than their configured plan back on it."""
        last = self.activity.recent_slots(1)
        sample = self.activity.samples[last[0]] if last else None
        if sample is None or not self.enabled:
            return
        breaches = self.guard.observe(sample.bus_by_line, self.configured_costs())
        if not breaches:
            return
        # The bar may be stale (a refused read taught the plan a new barrier):
        # price it again before acting on it.
        self._configured_costs = None
        fresh = self.configured_costs()
        breaches = [
            b
            for b in breaches
            if b.measured > fresh.get(b.line, 0.0) * (1.0 + self.guard.tolerance)
        ]
        # A line already on its configured plan has nothing to give back.
        breaches = [b for b in breaches if self._learned_on(b.line)]
        if breaches:
            self._restore_configured(breaches, now, wall)

    def _learned_on(self, line: str) -> bool:
        """Whether any tag on `line` is read other than as configured (allocation or trigger)."""
        followers = self.model.followers()
        for key, tag in self.poller.tags.items():
            if self.poller.devices[tag.device].line != line:
                continue
            if key in followers or key in self.model.triggers:
                return True
            if abs(self.model.allocated.get(key, tag.base_interval) - tag.base_interval) > 1e-9:
                return True
        return False

    def _restore_configured(self, breaches: list[Breach], now: float, wall: float) -> None:
        lines = {b.line for b in breaches}
        keys = [
            k for k, t in self.poller.tags.items() if self.poller.devices[t.device].line in lines
        ]
        chosen = set(keys)
        record = self.pending
        if record is not None and chosen & set(record.changed):
            # The change under evaluation is part of the harm: it ends here.
            strategy = self.strategies[record.strategy]
            strategy.rollback(self.context(strategy), record.before)
            record.outcome = Outcome.ROLLED_BACK
            record.reason = "do-no-harm guard: " + "; ".join(b.describe() for b in breaches)
            record.evaluated = wall
            record.dirty = True
            strategy.learning.learn(False, 0.0, now)
            self.pending = None
        triggers = {
            leader: frozenset(f for f in followers if f not in chosen)
            for leader, followers in self.model.triggers.items()
            if leader not in chosen
        }
        self.model.adopt(
            {k: self.poller.tags[k].base_interval for k in keys},
            {k: v for k, v in triggers.items() if v},
            None,
            now,
        )
        for key in keys:
            self.model.shed.pop(key, None)
        self.model.push(now, keys)
        self.reactions.follow_plan()
        self._plan_changed()
        self.guard.reset(sorted(lines))
        self.guard_trips += 1
        for breach in breaches:
            log.warning("do-no-harm guard: %s; back to the configured plan", breach.describe())
            self.events.emit(
                wall,
                "guard",
                f"do-no-harm guard: {breach.describe()}; back to the configured plan",
                line=breach.line,
                measured=round(breach.measured, 6),
                configured=round(breach.configured, 6),
            )
