"""Self-describing chunks: one tag's rows (warm tier) or aggregates (cold tier) in one blob.

A chunk is a small uncompressed header followed by a compressed body. The
header says everything a reader needs before touching the body: the format
version, what the chunk holds, the compressor, which value classes occur and
which float codec won, the number of rows and the body's size. The body is a
sequence of length-prefixed column streams (`edgeopt.storage.codecs`). The
layout is specified byte by byte in docs/chunk-format.md.

A samples chunk holds exactly what the hot tier's rows hold, column by
column: ts, the stored value (SQLite's INTEGER / REAL / TEXT / NULL, so bools
are 0/1 integers and NaN is NULL, as in `samples`), quality and value kind.
Decoding gives back every row bit for bit, so a chunk can replace the rows.

The encoder does not guess which codec suits the data: for the float column
it builds every candidate stream, compresses each candidate body with every
compressor (none, zlib, bz2, lzma, zstd), and keeps the smallest.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from edgeopt.storage import codecs
from edgeopt.storage.aggregates import Aggregates, numeric_values
from edgeopt.storage.codecs import CodecError, Compressor, get_uvarint, put_uvarint
from edgeopt.storage.schema import ValueKind

#: Version of the chunk layout, the first byte of every chunk. A reader refuses
#: newer versions instead of misreading them.
FORMAT_VERSION = 1

#: Every compressor, in the order ties are broken (cheapest to decode first).
ALL_COMPRESSORS: tuple[Compressor, ...] = (
    Compressor.NONE,
    Compressor.ZSTD,
    Compressor.ZLIB,
    Compressor.LZMA,
    Compressor.BZ2,
)

StoredValue = int | float | str | None
U8 = npt.NDArray[np.uint8]


class ChunkType(IntEnum):
    """What a chunk holds (header byte 1; never renumber)."""

    SAMPLES = 1  # raw rows of one tag (warm tier)
    AGGREGATES = 2  # per-bucket aggregates of one tag (cold tier, archive)


class StorageClass(IntEnum):
    """SQLite's storage class of a stored value (never renumber)."""

    NULL = 0
    INTEGER = 1
    REAL = 2
    TEXT = 3


def _class_of(value: object) -> int:
    # bool is an int subclass: a stored value is never a bool (the hot tier
    # stores 0/1 with kind BOOL), but if one comes it is kept as an integer.
    if value is None:
        return StorageClass.NULL
    if isinstance(value, int):
        return StorageClass.INTEGER
    if isinstance(value, float):
        return StorageClass.REAL
    if isinstance(value, str):
        return StorageClass.TEXT
    raise TypeError(f"cannot store a {type(value).__name__} in a chunk: {value!r}")


# The storage class of each exact type SQLite hands back; anything else
# (subclasses, foreign types) goes through `_class_of`.
_CLASS_OF_TYPE: dict[type, int] = {
    type(None): StorageClass.NULL,
    int: StorageClass.INTEGER,
    bool: StorageClass.INTEGER,
    float: StorageClass.REAL,
    str: StorageClass.TEXT,
}


