"""Self-optimization: learns per-tag rates and trigger relations, and re-plans the reads.

The public entry points (imported lazily, so the cluster worker process,
which imports `edgeopt.optimizer.cluster_worker`, stays small):

- `build_optimizer(poller, config, clock, events, *, state=None, resources=None)`
- `Optimizer`: the learning loop (see `edgeopt.optimizer.loop`)
- `LearnedState`, `load_state`, `save_state`, `OPTIMIZER_SCHEMA_SQL` (persistence)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeopt.exports import lazy_exports

if TYPE_CHECKING:
    from edgeopt.optimizer.loop import Optimizer, build_optimizer
    from edgeopt.optimizer.persistence import OPTIMIZER_SCHEMA_SQL, load_state, save_state
    from edgeopt.optimizer.state import LearnedState

__all__ = [
    "OPTIMIZER_SCHEMA_SQL",
    "LearnedState",
    "Optimizer",
    "build_optimizer",
    "load_state",
    "save_state",
]

_WHERE = {
    "LearnedState": "edgeopt.optimizer.state",
    "Optimizer": "edgeopt.optimizer.loop",
    "build_optimizer": "edgeopt.optimizer.loop",
    "OPTIMIZER_SCHEMA_SQL": "edgeopt.optimizer.persistence",
    "load_state": "edgeopt.optimizer.persistence",
    "save_state": "edgeopt.optimizer.persistence",
}


__getattr__ = lazy_exports(__name__, _WHERE)
