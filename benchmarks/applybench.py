"""The poller's own work per read, in-process: decode, tag state, statistics, sinks.

`python -m benchmarks.applybench [--tags N --devices D --steps S --reps R]`
builds the large plant's config and read plan (every tag at 1 s, every
register gap served), computes S seconds of each read's registers from the
plant's signals, then times `Poller.apply` over them R times (CPU time of
this process, no I/O, no event loop) and prints one JSON line: microseconds
per read for each repetition. `python -m benchmarks.footprint apply --base
REV` runs it for REV's poller and this tree's, alternately.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from edgeopt.config import load_config
from edgeopt.modbus.planner import Read
from edgeopt.modbus.transport import ReadResult
from edgeopt.poller import Poller
from simulators.plant import Plant
from simulators.plants import large_plant

from .overhead import at_interval

__all__ = ["main"]


def _frames(plant: Plant, reads: Sequence[Read], steps: int) -> list[list[list[int] | list[bool]]]:
    """Each step's registers (or bits) of every read, as the simulator serves them then."""
    slots = {
        (d.name, table): d.slots(table)
        for d in plant.devices
        for table in ("holding", "input", "coil", "discrete")
    }
    frames: list[list[list[int] | list[bool]]] = []
    for step in range(steps):
        t = 1000.0 + step
        frame: list[list[int] | list[bool]] = []
        for read in reads:
            words = [0] * read.count  # gaps are served as zeros
            for slot in slots[(read.device, read.table.value)]:
                offset = slot.address - read.start
                if offset >= 0 and offset + slot.width <= read.count:
                    words[offset : offset + slot.width] = slot.words(t)[0]
            frame.append([w != 0 for w in words] if read.table.is_bits else words)
        frames.append(frame)
    return frames


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.applybench", description=__doc__)
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)

    plant = at_interval(large_plant(args.tags, args.devices).without_strict_gaps(), 1.0)
    with tempfile.TemporaryDirectory(prefix="edgeopt-apply-") as tmp:
        cfg = plant.to_config(plant.tcp_endpoints(), f"{tmp}/state", f"{tmp}/ctl.sock")
        cfg.setdefault("optimizer", {})["enabled"] = False
        path = Path(tmp) / "edgeopt.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        config = load_config(path)
    stored: list[object] = []
    poller = Poller(config.devices, sinks=[stored.extend])
    reads = poller.replan(0.0).reads
    frames = _frames(plant, reads, args.steps)
    gc.collect()
    gc.freeze()
    per_read: list[float] = []
    for rep in range(args.reps):
        cpu0, n = time.process_time(), 0
        for step, frame in enumerate(frames):
            now = float(rep * args.steps + step)
            for read, values in zip(reads, frame, strict=True):
                poller.apply(read, ReadResult(list(values), 0.01), 1.7e9 + now, now, now)
                n += 1
        per_read.append(1e6 * (time.process_time() - cpu0) / n)
        stored.clear()
    import edgeopt

    where = str(Path(edgeopt.__file__).resolve().parent)
    print(json.dumps({"reads": len(reads), "edgeopt": where, "us_per_read": per_read}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
