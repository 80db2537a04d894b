"""Modbus transports: pymodbus 3.16 async clients for TCP, RTU and RTU over TCP.

A transport never raises on a device problem. Every read returns a
`ReadResult` that says what came back: registers or bits, a Modbus exception
code, a timeout, a broken connection or a malformed answer. One transport
serves one TCP device, or one serial line shared by all its unit ids; the
poller keeps exactly one request in flight per transport.

One request, one matching reply. pymodbus 3.16 does not check that a reply
answers the request: it accepts any function code, transaction id 0 and,
for unit 0, any unit, and on RTU a reply that comes after a timeout is taken
as the answer to the next request. So edgeopt puts its own framer into the
pymodbus client (`_StrictRTU`, `_StrictSocket`): every frame is cut out of
the byte stream by edgeopt, checked against the one request in flight
(function code or its exception form, unit id, byte count for the quantity,
transaction id on TCP, CRC on RTU) and discarded, counted by kind, if it does
not match. After a timeout or a discarded frame on an RTU line the transport
waits for the line to go quiet and flushes the input, so the next request
can never see an old reply. Retries are done here, not in pymodbus, so each
resend is a new transaction (a new TCP transaction id) and its cost shows in
the latency.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerRTU, FramerSocket, FramerType
from pymodbus.pdu import DecodePDU, ModbusPDU

from edgeopt.clock import Clock
from edgeopt.modbus.planner import Table
from edgeopt.modbus.writeplan import FC_MASK_WRITE, WriteRequest

log = logging.getLogger(__name__)

ILLEGAL_DATA_ADDRESS = 2

EXCEPTION_NAMES = {
    1: "ILLEGAL FUNCTION",
    2: "ILLEGAL DATA ADDRESS",
    3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE",
    6: "SERVER DEVICE BUSY",
    8: "MEMORY PARITY ERROR",
    10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET FAILED TO RESPOND",
}

_FC = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}
# Quiet time that ends the drain after a discarded frame (the device has
# answered; wait for the rest of its bytes). After a timeout the drain waits
# one timeout (at most _DRAIN_MAX), to catch a late reply.
_QUIET_AFTER_DISCARD = 0.05
_DRAIN_MAX = 1.0
# What asyncio's socket transport asks recv() for at a time (it allocates that
# much, then shrinks it to what came). Its default, 256 KiB, is above the mmap
# threshold the daemon pins (resources.pin_mmap_threshold): every reply then
# cost an mmap, a page fault and a munmap, a sixth of the daemon's CPU at 10k
# tags. A Modbus TCP reply is at most 260 bytes.
RECV_SIZE = 16 * 1024


class ReadError(StrEnum):
    TIMEOUT = "timeout"  # no answer in time
    EXCEPTION = "exception"  # the device answered with a Modbus exception code
    GARBAGE = "garbage"  # bytes that are no valid answer: bad CRC, truncated, wrong fc or length
    LATE = "late"  # an answer to an earlier request (after its timeout, or an old TCP tid)
    FOREIGN = "foreign"  # an answer from another unit, or to a transaction never sent
    CONNECTION = "connection"  # cannot connect, or the connection dropped


@dataclass(slots=True)
class ReadResult:
    """What one request brought back.

    `discarded` names frames dropped on the way (late, foreign, garbage)
    that are not the reason for `error`; the poller counts them too.
    """

    values: list[int] | list[bool] | None
    latency: float
    error: ReadError | None = None
    exception_code: int | None = None
    message: str = ""
    discarded: tuple[str, ...] = ()
    attempts: int = 1
    reconnected: bool = False  # the transport had to connect again for this read

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        if self.error is ReadError.EXCEPTION and self.exception_code is not None:
            name = EXCEPTION_NAMES.get(self.exception_code, "UNKNOWN")
            return f"exception {self.exception_code} ({name})"
        return f"{self.error}: {self.message}" if self.error else "ok"


class Transport(Protocol):
    """Reads one span of one table from one unit."""

    async def read(self, table: Table, address: int, count: int, unit: int) -> ReadResult: ...

    async def write(self, request: WriteRequest, unit: int) -> ReadResult: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a transport connects; devices with equal endpoints share one."""

    transport: str  # tcp | rtu | rtu_over_tcp
    host: str | None = None
    port: int | str = 502
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    timeout: float = 1.0
    retries: int = 1
    # (unit, seconds): after a reply from that unit the line stays quiet this
    # long before the next request (`turnaround` of a slow device).
    turnarounds: tuple[tuple[int, float], ...] = ()

    @property
    def line_key(self) -> str:
        if self.transport == "rtu":
            return str(self.port)
        return f"{self.host}:{self.port}"


