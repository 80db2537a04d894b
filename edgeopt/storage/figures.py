"""Bytes and samples per tier and the database's size, for `status` and the metrics.

`measure_figures` reads every page (SQLite's dbstat), so the manager runs it
in a worker thread on its own read-only connection, and not too often.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.clock import Clock
from edgeopt.storage import archive

#: Up to this database size, figures are measured after every lifecycle run;
#: beyond it at most every FIGURES_BIG_EVERY seconds (a measurement reads every page).
FIGURES_SCAN_BYTES = 256 * 2**20
FIGURES_BIG_EVERY = 3600.0


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """The state database's size: live pages, free pages, WAL."""

    page_size: int
    pages: int
    free_pages: int
    wal_bytes: int

    @property
    def live_bytes(self) -> int:
        return (self.pages - self.free_pages) * self.page_size

    @property
    def file_bytes(self) -> int:
        return self.pages * self.page_size

    @property
    def budget_bytes(self) -> int:
        """What `max_disk` is compared with: live pages plus the WAL.

        Free pages are not counted: SQLite reuses them before growing the
        file, and without auto-vacuum they cannot be given back anyway, so
        counting them would drop data for no gain.
        """
        return self.live_bytes + self.wal_bytes


@dataclass(frozen=True, slots=True)
class TierFigures:
    """Bytes and samples per tier (see `TierManager.figures`)."""

    updated: float
    hot_bytes: int
    hot_samples: int
    warm_bytes: int
    warm_samples: int
    warm_chunks: int
    cold_bytes: int
    cold_samples: int  # raw samples the aggregates stand for
    cold_buckets: int
    cold_blocks: int
    archive_bytes: int
    archive_samples: int
    archive_files: int
    archive_blocks: int
    disk: DiskUsage
    max_disk: int | None
    codecs: dict[str, dict[str, int]]  # warm chunks by codec: chunks, samples, bytes
    exact: bool  # bytes per tier from SQLite's dbstat; False: estimated from blob sizes

    def to_dict(self) -> dict[str, Any]:
        """For `status` and the `edgeopt_storage_bytes{tier}` / `_samples{tier}` metrics."""
        hot_bps = _per(self.hot_bytes, self.hot_samples)
        warm_bps = _per(self.warm_bytes, self.warm_samples)
        return {
            "hot": {
                "bytes": self.hot_bytes,
                "samples": self.hot_samples,
                "bytes_per_sample": hot_bps,
            },
            "warm": {
                "bytes": self.warm_bytes,
                "samples": self.warm_samples,
                "chunks": self.warm_chunks,
                "bytes_per_sample": warm_bps,
                # How much smaller a sample gets when it leaves the hot tier.
                "compression_ratio": _ratio(hot_bps, warm_bps),
                # Against a raw (float64 ts, float64 value) pair, the reference
                # of the Gorilla paper's 1.37 B/point.
                "ratio_vs_16_bytes": _ratio(16.0, warm_bps),
                "codecs": self.codecs,
            },
            "cold": {
                "bytes": self.cold_bytes,
                "samples": self.cold_samples,
                "buckets": self.cold_buckets,
                "blocks": self.cold_blocks,
                "bytes_per_sample": _per(self.cold_bytes, self.cold_samples),
                "bytes_per_bucket": _per(self.cold_bytes, self.cold_buckets),
            },
            "archive": {
                "bytes": self.archive_bytes,
                "samples": self.archive_samples,
                "files": self.archive_files,
                "blocks": self.archive_blocks,
            },
            "disk": {
                "file_bytes": self.disk.file_bytes,
                "live_bytes": self.disk.live_bytes,
                "wal_bytes": self.disk.wal_bytes,
                "max_disk": self.max_disk,
            },
            "exact": self.exact,
            "updated": self.updated,
        }


def _per(num: int, den: int) -> float | None:
    return round(num / den, 3) if den else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def measure_figures(
    conn: sqlite3.Connection,
    db_path: Path,
    archive_dir: Path | None,
    *,
    clock: Clock,
    max_disk: int | None,
) -> TierFigures:
    """Measure every tier through `conn` (a read connection in autocommit mode), in one snapshot."""
    conn.execute("BEGIN")
    try:
        sizes, exact = _table_bytes(conn)
        (hot_samples,) = conn.execute("SELECT COUNT(*) FROM samples").fetchone()
        chunks, warm_samples, warm_blobs = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(count), 0), COALESCE(SUM(length(blob)), 0) FROM chunks"
        ).fetchone()
        blocks, cold_samples, buckets, cold_blobs = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(count), 0), COALESCE(SUM(buckets), 0), "
            "COALESCE(SUM(length(blob)), 0) FROM cold"
        ).fetchone()
        codec_rows = conn.execute(
            "SELECT codec, COUNT(*), SUM(count), SUM(length(blob)) FROM chunks "
            "GROUP BY codec ORDER BY SUM(count) DESC"
        ).fetchall()
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    finally:
        conn.execute("COMMIT")
    disk = DiskUsage(page_size, pages, free, file_size(Path(f"{db_path}-wal")))
    if exact:
        hot = sizes.get("samples", 0)
        warm = sum(sizes.get(n, 0) for n in ("chunks", "chunks_tag", "chunks_start"))
        cold = sum(sizes.get(n, 0) for n in ("cold", "cold_tag", "cold_start"))
    else:
        # Without dbstat: blobs plus ~40 bytes of row and index per chunk;
        # the hot tier is what remains of the live pages.
        warm = int(warm_blobs) + 40 * int(chunks)
        cold = int(cold_blobs) + 40 * int(blocks)
        hot = max(0, disk.live_bytes - warm - cold)
    arch = (
        archive.figures(archive_dir)
        if archive_dir is not None
        else archive.ArchiveFigures(0, 0, 0, 0)
    )
    return TierFigures(
        updated=clock.now(),
        hot_bytes=int(hot),
        hot_samples=int(hot_samples),
        warm_bytes=int(warm),
        warm_samples=int(warm_samples),
        warm_chunks=int(chunks),
        cold_bytes=int(cold),
        cold_samples=int(cold_samples),
        cold_buckets=int(buckets),
        cold_blocks=int(blocks),
        archive_bytes=arch.bytes,
        archive_samples=arch.samples,
        archive_files=arch.files,
        archive_blocks=arch.blocks,
        disk=disk,
        max_disk=max_disk,
        codecs={
            str(codec): {"chunks": int(n), "samples": int(s), "bytes": int(b)}
            for codec, n, s, b in codec_rows
        },
        exact=exact,
    )


def _table_bytes(conn: sqlite3.Connection) -> tuple[dict[str, int], bool]:
    """Bytes per table and index from the dbstat virtual table, if SQLite has it."""
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:  # built without SQLITE_ENABLE_DBSTAT_VTAB
        return {}, False
    return {str(name): int(size) for name, size in rows}, True


def file_size(path: Path) -> int:
    """Size of `path` in bytes; 0 if it does not exist."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
