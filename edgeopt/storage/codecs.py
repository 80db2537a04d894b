"""Column codecs of the warm and cold tiers: pure functions from arrays to bytes and back.

A chunk (`edgeopt.storage.chunks`) stores each column of its rows as one
stream; this module turns a column into a stream and back, exactly:

- timestamps: delta-of-delta of the IEEE-754 bit patterns, in zigzag varints;
- integers: delta, zigzag varint;
- floats: the smallest of three transforms, each tried on the chunk's data:
  decimal (the value is an integer times a power of ten, as Modbus scaling
  produces), Gorilla XOR (over a bit-stream), byte-shuffle;
- strings: a dictionary of the distinct strings plus one index per value;
- small codes (quality, value kind, storage class): runs.

Every stream starts with its codec id, so a decoder never guesses; the byte
layouts are specified in docs/chunk-format.md. The general-purpose
compressors applied on top (none, zlib, bz2, lzma, zstd) are here too.

All codecs are lossless on every 64-bit pattern: NaN payloads, ±inf, -0.0 and
subnormals come back bit for bit. Vector work is done with numpy, because a
Python loop per value would make reading a day of one tag cost more than the
50 ms the benchmark allows; only the Gorilla codec is inherently sequential.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Sequence
from enum import IntEnum

import numpy as np
import numpy.typing as npt
import zstandard

from edgeopt.storage.bitstream import BitReader, BitWriter

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
U8 = npt.NDArray[np.uint8]
Buffer = bytes | bytearray | memoryview


class CodecError(ValueError):
    """Raised when a stream or chunk cannot be decoded (corrupt, truncated, or newer format).

    Attributes:
        stream: which part of the chunk was being read ("timestamps", "header", …).
    """

    def __init__(self, message: str, *, stream: str) -> None:
        super().__init__(f"{stream}: {message}")
        self.stream = stream


# --- Varints -------------------------------------------------------------------
# Unsigned LEB128, as in protobuf: 7 bits per byte, least significant group
# first, the high bit set on every byte but the last. A uint64 takes 1..10 bytes.

_MAX_VARINT_BYTES = 10


def put_uvarint(out: bytearray, n: int) -> None:
    """Append the unsigned varint of `n` (0 <= n < 2**64)."""
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def get_uvarint(buf: Buffer, pos: int, *, stream: str = "varint") -> tuple[int, int]:
    """Read one unsigned varint at `pos`; return `(value, next_pos)`."""
    value = 0
    shift = 0
    for _ in range(_MAX_VARINT_BYTES):
        if pos >= len(buf):
            raise CodecError("varint runs past the end", stream=stream)
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise CodecError("varint longer than 10 bytes", stream=stream)


def encode_uvarints(values: U64) -> bytes:
    """The varints of a uint64 array, back to back (vectorized)."""
    u = np.asarray(values, dtype=np.uint64)
    if u.size == 0:
        return b""
    if int(u.max()) < 0x80:  # the common case after delta coding: one byte each
        return u.astype(np.uint8).tobytes()
    # Bytes per value: 1 + the number of 7-bit thresholds it reaches.
    lengths = np.ones(u.size, dtype=np.int64)
    for k in range(1, _MAX_VARINT_BYTES):
        lengths += u >= np.uint64(1 << (7 * k))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    out = np.empty(int(ends[-1]), dtype=np.uint8)
    for k in range(int(lengths.max())):
        has = lengths > k
        group = (u[has] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (lengths[has] > k + 1).astype(np.uint64) << np.uint64(7)
        out[starts[has] + k] = (group | more).astype(np.uint8)
    return out.tobytes()


def decode_uvarints(buf: Buffer, pos: int, count: int, *, stream: str) -> tuple[U64, int]:
    """Read `count` varints starting at `pos`; return `(values, next_pos)` (vectorized)."""
    if count == 0:
        return np.zeros(0, dtype=np.uint64), pos
    raw = np.frombuffer(buf, dtype=np.uint8, offset=pos)
    ends = np.flatnonzero(raw < 0x80)[:count]
    if ends.size < count:
        raise CodecError(f"expected {count} varints, found {ends.size}", stream=stream)
    last = int(ends[-1])
    if last + 1 == count:  # every varint is one byte
        return raw[:count].astype(np.uint64), pos + count
    starts = np.empty(count, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    longest = int(lengths.max())
    if longest > _MAX_VARINT_BYTES:
        raise CodecError("varint longer than 10 bytes", stream=stream)
    values = np.zeros(count, dtype=np.uint64)
    for k in range(longest):
        has = lengths > k
        group = raw[starts[has] + k].astype(np.uint64) & np.uint64(0x7F)
        values[has] |= group << np.uint64(7 * k)
    return values, pos + last + 1


def zigzag(v: I64) -> U64:
    """Map signed to unsigned so small magnitudes stay small: 0,-1,1,-2 → 0,1,2,3."""
    v = np.asarray(v, dtype=np.int64)
    return ((v << np.int64(1)) ^ (v >> np.int64(63))).view(np.uint64)


def unzigzag(u: U64) -> I64:
    """Invert `zigzag`."""
    u = np.asarray(u, dtype=np.uint64)
    return ((u >> np.uint64(1)) ^ (np.uint64(0) - (u & np.uint64(1)))).view(np.int64)


def _delta(v: I64) -> I64:
    """First value, then differences; int64 arithmetic wraps, and so does its inverse."""
    out = np.empty_like(v)
    if v.size:
        out[0] = v[0]
        np.subtract(v[1:], v[:-1], out=out[1:])
    return out


def _undelta(d: I64) -> I64:
    return np.cumsum(d, dtype=np.int64)


# --- Timestamps ------------------------------------------------------------------

#: Codec id of the timestamp stream (the only one so far).
TS_DOD = 1

_INT64_MIN = np.int64(-(2**63))


def encode_timestamps(ts: F64) -> bytes:
    """Delta-of-delta of the timestamps' bit patterns, over their common step.

    A float64 timestamp between 2^30 and 2^31 s (years 2004–2038) is a
    fixed-point number with 2^-22 s (≈ 0.24 µs) resolution, so the int64 bit
    patterns of such timestamps are that fixed-point value plus a constant:
    their differences are exact durations and regular polling gives
    delta-of-deltas of 0. Outside that range it is still lossless, only less
    compact. The deltas are first divided by their greatest common divisor
    (e.g. 1 s = 2^22 units when all gaps are whole seconds), as Gorilla's
    integer-second timestamps would be, so missing polls cost small numbers.
    """
    ts = np.ascontiguousarray(ts, dtype=np.float64)
    out = bytearray([TS_DOD])
    if ts.size == 0:
        return bytes(out)
    bits = ts.view(np.int64)
    out += bits[:1].astype("<i8").tobytes()
    if ts.size == 1:
        return bytes(out)
    deltas = np.diff(bits)
    step = 1
    if not (deltas == _INT64_MIN).any():  # |INT64_MIN| does not fit: keep step 1
        step = int(np.gcd.reduce(deltas)) or 1
    put_uvarint(out, step)
    units = deltas // np.int64(step) if step != 1 else deltas
    out += encode_uvarints(zigzag(_delta(units)))
    return bytes(out)


def decode_timestamps(buf: Buffer, count: int) -> F64:
    """Invert `encode_timestamps` for a stream of `count` timestamps."""
    stream = "timestamps"
    if not buf or buf[0] != TS_DOD:
        raise CodecError(f"unknown codec id {buf[0] if buf else None}", stream=stream)
    if count == 0:
        return np.zeros(0, dtype=np.float64)
    if len(buf) < 9:
        raise CodecError("truncated first timestamp", stream=stream)
    first = np.frombuffer(buf, dtype="<i8", count=1, offset=1).astype(np.int64)
    bits = np.empty(count, dtype=np.int64)
    bits[0] = first[0]
    if count > 1:
        step, pos = get_uvarint(buf, 9, stream=stream)
        zz, _ = decode_uvarints(buf, pos, count - 1, stream=stream)
        deltas = _undelta(unzigzag(zz))
        if step != 1:
            deltas = deltas * np.int64(step)
        np.cumsum(deltas, out=bits[1:])
        bits[1:] += first[0]
    return bits.view(np.float64)


# --- Integers ----------------------------------------------------------------------

#: Codec id of an integer column: delta, then zigzag varint.
INT_DELTA = 1


def encode_ints(values: I64) -> bytes:
    """Delta + zigzag varint: counters and slow registers cost one byte per value."""
    v = np.asarray(values, dtype=np.int64)
    return bytes([INT_DELTA]) + encode_uvarints(zigzag(_delta(v)))


def decode_ints(buf: Buffer, count: int, *, stream: str = "integers") -> I64:
    """Invert `encode_ints`."""
    if not buf or buf[0] != INT_DELTA:
        raise CodecError(f"unknown codec id {buf[0] if buf else None}", stream=stream)
    zz, _ = decode_uvarints(buf, 1, count, stream=stream)
    return _undelta(unzigzag(zz))


# --- Floats --------------------------------------------------------------------------


class FloatCodec(IntEnum):
    """Codec ids of a float column (part of the format: never renumber)."""

    DECIMAL = 1  # value = integer × 10^-d (or ÷ 10^d), optionally rounded to float32
    XOR = 2  # Gorilla: XOR with the previous value, in a bit-stream
    SHUFFLE = 3  # byte-shuffle: all first bytes, then all second bytes, …


class DecimalOp(IntEnum):
    """How a DECIMAL column rebuilds a value from its integer i and digits d."""

    MUL = 0  # i * 1e-d          (what `raw * scale` gives for scale 0.1, 0.01, …)
    DIV = 1  # i / 1e+d          (the correctly rounded decimal)
    MUL32 = 2  # float32(i * 1e-d) (a float32 register holding a decimal)
    DIV32 = 3  # float32(i / 1e+d)


#: Most decimal digits DECIMAL tries; beyond that the integers get big and
#: XOR or shuffle usually win anyway.
MAX_DECIMALS = 9
# Factors as parsed from decimal literals: correctly rounded on every platform,
# so an encoder and a decoder on different machines agree bit for bit.
_POW10 = [float(f"1e{d}") for d in range(MAX_DECIMALS + 1)]
_NEG_POW10 = [float(f"1e-{d}") for d in range(MAX_DECIMALS + 1)]
# Integers beyond 2^53 are not exact in float64 arithmetic.
_MAX_DECIMAL_INT = float(2**53)


def _rebuild_decimal(ints: F64, op: DecimalOp, digits: int) -> F64:
    if op in (DecimalOp.MUL, DecimalOp.MUL32):
        out = ints * _NEG_POW10[digits]
    else:
        out = ints / _POW10[digits]
    if op in (DecimalOp.MUL32, DecimalOp.DIV32):
        out = out.astype(np.float32).astype(np.float64)
    return out


def _same_bits(a: F64, b: F64) -> bool:
    return bool(np.array_equal(a.view(np.int64), b.view(np.int64)))


def find_decimal(values: F64) -> tuple[DecimalOp, int, I64] | None:
    """`(op, digits, ints)` rebuilding every value bit for bit, with the fewest digits.

    None when no such form exists (NaN, ±inf, -0.0, or values that are not
    short decimals): the column then goes to XOR or shuffle.
    """
    v = np.ascontiguousarray(values, dtype=np.float64)
    if v.size == 0 or not np.isfinite(v).all():
        return None
    probe = v[:16]  # reject most candidates on a few values before the full check
    for digits in range(MAX_DECIMALS + 1):
        scaled = np.rint(v * _POW10[digits])
        if float(np.abs(scaled).max()) >= _MAX_DECIMAL_INT:
            return None
        # Check what the decoder will see: the integers, not the rounded floats
        # (-0.0 rounds to -0.0 but its integer is 0, which rebuilds +0.0).
        ints = scaled.astype(np.int64)
        scaled = ints.astype(np.float64)
        for op in DecimalOp:
            if not _same_bits(_rebuild_decimal(scaled[: probe.size], op, digits), probe):
                continue
            if _same_bits(_rebuild_decimal(scaled, op, digits), v):
                return op, digits, ints
    return None


def is_float32(values: F64) -> bool:
    """Whether every value survives float64 → float32 → float64 bit for bit."""
    v = np.ascontiguousarray(values, dtype=np.float64)
    # Beyond float32's range, or a NaN payload float32 cannot hold, is simply "no".
    with np.errstate(over="ignore", invalid="ignore"):
        return _same_bits(v.astype(np.float32).astype(np.float64), v)


def _words(values: F64, width: int) -> npt.NDArray[np.uint64] | npt.NDArray[np.uint32]:
    if width == 32:
        return values.astype(np.float32).view(np.uint32)
    return values.view(np.uint64)


def _from_words(words: npt.NDArray[np.uint64] | npt.NDArray[np.uint32], width: int) -> F64:
    if width == 32:
        return words.astype(np.uint32).view(np.float32).astype(np.float64)
    return words.astype(np.uint64).view(np.float64)


def encode_decimal(op: DecimalOp, digits: int, ints: I64) -> bytes:
    """DECIMAL stream: op, digits, then the integers as delta + zigzag varints."""
    return bytes([FloatCodec.DECIMAL, op, digits]) + encode_ints(ints)[1:]


def encode_xor(values: F64, width: int) -> bytes:
    """Gorilla XOR stream over 64-bit (or, for float32 data, 32-bit) words.

    Per value after the first (which is written whole):
    - `0`: same as the previous value;
    - `10` + bits: the XOR with the previous value fits inside the previous
      window of meaningful bits, so only that window is written;
    - `11` + 5 bits leading zeros + 6 bits (meaningful bits - 1) + the bits:
      a new window.
    Leading zeros are capped at 31 (5 bits), as in Gorilla.
    """
    out = BitWriter()
    words = _words(np.ascontiguousarray(values, dtype=np.float64), width).tolist()
    if not words:
        return bytes([FloatCodec.XOR, width])
    prev = words[0]
    out.write(prev, width)
    # The window of the last `11` record; -1: none yet, so `10` is impossible.
    window_lead, window_trail = -1, 0
    for word in words[1:]:
        x = word ^ prev
        prev = word
        if x == 0:
            out.write(0b0, 1)
            continue
        lead = min(width - x.bit_length(), 31)
        trail = (x & -x).bit_length() - 1
        if window_lead >= 0 and lead >= window_lead and trail >= window_trail:
            # Inside the previous window: 2 control bits + its meaningful bits.
            out.write(0b10, 2)
            out.write(x >> window_trail, width - window_lead - window_trail)
        else:
            meaningful = width - lead - trail
            out.write((0b11 << 11) | (lead << 6) | (meaningful - 1), 13)
            out.write(x >> trail, meaningful)
            window_lead, window_trail = lead, trail
    return bytes([FloatCodec.XOR, width]) + out.getvalue()


def _decode_xor(payload: Buffer, count: int, width: int) -> F64:
    reader = BitReader(payload)
    read = reader.read  # bound once: this loop is the slowest path of any read
    try:
        prev = read(width)
        words = [prev]
        append = words.append
        window_lead, window_meaningful, window_trail = 0, 0, 0
        for _ in range(count - 1):
            if not read(1):
                append(prev)
                continue
            if read(1):  # `11`: a new window
                header = read(11)
                window_lead = header >> 6
                window_meaningful = (header & 0x3F) + 1
                window_trail = width - window_lead - window_meaningful
            prev ^= read(window_meaningful) << window_trail
            append(prev)
    except EOFError as exc:
        raise CodecError(str(exc), stream="floats") from None
    if width == 32:
        return _from_words(np.array(words, dtype=np.uint32), width)
    return _from_words(np.array(words, dtype=np.uint64), width)


def encode_shuffle(values: F64, width: int) -> bytes:
    """Byte-shuffle: byte 0 of every value, then byte 1, … (little-endian words).

    Slowly changing values share their high bytes, so the shuffled stream has
    long runs a compressor squeezes well; it decodes with one numpy transpose.
    """
    words = _words(np.ascontiguousarray(values, dtype=np.float64), width)
    nbytes = width // 8
    grid = words.astype(words.dtype.newbyteorder("<")).view(np.uint8).reshape(-1, nbytes)
    return bytes([FloatCodec.SHUFFLE, width]) + grid.T.tobytes()


def _decode_shuffle(payload: Buffer, count: int, width: int) -> F64:
    nbytes = width // 8
    if len(payload) != count * nbytes:
        raise CodecError("shuffle stream has the wrong length", stream="floats")
    grid = np.frombuffer(payload, dtype=np.uint8).reshape(nbytes, count).T.copy()
    if width == 32:
        return _from_words(grid.view("<u4").reshape(count).astype(np.uint32), width)
    return _from_words(grid.view("<u8").reshape(count).astype(np.uint64), width)


def float_candidates(values: F64) -> list[bytes]:
    """Every float stream worth trying for this column, the fastest to decode first.

    The chunk encoder compresses each and keeps the smallest: the choice is
    made on the data, not guessed from it.
    """
    v = np.ascontiguousarray(values, dtype=np.float64)
    out: list[bytes] = []
    found = find_decimal(v)
    if found is not None:
        out.append(encode_decimal(*found))
    width = 32 if is_float32(v) else 64
    out.append(encode_shuffle(v, width))
    out.append(encode_xor(v, width))
    return out


def decode_floats(buf: Buffer, count: int) -> F64:
    """Decode any float stream (its first byte names the codec)."""
    stream = "floats"
    if count == 0:
        return np.zeros(0, dtype=np.float64)
    if len(buf) < 2:
        raise CodecError("truncated float stream", stream=stream)
    codec = buf[0]
    if codec == FloatCodec.DECIMAL:
        if len(buf) < 3 or buf[1] > max(DecimalOp) or buf[2] > MAX_DECIMALS:
            raise CodecError("bad decimal parameters", stream=stream)
        ints = decode_ints(bytes([INT_DELTA]) + bytes(buf[3:]), count, stream=stream)
        return _rebuild_decimal(ints.astype(np.float64), DecimalOp(buf[1]), buf[2])
    width = buf[1]
    if width not in (32, 64):
        raise CodecError(f"bad word width {width}", stream=stream)
    if codec == FloatCodec.XOR:
        return _decode_xor(memoryview(buf)[2:], count, width)
    if codec == FloatCodec.SHUFFLE:
        return _decode_shuffle(memoryview(buf)[2:], count, width)
    raise CodecError(f"unknown codec id {codec}", stream=stream)


def float_codec_name(stream: Buffer) -> str:
    """A short label of a float stream's codec, for statistics (`decimal1`, `xor32`, …)."""
    if not stream:
        return "-"
    codec = stream[0]
    if codec == FloatCodec.DECIMAL:
        return f"decimal{stream[2]}" + ("f32" if stream[1] >= DecimalOp.MUL32 else "")
    name = FloatCodec(codec).name.lower() if codec <= max(FloatCodec) else f"f{codec}"
    return name + ("32" if len(stream) > 1 and stream[1] == 32 else "")


