"""A tiny bit-stream: write and read unsigned fields of 1..64 bits, most significant first.

The Gorilla XOR float codec (`edgeopt.storage.codecs`) packs its control codes
and meaningful bits with it. Bits fill each byte from the top (bit 7) down, so
`0b110` written to an empty stream is the byte `0b1100_0000`. The last byte is
padded with zero bits; the reader never needs to know where the data ends
because the chunk header carries the number of values.

Both ends keep a Python int as a small bit buffer and move whole bytes at a
time: bit-by-bit loops are far too slow in Python, and one growing big int
would make every shift cost O(stream length).
"""

from __future__ import annotations


class BitWriter:
    """Appends bit fields to a byte string."""

    __slots__ = ("_acc", "_nbits", "_out")

    def __init__(self) -> None:
        # Whole bytes already written.
        self._out = bytearray()
        # Bits not yet written out, right-aligned: the oldest bit is the
        # highest of the lowest `_nbits` bits. Kept under 64 + 64 bits.
        self._acc = 0
        # How many bits `_acc` holds.
        self._nbits = 0

    def write(self, value: int, nbits: int) -> None:
        """Append the lowest `nbits` bits of `value` (0 <= value < 2**nbits)."""
        self._acc = (self._acc << nbits) | value
        self._nbits += nbits
        if self._nbits >= 64:
            self._drain()

    def write_bit(self, bit: int) -> None:
        """Append one bit (0 or 1)."""
        self.write(bit, 1)

    def _drain(self) -> None:
        # Move every complete byte to `_out`, keep the 0..7 bits left over.
        whole, rest = divmod(self._nbits, 8)
        self._out += (self._acc >> rest).to_bytes(whole, "big")
        self._acc &= (1 << rest) - 1
        self._nbits = rest

    @property
    def bit_length(self) -> int:
        """Bits written so far (before padding)."""
        return len(self._out) * 8 + self._nbits

    def getvalue(self) -> bytes:
        """The stream, its last byte padded with zero bits. The writer stays usable."""
        self._drain()
        if not self._nbits:
            return bytes(self._out)
        pad = 8 - self._nbits
        return bytes(self._out) + (self._acc << pad).to_bytes(1, "big")


class BitReader:
    """Reads bit fields back from a byte string written by `BitWriter`."""

    __slots__ = ("_acc", "_data", "_nbits", "_pos")

    #: Bytes fetched per refill: enough for any single 64-bit read.
    REFILL = 8

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = bytes(data)
        # Index of the next byte of `_data` not yet moved into `_acc`.
        self._pos = 0
        # Buffered bits not yet read, right-aligned (like BitWriter._acc).
        self._acc = 0
        # How many bits `_acc` holds.
        self._nbits = 0

    def read(self, nbits: int) -> int:
        """The next `nbits` bits as an unsigned int; EOFError past the end."""
        while self._nbits < nbits:
            piece = self._data[self._pos : self._pos + self.REFILL]
            if not piece:
                raise EOFError("bit stream ended early (truncated or corrupt chunk)")
            self._pos += len(piece)
            self._acc = (self._acc << (8 * len(piece))) | int.from_bytes(piece, "big")
            self._nbits += 8 * len(piece)
        self._nbits -= nbits
        value = self._acc >> self._nbits
        self._acc &= (1 << self._nbits) - 1
        return value

    def read_bit(self) -> int:
        """The next bit."""
        return self.read(1)

    @property
    def bits_left(self) -> int:
        """Bits not yet read, padding included."""
        return self._nbits + 8 * (len(self._data) - self._pos)
