"""edgeopt's own decoding of read replies matches pymodbus's, value for value.

The strict framer builds read replies itself (`_read_reply`) rather than
through pymodbus's `DecodePDU.decode`, which formats every reply into a debug
string. For every read function code and payload, both must give the same
registers or bits; replies that are not a read's (exceptions, write echoes)
are left to pymodbus.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pymodbus.pdu import DecodePDU

from edgeopt.modbus.transport import _Expect, _read_reply

DECODER = DecodePDU(False)


@given(fc=st.sampled_from([3, 4]), words=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125))
def test_register_replies_decode_as_pymodbus_does(fc: int, words: list[int]) -> None:
    pdu = bytes([fc, 2 * len(words)]) + b"".join(w.to_bytes(2, "big") for w in words)
    ours = _read_reply(pdu, _Expect(fc, 1, 2 * len(words)))
    theirs = DECODER.decode(pdu)
    assert ours is not None and theirs is not None
    assert type(ours) is type(theirs)
    assert ours.registers == theirs.registers == words
    assert type(ours.registers) is list


@given(fc=st.sampled_from([1, 2]), payload=st.binary(min_size=1, max_size=250))
def test_bit_replies_decode_as_pymodbus_does(fc: int, payload: bytes) -> None:
    pdu = bytes([fc, len(payload)]) + payload
    ours = _read_reply(pdu, _Expect(fc, 1, len(payload)))
    theirs = DECODER.decode(pdu)
    assert ours is not None and theirs is not None
    assert type(ours) is type(theirs)
    assert list(ours.bits) == list(theirs.bits)
    assert len(ours.bits) == 8 * len(payload)


def test_replies_that_are_not_a_reads_are_left_to_pymodbus() -> None:
    exception = bytes([0x83, 2])
    assert _read_reply(exception, _Expect(3, 1, 2)) is None
    echo = bytes([6, 0, 1, 0, 7])  # a write's echo: its request says so
    assert _read_reply(echo, _Expect(6, 1, 5, echo=echo[:3])) is None
    other = bytes([4, 2, 0, 1])  # an input reply where a holding read waits
    assert _read_reply(other, _Expect(3, 1, 2)) is None
