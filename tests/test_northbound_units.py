"""Northbound without a broker: payloads and topics (pure), the config section, and the
outbox on a real SQLite file (order, acknowledgements, budget, restart)."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from typing import Any

import pytest

from edgeopt.clock import SystemClock
from edgeopt.config import ConfigError, parse_config
from edgeopt.northbound.outbox import Outbox
from edgeopt.northbound.payload import (
    Batcher,
    Message,
    command_topic,
    device_topic,
    meta_messages,
    routes,
)
from edgeopt.tags import Sample

BASE = """
daemon: {name: gw-7}
devices:
  - name: meter
    transport: tcp
    host: 127.0.0.1
    tags:
      - {name: power, table: input, address: 0, type: float32, unit: kW, scale: 0.1,
         description: active power}
      - {name: serial, table: holding, address: 10, type: uint16, publish: false}
  - name: quiet
    transport: tcp
    host: 127.0.0.1
    port: 1502
    publish: false
    tags:
      - {name: a, table: coil, address: 0}
"""


def config(northbound: str = "northbound: [{name: hub, host: broker.example}]") -> object:
    return parse_config(BASE + northbound, "edgeopt.yaml")


# --- config ----------------------------------------------------------------------------


def test_target_defaults_and_gateway_name():
    cfg = config()
    [hub] = cfg.northbound  # type: ignore[attr-defined]
    assert cfg.daemon.gateway == "gw-7"  # type: ignore[attr-defined]
    assert (hub.qos, hub.broker_port, hub.topic) == (1, 1883, "edgeopt/{gateway}/{device}/{tag}")
    assert (hub.batch.max_messages, hub.batch.max_delay, hub.outbox_max) == (1, 0.0, 100_000_000)
    tls = config("northbound: [{name: hub, host: b, tls: {ca: /etc/ca.pem}}]")
    assert tls.northbound[0].broker_port == 8883  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "northbound: [{name: hub, host: b, password: hunter2}]",
            "edgeopt.yaml:18: northbound[0].password: an inline password is not allowed",
        ),
        (
            'northbound: [{name: hub, host: b, topic: "x/{device}/{name}"}]',
            "edgeopt.yaml:18: northbound[0].topic: unknown placeholder {name}",
        ),
        (
            'northbound: [{name: hub, host: b, topic: "x/{device}"}]',
            "edgeopt.yaml:18: northbound[0].topic: the template needs {tag}",
        ),
        (
            'northbound: [{name: hub, host: b, topic: "x/+/{device}/{tag}"}]',
            "northbound[0].topic: a topic to publish on has no wildcards",
        ),
        ("northbound: [{name: hub, host: b, qos: 2}]", "northbound[0].qos: must be 0 or 1"),
        (
            "northbound: [{name: hub, host: b, tls: {cert: /c.pem}}]",
            "northbound[0].tls.key: cert needs key",
        ),
        (
            "northbound: [{name: hub, host: b, password_file: /p}]",
            "northbound[0].password_file: needs username",
        ),
        (
            "northbound:\n  - {name: hub, host: b}\n  - {name: hub, host: c}",
            "edgeopt.yaml:20: northbound[1].name: duplicate northbound target name 'hub' "
            "(see line 19)",
        ),
        (
            "northbound: [{name: hub, host: b, batch: {max_message: 5}}]",
            "unknown key 'max_message' (did you mean 'max_messages'?)",
        ),
    ],
)
def test_northbound_config_errors_name_line_and_field(yaml_text, expected):
    with pytest.raises(ConfigError) as err:
        config(yaml_text)
    assert expected in str(err.value)


def test_gateway_name_is_one_topic_level():
    with pytest.raises(ConfigError, match=r"daemon.name: must be one MQTT topic level"):
        parse_config(BASE.replace("gw-7", "gw/7"), "edgeopt.yaml")


# --- payloads and topics (pure) ------------------------------------------------------------


def test_routes_leave_out_unpublished_devices_and_tags():
    cfg = config()
    r = routes(cfg.devices, "edgeopt/{gateway}/{device}/{tag}", "gw-7")  # type: ignore[attr-defined]
    assert list(r) == ["meter/power"]
    assert r["meter/power"].topic == "edgeopt/gw-7/meter/power"
    meta = meta_messages(cfg.devices, "site/{gateway}/{device}/{tag}", "gw-7")  # type: ignore[attr-defined]
    assert list(meta) == ["site/gw-7/meter/power/meta"]
    described = json.loads(meta["site/gw-7/meter/power/meta"])
    assert described["type"] == "float32" and described["unit"] == "kW"
    assert described["scale"] == 0.1 and described["description"] == "active power"


def test_topics_of_a_batch_and_of_commands():
    assert device_topic("edgeopt/{gateway}/{device}/{tag}", "g", "d") == "edgeopt/g/d"
    assert device_topic("{gateway}/{tag}/{device}/v", "g", "d") == "g/d/v"
    assert command_topic("edgeopt/g/d/t") == "edgeopt/g/d/t/set"


def test_one_change_one_message_with_ts_value_quality_unit():
    cfg = config()
    r = routes(cfg.devices, "e/{gateway}/{device}/{tag}", "g")  # type: ignore[attr-defined]
    batcher = Batcher("e/{gateway}/{device}/{tag}", "g")
    samples = [
        Sample("meter/power", 10.5, 1.25, "good"),
        Sample("meter/serial", 10.5, 7, "good"),  # publish: false
        Sample("meter/power", 11.0, math.nan, "bad"),
    ]
    out = batcher.add(samples, r, now=0.0)
    assert [m.topic for m in out] == ["e/g/meter/power", "e/g/meter/power"]
    assert json.loads(out[0].payload) == {
        "ts": 10.5,
        "value": 1.25,
        "quality": "good",
        "unit": "kW",
    }
    assert json.loads(out[1].payload)["value"] is None  # NaN is not JSON
    assert out[0].ts == 10.5 and out[0].size == len("e/g/meter/power") + len(out[0].payload)


def test_batches_pack_one_device_by_count_and_by_delay():
    cfg = config()
    r = routes(cfg.devices, "e/{gateway}/{device}/{tag}", "g")  # type: ignore[attr-defined]
    batcher = Batcher("e/{gateway}/{device}/{tag}", "g", max_messages=3, max_delay=1.0)
    first = [Sample("meter/power", float(i), float(i), "good") for i in range(4)]
    out = batcher.add(first, r, now=100.0)
    assert len(out) == 1 and out[0].topic == "e/g/meter"
    body = json.loads(out[0].payload)
    assert [b["ts"] for b in body] == [0.0, 1.0, 2.0]
    assert body[0] == {
        "ts": 0.0,
        "value": 0.0,
        "quality": "good",
        "unit": "kW",
        "device": "meter",
        "tag": "power",
    }
    assert batcher.due(100.5) == [] and batcher.next_due() == 101.0
    [late] = batcher.due(101.0)
    assert [b["ts"] for b in json.loads(late.payload)] == [3.0]
    # max_delay 0: the changes of one read go together, nothing waits.
    now_only = Batcher("e/{gateway}/{device}/{tag}", "g", max_messages=50, max_delay=0.0)
    assert len(now_only.add(first, r, now=0.0)) == 1 and now_only.flush() == []


# --- the outbox on a real SQLite file ----------------------------------------------------------


def msg(i: int, size: int = 10) -> Message:
    return Message("t/x", b"p" * (size - 3), float(i))


async def test_outbox_keeps_order_and_forgets_only_what_was_acknowledged(tmp_path):
    path = tmp_path / "northbound.db"
    box = await Outbox.open(path, SystemClock())
    await box.attach("hub", 10_000)
    numbered = box.add("hub", [msg(i) for i in range(10)])
    assert [m.id for m in numbered] == list(range(1, 11))
    box.ack("hub", numbered[0])  # before its flush: never written
    await box.flush()
    box.ack("hub", numbered[1])  # after: deleted at the next flush
    assert [m.id for m in await box.read("hub", 0, 10, 100)] == list(range(3, 11))
    await box.flush()
    assert box.boxes["hub"].messages == 8 and box.boxes["hub"].bytes == 80
    assert box.boxes["hub"].oldest_ts == 2.0
    await box.close()
    # A restart (the same file) finds the same 8, and numbers on after them.
    again = await Outbox.open(path, SystemClock())
    hub = await again.attach("hub", 10_000)
    assert (hub.messages, hub.bytes, hub.next_id) == (8, 80, 11)
    assert [m.ts for m in await again.read("hub", 0, 100, 100)] == [float(i) for i in range(2, 10)]
    assert await again.read("other", 0, 100, 100) == []
    await again.close()


async def test_outbox_over_budget_drops_exactly_the_oldest(tmp_path):
    drops: list[tuple[str, int, int, float]] = []
    box = await Outbox.open(tmp_path / "nb.db", SystemClock(), on_drop=lambda *a: drops.append(a))
    await box.attach("hub", 250)  # room for 25 messages of 10 bytes
    await box.attach("other", 10_000)
    box.add("hub", [msg(i) for i in range(40)])
    box.add("other", [msg(i) for i in range(40)])
    await box.flush()
    hub = box.boxes["hub"]
    assert (hub.messages, hub.bytes, hub.dropped, hub.enqueued) == (25, 250, 15, 40)
    assert drops == [("hub", 15, 150, 0.0)]
    assert [m.id for m in await box.read("hub", 0, 100, 100)] == list(range(16, 41))
    assert box.boxes["other"].dropped == 0 and box.boxes["other"].messages == 40
    # An acknowledgement of a dropped message changes nothing: it was counted once.
    box.ack("hub", Message("t/x", b"p" * 7, 0.0, id=3))
    assert hub.messages == 25 and hub.acked == 0 and box.is_gone("hub", 3)
    box.add("hub", [msg(100, size=60)])  # 60 more bytes: the 6 oldest make room
    await box.flush()
    assert (hub.dropped, hub.messages, hub.bytes) == (21, 20, 250)
    assert drops[-1][:3] == ("hub", 6, 60)
    await box.close()


async def test_stopping_the_writer_mid_drop_still_counts_every_message(tmp_path):
    """The writer cancelled (at shutdown) while its drop's DELETE runs in SQLite's thread:
    the flush finishes its bookkeeping, so every message is still delivered, dropped or
    on disk, counted once (a cancel there once left a deleted message uncounted)."""
    box = await Outbox.open(tmp_path / "nb.db", SystemClock(), flush_interval=0.01)
    await box.attach("hub", 250)
    conn = box._conn
    execute = conn.execute
    deleting, release = asyncio.Event(), asyncio.Event()

    async def slow_drop(sql: str, *args: Any) -> Any:
        done = await execute(sql, *args)
        if sql.startswith("DELETE FROM outbox WHERE target = ? AND id <= ?"):
            deleting.set()  # done in SQLite; its caller not yet resumed
            await release.wait()
        return done

    conn.execute = slow_drop  # type: ignore[method-assign]
    box.add("hub", [msg(i) for i in range(40)])
    writer = asyncio.create_task(box.run())
    await asyncio.wait_for(deleting.wait(), 5)
    writer.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await writer
    await box.close()
    hub = box.boxes["hub"]
    again = await Outbox.open(tmp_path / "nb.db", SystemClock())
    await again.attach("hub", 250)
    on_disk = await again.read("hub", 0, 100, 100)
    await again.close()
    assert (hub.enqueued, hub.dropped, len(on_disk)) == (40, 15, 25)
    assert [m.id for m in on_disk] == list(range(16, 41))


async def test_outbox_reads_written_and_unwritten_messages_in_one_order(tmp_path):
    box = await Outbox.open(tmp_path / "nb.db", SystemClock())
    await box.attach("hub", 10_000)
    box.add("hub", [msg(i) for i in range(5)])
    await box.flush()  # 1..5 on disk
    box.add("hub", [msg(i) for i in range(5, 9)])  # 6..9 only in memory
    assert [m.id for m in await box.read("hub", 3, 8, 100)] == [4, 5, 6, 7, 8]
    assert [m.id for m in await box.read("hub", 0, 9, 3)] == [1, 2, 3]
    assert [m.id for m in await box.read("hub", 5, 9, 100)] == [6, 7, 8, 9]
    assert box.boxes["hub"].written_upto == 5  # reading forced no write
    await box.close()


def test_a_daemon_without_targets_never_imports_the_mqtt_client():
    code = "import sys, edgeopt.daemon; print('aiomqtt' in sys.modules, 'paho' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out
