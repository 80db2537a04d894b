"""Storage of tag samples in SQLite: the hot tier (raw rows) and its schema."""

from edgeopt.storage.hot import HotStore, Sample, SampleLike, StorageStatus
from edgeopt.storage.schema import MIGRATIONS, Migration, SchemaError, migrate

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
