"""BENCHMARK.md §1 on one plant: the baselines, the fixed frontier and edgeopt's replays.

Work is split into jobs (the baselines; one replay per edgeopt variant) that
run in a process pool, since each is single-threaded Python and the machine
has more than one core. Plants hold lambdas (not picklable), so a job carries
a `PlantSpec` and builds its plant itself; every job computes the same ground
truth from the same seed.

Every poller is scored over the same window: the last two thirds of the run.
For edgeopt that is its learned steady state (the first third is warm-up:
the optimizer learning rates, clusters and patterns); the fixed baselines
have no warm-up, and the window is the same for them so the figures compare.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.plant import Plant
from simulators.plants import build_plant

from . import baselines
from .metrics import GroundTruth, Score, score
from .replay import STRATEGIES, find_optimizer_factory, plant_config, replay

__all__ = [
    "STRATEGIES",
    "FrontierResult",
    "PlantSpec",
    "ReplayStats",
    "Variant",
    "default_variants",
    "optimizer_available",
    "replay_job",
    "run_frontier",
    "submit_frontier",
]


@dataclass(frozen=True)
class PlantSpec:
    """A plant by name (see `simulators.plants.build_plant`) and the run to replay."""

    label: str
    name: str
    start: float  # plant time (s since Monday 00:00)
    duration: float
    n_tags: int = 10_000
    n_devices: int = 100
    seed: int | None = None

    def build(self) -> Plant:
        return build_plant(self.name, seed=self.seed, n_tags=self.n_tags, n_devices=self.n_devices)

    @property
    def t1(self) -> float:
        return self.start + self.duration

    @property
    def window(self) -> tuple[float, float]:
        """The scoring window: the last two thirds of the run."""
        return (self.start + self.duration / 3, self.t1)


@dataclass(frozen=True)
class Variant:
    """One way to run edgeopt: the plan alone, or the optimizer with some strategies."""

    label: str
    optimizer: bool
    strategies: tuple[str, ...] | None = None


PLAN_ONLY = Variant("edgeopt: plan only", optimizer=False)


def optimizer_available() -> bool:
    """Whether `edgeopt.optimizer` has a factory the replay can drive yet."""
    probe = build_plant("demo")
    state = Path(tempfile.gettempdir()) / "edgeopt-probe"
    return find_optimizer_factory(plant_config(probe, str(state)), state) is not None


def default_variants(with_optimizer: bool, *, each_strategy: bool = True) -> list[Variant]:
    """The plan alone; with an optimizer, each strategy on its own and all together."""
    out = [PLAN_ONLY]
    if with_optimizer:
        if each_strategy:
            out += [Variant(f"edgeopt: {s}", True, (s,)) for s in STRATEGIES]
        out.append(Variant("edgeopt: all", True, STRATEGIES))
    return out


@dataclass
class ReplayStats:
    """How a replay went (speed, plan changes), for the report."""

    variant: str
    wall_seconds: float
    plant_seconds: float
    reads: int
    failed_reads: int
    optimizer: str
    plans: int
    final_plan: str
    job_runs: dict[str, int] = field(default_factory=dict)
    # The same figures over the warm-up (the first third), reported apart.
    warmup_reads_per_s: float = 0.0
    warmup_bus_load_9600: float = 0.0
    warmup_sla: float = 1.0
    warmup_out_of_deadband: float = 0.0
    alone: bool = False  # ran with the machine to itself (a clean speed figure)

    @property
    def speedup(self) -> float:
        return self.plant_seconds / self.wall_seconds if self.wall_seconds else 0.0


@dataclass
class FrontierResult:
    spec: PlantSpec
    plant_name: str
    n_tags: int
    n_devices: int
    events: int
    baselines: list[Score]
    edgeopt: list[Score]
    replays: list[ReplayStats]
    wall_seconds: float

    def by_name(self, name: str) -> Score:
        for s in [*self.baselines, *self.edgeopt]:
            if s.name == name:
                return s
        raise KeyError(name)


def _strip(s: Score) -> Score:
    """Drop the per-tag detail before sending a score between processes."""
    return dataclasses.replace(s, tag_off={}, tag_events={})


def _baseline_job(spec: PlantSpec) -> tuple[list[Score], int, int, int]:
    plant = spec.build()
    t0, t1 = spec.start, spec.t1
    truth = GroundTruth.from_plant(plant, t0, t1)
    logs = [baselines.fixed_naive(plant, t0, t1)]
    logs += [baselines.fixed_coalesced(plant, p, t0, t1) for p in baselines.COALESCED_PERIODS]
    logs.append(baselines.fixed_by_interval(plant, t0, t1))
    logs.append(baselines.oracle(plant, truth, t0, t1))
    scores = [_strip(score(log, truth, window=spec.window)) for log in logs]
    return scores, truth.n_events, plant.n_tags, len(plant.devices)


def replay_job(spec: PlantSpec, variant: Variant) -> tuple[Score, ReplayStats]:
    """One variant's replay and score (also run on its own, for a clean speed figure)."""
    return _replay_job(spec, variant)


