"""Verified writes against the simulator: real TCP, a real pty line at 19200 baud, real SQLite.

Each test runs the daemon on a small plant of writable tags and writes
through the same entry point the control socket uses (`Daemon.writes`), or
through the socket and `edgeoptctl` themselves where that is the point.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ctl, run_daemon, serve_plant, wait_for
from test_operations import NOBODY, request_as

from edgeopt.config import Config, load_config
from edgeopt.daemon import Daemon
from edgeopt.modbus.health import DeviceState
from edgeopt.tags import Quality
from edgeopt.writes import Caller
from simulators.line import alternation_problems
from simulators.plant import Plant, PlantDevice, PlantTag
from simulators.server import PlantServer
from simulators.signals import Constant, Sine

BAUD = 19200
ME = Caller("test")
# Every numeric type, with every byte and word order where there is more than one register.
MATRIX = [
    ("int16", "big", "big", -1234),
    ("int16", "little", "big", 4321),
    ("uint16", "big", "big", 65000),
    ("uint16", "little", "big", 258),
    *[
        (dtype, bo, wo, value)
        for (dtype, value), (bo, wo) in itertools.product(
            [
                ("int32", -123456789),
                ("uint32", 3123456789),
                ("int64", -1234567890123456789),
                ("uint64", 12345678901234567890),
                ("float32", -1234.5),
                ("float64", 98765.4321),
            ],
            itertools.product(("big", "little"), ("big", "little")),
        )
    ],
]
PATTERN = 0xA5A5  # the 16 bits of the bit register before any write


def wave(key: str, period: float) -> Sine:
    return Sine(key, 1, wave_period=period, amplitude=50.0, mean=100.0, period=0.05)


def matrix_tags() -> list[PlantTag]:
    tags: list[PlantTag] = []
    address = 0
    for dtype, bo, wo, _ in MATRIX:
        tag = PlantTag(
            f"{dtype}_{bo}_{wo}",
            "holding",
            address,
            dtype,
            Constant(0.0),
            byte_order=bo,
            word_order=wo,
            writable=True,
        )
        tags.append(tag)
        address += tag.width
    tags += [
        PlantTag("label", "holding", 200, "string", "init", length=4, writable=True),
        PlantTag("setpoint", "holding", 210, "int16", Constant(20.0), scale=0.1, writable=True),
        PlantTag("valve", "coil", 0, "bool", Constant(0.0), writable=True),
        *bit_tags(220),
        # Read-only neighbours: a write must never reach them.
        PlantTag("temp", "input", 0, "float32", wave("temp", 30.0)),
    ]
    return tags


def bit_tags(address: int) -> list[PlantTag]:
    return [
        PlantTag(
            f"b{n}",
            "holding",
            address,
            "bool",
            Constant(float(PATTERN >> n & 1)),
            bit=n,
            writable=True,
        )
        for n in range(16)
    ]


def writes_config(plant: Plant, server: PlantServer, tmp: Path, **writes: dict[str, Any]) -> Config:
    """The plant's config, every writable tag with write.min_interval 0 plus `writes` per tag."""
    cfg = plant.to_config(server.endpoints, str(tmp / "state"), str(tmp / "ctl.sock"))
    for device in cfg["devices"]:
        for tag in device["tags"]:
            if tag.get("writable"):
                tag["write"] = {"min_interval": "0s", **writes.get(tag["name"], {})}
    path = tmp / "edgeopt.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_config(path)


def register(server: PlantServer, device: str, table: str, address: int) -> list[int]:
    """What the simulated device holds in the slot at `address` (after a write)."""
    sim = server.sims[device]
    index = [s.address for s in sim._slots[table]].index(address)
    return sim._slot_words(table, index, server.plant_time())


