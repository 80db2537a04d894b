"""BENCHMARKS.md's northbound section, rendered from `benchmarks/results/northbound.json`."""

from __future__ import annotations

from typing import Any

from .report import Stamp, md_table

RATE_GOAL = 20_000
P99_GOAL_MS = 100.0


def render(data: dict[str, Any]) -> str:
    stamp = Stamp.from_dict(data["stamp"])
    publish = [
        [
            f"{r['offered_per_s']:,.0f}",
            "none" if r["max_messages"] == 1 else f"up to {r['max_messages']}",
            f"{r['changes_per_s']:,.0f}",
            f"{r['messages_per_s']:,.0f}",
            f"{r['latency_p50_ms']:.1f}",
            f"{r['latency_p99_ms']:.1f}",
            f"{r['cpu_pct']:.0f} %",
            f"{r['broker_cpu_pct']:.0f} %",
        ]
        for r in data["publish"]
    ]
    batched = [r for r in data["publish"] if r["max_messages"] > 1]
    goal = ""
    if batched:
        b = batched[0]
        rate_ok = "met" if b["changes_per_s"] >= 0.98 * RATE_GOAL else "missed"
        p99_ok = "met" if b["latency_p99_ms"] < P99_GOAL_MS else "missed"
        goal = (
            f"Goals with batching: {RATE_GOAL:,} changes/s at QoS 1 — {rate_ok} "
            f"({b['changes_per_s']:,.0f}); p99 read-to-PUBACK < {P99_GOAL_MS:.0f} ms when not "
            f"draining — {p99_ok} ({b['latency_p99_ms']:.1f} ms)."
        )
    daemon = {r["northbound"]: r for r in data["daemon"]}
    without, with_nb = daemon.get(False), daemon.get(True)
    d_rows = [
        [
            "with northbound" if r["northbound"] else "without",
            f"{r['cpu_pct']:.1f} %",
            f"{r['rss_mb']:.0f} MiB",
            f"{r['published_per_s']:,.1f}" if r["northbound"] else "-",
        ]
        for r in (without, with_nb)
        if r is not None
    ]
    dr = data["drain"]
    plant = "1,000 tags on 10 devices" if data.get("quick") else "5,000 tags on 50 devices"
    return "\n".join(
        [
            "## 6. Northbound (MQTT)\n",
            "`python -m benchmarks northbound` (add `--quick` for a 1-minute outage of a "
            "1,000-tag plant instead of 10 minutes of 5,000 tags). A local mosquitto, QoS 1; "
            "how each figure is taken is in `benchmarks/northbound.py`'s docstring.\n",
            "**Publish rate and read-to-PUBACK latency** (changes offered at the northbound "
            "sink, 25 tags of one device per read, through the SQLite outbox and aiomqtt):\n",
            md_table(
                [
                    "offered changes/s",
                    "batching",
                    "acknowledged changes/s",
                    "messages/s",
                    "p50 ms",
                    "p99 ms",
                    "edgeopt CPU",
                    "broker CPU",
                ],
                publish,
                "llrrrrrr",
            ),
            "",
            goal,
            "",
            "Without batching each change is one aiomqtt publish awaiting its own PUBACK; "
            "that per-message cost is what the unbatched rows show (past it, changes wait in "
            "the outbox and the latency is the queue's): batch at high change rates.",
            "",
            f"**The daemon polling the large plant** ({plant}, every tag at 1 s, over real "
            "sockets), CPU % of one core and RSS, with and without a northbound target "
            "(batches of up to 50 changes):\n",
            md_table(["daemon", "CPU", "RSS", "messages published/s"], d_rows, "lrrr"),
            "",
            f"**Drain after a {dr['outage_s']:.0f} s broker outage** (polling went on; "
            f"`drain_rate: 0`): {dr['queued_at_reconnect']:,} messages queued at reconnect "
            f"(connected {dr.get('reconnect_s', 0):.1f} s after the broker came back), "
            f"drained in {dr['drain_seconds']:.1f} s = **{dr['drained_per_s']:,.0f} messages/s** "
            f"(≈ {dr['changes_per_s']:,.0f} changes/s), while new changes went on at "
            f"{dr['live_per_s']:,.1f} messages/s.",
            "",
            stamp.line(),
            "",
        ]
    )
