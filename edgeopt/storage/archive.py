"""Archive files: cold blocks past `cold_retention`, one self-contained SQLite file per month.

`state_dir/archive/edgeopt-YYYY-MM.sqlite` holds every cold block whose
first bucket falls in that UTC month, with the names of their tags and a
`meta` table saying what the file is, so it can be copied off the gateway
and read on its own (docs/chunk-format.md, "Archive files", has the schema
and the blob format). The files use a rollback journal, not WAL, so each is
one file at rest, and `synchronous=FULL`: a block is on disk before the main
database deletes it.

A new month's file is built under a temporary name (`….sqlite.tmp`) and
renamed when complete, so a crash never leaves a half-made file under the
real name; later writes to it are transactions. `clean_leftovers()` removes
what a crash left behind, at start.

Plain blocking sqlite3; the tier manager calls these functions in a worker
thread. A block keeps its id from the main database's `cold` table, so
writing it twice (a retry after a crash between the two commits) replaces it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

#: `meta.format` of an archive file.
ARCHIVE_FORMAT = "edgeopt-archive"
#: `meta.version`: the layout of the tables below.
ARCHIVE_VERSION = 1
_PREFIX = "edgeopt-"
_SUFFIX = ".sqlite"
_TEMP = ".tmp"  # a new file under construction: edgeopt-YYYY-MM.sqlite.tmp

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS cold (
    id         INTEGER PRIMARY KEY,
    tag_id     INTEGER NOT NULL REFERENCES tags (id),
    start_ts   REAL    NOT NULL,
    end_ts     REAL    NOT NULL,
    count      INTEGER NOT NULL,
    buckets    INTEGER NOT NULL,
    resolution REAL    NOT NULL,
    codec      TEXT    NOT NULL,
    blob       BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS cold_tag ON cold (tag_id, start_ts);
"""


@dataclass(frozen=True, slots=True)
class Block:
    """One cold block (a row of `cold`), with its tag's name."""

    id: int
    tag_id: int
    tag: str
    start_ts: float
    end_ts: float
    count: int
    buckets: int
    resolution: float
    codec: str
    blob: bytes


def month_of(ts: float) -> str:
    """The UTC month of an epoch time, "YYYY-MM"."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m")


def archive_path(directory: Path, ts: float) -> Path:
    """The archive file that holds blocks starting at `ts`."""
    return directory / f"{_PREFIX}{month_of(ts)}{_SUFFIX}"


def archive_files(directory: Path) -> list[Path]:
    """Every archive file in `directory`, oldest month first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f"{_PREFIX}*{_SUFFIX}") if p.is_file())


def _month_name(path: Path) -> str:
    """ "YYYY-MM" from an archive file's name (or its temporary name)."""
    name = path.name.removesuffix(_TEMP)
    return name[len(_PREFIX) : -len(_SUFFIX)]


def _month_range(path: Path) -> tuple[float, float] | None:
    """Epoch bounds [start, end) of the month a file is named after."""
    name = path.name[len(_PREFIX) : -len(_SUFFIX)]
    try:
        start = datetime.strptime(name, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        return None
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start.timestamp(), end.timestamp()


@contextlib.contextmanager
def _open(path: Path, *, write: bool) -> Iterator[sqlite3.Connection]:
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    else:
        # Read-write but never create: a reader may have to roll back the hot
        # journal a crash mid-write left behind, which read-only cannot.
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None, timeout=5.0)
    try:
        if write:
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=FULL")
        yield conn
    finally:
        conn.close()


def write_blocks(path: Path, blocks: Sequence[Block], *, created: float) -> None:
    """Insert (or replace, by id) `blocks` into the archive file at `path`, durably.

    One transaction; when it returns, the blocks are on disk. A file that does
    not exist yet appears under its name only once complete.
    """
    if not blocks:
        return
    if path.exists():
        _write(path, blocks, created)  # the rollback journal makes this all or nothing
        return
    temp = path.with_name(path.name + _TEMP)
    _remove(temp)  # an earlier attempt's
    try:
        _write(temp, blocks, created)
        os.replace(temp, path)
    except BaseException:
        _remove(temp)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a power cut


