"""Answers Modbus reads from plant truth in virtual time: the replay's devices.

The replay must hand the daemon's `Poller.apply` the registers a real device
would send, so that the daemon's own block decoder, tag state and statistics
run. Encoding each tag with `TagCodec.encode` on every read costs a few
microseconds per tag; at hundreds of reads a second over a simulated day that
dominates the replay. So the registers are computed ahead, a window of plant
time at a time, with numpy: every register's value changes only when one of
its tags' signals changes (`Signal.change_times`), so a window is a list of
(time, value) steps per register. Answering a read is then one
`searchsorted` over the read's registers.

`encode_many` is the vectorised twin of `TagCodec.encode` (tests check them
equal on every plant tag). Validity mirrors `simulators.server`: on a
`strict_gaps` device an address between tags is invalid, otherwise gaps up to
`FILL_GAP` registers read as zero; a read touching an invalid address gets
ILLEGAL DATA ADDRESS, as the real simulator answers.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from edgeopt.modbus.codec import DataType
from simulators.plant import BIT_TABLES, REGISTER_TABLES, Plant, PlantDevice, PlantTag
from simulators.server import FILL_GAP

__all__ = ["ILLEGAL_DATA_ADDRESS", "PlantAnswers", "TableAnswers", "encode_many"]

ILLEGAL_DATA_ADDRESS = 2

_BIG_ENDIAN = {
    DataType.INT16: ">i2",
    DataType.UINT16: ">u2",
    DataType.INT32: ">i4",
    DataType.UINT32: ">u4",
    DataType.INT64: ">i8",
    DataType.UINT64: ">u8",
    DataType.FLOAT32: ">f4",
    DataType.FLOAT64: ">f8",
}
_INT_RANGE = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}


def encode_many(tag: PlantTag, values: np.ndarray) -> np.ndarray:
    """Registers of `values` (signal values, not yet typed): shape (n, width), uint16.

    Same rules as `TagCodec.encode`: (value - offset) / scale, rounded half
    to even for integer types, then byte and word order. Bool register tags
    give their bit (or 1). Values outside an integer type are clipped (the
    plants are built so that this never happens; a test checks).
    """
    v = np.asarray(values, dtype=np.float64)
    dt = DataType(tag.type)
    codec = tag.codec
    if dt is DataType.BOOL:
        word = (1 << tag.bit) if tag.bit is not None else 1
        return np.where(v != 0.0, word, 0).astype(np.uint16).reshape(-1, 1)
    if dt is DataType.STRING:
        raise TypeError("string tags are constant: encode them with the codec")
    raw = v if codec.is_exact else (v - codec.offset) / codec.scale
    if dt in _INT_RANGE:
        lo, hi = _INT_RANGE[dt]
        raw = np.clip(np.round(raw), lo, hi)
        typed: np.ndarray = raw
        if dt in (DataType.INT64, DataType.UINT64):
            # Through an exact 64-bit integer: float64 holds the plants'
            # counters exactly (below 2**53), and big-endian ints need ints.
            typed = raw.astype(np.int64 if dt is DataType.INT64 else np.uint64)
        data = typed.astype(_BIG_ENDIAN[dt])
    else:
        data = raw.astype(_BIG_ENDIAN[dt])
    width = codec.width
    b = data.view(np.uint8).reshape(-1, width, 2)
    # Registers of the big-endian bytes A B C D: AB CD. Word order little
    # reverses the words (CD AB); byte order little swaps within each (BA DC).
    if width > 1 and tag.word_order == "little":
        b = b[:, ::-1, :]
    if tag.byte_order == "little":
        b = b[:, :, ::-1]
    return (b[:, :, 0].astype(np.uint16) << 8) | b[:, :, 1].astype(np.uint16)


@dataclass
class _Unit:
    """One register (or bit) with data: its tags and where it sits in a tag."""

    address: int
    parts: list[tuple[PlantTag, int]]  # (tag, register index within the tag)


class TableAnswers:
    """One table of one device: register steps precomputed over a window of plant time."""

    def __init__(self, device: PlantDevice, table: str, window: float) -> None:
        self.device = device
        self.table = table
        self.is_bits = table in BIT_TABLES
        self.window = window
        units: dict[int, _Unit] = {}
        for slot in device.slots(table):
            for tag in slot.tags:
                for r in range(slot.width if not tag.is_bit else 1):
                    u = units.setdefault(slot.address + r, _Unit(slot.address + r, []))
                    u.parts.append((tag, r))
        self.units = [units[a] for a in sorted(units)]
        self.addresses = [u.address for u in self.units]
        self._addr_np = np.asarray(self.addresses, dtype=np.int64)
        self.valid = self._valid_runs(device, table)
        self._w0 = np.inf
        self._w1 = -np.inf
        self._keys = np.empty(0)
        self._vals = np.empty(0, dtype=np.uint16)
        self._span = window + 2.0
        self._spans: dict[tuple[int, int], _ReadSpan | None] = {}

    def _valid_runs(self, device: PlantDevice, table: str) -> list[tuple[int, int]]:
        slots = device.slots(table)
        if not slots:
            return []
        if table in BIT_TABLES:
            return [(slots[0].address, slots[-1].address + 1)]
        fill = 0 if device.strict_gaps else FILL_GAP
        runs: list[list[int]] = []
        for s in slots:
            if runs and s.address <= runs[-1][1] + fill:
                runs[-1][1] = max(runs[-1][1], s.address + s.width)
            else:
                runs.append([s.address, s.address + s.width])
        return [(a, b) for a, b in runs]

    def is_valid(self, start: int, count: int) -> bool:
        end = start + count
        return any(a <= start and end <= b for a, b in self.valid)

    def _span_of(self, start: int, count: int) -> _ReadSpan | None:
        """What answering (start, count) needs, worked out once per distinct read."""
        key = (start, count)
        got = self._spans.get(key)
        if got is None and key not in self._spans:
            if self.is_valid(start, count):
                i0 = bisect.bisect_left(self.addresses, start)
                i1 = bisect.bisect_left(self.addresses, start + count)
                pos = self._addr_np[i0:i1] - start
                dense = i1 - i0 == count  # every register holds data: no zero filler
                got = _ReadSpan(np.arange(i0, i1) * self._span, pos, dense)
            self._spans[key] = got
        return got

    def _build(self, t: float) -> None:
        """Precompute every register's steps on [t - 1, t - 1 + window)."""
        w0 = t - 1.0
        w1 = w0 + self.window
        keys: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(tag) → (times, regs)
        for i, unit in enumerate(self.units):
            times_parts: list[np.ndarray] = []
            for tag, _ in unit.parts:
                times_parts.append(_tag_steps(tag, w0, w1, cache)[0])
            times = (
                times_parts[0] if len(times_parts) == 1 else np.unique(np.concatenate(times_parts))
            )
            word = np.zeros(times.size, dtype=np.uint16)
            for tag, r in unit.parts:
                t_steps, regs = _tag_steps(tag, w0, w1, cache)
                idx = np.searchsorted(t_steps, times, side="right") - 1
                word |= regs[idx, r]
            keys.append(i * self._span + (times - w0))
            vals.append(word)
        self._keys = np.concatenate(keys) if keys else np.empty(0)
        self._vals = np.concatenate(vals) if vals else np.empty(0, dtype=np.uint16)
        self._w0, self._w1 = w0, w1

    def answer(self, start: int, count: int, t: float) -> list[int] | list[bool] | None:
        """The registers (or bits) of [start, start + count) at plant time t; None if invalid."""
        span = self._span_of(start, count)
        if span is None:
            return None
        if not (self._w0 <= t < self._w1):
            self._build(t)
        k = np.searchsorted(self._keys, span.base + (t - self._w0), side="right") - 1
        if span.dense:
            out = self._vals[k]
        else:
            out = np.zeros(count, dtype=np.uint16)
            out[span.pos] = self._vals[k]
        if self.is_bits:
            return out.astype(bool).tolist()
        return out.tolist()


