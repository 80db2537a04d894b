"""The storage codec worker: the numpy work of the tier moves and queries, in a process of its own.

Run as `python -m edgeopt.storage.codec_worker`; the daemon talks to it
through `edgeopt.storage.codec_client.CodecClient`. Each request is a pure
function of plain data: hot rows to chunks (`encode_hot`), a tag-day of
chunks to a block of aggregates (`aggregate`), a query's chunks and blocks to
points and buckets (`decode`), or to the whole `QueryResult` when it is
bucketed by a resolution (`build_result`). Replies are plain Python (lists,
floats, the dataclasses of `codec_client` and `query`), never numpy objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from edgeopt.storage.aggregates import Aggregates, aggregate_points, concat, rebucket
from edgeopt.storage.aggregates import aggregate as aggregate_columns
from edgeopt.storage.chunks import (
    ALL_COMPRESSORS,
    Rows,
    decode_aggregates,
    decode_samples,
    encode_aggregates,
    encode_samples,
)
from edgeopt.storage.codec_client import ColdBlock, HotRecord, WarmChunk
from edgeopt.storage.codecs import Compressor
from edgeopt.storage.moves import MAX_CHUNK_SAMPLES
from edgeopt.storage.query import (
    AggregatePoint,
    ChunkRow,
    Decoded,
    Point,
    QueryResult,
    TierData,
    merge_points,
    merge_result,
    tiers_found,
)
from edgeopt.storage.schema import SampleValue, ValueKind
from edgeopt.storage.swinging_door import keep_mask
from edgeopt.worker import main

# --- hot → warm ----------------------------------------------------------------------


def encode_hot(
    records: Sequence[HotRecord],
    deviations: Mapping[int, float],
    compressors: Sequence[int] | None,
) -> list[WarmChunk]:
    """Chunks of hot rows `(tag_id, ts, value, quality, kind)`, tag by tag (ascending ids).

    Each tag's rows are cut as its own moves would: ascending by ts, the
    oldest MAX_CHUNK_SAMPLES first. Tags in `deviations` are thinned by
    swinging door first.
    """
    methods = _compressors(compressors)
    by_tag: dict[int, list[tuple[float, object, int, int]]] = {}
    for tag_id, ts, value, quality, kind in records:
        by_tag.setdefault(tag_id, []).append((ts, value, quality, kind))
    out: list[WarmChunk] = []
    for tag_id in sorted(by_tag):
        rows = _by_ts(Rows.from_records(by_tag[tag_id]))
        deviation = deviations.get(tag_id)
        for i in range(0, len(rows), MAX_CHUNK_SAMPLES):
            piece = rows
            if len(rows) > MAX_CHUNK_SAMPLES:
                piece = rows.take(np.arange(i, min(i + MAX_CHUNK_SAMPLES, len(rows))))
            out.append(_encode_piece(tag_id, piece, deviation, methods))
    return out


def _encode_piece(
    tag_id: int, rows: Rows, deviation: float | None, compressors: Sequence[Compressor]
) -> WarmChunk:
    n = len(rows)
    if deviation is not None:
        mask, floats = rows.numeric()
        # Bools and NaN markers are states, not measurements: never thinned.
        eligible = mask & (rows.kind == ValueKind.NATIVE)
        group = rows.quality.astype(np.int64) * 256 + rows.kind
        keep = keep_mask(rows.ts, floats, eligible, group, deviation)
        if not keep.all():
            rows = rows.take(np.flatnonzero(keep))
    e = encode_samples(rows, compressors=compressors)
    return WarmChunk(tag_id, e.start, e.end, e.count, e.codec, e.blob, n)


def _by_ts(rows: Rows) -> Rows:
    """`rows` ascending by ts (they nearly always are already)."""
    if len(rows) > 1 and not bool((np.diff(rows.ts) > 0).all()):
        return rows.take(np.argsort(rows.ts, kind="stable"))
    return rows


def _compressors(ids: Sequence[int] | None) -> tuple[Compressor, ...]:
    return ALL_COMPRESSORS if ids is None else tuple(Compressor(i) for i in ids)


# --- warm → cold ---------------------------------------------------------------------


def aggregate(
    blobs: Sequence[bytes], resolution: float, compressors: Sequence[int] | None
) -> ColdBlock:
    """One block of `resolution` s aggregates of the samples chunks `blobs` (one tag's)."""
    ts_parts, float_parts, mask_parts = [], [], []
    for blob in blobs:
        rows = decode_samples(blob)
        mask, floats = rows.numeric()
        ts_parts.append(rows.ts)
        float_parts.append(floats)
        mask_parts.append(mask)
    ts = np.concatenate(ts_parts)
    agg = aggregate_columns(ts, np.concatenate(float_parts), np.concatenate(mask_parts), resolution)
    e = encode_aggregates(agg, compressors=_compressors(compressors))
    return ColdBlock(e.start, e.end, int(ts.size), e.count, e.codec, e.blob)


# --- queries -------------------------------------------------------------------------


def decode(data: TierData) -> Decoded:
    """The points of `data`'s warm chunks and the buckets of its cold and archive blocks."""
    warm, aggs, tiers = _decode(data)
    return Decoded(warm, _aggregate_points(aggs) if aggs is not None else [], tiers)


def build_result(
    tag: str,
    data: TierData,
    pending: dict[float, SampleValue],
    resolution: float | None = None,
    limit: int | None = None,
) -> QueryResult:
    """Decode and merge one tag's tier data (and unflushed samples) into a `QueryResult`.

    With `resolution`, every point is the mean of a bucket of that width. The
    merging rules are in `edgeopt.storage.query`'s docstring.
    """
    if resolution is None:
        return merge_result(tag, data, decode(data), pending, limit)
    if resolution <= 0:
        raise ValueError(f"resolution must be > 0 seconds, got {resolution}")
    warm, aggs, tiers = _decode(data)
    raw = merge_points(warm, data.hot, sorted(pending.items()))
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
    return QueryResult(tag, points, tiers_found(data, pending, tiers), buckets, resolution)


def _decode(data: TierData) -> tuple[list[Point], Aggregates | None, list[str]]:
    """Warm points, cold and archive aggregates merged, and the tiers that had data."""
    lo, hi = data.lo, data.hi
    warm = _warm_points(data.warm, lo, hi)
    cold = [_clip(decode_aggregates(blob), lo, hi) for blob in data.cold]
    archived = [_clip(decode_aggregates(blob), lo, hi) for blob in data.archive]
    found = {
        "warm": bool(warm),
        "cold": any(len(a) for a in cold),
        "archive": any(len(a) for a in archived),
    }
    tiers = [tier for tier, has in found.items() if has]
    return warm, _merged_aggregates([*archived, *cold]), tiers


def _warm_points(chunks: Sequence[ChunkRow], lo: float, hi: float) -> list[Point]:
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


#: The requests the worker answers, by name.
HANDLERS: dict[str, Callable[..., Any]] = {
    "encode_hot": encode_hot,
    "aggregate": aggregate,
    "decode": decode,
    "build_result": build_result,
}

if __name__ == "__main__":
    # Served by the module under its own name (not `__main__`), as the daemon
    # and tracebacks know it.
    from edgeopt.storage.codec_worker import HANDLERS as _HANDLERS

    main(_HANDLERS)
