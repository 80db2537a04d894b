"""Hot storage tier against real SQLite files: batching, queries, failures and crashes."""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeopt.clock import SystemClock, VirtualClock
from edgeopt.storage import MIGRATIONS, HotStore, Migration, Sample, SchemaError, migrate
from edgeopt.storage.schema import SampleValue, current_version

WRITER = Path(__file__).with_name("storage_writer_proc.py")
T0 = 1_700_000_000.0


def samples(tag: str, n: int, *, start: float = T0, step: float = 1.0) -> list[Sample]:
    return [Sample(tag, start + i * step, float(i), "good") for i in range(n)]


async def open_store(path: Path, **kwargs: object) -> HotStore:
    return await HotStore.open(path, clock=VirtualClock(T0), **kwargs)  # type: ignore[arg-type]


def db_rows(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the file with plain sqlite3, as an operator's tool would."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


# --- opening, schema, migrations -------------------------------------------------


async def test_open_creates_dir_and_uses_wal_with_synchronous_normal(tmp_path: Path) -> None:
    path = tmp_path / "state" / "nested" / "hot.db"
    async with await open_store(path) as store:
        conn = store.connection
        assert list(await conn.execute_fetchall("PRAGMA journal_mode")) == [("wal",)]
        assert list(await conn.execute_fetchall("PRAGMA synchronous")) == [(1,)]  # NORMAL
        [(busy_timeout_ms,)] = await conn.execute_fetchall("PRAGMA busy_timeout")
        assert busy_timeout_ms > 0
    assert path.exists()


async def test_migrations_are_recorded_once_and_reopen_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    for _ in range(3):
        store = await open_store(path)
        store.append(Sample("d/a", T0, 1, "good"))
        await store.close()
    versions = db_rows(path, "SELECT version, description, applied_at FROM schema_version")
    assert [v for v, _, _ in versions] == [m.version for m in MIGRATIONS]
    assert versions[0][2] == T0  # applied_at comes from the injected clock
    assert db_rows(path, "SELECT COUNT(*) FROM samples") == [(1,)]


async def test_a_new_migration_is_one_line_and_applies_once(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    await (await open_store(path)).close()
    extra = (
        *MIGRATIONS,
        Migration(len(MIGRATIONS) + 1, "test: extra", "CREATE TABLE test_extra (x)"),
    )
    store = await open_store(path)
    try:
        clock = VirtualClock(T0)
        assert await migrate(store.connection, clock=clock, migrations=extra) == len(extra)
        assert await migrate(store.connection, clock=clock, migrations=extra) == len(extra)
        assert await current_version(store.connection) == len(extra)
    finally:
        await store.close()
    assert db_rows(path, "SELECT COUNT(*) FROM schema_version") == [(len(extra),)]
    # The newer database is refused by this program's shorter migration list.
    with pytest.raises(SchemaError, match="upgrade edgeopt") as info:
        await open_store(path)
    assert (info.value.found, info.value.supported) == (len(extra), len(MIGRATIONS))


async def test_failed_migration_leaves_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    await (await open_store(path)).close()
    broken = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "broken", "CREATE TABLE t (x); nonsense"))
    store = await open_store(path)
    try:
        with pytest.raises(sqlite3.OperationalError):
            await migrate(store.connection, clock=VirtualClock(), migrations=broken)
        assert await current_version(store.connection) == len(MIGRATIONS)
        tables = await store.connection.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE name = 't'"
        )
        assert list(tables) == []
    finally:
        await store.close()


async def test_migrations_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    async with await open_store(tmp_path / "hot.db") as store:
        with pytest.raises(ValueError, match="without gaps"):
            await migrate(
                store.connection,
                clock=VirtualClock(),
                migrations=(*MIGRATIONS, Migration(len(MIGRATIONS) + 2, "gap", "SELECT 1")),
            )


# --- writing ---------------------------------------------------------------------


