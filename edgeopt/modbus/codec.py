"""Turns Modbus registers and bits into tag values and back.

A `TagCodec` is built once per tag (at config time) and precomputes its
`struct` formats, so decoding on the poll path is two C calls and no
branching. `BlockDecoder` decodes every tag of one block read at once. The
module is pure: no I/O, no module-level state.

Byte and word order are independent. For a 32-bit value whose bytes are
A B C D (A most significant), the registers on the wire hold:

    byte_order  word_order  registers     name
    big         big         AB CD         ABCD (Modbus default)
    big         little      CD AB         CDAB ("word swapped")
    little      big         BA DC         BADC ("byte swapped")
    little      little      DC BA         DCBA (fully little-endian)

and the same generalises to 64-bit values over four registers. Word order
does not apply to one-register types or to strings; `byte_order: little` on a
string swaps the two characters of each register ("byte-swapped pairs").

Parts of one register, each taken from the 16-bit value after `byte_order`:
`int8`/`uint8` with `byte: high|low` (Telegraf's INT8H/INT8L/UINT8H/UINT8L),
`bool` with `bit`, and a bit field, `uint16` with `bit` (its lowest bit) and
`bits` (its width). `bcd16`/`bcd32` hold 4/8 decimal digits, one a nibble; a
nibble above 9 is a DecodeError, never a value.
"""

from __future__ import annotations

import codecs
import functools
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from operator import itemgetter
from typing import Any, Literal, Protocol

Value = int | float | str | bool
Order = Literal["big", "little"]


class DataType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    BOOL = "bool"
    INT8 = "int8"  # one byte of a register (`byte: high|low`)
    UINT8 = "uint8"
    FLOAT16 = "float16"  # IEEE 754 half precision
    BCD16 = "bcd16"  # 4 decimal digits, 0..9999
    BCD32 = "bcd32"  # 8 decimal digits over two registers (word order applies)


_WIDTHS = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.FLOAT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT64: 4,
    DataType.BOOL: 1,
    DataType.INT8: 1,
    DataType.UINT8: 1,
    DataType.FLOAT16: 1,
    DataType.BCD16: 1,
    DataType.BCD32: 2,
}


def register_width(data_type: DataType | str, length: int | None = None) -> int:
    """Registers (or, for bool on a bit table, bits) one value occupies."""
    dt = DataType(data_type)
    if dt is DataType.STRING:
        if not length or length < 1:
            raise ValueError("string needs a length in registers")
        return length
    return _WIDTHS[dt]


# struct format character of each numeric type. Bool is read as an unsigned
# register and then masked.
_FORMATS: dict[DataType, str] = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
    DataType.BOOL: "H",
    # The new types are read as a whole register (or two) and then converted.
    DataType.INT8: "H",
    DataType.UINT8: "H",
    DataType.FLOAT16: "e",
    DataType.BCD16: "H",
    DataType.BCD32: "I",
}
# Types whose values are whole numbers (before scale and offset).
INTEGER_TYPES = frozenset(
    {
        DataType.INT16,
        DataType.UINT16,
        DataType.INT32,
        DataType.UINT32,
        DataType.INT64,
        DataType.UINT64,
        DataType.INT8,
        DataType.UINT8,
        DataType.BCD16,
        DataType.BCD32,
    }
)
_FLOAT_TYPES = frozenset({DataType.FLOAT32, DataType.FLOAT64, DataType.FLOAT16})
_BCD_DIGITS = {DataType.BCD16: 4, DataType.BCD32: 8}
# (min, max) of each integer type, for a clear error before struct's own.
_INT_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
    DataType.INT8: (-128, 127),
    DataType.UINT8: (0, 255),
    DataType.BCD16: (0, 9999),
    DataType.BCD32: (0, 99_999_999),
}
_ORDERS = ("big", "little")
_BYTES = ("high", "low")
# Characters stripped from the end of a decoded string: devices pad with
# either NULs or spaces.
_STRING_PAD = "\x00 "


