"""The pattern strategy: read for the activity that is coming, not only the one just past.

Profiles (kept by `ActivityTracker`): each tag's change rate by hour of day
and by day of week, combined as rate(h) × rate(d) / mean. On top, each
device's hourly activity series is searched for a strong period by
autocorrelation (a shift cycle); the activity one period ago then predicts
the next hours too.

Once profiles cover every hour of the day, the strategy proposes switching
the forecast on: allocations then use, per tag, the highest rate expected
between now and `forecast_lead` ahead (or the last few minutes' rate, if
higher), so reads speed up *before* an active period and slow down in a
quiet one.

Anomalies (checked every window): a tag whose change rate this hour is more
than `sigma` standard deviations off its profile for this hour of day gets an
`anomaly` event with the expected range and a severity; when it is busier
than expected it is also read at its configured rate for `burst_duration`.

The proposal (the period search and two allocations) is worked out in a
forked child, as the interval strategy's is: at 10k tags its temporaries
would stay in the daemon's heap, and the period search uses numpy, which
only the child imports (the daemon never does: it would cost it 20 MB).
The anomaly check runs in the daemon, every window, in plain Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from edgeopt.config import StrategyConfig
from edgeopt.forked import ForkedWork
from edgeopt.optimizer.demand import allocation_plan
from edgeopt.optimizer.strategies.base import ParamValue, Proposal, Strategy, StrategyContext

if TYPE_CHECKING:
    import numpy as np


def autocorrelation(series: Sequence[float], lag: int) -> float:
    """The series' autocorrelation at `lag` (numpy: call it in a forked child, not the daemon)."""
    import numpy as np  # here, not at the top: the daemon never imports numpy (20 MB)

    return _autocorrelation(np.asarray(series, np.float64), lag)


def _autocorrelation(x: np.ndarray, lag: int) -> float:
    if lag <= 0 or lag >= x.size - 1:
        return 0.0
    x = x - x.mean()
    denom = float((x * x).sum())
    if denom <= 0:
        return 0.0
    return float((x[:-lag] * x[lag:]).sum() / denom) * x.size / (x.size - lag)


