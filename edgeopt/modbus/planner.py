"""The read planner: turns tags and their required intervals into block reads.

Pure: no I/O, no clock. Given each tag's address, width and current interval,
it partitions every (device, table) into contiguous reads that minimise bus
time under a `CostModel`, within the protocol and device limits.

A worked example (α = 20 units a read, β = 1 unit a register, max_gap = 10):
tags at registers [0, 1, 2, 4, 5, 20, 21] all at 1 s give one read (0, 22):
bridging the 14-register hole costs 14 < α. The same tags with register 20
and 21 at 60 s give (0, 6) at 1 s and (20, 2) at 60 s, because re-reading the
slow pair every second costs more than a second request once a minute.

Because the fixed `max_insert` grouping (Telegraf's) is one of the partitions
the search considers, the plan never costs more than it for the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

# Modbus application-protocol limits per request (FC3/4 and FC1/2).
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000


class Table(StrEnum):
    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"

    @property
    def is_bits(self) -> bool:
        return self in _BIT_TABLES

    @property
    def function_code(self) -> int:
        return _FUNCTION_CODES[self]


_FUNCTION_CODES = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}
_BIT_TABLES = frozenset({Table.COIL, Table.DISCRETE})


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Lower ranks go first when a line is behind."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


@dataclass(frozen=True, slots=True)
class PlanTag:
    """What the planner needs to know about one tag."""

    key: str  # "DEVICE/NAME"
    device: str
    table: Table
    address: int
    width: int  # registers, or bits on coil/discrete tables
    interval: float  # the rate this tag must currently be read at, in seconds
    priority: Priority = Priority.NORMAL

    @property
    def end(self) -> int:
        return self.address + self.width


@dataclass(frozen=True, slots=True)
class DeviceLimits:
    """Per-device limits from the config (and what the device taught us)."""

    max_registers: int = MAX_REGISTERS_PER_READ
    max_bits: int = MAX_BITS_PER_READ
    max_gap: int = 10  # registers (or bits) one read may bridge between tags
    # Addresses a read must not straddle: a read that holds a tag ending at or
    # before a barrier and one starting at or after it was refused with
    # ILLEGAL DATA ADDRESS, so the plan keeps them apart.
    barriers: frozenset[tuple[Table, int]] = frozenset()

    def max_span(self, table: Table) -> int:
        if table.is_bits:
            return min(self.max_bits, MAX_BITS_PER_READ)
        return min(self.max_registers, MAX_REGISTERS_PER_READ)


@dataclass(frozen=True, slots=True)
class CostModel:
    """Bus seconds a read costs: `per_read + per_unit × units`.

    A unit is a register, or a bit on coil/discrete tables. On serial the
    constants come from the baud rate; on TCP from the measured round trip.
    """

    per_read: float
    per_register: float
    per_bit: float

    def read_seconds(self, table: Table, count: int) -> float:
        unit = self.per_bit if table.is_bits else self.per_register
        return self.per_read + unit * count

    @classmethod
    def serial(cls, baudrate: int, turnaround: float = 0.005, bits_per_char: int = 11) -> CostModel:
        """RTU on the wire: 8 request bytes, 5 + data response bytes, two inter-frame silences.

        A silence is 3.5 characters, but at 19200 baud and above the serial-line
        spec fixes it at 1.75 ms.
        """
        char = bits_per_char / baudrate
        silence = 3.5 * char if baudrate < 19200 else 0.00175
        return cls(
            per_read=(8 + 5) * char + 2 * silence + turnaround,
            per_register=2 * char,
            per_bit=char / 8,
        )

    @classmethod
    def tcp(cls, round_trip: float = 0.002) -> CostModel:
        # On TCP the request count dominates: a few bytes more barely register.
        return cls(per_read=round_trip, per_register=round_trip / 500, per_bit=round_trip / 4000)


@dataclass(frozen=True, slots=True)
class Read:
    """One planned request: a contiguous span of one table, read every `period`."""

    device: str
    table: Table
    start: int
    count: int
    period: float
    tags: tuple[str, ...]
    priority: Priority = Priority.NORMAL
    # (device, table, start, count): what the poller and the schedule file the
    # read under, made once (the poll loop asks for it several times a read).
    key: tuple[str, Table, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.device, self.table, self.start, self.count))

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass(frozen=True)
class ReadPlan:
    """All reads for all devices, plus what they cover."""

    reads: tuple[Read, ...] = ()
    tag_count: int = 0
    costs: Mapping[str, CostModel] = field(default_factory=dict)

    @property
    def registers(self) -> int:
        return sum(r.count for r in self.reads if not r.table.is_bits)

    @property
    def bits(self) -> int:
        return sum(r.count for r in self.reads if r.table.is_bits)

    def summary(self) -> str:
        text = f"{len(self.reads)} reads cover {self.registers} registers for {self.tag_count} tags"
        if self.bits:
            text += f" (and {self.bits} bits)"
        return text

    def bus_seconds_per_second(self, device: str | None = None) -> float:
        """Planned bus occupancy (fraction of time) under each device's cost model."""
        total = 0.0
        for r in self.reads:
            if device is not None and r.device != device:
                continue
            cost = self.costs.get(r.device)
            if cost is not None:
                total += cost.read_seconds(r.table, r.count) / r.period
        return total


