"""The daemon's own process never loads numpy (20 MB of RSS): its numeric work runs in children.

numpy stays a dependency of the forked children, the cluster worker and the
storage codec worker; these tests look at the daemon process itself.
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


def numpy_mapped(pid: int) -> list[str]:
    """The numpy files mapped into process `pid` (its extension modules, once imported)."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({line.split()[-1] for line in maps if "/numpy" in line})


def test_importing_the_daemon_leaves_numpy_out() -> None:
    code = (
        "import sys, edgeopt.cli, edgeopt.daemon, edgeopt.storage, edgeopt.optimizer.loop; "
        "print('numpy' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


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
        assert any("_multiarray_umath" in path for path in numpy_mapped(proc.pid))
    finally:
        proc.kill()
        proc.wait()


async def test_a_running_daemon_optimizes_and_queries_without_numpy(tmp_path: Path) -> None:
    """Quick and full optimizer cycles, an evaluation and a query: the daemon maps no numpy."""
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
            for args in (("stats",), ("recommendations",), ("history",)):
                assert (await ctl(sock, "--json", *args)).returncode == 0
            assert numpy_mapped(proc.pid) == []
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
