"""BENCHMARK.md §2: acquisition overhead, resource use as the plant grows, start-up time.

All against the simulator in its own process, over real TCP sockets:

- **Overhead ratio.** The daemon (`edgeopt run`, optimizer off so that it
  makes exactly its plan's reads) and a bare pymodbus loop
  (`benchmarks.bareloop`) making the same reads at the same periods, one
  after the other against the same simulator. Registers delivered (counted
  from the simulator's request log; bits count 1/16 register) per CPU-second
  of each process (psutil, user + system, over the same window length). The
  daemon's extra CPU per register is its pipeline: decoding, tag state and
  statistics, storage, housekeeping.
- **Scaling.** CPU % of one core and RSS of the daemon for 1k, 5k, 10k and
  20k tags on 10 to 200 devices, every tag at 1 s, optimizer off ("without
  the cluster worker"). Reads/s achieved vs planned shows whether the
  daemon (and the simulator, on the other core) kept up.
- **Start-up to first poll.** From spawning `edgeopt run` to the first
  request the simulator sees; and, on a plant with strict-gap devices, to
  the last ILLEGAL DATA ADDRESS refusal (the daemon has then learned the
  register maps' holes and its plan is settled).

The ratio and the scaling are steady-state figures, so they use the large
plant with every register gap served as zeros (`--no-strict-gaps`): the
daemon's plan is then exactly its configured plan from the first poll. The
start-up cost of learning strict gaps is measured on its own (last item).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from simulators.plant import Plant
from simulators.plants import large_plant
from simulators.signals import HOUR

from .procs import (
    SimulatorProcess,
    iter_requests,
    start_daemon,
    start_simulator,
    stop_process,
    write_config,
)

__all__ = [
    "OverheadRatio",
    "ScalePoint",
    "StartupPoint",
    "at_interval",
    "measure_ratio",
    "measure_scale",
    "measure_startup",
]

# Plant time the simulator runs at: Monday 08:00 (shifts on, sun up); early
# in the week so counters integrate little history at start-up.
PLANT_TIME = 8 * HOUR
OPTIMIZER_OFF: dict[str, dict[str, Any]] = {"optimizer": {"enabled": False}}

Progress = Callable[[str], None]


def at_interval(plant: Plant, interval: float) -> Plant:
    """The same plant with every tag read at `interval`."""
    devices = []
    for d in plant.devices:
        tags = [
            dataclasses.replace(
                t,
                interval=interval,
                min_interval=min(t.min_interval or interval, interval),
                max_staleness=max(t.max_staleness, interval),
            )
            for t in d.tags
        ]
        devices.append(dataclasses.replace(d, tags=tags))
    return dataclasses.replace(plant, devices=devices)


def _registers(rec: dict[str, Any]) -> float:
    count = int(rec["count"])
    return count / 16 if int(rec["fc"]) in (1, 2) else float(count)


def _window_counts(log: Path, w0: float, w1: float) -> tuple[int, float, int]:
    """(ok reads, registers, failed) the simulator saw with wall time in [w0, w1)."""
    reads, regs, failed = 0, 0.0, 0
    for rec in iter_requests(log):
        ts = float(rec["ts"])
        if w0 <= ts < w1:
            if rec.get("outcome") == "ok":
                reads += 1
                regs += _registers(rec)
            else:
                failed += 1
    return reads, regs, failed


def _cpu(proc: psutil.Process) -> float:
    """CPU seconds of `proc` and of its children it reaped (edgeopt's forked work)."""
    t = proc.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def _wait_flushed() -> None:
    time.sleep(1.5)  # the simulator flushes its request log every second


@dataclass
class Measured:
    """One process over one window."""

    seconds: float
    cpu_seconds: float
    reads: int
    registers: float
    failed: int
    rss_mb: float
    settled_after: float = 0.0  # seconds from start until the measurement began

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_seconds / self.seconds

    @property
    def registers_per_cpu_s(self) -> float:
        return self.registers / self.cpu_seconds if self.cpu_seconds > 0 else math.inf

    @property
    def reads_per_s(self) -> float:
        return self.reads / self.seconds


def _settle(sim: SimulatorProcess, since: float, quiet: float, limit: float) -> float:
    """Wait until the simulator has refused no read for `quiet` s; return the seconds waited.

    At start-up the daemon learns strict-gap devices' holes from ILLEGAL
    DATA ADDRESS refusals, re-planning after each; the steady state is what
    is measured, so the measurement starts once the refusals have stopped.
    """
    assert sim.request_log is not None
    started = time.time()
    while time.time() - started < limit:
        time.sleep(quiet / 2)
        last_refusal = since
        for rec in iter_requests(sim.request_log):
            if rec.get("outcome") != "ok" and float(rec["ts"]) > last_refusal:
                last_refusal = float(rec["ts"])
        # The log is flushed every second: allow for that.
        if time.time() - last_refusal >= quiet + 1.0:
            break
    return time.time() - started


def _measure(
    proc: subprocess.Popen[Any],
    sim: SimulatorProcess,
    warmup: float,
    seconds: float,
    *,
    settle_limit: float = 240.0,
) -> Measured:
    """CPU, RSS and the simulator's count of `proc`'s reads over `seconds`, after warm-up.

    settle_limit: the longest wait for the daemon to stop being refused (0: no wait).
    """
    ps = psutil.Process(proc.pid)
    spawned = time.time()
    time.sleep(warmup)
    settled = _settle(sim, spawned, 5.0, settle_limit) if settle_limit > 0 else 0.0
    if proc.poll() is not None:
        raise RuntimeError(f"process {proc.args!r} exited early ({proc.returncode})")
    c0, w0 = _cpu(ps), time.time()
    time.sleep(seconds)
    c1, w1 = _cpu(ps), time.time()
    rss = ps.memory_info().rss / 2**20
    assert sim.request_log is not None
    _wait_flushed()
    reads, regs, failed = _window_counts(sim.request_log, w0, w1)
    return Measured(w1 - w0, c1 - c0, reads, regs, failed, rss, warmup + settled)


def _plan_reads(config: Path) -> list[list[Any]]:
    """The daemon's planned reads, as the bare loop takes them."""
    from edgeopt.config import load_config
    from edgeopt.poller import Poller

    poller = Poller(load_config(config).devices)
    return [[r.device, r.table.value, r.start, r.count, r.period] for r in poller.replan(0.0).reads]


def planned_reads_per_s(reads: list[list[Any]]) -> float:
    """Reads/s of a plan from `_plan_reads` (the period is the last field)."""
    return sum(1 / r[4] for r in reads)


def _sim_args(n_tags: int, n_devices: int) -> list[str]:
    return ["--plant", "large", "--tags", str(n_tags), "--devices", str(n_devices)]


@dataclass
class SteadyPlant:
    """A gap-free large plant at 1 s, served by a simulator process, and its config."""

    plant: Plant
    sim: SimulatorProcess
    work: Path
    config: Path
    reads: list[list[Any]]  # the daemon's planned reads


@contextlib.contextmanager
def _steady_plant(n_tags: int, n_devices: int, prefix: str) -> Iterator[SteadyPlant]:
    """Every register gap served as zeros, so the daemon makes its planned reads from
    the first poll (the cost of learning strict gaps is measured by `measure_startup`)."""
    plant = at_interval(large_plant(n_tags, n_devices).without_strict_gaps(), 1.0)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        sim = start_simulator(
            [*_sim_args(n_tags, n_devices), "--no-strict-gaps"],
            clock_start=time.time() - PLANT_TIME,
            request_log=work / "requests.jsonl",
        )
        try:
            config = write_config(plant, sim.endpoints, work, sections=OPTIMIZER_OFF)
            yield SteadyPlant(plant, sim, work, config, _plan_reads(config))
        finally:
            stop_process(sim.proc)


def measure_bare(steady: SteadyPlant, warmup: float, seconds: float) -> Measured:
    """The bare pymodbus loop making the daemon's planned reads, measured like the daemon."""
    plan = {
        "devices": {
            name: {"host": ep.host, "port": ep.port, "unit": ep.unit}
            for name, ep in steady.sim.endpoints.items()
        },
        "reads": steady.reads,
    }
    plan_path = steady.work / "plan.json"
    plan_path.write_text(json.dumps(plan), encoding="utf-8")
    bare = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.bareloop",
            str(plan_path),
            # Longer than the window: it is stopped once measured.
            str(warmup + seconds + 60),
        ],
        stdout=subprocess.PIPE,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    try:
        return _measure(bare, steady.sim, warmup, seconds, settle_limit=0)
    finally:
        stop_process(bare)


