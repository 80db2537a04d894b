"""Resource adaptation: two separate things, with two separate causes.

1. **Machine pressure** (`PressureMonitor`). CPU, memory, disk and temperature
   of the whole machine, most of it other programs' doing, become a level
   (normal, elevated, critical) with hysteresis. It only *defers optional
   work*: the heavy optimizer strategies, anomaly checks, storage compaction
   (`defer()`), and never more than `resources.max_deferrals` times in a row.
   It never slows a read.
2. **Acquisition shedding** (`Shedding`). Reads are shed only when the daemon
   itself cannot keep up: its reads start late (`LagMeter` over the poller's
   per-line `LineLag` counters; `resources.lag_limit`, in read periods), or
   its own RSS is at `resources.own_rss_limit`. Lateness is judged per line
   and sheds on that line only (one slow device must not slow the others);
   RSS sheds on every line. Low-priority tags go first, then normal ones;
   high-priority tags never. `PlanModel.effective` reads these stages, and
   nothing else from this module.

Both are pure state machines fed samples; every change of either is an event
and one log line. `PsutilSampler` is the thin I/O edge that reads the machine
and the daemon's own memory.

Machine thresholds: elevated when a metric reaches its threshold, critical
`critical_margin` above it (or at 100 %); a level is left only once every
metric is `hysteresis` below the threshold that raised it, for `hold` samples.
A full disk only defers compaction: the storage buffer is there for it.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.config import ResourcesConfig
from edgeopt.events import EventLog

if TYPE_CHECKING:
    from edgeopt.poller import LineLag

log = logging.getLogger(__name__)

DEFAULT_HYSTERESIS = 5.0  # percent points (or °C) below a threshold to count as recovered
DEFAULT_CRITICAL_MARGIN = 10.0  # percent points (or °C) above a threshold that make it critical
DEFAULT_HOLD = 3  # samples a lower level must hold before the level drops
DISK = "disk_percent"
# Machine memory among the causes: the cluster worker's ~100 MB is given back.
MEMORY = "memory_percent"

# Shedding: lateness below this share of the limit (and RSS this far under its
# limit) counts as calm; in between, the stage holds.
CALM_SHARE = 0.5
RSS_CALM = 0.9
# A line needs this many reads in a sample before its lateness says anything.
MIN_LAG_READS = 5
# Shedding that comes back soon after a recovery waits twice as long for the
# next one, up to this factor: a plan that only keeps up while shed does not flap.
MAX_BACKOFF = 16


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
    """Machine pressure level with hysteresis, fed one `ResourceSample` at a time.

    It also carries the acquisition `shedding` state (a separate state machine,
    fed by the daemon) so everything that follows resources has one handle.
    """

    config: ResourcesConfig = field(default_factory=ResourcesConfig)
    events: EventLog | None = None
    hysteresis: float = DEFAULT_HYSTERESIS
    critical_margin: float = DEFAULT_CRITICAL_MARGIN
    hold: int = DEFAULT_HOLD
    level: Pressure = Pressure.NORMAL
    reason: str = ""
    last: ResourceSample | None = None
    # The metrics behind the current level (within the hysteresis band), and theirs.
    causes: dict[str, Pressure] = field(default_factory=dict)
    # Optional work deferred in a row, by job name.
    deferred: dict[str, int] = field(default_factory=dict)
    # The acquisition state: built from the same config and event log.
    shedding: Shedding = field(init=False)
    _calm: int = 0  # samples in a row that asked for a lower level
    listeners: list[Callable[[Pressure, Pressure, str], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.shedding = Shedding(self.config, self.events)

    def reconfigure(self, config: ResourcesConfig) -> None:
        """Take a reloaded `resources:` section (both state machines)."""
        self.config = config
        self.shedding.config = config

    def thresholds(self) -> dict[str, float]:
        out = {
            "cpu_percent": float(self.config.cpu_high),
            "memory_percent": float(self.config.memory_high),
            DISK: float(self.config.disk_high),
        }
        if self.config.temp_high is not None:
            out["temperature"] = float(self.config.temp_high)
        return out

    def _wanted(
        self, sample: ResourceSample, slack: float
    ) -> tuple[Pressure, str, dict[str, Pressure]]:
        """The level `sample` calls for (thresholds lowered by `slack`), why, and per metric."""
        level, reasons, causes = Pressure.NORMAL, [], {}
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
                level = causes[metric] = Pressure.CRITICAL
                reasons.append(f"{metric} {value:.1f} >= {critical + slack:.1f}")
            elif value >= limit:
                causes[metric] = Pressure.ELEVATED
                if level is Pressure.NORMAL:
                    level = Pressure.ELEVATED
                reasons.append(f"{metric} {value:.1f} >= {high:.1f}")
        return level, "; ".join(reasons), causes

    def update(self, sample: ResourceSample, wall: float) -> Pressure:
        """Fold one sample in; returns the (possibly new) level."""
        self.last = sample
        raised, why, causes = self._wanted(sample, 0.0)
        if raised.rank > self.level.rank:
            self.causes = causes
            self._set(raised, why, wall)
            self._calm = 0
            return self.level
        # Staying up needs only the lowered thresholds; coming down must hold a while.
        held, held_why, held_causes = self._wanted(sample, self.hysteresis)
        if held_causes:
            self.causes = held_causes
        if held.rank >= self.level.rank:
            self._calm = 0
            if held_why:
                self.reason = held_why
            return self.level
        self._calm += 1
        if self._calm >= self.hold:
            self._calm = 0
            self._set(held, held_why or "resources back below their thresholds", wall)
            if held is Pressure.NORMAL:
                self.causes = {}
            return self.level
        # The reason describes the latest sample, shown beside it in `status`:
        # not the figure that raised the level, which may be long gone.
        now = held_why or "below the thresholds"
        self.reason = f"{now} for {self._calm} of {self.hold} samples before {self.level} ends"
        return self.level

    def _set(self, level: Pressure, reason: str, wall: float) -> None:
        previous, self.level, self.reason = self.level, level, reason
        if previous is level:
            return
        logger = log.warning if level.rank > previous.rank else log.info
        logger(
            "machine resource pressure %s -> %s: %s (optional work is deferred; reads are not)",
            previous,
            level,
            reason,
        )
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

    # -- deferring optional work ------------------------------------------------------

    def level_for(self, *, uses_disk: bool = False) -> Pressure:
        """The level as far as a job is concerned: disk pressure counts only for disk work."""
        if self.level is Pressure.NORMAL:
            return Pressure.NORMAL
        if uses_disk:
            return self.level
        ranks = [p for metric, p in self.causes.items() if metric != DISK]
        return max(ranks, key=lambda p: p.rank, default=Pressure.NORMAL)

    def defer(self, job: str, *, uses_disk: bool = False, at: Pressure = Pressure.ELEVATED) -> bool:
        """Whether optional `job` should wait now; ask once per time the job would run.

        It waits while the level (see `level_for`) is at least `at`, but never
        more than `max_deferrals` times in a row: then it runs anyway, and
        the count starts again.
        """
        if self.level_for(uses_disk=uses_disk).rank < at.rank:
            self.deferred.pop(job, None)
            return False
        count = self.deferred.get(job, 0)
        if count >= int(self.config.max_deferrals):
            self.deferred.pop(job, None)
            log.info(
                "%s runs despite resource pressure %s: deferred %d times in a row",
                job,
                self.level,
                count,
            )
            return False
        self.deferred[job] = count + 1
        return True

    @property
    def defer_compaction(self) -> bool:
        """Whether pressure (any metric, disk included) asks storage to postpone compaction."""
        return self.level is not Pressure.NORMAL

    @property
    def memory_short(self) -> bool:
        """Machine memory is among the causes: give back what optional work holds."""
        return self.level is not Pressure.NORMAL and MEMORY in self.causes

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
            "deferred": dict(self.deferred),
            "shedding": self.shedding.status(),
        }


# --- acquisition shedding ------------------------------------------------------------

# The scope of shedding for the daemon's own memory: every line.
ALL_LINES = "*"


class ShedStage(StrEnum):
    """The highest priority being read slower than planned (high is never shed)."""

    NONE = "none"
    LOW = "low"  # low-priority tags are read slower
    NORMAL = "normal"  # low-priority tags at max_staleness, normal ones slower

    @property
    def rank(self) -> int:
        return _STAGES.index(self)


_STAGES = [ShedStage.NONE, ShedStage.LOW, ShedStage.NORMAL]


def highest(stages: Iterable[ShedStage]) -> ShedStage:
    return max(stages, key=lambda s: s.rank, default=ShedStage.NONE)


@dataclass(frozen=True, slots=True)
class AcquisitionSample:
    """How well the daemon itself keeps up, since the previous sample."""

    # Per line with enough reads to judge: mean start delay, in read periods.
    lines: Mapping[str, float] = field(default_factory=dict)
    line: str | None = None  # the latest of them
    lag: float | None = None  # its mean start delay, in read periods
    late_s: float | None = None  # its mean start delay in seconds, over its late reads
    late_share: float | None = None  # the share of its reads that started late
    reads: int = 0  # reads started on all lines since the previous sample
    rss: int | None = None  # the daemon's own resident memory, bytes


@dataclass
class LagMeter:
    """Turns the poller's cumulative per-line `LineLag` counters into one sample.

    A line with fewer than `min_reads` new reads gives no verdict yet: its
    counts carry over to the next sample, so slow lines are judged over longer.
    """

    min_reads: int = MIN_LAG_READS
    _seen: dict[str, tuple[int, int, float, float]] = field(default_factory=dict)
    _total: int = 0  # reads started on all lines, as of the last sample

    def sample(self, lines: Mapping[str, LineLag], rss: int | None = None) -> AcquisitionSample:
        judged: dict[str, float] = {}
        worst: tuple[float, str, float | None, float] | None = None
        total = sum(lag.reads for lag in lines.values())
        started = total - self._total if total >= self._total else total
        self._total = total
        seen: dict[str, tuple[int, int, float, float]] = {}
        for line, lag in lines.items():
            now = (lag.reads, lag.late, lag.periods, lag.seconds)
            before = self._seen.get(line, (0, 0, 0.0, 0.0))
            if now[0] < before[0]:  # counters restarted
                before = (0, 0, 0.0, 0.0)
            reads, late = now[0] - before[0], now[1] - before[1]
            if reads < self.min_reads:
                seen[line] = before  # no verdict yet: keep counting from the same point
                continue
            seen[line] = now
            mean = (now[2] - before[2]) / reads
            judged[line] = mean
            if worst is None or mean > worst[0]:
                late_s = (now[3] - before[3]) / late if late else None
                worst = (mean, line, late_s, late / reads)
        self._seen = seen
        if worst is None:
            return AcquisitionSample(judged, reads=started, rss=rss)
        mean, line, late_s, share = worst
        return AcquisitionSample(judged, line, mean, late_s, share, started, rss)


@dataclass
class _Scope:
    """One line's shedding (or, for ALL_LINES, the daemon's own memory's)."""

    stage: ShedStage = ShedStage.NONE
    reason: str = ""
    since: float | None = None  # wall time the current stage began
    over: int = 0  # verdicts in a row over the limit
    calm: int = 0  # verdicts in a row calm
    backoff: int = 1  # multiplier on recover_hold
    since_recovery: int | None = None  # verdicts since the last step back to NONE


