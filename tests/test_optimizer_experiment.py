"""A/B verdicts: whole read units to either side, and a control that cancels the plant's mood."""

from __future__ import annotations

from test_optimizer_sim import Sim, config, constant, device, steps, tag

from edgeopt.optimizer import build_optimizer
from edgeopt.optimizer.evaluation import Outcome, decide
from edgeopt.optimizer.experiment import AB, MIN_UNITS, gap_series, split_units


def test_split_keeps_read_units_whole_and_is_reproducible() -> None:
    keys = [f"d/t{i}" for i in range(12)]
    unit = {k: i // 2 for i, k in enumerate(keys)}  # six reads of two tags
    treated, control = split_units(keys, unit.__getitem__, seed=7)
    assert sorted(treated + control) == sorted(keys)
    assert {unit[k] for k in treated}.isdisjoint({unit[k] for k in control})
    assert len({unit[k] for k in treated}) == 3
    assert split_units(keys, unit.__getitem__, seed=7) == (treated, control)
    assert len({tuple(split_units(keys, unit.__getitem__, seed=s)[0]) for s in range(10)}) > 1
    # Too few units: no control, the whole change is judged before/after.
    few = {k: i % (MIN_UNITS - 1) for i, k in enumerate(keys)}
    assert split_units(keys, few.__getitem__, seed=7) == (sorted(keys), [])


def test_the_control_cancels_what_the_plant_did_to_both_halves() -> None:
    # A shift starts after the change: both halves lose 0.1 of fidelity, the
    # treatment none more. Before/after blames the change; the control does not.
    before = [(0.95, 0.96), (0.96, 0.95), (0.95, 0.95), (0.96, 0.96)]
    after = [(0.85, 0.86), (0.86, 0.85), (0.85, 0.85), (0.86, 0.86)]
    cost_before, cost_after = [1.0, 1.01, 0.99, 1.0], [0.6, 0.61, 0.59, 0.6]
    naive = decide(
        cost_before,
        cost_after,
        [t for t, _ in before],
        [t for t, _ in after],
        min_improvement=0.1,
        max_fidelity_loss=0.02,
    )
    assert naive.outcome is Outcome.ROLLED_BACK and "fidelity" in naive.reason
    controlled = decide(
        cost_before,
        cost_after,
        gap_series(before),
        gap_series(after),
        min_improvement=0.1,
        max_fidelity_loss=0.02,
    )
    assert controlled.outcome is Outcome.KEPT


async def test_an_interval_change_over_many_reads_is_split_judged_and_rolled_out() -> None:
    # Ten quiet tags, each alone in its read (max_gap 0), and a busy one.
    tags = [tag(f"q{i}", 10 * i, interval="1s", max_staleness="30s") for i in range(10)]
    tags.append(tag("busy", 200, interval="1s", max_staleness="10s"))
    cfg = config(
        [device("d", tags, max_gap=0)],
        quick_every="30s",
        full_every="600s",
        evaluate_after="60s",
    )
    signals = {f"d/q{i}": constant(i) for i in range(10)}
    signals["d/busy"] = steps(2.0)
    sim = Sim(cfg.devices, signals)
    opt = build_optimizer(sim.poller, cfg, sim.clock, sim.events)
    await sim.run(600.0, opt)
    splits = [r for r in opt.records if r.design == AB]
    assert splits, [r.summary for r in opt.records]
    first = splits[0]
    assert first.control and set(first.control).isdisjoint(first.changed)
    assert "held as control" in first.summary
    assert first.ab_before and first.ab_after
    # Constant tags slowed: harmless, so kept, then rolled out to the control half.
    kept = [r for r in splits if r.outcome is Outcome.KEPT]
    assert kept, [(r.summary, r.reason) for r in splits]
    assert "rolled out to the" in kept[0].reason
    assert all(opt.model.allocated[k] > 1.0 for k in kept[0].control)
    history = opt.history(50)
    assert any(row["design"] == AB and row["control_tags"] > 0 for row in history)
    await opt.close()
