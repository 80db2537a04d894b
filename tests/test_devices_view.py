"""`devices` tells the truth: resends are slow and visible, refusals are errors,
and an error keeps its time and says when the device recovered from it.

The daemon polls the simulator over real TCP; faults are switched at runtime.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

from conftest import ctl, run_daemon, serve_plant, wait_for
from pymodbus.constants import ExcCodes

from edgeopt.modbus.health import DeviceState
from simulators.plant import Plant, PlantDevice, PlantTag
from simulators.signals import Constant

TIMEOUT = 0.3


def _plant() -> Plant:
    tags = [PlantTag(f"h{i}", "holding", i, "uint16", Constant(100 + i)) for i in range(4)]
    for tag in tags:
        tag.interval, tag.max_staleness = 0.1, 5.0
    return Plant("devices", [PlantDevice("dev", 1, tags, timeout=TIMEOUT, retries=1)])


async def _device(config) -> dict:
    (dev,) = (await ctl(config, "devices"))["result"]
    return dev


async def test_devices_shows_resends_refusals_and_recovery(config_for) -> None:
    plant = _plant()
    async with serve_plant(plant) as server:
        config = config_for(plant, server, optimizer={"enabled": False})
        async with run_daemon(config) as daemon:
            dev = daemon.poller.devices["dev"]
            await wait_for(lambda: dev.stats.reads >= 5)
            first = await _device(config)
            assert first["last_error"] is None and first["retried"] == 0
            assert first["latency_ms"]["p95"] < TIMEOUT * 1000

            # Every second reply is lost: each read needs a resend, and succeeds.
            await server.set_fault("dev", "lossy")
            await wait_for(lambda: dev.stats.retried >= 4, timeout=20)
            await server.set_fault("dev", "none")
            lossy = await _device(config)
            # A read that needed a resend waited a whole timeout first: it is slow,
            # and p95 says so (a resend must not hide behind an error count of 0).
            assert lossy["latency_ms"]["p95"] >= TIMEOUT * 1000
            assert lossy["retried"] >= 4 and lossy["resends"] >= lossy["retried"]

            # ILLEGAL DATA ADDRESS: the device answers (it stays online), the read
            # fails, and last_error says so, with its time.
            await server.set_fault("dev", "exception", code=ExcCodes.ILLEGAL_ADDRESS)
            await wait_for(lambda: dev.stats.exceptions[2] >= 3)
            refused = await _device(config)
            assert refused["exceptions"].get("2", 0) >= 3
            assert "exception 2 (ILLEGAL DATA ADDRESS)" in refused["last_error"]
            assert refused["last_error_ts"] is not None and refused["recovered_ts"] is None
            assert refused["state"] == "online"

            # A dead device: offline, then recovered; the error keeps its time.
            await server.set_fault("dev", "timeout")
            await wait_for(lambda: dev.health.state is DeviceState.OFFLINE, timeout=15)
            down = await _device(config)
            assert down["last_error"].startswith("timeout") and down["recovered_ts"] is None
            await server.set_fault("dev", "none")
            await wait_for(lambda: dev.health.state is DeviceState.ONLINE, timeout=20)
            await wait_for(lambda: dev.health.recovered_ts is not None)
            up = await _device(config)
            assert up["last_error"] == down["last_error"]
            assert up["last_error_ts"] == down["last_error_ts"]
            assert up["recovered_ts"] > up["last_error_ts"]
            assert up["errors_by_kind"]["timeout"] >= 3

            # The table: p95 and retries as columns, the error with its time and recovery.
            socket = str(config.daemon.socket)
            table = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "edgeopt.control.client", "--socket", socket, "devices"],
                capture_output=True,
                text=True,
                timeout=30,
            )
    assert table.returncode == 0, table.stderr
    assert "p95 ms" in table.stdout and "retried" in table.stdout
    assert "(recovered " in table.stdout and "timeout" in table.stdout
