"""Processes the real-socket benchmarks run: the simulator, the daemon, and their request log.

Each runs as its own OS process (as in production, and so that each one's CPU
can be measured alone). Only processes started here are ever stopped, by
their pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from simulators.plant import Endpoint, Plant

from .metrics import ReadKey, ReadLog, ReadLogBuilder

__all__ = [
    "SimulatorProcess",
    "daemon_command",
    "read_request_log",
    "start_daemon",
    "start_simulator",
    "stop_process",
    "write_config",
]

_FC_TABLE = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}


@dataclass
class SimulatorProcess:
    """`python -m simulators serve` running in the background."""

    proc: subprocess.Popen[str]
    clock_start: float
    endpoints: dict[str, Endpoint]
    request_log: Path | None

    def plant_time(self) -> float:
        return time.time() - self.clock_start


def start_simulator(
    plant_args: list[str],
    *,
    clock_start: float,
    request_log: Path | None,
    timeout: float = 120.0,
    extra: list[str] | None = None,
) -> SimulatorProcess:
    """Start the simulator (TCP ports picked by the OS) and wait for its endpoints."""
    cmd = [
        sys.executable,
        "-m",
        "simulators",
        "serve",
        *plant_args,
        "--base-port",
        "0",
        "--clock-start",
        repr(clock_start),
        "--json",
        *(extra or []),
    ]
    if request_log is not None:
        cmd += ["--request-log", str(request_log)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            break
        if proc.poll() is not None:
            break
    if not line:
        stop_process(proc)
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"simulator did not start: {err.strip()[-2000:]}")
    info = json.loads(line)
    endpoints = {name: Endpoint(**ep) for name, ep in info["endpoints"].items()}
    return SimulatorProcess(proc, float(info["clock_start"]), endpoints, request_log)


def write_config(
    plant: Plant,
    endpoints: dict[str, Endpoint],
    workdir: Path,
    *,
    sections: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """The plant's edgeopt config for these endpoints, state under workdir."""
    state = workdir / "state"
    cfg = plant.to_config(endpoints, str(state), str(workdir / "ctl.sock"), log_level="warning")
    for section, values in (sections or {}).items():
        cfg.setdefault(section, {}).update(values)
    path = workdir / "edgeopt.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def daemon_command(config: Path) -> list[str]:
    """`edgeopt run`, from the same environment as this interpreter."""
    script = Path(sys.executable).parent / "edgeopt"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "edgeopt.cli"]
    return [*head, "run", "--config", str(config), "--log-level", "warning"]


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    try:
        return subprocess.Popen(daemon_command(config), stdout=handle, stderr=subprocess.STDOUT)
    finally:
        handle.close()  # the child holds its own copy


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> int | None:
    """SIGTERM this one process, wait, and SIGKILL it only if it will not stop."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


@contextlib.contextmanager
def running(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    try:
        yield proc
    finally:
        stop_process(proc)


def iter_requests(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                with contextlib.suppress(json.JSONDecodeError):  # a torn last line
                    yield json.loads(line)


def read_request_log(
    path: Path, plant: Plant, t0: float, t1: float, name: str = "real"
) -> tuple[ReadLog, dict[str, int]]:
    """Successful reads in the simulator's own request log, as a ReadLog of plant times.

    A read covers every tag that lies wholly inside its address range (the
    simulator does not know which tags the poller decoded). Returns the log
    and a count of outcomes.
    """
    index: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    for dev, tag in plant.iter_tags():
        index.setdefault((dev.name, tag.table), []).append(
            (tag.address, tag.width, f"{dev.name}/{tag.name}")
        )
    for spans in index.values():
        spans.sort()
    builder = ReadLogBuilder()
    cache: dict[tuple[str, str, int, int], int] = {}
    outcomes: dict[str, int] = {}
    for rec in iter_requests(path):
        outcome = str(rec.get("outcome"))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome != "ok":
            continue
        t = float(rec["t"])
        table = _FC_TABLE.get(int(rec["fc"]))
        if table is None or not t0 <= t <= t1 or rec.get("device") is None:
            continue
        device, start, count = str(rec["device"]), int(rec["address"]), int(rec["count"])
        ck = (device, table, start, count)
        kid = cache.get(ck)
        if kid is None:
            tags = tuple(
                key
                for a, w, key in index.get((device, table), [])
                if a >= start and a + w <= start + count
            )
            kid = builder.key_id(ReadKey(device, table, start, count, tags))
            cache[ck] = kid
        builder.add(t, kid)
    return builder.build(t0, t1, name), outcomes