def plan_reads(
    tags: Iterable[PlanTag],
    limits: Mapping[str, DeviceLimits],
    costs: Mapping[str, CostModel],
) -> ReadPlan:
    """Plan every device's reads; each (device, table) is planned on its own."""
    groups: dict[tuple[str, Table], list[PlanTag]] = {}
    count = 0
    for tag in tags:
        groups.setdefault((tag.device, tag.table), []).append(tag)
        count += 1
    reads: list[Read] = []
    for (device, table), members in sorted(groups.items()):
        reads.extend(plan_table(members, table, limits.get(device, DeviceLimits()), costs[device]))
    return ReadPlan(reads=tuple(reads), tag_count=count, costs=dict(costs))


def plan_table(
    tags: Sequence[PlanTag], table: Table, limits: DeviceLimits, cost: CostModel
) -> list[Read]:
    """Optimal contiguous partition of one table's tags into reads.

    Dynamic programming over tags sorted by address: best[i] is the cheapest
    cover of the first i tags. A segment's cost per second is its read cost
    divided by the fastest member's interval. Segments respect max_gap, the
    span limit and the learned barriers. Runs in O(n × tags-per-span).
    """
    ordered = sorted(tags, key=lambda t: (t.address, t.width))
    n = len(ordered)
    if n == 0:
        return []
    max_span = limits.max_span(table)
    linked = read_links(ordered, limits, table)
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    # read_seconds inlined: this loop runs n × tags-per-span times.
    per_read = cost.per_read
    per_unit = cost.per_bit if table.is_bits else cost.per_register
    for i in range(1, n + 1):
        # Extend the segment ordered[j:i] backwards from its last tag.
        end = ordered[i - 1].end
        fastest = math.inf
        for j in range(i - 1, -1, -1):
            tag = ordered[j]
            if j < i - 1 and not linked[j]:
                break
            end = max(end, tag.end)
            if end - tag.address > max_span:
                break
            fastest = min(fastest, tag.interval)
            total = best[j] + (per_read + per_unit * (end - tag.address)) / fastest
            if total < best[i]:
                best[i] = total
                cut[i] = j
    reads: list[Read] = []
    i = n
    while i > 0:
        j = cut[i]
        reads.append(_make_read(ordered[j:i], table))
        i = j
    reads.reverse()
    return reads


class Span(Protocol):
    """Anything at an address with an end: a tag, or the optimizer's per-tag demand."""

    @property
    def address(self) -> int: ...

    @property
    def end(self) -> int: ...


