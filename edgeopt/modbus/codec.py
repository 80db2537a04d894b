"""Turns Modbus registers and bits into tag values and back.

(Being written: see the codec brief.) `DataType` and `register_width` are the
stable part other modules import.
"""

from __future__ import annotations

from enum import StrEnum


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
}


def register_width(data_type: DataType | str, length: int | None = None) -> int:
    """Registers (or, for bool on a bit table, bits) one value occupies."""
    dt = DataType(data_type)
    if dt is DataType.STRING:
        if not length or length < 1:
            raise ValueError("string needs a length in registers")
        return length
    return _WIDTHS[dt]
