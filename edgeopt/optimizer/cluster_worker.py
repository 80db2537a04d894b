"""KMeans over register correlations, run in a worker process.

This module is imported by the daemon only to name `cluster_tags` for the
process pool; scikit-learn is imported inside the function, so only the
worker process ever loads it (about 100 MB the daemon never holds).

`ClusterRunner` owns the pool: one worker, created on first use with the
`spawn` start method (a fresh interpreter, not a fork of the daemon), reused
by runs close together, and shut down when idle for `idle_exit` seconds (or
on `close()`): between hourly full cycles its memory goes back to the system.

A spawned process normally runs its parent's main module again first (as
`__mp_main__`): for the daemon that is `edgeopt.cli`, and with it the whole
daemon (pydantic, pymodbus, YAML, APScheduler), which the worker never uses.
The pool is therefore started under a bare `__main__`: the worker imports
only this module, numpy and, once it clusters, scikit-learn.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import sys
import types
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

# A worker unused this long exits; the next run starts a new one (about 0.7 s).
IDLE_EXIT = 120.0
# Below this silhouette score no split is better than keeping the tags together.
MIN_SILHOUETTE = 0.25
# Features are rounded to this many decimals before clustering: rows equal but
# for float noise (two tags with identical changes) are then exact duplicates.
FEATURE_DECIMALS = 9


@dataclass(frozen=True)
class ClusterResult:
    """One label per input row, the k chosen and its silhouette score."""

    labels: list[int]
    k: int
    silhouette: float


def correlation_features(indicators: np.ndarray) -> np.ndarray:
    """Each row's correlations with every row: the feature vector KMeans sees.

    Rounded to FEATURE_DECIMALS: the matrix product leaves identical tags'
    rows a few ulps apart, and they must compare equal (see `distinct_rows`).
    """
    x = indicators.astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.sqrt((x * x).sum(axis=1))
    norms[norms == 0] = 1.0
    x = x / norms[:, None]
    corr = x @ x.T
    np.fill_diagonal(corr, 1.0)
    return np.round(corr, FEATURE_DECIMALS)


def distinct_rows(features: np.ndarray) -> int:
    """How many different rows `features` has: KMeans cannot find more clusters than that."""
    if features.shape[0] == 0:
        return 0
    return int(np.unique(features, axis=0).shape[0])


def largest_k(features: np.ndarray, max_k: int) -> int:
    """The largest k worth trying: at most max_k, n - 1 (silhouette), and the distinct rows."""
    n = features.shape[0]
    return min(max_k, n - 1, distinct_rows(features))


def cluster_tags(indicators: np.ndarray, max_k: int = 12, seed: int = 0) -> ClusterResult:
    """KMeans on the rows of the correlation matrix, k by the best silhouette score.

    indicators: one row per tag, one column per time bin (1 where the tag
    changed in that bin). Runs in the worker process.

    k never exceeds the number of distinct feature rows (tags that change
    together have equal rows), which is what made sklearn warn "Number of
    distinct clusters found smaller than n_clusters". Should a fit still
    warn, that k is skipped and the warning never reaches the log.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import silhouette_score

    n = indicators.shape[0]
    if n < 3:
        return ClusterResult([0] * n, 1, 0.0)
    features = correlation_features(indicators)
    best: ClusterResult | None = None
    for k in range(2, largest_k(features, max_k) + 1):
        model = KMeans(n_clusters=k, n_init=4, random_state=seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            labels = model.fit_predict(features)
        degenerate = False
        for w in caught:
            if issubclass(w.category, ConvergenceWarning):
                degenerate = True  # fewer clusters than asked for: not a k to keep
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if degenerate:
            continue
        if len(set(labels.tolist())) < 2:
            continue
        score = float(silhouette_score(features, labels))
        if best is None or score > best.silhouette:
            best = ClusterResult([int(v) for v in labels], k, score)
    if best is None or best.silhouette < MIN_SILHOUETTE:
        # No k separates the tags well: they are one group (e.g. identical rows).
        return ClusterResult([0] * n, 1, 0.0 if best is None else best.silhouette)
    return best


@contextlib.contextmanager
def bare_main() -> Iterator[None]:
    """A `__main__` with neither file nor spec while a worker is spawned.

    `multiprocessing.spawn` makes the child import the parent's main module
    (by its spec's name, else by its file); with neither it imports nothing
    but what unpickling the call needs.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class ClusterRunner:
    """A lazily started one-process pool for `cluster_tags`."""

    def __init__(self, idle_exit: float = IDLE_EXIT) -> None:
        self.idle_exit = idle_exit
        self._pool: ProcessPoolExecutor | None = None
        self._idle: asyncio.TimerHandle | None = None

    @property
    def started(self) -> bool:
        return self._pool is not None

    async def run(self, indicators: np.ndarray, max_k: int, seed: int) -> ClusterResult:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
        loop = asyncio.get_running_loop()
        try:
            # The pool spawns its worker, if it has none, within this call.
            with bare_main():
                done = loop.run_in_executor(self._pool, cluster_tags, indicators, max_k, seed)
            return await done
        except BrokenProcessPool:
            self._pool = None  # the worker died; the next run starts a new one
            raise
        finally:
            if self._pool is not None:
                self._idle = loop.call_later(self.idle_exit, self.close)

    def close(self) -> None:
        """Stop the worker (it is started again when next needed)."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
