"""Judging a change: Welch's t-test over per-window samples, and the keep/roll-back rule.

Pure and dependency-free (scipy is not imported in the daemon): the Student t
distribution's tail comes from the regularised incomplete beta function,
evaluated by its continued fraction (Lentz's method).

The rule, in order:

1. The change lost fidelity beyond `max_fidelity_loss` (significantly, or by
   three times the limit whatever the noise): rolled back.
2. It was a repair (it sped reads up to win fidelity back) and did not lose
   fidelity: kept.
3. It saved at least `min_improvement` of the bus time, significantly: kept.
4. Otherwise: rolled back, because a change that does not clearly help is
   not worth its risk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

ALPHA = 0.05  # significance level of the one-sided tests
# A measured cost this much above the before-windows contradicts a planned saving.
CONTRADICTION = 0.05
_EPS = 1e-300


class Outcome(StrEnum):
    KEPT = "kept"
    ROLLED_BACK = "rolled_back"
    PENDING = "pending"


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _EPS else _EPS)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _EPS else _EPS)
        c = 1.0 + aa / c
        c = c if abs(c) > _EPS else _EPS
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _EPS else _EPS)
        c = 1.0 + aa / c
        c = c if abs(c) > _EPS else _EPS
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 3e-14:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


@dataclass(frozen=True, slots=True)
class WelchResult:
    """Welch's test of mean(a) > mean(b)."""

    t: float
    df: float
    p_greater: float  # one-sided p-value for mean(a) > mean(b)
    mean_a: float
    mean_b: float


def _mean_var(xs: Sequence[float]) -> tuple[float, float]:
    n = len(xs)
    mean = sum(xs) / n
    var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
    return mean, var


def welch(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's unequal-variance t-test, one-sided: is mean(a) greater than mean(b)?

    Samples with no spread at all (a deterministic plan gives the same bus
    time every window) decide by their means alone: p is 0 or 1.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's test needs at least two samples on each side")
    ma, va = _mean_var(a)
    mb, vb = _mean_var(b)
    na, nb = len(a), len(b)
    se2 = va / na + vb / nb
    scale = max(abs(ma), abs(mb), 1e-12)
    if se2 <= (1e-12 * scale) ** 2:
        diff = ma - mb
        if abs(diff) <= 1e-12 * scale:
            return WelchResult(0.0, float(na + nb - 2), 0.5, ma, mb)
        return WelchResult(
            math.copysign(math.inf, diff), float(na + nb - 2), 0.0 if diff > 0 else 1.0, ma, mb
        )
    t = (ma - mb) / math.sqrt(se2)
    num = se2 * se2
    den = (va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1)
    df = num / den if den > 0 else float(na + nb - 2)
    return WelchResult(t, df, t_sf(t, df), ma, mb)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the evaluation decided about one change, and why."""

    outcome: Outcome
    reason: str
    improvement: float  # share of bus time saved (negative: it costs more)
    fidelity_loss: float  # fidelity before minus after (share of time within deadband)
    confidence: float  # 1 - p of the test that decided


def decide(
    cost_before: Sequence[float],
    cost_after: Sequence[float],
    fidelity_before: Sequence[float],
    fidelity_after: Sequence[float],
    *,
    min_improvement: float,
    max_fidelity_loss: float,
    repair: bool = False,
    alpha: float = ALPHA,
    planned: float | None = None,
    expected_loss: float = 0.0,
) -> Verdict:
    """Keep or roll back a change from per-window bus costs and fidelity estimates.

    expected_loss: the fidelity loss the change was planned with (the
    allocation budgeted it); only a loss beyond it by max_fidelity_loss counts.
    planned: the saving the plan itself predicts (a share). A read slowed to a
    period near the evaluation's length shows up in some windows and not in
    others, so its measured saving is noisy where the planned one is exact;
    a change whose planned saving clears the bar is kept unless the
    measurement contradicts it: cost up by more than CONTRADICTION, or up
    significantly (the do-no-harm guard watches the measured cost anyway).
    """
    cost = welch(cost_before, cost_after)
    base = cost.mean_a
    improvement = (cost.mean_a - cost.mean_b) / base if base > 0 else 0.0
    fid = welch(fidelity_before, fidelity_after)
    loss = fid.mean_a - fid.mean_b
    # The loss the change was planned with was budgeted for; only what exceeds it
    # is a measured miss.
    excess = loss - max(0.0, expected_loss)
    if excess > max_fidelity_loss and (fid.p_greater < alpha or excess > 3 * max_fidelity_loss):
        return Verdict(
            Outcome.ROLLED_BACK,
            f"fidelity fell by {loss:.3f} (limit {max_fidelity_loss:.3f}, p={fid.p_greater:.3f})",
            improvement,
            loss,
            1.0 - fid.p_greater,
        )
    if repair:
        gain = -loss
        return Verdict(
            Outcome.KEPT,
            f"repair: fidelity {'rose' if gain >= 0 else 'held'} ({gain:+.4f})",
            improvement,
            loss,
            1.0 - fid.p_greater
            if gain < 0
            else 1.0 - welch(fidelity_after, fidelity_before).p_greater,
        )
    if improvement >= min_improvement and cost.p_greater < alpha:
        return Verdict(
            Outcome.KEPT,
            f"bus time down {improvement:.1%} (p={cost.p_greater:.3g})",
            improvement,
            loss,
            1.0 - cost.p_greater,
        )
    # Contradicted: the measured cost is up, significantly or by more than the noise allows.
    contradicted = improvement < -CONTRADICTION or welch(cost_after, cost_before).p_greater < alpha
    if planned is not None and planned >= min_improvement and not contradicted:
        return Verdict(
            Outcome.KEPT,
            f"planned bus time down {planned:.1%}, measured {improvement:+.1%} "
            f"(p={cost.p_greater:.3g})",
            improvement,
            loss,
            1.0 - cost.p_greater,
        )
    if improvement < min_improvement:
        reason = f"bus time down only {improvement:.1%} (needs {min_improvement:.0%})"
    else:
        reason = f"saving of {improvement:.1%} is not significant (p={cost.p_greater:.3g})"
    return Verdict(Outcome.ROLLED_BACK, reason, improvement, loss, cost.p_greater)
