"""Changes judged against a concurrent control (after seed 000's A/B tests).

A before/after comparison is confounded by the plant itself: a shift starts,
the sun comes out, and every tag changes more often whatever the poller did.
So a change that can be split is applied to a random half of its read units
(the treatment) while the other half keeps its intervals (the control), and
the verdict compares the two in the same windows: the treatment's fidelity
minus the control's, before against after (a difference in differences). A
kept change is then rolled out to the control half. Pure: no I/O, no clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Sequence

__all__ = ["AB", "BEFORE_AFTER", "MIN_UNITS", "gap_series", "split_units"]

AB = "a/b"
BEFORE_AFTER = "before/after"
# Fewer read units than this: a half is too small to say anything, judge the whole.
MIN_UNITS = 4


def split_units(
    keys: Iterable[str], unit_of: Callable[[str], Hashable], seed: int
) -> tuple[list[str], list[str]]:
    """(treatment, control): whole read units to either side, at random by `seed`.

    Tags that share a read go to the same side, since a read's period is its
    fastest member's: half a read slowed is no read slowed. With fewer than
    MIN_UNITS units everything is treatment and the control is empty.
    """
    units: dict[Hashable, list[str]] = {}
    for key in sorted(keys):
        units.setdefault(unit_of(key), []).append(key)
    if len(units) < MIN_UNITS:
        return sorted(k for ks in units.values() for k in ks), []
    order = sorted(units, key=repr)
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    treatment = sorted(k for u in order[:half] for k in units[u])
    control = sorted(k for u in order[half:] for k in units[u])
    return treatment, control


def gap_series(pairs: Sequence[tuple[float, float]]) -> list[float]:
    """Per window: 1 + treatment fidelity - control fidelity (the plant's mood cancels)."""
    return [1.0 + treated - control for treated, control in pairs]
