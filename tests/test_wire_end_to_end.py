"""Wire faults end to end: the daemon, a real SQLite file, the faulty simulator.

For each wire fault of the simulator (FAULT_MODES), on TCP and on a pty RTU
line where it applies, the daemon polls a device whose registers are
counters, each in its own band of values, while the fault is switched on and
off again. Afterwards every sample the daemon stored with quality `good` must
be a value that register really held in the read's time window (a reply
taken for another request's answer lands in another band), the error
counters the `devices` command shows must name the fault, and the device
must read well again once the fault is gone.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from conftest import ctl, run_daemon, serve_plant, wait_for

from edgeopt.daemon import DB_NAME
from edgeopt.storage.schema import QUALITY_NAMES, decode_value
from edgeopt.tags import Quality
from simulators.plant import Plant, PlantDevice, PlantTag
from simulators.server import PlantServer
from simulators.signals import Constant, Counter

TIMEOUT = 0.3
RETRIES = 1
RATE = 20.0  # counts per second of every counter register
BAND = 1000  # each register counts in its own band: band k holds k*BAND + small
# A good value was read at most this long before it was stored: every attempt
# waits a timeout and a drain, plus scheduling slack on a busy machine.
WINDOW = (RETRIES + 1) * 2 * TIMEOUT + 0.5

# mode -> error kinds the device's counters must show (empty: none at all).
TCP_FAULTS = {
    "late": {"late"},
    "wrong_function": {"garbage"},
    "wrong_unit": {"foreign"},
    "truncated": {"garbage"},
    "bad_crc": {"garbage"},  # TCP has no CRC: the byte count is wrong instead
    "noise": {"garbage"},
    "bytewise": set(),
    "reset": {"connection"},
    "wrong_tid": {"foreign"},
    "tid_zero": {"foreign"},
}
RTU_FAULTS = {
    "late": {"late"},
    "wrong_function": {"garbage"},
    "wrong_unit": {"foreign"},
    "truncated": {"garbage"},
    "bad_crc": {"garbage"},
    "noise": {"garbage"},
    "bytewise": set(),
}
CASES = [("tcp", m, k) for m, k in TCP_FAULTS.items()] + [
    ("rtu", m, k) for m, k in RTU_FAULTS.items()
]


def _plant(rtu: bool) -> Plant:
    """Two holding reads of one shape (0..3 and 40..43), an input read and a coil read."""
    tags: list[PlantTag] = []
    spans = [("holding", range(0, 4)), ("holding", range(40, 44)), ("input", range(0, 4))]
    band = 0
    for table, addresses in spans:
        for address in addresses:
            band += 1
            signal = Counter(
                f"{table}{address}", 1, source=1.0, gain=RATE, initial=band * BAND, period=0.05
            )
            tags.append(PlantTag(f"{table}{address}", table, address, "uint16", signal))
    tags += [PlantTag(f"coil{i}", "coil", i, "bool", Constant(i % 3 == 0)) for i in range(8)]
    for tag in tags:
        tag.interval, tag.max_staleness = 0.1, 5.0
    device = PlantDevice("dev", 1, tags, timeout=TIMEOUT, retries=RETRIES, max_gap=10)
    plant = Plant("wire-e2e", [device], seed=1)
    return plant.as_rtu(turnaround=0.0) if rtu else plant


def _stored(state_dir: Path) -> list[tuple[str, float, object, str]]:
    """Every sample in the daemon's SQLite file: (tag, ts, value, quality)."""
    with sqlite3.connect(state_dir / DB_NAME) as db:
        rows = db.execute(
            "SELECT t.name, s.ts, s.value, s.kind, s.quality "
            "FROM samples s JOIN tags t ON t.id = s.tag_id ORDER BY s.ts"
        ).fetchall()
    return [(n, ts, decode_value(v, kind), QUALITY_NAMES[q]) for n, ts, v, kind, q in rows]


def _wrong_good_values(
    plant: Plant, server: PlantServer, samples: list[tuple[str, float, object, str]]
) -> list[str]:
    """Good samples whose value the register never held in the read's window."""
    wrong = []
    for key, ts, value, quality in samples:
        if quality != "good":
            continue
        tag = plant.tag(key)
        t = ts - server.clock_start
        if tag.table == "coil":
            ok = value == tag.read_value(t)
        else:  # a counter: it held every value between these two
            ok = tag.read_value(t - WINDOW) <= value <= tag.read_value(t + 0.01)  # type: ignore[operator]
        if not ok:
            wrong.append(f"{key}@{t:.3f}={value} (truth {tag.read_value(t)})")
    return wrong


def _all_good(daemon) -> bool:
    return all(t.state.quality is Quality.GOOD for t in daemon.poller.tags.values())


@pytest.mark.parametrize(
    ("transport", "mode", "kinds"), CASES, ids=[f"{t}-{m}" for t, m, _ in CASES]
)
async def test_no_wrong_value_is_stored_as_good(
    config_for, tmp_path: Path, transport: str, mode: str, kinds: set[str]
) -> None:
    rtu = transport == "rtu"
    plant = _plant(rtu)
    async with serve_plant(plant, baudrate=19200 if rtu else None) as server:
        config = config_for(
            plant, server, optimizer={"enabled": False}, storage={"flush_interval": "200ms"}
        )
        async with run_daemon(config) as daemon:
            await wait_for(lambda: _all_good(daemon), timeout=15)
            await asyncio.sleep(0.3)

            await server.set_fault("dev", mode, delay=TIMEOUT + 0.2)
            served = lambda: sum(r["outcome"] == mode for r in server.request_log.records)  # noqa: E731
            await wait_for(lambda: served() >= 4, timeout=15)
            await server.set_fault("dev", "none")

            # Healthy again: every tag reads good, and keeps doing so.
            await wait_for(lambda: _all_good(daemon), timeout=15)
            await asyncio.sleep(0.5)
            assert _all_good(daemon)
            devices = (await ctl(config, "devices"))["result"]
        # The daemon has stopped: its SQLite file holds everything it stored.
    samples = _stored(Path(config.daemon.state_dir))
    assert _wrong_good_values(plant, server, samples) == []
    fault_started = min(r["ts"] for r in server.request_log.records if r["outcome"] == mode)
    later = [s for s in samples if s[3] == "good" and s[1] > fault_started]
    counters = {f"dev/{t.name}" for t in plant.devices[0].tags if t.table != "coil"}
    assert {s[0] for s in later} >= counters  # every counter was read on (coils do not change)

    (dev,) = devices
    counted = {kind for kind, n in dev["errors_by_kind"].items() if n}
    assert kinds <= counted, (mode, dev["errors_by_kind"])
    if not kinds:
        assert dev["errors"] == 0 and not counted, dev