async def ready(daemon: Daemon, device: str) -> None:
    def good() -> bool:
        tags = [t for t in daemon.poller.tags.values() if t.device == device]
        return all(t.state.quality is Quality.GOOD for t in tags)

    await wait_for(good, timeout=30)


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_every_type_and_order_round_trips_through_a_write_and_a_read_back(
    tmp_path: Path, transport: str
):
    device = PlantDevice("rw", 1, matrix_tags())
    plant = Plant("writes", [device])
    if transport == "rtu":
        plant = plant.as_rtu(turnaround=0.0)
    async with serve_plant(plant, baudrate=BAUD) as server:
        config = writes_config(plant, server, tmp_path)
        async with run_daemon(config) as daemon:
            await ready(daemon, "rw")
            for dtype, bo, wo, value in MATRIX:
                key = f"rw/{dtype}_{bo}_{wo}"
                outcome = await daemon.writes.write(key, value, caller=ME)
                assert outcome.result == "ok", (key, outcome)
                assert outcome.read_back == value == daemon.poller.tags[key].state.value, key
                held = register(server, "rw", "holding", plant.tag(key).address)
                assert plant.tag(key).codec.decode(held) == value, key
            for key, value, expected in [
                ("rw/label", "AB12", "AB12"),
                ("rw/setpoint", 21.5, 21.5),
                ("rw/valve", True, True),
                ("rw/valve", "off", False),
            ]:
                outcome = await daemon.writes.write(key, value, caller=ME)
                assert outcome.result == "ok", outcome
                assert outcome.read_back == pytest.approx(expected), outcome
            assert register(server, "rw", "holding", 210) == [215]  # 21.5 / 0.1
            functions = {r["fc"] for r in server.request_log.records}
            assert {5, 6, 16} <= functions


@pytest.mark.parametrize("mask_write", [True, False])
async def test_a_bit_write_leaves_the_other_15_bits_alone(tmp_path: Path, mask_write: bool):
    """FC22 where the device takes it; else read-modify-write (after its exception 1)."""
    plant = Plant("bits", [PlantDevice("io", 3, bit_tags(40), mask_write=mask_write)]).as_rtu(
        turnaround=0.0
    )
    async with serve_plant(plant, baudrate=BAUD) as server:
        config = writes_config(plant, server, tmp_path)
        async with run_daemon(config) as daemon:
            await ready(daemon, "io")
            word = PATTERN
            for bit, value in [(3, True), (0, False), (6, True), (3, False)]:
                outcome = await daemon.writes.write(f"io/b{bit}", value, caller=ME)
                assert outcome.result == "ok" and outcome.read_back is value, outcome
                word = word | 1 << bit if value else word & ~(1 << bit)
                assert register(server, "io", "holding", 40) == [word], f"after b{bit}"
            await wait_for(
                lambda: all(
                    daemon.poller.tags[f"io/b{n}"].state.value == bool(word >> n & 1)
                    for n in range(16)
                )
            )
        requests = [(r["fc"], r["outcome"]) for r in server.request_log.records if r["fc"] != 3]
        if mask_write:
            assert requests == [(22, "ok")] * 4
        else:  # one FC22 refused, then never again: read-modify-write with FC6
            assert requests == [(22, "exception")] + [(6, "ok")] * 4


async def test_a_clamping_device_gives_mismatch_with_the_value_it_holds(tmp_path: Path):
    limited = PlantTag(
        "limit", "holding", 0, "uint16", Constant(50.0), writable=True, write_clamp=(0.0, 100.0)
    )
    plant = Plant("clamp", [PlantDevice("drive", 1, [limited])])
    async with serve_plant(plant) as server:
        config = writes_config(
            plant, server, tmp_path, limit={"max": 1500, "verify_timeout": "400ms"}
        )
        async with run_daemon(config) as daemon:
            await ready(daemon, "drive")
            outcome = await daemon.writes.write("drive/limit", 150, caller=ME)
            assert (outcome.result, outcome.read_back) == ("mismatch", 100), outcome
            assert daemon.poller.tags["drive/limit"].state.value == 100
            reply = await ctl(config, "write", tag="drive/limit", value=80)
            assert reply["ok"] and reply["result"]["result"] == "ok", reply
            # Unverified, the device's answer is all there is: ok, and the tag is read soon.
            blind = await asyncio.to_thread(ctl_write, config, "drive/limit", "120", "--no-verify")
            assert blind.returncode == 0, blind.stderr
            await wait_for(lambda: daemon.poller.tags["drive/limit"].state.value == 100)
            bad = await asyncio.to_thread(ctl_write, config, "drive/limit", "90", "--timeout", "x")
            assert bad.returncode == 1 and "invalid_args" in bad.stderr, bad


