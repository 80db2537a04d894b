"""The learned state has one writer: concurrent saves never interleave their transactions.

Optimizer cycles save after every change, the daemon saves every few minutes
and at shutdown, operators change parameters: all on one SQLite connection.
Seen before the fix: "cannot start a transaction within a transaction".
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from test_optimizer_sim import Sim, config, constant, device, steps, tag

from edgeopt.daemon import Daemon
from edgeopt.forked import WorkFailed
from edgeopt.optimizer import build_optimizer
from edgeopt.optimizer.loop import Optimizer
from edgeopt.optimizer.persistence import LearnedStateStore, create_tables, save_state

FAST_LOOP = {"quick_every": "60s", "full_every": "600s", "evaluate_after": "120s"}


def plant() -> tuple[Sim, Optimizer]:
    tags = [
        tag("busy", 0, interval="1s", min_interval="500ms", max_staleness="10s"),
        tag("quiet1", 30, interval="1s", max_staleness="30s"),
        tag("quiet2", 60, interval="1s", max_staleness="30s"),
        tag("quiet3", 90, interval="1s", max_staleness="30s", priority="low"),
    ]
    cfg = config([device("d", tags)], **FAST_LOOP)
    signals = {
        "d/busy": steps(2.0),
        "d/quiet1": constant(1),
        "d/quiet2": constant(2),
        "d/quiet3": constant(3),
    }
    sim = Sim(cfg.devices, signals)
    return sim, build_optimizer(sim.poller, cfg, sim.clock, sim.events)


async def test_concurrent_saves_through_the_one_writer_never_collide(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim, opt = plant()
    await sim.run(600.0, opt)
    assert opt.records
    db = tmp_path / "edgeopt.db"
    store = await LearnedStateStore.open(db)
    await create_tables(store.conn)
    opt.attach(store)
    # The daemon's periodic save job, on the same optimizer and store.
    cfg = config([device("d", [tag("x", 0)])])
    daemon = Daemon(cfg, clock=sim.clock, handle_signals=False)
    daemon.optimizer, daemon._learning = opt, store

    jobs = []
    for i in range(25):
        jobs += [
            daemon._save_learning(),
            opt.run_strategy("interval"),  # a cycle, then its own save
            opt.run_quick_optimization(),
            opt.evaluate_optimizations(force=True),
            opt.update_strategy_parameters("interval", min_gain=0.05 + i / 1000),
            opt.set_strategy_enabled("pattern", i % 2 == 0),
        ]
    jobs.append(sim.run(300.0, opt))  # cycles due by the clock, meanwhile
    with caplog.at_level(logging.WARNING):
        await asyncio.gather(*jobs)
        await daemon._save_learning()  # the final save, as at shutdown
    problems = [r.getMessage() for r in caplog.records if r.name.startswith("edgeopt")]
    problems = [m for m in problems if "save" in m or "transaction" in m]
    assert problems == []
    assert store.saves >= 25 * 5

    await store.close()
    assert store.closed
    await daemon._save_learning()  # after close: nothing written, nothing raised

    async with aiosqlite.connect(db, isolation_level=None) as conn:
        fresh_store = LearnedStateStore(conn)
        state = await fresh_store.load()
    assert state is not None
    expected = opt.export_state()
    assert {k: t["allocated"] for k, t in state.tags.items()} == {
        k: t["allocated"] for k, t in expected.tags.items()
    }
    assert state.triggers == expected.triggers
    assert state.strategies["interval"]["params"] == expected.strategies["interval"]["params"]
    assert state.strategies["pattern"]["enabled"] is expected.strategies["pattern"]["enabled"]
    # Every record as it is now: a change made while a save ran was saved later, not lost.
    saved = {r["id"]: (r.get("outcome"), r.get("evaluated")) for r in state.records}
    assert saved == {r.id: (r.outcome.value, r.evaluated) for r in opt.records}
    assert not any(r.dirty for r in opt.records)
    await opt.close()


async def test_two_raw_saves_on_one_connection_do_collide(tmp_path: Path) -> None:
    """Why the writer exists: without it, the second BEGIN lands inside the first."""
    _, opt = plant()
    async with aiosqlite.connect(tmp_path / "raw.db", isolation_level=None) as conn:
        await create_tables(conn)
        state = opt.export_state()
        results = await asyncio.gather(
            *(save_state(conn, state) for _ in range(4)), return_exceptions=True
        )
        assert any("transaction" in str(r) for r in results if isinstance(r, Exception))
        store = LearnedStateStore(conn)
        assert all(await asyncio.gather(*(store.save(opt.export_state) for _ in range(4))))
    await opt.close()


async def test_tags_are_written_a_chunk_at_a_time(tmp_path: Path) -> None:
    # At 10k tags every tag's entry and profile at once are ~50 MB of Python
    # objects; a save asks for them a chunk of tags at a time and writes them all.
    from edgeopt.optimizer.persistence import TAG_CHUNK, load_state
    from edgeopt.optimizer.state import LearnedState

    n = 2 * TAG_CHUNK + 17
    keys = [f"d/t{i}" for i in range(n)]
    asked: list[int] = []

    def tags_of(chunk: Sequence[str]) -> dict[str, dict[str, Any]]:
        asked.append(len(chunk))
        # One tag is gone by the time its chunk is asked for (a reload meanwhile).
        return {
            k: {
                "fingerprint": "f",
                "allocated": 1.0,
                "rate": None,
                "miss": 0.25 if k == "d/t5" else None,
                "profile": {"hod_jumps": [float(k[3:])]},
            }
            for k in chunk
            if k != "d/t3"
        }

    state = LearnedState(
        meta={"saved": 1.0},
        strategies={},
        tags={},
        triggers={},
        records=[],
        tag_keys=keys,
        tags_of=tags_of,
    )
    async with aiosqlite.connect(tmp_path / "s.db", isolation_level=None) as conn:
        await create_tables(conn)
        await save_state(conn, state)
        loaded = await load_state(conn)
    assert asked and max(asked) <= TAG_CHUNK and sum(asked) == n
    assert loaded is not None and set(loaded.tags) == set(keys) - {"d/t3"}
    assert all(loaded.tags[k]["profile"] == {"hod_jumps": [float(k[3:])]} for k in loaded.tags)
    assert loaded.tags["d/t5"]["miss"] == 0.25  # the extras, gathered chunk by chunk


async def test_the_optimizers_save_streams_its_profiles(tmp_path: Path) -> None:
    sim, opt = plant()
    await sim.run(600.0, opt)
    store = await LearnedStateStore.open(tmp_path / "edgeopt.db")
    await create_tables(store.conn)
    opt.attach(store)
    await opt.save(profiles=True)
    from edgeopt.optimizer.persistence import load_state

    loaded = await load_state(store.conn)
    await store.close()
    assert loaded is not None
    assert {k: v["profile"] for k, v in loaded.tags.items()} == opt.activity.export_profiles()


async def test_a_save_is_exported_in_a_child_and_what_changes_meanwhile_stays_dirty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeopt.optimizer import persistence
    from edgeopt.optimizer.persistence import load_state

    sim, opt = plant()
    await sim.run(600.0, opt)
    assert opt.records and all(r.dirty for r in opt.records[-1:])
    store = await LearnedStateStore.open(tmp_path / "edgeopt.db")
    await create_tables(store.conn)
    opt.attach(store)
    exported_in = tmp_path / "pid"
    export_state = Optimizer.export_state

    def recording(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
        exported_in.write_text(str(os.getpid()))
        return export_state(self, *args, **kwargs)

    write = persistence.write_statements

    async def changing_meanwhile(conn: aiosqlite.Connection, statements: Any) -> None:
        opt.records[-1].dirty = True  # the record changes while the rows are written
        await write(conn, statements)

    monkeypatch.setattr(Optimizer, "export_state", recording)
    monkeypatch.setattr(persistence, "write_statements", changing_meanwhile)
    await opt.save(profiles=True)
    assert int(exported_in.read_text()) != os.getpid()
    assert [r.dirty for r in opt.records] == [False] * (len(opt.records) - 1) + [True]
    loaded = await load_state(store.conn)
    assert loaded is not None
    assert [r["id"] for r in loaded.records] == [r.id for r in opt.records]

    # An export that fails in the child fails the save: every record stays dirty.
    def failing(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk image is malformed")

    monkeypatch.setattr(Optimizer, "export_state", failing)
    for record in opt.records:
        record.dirty = True
    with pytest.raises(WorkFailed, match="disk image is malformed"):
        await opt.save(profiles=True)
    assert all(r.dirty for r in opt.records)
    await store.close()
