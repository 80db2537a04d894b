"""The benchmark sections: what each runs (full or --quick), and its part of BENCHMARKS.md.

Each section has `run_<name>(opts, ui) -> dict` (the figures, saved as
`benchmarks/results/<name>.json`) and `render_<name>(dict) -> str` (its
markdown). Rendering reads only the saved figures, so BENCHMARKS.md can be
rebuilt from the last run of every section.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from simulators.signals import DAY, HOUR

from . import frontier as fr
from .metrics import Score
from .plots import frontier_plot
from .report import RESULTS, ROOT, Stamp, load_result, md_table, pct
from .section_generated import render_generated, run_generated_section

__all__ = ["RENDERERS", "RUNNERS", "Options"]

WEDNESDAY = 2 * DAY


@dataclass
class Options:
    quick: bool = False
    realsocket_seconds: float | None = None
    workers: int = 2
    with_optimizer: bool | None = None  # None: use it when edgeopt.optimizer has a factory


class UI:
    """What the sections need from the console: a status line and a log line."""

    def status(self, text: str) -> None:  # pragma: no cover - replaced by the CLI
        print(text, flush=True)

    def log(self, text: str) -> None:  # pragma: no cover - replaced by the CLI
        print(text, flush=True)


# ------------------------------------------------------------------ frontier
def frontier_specs(quick: bool) -> list[fr.PlantSpec]:
    if quick:
        return [
            fr.PlantSpec("demo", "demo", WEDNESDAY + 8 * HOUR, 2 * HOUR),
            fr.PlantSpec("large", "large", WEDNESDAY + 10 * HOUR, 600.0, 2000, 20),
            fr.PlantSpec("week", "week", 0.0, DAY),
        ]
    return [
        fr.PlantSpec("demo", "demo", WEDNESDAY, DAY),
        fr.PlantSpec("large", "large", WEDNESDAY + 10 * HOUR, 1800.0, 5000, 50),
        fr.PlantSpec("week", "week", 0.0, 7 * DAY),
    ]


def _variants(label: str, with_optimizer: bool) -> list[fr.Variant]:
    if label == "demo":
        return fr.default_variants(with_optimizer)
    if label == "week" and with_optimizer:
        # The pattern strategy is what the week plant is for; the other
        # strategies on their own, and the plan alone, are shown on the
        # demo plant (a week of each would double the run).
        return [
            fr.Variant("edgeopt: pattern", True, ("pattern",)),
            fr.Variant("edgeopt: all", True, fr.STRATEGIES),
        ]
    return fr.default_variants(with_optimizer, each_strategy=False)


def _score_dict(s: Score, kind: str) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": s.name,
        "kind": kind,
        "reads": s.reads,
        "reads_per_s": s.reads_per_s,
        "bus_load_9600": s.bus_load_9600,
        "sla": s.sla,
        "events_judged": s.events_judged,
        "missed": s.missed,
        "out_of_deadband": s.out_of_deadband,
    }
    if s.name.startswith("fixed_coalesced@"):
        d["period"] = float(s.name.split("@")[1].rstrip("s"))
    return d


def run_frontier(opts: Options, ui: UI) -> dict[str, Any]:
    with_opt = fr.optimizer_available() if opts.with_optimizer is None else opts.with_optimizer
    specs = frontier_specs(opts.quick)
    done = 0
    total = sum(1 + len(_variants(s.label, with_opt)) for s in specs)

    def on_done(label: str, seconds: float) -> None:
        nonlocal done
        done += 1
        ui.log(f"  done: {label} ({seconds:.0f} s since its plant started)")
        ui.status(f"frontier: {done}/{total} jobs")

    ui.status(f"frontier: 0/{total} jobs")
    # Longest plant first (the week's replays), so the pool's tail is short.
    longest_first = sorted(specs, key=lambda s: -s.duration)
    # The demo plant's plan-only day runs alone after the pool: the replay's
    # speed ("a simulated day in seconds") is measured without contention.
    alone = {specs[0].label: fr.PLAN_ONLY}
    with ProcessPoolExecutor(max_workers=max(1, opts.workers)) as pool:
        pending = {
            s.label: fr.submit_frontier(
                s,
                [v for v in _variants(s.label, with_opt) if v != alone.get(s.label)],
                pool,
                on_done,
            )
            for s in longest_first
        }
        results = [pending[s.label].result() for s in specs]
    for r in results:
        if r.spec.label in alone:
            ui.status(f"frontier: {r.spec.label} plan only, alone (replay speed)")
            s, stats = fr.replay_job(r.spec, alone[r.spec.label])
            stats.alone = True
            r.edgeopt.insert(0, s)
            r.replays.insert(0, stats)
            on_done(f"{r.spec.label}: {s.name} (alone)", stats.wall_seconds)
    plants = []
    for r in results:
        entry = {
            "label": r.spec.label,
            "plant_name": r.plant_name,
            "n_tags": r.n_tags,
            "n_devices": r.n_devices,
            "start": r.spec.start,
            "duration": r.spec.duration,
            "window": list(r.spec.window),
            "events": r.events,
            "scores": [_score_dict(s, "baseline") for s in r.baselines]
            + [_score_dict(s, "edgeopt") for s in r.edgeopt],
            "replays": [dataclasses.asdict(x) for x in r.replays],
        }
        png = RESULTS / f"frontier_{r.spec.label}.png"
        frontier_plot(entry, png)
        entry["plot"] = str(png.relative_to(ROOT))
        plants.append(entry)
    return {"optimizer_available": with_opt, "plants": plants}


def _when(t: float) -> str:
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    minutes = round(t / 60)
    d, rest = divmod(minutes, 24 * 60)
    return f"{days[d % 7]} {rest // 60:02d}:{rest % 60:02d}"


def _dur(s: float) -> str:
    if s >= DAY:
        return f"{s / DAY:g} d"
    if s >= HOUR:
        return f"{s / HOUR:g} h"
    return f"{s / 60:g} min"


def _ref(plant: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in plant["scores"] if s["name"] == "fixed_coalesced@1s")


def _goal_marks(s: dict[str, Any], ref: dict[str, Any]) -> str:
    ood_ok = s["out_of_deadband"] <= 1.1 * ref["out_of_deadband"]
    sla_ok = s["sla"] >= 0.995
    bus = s["bus_load_9600"] / ref["bus_load_9600"]
    bus_mark = "moonshot" if bus <= 0.3 else "yes" if bus <= 0.5 else "no"
    return " / ".join(["yes" if ood_ok else "no", "yes" if sla_ok else "no", bus_mark])


def render_frontier(data: dict[str, Any]) -> str:
    stamp = Stamp.from_dict(data["stamp"])
    out = ["## 1. Bus efficiency at equal fidelity (the frontier)\n"]
    out.append(
        "Virtual-time replays of the daemon's own `Poller` (planner, schedule, decoder, tag "
        "state, health, ILLEGAL ADDRESS splits, and the optimizer when present) against the "
        "plant's ground truth; baselines generated analytically from the same plant. Every "
        "poller is scored over the **same window, the last two thirds of the run**: for "
        "edgeopt that is its learned steady state (the first third is warm-up), the fixed "
        "baselines have no warm-up. SLA and out_of_deadband as defined in BENCHMARK.md; "
        "bus_load_9600 is the share of time one 9600-baud RS-485 line would be busy (above "
        "1 means the plant needs several lines). *vs @1s* columns are ratios to "
        "fixed_coalesced@1s; the goal columns read out_of_deadband ≤ 1.1× / SLA ≥ 99.5 % / "
        "bus ≤ 0.5× (moonshot ≤ 0.3×). *fixed_by_interval* reads every tag at exactly "
        "its configured interval (one block-reading instance per interval, as Telegraf "
        "and Neuron users run): where a plant configures tags slower than 1 s, it shows "
        "the fidelity the user asked for, which edgeopt never buys back by reading "
        "faster than configured (§5 judges fidelity against it). The hand-made plants' "
        "signals update on exact whole-second grids, so their out_of_deadband also "
        "depends on each poller's read phase against those grids.\n"
    )
    if data.get("optimizer_available"):
        out.append(
            "edgeopt's optimizer is the daemon's own (`edgeopt.optimizer.build_optimizer`), "
            "driven in virtual time: `run_due()` every 5 virtual seconds, which runs its "
            "quick, full and evaluation cycles when their deadlines on the injected clock "
            "say; its cluster worker (KMeans in a separate process) takes real time but no "
            "virtual time. *edgeopt: interval|cluster|pattern* enable one strategy only; "
            "*all* enables all three; *plan only* runs no optimizer (the cost-aware plan at "
            "the configured intervals).\n"
        )
    else:
        out.append(
            "> **No optimizer yet:** `edgeopt.optimizer` has no factory (`build_optimizer`) "
            "in this run, so edgeopt ran with the cost-aware planner at the configured "
            "intervals only (*plan only*). The replay picks the optimizer up as soon as "
            "it lands.\n"
        )
    for plant in data["plants"]:
        ref = _ref(plant)
        out.append(
            f"### {plant['label']}: {plant['plant_name']} — {plant['n_tags']} tags on "
            f"{plant['n_devices']} devices, {_dur(plant['duration'])} from "
            f"{_when(plant['start'])} (scored {_when(plant['window'][0])} → "
            f"{_when(plant['window'][1])}; {plant['events']} events in the run)\n"
        )
        rows = []
        for s in plant["scores"]:
            is_edge = s["kind"] == "edgeopt"
            name = f"**{s['name']}**" if is_edge else s["name"]
            rows.append(
                [
                    name,
                    f"{s['reads_per_s']:.2f}",
                    f"{s['bus_load_9600']:.3f}",
                    pct(s["sla"], 3),
                    f"{s['missed']}/{s['events_judged']}",
                    pct(s["out_of_deadband"], 3),
                    f"{s['bus_load_9600'] / ref['bus_load_9600']:.2f}×",
                    f"{s['out_of_deadband'] / ref['out_of_deadband']:.2f}×"
                    if ref["out_of_deadband"]
                    else "–",
                    _goal_marks(s, ref) if is_edge else "",
                ]
            )
        out.append(
            md_table(
                [
                    "poller",
                    "reads/s",
                    "bus_load_9600",
                    "SLA",
                    "missed/judged",
                    "out_of_deadband",
                    "bus vs @1s",
                    "ood vs @1s",
                    "goals (ood / SLA / bus)",
                ],
                rows,
                "lrrrrrrrl",
            )
        )
        out.append("")
        reps = plant["replays"]
        if reps:
            rrows = [
                [
                    r["variant"],
                    r["optimizer"],
                    _dur(r["plant_seconds"]),
                    f"{r['wall_seconds']:.1f} s" + (" (alone)" if r.get("alone") else ""),
                    f"{r['plant_seconds'] / r['wall_seconds']:.0f}×",
                    f"{r.get('warmup_bus_load_9600', 0):.3f} / "
                    f"{pct(r.get('warmup_sla', 1), 2)} / {pct(r.get('warmup_out_of_deadband', 0))}",
                    r["reads"],
                    r["failed_reads"],
                    r["plans"],
                    r["final_plan"],
                ]
                for r in reps
            ]
            out.append(
                "Replay runs (virtual time). Wall seconds are with the replays sharing the "
                "machine's cores two at a time, except *(alone)*: the replay's speed with the "
                "machine to itself. The warm-up column scores the first third of the run, which "
                "the table above leaves out:\n"
            )
            out.append(
                md_table(
                    [
                        "variant",
                        "optimizer",
                        "simulated",
                        "wall",
                        "speed-up",
                        "warm-up: bus / SLA / ood",
                        "reads",
                        "refused",
                        "plans",
                        "final plan",
                    ],
                    rrows,
                    "llrrrrrrrl",
                )
            )
            out.append("")
        out.append(f"![frontier {plant['label']}]({plant['plot']})\n")
        out.append(stamp.line() + "\n")
    return "\n".join(out)


# ---------------------------------------------------------------- realsocket
def run_realsocket(opts: Options, ui: UI) -> dict[str, Any]:
    from .realsocket import run_realsocket as run

    seconds = opts.realsocket_seconds or (30.0 if opts.quick else 120.0)

    def progress(stage: str, frac: float) -> None:
        ui.status(f"real-socket: {stage} {100 * frac:.0f} %")

    r = asyncio.run(run("demo", seconds, plant_start=WEDNESDAY + 10 * HOUR, progress=progress))
    return {
        "plant": r.plant,
        "duration": r.duration,
        "t0": r.t0,
        "t1": r.t1,
        "window": list(r.window),
        "outcomes": r.outcomes,
        "optimizer": r.replay_optimizer,
        "real": _score_dict(r.real, "real"),
        "replay": _score_dict(r.replay, "replay"),
    }


def render_realsocket(data: dict[str, Any]) -> str:
    stamp = Stamp.from_dict(data["stamp"])
    real, rep = data["real"], data["replay"]
    rows = []
    for label, key, fmt in (
        ("reads in window", "reads", "{:.0f}"),
        ("reads/s", "reads_per_s", "{:.3f}"),
        ("bus_load_9600", "bus_load_9600", "{:.4f}"),
        ("SLA", "sla", "pct"),
        ("events judged", "events_judged", "{:.0f}"),
        ("out_of_deadband", "out_of_deadband", "pct"),
    ):
        a, b = float(rep[key]), float(real[key])

        def show(x: float, fmt: str = fmt) -> str:
            return pct(x, 3) if fmt == "pct" else fmt.format(x)

        diff = f"{100 * (b - a) / a:+.1f} %" if a else "–"
        rows.append([label, show(a), show(b), diff])
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(data["outcomes"].items()))
    return "\n".join(
        [
            "## 1b. Real sockets confirm the replay\n",
            f"The daemon (`edgeopt run`) polled the simulator (`python -m simulators serve`, "
            f"another process, real TCP) for {data['duration']:g} s of wall time from plant time "
            f"{_when(data['t0'])}; the reads were taken from the **simulator's own request log** "
            f"and scored against the ground truth. The replay ran the same plant over the same "
            f"plant times in virtual time (optimizer: {data['optimizer']}). Both are scored over "
            f"the last two thirds. Simulator outcomes over the whole run: {outcomes} (the "
            f"exceptions are the ILLEGAL DATA ADDRESS answers that teach the daemon plc1's "
            f"strict gaps).\n",
            md_table(["metric", "replay (virtual time)", "real sockets", "real vs replay"], rows),
            "",
            stamp.line(),
            "",
        ]
    )


# ------------------------------------------------------------------ overhead
def run_overhead(opts: Options, ui: UI) -> dict[str, Any]:
    from . import overhead as oh

    status = ui.status
    if opts.quick:
        ratio = oh.measure_ratio(1000, 10, warmup=5, seconds=10, progress=status)
        scale = oh.measure_scale(((1000, 10), (5000, 50)), warmup=5, seconds=10, progress=status)
        startup = oh.measure_startup(((0, 0),), progress=status)
    else:
        ratio = oh.measure_ratio(5000, 50, warmup=6, seconds=25, rounds=3, progress=status)
        scale = oh.measure_scale(warmup=6, seconds=15, progress=status)
        startup = oh.measure_startup(progress=status)

    def measured(m: oh.Measured) -> dict[str, Any]:
        d = dataclasses.asdict(m)
        d.update(
            cpu_pct=m.cpu_pct,
            registers_per_cpu_s=m.registers_per_cpu_s,
            reads_per_s=m.reads_per_s,
        )
        return d

    return {
        "ratio": {
            "plant": ratio.plant,
            "n_tags": ratio.n_tags,
            "n_devices": ratio.n_devices,
            "planned_reads_per_s": ratio.planned_reads_per_s,
            "daemon": measured(ratio.daemon),
            "bare": measured(ratio.bare),
            "ratio": ratio.ratio,
            "ratios": ratio.ratios,
        },
        "scale": [
            {
                "n_tags": p.n_tags,
                "n_devices": p.n_devices,
                "planned_reads_per_s": p.planned_reads_per_s,
                "daemon": measured(p.daemon),
                "simulator_cpu_pct": p.simulator_cpu_pct,
            }
            for p in scale
        ],
        "startup": [dataclasses.asdict(p) for p in startup],
    }


def render_overhead(data: dict[str, Any]) -> str:
    stamp = Stamp.from_dict(data["stamp"])
    r = data["ratio"]
    d, b = r["daemon"], r["bare"]
    out = ["## 2. Acquisition overhead\n"]
    out.append(
        f"**Daemon vs a bare pymodbus loop, same reads.** {r['n_tags']} tags on "
        f"{r['n_devices']} TCP devices, every tag at 1 s: {r['planned_reads_per_s']:.0f} "
        "planned reads/s (the daemon's plan; the bare loop makes exactly these reads at the "
        "same periods, one client per device). The large plant with every register gap "
        "served as zeros, so both make the planned reads from the first poll. Simulator "
        "in its own process; registers counted from its request log (bits as 1/16 "
        "register); CPU = user + system of each process over the same window. Optimizer "
        "off. Goal: the daemon's pipeline (decode, statistics, storage) costs ≤ 25 % over "
        "the bare loop, i.e. ratio ≤ 1.25.\n"
    )
    rows = [
        [
            name,
            f"{m['reads_per_s']:.1f}",
            f"{m['registers'] / m['seconds']:.0f}",
            f"{m['cpu_pct']:.1f} %",
            f"{m['registers_per_cpu_s']:.0f}",
            f"{m['rss_mb']:.0f} MB",
        ]
        for name, m in (("edgeopt daemon", d), ("bare pymodbus loop", b))
    ]
    out.append(
        md_table(
            ["process", "reads/s", "registers/s", "CPU (one core)", "registers per CPU-s", "RSS"],
            rows,
        )
    )
    goal = "met" if r["ratio"] <= 1.25 else "not met"
    ratios = r.get("ratios") or []
    rounds = (
        f"; the median of {len(ratios)} rounds, daemon and bare loop in turn, which read "
        + ", ".join(f"{x:.2f}×" for x in ratios)
        + " (the table shows the median round)"
        if len(ratios) > 1
        else ""
    )
    out.append(
        f"\n**Overhead ratio (CPU per register, daemon / bare loop): {r['ratio']:.2f}×** "
        f"(goal ≤ 1.25×: {goal}){rounds}.\n"
    )
    out.append(stamp.line() + "\n")
    out.append(
        "**As the plant grows** (every tag at 1 s, optimizer off; anchor: NeuronEX 3.2 reads "
        "10k points at 1 s with ≈ 12 % of one core and 199 MB; goal at 10k tags: ≤ 15 % of "
        "one core and ≤ 80 MB RSS). Steady state on the large plant with every register gap "
        "served as zeros (the start-up cost of learning strict gaps is measured below); the "
        "window starts *measured from* seconds after start. *achieved* below *planned* "
        "would mean a process could not keep up (the simulator, pure-Python pymodbus, shares "
        "the machine's two cores).\n"
    )
    srows = []
    for p in data["scale"]:
        m = p["daemon"]
        goal_txt = ""
        if p["n_tags"] == 10_000:
            cpu_ok, rss_ok = m["cpu_pct"] <= 15, m["rss_mb"] <= 80
            goal_txt = f"CPU {'met' if cpu_ok else 'not met'}, RSS {'met' if rss_ok else 'not met'}"
        srows.append(
            [
                f"{p['n_tags']:,}",
                p["n_devices"],
                f"{p['planned_reads_per_s']:.0f}",
                f"{m['reads_per_s']:.0f}",
                f"{m['cpu_pct']:.1f} %",
                f"{m['rss_mb']:.0f} MB",
                f"{p['simulator_cpu_pct']:.0f} %",
                f"{m['settled_after']:.0f} s",
                goal_txt,
            ]
        )
    out.append(
        md_table(
            [
                "tags",
                "devices",
                "planned reads/s",
                "achieved reads/s",
                "daemon CPU (one core)",
                "daemon RSS",
                "simulator CPU",
                "measured from",
                "goal (10k)",
            ],
            srows,
        )
    )
    out.append("\n" + stamp.line() + "\n")
    out.append(
        "**Start-up** (spawn `edgeopt run` → first request the simulator sees; goal < 1.5 s), "
        "and until the plan settles: the last ILLEGAL DATA ADDRESS refusal, after which the "
        "daemon knows the holes of its strict-gap devices' register maps:\n"
    )
    urows = [
        [
            p["plant"],
            f"{p['n_tags']:,}",
            f"{p['seconds_to_first_poll']:.2f} s"
            if math.isfinite(p["seconds_to_first_poll"])
            else "no poll",
            "met" if p["seconds_to_first_poll"] < 1.5 else "not met",
            p.get("strict_devices", "–"),
            f"{p['seconds_to_settled']:.1f} s" if "seconds_to_settled" in p else "–",
        ]
        for p in data["startup"]
    ]
    out.append(
        md_table(
            [
                "plant",
                "tags",
                "start-up to first poll",
                "goal",
                "strict-gap devices",
                "to the last refusal",
            ],
            urows,
        )
    )
    out.append("\n" + stamp.line() + "\n")
    out.append(render_footprint())
    return "\n".join(out)


# What each saved `python -m benchmarks.footprint ... --save` table shows.
_FOOTPRINT_PARTS = (
    (
        "ab",
        "**Before and after, in one run** (issue 11): the daemon at the commit before the "
        "footprint work, the daemon of this tree, and the bare pymodbus loop, one after the "
        "other against one simulator (each daemon with a state directory of its own), three "
        "rounds of the three in turn: the medians, and each round's ratio. Only the ratios "
        "carry from one run to another, and one round's moved by 0.1 between runs.",
    ),
    (
        "apply",
        "**The poller's own work per read** (`Poller.apply`: decode, tag state, statistics, "
        "the sinks' queues), in-process with no I/O and no event loop, so it is what a "
        "change to that code buys, apart from the machine's noise: the poller at the "
        "seventh pass's start and this tree's, alternately.",
    ),
    (
        "startup",
        "**Start-up, before and after, in one run**: spawn → first request, the daemon at "
        "the commit before the footprint work and this tree's, alternately.",
    ),
    (
        "profile",
        "**Where the daemon's CPU goes**: py-spy samples of the running daemon (as of "
        "2026-11-30, the seventh pass): the event loop thread's busy samples by part of the "
        "daemon, then the share of all samples by function, self and inclusive. The event "
        "loop's own machinery (`select`, handles, timers) and pymodbus are what the bare "
        "loop pays too. Until the seventh pass pymodbus's `Log.transport_dump` took up to "
        "9 % of the samples: dropping its oldest logged frame freed a reply's buffer, and "
        "each reply's buffer was a 256 KiB mapping of its own (see the seventh pass).",
    ),
    (
        "memory",
        "**What holds the daemon's memory**: tracemalloc's top source lines after the daemon "
        "ran in-process, its config loaded as `edgeopt run` loads it (imports excluded: "
        "the daemon's are 37 MB of RSS as of the sixth pass, 61 MB before this work).",
    ),
    (
        "worker",
        "**The cluster worker, measured separately** (its peak RSS, how long it lives, "
        "whether it exits when idle). KMeans runs in a plain child process (`python -m "
        "edgeopt.optimizer.cluster_worker`) started on first use and stopped `IDLE_EXIT` "
        "(120 s) after its last run; the daemon's other children are the config parse "
        "forked at start and, from the fourth pass on, the forked work of its cycles and "
        "saves (each lives about a second; those under the watch's half second are not "
        "seen). Their unique memory is what they cost the machine: a forked child shares "
        "the daemon's pages until it writes them. Before this work the worker was a "
        "multiprocessing pool: it also left the pool's resource tracker (13 MB) running for "
        "the daemon's lifetime, and, spawned, it first imported the daemon itself (peak "
        "154 MB, 6.5 CPU-s). The daemon's RSS around the worker includes its first full "
        "cycle (the cluster strategy) and save. Before the fourth pass it read 102 / 124 / "
        "125 MB (before the worker, while it lived, after it); with the forked work but the "
        "cluster strategy's own work still in the daemon, 91 / 108 / 107 MB; at the end of the "
        "fourth pass (ef262d3, numpy and pydantic still in), 90 / 99 / 100 MB.",
    ),
    (
        "rss",
        "**RSS over 70 minutes, defaults on** (the optimizer learning, re-planning and "
        "saving its state every 300 s): this tree's daemon as of 97be4d3 (the seventh "
        "pass's first half: the framer's own decoding, block repeats), against a simulator "
        "of its own. The histories fill over the first minutes, and the first quick cycle "
        "(300 s: most tags slowed, the reads re-planned) raises it once; the smaller steps "
        "after it come with the next cycles, and the slow rise after that is the tags' "
        "event histories filling (512 times a tag, bounded). The first full cycle (the "
        "cluster strategy, at 3,600 s) added 0.4 MB; the worker table shows what a full "
        "cycle leaves. CPU seconds count the forked children. The sixth pass's run (the "
        "daemon at 3508eb9 beside 9807b9d's) read 59.5 / 69.0 / 72.4 / 73.7 / 75.8 / 76.4 MB "
        "at 30 / 300 / 630 / 1,200 / 2,400 / 3,600 s, against 69.5 / 74.2 / 82.9 / 84.4 / "
        "87.6 / 88.5 MB at 9807b9d.",
    ),
)


def render_footprint() -> str:
    """The saved footprint tables (profile, memory, before/after), if any."""
    out = []
    for name, intro in _FOOTPRINT_PARTS:
        saved = load_result(f"footprint_{name}")
        if saved is None:
            continue
        out.append(intro + "\n")
        out.append(saved["markdown"] + "\n")
        out.append(Stamp.from_dict(saved["stamp"]).line() + "\n")
    if out:
        out.insert(0, "### Footprint: profile, memory, before and after\n")
        out.append(_FOOTPRINT_NOTE)
    return "\n".join(out)


_FOOTPRINT_NOTE = """\
**The profile before the work** (the daemon at 425bec5, 10k tags on 100
devices, optimizer off, py-spy at 200 Hz for 20 s, the same command as above
on that commit: 1,611 samples against 634 after, over the same 20 s):
`Poller.apply` 34.9 % inclusive, of it `Poller._decode` 30.5 %,
`TagState.observe` 23.8 % (`TagStats.observe` 11.4 %, `RunningStats.add`
5.4 % self, `moved_beyond` 3.0 %, a `Sample` built per read 1.8 %);
`LineWorker._sleep_until_due` 10.5 % (a task and an Event per sleep);
pymodbus and the transport 16 %; the APScheduler `stats` job about 2 %
(`check_stale` over every tag every second). After: `Poller.apply` 11.5 %,
`TagState.observe_into` 6.3 %, the sleep 3.3 %, of fewer samples.

