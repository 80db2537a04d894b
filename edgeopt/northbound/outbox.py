"""The persistent outbox: every MQTT message waits here, in SQLite, until its broker
acknowledges it.

One writer (this class) owns one connection to `state_dir/northbound.db`. New
messages and acknowledgements collect in memory and are written together in one
transaction (`executemany`) every `flush_interval`; a message acknowledged
before its flush is never written at all. Each target's messages are numbered
in order, so a drain reads them back oldest first. Over a target's
`outbox_max` (topic and payload bytes) the oldest undelivered are dropped,
counted, and reported to `on_drop`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiosqlite

from edgeopt.clock import Clock
from edgeopt.northbound.payload import Message

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    target  TEXT    NOT NULL,
    id      INTEGER NOT NULL,
    ts      REAL    NOT NULL,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    PRIMARY KEY (target, id)
) WITHOUT ROWID;
"""
# Rows looked at per step when dropping the oldest over budget.
DROP_STEP = 2000

# Called with (target, messages dropped, their bytes, oldest dropped ts) after a drop.
DropListener = Callable[[str, int, int, float], None]


@dataclass
class TargetBox:
    """One target's share of the outbox, as counters kept in step with the table."""

    name: str
    max_bytes: int
    next_id: int = 1
    messages: int = 0  # undelivered: on disk plus pending
    bytes: int = 0
    enqueued: int = 0  # since the daemon started
    acked: int = 0
    dropped: int = 0
    # Every id at or below this was acknowledged or dropped: nothing to send or count.
    dropped_upto: int = 0
    pending: dict[int, Message] = field(default_factory=dict)  # not written yet
    deletes: dict[int, None] = field(default_factory=dict)  # acknowledged, still on disk
    written_upto: int = 0  # highest id on disk
    oldest_ts: float | None = None  # of the oldest undelivered, as of the last flush


