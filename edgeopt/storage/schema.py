"""The SQLite schema of the edgeopt state database, as an ordered list of migrations.

`migrate()` brings a database up to the newest version and records every step in
`schema_version`. To change the schema, append one `Migration` to `MIGRATIONS`;
never edit a migration that has shipped. This module also owns how a sample's
value and quality are encoded in a row, because the tables below only make sense
together with those codes.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import aiosqlite

from edgeopt.clock import Clock

log = logging.getLogger(__name__)

SampleValue = int | float | str | bool | None


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step, applied atomically together with its `schema_version` row.

    Args:
        version: 1, 2, 3, … with no gaps; the order in which steps apply.
        description: a short phrase, stored in `schema_version` for operators.
        sql: one or more statements, run as a single script inside the transaction.
    """

    version: int
    description: str
    sql: str


class SchemaError(RuntimeError):
    """Raised when the database's schema cannot be brought to this program's version.

    Attributes:
        found: the version recorded in the database.
        supported: the newest version this program knows.
    """

    def __init__(self, message: str, *, found: int, supported: int) -> None:
        super().__init__(message)
        self.found = found
        self.supported = supported


# --- Row codes (part of the on-disk format: never renumber) -------------------

#: Quality is stored as a small integer. SQLite stores the integers 0 and 1 in
#: the record header alone, so the common "good" sample costs no body byte.
QUALITY_CODES: dict[str, int] = {"good": 0, "stale": 1, "bad": 2}
QUALITY_NAMES: dict[int, str] = {code: name for name, code in QUALITY_CODES.items()}


class ValueKind(IntEnum):
    """How `samples.value` must be read back, stored per row in `samples.kind`.

    SQLite keeps INTEGER, REAL and TEXT apart by itself, so most rows are
    NATIVE. The other kinds cover what SQLite cannot represent: bools (stored as
    0/1), integers beyond int64 (a uint64 register, stored as decimal TEXT) and
    NaN (SQLite turns NaN into NULL). The kind is per row, not per tag, so a
    tag whose configured type changes keeps reading its old rows correctly; the
    cost is one record-header byte per row (values 0 and 1 need no body byte).
    """

    NATIVE = 0
    BOOL = 1
    BIGINT = 2
    NAN = 3


_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def encode_value(value: object) -> tuple[int | float | str | None, ValueKind] | None:
    """Return `(stored_value, kind)` for a sample value, or None if it cannot be stored.

    Numeric scalars of other libraries (e.g. numpy) are accepted through the
    `numbers` ABCs; anything else (bytes, lists, …) is a producer bug.
    """
    # bool first: it is a subclass of int.
    if isinstance(value, bool):
        return int(value), ValueKind.BOOL
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return int(value), ValueKind.NATIVE
        return str(value), ValueKind.BIGINT
    if isinstance(value, float):
        if math.isnan(value):
            return None, ValueKind.NAN
        return float(value), ValueKind.NATIVE
    if value is None or isinstance(value, str):
        return value, ValueKind.NATIVE
    if isinstance(value, numbers.Integral):
        return encode_value(int(value))
    if isinstance(value, numbers.Real):
        return encode_value(float(value))
    return None


def decode_value(stored: int | float | str | None, kind: int) -> SampleValue:
    """Invert `encode_value`."""
    if kind == ValueKind.NATIVE:
        return stored
    if kind == ValueKind.BOOL:
        return bool(stored)
    if kind == ValueKind.BIGINT:
        return int(stored) if stored is not None else None
    if kind == ValueKind.NAN:
        return math.nan
    raise ValueError(f"unknown value kind {kind} in samples table (written by a newer edgeopt?)")


# --- Migrations ----------------------------------------------------------------

#: Width of a time bucket in `samples` (see below). Part of the on-disk
#: format: changing it needs a migration that rewrites `samples.bucket`.
BUCKET_SECONDS = 5


def bucket_of(ts: float) -> int:
    """The `samples.bucket` of a timestamp: floor(ts / BUCKET_SECONDS)."""
    return math.floor(ts / BUCKET_SECONDS)


