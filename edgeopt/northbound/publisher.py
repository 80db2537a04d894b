"""One MQTT connection per northbound target (aiomqtt), sending what waits in the outbox.

A message leaves the outbox only when the broker acknowledges it (PUBACK at
QoS 1). While connected, new messages go out at once; what piled up before
(an outage, a restart) drains from the outbox oldest first, at `drain_rate`.
A backlog the rate allows is sent before newer messages, so order holds; a
larger one interleaves with them, so the present is never held behind the past.
The broker publishes the retained `offline` last will when the gateway vanishes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiomqtt

from edgeopt.clock import Clock
from edgeopt.config import NorthboundTarget
from edgeopt.events import EventLog
from edgeopt.northbound.outbox import Outbox, wait_event
from edgeopt.northbound.payload import (
    COMMAND_SUFFIX,
    OFFLINE,
    ONLINE,
    CommandHandler,
    Message,
    result_topic,
    status_topic,
)

log = logging.getLogger(__name__)

# Messages sent and not yet acknowledged, per connection.
MAX_INFLIGHT = 100
# New messages held in memory while connected; past this they wait in the outbox.
LIVE_MAX = 20_000
# Messages read from the outbox per step of a drain.
DRAIN_STEP = 500
PUBACK_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
# Seconds a stopping publisher waits for the acknowledgements of what it sent.
STOP_GRACE = 2.0
RATE_WINDOW = 10.0


@dataclass
class ConnectionFailed(Exception):
    """Raised inside a session when a publish fails: the connection is to be rebuilt."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def read_password(target: NorthboundTarget) -> str | None:
    if target.password_file is None:
        return None
    with open(target.password_file, encoding="utf-8") as handle:
        return handle.read().rstrip("\r\n")


def tls_context(target: NorthboundTarget) -> ssl.SSLContext | None:
    tls = target.tls
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
    if tls.cert is not None:
        context.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None)
    if tls.insecure:
        context.check_hostname = False  # the chain is still verified
    return context


