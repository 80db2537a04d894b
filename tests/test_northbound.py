"""Northbound MQTT against a real Mosquitto that each test starts on a free port.

Every test compares what a subscriber received with what the poller handed its
sinks (or what the outbox held), message by message: nothing lost, original
timestamps, right payloads.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import yaml
from conftest import ctl, run_daemon, serve_plant, wait_for, write_config
from mqtt_broker import Broker, broker, free_port, require_mosquitto, subscribed

from edgeopt.config import load_config
from edgeopt.tags import Sample
from simulators.plant import Plant, PlantDevice, PlantTag
from simulators.signals import Constant, Counter, NoisyAnalog

GATEWAY = "gw1"
PREFIX = f"edgeopt/{GATEWAY}/"
# The broker outage of the outage test (the issue asks for 30 s; EDGEOPT_TEST_OUTAGE shortens it).
OUTAGE = float(os.environ.get("EDGEOPT_TEST_OUTAGE", "30"))


def busy_plant() -> Plant:
    """Two devices whose tags change on every read (10 reads a second each)."""
    devices = []
    for d in range(2):
        name = f"dev{d}"
        tags = [
            PlantTag(
                f"count{i}",
                "holding",
                2 * i,
                "uint32",
                Counter(f"{name}/c{i}", i, source=1.0, gain=20.0 + i, period=0.05),
                interval=0.1,
                max_staleness=2.0,
                unit="kWh",
            )
            for i in range(4)
        ]
        tags.append(
            PlantTag(
                "temp",
                "input",
                0,
                "float32",
                NoisyAnalog(f"{name}/temp", d, base=20.0, noise_sd=0.5, period=0.1),
                interval=0.1,
                max_staleness=2.0,
                unit="°C",
            )
        )
        devices.append(PlantDevice(name, 1, tags))
    return Plant("busy", devices, seed=1)


def nb_config(tmp: Path, plant: Any, server: Any, targets: list[dict[str, Any]]) -> Path:
    path = write_config(plant, server, tmp)
    cfg = yaml.safe_load(path.read_text())
    cfg["daemon"]["name"] = GATEWAY
    cfg["optimizer"] = {"enabled": False}  # the configured intervals: steady traffic
    cfg["northbound"] = targets
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def target(port: int, **extra: Any) -> dict[str, Any]:
    return {"name": "hub", "host": "127.0.0.1", "port": port, "reconnect_max": "1s", **extra}


class Recorder:
    """A second sink beside storage and MQTT: what the poller emitted, in order."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def __call__(self, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)

    def by_tag(self) -> dict[str, list[tuple[float, Any, str]]]:
        out: dict[str, list[tuple[float, Any, str]]] = {}
        for s in self.samples:
            out.setdefault(s.tag, []).append((s.ts, _plain(s.value), s.quality))
        return out


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def data_messages(sub: Any) -> dict[str, list[tuple[float, Any, str]]]:
    """Received changes per tag key (DEVICE/NAME), in arrival order."""
    out: dict[str, list[tuple[float, Any, str]]] = {}
    for m in sub.messages:
        if not m.topic.startswith(PREFIX) or m.topic.endswith(("/meta", "/status")):
            continue
        key = m.topic[len(PREFIX) :]
        body = m.json()
        for item in body if isinstance(body, list) else [body]:
            if isinstance(body, list):
                key = f"{item['device']}/{item['tag']}"
            out.setdefault(key, []).append((item["ts"], item["value"], item["quality"]))
    return out


def assert_in_order(got: list[Any], expected: list[Any], key: str) -> None:
    """`expected` arrived, in its order, with nothing between (the recorder may start late)."""
    assert expected[0] in got, f"{key}: {expected[0]} never arrived"
    start = got.index(expected[0])
    assert got[start : start + len(expected)] == expected, key


def received_set(sub: Any) -> set[tuple[str, float]]:
    return {(key, ts) for key, items in data_messages(sub).items() for ts, _, _ in items}


