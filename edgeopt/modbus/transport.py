"""Modbus transports: pymodbus 3.16 async clients for TCP, RTU and RTU over TCP.

A transport never raises on a device problem. Every read returns a
`ReadResult` that says what came back: registers or bits, a Modbus exception
code, a timeout, a broken connection or a malformed answer. One transport
serves one TCP device, or one serial line shared by all its unit ids; the
poller keeps exactly one request in flight per transport.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from edgeopt.clock import Clock
from edgeopt.modbus.planner import Table

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


class ReadError(StrEnum):
    TIMEOUT = "timeout"  # no valid answer in time (silence or an unparseable frame)
    EXCEPTION = "exception"  # the device answered with a Modbus exception code
    GARBAGE = "garbage"  # an answer that does not fit the request
    CONNECTION = "connection"  # cannot connect, or the connection dropped


@dataclass(slots=True)
class ReadResult:
    """What one request brought back."""

    values: list[int] | list[bool] | None
    latency: float
    error: ReadError | None = None
    exception_code: int | None = None
    message: str = ""

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

    @property
    def line_key(self) -> str:
        if self.transport == "rtu":
            return str(self.port)
        return f"{self.host}:{self.port}"


class PymodbusTransport:
    """One pymodbus async client, connected lazily and reconnected on demand.

    pymodbus's own reconnect loop is disabled (reconnect_delay=0): the device
    health state machine decides when an offline device is probed again.
    """

    def __init__(self, endpoint: Endpoint, clock: Clock) -> None:
        self.endpoint = endpoint
        self._clock = clock
        self._client = _make_client(endpoint)

    async def read(self, table: Table, address: int, count: int, unit: int) -> ReadResult:
        started = self._clock.monotonic()
        try:
            if not self._client.connected and not await self._client.connect():
                return self._fail(ReadError.CONNECTION, started, "cannot connect")
            response = await _call(self._client, table, address, count, unit)
        except ModbusIOException as exc:
            return self._fail(ReadError.TIMEOUT, started, _short(exc))
        except ConnectionException as exc:
            return self._fail(ReadError.CONNECTION, started, _short(exc))
        except (ModbusException, OSError, ValueError, TypeError, IndexError) as exc:
            # A malformed frame can surface as a decoding error deep in pymodbus.
            return self._fail(ReadError.GARBAGE, started, f"{type(exc).__name__}: {exc}")
        latency = self._clock.monotonic() - started
        if response.isError():
            code = getattr(response, "exception_code", None)
            return ReadResult(None, latency, ReadError.EXCEPTION, code, f"exception {code}")
        values = _values(response, table, count)
        if values is None:
            return ReadResult(
                None, latency, ReadError.GARBAGE, None, "answer does not match request"
            )
        return ReadResult(values, latency)

    async def close(self) -> None:
        self._client.close()

    def _fail(self, error: ReadError, started: float, message: str) -> ReadResult:
        return ReadResult(None, self._clock.monotonic() - started, error, None, message)


def _make_client(ep: Endpoint) -> Any:
    common: dict[str, Any] = {"timeout": ep.timeout, "retries": ep.retries, "reconnect_delay": 0}
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


def _values(response: Any, table: Table, count: int) -> list[int] | list[bool] | None:
    """The payload, checked against the request (a short answer is garbage)."""
    if table.is_bits:
        bits: Sequence[bool] = getattr(response, "bits", None) or []
        # Bits arrive padded to whole bytes.
        return [bool(b) for b in bits[:count]] if len(bits) >= count else None
    registers: Sequence[int] = getattr(response, "registers", None) or []
    if len(registers) != count:
        return None
    return list(registers)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text.replace("Modbus Error: ", "")[:200]
