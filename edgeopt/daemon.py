"""The daemon: wires config, poller, storage, scheduler jobs and the control socket.

Wiring only. `Daemon.run()` holds the state-dir lock, opens storage, plans
and starts one worker per line, runs the maintenance jobs on APScheduler,
serves the control socket, talks to systemd, and on SIGTERM or SIGINT stops
polling, flushes storage and closes everything. SIGHUP (or `edgeoptctl
reload`) applies a new config as a diff, keeping what did not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import pwd
import signal
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from edgeopt.clock import Clock, SystemClock
from edgeopt.config import Config, ConfigError, ConfigLoad
from edgeopt.config.diff import ConfigDiff, diff_configs
from edgeopt.control.commands import DaemonView, register
from edgeopt.control.optimizer_commands import register_optimizer
from edgeopt.control.server import ControlError, ControlServer, Peer
from edgeopt.events import EventLog
from edgeopt.jobs import MaintenanceJobs
from edgeopt.lines import LineWorker, LineWorkers, TransportFactory
from edgeopt.logs import library_log_levels
from edgeopt.modbus.transport import PymodbusTransport
from edgeopt.modbus.writeplan import WriteRefused
from edgeopt.northbound import Northbound
from edgeopt.northbound.payload import WriteCommand
from edgeopt.optimizer import Optimizer, build_optimizer
from edgeopt.optimizer.persistence import LearnedStateStore
from edgeopt.poller import Poller, register_map_fingerprint
from edgeopt.resources import LagMeter, PressureMonitor, PsutilSampler, ResourceSample
from edgeopt.storage import HotStore, TierManager
from edgeopt.storage.device_memory import load_barriers, save_barriers
from edgeopt.systemd import SystemdNotifier
from edgeopt.writes import Caller, WriteService

if TYPE_CHECKING:
    from edgeopt.metrics import MetricsServer, Snapshot

log = logging.getLogger(__name__)

DB_NAME = "edgeopt.db"
LOCK_NAME = "edgeopt.lock"
RATE_WINDOW = 10.0  # seconds of history behind reads/s and bus load


class DaemonError(RuntimeError):
    """Raised when the daemon cannot start (e.g. another one holds the state dir)."""


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
        # Devices removed by a reload take their counters with them: clamp at 0.
        load = {
            line: round(min(1.0, max(0.0, b1[line] - b0.get(line, 0.0)) / span), 4) for line in b1
        }
        return {"reads_per_s": round(max(0, r1 - r0) / span, 3), "bus_load": load}


@dataclass
class ReloadResult(ConfigDiff):
    """A reload's config diff, and what the northbound targets made of it."""

    # Northbound targets by fate: added, removed, changed (reconnected), unchanged.
    northbound: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.removed)} removed, "
            f"{len(self.changed)} changed, {len(self.unchanged)} unchanged devices"
        )

    def to_dict(self) -> dict[str, Any]:
        """The control socket's `reload` answer (CONTRACT.md): names only, and the summary."""
        fates = ("added", "removed", "changed", "unchanged", "restart_needed", "northbound")
        return {**{k: getattr(self, k) for k in fates}, "summary": self.summary()}


