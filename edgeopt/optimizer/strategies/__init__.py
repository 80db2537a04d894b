"""The optimizer's strategies, named in one place.

`STRATEGIES` maps each name (as used in the config's `optimizer.strategies`,
in `edgeoptctl strategy …` and in the history) to its class.
"""

from __future__ import annotations

from edgeopt.optimizer.strategies.base import (
    ParameterError,
    Proposal,
    Strategy,
    StrategyContext,
    StrategyLearning,
)
from edgeopt.optimizer.strategies.cluster import ClusterStrategy
from edgeopt.optimizer.strategies.interval import IntervalStrategy
from edgeopt.optimizer.strategies.pattern import PatternStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    IntervalStrategy.name: IntervalStrategy,
    ClusterStrategy.name: ClusterStrategy,
    PatternStrategy.name: PatternStrategy,
}

__all__ = [
    "STRATEGIES",
    "ClusterStrategy",
    "IntervalStrategy",
    "ParameterError",
    "PatternStrategy",
    "Proposal",
    "Strategy",
    "StrategyContext",
    "StrategyLearning",
]
