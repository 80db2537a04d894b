"""Where the daemon's CPU and memory go (issue 11), and what a change bought.

`python -m benchmarks.footprint ab [--base REV] [--tags N --devices D] [--optimizer on|off]
[--rounds R]`
    One simulator (the gap-free large plant, every tag at 1 s, the
    daemon's optimizer off unless `--optimizer on`); against it, one after
    the other: the daemon at REV (exported with `git archive` into a
    temporary folder), the daemon of this work tree, and the bare pymodbus
    loop making the same reads. Prints each one's CPU
    per register and the ratios to the bare loop: a before/after figure
    measured in one run. With `--rounds R`, the three take turns R times and
    the table gives the medians, and each round's ratio.

`python -m benchmarks.footprint apply [--base REV] [--rounds R]`
    The poller's own work per read (`Poller.apply`: decode, tag state,
    statistics, sinks), in-process and without I/O (`benchmarks.applybench`),
    for REV's poller and this tree's, alternately.

`python -m benchmarks.footprint startup [--base REV]`
    Start-up to first poll (spawn → the simulator's first request) of the
    daemon at REV and of this work tree, alternately, three first starts each.

`python -m benchmarks.footprint profile [--tags N --devices D --seconds S]`
    Samples the running daemon with py-spy (`pip install py-spy`) and
    prints the functions with the largest share of samples, by self time
    and inclusive time.

`python -m benchmarks.footprint memory [--tags N --devices D --seconds S]`
    Runs the daemon in this process under tracemalloc for S seconds and
    prints the source lines holding the most memory (the simulator runs in
    its own process, so its plant does not count).

`python -m benchmarks.footprint rss [--tags N --devices D --seconds S] [--optimizer on|off]`
    The daemon's RSS over a longer run, one line every 30 s (optimizer off
    unless `--optimizer on`: its defaults, as an installed daemon runs).

`python -m benchmarks.footprint worker [--tags N --devices D --seconds S --full-every F]`
    The daemon with its optimizer on (defaults, but the full cycle, which
    runs the cluster strategy, every F seconds instead of every hour, and
    never deferred for machine pressure), its
    child processes watched every 0.5 s: when each started and exited, its
    peak RSS and CPU seconds, and the daemon's own RSS before, while and
    after the cluster worker lived.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from .overhead import (
    OPTIMIZER_OFF,
    Measured,
    SteadyPlant,
    _cpu,
    _measure,
    _steady_plant,
    measure_bare,
)
from .procs import start_daemon, stop_process, write_config

__all__ = ["export_rev", "main", "profile_summary"]

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def export_rev(rev: str) -> Iterator[Path]:
    """The source tree at `rev`, exported into a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="edgeopt-rev-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


