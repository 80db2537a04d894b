"""The control commands: each turns daemon state into a docs/CONTRACT.md result.

Handlers read a `DaemonView` (what the daemon exposes) and never touch
sockets, so they are easy to test and to extend.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edgeopt import __version__
from edgeopt.config.durations import parse_duration
from edgeopt.control.server import ControlError, ControlServer, Peer
from edgeopt.control.timespec import parse_time
from edgeopt.events import Event, EventLog
from edgeopt.floats import shortest_float16, shortest_float32
from edgeopt.modbus.health import DeviceState
from edgeopt.poller import Poller
from edgeopt.storage import QueryResult


class SampleQuery(Protocol):
    """Reads a tag's points across the storage tiers (the daemon's TierManager)."""

    async def query(
        self,
        tag: str,
        since: float | None = None,
        until: float | None = None,
        resolution: float | None = None,
        limit: int | None = None,
    ) -> QueryResult: ...


@dataclass
class DaemonView:
    """What command handlers may look at."""

    poller: Poller
    store: SampleQuery
    events: EventLog
    started_wall: float
    now: Callable[[], float]  # wall clock
    rates: Callable[[], dict[str, Any]]  # measured reads/s and bus load per line
    extra_status: Callable[[], dict[str, Any]] | None = None


def register(server: ControlServer, view: DaemonView) -> None:
    """Register the read-only commands."""

    async def status(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return status_result(view)

    async def devices(args: dict[str, Any], peer: Peer) -> list[dict[str, Any]]:
        return devices_result(view)

    async def tags(args: dict[str, Any], peer: Peer) -> list[dict[str, Any]]:
        device = args.get("device")
        if device is not None and not isinstance(device, str):
            raise ControlError("invalid_args", "device must be a string")
        if device is not None and device not in view.poller.devices:
            raise ControlError("not_found", f"no device named {device!r}")
        return tags_result(view, device)

    async def query(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return await query_result(view, args)

    async def events(args: dict[str, Any], peer: Peer) -> Any:
        limit = args.get("limit", 100)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ControlError("invalid_args", "limit must be a non-negative integer")
        if args.get("follow"):
            return follow_events(view.events)
        return [e.to_dict() for e in view.events.recent(limit)]

    server.command("status", status)
    server.command("events", events)
    server.command("devices", devices)
    server.command("tags", tags)
    server.command("query", query)


async def follow_events(log: EventLog) -> AsyncIterator[dict[str, Any]]:
    """New events as they happen, until the consumer stops iterating."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)

    def push(event: Event) -> None:
        if queue.full():  # a slow reader loses the oldest, never blocks the daemon
            queue.get_nowait()
        queue.put_nowait(event.to_dict())

    unsubscribe = log.subscribe(push)
    try:
        while True:
            yield await queue.get()
    finally:
        unsubscribe()


def status_result(view: DaemonView) -> dict[str, Any]:
    poller = view.poller
    counts = {state.value: 0 for state in DeviceState}
    for device in poller.devices.values():
        counts[device.health.state.value] += 1
    rates = view.rates()
    result: dict[str, Any] = {
        "version": __version__,
        "uptime_s": round(view.now() - view.started_wall, 3),
        "pid": os.getpid(),
        "devices": {"total": len(poller.devices), **counts},
        "tags": len(poller.tags),
        "reads_per_s": rates.get("reads_per_s", 0.0),
        "bus_load": rates.get("bus_load", {}),
        "pressure": "normal",
        "optimizer": {
            "enabled": False,
            "last_quick": None,
            "last_full": None,
            "pending_evaluations": 0,
        },
        "plan": {
            "reads": len(poller.plan.reads),
            "registers": poller.plan.registers,
            "bits": poller.plan.bits,
            "summary": poller.plan.summary(),
        },
    }
    if view.extra_status is not None:
        result.update(view.extra_status())
    return result


def devices_result(view: DaemonView) -> list[dict[str, Any]]:
    """CONTRACT.md `devices`, plus (added): the last error's time and whether the
    device has recovered from it, errors by kind (timeout, exception, garbage,
    late, foreign, connection), and reads that needed a resend or a reconnect."""
    out = []
    for device in view.poller.devices.values():
        stats, health = device.stats, device.health
        out.append(
            {
                "name": device.name,
                "transport": device.config.transport,
                "line": device.line,
                "unit": device.config.unit,
                "state": health.state.value,
                "last_error": health.last_error,
                "last_error_ts": health.last_error_ts,
                "recovered_ts": health.recovered_ts,
                "reads": stats.reads,
                "errors": stats.errors,
                "errors_by_kind": dict(stats.errors_by_kind),
                "retried": stats.retried,
                "resends": stats.resends,
                "reconnects": stats.reconnects,
                "registers": stats.registers,
                "exceptions": {str(k): v for k, v in stats.exceptions.items()},
                "latency_ms": stats.latency_ms(),
            }
        )
    return out


def tags_result(view: DaemonView, device: str | None = None) -> list[dict[str, Any]]:
    out = []
    for tag in view.poller.tags.values():
        if device is not None and tag.device != device:
            continue
        state = tag.state
        value = state.value
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif isinstance(value, float) and _float32(tag.config.type):
            value = _short(value, tag.config.type)
        out.append(
            {
                "device": tag.device,
                "name": str(tag.config.name),
                "value": value,
                "unit": tag.config.unit,
                "quality": state.quality.value,
                "reason": state.reason,
                "ts": state.ts,
                "interval_s": tag.interval,
                "base_interval_s": tag.base_interval,
                "max_staleness_s": float(tag.config.max_staleness),
                "reads": state.stats.reads,
                "changes": state.stats.changes,
            }
        )
    return out


async def query_result(view: DaemonView, args: dict[str, Any]) -> dict[str, Any]:
    tag = args.get("tag")
    if not isinstance(tag, str) or "/" not in tag:
        raise ControlError("invalid_args", "tag must be a string DEVICE/NAME")
    if tag not in view.poller.tags:
        raise ControlError("not_found", f"no tag named {tag!r}")
    now = view.now()
    try:
        since = _time_arg(args.get("since"), now)
        until = _time_arg(args.get("until"), now)
    except ValueError as exc:
        raise ControlError("invalid_args", str(exc)) from None
    limit = args.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ControlError("invalid_args", "limit must be a positive integer")
    resolution = args.get("resolution")
    try:
        resolution = None if resolution is None else parse_duration(resolution)
    except ValueError as exc:
        raise ControlError("invalid_args", f"resolution: {exc}") from None
    if resolution is not None and resolution <= 0:
        raise ControlError("invalid_args", "resolution must be positive")
    result = await view.store.query(tag, since, until, resolution=resolution, limit=limit)
    out = result.to_dict()
    data_type = view.poller.tags[tag].config.type
    if _float32(data_type):
        out["points"] = [[ts, _short(value, data_type)] for ts, value in out["points"]]
    return out


def _float32(data_type: str) -> bool:
    """Values of this type are float32 at heart: print them the way they were written."""
    return data_type in ("float32", "float16")


def _short(value: Any, data_type: str) -> Any:
    if not isinstance(value, float):
        return value
    return shortest_float16(value) if data_type == "float16" else shortest_float32(value)


def _time_arg(value: Any, now: float) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str | int | float):
        raise ValueError(f"invalid time {value!r}")
    return parse_time(value, now)