async def test_a_device_that_rejects_writes_gives_exception_and_exit_code_1(tmp_path: Path):
    tags = [PlantTag("speed", "holding", 0, "uint16", Constant(7.0), writable=True)]
    plant = Plant("locked", [PlantDevice("plc", 1, tags, write_exception=3)])
    async with serve_plant(plant) as server:
        config = writes_config(plant, server, tmp_path)
        async with run_daemon(config) as daemon:
            await ready(daemon, "plc")
            done = await asyncio.to_thread(ctl_write, config, "plc/speed", "9")
            assert done.returncode == 1, done
            assert "exception 3" in done.stderr, done.stderr
            reply = await ctl(config, "write", tag="plc/speed", value=9)
            assert reply["result"]["result"] == "exception", reply
            assert reply["result"]["exception_code"] == 3
            assert daemon.poller.tags["plc/speed"].state.value == 7  # unchanged
            events = (await ctl(config, "events"))["result"]
            writes = [e for e in events if e["kind"] == "write"]
            assert len(writes) == 2 and writes[-1]["data"]["result"] == "exception 3"


def ctl_write(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "edgeopt.control.client",
        "--socket",
        str(config.daemon.socket),
    ]
    return subprocess.run([*command, "write", *args], capture_output=True, text=True, timeout=60)


async def test_refusals_name_their_reason_and_every_attempt_is_audited(tmp_path: Path):
    tags = [
        PlantTag("setpoint", "holding", 0, "uint16", Constant(10.0), writable=True),
        PlantTag("meter", "holding", 1, "uint16", Constant(3.0)),
    ]
    plant = Plant("guard", [PlantDevice("pump", 1, tags)])
    async with serve_plant(plant) as server:
        config = writes_config(
            plant, server, tmp_path, setpoint={"min": 0, "max": 1500, "min_interval": "1h"}
        )
        async with run_daemon(config) as daemon:
            await ready(daemon, "pump")
            too_big = await asyncio.to_thread(ctl_write, config, "pump/setpoint", "2000")
            assert too_big.returncode == 1
            assert "invalid_args" in too_big.stderr and "write.min 0" in too_big.stderr
            assert "write.max 1500" in too_big.stderr
            fine = await asyncio.to_thread(ctl_write, config, "pump/setpoint", "1200")
            assert fine.returncode == 0, fine.stderr
            assert "ok" in fine.stdout and "1200" in fine.stdout
            again = await ctl(config, "write", tag="pump/setpoint", value=1300)
            assert again["error"]["code"] == "rate_limited", again
            read_only = await ctl(config, "write", tag="pump/meter", value=1)
            assert read_only["error"]["code"] == "invalid_args"
            assert "not writable" in read_only["error"]["message"]
            db = daemon.state_dir / "edgeopt.db"
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT command, args, result FROM audit ORDER BY id").fetchall()
        assert [(c, r) for c, _, r in rows] == [
            ("write", "invalid_args"),
            ("write", "ok"),
            ("write", "rate_limited"),
            ("write", "invalid_args"),
        ]
        ok = json.loads(rows[1][1])
        assert (ok["tag"], ok["old"], ok["requested"], ok["read_back"]) == (
            "pump/setpoint",
            10,
            1200,
            1200,
        )
        assert ok["caller"].startswith("socket:")