class DecodeError(ValueError):
    """Raised when registers cannot be decoded: the wrong number of registers,
    or a register outside 0..65535 (or not an int).

    Attributes:
        expected: registers the codec needs.
        got: registers it was given.
        index: position of the first invalid register, or None when the
            count is what is wrong.
    """

    def __init__(self, message: str, *, expected: int, got: int, index: int | None = None):
        super().__init__(message)
        self.expected = expected
        self.got = got
        self.index = index


def _decode_error(words: Sequence[object], expected: int, what: str = "registers") -> DecodeError:
    """Builds the DecodeError for registers that `struct` refused.

    Only called after a failure, so it may be slow: it finds out why.
    """
    got = len(words)
    if got != expected:
        return DecodeError(f"expected {expected} {what}, got {got}", expected=expected, got=got)
    for i, w in enumerate(words):
        # bool is an int subclass and struct accepts it; so do we.
        if not isinstance(w, int) or not 0 <= w <= 0xFFFF:
            return DecodeError(
                f"register {i} is {w!r}, not an int in 0..65535",
                expected=expected,
                got=got,
                index=i,
            )
    # struct refused something we could not pin down (e.g. an __index__ that raised).
    return DecodeError(f"cannot decode registers {list(words)!r}", expected=expected, got=got)


_Decoder = Callable[[Sequence[int]], Value]