**Before and after the first pass, four runs** of `python -m
benchmarks.footprint ab --base 425bec5` at 10k tags on a shared machine
(each run's absolute CPU differs): CPU per register over the bare loop went
1.74× → 1.20×, 1.96× → 1.30×, 2.00× → 1.41× (2026-11-29) and 2.06× → 1.39×
(with an hour-long RSS run of another 10k plant beside it): 29–33 % less
CPU per register each time, and 1.20–1.41× the bare loop against the goal
of 1.25×, until the seventh pass (below) brought it to 1.12–1.17×.

What the footprint work changed (issue 11), first for CPU, in the order the
profile pointed:

- **Tag state** (`edgeopt/tags.py`): a read that repeats the previous value
  takes a fast path: no change checks, no per-read Welford updates (repeats
  are counted and merged into the spread and step statistics in O(1) when
  they are next looked at), no `Sample` built for a read that is not stored.
  At 10k tags most reads repeat: `TagState.observe` and `RunningStats.add`
  were a quarter of the daemon's samples.
- **Poller** (`edgeopt/poller.py`): decoding appends to one list and collects
  the tags with a change event, so the change listeners no longer walk every
  member of every read; the line worker sleeps on one future and one timer
  instead of a task waiting on an Event under `asyncio.wait` (10 % of the
  samples); tags with the same codec spec share one frozen codec (about
  17 MB at 10k tags); the once-a-second staleness check looks before it calls.
- **No full collections over what lives for good**: `gc.freeze()` once the
  daemon is built, so the cyclic collector stops walking the config and the
  tags' state.

Then for start-up and memory (RSS at 10k tags, optimizer off, half a minute
in: 161 MB at 425bec5 and 104 MB now in the table above; 91 MB in the curve
over plant sizes, the same config measured by another command):

- **The config is parsed in a forked child** (`ConfigLoad` in
  `edgeopt/config/loader.py`) while the daemon imports the rest of itself,
  and only the validated config comes back, pickled. None of the parse's
  temporaries (nodes, marks, the data with its lines: about 80 MB at 10k
  tags) ever lives in the daemon's heap, so none fragments it: the config
  costs 13 MB of RSS instead of 34 MB. The two overlap on a gateway's two
  cores.
- **No cyclic collections during the parse**: each automatic collection
  walked every object built so far. Loading 10k tags took 1.6–1.8 s with
  them and 0.7–1.0 s without; durations and codecs are built once per
  distinct spelling (another 0.2 s). Start-up at 10k tags: 2.70 s → 1.15 s
  (the table above; goal < 1.5 s).
- **Smaller models**: tags given the same keys share one set of field names
  (pydantic keeps one per model, 728 bytes: 6 MB at 10k tags); pydantic's
  validation schemas are built only where a config is validated (the child),
  and prometheus_client only when the metrics endpoint is on. The imports
  alone went from 61 MB to 57 MB of RSS.
- **Bounded histories as C doubles** (`edgeopt/rings.py`): each tag's event
  times, each device's 2,048 latencies and 256 cost samples fill to 8 bytes
  a number instead of 32–88 (at 100 devices, about 8 MB once full; full
  event histories of 512 at 10k tags would have held about 170 MB as deques,
  42 MB now).
- **The activity tracker** keeps window counts one byte wide (widened, never
  saturated, when a count needs more) and allocates its hourly sums when the
  first whole hour closes: 10.1 MB → 4.1 MB at 10k tags in the first hour,
  6.0 MB after it. Decisions are unchanged: replays of development plants
  gen:3 and gen:8 gave identical figures.
- **The learned-state save streams**: every 300 s the daemon writes each
  tag's rate, allocation and hour-of-day profile. Built all at once, that was
  about 50 MB of Python dicts, lists and floats at 10k tags, the daemon's
  high-water mark from then on; now 500 tags are built and written at a
  time (a Python peak of about 4 MB).
- **glibc's mmap threshold is pinned** at 128 KiB when the daemon starts. By
  default glibc raises it to the largest block freed so far; after the
  storage lifecycle's compressors (zstd 19, lzma, bz2) freed their work
  buffers, medium blocks came from the heaps and their freed pages stayed in
  RSS (a test doing the same work: +9.4 MB of RSS by default, +0.8 MB
  pinned). The fourth pass's hour-long curve predates it. The same command with it,
  run for 25 minutes beside that one, read 90.7 / 100.4 / 114.7 / 119.2 /
  124.7 MB at 30 / 300 / 330 / 630 / 1,470 s, against 91.9 / 100.8 / 117.3 /
  120.6 / 129.2 MB in that curve: the steps at the tier moves are
  smaller (+4.5 MB at 1,230 s against +6.6 MB), not gone.
- **The cluster worker** is a plain child process, not a multiprocessing
  pool (see its table).

**The seventh pass** (2026-11-30, CPU): **1.36× → 1.12× the bare loop's
CPU per register** at 10k tags (`python -m benchmarks.footprint ab --base
271569e --rounds 3 --seconds 30`, the daemon at the pass's start beside
this tree's, medians of three rounds: 14.2 % → 11.7 % of one core, each
round 1.48 / 1.28 / 1.36× → 1.05 / 1.20 / 1.12×); the table above, against
the commit before all the footprint work, reads 1.99× → 1.17×. What it
found, largest first:

- **Every reply cost an mmap and a munmap.** asyncio reads a socket 256 KiB
  at a time: it allocates that much for each `recv()` and shrinks it to what
  came. The fifth pass pinned glibc's mmap threshold at 128 KiB (a memory
  fix, above), so each of those buffers became a mapping of its own: an
  mmap, a page fault and, when the reply was freed (pymodbus keeps the last
  20 frames in its frame log, which is where py-spy saw it), a munmap. The
  bare loop, with glibc's sliding threshold long past 256 KiB, paid none of
  it. Side by side under py-spy, the recv and the frame log took 20 % of
  the daemon's busy samples and 7 % of the bare loop's; the daemon's system
  CPU was 0.8–0.9 s a 30 s window, 0.3–0.4 s with the threshold unpinned.
  Each connection now reads 16 KiB at a time (`RECV_SIZE` in
  `edgeopt/modbus/transport.py`; a Modbus TCP reply is at most 260 bytes):
  0.4 s of system CPU with the threshold still pinned, and `strace -c` over
  10 s of the running daemon counts no mmap or munmap.
