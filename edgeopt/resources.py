"""Resource adaptation: CPU, memory, disk and temperature become a pressure level.

`PressureMonitor` is a pure state machine fed `ResourceSample`s: each metric
is compared with its threshold from the config (`resources.cpu_high`,
`memory_high`, `disk_high`, `temp_high`), with hysteresis so a value hovering
at a threshold does not flap the level:

- elevated when a metric reaches its threshold; critical when it reaches
  `critical_margin` above it (or 100 %);
- a level is left only once every metric is `hysteresis` below the
  threshold that raised it, and has stayed there for `hold` samples.

What the levels mean to the daemon: elevated skips the heavy optimizer
strategies (cluster, pattern), widens low-priority intervals and defers
storage compaction; critical keeps only high-priority tags at their rate.
Every change of level is an event.

`PsutilSampler` is the thin I/O edge that reads the machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from edgeopt.config import ResourcesConfig
from edgeopt.events import EventLog

log = logging.getLogger(__name__)

DEFAULT_HYSTERESIS = 5.0  # percent points (or °C) below a threshold to count as recovered
DEFAULT_CRITICAL_MARGIN = 10.0  # percent points (or °C) above a threshold that make it critical
DEFAULT_HOLD = 3  # samples a lower level must hold before the level drops


class Pressure(StrEnum):
    NORMAL = "normal"
    ELEVATED = "elevated"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Pressure.NORMAL: 0, Pressure.ELEVATED: 1, Pressure.CRITICAL: 2}


@dataclass(frozen=True, slots=True)
class ResourceSample:
    """One look at the machine. None: not measurable here."""

    cpu_percent: float | None = None
    memory_percent: float | None = None
    disk_percent: float | None = None  # of the state dir's file system
    temperature: float | None = None  # °C, the hottest sensor
    load_per_cpu: float | None = None  # 1-minute load average / CPU count (reported only)


@dataclass
class PressureMonitor:
    """Pressure level with hysteresis, fed one `ResourceSample` at a time."""

    config: ResourcesConfig = field(default_factory=ResourcesConfig)
    events: EventLog | None = None
    hysteresis: float = DEFAULT_HYSTERESIS
    critical_margin: float = DEFAULT_CRITICAL_MARGIN
    hold: int = DEFAULT_HOLD
    level: Pressure = Pressure.NORMAL
    reason: str = ""
    last: ResourceSample | None = None
    _calm: int = 0  # samples in a row that asked for a lower level
    listeners: list[Callable[[Pressure, Pressure, str], None]] = field(default_factory=list)

    def thresholds(self) -> dict[str, float]:
        out = {
            "cpu_percent": float(self.config.cpu_high),
            "memory_percent": float(self.config.memory_high),
            "disk_percent": float(self.config.disk_high),
        }
        if self.config.temp_high is not None:
            out["temperature"] = float(self.config.temp_high)
        return out

    def _wanted(self, sample: ResourceSample, slack: float) -> tuple[Pressure, str]:
        """The level `sample` calls for, with thresholds lowered by `slack`."""
        level, reasons = Pressure.NORMAL, []
        for metric, high in self.thresholds().items():
            value = getattr(sample, metric)
            if value is None:
                continue
            limit = high - slack
            critical = high + self.critical_margin
            if metric != "temperature":
                critical = min(critical, 100.0)
            critical -= slack
            if value >= critical:
                level = Pressure.CRITICAL
                reasons.append(f"{metric} {value:.1f} >= {critical + slack:.1f}")
            elif value >= limit:
                if level is Pressure.NORMAL:
                    level = Pressure.ELEVATED
                reasons.append(f"{metric} {value:.1f} >= {high:.1f}")
        return level, "; ".join(reasons)

    def update(self, sample: ResourceSample, wall: float) -> Pressure:
        """Fold one sample in; returns the (possibly new) level."""
        self.last = sample
        raised, why = self._wanted(sample, 0.0)
        if raised.rank > self.level.rank:
            self._set(raised, why, wall)
            self._calm = 0
            return self.level
        # Staying up needs only the lowered thresholds; coming down must hold a while.
        held, held_why = self._wanted(sample, self.hysteresis)
        if held.rank >= self.level.rank:
            self._calm = 0
            if held_why:
                self.reason = held_why
            return self.level
        self._calm += 1
        if self._calm >= self.hold:
            self._calm = 0
            self._set(held, held_why or "resources back below their thresholds", wall)
        return self.level

    def _set(self, level: Pressure, reason: str, wall: float) -> None:
        previous, self.level, self.reason = self.level, level, reason
        if previous is level:
            return
        logger = log.warning if level.rank > previous.rank else log.info
        logger("resource pressure %s -> %s: %s", previous, level, reason)
        if self.events is not None:
            self.events.emit(
                wall,
                "pressure",
                f"resource pressure {previous} -> {level}: {reason}",
                level=level.value,
                previous=previous.value,
                reason=reason,
            )
        for listener in list(self.listeners):
            listener(previous, level, reason)

    @property
    def defer_compaction(self) -> bool:
        """Storage should postpone compaction and tier moves while this is true."""
        return self.level is not Pressure.NORMAL

    def status(self) -> dict[str, Any]:
        sample = self.last
        return {
            "level": self.level.value,
            "reason": self.reason,
            "sample": None
            if sample is None
            else {
                "cpu_percent": sample.cpu_percent,
                "memory_percent": sample.memory_percent,
                "disk_percent": sample.disk_percent,
                "temperature": sample.temperature,
                "load_per_cpu": sample.load_per_cpu,
            },
        }


class PsutilSampler:
    """Reads the machine with psutil (the only I/O in this module)."""

    def __init__(self, disk_path: str | Path = "/") -> None:
        import psutil

        self._psutil = psutil
        self.disk_path = str(disk_path)
        psutil.cpu_percent(interval=None)  # primes the counter: the first call returns 0

    def sample(self) -> ResourceSample:
        ps = self._psutil
        cpu = ps.cpu_percent(interval=None)
        memory = ps.virtual_memory().percent
        try:
            disk: float | None = ps.disk_usage(self.disk_path).percent
        except OSError:
            disk = None
        return ResourceSample(cpu, memory, disk, self._temperature(), self._load())

    def _temperature(self) -> float | None:
        read = getattr(self._psutil, "sensors_temperatures", None)
        if read is None:
            return None
        try:
            sensors = read()
        except (OSError, RuntimeError):
            return None
        values = [t.current for entries in sensors.values() for t in entries if t.current]
        return max(values) if values else None

    @staticmethod
    def _load() -> float | None:
        try:
            return os.getloadavg()[0] / (os.cpu_count() or 1)
        except OSError:
            return None
