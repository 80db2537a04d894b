"""The plant model: devices and their tags, each tag a register map entry driven by a signal.

One `Plant` definition drives everything else: the Modbus servers (registers
are the signals' true values, encoded with the project codec), the edgeopt
config that polls them (`Plant.to_config`), and later the benchmark's ground
truth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from edgeopt.config.durations import format_duration
from edgeopt.modbus.codec import DataType, TagCodec, register_width

from .signals import Signal

__all__ = [
    "BIT_TABLES",
    "REGISTER_TABLES",
    "Endpoint",
    "Plant",
    "PlantDevice",
    "PlantTag",
    "Slot",
]

Table = Literal["holding", "input", "coil", "discrete"]
REGISTER_TABLES = ("holding", "input")
BIT_TABLES = ("coil", "discrete")
TagValue = float | int | bool | str


@dataclass
class PlantTag:
    """One tag of a device's register map, driven by `signal` (or a fixed string).

    The fields after `signal` mirror the edgeopt tag config (CONTRACT.md);
    times are in seconds. Every type edgeopt decodes can be served, parts of a
    register included: tags holding other bits (`bit`, `bits`) or the other
    byte (`byte`) of one register share it.
    """

    name: str
    table: str
    address: int
    type: str
    signal: Signal | str
    scale: float = 1.0
    offset: float = 0.0
    bit: int | None = None
    length: int | None = None
    byte_order: str = "big"
    word_order: str = "big"
    interval: float = 1.0
    min_interval: float | None = None
    max_staleness: float = 10.0
    deadband: float = 0.0
    priority: str = "normal"
    unit: str | None = None
    # Written values stick (until the next write) instead of the signal's.
    writable: bool = False
    # A device that clamps what is written into this range (engineering units).
    write_clamp: tuple[float, float] | None = None
    byte: str | None = None  # int8 / uint8: "high" or "low"
    bits: int | None = None  # a bit field (uint16 with bit): its width

    def __post_init__(self) -> None:
        if self.table not in REGISTER_TABLES + BIT_TABLES:
            raise ValueError(f"tag {self.name}: unknown table {self.table!r}")
        if self.writable and self.table not in ("holding", "coil"):
            raise ValueError(f"tag {self.name}: only holding and coil tags can be writable")
        if self.table in BIT_TABLES and self.type != DataType.BOOL:
            raise ValueError(f"tag {self.name}: {self.table} tags must be bool")
        if isinstance(self.signal, str) != (self.type == DataType.STRING):
            raise ValueError(f"tag {self.name}: string tags (only) take a fixed str")
        self.codec  # noqa: B018 -- validates type/bit/length/scale combinations now

    @cached_property
    def codec(self) -> TagCodec:
        return TagCodec(
            DataType(self.type),
            bit=self.bit,
            length=self.length,
            byte_order=self.byte_order,  # type: ignore[arg-type]
            word_order=self.word_order,  # type: ignore[arg-type]
            scale=self.scale,
            offset=self.offset,
            byte=self.byte,  # type: ignore[arg-type]
            bits=self.bits,
        )

    @property
    def width(self) -> int:
        """Registers (bits, on a bit table) the tag occupies."""
        if self.table in BIT_TABLES:
            return 1
        return register_width(self.type, self.length)

    @property
    def is_bit(self) -> bool:
        """True for part of a register (a bit, a bit field or a byte), or a coil/discrete input."""
        return self.table in BIT_TABLES or self.bit is not None or self.byte is not None

    @property
    def mask(self) -> int:
        """The bits of its register this tag holds, on the wire (0xFFFF: all of them)."""
        if self.table in BIT_TABLES:
            return 0xFFFF
        mask = self.codec.wire_mask
        return 0xFFFF if mask is None else mask

    def value(self, t: float) -> TagValue:
        """The true value at plant time t, typed as the codec and a poller see it."""
        if isinstance(self.signal, str):
            return self.signal
        v = self.signal.value(t)
        if self.type == DataType.BOOL:
            return v != 0.0
        return v

    def read_value(self, t: float) -> TagValue:
        """What a perfect poller decodes at t: the true value as the registers hold it."""
        v = self.value(t)
        if self.table in BIT_TABLES or isinstance(v, bool | str):
            return v
        return self.codec.decode(self.codec.encode(v))

    def truth(self, ts: np.ndarray) -> np.ndarray:
        """Vectorised `read_value` (numeric tags; bools as 0.0/1.0).

        The benchmark's ground truth: the signal after the register type's
        rounding (scaled integers, float32), exactly as the codec decodes it,
        so a poller that read at the right time is never off by a rounding.
        """
        if isinstance(self.signal, str):
            raise TypeError(f"tag {self.name} is a string")
        v = self.signal.values(ts)
        dt = DataType(self.type)
        if dt is DataType.BOOL:
            return (v != 0.0).astype(np.float64)
        c = self.codec
        if dt in (DataType.FLOAT16, DataType.FLOAT32, DataType.FLOAT64):
            raw = v if c.is_exact else (v - c.offset) / c.scale
            if dt is DataType.FLOAT32:
                raw = raw.astype(np.float32).astype(np.float64)
            elif dt is DataType.FLOAT16:
                raw = raw.astype(np.float16).astype(np.float64)
            return raw if c.is_exact else raw * c.scale + c.offset
        # Integers: round half to even, as the codec's encode does.
        raw = np.round(v) if c.is_exact else np.round((v - c.offset) / c.scale)
        return raw if c.is_exact else raw * c.scale + c.offset

    def encode(self, t: float) -> list[int]:
        """The registers holding the true value at t (not for bit tables)."""
        return self.codec.encode(self.value(t))

    def segment(self, t: float) -> tuple[float, float]:
        """[start, end) around t during which the value (and so the registers) holds."""
        if isinstance(self.signal, str):
            return float("-inf"), float("inf")
        _, start, end = self.signal.segment(t)
        return start, end

    def config(self) -> dict[str, Any]:
        """This tag's entry in an edgeopt config."""
        d: dict[str, Any] = {
            "name": self.name,
            "table": self.table,
            "address": self.address,
            "type": self.type,
        }
        if self.bit is not None:
            d["bit"] = self.bit
        if self.bits is not None:
            d["bits"] = self.bits
        if self.byte is not None:
            d["byte"] = self.byte
        if self.length is not None:
            d["length"] = self.length
        if self.byte_order != "big":
            d["byte_order"] = self.byte_order
        if self.word_order != "big":
            d["word_order"] = self.word_order
        if self.scale != 1.0:
            d["scale"] = self.scale
        if self.offset != 0.0:
            d["offset"] = self.offset
        if self.unit:
            d["unit"] = self.unit
        d["interval"] = format_duration(self.interval)
        if self.min_interval is not None:
            d["min_interval"] = format_duration(self.min_interval)
        d["max_staleness"] = format_duration(self.max_staleness)
        d["deadband"] = self.deadband
        d["priority"] = self.priority
        if self.writable:
            d["writable"] = True
        return d


