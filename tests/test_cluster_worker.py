"""KMeans in the worker: k never exceeds the distinct feature rows, and nothing warns.

Tags that change together have identical rows; asking KMeans for more
clusters than there are distinct rows made sklearn print "ConvergenceWarning:
Number of distinct clusters (2) found smaller than n_clusters (3)".
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import psutil
import pytest

from edgeopt.optimizer.cluster_worker import (
    ClusterRunner,
    WorkerDied,
    correlation_features,
    distinct_rows,
    largest_k,
)


def duplicated_groups(groups: int, copies: int, bins: int = 300, seed: int = 1) -> np.ndarray:
    """`groups` distinct change patterns, each repeated `copies` times (identical rows)."""
    rng = np.random.default_rng(seed)
    patterns = [(rng.random(bins) < 0.05).astype(np.uint8) for _ in range(groups)]
    return np.array([p for p in patterns for _ in range(copies)], np.uint8)


def test_k_is_bounded_by_the_distinct_rows() -> None:
    features = correlation_features(duplicated_groups(2, 3))
    assert features.shape == (6, 6)
    assert distinct_rows(features) == 2
    assert largest_k(features, 12) == 2
    single = correlation_features(duplicated_groups(1, 5))
    assert distinct_rows(single) == 1 and largest_k(single, 12) == 1
    spread = correlation_features(duplicated_groups(6, 1))
    assert largest_k(spread, 12) == 5  # n - 1: a silhouette needs a spare row
    assert largest_k(spread, 3) == 3


@pytest.mark.parametrize(("groups", "copies"), [(2, 3), (3, 4), (1, 6)])
async def test_duplicate_rows_cluster_quietly_in_the_worker(
    groups: int, copies: int, capfd: pytest.CaptureFixture[str]
) -> None:
    runner = ClusterRunner()  # a fresh worker: it inherits this test's captured stderr
    try:
        result = await runner.run(duplicated_groups(groups, copies), max_k=12, seed=0)
    finally:
        await runner.aclose()
    err = capfd.readouterr().err
    assert "ConvergenceWarning" not in err and "distinct clusters" not in err
    assert result.k == (groups if groups > 1 else 1)
    labels = result.labels
    for g in range(groups):
        assert len(set(labels[g * copies : (g + 1) * copies])) == 1  # copies stay together
    assert len(set(labels)) == result.k
    assert "sklearn" not in sys.modules


async def test_the_worker_exits_when_idle_and_comes_back_when_needed() -> None:
    runner = ClusterRunner(idle_exit=0.5)
    try:
        await runner.run(duplicated_groups(2, 3), max_k=4, seed=0)
        pid = runner.pid
        assert pid is not None and psutil.pid_exists(pid)
        await runner.run(duplicated_groups(2, 3), max_k=4, seed=0)  # reused while busy
        assert runner.pid == pid
        await asyncio.sleep(1.0)
        assert not runner.started
        for _ in range(100):  # killed; asyncio reaps it
            if not psutil.pid_exists(pid):
                break
            await asyncio.sleep(0.05)
        assert not psutil.pid_exists(pid)  # its memory (scikit-learn's too) is back
        # Nothing else was left behind (a multiprocessing pool leaves its resource tracker).
        assert psutil.Process().children(recursive=True) == []
        again = await runner.run(duplicated_groups(3, 3), max_k=4, seed=0)
        assert again.k == 3 and runner.started and runner.pid != pid
    finally:
        await runner.aclose()


async def test_the_worker_imports_neither_the_daemon_nor_the_parents_main_module() -> None:
    runner = ClusterRunner()
    try:
        await runner.run(duplicated_groups(2, 3), max_k=4, seed=0)
        loaded = await runner.loaded_modules()
    finally:
        await runner.aclose()
    assert "edgeopt.optimizer.cluster_worker" in loaded and "sklearn" in loaded
    assert not {"pytest", "_pytest", "pydantic", "pymodbus", "yaml", "edgeopt.cli"} & set(loaded)


async def test_a_worker_that_dies_mid_request_is_replaced() -> None:
    runner = ClusterRunner()
    try:
        await runner.run(duplicated_groups(2, 3), max_k=4, seed=0)
        pid = runner.pid
        assert pid is not None
        psutil.Process(pid).kill()
        with pytest.raises(WorkerDied):
            await runner.run(duplicated_groups(2, 3), max_k=4, seed=0)
        assert not runner.started
        result = await runner.run(duplicated_groups(2, 3), max_k=4, seed=0)
        assert result.k == 2 and runner.pid != pid
    finally:
        await runner.aclose()


async def test_a_cancelled_request_never_leaves_its_reply_for_the_next() -> None:
    runner = ClusterRunner()
    try:
        await runner.run(duplicated_groups(2, 3), max_k=4, seed=0)
        task = asyncio.create_task(runner.run(duplicated_groups(3, 3), max_k=4, seed=0))
        await asyncio.sleep(0)  # sent, not yet answered
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        result = await runner.run(duplicated_groups(2, 3), max_k=4, seed=0)
        assert result.k == 2  # not the cancelled request's k == 3
    finally:
        await runner.aclose()
