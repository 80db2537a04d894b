"""Downsampled aggregates of the cold tier: per time bucket, count, min, max, mean and last.

Pure functions over arrays. `aggregate` summarises one tag's raw rows when they
leave the warm tier; `rebucket` merges aggregates into coarser buckets (and
merges two partial aggregates of the same bucket) for queries.

A bucket starts at a multiple of its resolution (epoch-aligned, so 1 min
buckets start on the minute). `count` counts every stored sample in the
bucket; min, max, mean and last cover only its numeric values (integers,
floats and bools as 0/1; not NaN, strings or missing values), `numeric` says
how many there were, and they are NaN when there were none. The mean is the
plain mean of the stored samples, not time-weighted: with on-change storage a
value held for an hour and one held for a second weigh the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Aggregates:
    """Aggregates of one tag, one row per non-empty bucket, ascending by `start`."""

    resolution: float  # bucket width, seconds
    start: F64  # bucket start, epoch seconds
    count: I64  # samples in the bucket
    numeric: I64  # samples with a numeric value (what min/max/mean/last cover)
    min: F64
    max: F64
    mean: F64
    last: F64  # the last numeric value in the bucket

    def __len__(self) -> int:
        return int(self.start.size)

    @property
    def samples(self) -> int:
        """Raw samples these aggregates stand for."""
        return int(self.count.sum())

    @classmethod
    def empty(cls, resolution: float) -> Aggregates:
        f, i = np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
        return cls(resolution, f, i, i, f, f, f, f)

    def rows(self) -> list[tuple[float, int, int, float, float, float, float]]:
        """Plain Python rows `(start, count, numeric, min, max, mean, last)`."""
        return list(
            zip(
                self.start.tolist(),
                self.count.tolist(),
                self.numeric.tolist(),
                self.min.tolist(),
                self.max.tolist(),
                self.mean.tolist(),
                self.last.tolist(),
                strict=True,
            )
        )


def numeric_values(values: Sequence[object]) -> tuple[npt.NDArray[np.bool_], F64]:
    """`(mask, floats)`: which values are numbers (bools count as 0/1), and their values."""
    if not any(isinstance(v, str) for v in values):
        try:
            # Fast path: numpy turns None into NaN, and NaN is not a number here.
            floats = np.array(values, dtype=np.float64)
        except (OverflowError, TypeError, ValueError):
            pass
        else:
            if floats.shape == (len(values),):
                return ~np.isnan(floats), floats
    n = len(values)
    mask = np.zeros(n, dtype=np.bool_)
    out = np.full(n, math.nan, dtype=np.float64)
    for i, value in enumerate(values):
        if isinstance(value, int | float):
            try:
                f = float(value)
            except OverflowError:  # an integer beyond float range
                continue
            if f == f:  # not NaN
                mask[i] = True
                out[i] = f
    return mask, out


def aggregate_points(ts: F64, values: Sequence[object], resolution: float) -> Aggregates:
    """Aggregate raw `(ts, value)` columns into buckets of `resolution` seconds."""
    mask, floats = numeric_values(values)
    return aggregate(ts, floats, mask, resolution)


def aggregate(ts: F64, floats: F64, mask: npt.NDArray[np.bool_], resolution: float) -> Aggregates:
    """Aggregate points into buckets of `resolution` seconds.

    `floats[i]` is point i's numeric value where `mask[i]`; the other points
    only count. The points may come in any order.
    """
    if resolution <= 0:
        raise ValueError(f"resolution must be > 0, got {resolution}")
    ts = np.asarray(ts, dtype=np.float64)
    if ts.size == 0:
        return Aggregates.empty(resolution)
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    mask, floats = np.asarray(mask)[order], np.asarray(floats, dtype=np.float64)[order]
    mask = mask & ~np.isnan(floats)
    buckets = np.floor(ts / resolution).astype(np.int64)
    ids, counts = np.unique(buckets, return_counts=True)
    size = ids.size
    numeric = np.zeros(size, dtype=np.int64)
    lo = np.full(size, math.nan)
    hi = np.full(size, math.nan)
    mean = np.full(size, math.nan)
    last = np.full(size, math.nan)
    if mask.any():
        vb, vv = buckets[mask], floats[mask]
        vids, vstart, vcount = np.unique(vb, return_index=True, return_counts=True)
        at = np.searchsorted(ids, vids)
        numeric[at] = vcount
        lo[at] = np.minimum.reduceat(vv, vstart)
        hi[at] = np.maximum.reduceat(vv, vstart)
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is NaN, fine
            mean[at] = np.add.reduceat(vv, vstart) / vcount
        last[at] = vv[vstart + vcount - 1]
    return Aggregates(
        resolution,
        ids.astype(np.float64) * resolution,
        counts.astype(np.int64),
        numeric,
        lo,
        hi,
        mean,
        last,
    )


def concat(parts: Sequence[Aggregates], resolution: float | None = None) -> Aggregates:
    """Aggregates of several blocks, in the given order (no merging)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Aggregates.empty(resolution or 0.0)
    return Aggregates(
        resolution if resolution is not None else max(p.resolution for p in parts),
        np.concatenate([p.start for p in parts]),
        np.concatenate([p.count for p in parts]),
        np.concatenate([p.numeric for p in parts]),
        np.concatenate([p.min for p in parts]),
        np.concatenate([p.max for p in parts]),
        np.concatenate([p.mean for p in parts]),
        np.concatenate([p.last for p in parts]),
    )


def rebucket(agg: Aggregates, resolution: float) -> Aggregates:
    """Merge aggregates into buckets of `resolution` seconds (at least `agg.resolution`).

    Rows falling into the same new bucket combine: counts add, min of mins,
    max of maxes, the mean weighted by `numeric`, and the last numeric value
    of the latest row that had one. Also merges partial aggregates of one
    bucket (e.g. from a late sample) when `resolution == agg.resolution`.
    """
    if len(agg) == 0:
        return Aggregates.empty(resolution)
    resolution = max(resolution, agg.resolution)
    order = np.argsort(agg.start, kind="stable")
    start = agg.start[order]
    buckets = np.floor(start / resolution).astype(np.int64)
    ids, first = np.unique(buckets, return_index=True)
    count = np.add.reduceat(agg.count[order], first)
    numeric = np.add.reduceat(agg.numeric[order], first)
    has = agg.numeric[order] > 0
    # NaN-aware min/max: rows without numbers hold NaN; replace them by ±inf.
    lo = np.minimum.reduceat(np.where(has, agg.min[order], np.inf), first)
    hi = np.maximum.reduceat(np.where(has, agg.max[order], -np.inf), first)
    weighted = np.where(has, agg.mean[order] * agg.numeric[order], 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = np.add.reduceat(weighted, first) / numeric
    # Last: the value of the last row with numbers in each group.
    index = np.where(has, np.arange(start.size), -1)
    last_row = np.maximum.reduceat(index, first)
    last = np.where(last_row >= 0, agg.last[order][np.maximum(last_row, 0)], math.nan)
    none = numeric == 0
    lo[none] = hi[none] = mean[none] = math.nan
    return Aggregates(
        resolution,
        ids.astype(np.float64) * resolution,
        count.astype(np.int64),
        numeric.astype(np.int64),
        lo,
        hi,
        mean,
        last,
    )