@dataclass
class Shedding:
    """Acquisition shedding with hysteresis, fed only the daemon's own lateness and RSS.

    Each line is judged on its own reads: a line over `lag_limit` for `hold`
    verdicts in a row sheds one more priority *on that line*, so one slow device
    never slows the others. The daemon's RSS at `own_rss_limit` sheds on every
    line (scope ALL_LINES). Calm (lateness under half its limit, RSS under 90 %
    of its) for `recover_hold` verdicts, times a backoff that doubles when
    shedding returns soon after a recovery, brings one priority back.
    """

    config: ResourcesConfig = field(default_factory=ResourcesConfig)
    events: EventLog | None = None
    hold: int = DEFAULT_HOLD
    recover_hold: int = DEFAULT_HOLD
    scopes: dict[str, _Scope] = field(default_factory=dict)
    last: AcquisitionSample | None = None
    changes: int = 0
    # Called with (scope, previous, stage, reason) on every change.
    listeners: list[Callable[[str, ShedStage, ShedStage, str], None]] = field(default_factory=list)

    @property
    def stage(self) -> ShedStage:
        """The most shed scope's stage."""
        return highest(s.stage for s in self.scopes.values())

    @property
    def active(self) -> bool:
        return self.stage is not ShedStage.NONE

    @property
    def reason(self) -> str:
        return "; ".join(
            f"{_scope_name(k)}: {s.reason}" for k, s in sorted(self.scopes.items()) if s.stage.rank
        )

    @property
    def since(self) -> float | None:
        """When the earliest shedding still in force began."""
        times = [s.since for s in self.scopes.values() if s.stage.rank and s.since is not None]
        return min(times) if times else None

    def stages(self) -> dict[str, ShedStage]:
        """Scope (line, or ALL_LINES) -> stage, for the scopes shedding now."""
        return {k: s.stage for k, s in sorted(self.scopes.items()) if s.stage.rank}

    def stage_for(self, line: str) -> ShedStage:
        return highest(s.stage for k, s in self.scopes.items() if k in (line, ALL_LINES))

    def update(self, sample: AcquisitionSample, wall: float) -> ShedStage:
        """Fold one sample in; returns the most shed stage."""
        self.last = sample
        limit = float(self.config.lag_limit)
        for line, lag in sample.lines.items():
            reason = ""
            if lag >= limit:
                late = ""
                if sample.line == line and sample.late_s is not None:  # only the worst's
                    late = f", {sample.late_s:.3f} s"
                reason = f"reads start {lag:.2f} periods late on average{late} (limit {limit:g})"
            self._step(line, reason, lag < limit * CALM_SHARE, wall)
        rss, rss_limit = sample.rss, self.config.own_rss_limit
        if rss is not None and (rss_limit is not None or ALL_LINES in self.scopes):
            over = rss_limit is not None and rss >= rss_limit
            reason = f"own RSS {_mb(rss)} >= limit {_mb(rss_limit)}" if over and rss_limit else ""
            calm = rss_limit is None or rss < rss_limit * RSS_CALM
            self._step(ALL_LINES, reason, calm, wall)
        return self.stage

    def _step(self, key: str, over: str, calm: bool, wall: float) -> None:
        """One verdict for one scope: `over` is why it is over its limit ("" if not)."""
        scope = self.scopes.setdefault(key, _Scope())
        if scope.since_recovery is not None:
            scope.since_recovery += 1
        if over:
            scope.calm = 0
            scope.over += 1
            if scope.stage.rank:
                scope.reason = over
            if scope.over >= self.hold and scope.stage is not ShedStage.NORMAL:
                scope.over = 0
                soon = scope.since_recovery is not None and (
                    scope.since_recovery <= 2 * self.recover_hold * scope.backoff
                )
                if not scope.stage.rank and soon:
                    scope.backoff = min(MAX_BACKOFF, scope.backoff * 2)
                self._set(key, scope, _STAGES[scope.stage.rank + 1], over, wall)
            return
        scope.over = 0
        if not calm:
            scope.calm = 0
            return
        scope.calm += 1
        if not scope.stage.rank:
            if scope.since_recovery is not None and scope.since_recovery > (
                4 * self.recover_hold * scope.backoff
            ):
                scope.backoff, scope.since_recovery = 1, None  # long calm: forget the flapping
            return
        if scope.calm >= self.recover_hold * scope.backoff:
            scope.calm = 0
            lower = _STAGES[scope.stage.rank - 1]
            if lower is ShedStage.NONE:
                scope.since_recovery = 0
            self._set(key, scope, lower, "the daemon keeps up again", wall)

    def _set(self, key: str, scope: _Scope, stage: ShedStage, reason: str, wall: float) -> None:
        previous, scope.stage, scope.reason, scope.since = scope.stage, stage, reason, wall
        self.changes += 1
        where = "every line" if key == ALL_LINES else f"line {key}"
        what = {
            ShedStage.NONE: f"all tags on {where} are read as planned",
            ShedStage.LOW: f"low-priority tags on {where} are read slower",
            ShedStage.NORMAL: f"low- and normal-priority tags on {where} are read slower",
        }[stage]
        logger = log.warning if stage.rank > previous.rank else log.info
        logger("acquisition shedding %s -> %s on %s: %s; %s", previous, stage, where, reason, what)
        if self.events is not None:
            self.events.emit(
                wall,
                "shedding",
                f"acquisition shedding {previous} -> {stage} on {where}: {reason}; {what}",
                line=key,
                active=self.active,
                stage=stage.value,
                previous=previous.value,
                reason=reason,
            )
        for listener in list(self.listeners):
            listener(key, previous, stage, reason)

    def status(self) -> dict[str, Any]:
        sample = self.last
        return {
            "active": self.active,
            "stage": self.stage.value,
            "reason": self.reason,
            "since": self.since,
            "lines": {
                k: {"stage": s.stage.value, "reason": s.reason, "since": s.since}
                for k, s in sorted(self.scopes.items())
                if s.stage.rank
            },
            "lag_limit": float(self.config.lag_limit),
            "own_rss_limit": self.config.own_rss_limit,
            "sample": None
            if sample is None
            else {
                "lag": None if sample.lag is None else round(sample.lag, 4),
                "line": sample.line,
                "late_s": None if sample.late_s is None else round(sample.late_s, 4),
                "late_share": None if sample.late_share is None else round(sample.late_share, 4),
                "reads": sample.reads,
                "own_rss": sample.rss,
            },
        }


