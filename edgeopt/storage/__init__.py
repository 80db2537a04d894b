"""Storage of tag samples in SQLite: hot rows, warm chunks, cold aggregates, archive files.

`HotStore` takes every sample (raw rows, batched). `TierManager` moves them on
(hot → warm → cold → archive), keeps the disk budget, and answers queries
across all tiers. docs/chunk-format.md specifies the chunk bytes.
"""

from edgeopt.storage.chunks import Rows, decode_aggregates, decode_samples
from edgeopt.storage.codecs import CodecError
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
