"""The bounded histories (`edgeopt.rings`) read exactly like the deques they replace."""

from __future__ import annotations

import sys
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.modbus.health import ReadStats
from edgeopt.poller import COST_SAMPLES, DeviceRuntime
from edgeopt.rings import CostSamples, FloatRing, TimeRing
from edgeopt.tags import TagStats


@settings(max_examples=200, deadline=None)
@given(
    times=st.lists(st.floats(0, 1e9, allow_nan=False), max_size=40),
    maxlen=st.integers(1, 8),
)
def test_a_float_ring_reads_like_a_bounded_deque(times: list[float], maxlen: int) -> None:
    ring, reference = FloatRing(maxlen), deque[float](maxlen=maxlen)
    for t in times:
        ring.append(t)
        reference.append(t)
        assert len(ring) == len(reference) and list(ring) == list(reference)
        assert [ring[i] for i in range(-len(ring), len(ring))] == [
            reference[i] for i in range(-len(reference), len(reference))
        ]
    assert ring.maxlen == reference.maxlen
    with pytest.raises(IndexError):
        ring[len(ring)]


def test_a_full_ring_stays_bounded() -> None:
    ring = FloatRing(512)
    for i in range(10_000):
        ring.append(float(i))
    assert len(ring) == 512 and ring[0] == 10_000 - 512 and ring[-1] == 9_999.0
    assert sys.getsizeof(ring._values) < 512 * 8 + 1024  # doubles, not float objects


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(0, 4e9, allow_nan=False),
    steps=st.lists(st.floats(-5.0, 3600.0, allow_nan=False), max_size=40),
    maxlen=st.integers(1, 8),
)
def test_a_time_ring_reads_like_a_bounded_deque_to_the_millisecond(
    start: float, steps: list[float], maxlen: int
) -> None:
    ring, reference = TimeRing(maxlen), deque[float](maxlen=maxlen)
    t = start
    for step in steps:
        t += step
        ring.append(t)
        reference.append(t)
        assert len(ring) == len(reference)
        assert list(ring) == pytest.approx(list(reference), abs=5e-4, rel=0)
        assert [ring[i] for i in range(-len(ring), len(ring))] == pytest.approx(
            [reference[i] for i in range(-len(reference), len(reference))], abs=5e-4, rel=0
        )
    assert ring.maxlen == maxlen
    with pytest.raises(IndexError):
        ring[len(ring)]


def test_a_time_ring_keeps_4_bytes_a_time_and_moves_its_base_on_a_long_gap() -> None:
    ring = TimeRing(512)
    for i in range(10_000):
        ring.append(1.8e9 + i * 0.25)
    assert len(ring) == 512 and ring[0] == 1.8e9 + (10_000 - 512) * 0.25
    assert sys.getsizeof(ring._values) < 512 * 4 + 1024
    # 30 days later (past int32 milliseconds from the base): the new time is
    # the base, and times that far back are gone rather than wrapped.
    later = 1.8e9 + 30 * 86400.0
    ring.append(later)
    assert list(ring) == [later]
    ring.append(later + 1.5)
    assert list(ring) == [later, later + 1.5] and ring[-1] - ring[-2] == 1.5
    # Within range either side, nothing is dropped: a clock stepped back a day.
    ring.append(later - 86400.0)
    assert list(ring) == [later, later + 1.5, later - 86400.0]


@given(
    samples=st.lists(
        st.tuples(st.integers(1, 2000), st.floats(0, 10, allow_nan=False)), max_size=30
    ),
    maxlen=st.integers(1, 8),
)
def test_cost_samples_iterate_as_the_last_pairs(
    samples: list[tuple[int, float]], maxlen: int
) -> None:
    ring, reference = CostSamples(maxlen), deque[tuple[int, float]](maxlen=maxlen)
    for sample in samples:
        ring.append(sample)
        reference.append(sample)
    assert list(ring) == list(reference) and len(ring) == len(reference)
    assert all(type(units) is int for units, _ in ring)
    assert ring.maxlen == maxlen


def test_the_daemons_histories_are_rings() -> None:
    # The histories that fill as the daemon runs: per tag, per device.
    stats = TagStats()
    assert isinstance(stats.recent_events, TimeRing) and not stats.recent_events
    with pytest.raises(TypeError):
        stats.recent_events.append(1.0)  # the shared empty history stays empty
    for ts, value in enumerate([0.0, 1.0, 2.0]):
        stats.observe(value, float(ts), deadband=0.0)
    assert list(stats.recent_events) == [1.0, 2.0]
    assert stats.recent_events.maxlen == 512 and not TagStats().recent_events
    assert isinstance(ReadStats().latencies, FloatRing)
    assert DeviceRuntime.__dataclass_fields__["cost_samples"].default_factory().maxlen == (  # type: ignore[misc]
        COST_SAMPLES
    )
