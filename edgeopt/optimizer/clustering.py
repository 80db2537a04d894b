"""KMeans over register correlations: the cluster worker process's own code.

Only the worker (`python -m edgeopt.optimizer.cluster_worker`) imports this
module, when its first request comes: numpy (20 MB) and scikit-learn (about
100 MB) load there and never in the daemon, which imports `cluster_worker`
alone to start the worker and talk to it. Tests and benchmarks may import it.

The indicators arrive as `PackedIndicators` (one bit per tag and time bin);
`unpack_indicators` makes them the uint8 matrix the features are built from.
"""

from __future__ import annotations

import warnings

import numpy as np

from edgeopt.optimizer.indicators import ClusterResult, PackedIndicators

# Below this silhouette score no split is better than keeping the tags together.
MIN_SILHOUETTE = 0.25
# Features are rounded to this many decimals before clustering: rows equal but
# for float noise (two tags with identical changes) are then exact duplicates.
FEATURE_DECIMALS = 9


def pack_indicators(matrix: np.ndarray) -> PackedIndicators:
    """A 0/1 matrix (one row per tag, one column per bin) packed as the daemon passes it on."""
    rows, bins = matrix.shape
    return PackedIndicators(rows, bins, np.packbits(matrix != 0, axis=1).tobytes())


def unpack_indicators(packed: PackedIndicators) -> np.ndarray:
    """The uint8 matrix (1 where a tag changed in a bin, or next to it) the bits stand for."""
    rows = np.frombuffer(packed.bits, np.uint8).reshape(packed.rows, packed.row_bytes)
    return np.unpackbits(rows, axis=1, count=packed.bins)


def correlation_features(indicators: np.ndarray) -> np.ndarray:
    """Each row's correlations with every row: the feature vector KMeans sees.

    Rounded to FEATURE_DECIMALS: the matrix product leaves identical tags'
    rows a few ulps apart, and they must compare equal (see `distinct_rows`).
    """
    x = indicators.astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.sqrt((x * x).sum(axis=1))
    norms[norms == 0] = 1.0
    x = x / norms[:, None]
    corr = x @ x.T
    np.fill_diagonal(corr, 1.0)
    return np.round(corr, FEATURE_DECIMALS)


def distinct_rows(features: np.ndarray) -> int:
    """How many different rows `features` has: KMeans cannot find more clusters than that."""
    if features.shape[0] == 0:
        return 0
    return int(np.unique(features, axis=0).shape[0])


def largest_k(features: np.ndarray, max_k: int) -> int:
    """The largest k worth trying: at most max_k, n - 1 (silhouette), and the distinct rows."""
    n = features.shape[0]
    return min(max_k, n - 1, distinct_rows(features))


def cluster_tags(indicators: np.ndarray, max_k: int = 12, seed: int = 0) -> ClusterResult:
    """KMeans on the rows of the correlation matrix, k by the best silhouette score.

    indicators: one row per tag, one column per time bin (1 where the tag
    changed in that bin). Runs in the worker process.

    k never exceeds the number of distinct feature rows (tags that change
    together have equal rows), which is what made sklearn warn "Number of
    distinct clusters found smaller than n_clusters". Should a fit still
    warn, that k is skipped and the warning never reaches the log.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import silhouette_score

    n = indicators.shape[0]
    if n < 3:
        return ClusterResult([0] * n, 1, 0.0)
    features = correlation_features(indicators)
    best: ClusterResult | None = None
    for k in range(2, largest_k(features, max_k) + 1):
        model = KMeans(n_clusters=k, n_init=4, random_state=seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            labels = model.fit_predict(features)
        degenerate = False
        for w in caught:
            if issubclass(w.category, ConvergenceWarning):
                degenerate = True  # fewer clusters than asked for: not a k to keep
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if degenerate:
            continue
        if len(set(labels.tolist())) < 2:
            continue
        score = float(silhouette_score(features, labels))
        if best is None or score > best.silhouette:
            best = ClusterResult([int(v) for v in labels], k, score)
    if best is None or best.silhouette < MIN_SILHOUETTE:
        # No k separates the tags well: they are one group (e.g. identical rows).
        return ClusterResult([0] * n, 1, 0.0 if best is None else best.silhouette)
    return best