def clean_leftovers(directory: Path) -> list[Path]:
    """Remove what a crash mid-write left: temporary files, and empty archive files
    (from versions that created the file in place). Returns the removed paths."""
    if not directory.is_dir():
        return []
    removed: list[Path] = []
    for path in sorted(directory.glob(f"{_PREFIX}*{_SUFFIX}*")):
        name = path.name
        temporary = name.endswith(_SUFFIX + _TEMP) or name.endswith(_SUFFIX + _TEMP + "-journal")
        try:
            empty = name.endswith(_SUFFIX) and path.is_file() and path.stat().st_size == 0
        except OSError:
            continue
        if not (temporary or empty):
            continue
        for victim in (path, path.with_name(name + "-journal")) if empty else (path,):
            if _remove(victim):
                removed.append(victim)
    if removed:
        log.info(
            "archive: removed %d files a crash left behind: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, blocks: Sequence[Block], created: float) -> None:
    with _open(path, write=True) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # executescript() would COMMIT first: run the statements one by one.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("format", ARCHIVE_FORMAT),
                    ("version", str(ARCHIVE_VERSION)),
                    ("month", _month_name(path)),
                    ("created", repr(created)),
                    ("blob_format", "edgeopt chunk format 1, see docs/chunk-format.md"),
                ],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO tags (id, name) VALUES (?, ?)",
                sorted({(b.tag_id, b.tag) for b in blocks}),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO cold (id, tag_id, start_ts, end_ts, count, buckets, "
                "resolution, codec, blob) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        b.id,
                        b.tag_id,
                        b.start_ts,
                        b.end_ts,
                        b.count,
                        b.buckets,
                        b.resolution,
                        b.codec,
                        b.blob,
                    )
                    for b in blocks
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def read_blocks(
    directory: Path, tag: str, since: float | None = None, until: float | None = None
) -> list[Block]:
    """The archived blocks of `tag` overlapping [since, until], oldest first."""
    lo = float("-inf") if since is None else since
    hi = float("inf") if until is None else until
    out: list[Block] = []
    for path in archive_files(directory):
        bounds = _month_range(path)
        # A block lies within its month; skip files that cannot overlap.
        if bounds is not None and (bounds[1] <= lo or bounds[0] > hi):
            continue
        try:
            with _open(path, write=False) as conn:
                rows = conn.execute(
                    "SELECT c.id, c.tag_id, t.name, c.start_ts, c.end_ts, c.count, c.buckets, "
                    "c.resolution, c.codec, c.blob "
                    "FROM cold AS c JOIN tags AS t ON t.id = c.tag_id "
                    "WHERE t.name = ? AND c.end_ts > ? AND c.start_ts <= ? ORDER BY c.start_ts",
                    (tag, lo, hi),
                ).fetchall()
        except sqlite3.Error:
            continue  # a file being written for the first time, or not ours
        out.extend(Block(*row) for row in rows)
    return out


@dataclass(frozen=True, slots=True)
class ArchiveFigures:
    """Size and content of the archive directory."""

    files: int
    bytes: int
    samples: int  # raw samples the archived aggregates stand for
    blocks: int


def figures(directory: Path) -> ArchiveFigures:
    """Count the archive's files, bytes, blocks and samples (opens each file)."""
    files = archive_files(directory)
    size = samples = blocks = 0
    for path in files:
        size += path.stat().st_size
        try:
            with _open(path, write=False) as conn:
                n, total = conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(count), 0) FROM cold"
                ).fetchone()
        except sqlite3.Error:
            continue
        blocks += int(n)
        samples += int(total)
    return ArchiveFigures(len(files), size, samples, blocks)
