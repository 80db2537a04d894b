"""Wire integrity: one request, one matching reply, on TCP and on a pty RTU line.

Every wire fault of the simulator (simulators/server.py FAULT_MODES) is served
over a real socket or pty to edgeopt's PymodbusTransport. Every register has
a constant, distinct value, so the truth of a read is trivial and any reply
taken for another request's answer would show. Each test asserts that every
value returned as good equals the truth, and that the error counters
(ReadStats.errors_by_kind, filled as the poller fills them) name the fault.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import yaml
from conftest import run_daemon, serve_plant, wait_for, write_config

from edgeopt.clock import SystemClock
from edgeopt.config import load_config
from edgeopt.modbus.health import ReadStats
from edgeopt.modbus.planner import Table
from edgeopt.modbus.transport import RECV_SIZE, Endpoint, PymodbusTransport, ReadResult
from simulators.plant import Plant, PlantDevice, PlantTag
from simulators.server import PlantServer
from simulators.signals import Constant

TIMEOUT = 0.3
# (table, address, count): holding and input alternate, so a reply consumed
# by the wrong request would carry the other table's values.
READS = [
    (Table.HOLDING, 0, 4),
    (Table.INPUT, 0, 4),
    (Table.HOLDING, 1, 2),
    (Table.INPUT, 2, 2),
    (Table.COIL, 0, 8),
]


def _truth(table: Table, address: int, count: int) -> list[int] | list[bool]:
    if table is Table.COIL:
        return [(address + i) % 2 == 0 for i in range(count)]
    base = 1000 if table is Table.HOLDING else 2000
    return [base + address + i for i in range(count)]


def _plant(rtu: bool) -> Plant:
    tags = [PlantTag(f"h{i}", "holding", i, "uint16", Constant(1000 + i)) for i in range(4)]
    tags += [PlantTag(f"i{i}", "input", i, "uint16", Constant(2000 + i)) for i in range(4)]
    tags += [PlantTag(f"c{i}", "coil", i, "bool", Constant(i % 2 == 0)) for i in range(8)]
    plant = Plant("wire", [PlantDevice("dev", 1, tags)], seed=1)
    return plant.as_rtu(turnaround=0.0) if rtu else plant


def _transport(server: PlantServer, retries: int = 0) -> PymodbusTransport:
    ep = server.endpoints["dev"]
    if ep.transport == "rtu":
        endpoint = Endpoint("rtu", port=str(ep.port), baudrate=19200, timeout=TIMEOUT)
    else:
        endpoint = Endpoint("tcp", host=ep.host, port=int(ep.port), timeout=TIMEOUT)
    return PymodbusTransport(dataclasses.replace(endpoint, retries=retries), SystemClock())


class _Run:
    """Reads in a loop, checks every good value, counts errors as the poller does."""

    def __init__(self, transport: PymodbusTransport) -> None:
        self.transport = transport
        self.stats = ReadStats()
        self.good = 0
        self.results: list[ReadResult] = []
        self._i = 0

    async def reads(self, n: int) -> None:
        for _ in range(n):
            table, address, count = READS[self._i % len(READS)]
            self._i += 1
            r = await self.transport.read(table, address, count, 1)
            self.results.append(r)
            self.stats.record(r.latency, count, r.error, r.exception_code, table.is_bits)
            for kind in r.discarded:  # as Poller.apply does
                self.stats.errors_by_kind[kind] += 1
            if r.ok:
                assert r.values == _truth(table, address, count), (table, address, r)
                self.good += 1


# mode -> (kinds that must be counted, whether reads under the fault may still succeed)
TCP_CASES = {
    "late": ({"late"}, False),
    "wrong_function": ({"garbage"}, False),
    "wrong_unit": ({"foreign"}, False),
    "truncated": ({"garbage"}, False),
    "bad_crc": ({"garbage"}, False),  # TCP has no CRC: the byte count is wrong instead
    "noise": ({"garbage"}, True),
    "bytewise": (set(), True),
    "wrong_tid": ({"foreign"}, False),
    "tid_zero": ({"foreign"}, False),
    "reset": ({"connection"}, False),
}
RTU_CASES = {
    "late": ({"late"}, False),
    "wrong_function": ({"garbage"}, False),
    "wrong_unit": ({"foreign"}, False),
    "truncated": ({"garbage"}, False),
    "bad_crc": ({"garbage"}, False),
    "noise": ({"garbage"}, True),
    "bytewise": (set(), True),
}


async def _check_fault(rtu: bool, mode: str, kinds: set[str], may_succeed: bool) -> None:
    async with serve_plant(_plant(rtu), baudrate=None if not rtu else 19200) as server:
        transport = _transport(server)
        run = _Run(transport)
        try:
            await run.reads(3)  # healthy first
            assert run.good == 3
            await server.set_fault("dev", mode, delay=TIMEOUT + 0.2)
            await run.reads(5)
            under_fault = run.results[3:]
            if not may_succeed:
                assert not any(r.ok for r in under_fault), [r.describe() for r in under_fault]
            else:
                assert any(r.ok for r in under_fault)
            await server.set_fault("dev", "none")
            await run.reads(len(READS) + 1)
            # Healthy again; every later read is good.
            assert all(r.ok for r in run.results[-len(READS) :]), [
                r.describe() for r in run.results[-len(READS) :]
            ]
        finally:
            await transport.close()
        counted = set(run.stats.errors_by_kind)
        assert kinds <= counted, (mode, dict(run.stats.errors_by_kind))
        if not kinds:
            assert run.stats.errors == 0, dict(run.stats.errors_by_kind)


@pytest.mark.parametrize("mode", list(TCP_CASES))
async def test_tcp_fault(mode: str) -> None:
    kinds, may_succeed = TCP_CASES[mode]
    await _check_fault(False, mode, kinds, may_succeed)


@pytest.mark.parametrize("mode", list(RTU_CASES))
async def test_rtu_fault(mode: str) -> None:
    kinds, may_succeed = RTU_CASES[mode]
    await _check_fault(True, mode, kinds, may_succeed)


async def test_rtu_late_reply_is_never_the_next_answer() -> None:
    """Defect 1: a holding read times out; its late reply must not answer the input read."""
    async with serve_plant(_plant(True), baudrate=19200) as server:
        transport = _transport(server, retries=1)
        try:
            await server.set_fault("dev", "late", delay=TIMEOUT + 0.2)
            first = await transport.read(Table.HOLDING, 0, 2, 1)
            await server.set_fault("dev", "none")
            second = await transport.read(Table.HOLDING, 0, 2, 1)  # same shape as the late one
            third = await transport.read(Table.INPUT, 0, 2, 1)
        finally:
            await transport.close()
    assert not first.ok and first.error == "late", first.describe()
    assert first.attempts == 2  # the resend is visible
    assert second.ok and second.values == [1000, 1001]
    assert third.ok and third.values == [2000, 2001]


async def test_tcp_reset_in_mid_frame_reconnects_and_resends() -> None:
    """Half a reply, then RST: the read fails at once (not at its timeout), the
    transport reconnects and resends, and says so."""
    async with serve_plant(_plant(False)) as server:
        transport = _transport(server, retries=1)
        try:
            assert (await transport.read(Table.HOLDING, 0, 2, 1)).ok
            await server.set_fault("dev", "reset")
            failed = await transport.read(Table.HOLDING, 0, 2, 1)
            await server.set_fault("dev", "none")
            again = await transport.read(Table.INPUT, 0, 2, 1)
        finally:
            await transport.close()
    assert not failed.ok and failed.error == "connection", failed.describe()
    assert "mid-frame" in failed.message and failed.attempts == 2 and failed.reconnected
    assert failed.latency < 2 * TIMEOUT  # the reset ends the wait; no timeout was spent
    assert again.ok and again.values == [2000, 2001] and again.reconnected
    assert server.connections["dev"] == 3  # the first, the resend's, and the next read's


async def test_every_connection_reads_its_socket_in_small_pieces() -> None:
    """asyncio's default, 256 KiB a recv(), is above the mmap threshold the daemon
    pins: each reply cost an mmap and a munmap. Each new connection reads less."""
    async with serve_plant(_plant(False)) as server:
        transport = _transport(server, retries=1)
        try:
            assert (await transport.read(Table.HOLDING, 0, 4, 1)).ok
            first = transport._client.ctx.transport
            await server.set_fault("dev", "reset")
            await transport.read(Table.HOLDING, 0, 2, 1)
            await server.set_fault("dev", "none")
            again = await transport.read(Table.INPUT, 0, 4, 1)
            second = transport._client.ctx.transport
        finally:
            await transport.close()
    assert first.max_size == RECV_SIZE and first.max_size < type(first).max_size
    assert again.ok and again.values == [2000, 2001, 2002, 2003] and again.reconnected
    assert second is not first and second.max_size == RECV_SIZE


async def test_turnaround_keeps_the_line_quiet_after_a_slow_device(tmp_path: Path) -> None:
    """`turnaround: 80ms` on an RTU device: no request follows its reply sooner, on the
    simulator's side of the pty, and the read plan prices the quiet time."""
    plant = _plant(True)
    for tag in plant.devices[0].tags:
        tag.interval = 0.05  # the line would otherwise run back to back
    async with serve_plant(plant, baudrate=19200) as server:
        path = write_config(plant, server, tmp_path)
        raw = yaml.safe_load(path.read_text())
        raw["devices"][0]["turnaround"] = "80ms"
        raw["optimizer"] = {"enabled": False}
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        config = load_config(path)
        async with run_daemon(config) as daemon:
            device = daemon.poller.devices["dev"]
            assert device.cost.per_read >= 0.08  # priced: the quiet is the device's cost
            await wait_for(lambda: device.stats.reads >= 12)
    records = [r for r in server.request_log.records if r["outcome"] == "ok"]
    gaps = [b["ts"] - (a["ts"] + a["latency_s"]) for a, b in itertools.pairwise(records)]
    assert len(gaps) >= 10 and min(gaps) >= 0.07, gaps