async def test_a_non_admin_write_is_forbidden_and_audited(open_dir: Path):
    tags = [PlantTag("setpoint", "holding", 0, "uint16", Constant(10.0), writable=True)]
    plant = Plant("guard", [PlantDevice("pump", 1, tags)])
    async with serve_plant(plant) as server:
        cfg = plant.to_config(server.endpoints, str(open_dir / "state"), str(open_dir / "s.sock"))
        cfg["daemon"]["socket_group"] = "nogroup"
        path = open_dir / "edgeopt.yaml"
        path.write_text(yaml.safe_dump(cfg))
        config = load_config(path)
        async with run_daemon(config) as daemon:
            await ready(daemon, "pump")
            sock = Path(config.daemon.socket)
            args = {"tag": "pump/setpoint", "value": 99}
            denied = await asyncio.to_thread(request_as, NOBODY, sock, "write", args)
            assert denied["ok"] is False and denied["error"]["code"] == "forbidden", denied
            assert register(server, "pump", "holding", 0) == [10]  # never reached the device
            db = daemon.state_dir / "edgeopt.db"
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT uid, command, args, result FROM audit").fetchall()
        assert [(r[0], r[1], r[3]) for r in rows] == [(NOBODY, "write", "forbidden")]
        assert json.loads(rows[0][2]) == args


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory other users can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="edgeopt-writes-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_a_write_to_an_offline_device_is_refused_at_once(tmp_path: Path):
    tags = [PlantTag("setpoint", "holding", 0, "uint16", Constant(10.0), writable=True)]
    plant = Plant("gone", [PlantDevice("pump", 1, tags, timeout=0.2, retries=0)])
    async with serve_plant(plant) as server:
        config = writes_config(plant, server, tmp_path)
        async with run_daemon(config) as daemon:
            await ready(daemon, "pump")
            await server.set_fault("pump", "down")
            device = daemon.poller.devices["pump"]
            await wait_for(lambda: device.health.state is DeviceState.OFFLINE, timeout=30)
            loop = asyncio.get_running_loop()
            started = loop.time()
            reply = await ctl(config, "write", tag="pump/setpoint", value=5)
            assert reply["error"]["code"] == "offline", reply
            assert "pump is offline" in reply["error"]["message"]
            assert loop.time() - started < 2.0  # refused, not queued behind probes


async def test_a_write_counts_as_a_change_and_takes_the_read_back_value(tmp_path: Path):
    tags = [PlantTag("setpoint", "holding", 0, "uint16", Constant(10.0), writable=True)]
    plant = Plant("change", [PlantDevice("pump", 1, tags)])
    async with serve_plant(plant) as server:
        config = writes_config(plant, server, tmp_path)
        async with run_daemon(config) as daemon:
            await ready(daemon, "pump")
            heard: list[str] = []
            daemon.poller.change_listeners.append(lambda tag, wall, now: heard.append(tag.key))
            outcome = await daemon.writes.write("pump/setpoint", 10, caller=ME)  # same value
            assert outcome.result == "ok" and heard == ["pump/setpoint"]
            await daemon.writes.write("pump/setpoint", 12, caller=ME)
            state = daemon.poller.tags["pump/setpoint"].state
            assert state.value == 12 and heard == ["pump/setpoint"] * 2