@dataclass(frozen=True, slots=True)
class _ReadSpan:
    base: np.ndarray  # search key of each data register of the read, at window time 0
    pos: np.ndarray  # where each data register sits in the answer
    dense: bool


def _tag_steps(
    tag: PlantTag, w0: float, w1: float, cache: dict[int, tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """(times, registers) of one tag's value steps on [w0, w1); times[0] == w0."""
    got = cache.get(id(tag))
    if got is not None:
        return got
    if isinstance(tag.signal, str):
        times = np.array([w0])
        regs = np.asarray([tag.codec.encode(tag.signal)], dtype=np.uint16)
    else:
        ct = tag.signal.change_times(w0, w1)
        times = np.concatenate(([w0], ct[ct < w1]))
        v = tag.signal.values(times)
        if tag.table in BIT_TABLES:
            regs = (v != 0.0).astype(np.uint16).reshape(-1, 1)
        else:
            regs = encode_many(tag, v)
    cache[id(tag)] = (times, regs)
    return times, regs


class PlantAnswers:
    """Every device and table of a plant: `answer(device, table, start, count, t)`."""

    def __init__(self, plant: Plant, *, window: float = 600.0) -> None:
        self.plant = plant
        self.tables: dict[tuple[str, str], TableAnswers] = {}
        for device in plant.devices:
            for table in REGISTER_TABLES + BIT_TABLES:
                self.tables[(device.name, table)] = TableAnswers(device, table, window)

    def answer(
        self, device: str, table: str, start: int, count: int, t: float
    ) -> list[int] | list[bool] | None:
        return self.tables[(device, table)].answer(start, count, t)
