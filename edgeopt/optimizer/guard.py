"""The do-no-harm guard: no learned state may cost more than the configured plan.

The daemon always knows what the cost-aware plan at the configured intervals
costs on each line, in that line's own currency (requests on TCP, bus time on
serial). `CostGuard` compares each line's measured cost, over the last few
measurement windows, with that figure. A line that stays above it by more
than the tolerance is in breach, and the optimizer puts its devices back on
the configured plan. Pure: windows and costs are passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

# Measured over planned that counts as a breach: retries and the odd split read
# cost a little more than any plan, and must not trip it.
DEFAULT_TOLERANCE = 0.05
DEFAULT_WINDOWS = 4
# Bus seconds per second below which a difference is noise (an idle line).
MIN_COST = 1e-4


@dataclass(frozen=True, slots=True)
class Breach:
    """One line that cost more than its configured plan."""

    line: str
    measured: float  # mean bus s/s over the guard's windows
    configured: float  # planned bus s/s at the configured intervals

    @property
    def ratio(self) -> float:
        return self.measured / self.configured if self.configured > 0 else float("inf")

    def describe(self) -> str:
        return (
            f"line {self.line} cost {self.measured:.4f} s/s over the last windows, "
            f"{self.ratio:.2f}x the configured plan's {self.configured:.4f}"
        )


@dataclass
class CostGuard:
    """Per-line measured cost against the configured plan's, over a sliding set of windows."""

    tolerance: float = DEFAULT_TOLERANCE
    windows: int = DEFAULT_WINDOWS
    _seen: dict[str, deque[float]] = field(default_factory=dict)

    def reset(self, lines: list[str] | None = None) -> None:
        """Forget measurements (of `lines`, or all): the plan they measured is gone."""
        if lines is None:
            self._seen.clear()
            return
        for line in lines:
            self._seen.pop(line, None)

    def observe(
        self, measured_by_line: Mapping[str, float], configured_by_line: Mapping[str, float]
    ) -> list[Breach]:
        """Add one window's per-line cost; returns the lines in breach now."""
        breaches: list[Breach] = []
        for line, cost in measured_by_line.items():
            seen = self._seen.setdefault(line, deque(maxlen=self.windows))
            seen.append(cost)
            if len(seen) < self.windows:
                continue
            configured = configured_by_line.get(line)
            if configured is None:
                continue
            mean = sum(seen) / len(seen)
            if mean > configured * (1.0 + self.tolerance) + MIN_COST:
                breaches.append(Breach(line, mean, configured))
        return breaches
