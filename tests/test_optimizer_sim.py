"""A tiny virtual-time poll loop for the optimizer tests (and a check that it works).

`Sim` builds a `Poller` from device dicts, answers every read from per-tag
signal functions of plant time (register tables only), and, when given an
optimizer, calls its `run_due()` every `tick` seconds. No sockets, no sleeps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from edgeopt.clock import VirtualClock
from edgeopt.config import Config, DeviceConfig
from edgeopt.events import EventLog
from edgeopt.modbus.transport import ReadResult
from edgeopt.poller import Poller

MONDAY = 1_699_833_600.0  # 2023-11-13 00:00 UTC
Signal = Callable[[float], float]


def device(name: str, tags: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "transport": "tcp", "host": "192.0.2.1", "tags": tags, **extra}


def tag(name: str, address: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "table": "holding", "address": address, "type": "uint16", **extra}


def config(devices: list[dict[str, Any]], **optimizer: Any) -> Config:
    data: dict[str, Any] = {"devices": devices}
    if optimizer:
        data["optimizer"] = optimizer
    return Config.model_validate(data)


class Sim:
    """Polls `devices` in virtual time; tag values come from `signals` (key -> f(t))."""

    def __init__(
        self,
        devices: list[DeviceConfig],
        signals: dict[str, Signal],
        *,
        start: float = 0.0,
        latency: float = 0.002,
    ) -> None:
        self.clock = VirtualClock(MONDAY)
        self.clock.set_monotonic(start)
        self.events = EventLog()
        self.poller = Poller(devices, events=self.events)
        self.poller.replan(self.clock.monotonic())
        self.signals = signals
        self.latency = latency
        self.registers = 0
        self.reads = 0
        self.read_times: dict[str, list[float]] = {k: [] for k in self.poller.tags}

    def value(self, key: str, t: float) -> float:
        return self.signals.get(key, lambda _t: 0.0)(t)

    def answer(self, read: Any, t: float) -> ReadResult:
        words = [0] * read.count
        for key in read.tags:
            tag = self.poller.tags[key]
            offset = int(tag.config.address) - read.start
            encoded = tag.codec.encode(self.value(key, t))
            words[offset : offset + len(encoded)] = encoded
        return ReadResult(words, self.latency)

    async def run(self, seconds: float, optimizer: Any = None, tick: float = 5.0) -> None:
        clock, poller = self.clock, self.poller
        end = clock.monotonic() + seconds
        next_tick = clock.monotonic() + tick
        while True:
            due, line = math.inf, None
            for name, schedule in poller.schedules.items():
                d = schedule.next_due()
                if d is not None and d < due:
                    due, line = d, name
            if optimizer is not None and next_tick <= min(due, end):
                clock.set_monotonic(next_tick)
                await optimizer.run_due()
                next_tick += tick
                continue
            if line is None or due >= end:
                clock.set_monotonic(end)
                return
            clock.set_monotonic(due)
            item = poller.next_read(line, clock.monotonic())
            if item is None:
                continue
            read, when = item
            t = clock.monotonic()
            result = self.answer(read, t)
            clock.advance(self.latency)
            poller.apply(read, result, clock.now(), clock.monotonic(), when)
            self.reads += 1
            self.registers += read.count
            for key in read.tags:
                self.read_times[key].append(t)


def steps(period: float, levels: tuple[float, ...] = (10.0, 20.0)) -> Signal:
    """A value that switches level every `period` seconds."""
    return lambda t: levels[int(t // period) % len(levels)]


def constant(value: float) -> Signal:
    return lambda _t: value


async def test_sim_reads_every_tag_at_its_interval() -> None:
    cfg = config([device("d", [tag("a", 0, interval="1s"), tag("b", 50, interval="10s")])])
    sim = Sim(cfg.devices, {"d/a": steps(5.0), "d/b": constant(7.0)})
    await sim.run(100.0)
    assert 95 <= len(sim.read_times["d/a"]) <= 101
    assert 9 <= len(sim.read_times["d/b"]) <= 11
    assert sim.poller.tags["d/b"].state.value == 7
    assert sim.poller.tags["d/a"].state.stats.changes >= 18
