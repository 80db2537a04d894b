"""Archive files appear only complete; what a crash mid-write left is removed at start."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edgeopt.clock import VirtualClock
from edgeopt.storage import HotStore, archive
from edgeopt.storage.tiers import TierManager

T0 = 1_700_006_400.0  # 2023-11-15, UTC


def block(i: int, blob: bytes | None = b"\x01\x02") -> archive.Block:
    return archive.Block(
        id=i,
        tag_id=1,
        tag="m/p",
        start_ts=T0 + i * 600,
        end_ts=T0 + i * 600 + 599,
        count=10,
        buckets=10,
        resolution=60.0,
        codec="zlib",
        blob=blob,  # type: ignore[arg-type]  # None breaks NOT NULL: a write failing half-way
    )


def stored_ids(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [int(r[0]) for r in conn.execute("SELECT id FROM cold ORDER BY id")]


def test_a_new_file_that_fails_half_way_leaves_nothing_under_its_name(tmp_path: Path):
    path = archive.archive_path(tmp_path, T0)
    with pytest.raises(sqlite3.IntegrityError):
        archive.write_blocks(path, [block(1), block(2, blob=None)], created=T0)
    assert not path.exists()  # not an empty file that outlives restarts
    assert list(tmp_path.iterdir()) == []
    archive.write_blocks(path, [block(1), block(2)], created=T0)
    assert stored_ids(path) == [1, 2]
    assert archive.figures(tmp_path).blocks == 2


def test_a_failed_write_to_an_existing_file_changes_nothing(tmp_path: Path):
    path = archive.archive_path(tmp_path, T0)
    archive.write_blocks(path, [block(1)], created=T0)
    with pytest.raises(sqlite3.IntegrityError):
        archive.write_blocks(path, [block(2), block(3, blob=None)], created=T0)
    assert stored_ids(path) == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


async def test_leftovers_of_a_crash_are_removed_at_start(tmp_path: Path):
    directory = tmp_path / "archive"
    good = archive.archive_path(directory, T0)
    archive.write_blocks(good, [block(1)], created=T0)
    leftovers = [
        directory / "edgeopt-2023-12.sqlite.tmp",  # killed while building a new month
        directory / "edgeopt-2023-12.sqlite.tmp-journal",
        directory / "edgeopt-2024-01.sqlite",  # empty: made in place by an older version
        directory / "edgeopt-2024-01.sqlite-journal",
    ]
    for path in leftovers:
        path.write_bytes(b"" if path.suffix == ".sqlite" else b"partial")
    clock = VirtualClock(T0)
    store = await HotStore.open(tmp_path / "edgeopt.db", clock=clock)
    try:
        tiers = TierManager(store, clock=clock, archive_dir=directory)
        assert sorted(p.name for p in directory.iterdir()) == [good.name]
        assert archive.figures(directory).files == 1
        await tiers.close()
    finally:
        await store.close()
