"""The daemon's own process never loads numpy or pydantic: their work runs in children.

numpy (20 MB of RSS) stays a dependency of the forked children, the cluster
worker and the storage codec worker; pydantic (9 MB with the config's
schemas) of the forked child that validates the config. These tests look at
the daemon process itself.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from conftest import serve_plant, write_config
from test_cli import ctl, start_daemon, wait_all_good, wait_ready

from simulators.plants import demo_plant


def mapped(pid: int, package: str = "numpy") -> list[str]:
    """The files of `package` mapped into process `pid` (its extension modules, once imported)."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({line.split()[-1] for line in maps if f"/{package}" in line})


def test_importing_the_daemon_leaves_numpy_and_pydantic_out() -> None:
    code = (
        "import sys, edgeopt.cli, edgeopt.daemon, edgeopt.storage, edgeopt.optimizer.loop; "
        "print(sorted({'numpy', 'pydantic', 'pydantic_core', 'yaml'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_check_sees_numpy_in_a_process_that_loaded_it() -> None:
    """The probe itself: a process with numpy imported shows its files in the maps."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import numpy, sys; print('up', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        assert any("_multiarray_umath" in path for path in mapped(proc.pid))
    finally:
        proc.kill()
        proc.wait()


async def test_a_running_daemon_optimizes_queries_and_reloads_without_numpy_or_pydantic(
    tmp_path: Path,
) -> None:
    """Optimizer cycles, an evaluation, a query, a reload: the daemon maps no numpy or pydantic."""
    plant = demo_plant()
    async with serve_plant(plant) as server:
        config = write_config(plant, server, tmp_path, optimizer={"evaluate_after": "40s"})
        sock = tmp_path / "ctl.sock"
        proc = await start_daemon(config)
        try:
            await wait_ready(sock, proc)
            await wait_all_good(sock)
            await asyncio.sleep(12)  # two closed activity windows (5 s each)
            for args in (("optimize", "quick"), ("optimize", "full"), ("evaluate",)):
                reply = await ctl(sock, "--json", *args)
                assert reply.returncode == 0, reply.stderr
            tags = json.loads((await ctl(sock, "--json", "tags")).stdout)
            points = await ctl(sock, "--json", "query", f"{tags[0]['device']}/{tags[0]['name']}")
            assert points.returncode == 0, points.stderr
            assert json.loads(points.stdout)["points"], points.stdout
            for args in (("stats",), ("recommendations",), ("history",), ("reload",)):
                reply = await ctl(sock, "--json", *args)
                assert reply.returncode == 0, reply.stderr
            assert mapped(proc.pid) == []
            assert mapped(proc.pid, "pydantic") == []
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0


def test_the_check_sees_pydantic_in_a_process_that_validated_a_config() -> None:
    """The probe for pydantic: validating a config maps pydantic-core's extension."""
    code = (
        "import sys; from edgeopt.config import parse_config; "
        "parse_config('devices: [{name: d, transport: tcp, host: h, "
        "tags: [{name: t, table: input, address: 0, type: int16}]}]'); "
        "print('up', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        assert any("_pydantic_core" in path for path in mapped(proc.pid, "pydantic"))
    finally:
        proc.kill()
        proc.wait()