class Publisher:
    """The connection to one target, kept up with jittered backoff until `close`."""

    def __init__(
        self,
        target: NorthboundTarget,
        gateway: str,
        outbox: Outbox,
        clock: Clock,
        events: EventLog,
        meta: dict[str, bytes],
    ) -> None:
        self.target = target
        self.name = target.name
        self.gateway = gateway
        self.outbox = outbox
        self.clock = clock
        self.events = events
        self.connected = False
        self.since: float | None = None  # wall time of the last connect or disconnect
        self.last_error: str | None = None
        self.published = 0  # acknowledged since the daemon started
        self.connects = 0
        # Device writes from the command topics (targets with `commands: true`).
        self.command_handler: CommandHandler | None = None
        self._commands: set[asyncio.Task[None]] = set()
        self._meta = dict(meta)
        self._live: deque[Message] = deque()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._backlog_after = 0  # the drain has passed every id up to here
        self._backlog_upto = 0  # ids up to here are the backlog; newer ones are live
        self._inflight: dict[int, float] = {}  # id -> when sent (monotonic), oldest first
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: aiomqtt.Client | None = None
        self._failure: asyncio.Future[None] | None = None
        self._window: asyncio.Semaphore | None = None
        self._rate: deque[tuple[float, int]] = deque()
        self._task: asyncio.Task[None] | None = None

    @property
    def client_id(self) -> str:
        return self.target.client_id or self.gateway

    @property
    def status_topic(self) -> str:
        return status_topic(self.target.status_topic, self.gateway)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"northbound {self.name}")

    async def close(self) -> None:
        """Send `offline`, disconnect cleanly and stop; unacknowledged messages stay queued."""
        self._stop.set()
        self._wake.set()
        if self._task is None:
            return
        await asyncio.wait({self._task}, timeout=STOP_GRACE + 1.0)
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            connects = self.connects
            try:
                await self._session()
            except Exception as exc:  # every way a connection can fail: retry
                self._lost(exc)
            else:
                if not self._stop.is_set():
                    self._lost(ConnectionFailed("the connection closed"))
            if self.connects > connects:
                delay = 1.0  # it was up: start the backoff afresh
            if self._stop.is_set():
                break
            # Jitter, so a fleet does not reconnect in step after a broker restart.
            pause = min(delay, self.target.reconnect_max) * random.uniform(0.5, 1.0)
            await wait_event(self._stop, pause)
            delay = min(delay * 2, self.target.reconnect_max)

    def _lost(self, exc: BaseException) -> None:
        reason = str(exc) or type(exc).__name__
        first = self.last_error != reason
        self.last_error = reason
        if self.connected:
            self.connected = False
            self.since = self.clock.now()
            log.warning("northbound %s: disconnected: %s", self.name, reason)
            self.events.emit(
                self.since,
                "northbound_disconnected",
                f"{self.name}: disconnected from {self.target.host}: {reason}",
                target=self.name,
            )
        elif first:
            log.warning(
                "northbound %s: cannot connect to %s:%d: %s (retrying)",
                self.name,
                self.target.host,
                self.target.broker_port,
                reason,
            )

    def _client_for(self) -> aiomqtt.Client:
        target = self.target
        client = aiomqtt.Client(
            target.host,
            target.broker_port,
            identifier=self.client_id,
            username=target.username,
            password=read_password(target),
            keepalive=max(1, round(target.keepalive)),
            will=aiomqtt.Will(self.status_topic, OFFLINE, qos=1, retain=True),
            clean_session=True,
            timeout=CONNECT_TIMEOUT,
            tls_context=tls_context(target),
            max_inflight_messages=MAX_INFLIGHT,
            logger=logging.getLogger("edgeopt.northbound.mqtt"),
        )
        client.pending_calls_threshold = MAX_INFLIGHT + 100  # we bound them ourselves
        return client

    async def _session(self) -> None:
        client = self._client_for()
        async with client:
            self._client = client
            self._failure = asyncio.get_running_loop().create_future()
            self._window = asyncio.Semaphore(MAX_INFLIGHT)
            try:
                await client.publish(self.status_topic, ONLINE, qos=1, retain=True)
                await self._publish_meta(client, self._meta)
                if self.target.commands and self.command_handler is not None:
                    await client.subscribe(self._command_filter(), qos=1)
                self._connected()
                await self._serve(client)
                if self._stop.is_set():
                    await self._settle()
                    await client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            finally:
                await self._end_session()

    def _connected(self) -> None:
        # No await from here to the end: every id up to `upto` is backlog, newer is live.
        box = self.outbox.boxes[self.name]
        self._backlog_after = box.dropped_upto
        self._backlog_upto = box.next_id - 1
        self._live.clear()
        self.connected = True
        self.connects += 1
        self.last_error = None
        self.since = self.clock.now()
        log.info(
            "northbound %s: connected to %s:%d as %s (%d queued)",
            self.name,
            self.target.host,
            self.target.broker_port,
            self.client_id,
            box.messages,
        )
        self.events.emit(
            self.since,
            "northbound_connected",
            f"{self.name}: connected to {self.target.host}:{self.target.broker_port}"
            f" ({box.messages} messages queued)",
            target=self.name,
            queued=box.messages,
        )

    async def _serve(self, client: aiomqtt.Client) -> None:
        assert self._failure is not None
        sender = asyncio.create_task(self._send_loop(client), name=f"{self.name} send")
        watcher = asyncio.create_task(self._watch(client), name=f"{self.name} watch")
        acks = asyncio.create_task(self._watch_acks(), name=f"{self.name} acks")
        stop = asyncio.create_task(self._stop.wait())
        waits: set[asyncio.Future[Any]] = {sender, watcher, acks, stop, self._failure}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, watcher, acks, stop):
                task.cancel()
            await asyncio.gather(sender, watcher, acks, stop, return_exceptions=True)
        for finished in done:
            if finished is stop or finished.cancelled():
                continue
            exc = finished.exception()
            if exc is not None:
                raise exc

    async def _watch_acks(self) -> None:
        """Ends the session when the oldest message in flight waits too long for its PUBACK."""
        while True:
            await asyncio.sleep(PUBACK_TIMEOUT / 6)
            oldest = next(iter(self._inflight.values()), None)
            if oldest is not None and self.clock.monotonic() - oldest > PUBACK_TIMEOUT:
                raise ConnectionFailed(f"no PUBACK for {PUBACK_TIMEOUT:.0f} s")

    async def _settle(self) -> None:
        """On a clean stop: give the messages in flight a moment to be acknowledged."""
        deadline = self.clock.monotonic() + STOP_GRACE
        while self._tasks and (left := deadline - self.clock.monotonic()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)

    async def _end_session(self) -> None:
        tasks = list(self._tasks) + list(self._commands)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._inflight.clear()
        self._live.clear()
        self._client = None
        if self._failure is not None and self._failure.done():
            self._failure.exception()  # retrieved: it ended the session already
        self._failure = None
        if self.connected and self._stop.is_set():
            self.connected = False
            self.since = self.clock.now()
            self.events.emit(
                self.since,
                "northbound_disconnected",
                f"{self.name}: disconnected (stopping)",
                target=self.name,
            )

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Ends (with an error) when the connection drops; hands commands to their handler."""
        async for message in client.messages:
            if self.command_handler is not None:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                # A write takes a while (the line, the read-back): the loop keeps reading.
                task = asyncio.create_task(self._command(client, str(message.topic), payload))
                self._commands.add(task)
                task.add_done_callback(self._commands.discard)

    async def _command(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        assert self.command_handler is not None
        try:
            result = await self.command_handler(topic, payload)
            if result is not None:
                await client.publish(result_topic(topic), result, qos=1)
        except aiomqtt.MqttError as exc:
            log.warning("northbound %s: could not answer %s: %s", self.name, topic, exc)
        except Exception:  # a broken handler must not end the session
            log.exception("northbound %s: command on %s failed", self.name, topic)

    def _command_filter(self) -> str:
        topic = self.target.topic.format(gateway=self.gateway, device="+", tag="+")
        return topic + COMMAND_SUFFIX

    # -- sending -------------------------------------------------------------------------

    def offer(self, messages: list[Message]) -> None:
        """New messages (already in the outbox): send them now if connected."""
        if not self.connected or not messages:
            return
        if len(self._live) + len(messages) > LIVE_MAX:
            # The broker is slower than the plant: let these wait in the outbox.
            self._live.clear()
            self._backlog_upto = messages[-1].id
        else:
            self._live.extend(messages)
        self._wake.set()

    async def _send_loop(self, client: aiomqtt.Client) -> None:
        rate = self.target.drain_rate
        tokens = float(max(rate, 1))
        last = self.clock.monotonic()
        while True:
            self._wake.clear()
            wait: float | None = None
            if self._backlog_after < self._backlog_upto:
                now = self.clock.monotonic()
                if rate:
                    tokens = min(float(rate), tokens + (now - last) * rate)
                last = now
                allowed = DRAIN_STEP if not rate else min(DRAIN_STEP, int(tokens))
                if allowed > 0:
                    batch = await self.outbox.read(
                        self.name, self._backlog_after, self._backlog_upto, allowed
                    )
                    if not batch:
                        self._backlog_after = self._backlog_upto
                    for message in batch:
                        self._backlog_after = max(self._backlog_after, message.id)
                        if message.id in self._inflight:
                            continue
                        await self._send(client, message, retain=False)
                        tokens -= 1
                    if not self._live:
                        continue
                else:
                    wait = (1.0 - tokens) / rate
            while self._live:
                message = self._live.popleft()
                if not self.outbox.is_gone(self.name, message.id):
                    await self._send(client, message, retain=self.target.retain_last)
            if self._backlog_after < self._backlog_upto and wait is None:
                continue
            await wait_event(self._wake, wait)

    async def _send(self, client: aiomqtt.Client, message: Message, *, retain: bool) -> None:
        assert self._window is not None
        await self._window.acquire()
        self._inflight[message.id] = self.clock.monotonic()
        task = asyncio.create_task(self._publish(client, message, retain))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, client: aiomqtt.Client, message: Message, retain: bool) -> None:
        assert self._window is not None
        try:
            # No timeout here (it would cost a task per message): `_watch_acks` ends a
            # session whose oldest message waits longer than PUBACK_TIMEOUT.
            await client.publish(
                message.topic, message.payload, qos=self.target.qos, retain=retain, timeout=math.inf
            )
        except aiomqtt.MqttError as exc:
            if self._failure is not None and not self._failure.done():
                self._failure.set_exception(ConnectionFailed(f"publish failed: {exc}"))
            return
        finally:
            self._inflight.pop(message.id, None)
            self._window.release()
        self.outbox.ack(self.name, message)
        self.published += 1
        self._note_rate()

    async def _publish_meta(self, client: aiomqtt.Client, meta: dict[str, bytes]) -> None:
        """Retained descriptions of the tags (an empty payload clears a removed tag's)."""
        for chunk_start in range(0, len(meta), MAX_INFLIGHT):
            items = list(meta.items())[chunk_start : chunk_start + MAX_INFLIGHT]
            await asyncio.gather(
                *(
                    client.publish(topic, payload, qos=1, retain=True, timeout=PUBACK_TIMEOUT)
                    for topic, payload in items
                )
            )

    def set_meta(self, meta: dict[str, bytes]) -> None:
        """New tag descriptions after a reload: publish what changed, clear what went."""
        changed = {t: p for t, p in meta.items() if self._meta.get(t) != p}
        changed.update({t: b"" for t in self._meta if t not in meta})
        self._meta = dict(meta)
        client = self._client
        if changed and client is not None and self.connected:
            task = asyncio.create_task(self._publish_meta_logged(client, changed))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _publish_meta_logged(self, client: aiomqtt.Client, meta: dict[str, bytes]) -> None:
        try:
            await self._publish_meta(client, meta)
        except aiomqtt.MqttError as exc:
            log.warning("northbound %s: could not publish tag metadata: %s", self.name, exc)

    # -- figures ---------------------------------------------------------------------------

    def _note_rate(self) -> None:
        now = self.clock.monotonic()
        if not self._rate or now - self._rate[-1][0] >= 1.0:
            self._rate.append((now, self.published))
            while len(self._rate) > 2 and now - self._rate[1][0] >= RATE_WINDOW:
                self._rate.popleft()

    def published_per_s(self) -> float:
        self._note_rate()
        if len(self._rate) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._rate[0], self._rate[-1]
        now = self.clock.monotonic()
        span = max(now - t0, t1 - t0)
        return round((n1 - n0) / span, 3) if span > 0 else 0.0

    def backlog(self) -> int:
        """Ids still to be drained (an upper bound on the messages)."""
        return max(0, self._backlog_upto - self._backlog_after) if self.connected else 0