# glibc's mallopt parameter (malloc.h) and the size from which blocks are mmapped.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def pin_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Have glibc's malloc map every block of `size` or more on its own, for good.

    By default glibc raises that threshold to the size of the largest block
    freed so far. Once the storage lifecycle's compressors (zstd level 19,
    lzma, bz2) have freed their multi-MB work buffers, blocks of up to that
    size come from the heaps instead, and their freed pages stay in the
    process's RSS: the daemon's RSS stepped up at each of its first tier
    moves. A fixed threshold keeps large blocks out of the heaps, returned to
    the system when freed. The price is a system call or two for each such
    block, so nothing on the poll path may allocate one per read: asyncio's
    256 KiB socket reads are cut to `modbus.transport.RECV_SIZE`. Returns
    False where there is no glibc (musl, macOS).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, size))


def _scope_name(key: str) -> str:
    return "own memory" if key == ALL_LINES else f"line {key}"


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


class PsutilSampler:
    """Reads the machine, and the daemon's own memory, with psutil (this module's only I/O)."""

    def __init__(self, disk_path: str | Path = "/") -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
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

    def own_rss(self) -> int | None:
        """This process's resident memory in bytes (None if it cannot be read)."""
        try:
            return int(self._process.memory_info().rss)
        except (OSError, self._psutil.Error):
            return None

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