_HOT_TIER = """
-- Tag names ("DEVICE/NAME") map to small integers, so each sample row carries a
-- 1-2 byte varint instead of the name. Ids are never reused or renumbered.
CREATE TABLE tags (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- Raw samples, clustered by time first (bucket = floor(ts / BUCKET_SECONDS)),
-- then by tag. Why not PRIMARY KEY (tag_id, ts): a flush holds one second of
-- samples spread over thousands of tags, and in a tag-major b-tree each tag's
-- rows end on their own leaf page, so every flush rewrites about one 4 KiB
-- page per tag. Measured with 10k tags and 2k samples per 1 s flush: about
-- 4.9 KB of WAL per row (10 MB/s, then the same again at checkpoint: flash
-- wear) and 27 ms per flush. With 5 s buckets the same load writes ~120 B of
-- WAL per row in ~3 ms. The costs: the 4-byte bucket (~+4.5 B/row on disk),
-- and a query for one tag seeks once per bucket (a CTE walks the buckets; on
-- 5.8M rows, 0.2 ms for 10 minutes and 26 ms for 24 h). Time-major order also
-- turns retention and moves between tiers into contiguous range scans.
-- WITHOUT ROWID stores each row once, inside the primary-key b-tree, instead
-- of a rowid table plus an index repeating the key. A second sample for the
-- same (tag, ts) replaces the first (INSERT OR REPLACE).
--   value:   no declared type, so SQLite keeps INTEGER / REAL / TEXT as given
--   quality: QUALITY_CODES (0 good, 1 stale, 2 bad)
--   kind:    ValueKind (0 native, 1 bool, 2 big integer as TEXT, 3 NaN)
CREATE TABLE samples (
    bucket  INTEGER NOT NULL,
    tag_id  INTEGER NOT NULL,
    ts      REAL    NOT NULL,
    value,
    quality INTEGER NOT NULL,
    kind    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, tag_id, ts)
) WITHOUT ROWID;
"""

#: Every schema step, oldest first (MIGRATIONS below). Add a step by appending
#: one line, e.g. `Migration(4, "…", _SQL),`.
_AUDIT = """
-- Every control command that changes something, allowed or not: who asked
-- (SO_PEERCRED uid and pid), what, with which arguments, and the outcome.
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    ts      REAL    NOT NULL,
    uid     INTEGER NOT NULL,
    pid     INTEGER NOT NULL,
    command TEXT    NOT NULL,
    args    TEXT    NOT NULL,
    result  TEXT    NOT NULL
);
"""

_TIERS = """
-- Warm tier: one tag's samples in one compressed, self-describing chunk (the
-- blob; docs/chunk-format.md). A chunk never spans more than one aligned
-- hour (edgeopt.storage.tiers.CHUNK_SECONDS), so a query for [since, until]
-- reads chunks with start_ts in [since - 1 h, until]. A tag-hour normally
-- has one chunk; a sample arriving late for an hour already moved adds one.
--   start_ts, end_ts: first and last sample ts in the chunk
--   count:  samples in the chunk
--   codec:  what won, e.g. "decimal1/zstd" (statistics only; the blob says it too)
-- A rowid table, not WITHOUT ROWID: rows are kilobytes, too big for an index b-tree.
CREATE TABLE chunks (
    id       INTEGER PRIMARY KEY,
    tag_id   INTEGER NOT NULL,
    start_ts REAL    NOT NULL,
    end_ts   REAL    NOT NULL,
    count    INTEGER NOT NULL,
    codec    TEXT    NOT NULL,
    blob     BLOB    NOT NULL
);
CREATE INDEX chunks_tag ON chunks (tag_id, start_ts);
-- The lifecycle finds the oldest chunks without visiting every tag.
CREATE INDEX chunks_start ON chunks (start_ts);

-- Cold tier: one tag's aggregates (count, min, max, mean, last per bucket of
-- `resolution` seconds) for one UTC day, compressed (an AGGREGATES chunk).
--   start_ts: first bucket's start; end_ts: last bucket's end
--   count:    raw samples the aggregates stand for; buckets: rows in the blob
-- AUTOINCREMENT: the id names the block for good, also once it is exported
-- to an archive file, so a block copied but not yet deleted here (a crash
-- between the two commits) is recognised as the same block, never counted twice.
CREATE TABLE cold (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tag_id     INTEGER NOT NULL,
    start_ts   REAL    NOT NULL,
    end_ts     REAL    NOT NULL,
    count      INTEGER NOT NULL,
    buckets    INTEGER NOT NULL,
    resolution REAL    NOT NULL,
    codec      TEXT    NOT NULL,
    blob       BLOB    NOT NULL
);
CREATE INDEX cold_tag ON cold (tag_id, start_ts);
CREATE INDEX cold_start ON cold (start_ts);
"""

