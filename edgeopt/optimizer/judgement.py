"""The verdict on a change under evaluation, from its record alone: kept, rolled back, or wait.

Pure: the record's windows, its A/B pairs and probes, and the optimizer's
settings in; a `Verdict`, or the reason to wait, out. The loop acts on it.
"""

from __future__ import annotations

import math

from edgeopt.config import OptimizerConfig
from edgeopt.optimizer.evaluation import Outcome, Verdict, decide
from edgeopt.optimizer.experiment import AB, gap_series
from edgeopt.optimizer.probes import probe_verdict
from edgeopt.optimizer.records import OptimizationRecord

MIN_WINDOWS = 2  # per side, for Welch's test


def judge(record: OptimizationRecord, wall: float, config: OptimizerConfig) -> Verdict | str:
    """The verdict on `record` now (its time has come), or why it must wait for more windows."""
    before, after = record.before_metrics, record.after_metrics
    enough = all(
        len(x) >= MIN_WINDOWS for x in (before.bus, after.bus, before.fidelity, after.fidelity)
    )
    if record.repair:
        # A repair reads tags faster, back toward their configured intervals:
        # it cannot cost fidelity nor more than the configured plan (the guard
        # watches that), and a plant busier than before would make a
        # before/after fidelity figure blame it for what it is repairing.
        return Verdict(
            Outcome.KEPT, "repair: reads back toward the configured intervals", 0.0, 0.0, 1.0
        )
    if not enough:
        overdue = wall >= record.evaluate_at + 2 * float(config.evaluate_after)
        if not overdue:
            return f"#{record.id} needs more measurement windows"
        return Verdict(Outcome.ROLLED_BACK, "too few measurements to judge", 0.0, 0.0, 0.0)
    fid_before, fid_after = before.fidelity, after.fidelity
    if record.design == AB and min(len(record.ab_before), len(record.ab_after)) >= 2:
        # Against the concurrent control: the plant's own swings cancel.
        fid_before, fid_after = gap_series(record.ab_before), gap_series(record.ab_after)
    verdict = decide(
        before.bus,
        after.bus,
        fid_before,
        fid_after,
        min_improvement=required_improvement(record, float(config.min_improvement)),
        planned=record.predicted.get("gain"),
        expected_loss=expected_loss(record),
        max_fidelity_loss=float(config.max_fidelity_loss),
        repair=record.repair,
    )
    return probe_verdict(record, verdict, float(config.max_fidelity_loss))


def expected_loss(record: OptimizationRecord) -> float:
    """Mean fidelity loss per changed tag that the change's own prediction budgeted."""
    before, after = record.predicted.get("ood_before"), record.predicted.get("ood_after")
    if before is None or after is None:
        return 0.0
    # An A/B change was planned whole: its halves share the loss per tag.
    tags = len(record.changed) + len(record.control)
    return max(0.0, after - before) / max(1, tags)


def required_improvement(record: OptimizationRecord, configured: float) -> float:
    """The saving a change must show: `configured`, or half the predicted one if less.

    Once a plant is well optimized, each further step saves less than the
    first did; a change that delivers half of what it promised, significantly,
    is confirmed, and a fixed 10 % bar would roll every late step back.
    """
    predicted = record.predicted.get("gain")
    if predicted is None or not math.isfinite(predicted) or predicted <= 0:
        return configured
    return min(configured, 0.5 * predicted)
