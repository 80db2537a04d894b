"""The optimizer's learned state: saved after each change, restored at start and on reload.

What `persistence` writes and reads is made and taken back here: the plan
model's allocation and triggers, the strategies' learning, the activity
profiles and the change history. A config reload keeps what was learned
about every tag whose config did not change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from edgeopt.optimizer.evaluation import Outcome
from edgeopt.optimizer.model import PlanModel
from edgeopt.optimizer.parts import OptimizerParts
from edgeopt.optimizer.records import OptimizationRecord, WindowMetrics
from edgeopt.optimizer.state import LearnedState, export_tags, restore_tags
from edgeopt.poller import Poller, default_cost

__all__ = ["HISTORY_KEEP", "OptimizerMemory"]

log = logging.getLogger(__name__)

HISTORY_KEEP = 500
RECORDS_WHOLE = 3  # the latest records kept whole; older judged ones keep their history row


class OptimizerMemory(OptimizerParts):
    """Saving, loading, exporting and restoring what the optimizer learned."""

    def attach(self, store: Any) -> None:
        """Persist after every change through `store`: the learned state's one writer.

        store: a `persistence.LearnedStateStore`, or an aiosqlite connection
        (wrapped in one, which then owns it). Every save, whoever asks for it,
        goes through the store's lock, so no two transactions interleave.
        """
        from edgeopt.optimizer.persistence import LearnedStateStore

        self._store = store if isinstance(store, LearnedStateStore) else LearnedStateStore(store)

    async def _persist(self) -> None:
        if self._store is None:
            return
        try:
            await self.save(profiles=False)
        except Exception as exc:  # the loop goes on; the next save retries
            log.warning("Failed to save optimization history: %s", exc)

    async def save(self, conn: Any = None, *, profiles: bool = True) -> None:
        """Write the learned state in one transaction, through the one writer.

        conn: None (or the attached store's connection) saves through the
        attached store; another aiosqlite connection is written directly.
        Only records changed since the last save are written; `profiles=False`
        skips the activity profiles (the bulk of it) and keeps the stored ones.
        The state is exported once the writer is free, so a save never writes
        an older state over a newer one.
        """
        from edgeopt.optimizer.persistence import writer_for

        exported: list[OptimizationRecord] = []

        def export() -> LearnedState:
            return self.export_state(profiles=profiles, only_dirty=True, streamed=True)

        def taken() -> None:
            # Clean as of this export: a change while the write runs dirties them again.
            for record in self.records:
                if record.dirty:
                    record.dirty = False
                    exported.append(record)

        try:
            # Never beside a cycle: the state is taken between two of them.
            async with self._lock:
                await writer_for(self._store, conn).save(export, taken)
        except BaseException:
            for record in exported:
                record.dirty = True
            raise
        self._settle_records()

    def _settle_records(self) -> None:
        """Older judged records, saved, keep only their history rows."""
        for record in self.records[:-RECORDS_WHOLE]:
            record.settle()

    async def load(self, conn: Any = None) -> bool:
        """Restore learned state (from the attached store, or `conn`); False if none was saved."""
        from edgeopt.optimizer.persistence import writer_for

        state = await writer_for(self._store, conn).load()
        if state is None:
            return False
        self.restore(state)
        return True

    def export_state(
        self, profiles: bool = True, only_dirty: bool = False, *, streamed: bool = False
    ) -> LearnedState:
        """What `restore` takes back; `streamed`: the tags are built chunk by chunk (`tags_of`)."""
        now, wall = self.clock.monotonic(), self.clock.now()
        tags: dict[str, dict[str, Any]] = {}
        if not streamed:
            exported = self.activity.export_profiles() if profiles else {}
            tags = export_tags(self.poller.tags, self.model, exported)

        def tags_of(keys: Sequence[str]) -> dict[str, dict[str, Any]]:
            exported = self.activity.export_profiles(keys) if profiles else {}
            return export_tags(self.poller.tags, self.model, exported, keys)

        return LearnedState(
            meta={
                "last_quick": self.last_quick,
                "last_full": self.last_full,
                "weight": self.model.weight,
                "forecast": self.model.forecast,
                "periods": self.model.periods,
                "next_id": self._next_id,
                "activity": self.activity.export_globals() if profiles else None,
                "saved": wall,
                "pending": None if self.pending is None else self.pending.id,
            },
            strategies={
                name: {
                    "enabled": s.enabled,
                    "params": dict(s.params),
                    "learning": s.learning.to_json(now, wall),
                }
                for name, s in self.strategies.items()
            },
            tags=tags,
            triggers={k: sorted(v) for k, v in self.model.triggers.items()},
            records=[
                r.to_json() for r in self.records if not r.settled and (r.dirty or not only_dirty)
            ],
            tag_keys=list(self.poller.tags) if streamed else None,
            tags_of=tags_of if streamed else None,
        )

    def restore(self, state: LearnedState) -> None:
        """Take back learned state; tags whose config changed start afresh."""
        now, wall = self.clock.monotonic(), self.clock.now()
        meta = state.meta
        self.last_quick = _opt_float(meta.get("last_quick"))
        self.last_full = _opt_float(meta.get("last_full"))
        weight = _opt_float(meta.get("weight"))
        self.model.weight = weight
        self.model.forecast = bool(meta.get("forecast", False))
        periods = meta.get("periods") or {}
        self.model.periods = {str(k): int(v) for k, v in dict(periods).items()}
        self._next_id = int(meta.get("next_id", 1))
        for name, saved in state.strategies.items():
            strategy = self.strategies.get(name)
            if strategy is None:
                continue
            strategy.enabled = bool(saved.get("enabled", strategy.enabled))
            params = {
                k: v for k, v in dict(saved.get("params", {})).items() if k in strategy.defaults
            }
            try:
                strategy.update_parameters(**params)
            except ValueError as exc:
                log.warning("ignoring saved parameters of strategy %s: %s", name, exc)
            strategy.learning.load_json(dict(saved.get("learning", {})), now, wall)
        valid = restore_tags(self.poller.tags, self.model, state.tags, state.triggers)
        self.reactions.follow_plan()
        self.activity.sync(self.poller)
        profiles = {
            k: v["profile"] for k, v in state.tags.items() if k in valid and v.get("profile")
        }
        globals_ = meta.get("activity")
        if isinstance(globals_, dict):
            self.activity.import_profiles(profiles, globals_)
        self.records = [OptimizationRecord.from_json(r) for r in state.records][-HISTORY_KEEP:]
        pending = [r for r in self.records if r.pending]
        for extra in pending[:-1]:  # at most one can be in flight; older ones are void
            extra.outcome = Outcome.ROLLED_BACK
            extra.reason = "interrupted by a restart"
            extra.dirty = True
        self.pending = pending[-1] if pending else None
        if self.pending is not None:
            # The after-windows start again: the old ones died with the process.
            self.pending.after_metrics = WindowMetrics()
            self.pending.dirty = True
            self.pending.evaluate_at = max(
                self.pending.evaluate_at, wall + float(self.config.evaluate_after) / 2
            )
        if self.records:
            self._next_id = max(self._next_id, max(r.id for r in self.records) + 1)
        self._settle_records()  # the loaded ones are saved already (the void ones are dirty)
        self.model.push(now)
        log.debug("Loaded %d optimization records from storage", len(self.records))

    def reload(self, poller: Poller, state: LearnedState | None = None) -> None:
        """After a config reload: keep what was learned about tags whose config is unchanged.

        state: what `export_state()` returned *before* the poller took the new
        config; its fingerprints are the old configs', so changed tags start
        afresh. Without it the state is exported now, which is only right when
        no tag's config changed.
        """
        if state is None:
            state = self.export_state()
        settled = [r for r in self.records if r.settled]  # not in an export: kept as they are
        if poller is not self.poller:
            self._detach()
            self.poller = poller
            self._attach(poller)
        self.model = PlanModel(poller)
        self.reactions.follow(poller, self.model)
        self._default_costs = {n: default_cost(d.config) for n, d in poller.devices.items()}
        self.restore(state)
        if settled:
            restored = {r.id for r in self.records}
            kept = [r for r in settled if r.id not in restored]
            self.records = sorted(kept + self.records, key=lambda r: r.id)[-HISTORY_KEEP:]


def _opt_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
