"""When each read is next due: one deadline per read, kept in a heap.

Pure: the caller passes monotonic time in, so the daemon's poll loop and the
virtual-time benchmark share this code. When a line is behind, the reads that
are due go in priority order (high, normal, low), then oldest deadline first.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from edgeopt.modbus.planner import Read, Table

ReadKey = tuple[str, Table, int, int]

# First reads are spread over at most this long, so a restart does not hit
# every device at the same instant.
STAGGER_WINDOW = 1.0


@dataclass(slots=True)
class _Slot:
    read: Read
    due: float
    version: int  # bumps on every reschedule; stale heap entries are skipped
    in_flight: bool = False
    # Asked for (`run_by`) while in flight: the run may have sampled too early.
    wanted: float | None = None


class ReadSchedule:
    """Deadlines for a set of reads on one line."""

    def __init__(self) -> None:
        self._slots: dict[ReadKey, _Slot] = {}
        self._heap: list[tuple[float, int, ReadKey, int]] = []
        self._ready: list[tuple[int, float, int, ReadKey, int]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._slots)

    def reads(self) -> list[Read]:
        return [s.read for s in self._slots.values()]

    def due_of(self, key: ReadKey) -> float | None:
        slot = self._slots.get(key)
        return slot.due if slot else None

    def set_reads(self, reads: Iterable[Read], now: float) -> None:
        """Adopt a new plan. Reads kept from the old plan keep their phase;
        new ones are staggered over the first period (at most STAGGER_WINDOW)."""
        wanted = {r.key: r for r in reads}
        for key in list(self._slots):
            if key not in wanted:
                del self._slots[key]
        fresh = [r for k, r in wanted.items() if k not in self._slots]
        for key, read in wanted.items():
            slot = self._slots.get(key)
            if slot is not None and slot.read != read:
                slot.read = read
                # A faster period must not wait out the old, slower one.
                self._push(key, min(slot.due, now + read.period))
        for i, read in enumerate(fresh):
            window = min(read.period, STAGGER_WINDOW)
            self._slots[read.key] = _Slot(read, 0.0, 0)
            self._push(read.key, now + window * i / max(1, len(fresh)))

    def next_due(self) -> float | None:
        """The earliest deadline, or None if there is nothing to read."""
        while self._ready:
            _, due, _, key, version = self._ready[0]
            slot = self._slots.get(key)
            if slot is not None and slot.version == version:
                return due
            heapq.heappop(self._ready)
        while self._heap:
            due, _, key, version = self._heap[0]
            slot = self._slots.get(key)
            if slot is not None and slot.version == version:
                return due
            heapq.heappop(self._heap)
        return None

    def pop_due(self, now: float) -> tuple[Read, float] | None:
        """The read to run now (and its deadline), or None if none is due."""
        while self._heap and self._heap[0][0] <= now:
            due, seq, key, version = heapq.heappop(self._heap)
            slot = self._slots.get(key)
            if slot is not None and slot.version == version:
                heapq.heappush(self._ready, (slot.read.priority.rank, due, seq, key, version))
        while self._ready:
            _, due, _, key, version = heapq.heappop(self._ready)
            slot = self._slots.get(key)
            if slot is not None and slot.version == version:
                slot.version += 1  # in flight: not due again until completed
                slot.in_flight = True
                return slot.read, due
        return None

    def complete(self, read: Read, due: float, now: float) -> None:
        """Schedule the next run one period after the last deadline, skipping
        whole periods already missed rather than bursting to catch up."""
        key = read.key
        slot = self._slots.get(key)
        if slot is None:
            return
        period = slot.read.period
        nxt = due + period
        if nxt <= now:
            nxt += period * ((now - nxt) // period + 1)
        if slot.wanted is not None:
            nxt = min(nxt, max(now, slot.wanted))
        slot.in_flight, slot.wanted = False, None
        self._push(key, nxt)

    def postpone(self, read: Read, until: float) -> None:
        """Hold a read until `until` (an offline device waits for its probe)."""
        key = read.key
        slot = self._slots.get(key)
        if slot is not None:
            slot.in_flight = False
            self._push(key, until)

    def run_now(self, read: Read, now: float) -> None:
        """Make a read due at once (e.g. a trigger read)."""
        key = read.key
        if key in self._slots:
            self._push(key, now)

    def run_by(self, read: Read, when: float) -> None:
        """Make a read due at `when` at the latest (never later than it already is)."""
        key = read.key
        slot = self._slots.get(key)
        if slot is None:
            return
        if slot.in_flight:
            slot.wanted = when if slot.wanted is None else min(slot.wanted, when)
        elif when < slot.due:
            self._push(key, when)

    def _push(self, key: ReadKey, due: float) -> None:
        slot = self._slots[key]
        slot.version += 1
        slot.due = due
        heapq.heappush(self._heap, (due, next(self._seq), key, slot.version))
