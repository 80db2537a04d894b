"""Swinging-door compression: the optional lossy mode of a tag, with a guaranteed error bound.

Historians such as PI keep a point only when a straight line from the last
kept point can no longer pass within `deviation` of every point since. This
is that filter, in the strict form: a point is dropped only if the line
between the kept points on either side of it passes within `deviation` of it.
So every original point lies within `deviation` of the linear interpolation
of the kept points, which the tests check on random series.

The "doors" are the range of slopes [low, high] that a line from the last
kept point A may take while staying within `deviation` of every point seen
since. Each new point narrows them. A point P may end the segment (be the
next kept point) only if the slope from A to P lies between the doors; when
it does not, the previous point, which did, is kept and becomes the new A.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

#: The bound is enforced with this much relative headroom, so rounding in the
#: slope arithmetic (and in a reader's interpolation) cannot push a point past it.
_HEADROOM = 1e-9


def swinging_door(
    ts: Sequence[float] | npt.NDArray[np.float64],
    values: Sequence[float] | npt.NDArray[np.float64],
    deviation: float,
) -> npt.NDArray[np.intp]:
    """Indices of the points to keep (ascending; the first and last are always kept).

    `ts` must be strictly increasing and `values` finite; callers split a
    series at anything else (see `keep_mask`).
    """
    if deviation < 0 or not math.isfinite(deviation):
        raise ValueError(f"deviation must be a finite number >= 0, got {deviation}")
    t = np.asarray(ts, dtype=np.float64).tolist()
    v = np.asarray(values, dtype=np.float64).tolist()
    n = len(t)
    if n <= 2:
        return np.arange(n, dtype=np.intp)
    limit = deviation * (1 - _HEADROOM)
    keep = [0]
    a_t, a_v = t[0], v[0]
    low, high = -math.inf, math.inf  # doors: slopes allowed from A so far
    for i in range(1, n):
        dt = t[i] - a_t
        slope = (v[i] - a_v) / dt
        if not low <= slope <= high:
            # P cannot end the segment: keep the previous point (which could)
            # and start again from it.
            prev = i - 1
            keep.append(prev)
            a_t, a_v = t[prev], v[prev]
            low, high = -math.inf, math.inf
            dt = t[i] - a_t
            slope = (v[i] - a_v) / dt
        # P becomes an intermediate point for any later end point: narrow the doors.
        tolerance = limit / dt
        low = max(low, slope - tolerance)
        high = min(high, slope + tolerance)
    if keep[-1] != n - 1:
        keep.append(n - 1)
    return np.array(keep, dtype=np.intp)


def keep_mask(
    ts: npt.NDArray[np.float64],
    floats: npt.NDArray[np.float64],
    eligible: npt.NDArray[np.bool_],
    group: npt.NDArray[np.int64],
    deviation: float,
) -> npt.NDArray[np.bool_]:
    """Which rows of a tag to keep under swinging-door compression.

    Only runs of consecutive `eligible` rows (finite numbers) with the same
    `group` (e.g. quality and value kind) and increasing timestamps are
    thinned; every other row is kept, and so are the ends of each run.
    """
    n = ts.size
    keep = np.ones(n, dtype=np.bool_)
    if n <= 2:
        return keep
    ok = eligible & np.isfinite(floats)
    # A run breaks where eligibility or group changes or time does not advance.
    breaks = np.ones(n, dtype=np.bool_)
    breaks[1:] = (ok[1:] != ok[:-1]) | (group[1:] != group[:-1]) | (ts[1:] <= ts[:-1])
    starts = [*np.flatnonzero(breaks).tolist(), n]
    for lo, hi in itertools.pairwise(starts):
        if hi - lo > 2 and ok[lo]:
            kept = swinging_door(ts[lo:hi], floats[lo:hi], deviation)
            keep[lo:hi] = False
            keep[lo + kept] = True
    return keep