@dataclass
class OverheadRatio:
    plant: str
    n_tags: int
    n_devices: int
    planned_reads_per_s: float
    daemon: Measured  # of the round whose ratio is the median
    bare: Measured
    ratios: list[float] = field(default_factory=list)  # each round's, in order

    @property
    def ratio(self) -> float:
        """CPU per register, daemon over bare loop (1.25 = 25 % overhead): the median round's."""
        return self.bare.registers_per_cpu_s / self.daemon.registers_per_cpu_s


def measure_ratio(
    n_tags: int = 5000,
    n_devices: int = 50,
    *,
    warmup: float = 10.0,
    seconds: float = 30.0,
    rounds: int = 1,
    progress: Progress | None = None,
) -> OverheadRatio:
    """The daemon and the bare loop in turn, `rounds` times; the median round stands.

    One round of each moved by 0.1 from one run to the next on a shared
    machine: the median of a few is what such noise moves least.
    """
    pairs: list[tuple[Measured, Measured]] = []
    with _steady_plant(n_tags, n_devices, "edgeopt-overhead-") as steady:
        sim, work, reads = steady.sim, steady.work, steady.reads
        planned = planned_reads_per_s(reads)
        for round_ in range(rounds):
            if progress:
                progress(f"daemon (round {round_ + 1} of {rounds})")
            daemon = start_daemon(steady.config, work / "daemon.log")
            try:
                d = _measure(daemon, sim, warmup, seconds)
            finally:
                stop_process(daemon)
            # The next round's daemon must find no hot storage or splits of this one's.
            shutil.rmtree(work / "state", ignore_errors=True)
            if progress:
                progress(f"bare pymodbus loop (round {round_ + 1} of {rounds})")
            pairs.append((d, measure_bare(steady, warmup, seconds)))
    ratios = [b.registers_per_cpu_s / d.registers_per_cpu_s for d, b in pairs]
    middle = sorted(range(len(pairs)), key=ratios.__getitem__)[len(pairs) // 2]
    d, b = pairs[middle]
    plant = steady.plant
    return OverheadRatio(plant.name, plant.n_tags, len(plant.devices), planned, d, b, ratios)


@dataclass
class ScalePoint:
    n_tags: int
    n_devices: int
    planned_reads_per_s: float
    daemon: Measured
    simulator_cpu_pct: float


def measure_scale(
    sizes: tuple[tuple[int, int], ...] = ((1000, 10), (5000, 50), (10_000, 100), (20_000, 200)),
    *,
    warmup: float = 10.0,
    seconds: float = 20.0,
    progress: Progress | None = None,
) -> list[ScalePoint]:
    out: list[ScalePoint] = []
    for n_tags, n_devices in sizes:
        if progress:
            progress(f"{n_tags} tags on {n_devices} devices")
        with _steady_plant(n_tags, n_devices, "edgeopt-scale-") as steady:
            planned = planned_reads_per_s(steady.reads)
            daemon = start_daemon(steady.config, steady.work / "daemon.log")
            sim_ps = psutil.Process(steady.sim.proc.pid)
            try:
                s0 = _cpu(sim_ps)
                t0 = time.monotonic()
                m = _measure(daemon, steady.sim, warmup, seconds)
                # The simulator's CPU over warm-up and window: did it keep up?
                sim_pct = 100 * (_cpu(sim_ps) - s0) / (time.monotonic() - t0)
            finally:
                stop_process(daemon)
        out.append(ScalePoint(n_tags, n_devices, planned, m, sim_pct))
    return out


@dataclass
class StartupPoint:
    plant: str
    n_tags: int
    strict_devices: int
    seconds_to_first_poll: float
    seconds_to_settled: float  # until the last ILLEGAL DATA ADDRESS refusal (0: none)


def measure_startup(
    sizes: tuple[tuple[int, int], ...] = ((0, 0), (10_000, 100)),
    *,
    settle_limit: float = 180.0,
    progress: Progress | None = None,
) -> list[StartupPoint]:
    """(0, 0) is the demo plant; others are large plants of (tags, devices)."""
    from simulators.plants import demo_plant

    out: list[StartupPoint] = []
    for n_tags, n_devices in sizes:
        if n_tags == 0:
            plant, args = demo_plant(), ["--plant", "demo"]
        else:
            plant, args = large_plant(n_tags, n_devices), _sim_args(n_tags, n_devices)
        if progress:
            progress(f"start-up: {plant.name}")
        with tempfile.TemporaryDirectory(prefix="edgeopt-startup-") as tmp:
            work = Path(tmp)
            log = work / "requests.jsonl"
            sim = start_simulator(args, clock_start=time.time() - PLANT_TIME, request_log=log)
            try:
                config = write_config(plant, sim.endpoints, work, sections=OPTIMIZER_OFF)
                _wait_flushed()
                spawned = time.time()
                daemon = start_daemon(config, work / "daemon.log")
                try:
                    first = None
                    deadline = time.monotonic() + 30
                    while first is None and time.monotonic() < deadline:
                        time.sleep(0.5)
                        first = next(
                            (
                                float(r["ts"])
                                for r in iter_requests(log)
                                if float(r["ts"]) >= spawned
                            ),
                            None,
                        )
                    _settle(sim, spawned, 5.0, settle_limit)
                finally:
                    stop_process(daemon)
                refusals = [
                    float(r["ts"])
                    for r in iter_requests(log)
                    if r.get("outcome") != "ok" and float(r["ts"]) >= spawned
                ]
            finally:
                stop_process(sim.proc)
        out.append(
            StartupPoint(
                plant.name,
                plant.n_tags,
                sum(d.strict_gaps for d in plant.devices),
                (first - spawned) if first else math.inf,
                (max(refusals) - spawned) if refusals else 0.0,
            )
        )
    return out
