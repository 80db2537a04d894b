"""A block read whose registers repeat the last read's changes nothing that callers see.

The poller keeps each planned read's last registers, and while they repeat,
tags still decoded from them skip decoding. Against tag states fed tag by tag
with what each tag's own codec decodes (no shortcut at all), the samples,
events and statistics must come out the same, through failed reads, verified
writes, stale checks and re-plans in between.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.config import parse_config
from edgeopt.modbus.codec import BitBlockDecoder
from edgeopt.modbus.planner import Table
from edgeopt.modbus.transport import ReadError, ReadResult
from edgeopt.poller import Poller
from edgeopt.tags import Sample, TagState, Value

CONFIG = """\
devices:
  - name: d
    transport: tcp
    host: 192.0.2.10
    tags:
      - {name: u, table: holding, address: 0, type: uint16, max_staleness: 5}
      - {name: s, table: holding, address: 1, type: int16, scale: 0.5, deadband: 1}
      - {name: f, table: holding, address: 2, type: float32, max_staleness: 5}
      - {name: b0, table: holding, address: 4, type: bool, bit: 0}
      - {name: b1, table: holding, address: 4, type: bool, bit: 1}
      - {name: c0, table: coil, address: 0, type: bool, max_staleness: 4}
      - {name: c2, table: coil, address: 2, type: bool}
"""

WORDS = st.sampled_from([0, 1, 3, 0x7FC0, 0xFFFF])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.lists(WORDS, min_size=5, max_size=5), st.booleans()),
        st.tuples(st.just("repeat"), st.just([]), st.booleans()),
        st.tuples(st.just("fail"), st.just([]), st.booleans()),
        st.tuples(st.just("write"), st.sampled_from([[0], [1], [3]]), st.booleans()),
        st.tuples(st.just("stale"), st.just([]), st.booleans()),
        st.tuples(st.just("replan"), st.just([]), st.booleans()),
    ),
    min_size=1,
    max_size=40,
)


def _seen(samples: list[Sample]) -> list[tuple[str, float, str, str]]:
    return [(s.tag, s.ts, repr(s.value), s.quality) for s in samples]


@settings(max_examples=200, deadline=None)
@given(steps=STEPS)
def test_repeated_registers_store_and_count_like_decoding_every_tag(
    steps: list[tuple[str, list[int], bool]],
) -> None:
    config = parse_config(CONFIG)
    stored: list[Sample] = []
    poller = Poller(config.devices, sinks=[stored.extend])
    reads = {r.table: r for r in poller.replan(0.0).reads}
    holding, coils = reads[Table.HOLDING], reads[Table.COIL]
    assert (holding.start, holding.count, coils.start, coils.count) == (0, 5, 0, 3)
    ref = {
        key: TagState(key, t.state.deadband, t.state.max_staleness)
        for key, t in poller.tags.items()
    }
    want: list[Sample] = []
    words, bits = [0, 0, 0, 0, 0], [False, False, False]
    for i, (kind, payload, flag) in enumerate(steps):
        wall = 100.0 + i
        if kind in ("read", "repeat"):
            if kind == "read":
                words = list(payload)
                bits = [payload[0] & 1 == 1, False, flag]
            read, values = (holding, list(words)) if flag else (coils, list(bits))
            poller.apply(read, ReadResult(values, 0.01), wall, wall, wall)
            for key in read.tags:
                tag = poller.tags[key]
                offset = int(tag.config.address) - read.start
                if read.table is Table.COIL:
                    value = tag.codec.decode_bits([bits[offset]])
                else:
                    value = tag.codec.decode(words[offset : offset + int(tag.config.width)])
                want += ref[key].observe(value, wall)
        elif kind == "fail":
            read = holding if flag else coils
            poller.apply(
                read,
                ReadResult(None, 1.0, ReadError.TIMEOUT, message="no answer"),
                wall,
                wall,
                wall,
            )
            for key in read.tags:
                want += ref[key].fail("timeout: no answer", wall)
        elif kind == "write":
            key = "d/u" if flag else "d/c0"
            value = payload[0] if flag else bool(payload[0] & 1)
            poller.record_write(key, value, wall, wall)
            want += ref[key].observe(value, wall)
        elif kind == "stale":
            poller.check_stale(wall + 10.0)
            for state in ref.values():
                want += state.check_stale(wall + 10.0)
        else:
            reads = {r.table: r for r in poller.replan(wall).reads}
            holding, coils = reads[Table.HOLDING], reads[Table.COIL]
        assert _seen(stored) == _seen(want), f"step {i}: {kind}"
    for key, state in ref.items():
        got = poller.tags[key].state
        assert (got.quality, got.stats.reads, got.stats.changes) == (
            state.quality,
            state.stats.reads,
            state.stats.changes,
        ), key
        assert repr(got.value) == repr(state.value), key
        assert got.stats.step_count == state.stats.step_count, key
        assert math.isclose(got.stats.mean_step, state.stats.mean_step, abs_tol=1e-12), key


def test_a_repeated_block_is_not_decoded_again() -> None:
    class Counting(BitBlockDecoder):
        calls = 0

        def decode(self, bits: Sequence[int]) -> list[Value]:
            self.calls += 1
            return super().decode(bits)

    poller = Poller(parse_config(CONFIG).devices)
    coils = next(r for r in poller.replan(0.0).reads if r.table is Table.COIL)
    block = poller._block(coils)
    counting = Counting(coils.count, [0, 2])
    block.decoder = counting
    for t in range(5):
        poller.apply(coils, ReadResult([True, False, False], 0.01), 100.0 + t, 100.0 + t, 100.0 + t)
    assert counting.calls == 1  # the first read only: the next four repeat it
    assert poller.tags["d/c0"].state.stats.reads == 5
    poller.apply(coils, ReadResult([True, False, True], 0.01), 106.0, 106.0, 106.0)
    assert counting.calls == 2 and poller.tags["d/c2"].state.value is True
