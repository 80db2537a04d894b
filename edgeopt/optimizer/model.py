"""The optimizer's hold on the poller: the intervals and triggers it has decided.

Several things want a say in how often a tag is read. `PlanModel` keeps them
apart and combines them into the one interval the poller uses:

- `allocated`: what the strategies decided (recorded, evaluated, reverted);
- `shed`: wider intervals that keep an over-budget line within its budget;
- acquisition shedding (`resources.Shedding`), only when the daemon itself
  cannot keep up (per line, or on every line for its own memory):
  low-priority tags slow down first, then normal ones, and high-priority tags
  never. Machine pressure (other programs' CPU, memory, disk, temperature) is
  recorded here but never slows a read;
- `overrides`: short-lived faster reads (a snap-back after a surprising
  change, an anomaly burst, a probe), each with an expiry.

A `PlanSnapshot` holds exactly what a change touched, so a rollback restores
the prior allocation and triggers exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeopt.modbus.planner import Priority
from edgeopt.poller import Poller, TagRuntime
from edgeopt.resources import ALL_LINES, Pressure, ShedStage

# While acquisition is shed, the priorities being shed are read this many
# times slower (low-priority tags go to max_staleness once normal ones are shed too).
SHED_WIDENING = 4.0
# Override reasons.
SNAP = "snap"  # a slowed tag changed unexpectedly: read it at its configured rate again
BURST = "burst"  # an anomaly: read fast for a while
PROBE = "probe"  # evaluation: read a slowed tag at its configured rate to see what it misses

__all__ = [
    "BURST",
    "PROBE",
    "SHED_WIDENING",
    "SNAP",
    "Override",
    "PlanModel",
    "PlanSnapshot",
    "Pressure",
    "ShedStage",
]


@dataclass(slots=True)
class Override:
    """A temporary faster interval for one tag."""

    interval: float
    until: float  # monotonic
    reason: str  # SNAP, BURST or PROBE


@dataclass(frozen=True)
class PlanSnapshot:
    """The allocated intervals of some tags, and the whole trigger map, at one moment."""

    intervals: dict[str, float]
    triggers: dict[str, tuple[str, ...]]
    forecast: bool = False
    periods: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "intervals": self.intervals,
            "triggers": {k: list(v) for k, v in self.triggers.items()},
            "forecast": self.forecast,
            "periods": self.periods,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanSnapshot:
        return cls(
            intervals={str(k): float(v) for k, v in dict(data.get("intervals", {})).items()},
            triggers={
                str(k): tuple(str(f) for f in v) for k, v in dict(data.get("triggers", {})).items()
            },
            forecast=bool(data.get("forecast", False)),
            periods={str(k): int(v) for k, v in dict(data.get("periods", {})).items()},
        )


@dataclass
class PlanModel:
    """Allocated intervals, triggers, shedding and overrides for one poller."""

    poller: Poller
    allocated: dict[str, float] = field(default_factory=dict)
    triggers: dict[str, frozenset[str]] = field(default_factory=dict)
    shed: dict[str, float] = field(default_factory=dict)
    overrides: dict[str, Override] = field(default_factory=dict)
    # The machine pressure last seen: reported only, it never slows a read.
    pressure: Pressure = Pressure.NORMAL
    # Acquisition shedding, line (or ALL_LINES) -> stage, for the lines shed now:
    # the one resource state that may slow reads.
    shedding: dict[str, ShedStage] = field(default_factory=dict)
    forecast: bool = False  # whether allocations use the pattern strategy's forecast
    periods: dict[str, int] = field(default_factory=dict)  # device -> strong period (hours)
    rates: dict[str, float] = field(default_factory=dict)  # the rates of the last allocation
    # Per tag: (change rate, wall time) last measured while it was read at its
    # configured interval. A slowed tag sees fewer of its changes (a value that
    # wanders off and back between two slow reads shows none), so its rate as
    # measured now is biased low; this is what keeps that bias from feeding on itself.
    reference_rates: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Per trigger follower: the share of its changes its leader was seen to miss
    # when the trigger was chosen (the allocation charges the follower for them).
    misses: dict[str, float] = field(default_factory=dict)
    weight: float | None = None  # the λ of the last allocation (a warm start for the next)

    def __post_init__(self) -> None:
        self.sync()

    # -- tags come and go --------------------------------------------------------

    def sync(self) -> list[str]:
        """Follow the poller's tags: new ones start at their configured interval."""
        tags = self.poller.tags
        added = [k for k in tags if k not in self.allocated]
        for key in added:
            self.allocated[key] = tags[key].base_interval
        stores = (
            self.allocated,
            self.shed,
            self.overrides,
            self.rates,
            self.reference_rates,
            self.misses,
        )
        for store in stores:
            for key in [k for k in store if k not in tags]:
                del store[key]
        self.triggers = {
            leader: frozenset(f for f in followers if f in tags)
            for leader, followers in self.triggers.items()
            if leader in tags
        }
        self.triggers = {k: v for k, v in self.triggers.items() if v}
        return added

    def followers(self) -> dict[str, str]:
        """follower key -> its leader."""
        return {f: leader for leader, fs in self.triggers.items() for f in fs}

    # -- the interval the poller uses -------------------------------------------

    def effective(self, tag: TagRuntime) -> float:
        interval = self.shed.get(tag.key, self.allocated.get(tag.key, tag.base_interval))
        stage = self.shed_stage(tag) if self.shedding else ShedStage.NONE
        if stage is not ShedStage.NONE:
            priority = Priority(tag.config.priority)
            if priority is Priority.LOW:
                if stage is ShedStage.NORMAL:
                    interval = float(tag.config.max_staleness)
                else:
                    interval *= SHED_WIDENING
            elif priority is Priority.NORMAL and stage is ShedStage.NORMAL:
                interval *= SHED_WIDENING
        override = self.overrides.get(tag.key)
        if override is not None:
            interval = min(interval, override.interval)
        low, high = float(tag.config.min_interval), float(tag.config.max_staleness)
        return min(high, max(low, interval))

    def shed_stage(self, tag: TagRuntime) -> ShedStage:
        """How far acquisition is shed on this tag's line."""
        device = self.poller.devices.get(tag.device)
        line = self.shedding.get(device.line, ShedStage.NONE) if device else ShedStage.NONE
        every = self.shedding.get(ALL_LINES, ShedStage.NONE)
        return line if line.rank >= every.rank else every

    def push(self, now: float, keys: Iterable[str] | None = None) -> None:
        """Hand the effective intervals (of `keys`, or all tags) and the triggers to the poller."""
        tags = self.poller.tags
        chosen = tags.keys() if keys is None else [k for k in keys if k in tags]
        self.poller.set_intervals({k: self.effective(tags[k]) for k in chosen}, now)
        self.poller.set_triggers(self.triggers)

    # -- overrides -----------------------------------------------------------------

    def override(self, key: str, interval: float, until: float, reason: str, now: float) -> bool:
        """Read `key` at `interval` (or faster) until `until`; returns whether it changed."""
        tag = self.poller.tags.get(key)
        if tag is None:
            return False
        current = self.overrides.get(key)
        if current is not None and current.interval <= interval and current.until >= until:
            return False
        self.overrides[key] = Override(interval, until, reason)
        self.push(now, [key])
        return True

    def expire(self, now: float) -> list[str]:
        """Drop overrides whose time is up; returns their tags."""
        done = [k for k, o in self.overrides.items() if o.until <= now]
        for key in done:
            del self.overrides[key]
        if done:
            self.push(now, done)
        return done

    # -- snapshots -------------------------------------------------------------------

    def snapshot(self, keys: Iterable[str]) -> PlanSnapshot:
        return PlanSnapshot(
            intervals={k: self.allocated[k] for k in keys if k in self.allocated},
            triggers={k: tuple(sorted(v)) for k, v in sorted(self.triggers.items())},
            forecast=self.forecast,
            periods=dict(self.periods),
        )

    def adopt(
        self,
        intervals: Mapping[str, float],
        triggers: Mapping[str, Iterable[str]] | None,
        forecast: bool | None,
        now: float,
        periods: Mapping[str, int] | None = None,
    ) -> None:
        """Take new allocated intervals (and maybe triggers, forecast, periods) and push them."""
        changed = [
            k for k, v in intervals.items() if k in self.allocated and self.allocated[k] != v
        ]
        for key in changed:
            self.allocated[key] = intervals[key]
        # A new allocation has seen the activity that snapped tags back: it decides now.
        snapped = [k for k, o in self.overrides.items() if o.reason == SNAP]
        for key in snapped:
            del self.overrides[key]
        changed += snapped
        if triggers is not None:
            old = set(self.followers()) | set(self.triggers)
            self.triggers = {k: frozenset(v) for k, v in triggers.items() if v}
            changed += list(old | set(self.followers()) | set(self.triggers))
        if forecast is not None:
            self.forecast = forecast
        if periods is not None:
            self.periods = dict(periods)
        self.push(now, changed)

    def restore(self, snapshot: PlanSnapshot, now: float) -> None:
        """Put back exactly what `snapshot` recorded."""
        self.adopt(snapshot.intervals, snapshot.triggers, snapshot.forecast, now, snapshot.periods)