def _daemon_at(src: Path, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`edgeopt run` from the source tree `src` (its edgeopt package first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "edgeopt.cli", "run", "--config", str(config)]
    with log.open("wb") as handle:
        return subprocess.Popen(
            [*cmd, "--log-level", "warning"],
            cwd=str(src),
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def _row(name: str, runs: list[Measured], bares: list[Measured]) -> str:
    """One process's line: medians over the rounds, and each round's ratio to its bare loop."""
    ratios = [
        b.registers_per_cpu_s / m.registers_per_cpu_s for m, b in zip(runs, bares, strict=True)
    ]
    each = ", ".join(f"{r:.2f}" for r in ratios)
    return (
        f"| {name} | {statistics.median(m.reads_per_s for m in runs):.1f} "
        f"| {statistics.median(m.cpu_pct for m in runs):.1f} % "
        f"| {statistics.median(m.registers_per_cpu_s for m in runs):,.0f} "
        f"| {statistics.median(m.rss_mb for m in runs):.0f} MB "
        f"| {statistics.median(ratios):.2f}× |" + (f" {each} |" if len(runs) > 1 else "")
    )


def _own_state(steady: SteadyPlant, optimizer: str, name: str) -> Path:
    """The steady plant's config with a state directory of its own.

    A daemon started second in the same state directory finds the first one's
    hot storage and learned splits: same code, it measured +13 MB of RSS and
    +15 % of CPU against the first.
    """
    work = steady.work / name
    work.mkdir()
    sections = {"optimizer": {"enabled": True}} if optimizer == "on" else OPTIMIZER_OFF
    return write_config(steady.plant, steady.sim.endpoints, work, sections=sections)


def ab(
    base: str,
    n_tags: int,
    n_devices: int,
    warmup: float,
    seconds: float,
    optimizer: str = "off",
    rounds: int = 1,
) -> str:
    """The daemon at `base`, this tree's and the bare loop, in turn, `rounds` times.

    Each round measures all three one after the other, so a ratio compares
    processes measured minutes apart at most; the median over the rounds is
    what a busy or noisy machine moves least.
    """
    with _steady_plant(n_tags, n_devices, "edgeopt-ab-") as steady, export_rev(base) as src:
        names = (f"daemon at {base}", "daemon, work tree")
        runs: dict[str, list[Measured]] = {name: [] for name in names}
        bares: list[Measured] = []
        for round_ in range(rounds):
            config_a = _own_state(steady, optimizer, f"a{round_}")
            config_b = _own_state(steady, optimizer, f"b{round_}")
            for name in names:
                print(f"round {round_ + 1}/{rounds}: measuring {name} …", file=sys.stderr)
                if name == names[0]:
                    proc = _daemon_at(src, config_a, steady.work / "a.log")
                else:
                    proc = start_daemon(config_b, steady.work / "b.log")
                try:
                    runs[name].append(_measure(proc, steady.sim, warmup, seconds))
                finally:
                    stop_process(proc)
            print(
                f"round {round_ + 1}/{rounds}: measuring the bare pymodbus loop …", file=sys.stderr
            )
            bares.append(measure_bare(steady, warmup, seconds))
    several = rounds > 1
    lines = [
        f"{n_tags} tags on {n_devices} TCP devices, every tag at 1 s, optimizer {optimizer}; "
        f"{seconds:.0f} s window after {warmup:.0f} s"
        + (f"; {rounds} rounds, medians" if several else "")
        + (
            " (the bare loop makes the configured reads; the daemon's optimizer may make fewer)"
            if optimizer == "on"
            else ""
        ),
        "",
        "| process | reads/s | CPU (one core) | registers per CPU-s | RSS | CPU/register vs bare |"
        + (" each round |" if several else ""),
        "|:--|--:|--:|--:|--:|--:|" + ("--:|" if several else ""),
        *(_row(name, runs[name], bares) for name in names),
        _row("bare pymodbus loop", bares, bares),
    ]
    return "\n".join(lines)


def apply_cost(base: str, n_tags: int, n_devices: int, rounds: int = 3) -> str:
    """`benchmarks.applybench` for the poller at `base` and this tree's, alternately."""
    results: dict[str, list[float]] = {f"poller at {base}": [], "poller, work tree": []}
    with export_rev(base) as src, tempfile.TemporaryDirectory(prefix="edgeopt-shim-") as shim:
        # Only the package comes from `base`: the plant and the timing are this tree's.
        (Path(shim) / "edgeopt").symlink_to(src / "edgeopt")
        # `python -m` puts its working directory first on the path.
        cwds = {f"poller at {base}": shim, "poller, work tree": str(ROOT)}
        size = ["--tags", str(n_tags), "--devices", str(n_devices)]
        for _ in range(rounds):
            for name, cwd in cwds.items():
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.applybench", *size],
                    cwd=cwd,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                run = json.loads(out.splitlines()[-1])
                want = (src if cwd == shim else ROOT) / "edgeopt"
                if Path(run["edgeopt"]) != want.resolve():
                    raise RuntimeError(f"{name} ran the poller in {run['edgeopt']}, not {want}")
                # The first repetition warms the caches and the tags' histories.
                results[name] += run["us_per_read"][1:]
    lines = [
        f"{n_tags} tags on {n_devices} devices, every tag at 1 s: `Poller.apply` alone, "
        f"in-process, over 12 s of the plant's registers ({rounds} alternating runs)",
        "",
        "| poller | µs per read, median | fastest | slowest |",
        "|:--|--:|--:|--:|",
    ]
    for name, values in results.items():
        lines.append(
            f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |"
        )
    return "\n".join(lines)


def _first_request(log: Path, since: float, timeout: float = 30.0) -> float:
    """Seconds from `since` to the first request in the simulator's log (inf: none)."""
    from .procs import iter_requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        first = next((float(r["ts"]) for r in iter_requests(log) if float(r["ts"]) >= since), None)
        if first is not None:
            return first - since
    return float("inf")


def startup(base: str, n_tags: int, n_devices: int, runs: int = 3) -> str:
    """Spawn → first request, the daemon at `base` and this tree's, alternately, `runs` each."""
    times: dict[str, list[float]] = {f"daemon at {base}": [], "daemon, work tree": []}
    with _steady_plant(n_tags, n_devices, "edgeopt-startup-") as steady, export_rev(base) as src:
        assert steady.sim.request_log is not None
        for i in range(runs):
            for name in times:
                state = steady.work / "state"
                shutil.rmtree(state, ignore_errors=True)  # a first start, every time
                time.sleep(1.5)  # the simulator's log is flushed every second
                spawned = time.time()
                log = steady.work / f"start-{i}.log"
                if name.startswith("daemon at"):
                    proc = _daemon_at(src, steady.config, log)
                else:
                    proc = start_daemon(steady.config, log)
                try:
                    times[name].append(_first_request(steady.sim.request_log, spawned))
                finally:
                    stop_process(proc)
    lines = [
        f"{n_tags} tags on {n_devices} devices, a first start (empty state) each time, "
        f"{runs} starts each, alternating",
        "",
        "| daemon | start-up to first poll, median | each start |",
        "|:--|--:|--:|",
    ]
    for name, ts in times.items():
        each = ", ".join(f"{t:.2f}" for t in ts)
        lines.append(f"| {name} | {sorted(ts)[len(ts) // 2]:.2f} s | {each} |")
    return "\n".join(lines)


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def profile_summary(raw: Path, top: int = 25) -> str:
    """Self and inclusive shares of the functions in a py-spy `--format raw` file."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        n = int(count)
        names = []
        for frame in stack.split(";"):
            func, _, where = frame.strip().partition(" (")
            path = where.rstrip(")").rpartition(":")[0]
            path = path.split("site-packages/")[-1].split(f"{ROOT.name}/")[-1]
            names.append(f"{func} ({path})" if path else func)
        total += n
        own[names[-1]] += n
        for name in set(names):
            incl[name] += n
    out = [f"{total} samples", "", *_by_part(raw), "", "| self | function |", "|--:|:--|"]
    out += [f"| {100 * v / total:.1f} % | `{k}` |" for k, v in own.most_common(top)]
    out += ["", "| inclusive | function |", "|--:|:--|"]
    out += [f"| {100 * v / total:.1f} % | `{k}` |" for k, v in incl.most_common(top + 10)]
    return "\n".join(out)


# Where a sample of the event loop's thread falls, by the first of these frames
# on its stack (checked in this order).
_PARTS = (
    ("applying a read (decode, tag state, statistics, sinks)", ("Poller.apply",)),
    (
        "the request: edgeopt's transport and framer, pymodbus, the socket",
        ("PymodbusTransport", "_StrictFraming", "_read_ready", "TransactionManager"),
    ),
    ("scheduling and sleeping between reads", ("_sleep_until_due", "next_read", "_wake_up")),
    ("the line worker's own loop", ("LineWorker.run",)),
    ("maintenance jobs (statistics, storage, resources)", ("MaintenanceJobs", "run_coroutine_job")),
)


def _by_part(raw: Path) -> list[str]:
    """Shares of the event loop thread's busy samples (not waiting in select) by part."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.startswith("<module>") or "EpollSelector.select" in stack.rsplit(";", 1)[-1]:
            continue  # another thread, or the loop waiting
        part = next(
            (name for name, marks in _PARTS if any(m in stack for m in marks)),
            "the event loop's own machinery, and the rest",
        )
        counts[part] += int(count)
    busy = sum(counts.values())
    if not busy:
        return []
    rows = [f"| {100 * n / busy:.1f} % | {part} |" for part, n in counts.most_common()]
    return [
        f"The event loop's thread, busy ({busy} samples):",
        "",
        "| share | part |",
        "|--:|:--|",
        *rows,
    ]


def profile(n_tags: int, n_devices: int, warmup: float, seconds: float) -> str:
    spy = _py_spy()
    if spy is None:
        return "py-spy is not installed: `.venv/bin/pip install py-spy`"
    with _steady_plant(n_tags, n_devices, "edgeopt-profile-") as steady:
        daemon = start_daemon(steady.config, steady.work / "daemon.log")
        try:
            time.sleep(warmup)
            raw = steady.work / "profile.txt"
            record = ["record", "-p", str(daemon.pid), "-d", str(int(seconds)), "-r", "200"]
            subprocess.run(
                [spy, *record, "-f", "raw", "-o", str(raw), "--nonblocking"],
                check=True,
                capture_output=True,
            )
        finally:
            stop_process(daemon)
        return profile_summary(raw)


def memory(n_tags: int, n_devices: int, seconds: float, top: int = 30) -> str:
    """tracemalloc's top lines after `seconds` of the daemon running in this process."""
    import logging

    from edgeopt.config import load_config
    from edgeopt.daemon import Daemon

    logging.basicConfig(level=logging.ERROR)
    with _steady_plant(n_tags, n_devices, "edgeopt-memory-") as steady:
        tracemalloc.start(4)
        # As `edgeopt run` does: the config parsed in a forked child, then frozen.
        config = load_config(steady.config, isolated=True)
        daemon = Daemon(config)
        gc.freeze()

        async def run() -> tracemalloc.Snapshot:
            task = asyncio.create_task(daemon.run())
            await asyncio.sleep(seconds)
            gc.collect()
            snap = tracemalloc.take_snapshot()
            daemon.stop()
            await task
            return snap

        snap = asyncio.run(run())
        tracemalloc.stop()
    stats = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)]).statistics(
        "lineno"
    )
    total = sum(s.size for s in stats)
    out = [f"traced: {total / 2**20:.1f} MiB", "", "| MiB | blocks | where |", "|--:|--:|:--|"]
    for s in stats[:top]:
        frame = s.traceback[0]
        where = frame.filename.split("site-packages/")[-1].split(f"{ROOT.name}/")[-1]
        out.append(f"| {s.size / 2**20:.2f} | {s.count:,} | `{where}:{frame.lineno}` |")
    return "\n".join(out)


