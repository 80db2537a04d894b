"""Shared fixtures: a simulated plant on real sockets and a daemon polling it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeopt.config import Config, load_config
from edgeopt.control.client import ControlClient
from edgeopt.daemon import Daemon
from simulators.plant import Plant
from simulators.server import PlantServer, RequestLog

# pymodbus logs every frame at debug level; that drowns a failing test's output.
logging.getLogger("pymodbus").setLevel(logging.WARNING)


def write_config(plant: Plant, server: PlantServer, tmp: Path, **extra: Any) -> Path:
    """Write the plant's edgeopt config for the server's endpoints; return its path."""
    cfg = plant.to_config(server.endpoints, str(tmp / "state"), str(tmp / "ctl.sock"))
    for section, values in extra.items():
        # A new dict: the plant's sections may be shared with its module's defaults.
        cfg[section] = {**cfg.get(section, {}), **values}
    path = tmp / "edgeopt.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def serve_plant(plant: Plant, **kwargs: Any) -> AsyncIterator[PlantServer]:
    kwargs.setdefault("base_port", 0)
    kwargs.setdefault("request_log", RequestLog())
    async with PlantServer(plant, **kwargs) as server:
        yield server


@contextlib.asynccontextmanager
async def run_daemon(config: Config) -> AsyncIterator[Daemon]:
    daemon = Daemon(config, handle_signals=False)
    task = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(10):
            ready = asyncio.create_task(daemon.ready.wait())
            await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # raise whatever stopped it
        yield daemon
    finally:
        daemon.stop()
        async with asyncio.timeout(10):
            await task


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Wait until predicate() is true, or fail the test with a timeout."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)


async def ctl(config: Config, cmd: str, **args: Any) -> dict[str, Any]:
    """One control request over the real socket, from a worker thread."""
    client = ControlClient(str(config.daemon.socket))
    return await asyncio.to_thread(client.call, cmd, args)


@pytest.fixture
def config_for(tmp_path: Path):
    def make(plant: Plant, server: PlantServer, **extra: Any) -> Config:
        return load_config(write_config(plant, server, tmp_path, **extra))

    return make
