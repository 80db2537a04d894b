"""BENCHMARKS.md §7: ThingsBoard IoT Gateway beside edgeopt, on the same plant, in one window.

Each product polls its own copy of the simulated plant (two simulator
processes with the same plant and the same clock), so each one's reads are
counted from its own simulator's request log; both run at the same time and
are measured over the same window: CPU (user + system, all threads), RSS,
requests/s, registers/s, and whether each kept up with its own plan.

ThingsBoard IoT Gateway (PyPI `thingsboard-gateway`) runs from a venv this
module makes once under the benchmark cache (`~/.cache/edgeopt-bench`, or
`$EDGEOPT_BENCH_CACHE`). What it takes to run it offline here:

- its Modbus connector pins pymodbus 3.9.2 and pip-installs it (and
  pyserial-asyncio, even for TCP) at import when missing, so the venv gets
  those first;
- after connecting to its broker it waits for the reply to a
  `getSessionLimits` RPC that only a ThingsBoard server sends: a local
  Mosquitto (started here on a free port) and a tiny responder (run in the
  gateway's venv, with the paho-mqtt it ships) answer it with "no limits";
- a plain broker echoes the gateway's own publications back to it, which a
  ThingsBoard server never does: its own attributes came back as "remote
  configuration" in a loop, and its own RPC requests as server RPCs. The
  broker's ACL lets the gateway read only the RPC and attribute responses;
- it posts to an update service at start and every hour: the launcher
  replaces that check with a no-op, and the process gets an unreachable
  HTTP(S) proxy, so nothing leaves the machine.

Everything else is the gateway's shipped default config (logging, storage,
statistics, report strategy), with one Modbus connector generated from
edgeopt's config: one slave per device, one timeseries key per tag, every
tag at the tag's interval (1 s here).

edgeopt runs with its optimizer off, so both products make their configured
reads: edgeopt merges neighbouring tags into block reads, the gateway reads
each key on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from simulators.plant import Endpoint, Plant
from simulators.plants import large_plant

from .overhead import OPTIMIZER_OFF, PLANT_TIME, _cpu, _plan_reads, _registers, at_interval
from .procs import iter_requests, start_daemon, start_simulator, stop_process, write_config

__all__ = [
    "TB_VERSION",
    "PeerPoint",
    "PeerUnavailable",
    "measure_peers",
    "tb_modbus_config",
]

TB_VERSION = "3.8.5"
# What its Modbus connector pip-installs at import when missing: pymodbus at the
# version it pins, and pyserial-asyncio (even for TCP slaves).
TB_PREINSTALL = ("pymodbus==3.9.2", "pyserial", "pyserial-asyncio")
MOSQUITTO = ("mosquitto", "/usr/sbin/mosquitto")

TOKEN = "edgeopt-bench"  # the gateway's access token: its MQTT user name

Progress = Callable[[str], None]

_FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_TB_TYPE = {
    "int16": "16int",
    "uint16": "16uint",
    "int32": "32int",
    "uint32": "32uint",
    "float32": "32float",
    "int64": "64int",
    "uint64": "64uint",
    "float64": "64float",
}
_WIDTH = {"16": 1, "32": 2, "64": 4}


class PeerUnavailable(RuntimeError):
    """Raised when the peer cannot be run on this machine; the message says why."""


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEOPT_BENCH_CACHE", Path.home() / ".cache" / "edgeopt-bench"))


def tb_venv(progress: Progress | None = None) -> Path:
    """The gateway's venv (made and filled once); returns its python."""
    home = cache_dir() / f"tb-{TB_VERSION}"
    python = home / "bin" / "python"
    stamp = home / ".installed"
    wanted = " ".join((*TB_PREINSTALL, f"thingsboard-gateway=={TB_VERSION}"))
    if stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        return python
    if progress:
        progress(f"installing thingsboard-gateway {TB_VERSION} into {home}")
    try:
        if not python.exists():
            venv.create(home, with_pip=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *TB_PREINSTALL], check=True, capture_output=True)
        subprocess.run(
            [*pip, f"thingsboard-gateway=={TB_VERSION}"], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        tail = err.decode(errors="replace").strip()[-500:]
        raise PeerUnavailable(
            f"could not install thingsboard-gateway {TB_VERSION}: {tail}"
        ) from exc
    stamp.write_text(wanted, encoding="utf-8")
    return python


def _mosquitto() -> str:
    for name in MOSQUITTO:
        found = shutil.which(name) or (name if os.path.exists(name) else None)
        if found:
            return found
    raise PeerUnavailable("no mosquitto broker on this machine (apt-get install mosquitto)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerUnavailable(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise PeerUnavailable(f"nothing listens on port {port} after {timeout:.0f} s")


# The responder: answers the gateway's getSessionLimits RPC as a ThingsBoard
# server without limits would. Runs in the gateway's venv (paho-mqtt 2).
_RESPONDER = r"""
import json, sys, time
import paho.mqtt.client as mqtt

LIMITS = {
    "maxPayloadSize": 65536,
    "maxInflightMessages": 100,
    "rateLimits": {"messages": "0:0,", "telemetryMessages": "0:0,", "telemetryDataPoints": "0:0,"},
    "gatewayRateLimits": {
        "messages": "0:0,", "telemetryMessages": "0:0,", "telemetryDataPoints": "0:0,"
    },
}
REQ = "v1/devices/me/rpc/request/"
# {device: [[tag, ...], ...]}: the bool tags that are bits of one register.
BIT_GROUPS = json.load(open(sys.argv[2]))
totals = {"t": 0.0, "messages": 0, "values": 0, "bit_groups": 0, "bit_groups_all_equal": 0}
last = {}  # (device, tag) -> latest value published

def on_connect(client, userdata, flags, reason, properties=None):
    client.subscribe(REQ + "+", qos=1)
    client.subscribe("v1/gateway/telemetry", qos=0)

def on_message(client, userdata, msg):
    try:
        body = json.loads(msg.payload)
    except ValueError:
        return
    if msg.topic == "v1/gateway/telemetry":
        totals["messages"] += 1
        for device, entries in body.items():
            for entry in entries if isinstance(entries, list) else [entries]:
                values = entry.get("values", entry) if isinstance(entry, dict) else {}
                totals["values"] += len(values)
                for tag, value in values.items():
                    last[(device, tag)] = value
        return
    if isinstance(body, dict) and body.get("method") == "getSessionLimits":
        rid = msg.topic[len(REQ):]
        client.publish("v1/devices/me/rpc/response/" + rid, json.dumps(LIMITS), qos=1)

def report():
    groups = same = 0
    for device, tag_groups in BIT_GROUPS.items():
        for tags in tag_groups:
            seen = [last[(device, t)] for t in tags if (device, t) in last]
            if len(seen) == len(tags):
                groups += 1
                same += len(set(map(str, seen))) == 1
    totals.update(t=time.time(), bit_groups=groups, bit_groups_all_equal=same)
    print(json.dumps(totals), flush=True)

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tb-session-limits")
client.on_connect = on_connect
client.on_message = on_message
client.connect("127.0.0.1", int(sys.argv[1]))
client.loop_start()
while True:
    time.sleep(1.0)
    report()
"""

# The gateway (user = its access token) may publish anything but reads only
# what a ThingsBoard server would send it; the responder (anonymous) anything.
_ACL = f"""topic readwrite #

user {TOKEN}
topic write #
topic read v1/devices/me/rpc/response/#
topic read v1/devices/me/attributes/response/#
topic read v1/gateway/attributes/response
topic read v1/gateway/rpc
"""

# The launcher: the gateway's own entry point, with its update check made a no-op.
_LAUNCHER = r"""
import thingsboard_gateway.tb_utility.tb_updater as updater

updater.TBUpdater.check_for_new_version = lambda self: None
from thingsboard_gateway.tb_gateway import daemon

daemon()
"""


def tb_modbus_config(plant: Plant, endpoints: dict[str, Endpoint]) -> dict[str, Any]:
    """The gateway's Modbus connector config for the plant edgeopt polls (same tags, rates)."""
    slaves = []
    for device in plant.devices:
        ep = endpoints[device.name]
        timeseries = []
        poll_ms = 1000
        for tag in device.tags:
            fc = _FC[tag.table]
            key: dict[str, Any] = {"tag": tag.name, "functionCode": fc, "address": tag.address}
            if tag.type == "bool":
                key.update(type="bits", objectsCount=1, bitTargetType="bool")
                if tag.bit is not None:
                    key["bit"] = tag.bit
            elif tag.type == "string":
                key.update(type="string", objectsCount=tag.width)
            else:
                tb_type = _TB_TYPE[tag.type]
                key.update(type=tb_type, objectsCount=_WIDTH[tb_type[:2]])
                if tag.scale != 1.0:
                    key["multiplier"] = tag.scale
            timeseries.append(key)
            poll_ms = min(poll_ms, round(tag.interval * 1000))
        slaves.append(
            {
                "host": ep.host,
                "port": ep.port,
                "type": "tcp",
                "method": "socket",
                "unitId": ep.unit,
                "deviceName": device.name,
                "deviceType": "default",
                "timeout": 1,
                "byteOrder": "BIG",
                "wordOrder": "BIG",
                "retries": 1,
                "pollPeriod": poll_ms,
                "attributes": [],
                "timeseries": timeseries,
                "attributeUpdates": [],
                "rpc": [],
            }
        )
    return {"master": {"slaves": slaves}}


def _bit_groups(plant: Plant) -> dict[str, list[list[str]]]:
    """Per device, the bool tags that are bits of one register (two or more of them)."""
    out: dict[str, list[list[str]]] = {}
    for device in plant.devices:
        by_register: dict[tuple[str, int], list[str]] = {}
        for tag in device.tags:
            if tag.type == "bool" and tag.bit is not None:
                by_register.setdefault((tag.table, tag.address), []).append(tag.name)
        groups = [tags for tags in by_register.values() if len(tags) > 1]
        if groups:
            out[device.name] = groups
    return out


def _published(log: Path) -> list[dict[str, Any]]:
    """The responder's running totals of what the gateway published, one a second."""
    out = []
    for line in _tail(log, 10**9).splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def _write_tb(
    python: Path, plant: Plant, endpoints: dict[str, Endpoint], broker: int, work: Path
) -> Path:
    """The gateway's config folder (its shipped defaults + our broker and connector)."""
    shipped = subprocess.run(
        [
            str(python),
            "-c",
            "import thingsboard_gateway, os; "
            "print(os.path.join(os.path.dirname(thingsboard_gateway.__file__), 'config'))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    conf = work / "tb-config"
    shutil.copytree(shipped, conf)
    main = json.loads((conf / "tb_gateway.json").read_text(encoding="utf-8"))
    main["thingsboard"].update(host="127.0.0.1", port=broker)
    main["thingsboard"]["security"] = {"type": "accessToken", "accessToken": TOKEN}
    main["connectors"] = [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}]
    (conf / "tb_gateway.json").write_text(json.dumps(main, indent=2), encoding="utf-8")
    modbus = tb_modbus_config(plant, endpoints)
    (conf / "modbus.json").write_text(json.dumps(modbus, indent=1), encoding="utf-8")
    (work / "tb_launch.py").write_text(_LAUNCHER, encoding="utf-8")
    (work / "tb_responder.py").write_text(_RESPONDER, encoding="utf-8")
    (work / "bit_groups.json").write_text(json.dumps(_bit_groups(plant)), encoding="utf-8")
    (work / "logs").mkdir(exist_ok=True)
    return conf


@dataclass
class Side:
    """One product over the shared window."""

    name: str
    planned_reads_per_s: float
    seconds: float
    cpu_seconds: float
    rss_mb: float
    reads: int
    failed: int
    registers: float
    values_per_s: float  # tag values delivered (decoded) per second
    # The gateway only: tag values it published to the broker per second, and
    # of its registers read as several status bits, how many showed one value
    # for all their bits at the end of the window.
    published_per_s: float | None = None
    bit_registers: int = 0
    bit_registers_all_equal: int = 0

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_seconds / self.seconds

    @property
    def reads_per_s(self) -> float:
        return self.reads / self.seconds

    @property
    def kept_up(self) -> bool:
        return self.reads_per_s >= 0.97 * self.planned_reads_per_s

    @property
    def cpu_ms_per_value(self) -> float:
        if self.values_per_s <= 0:
            return math.inf
        return 1000 * self.cpu_seconds / (self.values_per_s * self.seconds)


@dataclass
class PeerPoint:
    n_tags: int
    n_devices: int
    edgeopt: Side
    peer: Side

    @property
    def cpu_per_value_ratio(self) -> float:
        """edgeopt's CPU per delivered tag value over the peer's (goal ≤ 0.2)."""
        return self.edgeopt.cpu_ms_per_value / self.peer.cpu_ms_per_value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_tags": self.n_tags, "n_devices": self.n_devices}
        for label, side in (("edgeopt", self.edgeopt), ("peer", self.peer)):
            d = dataclasses.asdict(side)
            d.update(
                cpu_pct=side.cpu_pct,
                reads_per_s=side.reads_per_s,
                kept_up=side.kept_up,
                cpu_ms_per_value=side.cpu_ms_per_value,
            )
            out[label] = d
        out["cpu_per_value_ratio"] = self.cpu_per_value_ratio
        return out


def _counts(log: Path, w0: float, w1: float) -> tuple[int, int, float]:
    reads = failed = 0
    regs = 0.0
    for rec in iter_requests(log):
        if w0 <= float(rec["ts"]) < w1:
            if rec.get("outcome") == "ok":
                reads += 1
                regs += _registers(rec)
            else:
                failed += 1
    return reads, failed, regs


def _first_request(log: Path, since: float) -> float | None:
    if not log.exists():
        return None
    return next((float(r["ts"]) for r in iter_requests(log) if float(r["ts"]) >= since), None)


@contextlib.contextmanager
def _process(cmd: list[str], log: Path, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kw)
    try:
        yield proc
    finally:
        stop_process(proc)


def _tail(path: Path, n: int = 600) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-n:]
    except OSError:
        return ""


def measure_point(
    n_tags: int,
    n_devices: int,
    *,
    warmup: float,
    seconds: float,
    progress: Progress | None = None,
) -> PeerPoint:
    python = tb_venv(progress)
    mosquitto = _mosquitto()
    plant = at_interval(large_plant(n_tags, n_devices).without_strict_gaps(), 1.0)
    sim_args = ["--plant", "large", "--tags", str(n_tags), "--devices", str(n_devices)]
    sim_args.append("--no-strict-gaps")
    clock_start = time.time() - PLANT_TIME
    with contextlib.ExitStack() as stack:
        if os.environ.get("EDGEOPT_BENCH_KEEP"):  # keep the logs and configs to look at
            work = Path(tempfile.mkdtemp(prefix="edgeopt-peers-"))
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeopt-peers-")))
        sims = {}
        for side in ("edgeopt", "peer"):
            if progress:
                progress(f"{n_tags} tags: simulator for {side}")
            sim = start_simulator(
                sim_args, clock_start=clock_start, request_log=work / f"requests-{side}.jsonl"
            )
            stack.callback(stop_process, sim.proc)
            sims[side] = sim
        # The broker and the session-limits responder.
        port = _free_port()
        (work / "mosquitto.acl").write_text(_ACL, encoding="utf-8")
        work.chmod(0o755)  # mosquitto started as root reads its files as user mosquitto
        (work / "mosquitto.conf").write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"acl_file {work / 'mosquitto.acl'}\n",
            encoding="utf-8",
        )
        broker = stack.enter_context(
            _process([mosquitto, "-c", str(work / "mosquitto.conf")], work / "mosquitto.log")
        )
        _wait_port(port, broker)
        conf = _write_tb(python, plant, sims["peer"].endpoints, port, work)
        responder = [str(python), str(work / "tb_responder.py"), str(port)]
        stack.enter_context(
            _process(
                [*responder, str(work / "bit_groups.json")],
                work / "resp.log",
            )
        )
        # Nothing the gateway tries beyond the machine gets out: no proxy listens here.
        offline = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
        offline.update(http_proxy=offline["HTTP_PROXY"], https_proxy=offline["HTTPS_PROXY"])
        env = {**os.environ, "TB_GW_CONFIG_DIR": str(conf), **offline}
        env.pop("PYTHONPATH", None)
        if progress:
            progress(f"{n_tags} tags: starting both")
        spawned = time.time()
        tb = stack.enter_context(
            _process([str(python), str(work / "tb_launch.py")], work / "tb.log", cwd=work, env=env)
        )
        config = write_config(plant, sims["edgeopt"].endpoints, work, sections=OPTIMIZER_OFF)
        daemon = start_daemon(config, work / "daemon.log")
        stack.callback(stop_process, daemon)
        # Wait until the gateway polls (it starts slower), then the warm-up.
        peer_log = work / "requests-peer.jsonl"
        deadline = time.monotonic() + 120
        while _first_request(peer_log, spawned) is None:
            if tb.poll() is not None or time.monotonic() > deadline:
                logs = f"{_tail(work / 'tb.log')} {_tail(work / 'logs' / 'service.log')}"
                raise PeerUnavailable(
                    f"ThingsBoard IoT Gateway made no Modbus request (exit {tb.poll()}): {logs}"
                )
            time.sleep(1.0)
        if progress:
            progress(f"{n_tags} tags: both polling; warming up {warmup:.0f} s")
        time.sleep(warmup)
        procs = {"edgeopt": psutil.Process(daemon.pid), "peer": psutil.Process(tb.pid)}
        c0 = {k: _cpu(p) for k, p in procs.items()}
        w0 = time.time()
        if progress:
            progress(f"{n_tags} tags: measuring {seconds:.0f} s")
        time.sleep(seconds)
        c1 = {k: _cpu(p) for k, p in procs.items()}
        w1 = time.time()
        rss = {k: p.memory_info().rss / 2**20 for k, p in procs.items()}
        time.sleep(1.5)  # the simulators flush their request logs every second
        published = _published(work / "resp.log")
        planned_edgeopt = sum(1 / r[4] for r in _plan_reads(config))
        sides = {}
        for key, name, planned in (
            ("edgeopt", "edgeopt", planned_edgeopt),
            ("peer", f"ThingsBoard IoT Gateway {TB_VERSION}", float(plant.n_tags)),
        ):
            log = work / f"requests-{key}.jsonl"
            reads, failed, regs = _counts(log, w0, w1)
            span = w1 - w0
            # Tag values delivered: edgeopt decodes every tag of each planned read (all
            # tags once a second when it keeps up); the gateway one key a request.
            if key == "edgeopt":
                values = plant.n_tags * min(1.0, reads / span / planned) * span
            else:
                values = float(reads)
            sides[key] = Side(
                name,
                planned,
                span,
                c1[key] - c0[key],
                rss[key],
                reads,
                failed,
                regs,
                values / span,
            )
        inside = [p for p in published if w0 - 1 <= p["t"] <= w1 + 1]
        if len(inside) >= 2:
            first, last = inside[0], inside[-1]
            peer = sides["peer"]
            peer.published_per_s = (last["values"] - first["values"]) / (last["t"] - first["t"])
            peer.bit_registers = int(last["bit_groups"])
            peer.bit_registers_all_equal = int(last["bit_groups_all_equal"])
    return PeerPoint(n_tags, n_devices, sides["edgeopt"], sides["peer"])


def measure_peers(
    sizes: tuple[tuple[int, int], ...],
    *,
    warmup: float,
    seconds: float,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every size; or, when the gateway cannot run here, why not."""
    points: list[dict[str, Any]] = []
    try:
        for n_tags, n_devices in sizes:
            point = measure_point(
                n_tags, n_devices, warmup=warmup, seconds=seconds, progress=progress
            )
            points.append(point.to_dict())
    except PeerUnavailable as exc:
        return {"points": points, "skipped": str(exc)}
    return {"points": points, "skipped": None}


if __name__ == "__main__":  # pragma: no cover - a quick manual run
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    result = measure_peers(((n, max(1, n // 100)),), warmup=5, seconds=15, progress=print)
    print(json.dumps(result, indent=1))