@dataclass
class Slot:
    """Registers (or bits) of one table at `address` owned by one tag, or by several bit tags."""

    address: int
    width: int
    tags: list[PlantTag]

    def words(self, t: float) -> tuple[list[int], float, float]:
        """Its registers at plant time t (on a bit table, [0] or [1]), and the span
        [lo, hi) of plant time over which they hold."""
        if len(self.tags) == 1 and not self.tags[0].is_bit:
            tag = self.tags[0]
            lo, hi = tag.segment(t)
            return tag.encode(t), lo, hi
        word, lo, hi = 0, float("-inf"), float("inf")
        for tag in self.tags:  # bits of one register, or one coil
            if tag.table in BIT_TABLES:
                word = int(bool(tag.value(t)))
            else:
                word |= tag.encode(t)[0]
            a, b = tag.segment(t)
            lo, hi = max(lo, a), min(hi, b)
        return [word], lo, hi


@dataclass
class PlantDevice:
    """One Modbus device (unit) with its register map.

    strict_gaps: addresses between tags are invalid (a merged read across
    them gets ILLEGAL DATA ADDRESS) instead of valid zero filler. Applies to
    register tables; pymodbus's bit blocks are always contiguous.
    line: RTU devices with the same line share one serial bus.
    turnaround: seconds the device takes before it answers.
    write_exception: answer every write with this exception code (2 or 3,
    say), as a device with write protection on does.
    mask_write: whether it takes FC22 (mask write); without, FC22 gets
    exception 1 (ILLEGAL FUNCTION), as many older devices answer.
    The remaining fields are the device's limits as written to the config.
    """

    name: str
    unit_id: int
    tags: list[PlantTag]
    transport: str = "tcp"
    strict_gaps: bool = False
    line: str = "line1"
    turnaround: float = 0.0
    write_exception: int | None = None
    mask_write: bool = True
    timeout: float = 1.0
    retries: int = 1
    max_registers_per_read: int = 125
    max_gap: int = 10

    def __post_init__(self) -> None:
        if self.transport not in ("tcp", "rtu"):
            raise ValueError(f"device {self.name}: transport must be tcp or rtu")
        if not 0 < self.unit_id < 248:
            raise ValueError(f"device {self.name}: unit id must be 1..247")
        names = [t.name for t in self.tags]
        if len(set(names)) != len(names):
            raise ValueError(f"device {self.name}: duplicate tag names")
        for table in REGISTER_TABLES + BIT_TABLES:
            self.slots(table)  # raises on overlaps

    def tags_in(self, table: str) -> list[PlantTag]:
        return [t for t in self.tags if t.table == table]

    def slots(self, table: str) -> list[Slot]:
        """The table's occupied addresses, sorted; bit tags of one register share a slot."""
        out: list[Slot] = []
        for tag in sorted(self.tags_in(table), key=lambda t: (t.address, t.bit or 0)):
            if out and tag.address < out[-1].address + out[-1].width:
                prev = out[-1]
                shared = tag.table in REGISTER_TABLES and tag.is_bit
                if not (shared and prev.address == tag.address and prev.tags[0].is_bit):
                    raise ValueError(
                        f"device {self.name}: {tag.name} overlaps {prev.tags[0].name} "
                        f"in {table} at {tag.address}"
                    )
                if any(o.mask & tag.mask for o in prev.tags):
                    raise ValueError(
                        f"device {self.name}: {tag.name} reuses bits of register {tag.address}"
                    )
                prev.tags.append(tag)
                continue
            out.append(Slot(tag.address, tag.width, [tag]))
        return out

    def config(self, endpoint: Endpoint) -> dict[str, Any]:
        """This device's entry in an edgeopt config, reached at `endpoint`."""
        d: dict[str, Any] = {"name": self.name, "transport": endpoint.transport}
        if endpoint.transport == "rtu":
            d["port"] = endpoint.port
            d["baudrate"] = endpoint.baudrate or 9600
            d["parity"] = "N"
            d["stopbits"] = 1
        else:
            d["host"] = endpoint.host
            d["port"] = endpoint.port
        d["unit"] = self.unit_id
        d["timeout"] = format_duration(self.timeout)
        d["retries"] = self.retries
        d["max_registers_per_read"] = self.max_registers_per_read
        d["max_gap"] = self.max_gap
        d["tags"] = [t.config() for t in self.tags]
        return d