# --- Strings -------------------------------------------------------------------------

#: Codec id of a string column: a dictionary plus one index per value.
STR_DICT = 1


def encode_strings(values: Sequence[str]) -> bytes:
    """Distinct strings in first-seen order (length + UTF-8), then indices as varints.

    Status texts and serial numbers repeat, so each repeat costs one byte.
    `surrogatepass` keeps even unpaired surrogates exact.
    """
    index: dict[str, int] = {}
    positions = np.fromiter(
        (index.setdefault(s, len(index)) for s in values), dtype=np.uint64, count=len(values)
    )
    out = bytearray([STR_DICT])
    put_uvarint(out, len(index))
    for text in index:
        data = text.encode("utf-8", "surrogatepass")
        put_uvarint(out, len(data))
        out += data
    out += encode_uvarints(positions)
    return bytes(out)


def decode_strings(buf: Buffer, count: int) -> list[str]:
    """Invert `encode_strings`."""
    stream = "strings"
    if not buf or buf[0] != STR_DICT:
        raise CodecError(f"unknown codec id {buf[0] if buf else None}", stream=stream)
    distinct, pos = get_uvarint(buf, 1, stream=stream)
    table: list[str] = []
    for _ in range(distinct):
        size, pos = get_uvarint(buf, pos, stream=stream)
        if pos + size > len(buf):
            raise CodecError("string runs past the end", stream=stream)
        table.append(bytes(buf[pos : pos + size]).decode("utf-8", "surrogatepass"))
        pos += size
    positions, _ = decode_uvarints(buf, pos, count, stream=stream)
    if count and int(positions.max()) >= len(table):
        raise CodecError("string index out of range", stream=stream)
    return [table[i] for i in positions.tolist()]


