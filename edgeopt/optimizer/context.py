"""What a strategy works with: the poller, the plan model, the statistics, the moment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeopt.optimizer.activity import ActivityTracker
from edgeopt.optimizer.model import PlanModel
from edgeopt.poller import Poller
from edgeopt.resources import Pressure

ParamValue = bool | int | float | str


@dataclass
class StrategyContext:
    """Everything a strategy may look at (and, in apply/rollback, change)."""

    poller: Poller
    model: PlanModel
    activity: ActivityTracker
    now: float  # monotonic
    wall: float
    pressure: Pressure = Pressure.NORMAL
    min_improvement: float = 0.10
    max_fidelity_loss: float = 0.02
    # The interval strategy's knobs: every strategy's proposal goes through the
    # same allocation, so they share them.
    allocation_params: Mapping[str, ParamValue] = field(default_factory=dict)
    aggressiveness: float = 1.0
    services: Any = None  # extra services a strategy needs (the cluster worker)