async def test_every_change_arrives_in_order_per_tag_with_its_payload(tmp_path):
    require_mosquitto()
    plant = busy_plant()
    with broker(tmp_path / "broker") as mqtt:
        async with serve_plant(plant) as server, subscribed(mqtt.port, "edgeopt/#") as sub:
            config = load_config(nb_config(tmp_path, plant, server, [target(mqtt.port)]))
            recorder = Recorder()
            async with run_daemon(config) as daemon:
                daemon.poller.sinks.append(recorder)
                await wait_for(lambda: len(recorder.samples) > 200, timeout=20)
                listed = (await ctl(config, "northbound"))["result"]
                status = (await ctl(config, "status"))["result"]
            # The daemon stopped: every change it made is in the outbox or delivered.
            expected = recorder.by_tag()
            total = sum(len(v) for v in expected.values())
            await wait_for(lambda: sum(map(len, data_messages(sub).values())) >= total, 15)
            got = data_messages(sub)
            for key, items in expected.items():
                assert_in_order(got.get(key, []), items, key)
            # Payloads carry the unit; metadata and gateway status are retained topics.
            power = next(m for m in sub.messages if m.topic == PREFIX + "dev0/temp")
            assert set(power.json()) == {"ts", "value", "quality", "unit"}
            assert power.json()["unit"] == plant.tag("dev0/temp").unit
            meta = next(m for m in sub.messages if m.topic == PREFIX + "dev0/temp/meta")
            assert meta.json()["type"] == "float32" and "scale" in meta.json()
            statuses = [m.payload for m in sub.messages if m.topic == PREFIX + "status"]
            assert statuses[0] == b"online" and statuses[-1] == b"offline"
    [hub] = listed
    assert hub["name"] == "hub" and hub["connected"] is True and hub["dropped"] == 0
    assert set(hub["outbox"]) >= {"messages", "bytes", "oldest_age_s"}
    assert status["northbound"][0]["name"] == "hub"


async def test_a_broker_outage_loses_nothing_and_keeps_the_original_timestamps(tmp_path):
    require_mosquitto()
    plant = busy_plant()
    mqtt = Broker(tmp_path / "broker")
    mqtt.start()
    try:
        async with serve_plant(plant) as server, subscribed(mqtt.port, "edgeopt/#") as sub:
            config = load_config(
                nb_config(tmp_path, plant, server, [target(mqtt.port, drain_rate=500)])
            )
            recorder = Recorder()
            async with run_daemon(config) as daemon:
                daemon.poller.sinks.append(recorder)
                hub = daemon.northbound.routes["hub"].publisher
                await wait_for(lambda: hub.connected and hub.published > 50, timeout=15)
                mqtt.stop()
                outage_start = time.time()
                await wait_for(lambda: not hub.connected, timeout=15)
                await asyncio.sleep(OUTAGE)
                during = (await ctl(config, "northbound"))["result"][0]
                outage_end = time.time()
                mqtt.start()
                await wait_for(lambda: hub.connected, timeout=15)
                made = list(recorder.samples)
                wanted = {(s.tag, s.ts) for s in made}
                await wait_for(lambda: wanted <= received_set(sub), timeout=60)
                after = (await ctl(config, "northbound"))["result"][0]
                kinds = [e["kind"] for e in (await ctl(config, "events"))["result"]]
    finally:
        mqtt.stop()
    in_outage = [s for s in made if outage_start + 1 < s.ts < outage_end]
    assert len(in_outage) > 20 * OUTAGE  # polling went on
    got = data_messages(sub)
    for s in in_outage:  # each arrived with its own timestamp and value
        assert (s.ts, _plain(s.value), s.quality) in got[s.tag]
    assert during["connected"] is False and during["outbox"]["messages"] > 20 * OUTAGE
    assert during["outbox"]["oldest_age_s"] >= OUTAGE - 1
    assert after["dropped"] == 0
    assert "northbound_disconnected" in kinds and kinds.count("northbound_connected") >= 2


def _spawn(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "edgeopt.cli", "run", "--config", str(config_path)],
            stdout=handle,
            stderr=handle,
        )


def _outbox_rows(state_dir: Path) -> list[tuple[int, str, bytes]]:
    db = state_dir / "northbound.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT id, topic, payload FROM outbox ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []  # not created yet
    finally:
        conn.close()
    return [(int(i), str(t), bytes(p)) for i, t, p in rows]


