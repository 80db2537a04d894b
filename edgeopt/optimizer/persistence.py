"""The optimizer's learning state in SQLite: it survives restarts.

`OPTIMIZER_SCHEMA_SQL` (defined with the rest of the schema, in
`edgeopt/storage/schema.py`, as migration 4) holds the tables.
`save_state` writes a `LearnedState` in one transaction (a crash leaves the
previous state whole); `load_state` reads it back, or None when nothing was
saved yet.

`LearnedStateStore` is the learned state's one writer: it owns an aiosqlite
connection that nothing else uses, and a lock every save and load goes
through. Two saves (an optimizer cycle's and the daemon's periodic one) can
then never interleave their transactions on the connection ("cannot start a
transaction within a transaction").

Tables:
- optimizer_meta: key/value JSON (last cycles, λ, forecast, profiles' exposure…, and
  each tag's reference rate and trigger miss share under `tag_extras`)
- optimizer_strategies: enabled, parameters, learning (success rate, cooldown…)
- optimizer_tags: per tag its config fingerprint, learned interval and rate,
  and (when saved with profiles) its activity profile
- optimizer_triggers: leader -> follower
- optimizer_records: the change history, each with its exact before/after
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from edgeopt.forked import ForkedWork
from edgeopt.optimizer.state import LearnedState

# The tables live with the rest of the schema, as migration 4 in storage.schema.
from edgeopt.storage.schema import OPTIMIZER_SCHEMA_SQL

log = logging.getLogger(__name__)

# Per-tag learned facts without a column of their own: kept as one JSON meta row.
TAG_EXTRAS = ("reference", "miss")
EXTRAS_KEY = "tag_extras"

# Records kept in the database (the newest).
RECORDS_KEPT = 1000
# How long a save waits for another connection's write (the hot tier's flush).
BUSY_TIMEOUT_MS = 5000
# The connection's page cache, KiB (SQLite's default is 2,000).
CACHE_KIB = 256
# Tags whose rows (with their profiles) are built and written at a time.
TAG_CHUNK = 500
# Seconds a save's forked export may take before it is given up (and retried).
SAVE_TIMEOUT = 120.0


class LearnedStateStore:
    """The one writer of the learned state: one connection, one lock, one transaction at a time."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.saves = 0
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path) -> LearnedStateStore:
        """Its own connection to the database at `path` (autocommit: transactions are explicit)."""
        conn = await aiosqlite.connect(path, isolation_level=None)
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # A save every few minutes needs no 2 MB page cache kept between saves.
        await conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        return cls(conn)

    @property
    def closed(self) -> bool:
        return self._closed

    async def save(
        self, export: Callable[[], LearnedState], taken: Callable[[], None] | None = None
    ) -> bool:
        """Write `export()`, called once the writer is free (so the newest state wins).

        The export and its statements are built in a forked child (see
        `edgeopt.forked`): at 10k tags they are tens of thousands of dicts,
        lists and strings the daemon's heap would keep as its high-water
        mark. Only the rows come back, written here. `taken` runs here the
        moment the state is taken (whatever changes after it is the next
        save's). Returns False, writing nothing, once the store is closed.
        """
        async with self._lock:
            if self._closed:
                log.debug("learned state not saved: the store is closed")
                return False
            work = ForkedWork(lambda: save_statements(export()), timeout=SAVE_TIMEOUT)
            if taken is not None:
                taken()
            await write_statements(self.conn, await work.items())
            self.saves += 1
            return True

    async def load(self) -> LearnedState | None:
        async with self._lock:
            if self._closed:
                return None
            return await load_state(self.conn)

    async def close(self) -> None:
        """Close the connection once the save in progress (if any) is done."""
        async with self._lock:
            if not self._closed:
                self._closed = True
                await self.conn.close()


def writer_for(store: LearnedStateStore | None, conn: Any = None) -> LearnedStateStore:
    """The store a save or load on `conn` goes through.

    None, or the attached store's own connection: the attached store. Any
    other connection (a test's, a tool's) belongs to its caller, who keeps
    its saves apart.
    """
    if conn is None or (store is not None and conn is store.conn):
        if store is None:
            raise RuntimeError("no learned-state store is attached and no connection was given")
        return store
    return LearnedStateStore(conn)


async def create_tables(conn: aiosqlite.Connection) -> None:
    """Create the tables directly (tests, and databases the storage migrations do not manage)."""
    await conn.executescript(OPTIMIZER_SCHEMA_SQL)


_UPSERT_TAG = (
    "INSERT INTO optimizer_tags (tag, fingerprint, allocated, rate, profile, updated) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tag) DO UPDATE SET "
    "fingerprint = excluded.fingerprint, allocated = excluded.allocated, "
    "rate = excluded.rate, updated = excluded.updated, "
    "profile = CASE WHEN excluded.profile IS NULL AND "
    "optimizer_tags.fingerprint = excluded.fingerprint "
    "THEN optimizer_tags.profile ELSE excluded.profile END"
)


