"""Read splits learned from ILLEGAL DATA ADDRESS survive a restart, and only while
the register map they were learned on stays the same.

Three daemon runs on one state dir against a device whose register map has
holes (reads across them are refused), counting refusals on the simulator's side.
"""

from __future__ import annotations

from pathlib import Path

from conftest import run_daemon, serve_plant, wait_for

from edgeopt.daemon import Daemon
from edgeopt.tags import Quality
from simulators.plant import Plant, PlantDevice, PlantTag
from simulators.server import PlantServer
from simulators.signals import Constant


def _plant(extra_tag: bool = False) -> Plant:
    addresses = [0, 1, 5, 6, 14, 20] + ([30] if extra_tag else [])
    tags = [PlantTag(f"r{a}", "holding", a, "uint16", Constant(a + 1)) for a in addresses]
    for tag in tags:
        tag.interval = 0.2
    device = PlantDevice("holes", 1, tags, strict_gaps=True, max_gap=20)
    return Plant("holes", [device])


def _refused(server: PlantServer, since: int) -> int:
    records = list(server.request_log.records)[since:]
    return sum(r["outcome"] == "exception" and r["exception_code"] == 2 for r in records)


async def _run(plant: Plant, server: PlantServer, config_for, tmp_path: Path) -> Daemon:
    config = config_for(plant, server, optimizer={"enabled": False})
    async with run_daemon(config) as daemon:
        await wait_for(
            lambda: all(t.state.quality is Quality.GOOD for t in daemon.poller.tags.values()),
            timeout=15,
        )
        await wait_for(lambda: daemon.poller.devices["holes"].stats.reads >= 10)
    return daemon


async def test_learned_splits_survive_a_restart(config_for, tmp_path: Path) -> None:
    plant = _plant()
    async with serve_plant(plant) as server:
        first = await _run(plant, server, config_for, tmp_path)
        learned = first.poller.devices["holes"].limits.barriers
        assert learned and _refused(server, 0) >= 1  # the first run had to learn them

        mark = len(server.request_log.records)
        second = await _run(plant, server, config_for, tmp_path)
        assert _refused(server, mark) == 0  # no read refused after the restart
        assert second.poller.devices["holes"].stats.exceptions[2] == 0
        assert second.poller.devices["holes"].limits.barriers == learned

        port = int(server.endpoints["holes"].port or 0)

    # A changed register map (one more tag), same device at the same address,
    # invalidates what was learned: the daemon learns afresh.
    changed = _plant(extra_tag=True)
    async with serve_plant(changed, base_port=port) as server:
        third = await _run(changed, server, config_for, tmp_path)
        assert _refused(server, 0) >= 1
        assert third.poller.devices["holes"].limits.barriers
