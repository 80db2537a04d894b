"""The `edgeopt` and `edgeoptctl` commands as real processes: exit codes and lifecycle."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import serve_plant, write_config
from ports import DEMO_DEVICES, free_port_run

from simulators.plants import demo_plant

ROOT = Path(__file__).resolve().parent.parent
EDGEOPT = [sys.executable, "-m", "edgeopt.cli"]
EDGEOPTCTL = [sys.executable, "-m", "edgeopt.control.client"]


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kwargs)


def test_check_config_ok_and_invalid(tmp_path: Path):
    ok = run([*EDGEOPT, "check-config", str(ROOT / "config" / "edgeopt.yaml")])
    assert ok.returncode == 0 and ok.stdout.strip() == "ok"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "devices:\n"
        "  - name: m\n"
        "    transport: tcp\n"
        "    host: 127.0.0.1\n"
        "    tags:\n"
        "      - name: p\n"
        "        table: input\n"
        "        address: 0\n"
        "        type: float32\n"
        "        intervall: 1s\n"
    )
    result = run([*EDGEOPT, "check-config", str(bad)])
    assert result.returncode == 2
    assert f"{bad}:10: devices[0].tags[0].intervall" in result.stderr
    missing = run([*EDGEOPT, "check-config", str(tmp_path / "nope.yaml")])
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr


def test_run_with_an_invalid_config_exits_2(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("devices: []\nbogus: 1\n")
    result = run([*EDGEOPT, "run", "--config", str(bad)])
    assert result.returncode == 2 and "bogus" in result.stderr


def test_edgeoptctl_cannot_reach_the_daemon(tmp_path: Path):
    result = run([*EDGEOPTCTL, "--socket", str(tmp_path / "none.sock"), "status"])
    assert result.returncode == 3 and "cannot reach edgeopt" in result.stderr
    usage = run([*EDGEOPTCTL, "frobnicate"])
    assert usage.returncode == 2


async def start_daemon(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *EDGEOPT,
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def ctl(socket: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, [*EDGEOPTCTL, "--socket", str(socket), *args])


async def wait_ready(socket: Path, proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(20):
        while True:
            if proc.returncode is not None:
                _, err = await proc.communicate()
                pytest.fail(f"daemon exited {proc.returncode}: {err.decode()}")
            if (await ctl(socket, "status")).returncode == 0:
                return
            await asyncio.sleep(0.2)


async def wait_all_good(socket: Path) -> None:
    async with asyncio.timeout(20):
        while True:
            reply = await ctl(socket, "--json", "tags")
            tags = json.loads(reply.stdout) if reply.returncode == 0 else []
            if tags and all(t["quality"] == "good" for t in tags):
                return
            await asyncio.sleep(0.2)


def stored_tags(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(DISTINCT tag_id) FROM samples").fetchone()[0])


def rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])


async def test_daemon_process_lifecycle(tmp_path: Path):
    """SIGTERM flushes and exits 0; a second daemon is refused; kill -9 corrupts nothing."""
    plant = demo_plant()
    async with serve_plant(plant) as server:
        config = write_config(plant, server, tmp_path)
        socket, db = tmp_path / "ctl.sock", tmp_path / "state" / "edgeopt.db"

        first = await start_daemon(config)
        await wait_ready(socket, first)
        second = await start_daemon(config)
        _, err = await asyncio.wait_for(second.communicate(), 20)
        assert second.returncode == 1 and "already running" in err.decode()

        status = await ctl(socket, "--json", "status")
        assert status.returncode == 0 and json.loads(status.stdout)["tags"] == 64
        missing = await ctl(socket, "query", "meter1/nope")
        assert missing.returncode == 1 and "not_found" in missing.stderr

        await wait_all_good(socket)
        first.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(first.communicate(), 5)
        assert first.returncode == 0, err.decode()
        stored = rows(db)
        assert stored_tags(db) == 64  # every tag's first value, flushed on the way out

        # kill -9 in mid-flight: the file stays consistent and the next run carries on.
        third = await start_daemon(config)
        await wait_ready(socket, third)
        await asyncio.sleep(2.5)
        third.kill()
        await third.wait()
        after_kill = rows(db)
        assert after_kill >= stored

        fourth = await start_daemon(config)
        await wait_ready(socket, fourth)
        await asyncio.sleep(1.5)
        fourth.send_signal(signal.SIGTERM)
        await asyncio.wait_for(fourth.communicate(), 5)
        assert fourth.returncode == 0
        assert rows(db) > after_kill


def test_demo_script_starts_the_plant_and_daemon_and_queries_them(tmp_path: Path):
    """`make demo`'s script, on its own ports and state dir, for one second."""
    base = free_port_run(DEMO_DEVICES)
    env = {
        **os.environ,
        "DEMO_SECONDS": "1",
        "DEMO_BASE_PORT": str(base),
        "DEMO_STATE": str(tmp_path / "demo"),
    }
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "edgeopt.log").write_text("the previous run's log\n")
    result = subprocess.run(
        [str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True, timeout=90, env=env
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "devices 4 (online 4, degraded 0, offline 0)" in out
    assert "meter1/voltage_l1" in out and "Press Ctrl-C to stop" in out
    assert "demo stopped" in out
    # The previous run's log is kept beside this run's.
    assert (tmp_path / "demo" / "edgeopt.log.1").read_text() == "the previous run's log\n"
    assert "edgeopt running" in (tmp_path / "demo" / "edgeopt.log").read_text()


async def test_clean_stop_prints_no_traceback_and_no_scheduler_chatter(tmp_path: Path):
    """A few seconds of `edgeopt run` with control clients connected, then SIGTERM."""
    plant = demo_plant()
    async with serve_plant(plant) as server:
        config = write_config(plant, server, tmp_path)
        sock = tmp_path / "ctl.sock"
        proc = await start_daemon(config)
        await wait_ready(sock, proc)
        clients = [await asyncio.open_unix_connection(str(sock)) for _ in range(3)]
        follow = await asyncio.create_subprocess_exec(
            *EDGEOPTCTL,
            "--socket",
            str(sock),
            "events",
            "--follow",
            stdout=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(3)  # the 1 s stats job runs a few times
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        await asyncio.wait_for(follow.wait(), 10)  # the stream ends with the daemon
        for _, writer in clients:
            writer.close()
    log = err.decode()
    assert proc.returncode == 0, log
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "apscheduler" not in log, log  # job runs are DEBUG now
    assert "read plan:" in log and "edgeopt running" in log and "stopped" in log