# --- Small codes (quality, kind, storage class) ----------------------------------------

#: Codec id of a code column: (value, run length) varint pairs.
CODES_RUNS = 1


def encode_runs(codes: npt.ArrayLike) -> bytes:
    """Run-length pairs: a tag's quality and kind rarely change within a chunk."""
    a = np.asarray(codes, dtype=np.uint64)
    out = bytearray([CODES_RUNS])
    if a.size == 0:
        return bytes(out)
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    lengths = np.diff(np.r_[starts, a.size]).astype(np.uint64)
    pairs = np.empty(2 * starts.size, dtype=np.uint64)
    pairs[0::2] = a[starts]
    pairs[1::2] = lengths
    out += encode_uvarints(pairs)
    return bytes(out)


def decode_runs(buf: Buffer, count: int, *, stream: str) -> U64:
    """Invert `encode_runs`; the runs must add up to `count`."""
    if not buf or buf[0] != CODES_RUNS:
        raise CodecError(f"unknown codec id {buf[0] if buf else None}", stream=stream)
    if count == 0:
        return np.zeros(0, dtype=np.uint64)
    # Each pair takes at least 2 bytes, so the stream bounds the number of runs.
    raw = np.frombuffer(buf, dtype=np.uint8, offset=1)
    pairs_count = int((raw < 0x80).sum())
    pairs, _ = decode_uvarints(buf, 1, pairs_count - pairs_count % 2, stream=stream)
    values, lengths = pairs[0::2], pairs[1::2]
    if int(lengths.sum()) != count:
        raise CodecError(f"runs cover {int(lengths.sum())} rows, not {count}", stream=stream)
    return np.repeat(values, lengths.astype(np.int64))