@dataclass(frozen=True, slots=True)
class TagCodec:
    """Decodes one tag's registers into a value and encodes values back.

    Args:
        type: the data type.
        bit: for `bool` from a holding/input register, the bit (0 = least
            significant) of the 16-bit value after `byte_order` is applied.
            Without it a bool register is True when non-zero.
        length: for `string`, the number of registers (two characters each).
        byte_order: order of the two bytes within each register.
        word_order: "big" puts the most significant register first. Ignored
            for one-register types and strings.
        scale, offset: value = raw * scale + offset, for numeric types only.
            With the defaults, integer types decode to exact `int`s and
            floats are returned bit for bit (NaN, inf and -0.0 included).
        string_encoding: how string bytes become text. The default, latin-1,
            maps every byte to one character, so decoding never fails and
            nothing is lost. Other codecs decode with errors="replace".
            Trailing NULs and spaces are stripped after decoding.
        byte: for `int8` and `uint8` (required there), which byte of the
            16-bit value after `byte_order`: "high" or "low".
        bits: for a bit field, `uint16` with `bit`: its width in bits; the
            value is the unsigned number in bits bit .. bit + bits - 1.

    A value that is part of a register (`bit`, `byte`) encodes to a register
    with only its own bits set: a writer must merge it with the others.

    Invalid combinations (a bit on a non-bool, a scale on a string, ...)
    raise ValueError at construction, so a bad config fails before polling.
    """

    type: DataType
    bit: int | None = None
    length: int | None = None
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    string_encoding: str = "latin-1"
    byte: Literal["high", "low"] | None = None
    bits: int | None = None

    # Precomputed in __post_init__; not part of equality or the repr.
    _width: int = field(init=False, repr=False, compare=False)
    # Registers -> bytes in value order (validates count and range in C).
    _pack: struct.Struct = field(init=False, repr=False, compare=False)
    # Bytes -> the raw value (numeric/bool types; for strings a "Ns" format).
    _unpack: struct.Struct = field(init=False, repr=False, compare=False)
    _decode: _Decoder = field(init=False, repr=False, compare=False)
    _decode_raw: _Decoder = field(init=False, repr=False, compare=False)
    # Unpacked number -> raw value, and back (part of a register, BCD); None: as is.
    _post: Callable[[int], int] | None = field(init=False, repr=False, compare=False)
    _pre: Callable[[int], int] | None = field(init=False, repr=False, compare=False)
    _range: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    _wire_mask: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        dt = DataType(self.type)  # also accepts the plain string "float32"
        object.__setattr__(self, "type", dt)
        for name in ("byte_order", "word_order"):
            if getattr(self, name) not in _ORDERS:
                raise ValueError(f"{name} must be 'big' or 'little', not {getattr(self, name)!r}")
        if self.bit is not None:
            if dt is not DataType.BOOL and not (dt is DataType.UINT16 and self.bits is not None):
                raise ValueError(
                    f"bit applies to type bool only, or to uint16 with bits (a bit field), not {dt}"
                )
            if (
                isinstance(self.bit, bool)
                or not isinstance(self.bit, int)
                or not 0 <= self.bit <= 15
            ):
                raise ValueError(f"bit must be an int in 0..15, not {self.bit!r}")
        if self.bits is not None:
            if dt is not DataType.UINT16 or self.bit is None:
                raise ValueError("bits applies to a bit field only: type uint16 with bit")
            room = 16 - self.bit
            if isinstance(self.bits, bool) or not isinstance(self.bits, int):
                raise ValueError(f"bits must be an int, not {self.bits!r}")
            if not 1 <= self.bits <= room:
                raise ValueError(f"bits must be 1..{room} from bit {self.bit}, not {self.bits}")
        if dt in (DataType.INT8, DataType.UINT8):
            if self.byte not in _BYTES:
                raise ValueError(f"{dt} is one byte of a register: byte must be high or low")
        elif self.byte is not None:
            raise ValueError(f"byte applies to types int8 and uint8 only, not {dt}")
        if self.length is not None and dt is not DataType.STRING:
            raise ValueError(f"length applies to type string only, not {dt}")
        width = register_width(dt, self.length)
        numeric = dt in INTEGER_TYPES or dt in _FLOAT_TYPES
        scale, offset = float(self.scale), float(self.offset)
        if not numeric and (scale != 1.0 or offset != 0.0):
            raise ValueError(f"scale and offset apply to numeric types only, not {dt}")
        if not math.isfinite(scale) or scale == 0.0 or not math.isfinite(offset):
            raise ValueError(
                f"scale must be finite and non-zero and offset finite, got {scale}, {offset}"
            )
        try:
            codecs.lookup(self.string_encoding)
        except LookupError:
            raise ValueError(f"unknown string_encoding {self.string_encoding!r}") from None
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "_width", width)

        # Packing the registers with the right endianness yields the value's
        # bytes in one call, with no word permutation: reading registers
        # little-endian swaps the bytes within each word, and reading the
        # result little-endian reverses the words. See the table in the
        # module docstring; word order is moot for one register.
        word_order = self.word_order if width > 1 and dt is not DataType.STRING else "big"
        pack_end = ">" if self.byte_order == word_order else "<"
        value_end = ">" if word_order == "big" else "<"
        pack = struct.Struct(f"{pack_end}{width}H")
        unpack = struct.Struct(
            f"{value_end}{width * 2}s" if dt is DataType.STRING else f"{value_end}{_FORMATS[dt]}"
        )
        object.__setattr__(self, "_pack", pack)
        object.__setattr__(self, "_unpack", unpack)
        post, pre, value_range = _converters(dt, self.byte, self.bit, self.bits, width)
        object.__setattr__(self, "_post", post)
        object.__setattr__(self, "_pre", pre)
        object.__setattr__(self, "_range", value_range)
        object.__setattr__(
            self, "_wire_mask", _wire_mask(dt, self.bit, self.bits, self.byte, self.byte_order)
        )
        raw = _make_raw_decoder(dt, self.bit, self.string_encoding, pack, unpack, width, post)
        object.__setattr__(self, "_decode_raw", raw)
        if numeric and (scale != 1.0 or offset != 0.0):
            object.__setattr__(
                self, "_decode", _make_scaled_decoder(pack, unpack, width, scale, offset, post)
            )
        else:
            object.__setattr__(self, "_decode", raw)

    def __reduce__(self) -> tuple[Callable[..., TagCodec], tuple[object, ...]]:
        # The cached closures cannot be pickled; rebuild from the public fields.
        return (
            TagCodec,
            (
                self.type,
                self.bit,
                self.length,
                self.byte_order,
                self.word_order,
                self.scale,
                self.offset,
                self.string_encoding,
                self.byte,
                self.bits,
            ),
        )

    @property
    def width(self) -> int:
        """Registers one value occupies."""
        return self._width

    @property
    def wire_mask(self) -> int | None:
        """The bits of its register a part-of-a-register value holds (a bool's
        `bit`, a bit field, an int8/uint8 byte), as the register travels on the
        wire; None for a value of whole registers. Writing such a value must
        change only these bits (e.g. FC22 with this mask)."""
        return self._wire_mask

    @property
    def is_exact(self) -> bool:
        """True when no scale or offset applies (integers decode to exact ints)."""
        return self.scale == 1.0 and self.offset == 0.0

    def decode(self, words: Sequence[int]) -> Value:
        """Decodes exactly `width` holding/input registers into the tag value.

        Raises DecodeError on the wrong count or a register outside 0..65535.
        """
        return self._decode(words)

    def decode_raw(self, words: Sequence[int]) -> Value:
        """Like `decode`, but without scale and offset."""
        return self._decode_raw(words)

    def decode_bits(self, bits: Sequence[bool]) -> bool:
        """Decodes one coil or discrete input."""
        if len(bits) != 1:
            raise _decode_error(bits, 1, "bits")
        return bool(bits[0])

    def encode(self, value: Value) -> list[int]:
        """Encodes a tag value into registers: the inverse of `decode`.

        Applies (value - offset) / scale, then rounds to the nearest integer
        (ties to even) for integer types. Raises ValueError when the result
        does not fit the type, and TypeError for a value of the wrong kind.
        For simulators and tests; not on the poll path.
        """
        dt = self.type
        if dt in INTEGER_TYPES or dt in _FLOAT_TYPES:
            if isinstance(value, str):
                raise TypeError(f"{dt} needs a number, not {value!r}")
            if self.is_exact:
                raw: float = value  # an int stays an int: int64 must be exact
            else:
                raw = (value - self.offset) / self.scale
            if dt in INTEGER_TYPES and not isinstance(raw, int):
                try:
                    raw = round(raw)
                except (ValueError, OverflowError):
                    raise ValueError(f"{value!r} does not fit {dt}") from None
            return self.encode_raw(raw)
        return self.encode_raw(value)

    def encode_raw(self, raw: Value) -> list[int]:
        """Encodes a raw value (no scale or offset) into registers.

        Integers must be ints, floats ints or floats, strings str and bools
        bool (or 0/1). Raises ValueError when the value does not fit.
        """
        dt = self.type
        if dt is DataType.STRING:
            if not isinstance(raw, str):
                raise TypeError(f"string needs a str, not {raw!r}")
            try:
                data = raw.encode(self.string_encoding)
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"{raw!r} cannot be encoded as {self.string_encoding}: {exc}"
                ) from None
            if len(data) > self._width * 2:
                raise ValueError(
                    f"{raw!r} needs {len(data)} bytes, more than {self._width} registers hold"
                )
            # Struct's "s" format pads with NULs.
            return list(self._pack.unpack(self._unpack.pack(data)))
        if dt is DataType.BOOL:
            if raw not in (0, 1) or isinstance(raw, (str, float)):
                raise TypeError(f"bool needs True or False, not {raw!r}")
            word = (1 << self.bit if self.bit is not None else 1) if raw else 0
            return list(self._pack.unpack(self._unpack.pack(word)))
        if dt in INTEGER_TYPES:
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise TypeError(f"{dt} needs an int, not {raw!r}")
            lo, hi = self._range or _INT_RANGES[dt]
            if not lo <= raw <= hi:
                what = f"a {self.bits}-bit field" if self.bits is not None else str(dt)
                raise ValueError(f"{raw} is outside {what} range {lo}..{hi}")
            word = raw if self._pre is None else self._pre(raw)
            return list(self._pack.unpack(self._unpack.pack(word)))
        # float16 / float32 / float64
        if isinstance(raw, (str, bool)):
            raise TypeError(f"{dt} needs a float, not {raw!r}")
        try:
            # float() first: struct gives a vague struct.error for a huge int.
            data = self._unpack.pack(float(raw))
        except OverflowError:
            raise ValueError(f"{raw!r:.40} is outside {dt} range") from None
        return list(self._pack.unpack(data))


