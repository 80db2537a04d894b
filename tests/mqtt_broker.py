"""A real Mosquitto for tests: started on a free port with a config file the test writes,
and a subscriber that records every message it gets (with a persistent session, so
it loses nothing across a broker restart)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_mosquitto() -> str:
    """Fail (never skip): CI installs mosquitto (`make mosquitto-tools`)."""
    if not os.path.exists(MOSQUITTO):
        raise AssertionError(
            "mosquitto is not installed: run `make mosquitto-tools` (apt-get install mosquitto)"
        )
    return MOSQUITTO


@dataclass
class Broker:
    """One mosquitto process; `stop` and `start` again keep its port and its saved state."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra: str = ""  # more config lines (TLS, passwords)
    listener_extra: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def write_conf(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            self.listener_extra,
            "allow_anonymous true" if "password_file" not in self.extra else "",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            # Started as root, mosquitto would drop to its own user and lose the test's files.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            self.extra,
        ]
        self.conf.write_text("\n".join(line for line in lines if line) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        self.write_conf()
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [require_mosquitto(), "-c", str(self.conf)], stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"mosquitto exited: {(self.workdir / 'mosquitto.log').read_text()[-2000:]}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen on {self.port}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@contextlib.contextmanager
def broker(workdir: Path, **kwargs: Any):  # type: ignore[no-untyped-def]
    b = Broker(workdir, **kwargs)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """Records every message on `topic`, reconnecting with the same session after an outage."""

    port: int
    topic: str = "#"
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=f"test-sub-{self.port}",
                    clean_session=False,
                    **self.client_kwargs,
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes | bytearray)
                        self.messages.append(
                            Received(str(message.topic), bytes(payload), message.retain)
                        )
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)

    def on(self, topic_suffix: str) -> list[Received]:
        return [m for m in self.messages if m.topic.endswith(topic_suffix)]


@contextlib.asynccontextmanager
async def subscribed(
    port: int, topic: str = "#", **client_kwargs: Any
) -> AsyncIterator[Subscriber]:
    sub = Subscriber(port, topic, client_kwargs)
    sub._task = asyncio.create_task(sub._run())
    try:
        async with asyncio.timeout(10):
            await sub.connected.wait()
        yield sub
    finally:
        sub._task.cancel()
        await asyncio.gather(sub._task, return_exceptions=True)
