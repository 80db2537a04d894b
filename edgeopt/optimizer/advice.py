"""Recommendations (after seed 003): what an operator could change, with the expected impact.

Each is a dict: priority (high / medium / low), kind, target, message and
expected_impact (bus seconds per second, and its share of the plan). Kinds:

- line_over_budget: a line whose plan needs more than its bus budget;
- slow_device: a device answering much slower than its peers;
- deadband_below_noise: a tag whose reads jump past the deadband most of the
  time, so every read counts as a change (the deadband is below its noise);
- never_changes: a tag that has not changed in a day of reads.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from edgeopt.optimizer.costs import median_latency
from edgeopt.poller import Poller

_RANK = {"high": 0, "medium": 1, "low": 2}
SLOW_FACTOR = 2.0  # a device this many times slower than its peers' median
NOISY_SHARE = 0.5  # reads past the deadband, out of all reads
MIN_READS = 20
QUIET_SPAN = 86400.0  # seconds of reads without a change


def _share_of_read(poller: Poller, key: str) -> float:
    """Bus s/s this tag's share of its read costs (by registers)."""
    read = poller.read_of(key)
    tag = poller.tags.get(key)
    if read is None or tag is None:
        return 0.0
    cost = poller.devices[read.device].cost
    return (
        cost.read_seconds(read.table, read.count) / read.period * int(tag.config.width) / read.count
    )


def recommendations(
    poller: Poller, budgets: Mapping[str, float], loads: Mapping[str, float]
) -> list[dict[str, Any]]:
    """What an operator could change, most important first.

    budgets and loads: each line's bus budget and planned load (the optimizer's).
    """
    total = max(poller.plan.bus_seconds_per_second(), 1e-12)
    out: list[dict[str, Any]] = []

    def impact(seconds: float) -> dict[str, float]:
        return {"bus_s_per_s": round(seconds, 6), "share": round(seconds / total, 4)}

    for line, load in sorted(loads.items()):
        budget = budgets.get(line)
        if budget is not None and load > budget:
            out.append(
                {
                    "priority": "high",
                    "kind": "line_over_budget",
                    "target": line,
                    "message": (
                        f"line {line} needs {load:.0%} of its time (budget {budget:.0%}): "
                        "raise the baud rate, split the devices over more lines, or relax "
                        "max_staleness of low-priority tags"
                    ),
                    "expected_impact": impact(load - budget),
                }
            )

    by_transport: dict[str, list[tuple[str, float]]] = {}
    for name, device in poller.devices.items():
        latency = median_latency(device)
        if latency is not None:
            by_transport.setdefault(str(device.config.transport), []).append((name, latency))
    for peers in by_transport.values():
        if len(peers) < 3:
            continue
        typical = statistics.median(lat for _, lat in peers)
        for name, latency in peers:
            if latency > SLOW_FACTOR * typical and latency - typical > 0.005:
                reads = poller.plan.reads
                per_s = sum(1.0 / r.period for r in reads if r.device == name)
                out.append(
                    {
                        "priority": "medium",
                        "kind": "slow_device",
                        "target": name,
                        "message": (
                            f"device {name} answers in {latency * 1000:.1f} ms, "
                            f"{latency / typical:.1f}x its peers' {typical * 1000:.1f} ms: "
                            "check its network path, gateway or load"
                        ),
                        "expected_impact": impact(per_s * (latency - typical)),
                    }
                )

    for key, tag in poller.tags.items():
        stats = tag.state.stats
        if stats.reads < MIN_READS:
            continue
        deadband = float(tag.config.deadband)
        noisy = stats.jumps / stats.reads >= NOISY_SHARE and stats.step_count >= MIN_READS
        mean_step = stats.mean_step
        if noisy and mean_step > deadband:
            suggested = float(f"{2.5 * mean_step:.2g}")
            out.append(
                {
                    "priority": "medium",
                    "kind": "deadband_below_noise",
                    "target": key,
                    "message": (
                        f"{key} moves {mean_step:.3g} between reads on average, past its "
                        f"deadband {deadband:g} in {stats.jumps / stats.reads:.0%} of reads: "
                        f"a deadband near {suggested:g} would record real changes only"
                    ),
                    "expected_impact": impact(_share_of_read(poller, key)),
                }
            )
            continue
        span = (stats.last_read_ts or 0.0) - (stats.first_read_ts or 0.0)
        if stats.changes == 0 and span >= QUIET_SPAN:
            out.append(
                {
                    "priority": "low",
                    "kind": "never_changes",
                    "target": key,
                    "message": (
                        f"{key} has not changed in {span / 3600:.0f} h of reads: a longer "
                        "max_staleness (or removing it) would free its share of the bus"
                    ),
                    "expected_impact": impact(_share_of_read(poller, key)),
                }
            )
    out.sort(key=lambda r: (_RANK[r["priority"]], -r["expected_impact"]["bus_s_per_s"]))
    return out
