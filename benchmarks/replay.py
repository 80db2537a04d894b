"""Virtual-time replay: the daemon's own poll loop, planner and optimizer against plant truth.

Nothing here re-implements scheduling. The replay builds the daemon's
`Poller` from the plant's config and runs a small discrete-event loop in
plant time that does, per line, what `edgeopt.poller.LineWorker.run` does:
`Poller.next_read(line, now)` → the read is in flight for its simulated
duration → `Poller.apply(read, result, wall, now, due)`. The result carries
the registers the plant's devices hold at that instant (`answer.PlantAnswers`),
so the daemon's decoder, tag state, statistics, health, ILLEGAL DATA ADDRESS
splits, re-plans and any trigger reads the optimizer schedules all run as in
the daemon. An optional optimizer (`edgeopt.optimizer.build_optimizer`) is
driven in *virtual* time: its `run_due()` every few seconds, which runs the
quick, full and evaluation cycles when their deadlines on the injected clock
say (or, for an optimizer without `run_due`, the three methods at their
configured periods).

Time model:
- a line (one TCP device, or one RS-485 port shared by its units) has at
  most one read in flight, as in the daemon;
- a read on an RTU line lasts its wire time at the line's baud rate (request,
  response, two 3.5-character silences, 11 bits a character) plus the device
  turnaround; the device samples its registers after the request arrived and
  the turnaround passed (as `simulators.server` does);
- a read on TCP lasts `tcp_rtt`; the device samples at half of it;
- the optimizer's own compute takes no virtual time.

Plant time is the clock's monotonic time (`VirtualClock.set_monotonic`); the
wall time the daemon stamps samples with is `epoch + plant time`.
"""

from __future__ import annotations

import heapq
import importlib
import inspect
import math
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from edgeopt.clock import VirtualClock
from edgeopt.config import Config
from edgeopt.events import EventLog
from edgeopt.modbus.planner import Read
from edgeopt.modbus.transport import ReadError, ReadResult
from edgeopt.poller import Poller, SampleSink
from simulators.plant import Endpoint, Plant

from .answer import ILLEGAL_DATA_ADDRESS, PlantAnswers
from .metrics import BITS_PER_CHAR, REQUEST_BYTES, SILENCE_CHARS, ReadKey, ReadLog, ReadLogBuilder

__all__ = [
    "STRATEGIES",
    "Optimizer",
    "OptimizerFactory",
    "ReplayResult",
    "find_optimizer_factory",
    "plant_config",
    "replay",
]

# The optimizer's strategies (config `optimizer.strategies`), in report order.
STRATEGIES = ("interval", "cluster", "pattern")

# Wall time of plant time 0 in the replay: a Monday 00:00 in local time, as
# the simulator aligns plant time with the wall clock (`simulators.cli.week_start`),
# so the optimizer's hour-of-day and day-of-week profiles see the plant's days.
EPOCH = datetime(2023, 11, 13).timestamp()


class Optimizer(Protocol):
    """What the replay drives: the method names of seed 004 (DESIGN.md §8)."""

    async def run_quick_optimization(self) -> Any: ...

    async def run_full_optimization(self) -> Any: ...

    async def evaluate_optimizations(self) -> Any: ...


OptimizerFactory = Callable[[Poller, VirtualClock, EventLog], Optimizer]


