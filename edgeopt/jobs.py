"""The daemon's maintenance jobs on APScheduler: run every few seconds, counted when they fail.

Polls never run here (APScheduler is 10-30 ms late at 1000 jobs); statistics,
storage checks, the storage lifecycle, the optimizer's tick and saves do.
Each running job is tracked, so a shutdown lets it unwind before storage
closes, and a job the shutdown cancels ends quietly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

__all__ = ["MaintenanceJobs"]

log = logging.getLogger(__name__)

JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 30}


class MaintenanceJobs:
    """Interval jobs on one scheduler, and how often each failed or missed its time.

    stopping: whether the daemon is stopping (a job cancelled then is not a failure).
    """

    def __init__(self, stopping: Callable[[], bool]) -> None:
        self.failures: Counter[str] = Counter()
        self._stopping = stopping
        self._scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._jobs: list[tuple[str, float, Callable[[], Awaitable[None]]]] = []

    def add(self, name: str, seconds: float, func: Callable[[], Awaitable[None]]) -> None:
        """Run `func` every `seconds` once started (one instance at a time, late runs merged)."""
        self._jobs.append((name, seconds, func))

    def start(self) -> None:
        scheduler = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(), job_defaults=dict(JOB_DEFAULTS)
        )
        for name, seconds, func in self._jobs:
            scheduler.add_job(
                self._tracked(name, func), "interval", seconds=seconds, id=name, name=name
            )
        scheduler.add_listener(self._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        scheduler.start()
        self._scheduler = scheduler

    async def stop(self) -> None:
        """Stop the scheduler; the jobs running are cancelled and waited for."""
        if self._scheduler is None:
            return
        self._scheduler.shutdown(wait=False)  # cancels the jobs that are running
        self._scheduler = None
        await asyncio.gather(*self._running, return_exceptions=True)

    def _tracked(
        self, name: str, func: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            try:
                await func()
            except asyncio.CancelledError:
                # APScheduler would log a cancellation by shutdown as a failure.
                if not self._stopping():
                    raise
                log.debug("job %s cancelled by shutdown", name)
            finally:
                self._running.discard(task)

        return job

    def _on_event(self, event: JobExecutionEvent) -> None:
        self.failures[event.job_id] += 1
        if event.exception is not None:
            log.error(
                "job %s failed (%d failures so far): %r",
                event.job_id,
                self.failures[event.job_id],
                event.exception,
                exc_info=(type(event.exception), event.exception, event.exception.__traceback__),
            )
        else:
            log.warning("job %s missed its run time", event.job_id)
