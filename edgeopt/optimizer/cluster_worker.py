"""KMeans over register correlations, run in a worker process.

The daemon imports this module only to start the worker and talk to it. It
imports neither numpy nor scikit-learn: the worker's own code
(`edgeopt.optimizer.clustering`) does, and only the worker process loads
it, at its first request (numpy is 20 MB the daemon never holds,
scikit-learn about 100 MB). The indicators cross the daemon as packed bits
(`PackedIndicators`), not as an array.

`ClusterRunner` owns the worker: a plain child process (`python -m
edgeopt.optimizer.cluster_worker`), started on first use, reused by runs
close together, and stopped when idle for `idle_exit` seconds (or on
`close()`): between hourly full cycles its memory goes back to the system.
Requests and replies are pickled, length-prefixed, over its stdin and
stdout. A plain process, not a multiprocessing pool: a pool would also leave
multiprocessing's resource tracker (13 MB) running for the daemon's life,
and a spawned pool worker imports the parent's main module (the whole
daemon) first; this worker imports numpy, these two modules and scikit-learn.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import sys
import typing
from dataclasses import dataclass
from typing import Any

# A worker unused this long exits; the next run starts a new one (about 0.7 s).
IDLE_EXIT = 120.0


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

    async def run(self, indicators: PackedIndicators, max_k: int, seed: int) -> ClusterResult:
        return typing.cast(ClusterResult, await self._ask(("cluster", indicators, max_k, seed)))

    async def rebuilt(self, indicators: PackedIndicators) -> tuple[tuple[int, int], bytes]:
        """The matrix the worker clusters for these indicators: (shape, a byte per cell)."""
        return typing.cast(tuple[tuple[int, int], bytes], await self._ask(("rebuild", indicators)))

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
            if request[0] in ("cluster", "rebuild"):
                # The worker's own code: numpy and scikit-learn load here, in the worker.
                from edgeopt.optimizer.clustering import cluster_tags, unpack_indicators

                matrix = unpack_indicators(request[1])
                if request[0] == "cluster":
                    reply = (True, cluster_tags(matrix, *request[2:]))
                else:
                    reply = (True, (matrix.shape, matrix.tobytes()))
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
