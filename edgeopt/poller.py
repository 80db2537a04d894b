"""The poller: runs the read plan against the devices and turns answers into tag state.

`Poller` is the synchronous core: it owns the plan, one `ReadSchedule` per
line, device health and tag state, and applies each `ReadResult`. It takes
time as arguments, so the virtual-time benchmark drives the very same code.
`LineWorker` is the thin async edge: one per line (a TCP device, or a serial
port shared by its unit ids), so exactly one request is in flight per line and
a slow or dead device never delays another line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from edgeopt.clock import Clock
from edgeopt.config import DeviceConfig, TagConfig
from edgeopt.events import EventLog
from edgeopt.modbus.codec import BlockDecoder, DecodeError, TagCodec, codec_for
from edgeopt.modbus.health import DeviceHealth, DeviceState, ReadStats
from edgeopt.modbus.planner import (
    CostModel,
    DeviceLimits,
    PlanTag,
    Priority,
    Read,
    ReadPlan,
    Table,
    plan_reads,
    split_read,
)
from edgeopt.modbus.transport import (
    ILLEGAL_DATA_ADDRESS,
    Endpoint,
    ReadError,
    ReadResult,
    Transport,
)
from edgeopt.schedule import ReadSchedule
from edgeopt.tags import Sample, TagState

log = logging.getLogger(__name__)

SampleSink = Callable[[Sequence[Sample]], None]

# Exception codes that mean the device itself is in trouble, not the request.
_DEVICE_TROUBLE = frozenset({4, 6, 10, 11})


@dataclass(slots=True)
class TagRuntime:
    """One configured tag while the daemon runs."""

    key: str
    device: str
    config: TagConfig
    codec: TagCodec
    table: Table
    state: TagState
    interval: float  # the interval the plan currently reads this tag at

    @property
    def base_interval(self) -> float:
        return float(self.config.interval)


@dataclass(slots=True)
class DeviceRuntime:
    """One configured device while the daemon runs."""

    config: DeviceConfig
    endpoint: Endpoint
    limits: DeviceLimits
    cost: CostModel
    health: DeviceHealth = field(default_factory=DeviceHealth)
    stats: ReadStats = field(default_factory=ReadStats)

    @property
    def name(self) -> str:
        return str(self.config.name)

    @property
    def line(self) -> str:
        return self.endpoint.line_key


def endpoint_of(device: DeviceConfig) -> Endpoint:
    return Endpoint(
        transport=device.transport,
        host=device.host,
        port=device.port,
        baudrate=device.baudrate,
        parity=device.parity,
        stopbits=device.stopbits,
        bytesize=device.bytesize,
        timeout=device.timeout,
        retries=device.retries,
    )


def _device_runtime(device: DeviceConfig) -> DeviceRuntime:
    limits = DeviceLimits(
        max_registers=device.max_registers_per_read,
        max_bits=device.max_bits_per_read,
        max_gap=device.max_gap,
    )
    return DeviceRuntime(device, endpoint_of(device), limits, default_cost(device))


def _tag_runtime(device: str, tag: TagConfig) -> TagRuntime:
    key = f"{device}/{tag.name}"
    return TagRuntime(
        key=key,
        device=device,
        config=tag,
        codec=codec_for(tag),
        table=Table(tag.table),
        state=TagState(key, float(tag.deadband), float(tag.max_staleness)),
        interval=float(tag.interval),
    )


def default_cost(device: DeviceConfig) -> CostModel:
    """The cost model before anything is measured: wire time on serial, RTT on TCP."""
    if device.transport == "rtu":
        return CostModel.serial(device.baudrate)
    return CostModel.tcp()


class Poller:
    """Plan, schedules, health and tag state for a set of devices."""

    def __init__(
        self,
        devices: Sequence[DeviceConfig],
        *,
        events: EventLog | None = None,
        sinks: Iterable[SampleSink] = (),
    ) -> None:
        self.events = events or EventLog()
        self.sinks: list[SampleSink] = list(sinks)
        self.devices: dict[str, DeviceRuntime] = {}
        self.tags: dict[str, TagRuntime] = {}
        self.schedules: dict[str, ReadSchedule] = {}
        self.plan = ReadPlan()
        # Built once per planned read (Telegraf builds its decoders at config time too).
        self._decoders: dict[
            tuple[str, Table, int, int], tuple[list[TagRuntime], BlockDecoder]
        ] = {}
        for device in devices:
            self.add_device(device)

    # -- configuration -------------------------------------------------------

    def add_device(self, device: DeviceConfig) -> None:
        runtime = _device_runtime(device)
        self.devices[runtime.name] = runtime
        self.schedules.setdefault(runtime.line, ReadSchedule())
        for tag in device.tags:
            runtime_tag = _tag_runtime(runtime.name, tag)
            self.tags[runtime_tag.key] = runtime_tag

    def update_device(self, device: DeviceConfig) -> None:
        """Adopt a device's new config, keeping what is still valid.

        Tags whose config did not change keep their state, statistics and
        learned interval. If the connection did not change either, the device
        keeps its health, statistics, measured cost and learned read splits.
        """
        old = self.devices.get(device.name)
        if old is None:
            self.add_device(device)
            return
        if old.config == device:
            return
        runtime = _device_runtime(device)
        if runtime.endpoint == old.endpoint:
            runtime.health, runtime.stats, runtime.cost = old.health, old.stats, old.cost
            runtime.limits = replace(runtime.limits, barriers=old.limits.barriers)
        self.devices[runtime.name] = runtime
        self.schedules.setdefault(runtime.line, ReadSchedule())
        self._drop_unused_schedules()
        wanted = {f"{device.name}/{tag.name}": tag for tag in device.tags}
        for key in [k for k, t in self.tags.items() if t.device == device.name]:
            if key not in wanted:
                del self.tags[key]
        for key, tag in wanted.items():
            current = self.tags.get(key)
            if current is None or current.config != tag:
                self.tags[key] = _tag_runtime(runtime.name, tag)

    def remove_device(self, name: str) -> None:
        if self.devices.pop(name, None) is None:
            return
        for key in [k for k, t in self.tags.items() if t.device == name]:
            del self.tags[key]
        self._drop_unused_schedules()

    def _drop_unused_schedules(self) -> None:
        used = {d.line for d in self.devices.values()}
        for line in [line for line in self.schedules if line not in used]:
            del self.schedules[line]

    def lines(self) -> dict[str, list[DeviceRuntime]]:
        out: dict[str, list[DeviceRuntime]] = {}
        for device in self.devices.values():
            out.setdefault(device.line, []).append(device)
        return out

    # -- planning ------------------------------------------------------------

    def replan(self, now: float) -> ReadPlan:
        """Re-plan every device from the current intervals and learned barriers."""
        plan_tags = [
            PlanTag(
                key=t.key,
                device=t.device,
                table=t.table,
                address=int(t.config.address),
                width=int(t.config.width),
                interval=t.interval,
                priority=Priority(t.config.priority),
            )
            for t in self.tags.values()
        ]
        self.plan = plan_reads(
            plan_tags,
            {name: d.limits for name, d in self.devices.items()},
            {name: d.cost for name, d in self.devices.items()},
        )
        self._decoders.clear()
        by_line: dict[str, list[Read]] = {line: [] for line in self.schedules}
        for read in self.plan.reads:
            by_line[self.devices[read.device].line].append(read)
        for line, reads in by_line.items():
            self.schedules[line].set_reads(reads, now)
        return self.plan

    def set_intervals(self, intervals: Mapping[str, float], now: float) -> ReadPlan:
        """Change tags' read intervals (clamped to their limits) and re-plan."""
        for key, interval in intervals.items():
            tag = self.tags.get(key)
            if tag is not None:
                low, high = float(tag.config.min_interval), float(tag.config.max_staleness)
                tag.interval = min(high, max(low, interval))
        return self.replan(now)

    # -- the poll cycle --------------------------------------------------------

    def next_read(self, line: str, now: float) -> tuple[Read, float] | None:
        """The next read due on `line`; reads of offline devices wait for the probe."""
        schedule = self.schedules.get(line)
        if schedule is None:
            return None
        while (item := schedule.pop_due(now)) is not None:
            read, due = item
            device = self.devices.get(read.device)
            if device is None:
                continue
            if device.health.may_poll(now):
                return read, due
            schedule.postpone(read, device.health.next_probe)
        return None

    def apply(self, read: Read, result: ReadResult, wall: float, now: float, due: float) -> None:
        """Take one read's result: tag values, quality, health, statistics."""
        device = self.devices.get(read.device)
        schedule = self.schedules.get(device.line) if device else None
        if device is None or schedule is None:
            return
        device.stats.record(result.latency, read.count, result.error, result.exception_code)
        samples: list[Sample] = []
        if result.ok and result.values is not None:
            self._health_ok(device, wall, now)
            samples = self._decode(read, result.values, wall)
        elif result.exception_code == ILLEGAL_DATA_ADDRESS and self._split(device, read, now):
            return  # the split reads run at once; the tags keep their state
        else:
            trouble = result.error is not ReadError.EXCEPTION or (
                result.exception_code in _DEVICE_TROUBLE
            )
            if trouble:
                self._health_fail(device, result.describe(), wall, now)
            else:
                self._health_ok(device, wall, now)  # it answered: it is alive
            reason = result.describe()
            for key in read.tags:
                tag = self.tags.get(key)
                if tag is not None:
                    samples.extend(tag.state.fail(reason, wall))
        schedule.complete(read, due, now)
        self._emit(samples)

    def check_stale(self, wall: float) -> None:
        samples: list[Sample] = []
        for tag in self.tags.values():
            samples.extend(tag.state.check_stale(wall))
        self._emit(samples)

    def _decode(self, read: Read, values: list[int] | list[bool], wall: float) -> list[Sample]:
        samples: list[Sample] = []
        if read.table.is_bits:
            for tag in self._members(read):
                offset = int(tag.config.address) - read.start
                bit = tag.codec.decode_bits([bool(values[offset])])
                samples.extend(tag.state.observe(bit, wall))
            return samples
        members, decoder = self._decoder(read)
        try:
            decoded = decoder.decode(values)
        except (DecodeError, ValueError):
            return self._decode_each(read, members, values, wall)
        for tag, value in zip(members, decoded, strict=True):
            samples.extend(tag.state.observe(value, wall))
        return samples

    def _decode_each(
        self, read: Read, members: list[TagRuntime], values: list[int] | list[bool], wall: float
    ) -> list[Sample]:
        """Slow path after a block failed to decode: find the tags at fault."""
        samples: list[Sample] = []
        for tag in members:
            offset = int(tag.config.address) - read.start
            chunk = [int(v) for v in values[offset : offset + int(tag.config.width)]]
            try:
                value = tag.codec.decode(chunk)
            except (DecodeError, ValueError) as exc:
                samples.extend(tag.state.fail(f"decode error: {exc}", wall))
                continue
            samples.extend(tag.state.observe(value, wall))
        return samples

    def _members(self, read: Read) -> list[TagRuntime]:
        return [self.tags[k] for k in read.tags if k in self.tags]

    def _decoder(self, read: Read) -> tuple[list[TagRuntime], BlockDecoder]:
        cached = self._decoders.get(read.key)
        if cached is None:
            members = self._members(read)
            fields = [(int(t.config.address) - read.start, t.codec) for t in members]
            cached = (members, BlockDecoder(read.count, fields))
            self._decoders[read.key] = cached
        return cached

    def _split(self, device: DeviceRuntime, read: Read, now: float) -> bool:
        addresses = {k: int(self.tags[k].config.address) for k in read.tags if k in self.tags}
        barrier = split_read(read, addresses)
        if barrier is None:
            return False
        device.limits = replace(device.limits, barriers=device.limits.barriers | {barrier})
        log.warning(
            "device %s refused read %s %d+%d with ILLEGAL DATA ADDRESS; splitting at %d",
            device.name,
            read.table,
            read.start,
            read.count,
            barrier[1],
        )
        self.replan(now)
        return True

    def _health_ok(self, device: DeviceRuntime, wall: float, now: float) -> None:
        previous = device.health.success(now)
        if previous is not None:
            log.info("device %s recovered (was %s)", device.name, previous)
            self.events.emit(wall, "device_online", f"{device.name} is online", device=device.name)

    def _health_fail(self, device: DeviceRuntime, error: str, wall: float, now: float) -> None:
        previous = device.health.failure(error, now)
        if previous is None:
            return
        state = device.health.state
        if state is DeviceState.OFFLINE:
            log.error(
                "device %s offline after %d failed reads: %s (probing every %.0fs at most)",
                device.name,
                device.health.failures_in_row,
                error,
                device.health.probe_max,
            )
            self.events.emit(
                wall, "device_offline", f"{device.name} is offline: {error}", device=device.name
            )
        else:
            log.warning("device %s %s: %s", device.name, state, error)
            self.events.emit(wall, "device_degraded", f"{device.name}: {error}", device=device.name)

    def _emit(self, samples: list[Sample]) -> None:
        if not samples:
            return
        for sink in self.sinks:
            try:
                sink(samples)
            except Exception:  # a broken sink must never stop acquisition
                log.exception("sample sink %r failed", sink)