def rss(
    n_tags: int,
    n_devices: int,
    seconds: float,
    every: float = 30.0,
    optimizer: str = "off",
    base: str | None = None,
) -> str:
    """The daemon's RSS and CPU seconds every `every` s; with `base`, the daemon at that
    revision runs beside it, against a simulator of its own, over the same time."""
    with contextlib.ExitStack() as stack:
        runs: list[tuple[str, Path | None]] = [("this tree", None)]
        if base is not None:
            runs.append((f"at {base}", stack.enter_context(export_rev(base))))
        watched: list[tuple[str, psutil.Process]] = []
        for name, src in runs:
            steady = stack.enter_context(_steady_plant(n_tags, n_devices, "edgeopt-rss-"))
            config = _own_state(steady, optimizer, "daemon")
            log = steady.work / "daemon.log"
            daemon = start_daemon(config, log) if src is None else _daemon_at(src, config, log)
            stack.callback(stop_process, daemon)
            watched.append((name, psutil.Process(daemon.pid)))
        t0 = time.monotonic()
        points: list[dict[str, Any]] = []
        while (elapsed := time.monotonic() - t0) < seconds:
            time.sleep(min(every, max(0.1, seconds - elapsed)))
            point: dict[str, Any] = {"s": round(time.monotonic() - t0)}
            for name, ps in watched:
                point[name] = (
                    round(ps.memory_info().rss / 2**20, 1),
                    round(_cpu(ps), 1),
                )
            points.append(point)
            print(json.dumps(point), file=sys.stderr, flush=True)
    names = [name for name, _ in watched]
    head = "| seconds | " + " | ".join(f"RSS ({n}) | CPU-s ({n})" for n in names) + " |"
    rows = [
        f"| {p['s']} | " + " | ".join(f"{p[n][0]} MB | {p[n][1]}" for n in names) + " |"
        for p in points
    ]
    return "\n".join([f"optimizer {optimizer}", "", head, "|--:|" + "--:|--:|" * len(names), *rows])