def _tag_rows(entries: Mapping[str, dict[str, Any]], saved: float) -> list[tuple[Any, ...]]:
    return [
        (
            key,
            str(t["fingerprint"]),
            float(t["allocated"]),
            t.get("rate"),
            None if t.get("profile") is None else json.dumps(t["profile"]),
            saved,
        )
        for key, t in entries.items()
    ]


# One step of a save: a statement and its parameter rows (for executemany).
Statement = tuple[str, Sequence[Sequence[Any]]]


async def save_state(conn: aiosqlite.Connection, state: LearnedState) -> None:
    """Write `state` in one transaction. Tags saved without a profile keep their stored one."""
    await write_statements(conn, save_statements(state))


async def write_statements(conn: aiosqlite.Connection, statements: Iterable[Statement]) -> None:
    """Run a save's statements in one transaction: all of them, or (on any error) none."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in statements:
            await conn.executemany(sql, rows)
        await conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            await conn.rollback()
        raise


def save_statements(state: LearnedState) -> Iterator[Statement]:
    """The statements that write `state`, built a chunk of tags at a time (pure)."""
    saved = float(state.meta.get("saved") or 0.0)
    keys = state.keys()
    yield (
        "INSERT OR REPLACE INTO optimizer_strategies "
        "(name, enabled, params, learning, updated) VALUES (?, ?, ?, ?, ?)",
        [
            (
                name,
                int(bool(s.get("enabled", True))),
                json.dumps(s.get("params", {})),
                json.dumps(s.get("learning", {})),
                saved,
            )
            for name, s in state.strategies.items()
        ],
    )
    yield (
        "DELETE FROM optimizer_tags WHERE tag NOT IN (SELECT value FROM json_each(?))",
        [(json.dumps(keys),)],
    )
    extras: dict[str, dict[str, Any]] = {}
    for start in range(0, len(keys), TAG_CHUNK):
        entries = state.tags_in(keys[start : start + TAG_CHUNK])
        for key, t in entries.items():
            extra = {name: t[name] for name in TAG_EXTRAS if t.get(name) is not None}
            if extra:
                extras[key] = extra
        yield _UPSERT_TAG, _tag_rows(entries, saved)
        del entries  # before the next chunk's are built
    meta = {**state.meta, EXTRAS_KEY: extras}
    yield (
        "INSERT OR REPLACE INTO optimizer_meta (key, value) VALUES (?, ?)",
        [(k, json.dumps(v)) for k, v in meta.items() if v is not None or k != "activity"],
    )
    yield "DELETE FROM optimizer_triggers", [()]
    yield (
        "INSERT INTO optimizer_triggers (leader, follower) VALUES (?, ?)",
        [(leader, f) for leader, fs in state.triggers.items() for f in fs],
    )
    yield (
        "INSERT OR REPLACE INTO optimizer_records "
        "(id, strategy, started, evaluated, outcome, improvement, data) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                r["id"],
                r["strategy"],
                r["started"],
                r.get("evaluated"),
                r.get("outcome", "pending"),
                r.get("improvement"),
                json.dumps(r),
            )
            for r in state.records
        ],
    )
    yield (
        "DELETE FROM optimizer_records WHERE id NOT IN "
        "(SELECT id FROM optimizer_records ORDER BY id DESC LIMIT ?)",
        [(RECORDS_KEPT,)],
    )


async def load_state(conn: aiosqlite.Connection) -> LearnedState | None:
    """The saved state, or None if the tables are empty (or missing)."""
    try:
        meta_rows = list(await conn.execute_fetchall("SELECT key, value FROM optimizer_meta"))
    except aiosqlite.OperationalError:
        return None
    strategies_rows = list(
        await conn.execute_fetchall(
            "SELECT name, enabled, params, learning FROM optimizer_strategies"
        )
    )
    if not meta_rows and not strategies_rows:
        return None
    meta: dict[str, Any] = {str(k): json.loads(v) for k, v in meta_rows}
    strategies = {
        str(name): {
            "enabled": bool(enabled),
            "params": json.loads(params),
            "learning": json.loads(learning),
        }
        for name, enabled, params, learning in strategies_rows
    }
    tags: dict[str, dict[str, Any]] = {}
    for tag, fingerprint, allocated, rate, profile in await conn.execute_fetchall(
        "SELECT tag, fingerprint, allocated, rate, profile FROM optimizer_tags"
    ):
        tags[str(tag)] = {
            "fingerprint": fingerprint,
            "allocated": float(allocated),
            "rate": rate,
            "profile": None if profile is None else json.loads(profile),
        }
    extras = meta.pop(EXTRAS_KEY, None)
    if isinstance(extras, dict):
        for key, values in extras.items():
            if key in tags and isinstance(values, dict):
                tags[key].update({n: values[n] for n in TAG_EXTRAS if n in values})
    triggers: dict[str, list[str]] = {}
    for leader, follower in await conn.execute_fetchall(
        "SELECT leader, follower FROM optimizer_triggers ORDER BY leader, follower"
    ):
        triggers.setdefault(str(leader), []).append(str(follower))
    records = [
        json.loads(data)
        for (data,) in await conn.execute_fetchall("SELECT data FROM optimizer_records ORDER BY id")
    ]
    return LearnedState(meta, strategies, tags, triggers, records)
