"""The poller: runs the read plan against the devices and turns answers into tag state.

`Poller` is the synchronous core: it owns the plan, one `ReadSchedule` per
line, device health and tag state, and applies each `ReadResult`. It takes
time as arguments, so the virtual-time benchmark drives the very same code.
The async edge that runs each line's reads is `edgeopt.lines`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from edgeopt.config import DeviceConfig, TagConfig
from edgeopt.events import EventLog
from edgeopt.modbus.codec import BitBlockDecoder, BlockDecoder, DecodeError, TagCodec, codec_for
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
)
from edgeopt.rings import CostSamples
from edgeopt.schedule import ReadSchedule
from edgeopt.tags import Quality, Sample, TagState, Value

log = logging.getLogger(__name__)

SampleSink = Callable[[Sequence[Sample]], None]
# Called with (tag, wall, now) whenever a read shows a change beyond the deadband.
ChangeListener = Callable[["TagRuntime", float, float], None]
# Successful reads kept per device for measuring its cost model: (units, latency).
COST_SAMPLES = 256

# Exception codes that mean the device itself is in trouble, not the request.
_DEVICE_TROUBLE = frozenset({4, 6, 10, 11})
# A read starting less than this after its deadline is on time (event-loop jitter).
LAG_FLOOR = 0.02
# One read counts as at most this many periods late: a stall is one spike, not a trend.
LAG_CAP = 4.0


@dataclass(slots=True)
class LineLag:
    """How late a line's reads start, as running totals (readers take differences).

    This is what acquisition shedding (`resources.Shedding`) watches: the
    daemon's own ability to keep up, not the machine's load.
    """

    reads: int = 0  # reads started
    late: int = 0  # of them, started more than LAG_FLOOR after their deadline
    periods: float = 0.0  # their delays, each as a share of its read's period (capped)
    seconds: float = 0.0  # their delays in seconds


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
    # (registers, latency) of recent good reads (bit reads as 16 bits a register):
    # the optimizer fits its cost model α + β·n to them.
    cost_samples: CostSamples = field(default_factory=lambda: CostSamples(COST_SAMPLES))

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
        turnarounds=((device.unit, device.turnaround),) if device.turnaround else (),
    )


def line_endpoint(devices: Sequence[DeviceConfig]) -> Endpoint:
    """The endpoint of a line's one transport: the first device's, with every
    device's turnaround."""
    turnarounds = sorted({t for d in devices for t in endpoint_of(d).turnarounds})
    return replace(endpoint_of(devices[0]), turnarounds=tuple(turnarounds))


def register_map_fingerprint(device: DeviceConfig) -> str:
    """What must not change for a device's learned read splits to stay valid:
    where it is, its unit, and the spans its tags occupy in each table."""
    spans = sorted({(str(t.table), int(t.address), int(t.width)) for t in device.tags})
    where = (device.transport, device.host, device.port, device.unit)
    return hashlib.sha256(repr((where, spans)).encode()).hexdigest()[:32]


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
        codec=codec_for(tag),  # shared by the tags that agree on every part of it
        table=Table(tag.table),
        state=TagState(key, float(tag.deadband), float(tag.max_staleness)),
        interval=float(tag.interval),
    )


# Transports whose cost is bus time on an RS-485 line (each line in its own currency).
SERIAL_TRANSPORTS = frozenset({"rtu", "rtu_over_tcp"})


