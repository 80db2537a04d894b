"""KMeans in the worker: k never exceeds the distinct feature rows, and nothing warns.

Tags that change together have identical rows; asking KMeans for more
clusters than there are distinct rows made sklearn print "ConvergenceWarning:
Number of distinct clusters (2) found smaller than n_clusters (3)".
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import pytest

from edgeopt.optimizer.cluster_worker import (
    ClusterRunner,
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
        runner.close()
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
        assert runner._pool is not None
        [worker] = list(runner._pool._processes.values())
        await runner.run(duplicated_groups(2, 3), max_k=4, seed=0)  # reused while busy
        assert list(runner._pool._processes.values()) == [worker]
        await asyncio.sleep(1.0)
        assert not runner.started
        await asyncio.to_thread(worker.join, 10)
        assert not worker.is_alive()  # its memory (scikit-learn's too) is back
        again = await runner.run(duplicated_groups(3, 3), max_k=4, seed=0)
        assert again.k == 3 and runner.started
    finally:
        runner.close()


async def test_the_worker_does_not_import_the_parents_main_module() -> None:
    """Spawned, a worker would run the parent's main module first: the daemon's
    `edgeopt.cli` (pydantic, pymodbus, ...) or here pytest's."""
    assert "pytest" in sys.modules and sys.modules["__main__"].__name__ == "__main__"
    runner = ClusterRunner()
    try:
        await runner.run(duplicated_groups(2, 3), max_k=4, seed=0)
        assert runner._pool is not None
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(runner._pool, eval, "sorted(__import__('sys').modules)")
    finally:
        runner.close()
    assert "edgeopt.optimizer.cluster_worker" in loaded and "sklearn" in loaded
    assert not {"pytest", "_pytest", "pydantic", "pymodbus", "edgeopt.cli"} & set(loaded)
    assert sys.modules["__main__"].__name__ == "__main__"  # the parent's is back
