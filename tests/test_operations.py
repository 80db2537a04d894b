"""Daemon operations: reload, systemd notify, access control and audit, metrics, fuzzing."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ctl, run_daemon, serve_plant, wait_for, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeopt.config import load_config
from simulators.plants import demo_plant, large_plant

ROOT = Path(__file__).resolve().parent.parent
EDGEOPT = [sys.executable, "-m", "edgeopt.cli"]
EDGEOPTCTL = [sys.executable, "-m", "edgeopt.control.client"]
NOBODY = 65534


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ctl_process(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGEOPTCTL, "--socket", str(sock), *args], capture_output=True, text=True, timeout=30
    )


def request_as(uid: int, sock: Path, cmd: str, args: dict | None = None) -> dict:
    """One control request from a forked child running as `uid` (tests run as root).

    A fork needs no interpreter or files the other user could not reach.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, ask, report back through the pipe
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(10)
                conn.connect(str(sock))
                conn.sendall(json.dumps({"id": 1, "cmd": cmd, "args": args or {}}).encode() + b"\n")
                reply = b""
                while not reply.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
            os.write(write_end, reply)
        except BaseException as exc:
            os.write(write_end, json.dumps({"child_error": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


def edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


async def test_broken_reload_keeps_the_running_config(tmp_path: Path):
    plant = demo_plant()
    async with serve_plant(plant) as server:
        path = write_config(plant, server, tmp_path)
        config = load_config(path)
        async with run_daemon(config) as daemon:
            await wait_for(lambda: daemon.poller.devices["meter1"].stats.reads > 2)
            good = path.read_text()
            path.write_text(good.replace("interval: 1s", "interval: fast", 1))
            result = await asyncio.to_thread(ctl_process, config.daemon.socket, "reload")
            assert result.returncode == 1
            assert "invalid_config" in result.stderr and f"{path}:" in result.stderr
            assert "interval" in result.stderr
            assert daemon.config is config  # still the old one
            reads = daemon.poller.devices["meter1"].stats.reads
            await wait_for(lambda: daemon.poller.devices["meter1"].stats.reads > reads + 2)
            kinds = [e.kind for e in daemon.events.recent()]
            assert "config_reload_failed" in kinds


async def test_good_reload_keeps_unchanged_tags_and_connections(tmp_path: Path):
    """Add a device and change one tag: everything else keeps state and connection."""
    plant = demo_plant()
    async with serve_plant(plant) as server:
        path = write_config(plant, server, tmp_path)
        edit_yaml(
            path, lambda d: d.update(devices=[x for x in d["devices"] if x["name"] != "plc1"])
        )
        config = load_config(path)
        async with run_daemon(config) as daemon:
            poller = daemon.poller
            await wait_for(lambda: all(t.state.stats.reads >= 1 for t in poller.tags.values()))
            before = dict(poller.tags)
            reads_before = {k: t.state.stats.reads for k, t in before.items()}
            connections = dict(server.connections)
            assert set(connections) == {"meter1", "inverter1", "drive1"}

            def change(data: dict) -> None:
                fresh = yaml.safe_load(write_config(plant, server, tmp_path / "full").read_text())
                data["devices"].append(next(x for x in fresh["devices"] if x["name"] == "plc1"))
                meter = next(x for x in data["devices"] if x["name"] == "meter1")
                meter["tags"][0]["interval"] = "2s"

            (tmp_path / "full").mkdir()
            edit_yaml(path, change)
            reply = await ctl(config, "reload")
            assert reply["ok"], reply
            assert reply["result"]["added"] == ["plc1"]
            assert reply["result"]["changed"] == ["meter1"]
            changed = "meter1/voltage_l1"
            assert poller.tags[changed] is not before[changed]
            assert poller.tags[changed].interval == 2.0
            for key, tag in before.items():
                if key != changed:
                    assert poller.tags[key] is tag  # same state, statistics, learned interval
                    assert tag.state.stats.reads >= reads_before[key]
            await wait_for(lambda: all(t.state.stats.reads >= 1 for t in poller.tags.values()))
            await asyncio.sleep(1.0)
            # No unchanged device reconnected; the new one connected once.
            for name, count in connections.items():
                assert server.connections[name] == count
            assert server.connections["plc1"] == 1
            assert "config_reloaded" in [e.kind for e in daemon.events.recent()]


async def test_reload_applies_a_new_log_level(tmp_path: Path):
    plant = demo_plant()
    async with serve_plant(plant) as server:
        path = write_config(plant, server, tmp_path)
        config = load_config(path)
        root = logging.getLogger()
        level = root.level
        try:
            async with run_daemon(config) as daemon:
                edit_yaml(path, lambda d: d["daemon"].update(log_level="debug"))
                await daemon.reload()
                assert root.level == logging.DEBUG
        finally:
            root.setLevel(level)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory other users can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="edgeopt-ops-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_non_admin_is_forbidden_and_every_attempt_is_audited(open_dir: Path):
    plant = demo_plant()
    async with serve_plant(plant) as server:
        path = write_config(plant, server, open_dir)
        edit_yaml(path, lambda d: d["daemon"].update(socket_group="nogroup"))
        config = load_config(path)
        sock = Path(config.daemon.socket)
        async with run_daemon(config) as daemon:
            info = await asyncio.to_thread(sock.stat)
            assert oct(info.st_mode & 0o777) == "0o660" and info.st_gid == NOBODY
            status = await asyncio.to_thread(request_as, NOBODY, sock, "status")
            assert status["ok"], status  # read-only: anyone who can open the socket
            listed = await asyncio.to_thread(
                request_as, NOBODY, sock, "strategy", {"action": "list"}
            )
            assert listed["ok"], listed  # strategy list only reads: open too, not audited
            for cmd, args in (
                ("reload", {}),
                ("optimize", {"mode": "quick"}),
                ("strategy", {"action": "disable", "name": "interval"}),
            ):
                denied = await asyncio.to_thread(request_as, NOBODY, sock, cmd, args)
                assert denied["ok"] is False and denied["error"]["code"] == "forbidden", denied
            allowed = await asyncio.to_thread(ctl_process, sock, "reload")
            assert allowed.returncode == 0, allowed.stderr
            db = daemon.state_dir / "edgeopt.db"
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "SELECT uid, pid, command, args, result FROM audit ORDER BY id"
            ).fetchall()
        assert [(r[0], r[2], r[4]) for r in rows] == [
            (NOBODY, "reload", "forbidden"),
            (NOBODY, "optimize", "forbidden"),
            (NOBODY, "strategy", "forbidden"),
            (0, "reload", "ok"),
        ]
        assert json.loads(rows[1][3]) == {"mode": "quick"}
        assert all(r[1] > 0 for r in rows)


async def test_notify_ready_watchdog_stopping_in_order(tmp_path: Path):
    notify_path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.setblocking(False)
    plant = demo_plant()
    async with serve_plant(plant) as server:
        path = write_config(plant, server, tmp_path)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "200000"}
        proc = await asyncio.create_subprocess_exec(
            *EDGEOPT, "run", "--config", str(path), env=env, stderr=asyncio.subprocess.PIPE
        )
        messages: list[str] = []

        async def collect(until: float) -> None:
            loop = asyncio.get_running_loop()
            end = loop.time() + until
            while loop.time() < end:
                try:
                    messages.append(receiver.recv(4096).decode())
                except BlockingIOError:
                    await asyncio.sleep(0.02)

        async with asyncio.timeout(20):
            while not any("READY=1" in m for m in messages):
                await collect(0.2)
        await collect(1.5)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)
        await collect(0.3)
        receiver.close()
        assert proc.returncode == 0
        kinds = []
        for m in messages:
            for key in ("READY=1", "WATCHDOG=1", "STOPPING=1"):
                if key in m.split("\n"):
                    kinds.append(key)
        assert kinds[0] == "READY=1"
        assert kinds[-1] == "STOPPING=1"
        watchdogs = kinds[1:-1]
        assert len(watchdogs) >= 5 and set(watchdogs) == {"WATCHDOG=1"}
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in messages)