async def _wait_exit(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    async with asyncio.timeout(timeout):
        while proc.poll() is None:
            await asyncio.sleep(0.05)
    return int(proc.returncode)


async def test_kill_9_with_a_full_outbox_then_restart_delivers_everything(tmp_path):
    require_mosquitto()
    plant = busy_plant()
    port = free_port()  # no broker yet: the outbox fills
    state = tmp_path / "state"
    async with serve_plant(plant) as server:
        path = nb_config(tmp_path, plant, server, [target(port, drain_rate=0)])
        proc = _spawn(path, tmp_path / "edgeopt.log")
        try:
            await wait_for(lambda: len(_outbox_rows(state)) > 150, timeout=30)
        finally:
            proc.send_signal(signal.SIGKILL)
        assert await _wait_exit(proc) == -signal.SIGKILL
        queued = _outbox_rows(state)  # what the killed daemon had not delivered
        assert len(queued) > 150
        with broker(tmp_path / "broker", port=port):
            async with subscribed(port, "edgeopt/#") as sub:
                proc = _spawn(path, tmp_path / "edgeopt.log")
                try:
                    wanted = {(t, p) for _, t, p in queued}
                    await wait_for(
                        lambda: wanted <= {(m.topic, m.payload) for m in sub.messages},
                        timeout=30,
                    )
                finally:
                    proc.send_signal(signal.SIGTERM)
                assert await _wait_exit(proc) == 0
    # What was delivered left the outbox; nothing of the first run is still queued.
    left = {i for i, _, _ in _outbox_rows(state)}
    assert not left & {i for i, _, _ in queued}


async def test_over_its_budget_the_outbox_drops_the_oldest_and_counts_them_exactly(tmp_path):
    plant = busy_plant()
    port = free_port()  # nothing listens: every message stays in the outbox
    budget = 6000
    metrics_port = free_port()
    async with serve_plant(plant) as server:
        path = nb_config(tmp_path, plant, server, [target(port, outbox_max=budget)])
        cfg = yaml.safe_load(path.read_text())
        cfg["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        config = load_config(path)
        drops: list[dict[str, Any]] = []
        async with run_daemon(config) as daemon:
            daemon.events.subscribe(
                lambda e: drops.append(e.data) if e.kind == "northbound_dropped" else None
            )
            box = daemon.northbound.outbox.boxes["hub"]  # type: ignore[union-attr]
            await wait_for(lambda: box.enqueued > 400 and box.dropped > 100, timeout=30)
            listed = (await ctl(config, "northbound"))["result"][0]
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            scraped = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        # Stopped: the outbox wrote its last messages and kept to its budget.
    rows = _outbox_rows(tmp_path / "state")
    assert box.enqueued == box.dropped + len(rows)
    # The survivors are exactly the newest: ids dropped+1 .. enqueued, none missing.
    assert [i for i, _, _ in rows] == list(range(box.dropped + 1, box.enqueued + 1))
    size = sum(len(t.encode()) + len(p) for _, t, p in rows)
    assert size == box.bytes <= budget
    assert sum(d["dropped"] for d in drops) == box.dropped
    assert listed["connected"] is False and listed["dropped"] > 0
    assert listed["outbox"]["messages"] > 0  # (between flushes it may be over by a few)
    metrics = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in scraped.decode().splitlines()
        if line.startswith("edgeopt_northbound")
    }
    assert metrics['edgeopt_northbound_connected{target="hub"}'] == 0.0
    assert metrics['edgeopt_northbound_dropped_total{target="hub"}'] > 0
    assert metrics['edgeopt_northbound_outbox_messages{target="hub"}'] > 0
    assert metrics['edgeopt_northbound_outbox_oldest_age_seconds{target="hub"}'] > 0


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=edgeopt test CA", cwd=directory)  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=directory)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", "san.cnf", cwd=directory)  # fmt: skip


def make_password_file(path: Path, user: str, password: str) -> None:
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(path), user, password], check=True, capture_output=True
    )