def default_cost(device: DeviceConfig) -> CostModel:
    """The cost model before anything is measured: wire time on serial, RTT on TCP.

    RTU over TCP is priced as serial: behind the converter is an RS-485 line at
    its baud rate, and that line, not the TCP hop, is the bottleneck.
    """
    if device.transport in SERIAL_TRANSPORTS:
        # A slow device's turnaround keeps the bus quiet after each of its reads.
        return CostModel.serial(device.baudrate, turnaround=0.005 + device.turnaround)
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
        # Trigger relations: when a leader's read shows a change, its followers'
        # reads run at once (the optimizer's cluster strategy sets these).
        self.triggers: dict[str, frozenset[str]] = {}
        self.trigger_reads = 0
        self.change_listeners: list[ChangeListener] = []
        # Told of each verified write (after the change listeners).
        self.write_listeners: list[ChangeListener] = []
        # Called with a line whose schedule may now have an earlier deadline (a
        # re-plan, a trigger read): the daemon wakes that line's worker.
        self.wake_listeners: list[Callable[[str], None]] = []
        # Called with a device's name when it taught the plan a new read split
        # (the daemon keeps them across restarts).
        self.split_listeners: list[Callable[[str], None]] = []
        self._read_of: dict[str, Read] = {}  # tag key -> the planned read holding it
        # Read key -> when a trigger last asked for it: a burst of leader changes
        # re-reads the followers no faster than their configured interval.
        self._triggered_at: dict[object, float] = {}
        self.lag: dict[str, LineLag] = {}  # line -> how late its reads start
        # Built once per planned read (Telegraf builds its decoders at config time too).
        self._decoders: dict[tuple[str, Table, int, int], _Block] = {}
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
        self._forget_decoders(device.name)  # they hold the tags they decode into

    def _forget_decoders(self, device: str) -> None:
        for key in [k for k in self._decoders if k[0] == device]:
            del self._decoders[key]

    def remove_device(self, name: str) -> None:
        if self.devices.pop(name, None) is None:
            return
        for key in [k for k, t in self.tags.items() if t.device == name]:
            del self.tags[key]
        self._forget_decoders(name)
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

    def replan(self, now: float, devices: Collection[str] | None = None) -> ReadPlan:
        """Re-plan from the current intervals and learned barriers.

        With `devices`, only their reads are planned again (the others keep
        theirs, and their lines' schedules are left alone): a change to a few
        tags should not cost a whole-plant plan.
        """
        if devices is not None:
            return self._replan_devices(set(devices) & self.devices.keys(), now)
        plan_tags = [self._plan_tag(t) for t in self.tags.values()]
        self.plan = plan_reads(
            plan_tags,
            {name: d.limits for name, d in self.devices.items()},
            {name: d.cost for name, d in self.devices.items()},
        )
        self._decoders.clear()
        self._schedule(set(self.schedules), now)
        return self.plan

    def _plan_tag(self, t: TagRuntime) -> PlanTag:
        return PlanTag(
            key=t.key,
            device=t.device,
            table=t.table,
            address=int(t.config.address),
            width=int(t.config.width),
            interval=t.interval,
            priority=Priority(t.config.priority),
        )

    def _replan_devices(self, devices: set[str], now: float) -> ReadPlan:
        if not devices:
            return self.plan
        fresh = plan_reads(
            [self._plan_tag(t) for t in self.tags.values() if t.device in devices],
            {name: self.devices[name].limits for name in devices},
            {name: self.devices[name].cost for name in devices},
        )
        kept = [r for r in self.plan.reads if r.device not in devices and r.device in self.devices]
        self.plan = ReadPlan(
            reads=tuple(kept) + fresh.reads,
            tag_count=len(self.tags),
            costs={name: d.cost for name, d in self.devices.items()},
        )
        for name in devices:
            self._forget_decoders(name)
        self._schedule({self.devices[name].line for name in devices}, now)
        return self.plan

    def _schedule(self, lines: set[str], now: float) -> None:
        """Hand the plan's reads to the schedules of `lines`."""
        by_line: dict[str, list[Read]] = {line: [] for line in lines if line in self.schedules}
        for read in self.plan.reads:
            line = self.devices[read.device].line
            if line in by_line:
                by_line[line].append(read)
        for line, reads in by_line.items():
            self.schedules[line].set_reads(reads, now)
        self._read_of = {key: read for read in self.plan.reads for key in read.tags}
        keys = {read.key for read in self.plan.reads}
        self._triggered_at = {k: v for k, v in self._triggered_at.items() if k in keys}
        for line in by_line:
            self._wake(line)

    def _wake(self, line: str) -> None:
        for listener in self.wake_listeners:
            try:
                listener(line)
            except Exception:  # a broken listener must never stop acquisition
                log.exception("wake listener %r failed", listener)

    def set_intervals(self, intervals: Mapping[str, float], now: float) -> ReadPlan:
        """Change tags' read intervals (clamped to their limits) and re-plan their devices."""
        touched: set[str] = set()
        for key, interval in intervals.items():
            tag = self.tags.get(key)
            if tag is not None:
                low, high = float(tag.config.min_interval), float(tag.config.max_staleness)
                clamped = min(high, max(low, interval))
                if clamped != tag.interval:
                    tag.interval = clamped
                    touched.add(tag.device)
        return self.replan(now, touched)

    def set_triggers(self, triggers: Mapping[str, Iterable[str]]) -> None:
        """Replace the trigger relations (leader key -> follower keys); unknown tags are dropped."""
        self.triggers = {
            leader: frozenset(f for f in followers if f in self.tags and f != leader)
            for leader, followers in triggers.items()
            if leader in self.tags
        }
        self.triggers = {k: v for k, v in self.triggers.items() if v}

    def read_of(self, key: str) -> Read | None:
        """The planned read that holds tag `key`."""
        return self._read_of.get(key)

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
                # The read starts now: note how late (the hot path, so inline and cheap).
                lag = self.lag.get(line)
                if lag is None:
                    lag = self.lag[line] = LineLag()
                lag.reads += 1
                delay = now - due
                if delay > LAG_FLOOR:
                    lag.late += 1
                    lag.seconds += delay
                    lag.periods += min(LAG_CAP, delay / max(read.period, 1e-3))
                return read, due
            schedule.postpone(read, device.health.next_probe)
        return None

    def apply(self, read: Read, result: ReadResult, wall: float, now: float, due: float) -> None:
        """Take one read's result: tag values, quality, health, statistics."""
        device = self.devices.get(read.device)
        schedule = self.schedules.get(device.line) if device else None
        if device is None or schedule is None:
            return
        device.stats.record(
            result.latency,
            read.count,
            result.error,
            result.exception_code,
            read.table.is_bits,
            attempts=result.attempts,
            reconnected=result.reconnected,
        )
        for kind in result.discarded:  # frames dropped on the way: late, foreign, garbage
            device.stats.errors_by_kind[kind] += 1
        samples: list[Sample] = []
        if result.ok and result.values is not None:
            units = -(-read.count // 16) if read.table.is_bits else read.count
            # On a bus, a slow device's turnaround after its reply is its cost too.
            quiet = device.config.turnaround if device.config.transport in SERIAL_TRANSPORTS else 0
            device.cost_samples.append((units, result.latency + quiet))
            self._health_ok(device, wall, now)
            events: list[TagRuntime] = []
            samples = self._decode(read, result.values, wall, events)
            if events and (self.triggers or self.change_listeners):
                self._changes(read, events, wall, now)
        elif result.exception_code == ILLEGAL_DATA_ADDRESS and self._split(device, read, now):
            # The split reads run at once; the tags keep their state. The device
            # answered (alive), and the refusal is its last error until a good read.
            self._health_ok(device, wall, now)
            device.health.note(f"{result.describe()} on {_span(read)}; split", now, wall)
            return
        else:
            trouble = result.error is not ReadError.EXCEPTION or (
                result.exception_code in _DEVICE_TROUBLE
            )
            if trouble:
                answered = result.error is ReadError.EXCEPTION
                self._health_fail(device, result.describe(), wall, now, answered=answered)
            else:
                self._health_ok(device, wall, now)  # it answered: it is alive
                device.health.note(f"{result.describe()} on {_span(read)}", now, wall)
            reason = result.describe()
            for key in read.tags:
                tag = self.tags.get(key)
                if tag is not None:
                    samples.extend(tag.state.fail(reason, wall))
        schedule.complete(read, due, now)
        self._emit(samples)

    def _changes(self, read: Read, events: list[TagRuntime], wall: float, now: float) -> None:
        """Tell listeners about `read`'s change events, and run the reads their triggers ask for."""
        wanted: dict[tuple[str, Table, int, int], Read] = {}
        for tag in events:
            for listener in self.change_listeners:
                try:
                    listener(tag, wall, now)
                except Exception:  # a broken listener must never stop acquisition
                    log.exception("change listener %r failed", listener)
            for follower in self.triggers.get(tag.key, ()):
                target = self._read_of.get(follower)
                if target is not None and target.key != read.key:
                    wanted[target.key] = target
        for target in wanted.values():
            device = self.devices.get(target.device)
            schedule = self.schedules.get(device.line) if device else None
            if schedule is not None and device is not None:
                last = self._triggered_at.get(target.key)
                if last is not None and last > now:
                    continue  # a trigger read is pending: it will see this change too
                spacing = min((t.base_interval for t in self._members(target)), default=0.0)
                when = now if last is None else max(now, last + spacing)
                self._triggered_at[target.key] = when
                schedule.run_by(target, when)
                self.trigger_reads += 1
                self._wake(device.line)

    def record_write(self, key: str, value: Value, wall: float, now: float) -> None:
        """A verified write: the tag takes the value read back, and it counts as a change.

        The change listeners (the optimizer) hear of it even when the value
        equals the old one, and the tag's trigger followers are read at once.
        """
        tag = self.tags.get(key)
        if tag is None:
            return
        samples = tag.state.observe(value, wall)
        for listener in [*self.change_listeners, *self.write_listeners]:
            try:
                listener(tag, wall, now)
            except Exception:  # a broken listener must never stop acquisition
                log.exception("change listener %r failed", listener)
        for follower in self.triggers.get(key, ()):
            self.read_soon(follower, now)
        self._emit(samples)

    def read_soon(self, key: str, now: float) -> None:
        """Run the planned read holding tag `key` at once (e.g. after an unverified write)."""
        read = self._read_of.get(key)
        device = self.devices.get(read.device) if read is not None else None
        schedule = self.schedules.get(device.line) if device is not None else None
        if read is not None and device is not None and schedule is not None:
            schedule.run_now(read, now)
            self._wake(device.line)

    def check_stale(self, wall: float) -> None:
        samples: list[Sample] = []
        good = Quality.GOOD
        for tag in self.tags.values():  # every second over every tag: look before calling
            state = tag.state
            if (
                state.quality is good
                and state.ts is not None
                and wall - state.ts > state.max_staleness
            ):
                samples.extend(state.check_stale(wall))
        self._emit(samples)

    def _decode(
        self, read: Read, values: list[int] | list[bool], wall: float, events: list[TagRuntime]
    ) -> list[Sample]:
        """Decode a block into its tags' state; the tags with a change event go to `events`."""
        samples: list[Sample] = []
        block = self._block(read)
        members = block.members
        decoded: Sequence[Value] | None = None
        # The registers of the last read again (most blocks, most reads): each
        # tag still decoded from them holds its value, and only the others
        # need the block decoded.
        repeated = values == block.registers
        if not repeated:
            block.registers = None
            try:
                decoded = block.decoder.decode(values)
            except (DecodeError, ValueError):
                return self._decode_each(read, members, values, wall, events)
        for i, tag in enumerate(members):
            state = tag.state
            if repeated and state.decoded_from is block and state.repeat_into(wall, samples):
                continue
            if decoded is None:
                decoded = block.decoder.decode(values)
            state.observe_into(decoded[i], wall, samples)
            state.decoded_from = block
            if state.event:
                events.append(tag)
        block.registers = values
        return samples

    def _decode_each(
        self,
        read: Read,
        members: list[TagRuntime],
        values: list[int] | list[bool],
        wall: float,
        events: list[TagRuntime],
    ) -> list[Sample]:
        """Slow path after a block failed to decode: find the tags at fault."""
        samples: list[Sample] = []
        for tag in members:
            offset = int(tag.config.address) - read.start
            try:
                if read.table.is_bits:
                    value: Value = tag.codec.decode_bits(
                        [bool(b) for b in values[offset : offset + 1]]
                    )
                else:
                    chunk = [int(v) for v in values[offset : offset + int(tag.config.width)]]
                    value = tag.codec.decode(chunk)
            except (DecodeError, ValueError) as exc:
                samples.extend(tag.state.fail(f"decode error: {exc}", wall))
                continue
            tag.state.observe_into(value, wall, samples)
            if tag.state.event:
                events.append(tag)
        return samples

    def _members(self, read: Read) -> list[TagRuntime]:
        return [self.tags[k] for k in read.tags if k in self.tags]

    def _block(self, read: Read) -> _Block:
        """The read's member tags and block decoder, built once per planned read."""
        block = self._decoders.get(read.key)
        if block is None:
            members = self._members(read)
            offsets = [int(t.config.address) - read.start for t in members]
            decoder: BlockDecoder | BitBlockDecoder
            if read.table.is_bits:
                decoder = BitBlockDecoder(read.count, offsets)
            else:
                decoder = BlockDecoder(
                    read.count, [(o, t.codec) for o, t in zip(offsets, members, strict=True)]
                )
            block = _Block(members, decoder)
            self._decoders[read.key] = block
        return block

    def _split(self, device: DeviceRuntime, read: Read, now: float) -> bool:
        members = [k for k in read.tags if k in self.tags]
        addresses = {k: int(self.tags[k].config.address) for k in members}
        widths = {k: 1 if read.table.is_bits else int(self.tags[k].config.width) for k in members}
        barrier = split_read(read, addresses, widths)
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
        self.replan(now, {device.name})  # only this device's map changed
        for listener in self.split_listeners:
            try:
                listener(device.name)
            except Exception:  # a broken listener must never stop acquisition
                log.exception("split listener %r failed", listener)
        return True

    def restore_barriers(self, learned: Mapping[str, frozenset[tuple[Table, int]]]) -> int:
        """Adopt read splits learned earlier (before `replan`); returns how many."""
        count = 0
        for name, barriers in learned.items():
            device = self.devices.get(name)
            if device is not None and barriers:
                merged = device.limits.barriers | barriers
                device.limits = replace(device.limits, barriers=merged)
                count += len(barriers)
        return count

    def _health_ok(self, device: DeviceRuntime, wall: float, now: float) -> None:
        previous = device.health.success(now, wall)
        if previous is not None:
            log.info("device %s recovered (was %s)", device.name, previous)
            self.events.emit(wall, "device_online", f"{device.name} is online", device=device.name)

    def _health_fail(
        self, device: DeviceRuntime, error: str, wall: float, now: float, *, answered: bool = False
    ) -> None:
        previous = device.health.failure(error, now, answered=answered, wall=wall)
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


@dataclass(slots=True, eq=False)
class _Block:
    """One planned read's tags, their decoder, and the registers its last good read decoded."""

    members: list[TagRuntime]
    decoder: BlockDecoder | BitBlockDecoder
    registers: list[int] | list[bool] | None = None


def _span(read: Read) -> str:
    """`holding 100+20`: a read's table, start and count, for messages."""
    return f"{read.table} {read.start}+{read.count}"