def _classes(values: Sequence[StoredValue]) -> npt.NDArray[np.uint8]:
    """The storage class of every value (a dict lookup per value, not isinstance chains)."""
    try:
        codes = list(map(_CLASS_OF_TYPE.__getitem__, map(type, values)))
    except KeyError:
        codes = [_class_of(v) for v in values]
    return np.array(codes, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class Rows:
    """One tag's rows as the hot tier stores them, column by column.

    `values` are stored values (see `edgeopt.storage.schema.encode_value`);
    `decoded()` turns them into sample values.
    """

    ts: npt.NDArray[np.float64]
    values: list[StoredValue]
    quality: U8
    kind: U8

    def __post_init__(self) -> None:
        n = self.ts.size
        if not len(self.values) == self.quality.size == self.kind.size == n:
            raise ValueError("Rows columns differ in length")

    def __len__(self) -> int:
        return int(self.ts.size)

    @classmethod
    def from_records(cls, records: Iterable[Sequence[object]]) -> Rows:
        """From `(ts, stored_value, quality, kind)` tuples, e.g. a SELECT on `samples`."""
        records = list(records)
        if not records:
            return cls.empty()
        ts, values, quality, kind = zip(*records, strict=True)
        return cls(
            np.array(ts, dtype=np.float64),
            list(values),
            np.array(quality, dtype=np.uint8),
            np.array(kind, dtype=np.uint8),
        )

    @classmethod
    def empty(cls) -> Rows:
        return cls(np.zeros(0), [], np.zeros(0, np.uint8), np.zeros(0, np.uint8))

    def take(self, index: npt.NDArray[np.intp] | Sequence[int]) -> Rows:
        """The rows at `index`, in that order."""
        idx = np.asarray(index, dtype=np.intp)
        return Rows(
            self.ts[idx],
            [self.values[i] for i in idx.tolist()],
            self.quality[idx],
            self.kind[idx],
        )

    def records(self) -> list[tuple[float, StoredValue, int, int]]:
        """`(ts, stored_value, quality, kind)` tuples, as a SELECT on `samples` gives."""
        return list(
            zip(
                self.ts.tolist(),
                self.values,
                self.quality.tolist(),
                self.kind.tolist(),
                strict=True,
            )
        )

    def decoded(self) -> list[object]:
        """Sample values: bools back from 0/1, NaN from NULL, big integers from text."""
        kinds = self.kind
        if not kinds.size or not kinds.any():
            return list(self.values)
        out: list[object] = list(self.values)
        for i in np.flatnonzero(kinds).tolist():
            kind = int(kinds[i])
            stored = out[i]
            if kind == ValueKind.BOOL:
                out[i] = bool(stored)
            elif kind == ValueKind.BIGINT:
                out[i] = int(stored) if isinstance(stored, str) else stored
            elif kind == ValueKind.NAN:
                out[i] = float("nan")
            else:
                raise CodecError(f"unknown value kind {kind}", stream="kind")
        return out

    def numeric(self) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
        """`(mask, floats)` of the numeric values (integers, bools as 0/1, floats; not NaN)."""
        return numeric_values(self.values)


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    """The uncompressed header of a chunk (docs/chunk-format.md, "Header")."""

    version: int
    type: ChunkType
    compressor: Compressor
    classes: int  # bit i set: StorageClass i occurs (samples chunks)
    float_codec: int  # FloatCodec id of the (first) float column, 0 if none
    count: int  # rows (samples chunks) or buckets (aggregate chunks)
    body_size: int  # bytes of the body after decompression
    size: int  # bytes of the header itself


@dataclass(frozen=True, slots=True)
class Encoded:
    """A finished chunk and what the tables index it by."""

    blob: bytes
    count: int
    start: float  # first ts (samples) or first bucket start (aggregates)
    end: float  # last ts (samples) or last bucket's end (aggregates)
    codec: str  # e.g. "decimal1/zstd": float codec (or value class) / compressor
    raw_size: int  # the body's size before compression

    @property
    def header(self) -> ChunkHeader:
        return read_header(self.blob)


_HEADER_FIXED = 5  # version, type, compressor, classes, float codec


def read_header(blob: bytes | memoryview) -> ChunkHeader:
    """Parse and check a chunk's header."""
    stream = "header"
    if len(blob) < _HEADER_FIXED + 2:
        raise CodecError("chunk shorter than its header", stream=stream)
    version, kind, compressor, classes, float_codec = bytes(blob[:_HEADER_FIXED])
    if version != FORMAT_VERSION:
        raise CodecError(
            f"chunk format version {version}, this edgeopt reads {FORMAT_VERSION}", stream=stream
        )
    if kind not in (ChunkType.SAMPLES, ChunkType.AGGREGATES):
        raise CodecError(f"unknown chunk type {kind}", stream=stream)
    if compressor > max(Compressor):
        raise CodecError(f"unknown compressor id {compressor}", stream=stream)
    count, pos = get_uvarint(blob, _HEADER_FIXED, stream=stream)
    body_size, pos = get_uvarint(blob, pos, stream=stream)
    return ChunkHeader(
        version,
        ChunkType(kind),
        Compressor(compressor),
        classes,
        float_codec,
        count,
        body_size,
        pos,
    )


def _header(
    kind: ChunkType, method: Compressor, classes: int, float_codec: int, count: int, body: int
) -> bytes:
    out = bytearray([FORMAT_VERSION, kind, method, classes, float_codec])
    put_uvarint(out, count)
    put_uvarint(out, body)
    return bytes(out)


def _frame(streams: Iterable[bytes]) -> bytes:
    out = bytearray()
    for stream in streams:
        put_uvarint(out, len(stream))
        out += stream
    return bytes(out)


def _unframe(body: bytes, count: int) -> list[memoryview]:
    view = memoryview(body)
    out: list[memoryview] = []
    pos = 0
    for _ in range(count):
        size, pos = get_uvarint(body, pos, stream="body")
        if pos + size > len(body):
            raise CodecError("stream runs past the end of the body", stream="body")
        out.append(view[pos : pos + size])
        pos += size
    if pos != len(body):
        raise CodecError(f"{len(body) - pos} stray bytes after the last stream", stream="body")
    return out


def _body(blob: bytes | memoryview, expected: ChunkType) -> tuple[ChunkHeader, bytes]:
    header = read_header(blob)
    if header.type is not expected:
        raise CodecError(
            f"expected a {expected.name} chunk, got {header.type.name}", stream="header"
        )
    body = codecs.decompress(header.compressor, memoryview(blob)[header.size :], header.body_size)
    return header, body


# --- Samples chunks --------------------------------------------------------------

_SAMPLE_STREAMS = 7  # ts, class, kind, quality, integers, floats, strings


def encode_samples(rows: Rows, *, compressors: Sequence[Compressor] = ALL_COMPRESSORS) -> Encoded:
    """Encode one tag's rows as a samples chunk, choosing codecs by trying them."""
    n = len(rows)
    if n == 0:
        raise ValueError("a chunk needs at least one row")
    classes = _classes(rows.values)
    by_class: dict[int, list[StoredValue]] = {c: [] for c in StorageClass}
    if int(classes.min()) == int(classes.max()):  # the usual case: one class
        by_class[int(classes[0])] = rows.values
    else:
        for cls, value in zip(classes.tolist(), rows.values, strict=True):
            by_class[cls].append(value)
    ints, floats, texts = (
        by_class[StorageClass.INTEGER],
        by_class[StorageClass.REAL],
        by_class[StorageClass.TEXT],
    )
    try:
        int_stream = codecs.encode_ints(np.array(ints, dtype=np.int64)) if ints else b""
    except OverflowError:
        raise ValueError("an integer value is beyond int64 (store it as BIGINT text)") from None
    prefix = _frame(
        [
            codecs.encode_timestamps(rows.ts),
            codecs.encode_runs(classes),
            codecs.encode_runs(rows.kind),
            codecs.encode_runs(rows.quality),
            int_stream,
        ]
    )
    suffix = _frame([codecs.encode_strings(texts) if texts else b""])  # type: ignore[arg-type]
    float_streams = codecs.float_candidates(np.array(floats, dtype=np.float64)) if floats else [b""]
    bodies = [prefix + _frame([fs]) + suffix for fs in float_streams]
    chosen, method, data = codecs.smallest(bodies, compressors)
    float_stream = float_streams[chosen]
    mask = 0
    for cls in np.unique(classes).tolist():
        mask |= 1 << cls
    header = _header(
        ChunkType.SAMPLES,
        method,
        mask,
        float_stream[0] if float_stream else 0,
        n,
        len(bodies[chosen]),
    )
    return Encoded(
        header + data,
        n,
        float(rows.ts.min()),
        float(rows.ts.max()),
        f"{_value_label(mask, float_stream)}/{method.name.lower()}",
        len(bodies[chosen]),
    )


def _value_label(mask: int, float_stream: bytes) -> str:
    parts = []
    if mask & (1 << StorageClass.INTEGER):
        parts.append("int")
    if mask & (1 << StorageClass.REAL):
        parts.append(codecs.float_codec_name(float_stream))
    if mask & (1 << StorageClass.TEXT):
        parts.append("str")
    if mask & (1 << StorageClass.NULL):
        parts.append("null")
    return "+".join(parts)


def decode_samples(blob: bytes | memoryview) -> Rows:
    """Decode a samples chunk back into its rows, exactly."""
    header, body = _body(blob, ChunkType.SAMPLES)
    n = header.count
    ts_s, cls_s, kind_s, quality_s, int_s, float_s, text_s = _unframe(body, _SAMPLE_STREAMS)
    ts = codecs.decode_timestamps(ts_s, n)
    classes = codecs.decode_runs(cls_s, n, stream="classes").astype(np.uint8)
    kind = codecs.decode_runs(kind_s, n, stream="kind").astype(np.uint8)
    quality = codecs.decode_runs(quality_s, n, stream="quality").astype(np.uint8)
    if classes.size and int(classes.max()) > max(StorageClass):
        raise CodecError("unknown storage class", stream="classes")
    counts = np.bincount(classes, minlength=len(StorageClass)).tolist()
    columns: dict[int, list[StoredValue]] = {StorageClass.NULL: [None] * counts[StorageClass.NULL]}
    columns[StorageClass.INTEGER] = (
        codecs.decode_ints(int_s, counts[StorageClass.INTEGER]).tolist()
        if counts[StorageClass.INTEGER]
        else []
    )
    columns[StorageClass.REAL] = (
        codecs.decode_floats(float_s, counts[StorageClass.REAL]).tolist()
        if counts[StorageClass.REAL]
        else []
    )
    columns[StorageClass.TEXT] = (
        list(codecs.decode_strings(text_s, counts[StorageClass.TEXT]))
        if counts[StorageClass.TEXT]
        else []
    )
    only = [c for c in StorageClass if counts[c] == n]
    if only:  # the usual case: one class for the whole chunk
        values = columns[only[0]]
    else:
        values = [None] * n
        for cls in StorageClass:
            if counts[cls] and cls != StorageClass.NULL:
                for i, v in zip(np.flatnonzero(classes == cls).tolist(), columns[cls], strict=True):
                    values[i] = v
    return Rows(ts, values, quality, kind)


# --- Aggregate chunks -------------------------------------------------------------

_AGG_STREAMS = 8  # resolution, start, count, numeric, min, max, mean, last
_PROXY = Compressor.ZSTD


def _best_float_stream(values: npt.NDArray[np.float64]) -> bytes:
    # Four float columns would make 3^4 bodies per compressor; each column's
    # codec is chosen by its own zstd size instead, the compressor honestly.
    candidates = codecs.float_candidates(values)
    return min(candidates, key=lambda s: len(codecs.compress(_PROXY, s)))


def encode_aggregates(
    agg: Aggregates, *, compressors: Sequence[Compressor] = ALL_COMPRESSORS
) -> Encoded:
    """Encode one tag's aggregates as an aggregates chunk."""
    n = len(agg)
    if n == 0:
        raise ValueError("a chunk needs at least one bucket")
    mean = _best_float_stream(agg.mean)
    streams = [
        struct.pack("<d", agg.resolution),
        codecs.encode_timestamps(agg.start),
        codecs.encode_ints(agg.count),
        codecs.encode_ints(agg.numeric),
        _best_float_stream(agg.min),
        _best_float_stream(agg.max),
        mean,
        _best_float_stream(agg.last),
    ]
    body = _frame(streams)
    _, method, data = codecs.smallest([body], compressors)
    header = _header(ChunkType.AGGREGATES, method, 0, mean[0], n, len(body))
    return Encoded(
        header + data,
        n,
        float(agg.start[0]),
        float(agg.start[-1]) + agg.resolution,
        f"agg:{codecs.float_codec_name(mean)}/{method.name.lower()}",
        len(body),
    )


def decode_aggregates(blob: bytes | memoryview) -> Aggregates:
    """Decode an aggregates chunk."""
    header, body = _body(blob, ChunkType.AGGREGATES)
    n = header.count
    res_s, start_s, count_s, numeric_s, *float_s = _unframe(body, _AGG_STREAMS)
    if len(res_s) != 8:
        raise CodecError("bad resolution field", stream="resolution")
    (resolution,) = struct.unpack("<d", res_s)
    lo, hi, mean, last = (codecs.decode_floats(s, n) for s in float_s)
    return Aggregates(
        float(resolution),
        codecs.decode_timestamps(start_s, n),
        codecs.decode_ints(count_s, n, stream="count"),
        codecs.decode_ints(numeric_s, n, stream="numeric"),
        lo,
        hi,
        mean,
        last,
    )