- **pymodbus's reply decoding, skipped**: `DecodePDU.decode` formats every
  reply into a debug string, registers and all, even with debug logging
  off, and unpacks registers one at a time: 25 µs for 125 registers. The
  strict framer has already checked the reply's shape, so it builds the
  reply itself (one `array` byte swap): about 2 µs, with the same registers
  and bits as pymodbus's (a property test). At the plant's mean of 16
  registers a read, a few µs a read.
- **A block read whose registers repeat its last read's is not decoded**:
  at 1 s, 63 % of the large plant's block reads see the same registers as a
  second before. Each tag still decoded from them counts the read in one
  step (`TagState.repeat_into`, which `observe_into`'s fast path uses too);
  only tags that took a value from elsewhere since (a verified write, a
  failed read) are decoded. Coils and discrete inputs have a block decoder
  of their own now, so they take the same path. A property test holds it
  to decoding every tag, through fails, writes, stale checks and re-plans.
  `Poller.apply` alone: the `apply` table above. Replays are unchanged: §5
  re-run on this tree gives every plant's figures to the last digit.
- **Smaller things**: a planned read makes its key once (the schedule and
  the decoders looked it up several times a read); the transport builds no
  tuple of discarded-frame kinds when there were none.
- **Tried, not kept**: uvloop as the daemon's event loop (about 5 % less
  CPU in one run, 3 MB more RSS: the memory goal is the tighter one);
  skipping per-tag work for whole repeated blocks (the tags' read counts and
  times would have to be settled lazily everywhere they are read).