def find_optimizer_factory(config: Config, state_dir: Path) -> OptimizerFactory | None:
    """The daemon's optimizer, if `edgeopt.optimizer` has a factory yet.

    Looks for `build_optimizer` (or `create_optimizer`) and passes it, by
    parameter name, what it asks for among: poller, clock, events, config
    (the whole Config), optimizer_config, state_dir. None if there is none.
    """
    try:
        module = importlib.import_module("edgeopt.optimizer")
    except ImportError:
        return None
    build = getattr(module, "build_optimizer", None) or getattr(module, "create_optimizer", None)
    if build is None:
        return None
    params = inspect.signature(build).parameters

    def factory(poller: Poller, clock: VirtualClock, events: EventLog) -> Optimizer:
        offered: dict[str, Any] = {
            "poller": poller,
            "clock": clock,
            "events": events,
            "config": config,
            "optimizer_config": config.optimizer,
            "state_dir": state_dir,
        }
        kwargs = {name: offered[name] for name in params if name in offered}
        missing = [
            n
            for n, p in params.items()
            if n not in offered
            and p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if missing:
            raise TypeError(f"build_optimizer needs {missing}, which the replay cannot give")
        optimizer: Optimizer = build(**kwargs)
        return optimizer

    return factory


def plant_config(
    plant: Plant,
    state_dir: str,
    *,
    strategies: Iterable[str] | None = None,
    optimizer: dict[str, Any] | None = None,
    baudrate: int = 9600,
) -> Config:
    """The edgeopt config the daemon would run for `plant` (TCP and RTU endpoints alike).

    strategies: enable only these optimizer strategies (None: the config's).
    optimizer: extra `optimizer:` keys (e.g. quick_every).
    """
    endpoints: dict[str, Endpoint] = dict(plant.tcp_endpoints())
    for line, devices in plant.lines().items():
        for d in devices:
            endpoints[d.name] = Endpoint(
                "rtu", d.unit_id, port=f"/dev/virtual-{line}", baudrate=baudrate
            )
    cfg = plant.to_config(endpoints, state_dir, f"{state_dir}/edgeopt.sock")
    opt = dict(cfg.get("optimizer", {}))
    opt.update(optimizer or {})
    if strategies is not None:
        chosen = set(strategies)
        unknown = chosen - set(STRATEGIES)
        if unknown:
            raise ValueError(f"unknown strategies {sorted(unknown)}")
        opt["strategies"] = {name: {"enabled": name in chosen} for name in STRATEGIES}
    if opt:
        cfg["optimizer"] = opt
    return Config.model_validate({**cfg, "source": f"<plant {plant.name}>"})


@dataclass
class ReplayResult:
    """What a replay produced: the read log and how it went."""

    log: ReadLog
    t0: float
    t1: float
    wall_seconds: float  # real seconds the replay took
    optimizer: str  # "none" or the optimizer's class name
    reads: int
    failed_reads: int
    plans: list[tuple[float, str]] = field(default_factory=list)  # (plant time, summary)
    job_runs: dict[str, int] = field(default_factory=dict)
    poller: Poller | None = field(default=None, repr=False)
    # The optimizer as the run left it (its records, rates and model), or None.
    learner: Any = field(default=None, repr=False)

    @property
    def speedup(self) -> float:
        return (self.t1 - self.t0) / self.wall_seconds if self.wall_seconds > 0 else math.inf


_WAKE, _DONE, _JOB = 0, 1, 2


async def replay(
    plant: Plant,
    duration: float,
    *,
    start: float = 0.0,
    optimizer_factory: OptimizerFactory | bool | None = None,
    strategies: Iterable[str] | None = None,
    optimizer_config: dict[str, Any] | None = None,
    evaluate_every: float | None = None,
    tick_every: float = 5.0,
    tcp_rtt: float = 0.002,
    baudrate: int = 9600,
    stale_check_every: float = 1.0,
    answer_window: float = 600.0,
    progress: Callable[[float], None] | None = None,
    name: str = "edgeopt",
    sinks: Iterable[SampleSink] = (),
) -> ReplayResult:
    """Replay `duration` seconds of plant time from plant time `start`.

    optimizer_factory: a factory, None to use `edgeopt.optimizer`'s when it
    has one, or False for none (the cost-aware plan at the configured
    intervals). An optimizer with `run_due()` (edgeopt's) gets it every
    `tick_every` virtual seconds and runs its quick, full and evaluation
    cycles when its own deadlines say; one without gets its three methods
    called every quick_every, full_every and `evaluate_every` (default: a
    quarter of `optimizer.evaluate_after`). progress: called with the
    fraction of plant time done, about every 1 %. sinks: receive the
    samples the daemon would store (as storage does in the daemon).
    """
    wall_start = time.perf_counter()
    t0, t1 = float(start), float(start) + float(duration)
    tmp = tempfile.TemporaryDirectory(prefix="edgeopt-replay-")
    try:
        state_dir = Path(tmp.name)
        config = plant_config(
            plant,
            str(state_dir),
            strategies=strategies,
            optimizer=optimizer_config,
            baudrate=baudrate,
        )
        clock = VirtualClock(start=EPOCH)
        clock.set_monotonic(t0)
        events = EventLog()
        poller = Poller(config.devices, events=events, sinks=sinks)
        loop = _Loop(poller, clock, plant, t0, t1, tcp_rtt, answer_window)
        # The daemon's own hook: a line whose schedule may have an earlier
        # deadline (a re-plan, a trigger read) wakes its worker, here the loop.
        poller.wake_listeners.append(loop.notify)
        plan = poller.replan(t0)
        loop.plans.append((t0, plan.summary()))

        factory: OptimizerFactory | None
        if optimizer_factory is None:
            factory = find_optimizer_factory(config, state_dir)
        elif optimizer_factory is False or optimizer_factory is True:
            factory = find_optimizer_factory(config, state_dir) if optimizer_factory else None
        else:
            factory = optimizer_factory
        opt_name = "none"
        opt: Optimizer | None = None
        if factory is not None and config.optimizer.enabled:
            opt = factory(poller, clock, events)
            opt_name = type(opt).__name__
            run_due = getattr(opt, "run_due", None)
            if run_due is not None:
                # The optimizer keeps its own cycle deadlines on the injected
                # clock: tick it every few seconds, as its loop asks.
                loop.add_job("run_due", run_due, tick_every)
            else:
                oc = config.optimizer
                every = {
                    "run_quick_optimization": float(oc.quick_every),
                    "run_full_optimization": float(oc.full_every),
                    "evaluate_optimizations": float(
                        evaluate_every if evaluate_every is not None else oc.evaluate_after / 4
                    ),
                }
                for method, period in every.items():
                    loop.add_job(method, getattr(opt, method), period)
        if stale_check_every > 0:
            loop.add_sync_job(
                "check_stale", lambda: poller.check_stale(clock.now()), stale_check_every
            )
        try:
            await loop.run(progress)
        finally:
            close = getattr(opt, "close", None)
            if close is not None:
                await close()  # e.g. the cluster worker process
    finally:
        tmp.cleanup()
    log = loop.log.build(t0, t1, name)
    return ReplayResult(
        log=log,
        t0=t0,
        t1=t1,
        wall_seconds=time.perf_counter() - wall_start,
        optimizer=opt_name,
        reads=len(log),
        failed_reads=loop.failed,
        plans=loop.plans,
        job_runs=loop.job_runs,
        poller=poller,
        learner=opt,
    )


@dataclass(slots=True)
class _InFlight:
    read: Read
    due: float
    values: list[int] | list[bool] | None
    duration: float
    sampled: float


class _Loop:
    """The discrete-event loop: line wake-ups, read completions and jobs, in plant time."""

    def __init__(
        self,
        poller: Poller,
        clock: VirtualClock,
        plant: Plant,
        t0: float,
        t1: float,
        tcp_rtt: float,
        answer_window: float,
    ) -> None:
        self.poller = poller
        self.clock = clock
        self.t0, self.t1 = t0, t1
        self.answers = PlantAnswers(plant, window=answer_window)
        self.log = ReadLogBuilder()
        self.failed = 0
        self.plans: list[tuple[float, str]] = []
        self.job_runs: dict[str, int] = {}
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._wake_at: dict[str, float] = {}
        self._busy: set[str] = set()
        self._now = t0
        self._key_ids: dict[Read, int] = {}
        self._jobs: dict[str, tuple[Callable[[], Any], float, bool]] = {}
        # Per device: (read duration model) — serial wire time or the TCP RTT.
        self._turnaround = {d.name: d.turnaround for d in plant.devices}
        self._tcp_rtt = tcp_rtt
        self._cost_cache: dict[tuple[str, str, int], tuple[float, float]] = {}

    # -- scheduling ----------------------------------------------------------
    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, payload))

    def notify(self, line: str) -> None:
        """`Poller.wake_listeners`: the line may have an earlier deadline; wake it for it.

        As `LineWorker.wake()`: a line with a read in flight looks at its
        schedule again when the read completes anyway.
        """
        if line in self._busy:
            return  # it looks again when its read completes
        schedule = self.poller.schedules.get(line)
        due = schedule.next_due() if schedule is not None else None
        if due is None:
            return
        due = max(due, self._now)
        if due < self._wake_at.get(line, math.inf):
            self._wake_at[line] = due
            self._push(due, _WAKE, line)

    def add_job(self, name: str, method: Callable[[], Any], period: float) -> None:
        self._jobs[name] = (method, period, True)
        self._push(self.t0 + period, _JOB, name)

    def add_sync_job(self, name: str, fn: Callable[[], Any], period: float) -> None:
        self._jobs[name] = (fn, period, False)
        self._push(self.t0 + period, _JOB, name)

    # -- the read model --------------------------------------------------------
    def _timing(self, read: Read) -> tuple[float, float]:
        """(duration, sample offset) of a read on its device's line."""
        key = (read.device, read.table.value, read.count)
        got = self._cost_cache.get(key)
        if got is not None:
            return got
        device = self.poller.devices[read.device]
        if device.config.transport == "rtu":
            char = BITS_PER_CHAR / device.config.baudrate
            n = read.count
            response = 5 + (math.ceil(n / 8) if read.table.is_bits else 2 * n)
            turnaround = self._turnaround.get(read.device, 0.0)
            request = (REQUEST_BYTES + 3.5) * char
            duration = (REQUEST_BYTES + response + SILENCE_CHARS) * char + turnaround
            got = (duration, request + turnaround)
        else:
            got = (self._tcp_rtt, self._tcp_rtt / 2)
        self._cost_cache[key] = got
        return got

    def _key_id(self, read: Read) -> int:
        kid = self._key_ids.get(read)
        if kid is None:
            kid = self.log.key_id(
                ReadKey(read.device, read.table.value, read.start, read.count, read.tags)
            )
            self._key_ids[read] = kid
        return kid

    # -- the loop ----------------------------------------------------------------
    async def run(self, progress: Callable[[float], None] | None) -> None:
        poller, clock, answers = self.poller, self.clock, self.answers
        for line in poller.schedules:
            self.notify(line)
        heap = self._heap
        pop, push = heapq.heappop, self._push
        wake_at, busy = self._wake_at, self._busy
        t1 = self.t1
        span = max(t1 - self.t0, 1e-9)
        next_progress = self.t0
        inf = math.inf
        while heap:
            t, _, kind, payload = pop(heap)
            if t > t1:
                break
            self._now = t
            clock.set_monotonic(t)
            if progress is not None and t >= next_progress:
                progress((t - self.t0) / span)
                next_progress = t + span / 100
            if kind == _WAKE:
                line = payload
                if wake_at.get(line) != t or line in busy:
                    continue  # superseded by an earlier wake-up
                wake_at[line] = inf
                item = poller.next_read(line, t)
                if item is None:
                    self.notify(line)
                    if wake_at.get(line, inf) <= t:
                        # Nothing runnable now although something is due
                        # (an offline device's read was postponed): look a
                        # little later rather than spin.
                        wake_at[line] = t + 1e-3
                        push(t + 1e-3, _WAKE, line)
                    continue
                read, due = item
                duration, offset = self._timing(read)
                sampled = t + offset
                values = answers.answer(
                    read.device, read.table.value, read.start, read.count, sampled
                )
                busy.add(line)
                push(t + duration, _DONE, (line, _InFlight(read, due, values, duration, sampled)))
            elif kind == _DONE:
                line, flight = payload
                read = flight.read
                if flight.values is not None:
                    result = ReadResult(flight.values, flight.duration)
                    self.log.add(flight.sampled, self._key_id(read))
                else:
                    self.failed += 1
                    result = ReadResult(
                        None,
                        flight.duration,
                        ReadError.EXCEPTION,
                        ILLEGAL_DATA_ADDRESS,
                        "exception 2",
                    )
                plan_before = poller.plan
                poller.apply(read, result, clock.now(), t, flight.due)
                if poller.plan is not plan_before:
                    self.plans.append((t, poller.plan.summary()))
                busy.discard(line)
                self.notify(line)
            else:
                name = payload
                fn, period, is_async = self._jobs[name]
                plan_before = poller.plan
                outcome = fn()
                if is_async:
                    await outcome
                self.job_runs[name] = self.job_runs.get(name, 0) + 1
                if poller.plan is not plan_before:
                    self.plans.append((t, poller.plan.summary()))
                push(t + period, _JOB, name)
        if progress is not None:
            progress(1.0)