def strongest_period(
    series: Sequence[float], min_correlation: float, max_lag: int = 168
) -> int | None:
    """The lag (hours) with the highest autocorrelation ≥ min_correlation, seen at least twice.

    Uses numpy: call it in a forked child (`PatternStrategy.plan`), not the daemon.
    """
    import numpy as np  # here, not at the top: the daemon never imports numpy (20 MB)

    x = np.asarray(series, np.float64)
    best: tuple[float, int] | None = None
    for lag in range(2, min(max_lag, len(series) // 2) + 1):
        r = _autocorrelation(x, lag)
        if r >= min_correlation and (best is None or r > best[0] + 1e-9):
            best = (r, lag)
    return None if best is None else best[1]


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A tag whose change rate this hour is far off its profile."""

    key: str
    observed: float  # changes per hour (projected from the hour so far)
    expected_low: float
    expected_high: float
    z: float
    severity: str  # warning | critical

    @property
    def busier(self) -> bool:
        return self.observed > self.expected_high

    def to_dict(self) -> dict[str, object]:
        return {
            "tag": self.key,
            "observed_per_hour": round(self.observed, 2),
            "expected": [round(self.expected_low, 2), round(self.expected_high, 2)],
            "z": round(self.z, 2),
            "severity": self.severity,
        }


class PatternStrategy(Strategy):
    name: ClassVar[str] = "pattern"
    priority: ClassVar[int] = 10
    heavy: ClassVar[bool] = True
    description: ClassVar[str] = "hour/weekday profiles and periods: read ahead of active periods"
    defaults: ClassVar[dict[str, ParamValue]] = {
        "min_correlation": 0.5,  # autocorrelation a period needs to count
        "sigma": 3.0,  # anomaly threshold in standard deviations
        "min_excess": 5.0,  # and in changes per hour off the expectation
        "min_hour_seconds": 1200.0,  # the hour must be this far along to judge it busy
        "quiet_hour_seconds": 1800.0,  # ... and this far along to judge it quiet
        "min_days": 3,  # days of history an hour of day needs before it is judged
        "min_relative_sd": 0.5,  # the spread is at least this share of the expectation
        "burst_duration": 600.0,  # seconds of fast reads after a busy anomaly
    }

    def __init__(self, config: StrategyConfig) -> None:
        super().__init__(config)
        self._flagged: set[tuple[str, int]] = set()

    def ready(self, context: StrategyContext) -> bool:
        return min(context.activity.hod_exposure) > 0

    def periods(self, context: StrategyContext) -> dict[str, int]:
        """Each device's shift cycle, where it has one (numpy: in the forked child only)."""
        minimum = self.param_float("min_correlation")
        out: dict[str, int] = {}
        for device, series in context.activity.device_series.items():
            lag = strongest_period(series, minimum)
            if lag is not None:
                out[device] = lag
        return out

    async def propose(self, context: StrategyContext) -> Proposal | None:
        """`plan`, worked out in a forked child (see `edgeopt.forked`).

        There its temporaries (two allocations at 10k tags) and numpy (the
        period search) stay out of the daemon. The reference rates the plans
        refresh come back with it.
        """
        references = context.model.reference_rates

        def work() -> Iterator[tuple[Proposal | None, dict[str, tuple[float, float]]]]:
            before = dict(references)
            proposal = self.plan(context)
            yield proposal, {k: v for k, v in references.items() if before.get(k) is not v}

        forked = ForkedWork(work, keys=list(context.poller.tags))
        ((proposal, refreshed),) = await forked.items()
        references.update(refreshed)
        return proposal

    def plan(self, context: StrategyContext) -> Proposal | None:
        """The proposal, searched in this thread (numpy is imported: not in the daemon)."""
        model = context.model
        periods = self.periods(context)
        if model.forecast and periods == model.periods:
            return None
        with_forecast = allocation_plan(context, forecast=True, periods=periods)
        without = allocation_plan(context, forecast=False)
        changed = {
            k: v
            for k, v in with_forecast.intervals.items()
            if abs(v - model.allocated.get(k, v)) > 1e-9 * max(v, 1.0)
        }
        ahead = with_forecast.proposed_bus > without.proposed_bus
        return Proposal(
            strategy=self.name,
            summary=(
                f"forecast on ({len(periods)} devices with a period); "
                f"{len(changed)} intervals; planned bus {with_forecast.current_bus:.4f} -> "
                f"{with_forecast.proposed_bus:.4f} s/s"
            ),
            intervals=changed,
            forecast=True,
            periods=periods,
            predicted={
                "bus_before": with_forecast.current_bus,
                "bus_after": with_forecast.proposed_bus,
                "ood_before": with_forecast.current_ood,
                "ood_after": with_forecast.proposed_ood,
            },
            confidence=self.confidence,
            # Reading ahead of activity costs bus time to keep fidelity: judged as a repair.
            repair=ahead,
            details={"periods": periods, "weight": with_forecast.allocation.weight},
        )

    # -- anomalies ---------------------------------------------------------------

    def anomalies(self, context: StrategyContext) -> list[Anomaly]:
        """Tags far off their hour-of-day profile this hour (each reported once an hour)."""
        activity = context.activity
        if activity.hour_seconds < self.param_float("min_hour_seconds"):
            return []
        mean, sd, days = activity.hourly_expectations(context.wall)
        if days < self.param_float("min_days") or not activity.keys:
            return []
        observed = activity.hour_rates()
        sigma, excess = self.param_float("sigma"), self.param_float("min_excess")
        # A tag without an expectation (never busy at this hour) is off it only by
        # what it shows now: the weekday scaling is worked out for the others alone.
        rows = [
            i
            for i, (mean_i, rate) in enumerate(zip(mean, observed, strict=True))
            if mean_i != 0 or abs(rate * 3600.0) >= excess
        ]
        # The hour-of-day profile averages all weekdays: scale it to this one.
        factors = activity.weekday_factors(context.wall, rows if len(rows) < len(mean) else None)
        if factors is None:
            return []  # never seen this weekday: nothing to compare with
        relative_sd = self.param_float("min_relative_sd")
        # "Too quiet" needs every weekday seen: a weekend is not an anomaly.
        quiet_too = activity.hour_seconds >= self.param_float("quiet_hour_seconds") and (
            min(activity.dow_exposure) > 0
        )
        hour = int(context.wall // 3600)
        out: list[Anomaly] = []
        for i, factor in zip(rows, factors, strict=True):
            expected, seen = mean[i] * factor, observed[i] * 3600.0
            if abs(seen - expected) < excess:  # neither busy nor quiet (most tags)
                continue
            # A profile that never moved still has Poisson noise, and a few days
            # under-state the spread: floor it at sqrt(mean) and a share of the mean.
            spread = max(sd[i] * factor, math.sqrt(max(expected, 1.0)), relative_sd * expected)
            z = (seen - expected) / spread
            busy = z > sigma and seen - expected >= excess
            quiet = quiet_too and z < -sigma and expected - seen >= excess
            key = activity.keys[i]
            if not (busy or quiet) or (key, hour) in self._flagged:
                continue
            self._flagged.add((key, hour))
            out.append(
                Anomaly(
                    key,
                    seen,
                    max(0.0, expected - sigma * spread),
                    expected + sigma * spread,
                    z,
                    "critical" if abs(z) >= 2 * sigma else "warning",
                )
            )
        self._flagged = {f for f in self._flagged if f[1] >= hour - 1}
        return out
