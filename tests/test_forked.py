"""Work in a forked child: results come back whole, failures told apart, the heap kept clean."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from edgeopt import forked as forked_module
from edgeopt.forked import ChildLost, ForkedWork, WorkFailed


@pytest.fixture(autouse=True)
def _forking_works(monkeypatch: pytest.MonkeyPatch) -> None:
    # A lost child switches forking off for the process: each test starts afresh.
    monkeypatch.setattr(forked_module, "_lost", [])
    monkeypatch.delenv("EDGEOPT_NO_FORK", raising=False)


def _pids_of_children() -> set[int]:
    me = os.getpid()
    out = set()
    for task in os.listdir(f"/proc/{me}/task"):
        try:
            with open(f"/proc/{me}/task/{task}/children") as f:
                out |= {int(p) for p in f.read().split()}
        except OSError:
            pass
    return out


async def test_items_come_back_in_order_with_the_parents_own_key_strings() -> None:
    keys = [f"device/tag{i}" for i in range(1000)]
    parent_pid = os.getpid()

    def work() -> Iterator[object]:
        yield os.getpid()
        yield {k: float(i) for i, k in enumerate(keys)}
        yield ("tail", [1, 2.5, None])

    job = ForkedWork(work, keys=keys)
    assert job.forked
    pid, rates, tail = list(await job.items())
    assert pid != parent_pid  # it ran in a child
    assert rates == {k: float(i) for i, k in enumerate(keys)}
    # The keys are the parent's objects, not 1000 new strings.
    assert all(a is b for a, b in zip(rates, keys, strict=True))
    assert tail == ("tail", [1, 2.5, None])
    assert not _pids_of_children()  # reaped


async def test_the_works_temporaries_never_reach_the_parents_heap() -> None:
    def work() -> Iterator[int]:
        junk = [[float(i)] for i in range(300_000)]  # ~25 MB of small objects
        yield len(junk)

    tracemalloc.start()
    try:
        job = ForkedWork(work)
        (n,) = await job.items()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 300_000
    assert peak < 2_000_000, f"the parent traced {peak} bytes"


async def test_an_error_in_the_work_comes_back_with_the_childs_traceback() -> None:
    def work() -> Iterator[int]:
        yield 1
        raise ValueError("no such register")

    with pytest.raises(WorkFailed, match="ValueError: no such register"):
        await ForkedWork(work).items()
    assert not _pids_of_children()
    again = ForkedWork(lambda: [2])
    assert again.forked  # an error is the work's, not the fork's
    assert list(await again.items()) == [2]


def test_work_dropped_unasked_leaves_no_child_behind() -> None:
    def work() -> Iterator[int]:
        time.sleep(30)
        yield 1

    job = ForkedWork(work)
    assert job.forked and _pids_of_children()
    del job
    assert not _pids_of_children()


def test_a_child_that_dies_is_lost_and_later_work_runs_here() -> None:
    def work() -> Iterator[int]:
        os.kill(os.getpid(), signal.SIGKILL)
        yield 1

    with pytest.raises(ChildLost, match="killed by signal 9"):
        ForkedWork(work).items_now()
    later = ForkedWork(lambda: [os.getpid()])
    assert not later.forked
    assert list(later.items_now()) == [os.getpid()]


def test_a_child_that_overruns_its_time_is_killed_and_reaped() -> None:
    def work() -> Iterator[int]:
        time.sleep(30)
        yield 1

    started = time.monotonic()
    with pytest.raises(ChildLost, match="no result within"):
        ForkedWork(work, timeout=0.5).items_now()
    assert time.monotonic() - started < 10
    assert not _pids_of_children()


def test_without_fork_the_work_runs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEOPT_NO_FORK", "1")
    ran: list[int] = []

    def work() -> Iterator[int]:
        ran.append(os.getpid())
        yield 7

    job = ForkedWork(work)
    assert not job.forked and ran == [os.getpid()]  # ran at once, here
    assert list(job.items_now()) == [7]


async def test_a_signal_to_the_child_does_not_reach_the_daemons_loop() -> None:
    # The daemon's loop takes SIGTERM through a wakeup fd its children inherit;
    # a child stopped by SIGTERM must not stop the daemon.
    loop = asyncio.get_running_loop()
    stops: list[int] = []
    loop.add_signal_handler(signal.SIGTERM, stops.append, 1)
    try:

        def work() -> Iterator[int]:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            yield 1

        with pytest.raises(ChildLost, match="killed by signal 15"):
            await ForkedWork(work).items()
        await asyncio.sleep(0.2)
        assert stops == []
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