WATCH_EVERY = 0.5  # seconds between looks at the daemon's children


def _watch_children(
    daemon: subprocess.Popen[bytes], seconds: float
) -> tuple[dict[int, dict[str, Any]], list[tuple[float, float]]]:
    """Every WATCH_EVERY s for `seconds`: the daemon's RSS, and each child's RSS and CPU.

    Returns per child pid: command, first and last time seen (s after the
    daemon started), peak RSS and unique set (MiB), CPU seconds at the last look and whether
    it was still running at the end; and the daemon's (s, RSS MiB) samples.
    """
    ps = psutil.Process(daemon.pid)
    t0 = time.monotonic()
    children: dict[int, dict[str, Any]] = {}
    own: list[tuple[float, float]] = []
    while (t := time.monotonic() - t0) < seconds and daemon.poll() is None:
        with contextlib.suppress(psutil.Error):
            own.append((t, ps.memory_info().rss / 2**20))
        alive: set[int] = set()
        for child in ps.children(recursive=True):
            try:
                with child.oneshot():
                    memory = child.memory_full_info()
                    cpu = sum(child.cpu_times()[:2])
                    cmd = " ".join(child.cmdline())
            except psutil.Error:
                continue
            alive.add(child.pid)
            row = children.setdefault(
                child.pid, {"cmd": cmd, "first": t, "peak_mb": 0.0, "uss_mb": 0.0, "cpu_s": 0.0}
            )
            row.update(
                last=t,
                peak_mb=max(row["peak_mb"], memory.rss / 2**20),
                # A forked child shares the daemon's pages until it writes them:
                # what it costs the machine is its unique set.
                uss_mb=max(row["uss_mb"], memory.uss / 2**20),
                cpu_s=cpu,
            )
        for pid, row in children.items():
            row["running"] = pid in alive
        time.sleep(WATCH_EVERY)
    return children, own


