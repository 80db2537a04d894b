"""What `edgeoptctl` prints: tables by default, `--json` anywhere, and `top`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_daemon, serve_plant, wait_for, write_config

from edgeopt.config import load_config
from edgeopt.control.client import render
from edgeopt.floats import shortest_float32
from simulators.plants import demo_plant

EDGEOPTCTL = [sys.executable, "-m", "edgeopt.control.client"]


def ctl(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*EDGEOPTCTL, "--socket", str(sock), *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


@pytest.fixture
async def daemon_sock(tmp_path: Path):
    plant = demo_plant()
    async with serve_plant(plant) as server:
        config = load_config(write_config(plant, server, tmp_path))
        async with run_daemon(config) as daemon:
            await wait_for(lambda: daemon.poller.devices["meter1"].stats.reads > 3)
            yield Path(config.daemon.socket)


async def test_every_command_prints_a_table_or_lines_without_json(daemon_sock: Path):
    for args in (
        ("optimize", "quick"),
        ("evaluate",),
        ("strategy", "list"),
        ("strategy", "set", "interval", "min_reads=5"),
        ("strategy", "disable", "pattern"),
        ("strategy", "enable", "pattern"),
        ("stats",),
        ("recommendations",),
        ("history",),
        ("events",),
    ):
        out = (await asyncio.to_thread(ctl, daemon_sock, *args)).stdout
        assert out.strip(), args
        assert not is_json(out), f"{args} printed JSON:\n{out}"
        assert "{" not in out and "}" not in out, f"{args} printed a raw dict:\n{out}"
    listed = (await asyncio.to_thread(ctl, daemon_sock, "strategy", "list")).stdout
    assert "interval" in listed and "cluster" in listed and "pattern" in listed
    toggled = (await asyncio.to_thread(ctl, daemon_sock, "strategy", "disable", "pattern")).stdout
    assert "pattern: disabled (was enabled)" in toggled


async def test_json_is_accepted_anywhere_on_the_line(daemon_sock: Path):
    after = json.loads(
        (await asyncio.to_thread(ctl, daemon_sock, "tags", "--device", "meter1", "--json")).stdout
    )
    before = json.loads(
        (await asyncio.to_thread(ctl, daemon_sock, "--json", "tags", "--device", "meter1")).stdout
    )
    assert {t["device"] for t in after} == {"meter1"}
    assert [t["name"] for t in after] == [t["name"] for t in before]
    strategies = json.loads(
        (await asyncio.to_thread(ctl, daemon_sock, "strategy", "list", "--json")).stdout
    )
    assert {s["name"] for s in strategies} == {"interval", "cluster", "pattern"}


async def test_top_piped_prints_each_frame_and_json_lines(daemon_sock: Path):
    piped = await asyncio.to_thread(
        ctl, daemon_sock, "top", "--iterations", "2", "--interval", "0.1"
    )
    assert piped.stdout.count("busiest tags") == 2, piped.stdout
    lines = (
        await asyncio.to_thread(
            ctl, daemon_sock, "--json", "top", "--iterations", "3", "--interval", "0.1"
        )
    ).stdout.splitlines()
    frames = [json.loads(line) for line in lines]
    assert len(frames) == 3
    for frame in frames:
        assert frame["status"]["tags"] == 64
        assert {d["name"] for d in frame["devices"]} == {"meter1", "inverter1", "drive1", "plc1"}
        assert 0 < len(frame["busiest_tags"]) <= 10


def run_top_on_a_terminal(sock: Path) -> tuple[int | None, str]:
    """`top` on a pseudo-terminal: wait for a frame, press q, see it exit."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*EDGEOPTCTL, "--socket", str(sock), "top", "--interval", "0.2"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"busiest tags" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 65536)
        os.write(master, b"q")
        try:
            code: int | None = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, seen.decode(errors="replace")


async def test_top_on_a_terminal_quits_on_q(daemon_sock: Path):
    code, seen = await asyncio.to_thread(run_top_on_a_terminal, daemon_sock)
    assert "busiest tags" in seen
    assert code == 0, seen[-2000:]


def test_empty_events_and_recommendations_say_so(capsys):
    args = argparse.Namespace()
    render("events", [], args)
    render("recommendations", [], args)
    out = capsys.readouterr().out
    assert "no events yet" in out and "no recommendations" in out


def test_a_recommendation_is_a_sentence_not_a_dict(capsys):
    advice = {
        "priority": "high",
        "kind": "line_over_budget",
        "target": "bus0",
        "message": "line bus0 needs 120% of its time (budget 90%)",
        "expected_impact": {"bus_s_per_s": 0.3, "share": 0.25},
    }
    render("recommendations", [advice], argparse.Namespace())
    out = capsys.readouterr().out
    assert out.startswith("[high] line bus0 needs 120% of its time")
    assert "300 ms of bus time per second" in out and "25.0% of the plan" in out
    assert "{" not in out


async def test_float32_values_print_as_the_shortest_float32(tmp_path: Path):
    """`230.6`, not `230.60000610351562`: in `tags` and in `query` points."""
    plant = demo_plant()
    async with serve_plant(plant) as server:
        config = load_config(write_config(plant, server, tmp_path))
        float32_tags = {
            f"{d.name}/{t.name}" for d in config.devices for t in d.tags if t.type == "float32"
        }
        async with run_daemon(config) as daemon:
            await wait_for(lambda: all(t.state.ts for t in daemon.poller.tags.values()), 15)
            await daemon.store.flush()
            tags = json.loads(
                (await asyncio.to_thread(ctl, config.daemon.socket, "--json", "tags")).stdout
            )
            values = [t["value"] for t in tags if f"{t['device']}/{t['name']}" in float32_tags]
            assert values and all(isinstance(v, float) for v in values)
            assert [repr(v) for v in values] == [repr(shortest_float32(v)) for v in values]
            query = json.loads(
                (
                    await asyncio.to_thread(
                        ctl,
                        config.daemon.socket,
                        "--json",
                        "query",
                        "meter1/voltage_l1",
                        "--since",
                        "-5m",
                    )
                ).stdout
            )
            points = [value for _, value in query["points"]]
            assert points and [repr(v) for v in points] == [
                repr(shortest_float32(v)) for v in points
            ]


async def test_a_reader_that_leaves_early_gets_no_traceback(daemon_sock: Path):
    """`edgeoptctl --json tags | head -1`, with a reader gone before the first byte."""
    shell = f"{' '.join(EDGEOPTCTL)} --socket {daemon_sock} --json tags | true"
    result = await asyncio.to_thread(
        subprocess.run, ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True
    )
    assert "Traceback" not in result.stderr and result.returncode == 0, result.stderr