OPTIMIZER_SCHEMA_SQL = """
-- The optimizer's learned state (edgeopt.optimizer.persistence reads and writes it).
CREATE TABLE optimizer_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL          -- JSON
);
CREATE TABLE optimizer_strategies (
    name     TEXT PRIMARY KEY,
    enabled  INTEGER NOT NULL,
    params   TEXT NOT NULL,      -- JSON object
    learning TEXT NOT NULL,      -- JSON: runs, success_rate, cooldown, cooldown_until (epoch)…
    updated  REAL NOT NULL
);
CREATE TABLE optimizer_tags (
    tag         TEXT PRIMARY KEY,  -- DEVICE/NAME
    fingerprint TEXT NOT NULL,     -- the tag's config; a change voids what was learned
    allocated   REAL NOT NULL,     -- learned interval, seconds
    rate        REAL,              -- learned change rate, per second
    profile     TEXT,              -- JSON activity profile (hour of day, weekday)
    updated     REAL NOT NULL
);
CREATE TABLE optimizer_triggers (
    leader   TEXT NOT NULL,
    follower TEXT NOT NULL,
    PRIMARY KEY (leader, follower)
) WITHOUT ROWID;
CREATE TABLE optimizer_records (
    id          INTEGER PRIMARY KEY,
    strategy    TEXT NOT NULL,
    started     REAL NOT NULL,
    evaluated   REAL,
    outcome     TEXT NOT NULL,     -- kept | rolled_back | pending
    improvement REAL,
    data        TEXT NOT NULL      -- JSON: exact before/after state, metrics, probes
);
CREATE INDEX optimizer_records_started ON optimizer_records (started);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "hot tier: tags and raw samples", _HOT_TIER),
    Migration(2, "audit log of control commands that change things", _AUDIT),
    Migration(3, "warm and cold tiers: compressed chunks and aggregates", _TIERS),
    Migration(4, "optimizer learning state", OPTIMIZER_SCHEMA_SQL),
)

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  REAL NOT NULL
)
"""


def _check_order(migrations: Sequence[Migration]) -> None:
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(
                f"migration {migration.description!r} has version {migration.version}, "
                f"expected {expected}: versions must run 1, 2, 3, … without gaps"
            )


async def current_version(conn: aiosqlite.Connection) -> int:
    """The newest migration recorded in the database (0 for a new database)."""
    await conn.execute(_VERSION_TABLE)
    rows = list(await conn.execute_fetchall("SELECT MAX(version) FROM schema_version"))
    found = rows[0][0] if rows else None
    return int(found) if found is not None else 0


async def migrate(
    conn: aiosqlite.Connection,
    *,
    clock: Clock,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> int:
    """Apply every migration newer than the database's version; return the version.

    The connection must be in autocommit mode (`isolation_level=None`): each step
    runs as `BEGIN IMMEDIATE; <sql>; INSERT INTO schema_version …; COMMIT`, so a
    crash mid-step leaves the database at the previous version, and reopening
    retries the step. Running it again on an up-to-date database does nothing.
    """
    _check_order(migrations)
    supported = len(migrations)
    found = await current_version(conn)
    if found > supported:
        raise SchemaError(
            f"the database is at schema version {found}, but this edgeopt knows only up to "
            f"{supported}: upgrade edgeopt, or point daemon.state_dir at a new directory",
            found=found,
            supported=supported,
        )
    for migration in migrations[found:]:
        # executescript() takes no parameters; the values are ours (an int, a
        # float's repr and a constant description), quoted the SQL way.
        description = migration.description.replace("'", "''")
        script = (
            f"BEGIN IMMEDIATE;\n{migration.sql}\n;\n"
            f"INSERT INTO schema_version (version, description, applied_at) "
            f"VALUES ({migration.version}, '{description}', {clock.now()!r});\n"
            "COMMIT;"
        )
        try:
            await conn.executescript(script)
        except BaseException:
            if conn.in_transaction:
                await conn.rollback()
            raise
        log.info(
            "storage schema migrated to version %d (%s)", migration.version, migration.description
        )
    return supported