async def test_sigterm_under_load_loses_no_acknowledged_sample(tmp_path: Path):
    plant = large_plant(2000, 20, seed=3)
    async with serve_plant(plant) as server:
        path = write_config(plant, server, tmp_path)
        proc = await asyncio.create_subprocess_exec(
            *EDGEOPT, "run", "--config", str(path), stderr=asyncio.subprocess.PIPE
        )
        sock = tmp_path / "ctl.sock"
        acknowledged = 0
        async with asyncio.timeout(60):
            while acknowledged < 3000:
                await asyncio.sleep(0.3)
                reply = await asyncio.to_thread(ctl_process, sock, "--json", "status")
                if reply.returncode == 0:
                    storage = json.loads(reply.stdout)["storage"]
                    acknowledged = storage["rows_written"] + storage["buffered"]
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err.decode()[-2000:]
        with sqlite3.connect(tmp_path / "state" / "edgeopt.db") as conn:
            stored = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        assert stored >= acknowledged


async def test_metrics_endpoint(tmp_path: Path):
    plant = demo_plant()
    port = free_port()
    async with serve_plant(plant) as server:
        path = write_config(plant, server, tmp_path, metrics={"listen": f"127.0.0.1:{port}"})
        config = load_config(path)
        async with run_daemon(config) as daemon:
            await wait_for(lambda: daemon.poller.devices["meter1"].stats.reads > 3)
            await wait_for(lambda: bool(daemon.rates.rates()["bus_load"]), timeout=10)
            url = f"http://127.0.0.1:{port}/metrics"
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        text = body.decode()
        assert 'edgeopt_reads_total{device="meter1"}' in text
        assert 'edgeopt_read_latency_seconds{device="meter1",quantile="0.99"}' in text
        assert 'edgeopt_tags{quality="good"}' in text
        assert "edgeopt_bus_load{line=" in text
        assert 'edgeopt_storage_bytes{tier="hot"}' in text
        assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text


