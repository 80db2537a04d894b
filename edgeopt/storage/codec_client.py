"""The daemon's side of the storage codec worker, which does the numpy work of moves and queries.

Encoding hot rows into chunks, aggregating a day of chunks and decoding a
query's chunks and blocks need numpy, which would cost the daemon 20 MB for
good. `CodecClient` sends that work to `python -m edgeopt.storage.codec_worker`
(an `edgeopt.worker.WorkerProcess`, started on first use and stopped when
idle) and gets back plain Python: the classes below, `Decoded` and
`QueryResult`. The reply unpickler admits nothing else, so a numpy value in a
reply is an error, never numpy imported here. The SQL and its transactions
stay in the daemon.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgeopt.storage.query import Decoded, QueryResult, TierData
from edgeopt.storage.schema import SampleValue
from edgeopt.worker import IDLE_EXIT, WorkerProcess

__all__ = ["WORKER_MODULE", "CodecClient", "ColdBlock", "HotRecord", "WarmChunk"]

#: The worker's module, run as `python -m`.
WORKER_MODULE = "edgeopt.storage.codec_worker"

#: A hot row as the move reads it: `(tag_id, ts, stored value, quality, kind)`.
HotRecord = tuple[int, float, int | float | str | None, int, int]


@dataclass(frozen=True, slots=True)
class WarmChunk:
    """A samples chunk of one tag's hot rows, as the `chunks` table stores it."""

    tag_id: int
    start: float  # first ts
    end: float  # last ts
    count: int  # rows in the chunk
    codec: str
    blob: bytes
    rows: int  # hot rows it replaces: `count` and those swinging door left out


@dataclass(frozen=True, slots=True)
class ColdBlock:
    """A block of aggregates of one tag-day of chunks, as the `cold` table stores it."""

    start: float  # first bucket's start
    end: float  # last bucket's end
    samples: int  # raw samples the aggregates stand for
    buckets: int
    codec: str
    blob: bytes


class CodecClient:
    """The storage codec worker, seen from the daemon: one method per kind of work.

    Args:
        compressors: the `Compressor` ids each chunk may choose from; None: all.
        idle_exit: seconds without work after which the worker is stopped.

    Every method raises `edgeopt.worker.WorkerError` when the worker cannot
    answer (it could not start, died, or the work raised there).
    """

    def __init__(
        self, *, compressors: Sequence[int] | None = None, idle_exit: float = IDLE_EXIT
    ) -> None:
        self._compressors = None if compressors is None else [int(c) for c in compressors]
        self._worker = WorkerProcess(
            WORKER_MODULE,
            name="storage codec worker",
            idle_exit=idle_exit,
            reply_modules={__name__, "edgeopt.storage.query"},
        )

    @property
    def worker(self) -> WorkerProcess:
        return self._worker

    async def encode_hot(
        self, records: Sequence[HotRecord], deviations: Mapping[int, float]
    ) -> list[WarmChunk]:
        """Chunks of `records` (any tags, any order): per tag ascending by ts, at most
        MAX_CHUNK_SAMPLES rows each, thinned by swinging door for the tags in `deviations`."""
        return typing.cast(
            list[WarmChunk],
            await self._worker.call("encode_hot", records, dict(deviations), self._compressors),
        )

    async def aggregate(self, blobs: Sequence[bytes], resolution: float) -> ColdBlock:
        """One block of aggregates of the samples chunks `blobs` (one tag's), per `resolution` s."""
        return typing.cast(
            ColdBlock,
            await self._worker.call("aggregate", list(blobs), resolution, self._compressors),
        )

    async def decode(self, data: TierData) -> Decoded:
        """`edgeopt.storage.codec_worker.decode` of `data`'s chunks and blocks, in the worker."""
        return typing.cast(Decoded, await self._worker.call("decode", data.without_hot()))

    async def build_result(
        self,
        tag: str,
        data: TierData,
        pending: dict[float, SampleValue],
        resolution: float | None,
        limit: int | None,
    ) -> QueryResult:
        """`edgeopt.storage.codec_worker.build_result`, in the worker."""
        return typing.cast(
            QueryResult,
            await self._worker.call("build_result", tag, data, pending, resolution, limit),
        )

    async def aclose(self) -> None:
        """Stop the worker and wait for it."""
        await self._worker.aclose()
