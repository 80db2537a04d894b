"""The types peers read (int8/uint8 bytes, bit fields, float16, BCD, byte-swapped
strings), served by the simulator's `types` plant and read by the daemon over
real TCP and a pty RTU line; an invalid BCD digit is bad quality, never a value."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest
import yaml
from conftest import run_daemon, serve_plant, wait_for, write_config

from edgeopt.config import load_config
from edgeopt.daemon import DB_NAME
from edgeopt.tags import Quality
from simulators.plant import Plant, PlantTag
from simulators.plants import types_plant
from simulators.signals import Constant


def _matches_truth(tag: PlantTag, value: object, t: float) -> bool:
    """The value equals the plant's truth somewhere in the read's window."""
    for back in (0.0, 0.05, 0.1, 0.2, 0.4, 0.8):
        truth = tag.read_value(t - back)
        if truth == value or (
            isinstance(truth, float) and isinstance(value, float) and math.isnan(truth)
        ):
            return True
    return False


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu"])
async def test_every_peer_type_decodes_to_the_truth(config_for, rtu: bool) -> None:
    plant = types_plant().as_rtu(turnaround=0.0) if rtu else types_plant()
    async with serve_plant(plant, baudrate=19200 if rtu else None) as server:
        config = config_for(plant, server, optimizer={"enabled": False})
        async with run_daemon(config) as daemon:
            tags = daemon.poller.tags
            await wait_for(lambda: all(t.state.quality is Quality.GOOD for t in tags.values()))
            await wait_for(lambda: all(t.state.stats.reads >= 3 for t in tags.values()))
            wrong = [
                f"{key}={t.state.value!r}"
                for key, t in tags.items()
                if not _matches_truth(
                    plant.tag(key), t.state.value, (t.state.ts or 0) - server.clock_start
                )
            ]
    assert wrong == []
    assert tags["peers/serial_little"].state.value == "SN-0042A"
    assert tags["peers/firmware_big"].state.value == pytest.approx(2.13)
    assert len(tags) == 20


async def test_invalid_bcd_is_bad_never_a_value(tmp_path: Path) -> None:
    plant = types_plant()
    # Register 10 holds 0x0A12: as BCD its second digit is "A". The plant serves
    # it as a plain uint16; edgeopt is told it is bcd16.
    device = plant.devices[0]
    device.tags.append(PlantTag("not_bcd", "holding", 10, "uint16", Constant(0x0A12)))
    plant = Plant(plant.name, [device], seed=plant.seed)
    async with serve_plant(plant) as server:
        path = write_config(plant, server, tmp_path, optimizer={"enabled": False})
        raw = yaml.safe_load(path.read_text())
        for tag in raw["devices"][0]["tags"]:
            if tag["name"] == "not_bcd":
                tag["type"] = "bcd16"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        config = load_config(path)
        async with run_daemon(config) as daemon:
            tags = daemon.poller.tags
            bad = tags["peers/not_bcd"]
            await wait_for(lambda: bad.state.ts is not None)  # read, and failed
            await wait_for(
                lambda: all(t.state.quality is Quality.GOOD for t in tags.values() if t is not bad)
            )
            assert bad.state.quality is Quality.BAD
            assert "not BCD" in bad.state.reason
            # Its neighbours in the same block read on.
            block = daemon.poller.read_of("peers/not_bcd")
            assert block is not None and len(block.tags) > 1
    with sqlite3.connect(Path(config.daemon.state_dir) / DB_NAME) as db:
        rows = db.execute(
            "SELECT s.quality FROM samples s JOIN tags t ON t.id = s.tag_id WHERE t.name = ?",
            ("peers/not_bcd",),
        ).fetchall()
    assert all(q != 0 for (q,) in rows)  # never stored as good