async def wait_event(event: asyncio.Event, seconds: float | None) -> None:
    """Until `event` is set or `seconds` pass (None: no limit).

    asyncio.wait, not wait_for or asyncio.timeout: on 3.11 a cancel that lands as
    the timeout fires can surface as TimeoutError, and suppressing that would swallow
    the cancel and keep a stopping task alive (the poller's workers do the same).
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()


class Outbox:
    """Undelivered messages of every northbound target (see the module docstring)."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        clock: Clock,
        flush_interval: float = 0.25,
        on_drop: DropListener | None = None,
    ) -> None:
        self._conn = conn
        self._clock = clock
        self.flush_interval = flush_interval
        self.on_drop = on_drop
        self.boxes: dict[str, TargetBox] = {}
        self._lock = asyncio.Lock()
        self._kick = asyncio.Event()
        self._closed = False
        self._orphans: list[TargetBox] = []  # detached with unwritten changes
        self._flushing: asyncio.Future[None] | None = None  # the writer's latest flush

    @classmethod
    async def open(
        cls,
        path: Path,
        clock: Clock,
        *,
        flush_interval: float = 0.25,
        on_drop: DropListener | None = None,
    ) -> Outbox:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        # WAL with synchronous=NORMAL: a commit survives a kill -9 of the daemon.
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.executescript(SCHEMA)
        return cls(conn, clock, flush_interval, on_drop)

    async def attach(self, name: str, max_bytes: int) -> TargetBox:
        """A target's box, with its counters read from what an earlier run left."""
        box = self.boxes.get(name)
        if box is not None:
            box.max_bytes = max_bytes
            return box
        async with self._lock:
            rows = await self._conn.execute_fetchall(
                "SELECT count(*), coalesce(sum(length(CAST(topic AS BLOB)) + length(payload)), 0),"
                " coalesce(min(id), 0), coalesce(max(id), 0) FROM outbox WHERE target = ?",
                (name,),
            )
        count, size, low, high = next(iter(rows))
        box = TargetBox(name, max_bytes, next_id=int(high) + 1, messages=int(count))
        box.bytes = int(size)
        box.written_upto = int(high)
        box.dropped_upto = max(0, int(low) - 1)
        self.boxes[name] = box
        if count:
            log.info("northbound %s: %d undelivered messages in the outbox", name, count)
        return box

    def detach(self, name: str) -> None:
        """Forget a target (its undelivered messages stay on disk for its return)."""
        box = self.boxes.pop(name, None)
        if box is not None and (box.pending or box.deletes):
            # Write what it had, so nothing is lost or sent twice when it comes back.
            self._orphans.append(box)
            self._kick.set()

    # -- the writer's inputs (synchronous: called from the poller's sink) ----------

    def add(self, name: str, messages: Iterable[Message]) -> list[Message]:
        """Number `messages` for target `name` and hold them for the next flush."""
        box = self.boxes[name]
        out = []
        for message in messages:
            numbered = replace(message, id=box.next_id)
            box.next_id += 1
            box.pending[numbered.id] = numbered
            box.messages += 1
            box.bytes += numbered.size
            box.enqueued += 1
            out.append(numbered)
        if box.bytes > box.max_bytes:
            self._kick.set()  # enforce the budget soon, not at the next tick
        return out

    def ack(self, name: str, message: Message) -> None:
        """The broker has it: it leaves the outbox."""
        box = self.boxes.get(name)
        if box is None or message.id <= box.dropped_upto:
            return  # dropped meanwhile (already counted), or its target is gone
        if box.pending.pop(message.id, None) is None:
            if message.id in box.deletes or message.id > box.written_upto:
                return
            box.deletes[message.id] = None
        box.messages -= 1
        box.bytes -= message.size
        box.acked += 1

    def is_gone(self, name: str, message_id: int) -> bool:
        """Acknowledged or dropped: not to be sent (again)."""
        box = self.boxes.get(name)
        if box is None:
            return True
        return message_id <= box.dropped_upto or message_id in box.deletes

    # -- reading back ---------------------------------------------------------------

    async def read(self, name: str, after: int, upto: int, limit: int) -> list[Message]:
        """Undelivered messages with after < id <= upto, oldest first: from disk, then the
        newer ones not written yet (under the lock, so a flush cannot move one past us)."""
        box = self.boxes.get(name)
        if box is None:
            return []
        out: list[Message] = []
        async with self._lock:
            after = max(after, box.dropped_upto)
            if after < box.written_upto:
                rows = list(
                    await self._conn.execute_fetchall(
                        "SELECT id, ts, topic, payload FROM outbox"
                        " WHERE target = ? AND id > ? AND id <= ? ORDER BY id LIMIT ?",
                        (name, after, min(upto, box.written_upto), limit),
                    )
                )
                for msg_id, ts, topic, payload in rows:
                    if msg_id not in box.deletes and msg_id > box.dropped_upto:
                        out.append(Message(topic, bytes(payload), ts, msg_id))
                    after = msg_id
                if len(rows) >= limit:
                    return out
            for msg_id, message in box.pending.items():  # in id order
                if msg_id > upto or len(out) >= limit:
                    break
                if msg_id > after:
                    out.append(message)
        return out

    # -- the writer -------------------------------------------------------------------

    async def run(self) -> None:
        """Flush every `flush_interval` (sooner when a budget is exceeded) until cancelled."""
        while True:
            await wait_event(self._kick, self.flush_interval)
            self._kick.clear()
            # A cancel (the daemon stopping) must not land between a statement that
            # SQLite's thread has already run and the counters that follow it: a drop
            # would delete messages uncounted, and the next flush drop again. So the
            # flush finishes on its own, and close() waits for it.
            self._flushing = asyncio.ensure_future(self.flush())
            try:
                await asyncio.shield(self._flushing)
            except Exception as exc:  # a full disk: the messages wait in memory
                log.error("northbound outbox flush failed: %s", exc)

    async def flush(self) -> None:
        """Write new messages and remove acknowledged ones in one transaction, then drop
        the oldest of each target over its budget."""
        async with self._lock:
            boxes = [*self.boxes.values(), *self._orphans]
            self._orphans.clear()
            inserts: list[tuple[str, int, float, str, bytes]] = []
            deletes: list[tuple[str, int]] = []
            taken: list[tuple[TargetBox, list[int], list[int]]] = []
            for box in boxes:
                new_ids, gone_ids = list(box.pending), list(box.deletes)
                inserts += [
                    (box.name, m.id, m.ts, m.topic, m.payload) for m in box.pending.values()
                ]
                deletes += [(box.name, i) for i in gone_ids]
                taken.append((box, new_ids, gone_ids))
            if inserts or deletes:
                await self._conn.execute("BEGIN")
                try:
                    if inserts:
                        await self._conn.executemany(
                            "INSERT OR REPLACE INTO outbox (target, id, ts, topic, payload)"
                            " VALUES (?, ?, ?, ?, ?)",
                            inserts,
                        )
                    if deletes:
                        await self._conn.executemany(
                            "DELETE FROM outbox WHERE target = ? AND id = ?", deletes
                        )
                    await self._conn.execute("COMMIT")
                except BaseException:
                    await self._conn.execute("ROLLBACK")
                    raise
                for box, new_ids, gone_ids in taken:
                    for i in new_ids:
                        if box.pending.pop(i, None) is None:
                            box.deletes[i] = None  # acknowledged while it was written
                    if new_ids:
                        box.written_upto = max(box.written_upto, new_ids[-1])
                    for i in gone_ids:
                        box.deletes.pop(i, None)
            for box in self.boxes.values():
                if box.bytes > box.max_bytes:
                    await self._drop_oldest(box)
                await self._note_oldest(box)

    async def _note_oldest(self, box: TargetBox) -> None:
        if box.messages <= 0:
            box.oldest_ts = None
            return
        rows = await self._conn.execute_fetchall(
            "SELECT ts FROM outbox WHERE target = ? AND id > ? ORDER BY id LIMIT 1",
            (box.name, box.dropped_upto),
        )
        first = next(iter(rows), None)
        if first is not None:
            box.oldest_ts = float(first[0])
        else:
            pending = next(iter(box.pending.values()), None)
            box.oldest_ts = pending.ts if pending is not None else None

    async def _drop_oldest(self, box: TargetBox) -> None:
        """Delete the oldest undelivered messages until the box fits its budget."""
        excess = box.bytes - box.max_bytes
        candidates: list[tuple[int, int, float]] = []  # (id, size, ts)
        freed = 0
        cut = box.dropped_upto
        while freed < excess:
            rows = await self._conn.execute_fetchall(
                "SELECT id, ts, length(CAST(topic AS BLOB)) + length(payload) FROM outbox"
                " WHERE target = ? AND id > ? ORDER BY id LIMIT ?",
                (box.name, cut, DROP_STEP),
            )
            if not rows:
                break
            for msg_id, ts, size in rows:
                cut = int(msg_id)
                if msg_id in box.deletes:
                    continue  # acknowledged: already off the books
                candidates.append((cut, int(size), float(ts)))
                freed += int(size)
                if freed >= excess:
                    break
        if not candidates:
            return
        await self._conn.execute("DELETE FROM outbox WHERE target = ? AND id <= ?", (box.name, cut))
        # Acknowledged while this ran: counted as delivered, not as dropped.
        dropped = [c for c in candidates if c[0] not in box.deletes]
        for i in [i for i in box.deletes if i <= cut]:
            del box.deletes[i]
        box.dropped_upto = cut
        count, size = len(dropped), sum(c[1] for c in dropped)
        box.messages -= count
        box.bytes -= size
        box.dropped += count
        if count == 0:
            return
        log.warning(
            "northbound %s: outbox over its budget of %d bytes; dropped the %d oldest "
            "undelivered messages (%d bytes)",
            box.name,
            box.max_bytes,
            count,
            size,
        )
        if self.on_drop is not None:
            self.on_drop(box.name, count, size, dropped[0][2])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._flushing is not None:
                # The writer's last flush, if it was cancelled mid-way (its error is logged
                # by the flush below, which meets the same cause).
                await asyncio.gather(self._flushing, return_exceptions=True)
            await self.flush()
        finally:
            await self._conn.close()