def _wire_mask(
    dt: DataType, bit: int | None, bits: int | None, byte: str | None, byte_order: str
) -> int | None:
    if byte is not None:
        mask = 0xFF00 if byte == "high" else 0x00FF
    elif bit is not None and dt in (DataType.BOOL, DataType.UINT16):
        mask = ((1 << (bits or 1)) - 1) << bit
    else:
        return None
    # Bits count in the value after byte_order: on the wire little swaps the bytes.
    return ((mask & 0xFF) << 8) | (mask >> 8) if byte_order == "little" else mask


def _converters(
    dt: DataType, byte: str | None, bit: int | None, bits: int | None, width: int
) -> tuple[Callable[[int], int] | None, Callable[[int], int] | None, tuple[int, int] | None]:
    """(post, pre, range) for types read as a whole register and then converted.

    post: the unpacked unsigned number -> the raw value (may raise DecodeError);
    pre: the raw value -> the number to pack; range: valid raw values, when
    not the type's own (a bit field's).
    """
    if dt in (DataType.INT8, DataType.UINT8):
        shift = 8 if byte == "high" else 0
        signed = dt is DataType.INT8

        def post_byte(word: int) -> int:
            v = (word >> shift) & 0xFF
            return v - 0x100 if signed and v > 0x7F else v

        def pre_byte(value: int) -> int:
            return (value & 0xFF) << shift

        return post_byte, pre_byte, None
    if dt is DataType.UINT16 and bits is not None and bit is not None:
        mask, low = (1 << bits) - 1, bit

        def post_field(word: int) -> int:
            return (word >> low) & mask

        def pre_field(value: int) -> int:
            return value << low

        return post_field, pre_field, (0, mask)
    if dt in _BCD_DIGITS:

        def post_bcd(raw: int) -> int:
            # In hex, a valid BCD number's digits are its decimal digits.
            digits = f"{raw:x}"
            if not digits.isdigit():
                raise DecodeError(
                    f"{raw:#x} is not BCD: a digit above 9", expected=width, got=width
                )
            return int(digits)

        def pre_bcd(value: int) -> int:
            return int(str(value), 16)

        return post_bcd, pre_bcd, None
    return None, None, None