@dataclass(frozen=True)
class Endpoint:
    """Where a client reaches a served device: host and TCP port, or a serial path."""

    transport: str
    unit: int
    host: str | None = None
    port: int | str | None = None
    baudrate: int | None = None

    def describe(self) -> str:
        if self.transport == "rtu":
            return f"rtu {self.port} @{self.baudrate or 'max'} unit {self.unit}"
        return f"tcp {self.host}:{self.port} unit {self.unit}"


@dataclass
class Plant:
    """A named set of devices; `seed` is what the builders seeded the signals with."""

    name: str
    devices: list[PlantDevice]
    seed: int = 0
    # Extra top-level config sections (e.g. a faster optimizer for the demo).
    config_extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise ValueError("duplicate device names")
        lines: dict[str, set[int]] = {}
        for d in self.devices:
            if d.transport == "rtu":
                units = lines.setdefault(d.line, set())
                if d.unit_id in units:
                    raise ValueError(f"unit {d.unit_id} twice on line {d.line}")
                units.add(d.unit_id)

    def device(self, name: str) -> PlantDevice:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)

    def iter_tags(self) -> Iterator[tuple[PlantDevice, PlantTag]]:
        for d in self.devices:
            for t in d.tags:
                yield d, t

    @property
    def n_tags(self) -> int:
        return sum(len(d.tags) for d in self.devices)

    def tag(self, path: str) -> PlantTag:
        """A tag by its edgeopt name, DEVICE/NAME."""
        dev, _, name = path.partition("/")
        for t in self.device(dev).tags:
            if t.name == name:
                return t
        raise KeyError(path)

    def lines(self) -> dict[str, list[PlantDevice]]:
        """RTU devices grouped by serial line."""
        out: dict[str, list[PlantDevice]] = {}
        for d in self.devices:
            if d.transport == "rtu":
                out.setdefault(d.line, []).append(d)
        return out

    def without_strict_gaps(self) -> Plant:
        """The same plant with every device filling its register gaps with zeros."""
        devices = [dataclasses.replace(d, strict_gaps=False) for d in self.devices]
        return dataclasses.replace(self, devices=devices)

    def as_rtu(self, line: str = "line1", turnaround: float = 0.005) -> Plant:
        """The same plant with every device on one RS-485 line, unit ids 1, 2, 3...

        turnaround: the device's reply delay (BENCHMARK.md budgets 5 ms).
        """
        devices = [
            dataclasses.replace(
                d,
                transport="rtu",
                line=line,
                unit_id=i + 1,
                turnaround=max(d.turnaround, turnaround),
            )
            for i, d in enumerate(self.devices)
        ]
        return dataclasses.replace(self, devices=devices)

    def to_config(
        self,
        endpoints: Mapping[str, Endpoint],
        state_dir: str,
        socket: str,
        *,
        log_level: str = "info",
    ) -> dict[str, Any]:
        """An edgeopt config (CONTRACT.md schema) polling this plant at `endpoints`."""
        missing = [d.name for d in self.devices if d.name not in endpoints]
        if missing:
            raise ValueError(f"no endpoint for devices: {', '.join(missing)}")
        cfg: dict[str, Any] = {
            "daemon": {"state_dir": state_dir, "socket": socket, "log_level": log_level},
        }
        cfg.update(self.config_extra)
        cfg["devices"] = [d.config(endpoints[d.name]) for d in self.devices]
        return cfg

    def tcp_endpoints(self, host: str = "127.0.0.1", base_port: int = 15020) -> dict[str, Endpoint]:
        """The endpoints PlantServer uses for TCP devices: base_port + index."""
        out: dict[str, Endpoint] = {}
        i = 0
        for d in self.devices:
            if d.transport == "tcp":
                out[d.name] = Endpoint(
                    "tcp", d.unit_id, host=host, port=base_port + i if base_port else 0
                )
                i += 1
        return out
