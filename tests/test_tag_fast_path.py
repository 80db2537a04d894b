"""The tag state's fast path for repeated values changes nothing that callers see.

`TagState.observe_into` skips the statistics and the recorder's checks when a
read repeats the previous value, and `TagStats` merges such repeats into its
step statistics only when they are looked at. Against a plain
re-statement of the rules (every read through every check), the samples
stored, the events and the statistics must come out the same.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.tags import Sample, TagState, moved_beyond


class _Reference:
    """The recorder and statistics without any fast path (the rules as documented)."""

    def __init__(self, deadband: float, max_staleness: float) -> None:
        self.deadband, self.max_staleness = deadband, max_staleness
        self.good = False
        self.stored: tuple[object, float] | None = None
        self.held: Sample | None = None
        self.previous: object = None
        self.last_event: object = None
        self.started = False
        self.steps: list[float] = []
        self.events = 0

    def observe(self, value: object, ts: float) -> list[Sample]:
        nan = isinstance(value, float) and math.isnan(value)
        quality = "bad" if nan else "good"
        event = False
        if not nan:
            previous, self.previous = self.previous, value
            numbers = [x for x in (value, previous) if isinstance(x, int | float)]
            if len(numbers) == 2 and all(math.isfinite(x) for x in numbers):
                self.steps.append(abs(float(value) - float(previous)))  # type: ignore[arg-type]
            if not self.started:
                self.started, self.last_event = True, value
            elif moved_beyond(self.last_event, value, self.deadband):  # type: ignore[arg-type]
                event, self.last_event = True, value
        self.events += event
        sample = Sample("d/x", ts, value, quality)  # type: ignore[arg-type]
        out: list[Sample] = []
        if self.stored is None or not self.good:
            out.append(sample)
        elif moved_beyond(self.stored[0], value, self.deadband):  # type: ignore[arg-type]
            if self.held is not None and self.held.ts > self.stored[1]:
                out.append(self.held)
            out.append(sample)
        elif ts - self.stored[1] >= self.max_staleness:
            out.append(sample)
        self.good = not nan
        if out:
            self.stored, self.held = (value, ts), None
        else:
            self.held = sample
        return out


values = st.one_of(
    st.sampled_from([0, 1, 2, 5]),
    st.sampled_from([0.0, 0.25, 1.0, 1.5, float("nan")]),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(
    seq=st.lists(st.tuples(values, st.integers(1, 4)), min_size=1, max_size=40),
    deadband=st.sampled_from([0.0, 0.5, 2.0]),
    max_staleness=st.sampled_from([3.0, 10.0]),
)
def test_repeats_store_and_count_like_the_plain_rules(
    seq: list[tuple[object, int]], deadband: float, max_staleness: float
) -> None:
    tag = TagState("d/x", deadband, max_staleness)
    ref = _Reference(deadband, max_staleness)
    ts = 0.0
    for value, repeat in seq:
        for _ in range(repeat):  # runs of one value: what the fast path takes
            ts += 1.0
            got = tag.observe(value, ts)  # type: ignore[arg-type]
            want = ref.observe(value, ts)
            assert [(s.ts, s.quality) for s in got] == [(s.ts, s.quality) for s in want]
            assert [repr(s.value) for s in got] == [repr(s.value) for s in want]
    assert tag.stats.changes == ref.events
    assert tag.stats.step_count == len(ref.steps)
    want = sum(ref.steps) / len(ref.steps) if ref.steps else 0.0
    assert tag.stats.mean_step == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_a_quiet_tag_counts_every_read_but_stores_only_heartbeats() -> None:
    tag = TagState("d/x", deadband=0.0, max_staleness=10.0)
    stored = [s.ts for t in range(31) for s in tag.observe(7, float(t))]
    assert stored == [0.0, 10.0, 20.0, 30.0]
    assert tag.stats.reads == 31 and tag.stats.changes == 0
    assert tag.stats.step_count == 30 and tag.stats.mean_step == 0.0


def test_tags_that_differ_only_in_byte_or_bit_field_keep_their_own_codecs() -> None:
    # Tags share a frozen codec when every part of it agrees; `byte` and `bits`
    # are parts too, or the low byte would be decoded as the high one.
    from edgeopt.config import parse_config
    from edgeopt.poller import Poller

    config = parse_config(
        """\
devices:
  - name: d
    transport: tcp
    host: 192.0.2.10
    tags:
      - {name: hi, table: holding, address: 0, type: uint8, byte: high}
      - {name: lo, table: holding, address: 0, type: uint8, byte: low}
      - {name: f2, table: holding, address: 1, type: uint16, bit: 0, bits: 2}
      - {name: f3, table: holding, address: 2, type: uint16, bit: 0, bits: 3}
"""
    )
    tags = Poller(config.devices).tags
    assert tags["d/hi"].codec.decode([0x1234]) == 0x12
    assert tags["d/lo"].codec.decode([0x1234]) == 0x34
    assert tags["d/f2"].codec.decode([0b1111]) == 0b11
    assert tags["d/f3"].codec.decode([0b1111]) == 0b111