async def test_flush_is_one_transaction_with_one_executemany(tmp_path: Path) -> None:
    async with await open_store(tmp_path / "hot.db") as store:
        statements: list[str] = []
        await store.connection.set_trace_callback(statements.append)
        before = store.connection.total_changes
        for tag in ("d/a", "d/b", "d/c"):  # three new tags, created in the same transaction
            store.extend(samples(tag, 500))
        assert await store.flush() == 1500
        # 1500 samples + 3 tag names, all inside one BEGIN … COMMIT.
        assert store.connection.total_changes - before == 1503
        assert [s for s in statements if s.startswith(("BEGIN", "COMMIT", "ROLLBACK"))] == [
            "BEGIN IMMEDIATE",
            "COMMIT",
        ]
        assert store.status().flushes == 1
        assert await store.flush() == 0  # nothing buffered: no transaction at all
        assert sum(s.startswith("BEGIN") for s in statements) == 1


async def test_values_round_trip_with_their_types(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    values: list[int | float | str | bool | None] = [
        True,
        False,
        0,
        1,
        -5,
        2**64 - 1,  # uint64 beyond SQLite's int64
        -(2**63),
        3.0,
        -0.25,
        math.inf,
        "",
        "läuft",
        "0",
        None,
    ]
    store = await open_store(path)
    store.extend(Sample("d/v", T0 + i, v, "good") for i, v in enumerate(values))
    store.append(Sample("d/nan", T0, math.nan, "bad"))
    await store.close()

    async with await open_store(path) as store:
        got = [v for _, v in await store.query("d/v")]
        assert got == values
        assert [type(v) for v in got] == [type(v) for v in values]
        [(_, nan)] = await store.query("d/nan")
        assert isinstance(nan, float) and math.isnan(nan)
    qualities = db_rows(path, "SELECT DISTINCT quality FROM samples ORDER BY 1")
    assert qualities == [(0,), (2,)]


async def test_same_tag_and_ts_twice_keeps_the_last(tmp_path: Path) -> None:
    async with await open_store(tmp_path / "hot.db") as store:
        store.append(Sample("d/a", T0, 1, "good"))
        await store.flush()
        store.append(Sample("d/a", T0, 2, "stale"))
        assert await store.query("d/a") == [(T0, 2)]  # the buffered one wins before flush
        await store.flush()
        assert await store.query("d/a") == [(T0, 2)]


async def test_unstorable_samples_are_skipped_not_blocking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with await open_store(tmp_path / "hot.db") as store:
        store.append(Sample("d/a", T0, 1.0, "good"))
        store.append(Sample("d/a", T0 + 1, b"raw", "good"))  # type: ignore[arg-type]
        store.append(Sample("d/a", T0 + 2, 3.0, "excellent"))
        store.append(Sample("d/a", math.nan, 4.0, "good"))
        store.append(Sample("d/a", T0 + 3, 5.0, "good"))
        with caplog.at_level(logging.WARNING, logger="edgeopt.storage.hot"):
            assert await store.flush() == 2
        assert "skipped 3 samples" in caplog.text
        assert store.status().rejected == 3
        assert store.status().state == "ok"
        assert await store.query("d/a") == [(T0, 1.0), (T0 + 3, 5.0)]


async def test_tag_ids_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    store = await open_store(path)
    store.extend([Sample("d/a", T0, 1, "good"), Sample("d/b", T0, 2, "good")])
    await store.close()
    ids = dict(db_rows(path, "SELECT name, id FROM tags"))

    store = await open_store(path)
    store.extend([Sample("d/a", T0 + 1, 3, "good"), Sample("d/c", T0, 4, "good")])
    await store.close()
    ids2 = dict(db_rows(path, "SELECT name, id FROM tags"))
    assert ids2["d/a"] == ids["d/a"] and ids2["d/b"] == ids["d/b"]
    assert sorted(ids2) == ["d/a", "d/b", "d/c"]
    assert len(set(ids2.values())) == 3
    a = db_rows(path, "SELECT COUNT(*) FROM samples WHERE tag_id = ?", (ids["d/a"],))
    assert a == [(2,)]


async def test_close_flushes_everything_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    store = await open_store(path, flush_interval=3600.0)
    run = asyncio.create_task(store.run())
    store.extend(samples("d/a", 1234))
    await asyncio.sleep(0)
    await store.close()
    await asyncio.wait_for(run, 1.0)  # run() returns once closed
    await store.close()
    store.append(Sample("d/a", T0 + 5000, 1.0, "good"))  # after close: counted, not raised
    assert store.status().dropped == 1
    with pytest.raises(RuntimeError, match="closed"):
        await store.query("d/a")
    assert db_rows(path, "SELECT COUNT(*) FROM samples") == [(1234,)]
    assert db_rows(path, "PRAGMA integrity_check") == [("ok",)]


async def test_a_cancelled_flush_still_commits_before_close(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    store = await open_store(path)
    store.extend(samples("d/a", 20_000))
    flushing = asyncio.create_task(store.flush())
    await asyncio.sleep(0)  # the write has started on aiosqlite's thread
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    store.extend(samples("d/a", 10, start=T0 + 50_000))
    await store.close()
    assert db_rows(path, "SELECT COUNT(*) FROM samples") == [(20_010,)]
    assert store.status().dropped == 0


async def test_run_flushes_on_interval(tmp_path: Path) -> None:
    async with await HotStore.open(
        tmp_path / "hot.db", clock=SystemClock(), flush_interval=0.05
    ) as store:
        run = asyncio.create_task(store.run())
        store.extend(samples("d/a", 3))
        for _ in range(100):
            if store.status().flushes:
                break
            await asyncio.sleep(0.01)
        assert store.status().flushes == 1
        assert store.status().buffered == 0
        await store.close()
        await asyncio.wait_for(run, 1.0)


async def test_run_flushes_early_once_flush_rows_are_buffered(tmp_path: Path) -> None:
    async with await HotStore.open(
        tmp_path / "hot.db", clock=SystemClock(), flush_interval=3600.0, flush_rows=100
    ) as store:
        run = asyncio.create_task(store.run())
        store.extend(samples("d/a", 99))
        await asyncio.sleep(0.05)
        assert store.status().flushes == 0
        store.append(Sample("d/a", T0 + 99, 99.0, "good"))
        for _ in range(100):
            if store.status().flushes:
                break
            await asyncio.sleep(0.01)
        assert store.status().rows_written == 100
        await store.close()
        await asyncio.wait_for(run, 1.0)


# --- reading ---------------------------------------------------------------------


async def test_query_order_range_and_limit(tmp_path: Path) -> None:
    async with await open_store(tmp_path / "hot.db") as store:
        points = samples("d/a", 100, step=0.5)
        shuffled = points[:]
        random.Random(7).shuffle(shuffled)
        store.extend(shuffled[:60])
        await store.flush()
        store.extend(shuffled[60:])  # the rest stays buffered
        store.extend(samples("d/b", 10))  # another tag must not leak in
        expect = [(s.ts, s.value) for s in points]

        assert await store.query("d/a") == expect
        assert await store.query("d/a", since=T0 + 10, until=T0 + 20) == expect[20:41]  # inclusive
        assert await store.query("d/a", since=T0 + 10.1) == expect[21:]
        assert await store.query("d/a", until=T0 + 2) == expect[:5]
        assert await store.query("d/a", limit=7) == expect[:7]
        assert await store.query("d/a", since=T0 + 30, limit=3) == expect[60:63]
        assert await store.query("d/a", limit=0) == []
        assert await store.query("d/a", since=T0 + 60) == []
        assert await store.query("nope/x") == []
        with pytest.raises(ValueError):
            await store.query("d/a", limit=-1)

        await store.flush()
        assert await store.query("d/a") == expect
        assert await store.query("d/a", since=T0 + 10, until=T0 + 20) == expect[20:41]
        assert await store.query("d/a", since=T0 + 30, limit=3) == expect[60:63]


async def test_query_sees_a_sample_right_after_append(tmp_path: Path) -> None:
    async with await open_store(tmp_path / "hot.db") as store:
        store.append(Sample("d/a", T0, 42, "good"))
        assert await store.query("d/a") == [(T0, 42)]
        assert store.status().buffered == 1


# --- storage failures --------------------------------------------------------------


async def _set_max_pages(store: HotStore, pages: int | None) -> None:
    conn = store.connection
    if pages is None:
        [(pages,)] = await conn.execute_fetchall("PRAGMA page_count")
    await conn.execute(f"PRAGMA max_page_count = {pages}")


async def test_full_database_degrades_keeps_samples_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "hot.db"
    caplog.set_level(logging.INFO, logger="edgeopt.storage.hot")
    store = await open_store(path)
    store.extend(samples("d/a", 10))
    assert await store.flush() == 10
    # The file may not grow by a single page: SQLite reports SQLITE_FULL for real.
    await _set_max_pages(store, None)

    first = [Sample("d/s", T0 + i, f"value {i} " * 20, "good") for i in range(3000)]
    store.extend(first)
    assert await store.flush() == 0
    st = store.status()
    assert st.state == "degraded"
    assert st.last_error is not None and "full" in st.last_error
    assert st.buffered == 3000 and st.dropped == 0 and st.failed_flushes == 1

    more = samples("d/b", 500)
    store.extend(more)
    assert await store.flush() == 0  # still full: retried, still kept
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "degraded" in warnings[0].getMessage()
    assert "Free space" in warnings[0].getMessage()
    assert len(await store.query("d/s")) == 3000  # buffered samples stay queryable

    await _set_max_pages(store, 1_000_000_000)  # space is back
    assert await store.flush() == 3500
    assert store.status().state == "ok"
    assert any("recovered" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    await store.close()

    async with await open_store(path) as store:
        assert [v for _, v in await store.query("d/s")] == [s.value for s in first]
        assert await store.query("d/b") == [(s.ts, s.value) for s in more]
        assert len(await store.query("d/a")) == 10
    assert db_rows(path, "PRAGMA integrity_check") == [("ok",)]


async def test_buffer_overflow_while_degraded_drops_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    store = await open_store(path, flush_rows=10, max_buffer=100)
    store.append(Sample("d/a", T0 - 1, 0.0, "good"))
    await store.flush()
    await _set_max_pages(store, None)
    big = [Sample("d/a", T0 + i, "x" * 500, "good") for i in range(150)]
    store.extend(big[:80])

    # A flush fails while 40 more arrive: 80 go back in front of the 40 and the
    # oldest 20 fall off, so memory stays bounded by max_buffer.
    flushing = asyncio.create_task(store.flush())
    while not store._inflight:  # the batch is now being written
        await asyncio.sleep(0)
    store.extend(big[80:120])
    assert await flushing == 0
    assert store.status().buffered == 100 and store.status().dropped == 20

    store.extend(big[120:])  # 30 more: the 30 oldest are dropped at once
    assert store.status().buffered == 100 and store.status().dropped == 50
    await _set_max_pages(store, 1_000_000_000)
    assert await store.flush() == 100
    await store.close()
    kept = db_rows(path, "SELECT ts FROM samples WHERE ts >= ? ORDER BY ts", (T0,))
    assert [ts for (ts,) in kept] == [s.ts for s in big[50:]]


TINY_FS_BYTES = 1024 * 1024


@pytest.fixture
def tiny_fs() -> Iterator[Path]:
    """A real 1 MiB tmpfs, so the disk itself runs full.

    Mounted outside pytest's tmp_path: concurrent pytest runs prune old
    tmp_path trees, which must never happen to a live mount.
    """
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("needs Linux mount(8) for a small tmpfs")
    mnt = Path(tempfile.mkdtemp(prefix="edgeopt-tinyfs-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TINY_FS_BYTES}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        if not os.path.ismount(mnt):
            shutil.rmtree(mnt, ignore_errors=True)


def fill_disk(directory: Path) -> Path:
    """Write a ballast file until the filesystem reports ENOSPC."""
    # Never fill the real disk if the mount went away.
    assert os.path.ismount(directory), f"{directory} is not a mount point"
    ballast = directory / "ballast"
    with ballast.open("wb", buffering=0) as f:
        for _ in range(2 * TINY_FS_BYTES // 4096):
            try:
                f.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return ballast
    pytest.fail(f"{directory} did not fill up after {2 * TINY_FS_BYTES} bytes")


async def test_real_full_filesystem_degrades_and_recovers(tiny_fs: Path) -> None:
    path = tiny_fs / "hot.db"
    store = await open_store(path)
    store.extend(samples("d/a", 100))
    assert await store.flush() == 100
    ballast = fill_disk(tiny_fs)

    written: list[Sample] = []
    for round_ in range(20):  # until the free pages inside the file are used up too
        batch = [Sample("d/s", T0 + round_ * 1000 + i, "y" * 100, "good") for i in range(500)]
        written += batch
        store.extend(batch)
        if await store.flush() == 0:
            break
    st = store.status()
    assert st.state == "degraded", "the 1 MiB filesystem never filled up"
    assert st.last_error is not None and ("full" in st.last_error or "I/O" in st.last_error)
    assert st.buffered > 0 and st.dropped == 0

    ballast.unlink()  # the operator frees space
    assert await store.flush() > 0
    assert store.status().state == "ok"
    await store.close()
    async with await open_store(path) as store:
        assert [ts for ts, _ in await store.query("d/s")] == [s.ts for s in written]
    assert db_rows(path, "PRAGMA integrity_check") == [("ok",)]


# --- crashes -------------------------------------------------------------------------


def test_kill_9_mid_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    rnd = random.Random(3)
    runs: list[tuple[int, int]] = []  # (first sample number, acknowledged count)
    for run in range(3):
        first = run * 10_000_000
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(path), str(first), "2000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        acked = 0
        target = rnd.randint(3, 8)
        for _ in range(target):
            line = proc.stdout.readline()
            assert line and not line.startswith("error"), f"writer failed: {line!r}"
            acked = int(line)
        # Land the kill at a random point, likely inside a transaction.
        try:
            proc.wait(timeout=rnd.uniform(0.0, 0.03))
        except subprocess.TimeoutExpired:
            pass
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        for line in rest.splitlines():  # printed before the kill: also acknowledged
            acked = int(line)
        runs.append((first, acked))

        assert db_rows(path, "PRAGMA integrity_check") == [("ok",)]
        for first_i, acked_i in runs:
            rows = db_rows(
                path,
                "SELECT t.name, s.ts, s.value FROM samples s JOIN tags t ON t.id = s.tag_id "
                "WHERE s.value >= ? AND s.value < ? ORDER BY s.value",
                (first_i, first_i + 10_000_000),
            )
            values = [v for _, _, v in rows]
            assert len(values) == len(set(values)), "a sample was stored twice"
            assert values[:acked_i] == list(range(first_i, first_i + acked_i))
            for name, ts, v in rows:  # unacknowledged extras must still be whole samples
                assert isinstance(v, int)
                assert (name, ts) == (f"crash/t{v % 10}", 1.7e9 + v / 1000)

    async def reopen() -> list[tuple[float, SampleValue]]:
        async with await open_store(path) as store:
            return await store.query("crash/t3", limit=5)

    assert [v for _, v in asyncio.run(reopen())] == [3, 13, 23, 33, 43]
