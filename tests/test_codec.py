"""Tests for the register codec: known vectors, round trips and errors."""

from __future__ import annotations

import dataclasses
import math
import pickle
import struct
from types import SimpleNamespace
from typing import Any, Literal, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.modbus.codec import (
    BlockDecoder,
    DataType,
    DecodeError,
    Order,
    TagCodec,
    Value,
    codec_for,
    register_width,
)

ORDERS: tuple[Order, ...] = get_args(Order)
ORDER_PAIRS = [(b, w) for b in ORDERS for w in ORDERS]
INT_RANGES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}
FLOAT_WIDTHS: dict[DataType, Literal[32, 64]] = {DataType.FLOAT32: 32, DataType.FLOAT64: 64}
REGISTER = st.integers(0, 0xFFFF)
BYTE_TYPES = {DataType.INT8: (-128, 127), DataType.UINT8: (0, 255)}
BCD_TYPES = {DataType.BCD16: 9999, DataType.BCD32: 99_999_999}
BYTES: tuple[Literal["high", "low"], ...] = ("high", "low")
# Enough to find order and sign mistakes; the whole file stays well under 5 s.
FAST = settings(max_examples=40, deadline=None)


def same(a: Value, b: Value) -> bool:
    """Equality that also holds for NaN and tells -0.0 from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return struct.pack(">d", a) == struct.pack(">d", b)
    return type(a) is type(b) and a == b


def registers(width: int) -> st.SearchStrategy[list[int]]:
    return st.lists(REGISTER, min_size=width, max_size=width)


# --- known vectors ----------------------------------------------------------

F32_123_456 = struct.unpack(">f", bytes.fromhex("42F6E979"))[0]


@pytest.mark.parametrize(
    ("byte_order", "word_order", "words"),
    [
        ("big", "big", [0x42F6, 0xE979]),  # ABCD
        ("big", "little", [0xE979, 0x42F6]),  # CDAB
        ("little", "big", [0xF642, 0x79E9]),  # BADC
        ("little", "little", [0x79E9, 0xF642]),  # DCBA
    ],
)
def test_float32_orders_match_known_vectors(
    byte_order: Order, word_order: Order, words: list[int]
) -> None:
    codec = TagCodec(DataType.FLOAT32, byte_order=byte_order, word_order=word_order)
    assert codec.decode(words) == F32_123_456
    assert codec.decode(words) == pytest.approx(123.456, rel=1e-6)
    assert codec.encode(123.456) == words


@pytest.mark.parametrize(
    ("byte_order", "word_order", "words"),
    [
        ("big", "big", [0x0102, 0x0304, 0x0506, 0x0708]),
        ("big", "little", [0x0708, 0x0506, 0x0304, 0x0102]),
        ("little", "big", [0x0201, 0x0403, 0x0605, 0x0807]),
        ("little", "little", [0x0807, 0x0605, 0x0403, 0x0201]),
    ],
)
def test_64_bit_orders_match_known_vectors(
    byte_order: Order, word_order: Order, words: list[int]
) -> None:
    codec = TagCodec(DataType.UINT64, byte_order=byte_order, word_order=word_order)
    assert codec.decode(words) == 0x0102030405060708
    assert codec.encode(0x0102030405060708) == words
    as_double = TagCodec(DataType.FLOAT64, byte_order=byte_order, word_order=word_order)
    assert as_double.decode(words) == struct.unpack(">d", bytes(range(1, 9)))[0]


@pytest.mark.parametrize(
    ("codec", "words", "value"),
    [
        (TagCodec(DataType.INT16), [0xFFFF], -1),
        (TagCodec(DataType.INT16), [0x8000], -32768),
        (TagCodec(DataType.UINT16), [0xFFFF], 65535),
        (TagCodec(DataType.UINT16, byte_order="little"), [0x3412], 0x1234),
        # Word order is moot for one register.
        (TagCodec(DataType.INT16, word_order="little"), [0xFFFE], -2),
        (TagCodec(DataType.INT32), [0xFFFF, 0xFFFE], -2),
        (TagCodec(DataType.UINT32), [0xFFFF, 0xFFFE], 0xFFFFFFFE),
        (TagCodec(DataType.INT32, word_order="little"), [0xFFFE, 0xFFFF], -2),
        (TagCodec(DataType.UINT64), [0xFFFF] * 4, 2**64 - 1),
        (TagCodec(DataType.INT64), [0x7FFF] + [0xFFFF] * 3, 2**63 - 1),
        (TagCodec(DataType.INT64), [0x8000, 0, 0, 0], -(2**63)),
        (TagCodec(DataType.INT64), [0xFFFF] * 4, -1),
        (TagCodec(DataType.FLOAT32), [0x7F80, 0], math.inf),
        (TagCodec(DataType.FLOAT32), [0xFF80, 0], -math.inf),
        (TagCodec(DataType.FLOAT32), [0x8000, 0], -0.0),
        (TagCodec(DataType.FLOAT32), [0, 1], 2.0**-149),  # smallest subnormal
        (TagCodec(DataType.FLOAT64), [0x3FF0, 0, 0, 0], 1.0),
        (TagCodec(DataType.FLOAT64, word_order="little"), [0, 0, 0, 0x3FF0], 1.0),
        (TagCodec(DataType.STRING, length=2), [0x4142, 0x4300], "ABC"),
        (TagCodec(DataType.STRING, length=2, byte_order="little"), [0x4241, 0x0043], "ABC"),
        (TagCodec(DataType.STRING, length=3), [0x4142, 0x2020, 0x2000], "AB"),
        (TagCodec(DataType.STRING, length=2), [0x4100, 0x4200], "A\x00B"),  # only trailing pad
        (TagCodec(DataType.STRING, length=1), [0], ""),
        (TagCodec(DataType.STRING, length=1), [0xE9FF], "éÿ"),  # latin-1: every byte is a char
        (TagCodec(DataType.BOOL, bit=3), [0x0008], True),
        (TagCodec(DataType.BOOL, bit=3), [0xFFF7], False),
        (TagCodec(DataType.BOOL, bit=15), [0x8000], True),
        (TagCodec(DataType.BOOL, bit=0, byte_order="little"), [0x0100], True),
        (TagCodec(DataType.BOOL), [0], False),
        (TagCodec(DataType.BOOL), [0x0200], True),
        (TagCodec(DataType.INT16, scale=0.1), [0xFFFF], -0.1),
        (TagCodec(DataType.UINT16, scale=2, offset=-1), [3], 5.0),
        (TagCodec(DataType.FLOAT32, scale=10.0, offset=1.0), [0x3F80, 0], 11.0),
        # Peers' types: one byte of a register, half floats, BCD, bit fields.
        (TagCodec(DataType.INT8, byte="high"), [0xFE01], -2),
        (TagCodec(DataType.INT8, byte="low"), [0xFE81], -127),
        (TagCodec(DataType.UINT8, byte="high"), [0xFE01], 254),
        (TagCodec(DataType.UINT8, byte="low"), [0xFE01], 1),
        (TagCodec(DataType.UINT8, byte="high", byte_order="little"), [0xFE01], 1),
        (TagCodec(DataType.INT8, byte="low", scale=0.5), [0x00FF], -0.5),
        (TagCodec(DataType.FLOAT16), [0x3C00], 1.0),
        (TagCodec(DataType.FLOAT16), [0xC000], -2.0),
        (TagCodec(DataType.FLOAT16), [0x7BFF], 65504.0),  # the largest half
        (TagCodec(DataType.FLOAT16), [0x0001], 2.0**-24),  # the smallest subnormal
        (TagCodec(DataType.FLOAT16), [0xFC00], -math.inf),
        (TagCodec(DataType.FLOAT16, byte_order="little"), [0x003C], 1.0),
        (TagCodec(DataType.BCD16), [0x1234], 1234),
        (TagCodec(DataType.BCD16), [0x9999], 9999),
        (TagCodec(DataType.BCD16, scale=0.1), [0x0105], 10.5),
        (TagCodec(DataType.BCD32), [0x1234, 0x5678], 12345678),
        (TagCodec(DataType.BCD32, word_order="little"), [0x5678, 0x1234], 12345678),
        (TagCodec(DataType.UINT16, bit=4, bits=3), [0b0000_0000_0101_0000], 5),
        (TagCodec(DataType.UINT16, bit=0, bits=16), [0xBEEF], 0xBEEF),
        (TagCodec(DataType.UINT16, bit=12, bits=4), [0xA000], 10),
        (TagCodec(DataType.UINT16, bit=8, bits=2, byte_order="little"), [0x0003], 3),
        # Byte-swapped pairs: each register's two characters swapped.
        (
            TagCodec(DataType.STRING, length=3, byte_order="little"),
            [0x5053, 0x3031, 0x0032],
            "SP102",
        ),
    ],
    ids=lambda x: (
        str(x) if not isinstance(x, TagCodec) else f"{x.type}/{x.byte_order}/{x.word_order}"
    ),
)
def test_decode_known_vectors(codec: TagCodec, words: list[int], value: Value) -> None:
    assert same(codec.decode(words), value)


def test_exact_integers_decode_to_int_and_scaled_ones_to_float() -> None:
    assert type(TagCodec(DataType.UINT16).decode([7])) is int
    assert type(TagCodec(DataType.UINT64).decode([0xFFFF] * 4)) is int
    assert type(TagCodec(DataType.UINT16, scale=2).decode([7])) is float
    assert type(TagCodec(DataType.UINT16, offset=0.5).decode([7])) is float
    assert type(TagCodec(DataType.BOOL, bit=1).decode([2])) is bool


def test_decode_raw_skips_scale_and_offset() -> None:
    codec = TagCodec(DataType.INT16, scale=0.5, offset=100)
    assert codec.decode_raw([0xFFFE]) == -2
    assert codec.decode([0xFFFE]) == 99.0


def test_float_nan_decodes_faithfully() -> None:
    assert same(TagCodec(DataType.FLOAT32).decode([0x7FC0, 0]), math.nan)
    assert same(TagCodec(DataType.FLOAT64).decode([0x7FF8, 0, 0, 1]), math.nan)


def test_string_with_other_encoding_never_raises() -> None:
    codec = TagCodec(DataType.STRING, length=2, string_encoding="utf-8")
    assert codec.decode([0xC3A9, 0x2000]) == "é"
    assert codec.decode([0xFFFE, 0x4100]) == "\ufffd\ufffdA"


def test_decode_bits_reads_one_coil() -> None:
    codec = TagCodec(DataType.BOOL)
    assert codec.decode_bits([True]) is True
    assert codec.decode_bits([False]) is False
    with pytest.raises(DecodeError) as info:
        codec.decode_bits([True, False])
    assert (info.value.expected, info.value.got) == (1, 2)


def test_width_uses_register_width() -> None:
    for dt in DataType:
        length = 5 if dt is DataType.STRING else None
        byte: Literal["high"] | None = "high" if dt in BYTE_TYPES else None
        assert TagCodec(dt, length=length, byte=byte).width == register_width(dt, length)


# --- round trips ------------------------------------------------------------


@pytest.mark.parametrize(("byte_order", "word_order"), ORDER_PAIRS)
@pytest.mark.parametrize("dt", list(INT_RANGES))
@FAST
@given(data=st.data())
def test_integer_round_trip_is_exact(
    dt: DataType, byte_order: Order, word_order: Order, data: Any
) -> None:
    codec = TagCodec(dt, byte_order=byte_order, word_order=word_order)
    value = data.draw(st.integers(*INT_RANGES[dt]))
    words = codec.encode(value)
    assert len(words) == codec.width
    assert all(0 <= w <= 0xFFFF for w in words)
    assert same(codec.decode(words), value)
    # And the other way: every register pattern is some value.
    words = data.draw(registers(codec.width))
    assert codec.encode(codec.decode(words)) == words


@pytest.mark.parametrize(("byte_order", "word_order"), ORDER_PAIRS)
@pytest.mark.parametrize("dt", list(FLOAT_WIDTHS))
@FAST
@given(data=st.data())
def test_float_round_trip_is_bitwise(
    dt: DataType, byte_order: Order, word_order: Order, data: Any
) -> None:
    codec = TagCodec(dt, byte_order=byte_order, word_order=word_order)
    # Hypothesis' floats include NaN, ±inf, -0.0 and subnormals.
    value = data.draw(st.floats(width=FLOAT_WIDTHS[dt]))
    assert same(codec.decode(codec.encode(value)), value)
    for special in (
        math.inf,
        -math.inf,
        -0.0,
        math.nan,
        5e-324 if dt is DataType.FLOAT64 else 2.0**-149,
    ):
        assert same(codec.decode(codec.encode(special)), special)


@pytest.mark.parametrize(("byte_order", "word_order"), ORDER_PAIRS)
@FAST
@given(length=st.integers(1, 8), data=st.data())
def test_string_round_trip(byte_order: Order, word_order: Order, length: int, data: Any) -> None:
    codec = TagCodec(DataType.STRING, length=length, byte_order=byte_order, word_order=word_order)
    text = data.draw(st.text(st.characters(max_codepoint=0xFF), max_size=2 * length))
    assert codec.decode(codec.encode(text)) == text.rstrip("\x00 ")
    # Any registers decode to some text (latin-1 never fails).
    assert isinstance(codec.decode(data.draw(registers(length))), str)


@pytest.mark.parametrize("byte_order", ORDERS)
@FAST
@given(bit=st.integers(0, 15), word=REGISTER)
def test_bit_round_trip(byte_order: Order, bit: int, word: int) -> None:
    codec = TagCodec(DataType.BOOL, bit=bit, byte_order=byte_order)
    as_value = word if byte_order == "big" else int.from_bytes(word.to_bytes(2, "little"), "big")
    assert codec.decode([word]) is bool(as_value >> bit & 1)
    assert codec.decode(codec.encode(True)) is True
    assert codec.decode(codec.encode(False)) is False


@pytest.mark.parametrize(("byte_order", "word_order"), ORDER_PAIRS)
@pytest.mark.parametrize("dt", list(INT_RANGES))
@FAST
@given(
    scale=st.sampled_from([0.5, 0.25, 2.0, 10.0, -1.0, 1.0]),
    offset=st.integers(-1000, 1000).map(float),
    data=st.data(),
)
def test_scaled_integer_round_trip_where_exact(
    dt: DataType, byte_order: Order, word_order: Order, scale: float, offset: float, data: Any
) -> None:
    codec = TagCodec(dt, byte_order=byte_order, word_order=word_order, scale=scale, offset=offset)
    lo, hi = INT_RANGES[dt]
    # Keep raw * scale + offset exact in a double.
    raw = data.draw(st.integers(max(lo, -(2**40)), min(hi, 2**40)))
    words = codec.encode_raw(raw)
    value = codec.decode(words)
    assert value == raw * scale + offset
    assert codec.encode(value) == words


@pytest.mark.parametrize("dt", list(FLOAT_WIDTHS))
@FAST
@given(raw=st.integers(-(2**20), 2**20).map(float))
def test_scaled_float_round_trip_where_exact(dt: DataType, raw: float) -> None:
    codec = TagCodec(dt, scale=0.5, offset=-3.0)
    assert codec.encode(codec.decode(codec.encode_raw(raw))) == codec.encode_raw(raw)


def test_encode_rounds_integers_to_nearest() -> None:
    codec = TagCodec(DataType.INT16, scale=0.1)
    assert codec.encode(12.3) == [123]
    assert codec.encode(-0.1) == [0xFFFF]
    assert TagCodec(DataType.UINT16).encode(2.6) == [3]


@pytest.mark.parametrize("byte_order", ORDERS)
@pytest.mark.parametrize("byte", BYTES)
@pytest.mark.parametrize("dt", list(BYTE_TYPES))
@FAST
@given(data=st.data())
def test_byte_round_trip(
    dt: DataType, byte: Literal["high", "low"], byte_order: Order, data: Any
) -> None:
    codec = TagCodec(dt, byte=byte, byte_order=byte_order)
    value = data.draw(st.integers(*BYTE_TYPES[dt]))
    (word,) = codec.encode(value)
    assert same(codec.decode([word]), value)
    # Only its own byte is set, so two byte tags of one register can be merged.
    other = TagCodec(dt, byte="low" if byte == "high" else "high", byte_order=byte_order)
    assert other.decode([word]) == 0
    # And any register: the byte is read, the other byte ignored.
    word = data.draw(REGISTER)
    as_value = word if byte_order == "big" else int.from_bytes(word.to_bytes(2, "little"), "big")
    unsigned = (as_value >> 8 if byte == "high" else as_value) & 0xFF
    want = unsigned - 256 if dt is DataType.INT8 and unsigned > 127 else unsigned
    assert codec.decode([word]) == want


@pytest.mark.parametrize(
    ("codec", "mask"),
    [
        (TagCodec(DataType.BOOL, bit=3), 0x0008),
        (TagCodec(DataType.BOOL, bit=0, byte_order="little"), 0x0100),
        (TagCodec(DataType.UINT16, bit=4, bits=3), 0x0070),
        (TagCodec(DataType.UINT16, bit=4, bits=8, byte_order="little"), 0xF00F),
        (TagCodec(DataType.INT8, byte="high"), 0xFF00),
        (TagCodec(DataType.UINT8, byte="high", byte_order="little"), 0x00FF),
        (TagCodec(DataType.UINT16), None),
        (TagCodec(DataType.BOOL), None),
        (TagCodec(DataType.BCD32), None),
    ],
)
def test_wire_mask_names_the_bits_a_part_of_a_register_holds(
    codec: TagCodec, mask: int | None
) -> None:
    assert codec.wire_mask == mask
    if mask is not None:  # what it encodes never touches the other bits
        for value in (0, 1, 5, -1):
            try:
                (word,) = codec.encode(value if codec.type is not DataType.BOOL else bool(value))
            except ValueError:
                continue
            assert word & ~mask == 0


@pytest.mark.parametrize("byte_order", ORDERS)
@FAST
@given(data=st.data())
def test_bit_field_round_trip(byte_order: Order, data: Any) -> None:
    bit = data.draw(st.integers(0, 15))
    bits = data.draw(st.integers(1, 16 - bit))
    codec = TagCodec(DataType.UINT16, bit=bit, bits=bits, byte_order=byte_order)
    value = data.draw(st.integers(0, 2**bits - 1))
    assert codec.decode(codec.encode(value)) == value
    word = data.draw(REGISTER)
    as_value = word if byte_order == "big" else int.from_bytes(word.to_bytes(2, "little"), "big")
    assert codec.decode([word]) == (as_value >> bit) & (2**bits - 1)
    with pytest.raises(ValueError, match=f"{bits}-bit field"):
        codec.encode(2**bits)


@pytest.mark.parametrize("byte_order", ORDERS)
@FAST
@given(value=st.floats(width=16))
def test_float16_round_trip_is_bitwise(byte_order: Order, value: float) -> None:
    codec = TagCodec(DataType.FLOAT16, byte_order=byte_order)
    assert same(codec.decode(codec.encode(value)), value)
    (word,) = codec.encode(value)
    assert codec.encode(codec.decode([word])) == [word] or math.isnan(value)


@pytest.mark.parametrize(("byte_order", "word_order"), ORDER_PAIRS)
@pytest.mark.parametrize("dt", list(BCD_TYPES))
@FAST
@given(data=st.data())
def test_bcd_round_trip_and_invalid_digits(
    dt: DataType, byte_order: Order, word_order: Order, data: Any
) -> None:
    codec = TagCodec(dt, byte_order=byte_order, word_order=word_order)
    value = data.draw(st.integers(0, BCD_TYPES[dt]))
    assert codec.decode(codec.encode(value)) == value
    # Any registers: a valid BCD pattern round-trips; one with a digit above 9
    # is a DecodeError, never a value.
    words = data.draw(registers(codec.width))
    raw = TagCodec(
        DataType.UINT16 if codec.width == 1 else DataType.UINT32,
        byte_order=byte_order,
        word_order=word_order,
    ).decode(words)
    if all(int(d, 16) <= 9 for d in f"{raw:x}"):
        assert codec.encode(codec.decode(words)) == words
    else:
        with pytest.raises(DecodeError, match="not BCD"):
            codec.decode(words)
        with pytest.raises(DecodeError):
            BlockDecoder(codec.width, [(0, codec)]).decode(words)


# --- errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "words"),
    [
        (TagCodec(DataType.FLOAT32), [1]),
        (TagCodec(DataType.FLOAT32), [1, 2, 3]),
        (TagCodec(DataType.UINT16), []),
        (TagCodec(DataType.INT64, scale=2), [1, 2, 3]),
        (TagCodec(DataType.STRING, length=3), [0x4142]),
        (TagCodec(DataType.BOOL, bit=1), [1, 2]),
    ],
)
def test_wrong_register_count_raises_decode_error(codec: TagCodec, words: list[int]) -> None:
    with pytest.raises(
        DecodeError, match=f"expected {codec.width} registers, got {len(words)}"
    ) as info:
        codec.decode(words)
    assert (info.value.expected, info.value.got, info.value.index) == (
        codec.width,
        len(words),
        None,
    )
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", [65536, -1, 1.5, "1", None])
@pytest.mark.parametrize("dt", [DataType.UINT16, DataType.FLOAT32, DataType.BOOL])
def test_invalid_register_raises_decode_error(dt: DataType, bad: object) -> None:
    codec = TagCodec(dt)
    words = [0] * (codec.width - 1) + [bad]
    with pytest.raises(DecodeError, match=r"not an int in 0\.\.65535") as info:
        codec.decode(words)  # type: ignore[arg-type]
    assert info.value.index == codec.width - 1


@pytest.mark.parametrize(
    ("codec", "value"),
    [
        (TagCodec(DataType.INT16), 32768),
        (TagCodec(DataType.INT16), -32769),
        (TagCodec(DataType.UINT16), -1),
        (TagCodec(DataType.UINT64), 2**64),
        (TagCodec(DataType.INT16, scale=0.1), 3276.8),
        (TagCodec(DataType.UINT16, offset=10), 9),
        (TagCodec(DataType.INT32), math.nan),
        (TagCodec(DataType.INT32), math.inf),
        (TagCodec(DataType.FLOAT32), 1e39),
        (TagCodec(DataType.FLOAT64), 10**400),
        (TagCodec(DataType.STRING, length=1), "ABC"),
        (TagCodec(DataType.STRING, length=2, string_encoding="ascii"), "é"),
        (TagCodec(DataType.INT8, byte="low"), 128),
        (TagCodec(DataType.UINT8, byte="high"), -1),
        (TagCodec(DataType.FLOAT16), 65520.0),  # rounds past the largest half
        (TagCodec(DataType.BCD16), 10000),
        (TagCodec(DataType.BCD32), -1),
        (TagCodec(DataType.UINT16, bit=2, bits=2), 4),
    ],
    ids=lambda x: x.type if isinstance(x, TagCodec) else repr(x)[:20],
)
def test_encode_out_of_range_raises_value_error(codec: TagCodec, value: Value) -> None:
    with pytest.raises(ValueError):
        codec.encode(value)


@pytest.mark.parametrize(
    ("codec", "value"),
    [
        (TagCodec(DataType.INT16), "1"),
        (TagCodec(DataType.FLOAT32), "1.0"),
        (TagCodec(DataType.STRING, length=2), 12),
        (TagCodec(DataType.BOOL), 2),
        (TagCodec(DataType.BOOL), "true"),
    ],
)
def test_encode_wrong_kind_raises_type_error(codec: TagCodec, value: Value) -> None:
    with pytest.raises(TypeError):
        codec.encode(value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "int16", "bit": 3}, "bit applies to type bool only"),
        ({"type": "bool", "bit": 16}, "bit must be an int in 0..15"),
        ({"type": "bool", "bit": -1}, "bit must be an int in 0..15"),
        ({"type": "int32", "length": 2}, "length applies to type string only"),
        ({"type": "string"}, "string needs a length"),
        ({"type": "string", "length": 0}, "string needs a length"),
        ({"type": "string", "length": 2, "scale": 2.0}, "numeric types only"),
        ({"type": "bool", "offset": 1.0}, "numeric types only"),
        ({"type": "int16", "scale": 0.0}, "non-zero"),
        ({"type": "int16", "scale": math.nan}, "finite"),
        ({"type": "int16", "offset": math.inf}, "finite"),
        ({"type": "int16", "byte_order": "middle"}, "byte_order must be"),
        ({"type": "int16", "word_order": "BIG"}, "word_order must be"),
        ({"type": "string", "length": 2, "string_encoding": "klingon"}, "unknown string_encoding"),
        ({"type": "int128"}, "int128"),
        ({"type": "int8"}, "byte must be high or low"),
        ({"type": "uint8", "byte": "middle"}, "byte must be high or low"),
        ({"type": "int16", "byte": "high"}, "byte applies to types int8 and uint8 only"),
        ({"type": "uint16", "bits": 3}, "bits applies to a bit field only"),
        ({"type": "int16", "bit": 2, "bits": 3}, "bit applies to type bool only"),
        ({"type": "uint16", "bit": 14, "bits": 3}, r"bits must be 1\.\.2 from bit 14"),
        ({"type": "uint16", "bit": 0, "bits": 0}, r"bits must be 1\.\.16"),
    ],
)
def test_invalid_codec_fails_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TagCodec(**kwargs)


# --- codec_for and dataclass behaviour ---------------------------------------


def _tag(**overrides: Any) -> SimpleNamespace:
    fields = {
        "type": "float32",
        "bit": None,
        "length": None,
        "byte_order": "big",
        "word_order": "little",
        "scale": 1.0,
        "offset": 0.0,
    }
    return SimpleNamespace(**(fields | overrides))


def test_codec_for_reads_tag_attributes() -> None:
    codec = codec_for(_tag())
    assert codec == TagCodec(DataType.FLOAT32, word_order="little")
    assert codec.type is DataType.FLOAT32
    assert codec.decode([0xE979, 0x42F6]) == F32_123_456
    text = codec_for(_tag(type="string", length=2, word_order="big", string_encoding="utf-8"))
    assert text.string_encoding == "utf-8"
    with pytest.raises(ValueError, match="bit applies"):
        codec_for(_tag(bit=2))


def test_codec_is_frozen_and_hashable() -> None:
    codec = TagCodec("int16", scale=2)  # type: ignore[arg-type]  # a str type is accepted
    assert codec == TagCodec(DataType.INT16, scale=2.0)
    assert len({codec, TagCodec(DataType.INT16, scale=2.0)}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        codec.scale = 3.0  # type: ignore[misc]


def test_codec_survives_pickle_and_replace() -> None:
    codec = TagCodec(DataType.FLOAT32, word_order="little", scale=2.0)
    clone = pickle.loads(pickle.dumps(codec))
    assert clone == codec
    assert clone.decode([0xE979, 0x42F6]) == codec.decode([0xE979, 0x42F6])
    swapped = dataclasses.replace(codec, word_order="big")
    assert swapped.decode([0x42F6, 0xE979]) == codec.decode([0xE979, 0x42F6])


# --- BlockDecoder -----------------------------------------------------------


def test_block_decoder_decodes_mixed_fields_in_field_order() -> None:
    block = [0x42F6, 0xE979, 0, 0, 0x0102, 0xFFFF, 0xFFFE, 0x4142, 0x4300, 0x0009]
    fields = [
        (5, TagCodec(DataType.INT32)),
        (0, TagCodec(DataType.FLOAT32)),
        (4, TagCodec(DataType.UINT16, byte_order="little")),
        (9, TagCodec(DataType.BOOL, bit=3)),
        (9, TagCodec(DataType.BOOL, bit=2)),
        (9, TagCodec(DataType.UINT16, scale=0.5)),
        (7, TagCodec(DataType.STRING, length=2)),
        (0, TagCodec(DataType.UINT32, word_order="little")),
    ]
    assert BlockDecoder(len(block), fields).decode(block) == [
        -2,
        F32_123_456,
        0x0201,
        True,
        False,
        4.5,
        "ABC",
        0xE97942F6,
    ]


def test_block_decoder_checks_layout_and_registers() -> None:
    with pytest.raises(ValueError, match="does not fit a block of 4"):
        BlockDecoder(4, [(3, TagCodec(DataType.FLOAT32))])
    decoder = BlockDecoder(4, [(2, TagCodec(DataType.FLOAT32))])
    with pytest.raises(DecodeError) as info:
        decoder.decode([0, 0, 0])
    assert (info.value.expected, info.value.got) == (4, 3)
    with pytest.raises(DecodeError) as info:
        decoder.decode([0, 0, 70000, 0])
    assert info.value.index == 2
    assert BlockDecoder(3, []).decode([1, 2, 3]) == []


@st.composite
def _codecs(draw: st.DrawFn) -> TagCodec:
    dt = draw(st.sampled_from(list(DataType)))
    kwargs: dict[str, Any] = {
        "byte_order": draw(st.sampled_from(ORDERS)),
        "word_order": draw(st.sampled_from(ORDERS)),
    }
    if dt is DataType.STRING:
        kwargs["length"] = draw(st.integers(1, 4))
    elif dt is DataType.BOOL:
        kwargs["bit"] = draw(st.none() | st.integers(0, 15))
        return TagCodec(dt, **kwargs)
    if dt in BYTE_TYPES:
        kwargs["byte"] = draw(st.sampled_from(BYTES))
    elif dt is DataType.UINT16 and draw(st.booleans()):
        kwargs["bit"] = draw(st.integers(0, 15))
        kwargs["bits"] = draw(st.integers(1, 16 - kwargs["bit"]))
    if dt is not DataType.STRING and draw(st.booleans()):
        kwargs["scale"] = draw(st.sampled_from([0.1, 2.0, -1.0]))
        kwargs["offset"] = draw(st.sampled_from([0.0, 5.5]))
    return TagCodec(dt, **kwargs)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_block_decoder_matches_per_tag_decode(data: Any) -> None:
    count = data.draw(st.integers(4, 40))
    codecs = data.draw(st.lists(_codecs(), max_size=12))
    fields = [(data.draw(st.integers(0, count - c.width)), c) for c in codecs]
    block = data.draw(registers(count))
    decoder = BlockDecoder(count, fields)
    try:
        want = [c.decode(block[start : start + c.width]) for start, c in fields]
    except DecodeError:  # a BCD field with a digit above 9: the block refuses too
        with pytest.raises(DecodeError):
            decoder.decode(block)
        return
    got = decoder.decode(block)
    assert len(got) == len(want)
    assert all(same(g, w) for g, w in zip(got, want, strict=True))
