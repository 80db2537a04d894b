"""Maintenance jobs: failures counted and logged, a shutdown unwinds a running job."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edgeopt.jobs import MaintenanceJobs


async def test_a_failing_job_is_counted_and_logged_while_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[str] = []

    async def good() -> None:
        runs.append("good")

    async def bad() -> None:
        raise OSError("disk full")

    jobs = MaintenanceJobs(stopping=lambda: False)
    jobs.add("good", 0.05, good)
    jobs.add("bad", 0.05, bad)
    with caplog.at_level(logging.ERROR, logger="edgeopt.jobs"):
        jobs.start()
        await asyncio.sleep(0.4)
        await jobs.stop()
    assert runs.count("good") >= 3
    assert jobs.failures["bad"] >= 3 and "good" not in jobs.failures
    assert "job bad failed" in caplog.text and "disk full" in caplog.text


async def test_a_shutdown_cancels_a_running_job_and_waits_for_it_to_unwind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stopping = False
    unwound = asyncio.Event()
    started = asyncio.Event()

    async def long() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.05)  # a flush, say
            unwound.set()

    jobs = MaintenanceJobs(stopping=lambda: stopping)
    jobs.add("long", 0.05, long)
    jobs.start()
    await asyncio.wait_for(started.wait(), 5)
    stopping = True
    with caplog.at_level(logging.ERROR):
        await jobs.stop()
    assert unwound.is_set()  # stop() returned only after the job's cleanup ran
    assert not jobs.failures and "failed" not in caplog.text
    await jobs.stop()  # a second stop does nothing
