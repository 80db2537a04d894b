"""Tests for simulators/: signals, plants, Modbus servers, faults, the pty line, the CLI.

Real sockets and ptys, no mocks. TCP servers bind port 0 (base_port=0) so
concurrent test runs never collide.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import serial
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from edgeopt.config import load_config
from simulators import cli
from simulators.line import PtyLine
from simulators.plant import Plant, PlantDevice, PlantTag
from simulators.plants import demo_plant, large_plant, week_plant
from simulators.server import PlantServer, RequestLog
from simulators.signals import (
    DAY,
    HOUR,
    Burst,
    Combine,
    Constant,
    Counter,
    Follower,
    NoisyAnalog,
    OnOff,
    RandomWalk,
    Shift,
    Signal,
    Solar,
    Steps,
)

ROOT = Path(__file__).resolve().parent.parent
# Plant time the servers run at in these tests: Wednesday 12:00 (sun up, shift on).
WEDNESDAY_NOON = 2 * DAY + 12 * HOUR


# ------------------------------------------------------------------- signals
def _signals(seed: int = 1) -> dict[str, Signal]:
    sun = Solar("sun", seed, peak=1000.0)
    noisy = NoisyAnalog("noisy", seed, base=100.0, noise_sd=1.0, quantum=0.1, period=1.0)
    shift = Shift([(6, 14, 1.0), (14, 22, 0.8), (22, 6, 0.5)])
    onoff = OnOff("onoff", seed, rate_per_hour=2.0, duty=0.6)
    return {
        "constant": Constant(3.5),
        "steps": Steps("steps", seed, levels=(10, 20, 30), rate_per_hour=0.5),
        "random_walk": RandomWalk("rw", seed, mean=45.0, sd=1.0, step_sd=0.02, period=10.0),
        "noisy": noisy,
        "solar": sun,
        "counter": Counter("counter", seed, source=noisy, gain=1 / HOUR, quantum=0.01),
        "onoff": onoff,
        "shift": shift,
        "follower": Follower(
            "f", seed, leader=sun, gain=0.0095, noise_sd=0.02, quantum=0.01, break_at=DAY
        ),
        "burst": Burst(
            "b",
            seed,
            base=0.5,
            windows=[(10 * HOUR, 10.25 * HOUR)],
            repeat=DAY,
            noise_sd=2.0,
            quantum=0.01,
        ),
        "combine": Combine(np.multiply, onoff, shift),
    }


SIGNAL_KINDS = list(_signals())


@pytest.mark.parametrize("kind", SIGNAL_KINDS)
def test_values_equals_value_elementwise(kind: str) -> None:
    sig = _signals()[kind]
    rng = np.random.default_rng(0)
    # Unsorted, sorted, negative, and exactly on chunk boundaries.
    ts = np.concatenate(
        [
            rng.uniform(-100, 3 * DAY, 3000),
            np.sort(rng.uniform(0, 3 * DAY, 3000)),
            np.arange(0, 3 * DAY, sig.chunk),
        ]
    )
    vec = sig.values(ts)
    scalar = np.array([sig.value(float(t)) for t in ts])
    assert np.array_equal(vec, scalar)


@pytest.mark.parametrize("kind", SIGNAL_KINDS)
def test_signals_are_deterministic(kind: str) -> None:
    ts = np.random.default_rng(1).uniform(0, 2 * DAY, 2000)
    a, b = _signals(seed=5)[kind], _signals(seed=5)[kind]
    # Ask b for the times in reverse, so the chunk order differs.
    assert np.array_equal(a.values(ts), b.values(ts[::-1])[::-1])
    if kind not in ("constant", "shift"):
        assert not np.array_equal(a.values(ts), _signals(seed=6)[kind].values(ts))


@pytest.mark.parametrize("kind", SIGNAL_KINDS)
def test_change_times_match_values(kind: str) -> None:
    sig = _signals()[kind]
    t0, t1 = 0.5 * DAY, 2.2 * DAY
    ct = sig.change_times(t0, t1)
    assert np.all(np.diff(ct) > 0) and (ct.size == 0 or (ct[0] > t0 and ct[-1] <= t1))
    if ct.size:
        # The value really changes at every listed time...
        assert np.all(sig.values(ct) != sig.values(np.nextafter(ct, -np.inf)))
    # ...and nowhere else: dense samples between changes all equal the value
    # at the preceding change.
    ts = np.sort(np.random.default_rng(2).uniform(t0, t1, 20000))
    idx = np.searchsorted(ct, ts, side="right") - 1
    anchors = np.where(idx >= 0, np.append(ct, t0)[idx], t0)
    assert np.array_equal(sig.values(ts), sig.values(anchors))
    # Splitting the window does not change the answer.
    mid = 1.3 * DAY
    assert np.array_equal(
        ct, np.concatenate([sig.change_times(t0, mid), sig.change_times(mid, t1)])
    )


def test_signal_shapes() -> None:
    s = _signals()
    night, noon = 2 * DAY + 2 * HOUR, 2 * DAY + 13 * HOUR
    assert s["solar"].value(night) == 0.0 and s["solar"].value(noon) > 300
    assert s["shift"].value(0 * DAY + 7 * HOUR) == 1.0  # Monday morning shift
    assert s["shift"].value(0 * DAY + 15 * HOUR) == 0.8
    assert s["shift"].value(1 * DAY + 3 * HOUR) == 0.5  # Monday's night shift, past midnight
    assert s["shift"].value(5 * DAY + 10 * HOUR) == 0.0  # Saturday
    assert s["shift"].value(5 * DAY + 3 * HOUR) == 0.5  # Friday's night shift ends Saturday 6:00
    assert s["shift"].value(5 * DAY + 6 * HOUR) == 0.0
    counter = s["counter"].values(np.arange(0, DAY, 7.0))
    assert np.all(np.diff(counter) >= 0) and counter[-1] > 0
    # ~100/h: the integral of a noisy 100 over one day, within the noise.
    assert s["counter"].value(DAY) == pytest.approx(2400.0, rel=0.01)
    b = s["burst"]
    assert isinstance(b, Burst)
    burst = b.values(np.arange(DAY, 2 * DAY, 1.0))
    active = b.active(np.arange(DAY, 2 * DAY, 1.0))
    assert np.all(burst[~active] == 0.5) and np.std(burst[active]) > 1.0
    assert set(np.unique(s["onoff"].values(np.arange(0, DAY, 60.0)))) <= {0.0, 1.0}


def test_follower_correlation_breaks() -> None:
    sig = _signals()
    ts = np.arange(0, 2 * DAY, 5.0)
    lead, fol = sig["solar"].values(ts), sig["follower"].values(ts)
    day = (ts % DAY > 7 * HOUR) & (ts % DAY < 19 * HOUR)
    before, after = day & (ts < DAY), day & (ts >= DAY)
    d_lead, d_fol = np.diff(lead), np.diff(fol)
    corr_before = np.corrcoef(d_lead[before[1:]], d_fol[before[1:]])[0, 1]
    corr_after = np.corrcoef(d_lead[after[1:]], d_fol[after[1:]])[0, 1]
    assert corr_before > 0.8 and abs(corr_after) < 0.2


def test_integral_of_constant_is_closed_form() -> None:
    c = Counter("uptime", 0, source=1.0, gain=1.0, quantum=1.0, period=1.0)
    assert c.value(123456.7) == 123456.0


# -------------------------------------------------------------------- plants
def test_demo_plant_mixes_all_kinds() -> None:
    plant = demo_plant()
    assert [d.name for d in plant.devices] == ["meter1", "inverter1", "drive1", "plc1"]
    assert 40 <= plant.n_tags <= 70
    tags = [t for _, t in plant.iter_tags()]
    types = {t.type for t in tags}
    assert types >= {
        "float32",
        "float64",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "string",
        "bool",
    }
    assert any(t.type == "float32" and t.word_order == "little" for t in tags)  # CDAB
    assert any(t.type == "uint16" and t.scale != 1.0 for t in tags)
    assert any(t.bit is not None for t in tags)
    assert {t.table for t in tags} == {"holding", "input", "coil", "discrete"}
    assert plant.device("plc1").strict_gaps


def test_demo_tags_encode_all_week() -> None:
    """No tag ever overflows its register type, and truth() is what the codec decodes."""
    plant = demo_plant()
    ts = np.arange(0, 7 * DAY, 1801.0)
    for _, tag in plant.iter_tags():
        if tag.type == "string":
            continue
        truth = tag.truth(ts)
        for t, want in zip(ts[::4], truth[::4], strict=True):
            if tag.table in ("holding", "input"):
                tag.encode(float(t))
            assert float(tag.read_value(float(t))) == want, tag.name


def test_large_plant_layout() -> None:
    t = time.perf_counter()
    plant = large_plant(20_000, 200, seed=7)
    assert time.perf_counter() - t < 10
    assert plant.n_tags == 20_000 and len(plant.devices) == 200
    assert any(d.strict_gaps for d in plant.devices) and not all(
        d.strict_gaps for d in plant.devices
    )
    dev = plant.devices[0]
    assert any(t.table == "holding" and t.address >= 40_000 for t in dev.tags)  # slow config block
    inputs = sorted(t.address for t in dev.tags if t.table == "input")
    assert any(b - a > 2 for a, b in itertools.pairwise(inputs))  # gaps
    # Deterministic from the seed.
    again = large_plant(20_000, 200, seed=7)
    tag, tag2 = plant.devices[17].tags[3], again.devices[17].tags[3]
    assert (tag.name, tag.address, tag.type) == (tag2.name, tag2.address, tag2.type)
    assert tag.value(12345.0) == tag2.value(12345.0)


def test_large_plant_values_fit() -> None:
    plant = large_plant(2000, 20, seed=3)
    for _, tag in plant.iter_tags():
        for t in (0.0, 1.5 * DAY, 4.3 * DAY):
            if tag.table in ("holding", "input"):
                tag.encode(t)


def test_week_plant_patterns() -> None:
    plant = week_plant()
    running = plant.tag("lineA/running")
    assert running.value(2 * DAY + 10 * HOUR) is True  # Wednesday
    assert running.value(6 * DAY + 10 * HOUR) is False  # Sunday
    assert plant.tag("lineB/running").value(5 * DAY + 8 * HOUR) is True  # Saturday
    speed = plant.tag("lineA/speed").signal
    assert isinstance(speed, Signal)
    assert speed.change_times(6 * DAY, 7 * DAY).size == 0  # quiet Sunday


# -------------------------------------------------------------------- config
def _normalised(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def test_committed_demo_config_is_generated(tmp_path: Path) -> None:
    out = tmp_path / "demo.yaml"
    assert cli.main([*cli.DEMO_CONFIG_ARGS, "-o", str(out)]) == 0
    committed = (ROOT / "config" / "demo.yaml").read_text(encoding="utf-8")
    assert _normalised(committed) == _normalised(out.read_text(encoding="utf-8")), (
        "config/demo.yaml is stale: regenerate it with "
        f"`python -m simulators {' '.join(cli.DEMO_CONFIG_ARGS)} -o config/demo.yaml`"
    )


def test_generated_configs_load(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "config" / "demo.yaml")
    assert len(cfg.devices) == 4
    for plant in (large_plant(2000, 20), week_plant(), demo_plant().as_rtu()):
        if plant.devices[0].transport == "rtu":
            eps = {d.name: _rtu_endpoint(d.unit_id) for d in plant.devices}
        else:
            eps = plant.tcp_endpoints("127.0.0.1", 16000)
        path = tmp_path / f"{plant.name}.yaml"
        path.write_text(cli.render_config(plant, plant.to_config(eps, "./state", "./state/s.sock")))
        loaded = load_config(path)
        assert sum(len(d.tags) for d in loaded.devices) == plant.n_tags


def _rtu_endpoint(unit: int) -> Any:
    from simulators.plant import Endpoint

    return Endpoint("rtu", unit, port="/dev/ttyUSB0", baudrate=9600)


# --------------------------------------------------------------- TCP servers
def _candidates(tag: PlantTag, t0: float, t1: float) -> set[Any]:
    """Every value the tag had between two plant times: the read must be one of them."""
    if isinstance(tag.signal, str):
        return {tag.signal}
    times = [t0, *tag.signal.change_times(t0, t1).tolist()]
    return {tag.read_value(t) for t in times}


async def _read_table(c: Any, table: str, address: int, count: int, unit: int) -> Any:
    fn = {
        "holding": c.read_holding_registers,
        "input": c.read_input_registers,
        "coil": c.read_coils,
        "discrete": c.read_discrete_inputs,
    }[table]
    return await fn(address, count=count, device_id=unit)


async def _check_device(
    client: Any, device: PlantDevice, unit: int, plant_time: Callable[[], float]
) -> int:
    """Read every tag alone and decode it; return how many were checked."""
    n = 0
    for tag in device.tags:
        t0 = plant_time()
        r = await _read_table(client, tag.table, tag.address, tag.width, unit)
        t1 = plant_time()
        assert not r.isError(), (device.name, tag.name, r)
        if tag.table in ("coil", "discrete"):
            got: Any = bool(r.bits[0])
        else:
            got = tag.codec.decode(r.registers)
        assert got in _candidates(tag, t0, t1), (device.name, tag.name, got)
        n += 1
    return n


@pytest.fixture
async def demo_server() -> Any:
    log = RequestLog()
    srv = PlantServer(
        demo_plant(), base_port=0, clock_start=time.time() - WEDNESDAY_NOON, request_log=log
    )
    async with srv:
        yield srv


async def _client(srv: PlantServer, device: str, wait: float = 1.0) -> AsyncModbusTcpClient:
    ep = srv.endpoints[device]
    c = AsyncModbusTcpClient(str(ep.host), port=int(ep.port or 0), timeout=wait, retries=0)
    assert await c.connect()
    return c


async def test_tcp_reads_decode_to_truth(demo_server: PlantServer) -> None:
    srv = demo_server
    checked = 0
    for dev in srv.plant.devices:
        c = await _client(srv, dev.name)
        try:
            checked += await _check_device(c, dev, dev.unit_id, srv.plant_time)
        finally:
            c.close()
    assert checked == srv.plant.n_tags
    # A merged read of the inverter's measurement block decodes too.
    inv = srv.plant.device("inverter1")
    c = await _client(srv, "inverter1")
    t0 = srv.plant_time()
    r = await c.read_input_registers(0, count=24, device_id=1)
    t1 = srv.plant_time()
    c.close()
    for tag in inv.tags_in("input"):
        got = tag.codec.decode(r.registers[tag.address : tag.address + tag.width])
        assert got in _candidates(tag, t0, t1), tag.name
    # At noon on a Wednesday the sun is up.
    assert float(inv.tags[0].read_value(srv.plant_time())) > 0


async def test_faults_and_request_log(demo_server: PlantServer, tmp_path: Path) -> None:
    srv = demo_server
    c = await _client(srv, "drive1", wait=0.3)

    await srv.set_fault("drive1", "exception")
    r = await c.read_holding_registers(0, count=2, device_id=1)
    assert r.isError() and r.exception_code == 6

    await srv.set_fault("drive1", "timeout")
    with pytest.raises(ModbusException):
        await c.read_holding_registers(0, count=2, device_id=1)

    await srv.set_fault("drive1", "slow", delay=0.2)
    if not c.connected:
        assert await c.connect()
    t = time.perf_counter()
    r = await c.read_holding_registers(0, count=2, device_id=1)
    assert not r.isError() and time.perf_counter() - t >= 0.19

    await srv.set_fault("drive1", "garbage")
    # The client cannot make sense of the frame: it drops it (and, on TCP,
    # the connection) and the request fails.
    with pytest.raises(ModbusException):
        await c.read_holding_registers(0, count=2, device_id=1)
    c.close()

    await srv.set_fault("drive1", "down")
    down = AsyncModbusTcpClient(
        "127.0.0.1", port=int(srv.endpoints["drive1"].port or 0), timeout=0.3, retries=0
    )
    assert not await down.connect()
    down.close()
    await srv.set_fault("drive1", "none")
    c = await _client(srv, "drive1")
    r = await c.read_holding_registers(0, count=2, device_id=1)
    assert not r.isError()
    c.close()

    # Strict gaps: plc1 has no input register 3, so a merged read fails but
    # the reads either side of the gap succeed.
    p = await _client(srv, "plc1")
    r = await p.read_input_registers(0, count=8, device_id=1)
    assert r.isError() and r.exception_code == 2
    assert not (await p.read_input_registers(0, count=3, device_id=1)).isError()
    assert not (await p.read_input_registers(4, count=4, device_id=1)).isError()
    p.close()
    # A non-strict device fills its small gaps: meter1 input 14..17 is filler.
    m = await _client(srv, "meter1")
    assert not (await m.read_input_registers(0, count=20, device_id=1)).isError()
    m.close()

    assert srv.request_log is not None
    recs = list(srv.request_log.records)
    outcomes = [(r["device"], r["outcome"], r["exception_code"]) for r in recs]
    for want in [
        ("drive1", "exception", 6),
        ("drive1", "timeout", None),
        ("drive1", "garbage", None),
        ("drive1", "ok", None),
        ("plc1", "exception", 2),
        ("plc1", "ok", None),
    ]:
        assert want in outcomes, want
    slow = next(r for r in recs if r["device"] == "drive1" and r["latency_s"] >= 0.19)
    assert slow["fc"] == 3 and slow["address"] == 0 and slow["count"] == 2
    assert abs(slow["t"] - (slow["ts"] - srv.clock_start)) < 1e-6


async def test_request_log_file(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    async with PlantServer(week_plant(), base_port=0, request_log=path) as srv:
        c = await _client(srv, "hvac")
        for _ in range(3):
            assert not (await c.read_holding_registers(0, count=2, device_id=1)).isError()
        assert (await c.read_coils(0, count=1, device_id=1)).bits[0] in (True, False)
        c.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(r["fc"], r["outcome"]) for r in lines] == [(3, "ok")] * 3 + [(1, "ok")]
    assert {"ts", "t", "device", "unit", "fc", "address", "count", "outcome", "latency_s"} <= set(
        lines[0]
    )


# --------------------------------------------------------------- serial line
def _read_exactly(port: serial.Serial, n: int, timeout: float) -> list[tuple[float, bytes]]:
    """(arrival time, bytes) chunks until n bytes arrived."""
    out: list[tuple[float, bytes]] = []
    got, deadline = 0, time.monotonic() + timeout
    while got < n and time.monotonic() < deadline:
        select.select([port.fileno()], [], [], 0.05)
        data = port.read(n - got)
        if data:
            out.append((time.monotonic(), data))
            got += len(data)
    return out


def test_pty_line_delays_bytes_and_keeps_silences() -> None:
    with PtyLine(9600) as line:
        srv = serial.Serial(line.server_path, timeout=0)
        cli_port = serial.Serial(line.client_path, timeout=0)
        try:
            t0 = time.monotonic()
            cli_port.write(b"A" * 50)
            first = _read_exactly(srv, 50, 2.0)
            assert b"".join(d for _, d in first) == b"A" * 50
            # 50 characters of 11 bits at 9600 baud cannot arrive sooner.
            assert first[-1][0] - t0 >= 0.9 * 50 * 11 / 9600
            # After an idle spell the wire does not bank time: a new burst
            # still takes its full time on the wire, and the silence before
            # it survives.
            time.sleep(0.1)
            t_write = time.monotonic()
            cli_port.write(b"C" * 5)
            second = _read_exactly(srv, 5, 2.0)
            assert b"".join(d for _, d in second) == b"C" * 5
            assert second[-1][0] - t_write >= 0.9 * 5 * 11 / 9600
            assert second[0][0] - first[-1][0] >= 0.1
            # The other direction works too.
            srv.write(b"pong")
            assert b"".join(d for _, d in _read_exactly(cli_port, 4, 2.0)) == b"pong"
        finally:
            srv.close()
            cli_port.close()
    assert line.stats["to_server"] == 55


async def test_rtu_two_units_on_one_line() -> None:
    bulk = PlantDevice(
        "bulk",
        7,
        [PlantTag(f"r{i}", "holding", i, "uint16", Constant(i)) for i in range(125)],
        transport="rtu",
    )
    plant = demo_plant().as_rtu()
    plant = Plant(
        "rtu-test", [*plant.devices[2:], bulk], seed=1
    )  # drive1 (unit 3), plc1 (unit 4), bulk
    async with PlantServer(plant, clock_start=time.time() - WEDNESDAY_NOON, baudrate=9600) as srv:
        eps = srv.endpoints
        assert eps["drive1"].port == eps["plc1"].port == eps["bulk"].port
        c = AsyncModbusSerialClient(
            port=str(eps["drive1"].port), baudrate=9600, timeout=2.0, retries=0
        )
        assert await c.connect()
        try:
            for name in ("drive1", "plc1"):
                dev = plant.device(name)
                some = PlantDevice(
                    name, dev.unit_id, dev.tags[:6], transport="rtu", strict_gaps=dev.strict_gaps
                )
                await _check_device(c, some, dev.unit_id, srv.plant_time)
            t = time.perf_counter()
            r = await c.read_holding_registers(0, count=125, device_id=7)
            elapsed = time.perf_counter() - t
            assert r.registers == list(range(125))
            # Request 8 bytes + response 5 + 250 bytes, 11 bits each, at 9600 baud.
            assert elapsed >= 0.95 * (8 + 255) * 11 / 9600
        finally:
            c.close()
        # A unit nobody answers to stays silent, as on a real bus.
        c = AsyncModbusSerialClient(
            port=str(eps["bulk"].port), baudrate=9600, timeout=0.3, retries=0
        )
        assert await c.connect()
        try:
            with pytest.raises(ModbusException):
                await c.read_holding_registers(0, count=1, device_id=99)
            assert (await c.read_holding_registers(0, count=2, device_id=7)).registers == [0, 1]
        finally:
            c.close()
    assert srv.request_log is None


# ----------------------------------------------------------------------- CLI
def test_cli_serve_writes_config_and_stops_cleanly(tmp_path: Path) -> None:
    cfg = tmp_path / "edgeopt.yaml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators",
            "serve",
            "--plant",
            "week",
            "--base-port",
            "0",
            "--json",
            "--clock-start",
            "now",
            "--write-config",
            str(cfg),
            "--state-dir",
            str(tmp_path / "state"),
            "--fault",
            "pv1=exception",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "simulator did not start"
        info = json.loads(proc.stdout.readline())
        assert set(info["endpoints"]) == {"lineA", "lineB", "hvac", "pv1"}
        loaded = load_config(cfg)
        ports = {d.name: int(d.port) for d in loaded.devices}
        assert ports == {k: v["port"] for k, v in info["endpoints"].items()}

        async def read() -> tuple[bool, int]:
            c = AsyncModbusTcpClient("127.0.0.1", port=ports["hvac"], timeout=1, retries=0)
            p = AsyncModbusTcpClient("127.0.0.1", port=ports["pv1"], timeout=1, retries=0)
            await c.connect()
            await p.connect()
            ok = not (await c.read_holding_registers(0, count=2, device_id=1)).isError()
            code = (await p.read_input_registers(0, count=1, device_id=1)).exception_code
            c.close()
            p.close()
            return ok, code

        assert asyncio.run(read()) == (True, 6)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
