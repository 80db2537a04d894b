"""What the optimizer reports: status, statistics, history, trends and advice (CONTRACT.md)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from edgeopt.optimizer.advice import recommendations
from edgeopt.optimizer.costs import bus_budget_of, median_latency
from edgeopt.optimizer.evaluation import Outcome
from edgeopt.optimizer.model import PlanSnapshot
from edgeopt.optimizer.parts import OptimizerParts
from edgeopt.optimizer.strategies.base import trend_of
from edgeopt.resources import highest

__all__ = ["DEVICE_TREND_KEEP", "OptimizerReports"]

DEVICE_TREND_KEEP = 48


class OptimizerReports(OptimizerParts):
    """The optimizer's reports for the control socket, `edgeoptctl` and the logs."""

    def strategy_list(self) -> list[dict[str, Any]]:
        now, wall = self.clock.monotonic(), self.clock.now()
        return [s.describe(now, wall) for s in self.strategies.values()]

    def status(self) -> dict[str, Any]:
        """CONTRACT.md status.optimizer (plus what the plan does now)."""
        wall = self.clock.now()
        return {
            "enabled": self.enabled,
            "last_quick": self.last_quick,
            "last_full": self.last_full,
            "pending_evaluations": 1 if self.pending is not None else 0,
            "next_evaluation": None if self.pending is None else self.pending.evaluate_at,
            "pressure": self.pressure.value,
            "shedding": highest(self.model.shedding.values()).value,
            "planned_bus_load": self.planned_line_loads(),
            "configured_bus_load": {k: round(v, 5) for k, v in self.configured_costs().items()},
            "guard_trips": self.guard_trips,
            "shed": list(self.shed_reports),
            "triggers": sum(len(v) for v in self.model.triggers.values()),
            "trigger_reads": self.poller.trigger_reads,
            "overrides": len(self.model.overrides),
            "forecast": self.model.forecast,
            "ts": wall,
        }

    def planned_line_loads(self) -> dict[str, float]:
        loads: dict[str, float] = {}
        for name, device in self.poller.devices.items():
            load = self.poller.plan.bus_seconds_per_second(name)
            loads[device.line] = round(loads.get(device.line, 0.0) + load, 5)
        return loads

    def get_statistics(self) -> dict[str, Any]:
        """CONTRACT.md `stats`."""
        now, wall = self.clock.monotonic(), self.clock.now()
        done = [r for r in self.records if not r.pending]
        kept = [r for r in done if r.outcome is Outcome.KEPT]
        improvements = [r.improvement for r in kept if r.improvement is not None]
        strategies: dict[str, Any] = {}
        for name, s in self.strategies.items():
            row = s.describe(now, wall)
            strategies[name] = {
                "runs": row["runs"],
                "success_rate": row["success_rate"],
                "cooldown_until": row["cooldown_until"],
                "params": row["params"],
                "enabled": row["enabled"],
                "kept": row["kept"],
                "rolled_back": row["rolled_back"],
                "cooldown_s": row["cooldown_s"],
                "aggressiveness": row["aggressiveness"],
                "trend": row["trend"],
            }
        return {
            "optimizations": len(self.records),
            "successful": len(kept),
            "rolled_back": sum(1 for r in done if r.outcome is Outcome.ROLLED_BACK),
            "pending": 1 if self.pending is not None else 0,
            "strategies": strategies,
            "avg_improvement": round(sum(improvements) / len(improvements), 4)
            if improvements
            else 0.0,
            "trend": trend_of([r.improvement or 0.0 for r in done]),
            "devices": self.device_trends(),
            "triggers": {k: sorted(v) for k, v in sorted(self.model.triggers.items())},
            "trigger_reads": self.poller.trigger_reads,
            "anomalies": len(self.reactions.anomalies),
        }

    def device_trends(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in self.poller.devices:
            series = list(self._device_trend.get(name, ()))
            # Lower latency is better: the trend of its negation.
            out[name] = {
                "trend": trend_of([-x for x in series], tolerance=0.0005),
                "latency_ms_p50": None if not series else round(series[-1] * 1000, 3),
            }
        return out

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        """CONTRACT.md `history`: the most recent changes first."""
        if limit <= 0:
            return []
        return [r.to_history() for r in reversed(self.records[-limit:])]

    def recommendations(self) -> list[dict[str, Any]]:
        """Things an operator could change, most important first, each with its expected impact."""
        return recommendations(self.poller, self.bus_budgets(), self.planned_line_loads())

    def bus_budgets(self) -> dict[str, float]:
        default = float(self.interval.params["bus_budget"])
        out: dict[str, float] = {}
        for device in self.poller.devices.values():
            budget = bus_budget_of(device, default)
            out[device.line] = min(out.get(device.line, budget), budget)
        return out

    def tags_snapshot(self, keys: Iterable[str] | None = None) -> PlanSnapshot:
        """The exact allocation and triggers now (tests and the history use it)."""
        return self.model.snapshot(self.model.allocated if keys is None else keys)

    def _sample_device_trends(self) -> None:
        for name, device in self.poller.devices.items():
            latency = median_latency(device)
            if latency is not None:
                series = self._device_trend.setdefault(name, deque(maxlen=DEVICE_TREND_KEEP))
                series.append(latency)
