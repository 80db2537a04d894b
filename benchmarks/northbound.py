"""Northbound MQTT: publish rate, read-to-PUBACK latency, drain after an outage, and the
daemon's CPU and RSS with and without publishing. Against a local mosquitto started here.

- **Rate and latency.** Changes go into the daemon's own northbound sink
  (`Northbound.extend`, what the poller calls after each read), 25 tags of one
  device per call as a block read hands them over, at an offered rate, through
  the real SQLite outbox and aiomqtt to mosquitto at QoS 1. Achieved changes/s
  are those the broker acknowledged; latency runs from the sink call to the
  PUBACK of the message holding the change. Synthetic changes: a 20k changes/s
  plant cannot be polled over Modbus on two cores, and the point is the
  publisher's own capacity.
- **Daemon CPU and RSS.** `edgeopt run` polls the gap-free large plant (5,000
  tags on 50 devices, every tag at 1 s; `--quick`: 1,000 on 10) served by the
  simulator process, once without and once with a northbound target
  (batches of up to 50 changes). CPU % of one core and RSS over the same window.
- **Drain.** In the run with northbound, the broker is stopped for the outage
  (10 min; `--quick`: 1 min) while polling goes on, then started again; the
  outbox drains with `drain_rate: 0` (as fast as the broker acknowledges) while
  new changes keep flowing. Drain rate = messages queued at reconnect / seconds
  until the outbox is back to its steady depth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

from edgeopt.clock import SystemClock
from edgeopt.config import parse_config
from edgeopt.events import EventLog
from edgeopt.northbound import Message, Northbound
from edgeopt.tags import Sample

from .overhead import _steady_plant
from .procs import start_daemon, stop_process

__all__ = ["measure_daemon", "measure_publish", "run_northbound"]

Progress = Callable[[str], None]
TAGS_PER_READ = 25
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Mosquitto:
    """A local broker on a free port; `stop` and `start` keep the port."""

    workdir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    "persistence false",
                    "max_queued_messages 0",
                    "max_inflight_messages 0",
                    f"user {pwd.getpwuid(os.geteuid()).pw_name}",
                    "log_dest stderr",
                    "log_type error",
                ]
            )
            + "\n"
        )
        if not os.path.exists(MOSQUITTO):
            raise RuntimeError("mosquitto is not installed (make mosquitto-tools)")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def cpu_seconds(self) -> float:
        if self.proc is None:
            return 0.0
        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system)


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(workdir, _free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# --- rate and latency, through the sink ----------------------------------------------------


@dataclass
class PublishRun:
    offered_per_s: float
    max_messages: int
    seconds: float
    changes: int  # acknowledged
    messages: int
    changes_per_s: float
    messages_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    cpu_pct: float  # this process: sink, outbox and publisher
    broker_cpu_pct: float


def _config(port: int, state: Path, max_messages: int, n_devices: int) -> Any:
    devices = [
        {
            "name": f"d{d}",
            "transport": "tcp",
            "host": "127.0.0.1",
            "tags": [
                {"name": f"t{t}", "table": "holding", "address": 2 * t, "type": "float32"}
                for t in range(TAGS_PER_READ)
            ],
        }
        for d in range(n_devices)
    ]
    text = yaml.safe_dump(
        {
            "daemon": {"name": "bench", "state_dir": str(state)},
            "northbound": [
                {
                    "name": "hub",
                    "host": "127.0.0.1",
                    "port": port,
                    "qos": 1,
                    "batch": {"max_messages": max_messages, "max_delay": "0s"},
                    "drain_rate": 0,
                }
            ],
            "devices": devices,
        }
    )
    return parse_config(text)


async def _publish_run(
    port: int, work: Path, offered: float, max_messages: int, seconds: float
) -> PublishRun:
    n_devices = 200
    config = _config(port, work / f"state-{max_messages}-{int(offered)}", max_messages, n_devices)
    clock = SystemClock()
    nb = Northbound(Path(config.daemon.state_dir), clock, EventLog())
    await nb.start(config)
    outbox, publisher = nb.outbox, nb.routes["hub"].publisher
    assert outbox is not None
    sent_at: dict[int, tuple[float, int]] = {}
    latencies: list[float] = []
    acked = [0, 0]  # changes, messages
    measuring = [False]
    add, ack = outbox.add, outbox.ack

    def timed_add(name: str, messages: Any) -> list[Message]:
        out = add(name, messages)
        now = time.perf_counter()
        for m in out:
            sent_at[m.id] = (now, m.payload.count(b'"ts"'))
        return out

    def timed_ack(name: str, message: Message) -> None:
        ack(name, message)
        started = sent_at.pop(message.id, None)
        if started is not None and measuring[0]:
            latencies.append(time.perf_counter() - started[0])
            acked[0] += started[1]
            acked[1] += 1

    outbox.add = timed_add  # type: ignore[method-assign]
    outbox.ack = timed_ack  # type: ignore[method-assign]
    try:
        async with asyncio.timeout(15):
            while not publisher.connected:  # noqa: ASYNC110 - the publisher has no event for it
                await asyncio.sleep(0.05)
        rng = random.Random(1)
        tick = 0.01
        injected = 0
        device = 0
        ps = psutil.Process()
        warm = 1.0
        start = time.perf_counter()
        c0 = w0 = b0 = 0.0
        while True:
            now = time.perf_counter()
            if not measuring[0] and now - start >= warm:
                measuring[0] = True
                c0, w0 = sum(ps.cpu_times()[:2]), now
                b0 = _proc_cpu(port)
            if now - start >= warm + seconds:
                break
            # Paced by the clock, not by the ticks: a late tick catches up.
            owed = offered * (now - start) - injected
            wall = time.time()
            while owed >= TAGS_PER_READ:
                name = f"d{device % n_devices}"
                device += 1
                nb.extend(
                    [
                        Sample(f"{name}/t{t}", wall, rng.random() * 100, "good")
                        for t in range(TAGS_PER_READ)
                    ]
                )
                owed -= TAGS_PER_READ
                injected += TAGS_PER_READ
            await asyncio.sleep(max(0.0, tick - (time.perf_counter() - now)))
        w1 = time.perf_counter()
        c1 = sum(ps.cpu_times()[:2])
        b1 = _proc_cpu(port)
        measuring[0] = False
        span = w1 - w0
        lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
        return PublishRun(
            offered_per_s=offered,
            max_messages=max_messages,
            seconds=span,
            changes=acked[0],
            messages=acked[1],
            changes_per_s=acked[0] / span,
            messages_per_s=acked[1] / span,
            latency_p50_ms=float(np.percentile(lat, 50)),
            latency_p99_ms=float(np.percentile(lat, 99)),
            cpu_pct=100 * (c1 - c0) / span,
            broker_cpu_pct=100 * (b1 - b0) / span,
        )
    finally:
        await nb.close()


_BROKERS: dict[int, Mosquitto] = {}


def _proc_cpu(port: int) -> float:
    broker = _BROKERS.get(port)
    return broker.cpu_seconds() if broker is not None else 0.0


def measure_publish(
    runs: list[tuple[float, int]], seconds: float, progress: Progress
) -> list[PublishRun]:
    """Each (offered changes/s, max_messages) for `seconds` against a fresh broker."""
    out = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-nb-") as tmp:
        for offered, max_messages in runs:
            progress(f"northbound: {offered:,.0f} changes/s offered, batches of {max_messages}")
            with mosquitto(Path(tmp)) as broker:
                _BROKERS[broker.port] = broker
                try:
                    out.append(
                        asyncio.run(
                            _publish_run(broker.port, Path(tmp), offered, max_messages, seconds)
                        )
                    )
                finally:
                    _BROKERS.pop(broker.port, None)
    return out


# --- the daemon: CPU and RSS with and without, and the drain after an outage -------------------


@dataclass
class DaemonRun:
    northbound: bool
    seconds: float
    cpu_pct: float
    rss_mb: float
    published_per_s: float = 0.0


@dataclass
class DrainRun:
    reconnect_s: float  # from the broker's restart to connected (backoff and handshake)
    outage_s: float
    queued_at_reconnect: int
    drain_seconds: float
    drained_per_s: float  # messages of backlog per second
    changes_per_s: float  # the same in changes (a message holds a batch)
    live_per_s: float  # messages/s the plant made meanwhile (sent alongside)


def _ctl(sock: Path, cmd: str) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(json.dumps({"id": 1, "cmd": cmd, "args": {}}).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)["result"]


def _wait_socket(sock: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            _ctl(sock, "status")
            return
        time.sleep(0.2)
    raise RuntimeError("the daemon's control socket never answered")


def _cpu_rss(proc: subprocess.Popen[Any], seconds: float) -> tuple[float, float]:
    ps = psutil.Process(proc.pid)
    c0, w0 = sum(ps.cpu_times()[:2]), time.monotonic()
    time.sleep(seconds)
    c1, w1 = sum(ps.cpu_times()[:2]), time.monotonic()
    return 100 * (c1 - c0) / (w1 - w0), ps.memory_info().rss / 2**20


def measure_daemon(
    n_tags: int, n_devices: int, warmup: float, seconds: float, outage: float, progress: Progress
) -> tuple[list[DaemonRun], DrainRun]:
    runs: list[DaemonRun] = []
    with _steady_plant(n_tags, n_devices, "edgeopt-nb-daemon-") as steady:
        base = yaml.safe_load(steady.config.read_text())
        sock = Path(base["daemon"]["socket"])
        state = Path(base["daemon"]["state_dir"])
        progress(f"northbound: daemon without northbound, {n_tags} tags")
        proc = start_daemon(steady.config, steady.work / "without.log")
        try:
            _wait_socket(sock)
            time.sleep(warmup)
            cpu, rss = _cpu_rss(proc, seconds)
            runs.append(DaemonRun(False, seconds, cpu, rss))
        finally:
            stop_process(proc)
        shutil.rmtree(state, ignore_errors=True)
        with mosquitto(steady.work) as broker:
            cfg = dict(base)
            cfg["daemon"] = {**base["daemon"], "name": "bench"}
            cfg["northbound"] = [
                {
                    "name": "hub",
                    "host": "127.0.0.1",
                    "port": broker.port,
                    "batch": {"max_messages": 50, "max_delay": "0s"},
                    "drain_rate": 0,
                    "reconnect_max": "2s",
                    "outbox_max": "2GB",
                }
            ]
            path = steady.work / "with-northbound.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            progress(f"northbound: daemon with northbound, {n_tags} tags")
            proc = start_daemon(path, steady.work / "with.log")
            try:
                _wait_socket(sock)
                time.sleep(warmup)
                p0 = _ctl(sock, "northbound")[0]["published"]
                t0 = time.monotonic()
                cpu, rss = _cpu_rss(proc, seconds)
                p1 = _ctl(sock, "northbound")[0]["published"]
                live = (p1 - p0) / (time.monotonic() - t0)
                runs.append(DaemonRun(True, seconds, cpu, rss, live))
                drain = _outage(broker, sock, state, outage, live, progress)
            finally:
                stop_process(proc)
    return runs, drain


def _outage(
    broker: Mosquitto, sock: Path, state: Path, outage: float, live: float, progress: Progress
) -> DrainRun:
    progress(f"northbound: broker down for {outage:.0f} s")
    if broker.proc is not None:
        broker.proc.send_signal(signal.SIGKILL)  # as a crashed broker: no goodbye
        broker.proc.wait(10)
        broker.proc = None
    time.sleep(outage)
    hub = _ctl(sock, "northbound")[0]
    queued, enq0 = int(hub["outbox"]["messages"]), int(hub["enqueued"])
    changes_per_message = _changes_per_message(state / "northbound.db")
    broker.start()
    started = time.monotonic()
    while not _ctl(sock, "northbound")[0]["connected"]:  # the reconnect backoff
        time.sleep(0.02)
    t0 = time.monotonic()
    progress(f"northbound: draining {queued:,} messages")
    # Drained: the backlog is gone (what is left is the steady in-flight handful).
    while True:
        hub = _ctl(sock, "northbound")[0]
        if hub["connected"] and hub["outbox"]["messages"] <= max(100, live):
            break
        if time.monotonic() - t0 > max(600.0, 4 * outage):
            break
        time.sleep(0.02)
    took = time.monotonic() - t0
    enq1 = hub["enqueued"]
    rate = queued / took if took > 0 else 0.0
    return DrainRun(
        reconnect_s=t0 - started,
        outage_s=outage,
        queued_at_reconnect=queued,
        drain_seconds=took,
        drained_per_s=rate,
        changes_per_s=rate * changes_per_message,
        live_per_s=(enq1 - enq0) / took if took > 0 else 0.0,
    )


def _changes_per_message(db: Path) -> float:
    """Mean changes per queued message (each change is one object with a "ts")."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT payload FROM outbox ORDER BY id LIMIT 5000").fetchall()
    finally:
        conn.close()
    if not rows:
        return 1.0
    return sum(bytes(p).count(b'"ts"') for (p,) in rows) / len(rows)


def run_northbound(quick: bool, progress: Progress) -> dict[str, Any]:
    seconds = 8.0 if quick else 30.0
    runs = [(20_000.0, 50), (20_000.0, 1), (2_000.0, 1)]
    publish = measure_publish(runs, seconds, progress)
    if quick:
        daemon, drain = measure_daemon(1000, 10, 5, 15, 60, progress)
    else:
        daemon, drain = measure_daemon(5000, 50, 10, 60, 600, progress)
    return {
        "quick": quick,
        "publish": [asdict(r) for r in publish],
        "daemon": [asdict(r) for r in daemon],
        "drain": asdict(drain),
        "python": sys.version.split()[0],
    }
