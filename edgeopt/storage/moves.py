"""What every tier move shares: the layout constants, the run's report and time budget.

The movers (`hot_to_warm`, `warm_to_cold`, `expiry`, `budget`) take a `Run`
and add to its `LifecycleReport`; `TierManager.run_lifecycle` creates both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiosqlite

from edgeopt.clock import Clock

#: Width of a warm chunk's time window: an aligned hour. A chunk never spans
#: two windows, which bounds how far back a query looks for chunks reaching
#: into its range. Part of the on-disk layout (queries rely on it).
CHUNK_SECONDS = 3600.0
#: Most samples in one chunk, and in one hot → warm transaction. A tag polled
#: at 10 Hz makes 36k samples an hour; cutting at 8192 keeps each move's
#: transaction and decode buffer small, while compression has long gained what it can
#: (the ratio barely improves beyond a few thousand samples).
MAX_CHUNK_SAMPLES = 8192
#: Width of a cold block: an aligned UTC day (also part of the layout).
COLD_BLOCK_SECONDS = 86400.0

#: `emit(ts, kind, message, **data)`, e.g. `EventLog.emit`.
Emit = Callable[..., object]
#: `event(ts, kind, message, **data)`: the manager's guarded wrapper around `Emit`.
Event = Callable[..., None]


class StorageInvariantError(RuntimeError):
    """Raised when a tier move would not delete exactly the rows it encoded.

    The transaction rolls back; nothing is lost. It means another writer
    bypassed `HotStore.transaction()`, or a bug.
    """


@dataclass(slots=True)
class LifecycleReport:
    """What one `run_lifecycle()` did, for logs, events and tests."""

    started: float  # clock.now() at the start
    deferred: bool  # compaction (encoding, vacuum) was postponed
    duration_s: float = 0.0
    hot_to_warm: int = 0  # samples that left the hot tier
    chunks_written: int = 0
    swinging_door_dropped: int = 0  # samples lossy compression left out
    warm_to_cold: int = 0  # samples that left the warm tier for aggregates
    cold_blocks_written: int = 0
    archived_blocks: int = 0
    archived_samples: int = 0
    deleted_blocks: int = 0  # cold blocks deleted (archive off, or the budget)
    deleted_samples: int = 0
    compacted: bool = False
    over_budget: bool = False
    disk_bytes: int | None = None  # live database bytes + WAL after the run
    incomplete: bool = False  # the time budget ran out; the next run goes on
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Run:
    """One lifecycle run: its report and the moment it must stop starting new moves."""

    report: LifecycleReport
    clock: Clock
    deadline: float | None  # clock.monotonic() value; None: no time budget

    def out_of_time(self) -> bool:
        """True (and the report marked incomplete) once the time budget is spent."""
        if self.deadline is not None and self.clock.monotonic() >= self.deadline:
            self.report.incomplete = True
            return True
        return False


async def oldest_window(
    conn: aiosqlite.Connection,
    oldest_sql: str,
    span: float,
    cutoff: float,
    seen: dict[float, int],
    what: str,
) -> float | None:
    """Start of the oldest complete `span` window ending by `cutoff`, or None.

    `oldest_sql` selects the oldest timestamp of the source tier. A window
    still oldest after two passes is stuck (a bug, or rows our read cannot
    see): raise instead of spinning.
    """
    rows = list(await conn.execute_fetchall(oldest_sql))
    oldest = rows[0][0] if rows else None
    if oldest is None:
        return None
    window = math.floor(float(oldest) / span) * span
    if window + span > cutoff:
        return None
    seen[window] = seen.get(window, 0) + 1
    if seen[window] > 2:
        raise StorageInvariantError(f"{what} in the window at {window} do not move")
    return window


async def changes(conn: aiosqlite.Connection) -> int:
    """Rows the last statement changed (sqlite3's rowcount is -1 after a WITH)."""
    rows = list(await conn.execute_fetchall("SELECT changes()"))
    return int(rows[0][0])
