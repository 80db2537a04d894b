"""The northbound sink: takes the poller's samples like storage does and hands them,
packed per target, to the outbox and that target's publisher.

It owns the outbox (`state_dir/northbound.db`) and one `Publisher` per target,
applies a reload as a diff (a changed target reconnects, an unchanged one keeps
its connection), and reports each target for `status`, `northbound` and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.clock import Clock
from edgeopt.config import Config, NorthboundTarget
from edgeopt.config.diff import Fates
from edgeopt.events import EventLog
from edgeopt.northbound.outbox import Outbox
from edgeopt.northbound.payload import (
    Batcher,
    CommandHandler,
    TagRoute,
    WriteCommand,
    command_tag,
    encode_result,
    meta_messages,
    parse_command,
    routes,
)
from edgeopt.tags import Sample

if TYPE_CHECKING:  # the publisher imports aiomqtt: only when a target exists
    from edgeopt.northbound.publisher import Publisher

log = logging.getLogger(__name__)

OUTBOX_NAME = "northbound.db"
# Runs a write from a command topic: (tag key, target name, command) -> its result.
TagWriter = Callable[[str, str, WriteCommand], Awaitable[dict[str, Any]]]
# How often batches waiting for their max_delay are looked at.
BATCH_TICK = 0.05


@dataclass
class Route:
    """One running target: its config, its packing of changes and its connection."""

    target: NorthboundTarget
    gateway: str
    batcher: Batcher
    publisher: Publisher
    tags: dict[str, TagRoute] = field(default_factory=dict)


@dataclass
class NorthboundDiff(Fates):
    """Targets by fate (changed: reconnected)."""


class Northbound:
    """Every northbound target of one daemon (none is fine: then it costs nothing)."""

    def __init__(self, state_dir: Path, clock: Clock, events: EventLog) -> None:
        self.path = state_dir / OUTBOX_NAME
        self.clock = clock
        self.events = events
        self.outbox: Outbox | None = None
        self.routes: dict[str, Route] = {}
        # Device writes arriving on `.../{device}/{tag}/set`, for targets with
        # `commands: true`: (tag key, the target's name, the command) -> the result.
        # Set it before `start`; without it no target subscribes.
        self.write: TagWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, config: Config) -> None:
        await self.apply(config)

    # -- the sink ------------------------------------------------------------------------

    def extend(self, samples: Sequence[Sample]) -> None:
        """The poller's sink: pack the samples for each target and queue them."""
        if not self.routes or self.outbox is None:
            return
        now = self.clock.monotonic()
        for name, route in self.routes.items():
            messages = route.batcher.add(samples, route.tags, now)
            if messages:
                route.publisher.offer(self.outbox.add(name, messages))

    async def _batch_timer(self) -> None:
        """Closes batches that have waited `max_delay`."""
        while True:
            await asyncio.sleep(BATCH_TICK)
            if self.outbox is None:
                continue
            now = self.clock.monotonic()
            for name, route in self.routes.items():
                if route.batcher.max_messages > 1 and route.batcher.max_delay > 0:
                    messages = route.batcher.due(now)
                    if messages:
                        route.publisher.offer(self.outbox.add(name, messages))

    # -- config --------------------------------------------------------------------------

    async def apply(self, config: Config) -> NorthboundDiff:
        """Start, keep, reconnect or stop targets to match `config`."""
        diff = NorthboundDiff()
        gateway = config.daemon.gateway
        wanted = {t.name: t for t in config.northbound}
        if wanted and self.outbox is None:
            self.outbox = await Outbox.open(self.path, self.clock, on_drop=self._on_drop)
            self._tasks.append(asyncio.create_task(self.outbox.run(), name="northbound outbox"))
            self._tasks.append(asyncio.create_task(self._batch_timer(), name="northbound batches"))
        for name in [n for n in self.routes if n not in wanted]:
            await self._stop_route(name)
            diff.removed.append(name)
        for name, target in wanted.items():
            tags = routes(config.devices, target.topic, gateway)
            meta = meta_messages(config.devices, target.topic, gateway)
            current = self.routes.get(name)
            if current is not None and current.target == target and current.gateway == gateway:
                current.tags = tags
                current.publisher.set_meta(meta)
                diff.unchanged.append(name)
                continue
            if current is not None:
                await self._stop_route(name)
                diff.changed.append(name)
            else:
                diff.added.append(name)
            await self._start_route(target, gateway, tags, meta)
        return diff

    async def _start_route(
        self,
        target: NorthboundTarget,
        gateway: str,
        tags: dict[str, TagRoute],
        meta: dict[str, bytes],
    ) -> None:
        assert self.outbox is not None
        await self.outbox.attach(target.name, target.outbox_max)
        batcher = Batcher(target.topic, gateway, target.batch.max_messages, target.batch.max_delay)
        from edgeopt.northbound.publisher import Publisher

        publisher = Publisher(target, gateway, self.outbox, self.clock, self.events, meta)
        if self.write is not None:
            publisher.command_handler = self._commands_of(target.name)
        self.routes[target.name] = Route(target, gateway, batcher, publisher, tags)
        publisher.start()

    def _commands_of(self, name: str) -> CommandHandler:
        """The handler of one target's command topics: a write, and its result as JSON."""

        async def handle(topic: str, payload: bytes) -> bytes | None:
            route = self.routes.get(name)
            if route is None or self.write is None:
                return None
            key = command_tag(topic, route.tags)
            if key is None:
                return encode_result(
                    {
                        "result": "refused",
                        "error": "not_found",
                        "message": f"no published tag has the topic {topic}",
                    }
                )
            try:
                command = parse_command(payload)
            except ValueError as exc:
                return encode_result(
                    {"tag": key, "result": "refused", "error": "invalid_args", "message": str(exc)}
                )
            return encode_result(await self.write(key, name, command))

        return handle

    async def _stop_route(self, name: str) -> None:
        route = self.routes.pop(name)
        if self.outbox is not None:
            leftover = route.batcher.flush()
            if leftover:
                self.outbox.add(name, leftover)
        await route.publisher.close()
        if self.outbox is not None:
            self.outbox.detach(name)

    def _on_drop(self, target: str, count: int, size: int, oldest_ts: float) -> None:
        self.events.emit(
            self.clock.now(),
            "northbound_dropped",
            f"{target}: outbox over its budget, dropped the {count} oldest undelivered"
            f" messages ({size} bytes)",
            target=target,
            dropped=count,
            bytes=size,
            oldest_ts=oldest_ts,
        )

    async def close(self) -> None:
        """Pack what is open, disconnect every target cleanly, write the outbox."""
        for name in list(self.routes):
            route = self.routes[name]
            leftover = route.batcher.flush()
            if leftover and self.outbox is not None:
                self.outbox.add(name, leftover)
        try:
            await asyncio.gather(
                *(r.publisher.close() for r in self.routes.values()), return_exceptions=True
            )
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.outbox is not None:
                with contextlib.suppress(Exception):  # its thread must end, or the process hangs
                    await self.outbox.close()

    # -- figures ---------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Per target: CONTRACT.md's `northbound` result (never a secret)."""
        now = self.clock.now()
        out = []
        for name, route in self.routes.items():
            pub, target = route.publisher, route.target
            box = self.outbox.boxes.get(name) if self.outbox is not None else None
            oldest = box.oldest_ts if box is not None else None
            out.append(
                {
                    "name": name,
                    "host": target.host,
                    "port": target.broker_port,
                    "tls": target.tls is not None,
                    "client_id": pub.client_id,
                    "qos": target.qos,
                    "connected": pub.connected,
                    "since": pub.since,
                    "last_error": pub.last_error,
                    "outbox": {
                        "messages": box.messages if box else 0,
                        "bytes": box.bytes if box else 0,
                        "max_bytes": target.outbox_max,
                        "oldest_age_s": None
                        if oldest is None or not box or not box.messages
                        else round(max(0.0, now - oldest), 3),
                    },
                    "draining": pub.backlog(),
                    "published": pub.published,
                    "published_per_s": pub.published_per_s(),
                    "enqueued": box.enqueued if box else 0,
                    "dropped": box.dropped if box else 0,
                }
            )
        return out