class _Discarded(Exception):
    """Ends a request at once: its answer came and was discarded."""

    def __init__(self, kind: ReadError, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(slots=True)
class _Expect:
    """The one request in flight: what its reply must look like."""

    fc: int
    unit: int
    byte_count: int
    timed_out: bool = False  # draining: a matching frame now is late
    answered: bool = False  # a frame was taken or refused for it
    echo: bytes | None = None  # a write: what its reply PDU must start with


@dataclass(slots=True)
class _Guard:
    """State shared by a transport and its framer (both run on the event loop)."""

    ctx: Any = None  # the pymodbus TransactionManager
    expect: _Expect | None = None
    last_rx: float = 0.0  # time.monotonic() of the last bytes received
    discards: list[tuple[ReadError, str]] = field(default_factory=list)
    sent_tids: deque[int] = field(default_factory=lambda: deque(maxlen=64))
    desync: bool = False  # TCP: the byte stream lost its framing; reconnect
    partial: int = 0  # bytes of an unfinished frame waiting in the receive buffer
    lost: bool = False  # the peer closed or reset the connection during a request

    def disconnected(self, exc: Exception | None) -> None:
        """The peer closed or reset the connection: fail the request in flight now,
        rather than at its timeout (pymodbus itself would wait)."""
        exp = self.expect
        future = getattr(self.ctx, "response_future", None)
        if exp is None or exp.answered or future is None or future.done():
            return
        self.lost = True
        exp.answered = True
        if self.partial:
            message = f"connection reset in mid-frame ({self.partial} bytes of the reply came)"
        else:
            message = "connection closed by the device before its reply"
        if exc is not None:
            message += f" ({exc})"
        future.set_exception(_Discarded(ReadError.CONNECTION, message))

    def drop(self, kind: ReadError, message: str) -> None:
        """Discard a frame; if it was the answer to the request in flight, fail that now."""
        log.debug("discarded frame: %s: %s", kind, message)
        exp = self.expect
        future = getattr(self.ctx, "response_future", None)
        if exp is not None and not exp.timed_out and not exp.answered and future is not None:
            exp.answered = True
            if not future.done():
                future.set_exception(_Discarded(kind, message))
                return
        self.discards.append((kind, message))


class _StrictFraming:
    """handleFrame for the client side: cut, check, then decode one reply.

    Replaces pymodbus's FramerBase.handleFrame (called by the transaction
    manager with the receive buffer on every arrival of bytes); `decode`,
    `encode` and `buildFrame` stay pymodbus's.
    """

    guard: _Guard
    decoder: DecodePDU
    rtu = False

    def handleFrame(  # pymodbus's name
        self, data: bytes, exp_devid: int, exp_tid: int
    ) -> tuple[int, ModbusPDU | None]:
        g = self.guard
        g.last_rx = time.monotonic()
        used = 0
        while used < len(data):
            cut = self._rtu_cut(data, used) if self.rtu else self._tcp_cut(data, used)
            if cut is None:
                g.partial = len(data) - used
                return used, None  # wait for more bytes
            start, end, unit, tid, ok = cut
            if start > used:
                # Noise: count it, but keep the request waiting for its reply.
                g.discards.append((ReadError.GARBAGE, f"{start - used} stray bytes skipped"))
            used = end
            if not ok:
                continue
            pdu = self._check(data[start:end], unit, tid, exp_tid)
            if pdu is not None:
                g.partial = len(data) - used
                return used, pdu
        g.partial = 0
        return used, None

    # -- framing -------------------------------------------------------------
    def _tcp_cut(self, data: bytes, at: int) -> tuple[int, int, int, int, bool] | None:
        if len(data) - at < 8:
            return None
        tid = int.from_bytes(data[at : at + 2], "big")
        pid = int.from_bytes(data[at + 2 : at + 4], "big")
        length = int.from_bytes(data[at + 4 : at + 6], "big")
        if pid != 0 or not 2 <= length <= 254:
            # No frame can start here, and TCP has no resynchronisation point:
            # drop everything and reconnect.
            self.guard.desync = True
            self.guard.drop(ReadError.GARBAGE, "bad MBAP header: stream out of step")
            return len(data), len(data), 0, 0, False
        end = at + 6 + length
        if len(data) < end:
            return None
        return at, end, data[at + 6], tid, True

    def _rtu_cut(self, data: bytes, at: int) -> tuple[int, int, int, int, bool] | None:
        """The first frame with a good CRC at or after `at`, hunting over noise."""
        exp = self.guard.expect
        waiting = False
        for i in range(at, len(data) - 3):
            size = _rtu_size(data, i)
            if size is None:
                continue
            if size == 0 or len(data) < i + size:
                waiting = True  # maybe a frame still arriving; a later one may be whole
                continue
            crc = int.from_bytes(data[i + size - 2 : i + size], "big")
            if FramerRTU.compute_CRC(data[i : i + size - 2]) == crc:
                return i, i + size, data[i], 0, True
            if (
                not waiting
                and exp is not None
                and data[i] == exp.unit
                and data[i + 1] & 0x7F == exp.fc
            ):
                # Our reply, broken on the wire.
                self.guard.drop(ReadError.GARBAGE, "bad CRC")
                return i, i + size, data[i], 0, False
        return None

    # -- matching ------------------------------------------------------------
    def _check(self, frame: bytes, unit: int, tid: int, exp_tid: int) -> ModbusPDU | None:
        g = self.guard
        exp = g.expect
        pdu_bytes = frame[7:] if not self.rtu else frame[1:-2]
        fc = pdu_bytes[0] if pdu_bytes else 0
        if exp is None or exp.answered:
            kind = ReadError.LATE
            if not self.rtu and tid not in g.sent_tids:
                kind = ReadError.FOREIGN
            g.drop(kind, f"unit {unit} fc {fc} tid {tid}: no request waits for it")
            return None
        if not self.rtu and tid != exp_tid:
            # Late (an earlier transaction) or never ours: drop and keep waiting.
            kind = ReadError.LATE if tid in g.sent_tids else ReadError.FOREIGN
            g.discards.append((kind, f"transaction id {tid}, expected {exp_tid}"))
            return None
        if unit != exp.unit:
            g.drop(ReadError.FOREIGN, f"reply from unit {unit}, asked unit {exp.unit}")
            return None
        problem = _shape_problem(pdu_bytes, exp)
        if problem:
            g.drop(ReadError.GARBAGE, problem)
            return None
        if exp.timed_out:
            g.drop(ReadError.LATE, "the reply came after the timeout")
            return None
        pdu = _read_reply(pdu_bytes, exp) or self.decoder.decode(pdu_bytes)
        if pdu is None:
            g.drop(ReadError.GARBAGE, "undecodable reply")
            return None
        pdu.dev_id, pdu.transaction_id = unit, tid
        exp.answered = True
        return pdu


class _StrictRTU(_StrictFraming, FramerRTU):
    rtu = True


class _StrictSocket(_StrictFraming, FramerSocket):
    rtu = False


def _rtu_size(data: bytes, i: int) -> int | None:
    """Length of the reply frame that would start at data[i]; 0: not known yet; None: none can."""
    if not 1 <= data[i] <= 247:  # unit 0 (broadcast) never answers
        return None
    fc = data[i + 1]
    if fc & 0x80:
        return 5 if (fc & 0x7F) in (1, 2, 3, 4, 5, 6, 15, 16, 22, 23) else None
    if fc in (1, 2, 3, 4, 23):
        return 0 if len(data) < i + 3 else 5 + data[i + 2]
    if fc in (5, 6, 15, 16):
        return 8
    if fc == FC_MASK_WRITE:
        return 10
    return None


# The reply classes of the four reads, by function code.
_READ_REPLIES: dict[int, type[ModbusPDU]] = {
    fc: cls
    for fc in _FC.values()
    if (cls := DecodePDU(False).lookupPduClass(bytes((0, fc)))) is not None
}
_SWAP = sys.byteorder == "little"


def _read_reply(pdu: bytes, exp: _Expect) -> ModbusPDU | None:
    """The PDU of a read's reply whose shape `_check` has passed (None: not a read reply).

    pymodbus's `DecodePDU.decode` formats every reply into a debug string,
    registers and all, even with debug logging off, and unpacks registers one
    by one: together most of a read's decoding cost, which this skips.
    """
    fc = pdu[0]
    cls = _READ_REPLIES.get(fc) if exp.echo is None and fc == exp.fc else None
    if cls is None:
        return None
    reply = cls()
    if fc in (3, 4):
        registers = array("H", pdu[2:])
        if _SWAP:
            registers.byteswap()  # Modbus registers are big-endian
        reply.registers = registers.tolist()
    else:
        reply.decode(pdu[1:])
    return reply


def _shape_problem(pdu: bytes, exp: _Expect) -> str:
    """Why the PDU is not a reply to the expected request ("" if it is)."""
    if not pdu:
        return "empty reply"
    fc = pdu[0]
    if fc == exp.fc | 0x80:
        return "" if len(pdu) == 2 else f"exception reply of {len(pdu)} bytes"
    if fc != exp.fc:
        return f"function code {fc} in the reply to function code {exp.fc}"
    if exp.echo is not None:  # a write: byte_count is the whole reply's length
        if len(pdu) == exp.byte_count and pdu.startswith(exp.echo):
            return ""
        return f"reply {pdu.hex()} does not answer the write"
    if len(pdu) < 2 or pdu[1] != exp.byte_count or len(pdu) != 2 + exp.byte_count:
        got = pdu[1] if len(pdu) > 1 else None
        return f"byte count {got} ({len(pdu) - 2} bytes), expected {exp.byte_count}"
    return ""


class PymodbusTransport:
    """One pymodbus async client, connected lazily and reconnected on demand.

    pymodbus's own reconnect loop is disabled (reconnect_delay=0): the device
    health state machine decides when an offline device is probed again.
    pymodbus's retries are off too: `read` resends itself, as a new request.
    """

    def __init__(self, endpoint: Endpoint, clock: Clock) -> None:
        self.endpoint = endpoint
        self._clock = clock
        self._client = _make_client(endpoint)
        self._guard = _Guard(ctx=self._client.ctx)
        rtu = endpoint.transport in ("rtu", "rtu_over_tcp")
        framer: _StrictFraming = (
            _StrictRTU(DecodePDU(False)) if rtu else _StrictSocket(DecodePDU(False))
        )
        framer.guard = self._guard
        ctx = self._client.ctx
        ctx.framer = framer
        pymodbus_disconnected = ctx.callback_disconnected

        def disconnected(exc: Exception | None) -> None:
            pymodbus_disconnected(exc)
            self._guard.disconnected(exc)

        ctx.callback_disconnected = disconnected
        self._rtu = rtu
        self._was_connected = False  # connected once: a later connect is a reconnect
        self._turnaround = dict(endpoint.turnarounds)
        self._quiet_until = 0.0  # monotonic: no request before (a slow device's turnaround)

    async def read(self, table: Table, address: int, count: int, unit: int) -> ReadResult:
        await self._await_turnaround()
        try:
            return await self._read(table, address, count, unit)
        finally:
            self._start_turnaround(unit)

    async def _await_turnaround(self) -> None:
        """Wait out the turnaround of the device that answered last."""
        wait = self._quiet_until - self._clock.monotonic()
        if wait > 0:
            await self._clock.sleep(wait)

    def _start_turnaround(self, unit: int) -> None:
        turnaround = self._turnaround.get(unit, 0.0)
        if turnaround:
            self._quiet_until = self._clock.monotonic() + turnaround

    async def _read(self, table: Table, address: int, count: int, unit: int) -> ReadResult:
        started = self._clock.monotonic()
        discarded: list[str] = []
        result = ReadResult(None, 0.0)
        attempts = 0
        reconnected = False
        for attempts in range(1, self.endpoint.retries + 2):  # noqa: B007
            result = await self._once(table, address, count, unit, started)
            discarded.extend(result.discarded)
            reconnected = reconnected or result.reconnected
            lost = self._guard.lost  # dropped mid-request: resend on a new connection
            self._guard.lost = False
            if result.error in (None, ReadError.EXCEPTION) or (
                result.error is ReadError.CONNECTION and not lost
            ):
                break
        result.discarded = tuple(discarded)
        result.attempts = attempts
        result.reconnected = reconnected
        result.latency = self._clock.monotonic() - started
        if attempts > 1:
            result.message = f"{result.message} (after {attempts} attempts)".strip()
        return result

    async def write(self, request: WriteRequest, unit: int) -> ReadResult:
        """One write request (FC5/6/15/16/22), sent once: a write is never resent blindly.

        A write that timed out may still have been carried out, so the caller
        reads back before deciding to write again. A good result has no values.
        """
        await self._await_turnaround()
        try:
            started = self._clock.monotonic()
            table, count = request.table, request.count
            result = await self._once(table, request.address, count, unit, started, request)
            result.latency = self._clock.monotonic() - started
            return result
        finally:
            self._start_turnaround(unit)

    async def _once(
        self,
        table: Table,
        address: int,
        count: int,
        unit: int,
        started: float,
        write: WriteRequest | None = None,
    ) -> ReadResult:
        g = self._guard
        ctx = self._client.ctx
        if g.desync and self._client.connected:
            self._client.close()  # a TCP stream out of step: start afresh
        g.desync = False
        if ctx.recv_buffer:
            # Bytes nobody asked for (noise, a partial late frame): never
            # let the next reply be parsed after them.
            g.discards.append((ReadError.GARBAGE, f"{len(ctx.recv_buffer)} stray bytes flushed"))
            ctx.recv_buffer = b""
        fc = _FC[table] if write is None else write.function
        byte_count = (count + 7) // 8 if table.is_bits else 2 * count
        if write is not None:
            g.expect = _Expect(fc, unit, len(write.reply_pdu()), echo=write.reply_prefix())
        else:
            g.expect = _Expect(fc, unit, byte_count)
        error: ReadError | None = None
        message = ""
        response: Any = None
        reconnected = False
        g.partial = 0
        try:
            if not self._client.connected:
                reconnected = self._was_connected
                if not await self._client.connect():
                    error, message = ReadError.CONNECTION, "cannot connect"
                else:
                    _small_reads(ctx)
            if error is None:
                self._was_connected = True
                if write is None:
                    response = await _call(self._client, table, address, count, unit)
                else:
                    response = await _call_write(self._client, write, unit)
        except _Discarded as exc:
            error, message = exc.kind, exc.message
        except ModbusIOException as exc:
            error, message = ReadError.TIMEOUT, _short(exc)
        except ConnectionException as exc:
            error, message = ReadError.CONNECTION, _short(exc)
        except (ModbusException, OSError, ValueError, TypeError, IndexError) as exc:
            # A malformed frame can surface as a decoding error deep in pymodbus.
            error, message = ReadError.GARBAGE, f"{type(exc).__name__}: {exc}"
        if not self._rtu:
            g.sent_tids.append(int(getattr(ctx, "request_transaction_id", 0)))
        if error is not None and error is not ReadError.CONNECTION and self._rtu:
            await self._drain(g.expect, error is ReadError.TIMEOUT)
        elif error is ReadError.TIMEOUT and ctx.recv_buffer:
            # TCP: part of a frame; the rest may still come, and a stream must
            # never be parsed from the middle of a frame: reconnect.
            error, message = ReadError.GARBAGE, f"truncated frame ({len(ctx.recv_buffer)} bytes)"
            ctx.recv_buffer = b""
            g.desync = True
        g.expect = None
        drops = g.discards
        g.discards = []
        if error is ReadError.TIMEOUT and drops:
            # Something came, but not a valid answer: say what it was.
            (error, message), drops = drops[0], drops[1:]
        kinds = tuple(str(k) for k, _ in drops) if drops else ()
        latency = self._clock.monotonic() - started
        if error is not None:
            return ReadResult(None, latency, error, None, message, kinds, reconnected=reconnected)
        if response.isError():
            code = getattr(response, "exception_code", None)
            return ReadResult(
                None,
                latency,
                ReadError.EXCEPTION,
                code,
                f"exception {code}",
                kinds,
                reconnected=reconnected,
            )
        if write is not None:
            values: list[int] | list[bool] | None = [] if response.function_code == fc else None
        else:
            values = _values(response, table, count)
        if values is None or response.function_code != fc or response.dev_id != unit:
            return ReadResult(
                None,
                latency,
                ReadError.GARBAGE,
                None,
                "answer does not match request",
                kinds,
                reconnected=reconnected,
            )
        return ReadResult(values, latency, discarded=kinds, reconnected=reconnected)

    async def _drain(self, expect: _Expect | None, timed_out: bool) -> None:
        """RTU: wait until the line is quiet, then flush what came in."""
        g = self._guard
        if expect is not None:
            expect.timed_out = True
        quiet = min(self.endpoint.timeout, _DRAIN_MAX) if timed_out else _QUIET_AFTER_DISCARD
        quiet = max(quiet, 3.5 * 11 / max(self.endpoint.baudrate, 1))
        # Measure silence from the end of the request at the earliest.
        g.last_rx = max(g.last_rx, time.monotonic() - (0.0 if timed_out else quiet))
        give_up = time.monotonic() + 4 * quiet + 1.0  # a babbling line cannot stall us
        while (now := time.monotonic()) < give_up:
            idle = now - g.last_rx
            if idle >= quiet:
                break
            await asyncio.sleep(quiet - idle)
        ctx = self._client.ctx
        if ctx.recv_buffer:
            n = len(ctx.recv_buffer)
            g.discards.append(
                (ReadError.GARBAGE, f"no valid frame in {n} bytes (truncated or noise)")
            )
            ctx.recv_buffer = b""

    async def close(self) -> None:
        self._client.close()


def _small_reads(ctx: Any) -> None:
    """Have the connection's asyncio transport read at most RECV_SIZE at a time."""
    transport = getattr(ctx, "transport", None)
    if transport is not None and getattr(transport, "max_size", 0) > RECV_SIZE:
        transport.max_size = RECV_SIZE


def _make_client(ep: Endpoint) -> Any:
    # retries=0: a resend is a new request (see PymodbusTransport.read).
    common: dict[str, Any] = {"timeout": ep.timeout, "retries": 0, "reconnect_delay": 0}
    if ep.transport == "rtu":
        return AsyncModbusSerialClient(
            str(ep.port),
            framer=FramerType.RTU,
            baudrate=ep.baudrate,
            parity=ep.parity,
            stopbits=ep.stopbits,
            bytesize=ep.bytesize,
            **common,
        )
    framer = FramerType.RTU if ep.transport == "rtu_over_tcp" else FramerType.SOCKET
    return AsyncModbusTcpClient(str(ep.host), port=int(ep.port), framer=framer, **common)


async def _call(client: Any, table: Table, address: int, count: int, unit: int) -> Any:
    if table is Table.HOLDING:
        return await client.read_holding_registers(address, count=count, device_id=unit)
    if table is Table.INPUT:
        return await client.read_input_registers(address, count=count, device_id=unit)
    if table is Table.COIL:
        return await client.read_coils(address, count=count, device_id=unit)
    return await client.read_discrete_inputs(address, count=count, device_id=unit)


async def _call_write(client: Any, request: WriteRequest, unit: int) -> Any:
    fc, address, values = request.function, request.address, request.values
    if fc == 5:
        return await client.write_coil(address, bool(values[0]), device_id=unit)
    if fc == 15:
        return await client.write_coils(address, [bool(v) for v in values], device_id=unit)
    if fc == 6:
        return await client.write_register(address, values[0], device_id=unit)
    if fc == 16:
        return await client.write_registers(address, list(values), device_id=unit)
    return await client.mask_write_register(
        address=address, and_mask=request.and_mask, or_mask=request.or_mask, device_id=unit
    )


def _values(response: Any, table: Table, count: int) -> list[int] | list[bool] | None:
    """The payload, checked against the request (a short answer is garbage)."""
    if table.is_bits:
        bits: Sequence[bool] = getattr(response, "bits", None) or []
        # Bits arrive padded to whole bytes.
        return [bool(b) for b in bits[:count]] if len(bits) >= count else None
    registers: Sequence[int] = getattr(response, "registers", None) or []
    if len(registers) != count:
        return None
    return registers if type(registers) is list else list(registers)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text.replace("Modbus Error: ", "")[:200]
