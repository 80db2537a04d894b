"""Real CPU load from other processes raises machine pressure and slows no read.

The daemon polls the simulated plant over real sockets; two busy-looping
subprocesses load the machine; the daemon's own resources job samples it with
psutil. Pressure must go up, and every tag's interval and every planned read's
period must stay exactly as they were (DESIGN.md §9).
"""

from __future__ import annotations

import asyncio
import sys

from conftest import ctl, run_daemon, serve_plant, wait_for

from edgeopt.resources import Pressure
from edgeopt.tags import Quality
from simulators.plants import demo_plant

BURNERS = 2


async def test_cpu_burning_neighbours_raise_pressure_and_slow_no_read(config_for) -> None:
    plant = demo_plant()
    async with serve_plant(plant) as server:
        # Thresholds this low make any real load count; memory and disk stay out of it.
        config = config_for(
            plant, server, resources={"cpu_high": 30, "memory_high": 100, "disk_high": 100}
        )
        async with run_daemon(config) as daemon:
            await wait_for(
                lambda: all(t.state.quality is Quality.GOOD for t in daemon.poller.tags.values()),
                timeout=15,
            )
            priorities = {t.config.priority for t in daemon.poller.tags.values()}
            assert priorities == {"high", "normal", "low"}
            intervals = {k: t.interval for k, t in daemon.poller.tags.items()}
            periods = {r.key: r.period for r in daemon.poller.plan.reads}
            burners = [
                await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
                for _ in range(BURNERS)
            ]
            try:
                for _ in range(4):
                    await asyncio.sleep(0.5)
                    await daemon._job_resources()  # what the 10 s job runs, sooner
                level = daemon.resources.level
                sample = daemon.resources.last
            finally:
                for burner in burners:
                    burner.kill()
                for burner in burners:
                    await burner.wait()
            assert sample is not None and sample.cpu_percent is not None
            assert level.rank >= Pressure.ELEVATED.rank, sample
            assert "cpu_percent" in daemon.resources.reason
            # Reads go on exactly as planned.
            assert {k: t.interval for k, t in daemon.poller.tags.items()} == intervals
            assert {r.key: r.period for r in daemon.poller.plan.reads} == periods
            assert not daemon.resources.shedding.active

            status = (await ctl(config, "status"))["result"]
            assert status["pressure"] in ("elevated", "critical")
            resources = status["resources"]
            assert {"level", "reason", "sample", "deferred", "shedding"} <= resources.keys()
            assert resources["shedding"]["active"] is False
            assert resources["shedding"]["stage"] == "none"
            assert status["optimizer"]["shedding"] == "none"
            kinds = [e.kind for e in daemon.events.recent()]
            assert "pressure" in kinds and "shedding" not in kinds
