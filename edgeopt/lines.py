"""The line workers: one per line, each making its line's reads one at a time.

A line is a TCP device, or a serial port shared by its unit ids: exactly one
request is in flight per line, and a slow or dead device never delays another
line. `LineWorker` runs one line's reads from the poller's schedule;
`LineWorkers` keeps one running per line of the poller's devices.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edgeopt.clock import Clock
from edgeopt.modbus.transport import Endpoint, Transport
from edgeopt.poller import Poller, line_endpoint

__all__ = ["LineRunner", "LineWork", "LineWorker", "LineWorkers", "TransportFactory"]


TransportFactory = Callable[[Endpoint, Clock], Transport]

# One-shot work that needs the line to itself (a write and its read-back).
LineWork = Callable[[Transport], Awaitable[Any]]


@dataclass(slots=True)
class _LineJob:
    work: LineWork
    done: asyncio.Future[Any]


def _wake_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class LineWorker:
    """Runs one line's reads, one request in flight at a time.

    One-shot jobs (`submit`) go before any read that is due, but never
    while a read is in flight: the line keeps exactly one request out.
    """

    def __init__(self, line: str, poller: Poller, transport: Transport, clock: Clock) -> None:
        self.line = line
        self._poller = poller
        self._transport = transport
        self._clock = clock
        # The sleeping worker's future (None while it works: it looks at the
        # schedule again before it next sleeps, so a wake then needs no note).
        self._waiter: asyncio.Future[None] | None = None
        self._stopped = False
        self._jobs: deque[_LineJob] = deque()

    def stop(self) -> None:
        """Finish after the read in flight (if any); `run` then returns."""
        self._stopped = True
        self.wake()
        while self._jobs:  # nobody will run them: their callers must not wait forever
            job = self._jobs.popleft()
            if not job.done.done():
                job.done.set_exception(RuntimeError(f"line {self.line} stopped"))

    def submit(self, work: LineWork) -> asyncio.Future[Any]:
        """Run `work(transport)` between reads, before the next due read; returns its result."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._stopped:
            done.set_exception(RuntimeError(f"line {self.line} stopped"))
            return done
        self._jobs.append(_LineJob(work, done))
        self.wake()
        return done

    async def _run_job(self, job: _LineJob) -> None:
        if job.done.done():  # its caller gave up
            return
        try:
            result = await job.work(self._transport)
        except asyncio.CancelledError:
            job.done.cancel()
            raise
        except Exception as exc:  # the job's failure is its caller's, never the line's
            if not job.done.done():
                job.done.set_exception(exc)
            return
        if not job.done.done():
            job.done.set_result(result)

    def wake(self) -> None:
        """Look at the schedule again now (after a re-plan)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self) -> None:
        clock, poller = self._clock, self._poller
        while not self._stopped:
            if self._jobs:
                await self._run_job(self._jobs.popleft())
                continue
            now = clock.monotonic()
            item = poller.next_read(self.line, now)
            if item is None:
                await self._sleep_until_due(now)
                continue
            read, due = item
            device = poller.devices.get(read.device)
            if device is None:
                continue
            result = await self._transport.read(
                read.table, read.start, read.count, device.config.unit
            )
            poller.apply(read, result, clock.now(), clock.monotonic(), due)

    async def _sleep_until_due(self, now: float) -> None:
        """Sleep until the line's next deadline, or until `wake`.

        One future and one timer handle per sleep: cheaper than a task
        waiting on an Event under `asyncio.wait` (the poll loop sleeps between
        most reads), and a cancel simply raises out of the `await`.
        """
        schedule = self._poller.schedules.get(self.line)
        due = schedule.next_due() if schedule else None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = None if due is None else loop.call_later(max(0.0, due - now), _wake_up, waiter)
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def close(self) -> None:
        await self._transport.close()


@dataclass
class LineRunner:
    """A line's worker, its task, and the endpoint its transport was built for."""

    endpoint: Endpoint
    worker: LineWorker
    task: asyncio.Task[None]


class LineWorkers:
    """One running `LineWorker` per line of the poller's devices."""

    def __init__(self, poller: Poller, clock: Clock, transport_factory: TransportFactory) -> None:
        self.poller = poller
        self.clock = clock
        self.runners: dict[str, LineRunner] = {}
        self._transport_factory = transport_factory
        self._stopping: set[asyncio.Task[None]] = set()  # held: a task nobody holds may vanish

    @property
    def workers(self) -> dict[str, LineWorker]:
        return {line: runner.worker for line, runner in self.runners.items()}

    def tasks(self) -> list[asyncio.Task[None]]:
        return [runner.task for runner in self.runners.values()]

    def sync(self) -> None:
        """Start, keep or stop one worker per line to match the poller's devices."""
        wanted = {
            line: line_endpoint([d.config for d in devs])
            for line, devs in self.poller.lines().items()
        }
        for line in [line for line in self.runners if line not in wanted]:
            self._stop_soon(line)
        for line, endpoint in wanted.items():
            runner = self.runners.get(line)
            if runner is not None and runner.endpoint == endpoint:
                runner.worker.wake()  # the plan may have new reads due sooner
                continue
            if runner is not None:
                self._stop_soon(line)
            transport = self._transport_factory(endpoint, self.clock)
            worker = LineWorker(line, self.poller, transport, self.clock)
            task = asyncio.create_task(worker.run(), name=f"line {line}")
            self.runners[line] = LineRunner(endpoint, worker, task)

    def submit(self, line: str, work: LineWork) -> asyncio.Future[Any]:
        """Run one-shot work on a line's worker, between its reads (KeyError: no such line)."""
        return self.runners[line].worker.submit(work)

    def wake(self, line: str) -> None:
        """The line's schedule may have an earlier deadline now (a re-plan, a trigger read)."""
        runner = self.runners.get(line)
        if runner is not None:
            runner.worker.wake()

    def _stop_soon(self, line: str) -> None:
        runner = self.runners.pop(line)
        task = asyncio.get_running_loop().create_task(self._stop_runner(runner))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def stop(self, line: str) -> None:
        """Stop a line's worker after its read in flight, and close its transport."""
        runner = self.runners.pop(line, None)
        if runner is not None:
            await self._stop_runner(runner)

    async def _stop_runner(self, runner: LineRunner) -> None:
        runner.worker.stop()
        runner.task.cancel()
        await asyncio.gather(runner.task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await runner.worker.close()

    async def stop_all(self) -> None:
        for line in list(self.runners):
            await self.stop(line)
        await asyncio.gather(*self._stopping, return_exceptions=True)
