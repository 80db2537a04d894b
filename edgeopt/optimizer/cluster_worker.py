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
from dataclasses import dataclass

from edgeopt.worker import IDLE_EXIT, WorkerDied, WorkerProcess
from edgeopt.worker import main as worker_main

__all__ = ["IDLE_EXIT", "ClusterResult", "ClusterRunner", "PackedIndicators", "WorkerDied"]


@dataclass(frozen=True)
class ClusterResult:
    """One label per input row, the k chosen and its silhouette score."""

    labels: list[int]
    k: int
    silhouette: float


@dataclass(frozen=True)
class PackedIndicators:
    """Change indicators, one bit per tag and time bin, as the daemon holds and passes them on.

    Row by row, each row padded to whole bytes, the first bin in a byte's most
    significant bit (numpy's `packbits` order): an eighth of the uint8 matrix
    the worker rebuilds from it (`clustering.unpack_indicators`).
    """

    rows: int  # tags
    bins: int
    bits: bytes

    def __post_init__(self) -> None:
        if len(self.bits) != self.rows * self.row_bytes:
            raise ValueError(
                f"{len(self.bits)} bytes cannot hold {self.rows} rows of {self.bins} bits"
            )

    @property
    def row_bytes(self) -> int:
        return (self.bins + 7) // 8


class ClusterRunner(WorkerProcess):
    """The worker process for `cluster_tags`, started lazily and stopped when idle.

    Its replies may hold only this module's classes and builtins: a numpy
    scalar slipping into one is an error, not numpy imported in the daemon.
    """

    def __init__(self, idle_exit: float = IDLE_EXIT) -> None:
        super().__init__(
            __name__, name="cluster worker", idle_exit=idle_exit, reply_modules=(__name__,)
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
    # Served by the module under its own name, so replies unpickle in the daemon
    # as `edgeopt.optimizer.cluster_worker.ClusterResult`, not `__main__.`'s.
    from edgeopt.optimizer.cluster_worker import _cluster, _rebuild

    worker_main({"cluster": _cluster, "rebuild": _rebuild})