class Daemon:
    """One edgeopt process: build it from a config and `await run()`."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        transport_factory: TransportFactory = PymodbusTransport,
        handle_signals: bool = True,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.events = EventLog()
        self.poller = Poller(config.devices, events=self.events)
        self.rates = RateMeter(self.poller, self.clock)
        self.notifier = notifier or SystemdNotifier()
        self.ready = asyncio.Event()
        self.store: HotStore | None = None
        self.control: ControlServer | None = None
        self.resources = PressureMonitor(config.resources, events=self.events)
        self.optimizer: Optimizer | None = None
        self.tiers: TierManager | None = None
        # MQTT targets: a sink like storage, with its own outbox database.
        self.northbound = Northbound(self.state_dir, self.clock, self.events)
        self.lines = LineWorkers(self.poller, self.clock, transport_factory)
        self._handle_signals = handle_signals
        self._stop = asyncio.Event()
        self.jobs = MaintenanceJobs(stopping=self._stop.is_set)
        self._logged_plan = ""  # the last read-plan summary in the log
        self._metrics: MetricsServer | None = None
        self._reload_lock = asyncio.Lock()
        self._watchdog_task: asyncio.Task[None] | None = None
        self._sampler = PsutilSampler(config.daemon.state_dir)
        self._lag = LagMeter()
        # The learned state's one writer (its own connection and lock).
        self._learning: LearnedStateStore | None = None
        self._started_wall = 0.0
        # Verified writes: the control socket's `write`, and the entry point
        # for other callers (e.g. a northbound command topic).
        self.writes = WriteService(
            poller=self.poller,
            submit=self.lines.submit,
            clock=self.clock,
            events=self.events,
            audit=self._write_audit,
        )
        self.northbound.write = self._northbound_write
        self._split_saves: set[asyncio.Task[None]] = set()

    @property
    def state_dir(self) -> Path:
        return Path(self.config.daemon.state_dir)

    @property
    def workers(self) -> dict[str, LineWorker]:
        return self.lines.workers

    def stop(self) -> None:
        self._stop.set()

    # -- lifecycle -------------------------------------------------------------

    async def run(self) -> None:
        lock = StateLock(self.state_dir)
        lock.acquire()
        try:
            await self._run_locked()
        finally:
            lock.release()
            self.notifier.close()

    async def _run_locked(self) -> None:
        cfg = self.config
        self.store = await HotStore.open(
            self.state_dir / DB_NAME,
            clock=self.clock,
            flush_interval=cfg.storage.flush_interval,
            flush_rows=cfg.storage.flush_rows,
        )
        self.poller.sinks.append(self.store.extend)
        await self.northbound.start(cfg)
        self.poller.sinks.append(self.northbound.extend)
        self.tiers = TierManager.from_config(
            self.store,
            cfg.storage,
            clock=self.clock,
            state_dir=self.state_dir,
            emit=self.events.emit,
            deviations=_deviations(cfg),
        )
        await self.tiers.refresh_figures()
        await self._restore_splits()
        plan = self.poller.replan(self.clock.monotonic())
        self._logged_plan = plan.summary()
        log.info("read plan: %s", self._logged_plan)
        self.optimizer = await self._start_optimizer()
        self._started_wall = self.clock.now()
        self.control = self._control_server()
        self._install_signals()
        background: list[asyncio.Task[None]] = []
        try:
            await self.control.start()
            self.lines.sync()
            background.append(asyncio.create_task(self.store.run(), name="storage flush"))
            if self.notifier.watchdog_interval:
                self._watchdog_task = asyncio.create_task(self._watchdog(), name="watchdog")
                background.append(self._watchdog_task)
            self._start_jobs()
            self._start_metrics()
            self.ready.set()
            summary = self._summary()
            self.notifier.ready(summary)
            log.info("edgeopt running: %s; control socket %s", summary, cfg.daemon.socket)
            await self._wait_for_stop(background)
        finally:
            await self._shutdown(background)

    async def _wait_for_stop(self, background: list[asyncio.Task[None]]) -> None:
        stop = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                tasks = [stop, *background, *self.lines.tasks()]
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is stop or task.cancelled():
                        continue
                    exc = task.exception()
                    if exc is not None:
                        raise DaemonError(f"task {task.get_name()!r} died: {exc!r}") from exc
        finally:
            stop.cancel()

    async def _shutdown(self, background: list[asyncio.Task[None]]) -> None:
        log.info("stopping: polling stops, storage flushes")
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()  # no WATCHDOG=1 may follow STOPPING=1
        self.notifier.stopping()
        await self.jobs.stop()
        if self._metrics is not None:
            self._metrics.stop()
        await self.lines.stop_all()
        await asyncio.gather(*self._split_saves, return_exceptions=True)
        await self.northbound.close()  # `offline`, and the unacknowledged stay in the outbox
        if self.optimizer is not None:
            await self._save_learning()
            await self.optimizer.close()
        if self._learning is not None:
            await self._learning.close()  # after any save still in progress
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self.control is not None:
            await self.control.close()
        if self.tiers is not None:
            await self.tiers.close()
        if self.store is not None:
            await self.store.close()
        log.info("stopped")

    def _install_signals(self) -> None:
        if not self._handle_signals:
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_stop_signal, sig)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        log.info("received %s", sig.name)
        self.stop()

    def _on_hup(self) -> None:
        log.info("received SIGHUP: reloading %s", self.config.source)

        async def reload_logged() -> None:
            with contextlib.suppress(ControlError):  # already logged and evented
                await self.reload()

        asyncio.get_running_loop().create_task(reload_logged(), name="reload")

    # -- what devices taught ---------------------------------------------------

    async def _restore_splits(self) -> None:
        """Read splits learned on earlier runs, for devices whose register map is unchanged."""
        assert self.store is not None
        fingerprints = {
            name: register_map_fingerprint(d.config) for name, d in self.poller.devices.items()
        }
        try:
            async with self.store.transaction() as conn:
                learned = await load_barriers(conn, fingerprints)
        except Exception as exc:  # an optimisation: never a reason not to poll
            log.warning("could not restore learned read splits: %s", exc)
            return
        if learned:
            count = self.poller.restore_barriers(learned)
            log.info("restored %d learned read splits on %d devices", count, len(learned))
        self.poller.split_listeners.append(self._on_split)

    def _on_split(self, device: str) -> None:
        task = asyncio.get_running_loop().create_task(self._save_splits(device))
        self._split_saves.add(task)
        task.add_done_callback(self._split_saves.discard)

    async def _save_splits(self, name: str) -> None:
        device = self.poller.devices.get(name)
        if device is None or self.store is None:
            return
        try:
            async with self.store.transaction() as conn:
                await save_barriers(
                    conn,
                    name,
                    register_map_fingerprint(device.config),
                    device.limits.barriers,
                    self.clock.now(),
                )
        except Exception as exc:
            log.warning("could not save the read splits of %s: %s", name, exc)

    # -- reload ----------------------------------------------------------------

    async def reload(self) -> ReloadResult:
        """Re-read the config file and apply the difference.

        Raises:
            ControlError: the new file is invalid; the old config keeps running.
        """
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                result = await self._reload()
            finally:
                self.notifier.status(self._summary())
                self.notifier.notify("READY=1")
            return result

    async def _reload(self) -> ReloadResult:
        path = Path(self.config.source)
        try:
            # Parsed in a forked child, as at start: pydantic and the parse's
            # temporaries stay out of the daemon's heap.
            pending = ConfigLoad(path)
            new = await asyncio.to_thread(pending.result)
        except ConfigError as exc:
            log.error("reload of %s failed; keeping the running config:\n%s", path, exc)
            self.events.emit(
                self.clock.now(), "config_reload_failed", f"reload failed: {exc}", file=str(path)
            )
            raise ControlError("invalid_config", str(exc)) from None
        old = self.config
        diff = diff_configs(old, new)
        result = ReloadResult(**vars(diff))
        # Learned state is exported against the old tag configs, so the tags
        # that change below start afresh while the rest keep what they learned.
        learned = self.optimizer.export_state() if self.optimizer is not None else None
        for name in diff.removed:
            self.poller.remove_device(name)
        for device in diff.devices:
            self.poller.update_device(device)
        if old.daemon.log_level != new.daemon.log_level:
            logging.getLogger().setLevel(new.daemon.log_level.upper())
            library_log_levels(new.daemon.log_level)
        self.config = new
        self.resources.reconfigure(new.resources)
        if self.tiers is not None:
            self.tiers.set_deviations(_deviations(new))
        nb = await self.northbound.apply(new)
        result.northbound = {k: v for k, v in nb.__dict__.items() if v}
        plan = self.poller.replan(self.clock.monotonic())
        if self.optimizer is not None:
            self.optimizer.config = new.optimizer
            self.optimizer.enabled = bool(new.optimizer.enabled)
            self.optimizer.reload(self.poller, learned)
            plan = self.poller.plan
        self.lines.sync()
        message = f"config reloaded: {result.summary()}; plan: {plan.summary()}"
        if nb.added or nb.removed or nb.changed:
            message += (
                f"; northbound: {len(nb.added)} added, {len(nb.removed)} removed, "
                f"{len(nb.changed)} reconnected"
            )
        if result.restart_needed:
            message += f"; needs a restart to apply: {', '.join(result.restart_needed)}"
        log.info("%s", message)
        self.events.emit(
            self.clock.now(),
            "config_reloaded",
            message,
            added=result.added,
            removed=result.removed,
            changed=result.changed,
        )
        return result

    # -- jobs ------------------------------------------------------------------

    def _start_jobs(self) -> None:
        """Maintenance runs on APScheduler; individual polls never do (too coarse)."""
        jobs = self.jobs
        jobs.add("stats", 1.0, self._job_stats)
        jobs.add("storage_check", 5.0, self._job_storage_check)
        jobs.add("systemd_status", 10.0, self._job_systemd_status)
        jobs.add("resources", 10.0, self._job_resources)
        jobs.add("storage_lifecycle", self.config.storage.lifecycle_interval, self._job_lifecycle)
        if self.optimizer is not None:
            # One tick drives the quick, full and evaluation cycles by their own
            # deadlines on the clock: the same entry point the benchmark replays.
            jobs.add("optimizer", 5.0, self._job_optimizer)
            jobs.add("learning_save", 300.0, self._save_learning)
        jobs.start()

    async def _job_stats(self) -> None:
        self.poller.check_stale(self.clock.now())
        self.rates.sample()
        self._log_plan_change()

    def _log_plan_change(self) -> None:
        """One line when the plan's shape changed (address splits, the optimizer), so the
        log's last `read plan` line always matches `status` (checked once a second)."""
        summary = self.poller.plan.summary()
        if summary != self._logged_plan:
            self._logged_plan = summary
            log.info("read plan now: %s", summary)

    async def _job_storage_check(self) -> None:
        if self.store is None:
            return
        status = self.store.status()
        if status.state != "ok":
            log.warning(
                "storage %s: %s (%d samples buffered, %d dropped)",
                status.state,
                status.last_error,
                status.buffered,
                status.dropped,
            )

    async def _job_lifecycle(self) -> None:
        """hot → warm → cold → archive; compaction waits (a while) while resources are short."""
        if self.tiers is None:
            return
        defer = self.resources.defer("storage compaction", uses_disk=True)
        report = await self.tiers.run_lifecycle(defer=defer)
        log.info("storage lifecycle: %s", report.to_dict())

    async def _job_resources(self) -> None:
        """Machine pressure (defers optional work) and acquisition shedding (the daemon's own
        lateness and memory: the only thing that slows reads), from one look."""
        sample, rss = await asyncio.to_thread(self._sample_resources)
        wall = self.clock.now()
        self.resources.update(sample, wall)
        self.resources.shedding.update(self._lag.sample(self.poller.lag, rss), wall)
        if self.optimizer is not None:
            self.optimizer.tick()  # follow a new shedding stage now, not at the next cycle

    def _sample_resources(self) -> tuple[ResourceSample, int | None]:
        return self._sampler.sample(), self._sampler.own_rss()

    async def _job_optimizer(self) -> None:
        if self.optimizer is None:
            return
        done = await self.optimizer.run_due()
        if done:
            self.lines.sync()  # wake the workers: the plan changed
            log.debug("optimizer ran: %s", ", ".join(done))

    async def _start_optimizer(self) -> Optimizer:
        # Learned state has its own connection: its transactions must not
        # interleave with the hot tier's flushes on the store's connection.
        # And one writer owns it, so no two saves interleave on it either.
        store = await LearnedStateStore.open(self.state_dir / DB_NAME)
        self._learning = store
        state = None
        try:
            state = await store.load()
        except Exception as exc:  # learning is an optimisation: never a reason not to poll
            log.warning("could not restore learned state, starting fresh: %s", exc)
        optimizer = build_optimizer(
            self.poller, self.config, self.clock, self.events, state=state, resources=self.resources
        )
        if state is not None:
            log.info("restored learned state for %d tags", len(state.tags))
        optimizer.attach(store)
        self.poller.wake_listeners.append(self.lines.wake)
        return optimizer

    async def _save_learning(self) -> None:
        """The periodic (and final) save, with profiles: through the one writer."""
        if self.optimizer is None or self._learning is None:
            return
        try:
            await self.optimizer.save(profiles=True)
        except Exception as exc:
            log.warning("could not save learned state: %s", exc)

    async def _job_systemd_status(self) -> None:
        self.notifier.status(self._summary())

    async def _watchdog(self) -> None:
        """WATCHDOG=1 from the event loop itself: a stuck loop stops the pings."""
        interval = self.notifier.watchdog_interval or 1.0
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # -- views -----------------------------------------------------------------

    def _summary(self) -> str:
        states = Counter(d.health.state.value for d in self.poller.devices.values())
        rate = self.rates.rates()["reads_per_s"]
        return (
            f"{len(self.poller.devices)} devices ({states['online']} online, "
            f"{states['offline']} offline), {len(self.poller.tags)} tags, {rate:.1f} reads/s"
        )

    def _control_server(self) -> ControlServer:
        assert self.store is not None and self.tiers is not None
        cfg = self.config.daemon
        server = ControlServer(
            Path(cfg.socket), group=cfg.socket_group, admin_group=cfg.admin_group, audit=self._audit
        )
        register(
            server,
            DaemonView(
                poller=self.poller,
                store=self.tiers,
                events=self.events,
                started_wall=self._started_wall,
                now=self.clock.now,
                rates=self.rates.rates,
                extra_status=self._extra_status,
            ),
        )

        async def reload(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
            result = await self.reload()
            return result.to_dict()

        async def write(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
            try:
                outcome = await self.writes.write(
                    args.get("tag"),
                    args.get("value"),
                    caller=_caller_of(peer),
                    verify=args.get("verify"),
                    verify_timeout=args.get("timeout"),
                )
            except WriteRefused as exc:
                raise ControlError(exc.code, exc.message) from None
            return outcome.to_dict()

        server.command("reload", reload, writes=True)
        # Admin only like reload; the write service audits each attempt itself,
        # with the old and read-back values (a forbidden one is audited by the server).
        server.command("write", write, writes=True, audited=False)
        register_optimizer(server, lambda: self.optimizer, self.lines.sync)
        server.command("northbound", self._cmd_northbound)
        return server

    async def _cmd_northbound(self, args: dict[str, Any], peer: Peer) -> list[dict[str, Any]]:
        return self.northbound.status()

    async def _northbound_write(
        self, key: str, target: str, command: WriteCommand
    ) -> dict[str, Any]:
        """A write from a target's command topic: audited with the target's name as caller."""
        try:
            outcome = await self.writes.write(
                key, command.value, caller=Caller(target), verify=command.verify
            )
        except WriteRefused as exc:
            return {"tag": key, "result": "refused", "error": exc.code, "message": exc.message}
        return outcome.to_dict()

    async def _audit(self, peer: Peer, command: str, args: dict[str, Any], result: str) -> None:
        if self.store is not None:
            await self.store.audit(
                self.clock.now(), peer.uid, peer.pid, command, json.dumps(args), result
            )

    async def _write_audit(self, caller: Caller, details: dict[str, Any], result: str) -> None:
        if self.store is not None:
            args = json.dumps(details, default=str)
            await self.store.audit(self.clock.now(), caller.uid, caller.pid, "write", args, result)

    def _storage_tiers(self) -> dict[str, Any]:
        figures = self.tiers.figures() if self.tiers is not None else None
        return figures or {}

    def _extra_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jobs": {"failures": dict(self.jobs.failures)},
            "pressure": self.resources.level.value,
            "resources": self.resources.status(),
        }
        if self.optimizer is not None:
            out["optimizer"] = self.optimizer.status()
        if self.northbound.routes:
            out["northbound"] = self.northbound.status()
        if self.store is not None:
            st = self.store.status()
            out["storage"] = {
                "state": st.state,
                "rows_written": st.rows_written,
                "buffered": st.buffered,
                "dropped": st.dropped,
                "last_error": st.last_error,
                "db_bytes": st.db_bytes,
                "tiers": self._storage_tiers(),
            }
        return out

    def _start_metrics(self) -> None:
        listen = self.config.metrics.listen
        if not listen:
            return
        # prometheus_client (0.1 s, 3 MB) is imported only when the endpoint is on.
        from edgeopt.metrics import MetricsServer, loop_snapshot

        self._metrics = MetricsServer(
            listen, loop_snapshot(asyncio.get_running_loop(), self.metrics_snapshot)
        )
        try:
            self._metrics.start()
        except OSError as exc:
            log.error("cannot serve metrics on %s: %s; running without them", listen, exc)
            self._metrics = None

    def metrics_snapshot(self) -> Snapshot:
        devices = [
            {
                "name": d.name,
                "state": d.health.state.value,
                "reads": d.stats.reads,
                "errors_by_kind": dict(d.stats.errors_by_kind),
                "latency_ms": d.stats.latency_ms(),
            }
            for d in self.poller.devices.values()
        ]
        qualities = Counter(t.state.quality.value for t in self.poller.tags.values())
        snap: Snapshot = {
            "devices": devices,
            "bus_load": self.rates.rates()["bus_load"],
            "tags_by_quality": {q: qualities.get(q, 0) for q in ("good", "stale", "bad")},
        }
        if self.store is not None:
            st = self.store.status()
            tiers = self._storage_tiers()
            snap["storage_tiers"] = {
                tier: figures
                for tier, figures in tiers.items()
                if isinstance(figures, dict) and "bytes" in figures
            } or {"hot": {"bytes": st.db_bytes, "samples": None}}
            snap["storage_buffered"] = st.buffered
        if self.northbound.routes:
            snap["northbound"] = self.northbound.status()
        if self.optimizer is not None:
            stats = self.optimizer.get_statistics()
            snap["optimizer_outcomes"] = {
                "kept": stats.get("successful", 0),
                "rolled_back": stats.get("rolled_back", 0),
            }
        return snap


def _caller_of(peer: Peer) -> Caller:
    """A control-socket peer as a write's caller: its user name, uid and pid."""
    try:
        name = pwd.getpwuid(peer.uid).pw_name
    except (KeyError, OverflowError):
        name = f"uid {peer.uid}"
    return Caller(f"socket:{name}", peer.uid, peer.pid)


def _deviations(config: Config) -> dict[str, float]:
    """Tags stored with swinging-door compression, and their error bound."""
    return {
        f"{d.name}/{t.name}": float(t.compression_deviation)
        for d in config.devices
        for t in d.tags
        if t.compression_deviation is not None
    }
