"""The worker process (edgeopt.worker), with the storage codec worker as the real worker it runs.

What the daemon relies on: a reply answers its own request or none; a worker
that fails, dies, cannot start or is closed says so with its own error; a
reply holding numpy objects is refused, never unpickled into the daemon.
"""

from __future__ import annotations

import asyncio
import math
import sys

import numpy as np
import psutil
import pytest

from edgeopt.storage.chunks import Rows, encode_samples
from edgeopt.storage.codec_client import CodecClient, ColdBlock, HotRecord
from edgeopt.storage.query import TierData
from edgeopt.worker import (
    WorkerDied,
    WorkerError,
    WorkerFailed,
    WorkerProcess,
    WorkerStartFailed,
)

D0 = 1_700_006_400.0


def chunk(n: int = 600) -> bytes:
    rows = Rows.from_records([(D0 + i, round(math.sin(i / 9), 2), 0, 0) for i in range(n)])
    return encode_samples(rows).blob


def hot_records(tags: int, rows: int) -> list[HotRecord]:
    return [
        (k, D0 + i, float((i * 7919 + k) % 1000) / 7, 0, 0)
        for i in range(rows)
        for k in range(tags)
    ]


async def test_a_request_that_raises_in_the_worker_says_what_and_where() -> None:
    client = CodecClient()
    try:
        with pytest.raises(WorkerFailed) as failed:
            await client.aggregate([b"not a chunk"], 60.0)
        assert failed.value.kind == "CodecError"
        assert "storage codec worker: CodecError: header" in str(failed.value)
        assert "Traceback" in failed.value.details and "decode_samples" in failed.value.details
        pid = client.worker.pid
        # The worker is fine: it answers the next request.
        block = await client.aggregate([chunk()], 60.0)
        assert isinstance(block, ColdBlock) and block.samples == 600 and block.buckets == 10
        assert client.worker.pid == pid
    finally:
        await client.aclose()


async def test_a_reply_holding_numpy_objects_is_refused_not_unpickled() -> None:
    client = CodecClient()
    try:
        # A pending value of numpy's float64 comes back in the points as it is.
        data = TierData(D0, D0 + 10, warm=[(1, D0, D0 + 599, chunk())])
        with pytest.raises(WorkerError, match=r"reply holds numpy\.") as refused:
            await client.build_result("d/t", data, {D0 + 0.5: np.float64(2.5)}, None, None)
        assert not isinstance(refused.value, WorkerFailed)
        # Plain values come back.
        result = await client.build_result("d/t", data, {D0 + 0.5: 2.5}, None, None)
        assert result.points[:2] == [(D0, 0.0), (D0 + 0.5, 2.5)]
        assert type(result.points[0][0]) is float and type(result.points[0][1]) is float
    finally:
        await client.aclose()


async def test_a_worker_that_dies_mid_request_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    client = CodecClient()
    receive = WorkerProcess._receive
    killed: list[int] = []

    async def kill_first(self: WorkerProcess, proc: asyncio.subprocess.Process) -> bytes:
        if not killed:  # the request is sent: the worker dies before it answers
            killed.append(proc.pid)
            proc.kill()
            await proc.wait()
        return await receive(self, proc)

    monkeypatch.setattr(WorkerProcess, "_receive", kill_first)
    try:
        with pytest.raises(WorkerDied, match="killed by signal 9"):
            await client.encode_hot(hot_records(2, 3000), {})
        assert not client.worker.started
        chunks = await client.encode_hot(hot_records(2, 3000), {})
        assert [c.rows for c in chunks] == [3000, 3000] and client.worker.pid != killed[0]
    finally:
        await client.aclose()


async def test_a_cancelled_request_never_leaves_its_reply_for_the_next() -> None:
    client = CodecClient()
    try:
        await client.aggregate([chunk()], 60.0)  # started
        task = asyncio.create_task(client.encode_hot(hot_records(4, 2000), {}))
        await asyncio.sleep(0.05)  # sent, not yet answered
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        block = await client.aggregate([chunk(120)], 60.0)
        assert isinstance(block, ColdBlock) and block.samples == 120  # not the chunks
    finally:
        await client.aclose()


async def test_a_worker_that_cannot_start_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    client = CodecClient()
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    try:
        with pytest.raises(WorkerStartFailed, match="cannot start the storage codec worker"):
            await client.aggregate([chunk()], 60.0)
        assert not client.worker.started
    finally:
        await client.aclose()


async def test_the_worker_stops_when_idle_and_for_good_when_closed() -> None:
    client = CodecClient(idle_exit=0.5)
    try:
        await client.aggregate([chunk()], 60.0)
        pid = client.worker.pid
        assert pid is not None and psutil.pid_exists(pid)
        modules = await client.worker.loaded_modules()
        # The worker holds numpy and its own modules, not the daemon's.
        assert "numpy" in modules and "edgeopt.storage.codec_worker" in modules
        assert not {"pytest", "pymodbus", "pydantic", "yaml", "edgeopt.daemon"} & set(modules)
        await asyncio.sleep(1.0)
        assert not client.worker.started
        for _ in range(100):  # killed; asyncio reaps it
            if not psutil.pid_exists(pid):
                break
            await asyncio.sleep(0.05)
        assert not psutil.pid_exists(pid)
        await client.aggregate([chunk()], 60.0)  # started again when needed
        assert client.worker.started and client.worker.pid != pid
    finally:
        await client.aclose()
    assert not client.worker.started
    with pytest.raises(WorkerError, match="closed"):
        await client.aggregate([chunk()], 60.0)
    assert psutil.Process().children(recursive=True) == []
