"""Queries across tiers: raw points where they exist (hot, warm), aggregates beyond (cold, archive).

`read_tiers` reads one tag's range from every tier inside one read
transaction, so a tier move committed meanwhile cannot hide a sample. (A move
committed just before can at worst show a sample twice; the merge keeps one.)
It is blocking: the tier manager runs it in a thread on its own read-only
connection. It decodes the hot rows only: the storage codec worker decodes
the warm chunks and cold blocks (`edgeopt.storage.codec_worker.decode`), so
the daemon never imports numpy, and `merge_result` merges the lot here. A
query with a `resolution` buckets raw points, which needs numpy: the worker
builds the whole result then (`codec_worker.build_result`).

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
from dataclasses import asdict, dataclass, field, fields
from operator import attrgetter
from pathlib import Path
from typing import Any

from edgeopt.storage import archive
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

    def __reduce__(self) -> tuple[Any, ...]:
        # A codec worker's reply: buckets go as plain tuples (see `_pack`).
        args = (self.tag, self.points, self.tiers, _pack(self.aggregates), self.resolution)
        return (_unpickle_result, args)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A range's chunks and blocks, decoded by the codec worker (`codec_worker.decode`)."""

    warm: list[Point]  # ascending, one per ts, within the range
    buckets: list[AggregatePoint]  # cold and archive merged, ascending, overlapping the range
    tiers: list[str]  # which of "warm", "cold", "archive" had data in the range

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unpickle_decoded, (self.warm, _pack(self.buckets), self.tiers))


_bucket_fields = attrgetter(*(f.name for f in fields(AggregatePoint)))


def _pack(buckets: list[AggregatePoint]) -> list[Any]:
    # As plain tuples a day of 1 min buckets pickles and loads in 5 ms, as
    # objects in 30 (each runs the dataclass's __getstate__ and __setstate__).
    return [_bucket_fields(b) for b in buckets]


def _unpack(rows: list[Any]) -> list[AggregatePoint]:
    return [AggregatePoint(*r) for r in rows]


def _unpickle_result(
    tag: str, points: list[Point], tiers: list[str], rows: list[Any], resolution: float | None
) -> QueryResult:
    return QueryResult(tag, points, tiers, _unpack(rows), resolution)


def _unpickle_decoded(warm: list[Point], rows: list[Any], tiers: list[str]) -> Decoded:
    return Decoded(warm, _unpack(rows), tiers)


#: A warm chunk as read: `(id, start_ts, end_ts, blob)`.
ChunkRow = tuple[int, float, float, bytes]


@dataclass(slots=True)
class TierData:
    """One tag's range [lo, hi] as read from each tier, before decoding and merging."""

    lo: float
    hi: float
    hot: list[Point] = field(default_factory=list)
    warm: list[ChunkRow] = field(default_factory=list)  # ordered by start_ts, id
    cold: list[bytes] = field(default_factory=list)  # aggregate blocks
    archive: list[bytes] = field(default_factory=list)  # blocks not also in `cold`

    @property
    def encoded(self) -> bool:
        """Whether any of it is encoded (chunks, blocks), which only the codec worker reads."""
        return bool(self.warm or self.cold or self.archive)

    def without_hot(self) -> TierData:
        """The encoded part alone (what the codec worker decodes; the hot rows stay here)."""
        return TierData(self.lo, self.hi, [], self.warm, self.cold, self.archive)


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
    out = TierData(lo, hi)
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
            out.warm = conn.execute(_WARM_SQL, (tag_id, lo - chunk_span, hi, lo)).fetchall()
            for block_id, blob in conn.execute(_COLD_SQL, (tag_id, lo - block_span, hi, lo)):
                cold_ids.add(int(block_id))
                out.cold.append(blob)
    finally:
        conn.execute("COMMIT")
    if archive_dir is not None:
        for block in archive.read_blocks(archive_dir, tag, since, until):
            if block.id not in cold_ids:  # copied but not yet deleted from the cold tier
                out.archive.append(block.blob)
    return out


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


def tiers_found(
    data: TierData, pending: dict[float, SampleValue], decoded: Sequence[str]
) -> list[str]:
    """The tiers that had data: hot (or unflushed samples) and those `decoded` names."""
    found = {*decoded, "hot"} if data.hot or pending else set(decoded)
    return [t for t in TIERS if t in found]


def merge_result(
    tag: str,
    data: TierData,
    decoded: Decoded | None,
    pending: dict[float, SampleValue],
    limit: int | None,
) -> QueryResult:
    """One tag's hot rows, decoded chunks and blocks, and unflushed samples, as a `QueryResult`.

    `decoded` is None when `data` holds nothing encoded. Raw points where they
    exist, `(bucket start, mean)` beyond; `limit` keeps the oldest points.
    """
    if decoded is None:
        decoded = Decoded([], [], [])
    raw = merge_points(decoded.warm, data.hot, sorted(pending.items()))
    buckets = decoded.buckets
    points = merge_points([(b.ts, b.mean) for b in buckets], raw) if buckets else raw
    if limit is not None:
        del points[limit:]
        if buckets:
            last = points[-1][0] if points else -math.inf
            buckets = [b for b in buckets if b.ts <= last]
    return QueryResult(tag, points, tiers_found(data, pending, decoded.tiers), buckets, None)
