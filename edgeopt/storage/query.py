"""Queries across tiers: raw points where they exist (hot, warm), aggregates beyond (cold, archive).

`read_tiers` reads one tag's range from every tier inside one read
transaction, so a tier move committed meanwhile cannot hide a sample. (A move
committed just before can at worst show a sample twice; the merge keeps one.)
It is blocking: the tier manager runs it in a worker thread on its own
read-only connection. `build_result` merges what it read into a
`QueryResult`, pure.

Merging rules:
- raw points: one per timestamp; the hot tier (and samples not yet flushed)
  win over warm chunks, as the newest write does in the hot tier itself;
- aggregates: a block in both the cold tier and an archive file (copied, not
  yet deleted) counts once; two partial aggregates of the same bucket (from a
  sample that arrived late) merge;
- with `resolution`, raw points are aggregated into buckets of that width
  and merged with the cold aggregates, and every point is a bucket's mean.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.storage import archive
from edgeopt.storage.aggregates import Aggregates, aggregate_points, concat, rebucket
from edgeopt.storage.chunks import decode_aggregates, decode_samples
from edgeopt.storage.hot import QUERY_TAG_SQL
from edgeopt.storage.schema import SampleValue, bucket_of, decode_value

Point = tuple[float, SampleValue]

#: The tiers, youngest first: the order of `QueryResult.tiers`.
TIERS = ("hot", "warm", "cold", "archive")


@dataclass(frozen=True, slots=True)
class AggregatePoint:
    """One bucket of aggregates in a query result."""

    ts: float  # bucket start
    resolution: float  # bucket width, seconds
    count: int  # samples in the bucket
    numeric: int  # of which numeric (what min/max/mean/last cover)
    min: float
    max: float
    mean: float
    last: float


@dataclass(frozen=True, slots=True)
class QueryResult:
    """What `TierManager.query` returns.

    `points` are ascending `(ts, value)`: raw samples, and for ranges only
    aggregates cover (or with `resolution`), `(bucket start, mean)`.
    `aggregates` details those buckets. `tiers` names the tiers that had data.
    """

    tag: str
    points: list[Point]
    tiers: list[str]
    aggregates: list[AggregatePoint] = field(default_factory=list)
    resolution: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The control socket's `query` result (CONTRACT.md), plus `aggregates`."""
        return {
            "tag": self.tag,
            "points": [[ts, value] for ts, value in self.points],
            "tiers": list(self.tiers),
            "resolution": self.resolution,
            "aggregates": [asdict(a) for a in self.aggregates],
        }


@dataclass(slots=True)
class TierData:
    """One tag's range as read from each tier, before merging."""

    hot: list[Point] = field(default_factory=list)
    warm: list[Point] = field(default_factory=list)
    cold: list[Aggregates] = field(default_factory=list)
    archive: list[Aggregates] = field(default_factory=list)


_WARM_SQL = (
    "SELECT id, start_ts, end_ts, blob FROM chunks "
    "WHERE tag_id = ? AND start_ts >= ? AND start_ts <= ? AND end_ts >= ? ORDER BY start_ts, id"
)
_COLD_SQL = (
    "SELECT id, blob FROM cold WHERE tag_id = ? AND start_ts >= ? AND start_ts <= ? "
    "AND end_ts > ? ORDER BY start_ts, id"
)


def read_tiers(
    conn: sqlite3.Connection,
    archive_dir: Path | None,
    tag: str,
    since: float | None,
    until: float | None,
    *,
    chunk_span: float,
    block_span: float,
) -> TierData:
    """Read `tag`'s data in [since, until] from every tier (blocking).

    `chunk_span` and `block_span` bound how far before `since` a warm chunk
    or cold block may start and still reach into the range.
    """
    lo = -math.inf if since is None else since
    hi = math.inf if until is None else until
    out = TierData()
    cold_ids: set[int] = set()
    conn.execute("BEGIN")
    try:
        found = conn.execute("SELECT id FROM tags WHERE name = ?", (tag,)).fetchone()
        if found is not None:
            tag_id = int(found[0])
            rows = conn.execute(
                QUERY_TAG_SQL,
                (
                    None if since is None else bucket_of(since),
                    None if until is None else bucket_of(until),
                    tag_id,
                    lo,
                    hi,
                    -1,
                ),
            ).fetchall()
            # Rows come ascending by ts, one per ts (QUERY_TAG_SQL).
            if any(kind for _, _, kind in rows):
                out.hot = [
                    (ts, value if kind == 0 else decode_value(value, kind))
                    for ts, value, kind in rows
                ]
            else:
                out.hot = [(ts, value) for ts, value, _ in rows]
            out.warm = _warm_points(
                conn.execute(_WARM_SQL, (tag_id, lo - chunk_span, hi, lo)).fetchall(), lo, hi
            )
            for block_id, blob in conn.execute(_COLD_SQL, (tag_id, lo - block_span, hi, lo)):
                cold_ids.add(int(block_id))
                out.cold.append(_clip(decode_aggregates(blob), lo, hi))
    finally:
        conn.execute("COMMIT")
    if archive_dir is not None:
        for block in archive.read_blocks(archive_dir, tag, since, until):
            if block.id not in cold_ids:  # copied but not yet deleted from the cold tier
                out.archive.append(_clip(decode_aggregates(block.blob), lo, hi))
    return out


