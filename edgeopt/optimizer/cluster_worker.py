"""KMeans over register correlations, run in a worker process.

The daemon imports this module only to start the worker and talk to it;
scikit-learn is imported inside `cluster_tags`, so only the worker process
ever loads it (about 100 MB the daemon never holds).

`ClusterRunner` owns the worker: a plain child process (`python -m
edgeopt.optimizer.cluster_worker`), started on first use, reused by runs
close together, and stopped when idle for `idle_exit` seconds (or on
`close()`): between hourly full cycles its memory goes back to the system.
Requests and replies are pickled, length-prefixed, over its stdin and
stdout. A plain process, not a multiprocessing pool: a pool would also leave
multiprocessing's resource tracker (13 MB) running for the daemon's life,
and a spawned pool worker imports the parent's main module (the whole
daemon) first; this worker imports numpy, this module and scikit-learn.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import sys
import typing
import warnings
from dataclasses import dataclass
from typing import Any

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


class WorkerDied(RuntimeError):
    """The worker process ended in the middle of a request; the next run starts a new one."""


class ClusterRunner:
    """The worker process for `cluster_tags`, started lazily and stopped when idle."""

    def __init__(self, idle_exit: float = IDLE_EXIT) -> None:
        self.idle_exit = idle_exit
        self._proc: asyncio.subprocess.Process | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self._proc is not None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def run(self, indicators: np.ndarray, max_k: int, seed: int) -> ClusterResult:
        return typing.cast(ClusterResult, await self._ask(("cluster", indicators, max_k, seed)))

    async def loaded_modules(self) -> list[str]:
        """The modules the worker has imported (what it holds in memory)."""
        return typing.cast(list[str], await self._ask(("modules",)))

    async def _ask(self, request: tuple[Any, ...]) -> Any:
        async with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            try:
                proc = await self._started()
                assert proc.stdin is not None and proc.stdout is not None
                data = pickle.dumps(request, pickle.HIGHEST_PROTOCOL)
                proc.stdin.write(len(data).to_bytes(8, "big") + data)
                await proc.stdin.drain()
                size = int.from_bytes(await proc.stdout.readexactly(8), "big")
                ok, reply = pickle.loads(await proc.stdout.readexactly(size))
            except BaseException as exc:
                # Cancelled or broken mid-request, its reply would answer the
                # next request: never reuse this worker.
                self.close()
                if isinstance(exc, asyncio.IncompleteReadError | ConnectionError):
                    raise WorkerDied("the cluster worker ended in the middle of a request") from exc
                raise
            finally:
                if self._proc is not None:
                    loop = asyncio.get_running_loop()
                    self._idle = loop.call_later(self.idle_exit, self.close)
        if not ok:
            raise RuntimeError(f"cluster worker: {reply}")
        return reply

    async def _started(self) -> asyncio.subprocess.Process:
        if self._proc is None or self._proc.returncode is not None:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "edgeopt.optimizer.cluster_worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        return self._proc

    def close(self) -> asyncio.subprocess.Process | None:
        """Stop the worker (it is started again when next needed); returns the stopped one."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # it holds nothing worth a clean exit
        return proc

    async def aclose(self) -> None:
        """`close`, then wait until the worker is gone and its pipes are closed."""
        proc = self.close()
        if proc is not None:
            await proc.wait()
            await proc.communicate()  # drains and closes the pipes


def serve(requests: typing.BinaryIO, replies: typing.BinaryIO) -> None:
    """The worker's loop: answer each request until the daemon closes the pipe."""
    while True:
        head = requests.read(8)
        if len(head) < 8:
            return
        request = pickle.loads(requests.read(int.from_bytes(head, "big")))
        reply: tuple[bool, Any]
        try:
            if request[0] == "cluster":
                reply = (True, cluster_tags(*request[1:]))
            elif request[0] == "modules":
                reply = (True, sorted(sys.modules))
            else:
                reply = (False, f"unknown request {request[0]!r}")
        except Exception as exc:  # reported to the daemon, which logs it
            reply = (False, f"{type(exc).__name__}: {exc}")
        data = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
        replies.write(len(data).to_bytes(8, "big") + data)
        replies.flush()


if __name__ == "__main__":
    # Served by the module under its own name, so replies unpickle in the daemon
    # as `edgeopt.optimizer.cluster_worker.ClusterResult`, not `__main__.`'s.
    from edgeopt.optimizer.cluster_worker import serve as _serve

    _serve(sys.stdin.buffer, sys.stdout.buffer)
