"""Storage of tag samples in SQLite: hot rows, warm chunks, cold aggregates, archive files.

`HotStore` takes every sample (raw rows, batched). `TierManager` moves them on
(hot → warm → cold → archive), keeps the disk budget, and answers queries
across all tiers. docs/chunk-format.md specifies the chunk bytes.

Importing this package does not import numpy (the daemon never holds it; the
storage codec worker does the numpy work). The chunk codec's names below are
loaded on first use, which imports numpy in that process (tests, tools).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeopt.exports import lazy_exports
from edgeopt.storage.hot import HotStore, SampleLike, StorageStatus
from edgeopt.storage.query import AggregatePoint, QueryResult
from edgeopt.storage.schema import MIGRATIONS, Migration, SchemaError, migrate
from edgeopt.storage.tiers import (
    DiskUsage,
    LifecycleReport,
    StorageInvariantError,
    TierFigures,
    TierManager,
)
from edgeopt.tags import Sample  # the one sample record, shared with the poller

if TYPE_CHECKING:
    from edgeopt.storage.chunks import Rows, decode_aggregates, decode_samples
    from edgeopt.storage.codecs import CodecError

# The numpy-backed names, by the module that defines them.
_LAZY = {
    "CodecError": "edgeopt.storage.codecs",
    "Rows": "edgeopt.storage.chunks",
    "decode_aggregates": "edgeopt.storage.chunks",
    "decode_samples": "edgeopt.storage.chunks",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "MIGRATIONS",
    "AggregatePoint",
    "CodecError",
    "DiskUsage",
    "HotStore",
    "LifecycleReport",
    "Migration",
    "QueryResult",
    "Rows",
    "Sample",
    "SampleLike",
    "SchemaError",
    "StorageInvariantError",
    "StorageStatus",
    "TierFigures",
    "TierManager",
    "decode_aggregates",
    "decode_samples",
    "migrate",
]
