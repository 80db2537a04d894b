"""Real sockets confirm the replay on generated plants: `python -m benchmarks.confirm_generated`.

Each plant runs as the real daemon against the real simulator over TCP, at the
field trial's optimizer cadence, for `--seconds` of wall time; the same plant
times are then replayed in virtual time with the same learner. Both are scored
from reads (the simulator's request log, the replay's log) over the last two
thirds. Plants run side by side, one simulator and one daemon each. The
results go to benchmarks/results/generated_realsocket.json, which the
`generated` section of BENCHMARKS.md shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from .generated import FAST_CADENCE, START
from .realsocket import RealSocketResult, run_realsocket
from .report import RESULTS, Stamp

# Development seeds with TCP devices only: a pty carries RS-485 at any speed,
# so a serial line's timing would not be the replay's 9600 baud.
SEEDS = (1, 4, 5)
# The replay is also run from these many seconds later: one learner's own spread.
SHIFTS = (1.3, 2.7, 4.1, 5.9)


def _row(seed: int, r: RealSocketResult) -> dict[str, Any]:
    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    replays = [r.replay, *r.shifted]
    reads = sorted(s.reads_per_s for s in replays)
    bus = sorted(s.bus_load_9600 for s in replays)

    return {
        "plant": f"gen:{seed}",
        "seconds": r.duration,
        "real": {
            "reads_per_s": r.real.reads_per_s,
            "bus_load_9600": r.real.bus_load_9600,
            "sla": r.real.sla,
            "out_of_deadband": r.real.out_of_deadband,
        },
        "replay": {
            "reads_per_s": r.replay.reads_per_s,
            "bus_load_9600": r.replay.bus_load_9600,
            "sla": r.replay.sla,
            "out_of_deadband": r.replay.out_of_deadband,
        },
        "reads_ratio": ratio(r.real.reads_per_s, r.replay.reads_per_s),
        "bus_ratio": ratio(r.real.bus_load_9600, r.replay.bus_load_9600),
        "outcomes": r.outcomes,
        # Every replay (the first from the real run's start, then shifted): the
        # learner's own spread, and the real run against its median.
        "replays": {"reads_per_s": reads, "bus_load_9600": bus},
        "reads_vs_median": ratio(r.real.reads_per_s, statistics.median(reads)),
        "bus_vs_median": ratio(r.real.bus_load_9600, statistics.median(bus)),
    }


async def confirm(seeds: Sequence[int], seconds: float) -> list[dict[str, Any]]:
    runs = [
        run_realsocket(
            f"gen:{s}",
            seconds,
            plant_start=START,
            optimizer=dict(FAST_CADENCE),
            replay_shifts=SHIFTS,
        )
        for s in seeds
    ]
    results = await asyncio.gather(*runs)
    return [_row(s, r) for s, r in zip(seeds, results, strict=True)]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.confirm_generated")
    ap.add_argument("--seconds", type=float, default=1200.0, help="wall seconds per plant")
    ap.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    rows = asyncio.run(confirm(args.seeds, args.seconds))
    RESULTS.mkdir(parents=True, exist_ok=True)
    words = list(argv if argv is not None else sys.argv[1:])
    stamp = Stamp.now(words).to_dict()
    stamp["command"] = " ".join(["python -m benchmarks.confirm_generated", *words])
    out = {"stamp": stamp, "plants": rows}
    path = RESULTS / "generated_realsocket.json"
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    for row in rows:
        print(
            f"{row['plant']}: reads/s real {row['real']['reads_per_s']:.3f} replay "
            f"{row['replay']['reads_per_s']:.3f} ({row['reads_ratio']:.3f}x); bus real "
            f"{row['real']['bus_load_9600']:.4f} replay {row['replay']['bus_load_9600']:.4f} "
            f"({row['bus_ratio']:.3f}x); replays' reads/s {row['replays']['reads_per_s']}, "
            f"real / median {row['reads_vs_median']:.3f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
