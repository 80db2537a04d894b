"""Storage of tag samples in SQLite: the hot tier (raw rows) and its schema."""

from edgeopt.storage.hot import HotStore, SampleLike, StorageStatus
from edgeopt.storage.schema import MIGRATIONS, Migration, SchemaError, migrate
from edgeopt.tags import Sample  # the one sample record, shared with the poller

__all__ = [
    "MIGRATIONS",
    "HotStore",
    "Migration",
    "Sample",
    "SampleLike",
    "SchemaError",
    "StorageStatus",
    "migrate",
]
