"""The interval strategy: each tag's interval from its change rate and its read's cost.

It proposes the allocation of `allocation_plan`: the cheapest intervals in
[min_interval, max_staleness] whose predicted out-of-deadband total matches
what the configured intervals would give. A quiet tag drifts towards
max_staleness, a busy tag that shares a cheap read may go faster than
configured, and a tag that shares a fast read anyway costs nothing extra.

Between cycles the optimizer snaps a slowed tag back to its configured rate
when it changes unexpectedly (`snap_back`), so a quiet tag that wakes up is
not read slowly until the next cycle.

Aggressiveness (from the success rate) sets how close to the fidelity budget
a proposal goes: a strategy whose changes were rolled back plans more
cautiously.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from edgeopt.forked import ForkedWork
from edgeopt.optimizer.allocation import predicted_ood
from edgeopt.optimizer.demand import ALLOCATION_DEFAULTS, allocation_plan, planned_bus
from edgeopt.optimizer.strategies.base import ParamValue, Proposal, Strategy, StrategyContext

# At aggressiveness a, the fidelity slack is scaled by 1 - CAUTION × (1 - a):
# a strategy whose changes were rolled back spends less of it.
CAUTION = 0.5
# Seconds a forked plan may take (about one at 10k tags) before it is given up.
PLAN_TIMEOUT = 300.0


class IntervalStrategy(Strategy):
    name: ClassVar[str] = "interval"
    priority: ClassVar[int] = 30
    heavy: ClassVar[bool] = False
    description: ClassVar[str] = "per-tag intervals from change rates and read costs"
    defaults: ClassVar[dict[str, ParamValue]] = {
        **ALLOCATION_DEFAULTS,
        "min_gain": 0.05,  # predicted bus saving a proposal needs (unless it is a repair)
        "repair_margin": 0.5,  # predicted loss over budget, in slacks, that calls for a repair
        "snap_back": True,  # read a slowed tag at its configured rate again when it changes
        "snap_hold": 300.0,  # seconds a snap-back holds at most (a new allocation ends it)
        "surprise": 0.1,  # two changes are a surprise below this many expected in SNAP_READS reads
    }

    def ready(self, context: StrategyContext) -> bool:
        return context.activity.closed >= 2

    async def propose(self, context: StrategyContext) -> Proposal | None:
        """`plan`, worked out in a forked child (see `edgeopt.forked`).

        At 10k tags its temporaries would set the daemon's memory high-water
        mark, and the search would hold the interpreter a second while the
        poller waits. The reference rates it refreshes come back with it.
        """
        references = context.model.reference_rates

        def work() -> Iterator[tuple[Proposal | None, dict[str, tuple[float, float]]]]:
            before = dict(references)
            proposal = self.plan(context)
            yield proposal, {k: v for k, v in references.items() if before.get(k) is not v}

        forked = ForkedWork(work, keys=list(context.poller.tags), timeout=PLAN_TIMEOUT)
        ((proposal, refreshed),) = await forked.items()
        references.update(refreshed)
        return proposal

    def plan(self, context: StrategyContext) -> Proposal | None:
        """The proposal, searched in this thread."""
        model = context.model
        scale = 1.0 - CAUTION * (1.0 - context.aggressiveness)
        # Slow down within the budget, or, when the current state is predicted
        # over it, speed up only: never both in one change (see build_demands).
        plan = allocation_plan(context, budget_scale=scale, direction="slower")
        # Over by a share of the slack (not of the whole budget, which on a busy
        # plant is many slacks wide and would hide a tag slowed far too much).
        margin = self.param_float("repair_margin") * max(plan.slack, 1e-9)
        over = plan.current_ood > plan.budget + margin
        if over:
            plan = allocation_plan(context, budget_scale=scale, direction="faster")
        changed = {
            key: value
            for key, value in plan.intervals.items()
            if abs(value - model.allocated.get(key, value)) > 1e-9 * max(value, 1.0)
        }
        if not changed:
            return None
        after = {**model.allocated, **changed}
        assert plan.inputs is not None
        bus_after = planned_bus(plan.inputs, after)
        ood_after = predicted_ood(plan.demands, after)
        gain = (plan.current_bus - bus_after) / plan.current_bus if plan.current_bus > 0 else 0.0
        repair = over and ood_after < plan.current_ood
        if gain < self.param_float("min_gain") and not repair:
            return None
        slower = sum(1 for k, v in changed.items() if v > model.allocated[k])
        summary = (
            f"{len(changed)} intervals ({slower} slower, {len(changed) - slower} faster): "
            f"planned bus {plan.current_bus:.4f} -> {bus_after:.4f} s/s"
        )
        if repair:
            summary += f"; repairs predicted loss {plan.current_ood:.3f} > budget {plan.budget:.3f}"
        return Proposal(
            strategy=self.name,
            summary=summary,
            intervals=changed,
            predicted={
                "bus_before": plan.current_bus,
                "bus_after": bus_after,
                "ood_before": plan.current_ood,
                "ood_after": ood_after,
                "budget": plan.budget,
                "gain": gain,
            },
            confidence=self.confidence,
            repair=repair,
            details={
                "weight": plan.allocation.weight,
                "shed": [r.to_dict() for r in plan.shed],
                "rates": plan.rates,
            },
        )