def _replay_job(spec: PlantSpec, variant: Variant) -> tuple[Score, ReplayStats]:
    plant = spec.build()
    result = asyncio.run(
        replay(
            plant,
            spec.duration,
            start=spec.start,
            optimizer_factory=None if variant.optimizer else False,
            strategies=variant.strategies,
            name=variant.label,
        )
    )
    truth = GroundTruth.from_plant(plant, spec.start, spec.t1)
    s = _strip(score(result.log, truth, window=spec.window, name=variant.label))
    warm = score(result.log, truth, window=(spec.start, spec.window[0]))
    stats = ReplayStats(
        variant=variant.label,
        wall_seconds=result.wall_seconds,
        plant_seconds=spec.duration,
        reads=result.reads,
        failed_reads=result.failed_reads,
        optimizer=result.optimizer,
        plans=len(result.plans),
        final_plan=result.plans[-1][1] if result.plans else "",
        job_runs=result.job_runs,
        warmup_reads_per_s=warm.reads_per_s,
        warmup_bus_load_9600=warm.bus_load_9600,
        warmup_sla=warm.sla,
        warmup_out_of_deadband=warm.out_of_deadband,
    )
    return s, stats


@dataclass
class PendingFrontier:
    """A plant's jobs, submitted to a pool; `result()` waits for them."""

    spec: PlantSpec
    variants: list[Variant]
    base: Future[tuple[list[Score], int, int, int]]
    runs: list[Future[tuple[Score, ReplayStats]]]
    started: float

    def result(self) -> FrontierResult:
        return _assemble(
            self.spec, self.base.result(), [f.result() for f in self.runs], self.started
        )


def submit_frontier(
    spec: PlantSpec,
    variants: Sequence[Variant],
    pool: ProcessPoolExecutor,
    on_done: Callable[[str, float], None] | None = None,
) -> PendingFrontier:
    """Queue the baselines and every variant of one plant on `pool`."""
    started = time.perf_counter()
    base = pool.submit(_baseline_job, spec)
    runs = [pool.submit(_replay_job, spec, v) for v in variants]
    if on_done is not None:
        _report_when_done(base, f"{spec.label}: baselines", started, on_done)
        for v, f in zip(variants, runs, strict=True):
            _report_when_done(f, f"{spec.label}: {v.label}", started, on_done)
    return PendingFrontier(spec, list(variants), base, runs, started)


def run_frontier(
    spec: PlantSpec,
    variants: Sequence[Variant],
    *,
    on_done: Callable[[str, float], None] | None = None,
) -> FrontierResult:
    """Score the baselines and every variant on one plant, in this process."""
    started = time.perf_counter()
    base = _baseline_job(spec)
    if on_done:
        on_done(f"{spec.label}: baselines", time.perf_counter() - started)
    runs = []
    for v in variants:
        t = time.perf_counter()
        runs.append(_replay_job(spec, v))
        if on_done:
            on_done(f"{spec.label}: {v.label}", time.perf_counter() - t)
    return _assemble(spec, base, runs, started)


def _assemble(
    spec: PlantSpec,
    base: tuple[list[Score], int, int, int],
    runs: list[tuple[Score, ReplayStats]],
    started: float,
) -> FrontierResult:
    scores, events, n_tags, n_devices = base
    return FrontierResult(
        spec=spec,
        plant_name=spec.build().name,
        n_tags=n_tags,
        n_devices=n_devices,
        events=events,
        baselines=scores,
        edgeopt=[s for s, _ in runs],
        replays=[r for _, r in runs],
        wall_seconds=time.perf_counter() - started,
    )


def _report_when_done(
    fut: Future[Any], label: str, started: float, on_done: Callable[[str, float], None]
) -> None:
    fut.add_done_callback(lambda _f: on_done(label, time.perf_counter() - started))
