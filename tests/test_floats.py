"""Float32 values in JSON: the shortest repr that round-trips in float32."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeopt.floats import as_float16, as_float32, shortest_float16, shortest_float32


def f32(x: float) -> bytes:
    return struct.pack("<f", x)


@pytest.mark.parametrize(
    ("written", "expected"),
    [("17.97", "17.97"), ("230.6", "230.6"), ("0.1", "0.1"), ("-1e-07", "-1e-07"), ("50", "50.0")],
)
def test_a_float32_register_prints_as_written(written: str, expected: str):
    decoded = as_float32(float(written))  # what a float32 register decodes to
    assert repr(decoded) != expected or written == "50"  # the long double it decodes to
    assert repr(shortest_float32(decoded)) == expected


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_shortest_is_the_same_float32_and_never_longer(value: float):
    short = shortest_float32(value)
    assert f32(short) == f32(value)
    assert len(repr(short)) <= len(repr(value))


def test_the_largest_float32_values_do_not_overflow():
    largest = as_float32(3.4028234663852886e38)
    assert shortest_float32(largest) == 3.4028235e38
    assert f32(shortest_float32(3.4025001647762064e38)) == f32(3.4025001647762064e38)


def test_nan_and_infinities_pass_through():
    assert math.isnan(shortest_float32(math.nan))
    assert shortest_float32(math.inf) == math.inf
    assert shortest_float32(-math.inf) == -math.inf


@given(st.floats(width=16, allow_nan=False, allow_infinity=False))
def test_shortest_float16_is_the_same_float16_and_never_longer(value: float):
    short = shortest_float16(value)
    assert struct.pack("<e", short) == struct.pack("<e", value)
    assert len(repr(short)) <= len(repr(value))


def test_a_float16_register_prints_as_written():
    assert repr(shortest_float16(as_float16(0.1))) == "0.1"
    assert shortest_float16(as_float16(65504.0)) == 65500.0  # the largest float16, no overflow