# --- Compressors -------------------------------------------------------------------------


class Compressor(IntEnum):
    """General-purpose compressors applied to a whole chunk body (never renumber)."""

    NONE = 0
    ZLIB = 1  # raw DEFLATE (no zlib header), level 9
    BZ2 = 2  # bzip2, level 9
    LZMA = 3  # raw LZMA2, preset 9, 1 MiB dictionary
    ZSTD = 4  # zstd frame, level 19, no checksum or content size (the chunk has both)


# A 1 MiB dictionary covers any chunk and keeps the encoder at about 10 MB of
# memory; preset 9's default 64 MiB dictionary would need about 700 MB.
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": 1 << 20}]
_ZSTD_LEVEL = 19


def compress(method: Compressor, data: bytes) -> bytes:
    """Compress `data` with one method."""
    if method is Compressor.NONE:
        return data
    if method is Compressor.ZLIB:
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        return packer.compress(data) + packer.flush()
    if method is Compressor.BZ2:
        return bz2.compress(data, 9)
    if method is Compressor.LZMA:
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    if method is Compressor.ZSTD:
        zc = zstandard.ZstdCompressor(
            level=_ZSTD_LEVEL, write_checksum=False, write_content_size=False, write_dict_id=False
        )
        return zc.compress(data)
    raise ValueError(f"unknown compressor {method!r}")