The same pass split the code the CPU work touched: the line workers moved
to `edgeopt/lines.py` (fixing a line whose endpoint changed on a reload:
the old worker's stop, run later, found and stopped the new worker instead);
`optimizer/loop.py` (1,055 lines) into its learned state (`memory`), the
do-no-harm guard (`harm`) and its reports (`reports`) over the shared state
`parts` declares; and a reload's device diff into `config/diff.py` (pure).

**The sixth pass** (2026-11-30, memory): **pydantic and PyYAML out of the
daemon's process**, and **tag statistics that keep only what is read**. At
10k tags, defaults on, the hour-long table above: 76.4 MB after an hour
(goal 80 MB) against 88.5 MB at 9807b9d beside it, and 643 against 685
CPU-s over the hour (6 % less).

- **The config's sections are frozen, slotted stdlib dataclasses**
  (`edgeopt/config/model.py`), no longer pydantic models. Their field types
  carry their rules as `Annotated` metadata: annotated_types bounds and two
  markers of `edgeopt/config/fields.py` (a field check before or after the
  type's own, and strictness) that pydantic reads through
  `__get_pydantic_core_schema__`; a section's rules across fields are a
  `problems()` method. pydantic validates these dataclasses in the forked
  child that parses the file (`edgeopt/config/validation.py`, PyYAML's part
  in `edgeopt/config/document.py`), and only the finished config comes back
  pickled, so neither library is ever imported by the daemon;
  `edgeoptctl reload` now parses in a forked child too. Every error message is the same:
  the 82 case folders of `tests/configs/` pin file, line, field and message
  and all pass unchanged. The daemon's imports alone (`import edgeopt.cli,
  edgeopt.daemon`) went from 46.9 to 37.3 MB of RSS; start-up to first poll
  at 10k tags is unchanged (`python -m benchmarks.footprint startup --base
  9807b9d`: 1.26 s against 1.31 s, medians of three alternating starts on a
  loaded machine). A test starts a daemon, runs its optimizer, a query and a
  reload, and finds neither numpy nor pydantic-core in its
  `/proc/PID/maps`.
- **Tag statistics**: each tag kept a Welford mean, variance, minimum and
  maximum of its values, updated on every change, that nothing read; the
  deadband advice reads only the read-to-read steps, now kept as a count and
  a total. About 300 bytes a tag less (two objects and their numbers), and
  less work per changed value.
- **Where the rest goes**, at 10k tags after 21 minutes (74 MB, from
  `/proc/PID/smaps`): anonymous memory 58 MB, of it about 6 MB the glibc
  arenas of aiosqlite's threads (SQLite's page caches) and the rest the
  main heap and pymalloc's arenas, holding the imported modules' objects
  and about 22 MiB of the daemon's own (tracemalloc, the same plant run
  in-process); libpython 5 MB; libcrypto 3.5 MB (pymodbus and asyncio both
  import ssl, so it stays). Measured around a quick cycle, a full cycle and
  a learned-state save with glibc's `mallinfo2`, each left 0.2–3 MB more
  RSS and glibc held about 4 MB free in its heaps, so `malloc_trim` would
  give back little (as the fifth pass found).
- **The optimizer's figures on plants nobody tuned for** (§5, `python -m
  benchmarks generated --workers 2`, re-run on this tree: the statistics the
  tags keep changed): on the 48 held-out plants, bus load median 0.41×, 90th
  percentile 0.66×, worst 0.94× (gen:1020); reads/s 0.39× / 0.62× / 0.89×;
  out_of_deadband against each tag at its interval 0.92× / 1.04× / 1.17×
  (gen:1010); SLA 1.0000 on every plant; do no harm on 46 of 48. Every
  plant's ratios are those of the run before, to the last digits shown.
- **The storage table (§3) re-run** with the machine otherwise idle (its
  storage code is the fifth pass's): warm-tier ingest 130,830 samples/s
  (goal 100k) and 24 h of one tag read back from the warm tier in 40 ms
  (goal 50 ms), against 44,487 and 79 ms on the loaded afternoon. Six
  more runs that hour, alternating with a trial of faster compressor
  set-up (a reused zstd context, an LZMA dictionary and bzip2 block fitted
  to the body: the same bytes, or the same sizes), gave 107–134k samples/s
  without the trial and 107–117k with it: no gain, so not kept.

**The fifth pass** (2026-11-30, memory): **numpy out of the daemon's
process** (20 MB of RSS: its extension modules, OpenBLAS and their heap).
Its numeric work runs where numpy already lived or in new homes: the
activity tracker keeps its per-tag counts in `array.array` columns (a
window's sums add whole columns at once, exact at every width; replays of
a seeded three-day scenario through the old and new tracker gave the same
209,105 floats, bit for bit); the fidelity measure and the latency fit are
plain Python (`statistics`); the pattern strategy plans in a forked child
like the interval strategy, and the cluster indicators cross the daemon as
packed bits to the worker; the storage tiers' encoding, aggregating and
decoding run in a codec worker process (`python -m
edgeopt.storage.codec_worker`, started on use, gone after two idle
minutes) while the SQL and its one-transaction-per-move guarantees stay in
the daemon. Both helper processes are one `edgeopt.worker.WorkerProcess`,
whose replies may hold only their own module's classes. A test starts a
daemon, runs a quick and a full cycle, an evaluation and a query, and finds
no numpy file in its `/proc/PID/maps`. Measured on 2026-11-30 (a slow day
for this machine: the hot tier's ingest read 135–148k samples/s against
362k in the storage table's earlier run):

- RSS at 10k tags, defaults on, this tree (661f659) beside e8bf1fd for 20
  minutes (`python -m benchmarks.footprint rss --tags 10000 --devices 100
  --seconds 1200 --optimizer on --base e8bf1fd`, with the test suite
  running beside it): 72.0 / 80.7 / 84.0 / 84.6 / 86.9 MB at 30 / 300 /
  630 / 1,020 / 1,200 s against 84.7 / 93.2 / 101.4 / 105.8 / 105.8 MB.
  CPU-s 448.8 against 416.5 with children; 17.5 of the 32 s came in the
  first half minute and did not come back when the start was measured
  alone (14.5 CPU-s in the first 30 s, as before).
- CPU per register, optimizer off (`python -m benchmarks.footprint ab
  --base e8bf1fd --seconds 30`), twice: 1.58× and 1.57× the bare loop for
  this tree against 1.48× and 1.58× for e8bf1fd (the spread between runs is
  that of the machine), at 71 MB against 85 MB of RSS.
- Warm-tier ingest, paired on the same day (`python -m benchmarks
  storage`, at e8bf1fd and at this tree): 52,696 samples/s before, 44,487
  and 56,094 after, with the worker's start (0.5–0.6 s, once per lifecycle
  run) reported beside the rate and not in it; the worker pickles 8,192 rows
  in about 2 ms. Queries of compressed data pay the pipe: 24 h of one tag
  from the warm tier in 79–84 ms against 40 ms, 1,440 cold buckets in 16 ms
  against 6 ms; a range still in the hot tier never calls the worker.
- What is left at 10k tags after 20 minutes (about 85 MB): the imports
  (about 45 MB: pydantic and its core 6 MB, APScheduler with
  importlib.metadata 4 MB, pymodbus 3 MB, libcrypto for asyncio's ssl 3.5
  MB), the tags' state and statistics (about 7 MiB of Python objects), the
  config (2.4 MiB), the activity columns (about 4 MB), and pymalloc's
  partly used arenas around all of it. glibc's `malloc_trim` every 30 s
  gave back about 1 MB (tried, not kept).

**The fourth pass** (2026-11-30, memory; its hour-long before and after,
0336743 beside d43db93, since replaced above by the sixth pass's: 84.3 /
98.7 / 104.6 / 108.1 / 109.8 MB at 30 s / 5 / 10.5 / 20 / 59.5 min
against 85.2 / 94.7 / 111.0 / 112.4 / 118.4 MB, and 134.0 MB in its last
row, the first full cycle in progress):

- **Pure work runs in a forked child** (`edgeopt/forked.py`): the interval
  strategy's search, the cluster strategy's own work before and after the
  worker's KMeans (every tag's event history into indicators; choosing
  triggers and planning twice), the A/B split's pricing, the configured
  plan's cost (the do-no-harm guard's bar) and every learned-state save's
  export with its rows. Each child sees the daemon's state as it was (copy
  on write), sends back only its results, pickled (tag keys travel as
  indexes and come back as the daemon's own strings), and exits; the daemon
  writes the rows. Measured around each step of the first quick cycle at
  10k tags (a daemon instrumented to log its RSS before and after each
  step): the search +5.3 → +2.1 MB (what is left is its result: 10k
  rates), the configured plan's cost +1.6 → 0, the save +5 → +3.7 MB (its
  rows; that connection's page cache is now held to 256 KiB), and the A/B
  pricing (+2.0 MB) moved after. The first full cycle (the worker table)
  left the daemon at 100 MB, against 125 MB before. The final tree (ef262d3),
  ten minutes beside d43db93 with children's CPU counted (the `rss` command
  above with `--seconds 630`, 2026-11-30 11:07 UTC): 78.6 / 91.6 / 97.4 MB at
  30 / 330 / 630 s against 81.3 / 100.7 / 105.1 MB, 79.0 against 77.8
  CPU-s. Fork itself costs 2–3 ms here at 130 MB;
  pages the daemon writes while a child lives are copied (about 10 µs each),
  and a child's own CPU is counted with the daemon's in `footprint`'s CPU
  seconds from this pass on (its hour-long table predates that: its CPU
  seconds leave the children out). A child that dies or overruns is killed, reaped
  and reported, its work lost for that cycle, and from then on such work
  runs in the daemon; a SIGTERM meant for a child cannot reach the daemon's
  loop through the wakeup fd the two share. The config parse at start goes
  through the same code.
- **The config**: `edgeopt run` no longer keeps the YAML text for the
  daemon's life (1.7 MB at 10k tags), and the loaded tags keep one object
  per distinct number (a pickle carries every float as a value of its own:
  60k floats for a handful of intervals, deadbands and scales): 3.87 → 2.38
  MiB of Python objects at 10k tags.

**The third pass** (2026-11-30, memory; its hour-long before and after,
run at 06:50: 89 / 108 / 121 MB at 30 s / 330 s / an hour, against 97 /
122 / 134 MB at 8e83b26 beside it, the same CPU seconds):

- **Tags are slotted dataclasses**, validated by pydantic as the models are
  (`TagConfig`, a pydantic dataclass): a model kept each tag's 24 fields in a
  dict of its own. The 10k-tag config in the daemon went from 10.4 MiB to
  3.9 MiB of Python objects, and the sharing of field sets that only served
  tag models is gone.
- **The quick cycle builds less.** Its search (`compute_allocation`, in a
  thread) filled two copies of every demand; now it fills the job's own
  demands with their credit floors, and counts the configured plan's loss
  without copies (its Python peak at 10k tags: 5.3 → 2.4 MiB; the same
  allocation to the bit). The window rates are read off the tracker's arrays
  when asked for (`WindowRates`), not built as two dicts of 10k tuples. A
  learned-state save waits for a running cycle, so the two peaks no longer
  add up (both came every 300 s, at the same moment).
- **Event histories**: made at a tag's first change (most tags of a plant
  never change), and kept as int32 milliseconds from a base (`TimeRing`,
  4 bytes a time): a tag that changes at every read fills 2 KB, not 4, so
  10k such tags hold 20 MB of histories, not 40. Rounding to the millisecond
  moved two held-out plants in §5 (gen:1004's bus 0.57× → 0.53×) and left
  every summary figure as it was.
- **Older judged records keep only their history row** once saved; the
  state database keeps them whole. The first change at 10k tags holds about
  7,000 intervals a side: 0.47 MB as a record, 10 KB as its row. A daemon
  keeps 500 records, so over days of changes this is what kept growing.

Left, with the reason. RSS at 10k tags is 84 MB half a minute in, 99 MB
after the first optimization and 110 MB from 25 minutes on (the fourth
pass's hour-long table; 85, 107 and 118 MB at d43db93 beside it), and 100 MB after
the first full cycle in the worker table (125 MB before this pass), against
the goal of 80 MB: 20–30 MB over. The imports are 57 MB of it (the
interpreter 11, numpy 13, asyncio with ssl 9, pydantic 5, APScheduler 4,
pymodbus 2, the daemon's own modules 11). The rest is what the daemon
lives on, at 10k tags: the tags' runtime state and statistics (about
7 MiB of Python objects), the config (2.4 MiB), the activity windows and
profiles (4 MB, 8 MB once the hourly statistics start), the learned rates,
intervals and reference rates, event histories as tags change (up to 2 KB a
tag), and the arenas pymalloc keeps around them. Under 80 MB needs the
imports cut (numpy out of the polling process, pydantic only in the config
child) or the per-tag state held in arrays; the transients are out now.

CPU per register measured 1.20–1.41× the bare loop in the runs of
2026-11-29/30 and 1.50–1.66× in this pass's (the daemon at 8e83b26, run
beside this tree three times, measured 1.37–1.66×, within ±8 % of it): the
bare loop's own cost moves from day to day, so the goal of 1.25× is not
reliably met. Until this pass `footprint ab` ran both daemons in one state
directory, so the second (this tree's) started on the first one's hot
storage and learned splits: in a run of the same code on both sides that
cost the second +13 MB and about 15 % more CPU. Each now has its own, so
the tables before this pass understate what the work tree gained.
"""


# -------------------------------------------------------------------- serial
def run_serial(opts: Options, ui: UI) -> dict[str, Any]:
    from .serial import TURNAROUND, measure_serial

    if opts.quick:
        points = measure_serial(warmup=2, seconds=5, progress=ui.status)
    else:
        points = measure_serial(warmup=3, seconds=10, progress=ui.status)
    return {
        "turnaround": TURNAROUND,
        "points": [
            {
                **dataclasses.asdict(p),
                "reads_per_s": p.reads_per_s,
                "registers_per_s": p.registers_per_s,
            }
            for p in points
        ],
    }


def render_serial(data: dict[str, Any]) -> str:
    stamp = Stamp.from_dict(data["stamp"])
    tau = data["turnaround"] * 1000
    rows = []
    for p in data["points"]:
        c = p["ceilings"]
        n = p["registers"]
        rate = p["reads_per_s"]
        per = "registers/s" if n > 1 else "transactions/s"
        value = p["registers_per_s"] if n > 1 else rate
        rows.append(
            [
                p["baud"],
                f"{n} ({per})",
                f"{value:.1f}",
                f"{c['spec_zero'] * n:.1f}",
                f"{c['spec_turnaround'] * n:.1f}",
                f"{c['line_model'] * n:.1f}",
                pct(rate / c["spec_turnaround"], 1),
                pct(rate / c["line_model"], 1),
                p["failed"],
            ]
        )
    return "\n".join(
        [
            "## 4. Wire limit on serial\n",
            "The daemon (`edgeopt run`) polls a simulated RTU device through `PtyLine`, which "
            "delays every byte by 11 bits at the baud rate and enforces 3.5-character "
            f"silences between frames; the device answers after a {tau:g} ms turnaround. Four "
            "separate reads whose tags ask for 10 ms keep a read always due, so the line is "
            "saturated. Counted from the simulator's request log. Ceilings: *spec* is "
            "BENCHMARK.md's (8 + 5 + 2N bytes + 7 characters of silence per read, 11 bits a "
            "character) with zero turnaround (404 registers/s and 39.7 transactions/s at "
            f"9600) and with the {tau:g} ms turnaround added; *line* is what this simulated "
            "line can carry at most (it lets the turnaround run inside the 3.5-character "
            "silence after the request, so it is slightly faster than the spec with "
            "turnaround). Goal: ≥ 90 % of the ceiling once the turnaround is accounted for.\n",
            md_table(
                [
                    "baud",
                    "registers per read",
                    "achieved",
                    "ceiling, spec, τ = 0",
                    f"ceiling, spec + {tau:g} ms",
                    "ceiling, line",
                    "share of spec + τ",
                    "share of line",
                    "failed",
                ],
                rows,
            ),
            "",
            stamp.line(),
            "",
        ]
    )


# ------------------------------------------------------------------- storage
def run_storage(opts: Options, ui: UI) -> dict[str, Any]:
    from .storage import measure_storage

    tiers = measure_storage(1.0 if opts.quick else 6.0, progress=ui.status)
    return {
        "hours": 1.0 if opts.quick else 6.0,
        "tiers": [
            {
                **dataclasses.asdict(t),
                "bytes_per_sample": t.bytes_per_sample,
                "ingest_per_s": t.ingest_per_s,
            }
            for t in tiers
        ],
    }


def render_storage(data: dict[str, Any]) -> str:
    stamp = Stamp.from_dict(data["stamp"])
    rows = [
        [
            t["tier"],
            f"{t['samples']:,}",
            f"{t['bytes_on_disk'] / 2**20:.1f} MiB",
            f"{t['bytes_per_sample']:.1f}",
            f"{t['ingest_per_s']:,.0f}",
            f"{t['query_points']:,} in {1000 * t['query_seconds']:.0f} ms",
            t.get("note", ""),
        ]
        for t in data["tiers"]
    ]
    return "\n".join(
        [
            "## 3. Storage\n",
            f"Data: the samples the daemon stores while polling the demo plant for "
            f"{data['hours']:g} h (a virtual-time replay with a sink on the poller: changes "
            "beyond the deadband, the value held before each change, heartbeats). Bytes per "
            "sample = database files (after a checkpoint) / samples; ingest = samples "
            "appended and committed in batches of 5000, per second; read-back = one tag's "
            "24 h of 1 Hz data (86,400 points, best of 5). Anchors: Gorilla 1.37 B/point, "
            "Prometheus 1–2 B/sample, InfluxDB TSM 2–3 B/value. Goals: warm tier ≤ 2 "
            "B/sample lossless; ingest ≥ 100k samples/s; 24 h read back across tiers in "
            "< 50 ms. One measuring function per tier (`benchmarks/storage.py`, `TIERS`); "
            "how each tier is measured is in that module's docstring.\n",
            md_table(
                [
                    "tier",
                    "samples",
                    "on disk",
                    "bytes/sample",
                    "ingest (samples/s)",
                    "24 h of one tag read back",
                    "note",
                ],
                rows,
                "lrrrrrl",
            ),
            "",
            stamp.line(),
            "",
            _STORAGE_NOTE,
        ]
    )


_STORAGE_NOTE = """\
Warm-tier ingest, what changed: the hot → warm move now carries several
tags' chunks per transaction (up to 8192 rows in all) instead of one tag per
transaction. Hot rows are clustered by time, then tag, so each tag's delete
dirtied nearly every page of the hour and each per-tag commit wrote those
pages to the WAL again; one read, one range delete and one commit per batch
cut the SQL part of the move from about 2.2 s to 0.4 s (timed per statement,
one run). The chunk encoder also finds each value's storage class by a dict
lookup on its type. The chunks are the same, byte for byte (same codecs,
same 1.2 B/sample); what is left is mostly the compressors' own trials (zstd
19, lzma, bz2, zlib on every candidate body). Before/after, measured back to
back in one session with the command above (commit 84526f0, before the
change, exported with `git archive`), alternating, three runs each: 72,919 /
81,406 / 67,753 samples/s before, 133,126 / 135,574 / 136,320 after,
1.7–2.0× (median 1.8×). This machine ran slower than when the old table was
made (93,791 then), so the table's other ingest figures moved with it (hot
and cold code did not change).
"""


# ------------------------------------------------------------------ headline
def render_headline(_: dict[str, Any]) -> str:
    front = load_result("frontier")
    over = load_result("overhead")
    out = ["## Headline\n"]
    if front is None and over is None:
        return out[0] + "\nNothing measured yet.\n"
    if front is not None:
        rows = []
        for plant in front["plants"]:
            ref = _ref(plant)
            edge = [s for s in plant["scores"] if s["kind"] == "edgeopt"]
            best = next((s for s in edge if s["name"].endswith(": all")), edge[-1])
            for s in (ref, best):
                rows.append(
                    [
                        plant["label"],
                        s["name"],
                        f"{s['reads_per_s']:.2f}",
                        f"{s['bus_load_9600']:.3f}",
                        pct(s["sla"], 2),
                        pct(s["out_of_deadband"], 2),
                        f"{s['bus_load_9600'] / ref['bus_load_9600']:.2f}×",
                        _goal_marks(s, ref) if s is best else "",
                    ]
                )
        out.append(
            md_table(
                [
                    "plant",
                    "poller",
                    "reads/s",
                    "bus_load_9600",
                    "SLA",
                    "out_of_deadband",
                    "bus vs @1s",
                    "goals (ood / SLA / bus)",
                ],
                rows,
                "llrrrrrl",
            )
        )
        if not front.get("optimizer_available"):
            out.append(
                "\nedgeopt here is the cost-aware plan at the configured intervals (the "
                "optimizer has not landed yet); see §1."
            )
        out.append("\n" + Stamp.from_dict(front["stamp"]).line() + "\n")
    if over is not None:
        r = over["ratio"]
        out.append(
            f"Acquisition overhead: **{r['ratio']:.2f}×** CPU per register of the daemon over "
            f"a bare pymodbus loop making the same reads ({r['n_tags']} tags at 1 s; goal "
            "≤ 1.25×); see §2.\n"
        )
        out.append(Stamp.from_dict(over["stamp"]).line() + "\n")
    return "\n".join(out)


# ----------------------------------------------------------------- northbound
def run_northbound(opts: Options, ui: UI) -> dict[str, Any]:
    from .northbound import run_northbound as run

    return run(opts.quick, ui.status)


def render_northbound(data: dict[str, Any]) -> str:
    from .northbound_report import render

    return render(data)


# --------------------------------------------------------------------- peers
def run_peers(opts: Options, ui: UI) -> dict[str, Any]:
    from . import peers

    if opts.quick:
        sizes: tuple[tuple[int, int], ...] = ((1000, 10),)
        return peers.measure_peers(sizes, warmup=5, seconds=15, progress=ui.status)
    sizes = ((1000, 10), (5000, 50), (10_000, 100))
    return peers.measure_peers(sizes, warmup=10, seconds=30, progress=ui.status)


def render_peers(data: dict[str, Any]) -> str:
    from .peers import TB_VERSION

    stamp = Stamp.from_dict(data["stamp"])
    out = ["## 7. Peers, side by side\n"]
    out.append(
        f"ThingsBoard IoT Gateway {TB_VERSION} (PyPI, in its own venv made by the benchmark) "
        "and edgeopt poll the same simulated plant (the gap-free large plant, every tag at "
        "1 s; one simulator process each, same plant and clock) at the same time, and are "
        "measured over the same window. The gateway's Modbus connector config is generated "
        "from edgeopt's (one timeseries key per tag); everything else is its shipped "
        "default. edgeopt runs with its optimizer off, so both make their configured reads: "
        "edgeopt merges neighbouring tags into block reads, the gateway reads each key on "
        "its own. *Kept up*: requests/s ≥ 97 % of the product's own plan. *CPU per tag "
        "value*: CPU time over the tag values delivered (decoded) in the window. Goal: "
        "edgeopt's CPU per tag value ≤ 0.2× the gateway's (moonshot 0.1×). How the gateway "
        "runs offline here (pinned pymodbus, a `getSessionLimits` responder on a local "
        "Mosquitto, no update check) is in `benchmarks/peers.py`.\n"
    )
    if data.get("skipped"):
        out.append(f"**Not measured:** {data['skipped']}\n")
    rows = []
    for p in data["points"]:
        for side in ("edgeopt", "peer"):
            m = p[side]
            rows.append(
                [
                    f"{p['n_tags']:,}",
                    m["name"],
                    f"{m['reads_per_s']:.0f} of {m['planned_reads_per_s']:.0f}",
                    f"{m['registers'] / m['seconds']:.0f}",
                    "yes" if m["kept_up"] else "**no**",
                    f"{m['cpu_pct']:.1f} %",
                    f"{m['rss_mb']:.0f} MB",
                    f"{m['cpu_ms_per_value']:.4f} ms",
                    "–" if m.get("published_per_s") is None else f"{m['published_per_s']:.0f}",
                ]
            )
    if rows:
        out.append(
            md_table(
                [
                    "tags",
                    "product",
                    "requests/s (of planned)",
                    "registers/s",
                    "kept up",
                    "CPU (one core)",
                    "RSS",
                    "CPU per tag value",
                    "values published/s",
                ],
                rows,
            )
        )
        ratios = [
            [
                f"{p['n_tags']:,}",
                f"{p['cpu_per_value_ratio']:.2f}×",
                "met" if p["cpu_per_value_ratio"] <= 0.2 else "not met",
                f"{p['edgeopt']['rss_mb'] / p['peer']['rss_mb']:.2f}×",
                f"{p['edgeopt']['cpu_pct'] / max(p['peer']['cpu_pct'], 1e-9):.2f}×",
            ]
            for p in data["points"]
        ]
        out.append(
            "\n"
            + md_table(
                [
                    "tags",
                    "CPU per tag value, edgeopt / gateway",
                    "goal ≤ 0.2×",
                    "RSS, edgeopt / gateway",
                    "CPU, edgeopt / gateway",
                ],
                ratios,
            )
        )
    wrong = [p for p in data["points"] if p["peer"].get("bit_registers_all_equal", 0) > 0]
    if wrong:
        p = wrong[-1]["peer"]
        out.append(
            f"\n**Where the gateway is wrong, not only slow.** Of the {p['bit_registers']} "
            "registers whose status bits are separate bool tags (12 bits each; `type: bits`, "
            f"`objectsCount: 1`, `bit: N` in its config), {p['bit_registers_all_equal']} "
            "had the gateway publish one value for all their bits at the end of the window "
            "(counted by the benchmark's MQTT responder), while the bits differ on the plant "
            "and in edgeopt's store (e.g. `1 0 0 0 1 0 0 0 1 0 0 0`): with "
            "`objectsCount: 1` its decoder does not pick bit N of the register.\n"
        )
    out.append("\n" + stamp.line() + "\n")
    return "\n".join(out)


RUNNERS: dict[str, Callable[[Options, UI], dict[str, Any]]] = {
    "frontier": run_frontier,
    "generated": run_generated_section,
    "realsocket": run_realsocket,
    "overhead": run_overhead,
    "serial": run_serial,
    "storage": run_storage,
    "northbound": run_northbound,
    "peers": run_peers,
}

RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "headline": render_headline,
    "frontier": render_frontier,
    "generated": render_generated,
    "realsocket": render_realsocket,
    "overhead": render_overhead,
    "serial": render_serial,
    "storage": render_storage,
    "northbound": render_northbound,
    "peers": render_peers,
}
