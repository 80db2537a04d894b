"""Real-socket confirmation: the real daemon against the simulator, scored from the simulator's log.

The simulator (`python -m simulators serve`) and the daemon (`edgeopt run`)
run as two processes over real TCP sockets, for `duration` seconds of wall
time. The simulator's clock is set so that plant time matches the replay's
start. The reads are taken from the simulator's own request log (not from
the daemon's statistics) and scored with the same metrics and ground truth
as a virtual-time replay of the same plant over the same plant times. The
two should agree: that is what makes the virtual-time figures believable.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.control.client import ControlClient, Unreachable
from simulators.plants import build_plant

from .metrics import GroundTruth, Score, score
from .procs import read_request_log, start_daemon, start_simulator, stop_process, write_config
from .replay import replay

__all__ = ["RealSocketResult", "run_realsocket"]


@dataclass
class RealSocketResult:
    plant: str
    duration: float
    t0: float
    t1: float
    window: tuple[float, float]
    real: Score
    replay: Score
    outcomes: dict[str, int]
    replay_optimizer: str
    # With `replay_shifts`: one more replay per shift (seconds later, the same
    # length), each scored over its own window: how far one learner's path varies.
    shifted: list[Score] = field(default_factory=list)


async def run_realsocket(
    plant_name: str = "demo",
    duration: float = 180.0,
    *,
    plant_start: float,
    progress: Callable[[str, float], None] | None = None,
    optimizer: dict[str, Any] | None = None,
    replay_shifts: Sequence[float] = (),
) -> RealSocketResult:
    """Run daemon + simulator for `duration` wall seconds from plant time `plant_start`.

    optimizer: `optimizer:` keys for both the daemon's config and the replay
    (e.g. a faster cadence), so the two run the same learner. replay_shifts:
    also replay from these many seconds later (a learner with an optimizer
    takes a different path when its cycles fall a few seconds apart).
    """
    plant = build_plant(plant_name)
    with tempfile.TemporaryDirectory(prefix="edgeopt-realsocket-") as tmp:
        work = Path(tmp)
        log_path = work / "requests.jsonl"
        # Plant time `plant_start` a few seconds from now, when the daemon is up.
        sim = start_simulator(
            ["--plant", plant_name],
            clock_start=time.time() - plant_start + 3.0,
            request_log=log_path,
        )
        try:
            config = write_config(
                plant, sim.endpoints, work, sections={"optimizer": dict(optimizer or {})}
            )
            daemon = start_daemon(config, work / "daemon.log")
            daemon_optimizer: bool | None = None
            try:
                started = time.monotonic()
                while (elapsed := time.monotonic() - started) < duration + 5.0:
                    if daemon_optimizer is None:
                        daemon_optimizer = _optimizer_running(work / "ctl.sock")
                    if daemon.poll() is not None:
                        raise RuntimeError(
                            "the daemon exited: "
                            + (work / "daemon.log").read_text(errors="replace")[-2000:]
                        )
                    if progress is not None:
                        progress("real daemon", min(1.0, elapsed / (duration + 5.0)))
                    await asyncio.sleep(0.5)
            finally:
                stop_process(daemon)
        finally:
            stop_process(sim.proc)
        first = _first_ok(log_path)
        if first is None:
            raise RuntimeError("the simulator saw no successful read")
        t0 = first
        t1 = t0 + duration
        real_log, outcomes = read_request_log(log_path, plant, t0, t1, "edgeopt (real sockets)")
    if progress is not None:
        progress("replay", 0.0)
    # The replay runs what the daemon ran: its optimizer only if the daemon has one.
    rep = await replay(
        plant,
        duration,
        start=t0,
        optimizer_factory=None if daemon_optimizer else False,
        optimizer_config=dict(optimizer or {}),
        name="edgeopt (replay)",
    )
    truth = GroundTruth.from_plant(plant, t0, t1)
    window = (t0 + duration / 3, t1)
    shifted: list[Score] = []
    for shift in replay_shifts:
        other = await replay(
            plant,
            duration,
            start=t0 + shift,
            optimizer_factory=None if daemon_optimizer else False,
            optimizer_config=dict(optimizer or {}),
            name=f"edgeopt (replay +{shift:g} s)",
        )
        moved = GroundTruth.from_plant(plant, t0 + shift, t1 + shift)
        shifted.append(score(other.log, moved, window=(window[0] + shift, t1 + shift)))
    return RealSocketResult(
        plant=plant.name,
        duration=duration,
        t0=t0,
        t1=t1,
        window=window,
        real=score(real_log, truth, window=window),
        replay=score(rep.log, truth, window=window),
        outcomes=outcomes,
        replay_optimizer=rep.optimizer,
        shifted=shifted,
    )


def _optimizer_running(socket: Path) -> bool | None:
    """Whether the daemon reports a running optimizer (None: not reachable yet)."""
    try:
        reply = ControlClient(str(socket), timeout=2.0).call("status")
    except (Unreachable, OSError):
        return None
    result = reply.get("result") or {}
    return bool((result.get("optimizer") or {}).get("enabled"))


def _first_ok(path: Path) -> float | None:
    from .procs import iter_requests

    for rec in iter_requests(path):
        if rec.get("outcome") == "ok":
            return float(rec["t"])
    return None
