"""The verdict on a change from its record alone (`edgeopt.optimizer.judgement`), and the
fidelity sample its windows are measured on (`edgeopt.optimizer.measure`)."""

from __future__ import annotations

import pytest

from edgeopt.config import OptimizerConfig
from edgeopt.optimizer.evaluation import Outcome, Verdict
from edgeopt.optimizer.experiment import AB
from edgeopt.optimizer.judgement import expected_loss, judge, required_improvement
from edgeopt.optimizer.measure import FIDELITY_SAMPLE, fidelity_sample
from edgeopt.optimizer.model import PlanSnapshot
from edgeopt.optimizer.records import OptimizationRecord, WindowMetrics

CONFIG = OptimizerConfig()  # evaluate_after 10 min, min_improvement 10 %, max loss 0.02


def record(
    bus_before: list[float],
    bus_after: list[float],
    fid_before: list[float] | None = None,
    fid_after: list[float] | None = None,
    **fields: object,
) -> OptimizationRecord:
    def side(bus: list[float], fid: list[float] | None) -> WindowMetrics:
        return WindowMetrics(bus, [10.0] * len(bus), fid if fid is not None else [0.99] * len(bus))

    return OptimizationRecord(
        id=7,
        strategy="interval",
        summary="",
        started=0.0,
        evaluate_at=600.0,
        before=PlanSnapshot({"d/a": 1.0}, {}),
        after=PlanSnapshot({"d/a": 8.0}, {}),
        changed=["d/a"],
        before_metrics=side(bus_before, fid_before),
        after_metrics=side(bus_after, fid_after),
        **fields,  # type: ignore[arg-type]
    )


def test_a_clear_saving_at_the_same_fidelity_is_kept() -> None:
    verdict = judge(record([0.50, 0.51, 0.49, 0.50], [0.30, 0.31, 0.29, 0.30]), 600.0, CONFIG)
    assert isinstance(verdict, Verdict) and verdict.outcome is Outcome.KEPT
    assert verdict.improvement == pytest.approx(0.4, abs=0.01)


def test_a_saving_that_costs_fidelity_is_rolled_back() -> None:
    verdict = judge(
        record(
            [0.50, 0.51, 0.49, 0.50],
            [0.30, 0.31, 0.29, 0.30],
            [0.99, 0.99, 0.98, 0.99],
            [0.90, 0.91, 0.89, 0.90],
        ),
        600.0,
        CONFIG,
    )
    assert isinstance(verdict, Verdict) and verdict.outcome is Outcome.ROLLED_BACK
    assert verdict.fidelity_loss == pytest.approx(0.0875, abs=0.005)


def test_too_few_windows_wait_and_then_roll_back_once_overdue() -> None:
    thin = record([0.5], [0.3])
    assert judge(thin, 600.0, CONFIG) == "#7 needs more measurement windows"
    overdue = judge(thin, 600.0 + 2 * 600.0, CONFIG)
    assert isinstance(overdue, Verdict) and overdue.outcome is Outcome.ROLLED_BACK
    assert overdue.reason == "too few measurements to judge"


def test_a_repair_is_kept_whatever_its_windows_say() -> None:
    verdict = judge(record([0.3], [0.5], repair=True), 600.0, CONFIG)
    assert isinstance(verdict, Verdict) and verdict.outcome is Outcome.KEPT


def test_an_ab_change_is_judged_against_its_control() -> None:
    # Before/after, fidelity fell with the plant; against the control in the
    # same windows the treated half lost nothing.
    falling = dict(
        fid_before=[0.99, 0.99, 0.99, 0.99],
        fid_after=[0.90, 0.90, 0.91, 0.89],
    )
    bus = ([0.50, 0.51, 0.49, 0.50], [0.30, 0.31, 0.29, 0.30])
    alone = judge(record(*bus, falling["fid_before"], falling["fid_after"]), 600.0, CONFIG)
    assert isinstance(alone, Verdict) and alone.outcome is Outcome.ROLLED_BACK
    paired = record(
        *bus,
        falling["fid_before"],
        falling["fid_after"],
        design=AB,
        ab_before=[(0.99, 0.99), (0.98, 0.98), (0.99, 0.99)],
        ab_after=[(0.90, 0.90), (0.91, 0.91), (0.89, 0.89)],
    )
    verdict = judge(paired, 600.0, CONFIG)
    assert isinstance(verdict, Verdict) and verdict.outcome is Outcome.KEPT


def test_the_bar_and_the_budgeted_loss_come_from_the_prediction() -> None:
    assert required_improvement(record([], []), 0.1) == 0.1
    assert required_improvement(record([], [], predicted={"gain": 0.06}), 0.1) == 0.03
    assert required_improvement(record([], [], predicted={"gain": 0.5}), 0.1) == 0.1
    assert expected_loss(record([], [])) == 0.0
    planned = record([], [], predicted={"ood_before": 0.2, "ood_after": 0.6}, control=["d/b"])
    assert expected_loss(planned) == pytest.approx(0.4 / 2)  # one changed, one control


def test_the_fidelity_sample_spreads_over_the_changed_tags() -> None:
    keys = [f"d/t{i}" for i in range(1000)]
    sample = fidelity_sample(keys)
    assert len(sample) == FIDELITY_SAMPLE and sample[0] == "d/t0" and sample[-1] == "d/t997"
    assert len(set(sample)) == FIDELITY_SAMPLE
    assert fidelity_sample(keys[:10]) == keys[:10]
