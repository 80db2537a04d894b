"""Write planning, pure: value → range check → encode → function code, and the read-back check.

Also the `writable`/`write:` config rules and the line-log checker the
serial-line test relies on. No sockets here.
"""

from __future__ import annotations

import itertools
import struct

import pytest

from edgeopt.config import ConfigError, TagConfig, parse_config
from edgeopt.modbus.codec import TagCodec, codec_for
from edgeopt.modbus.planner import Table
from edgeopt.modbus.writeplan import (
    WritePlan,
    WriteRefused,
    WriteRequest,
    parse_value,
    plan_write,
)
from simulators.line import LineTurn, alternation_problems

ORDERS = list(itertools.product(("big", "little"), ("big", "little")))
# A value of each type that uses every byte, so a wrong order shows.
SAMPLES = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -123456789,
    "uint32": 3123456789,
    "int64": -1234567890123456789,
    "uint64": 12345678901234567890,
    "float32": -1234.5,
    "float64": 12345.678901234,
}


def tag(**fields: object) -> TagConfig:
    base: dict[str, object] = {"name": "t", "table": "holding", "address": 10, "writable": True}
    return TagConfig.model_validate({**base, **fields})


def plan(t: TagConfig, value: object, **kw: object) -> WritePlan:
    """Plans with the tag's own write settings, unless `kw` overrides them."""
    w = t.write_settings
    settings: dict[str, object] = {"low": w.min, "high": w.max, "function": w.function}
    return plan_write(t, "dev/t", codec_for(t), value, **{**settings, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("dtype", "orders"), list(itertools.product(SAMPLES, ORDERS)))
def test_every_type_and_order_encodes_to_what_decodes_back(dtype: str, orders: tuple[str, str]):
    byte_order, word_order = orders
    t = tag(type=dtype, byte_order=byte_order, word_order=word_order)
    p = plan(t, SAMPLES[dtype])
    assert p.request is not None
    codec = codec_for(t)
    assert codec.decode(list(p.request.values)) == p.written
    assert p.holds(p.written)
    assert p.count == codec.width
    assert p.request.function == (6 if codec.width == 1 else 16)
    # The registers really are in the configured order: check one against struct.
    if dtype == "int32" and orders == ("big", "little"):  # CDAB
        raw = struct.pack(">i", SAMPLES["int32"])
        assert p.request.values == (int.from_bytes(raw[2:4]), int.from_bytes(raw[0:2]))


def test_scale_and_offset_are_undone_and_half_a_step_counts_as_written():
    t = tag(type="int16", scale=0.1, offset=-40.0, write={"min": -40, "max": 150})
    p = plan(t, 21.5)
    assert p.request is not None and p.request.values == (615,)  # (21.5 + 40) / 0.1
    assert p.written == pytest.approx(21.5)
    assert p.holds(21.54) and p.holds(21.46)  # within half of the 0.1 step
    assert not p.holds(21.6)
    assert plan(t, "21.5").requested == 21.5  # command-line text


def test_function_single_and_multiple_override_auto():
    assert plan(tag(type="uint16", write={"function": "multiple"}), 7).request == WriteRequest(
        16, 10, (7,)
    )
    assert plan(tag(type="uint16", write={"function": "single"}), 7).request == WriteRequest(
        6, 10, (7,)
    )
    coil = tag(table="coil", type="bool")
    assert plan(coil, True).request == WriteRequest(5, 10, (1,))
    assert plan(coil, "off").request == WriteRequest(5, 10, (0,))
    assert plan(coil, 1, function="multiple").request == WriteRequest(15, 10, (1,))
    assert plan(coil, True).table is Table.COIL


@pytest.mark.parametrize(("byte_order", "wire_mask"), [("big", 1 << 3), ("little", 1 << 11)])
def test_a_bit_is_a_mask_write_or_a_read_modify_write_of_only_that_bit(byte_order, wire_mask):
    t = tag(type="bool", bit=3, byte_order=byte_order)
    p = plan(t, True)
    assert p.request == WriteRequest(22, 10, and_mask=~wire_mask & 0xFFFF, or_mask=wire_mask)
    assert p.bit_mask == wire_mask
    cleared = plan(t, False)
    assert cleared.request is not None and cleared.request.or_mask == 0
    # Without FC22: read-modify-write, every other bit as it was.
    rmw = plan(t, True, mask_write=False)
    assert rmw.request is None
    for current in (0x0000, 0xFFFF ^ wire_mask, 0xA5A5):
        (word,) = rmw.rmw_request(current).values
        assert word == current | wire_mask
        (word,) = plan(t, False, mask_write=False).rmw_request(current).values
        assert word == current & ~wire_mask
    assert plan(t, True, mask_write=False, function="multiple").rmw_request(0).function == 16
    assert rmw.decode([wire_mask]) is True and rmw.decode([0xFFFF ^ wire_mask]) is False


def test_out_of_range_names_the_limits():
    t = tag(type="uint16", write={"min": 0, "max": 1500})
    with pytest.raises(WriteRefused) as err:
        plan(t, 2000)
    assert err.value.code == "invalid_args"
    assert "write.min 0" in err.value.message and "write.max 1500" in err.value.message
    with pytest.raises(WriteRefused, match=r"write\.max 10\)"):
        plan(t, 11, high=10.0)
    with pytest.raises(WriteRefused, match=r"outside uint16"):
        plan(tag(type="uint16"), 70000)  # no range set, but the type cannot hold it
    with pytest.raises(WriteRefused, match="float32"):
        plan(tag(type="float32"), 1e40)


@pytest.mark.parametrize(
    ("dtype", "raw", "expected"),
    [
        ("bool", "true", True),
        ("bool", "OFF", False),
        ("bool", 1, True),
        ("int16", "-5", -5),
        ("float32", "2.5", 2.5),
        ("string", "42", "42"),
    ],
)
def test_values_from_json_or_the_command_line(dtype, raw, expected):
    assert parse_value(dtype, raw) == expected


@pytest.mark.parametrize(
    ("dtype", "raw"),
    [("bool", 2), ("bool", "maybe"), ("int16", True), ("int16", "ten"), ("string", 5)],
)
def test_a_value_of_the_wrong_kind_is_invalid(dtype, raw):
    with pytest.raises(WriteRefused) as err:
        parse_value(dtype, raw)
    assert err.value.code == "invalid_args"
    with pytest.raises(WriteRefused):
        parse_value("float64", float("nan"))


def test_strings_round_trip_and_compare_exactly():
    t = tag(type="string", length=4)
    p = plan(t, "AB12")
    assert p.request is not None and p.request.function == 16 and len(p.request.values) == 4
    assert p.holds("AB12") and not p.holds("AB13")


def test_a_device_must_echo_exactly_what_was_written():
    assert WriteRequest(5, 300, (1,)).reply_pdu() == bytes([5, 1, 44, 0xFF, 0])
    assert WriteRequest(6, 1, (0x1234,)).reply_pdu() == bytes([6, 0, 1, 0x12, 0x34])
    assert WriteRequest(16, 2, (1, 2, 3)).reply_pdu() == bytes([16, 0, 2, 0, 3])
    masked = WriteRequest(22, 4, and_mask=0xFFF7, or_mask=8)
    assert masked.reply_pdu() == bytes([22, 0, 4, 0xFF, 0xF7, 0, 8])
    # A device may answer a single write with the value it stored; a multiple
    # write's reply must name the same span.
    assert WriteRequest(6, 1, (0x1234,)).reply_prefix() == bytes([6, 0, 1])
    assert WriteRequest(16, 2, (1, 2, 3)).reply_prefix() == bytes([16, 0, 2, 0, 3])


def test_float_read_back_tolerates_float32_rounding_only():
    p = plan(tag(type="float32", scale=0.5), 0.1)
    codec = TagCodec("float32", scale=0.5)
    assert p.holds(codec.decode(codec.encode(0.1)))
    assert not p.holds(0.1001)


CONFIG = """\
devices:
  - name: d1
    transport: tcp
    host: 127.0.0.1
    tags:
      - name: meter
        table: input
        address: 0
        type: uint16
        writable: true
      - name: flag
        table: discrete
        address: 0
        writable: true
      - name: sp
        table: holding
        address: 0
        type: float32
        write: {min: 5, max: 1}
      - name: wide
        table: holding
        address: 4
        type: int32
        writable: true
        write:
          function: single
      - name: lamp
        table: holding
        address: 8
        type: bool
        bit: 0
        writable: true
        write: {min: 0}
"""


def test_write_config_errors_name_the_line_and_field():
    with pytest.raises(ConfigError) as err:
        parse_config(CONFIG, "plant.yaml")
    found = {(i.line, i.field): i.message for i in err.value.issues}
    assert "only coil and holding tags" in found[(10, "devices[0].tags[0].writable")]
    assert "only coil and holding tags" in found[(14, "devices[0].tags[1].writable")]
    assert "needs writable: true" in found[(19, "devices[0].tags[2].write")]
    assert "below min" in found[(19, "devices[0].tags[2].write.max")]
    assert "FC6" in found[(26, "devices[0].tags[3].write.function")]
    assert "numeric" in found[(33, "devices[0].tags[4].write.min")]


def test_writable_defaults():
    t = tag(type="uint16")
    assert t.writable and t.write_settings.verify and t.write_settings.verify_timeout == 2.0
    assert t.write_settings.function == "auto" and t.write_settings.min_interval == 1.0
    assert not TagConfig.model_validate(
        {"name": "r", "table": "holding", "address": 0, "type": "uint16"}
    ).writable


def test_the_line_checker_catches_two_requests_without_a_reply_between():
    read = bytes.fromhex("010300000001840a")  # unit 1, FC3, 0+1, CRC
    write = bytes.fromhex("01060001000a5811")  # unit 1, FC6
    reply = bytes.fromhex("01030200002459")
    good = [
        LineTurn("request", 0.0, 0.01, read),
        LineTurn("reply", 0.011, 0.02, reply),
        LineTurn("request", 0.021, 0.03, write),
    ]
    assert alternation_problems(good) == []
    both = [LineTurn("request", 0.0, 0.02, read + write), LineTurn("reply", 0.021, 0.03, reply)]
    assert "2 requests" in " ".join(alternation_problems(both))
    talked_over = [good[0], LineTurn("reply", 0.011, 0.03, reply), good[2]]
    assert "before the last" in " ".join(alternation_problems(talked_over))
