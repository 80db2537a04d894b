"""Swinging-door compression: the error bound holds on random series (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.storage.swinging_door import keep_mask, swinging_door

T0 = 1_700_000_000.0


def interpolation_errors(ts: np.ndarray, values: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """|original - linear interpolation of the kept points| at every original point."""
    return np.abs(np.interp(ts, ts[kept], values[kept]) - values)


@st.composite
def series(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 300))
    gaps = draw(st.lists(st.floats(1e-3, 1e4), min_size=n, max_size=n))
    steps = draw(st.lists(st.floats(-100, 100), min_size=n, max_size=n))
    ts = T0 + np.cumsum(np.array(gaps, dtype=np.float64))
    values = np.cumsum(np.array(steps, dtype=np.float64))
    return ts, values


@settings(max_examples=200, deadline=None)
@given(series(), st.floats(0.0, 50.0))
def test_every_point_is_within_the_deviation_of_the_kept_line(
    data: tuple[np.ndarray, np.ndarray], deviation: float
) -> None:
    ts, values = data
    kept = swinging_door(ts, values, deviation)
    if ts.size:
        assert kept[0] == 0 and kept[-1] == ts.size - 1
        assert np.all(np.diff(kept) > 0)
        # The bound, with room only for the rounding of np.interp itself.
        slack = 1e-9 * max(1.0, float(np.abs(values).max()))
        assert float(interpolation_errors(ts, values, kept).max()) <= deviation + slack


def test_a_straight_line_keeps_only_its_ends_and_noise_within_the_band_is_dropped() -> None:
    ts = T0 + np.arange(1000.0)
    assert swinging_door(ts, 3.0 * np.arange(1000.0), 0.01).tolist() == [0, 999]
    rng = np.random.default_rng(1)
    noisy = 20 + rng.uniform(-0.1, 0.1, 1000)
    kept = swinging_door(ts, noisy, 0.5)
    assert len(kept) < 50
    assert interpolation_errors(ts, noisy, kept).max() <= 0.5


def test_zero_deviation_keeps_every_bend_and_rejects_bad_deviations() -> None:
    ts = T0 + np.arange(6.0)
    values = np.array([0.0, 1.0, 0.0, 1.0, 2.0, 3.0])
    assert swinging_door(ts, values, 0.0).tolist() == [0, 1, 2, 5]
    with pytest.raises(ValueError):
        swinging_door(ts, values, -1.0)
    with pytest.raises(ValueError):
        swinging_door(ts, values, math.inf)


def test_keep_mask_keeps_non_numeric_rows_and_group_changes() -> None:
    n = 12
    ts = T0 + np.arange(float(n))
    floats = np.full(n, 5.0)
    eligible = np.ones(n, dtype=bool)
    eligible[6] = False  # e.g. a string or a NaN marker
    group = np.zeros(n, dtype=np.int64)
    group[9:] = 1  # e.g. quality turns stale
    keep = keep_mask(ts, floats, eligible, group, 1.0)
    # Runs 0..5, 7..8, 9..11 keep their ends; the non-numeric row 6 stays.
    assert np.flatnonzero(keep).tolist() == [0, 5, 6, 7, 8, 9, 11]
