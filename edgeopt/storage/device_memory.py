"""What edgeopt learned about each device's register map, kept in SQLite across restarts.

Today that is the read splits: a merged read a device refused with ILLEGAL
DATA ADDRESS is split at a barrier the plan then keeps (`DeviceLimits.barriers`).
Without this memory every start relearns them with a burst of refusals. Each
device's barriers are stored under a fingerprint of its register map (where
it is, its unit and its tags' spans, see `poller.register_map_fingerprint`):
a changed map finds no match and starts afresh.

The table is created here, IF NOT EXISTS, rather than as a schema migration:
it is a cache of what the devices will teach again anyway, so an old database
gains it on first use and losing it costs only a few refused reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import aiosqlite

from edgeopt.modbus.planner import Table

__all__ = ["DEVICE_SPLITS_SQL", "load_barriers", "save_barriers"]

DEVICE_SPLITS_SQL = """
CREATE TABLE IF NOT EXISTS device_splits (
    device      TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,   -- the register map these splits were learned on
    tbl         TEXT    NOT NULL,   -- holding | input | coil | discrete
    address     INTEGER NOT NULL,   -- a read must not straddle this address
    learned     REAL    NOT NULL,   -- epoch seconds
    PRIMARY KEY (device, tbl, address)
) WITHOUT ROWID
"""

Barrier = tuple[Table, int]
_TABLES = frozenset(t.value for t in Table)


async def load_barriers(
    conn: aiosqlite.Connection, fingerprints: Mapping[str, str]
) -> dict[str, frozenset[Barrier]]:
    """The stored barriers of each device whose register map still has the stored fingerprint."""
    await conn.execute(DEVICE_SPLITS_SQL)
    rows = await conn.execute_fetchall(
        "SELECT device, fingerprint, tbl, address FROM device_splits"
    )
    found: dict[str, set[Barrier]] = {}
    for device, fingerprint, table, address in rows:
        if fingerprints.get(device) == fingerprint and table in _TABLES:
            found.setdefault(device, set()).add((Table(table), int(address)))
    return {device: frozenset(barriers) for device, barriers in found.items()}


async def save_barriers(
    conn: aiosqlite.Connection,
    device: str,
    fingerprint: str,
    barriers: Iterable[Barrier],
    now: float,
) -> None:
    """Replace a device's stored barriers (the caller holds the write transaction)."""
    await conn.execute(DEVICE_SPLITS_SQL)
    await conn.execute("DELETE FROM device_splits WHERE device = ?", (device,))
    await conn.executemany(
        "INSERT INTO device_splits (device, fingerprint, tbl, address, learned) "
        "VALUES (?, ?, ?, ?, ?)",
        [(device, fingerprint, str(table), int(address), now) for table, address in barriers],
    )
