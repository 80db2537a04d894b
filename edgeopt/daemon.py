"""The daemon: wires config, poller, storage and the control socket together.

Wiring only. `Daemon.run()` holds the state-dir lock, opens storage, plans
and starts one worker per line, serves the control socket, and on SIGTERM or
SIGINT stops polling, flushes storage and closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from edgeopt.clock import Clock, SystemClock
from edgeopt.config import Config
from edgeopt.control.commands import DaemonView, register
from edgeopt.control.server import ControlServer
from edgeopt.events import EventLog
from edgeopt.modbus.transport import PymodbusTransport, Transport
from edgeopt.poller import LineWorker, Poller, endpoint_of
from edgeopt.storage import HotStore

log = logging.getLogger(__name__)

DB_NAME = "edgeopt.db"
LOCK_NAME = "edgeopt.lock"
RATE_WINDOW = 10.0  # seconds of history behind reads/s and bus load


class DaemonError(RuntimeError):
    """Raised when the daemon cannot start (e.g. another one holds the state dir)."""


TransportFactory = Callable[..., Transport]


class StateLock:
    """An exclusive flock on the state dir, so two daemons never share one."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._file: TextIO | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the daemon's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DaemonError(
                f"state dir {self.path.parent} is in use by pid {holder}; "
                "is edgeopt already running?"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class RateMeter:
    """Reads per second and bus load per line, over a sliding window."""

    def __init__(self, poller: Poller, clock: Clock) -> None:
        self._poller = poller
        self._clock = clock
        self._history: deque[tuple[float, int, dict[str, float]]] = deque()

    def sample(self) -> None:
        now = self._clock.monotonic()
        reads = sum(d.stats.reads for d in self._poller.devices.values())
        busy: dict[str, float] = {}
        for device in self._poller.devices.values():
            busy[device.line] = busy.get(device.line, 0.0) + device.stats.busy
        self._history.append((now, reads, busy))
        while len(self._history) > 2 and now - self._history[1][0] >= RATE_WINDOW:
            self._history.popleft()

    def rates(self) -> dict[str, Any]:
        if len(self._history) < 2:
            return {"reads_per_s": 0.0, "bus_load": {}}
        (t0, r0, b0), (t1, r1, b1) = self._history[0], self._history[-1]
        span = t1 - t0
        if span <= 0:
            return {"reads_per_s": 0.0, "bus_load": {}}
        load = {line: round(min(1.0, (b1[line] - b0.get(line, 0.0)) / span), 4) for line in b1}
        return {"reads_per_s": round((r1 - r0) / span, 3), "bus_load": load}


class Daemon:
    """One edgeopt process: build it from a config and `await run()`."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        transport_factory: TransportFactory = PymodbusTransport,
        handle_signals: bool = True,
    ) -> None:
        self.config = config
        self._handle_signals = handle_signals
        self.clock = clock or SystemClock()
        self.events = EventLog()
        self.poller = Poller(config.devices, events=self.events)
        self._transport_factory = transport_factory
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.store: HotStore | None = None
        self.workers: dict[str, LineWorker] = {}
        self.control: ControlServer | None = None
        self.rates = RateMeter(self.poller, self.clock)

    @property
    def state_dir(self) -> Path:
        return Path(self.config.daemon.state_dir)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        lock = StateLock(self.state_dir)
        lock.acquire()
        try:
            await self._run_locked()
        finally:
            lock.release()

    async def _run_locked(self) -> None:
        cfg = self.config
        self.store = await HotStore.open(
            self.state_dir / DB_NAME,
            clock=self.clock,
            flush_interval=cfg.storage.flush_interval,
            flush_rows=cfg.storage.flush_rows,
        )
        self.poller.sinks.append(self.store.extend)
        plan = self.poller.replan(self.clock.monotonic())
        log.info("read plan: %s", plan.summary())
        for device in self.poller.devices.values():
            log.debug("device %s on line %s", device.name, device.line)
        self.control = ControlServer(
            Path(cfg.daemon.socket),
            group=cfg.daemon.socket_group,
            admin_group=cfg.daemon.admin_group,
        )
        started = self.clock.now()
        register(
            self.control,
            DaemonView(
                poller=self.poller,
                store=self.store,
                events=self.events,
                started_wall=started,
                now=self.clock.now,
                rates=self.rates.rates,
                extra_status=self._storage_status,
            ),
        )
        if self._handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._on_signal, sig)
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.control.start()
            for line, devices in self.poller.lines().items():
                transport = self._transport_factory(endpoint_of(devices[0].config), self.clock)
                self.workers[line] = LineWorker(line, self.poller, transport, self.clock)
            tasks = [
                asyncio.create_task(worker.run(), name=f"line {line}")
                for line, worker in self.workers.items()
            ]
            tasks.append(asyncio.create_task(self.store.run(), name="storage flush"))
            tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
            self.ready.set()
            log.info(
                "edgeopt running: %d devices on %d lines, %d tags; control socket %s",
                len(self.poller.devices),
                len(self.workers),
                len(self.poller.tags),
                cfg.daemon.socket,
            )
            stop = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and task.exception() is not None:
                    raise DaemonError(f"task {task.get_name()} died") from task.exception()
            stop.cancel()
        finally:
            await self._shutdown(tasks)

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        log.info("stopping: polling stops, storage flushes")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.control is not None:
            await self.control.close()
        if self.store is not None:
            await self.store.close()
        for worker in self.workers.values():
            with contextlib.suppress(Exception):
                await worker.close()
        log.info("stopped")

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s", sig.name)
        self.stop()

    async def _housekeeping(self) -> None:
        """Once a second: stale checks and the rate window."""
        while True:
            self.poller.check_stale(self.clock.now())
            self.rates.sample()
            await asyncio.sleep(1.0)

    def _storage_status(self) -> dict[str, Any]:
        if self.store is None:
            return {}
        st = self.store.status()
        return {
            "storage": {
                "state": st.state,
                "rows_written": st.rows_written,
                "buffered": st.buffered,
                "dropped": st.dropped,
                "last_error": st.last_error,
                "db_bytes": st.db_bytes,
            }
        }