def _warm_points(
    chunks: list[tuple[int, float, float, bytes]], lo: float, hi: float
) -> list[Point]:
    """Points of the chunks (ordered by start), ascending and one per ts."""
    out: list[Point] = []
    overlap = False
    previous_end = -math.inf
    for _, start, end, blob in chunks:
        overlap = overlap or start <= previous_end
        previous_end = max(previous_end, end)
        out.extend(_chunk_points(blob, lo, hi))
    if not overlap:
        return out  # each chunk is ascending with unique ts, and they follow each other
    # A chunk written later (a late sample) overlaps an earlier one: the
    # newer chunk (higher id) wins for equal ts, as a newer write does in hot.
    by_ts: dict[float, SampleValue] = {}
    for _, _, _, blob in sorted(chunks, key=lambda c: c[0]):
        by_ts.update(_chunk_points(blob, lo, hi))
    return sorted(by_ts.items())


def _chunk_points(blob: bytes, lo: float, hi: float) -> list[Point]:
    rows = decode_samples(blob)
    ts = rows.ts
    inside = (ts >= lo) & (ts <= hi)
    if not inside.all():
        rows = rows.take(np.flatnonzero(inside))
    return list(zip(rows.ts.tolist(), rows.decoded(), strict=True))  # type: ignore[arg-type]


def _clip(agg: Aggregates, lo: float, hi: float) -> Aggregates:
    """The buckets of `agg` overlapping [lo, hi]."""
    inside = (agg.start + agg.resolution > lo) & (agg.start <= hi)
    if inside.all():
        return agg
    idx = np.flatnonzero(inside)
    return Aggregates(
        agg.resolution,
        agg.start[idx],
        agg.count[idx],
        agg.numeric[idx],
        agg.min[idx],
        agg.max[idx],
        agg.mean[idx],
        agg.last[idx],
    )


def merge_points(*parts: Sequence[Point]) -> list[Point]:
    """Merge parts that are each ascending with one point per ts; for equal ts the later wins.

    The tiers hold disjoint, consecutive ranges almost always, so the parts are
    just concatenated when each starts after the previous one ends.
    """
    parts = tuple(p for p in parts if p)
    if not parts:
        return []
    if all(a[-1][0] < b[0][0] for a, b in itertools.pairwise(parts)):
        out: list[Point] = []
        for part in parts:
            out.extend(part)
        return out
    by_ts: dict[float, SampleValue] = {}
    for part in parts:
        by_ts.update(part)
    return sorted(by_ts.items())


def _merged_aggregates(parts: Sequence[Aggregates]) -> Aggregates | None:
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    resolution = max(p.resolution for p in parts)
    return rebucket(concat(parts, resolution), resolution)


def _aggregate_points(agg: Aggregates) -> list[AggregatePoint]:
    return [
        AggregatePoint(start, agg.resolution, count, numeric, lo, hi, mean, last)
        for start, count, numeric, lo, hi, mean, last in agg.rows()
    ]


def build_result(
    tag: str,
    data: TierData,
    pending: dict[float, SampleValue],
    *,
    resolution: float | None = None,
    limit: int | None = None,
) -> QueryResult:
    """Merge one tag's tier data (and unflushed samples) into a `QueryResult`."""
    tiers = [
        name
        for name, has in zip(
            TIERS,
            (
                bool(data.hot or pending),
                bool(data.warm),
                any(len(a) for a in data.cold),
                any(len(a) for a in data.archive),
            ),
            strict=True,
        )
        if has
    ]
    raw = merge_points(data.warm, data.hot, sorted(pending.items()))
    aggs = _merged_aggregates([*data.archive, *data.cold])
    if resolution is not None:
        if resolution <= 0:
            raise ValueError(f"resolution must be > 0 seconds, got {resolution}")
        # Raw points go into buckets of `resolution`; cold aggregates cannot be
        # split, so a coarser cold resolution stays as it is. Buckets of equal
        # width and start merge.
        by_width: dict[float, list[Aggregates]] = {}
        if raw:
            ts = np.fromiter((p[0] for p in raw), dtype=np.float64, count=len(raw))
            by_width.setdefault(resolution, []).append(
                aggregate_points(ts, [p[1] for p in raw], resolution)
            )
        if aggs is not None:
            width = max(resolution, aggs.resolution)
            by_width.setdefault(width, []).append(rebucket(aggs, width))
        buckets = sorted(
            (
                b
                for width, group in by_width.items()
                for b in _aggregate_points(rebucket(concat(group, width), width))
            ),
            key=lambda b: b.ts,
        )
        points: list[Point] = [(b.ts, b.mean) for b in buckets]
        if limit is not None:
            del points[limit:]
            del buckets[limit:]
        return QueryResult(tag, points, tiers, buckets, resolution)
    buckets = _aggregate_points(aggs) if aggs is not None else []
    points = merge_points([(b.ts, b.mean) for b in buckets], raw) if buckets else raw
    if limit is not None:
        del points[limit:]
        if buckets:
            last = points[-1][0] if points else -math.inf
            buckets = [b for b in buckets if b.ts <= last]
    return QueryResult(tag, points, tiers, buckets, None)