def _last(values: list[float]) -> float:
    return values[-1]


# A fork of the daemon seen this soon after it started is its config parse.
CONFIG_FORK_S = 5.0


def _kind(cmd: str, first: float) -> str:
    if " run --config " in cmd:  # a fork of the daemon itself
        if first < CONFIG_FORK_S:
            return "config parse (forked at start)"
        return "forked work (plan search, pricing, save)"
    if "resource_tracker" in cmd:
        return "multiprocessing resource tracker"
    if "cluster_worker" in cmd or "spawn_main" in cmd or "forkserver" in cmd:
        return "cluster worker"
    if "codec_worker" in cmd:
        return "storage codec worker"
    return cmd[:60]


def worker(n_tags: int, n_devices: int, seconds: float, full_every: float) -> str:
    """The cluster worker's life and peak RSS beside the daemon's own RSS (optimizer on)."""
    with _steady_plant(n_tags, n_devices, "edgeopt-worker-") as steady:
        # The cluster strategy is heavy work: on a busy (shared) machine CPU
        # pressure would defer it to a later full cycle, and by then a change
        # of the interval strategy may be in evaluation: it would not run at all.
        sections: dict[str, dict[str, Any]] = {
            "optimizer": {"enabled": True, "full_every": full_every},
            "resources": {"max_deferrals": 0},
        }
        config = write_config(steady.plant, steady.sim.endpoints, steady.work, sections=sections)
        daemon = start_daemon(config, steady.work / "daemon.log")
        try:
            children, own = _watch_children(daemon, seconds)
        finally:
            stop_process(daemon)
        log_tail = (steady.work / "daemon.log").read_text(encoding="utf-8", errors="replace")
    if log_tail.strip():
        print(log_tail[-3000:], file=sys.stderr)
    lines = [
        f"{n_tags} tags on {n_devices} TCP devices, every tag at 1 s, optimizer on with its "
        f"defaults but `full_every: {full_every:.0f}s` (default 1 h: the cluster strategy runs "
        "in the full cycle) and `resources.max_deferrals: 0` (heavy work never deferred); "
        f"watched every {WATCH_EVERY} s for {seconds:.0f} s",
        "",
        "| child process | started | exited | lived | peak RSS | peak unique | CPU |",
        "|:--|--:|--:|--:|--:|--:|--:|",
    ]
    workers: list[tuple[float, float]] = []
    for pid, row in sorted(children.items(), key=lambda kv: kv[1]["first"]):
        kind = _kind(row["cmd"], float(row["first"]))
        end = float(row["last"]) + WATCH_EVERY
        exited = "still running" if row["running"] else f"{end:.1f} s"
        lived = float(row["last"]) - float(row["first"]) + (0 if row["running"] else WATCH_EVERY)
        lines.append(
            f"| {kind} (pid {pid}) | {row['first']:.1f} s | {exited} | {lived:.0f} s | "
            f"{row['peak_mb']:.0f} MB | {row['uss_mb']:.0f} MB | {row['cpu_s']:.1f} s |"
        )
        if kind == "cluster worker":
            workers.append((float(row["first"]), end if not row["running"] else math.inf))
    if not children:
        lines.append("| (no child process seen) | | | | | | |")

    def rss_in(a: float, b: float, pick: Any) -> str:
        values = [r for t, r in own if a <= t < b]
        return f"{pick(values):.0f} MB" if values else "–"

    end = own[-1][0] + 1 if own else 0.0
    if workers:
        first, last = workers[0][0], max(w[1] for w in workers)
        during = [(a, b) for a, b in workers]
        while_alive = [r for t, r in own if any(a <= t < b for a, b in during)]
        lines += [
            "",
            "| daemon RSS | |",
            "|:--|--:|",
            f"| before the first worker (last sample) | {rss_in(0, first, _last)} |",
            "| peak while a worker lived | "
            + (f"{max(while_alive):.0f} MB |" if while_alive else "– |"),
            f"| after the last worker exited (last sample) | {rss_in(last, end, _last)} |",
            f"| peak over the run | {rss_in(0, end, max)} |",
        ]
    else:
        lines += ["", f"daemon RSS at the end: {rss_in(0, end, _last)}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.footprint", description=__doc__)
    ap.add_argument(
        "what", choices=("ab", "apply", "startup", "profile", "memory", "rss", "worker")
    )
    ap.add_argument(
        "--base",
        default=None,
        help="ab, startup: the revision to compare against (default HEAD); "
        "rss: a revision whose daemon runs beside this tree's",
    )
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="ab: rounds of (base, work tree, bare loop); the table gives the medians",
    )
    ap.add_argument(
        "--optimizer",
        choices=("on", "off"),
        default="off",
        help="ab, rss: the daemon's optimizer on (its defaults) or off (ab: the bare loop's reads)",
    )
    ap.add_argument(
        "--full-every",
        type=float,
        default=240.0,
        help="worker: seconds between the optimizer's full cycles (the config's default is 3600)",
    )
    ap.add_argument(
        "--save",
        action="store_true",
        help="keep the table in benchmarks/results (BENCHMARKS.md §2 shows it)",
    )
    args = ap.parse_args(argv)
    if args.what == "ab":
        base = args.base or "HEAD"
        text = ab(
            base, args.tags, args.devices, args.warmup, args.seconds, args.optimizer, args.rounds
        )
    elif args.what == "apply":
        text = apply_cost(args.base or "HEAD", args.tags, args.devices, max(1, args.rounds))
    elif args.what == "startup":
        text = startup(args.base or "HEAD", args.tags, args.devices)
    elif args.what == "profile":
        text = profile(args.tags, args.devices, args.warmup, args.seconds)
    elif args.what == "memory":
        text = memory(args.tags, args.devices, args.seconds)
    elif args.what == "worker":
        text = worker(args.tags, args.devices, args.seconds, args.full_every)
    else:
        text = rss(args.tags, args.devices, args.seconds, optimizer=args.optimizer, base=args.base)
    print(text)
    if args.save:
        from .report import Stamp, machine_info, save_result

        given = list(sys.argv[1:] if argv is None else argv)
        command = " ".join(["python -m benchmarks.footprint", *given])
        stamp = Stamp(machine_info(), command, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        save_result(f"footprint_{args.what}", {"markdown": text}, stamp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
