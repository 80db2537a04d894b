"""The daemon against the simulated plant: real sockets, real ptys, real SQLite."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math

import pytest
from conftest import ctl, run_daemon, serve_plant, wait_for

from edgeopt.modbus.health import DeviceState
from edgeopt.tags import Quality
from simulators.plants import demo_plant


def all_good(daemon, device: str | None = None) -> bool:
    return all(
        t.state.quality is Quality.GOOD
        for t in daemon.poller.tags.values()
        if device is None or t.device == device
    )


def matches_truth(plant, server, key: str, value, ts: float) -> bool:
    """The value equals the plant's truth somewhere in the read's window."""
    tag = plant.tag(key)
    t = ts - server.clock_start
    for back in (0.0, 0.05, 0.1, 0.2, 0.4):
        truth = tag.read_value(t - back)
        if isinstance(truth, float) and isinstance(value, float):
            if truth == value or (math.isnan(truth) and math.isnan(value)):
                return True
        elif truth == value:
            return True
    return False


async def test_every_tag_decodes_to_the_plants_truth(config_for):
    """Planner, transport and codec agree with the simulator on all 64 tags."""
    plant = demo_plant()
    async with serve_plant(plant) as server:
        config = config_for(plant, server)
        async with run_daemon(config) as daemon:
            await wait_for(lambda: all_good(daemon), timeout=15)
            wrong = [
                key
                for key, tag in daemon.poller.tags.items()
                if not matches_truth(plant, server, key, tag.state.value, tag.state.ts)
            ]
            assert wrong == []
            assert len(daemon.poller.tags) == 64


async def test_status_devices_tags_and_query_over_the_socket(config_for):
    plant = demo_plant()
    async with serve_plant(plant) as server:
        config = config_for(plant, server)
        async with run_daemon(config) as daemon:
            await wait_for(lambda: all_good(daemon), timeout=15)
            await wait_for(lambda: daemon.rates.rates()["reads_per_s"] > 0, timeout=5)
            status = (await ctl(config, "status"))["result"]
            assert status["devices"] == {
                "total": 4,
                "online": 4,
                "degraded": 0,
                "offline": 0,
            }
            assert status["tags"] == 64 and status["reads_per_s"] > 0
            assert set(status["bus_load"]) == {d.line for d in daemon.poller.devices.values()}

            devices = (await ctl(config, "devices"))["result"]
            assert {d["name"] for d in devices} == {"meter1", "inverter1", "drive1", "plc1"}
            assert all(d["reads"] > 0 and d["latency_ms"]["p50"] is not None for d in devices)

            tags = (await ctl(config, "tags", device="meter1"))["result"]
            assert len(tags) == 15 and all(t["device"] == "meter1" for t in tags)
            serial = next(t for t in tags if t["name"] == "serial_number")
            assert serial["value"] == plant.tag("meter1/serial_number").value(0)

            missing = await ctl(config, "tags", device="nope")
            assert missing["error"]["code"] == "not_found"

            await daemon.store.flush()
            reply = await ctl(config, "query", tag="meter1/voltage_l1", since="-1m")
            points = reply["result"]["points"]
            assert reply["result"]["tiers"] == ["hot"] and len(points) >= 1
            assert [p[0] for p in points] == sorted(p[0] for p in points)
            bad = await ctl(config, "query", tag="meter1/voltage_l1", since="yesterday-ish")
            assert bad["error"]["code"] == "invalid_args"


async def test_dead_device_never_delays_the_others(config_for):
    plant = demo_plant()
    async with serve_plant(plant, faults={"meter1": "timeout"}) as server:
        config = config_for(plant, server)
        async with run_daemon(config) as daemon:
            await wait_for(
                lambda: daemon.poller.devices["meter1"].health.state is DeviceState.OFFLINE,
                timeout=15,
            )
            start = len(server.request_log.records)
            await asyncio.sleep(4.0)
            records = list(server.request_log.records)[start:]
            # drive1 has reads at 1 s: the dead meter never held them up.
            drive = sorted(r["ts"] for r in records if r["device"] == "drive1")
            gaps = [b - a for a, b in itertools.pairwise(drive)]
            assert drive and max(gaps) < 1.5
            meter = daemon.poller.devices["meter1"]
            assert meter.stats.errors_by_kind["timeout"] >= 3
            assert all(
                daemon.poller.tags[k].state.quality is Quality.BAD
                for k in daemon.poller.tags
                if k.startswith("meter1/")
            )
            events = [e.kind for e in daemon.events.recent()]
            assert "device_offline" in events


async def test_exceptions_and_garbage_are_recorded_and_devices_recover(config_for):
    plant = demo_plant()
    async with serve_plant(plant) as server:
        config = config_for(plant, server)
        async with run_daemon(config) as daemon:
            await wait_for(lambda: all_good(daemon, "drive1"), timeout=15)
            drive = daemon.poller.devices["drive1"]

            await server.set_fault("drive1", "exception")  # SERVER DEVICE BUSY (6)
            await wait_for(lambda: drive.stats.exceptions[6] >= 2)
            tag = daemon.poller.tags["drive1/speed"]
            await wait_for(lambda: tag.state.quality is Quality.BAD)
            assert "exception 6" in tag.state.reason

            await server.set_fault("drive1", "garbage")
            before = drive.stats.errors
            await wait_for(lambda: drive.stats.errors > before + 1, timeout=15)
            assert drive.health.state is not DeviceState.ONLINE

            await server.set_fault("drive1", "none")
            await wait_for(lambda: drive.health.state is DeviceState.ONLINE, timeout=70)
            await wait_for(lambda: all_good(daemon, "drive1"), timeout=15)
            kinds = [e.kind for e in daemon.events.recent()]
            assert "device_online" in kinds
            # The other devices never noticed.
            assert daemon.poller.devices["meter1"].stats.errors == 0


async def test_illegal_address_splits_the_read_and_the_plan_remembers(config_for):
    plant = demo_plant()  # plc1 has strict gaps: merged reads across them are refused
    async with serve_plant(plant) as server:
        config = config_for(plant, server)
        async with run_daemon(config) as daemon:
            await wait_for(lambda: all_good(daemon, "plc1"), timeout=20)
            plc = daemon.poller.devices["plc1"]
            assert plc.limits.barriers
            refused = plc.stats.exceptions[2]
            await asyncio.sleep(2.5)
            assert plc.stats.exceptions[2] == refused  # no read is refused twice
            plan_reads = [r for r in daemon.poller.plan.reads if r.device == "plc1"]
            assert all(len(r.tags) >= 1 for r in plan_reads)


@pytest.mark.parametrize("baudrate", [None, 19200])
async def test_rtu_line_shared_by_all_units(config_for, baudrate):
    """Four unit ids on one pty line: one worker, one request in flight, all read."""
    plant = demo_plant().as_rtu()
    async with serve_plant(plant, baudrate=baudrate) as server:
        config = config_for(plant, server)
        assert {d.transport for d in config.devices} == {"rtu"}
        async with run_daemon(config) as daemon:
            assert len(daemon.workers) == 1
            await wait_for(lambda: all_good(daemon), timeout=30)
            wrong = [
                key
                for key, tag in daemon.poller.tags.items()
                if not matches_truth(plant, server, key, tag.state.value, tag.state.ts)
            ]
            assert wrong == []
            # The line never saw two requests at once (each starts after the last ended).
            log = [r for r in server.request_log.records if r["outcome"] == "ok"]
            assert len({r["unit"] for r in log}) == 4


async def test_log_and_status_agree_on_the_plan_and_the_hot_samples(config_for, caplog):
    """The plan changes after start (plc1's holes split reads): the log follows it; and
    `status` counts the hot samples written since the last storage measurement."""
    caplog.set_level(logging.INFO, logger="edgeopt.daemon")
    plant = demo_plant()
    async with serve_plant(plant) as server:
        config = config_for(plant, server)
        async with run_daemon(config) as daemon:
            first = daemon.poller.plan.summary()
            await wait_for(lambda: daemon.poller.plan.summary() != first, timeout=15)
            await asyncio.sleep(2.5)  # splits settle; the 1 s stats job logs
            await daemon.store.flush()
            status = (await ctl(config, "status"))["result"]
            logged = [r.getMessage() for r in caplog.records if "read plan" in r.getMessage()]
            assert logged[-1].endswith(status["plan"]["summary"]), logged
            storage = status["storage"]
            assert storage["rows_written"] > 0
            assert storage["tiers"]["hot"]["samples"] == storage["rows_written"]
