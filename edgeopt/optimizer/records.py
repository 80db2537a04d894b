"""One applied change and its judgement: what the history and the state database hold.

A record keeps the exact prior and new state of everything the change
touched (`PlanSnapshot`s: allocated intervals, the trigger map, the forecast
switch), the plan's reads after it, and per-window metrics before and after:
bus seconds per second, reads per second and a fidelity estimate over the
changed tags. Evaluation fills in the outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from edgeopt.optimizer.evaluation import Outcome
from edgeopt.optimizer.model import PlanSnapshot

# Changed intervals listed per record in `history` (the database keeps all).
HISTORY_INTERVALS = 50


@dataclass
class WindowMetrics:
    """Per-window samples on one side (before or after) of a change."""

    bus: list[float] = field(default_factory=list)
    reads_per_s: list[float] = field(default_factory=list)
    fidelity: list[float] = field(default_factory=list)

    def add(self, bus: float, reads: float, fidelity: float | None) -> None:
        self.bus.append(bus)
        self.reads_per_s.append(reads)
        if fidelity is not None:
            self.fidelity.append(fidelity)

    def summary(self) -> dict[str, float | int | None]:
        return {
            "bus": round(fmean(self.bus), 6) if self.bus else None,
            "reads_per_s": round(fmean(self.reads_per_s), 4) if self.reads_per_s else None,
            "fidelity": round(fmean(self.fidelity), 6) if self.fidelity else None,
            "windows": len(self.bus),
        }

    def to_json(self) -> dict[str, list[float]]:
        return {"bus": self.bus, "reads_per_s": self.reads_per_s, "fidelity": self.fidelity}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WindowMetrics:
        return cls(
            [float(x) for x in data.get("bus", [])],
            [float(x) for x in data.get("reads_per_s", [])],
            [float(x) for x in data.get("fidelity", [])],
        )


@dataclass
class OptimizationRecord:
    """One change a strategy applied."""

    id: int
    strategy: str
    summary: str
    started: float  # wall
    evaluate_at: float  # wall
    before: PlanSnapshot
    after: PlanSnapshot
    changed: list[str]
    reads_after: list[list[Any]] = field(
        default_factory=list
    )  # [device, table, start, count, period]
    before_metrics: WindowMetrics = field(default_factory=WindowMetrics)
    after_metrics: WindowMetrics = field(default_factory=WindowMetrics)
    predicted: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    repair: bool = False
    outcome: Outcome = Outcome.PENDING
    evaluated: float | None = None
    improvement: float | None = None
    fidelity_loss: float | None = None
    confidence: float | None = None
    reason: str = ""
    probes: dict[str, dict[str, float]] = field(default_factory=dict)
    manual: bool = False
    # "a/b": applied to a random half of its read units, judged against the
    # other half (the control) in the same windows; "before/after" otherwise.
    design: str = "before/after"
    control: list[str] = field(default_factory=list)
    rollout: dict[str, float] = field(default_factory=dict)  # the control's intervals if kept
    ab_before: list[tuple[float, float]] = field(default_factory=list)  # (treated, control)
    ab_after: list[tuple[float, float]] = field(default_factory=list)
    # Changed since it was last saved (not persisted: a loaded record is clean).
    dirty: bool = field(default=True, compare=False)
    # Settled: judged and saved long ago, only its `to_history` row is kept.
    history_row: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def pending(self) -> bool:
        return self.outcome is Outcome.PENDING

    def _side(self, snapshot: PlanSnapshot, metrics: WindowMetrics) -> dict[str, Any]:
        intervals = dict(sorted(snapshot.intervals.items())[:HISTORY_INTERVALS])
        return {
            **metrics.summary(),
            "intervals": {k: round(v, 4) for k, v in intervals.items()},
            "triggers": sum(len(v) for v in snapshot.triggers.values()),
            "forecast": snapshot.forecast,
        }

    @property
    def settled(self) -> bool:
        return self.history_row is not None

    def settle(self) -> None:
        """Keep only the `history` row: the state database holds the rest.

        For a judged, saved record nothing changes any more, and nothing but
        `history` reads it. Its snapshots and tag lists are the bulk: a first
        change at 10k tags holds 7,000 intervals a side, and a daemon keeps
        HISTORY_KEEP records.
        """
        if self.pending or self.dirty or self.settled:
            return
        self.history_row = self.to_history()
        empty = PlanSnapshot({}, {})
        self.before, self.after, self.changed, self.reads_after = empty, empty, [], []
        self.before_metrics, self.after_metrics = WindowMetrics(), WindowMetrics()
        self.control, self.rollout, self.ab_before, self.ab_after = [], {}, [], []

    def to_history(self) -> dict[str, Any]:
        """The CONTRACT.md `history` row (plus a few extra fields)."""
        if self.history_row is not None:
            return dict(self.history_row)
        return {
            "id": self.id,
            "strategy": self.strategy,
            "started": round(self.started, 3),
            "evaluated": None if self.evaluated is None else round(self.evaluated, 3),
            "before": self._side(self.before, self.before_metrics),
            "after": self._side(self.after, self.after_metrics),
            "improvement": None if self.improvement is None else round(self.improvement, 4),
            "outcome": self.outcome.value,
            "summary": self.summary,
            "reason": self.reason,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "fidelity_loss": None if self.fidelity_loss is None else round(self.fidelity_loss, 6),
            "changed_tags": len(self.changed),
            "predicted": {k: round(v, 6) for k, v in self.predicted.items()},
            "probes": self.probes,
            "repair": self.repair,
            "design": self.design,
            "control_tags": len(self.control),
        }

    def to_json(self) -> dict[str, Any]:
        if self.settled:
            raise ValueError(f"record #{self.id} is settled: the database holds it whole")
        return {
            "id": self.id,
            "strategy": self.strategy,
            "summary": self.summary,
            "started": self.started,
            "evaluate_at": self.evaluate_at,
            "before": self.before.to_json(),
            "after": self.after.to_json(),
            "changed": self.changed,
            "reads_after": self.reads_after,
            "before_metrics": self.before_metrics.to_json(),
            "after_metrics": self.after_metrics.to_json(),
            "predicted": self.predicted,
            "params": self.params,
            "repair": self.repair,
            "outcome": self.outcome.value,
            "evaluated": self.evaluated,
            "improvement": self.improvement,
            "fidelity_loss": self.fidelity_loss,
            "confidence": self.confidence,
            "reason": self.reason,
            "probes": self.probes,
            "manual": self.manual,
            "design": self.design,
            "control": self.control,
            "rollout": self.rollout,
            "ab_before": [list(p) for p in self.ab_before],
            "ab_after": [list(p) for p in self.ab_after],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OptimizationRecord:
        def opt(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        return cls(
            id=int(data["id"]),
            strategy=str(data["strategy"]),
            summary=str(data.get("summary", "")),
            started=float(data["started"]),
            evaluate_at=float(data.get("evaluate_at", data["started"])),
            before=PlanSnapshot.from_json(data.get("before", {})),
            after=PlanSnapshot.from_json(data.get("after", {})),
            changed=[str(k) for k in data.get("changed", [])],
            reads_after=[list(r) for r in data.get("reads_after", [])],
            before_metrics=WindowMetrics.from_json(data.get("before_metrics", {})),
            after_metrics=WindowMetrics.from_json(data.get("after_metrics", {})),
            predicted={str(k): float(v) for k, v in dict(data.get("predicted", {})).items()},
            params=dict(data.get("params", {})),
            repair=bool(data.get("repair", False)),
            outcome=Outcome(str(data.get("outcome", Outcome.PENDING.value))),
            evaluated=opt("evaluated"),
            improvement=opt("improvement"),
            fidelity_loss=opt("fidelity_loss"),
            confidence=opt("confidence"),
            reason=str(data.get("reason", "")),
            probes={str(k): dict(v) for k, v in dict(data.get("probes", {})).items()},
            manual=bool(data.get("manual", False)),
            design=str(data.get("design", "before/after")),
            control=[str(k) for k in data.get("control", [])],
            rollout={str(k): float(v) for k, v in dict(data.get("rollout", {})).items()},
            ab_before=[(float(a), float(b)) for a, b in data.get("ab_before", [])],
            ab_after=[(float(a), float(b)) for a, b in data.get("ab_after", [])],
            dirty=False,
        )