def _make_raw_decoder(
    dt: DataType,
    bit: int | None,
    encoding: str,
    pack: struct.Struct,
    unpack: struct.Struct,
    width: int,
    post: Callable[[int], int] | None = None,
) -> _Decoder:
    """Returns a closure decoding registers into the raw value of `dt`.

    Closures over bound C methods keep the hot path to a couple of calls.
    `struct` checks both the register count and each register's range, so
    the checks cost nothing extra; `_decode_error` works out which failed.
    """
    pack_, unpack_ = pack.pack, unpack.unpack

    if dt is DataType.STRING:

        def decode_string(words: Sequence[int]) -> Value:
            try:
                data = pack_(*words)
            except struct.error:
                raise _decode_error(words, width) from None
            return data.decode(encoding, "replace").rstrip(_STRING_PAD)

        return decode_string

    if dt is DataType.BOOL:
        # Without a bit, any non-zero register is True.
        mask = 0xFFFF if bit is None else 1 << bit

        def decode_bool(words: Sequence[int]) -> Value:
            try:
                return unpack_(pack_(*words))[0] & mask != 0
            except struct.error:
                raise _decode_error(words, width) from None

        return decode_bool

    if post is not None:

        def decode_converted(words: Sequence[int]) -> Value:
            try:
                number = unpack_(pack_(*words))[0]
            except struct.error:
                raise _decode_error(words, width) from None
            return post(number)

        return decode_converted

    def decode_number(words: Sequence[int]) -> Value:
        try:
            return unpack_(pack_(*words))[0]
        except struct.error:
            raise _decode_error(words, width) from None

    return decode_number


def _make_scaled_decoder(
    pack: struct.Struct,
    unpack: struct.Struct,
    width: int,
    scale: float,
    offset: float,
    post: Callable[[int], int] | None = None,
) -> _Decoder:
    """Returns a closure decoding registers into raw * scale + offset (a float)."""
    pack_, unpack_ = pack.pack, unpack.unpack

    def decode_scaled(words: Sequence[int]) -> Value:
        try:
            raw = unpack_(pack_(*words))[0]
        except struct.error:
            raise _decode_error(words, width) from None
        if post is not None:
            raw = post(raw)
        return raw * scale + offset

    return decode_scaled