def read_links(ordered: Sequence[Span], limits: DeviceLimits, table: Table) -> list[bool]:
    """links[j]: whether span j may share a read with span j + 1 (gap and barriers).

    `ordered` is sorted by address. The one rule for what may be merged, shared
    by the planner, the fixed baseline and the optimizer's allocation.
    """
    barriers = [a for (t, a) in limits.barriers if t == table]
    links: list[bool] = []
    covered_end = -1
    for j in range(len(ordered) - 1):
        covered_end = max(covered_end, ordered[j].end)
        nxt = ordered[j + 1].address
        ok = nxt - covered_end <= limits.max_gap
        if ok and barriers:
            ok = not any(covered_end <= b <= nxt for b in barriers)
        links.append(ok)
    return links


def _make_read(members: Sequence[PlanTag], table: Table) -> Read:
    start = min(t.address for t in members)
    end = max(t.end for t in members)
    return Read(
        device=members[0].device,
        table=table,
        start=start,
        count=end - start,
        period=min(t.interval for t in members),
        tags=tuple(t.key for t in members),
        priority=min((t.priority for t in members), key=lambda p: p.rank),
    )


def fixed_block_plan(
    tags: Iterable[PlanTag], limits: Mapping[str, DeviceLimits], period: float | None = None
) -> list[Read]:
    """Telegraf `max_insert`-style grouping: greedy merge while gap and span allow.

    The baseline the cost-aware plan is measured against. With `period`, every
    read runs at that fixed period; otherwise at its fastest member's interval.
    """
    groups: dict[tuple[str, Table], list[PlanTag]] = {}
    for tag in tags:
        groups.setdefault((tag.device, tag.table), []).append(tag)
    reads: list[Read] = []
    for (device, table), members in sorted(groups.items()):
        lim = limits.get(device, DeviceLimits())
        ordered = sorted(members, key=lambda t: (t.address, t.width))
        linked = read_links(ordered, lim, table)
        current: list[PlanTag] = [ordered[0]]
        current_end = ordered[0].end
        for idx in range(1, len(ordered)):
            tag = ordered[idx]
            end = max(current_end, tag.end)
            if linked[idx - 1] and end - current[0].address <= lim.max_span(table):
                current.append(tag)
                current_end = end
            else:
                reads.append(_make_read(current, table))
                current, current_end = [tag], tag.end
        reads.append(_make_read(current, table))
    if period is not None:
        reads = [
            Read(r.device, r.table, r.start, r.count, period, r.tags, r.priority) for r in reads
        ]
    return reads


def split_read(
    read: Read, tag_addresses: Mapping[str, int], tag_widths: Mapping[str, int] | None = None
) -> tuple[Table, int] | None:
    """Where to put a barrier after `read` was refused with ILLEGAL DATA ADDRESS.

    Splits the read's tags in two halves by address; repeated refusals halve
    again, so an n-tag read is isolated in log2(n) refusals. With the tags'
    widths, the split goes at the hole nearest the middle: a device that
    refuses a read across a hole accepts contiguous registers, and a barrier
    between two adjacent tags would cost a read forever for nothing. Returns
    None for a single-tag read (nothing to split: the tag itself is at fault).
    """
    addresses = sorted({tag_addresses[k] for k in read.tags})
    if len(addresses) < 2:
        return None
    middle = addresses[len(addresses) // 2]
    if tag_widths is None:
        return (read.table, middle)
    ends: dict[int, int] = {}
    for key in read.tags:
        start = tag_addresses[key]
        ends[start] = max(ends.get(start, start), start + max(1, tag_widths.get(key, 1)))
    holes: list[int] = []
    reach = ends[addresses[0]]
    for address in addresses[1:]:
        if address > reach:
            holes.append(address)  # registers [reach, address) belong to no tag
        reach = max(reach, ends[address])
    if not holes:
        return (read.table, middle)
    return (read.table, min(holes, key=lambda a: (abs(a - middle), a)))
