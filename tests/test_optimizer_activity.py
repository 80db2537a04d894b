"""The activity tracker's storage: narrow window counts that widen exactly and sum
exactly, hourly sums allocated when first needed, and learned profiles saved before
these changes restoring."""

from __future__ import annotations

import math
import os
import random
import time
from array import array
from collections.abc import Iterator

import pytest
from test_optimizer_sim import MONDAY, config, device, tag

from edgeopt.optimizer.activity import (
    HOURS_PER_DAY,
    ActivityTracker,
    column_sums,
    corrected_rate,
)
from edgeopt.poller import Poller

TAGS = [tag("a", 0, interval="1s"), tag("b", 10, interval="1s")]


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Profiles bin by local time: pin it to UTC."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def _poller() -> Poller:
    poller = Poller(config([device("d", TAGS)]).devices)
    poller.replan(0.0)
    return poller


def _close(tracker: ActivityTracker, poller: Poller, t: float, reads: int, changes: int) -> float:
    """Count `reads` reads and `changes` change events on d/a, then close the window."""
    stats = poller.tags["d/a"].state.stats
    stats.reads += reads
    stats.changes += changes
    t += tracker.window
    assert tracker.sample(poller, t, MONDAY + t)
    return t


def test_window_counts_start_one_byte_wide_and_widen_exactly() -> None:
    poller = _poller()
    tracker = ActivityTracker(60.0, slots=8)
    tracker.sample(poller, 0.0, MONDAY)
    t = _close(tracker, poller, 0.0, 60, 7)
    assert [w.tolist() for w in tracker.tag_windows(["d/a"], [0]).reads] == [[60.0]]
    # One byte per tag and window for each counter while the counts fit in it.
    assert [w.itemsize for w in tracker._reads] == [1] * 8
    assert sum(len(w) * w.itemsize for w in tracker._reads) == 2 * 8
    # Counts that do not fit a byte (a fast tag, a late window) widen their own
    # window only; they neither wrap nor saturate.
    t = _close(tracker, poller, t, 300, 280)
    t = _close(tracker, poller, t, 70_000, 65_600)
    stats = tracker.tag_windows(["d/a"], [0, 1, 2])
    assert [w.tolist() for w in stats.reads] == [[60.0], [300.0], [70_000.0]]
    assert [w.tolist() for w in stats.jumps] == [[7.0], [280.0], [65_600.0]]
    assert [w.itemsize for w in tracker._reads[:4]] == [1, 2, 4, 1]
    assert [w.itemsize for w in tracker._jumps[:4]] == [1, 2, 4, 1]
    rate, reads = tracker.rates(3 * 60.0, prior=0.0)["d/a"]
    assert reads == 70_360.0
    assert rate == pytest.approx(corrected_rate(65_887.0, 70_360.0, 180.0, 0.0))


@pytest.mark.parametrize(
    ("codes", "windows"),
    [
        ("B", 120),  # the usual ring: two-byte lanes
        ("BHB", 40),  # mixed widths, a narrow window after a wide one
        ("B", 300),  # more windows than two-byte lanes can hold at 255 each
        ("BI", 30),
        ("Q", 3),  # wider than any lane: summed row by row
    ],
)
def test_window_sums_are_exact_at_every_width(codes: str, windows: int) -> None:
    rng = random.Random(windows)
    columns = []
    for w in range(windows):
        code = codes[w % len(codes)]
        top = (1 << 8 * array(code).itemsize) - 1
        values = [rng.choice((0, top, rng.randrange(top + 1))) for _ in range(50)]
        columns.append(array(code, values))
    sums = column_sums(columns)
    assert list(sums) == [sum(row) for row in zip(*columns, strict=True)]