class TagLike(Protocol):
    """What `codec_for` reads from a tag (the config's TagConfig has these)."""

    @property
    def type(self) -> str: ...
    @property
    def bit(self) -> int | None: ...
    @property
    def length(self) -> int | None: ...
    @property
    def byte_order(self) -> str: ...
    @property
    def word_order(self) -> str: ...
    @property
    def scale(self) -> float: ...
    @property
    def offset(self) -> float: ...


def codec_for(tag: TagLike) -> TagCodec:
    """Builds the codec for a tag from its config.

    Duck-typed: any object with the attributes of `TagLike`. Optional
    `string_encoding`, `byte` and `bits` attributes are honoured. Raises ValueError for an
    invalid combination, with a message the config layer can attach a
    path to. Tags that agree on every part share one codec (it is frozen).
    """
    return _codec(
        DataType(tag.type),
        tag.bit,
        tag.length,
        tag.byte_order,
        tag.word_order,
        tag.scale,
        tag.offset,
        getattr(tag, "string_encoding", None) or "latin-1",
        getattr(tag, "byte", None),
        getattr(tag, "bits", None),
    )


# A plant repeats a few dozen codecs across thousands of tags: built (and
# checked) once each, which at 10k tags saves ~0.15 s of the config's load.
@functools.lru_cache(maxsize=4096)
def _codec(
    dtype: DataType,
    bit: int | None,
    length: int | None,
    byte_order: str,
    word_order: str,
    scale: float,
    offset: float,
    string_encoding: str,
    byte: str | None,
    bits: int | None,
) -> TagCodec:
    return TagCodec(
        type=dtype,
        bit=bit,
        length=length,
        byte_order=byte_order,  # type: ignore[arg-type]  # validated by TagCodec
        word_order=word_order,  # type: ignore[arg-type]
        scale=scale,
        offset=offset,
        string_encoding=string_encoding,
        byte=byte,  # type: ignore[arg-type]
        bits=bits,
    )


