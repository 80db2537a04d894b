"""Probe bursts: slowed tags read at their configured rate for a while, to count what they miss.

Without ground truth the daemon cannot see the changes a slow read missed,
so the evaluation reads a sample of the tags a change slowed at their
configured rate, counts their changes, and asks whether the rate the change
was planned on explains that count. Pure: the loop passes in the statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeopt.optimizer.activity import corrected_rate
from edgeopt.optimizer.evaluation import Outcome, Verdict
from edgeopt.optimizer.model import PROBE, PlanModel
from edgeopt.optimizer.records import OptimizationRecord
from edgeopt.poller import TagRuntime

__all__ = [
    "PROBE_ALPHA",
    "PROBE_TAGS",
    "Probe",
    "ProbeBook",
    "choose_probes",
    "poisson_sf",
    "probe_finding",
    "probe_verdict",
]

PROBE_TAGS = 4  # slowed tags probed per evaluated change
PROBE_ALPHA = 0.05  # a probe's change count this unlikely under the planned rate is a miss


@dataclass
class Probe:
    """A slowed tag read at its configured rate for a while, to see what the slow rate misses."""

    key: str
    record: int
    slow: float
    base: float
    before: float
    start: float
    until: float
    reads: int
    jumps: int


def poisson_sf(k: int, mean: float) -> float:
    """P(X >= k) for X ~ Poisson(mean): how surprising k changes are at that mean."""
    if k <= 0:
        return 1.0
    if mean <= 0.0:
        return 0.0
    # 1 - P(X <= k - 1), summed in log space so a large mean does not underflow.
    log_term = -mean
    total = math.exp(log_term)
    for i in range(1, k):
        log_term += math.log(mean) - math.log(i)
        total += math.exp(log_term)
    return max(0.0, 1.0 - total)


def choose_probes(
    record: OptimizationRecord,
    tags: Mapping[str, TagRuntime],
    effective_period: Callable[[str], float],
    rates: Mapping[str, float],
) -> list[str]:
    """The PROBE_TAGS tags the change slowed most riskily (rate × the period they are seen within).

    A tag's slow period is the one its changes are seen within: a trigger
    follower's is its leader's, so a well-triggered follower is not slowed.
    """
    slowed: list[tuple[float, str]] = []
    for key, after in record.after.intervals.items():
        tag = tags.get(key)
        if tag is None or after <= record.before.intervals.get(key, after) * 1.01:
            continue
        effective = effective_period(key)
        if effective > tag.base_interval * 1.01:
            slowed.append((rates.get(key, 0.0) * effective, key))
    slowed.sort(reverse=True)
    return [key for _, key in slowed[:PROBE_TAGS]]


def probe_finding(
    probe: Probe, reads: int, changes: int, seconds: float, model_rate: float
) -> tuple[float, dict[str, Any]]:
    """(measured rate, the record's entry for this probe) from what the burst saw."""
    rate = corrected_rate(changes, reads, seconds, prior=0.0)
    hidden = rate * probe.slow - (1.0 - math.exp(-rate * probe.slow))
    return rate, {
        "rate": round(rate, 6),
        "model_rate": round(model_rate, 6),
        "events": changes,
        "seconds": round(seconds, 3),
        # How likely this many changes were if the rate the change was planned
        # on is right: small means the allocation under-estimated the tag.
        "p_model": round(poisson_sf(changes, model_rate * seconds), 6),
        "reads": reads,
        "slow_interval": round(probe.slow, 4),
        "base_interval": round(probe.base, 4),
        "ood_slow": round(min(1.0, rate * probe.slow / 2), 6),
        "ood_before": round(min(1.0, rate * probe.before / 2), 6),
        "missed_per_hour": round(hidden / probe.slow * 3600.0, 3),
    }


def probe_verdict(record: OptimizationRecord, verdict: Verdict, limit: float) -> Verdict:
    """Roll back when the probes show the change was planned on rates that are too low.

    The allocation already priced the loss its rates predict, so a probe
    that sees about as many changes as the plan's rate says is no news. Only
    a probe whose count the planned rate makes improbable (p < PROBE_ALPHA) is
    a measured miss; its excess rate over the planned one, times the extra
    period, is loss nobody budgeted for.
    """
    if verdict.outcome is not Outcome.KEPT or not record.probes or record.repair:
        return verdict
    excess = 0.0
    for p in record.probes.values():
        if float(p.get("p_model", 1.0)) >= PROBE_ALPHA:
            continue
        extra = max(0.0, float(p["slow_interval"]) - float(p["base_interval"]))
        surplus = max(0.0, float(p["rate"]) - float(p.get("model_rate", 0.0)))
        excess += min(1.0, surplus * extra / 2.0)
    loss = excess / max(1, len(record.changed))
    if loss <= limit:
        return verdict
    return Verdict(
        Outcome.ROLLED_BACK,
        f"probe bursts: slowed tags miss changes (fidelity loss {loss:.3f} > {limit})",
        verdict.improvement,
        max(verdict.fidelity_loss, loss),
        verdict.confidence,
    )


@dataclass
class ProbeBook:
    """The probes running now, the records already probed, and when the pending one's ran."""

    running: dict[str, Probe] = field(default_factory=dict)
    probed: set[int] = field(default_factory=set)
    # Record id -> (start, end) of its probes (monotonic): windows they overlap read
    # the probed tags at their configured rate, so they judge nothing.
    windows: dict[int, tuple[float, float]] = field(default_factory=dict)

    def start(
        self,
        record: OptimizationRecord,
        tags: Mapping[str, TagRuntime],
        model: PlanModel,
        effective_period: Callable[[str], float],
        duration: float,
        now: float,
    ) -> None:
        """Read a few of the tags `record` slowed at their configured rate for `duration`."""
        self.probed.add(record.id)
        for key in choose_probes(record, tags, effective_period, model.rates):
            self.windows = {record.id: (now, now + duration)}  # only the pending one matters
            tag = tags[key]
            stats = tag.state.stats
            self.running[key] = Probe(
                key,
                record.id,
                slow=effective_period(key),
                base=tag.base_interval,
                before=record.before.intervals.get(key, tag.base_interval),
                start=now,
                until=now + duration,
                reads=stats.reads,
                jumps=stats.changes,
            )
            model.override(key, tag.base_interval, now + duration, PROBE, now)

    def finish(
        self,
        key: str,
        tags: Mapping[str, TagRuntime],
        records: list[OptimizationRecord],
        model: PlanModel,
        now: float,
        wall: float,
    ) -> None:
        """A probe's time is up (its override expired): record what it saw."""
        probe = self.running.pop(key, None)
        tag = tags.get(key)
        if probe is None or tag is None:
            return
        record = next((r for r in records if r.id == probe.record), None)
        if record is None or record.settled:
            return
        stats = tag.state.stats
        reads = stats.reads - probe.reads
        rate, finding = probe_finding(
            probe, reads, stats.changes - probe.jumps, now - probe.start, model.rates.get(key, 0.0)
        )
        record.dirty = True
        record.probes[key] = finding
        if rate > model.rates.get(key, 0.0):
            model.rates[key] = rate
        # Read at its configured rate for a while: an unbiased measurement.
        if reads >= 5:
            model.reference_rates[key] = (rate, wall)

    def overlaps(self, record_id: int, start: float, end: float) -> bool:
        """Whether `record_id`'s probes ran in [start, end) (monotonic)."""
        window = self.windows.get(record_id)
        return window is not None and start < window[1] and end > window[0]