async def test_tls_with_a_client_certificate_and_a_password_from_a_file(tmp_path):
    require_mosquitto()
    import ssl

    pki = tmp_path / "pki"
    make_pki(pki)
    passwd = tmp_path / "mosquitto.passwd"
    make_password_file(passwd, "gw1", "s3cret-pass")
    (tmp_path / "mqtt.pass").write_text("s3cret-pass\n")
    (tmp_path / "wrong.pass").write_text("not-it\n")
    tls = {
        "ca": str(pki / "ca.pem"),
        "cert": str(pki / "client.pem"),
        "key": str(pki / "client.key"),
    }
    mqtt = Broker(
        tmp_path / "broker",
        listener_extra="\n".join(
            [
                f"cafile {pki / 'ca.pem'}",
                f"certfile {pki / 'server.pem'}",
                f"keyfile {pki / 'server.key'}",
                "require_certificate true",
            ]
        ),
        extra=f"password_file {passwd}\nallow_anonymous false",
    )
    mqtt.start()
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    plant = busy_plant()
    try:
        async with (
            serve_plant(plant) as server,
            subscribed(
                mqtt.port, "edgeopt/#", tls_context=context, username="gw1", password="s3cret-pass"
            ) as sub,
        ):
            targets = [
                target(
                    mqtt.port, tls=tls, username="gw1", password_file=str(tmp_path / "mqtt.pass")
                ),
                target(
                    mqtt.port,
                    name="wrong",
                    client_id="gw1-wrong",
                    tls=tls,
                    username="gw1",
                    password_file=str(tmp_path / "wrong.pass"),
                ),
            ]
            config = load_config(nb_config(tmp_path, plant, server, targets))
            async with run_daemon(config) as daemon:
                hub = daemon.northbound.routes["hub"].publisher
                await wait_for(lambda: hub.published > 20, timeout=20)
                await wait_for(lambda: len(data_messages(sub)) >= 10, timeout=10)
                reply = await ctl(config, "northbound")
                status = await ctl(config, "status")
    finally:
        mqtt.stop()
    listed = {t["name"]: t for t in reply["result"]}
    assert listed["hub"]["connected"] is True and listed["hub"]["tls"] is True
    assert listed["wrong"]["connected"] is False and listed["wrong"]["last_error"]
    # The secret never leaves the password file.
    assert "s3cret" not in str(reply) and "s3cret" not in str(status)


async def test_killing_edgeopt_makes_the_broker_publish_offline(tmp_path):
    require_mosquitto()
    plant = busy_plant()
    with broker(tmp_path / "broker") as mqtt:
        async with (
            serve_plant(plant) as server,
            subscribed(mqtt.port, f"edgeopt/{GATEWAY}/status") as sub,
        ):
            path = nb_config(tmp_path, plant, server, [target(mqtt.port, keepalive="5s")])
            proc = _spawn(path, tmp_path / "edgeopt.log")
            try:
                await wait_for(lambda: [m.payload for m in sub.messages] == [b"online"], 20)
            finally:
                proc.send_signal(signal.SIGKILL)
            await _wait_exit(proc)
            await wait_for(lambda: sub.messages[-1].payload == b"offline", timeout=15)
    status = sub.messages[-1]
    assert status.topic == f"edgeopt/{GATEWAY}/status" and status.payload == b"offline"


