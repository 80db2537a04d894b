"""KMeans in the worker: k never exceeds the distinct feature rows, and nothing warns.

Tags that change together have identical rows; asking KMeans for more
clusters than there are distinct rows made sklearn print "ConvergenceWarning:
Number of distinct clusters (2) found smaller than n_clusters (3)".
"""

from __future__ import annotations

import asyncio
import math
import random
import sys

import numpy as np
import psutil
import pytest

from edgeopt.optimizer.cluster_worker import ClusterRunner, PackedIndicators, WorkerDied
from edgeopt.optimizer.clustering import (
    correlation_features,
    distinct_rows,
    largest_k,
    pack_indicators,
    unpack_indicators,
)
from edgeopt.optimizer.strategies.cluster import indicator_bits


def duplicated_groups(groups: int, copies: int, bins: int = 300, seed: int = 1) -> np.ndarray:
    """`groups` distinct change patterns, each repeated `copies` times (identical rows)."""
    rng = np.random.default_rng(seed)
    patterns = [(rng.random(bins) < 0.05).astype(np.uint8) for _ in range(groups)]
    return np.array([p for p in patterns for _ in range(copies)], np.uint8)


def packed_groups(groups: int, copies: int) -> PackedIndicators:
    """`duplicated_groups`, as the daemon passes them to the worker."""
    return pack_indicators(duplicated_groups(groups, copies))


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
        result = await runner.run(packed_groups(groups, copies), max_k=12, seed=0)
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
        await runner.run(packed_groups(2, 3), max_k=4, seed=0)
        pid = runner.pid
        assert pid is not None and psutil.pid_exists(pid)
        await runner.run(packed_groups(2, 3), max_k=4, seed=0)  # reused while busy
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
        again = await runner.run(packed_groups(3, 3), max_k=4, seed=0)
        assert again.k == 3 and runner.started and runner.pid != pid
    finally:
        await runner.aclose()


async def test_the_worker_imports_neither_the_daemon_nor_the_parents_main_module() -> None:
    runner = ClusterRunner()
    try:
        await runner.run(packed_groups(2, 3), max_k=4, seed=0)
        loaded = await runner.loaded_modules()
    finally:
        await runner.aclose()
    assert "edgeopt.optimizer.clustering" in loaded and "sklearn" in loaded
    assert not {"pytest", "_pytest", "pydantic", "pymodbus", "yaml", "edgeopt.cli"} & set(loaded)


async def test_a_worker_that_dies_mid_request_is_replaced() -> None:
    runner = ClusterRunner()
    try:
        await runner.run(packed_groups(2, 3), max_k=4, seed=0)
        pid = runner.pid
        assert pid is not None
        psutil.Process(pid).kill()
        with pytest.raises(WorkerDied):
            await runner.run(packed_groups(2, 3), max_k=4, seed=0)
        assert not runner.started
        result = await runner.run(packed_groups(2, 3), max_k=4, seed=0)
        assert result.k == 2 and runner.pid != pid
    finally:
        await runner.aclose()


async def test_a_cancelled_request_never_leaves_its_reply_for_the_next() -> None:
    runner = ClusterRunner()
    try:
        await runner.run(packed_groups(2, 3), max_k=4, seed=0)
        task = asyncio.create_task(runner.run(packed_groups(3, 3), max_k=4, seed=0))
        await asyncio.sleep(0)  # sent, not yet answered
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        result = await runner.run(packed_groups(2, 3), max_k=4, seed=0)
        assert result.k == 2  # not the cancelled request's k == 3
    finally:
        await runner.aclose()


# -- the indicators on their way: bits through the daemon, a matrix in the worker ----------


def reference_indicators(
    series: list[list[float]], start: float, end: float, bin_s: float
) -> np.ndarray:
    """The indicator matrix as the daemon's child built it with numpy before (the reference)."""
    bins = max(1, math.ceil((end - start) / bin_s))
    out = np.zeros((len(series), bins), np.uint8)
    for row, times in enumerate(series):
        if not times:
            continue
        idx = np.clip(((np.asarray(times) - start) // bin_s).astype(np.int64), 0, bins - 1)
        out[row, idx] = 1
        out[row, np.clip(idx - 1, 0, bins - 1)] = 1
        out[row, np.clip(idx + 1, 0, bins - 1)] = 1
    return out


def random_series(seed: int) -> tuple[list[list[float]], float, float, float]:
    """Change times of a few tags, some outside the window, over bins that fill bytes or not."""
    rng = random.Random(seed)
    start, bin_s = 1000.0, 10.0
    end = start + bin_s * rng.choice([1, 7, 8, 9, 63, 64, 65, 2160]) - rng.choice([0.0, 3.0])
    series = [
        sorted(rng.uniform(start - 25.0, end + 25.0) for _ in range(rng.choice([0, 1, 3, 80])))
        for _ in range(rng.randrange(3, 40))
    ]
    series.append([start, start + bin_s, end])
    return series, start, end, bin_s


def test_indicator_bits_are_numpys_matrix_packed() -> None:
    for seed in range(40):
        series, start, end, bin_s = random_series(seed)
        reference = reference_indicators(series, start, end, bin_s)
        packed = indicator_bits(series, start, end, bin_s)
        assert packed == pack_indicators(reference), seed
        # An eighth of the byte matrix (each row padded to whole bytes).
        assert len(packed.bits) == len(series) * math.ceil(reference.shape[1] / 8)
        assert np.array_equal(unpack_indicators(packed), reference), seed
    with pytest.raises(ValueError, match="cannot hold"):
        PackedIndicators(2, 9, bytes(3))


async def test_indicators_reach_the_worker_as_bits_and_are_rebuilt_exactly() -> None:
    runner = ClusterRunner()
    try:
        for seed in range(8):
            series, start, end, bin_s = random_series(seed)
            reference = reference_indicators(series, start, end, bin_s)
            shape, cells = await runner.rebuilt(indicator_bits(series, start, end, bin_s))
            assert shape == reference.shape, seed
            assert cells == reference.tobytes(), seed
    finally:
        await runner.aclose()