async def test_writes_during_heavy_polling_never_overlap_a_read_on_the_serial_line(
    tmp_path: Path,
):
    """The line log shows strict alternation: one request, its reply, then the next."""
    fast = [
        PlantTag(f"t{n}", "holding", 100 + 10 * n, "uint16", wave(f"t{n}", 7.0 + n))
        for n in range(4)
    ]
    for tag in fast:
        tag.interval, tag.min_interval, tag.max_staleness = 0.05, 0.05, 1.0
    devices = [
        PlantDevice("a", 1, [*fast, *bit_tags(40)], max_gap=0),
        PlantDevice("b", 2, matrix_tags()[:6], mask_write=False),
    ]
    plant = Plant("busy", devices).as_rtu(turnaround=0.002)
    async with serve_plant(plant, baudrate=BAUD, line_log=True) as server:
        config = writes_config(plant, server, tmp_path)
        async with run_daemon(config) as daemon:
            await ready(daemon, "a")
            await ready(daemon, "b")
            results = []
            for n in range(12):
                key, value = (
                    (f"a/b{n % 16}", bool(n % 2))
                    if n % 3
                    else (f"b/{MATRIX[n % 6][0]}_{MATRIX[n % 6][1]}_{MATRIX[n % 6][2]}", 1)
                )
                results.append((await daemon.writes.write(key, value, caller=ME)).result)
                await asyncio.sleep(0.05)
            assert results == ["ok"] * 12
        turns = server.lines["line1"].turns()
    assert alternation_problems(turns) == []
    functions = {turn.data[1] for turn in turns if turn.direction == "request"}
    assert {3, 6, 22} <= functions, functions
    reads = sum(turn.data[1] == 3 for turn in turns if turn.direction == "request")
    assert reads > 50  # the writes ran between plenty of reads


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_a_write_without_an_answer_is_read_back_before_it_is_ever_sent_again(
    tmp_path: Path, transport: str
):
    tags = [PlantTag("setpoint", "holding", 0, "uint16", Constant(10.0), writable=True)]
    plant = Plant("lossy", [PlantDevice("pump", 1, tags, timeout=0.3)])
    if transport == "rtu":
        plant = plant.as_rtu(turnaround=0.0)
    async with serve_plant(plant, baudrate=BAUD) as server:
        config = writes_config(plant, server, tmp_path)

        def writes_sent() -> int:
            return sum(r["fc"] == 6 for r in server.request_log.records)

        async with run_daemon(config) as daemon:
            await ready(daemon, "pump")
            # Carried out, but the answer is lost: the read-back shows it, no second write.
            server.lose_writes("pump", "reply")
            outcome = await daemon.writes.write("pump/setpoint", 11, caller=ME)
            assert (outcome.result, outcome.read_back) == ("ok", 11), outcome
            assert "answer was lost" in outcome.message
            assert writes_sent() == 1
            # Lost on the way there: the read-back shows the old value, so write once more.
            server.lose_writes("pump", "request")
            outcome = await daemon.writes.write("pump/setpoint", 12, caller=ME)
            assert (outcome.result, outcome.read_back) == ("ok", 12), outcome
            assert writes_sent() == 3
            # Lost twice: a timeout, after exactly two writes, never a third.
            server.lose_writes("pump", "request", "request")
            outcome = await daemon.writes.write("pump/setpoint", 13, caller=ME)
            assert (outcome.result, outcome.read_back) == ("timeout", 12), outcome
            assert writes_sent() == 5
            assert register(server, "pump", "holding", 0) == [12]


@pytest.mark.parametrize("mask_write", [True, False])
async def test_a_byte_or_bit_field_write_changes_only_its_own_bits(
    tmp_path: Path, mask_write: bool
):
    """int8/uint8 bytes and bit fields are parts of a register: FC22 with their mask,
    or a read-modify-write, and the register's other parts keep their values."""
    tags = [
        PlantTag("hi", "holding", 0, "int8", Constant(-2.0), byte="high", writable=True),
        PlantTag("lo", "holding", 0, "uint8", Constant(0x5A), byte="low"),  # read-only
        PlantTag("mode", "holding", 1, "uint16", Constant(3.0), bit=0, bits=4, writable=True),
        PlantTag("alarm", "holding", 1, "bool", Constant(1.0), bit=4),  # read-only
        PlantTag("gear", "holding", 1, "uint16", Constant(9.0), bit=8, bits=8,
                 byte_order="big", writable=True),
    ]  # fmt: skip
    plant = Plant("parts", [PlantDevice("io", 3, tags, mask_write=mask_write)]).as_rtu(
        turnaround=0.0
    )
    async with serve_plant(plant, baudrate=BAUD) as server:
        config = writes_config(plant, server, tmp_path)
        async with run_daemon(config) as daemon:
            await ready(daemon, "io")
            assert register(server, "io", "holding", 0) == [0xFE5A]
            assert register(server, "io", "holding", 1) == [0x0913]
            for key, value in [("io/hi", -5), ("io/mode", 12), ("io/gear", 200)]:
                outcome = await daemon.writes.write(key, value, caller=ME)
                assert outcome.result == "ok" and outcome.read_back == value, outcome
            assert register(server, "io", "holding", 0) == [0xFB5A]  # low byte untouched
            assert register(server, "io", "holding", 1) == [0xC81C]  # alarm bit untouched
