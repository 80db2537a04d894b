"""Warm/cold codecs and chunks: random round trips (hypothesis), bit for bit, and honest choices."""

from __future__ import annotations

import enum
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeopt.storage import codecs
from edgeopt.storage.aggregates import Aggregates, aggregate_points, rebucket
from edgeopt.storage.bitstream import BitReader, BitWriter
from edgeopt.storage.chunks import (
    ALL_COMPRESSORS,
    FORMAT_VERSION,
    ChunkType,
    Rows,
    decode_aggregates,
    decode_samples,
    encode_aggregates,
    encode_samples,
    read_header,
)
from edgeopt.storage.codecs import CodecError, Compressor, FloatCodec

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = 1_700_000_000.0

# Any 64-bit pattern as a float: NaN payloads, signalling NaNs, ±inf, -0.0, subnormals.
any_float = st.integers(0, 2**64 - 1).map(lambda b: struct.unpack("<d", struct.pack("<Q", b))[0])
float_values = st.one_of(
    any_float,
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, -5e-324, 1.5, 2.0**1023]),
)
int64 = st.integers(-(2**63), 2**63 - 1)


def bits(values: np.ndarray) -> list[int]:
    return np.ascontiguousarray(values, dtype=np.float64).view(np.uint64).tolist()


def same_value(a: object, b: object) -> bool:
    """Equal and of the same type; floats compared bit for bit."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)  # type: ignore[arg-type]
    return a == b


def rows_equal(a: Rows, b: Rows) -> bool:
    return (
        bits(a.ts) == bits(b.ts)
        and all(same_value(x, y) for x, y in zip(a.values, b.values, strict=True))
        and a.quality.tolist() == b.quality.tolist()
        and a.kind.tolist() == b.kind.tolist()
    )


# --- bit-stream and varints ------------------------------------------------------


@FAST
@given(
    st.lists(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, 2**n - 1))))
)
def test_bitstream_round_trips_fields_of_any_width(fields: list[tuple[int, int]]) -> None:
    writer = BitWriter()
    for width, value in fields:
        writer.write(value, width)
    assert writer.bit_length == sum(w for w, _ in fields)
    data = writer.getvalue()
    assert len(data) == (writer.bit_length + 7) // 8
    reader = BitReader(data)
    assert [reader.read(w) for w, _ in fields] == [v for _, v in fields]
    assert reader.bits_left < 8  # only padding left


def test_bitstream_fills_bytes_from_the_top_and_pads_with_zeros() -> None:
    writer = BitWriter()
    writer.write(0b110, 3)
    assert writer.getvalue() == bytes([0b1100_0000])
    with pytest.raises(EOFError):
        BitReader(b"\x01").read(9)


@FAST
@given(st.lists(st.integers(0, 2**64 - 1), max_size=300))
def test_uvarints_vector_and_scalar_agree_and_round_trip(values: list[int]) -> None:
    encoded = codecs.encode_uvarints(np.array(values, dtype=np.uint64))
    scalar = bytearray()
    for v in values:
        codecs.put_uvarint(scalar, v)
    assert encoded == bytes(scalar)
    decoded, end = codecs.decode_uvarints(encoded, 0, len(values), stream="test")
    assert decoded.tolist() == values and end == len(encoded)
    pos = 0
    for v in values:
        got, pos = codecs.get_uvarint(encoded, pos)
        assert got == v


@FAST
@given(st.lists(int64, max_size=200))
def test_zigzag_round_trips_and_keeps_small_magnitudes_small(values: list[int]) -> None:
    a = np.array(values, dtype=np.int64)
    assert codecs.unzigzag(codecs.zigzag(a)).tolist() == values
    assert codecs.zigzag(np.array([0, -1, 1, -2, 2])).tolist() == [0, 1, 2, 3, 4]


def test_truncated_varints_are_codec_errors() -> None:
    with pytest.raises(CodecError, match="expected 2 varints"):
        codecs.decode_uvarints(b"\x80\x01\x80", 0, 2, stream="test")
    with pytest.raises(CodecError):
        codecs.get_uvarint(b"\x80", 0)


# --- timestamps ----------------------------------------------------------------------


@FAST
@given(st.lists(any_float, max_size=300))
def test_timestamps_round_trip_any_bit_pattern(values: list[float]) -> None:
    ts = np.array(values, dtype=np.float64)
    assert bits(codecs.decode_timestamps(codecs.encode_timestamps(ts), ts.size)) == bits(ts)


@FAST
@given(
    st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=300),
    st.floats(1e8, 4e9),
)
def test_irregular_timestamps_with_huge_jumps_round_trip(
    offsets: list[float], start: float
) -> None:
    ts = start + np.cumsum(np.array(offsets)) * np.array([1, 1e5] * len(offsets))[: len(offsets)]
    assert bits(codecs.decode_timestamps(codecs.encode_timestamps(ts), ts.size)) == bits(ts)


def test_regular_timestamps_cost_a_byte_each_before_compression() -> None:
    ts = T0 + np.arange(3600.0)
    stream = codecs.encode_timestamps(ts)
    assert len(stream) <= 1 + 8 + 4 + 3600  # id, first, step, one zero byte per delta
    gappy = T0 + np.array([0, 1, 2, 5, 6, 7, 100, 101], dtype=np.float64)  # missed polls
    assert len(codecs.encode_timestamps(gappy)) < 1 + 8 + 4 + 8 * 2


# --- integers, floats, strings, codes --------------------------------------------------


@FAST
@given(st.lists(int64, max_size=300))
def test_integers_round_trip_including_int64_extremes(values: list[int]) -> None:
    a = np.array(values, dtype=np.int64)
    assert codecs.decode_ints(codecs.encode_ints(a), a.size).tolist() == values


@FAST
@given(st.lists(float_values, max_size=200))
def test_every_float_codec_round_trips_any_float_bit_for_bit(values: list[float]) -> None:
    v = np.array(values, dtype=np.float64)
    streams = [codecs.encode_xor(v, 64), codecs.encode_shuffle(v, 64)]
    if codecs.is_float32(v):
        streams += [codecs.encode_xor(v, 32), codecs.encode_shuffle(v, 32)]
    found = codecs.find_decimal(v)
    if found is not None:
        streams.append(codecs.encode_decimal(*found))
    for stream in [*streams, *codecs.float_candidates(v)]:
        assert bits(codecs.decode_floats(stream, v.size)) == bits(v), stream[:2]


@FAST
@given(
    st.lists(st.integers(-(10**9), 10**9), min_size=1, max_size=200),
    st.integers(0, codecs.MAX_DECIMALS),
    st.sampled_from(list(codecs.DecimalOp)),
)
def test_decimal_values_are_found_and_round_trip(
    ints: list[int], digits: int, op: codecs.DecimalOp
) -> None:
    # Values as Modbus scaling makes them: raw * 0.1, raw / 10, float32 registers.
    v = codecs._rebuild_decimal(np.array(ints, dtype=np.float64), op, digits)
    found = codecs.find_decimal(v)
    assert found is not None
    assert found[1] <= digits  # the fewest digits that rebuild every value
    stream = codecs.encode_decimal(*found)
    assert bits(codecs.decode_floats(stream, v.size)) == bits(v)


def test_decimal_is_refused_for_negative_zero_nan_and_long_fractions() -> None:
    assert codecs.find_decimal(np.array([1.0, -0.0])) is None
    assert codecs.find_decimal(np.array([1.0, math.nan])) is None
    assert codecs.find_decimal(np.array([math.pi])) is None
    assert codecs.find_decimal(np.array([29.700000000000003, 56.400000000000006]))[:2] == (
        codecs.DecimalOp.MUL,
        1,
    )


@FAST
@given(st.lists(st.text(max_size=12), max_size=100))
def test_strings_round_trip(values: list[str]) -> None:
    assert codecs.decode_strings(codecs.encode_strings(values), len(values)) == values


def test_strings_keep_unpaired_surrogates() -> None:
    values = ["\ud800", "ok", "\udfff", "ok"]
    assert codecs.decode_strings(codecs.encode_strings(values), 4) == values


@FAST
@given(st.lists(st.integers(0, 300), max_size=300))
def test_code_runs_round_trip(values: list[int]) -> None:
    stream = codecs.encode_runs(values)
    assert codecs.decode_runs(stream, len(values), stream="test").tolist() == values


@FAST
@given(st.binary(max_size=3000), st.sampled_from(list(Compressor)))
def test_every_compressor_round_trips(data: bytes, method: Compressor) -> None:
    packed = codecs.compress(method, data)
    assert codecs.decompress(method, packed, len(data)) == data
    if data:
        with pytest.raises(CodecError):
            codecs.decompress(method, packed, len(data) + 1)


# --- whole chunks ----------------------------------------------------------------------

stored_value = st.one_of(
    st.none(),
    int64,
    float_values,
    st.text(max_size=8),
)


@st.composite
def rows_strategy(draw: st.DrawFn, min_size: int = 1, max_size: int = 120) -> Rows:
    n = draw(st.integers(min_size, max_size))
    ts = draw(st.lists(any_float, min_size=n, max_size=n))
    mode = draw(st.sampled_from(["mixed", "floats", "ints", "strings"]))
    element = {
        "mixed": stored_value,
        "floats": float_values,
        "ints": int64,
        "strings": st.text(max_size=8),
    }[mode]
    values = draw(st.lists(element, min_size=n, max_size=n))
    quality = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    kind = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    return Rows(np.array(ts), values, np.array(quality, np.uint8), np.array(kind, np.uint8))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows_strategy())
def test_samples_chunks_round_trip_values_quality_and_kind_exactly(rows: Rows) -> None:
    encoded = encode_samples(rows)
    header = read_header(encoded.blob)
    assert (header.version, header.type, header.count) == (
        FORMAT_VERSION,
        ChunkType.SAMPLES,
        len(rows),
    )
    assert rows_equal(decode_samples(encoded.blob), rows)


def test_hot_rows_come_back_as_the_same_sample_values() -> None:
    records = [
        (T0, 1, 0, 1),  # True, stored as 1 with kind BOOL
        (T0 + 1, 0, 1, 1),  # False, stale
        (T0 + 2, str(2**70), 0, 2),  # a uint64 beyond int64, stored as text
        (T0 + 3, None, 2, 3),  # NaN, stored as NULL, quality bad
        (T0 + 4, None, 2, 0),  # no value (a failed read)
        (T0 + 5, -0.0, 0, 0),
        (T0 + 6.25, "running", 0, 0),
        (T0 + 7, 2**63 - 1, 0, 0),
    ]
    rows = Rows.from_records(records)
    back = decode_samples(encode_samples(rows).blob)
    assert back.records() == records
    decoded = back.decoded()
    assert decoded[:3] == [True, False, 2**70] and type(decoded[0]) is bool
    assert math.isnan(decoded[3]) and decoded[4] is None  # type: ignore[arg-type]
    assert struct.pack("<d", decoded[5]) == struct.pack("<d", -0.0)  # type: ignore[arg-type]


def test_subclassed_values_are_stored_by_their_base_class() -> None:
    class Level(enum.IntEnum):
        LOW = 1

    n = 4
    ts = T0 + np.arange(n, dtype=np.float64)
    zeros = np.zeros(n, np.uint8)
    plain = [1.5, 1, 1, "x"]
    odd = [np.float64(1.5), Level.LOW, True, "x"]  # float and int subclasses (bool is one)
    encoded = encode_samples(Rows(ts, odd, zeros, zeros))  # type: ignore[arg-type]
    assert encoded.blob == encode_samples(Rows(ts, plain, zeros, zeros)).blob  # type: ignore[arg-type]
    assert decode_samples(encoded.blob).values == plain
    alone = encode_samples(Rows(ts[:2], [np.float64(0.5), np.float64(2.5)], zeros[:2], zeros[:2]))  # type: ignore[list-item]
    assert alone.blob == encode_samples(Rows(ts[:2], [0.5, 2.5], zeros[:2], zeros[:2])).blob
    with pytest.raises(TypeError, match="bytes"):
        encode_samples(Rows(ts[:1], [b"raw"], zeros[:1], zeros[:1]))  # type: ignore[list-item]


def test_chunk_codec_choice_is_the_smallest_of_every_candidate_and_compressor() -> None:
    rng = np.random.default_rng(3)
    n = 600
    ts = T0 + np.arange(n, dtype=np.float64)
    cases = {
        "decimal": np.round(50 + np.cumsum(rng.normal(0, 0.1, n)), 1),
        "float32": np.cumsum(rng.normal(0, 0.1, n)).astype(np.float32).astype(np.float64),
        "float64": 50 + np.cumsum(rng.normal(0, 0.1, n)),
        "constant": np.full(n, 7.25),
    }
    for name, values in cases.items():
        rows = Rows(ts, values.tolist(), np.zeros(n, np.uint8), np.zeros(n, np.uint8))
        encoded = encode_samples(rows)
        # Every single alternative is at least as large.
        for method in ALL_COMPRESSORS:
            alone = encode_samples(rows, compressors=[method])
            assert len(encoded.blob) <= len(alone.blob), (name, method)
        assert rows_equal(decode_samples(encoded.blob), rows)
    decimal = encode_samples(
        Rows(ts, cases["decimal"].tolist(), np.zeros(n, np.uint8), np.zeros(n, np.uint8))
    )
    assert decimal.header.float_codec == FloatCodec.DECIMAL
    assert decimal.codec.startswith("decimal1/")
    assert len(decimal.blob) / n < 1.0  # a 0.1-resolution random walk at 1 Hz: under 1 B/sample


def test_corrupt_and_newer_chunks_are_refused_with_codec_errors() -> None:
    rows = Rows(np.array([T0, T0 + 1]), [1.5, 2.5], np.zeros(2, np.uint8), np.zeros(2, np.uint8))
    blob = encode_samples(rows).blob
    with pytest.raises(CodecError, match="version"):
        decode_samples(bytes([FORMAT_VERSION + 1]) + blob[1:])
    with pytest.raises(CodecError):
        decode_samples(blob[:-1] if len(blob) > 8 else blob[:4])
    with pytest.raises(CodecError, match="expected a AGGREGATES chunk"):
        decode_aggregates(blob)


# --- aggregates ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 7200), st.one_of(st.none(), st.booleans(), int64, float_values)),
        min_size=1,
        max_size=150,
    ),
    st.sampled_from([1.0, 60.0, 900.0]),
)
def test_aggregates_match_a_plain_python_computation_and_round_trip(
    points: list[tuple[float, object]], resolution: float
) -> None:
    ts = np.array([T0 + t for t, _ in points])
    values = [v for _, v in points]
    agg = aggregate_points(ts, values, resolution)
    assert agg.samples == len(points)
    for start, count, numeric, lo, hi, mean, last in agg.rows():
        inside = [
            (t, v)
            for t, v in zip(ts.tolist(), values, strict=True)
            if math.floor(t / resolution) * resolution == start
        ]
        nums = [
            float(v)
            for _, v in sorted(inside, key=lambda p: p[0])
            if isinstance(v, int | float) and float(v) == float(v)
        ]  # type: ignore[arg-type]
        assert count == len(inside) and numeric == len(nums)
        if nums:
            assert lo == min(nums) and hi == max(nums)
            assert same_value(last, nums[-1]) or (last == nums[-1])
            if all(math.isfinite(x) and abs(x) < 1e300 for x in nums):
                assert mean == pytest.approx(sum(nums) / len(nums), rel=1e-9, abs=1e-9)
        else:
            assert math.isnan(lo) and math.isnan(mean) and math.isnan(last)
    back = decode_aggregates(encode_aggregates(agg).blob)
    assert back.resolution == agg.resolution
    for name in ("start", "min", "max", "mean", "last"):
        assert bits(getattr(back, name)) == bits(getattr(agg, name)), name
    assert (
        back.count.tolist() == agg.count.tolist() and back.numeric.tolist() == agg.numeric.tolist()
    )


def test_rebucket_merges_partial_and_coarser_buckets() -> None:
    ts = T0 - T0 % 3600 + np.arange(0, 7200, 30.0)
    values = np.sin(ts / 100).tolist()
    fine = aggregate_points(ts, values, 60.0)
    coarse = rebucket(fine, 3600.0)
    direct = aggregate_points(ts, values, 3600.0)
    assert coarse.start.tolist() == direct.start.tolist()
    assert coarse.count.tolist() == direct.count.tolist()
    assert coarse.min.tolist() == direct.min.tolist() and coarse.max.tolist() == direct.max.tolist()
    assert coarse.last.tolist() == direct.last.tolist()
    assert np.allclose(coarse.mean, direct.mean)
    # Two partial aggregates of the same buckets merge into one each.
    half = aggregate_points(ts[::2], values[::2], 60.0)
    other = aggregate_points(ts[1::2], values[1::2], 60.0)
    merged = rebucket(
        Aggregates(
            60.0,
            np.concatenate([half.start, other.start]),
            np.concatenate([half.count, other.count]),
            np.concatenate([half.numeric, other.numeric]),
            np.concatenate([half.min, other.min]),
            np.concatenate([half.max, other.max]),
            np.concatenate([half.mean, other.mean]),
            np.concatenate([half.last, other.last]),
        ),
        60.0,
    )
    assert merged.count.tolist() == fine.count.tolist()
    assert merged.min.tolist() == fine.min.tolist() and np.allclose(merged.mean, fine.mean)


def test_hypothesis_sees_nan_payloads() -> None:
    # Guard the generator: payload-carrying NaNs must come back with their payload.
    payload = struct.unpack("<d", struct.pack("<Q", 0x7FF0_0000_0000_0001))[0]
    v = np.array([payload, -math.nan, 1.0])
    for stream in codecs.float_candidates(v):
        assert bits(codecs.decode_floats(stream, 3)) == bits(v)