async def test_events_follow_streams_a_reload(tmp_path: Path):
    plant = demo_plant()
    async with serve_plant(plant) as server:
        path = write_config(plant, server, tmp_path)
        config = load_config(path)
        async with run_daemon(config) as daemon:
            follower = await asyncio.create_subprocess_exec(
                *EDGEOPTCTL,
                "--socket",
                str(config.daemon.socket),
                "--json",
                "events",
                "--follow",
                stdout=asyncio.subprocess.PIPE,
            )
            await asyncio.sleep(1.0)
            await daemon.reload()
            line = await asyncio.wait_for(follower.stdout.readline(), 10)
            follower.terminate()
            await follower.wait()
            assert json.loads(line)["kind"] == "config_reloaded"


def test_systemd_unit_verifies(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (make test installs Debian's systemd package)"
    unit = (ROOT / "systemd" / "edgeopt.service").read_text()
    binary = Path(sys.executable).parent / "edgeopt"
    (tmp_path / "edgeopt.service").write_text(unit.replace("/usr/local/bin/edgeopt", str(binary)))
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "edgeopt.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for key in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=edgeopt"):
        assert key in unit


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payloads=st.lists(st.binary(max_size=200), min_size=1, max_size=5))
async def test_running_daemon_survives_socket_fuzz(daemon_for_fuzz, payloads):
    config = daemon_for_fuzz
    for payload in payloads:
        _, writer = await asyncio.open_unix_connection(str(config.daemon.socket))
        writer.write(payload)
        await writer.drain()
        writer.close()
    reply = await ctl(config, "status")
    assert reply["ok"]


@pytest.fixture
async def daemon_for_fuzz(tmp_path: Path):
    plant = demo_plant()
    async with serve_plant(plant) as server:
        config = load_config(write_config(plant, server, tmp_path))
        async with run_daemon(config):
            yield config


async def test_optimizer_commands_and_top_through_edgeoptctl(tmp_path: Path):
    plant = demo_plant()
    async with serve_plant(plant) as server:
        config = load_config(write_config(plant, server, tmp_path))
        sock = Path(config.daemon.socket)
        async with run_daemon(config) as daemon:
            await wait_for(lambda: daemon.poller.devices["meter1"].stats.reads > 3)

            async def ctl_json(*args: str):
                result = await asyncio.to_thread(ctl_process, sock, "--json", *args)
                assert result.returncode == 0, result.stderr
                return json.loads(result.stdout)

            strategies = await ctl_json("strategy", "list")
            assert {s["name"] for s in strategies} == {"interval", "cluster", "pattern"}
            await ctl_json("strategy", "disable", "pattern")
            assert not daemon.optimizer.strategies["pattern"].enabled
            await ctl_json("strategy", "enable", "pattern")
            assert daemon.optimizer.strategies["pattern"].enabled
            bad = await asyncio.to_thread(
                ctl_process, sock, "strategy", "set", "interval", "nope=1"
            )
            assert bad.returncode == 1 and "invalid_args" in bad.stderr
            unknown = await asyncio.to_thread(ctl_process, sock, "strategy", "enable", "magic")
            assert unknown.returncode == 1 and "not_found" in unknown.stderr

            await ctl_json("optimize", "quick")
            assert daemon.optimizer.last_quick is not None
            await ctl_json("evaluate")
            stats = await ctl_json("stats")
            assert {"optimizations", "successful", "rolled_back", "strategies"} <= set(stats)
            history = await ctl_json("history", "--limit", "5")
            assert isinstance(history, list)
            for record in history:
                assert record["outcome"] in ("kept", "rolled_back", "pending")
            assert isinstance(await ctl_json("recommendations"), list)
            status = await ctl_json("status")
            assert status["optimizer"]["last_quick"] is not None
            assert status["pressure"] in ("normal", "elevated", "critical")
            assert "tiers" in status["storage"]

            top = await asyncio.to_thread(
                ctl_process, sock, "top", "--iterations", "1", "--interval", "0.1"
            )
            assert top.returncode == 0, top.stderr
            assert "busiest tags" in top.stdout and "meter1" in top.stdout


async def test_stop_with_clients_and_a_running_job_logs_no_traceback(tmp_path: Path, caplog):
    """SIGTERM's path: connected control clients and a storage job mid-run end quietly."""
    plant = demo_plant()
    async with serve_plant(plant) as server:
        config = load_config(
            write_config(plant, server, tmp_path, storage={"lifecycle_interval": "200ms"})
        )
        sock = str(config.daemon.socket)
        caplog.set_level(logging.INFO)
        async with run_daemon(config) as daemon:
            started = asyncio.Event()

            async def slow_lifecycle(**kwargs: Any) -> Any:
                started.set()
                await asyncio.sleep(3600)  # an archive that takes its time

            daemon.tiers.run_lifecycle = slow_lifecycle
            idle = [await asyncio.open_unix_connection(sock) for _ in range(3)]
            reader, writer = await asyncio.open_unix_connection(sock)
            writer.write(b'{"cmd": "events", "args": {"follow": true}}\n')
            await writer.drain()
            async with asyncio.timeout(10):
                await started.wait()
        for _, w in [*idle, (reader, writer)]:
            w.close()
    noisy = [
        f"{r.name} {r.levelname}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info
    ]
    assert noisy == []
