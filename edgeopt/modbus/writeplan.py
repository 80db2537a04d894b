"""Pure write planning: an engineering value becomes one Modbus write request and its check.

value → parse (JSON or command-line text, to the tag's kind) → range check
(`write.min`/`write.max`, in engineering units) → `TagCodec.encode` (scale
and offset undone, byte and word order applied) → function code and
registers (FC5/FC6/FC15/FC16, or FC22 for a `bit:` of a holding register)
→ what the read-back must show. No I/O: `edgeopt.writes` runs the plans.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Protocol

from edgeopt.modbus.codec import INTEGER_TYPES, DataType, TagCodec, Value
from edgeopt.modbus.planner import Table

__all__ = [
    "FC_MASK_WRITE",
    "WritePlan",
    "WriteRefused",
    "WriteRequest",
    "parse_value",
    "plan_write",
]

FC_WRITE_COIL = 5
FC_WRITE_REGISTER = 6
FC_WRITE_COILS = 15
FC_WRITE_REGISTERS = 16
FC_MASK_WRITE = 22
_COIL_ON = 0xFF00  # FC5 puts ON as 0xFF00 on the wire, OFF as 0x0000
_TRUE_WORDS = frozenset({"true", "on", "1", "yes"})
_FALSE_WORDS = frozenset({"false", "off", "0", "no"})
# A float read back counts as the value written when this close (relative):
# float32 keeps about 7 digits, and scale/offset arithmetic loses the last bits.
_FLOAT_REL_TOL = 1e-6


class WriteRefused(ValueError):
    """Raised when a write is refused before or instead of reaching the device.

    Attributes:
        code: the control-socket error code (`invalid_args`, `not_found`,
            `offline`, `rate_limited`, `conflict`, `unavailable`).
        message: why, fit to show as it is.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WritableTag(Protocol):
    """What planning reads from a tag's config (the config's TagConfig has these)."""

    @property
    def name(self) -> str: ...
    @property
    def table(self) -> str: ...
    @property
    def address(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def bit(self) -> int | None: ...
    @property
    def width(self) -> int: ...


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One Modbus write request.

    `values` are registers for FC6/FC16 and 0/1 bits for FC5/FC15; FC22 uses
    the masks: the device stores (current AND and_mask) OR (or_mask AND NOT and_mask).
    """

    function: int
    address: int
    values: tuple[int, ...] = ()
    and_mask: int = 0xFFFF
    or_mask: int = 0x0000

    @property
    def table(self) -> Table:
        return Table.COIL if self.function in (FC_WRITE_COIL, FC_WRITE_COILS) else Table.HOLDING

    @property
    def count(self) -> int:
        return max(1, len(self.values))

    def reply_prefix(self) -> bytes:
        """What the reply PDU must start with: function code and address, and for
        FC15/FC16 the quantity. A device may answer FC5/FC6/FC22 with the value it
        stored (a clamp, say) rather than an echo; the read-back judges that."""
        full = self.reply_pdu()
        return full if self.function in (FC_WRITE_COILS, FC_WRITE_REGISTERS) else full[:3]

    def reply_pdu(self) -> bytes:
        """The exact PDU a device answers with: an echo (FC5/6/22) or address and quantity."""
        fc, addr = self.function.to_bytes(1, "big"), self.address.to_bytes(2, "big")
        if self.function == FC_WRITE_COIL:
            return fc + addr + (_COIL_ON if self.values[0] else 0).to_bytes(2, "big")
        if self.function == FC_WRITE_REGISTER:
            return fc + addr + self.values[0].to_bytes(2, "big")
        if self.function == FC_MASK_WRITE:
            return fc + addr + self.and_mask.to_bytes(2, "big") + self.or_mask.to_bytes(2, "big")
        return fc + addr + len(self.values).to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class WritePlan:
    """A planned write of one tag, and how to check it.

    Attributes:
        tag: DEVICE/NAME.
        requested: the parsed engineering value asked for.
        written: the value the device should hold: the request after the
            type's rounding (decode(encode(requested))).
        request: what to send; None for a bit that needs read-modify-write.
        table, address, count: what the read-back reads.
        bit_mask: for part of a holding register (a bool's bit, a bit field,
            an int8/uint8 byte), its mask in the register as it is on the
            wire (byte order applied).
        part_word: the bits to set within `bit_mask` (the value encoded).
        rmw_function: FC6 or FC16 for a read-modify-write of that register.
        tolerance: how far a number read back may be from `requested` and
            still count as written: half a scale step for integer types.
    """

    tag: str
    requested: Value
    written: Value
    request: WriteRequest | None
    table: Table
    address: int
    count: int
    codec: TagCodec
    bit_mask: int | None = None
    part_word: int = 0
    rmw_function: int = FC_WRITE_REGISTER
    tolerance: float = 0.0

    def rmw_request(self, current: int) -> WriteRequest:
        """The register write that puts the value's bits into `current`, leaving the rest."""
        assert self.bit_mask is not None
        word = (current & ~self.bit_mask & 0xFFFF) | self.part_word
        return WriteRequest(self.rmw_function, self.address, (word,))

    def decode(self, values: list[int] | list[bool]) -> Value:
        """The tag value the read-back registers (or bit) hold."""
        if self.table is Table.COIL:
            return bool(values[0])
        return self.codec.decode([int(v) for v in values])

    def holds(self, value: Value) -> bool:
        """Whether a value read back is the one written (within half a scale step)."""
        written = self.written
        if isinstance(written, bool | str):
            return value == written
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if value == written:
            return True
        if math.isnan(value) or math.isnan(written):
            return math.isnan(value) and math.isnan(written)
        if self.codec.type in INTEGER_TYPES:
            # A tiny epsilon: scale arithmetic (0.1 * 3) is not exact.
            return abs(value - float(self.requested)) <= self.tolerance * (1 + 1e-9) + 1e-12
        return math.isclose(value, written, rel_tol=_FLOAT_REL_TOL)


def parse_value(data_type: DataType | str, raw: object) -> Value:
    """The value asked for, as the tag's kind: JSON values, or text from a command line.

    Raises:
        WriteRefused: `invalid_args` when it is not a value of that kind.
    """
    dt = DataType(data_type)
    if isinstance(raw, str) and dt is not DataType.STRING:
        text = raw.strip()
        if dt is DataType.BOOL and text.lower() in _TRUE_WORDS | _FALSE_WORDS:
            return text.lower() in _TRUE_WORDS
        try:
            raw = json.loads(text)
        except ValueError:
            raise WriteRefused("invalid_args", f"{raw!r} is not a {dt} value") from None
    if dt is DataType.STRING:
        if not isinstance(raw, str):
            raise WriteRefused("invalid_args", f"a string tag needs a string, not {raw!r}")
        return raw
    if dt is DataType.BOOL:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        raise WriteRefused("invalid_args", f"a bool tag needs true or false, not {raw!r}")
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise WriteRefused("invalid_args", f"a {dt} tag needs a number, not {raw!r}")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise WriteRefused("invalid_args", f"{raw} is not a finite number")
    return raw


def plan_write(
    tag: WritableTag,
    key: str,
    codec: TagCodec,
    raw: object,
    *,
    low: float | None = None,
    high: float | None = None,
    function: str = "auto",
    mask_write: bool = True,
) -> WritePlan:
    """Plans writing `raw` to `tag` (whose name is `key`, DEVICE/NAME).

    Args:
        low, high: the allowed range (write.min/write.max), engineering units.
        function: auto | single | multiple (write.function).
        mask_write: whether the device takes FC22; False plans a
            read-modify-write for a bit of a holding register.

    Raises:
        WriteRefused: `invalid_args` for a value of the wrong kind, outside
            the range, or one the type cannot hold.
    """
    value = parse_value(codec.type, raw)
    if not isinstance(value, bool | str):
        _check_range(key, value, low, high)
    address = int(tag.address)
    if tag.table == "coil":
        fc = FC_WRITE_COILS if function == "multiple" else FC_WRITE_COIL
        coil = WriteRequest(fc, address, (int(bool(value)),))
        return WritePlan(key, value, bool(value), coil, Table.COIL, address, 1, codec)
    try:
        words = codec.encode(value)
    except (TypeError, ValueError) as exc:
        raise WriteRefused("invalid_args", f"{key}: {value!r} cannot be written: {exc}") from None
    written = codec.decode(words)
    tolerance = abs(codec.scale) / 2 if codec.type in INTEGER_TYPES else 0.0
    mask = codec.wire_mask
    if mask is not None:
        # Part of a register (a bit, a bit field, a byte): only its bits may change.
        # encode sets exactly the value's bits within the mask, byte order applied.
        rmw = FC_WRITE_REGISTERS if function == "multiple" else FC_WRITE_REGISTER
        masked: WriteRequest | None = None  # None: read-modify-write
        if function == "auto" and mask_write:
            masked = WriteRequest(FC_MASK_WRITE, address, and_mask=~mask & 0xFFFF, or_mask=words[0])
        return WritePlan(
            key,
            value,
            written,
            masked,
            Table.HOLDING,
            address,
            1,
            codec,
            bit_mask=mask,
            part_word=words[0],
            rmw_function=rmw,
            tolerance=tolerance,
        )
    single = function == "single" or (function == "auto" and len(words) == 1)
    fc = FC_WRITE_REGISTER if single else FC_WRITE_REGISTERS
    request = WriteRequest(fc, address, tuple(words))
    return WritePlan(
        key, value, written, request, Table.HOLDING, address, len(words), codec, tolerance=tolerance
    )


def _check_range(key: str, value: float, low: float | None, high: float | None) -> None:
    if (low is None or value >= low) and (high is None or value <= high):
        return
    if low is not None and high is not None:
        limits = f"write.min {low:g} .. write.max {high:g}"
    elif low is not None:
        limits = f"write.min {low:g}"
    else:
        limits = f"write.max {high:g}"
    raise WriteRefused("invalid_args", f"{key}: {value:g} is outside the allowed range ({limits})")
