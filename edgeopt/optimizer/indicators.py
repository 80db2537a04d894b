"""What crosses between the daemon and the cluster worker: packed change indicators, and clusters.

Plain data, no numpy: the daemon builds and passes on the one and reads the
other (`edgeopt.optimizer.cluster_worker`), the worker's own code
(`edgeopt.optimizer.clustering`) unpacks and makes them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterResult:
    """One label per input row, the k chosen and its silhouette score."""

    labels: list[int]
    k: int
    silhouette: float


@dataclass(frozen=True)
class PackedIndicators:
    """Change indicators, one bit per tag and time bin, as the daemon holds and passes them on.

    Row by row, each row padded to whole bytes, the first bin in a byte's most
    significant bit (numpy's `packbits` order): an eighth of the uint8 matrix
    the worker rebuilds from it (`clustering.unpack_indicators`).
    """

    rows: int  # tags
    bins: int
    bits: bytes

    def __post_init__(self) -> None:
        if len(self.bits) != self.rows * self.row_bytes:
            raise ValueError(
                f"{len(self.bits)} bytes cannot hold {self.rows} rows of {self.bins} bits"
            )

    @property
    def row_bytes(self) -> int:
        return (self.bins + 7) // 8
