"""KMeans over register correlations, run in a worker process.

The daemon imports this module only to start the worker and talk to it. It
imports neither numpy nor scikit-learn: the worker's own code
(`edgeopt.optimizer.clustering`) does, and only the worker process loads
it, at its first request (numpy is 20 MB the daemon never holds,
scikit-learn about 100 MB). The indicators cross the daemon as packed bits
(`PackedIndicators`), not as an array.

`ClusterRunner` owns the worker, an `edgeopt.worker.WorkerProcess`
(`python -m edgeopt.optimizer.cluster_worker`): started on first use, reused
by runs close together, and stopped when idle for `idle_exit` seconds (or on
`close()`), so between hourly full cycles its memory goes back to the system.
"""

from __future__ import annotations

import typing

from edgeopt.optimizer.indicators import ClusterResult, PackedIndicators
from edgeopt.worker import IDLE_EXIT, WorkerDied, WorkerProcess
from edgeopt.worker import main as worker_main

__all__ = ["IDLE_EXIT", "ClusterResult", "ClusterRunner", "PackedIndicators", "WorkerDied"]


class ClusterRunner(WorkerProcess):
    """The worker process for `cluster_tags`, started lazily and stopped when idle.

    Its replies may hold only `ClusterResult` and builtins: a numpy scalar
    slipping into one is an error, not numpy imported in the daemon.
    """

    def __init__(self, idle_exit: float = IDLE_EXIT) -> None:
        super().__init__(
            __name__,
            name="cluster worker",
            idle_exit=idle_exit,
            reply_modules=(ClusterResult.__module__,),
        )

    async def run(self, indicators: PackedIndicators, max_k: int, seed: int) -> ClusterResult:
        return typing.cast(ClusterResult, await self.call("cluster", indicators, max_k, seed))

    async def rebuilt(self, indicators: PackedIndicators) -> tuple[tuple[int, int], bytes]:
        """The matrix the worker clusters for these indicators: (shape, a byte per cell)."""
        return typing.cast(tuple[tuple[int, int], bytes], await self.call("rebuild", indicators))


# --- The worker's side: numpy and scikit-learn load here, in the worker only. ------------


def _cluster(indicators: PackedIndicators, max_k: int, seed: int) -> ClusterResult:
    from edgeopt.optimizer.clustering import cluster_tags, unpack_indicators

    return cluster_tags(unpack_indicators(indicators), max_k, seed)


def _rebuild(indicators: PackedIndicators) -> tuple[tuple[int, int], bytes]:
    from edgeopt.optimizer.clustering import unpack_indicators

    matrix = unpack_indicators(indicators)
    rows, bins = matrix.shape
    return (int(rows), int(bins)), matrix.tobytes()


if __name__ == "__main__":
    worker_main({"cluster": _cluster, "rebuild": _rebuild})
