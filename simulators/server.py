"""Serves a Plant over real Modbus (pymodbus SimDevice), with faults and a request log.

Every read is answered with the plant's true values at that instant: the
SimDevice action, awaited before pymodbus builds the response, writes the
encoded values of the tags in the requested range into the register block.
A write to a `writable` tag sticks: the tag then reads what was written
(clamped to its `write_clamp`), until the next write. A write that touches
any other register is refused with ILLEGAL DATA ADDRESS, as a device
answers a write to a read-only register.
One TCP server per TCP device (a gateway has one IP per device, and a
pymodbus client allows one outstanding request), and one RTU server per
serial line, behind a `PtyLine`, carrying several unit ids.

The request log records every request the devices saw and what was
answered, so a benchmark can score a poller from the simulator's side.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import socket
import struct
import time
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerRTU
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from .line import PtyLine
from .plant import BIT_TABLES, Endpoint, Plant, PlantDevice, Slot

__all__ = ["FAULT_MODES", "PlantServer", "RequestLog"]

log = logging.getLogger(__name__)

FAULT_MODES = (
    "none",
    "timeout",
    "exception",
    "garbage",
    "slow",
    "down",
    # Wire faults (see _Tracer): a reply that must never be taken for the answer.
    "late",  # answers after `delay` seconds (set it above the client's timeout)
    "wrong_function",  # a well-formed reply of another function code (3<->4, 1<->2)
    "wrong_unit",  # a well-formed reply from another unit id
    "truncated",  # the reply loses its last 3 bytes
    "bad_crc",  # RTU: wrong CRC; TCP (no CRC): a byte count one too high
    "noise",  # noise bytes on the wire around the reply (RTU: before and after; TCP: after)
    "bytewise",  # the reply sent one byte at a time, a few ms apart
    "wrong_tid",  # TCP: a transaction id the client never sent (RTU: no effect)
    "tid_zero",  # TCP: transaction id 0 (RTU: no effect)
    "reset",  # TCP: half the reply, then the connection is reset (RST); RTU: truncated
    "lossy",  # every second reply is lost (a noisy line): a resend gets the answer
)
# Modes that rewrite the response bytes in _Tracer.trace_packet.
_WIRE_MODES = frozenset(FAULT_MODES[FAULT_MODES.index("late") : FAULT_MODES.index("reset") + 1])
_OTHER_FC = {1: 2, 2: 1, 3: 4, 4: 3}
# Wire faults whose frame answers another request (or none): their data is not
# this request's, so taking one shows as a wrong value.
_FOREIGN_MODES = frozenset({"wrong_function", "wrong_unit", "wrong_tid", "tid_zero"})
NOISE = b"\xff\x00\x55\xaa\x13"
BYTE_GAP = 0.002  # seconds between the bytes of a `bytewise` reply

# Gaps up to this many registers are filled with valid zeros on a
# non-strict device. A wider gap cannot sit inside one read that also
# touches a tag (125 registers at most), so it may stay invalid, as real
# register maps have holes.
FILL_GAP = 125

_FC_TABLE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 4: "input"}
_FC_TABLE.update({6: "holding", 16: "holding", 22: "holding", 23: "holding"})

_TABLE_INDEX = {"coil": 0, "discrete": 1, "holding": 2, "input": 3}
_WRITE_FCS = frozenset({5, 6, 15, 16, 22})


class RequestLog:
    """One record per request: in memory (the last `keep`) and optionally a JSONL file.

    Record keys: ts (wall time the request arrived), t (plant time), device,
    unit, fc, address, count, outcome (ok | exception | timeout | garbage |
    no_device), exception_code, latency_s (until the answer left, or would
    have).
    """

    def __init__(self, path: str | Path | None = None, *, keep: int | None = 100_000) -> None:
        self.path = Path(path) if path else None
        self.records: deque[dict[str, Any]] = deque(maxlen=keep)
        self._file: IO[str] | None = None
        if self.path:
            # Buffered: one write syscall per 64 KiB, flushed by PlantServer
            # every second and on close.
            self._file = self.path.open("a", encoding="utf-8", buffering=1 << 16)

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self._file:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if self._file:
            self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


@dataclass
class _Fault:
    mode: str = "none"
    delay: float = 0.5  # slow
    code: ExcCodes = ExcCodes.DEVICE_BUSY  # exception


class _DeviceSim:
    """One served device: builds its SimDevice and keeps its registers true on every read."""

    def __init__(self, device: PlantDevice, clock: Callable[[], float]) -> None:
        self.device = device
        self.clock = clock
        self.fault = _Fault()
        # Writes to lose, oldest first: "reply" (carried out, the answer lost)
        # or "request" (never carried out, no answer); see PlantServer.lose_writes.
        self.lost_writes: deque[str] = deque()
        self.drop_reply = False  # the write in progress loses its answer
        self._slots: dict[str, list[Slot]] = {}
        self._starts: dict[str, list[int]] = {}
        # Per slot: the registers (or bit) and the plant-time window they hold for.
        self._cache: dict[str, list[tuple[float, float, list[int]] | None]] = {}
        # Per slot: the registers (or bit) last written, which reads return from then on.
        self.held: dict[str, dict[int, list[int]]] = {table: {} for table in _TABLE_INDEX}
        self._warned: set[str] = set()
        for table in _TABLE_INDEX:
            slots = device.slots(table)
            self._slots[table] = slots
            self._starts[table] = [s.address for s in slots]
            self._cache[table] = [None] * len(slots)

    def warm(self) -> None:
        """Compute every tag once now, so the first requests are not the slow ones.

        (Counters integrate from plant time 0; signals build their chunks.)
        """
        t = self.clock()
        for table, slots in self._slots.items():
            for i in range(len(slots)):
                try:
                    self._slot_words(table, i, t)
                except (ValueError, TypeError):
                    pass  # reported when a client reads it

    # ------------------------------------------------------------- SimDevice
    def sim_device(self) -> SimDevice:
        blocks: list[list[SimData]] = [[], [], [], []]
        for table, i in _TABLE_INDEX.items():
            slots = self._slots[table]
            if table in BIT_TABLES:
                blocks[i] = self._bit_blocks(slots)
            else:
                blocks[i] = self._register_blocks(slots)
        return SimDevice(
            id=self.device.unit_id,
            simdata=(blocks[0], blocks[1], blocks[2], blocks[3]),
            use_bit_addressing=True,
            action=self.action,
        )

    def _register_blocks(self, slots: list[Slot]) -> list[SimData]:
        if not slots:
            # pymodbus needs a non-empty list; an invalid register is no register.
            return [SimData(0, count=1, datatype=SimType.INVALID)]
        fill = 0 if self.device.strict_gaps else FILL_GAP
        runs: list[list[int]] = []
        for s in slots:
            if runs and s.address <= runs[-1][1] + fill:
                runs[-1][1] = max(runs[-1][1], s.address + s.width)
            else:
                runs.append([s.address, s.address + s.width])
        return [SimData(a, count=e - a, values=0, datatype=SimType.REGISTERS) for a, e in runs]

    @staticmethod
    def _bit_blocks(slots: list[Slot]) -> list[SimData]:
        if not slots:
            # Bit tables cannot hold invalid entries: park 16 bits at the top.
            return [SimData(65520, values=[False] * 16, datatype=SimType.BITS)]
        lo, hi = slots[0].address, slots[-1].address + 1
        return [SimData(lo, values=[False] * (hi - lo), datatype=SimType.BITS)]

    # ---------------------------------------------------------------- action
    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.device.turnaround:
            await asyncio.sleep(self.device.turnaround)
        fault = self.fault
        if fault.mode == "slow":
            await asyncio.sleep(fault.delay)
        elif fault.mode == "exception":
            return fault.code
        table = _FC_TABLE.get(function_code)
        if table is None:
            return None
        t = self.clock()
        if function_code in _WRITE_FCS and set_values is not None:
            lost = self.lost_writes.popleft() if self.lost_writes else None
            self.drop_reply = lost is not None
            if lost == "request":
                return None  # never carried out (the reads refill the registers)
            return self._write(table, function_code, address, set_values, t)
        try:
            if table in BIT_TABLES:
                # For bit tables pymodbus passes the bit address and a count
                # of 16-bit registers.
                self._fill_bits(table, t, start_address, address // 16, count, current_registers)
            else:
                self._fill_registers(table, t, start_address, address, count, current_registers)
        except (ValueError, TypeError) as exc:
            # A value the register type cannot hold is a bug in the plant
            # definition; answer like a device with an internal fault.
            key = f"{table}:{address}"
            if key not in self._warned:
                self._warned.add(key)
                log.warning("%s: cannot encode %s %s: %s", self.device.name, table, address, exc)
            return ExcCodes.DEVICE_FAILURE
        return None

    def _write(
        self, table: str, fc: int, address: int, values: list[int] | list[bool], t: float
    ) -> ExcCodes | None:
        """Keep what a write puts into writable tags; refuse it as the device is set up to."""
        if self.device.write_exception is not None:
            return ExcCodes(self.device.write_exception)
        if fc == 22 and not self.device.mask_write:
            return ExcCodes.ILLEGAL_FUNCTION
        starts, slots = self._starts[table], self._slots[table]
        new: dict[int, list[int]] = {}
        for k, value in enumerate(values):
            a = address + k
            i = bisect_right(starts, a) - 1
            if i < 0 or a >= starts[i] + slots[i].width:
                return ExcCodes.ILLEGAL_ADDRESS  # no tag there
            if not any(tag.writable for tag in slots[i].tags):
                return ExcCodes.ILLEGAL_ADDRESS  # a read-only register
            words = new.get(i)
            if words is None:
                words = new[i] = list(self._slot_words(table, i, t))
            words[a - starts[i]] = int(value)
        for i, words in new.items():
            tag = slots[i].tags[0]
            if tag.write_clamp is not None and len(slots[i].tags) == 1:
                lo, hi = tag.write_clamp
                asked = tag.codec.decode(words)
                if isinstance(asked, int | float) and not lo <= asked <= hi:
                    words = tag.codec.encode(min(hi, max(lo, asked)))
                    stored = cast(list[int], values)  # pymodbus stores the clamped value too
                    for k, word in enumerate(words):
                        pos = starts[i] + k - address
                        if 0 <= pos < len(stored):
                            stored[pos] = word
            self.held[table][i] = words
        return None

    def _slot_words(self, table: str, i: int, t: float) -> list[int]:
        held = self.held[table].get(i)
        if held is not None:
            return self._with_held(table, i, t, held)
        cached = self._cache[table][i]
        if cached is not None and cached[0] <= t < cached[1]:
            return cached[2]
        words, lo, hi = self._slots[table][i].words(t)
        self._cache[table][i] = (lo, hi, words)
        return words

    def _with_held(self, table: str, i: int, t: float, held: list[int]) -> list[int]:
        """A written slot: its writable tags hold what was written, the others follow the plant."""
        slot = self._slots[table][i]
        if all(tag.writable for tag in slot.tags):
            return held
        word = 0
        for tag in slot.tags:  # parts of one register, some of them read-only
            if tag.writable:
                word |= held[0] & tag.mask
            else:
                word |= tag.encode(t)[0]
        return [word]

    def _fill_registers(
        self, table: str, t: float, start: int, address: int, count: int, regs: list[int]
    ) -> None:
        starts, slots = self._starts[table], self._slots[table]
        end = address + count
        i = max(bisect_right(starts, address) - 1, 0)
        while i < len(starts) and starts[i] < end:
            slot = slots[i]
            if slot.address + slot.width > address:
                base = slot.address - start
                regs[base : base + slot.width] = self._slot_words(table, i, t)
            i += 1

    def _fill_bits(
        self, table: str, t: float, start_reg: int, reg: int, reg_count: int, regs: list[int]
    ) -> None:
        starts = self._starts[table]
        lo_bit, hi_bit = reg * 16, (reg + reg_count) * 16
        i = bisect_right(starts, lo_bit - 1)
        while i < len(starts) and starts[i] < hi_bit:
            a = starts[i]
            on = self._slot_words(table, i, t)[0]
            k, mask = a // 16 - start_reg, 1 << (a % 16)
            regs[k] = (regs[k] | mask) if on else (regs[k] & ~mask)
            i += 1


class _Tracer:
    """trace_pdu/trace_packet hooks of one pymodbus server (a TCP device or an RTU line).

    Pairs each response with its request for the log, and applies the
    wire-level faults: `timeout` drops the response, `garbage` corrupts it.
    pymodbus calls trace_pdu then trace_packet synchronously for one
    response, so a flag set in the first is consumed by the second.
    """

    def __init__(
        self,
        units: Mapping[int, _DeviceSim],
        request_log: RequestLog | None,
        clock_start: float,
        rtu: bool = False,
    ) -> None:
        self.units = dict(units)
        self.rtu = rtu
        self.server: Any = None  # the pymodbus server, for `bytewise` writes
        self.request_log = request_log
        self.clock_start = clock_start
        # Requests awaiting their response, by (unit, transaction id); a FIFO
        # per key because two clients of one device may use the same ids.
        self.pending: dict[tuple[int, int], deque[tuple[float, int, int, int]]] = {}
        self._action = ""
        self._late_delay = 0.0
        self._lost = False  # lossy: whether the last reply was lost

    def _flip(self) -> bool:
        """Lossy: lose every second reply."""
        self._lost = not self._lost
        return self._lost

    def trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        now = time.time()
        key = (pdu.dev_id, pdu.transaction_id)
        if not sending:
            self.pending.setdefault(key, deque()).append(
                (now, pdu.function_code, pdu.address, pdu.count)
            )
            return pdu
        waiting = self.pending.get(key)
        if waiting:
            ts, fc, address, count = waiting.popleft()
            if not waiting:
                del self.pending[key]
        else:  # a response pymodbus made up (e.g. to an undecodable request)
            ts, fc, address, count = now, pdu.function_code & 0x7F, pdu.address, pdu.count
        sim = self.units.get(pdu.dev_id)
        code: int | None = None
        if sim is None:
            # A unit nobody answers to: on a shared bus, silence.
            outcome, self._action = "no_device", "drop"
        elif sim.fault.mode in ("timeout", "down") or (sim.fault.mode == "lossy" and self._flip()):
            outcome, self._action = "timeout", "drop"
        elif sim.drop_reply and fc in _WRITE_FCS:
            sim.drop_reply = False
            outcome, self._action = "timeout", "drop"
        elif sim.fault.mode == "garbage":
            outcome, self._action = "garbage", "garble"
        elif sim.fault.mode in _WIRE_MODES:
            outcome, self._action = sim.fault.mode, sim.fault.mode
            self._late_delay = sim.fault.delay
        elif pdu.isError():
            outcome, code = "exception", int(pdu.exception_code)
        else:
            outcome = "ok"
        if self.request_log is not None:
            self.request_log.append(
                {
                    "ts": ts,
                    "t": ts - self.clock_start,
                    "device": sim.device.name if sim else None,
                    "unit": pdu.dev_id,
                    "fc": fc,
                    "address": address,
                    "count": count,
                    "outcome": outcome,
                    "exception_code": code,
                    "latency_s": now - ts,
                }
            )
        return pdu

    def trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending or not self._action:
            return data
        action, self._action = self._action, ""
        if action == "drop":
            return b""
        if action == "garble":
            return _garble(data)
        if action == "bytewise":
            self._trickle(data, BYTE_GAP)
            return b""
        if action == "reset" and not self.rtu:
            self._reset_after(len(data) // 2)
            return data[: len(data) // 2]
        if action == "late":
            # Sent later by the tracer, not delayed in the action: pymodbus's
            # server stamps a response with the transaction id of the newest
            # request on the connection, so a reply delayed in the action
            # would go out under the next request's id.
            self._trickle(data, 0.0, self._late_delay)
            return b""
        return _wire_fault(action, data, self.rtu)

    def _trickle(self, data: bytes, gap: float, delay: float = 0.0) -> None:
        """Write `data` after `delay`, one byte every `gap` s (0: at once), on the newest
        connection of this server (the simulator's tests have one client per server)."""
        conns = list(getattr(self.server, "active_connections", {}).values())
        transport = getattr(conns[-1], "transport", None) if conns else None
        if transport is None:
            return
        loop = asyncio.get_running_loop()
        if not gap:
            loop.call_later(delay, _write_quietly, transport, data)
            return
        for i, byte in enumerate(data):
            loop.call_later(delay + i * gap, _write_quietly, transport, bytes([byte]))

    def _reset_after(self, sent: int) -> None:
        """Reset the newest connection (an RST, not a FIN) once `sent` bytes are out."""
        conns = list(getattr(self.server, "active_connections", {}).values())
        transport = getattr(conns[-1], "transport", None) if conns else None
        if transport is not None:
            # After the partial reply is written (pymodbus writes it on return).
            asyncio.get_running_loop().call_later(0.02, _reset_quietly, transport)


def _reset_quietly(transport: Any) -> None:
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER on, 0 s: close() sends RST and drops anything unsent.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _write_quietly(transport: Any, data: bytes) -> None:
    if not transport.is_closing():
        transport.write(data)


def _wire_fault(mode: str, data: bytes, rtu: bool) -> bytes:
    """A response rewritten by one wire fault (see FAULT_MODES)."""
    b = bytearray(data)
    if rtu:
        unit, fc = 0, 1  # offsets in the RTU frame
    else:
        unit, fc = 6, 7  # offsets in the MBAP frame
    if len(b) <= fc + 1:
        return data
    if mode in _FOREIGN_MODES and b[fc] in _OTHER_FC:
        # Someone else's answer carries someone else's data: a client that took
        # it would store values this register never held.
        end = len(b) - 2 if rtu else len(b)
        b[fc + 2 : end] = bytes(x ^ 0xA5 for x in b[fc + 2 : end])
    if mode == "wrong_function":
        b[fc] = _OTHER_FC.get(b[fc], b[fc] ^ 0x7F)
    elif mode == "wrong_unit":
        b[unit] = b[unit] % 247 + 1
    elif mode in ("truncated", "reset"):  # RTU has no connection to reset
        return bytes(b[:-3])
    elif mode == "bad_crc":
        if rtu:
            b[-1] ^= 0xFF
            return bytes(b)
        b[fc + 1] = (b[fc + 1] + 1) & 0xFF
    elif mode == "noise":
        return (NOISE if rtu else b"") + bytes(b) + NOISE
    elif mode in ("wrong_tid", "tid_zero") and not rtu:
        tid = 0 if mode == "tid_zero" else (int.from_bytes(b[0:2], "big") + 1000) % 65536
        b[0:2] = tid.to_bytes(2, "big")
    if rtu:
        b[-2:] = FramerRTU.compute_CRC(bytes(b[:-2])).to_bytes(2, "big")
    return bytes(b)


def _garble(data: bytes) -> bytes:
    """Corrupt a response so that no client can take it for a valid answer.

    TCP (MBAP header, protocol id 0): keep the header so the client reads a
    whole frame, and give it an unknown function code. RTU: flip bits, which
    breaks the CRC.
    """
    b = bytearray(data)
    if len(b) >= 8 and b[2:4] == b"\x00\x00":
        b[7] = 0x7E  # no such function code
        b[8:] = bytes((x ^ 0x5A) for x in b[8:])
    else:
        for i in range(1, len(b)):
            b[i] ^= 0xA5
    return bytes(b)


class PlantServer:
    """Serves a Plant: TCP devices on base_port + i, RTU lines behind PtyLines.

    base_port: TCP device i listens on base_port + i; 0 lets the OS pick a
    free port per device (see `endpoints` after start).
    clock_start: the wall time of plant time 0 (default: now). Plant time 0
    is a Monday 00:00, so passing the wall time of the last local Monday
    midnight makes the plant's days and shifts line up with the wall clock.
    baudrate: speed of the simulated RS-485 lines (None: no wire delay);
    silence_chars: inter-frame silence the lines enforce (see PtyLine).
    line_log: record each RTU line's turns (`lines[name].turns()`), to
    check that a master keeps strict alternation.
    faults: initial fault per device name (see FAULT_MODES).

    Usage: `async with PlantServer(plant) as srv: ... srv.endpoints ...`
    """

    def __init__(
        self,
        plant: Plant,
        *,
        host: str = "127.0.0.1",
        base_port: int = 15020,
        clock_start: float | None = None,
        request_log: RequestLog | str | Path | None = None,
        baudrate: int | None = 9600,
        silence_chars: float = 0.0,
        faults: Mapping[str, str] | None = None,
        line_log: bool = False,
    ) -> None:
        self.plant = plant
        self.host = host
        self.base_port = base_port
        self.clock_start = time.time() if clock_start is None else float(clock_start)
        if isinstance(request_log, str | Path):
            request_log = RequestLog(request_log)
        self.request_log = request_log
        self.baudrate = baudrate
        self.silence_chars = silence_chars
        self.line_log = line_log
        self.sims = {d.name: _DeviceSim(d, self.plant_time) for d in plant.devices}
        self.endpoints: dict[str, Endpoint] = {}
        self.lines: dict[str, PtyLine] = {}
        self._tcp: dict[str, ModbusTcpServer | None] = {}
        self._tcp_tracers: dict[str, _Tracer] = {}
        self._serial: list[ModbusSerialServer] = []
        self._flusher: asyncio.Task[None] | None = None
        # Connections opened per TCP device: a poller that keeps its connection
        # across a config reload leaves this count alone.
        self.connections: Counter[str] = Counter()
        for name, mode in (faults or {}).items():
            self._check_fault(name, mode)
            self.sims[name].fault.mode = mode

    def _on_connect(self, device: str, connected: bool) -> None:
        if connected:
            self.connections[device] += 1

    def plant_time(self) -> float:
        """Plant seconds now."""
        return time.time() - self.clock_start

    def _check_fault(self, device: str, mode: str) -> None:
        if device not in self.sims:
            raise KeyError(f"unknown device {device!r}")
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault {mode!r}; choose from {', '.join(FAULT_MODES)}")

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        tcp = self.plant.tcp_endpoints(self.host, self.base_port)
        for sim in self.sims.values():
            sim.warm()
        try:
            for d in self.plant.devices:
                if d.transport != "tcp":
                    continue
                self.endpoints[d.name] = tcp[d.name]
                self._tcp_tracers[d.name] = _Tracer(
                    {d.unit_id: self.sims[d.name]}, self.request_log, self.clock_start
                )
                self._tcp[d.name] = None
                if self.sims[d.name].fault.mode != "down":
                    await self._start_tcp(d.name)
            for line_name, devices in self.plant.lines().items():
                await self._start_line(line_name, devices)
        except BaseException:
            await self.stop()
            raise
        if self.request_log is not None and self.request_log.path is not None:
            self._flusher = asyncio.create_task(self._flush_loop())

    async def _start_tcp(self, name: str) -> None:
        ep = self.endpoints[name]
        tracer = self._tcp_tracers[name]
        server = ModbusTcpServer(
            [self.sims[name].sim_device()],
            address=(self.host, int(ep.port or 0)),
            trace_pdu=tracer.trace_pdu,
            trace_packet=tracer.trace_packet,
            trace_connect=functools.partial(self._on_connect, name),
        )
        tracer.server = server
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus's way of saying the bind failed
            raise OSError(f"{name}: cannot listen on {self.host}:{ep.port}: {exc}") from None
        if not ep.port:
            # base_port 0: the OS picked a free port; keep it for restarts.
            listener = cast(asyncio.Server, server.transport)
            port = listener.sockets[0].getsockname()[1]
            self.endpoints[name] = dataclasses.replace(ep, port=port)
        self._tcp[name] = server

    async def _start_line(self, line_name: str, devices: list[PlantDevice]) -> None:
        line = PtyLine(self.baudrate, silence_chars=self.silence_chars, record=self.line_log)
        self.lines[line_name] = line
        units = {d.unit_id: self.sims[d.name] for d in devices}
        tracer = _Tracer(units, self.request_log, self.clock_start, rtu=True)
        server = ModbusSerialServer(
            [self.sims[d.name].sim_device() for d in devices],
            port=line.server_path,
            baudrate=self.baudrate or 115200,
            trace_pdu=tracer.trace_pdu,
            trace_packet=tracer.trace_packet,
        )
        tracer.server = server
        await server.serve_forever(background=True)
        self._serial.append(server)
        for d in devices:
            self.endpoints[d.name] = Endpoint(
                "rtu", d.unit_id, port=line.client_path, baudrate=self.baudrate
            )

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.request_log is not None:
                self.request_log.flush()

    async def stop(self) -> None:
        """Stop every server and line; flush and close the request log."""
        if self._flusher:
            self._flusher.cancel()
            self._flusher = None
        for name, server in list(self._tcp.items()):
            if server is not None:
                await server.shutdown()
            self._tcp[name] = None
        for s in self._serial:
            await s.shutdown()
        self._serial = []
        for line in self.lines.values():
            line.close()
        self.lines = {}
        if self.request_log is not None:
            self.request_log.flush()
            self.request_log.close()

    async def __aenter__(self) -> PlantServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---------------------------------------------------------------- faults
    async def set_fault(
        self,
        device: str,
        mode: str,
        *,
        delay: float = 0.5,
        code: ExcCodes = ExcCodes.DEVICE_BUSY,
    ) -> None:
        """Switch a device's fault at runtime.

        none | timeout (never answers) | exception (answers `code`) |
        garbage (corrupt response frames) | slow (answers after `delay` s) |
        down (TCP: server stopped, connection refused; RTU: silent, as a
        powered-off device on a bus), and the wire faults listed in
        FAULT_MODES (late answers after `delay` s, like slow).
        """
        self._check_fault(device, mode)
        fault = self.sims[device].fault
        was_down = fault.mode == "down"
        fault.mode, fault.delay, fault.code = mode, delay, code
        if device not in self._tcp:
            return
        server = self._tcp[device]
        if mode == "down" and server is not None:
            await server.shutdown()
            self._tcp[device] = None
        elif was_down and mode != "down" and server is None:
            await self._start_tcp(device)

    def lose_writes(self, device: str, *what: str) -> None:
        """Lose the device's next writes, one per argument: "reply" (carried out,
        its answer lost on the way back) or "request" (lost on the way there)."""
        if device not in self.sims:
            raise KeyError(f"unknown device {device!r}")
        for item in what:
            if item not in ("reply", "request"):
                raise ValueError(f"lose a 'reply' or a 'request', not {item!r}")
        self.sims[device].lost_writes.extend(what)

    def fault(self, device: str) -> str:
        return self.sims[device].fault.mode
