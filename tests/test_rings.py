"""The bounded histories (`edgeopt.rings`) read exactly like the deques they replace."""

from __future__ import annotations

import sys
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.modbus.health import ReadStats
from edgeopt.poller import COST_SAMPLES, DeviceRuntime
from edgeopt.rings import CostSamples, FloatRing
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
    assert isinstance(stats.recent_events, FloatRing) and not stats.recent_events
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
