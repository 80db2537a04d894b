"""Welch's t-test (against scipy) and the keep / roll-back decision table."""

from __future__ import annotations

import random

import pytest
from scipy import stats

from edgeopt.optimizer.evaluation import Outcome, decide, t_sf, welch


@pytest.mark.parametrize(
    ("n_a", "n_b", "shift", "sd_b"),
    [(5, 7, 0.3, 0.9), (10, 10, 0.0, 0.5), (3, 20, -0.5, 1.0), (30, 4, 1.0, 2.0)],
)
def test_welch_matches_scipy(n_a: int, n_b: int, shift: float, sd_b: float) -> None:
    rng = random.Random(n_a * 100 + n_b)
    a = [rng.gauss(1 + shift, 0.5) for _ in range(n_a)]
    b = [rng.gauss(1, sd_b) for _ in range(n_b)]
    ours = welch(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert ours.t == pytest.approx(ref.statistic, rel=1e-9)
    assert ours.p_greater == pytest.approx(ref.pvalue, rel=1e-6)


@pytest.mark.parametrize(("t", "df"), [(0.5, 3), (2.5, 7.3), (-1.2, 12), (10.0, 2.5), (0.0, 4)])
def test_t_tail_matches_scipy(t: float, df: float) -> None:
    assert t_sf(t, df) == pytest.approx(stats.t.sf(t, df), rel=1e-8, abs=1e-12)


def test_welch_without_spread_decides_by_the_means() -> None:
    assert welch([2.0, 2.0, 2.0], [1.0, 1.0]).p_greater == 0.0
    assert welch([1.0, 1.0], [2.0, 2.0, 2.0]).p_greater == 1.0
    assert welch([1.0, 1.0], [1.0, 1.0]).p_greater == 0.5


def test_welch_needs_two_samples_a_side() -> None:
    with pytest.raises(ValueError):
        welch([1.0], [1.0, 2.0])


BEFORE_COST = [1.00, 1.02, 0.98, 1.01, 0.99, 1.00]
HIGH_FIDELITY = [0.98, 0.981, 0.979, 0.98, 0.982, 0.978]


def judged(cost_after: list[float], fid_after: list[float], *, repair: bool = False) -> Outcome:
    return decide(
        BEFORE_COST,
        cost_after,
        HIGH_FIDELITY,
        fid_after,
        min_improvement=0.10,
        max_fidelity_loss=0.02,
        repair=repair,
    ).outcome


@pytest.mark.parametrize(
    ("cost_after", "fid_after", "repair", "outcome"),
    [
        # A clear saving, fidelity held: kept.
        ([0.70, 0.71, 0.69, 0.70], [0.979, 0.98, 0.981, 0.98], False, Outcome.KEPT),
        # The same saving, but fidelity fell by far more than the limit: rolled back.
        ([0.70, 0.71, 0.69, 0.70], [0.90, 0.91, 0.89, 0.90], False, Outcome.ROLLED_BACK),
        # Saving below min_improvement: rolled back.
        ([0.95, 0.96, 0.94, 0.95], [0.98, 0.98, 0.98, 0.98], False, Outcome.ROLLED_BACK),
        # A large but noisy saving that is not significant: rolled back.
        ([0.2, 1.8, 0.3, 1.7], [0.98, 0.98, 0.98, 0.98], False, Outcome.ROLLED_BACK),
        # A repair that costs bus time but wins fidelity: kept.
        ([1.20, 1.21, 1.19, 1.20], [0.99, 0.991, 0.989, 0.99], True, Outcome.KEPT),
        # A "repair" that lost fidelity beyond the limit: rolled back.
        ([1.20, 1.21, 1.19, 1.20], [0.90, 0.91, 0.89, 0.90], True, Outcome.ROLLED_BACK),
    ],
)
def test_decision_table(
    cost_after: list[float], fid_after: list[float], repair: bool, outcome: Outcome
) -> None:
    assert judged(cost_after, fid_after, repair=repair) is outcome


def test_verdict_records_improvement_loss_and_confidence() -> None:
    v = decide(
        BEFORE_COST,
        [0.5, 0.51, 0.49, 0.5],
        HIGH_FIDELITY,
        [0.98, 0.98, 0.98, 0.98],
        min_improvement=0.1,
        max_fidelity_loss=0.02,
    )
    assert v.outcome is Outcome.KEPT
    assert v.improvement == pytest.approx(0.5, rel=0.02)
    assert abs(v.fidelity_loss) < 0.002
    assert 0.99 < v.confidence <= 1.0
    assert "50" in v.reason