def decompress(method: int, data: Buffer, size: int) -> bytes:
    """Decompress to exactly `size` bytes (CodecError otherwise)."""
    stream = "body"
    try:
        if method == Compressor.NONE:
            out = bytes(data)
        elif method == Compressor.ZLIB:
            out = zlib.decompress(bytes(data), -15)
        elif method == Compressor.BZ2:
            out = bz2.decompress(bytes(data))
        elif method == Compressor.LZMA:
            out = lzma.decompress(bytes(data), format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        elif method == Compressor.ZSTD:
            # The frame has no content size; the limit also stops a corrupt
            # frame from expanding without bound (0 would mean "no limit").
            out = zstandard.ZstdDecompressor().decompress(bytes(data), max_output_size=max(size, 1))
        else:
            raise CodecError(f"unknown compressor id {method}", stream=stream)
    except (zlib.error, OSError, lzma.LZMAError, zstandard.ZstdError, ValueError) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(
            f"{Compressor(method).name.lower()} failed: {exc}", stream=stream
        ) from None
    if len(out) != size:
        raise CodecError(f"decompressed to {len(out)} bytes, not {size}", stream=stream)
    return out


def smallest(
    bodies: Sequence[bytes], methods: Sequence[Compressor]
) -> tuple[int, Compressor, bytes]:
    """Compress every body with every method; return the smallest `(body_index, method, data)`.

    Ties keep the earlier body and method, so callers list the cheaper ones to
    decode first.
    """
    best: tuple[int, Compressor, bytes] | None = None
    for i, body in enumerate(bodies):
        for method in methods:
            data = compress(method, body)
            if best is None or len(data) < len(best[2]):
                best = (i, method, data)
    if best is None:
        raise ValueError("nothing to compress")
    return best
