"""What a change is judged on: per-window bus time, reads and fidelity, and A/B pairs.

Read from the activity tracker's closed windows. A tag's fidelity counts its
changes against the period they are seen within: its own read period, or its
leader's when a trigger reads it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from edgeopt.optimizer.activity import ActivityTracker
from edgeopt.optimizer.records import WindowMetrics
from edgeopt.poller import Poller

FIDELITY_SAMPLE = 400  # changed tags whose fidelity is tracked per window


def fidelity_sample(keys: list[str]) -> list[str]:
    """At most FIDELITY_SAMPLE of `keys`, spread evenly over them."""
    if len(keys) <= FIDELITY_SAMPLE:
        return list(keys)
    step = len(keys) / FIDELITY_SAMPLE
    return [keys[int(i * step)] for i in range(FIDELITY_SAMPLE)]


@dataclass(frozen=True, slots=True)
class ChangeMeter:
    """The measurements over the tracker's windows, for the poller's tags as they are now."""

    activity: ActivityTracker
    poller: Poller
    leader_of: Mapping[str, str]  # trigger follower -> its leader

    def effective_period(self, key: str) -> float:
        """The period within which a tag's changes are seen (its leader's, if triggered)."""
        leader = self.leader_of.get(key)
        tag = self.poller.tags.get(leader or key)
        if tag is None:
            return 0.0
        return tag.interval

    def unit_of(self, key: str) -> Hashable:
        """The read a tag shares today (its unit in an A/B split), or the tag alone."""
        read = self.poller.read_of(key)
        return read.key if read is not None else key

    def metrics(self, slots: list[int], keys: list[str]) -> WindowMetrics:
        """Bus, reads and the fidelity of `keys` in each window of `slots`."""
        metrics = WindowMetrics()
        if not slots:
            return metrics
        fidelity = self.fidelity(slots, keys)
        for slot, fid in zip(slots, fidelity, strict=True):
            sample = self.activity.samples[slot]
            if sample is not None:
                metrics.add(sample.bus, sample.reads_per_s, fid)
        return metrics

    def fidelity(self, slots: list[int], keys: list[str]) -> list[float | None]:
        """Per window: 1 - mean estimated out-of-deadband share of `keys`.

        A tag seen to change `rate` times a second, whose changes are seen
        within `P` (its read period, or its leader's), is off for rate × P / 2.
        """
        present = [k for k in keys if k in self.activity.index and k in self.poller.tags]
        if not present:
            return [None] * len(slots)
        stats = self.activity.tag_windows(present, slots)
        halves = [self.effective_period(k) / 2.0 for k in present]
        out: list[float | None] = []
        for slot, reads, jumps in zip(slots, stats.reads, stats.jumps, strict=True):
            sample = self.activity.samples[slot]
            if sample is None:
                out.append(None)
                continue
            span = max(sample.end - sample.start, 1e-9)
            ood = [
                min(1.0, j / span * half)
                for r, j, half in zip(reads, jumps, halves, strict=True)
                if r > 0
            ]
            out.append(1.0 - sum(ood) / len(ood) if ood else None)
        return out

    def ab_pairs(
        self, slots: list[int], treated: list[str], control: list[str]
    ) -> list[tuple[float, float]]:
        """Per window with both: (treatment fidelity, control fidelity)."""
        if not control or not slots:
            return []
        pairs = zip(
            self.fidelity(slots, treated),
            self.fidelity(slots, fidelity_sample(control)),
            strict=True,
        )
        return [(t, c) for t, c in pairs if t is not None and c is not None]