class BlockDecoder:
    """Decodes every tag of one block read in a few C calls.

    Built once per planned read: `fields` are (register offset within the
    block, codec) pairs, which may overlap (several bits of one register).
    Decoding packs the block once (checking every register), then unpacks
    all values with one composite `struct` format per layer of
    non-overlapping fields, e.g. ">f4xHi" for a float32 at 0, a uint16 at 4
    and an int32 at 5. Only scaled numbers, bools and strings need a Python
    step afterwards.

    Args:
        count: registers in the block read.
        fields: (offset, codec) per tag; `decode` returns values in this order.
    """

    __slots__ = (
        "_bools",
        "_converted",
        "_count",
        "_getter",
        "_layers",
        "_needs_little",
        "_pack_big",
        "_pack_little",
        "_scaled",
        "_single",
        "_strings",
    )

    def __init__(self, count: int, fields: Sequence[tuple[int, TagCodec]]) -> None:
        if count < 1:
            raise ValueError(f"a block needs at least one register, got {count}")
        # Group by (endianness the registers are packed with, endianness of
        # the values): fields in one group can share a composite format.
        groups: dict[tuple[str, str], list[tuple[int, int, TagCodec]]] = {}
        for index, (start, codec) in enumerate(fields):
            if start < 0 or start + codec.width > count:
                raise ValueError(
                    f"field {index} ({codec.type} at offset {start}, {codec.width} registers) "
                    f"does not fit a block of {count}"
                )
            key = (codec._pack.format[0], codec._unpack.format[0])
            groups.setdefault(key, []).append((start, index, codec))

        # Each layer: (unpack_from of a composite format, whether it reads the
        # little-endian packed buffer), plus the field indices it yields.
        layers: list[tuple[Callable[[bytes], tuple[object, ...]], bool]] = []
        order: list[int] = []
        for (pack_end, value_end), members in sorted(groups.items()):
            members.sort(key=lambda m: (m[0], m[1]))
            # Greedy interval layering: each layer holds fields that do not overlap.
            stacks: list[list[tuple[int, int, TagCodec]]] = []
            for member in members:
                for stack in stacks:
                    last_start, _, last = stack[-1]
                    if last_start + last.width <= member[0]:
                        stack.append(member)
                        break
                else:
                    stacks.append([member])
            for stack in stacks:
                parts, pos = [], 0
                for start, index, codec in stack:
                    if start > pos:
                        parts.append(f"{(start - pos) * 2}x")
                    parts.append(codec._unpack.format[1:])
                    pos = start + codec.width
                    order.append(index)
                layout = struct.Struct(value_end + "".join(parts))
                layers.append((layout.unpack_from, pack_end == "<"))

        # itemgetter puts the concatenated layer outputs back into field order.
        position = {index: pos for pos, index in enumerate(order)}
        perm = [position[i] for i in range(len(fields))]
        self._count = count
        self._layers = layers
        self._single = len(perm) == 1
        self._getter = itemgetter(*perm) if perm else None
        self._pack_big = struct.Struct(f">{count}H").pack
        self._pack_little = struct.Struct(f"<{count}H").pack
        self._needs_little = any(use_little for _, use_little in layers)
        self._converted = [(i, c._post) for i, (_, c) in enumerate(fields) if c._post is not None]
        self._scaled = [
            (i, c.scale, c.offset)
            for i, (_, c) in enumerate(fields)
            if (c.type in INTEGER_TYPES or c.type in _FLOAT_TYPES) and not c.is_exact
        ]
        self._bools = [
            (i, 0xFFFF if c.bit is None else 1 << c.bit)
            for i, (_, c) in enumerate(fields)
            if c.type is DataType.BOOL
        ]
        self._strings = [
            (i, c.string_encoding) for i, (_, c) in enumerate(fields) if c.type is DataType.STRING
        ]

    def decode(self, registers: Sequence[int]) -> list[Value]:
        """Decodes the block's registers into one value per field, in field order.

        Raises DecodeError when the block has the wrong number of registers,
        a register outside 0..65535, or a field its type cannot hold (a BCD
        digit above 9); the caller then decodes tag by tag to find it.
        """
        try:
            big = self._pack_big(*registers)
        except struct.error:
            raise _decode_error(registers, self._count) from None
        # Byte order differs from word order for some field: the same
        # registers packed little-endian (valid, since the big pack passed).
        little = self._pack_little(*registers) if self._needs_little else b""
        values: tuple[object, ...] = ()
        for unpack_from, use_little in self._layers:
            values += unpack_from(little if use_little else big)
        if self._getter is None:
            return []
        out: list[Any] = [self._getter(values)] if self._single else list(self._getter(values))
        for i, post in self._converted:  # may raise DecodeError (a BCD digit above 9)
            out[i] = post(out[i])
        for i, scale, offset in self._scaled:
            out[i] = out[i] * scale + offset
        for i, mask in self._bools:
            out[i] = out[i] & mask != 0
        for i, encoding in self._strings:
            out[i] = out[i].decode(encoding, "replace").rstrip(_STRING_PAD)
        return out


class BitBlockDecoder:
    """Decodes the coils or discrete inputs of one block read: one bool per tag.

    Args:
        count: bits in the block read.
        offsets: each tag's bit offset within the block; `decode` returns values in this order.
    """

    __slots__ = ("_count", "_offsets")

    def __init__(self, count: int, offsets: Sequence[int]) -> None:
        bad = [o for o in offsets if not 0 <= o < count]
        if count < 1 or bad:
            raise ValueError(f"bit offsets {bad} do not fit a block of {count} bits")
        self._count = count
        self._offsets = tuple(offsets)

    def decode(self, bits: Sequence[int]) -> list[Value]:
        """The tags' bits, in offset order; DecodeError when the block has the wrong length."""
        if len(bits) != self._count:
            raise _decode_error(bits, self._count, "bits")
        return [bool(bits[o]) for o in self._offsets]