class LineWorker:
    """Runs one line's reads, one request in flight at a time."""

    def __init__(self, line: str, poller: Poller, transport: Transport, clock: Clock) -> None:
        self.line = line
        self._poller = poller
        self._transport = transport
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopped = False

    def stop(self) -> None:
        """Finish after the read in flight (if any); `run` then returns."""
        self._stopped = True
        self._wake.set()

    def wake(self) -> None:
        """Look at the schedule again now (after a re-plan)."""
        self._wake.set()

    async def run(self) -> None:
        clock, poller = self._clock, self._poller
        while not self._stopped:
            now = clock.monotonic()
            item = poller.next_read(self.line, now)
            if item is None:
                await self._sleep_until_due(now)
                continue
            read, due = item
            device = poller.devices.get(read.device)
            if device is None:
                continue
            result = await self._transport.read(
                read.table, read.start, read.count, device.config.unit
            )
            poller.apply(read, result, clock.now(), clock.monotonic(), due)

    async def _sleep_until_due(self, now: float) -> None:
        schedule = self._poller.schedules.get(self.line)
        due = schedule.next_due() if schedule else None
        self._wake.clear()
        timeout = None if due is None else max(0.0, due - now)
        # asyncio.wait, not asyncio.timeout: on 3.11 a cancel that lands as the
        # timeout fires can surface as TimeoutError, and suppressing that would
        # swallow the cancel and keep a stopping worker alive.
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            waiter.cancel()

    async def close(self) -> None:
        await self._transport.close()