def _old_format_profile() -> dict[str, list[float]]:
    """One tag's profile as `export_profiles` saved it while every array was float32."""
    return {
        "hod_jumps": [float(h) for h in range(HOURS_PER_DAY)],
        "hod_reads": [3600.0] * HOURS_PER_DAY,
        "dow_jumps": [24.0] * 7,
        "dow_reads": [86400.0] * 7,
        "hourly_s1": [3 * 10.0] * HOURS_PER_DAY,  # 3 days of 10 changes/h
        "hourly_s2": [3 * 100.0 + 8.0] * HOURS_PER_DAY,  # sd 2
    }


def _old_format_globals() -> dict[str, object]:
    return {
        "hod_exposure": [3600.0] * HOURS_PER_DAY,
        "dow_exposure": [86400.0] * 7,
        "hourly_n": [3.0] * HOURS_PER_DAY,
        "device_series": {"d": [1.0, 2.0, 3.0]},
    }


def test_profiles_saved_in_the_old_format_restore() -> None:
    poller = _poller()
    tracker = ActivityTracker(60.0)
    tracker.sync(poller)
    tracker.import_profiles({"d/a": _old_format_profile()}, _old_format_globals())
    at = MONDAY + 5 * 3600.0 + 60.0
    expectation = tracker.hourly_expectation("d/a", at)
    assert expectation is not None
    mean, sd, days = expectation
    assert (mean, days) == (10.0, 3) and sd == pytest.approx(2.0)
    assert tracker.hourly_expectation("d/b", at) == (0.0, 0.0, 3)  # no profile saved for it
    hod = tracker.hourly_expectations(at)
    assert hod[0] == [10.0, 0.0] and hod[2] == 3
    assert tracker.profile_rate("d/a", at) is not None
    assert tracker.device_series == {"d": [1.0, 2.0, 3.0]}
    # Saved again, it is what was restored, in the same format.
    again = tracker.export_profiles()["d/a"]
    assert again == _old_format_profile()
    assert tracker.export_profiles()["d/b"]["hourly_s1"] == [0.0] * HOURS_PER_DAY


def test_hourly_sums_are_allocated_when_the_first_whole_hour_closes() -> None:
    poller = _poller()
    tracker = ActivityTracker(60.0)
    tracker.sample(poller, 0.0, MONDAY)
    t = 0.0
    for _ in range(60):  # 00:00 .. 01:00, a whole hour
        t = _close(tracker, poller, t, 60, 6)
    assert tracker.hourly_s1 is None and tracker.hourly_s2 is None
    before = tracker.nbytes()
    # Saved state before the first whole hour: zeros, as the float32 arrays gave.
    assert tracker.export_profiles()["d/a"]["hourly_s2"] == [0.0] * HOURS_PER_DAY
    t = _close(tracker, poller, t, 60, 6)  # the first window of 01:00 closes hour 0
    assert tracker.hourly_s1 is not None and tracker.hourly_s2 is not None
    assert tracker.nbytes() == before + 2 * 2 * HOURS_PER_DAY * 4
    per_hour = -math.log1p(-(360.0 + 0.02) / 3601.0) * 3600.0  # corrected changes/h
    assert tracker.hourly_s1[0][0] == pytest.approx(per_hour, rel=1e-6)  # hour 0, tag 0
    assert tracker.hourly_s2[0][0] == pytest.approx(per_hour**2, rel=1e-6)
    assert tracker.hourly_n[0] == 1


def test_weekday_factors_for_some_tags_are_those_of_all_tags() -> None:
    poller = _poller()
    tracker = ActivityTracker(60.0)
    tracker.sync(poller)
    profile = {**_old_format_profile(), "dow_jumps": [float(d * d) for d in range(7)]}
    tracker.import_profiles({"d/a": profile}, _old_format_globals())
    at = MONDAY + 2 * 86400.0  # a Wednesday: 4 changes against 13 a day on average
    every = tracker.weekday_factors(at)
    assert every is not None and every[0] == pytest.approx(
        corrected_rate(4.0, 86400.0, 86400.0) / corrected_rate(91.0, 7 * 86400.0, 7 * 86400.0)
    )
    assert tracker.weekday_factors(at, [1, 0]) == [every[1], every[0]]
    assert tracker.weekday_factors(at, []) == []