def _edgeoptctl(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeopt.control.client", "--socket", str(sock), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_reload_reconnects_a_changed_target_only_and_edgeoptctl_shows_both(tmp_path):
    require_mosquitto()
    plant = busy_plant()
    with broker(tmp_path / "broker") as mqtt:
        async with serve_plant(plant) as server, subscribed(mqtt.port, "#") as sub:
            targets = [
                target(mqtt.port, name="keep", client_id="gw1-keep"),
                target(mqtt.port, name="move", client_id="gw1-move", topic="a/{device}/{tag}"),
            ]
            path = nb_config(tmp_path, plant, server, targets)
            config = load_config(path)
            async with run_daemon(config) as daemon:
                routes = daemon.northbound.routes
                keep, move = routes["keep"].publisher, routes["move"].publisher
                await wait_for(lambda: keep.published > 10 and move.published > 10, timeout=20)
                cfg = yaml.safe_load(path.read_text())
                cfg["northbound"][1]["topic"] = "b/{device}/{tag}"
                cfg["devices"][0]["tags"][0]["unit"] = "MWh"  # new metadata for every target
                path.write_text(yaml.safe_dump(cfg, sort_keys=False))
                reloaded = (await ctl(config, "reload"))["result"]
                assert routes["keep"].publisher is keep and keep.connects == 1
                moved = routes["move"].publisher
                assert moved is not move
                await wait_for(lambda: moved.connected and moved.published > 10, timeout=20)
                table = await asyncio.to_thread(_edgeoptctl, config.daemon.socket, "northbound")
                listed = await asyncio.to_thread(
                    _edgeoptctl, config.daemon.socket, "--json", "northbound"
                )
    assert reloaded["northbound"] == {"changed": ["move"], "unchanged": ["keep"]}
    assert any(m.topic.startswith("b/dev0/") for m in sub.messages)
    metas = [m.json() for m in sub.messages if m.topic == PREFIX + "dev0/count0/meta"]
    assert [m["unit"] for m in metas][-1] == "MWh"
    assert table.returncode == 0 and "keep" in table.stdout and "connected" in table.stdout
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["keep", "move"]
    assert {"connected", "since", "outbox", "published_per_s", "dropped"} <= set(rows[0])


async def test_a_write_from_the_command_topic_is_verified_answered_and_audited(tmp_path):
    require_mosquitto()
    tags = [
        PlantTag("setpoint", "holding", 0, "int16", Constant(20.0), scale=0.1, writable=True),
        PlantTag("meter", "holding", 1, "uint16", Constant(3.0)),
    ]
    plant = Plant("cmd", [PlantDevice("pump", 1, tags)])
    with broker(tmp_path / "broker") as mqtt:
        async with serve_plant(plant) as server, subscribed(mqtt.port, "edgeopt/#") as sub:
            path = nb_config(tmp_path, plant, server, [target(mqtt.port, commands=True)])
            cfg = yaml.safe_load(path.read_text())
            for tag in cfg["devices"][0]["tags"]:
                if tag.get("writable"):
                    tag["write"] = {"min": 0, "max": 60, "min_interval": "0s"}
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            config = load_config(path)
            async with run_daemon(config) as daemon:
                await wait_for(lambda: daemon.northbound.status()[0]["connected"], 15)
                await wait_for(
                    lambda: daemon.poller.tags["pump/setpoint"].state.value is not None, 15
                )
                async with aiomqtt.Client("127.0.0.1", mqtt.port, identifier="cmd-test") as c:
                    base = PREFIX + "pump/"
                    await c.publish(base + "setpoint/set", b"42.5", qos=1)
                    await c.publish(base + "setpoint/set", b'{"value": 99}', qos=1)
                    await c.publish(base + "meter/set", b"7", qos=1)
                    await c.publish(base + "setpoint/set", b"not json", qos=1)
                await wait_for(lambda: len(sub.on("/set/result")) >= 4, 20)
                # The device now holds the value, and the tag shows it.
                assert daemon.poller.tags["pump/setpoint"].state.value == 42.5
                db = daemon.state_dir / "edgeopt.db"
            results = {}
            for m in sub.on("/set/result"):
                results.setdefault(m.topic, []).append(m.json())
            # Commands run side by side (a refusal answers at once): match them by content.
            answers = results[base + "setpoint/set/result"]
            assert len(answers) == 3
            [ok] = [a for a in answers if a["result"] == "ok"]
            assert ok["requested"] == 42.5 and ok["read_back"] == 42.5
            [too_big] = [a for a in answers if "write.max 60" in a.get("message", "")]
            assert too_big["result"] == "refused" and too_big["error"] == "invalid_args"
            [bad] = [a for a in answers if "JSON" in a.get("message", "")]
            assert bad["result"] == "refused" and bad["error"] == "invalid_args"
            [meter] = results[base + "meter/set/result"]
            assert meter["result"] == "refused" and "not writable" in meter["message"]
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT args, result FROM audit ORDER BY id").fetchall()
    # Every write that reached the write service is audited under the target's name.
    assert sorted(r for _, r in rows) == ["invalid_args", "invalid_args", "ok"]
    assert {json.loads(a)["caller"] for a, _ in rows} == {"hub"}


async def test_without_commands_a_target_ignores_the_command_topic(tmp_path):
    require_mosquitto()
    tags = [PlantTag("setpoint", "holding", 0, "uint16", Constant(20.0), writable=True)]
    plant = Plant("cmd", [PlantDevice("pump", 1, tags)])
    with broker(tmp_path / "broker") as mqtt:
        async with serve_plant(plant) as server, subscribed(mqtt.port, "edgeopt/#") as sub:
            config = load_config(nb_config(tmp_path, plant, server, [target(mqtt.port)]))
            async with run_daemon(config) as daemon:
                await wait_for(lambda: daemon.northbound.status()[0]["connected"], 15)
                await wait_for(
                    lambda: daemon.poller.tags["pump/setpoint"].state.value is not None, 15
                )
                async with aiomqtt.Client("127.0.0.1", mqtt.port, identifier="cmd-test") as c:
                    await c.publish(PREFIX + "pump/setpoint/set", b"5", qos=1)
                await asyncio.sleep(2.0)
                assert daemon.poller.tags["pump/setpoint"].state.value == 20
            assert not sub.on("/set/result")
