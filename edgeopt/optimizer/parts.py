"""What every part of the optimizer works on, and the plumbing they share.

`Optimizer` (in `loop`) is made of parts, each a module of its own: the
learned state it keeps (`memory`), the do-no-harm guard (`harm`) and what it
reports (`reports`). `OptimizerParts` declares the state they share, which
`Optimizer.__init__` sets, so each part reads as plain methods over it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from edgeopt.clock import Clock
from edgeopt.config import OptimizerConfig
from edgeopt.events import EventLog
from edgeopt.modbus.planner import CostModel
from edgeopt.optimizer.activity import ActivityTracker
from edgeopt.optimizer.cluster_worker import ClusterRunner
from edgeopt.optimizer.demand import ALLOCATION_DEFAULTS
from edgeopt.optimizer.guard import CostGuard
from edgeopt.optimizer.model import PlanModel
from edgeopt.optimizer.probes import ProbeBook
from edgeopt.optimizer.reactions import Reactions
from edgeopt.optimizer.records import OptimizationRecord
from edgeopt.optimizer.strategies import IntervalStrategy, Strategy, StrategyContext
from edgeopt.poller import Poller
from edgeopt.resources import Pressure, PressureMonitor

__all__ = ["OptimizerParts"]


class OptimizerParts:
    """The optimizer's shared state (set by `Optimizer.__init__`) and plumbing."""

    poller: Poller
    config: OptimizerConfig
    clock: Clock
    events: EventLog
    resources: PressureMonitor | None
    enabled: bool
    window: float  # seconds per measurement window
    activity: ActivityTracker
    model: PlanModel
    strategies: dict[str, Strategy]
    reactions: Reactions
    records: list[OptimizationRecord]
    pending: OptimizationRecord | None  # the change waiting for its evaluation
    last_quick: float | None  # wall
    last_full: float | None
    probes: ProbeBook
    shed_reports: list[dict[str, Any]]  # lines the last allocation shed load on
    cluster_runner: ClusterRunner
    guard: CostGuard
    guard_trips: int
    _next_id: int
    _lock: asyncio.Lock  # one cycle, evaluation or save at a time
    _plan_changed_at: int  # activity window index since which the plan is unchanged
    _record_from: int  # first window that counts as "after" for the pending record
    _device_trend: dict[str, deque[float]]
    _default_costs: dict[str, CostModel]
    _configured_costs: dict[str, float] | None
    _store: Any  # the learned state's writer (`persistence.LearnedStateStore`), once attached

    if TYPE_CHECKING:  # made by the do-no-harm part

        def configured_costs(self) -> dict[str, float]: ...

    @property
    def interval(self) -> IntervalStrategy:
        s = self.strategies["interval"]
        assert isinstance(s, IntervalStrategy)
        return s

    @property
    def pressure(self) -> Pressure:
        """The machine pressure: it defers optional work, and never slows a read."""
        return self.resources.level if self.resources is not None else Pressure.NORMAL

    def context(self, strategy: Strategy | None = None) -> StrategyContext:
        return StrategyContext(
            poller=self.poller,
            model=self.model,
            activity=self.activity,
            now=self.clock.monotonic(),
            wall=self.clock.now(),
            pressure=self.pressure,
            min_improvement=float(self.config.min_improvement),
            max_fidelity_loss=float(self.config.max_fidelity_loss),
            allocation_params={
                k: v for k, v in self.interval.params.items() if k in ALLOCATION_DEFAULTS
            },
            aggressiveness=strategy.learning.aggressiveness if strategy else 1.0,
            services=self.cluster_runner,
        )

    def _attach(self, poller: Poller) -> None:
        poller.change_listeners.append(self.reactions.on_change)
        poller.write_listeners.append(self.reactions.on_write)

    def _detach(self) -> None:
        if self.reactions.on_change in self.poller.change_listeners:
            self.poller.change_listeners.remove(self.reactions.on_change)
        if self.reactions.on_write in self.poller.write_listeners:
            self.poller.write_listeners.remove(self.reactions.on_write)

    def _plan_changed(self) -> None:
        # The window in progress straddles the change: neither side counts it.
        self._plan_changed_at = self.activity.closed + 1
        self._record_from = self.activity.closed + 1
        self.guard.reset()
