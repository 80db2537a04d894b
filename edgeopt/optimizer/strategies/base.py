"""The shape every strategy has (after seeds 001 and 004), and what it works with.

A strategy is a plain class: `can_apply(context)` says whether it may run now,
`propose(context)` computes a `Proposal` from the statistics without touching
anything, `apply` adopts a proposal (returning the exact prior state) and
`rollback` puts that state back. Each keeps a `StrategyLearning`: a success
rate (EWMA) that shortens its cooldown after kept changes, doubles it after
rolled-back ones, and sets how aggressively it moves.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgeopt.config import StrategyConfig
from edgeopt.optimizer.context import ParamValue, StrategyContext
from edgeopt.optimizer.model import PlanModel, PlanSnapshot, Pressure

__all__ = [
    "ParamValue",
    "ParameterError",
    "Proposal",
    "Strategy",
    "StrategyContext",
    "StrategyLearning",
    "trend_of",
]

# Success-rate learning: EWMA step, and how far cooldowns may move from their base.
LEARNING_RATE = 0.2
MIN_COOLDOWN_FACTOR = 0.25
MAX_COOLDOWN_FACTOR = 16.0
TREND_WINDOW = 3


class ParameterError(ValueError):
    """A strategy parameter update named an unknown key or a value of the wrong type."""


@dataclass
class Proposal:
    """A change a strategy wants, and what it expects from it."""

    strategy: str
    summary: str
    intervals: dict[str, float]  # new allocated intervals (only the tags that change)
    triggers: dict[str, tuple[str, ...]] | None = None  # a whole new trigger map, or None
    # With triggers: per follower, the share of its changes its leader missed.
    misses: dict[str, float] = field(default_factory=dict)
    forecast: bool | None = None  # switch the pattern forecast on/off, or None
    periods: dict[str, int] | None = None  # strong activity periods per device (hours), or None
    predicted: dict[str, float] = field(default_factory=dict)  # bus/ood before and after
    confidence: float = 0.5
    repair: bool = False  # reads faster to win fidelity back
    details: dict[str, Any] = field(default_factory=dict)

    def touched(self, model: PlanModel) -> list[str]:
        """Tags whose allocation or trigger role this proposal changes."""
        keys = set(self.intervals)
        if self.triggers is not None:
            keys |= set(model.followers()) | set(model.triggers)
            keys |= {f for fs in self.triggers.values() for f in fs} | set(self.triggers)
        return sorted(keys)


@dataclass
class StrategyLearning:
    """Success rate, cooldown and run counters of one strategy."""

    base_cooldown: float
    runs: int = 0
    kept: int = 0
    rolled_back: int = 0
    success_rate: float = 0.5
    cooldown: float = -1.0  # current cooldown; starts at the base
    cooldown_until: float = -math.inf  # monotonic
    improvements: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.cooldown < 0:
            self.cooldown = self.base_cooldown

    @property
    def aggressiveness(self) -> float:
        """0.25 (after failures) … 1.0 (after successes): how far one change moves."""
        return 0.25 + 0.75 * self.success_rate

    def on_cooldown(self, now: float) -> bool:
        return now < self.cooldown_until

    def started(self, now: float) -> None:
        self.runs += 1
        self.cooldown_until = now + self.cooldown

    def learn(self, kept: bool, improvement: float, now: float) -> None:
        """Fold one evaluated change in."""
        outcome = 1.0 if kept else 0.0
        self.success_rate += LEARNING_RATE * (outcome - self.success_rate)
        if kept:
            self.kept += 1
            self.cooldown = max(self.base_cooldown * MIN_COOLDOWN_FACTOR, self.cooldown * 0.5)
        else:
            self.rolled_back += 1
            self.cooldown = min(self.base_cooldown * MAX_COOLDOWN_FACTOR, self.cooldown * 2.0)
        self.cooldown_until = now + self.cooldown
        self.improvements.append(improvement if kept else min(improvement, 0.0))
        del self.improvements[: -4 * TREND_WINDOW]

    def trend(self) -> str:
        """improving / stable / degrading, from the last evaluated changes."""
        return trend_of(self.improvements)

    def to_json(self, now: float, wall: float) -> dict[str, Any]:
        until = None if math.isinf(self.cooldown_until) else wall + (self.cooldown_until - now)
        return {
            "runs": self.runs,
            "kept": self.kept,
            "rolled_back": self.rolled_back,
            "success_rate": self.success_rate,
            "cooldown": self.cooldown,
            "cooldown_until": until,
            "improvements": self.improvements,
        }

    def load_json(self, data: Mapping[str, Any], now: float, wall: float) -> None:
        self.runs = int(data.get("runs", 0))
        self.kept = int(data.get("kept", 0))
        self.rolled_back = int(data.get("rolled_back", 0))
        self.success_rate = float(data.get("success_rate", 0.5))
        self.cooldown = float(data.get("cooldown", self.base_cooldown))
        until = data.get("cooldown_until")
        # Stored as wall time: a restart keeps the cooldown running.
        self.cooldown_until = -math.inf if until is None else now + (float(until) - wall)
        self.improvements = [float(x) for x in data.get("improvements", [])]


def trend_of(values: list[float], tolerance: float = 0.02) -> str:
    """Compare the mean of the last few values with the few before them."""
    if len(values) < 2:
        return "stable"
    recent = values[-TREND_WINDOW:]
    earlier = values[-2 * TREND_WINDOW : -TREND_WINDOW] or values[:1]
    delta = sum(recent) / len(recent) - sum(earlier) / len(earlier)
    if delta > tolerance:
        return "improving"
    if delta < -tolerance:
        return "degrading"
    return "stable"


class Strategy(ABC):
    """One way of changing the plan."""

    name: ClassVar[str]
    priority: ClassVar[int]  # lower runs first in a full cycle
    heavy: ClassVar[bool] = False  # skipped under resource pressure
    description: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, ParamValue]] = {}

    def __init__(self, config: StrategyConfig) -> None:
        self.enabled = bool(config.enabled)
        self.params: dict[str, ParamValue] = dict(self.defaults)
        self.learning = StrategyLearning(base_cooldown=float(config.cooldown))
        self.update_parameters(**dict(config.params))

    # -- the shape ---------------------------------------------------------------

    @property
    def cooldown(self) -> float:
        return self.learning.cooldown

    @property
    def confidence(self) -> float:
        """How much this strategy's changes are trusted (its success rate)."""
        return self.learning.success_rate

    def can_apply(self, context: StrategyContext) -> bool:
        """Enabled, off cooldown, allowed under the current pressure, and has what it needs."""
        if not self.enabled or self.learning.on_cooldown(context.now):
            return False
        if self.heavy and context.pressure is not Pressure.NORMAL:
            return False
        return self.ready(context)

    def ready(self, context: StrategyContext) -> bool:
        """Whether there is enough data to say anything (strategies refine this)."""
        return True

    @abstractmethod
    async def propose(self, context: StrategyContext) -> Proposal | None:
        """The change this strategy would make now, or None if none is worth making."""

    def apply(self, context: StrategyContext, proposal: Proposal) -> PlanSnapshot:
        """Adopt `proposal`; returns the prior state of everything it touched."""
        before = context.model.snapshot(proposal.touched(context.model))
        context.model.misses.update(proposal.misses)
        context.model.adopt(
            proposal.intervals,
            proposal.triggers,
            proposal.forecast,
            context.now,
            proposal.periods,
        )
        return before

    def rollback(self, context: StrategyContext, before: PlanSnapshot) -> None:
        """Put back the state `apply` returned."""
        context.model.restore(before, context.now)

    # -- parameters ------------------------------------------------------------------

    def update_parameters(self, **params: object) -> dict[str, dict[str, ParamValue]]:
        """Change tunable parameters; returns {key: {"before", "after"}}.

        Keys must be known and values keep their type (an int may stand for a float).
        """
        checked: dict[str, ParamValue] = {}
        for key, value in params.items():
            if key not in self.defaults:
                known = ", ".join(sorted(self.defaults)) or "none"
                raise ParameterError(
                    f"strategy {self.name} has no parameter {key!r} (known: {known})"
                )
            checked[key] = _coerce(self.name, key, self.defaults[key], value)
        changes = {k: {"before": self.params[k], "after": v} for k, v in checked.items()}
        self.params.update(checked)
        return changes

    def param_float(self, key: str) -> float:
        return float(self.params[key])

    def describe(self, now: float, wall: float) -> dict[str, Any]:
        """The strategy's row in `strategy list` and `stats`."""
        learning = self.learning
        until = None
        if learning.on_cooldown(now):
            until = round(wall + (learning.cooldown_until - now), 3)
        return {
            "name": self.name,
            "enabled": self.enabled,
            "priority": self.priority,
            "heavy": self.heavy,
            "description": self.description,
            "runs": learning.runs,
            "kept": learning.kept,
            "rolled_back": learning.rolled_back,
            "success_rate": round(learning.success_rate, 4),
            "cooldown_s": round(learning.cooldown, 3),
            "cooldown_until": until,
            "aggressiveness": round(learning.aggressiveness, 4),
            "trend": learning.trend(),
            "params": dict(self.params),
        }


def _coerce(strategy: str, key: str, default: ParamValue, value: object) -> ParamValue:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "1", "0"):
            return value.lower() in ("true", "on", "1")
    elif isinstance(default, int | float) and not isinstance(value, bool):
        if isinstance(value, int | float):
            number = float(value) if isinstance(default, float) else value
            if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
                raise ParameterError(f"{strategy}.{key} must be a whole number, got {value!r}")
            return type(default)(number)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                return (
                    type(default)(number)
                    if isinstance(default, float) or number.is_integer()
                    else number
                )
    elif isinstance(default, str) and isinstance(value, str):
        return value
    raise ParameterError(f"{strategy}.{key} must be a {type(default).__name__}, got {value!r}")


def keys_of(items: Iterable[str]) -> list[str]:
    return sorted(set(items))
