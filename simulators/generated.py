"""Seeded, procedurally generated plants ("gen:SEED" or "gen:SEED:TAGS"): devices, register
maps, signals and polling settings drawn from realistic families, so the optimizer can be
benchmarked on plants nobody tuned it for. Everything follows from the seed (numpy
Generators, crc32 signal keys; never `hash()`), so any process rebuilds a plant from its name.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from edgeopt.modbus.codec import register_width

from .plant import BIT_TABLES, Plant, PlantDevice, PlantTag
from .signals import (
    DAY,
    HOUR,
    Burst,
    Combine,
    Constant,
    Counter,
    Follower,
    NoisyAnalog,
    OnOff,
    PartialFollower,
    Ramp,
    RandomWalk,
    Shift,
    Signal,
    Sine,
    Solar,
    Steps,
    Triangle,
)

__all__ = [
    "ARCHETYPES",
    "DEV_SEEDS",
    "FAMILIES",
    "GEN_PREFIX",
    "HELDOUT_SEEDS",
    "DrivenGroup",
    "device_archetypes",
    "driven_group_plant",
    "generated_plant",
    "parse_gen_name",
    "plant_families",
]

# Development seeds: tests and tuning may use these.
DEV_SEEDS = range(0, 100)
# Held-out seeds: only the benchmark reports them; tests and tuning must not.
HELDOUT_SEEDS = range(1000, 1048)

GEN_PREFIX = "gen:"
_DRIVEN_PREFIX = "gen-driven:"
# Devices a driven group plant may start with: each has a group of its own kind.
# (A drive keeps its place when drawn; the others are drawn in its stead.)
_DRIVEN_ARCHETYPES = ("pv_inverter", "energy_meter", "plc", "hvac", "vfd_drive")
_NAME = re.compile(r"gen:(\d+)(?::(\d+))?")

# What a tag's signal is like; `plant_families` maps each tag to one of these.
FAMILIES = (
    "noise_under_deadband",  # noise around a level, deadband above the noise
    "noise_over_deadband",  # noise around a level, deadband near or below it (busy)
    "slow_drift",  # slow random walks: temperatures, levels
    "steps",  # setpoints and modes that jump now and then
    "ramp",  # setpoints that ramp to new targets
    "wave",  # triangle and sine waves (tens of seconds to hours)
    "duty_cycle",  # run/idle machines and what follows them
    "shift",  # values following the weekly shift pattern
    "counter",  # counters and integrators
    "alarm",  # rare alarms: bools, coils, discrete inputs, bits
    "status",  # status words and bits that follow the process
    "static",  # configuration blocks that never change
    "group_leader",  # the exposed leader of a driven group
    "group_follower",  # registers driven by one common (hidden or exposed) signal
    "partial",  # correlated with a leader only part of the time
    "burst",  # quiet, with bursts of activity in daily windows
)

ARCHETYPES = (
    "energy_meter",
    "pv_inverter",
    "vfd_drive",
    "plc",
    "hvac",
    "flow_meter",
    "temp_controller",
)

# Weekly shift schedules a site may run (plant time 0 is Monday 00:00).
_SCHEDULES: tuple[tuple[tuple[tuple[float, float, float], ...], tuple[int, ...]], ...] = (
    (((6, 14, 1.0), (14, 22, 0.8)), (0, 1, 2, 3, 4)),
    (((6, 14, 1.0), (14, 22, 1.0), (22, 6, 0.6)), (0, 1, 2, 3, 4)),
    (((7, 12, 1.0), (12, 12.5, 0.2), (12.5, 16, 1.0)), (0, 1, 2, 3, 4)),
    (((0, 24, 1.0),), (0, 1, 2, 3, 4, 5, 6)),
    (((6, 10, 1.0), (10, 10.5, 0.3), (10.5, 18, 1.0)), (0, 1, 2, 3, 4, 5)),
)

_INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**53), 2**53),  # exact in a float: the signals are floats
    "uint64": (0, 2**53),
}
_ADDRESS_LIMIT = 65_000


# ----------------------------------------------------------------- public API
def parse_gen_name(name: str) -> tuple[int, int | None] | None:
    """(seed, n_tags) of "gen:SEED" / "gen:SEED:TAGS" (n_tags None), or None for other names."""
    m = _NAME.fullmatch(name.strip())
    if m is None:
        return None
    tags = int(m.group(2)) if m.group(2) is not None else None
    if tags is not None and tags < 1:
        return None
    return int(m.group(1)), tags


def generated_plant(seed: int, n_tags: int | None = None) -> Plant:
    """The generated plant of `seed`, named "gen:SEED" (or "gen:SEED:TAGS" with n_tags).

    Default size: 2–6 devices and 30–150 tags. `n_tags` sets the total
    (approximately, within a few tags); the devices and archetypes stay
    those of the seed, with more devices when n_tags is large.
    """
    return _generate(seed, n_tags).plant


@dataclass(frozen=True)
class DrivenGroup:
    """Which tags of a `driven_group_plant` are which (paths are DEVICE/NAME).

    leader: the exposed leader tag, or None when the common signal is hidden.
    leader_signal: the common signal itself (exposed or not).
    leader_kind: what drives it: sun (quiet at night), load or speed (follow the
    shifts and the machine's run state), walk (a slow random walk) or wave (a sine).
    followers: the group, on contiguous registers of one table, in address order.
    static: a contiguous block of >= 10 Constant registers (max_staleness >= 120 s).
    fast: single-register words whose noise exceeds their deadband (busy).
    """

    device: str
    leader: str | None
    leader_signal: Signal
    leader_kind: str
    followers: tuple[str, ...]
    static: tuple[str, ...]
    fast: tuple[str, ...]


def driven_group_plant(seed: int) -> tuple[Plant, DrivenGroup]:
    """A generated plant (use DEV_SEEDS) whose first device has a driven group, a static block
    and fast words, and which tags those are.

    The plant is drawn like `generated_plant(seed)` except that its first
    device (a PV inverter, meter, PLC, HVAC controller or drive, each with a
    group of its own kind) is on TCP and gets, before its usual modules: a group of 6–20
    followers of one leader (hidden or exposed), a static config block of
    10–40 Constant registers with max_staleness >= 120 s, and 3–5 fast
    words. Named "gen-driven:SEED".
    """
    gen = _generate(seed, None, driven=True)
    assert gen.driven is not None
    return gen.plant, gen.driven


def plant_families(plant: Plant) -> dict[str, str]:
    """Each tag's family (DEVICE/NAME -> one of FAMILIES) for a generated plant.

    Rebuilt from the plant's name (cached), so it works on a plant built in
    another process or changed by `as_rtu`/`without_strict_gaps`. Other
    plants give {}.
    """
    meta = _meta(plant.name)
    return dict(meta[0]) if meta else {}


def device_archetypes(plant: Plant) -> dict[str, str]:
    """Each device's archetype (one of ARCHETYPES) for a generated plant; {} for others."""
    meta = _meta(plant.name)
    return dict(meta[1]) if meta else {}


@lru_cache(maxsize=64)
def _meta(name: str) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] | None:
    if name.startswith(_DRIVEN_PREFIX):
        tail = name[len(_DRIVEN_PREFIX) :]
        if not tail.isdigit():
            return None
        gen = _generate(int(tail), None, driven=True)
    else:
        parsed = parse_gen_name(name)
        if parsed is None:
            return None
        gen = _generate(*parsed)
    return tuple(gen.families.items()), tuple(gen.archetypes.items())


# ------------------------------------------------------------ building blocks
@dataclass
class _Tag:
    """A tag before layout: the PlantTag fields except table and address."""

    name: str
    type: str
    signal: Signal | str
    family: str
    opts: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return register_width(self.type, self.opts.get("length"))


@dataclass
class _Block:
    """Tags a device maker put together; each item is one address (bit tags may share one)."""

    table: str
    items: list[list[_Tag]] = field(default_factory=list)
    contiguous: bool = False  # no holes inside: config blocks, driven groups
    region: str = "measure"  # measure | counter | status | config: where the maker puts it
    role: str = ""  # driven_group_plant bookkeeping: group | static | fast

    def add(self, *tags: _Tag) -> None:
        self.items.append(list(tags))

    @property
    def n_tags(self) -> int:
        return sum(len(i) for i in self.items)


@dataclass(frozen=True)
class _Num:
    """A register type for a value: type, scale, word order, and the signal's quantum."""

    type: str
    scale: float
    word_order: str
    quantum: float

    def opts(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.scale != 1.0:
            d["scale"] = self.scale
        if self.word_order != "big" and register_width(self.type) > 1:
            d["word_order"] = self.word_order
        return d


@dataclass
class _Site:
    """Signals every device of the plant shares: the shift schedule, the sun, the weather."""

    shift: Signal
    shift_numbers: Signal  # 1, 2, 3 for the shift under way, 0 when off
    sun: Solar
    daylight: Signal  # 1 while the sun is up: cheaper to integrate than the sun
    outdoor: RandomWalk


@dataclass
class _GroupInfo:
    leader: str | None
    leader_signal: Signal
    kind: str
    followers: list[str]


class _Dev:
    """One device being drawn: its random stream, its maker's habits and its blocks."""

    def __init__(
        self,
        name: str,
        archetype: str,
        seed: int,
        rng: np.random.Generator,
        site: _Site,
    ) -> None:
        self.name = name
        self.archetype = archetype
        self.seed = seed  # the plant's: signal keys carry the device and tag names
        self.rng = rng
        self.site = site
        # The maker's habits: where measurements live and how 32-bit words are ordered.
        self.meas_table = "input" if rng.random() < 0.6 else "holding"
        self.word_order = "little" if rng.random() < 0.35 else "big"
        self.float_share = float(rng.choice([0.1, 0.3, 0.6]))
        # The integrator's habits: careful per-role timing, or one setting for all.
        self.careful = bool(rng.random() < 0.6)
        self.lazy_interval = float(rng.choice([1.0, 1.0, 1.0, 0.5, 5.0]))
        self.lazy_stale = max(float(rng.choice([5.0, 10.0, 10.0, 30.0, 60.0])), self.lazy_interval)
        self.gap_p = float(rng.choice([0.0, 0.05, 0.15, 0.3]))
        self.blocks: list[_Block] = []
        self.names: set[str] = set()
        self._run: Signal | None = None
        self.leader: Signal | None = None
        self.leader_peak = 1.0  # the leader's typical high value, to scale partial followers
        self.group: _GroupInfo | None = None
        self.n_groups = 0

    # -------------------------------------------------------------- helpers
    def key(self, tag: str) -> tuple[str, int]:
        return f"{self.name}/{tag}", self.seed

    def uname(self, base: str) -> str:
        """A tag name not yet used on this device."""
        name, i = base, 2
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def block(self, table: str, region: str, **kw: Any) -> _Block:
        b = _Block(table, region=region, **kw)
        self.blocks.append(b)
        return b

    def cycle(self, nominal: float) -> float:
        """A register update period on this device's own scan clock.

        A device refreshes its registers on a cycle of its own, never exactly
        the poll period: a 1 s value that updated at whole seconds, polled at
        whole seconds, would make a poller's fidelity a matter of its phase
        luck. The factor comes from a hash, not the draw stream, so adding it
        moved no other draw.
        """
        h = zlib.crc32(f"{self.seed}/{self.name}/scan".encode()) % 10_000 / 10_000
        factor = 0.90 + 0.08 * h if h < 0.5 else 1.02 + 0.08 * (h - 0.5) * 2
        return float(nominal) * factor

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def pick(self, options: Sequence[Any], p: Sequence[float] | None = None) -> Any:
        i = int(self.rng.choice(len(options), p=None if p is None else _norm(p)))
        return options[i]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def running(self) -> Signal:
        """The machine's run/idle state: a permissive that drops now and then, within shifts."""
        if self._run is None:
            permit = OnOff(
                *self.key("run_permit"),
                rate_per_hour=self.u(0.3, 6.0),
                duty=self.u(0.55, 0.95),
                initial=1.0,
            )
            self._run = Combine(_run_in_shift, permit, self.site.shift)
        return self._run

    def activity(self) -> Signal:
        """A noise-free event signal of how busy the device is (what counters integrate)."""
        if self.archetype == "pv_inverter":
            return self.site.daylight
        if self.archetype in ("energy_meter", "hvac"):
            return self.site.shift
        return self.running()

    # --------------------------------------------------------------- timing
    def timing(self, role: str) -> dict[str, Any]:
        """interval, min_interval, max_staleness and priority as an integrator sets them."""
        pick = self.pick
        if role == "config":
            interval = float(pick([10.0, 60.0, 1.0, 5.0], [0.3, 0.4, 0.2, 0.1]))
            stale = float(pick([120.0, 300.0, 600.0]))
            return {
                "interval": interval if self.careful else self.lazy_interval,
                "max_staleness": stale,
                "priority": pick(["low", "normal"], [0.7, 0.3]) if self.careful else "normal",
            }
        if not self.careful:
            prio = "normal"
            if role == "alarm" and self.chance(0.5):
                prio = "high"
            return {
                "interval": self.lazy_interval,
                "max_staleness": self.lazy_stale,
                "priority": prio,
            }
        (ivs, iv_weights), stales, prios = _ROLE_TIMING[role]
        iv = float(pick(ivs, iv_weights))
        stale = max(float(pick(stales)), 2 * iv)
        out: dict[str, Any] = {
            "interval": iv,
            "max_staleness": stale,
            "priority": pick(["high", "normal", "low"], prios),
        }
        if role == "control" and self.chance(0.5):
            out["min_interval"] = min(iv, float(pick([0.2, 0.25, 0.5])))
        elif role == "fast" and self.chance(0.3):
            out["min_interval"] = iv / 2
        return out

    # ---------------------------------------------------------------- types
    def num(self, lo: float, hi: float, res: float, *, floats: bool = True) -> _Num:
        """A register type holding [lo, hi] at resolution res, as device makers choose them."""
        r = self.rng.random()
        if floats and r < self.float_share:
            t = "float64" if self.chance(0.06) else "float32"
            return _Num(t, 1.0, self.word_order, res if self.chance(0.7) else 0.0)
        scale = _pow10_floor(res)
        if self.chance(0.25):
            scale *= 10  # a coarser register than the value deserves: common
        scale = min(max(scale, 0.001), 1.0)
        signed = lo < 0 or self.chance(0.25)
        if self.chance(0.03):
            candidates: tuple[str, ...] = (
                ("int64",) if signed else (self.pick(["uint64", "int64"]),)
            )
        else:
            candidates = ("int16", "int32") if signed else ("uint16", "uint32")
        for t in candidates:
            tlo, thi = _INT_RANGES[t]
            if lo / scale >= tlo and hi / scale <= thi:
                return _Num(t, scale, self.word_order, scale)
        return _Num("float32", 1.0, self.word_order, res)


def _norm(p: Sequence[float]) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    return a / a.sum()


def _run_in_shift(permit: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return permit * (shift > 0)


def _pow10_floor(x: float) -> float:
    return float(10.0 ** math.floor(math.log10(x))) if x > 0 else 1.0


def _nice(x: float) -> float:
    """x rounded to 1, 2 or 5 times a power of ten, as people write deadbands."""
    if x <= 0:
        return 0.0
    e = math.floor(math.log10(x))
    m = x / 10.0**e
    m = 1.0 if m < 1.5 else 2.0 if m < 3.5 else 5.0 if m < 7.5 else 10.0
    return float(f"{m * 10.0**e:.3g}")


def _above(threshold: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: (x > threshold).astype(np.float64)


def _below(threshold: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: (x < threshold).astype(np.float64)


def _times(level: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: x * level


def _affine(base: float, gain: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: base + gain * x


# Careful integrators: (intervals, weights), max_staleness choices, priority weights
# (high, normal, low) per role.
_ROLE_TIMING: dict[
    str, tuple[tuple[tuple[float, ...], tuple[float, ...]], tuple[float, ...], tuple[float, ...]]
] = {
    "control": (((0.5, 1.0), (0.7, 0.3)), (2.0, 3.0, 5.0), (0.8, 0.2, 0.0)),
    "alarm": (((1.0, 0.5, 2.0), (0.75, 0.2, 0.05)), (2.0, 5.0, 5.0, 10.0), (0.75, 0.25, 0.0)),
    "fast": (((1.0, 0.5, 2.0), (0.7, 0.2, 0.1)), (5.0, 10.0, 15.0, 30.0), (0.1, 0.9, 0.0)),
    "measure": (((1.0, 2.0, 5.0), (0.6, 0.15, 0.25)), (10.0, 30.0, 60.0), (0.05, 0.85, 0.1)),
    "slow": (((5.0, 10.0, 1.0), (0.5, 0.3, 0.2)), (60.0, 120.0, 300.0), (0.0, 0.7, 0.3)),
    "setpoint": (((1.0, 5.0, 10.0), (0.4, 0.4, 0.2)), (30.0, 60.0, 120.0), (0.1, 0.8, 0.1)),
    "counter": (
        ((5.0, 10.0, 30.0, 60.0), (0.3, 0.3, 0.2, 0.2)),
        (60.0, 300.0, 600.0),
        (0, 0.6, 0.4),
    ),
}


# ----------------------------------------------------------------- quantities
@dataclass(frozen=True)
class _Quantity:
    """A measured quantity: name, unit, engineering range, typical level, relative noise."""

    name: str
    unit: str
    lo: float
    hi: float
    level: tuple[float, float]
    noise: tuple[float, float]  # noise sd as a fraction of the span


_Q = {
    q.name: q
    for q in (
        _Quantity("voltage", "V", 0, 300, (225, 240), (1e-4, 1e-3)),
        _Quantity("frequency", "Hz", 45, 55, (49.97, 50.03), (2e-4, 1e-3)),
        _Quantity("pressure", "bar", 0, 16, (2, 12), (5e-4, 4e-3)),
        _Quantity("flow", "m³/h", 0, 500, (20, 300), (5e-4, 5e-3)),
        _Quantity("current", "A", 0, 600, (20, 300), (5e-4, 4e-3)),
        _Quantity("power", "kW", 0, 800, (20, 400), (5e-4, 4e-3)),
        _Quantity("temperature", "°C", -20, 150, (20, 90), (2e-4, 2e-3)),
        _Quantity("level", "%", 0, 100, (20, 80), (5e-4, 5e-3)),
        _Quantity("speed", "rpm", 0, 3000, (300, 1800), (2e-4, 2e-3)),
        _Quantity("humidity", "%RH", 0, 100, (30, 70), (5e-4, 4e-3)),
        _Quantity("density", "kg/m³", 800, 1200, (990, 1080), (1e-4, 1e-3)),
        _Quantity("power_factor", "", 0, 1, (0.85, 0.99), (5e-4, 3e-3)),
        _Quantity("dc_voltage", "V", 0, 1000, (550, 750), (2e-4, 2e-3)),
        _Quantity("vibration", "mm/s", 0, 50, (1, 6), (2e-3, 1e-2)),
        _Quantity("co2", "ppm", 0, 5000, (400, 1200), (5e-4, 4e-3)),
    )
}


def _analog(d: _Dev, base: str, q: _Quantity, res: float) -> tuple[str, _Num]:
    """A free tag name and a register type holding quantity q at resolution res.

    The type comes first because the signal is quantised to it.
    """
    return d.uname(base), d.num(q.lo, q.hi, res)


def _tag(
    d: _Dev,
    name: str,
    num: _Num,
    sig: Signal,
    q: _Quantity,
    *,
    family: str,
    role: str,
    deadband: float,
) -> _Tag:
    opts = {**num.opts(), **d.timing(role), "deadband": deadband}
    if q.unit:
        opts["unit"] = q.unit
    return _Tag(name, num.type, sig, family, opts)


# -------------------------------------------------------------------- modules
# A module adds blocks of one kind to a device and returns how many tags it added;
# `n` is how many it should aim for.
Module = Callable[[_Dev, int], int]


def _m_noisy(d: _Dev, n: int) -> int:
    """Noise around a slowly moving level; the deadband above the noise, or near/below it."""
    b = d.block(d.meas_table, "measure")
    qs = _ARCH[d.archetype].quantities
    busy_share = d.u(0.15, 0.6)
    for _ in range(n):
        q = _Q[d.pick(qs)]
        span = q.hi - q.lo
        level = d.u(*q.level)
        sd = span * d.u(*q.noise)
        busy = d.chance(busy_share)
        if busy:
            deadband = 0.0 if d.chance(0.2) else _nice(sd * d.u(0.3, 1.5))
        else:
            deadband = _nice(max(sd * d.u(4.0, 8.0), span * d.u(0.002, 0.01)))
        period = d.cycle(d.pick([0.5, 1.0, 2.0, 5.0], [0.15, 0.5, 0.2, 0.15]))
        name, num = _analog(d, q.name, q, _pow10_floor(sd / 2))
        drift = d.u(0.0, 3.0) * sd
        base: Signal | float = level
        if drift > 0 and d.chance(0.7):
            base = RandomWalk(
                *d.key(name + "/level"),
                mean=level,
                sd=drift * 3,
                step_sd=drift / 20,
                quantum=0.0,
                period=d.cycle(d.pick([5.0, 10.0, 30.0])),
            )
        sig = NoisyAnalog(
            *d.key(name),
            base=base,
            noise_sd=sd,
            quantum=num.quantum,
            period=period,
            lo=q.lo,
            hi=q.hi,
            quiet_when_zero=False,
        )
        fam = "noise_over_deadband" if busy else "noise_under_deadband"
        role = "fast" if busy and period <= 1.0 else "measure"
        b.add(_tag(d, name, num, sig, q, family=fam, role=role, deadband=deadband))
    return n


# What moves slowly enough to be a random walk.
_SLOW = ("temperature", "level", "humidity", "pressure", "co2", "density")


def _m_drift(d: _Dev, n: int) -> int:
    """Slow random walks: temperatures, tank levels, humidity; some with a daily cycle."""
    b = d.block(d.meas_table, "measure")
    slow = [q for q in _ARCH[d.archetype].quantities if q in _SLOW] or ["temperature"]
    for _ in range(n):
        q = _Q[d.pick(slow)]
        span = q.hi - q.lo
        name, num = _analog(d, q.name, q, _pow10_floor(span / 2000))
        sig = RandomWalk(
            *d.key(name),
            mean=d.u(*q.level),
            sd=span * d.u(0.005, 0.03),
            step_sd=span * d.u(1e-4, 1e-3),
            quantum=num.quantum or 0.01,
            period=d.cycle(d.pick([2.0, 5.0, 10.0, 30.0])),
            lo=q.lo,
            hi=q.hi,
            daily_amplitude=span * d.u(0.005, 0.03) if d.chance(0.4) else 0.0,
            peak_hour=d.u(12, 17),
        )
        role = d.pick(["slow", "measure"], [0.6, 0.4])
        deadband = _nice(span * d.u(0.003, 0.02))
        b.add(_tag(d, name, num, sig, q, family="slow_drift", role=role, deadband=deadband))
    return n


def _m_ramp(d: _Dev, n: int) -> int:
    """Positions and references that ramp to new targets (valves, dampers, speed references)."""
    b = d.block(d.pick([d.meas_table, "holding"]), "measure")
    for _ in range(n):
        what = d.pick(["valve_position", "damper_position", "speed_reference", "flow_setpoint"])
        hi = 100.0 if "position" in what else float(d.pick([1500.0, 1800.0, 3000.0]))
        q = _Quantity(what, "%" if hi == 100.0 else "rpm", 0.0, hi, (0, hi), (0, 0))
        levels = tuple(float(round(x)) for x in np.linspace(0.0, hi, int(d.rng.integers(3, 7))))
        name, num = _analog(d, what, q, hi / 1000)
        sig = Ramp(
            *d.key(name),
            levels=levels,
            rate_per_hour=d.u(0.2, 4.0),
            slope=hi * d.u(0.002, 0.02),
            resolution=float(d.pick([0.5, 1.0, 2.0])),
            quantum=max(num.quantum, hi / 1000),
            max_ramp=1800.0,
        )
        role = d.pick(["fast", "measure"])
        deadband = _nice(hi * d.u(0.005, 0.02))
        b.add(_tag(d, name, num, sig, q, family="ramp", role=role, deadband=deadband))
    return n


def _m_wave(d: _Dev, n: int) -> int:
    """Triangle and sine waves, periods from tens of seconds to hours, some only while running."""
    b = d.block(d.meas_table, "measure")
    for _ in range(n):
        q = _Q[d.pick(["pressure", "level", "temperature", "flow", "power"])]
        span = q.hi - q.lo
        wave_period = float(np.exp(d.u(math.log(20.0), math.log(4 * HOUR))))
        # At least ten refreshes a cycle, and none faster than 0.5 s.
        period = d.cycle(max(0.5, min(float(d.pick([0.5, 1.0, 2.0, 5.0, 10.0])), wave_period / 10)))
        amp = span * d.u(0.02, 0.2)
        mean = min(max(d.u(*q.level), q.lo + amp), q.hi - amp)
        cls = Triangle if d.chance(0.5) else Sine
        name, num = _analog(d, f"{q.name}_cycle", q, _pow10_floor(amp / 200))
        sig = cls(
            *d.key(name),
            wave_period=wave_period,
            amplitude=amp,
            mean=mean,
            phase=d.u(0, 1),
            noise_sd=amp * d.u(0.002, 0.02) if d.chance(0.5) else 0.0,
            quantum=num.quantum or _pow10_floor(amp / 200),
            period=period,
            gate=d.running() if d.chance(0.3) else None,
            idle=q.lo if q.lo >= 0 else mean,
            lo=q.lo,
            hi=q.hi,
        )
        deadband = _nice(span * d.u(0.005, 0.02))
        b.add(_tag(d, name, num, sig, q, family="wave", role="measure", deadband=deadband))
    return n


def _m_duty(d: _Dev, n: int) -> int:
    """Run/idle: the machine's own run state and load, and pumps or fans cycling on and off."""
    b = d.block(d.meas_table, "measure")
    bits = d.block(d.pick(["coil", "discrete"]), "status")
    added = 0
    machines: list[tuple[str, Signal]] = [("machine", d.running())]
    while added < n:
        label, run = machines[-1]
        bits.add(_Tag(d.uname(f"{label}_running"), "bool", run, "duty_cycle", d.timing("alarm")))
        added += 1
        if added < n:
            q = _Q[d.pick(["power", "current", "flow"])]
            span = q.hi - q.lo
            name, num = _analog(d, f"{label}_{q.name}", q, _pow10_floor(span / 5000))
            sig = NoisyAnalog(
                *d.key(name),
                base=Combine(_times(d.u(*q.level)), run),
                noise_sd=span * d.u(5e-4, 3e-3),
                quantum=num.quantum,
                period=d.cycle(d.pick([1.0, 2.0, 5.0])),
                lo=q.lo,
                hi=q.hi,
            )
            deadband = _nice(span * d.u(0.005, 0.02))
            b.add(
                _tag(d, name, num, sig, q, family="duty_cycle", role="measure", deadband=deadband)
            )
            added += 1
        label = f"{d.pick(['pump', 'fan', 'compressor', 'mixer', 'conveyor'])}{len(machines)}"
        cycle = OnOff(*d.key(label), rate_per_hour=d.u(0.5, 8.0), duty=d.u(0.2, 0.8))
        machines.append((label, cycle if d.chance(0.5) else Combine(np.multiply, cycle, run)))
    return added


def _m_shift(d: _Dev, n: int) -> int:
    """Values that follow the weekly shift pattern: shift number, line speed, shift active."""
    b = d.block(d.meas_table, "measure")
    site = d.site
    b.add(_Tag(d.uname("shift_no"), "uint16", site.shift_numbers, "shift", d.timing("setpoint")))
    added = 1
    while added < n:
        if d.chance(0.3):
            active = Combine(_above(0.0), site.shift)
            opts = {"bit": 0, **d.timing("alarm")}
            b.add(_Tag(d.uname("shift_active"), "bool", active, "shift", opts))
        else:
            q = _Q[d.pick(["speed", "power", "flow"])]
            span = q.hi - q.lo
            name, num = _analog(d, f"line_{q.name}", q, _pow10_floor(span / 5000))
            sig = NoisyAnalog(
                *d.key(name),
                base=Combine(_times(d.u(*q.level)), site.shift),
                noise_sd=span * d.u(2e-4, 2e-3),
                quantum=num.quantum,
                period=d.cycle(d.pick([1.0, 2.0, 5.0])),
                lo=q.lo,
                hi=q.hi,
            )
            deadband = _nice(span * d.u(0.005, 0.02))
            b.add(_tag(d, name, num, sig, q, family="shift", role="measure", deadband=deadband))
        added += 1
    return added


def _m_fast(d: _Dev, n: int) -> int:
    """Single-register words that change every refresh by more than their deadband."""
    b = d.block(d.meas_table, "measure", role="fast")
    for _ in range(n):
        q = _Q[d.pick(["current", "pressure", "flow", "speed", "vibration"])]
        span = q.hi - q.lo
        level = d.u(*q.level)
        sd = span * d.u(2e-3, 1e-2)
        scale = _pow10_floor(sd / 2)
        t = "int16" if (q.hi / scale) <= 32767 else "uint16"
        if q.hi / scale > 65535:
            scale *= 10
        name = d.uname(f"{q.name}_fast")
        sig = NoisyAnalog(
            *d.key(name),
            base=level,
            noise_sd=sd,
            quantum=scale,
            period=d.cycle(d.pick([0.5, 1.0])),
            lo=max(q.lo, 0.0),
            hi=q.hi,
            quiet_when_zero=False,
        )
        opts: dict[str, Any] = {"deadband": _nice(sd * d.u(0.2, 0.8)), **d.timing("control")}
        if scale != 1.0:
            opts["scale"] = scale
        if q.unit:
            opts["unit"] = q.unit
        b.add(_Tag(name, t, sig, "noise_over_deadband", opts))
    return n


def _m_steps(d: _Dev, n: int) -> int:
    """Setpoints and modes an operator or a recipe changes now and then."""
    b = d.block("holding", "measure")
    for i in range(n):
        kind = d.pick(["setpoint", "mode", "recipe"], [0.5, 0.3, 0.2])
        if kind == "setpoint":
            q = _Q[d.pick(["temperature", "pressure", "speed", "flow", "level"])]
            base = round(d.u(*q.level))
            step = max(1, round((q.hi - q.lo) / 50))
            levels = tuple(float(base + step * j) for j in range(-2, 3))
            name = d.uname(f"{q.name}_setpoint")
            unit = q.unit
        else:
            levels = tuple(float(j) for j in range(int(d.rng.integers(2, 7))))
            name = d.uname("mode" if kind == "mode" else "recipe_no")
            unit = ""
        sig = Steps(
            *d.key(name),
            levels=levels,
            rate_per_hour=d.u(0.05, 2.0),
            initial=levels[len(levels) // 2],
        )
        t = "uint16" if min(levels) >= 0 else "int16"
        opts: dict[str, Any] = {"deadband": 0.0, **d.timing("setpoint")}
        if unit:
            opts["unit"] = unit
        if i == 0 and d.chance(0.3):
            opts["word_order"] = d.word_order
            t = "float32"
        b.add(_Tag(name, t, sig, "steps", opts))
    return n


# Counter kinds: tag name, unit, and whether it integrates power (kW), flow, or time running.
_COUNTERS: dict[str, tuple[str, str, str]] = {
    "energy_import": ("energy_import", "kWh", "power"),
    "energy_export": ("energy_export", "kWh", "power"),
    "reactive_energy": ("reactive_energy", "kvarh", "power"),
    "total_yield": ("total_yield", "kWh", "power"),
    "total_volume": ("total_volume", "m³", "flow"),
    "total_mass": ("total_mass", "t", "flow"),
    "run_hours": ("run_hours", "h", "hours"),
    "part_count": ("part_count", "", "parts"),
    "start_count": ("start_count", "", "starts"),
    "operating_seconds": ("operating_seconds", "s", "seconds"),
}


def _m_counter(d: _Dev, n: int) -> int:
    """Energy, volume, run-hour and part counters: uint32 scaled, int64/uint64, float totals.

    Counters integrate noise-free event signals (or the sun, as a PV yield
    does), which stays cheap however far into plant time a server starts.
    """
    b = d.block(d.pick(["holding", d.meas_table]), "counter")
    act = d.activity()
    on = Combine(_above(0.0), act)
    year = 365 * DAY
    for _ in range(n):
        kind = d.pick(_ARCH[d.archetype].counters)
        base, unit, what = _COUNTERS[kind]
        source: Signal
        if what == "power" and d.archetype == "pv_inverter":
            # W/m² of the sun times a few hundred m² of panels, in kWh.
            source, gain, peak = d.site.sun, d.u(0.02, 0.4) / HOUR, 1000.0
        elif what in ("power", "flow"):
            idle, busy = d.u(2, 50), d.u(20, 400)
            source, gain, peak = Combine(_affine(idle, busy), act), 1.0 / HOUR, idle + busy
        elif what == "hours":
            source, gain, peak = on, 1.0 / HOUR, 1.0
        elif what == "parts":
            source, gain, peak = on, d.u(0.02, 1.0), 1.0
        elif what == "starts":
            source, gain, peak = on, d.u(1 / HOUR, 1 / 600), 1.0
        else:
            source, gain, peak = Constant(1.0), 1.0, 1.0
        whole = what in ("parts", "starts", "seconds")
        initial = float(round(d.u(0, 1) * 10 ** d.u(2, 6), 0 if whole else 1))
        # Room for a year of plant time at full rate.
        need = initial + gain * peak * year
        r = d.rng.random()
        if r < 0.08:
            t, scale = d.pick(["int64", "uint64"]), 1.0 if whole else float(d.pick([1.0, 0.001]))
        elif r < 0.2 and not whole:
            t, scale = d.pick(["float32", "float64"], [0.6, 0.4]), 1.0
        else:
            t, scale = "uint32", 1.0 if whole else float(d.pick([0.01, 0.1, 1.0]))
            while need / scale > _INT_RANGES["uint32"][1]:
                scale *= 10
        quantum = scale if t in _INT_RANGES else float(d.pick([0.01, 0.1]))
        name = d.uname(base)
        sig = Counter(
            *d.key(name),
            source=source,
            gain=gain,
            quantum=max(quantum, 1.0) if whole else quantum,
            initial=initial,
            period=d.cycle(d.pick([1.0, 2.0, 5.0, 10.0])),
        )
        # Integrators leave 0 on counters, or a round step worth a minute or two.
        deadband = 0.0 if d.chance(0.5) else _nice(max(quantum, gain * peak * d.u(10, 120)))
        opts: dict[str, Any] = {**d.timing("counter"), "deadband": deadband}
        if scale != 1.0:
            opts["scale"] = scale
        if register_width(t) > 1:
            opts["word_order"] = d.word_order
        if unit:
            opts["unit"] = unit
        b.add(_Tag(name, t, sig, "counter", opts))
    return n


_ALARM_NAMES = (
    "overtemp",
    "overcurrent",
    "undervoltage",
    "comm_fault",
    "door_open",
    "filter_clogged",
    "low_level",
    "high_pressure",
    "emergency_stop",
    "phase_loss",
    "ground_fault",
    "fan_fault",
    "sensor_fault",
    "maintenance_due",
)


def _alarm_signal(d: _Dev, name: str) -> Signal:
    # Rare: a few events a day at most, each lasting minutes.
    return OnOff(*d.key(name), rate_per_hour=d.u(0.02, 1.0), duty=d.u(0.01, 0.1))


def _m_alarms(d: _Dev, n: int) -> int:
    """Rare alarms: coils, discrete inputs, or bits of a status word (bit:)."""
    where = d.pick(["bits", "coil", "discrete"], [0.5, 0.2, 0.3])
    if where == "bits":
        return _status_words(d, n, "alarm", lambda name: _alarm_signal(d, name))
    b = d.block(where, "status")
    for _ in range(n):
        name = d.uname(d.pick(_ALARM_NAMES))
        b.add(_Tag(name, "bool", _alarm_signal(d, name), "alarm", d.timing("alarm")))
    return n


def _status_words(d: _Dev, n: int, family: str, make: Callable[[str], Signal]) -> int:
    """Bits spread over 16-bit status words (holding or input), several bits per word."""
    b = d.block(d.pick(["holding", d.meas_table]), "status")
    left = n
    while left > 0:
        k = min(left, int(d.rng.integers(1, 9)))
        bits = sorted(int(x) for x in d.rng.choice(16, size=k, replace=False))
        word: list[_Tag] = []
        for bit in bits:
            base = d.pick(_ALARM_NAMES) if family == "alarm" else d.pick(_STATUS_NAMES)
            name = d.uname(base)
            word.append(_Tag(name, "bool", make(name), family, {"bit": bit, **d.timing("alarm")}))
        b.add(*word)
        left -= k
    return n


_STATUS_NAMES = ("running", "ready", "remote", "at_setpoint", "heating", "standby", "local")


def _m_status(d: _Dev, n: int) -> int:
    """Status that follows the process: state enums and bits (running, ready, at setpoint)."""
    act = d.activity()
    added = 0
    if d.chance(0.6):
        # An operating-state enum: 1 idle, 4 running (SunSpec-like), 7 fault now and then.
        b = d.block(d.meas_table, "status")
        name = d.uname("operating_state")
        sig = Combine(lambda a: np.where(a > 0, 4.0, 1.0), act)
        b.add(_Tag(name, "uint16", sig, "status", d.timing("measure")))
        added += 1
    if added >= n:
        return added

    def make(name: str) -> Signal:
        r = d.rng.random()
        if r < 0.4:
            return Combine(_above(0.0), act)
        if r < 0.6:
            return Combine(_below(1e-9), act)
        if r < 0.8:
            return Steps(*d.key(name), levels=(0.0, 1.0), rate_per_hour=d.u(0.01, 0.3), initial=1.0)
        return Constant(1.0)

    return added + _status_words(d, n - added, "status", make)


_PARAMS = (
    "ct_ratio",
    "pt_ratio",
    "accel_time",
    "decel_time",
    "modbus_address",
    "baud_code",
    "nominal_power",
    "max_current",
    "gain_p",
    "gain_i",
    "filter_time",
    "limit_high",
    "limit_low",
    "alarm_delay",
    "hysteresis",
    "firmware_version",
    "hw_revision",
)


def _m_static(d: _Dev, n: int) -> int:
    """A configuration block: contiguous registers that never change (nameplate, parameters)."""
    k = int(np.clip(n, 10, 40)) if n >= 10 else n
    b = d.block("holding", "config", contiguous=True, role="static")
    timing = d.timing("config")
    added = 0
    if d.chance(0.4) and k > 6:
        # A serial number first, as on a nameplate; counted on top of the k constants.
        length = int(d.rng.integers(4, 11))
        digits = "".join(str(int(x)) for x in d.rng.integers(0, 10, size=2 * length - 4))
        text = f"SN{digits}"[: 2 * length]
        b.add(
            _Tag(d.uname("serial_number"), "string", text, "static", {"length": length, **timing})
        )
        k += 1
        added += 1
    while added < k:
        base = _PARAMS[added] if added < len(_PARAMS) else f"param_{added:02d}"
        name = d.uname(base)
        r = d.rng.random()
        opts: dict[str, Any] = dict(timing)
        if r < 0.6:
            t, value = "uint16", float(d.rng.integers(0, 2000))
        elif r < 0.75:
            t, value = "int16", float(d.rng.integers(-500, 500))
            if d.chance(0.5):
                opts["scale"] = 0.1
                value = value * 0.1
        else:
            t, value = "float32", float(np.float32(d.u(0.5, 200.0)))
            opts["word_order"] = d.word_order
        b.add(_Tag(name, t, Constant(value), "static", opts))
        added += 1
    return added


def _group_kind(d: _Dev) -> tuple[str, str, _Quantity, str, _Quantity]:
    """(leader kind, leader tag name, leader quantity, follower name prefix, follower quantity)."""
    a = d.archetype
    if a == "pv_inverter":
        return (
            "sun",
            "irradiance",
            _Quantity("irradiance", "W/m²", 0, 1500, (0, 1000), (0, 0)),
            "string_current",
            _Quantity("string_current", "A", 0, 20, (0, 12), (0, 0)),
        )
    if a == "energy_meter":
        return (
            "load",
            "total_power",
            _Q["power"],
            "ch_power",
            _Quantity("ch_power", "kW", 0, 200, (0, 80), (0, 0)),
        )
    if a == "vfd_drive":
        return (
            "speed",
            "motor_speed",
            _Q["speed"],
            "motor_load",
            _Quantity("motor_load", "%", 0, 150, (0, 100), (0, 0)),
        )
    if a == "hvac":
        return (
            "walk",
            "outdoor_temp",
            _Quantity("outdoor_temp", "°C", -30, 50, (0, 25), (0, 0)),
            "zone_temp",
            _Quantity("zone_temp", "°C", 0, 40, (18, 26), (0, 0)),
        )
    if a == "flow_meter":
        return (
            "wave",
            "header_flow",
            _Q["flow"],
            "branch_flow",
            _Quantity("branch_flow", "m³/h", 0, 200, (0, 80), (0, 0)),
        )
    kind = d.pick(["walk", "wave", "load"])
    return (
        kind,
        "line_load",
        _Quantity("line_load", "%", 0, 120, (30, 90), (0, 0)),
        ("station_load"),
        _Quantity("station_load", "%", 0, 150, (20, 100), (0, 0)),
    )


def _leader_signal(d: _Dev, kind: str, lq: _Quantity, key: str) -> Signal:
    span = lq.hi - lq.lo
    if kind == "sun":
        return d.site.sun
    if kind == "walk":
        if lq.name == "outdoor_temp":
            return d.site.outdoor
        return RandomWalk(
            *d.key(f"{key}/walk"),
            mean=d.u(*lq.level),
            sd=span * 0.08,
            step_sd=span * d.u(5e-4, 3e-3),
            quantum=0.0,
            period=d.cycle(d.pick([1.0, 2.0, 5.0, 10.0])),
            lo=lq.lo,
            hi=lq.hi,
        )
    if kind == "wave":
        amp = span * d.u(0.1, 0.3)
        return Sine(
            *d.key(f"{key}/wave"),
            wave_period=float(np.exp(d.u(math.log(120.0), math.log(2 * HOUR)))),
            amplitude=amp,
            mean=min(max(d.u(*lq.level), lq.lo + amp), lq.hi - amp),
            phase=d.u(0, 1),
            noise_sd=span * 1e-3,
            period=d.cycle(d.pick([1.0, 2.0, 5.0])),
            lo=lq.lo,
            hi=lq.hi,
        )
    if kind == "speed":
        sp = Steps(
            *d.key(f"{key}/speed_ref"),
            levels=tuple(float(x) for x in (900, 1200, 1350, 1450, 1480)),
            rate_per_hour=d.u(0.1, 2.0),
        )
        return NoisyAnalog(
            *d.key(f"{key}/speed"),
            base=Combine(np.multiply, d.running(), sp),
            noise_sd=span * d.u(3e-4, 1e-3),
            quantum=0.0,
            period=d.cycle(d.pick([0.5, 1.0, 2.0])),
            lo=lq.lo,
            hi=lq.hi,
        )
    # load: a base that steps with the shift and the machine, plus noise
    base = Combine(
        _affine(lq.lo + span * d.u(0.05, 0.2), span * d.u(0.3, 0.6)),
        d.site.shift if d.archetype == "energy_meter" else d.running(),
    )
    return NoisyAnalog(
        *d.key(f"{key}/load"),
        base=base,
        noise_sd=span * d.u(5e-4, 3e-3),
        quantum=0.0,
        period=d.cycle(d.pick([1.0, 2.0])),
        lo=lq.lo,
        hi=lq.hi,
    )


def _m_group(d: _Dev, n: int, *, min_followers: int = 3, force_contiguous: bool = False) -> int:
    """Followers of one common signal (gain, offset, small noise); the leader exposed or hidden."""
    kind, lname, lq, fname, fq = _group_kind(d)
    k = max(min_followers, min(n, 20))
    d.n_groups += 1
    if d.n_groups > 1:
        fname = f"{fname}_g{d.n_groups}"
    leader = _leader_signal(d, kind, lq, f"leader{d.n_groups}")
    exposed = d.chance(0.5)
    added = 0
    lspan, fspan = lq.level[1] - lq.level[0], fq.level[1] - fq.level[0]
    gain0 = fspan / lspan if lspan else 1.0
    offset0 = fq.level[0] - gain0 * lq.level[0]
    fb = d.block(
        d.meas_table, "measure", contiguous=force_contiguous or d.chance(0.7), role="group"
    )
    leader_tag: str | None = None
    if exposed:
        lb = fb if d.chance(0.5) else d.block(d.meas_table, "measure")
        ln = d.num(lq.lo, lq.hi, _pow10_floor(lspan / 1000), floats=True)
        leader_tag = d.uname(lname)
        lopts = {
            **ln.opts(),
            **d.timing("fast"),
            "deadband": _nice(lspan * d.u(0.005, 0.02)),
            "unit": lq.unit,
        }
        lb.add(_Tag(leader_tag, ln.type, leader, "group_leader", lopts))
        added += 1
    # One type for the whole group: a maker lays out string currents alike.
    fn = d.num(fq.lo, fq.hi, _pow10_floor(fspan / 1000))
    timing = d.timing(d.pick(["fast", "measure"]))
    deadband = _nice(fspan * d.u(0.003, 0.02))
    followers: list[str] = []
    for i in range(k):
        name = d.uname(f"{fname}_{i + 1:02d}")
        sig = Follower(
            *d.key(name),
            leader=leader,
            gain=gain0 * (1.0 + d.u(-0.05, 0.05)),
            # The sun's followers read 0 at night; others sit at a slightly different offset.
            offset=offset0 + (0.0 if kind == "sun" else fspan * d.u(-0.02, 0.02)),
            noise_sd=fspan * d.u(1e-4, 2e-3),
            quantum=fn.quantum or _pow10_floor(fspan / 1000),
            lo=fq.lo,
            hi=fq.hi,
        )
        opts = {**fn.opts(), **timing, "deadband": deadband, "unit": fq.unit}
        fb.add(_Tag(name, fn.type, sig, "group_follower", opts))
        followers.append(name)
    if d.leader is None:
        d.leader, d.leader_peak = leader, lq.level[1]
        d.group = _GroupInfo(leader_tag, leader, kind, followers)
    return added + k


def _m_partial(d: _Dev, n: int) -> int:
    """Registers correlated with a leader only part of the time (manual mode, bypass, a break)."""
    added = 0
    if d.leader is None:
        added += _m_group(d, 3)
    leader = d.leader
    assert leader is not None
    b = d.block(d.meas_table, "measure")
    q = _Quantity("output", "%", 0, 100, (10, 90), (0, 0))
    for _ in range(n):
        gain = d.u(0.3, 0.9) * 100.0 / max(abs(d.leader_peak), 1e-6)
        base = d.pick(["controller_output", "valve_demand", "load_share", "bypass_flow"])
        name, num = _analog(d, base, q, 0.1)
        sig: Signal
        if d.chance(0.3):
            # Correlated until a time in the first week, then on its own for good.
            sig = Follower(
                *d.key(name),
                leader=leader,
                gain=gain,
                noise_sd=d.u(0.02, 0.2),
                quantum=num.quantum or 0.01,
                lo=q.lo,
                hi=q.hi,
                break_at=d.u(0.0, 7 * DAY),
                break_sd=d.u(2.0, 8.0),
            )
        else:
            # Correlated in windows: during shifts, or while a loop is in auto.
            coupled: Signal = d.site.shift
            if d.chance(0.7):
                coupled = OnOff(
                    *d.key(name + "/coupled"),
                    rate_per_hour=d.u(0.2, 2.0),
                    duty=d.u(0.4, 0.9),
                    initial=1.0,
                )
            sig = PartialFollower(
                *d.key(name),
                leader=leader,
                coupled=coupled,
                gain=gain,
                noise_sd=d.u(0.02, 0.2),
                quantum=num.quantum or 0.01,
                wander_sd=d.u(2.0, 8.0),
                lo=q.lo,
                hi=q.hi,
            )
        role = d.pick(["fast", "measure"])
        b.add(_tag(d, name, num, sig, q, family="partial", role=role, deadband=_nice(d.u(0.5, 2))))
    return added + n


def _m_burst(d: _Dev, n: int) -> int:
    """Quiet values with daily bursts: cleaning cycles, defrost, start-up transients."""
    b = d.block(d.meas_table, "measure")
    for _ in range(n):
        q = _Q[d.pick(["vibration", "pressure", "current", "flow"])]
        span = q.hi - q.lo
        start = d.u(0, DAY - HOUR)
        name, num = _analog(d, f"{q.name}_burst", q, _pow10_floor(span / 2000))
        sig = Burst(
            *d.key(name),
            base=d.u(*q.level),
            windows=[(start, start + d.u(300, 2700))],
            repeat=DAY,
            noise_sd=span * d.u(0.005, 0.03),
            quantum=num.quantum or _pow10_floor(span / 1000),
            period=d.cycle(d.pick([1.0, 2.0])),
            lo=q.lo,
            hi=q.hi,
        )
        deadband = _nice(span * d.u(0.003, 0.01))
        b.add(_tag(d, name, num, sig, q, family="burst", role="measure", deadband=deadband))
    return n


# ----------------------------------------------------------------- archetypes
@dataclass(frozen=True)
class _Archetype:
    """How one kind of device is drawn.

    weight: how often a plant has one; size: relative share of the plant's
    tags; rtu: how likely it sits on an RS-485 line; quantities: what its
    analogs measure; core: (module, min, max) drawn first; extra: (module,
    weight) drawn to fill the budget.
    """

    prefix: str
    weight: float
    size: float
    rtu: float
    quantities: tuple[str, ...]
    core: tuple[tuple[Module, int, int], ...]
    extra: tuple[tuple[Module, float], ...]
    counters: tuple[str, ...]  # kinds of _COUNTERS it keeps (repeats weigh more)


_ARCH: dict[str, _Archetype] = {
    "energy_meter": _Archetype(
        prefix="meter",
        weight=1.2,
        size=0.8,
        rtu=0.6,
        quantities=("voltage", "voltage", "frequency", "current", "power", "power_factor"),
        core=((_m_noisy, 3, 8), (_m_group, 3, 12), (_m_counter, 2, 4), (_m_static, 10, 20)),
        extra=(
            (_m_noisy, 2),
            (_m_alarms, 1),
            (_m_counter, 1),
            (_m_status, 0.5),
            (_m_partial, 0.3),
        ),
        counters=("energy_import", "energy_import", "energy_export", "reactive_energy"),
    ),
    "pv_inverter": _Archetype(
        prefix="inverter",
        weight=1.0,
        size=2.0,
        rtu=0.2,
        quantities=("dc_voltage", "voltage", "frequency", "power", "temperature"),
        core=(
            (_m_group, 6, 20),
            (_m_noisy, 3, 6),
            (_m_counter, 1, 2),
            (_m_status, 2, 6),
            (_m_static, 15, 40),
        ),
        extra=(
            (_m_noisy, 1.5),
            (_m_drift, 1),
            (_m_alarms, 1),
            (_m_partial, 0.6),
            (_m_steps, 0.4),
            (_m_group, 0.8),
        ),
        counters=("total_yield", "total_yield", "run_hours", "operating_seconds"),
    ),
    "vfd_drive": _Archetype(
        prefix="drive",
        weight=1.0,
        size=0.8,
        rtu=0.4,
        quantities=("current", "voltage", "dc_voltage", "temperature", "vibration"),
        core=((_m_duty, 2, 4), (_m_group, 3, 6), (_m_ramp, 1, 2), (_m_static, 10, 25)),
        extra=(
            (_m_noisy, 1),
            (_m_fast, 0.6),
            (_m_alarms, 1),
            (_m_counter, 0.6),
            (_m_drift, 0.5),
            (_m_steps, 0.5),
            (_m_burst, 0.3),
        ),
        counters=("run_hours", "energy_import", "start_count", "operating_seconds"),
    ),
    "plc": _Archetype(
        prefix="plc",
        weight=1.2,
        size=1.6,
        rtu=0.15,
        quantities=("pressure", "flow", "level", "temperature", "speed"),
        core=((_m_shift, 2, 4), (_m_duty, 2, 6), (_m_counter, 1, 3), (_m_alarms, 3, 10)),
        extra=(
            (_m_noisy, 1),
            (_m_wave, 1),
            (_m_ramp, 0.8),
            (_m_steps, 0.8),
            (_m_drift, 0.8),
            (_m_group, 0.5),
            (_m_partial, 0.5),
            (_m_burst, 0.5),
            (_m_static, 0.3),
            (_m_status, 0.5),
        ),
        counters=("part_count", "part_count", "total_volume", "run_hours", "energy_import"),
    ),
    "hvac": _Archetype(
        prefix="hvac",
        weight=0.8,
        size=1.0,
        rtu=0.3,
        quantities=("temperature", "humidity", "co2", "pressure"),
        core=((_m_drift, 3, 8), (_m_steps, 2, 4), (_m_group, 3, 10), (_m_duty, 2, 4)),
        extra=(
            (_m_wave, 1),
            (_m_ramp, 1),
            (_m_alarms, 1),
            (_m_counter, 0.5),
            (_m_shift, 0.5),
            (_m_partial, 0.5),
            (_m_static, 0.3),
        ),
        counters=("energy_import", "run_hours"),
    ),
    "flow_meter": _Archetype(
        prefix="flow",
        weight=0.6,
        size=0.4,
        rtu=0.7,
        quantities=("flow", "flow", "density", "temperature", "pressure"),
        core=((_m_noisy, 2, 4), (_m_counter, 1, 2), (_m_static, 10, 14)),
        extra=(
            (_m_status, 1),
            (_m_drift, 1),
            (_m_alarms, 1),
            (_m_group, 0.4),
            (_m_wave, 0.4),
        ),
        counters=("total_volume", "total_volume", "total_mass", "operating_seconds"),
    ),
    "temp_controller": _Archetype(
        prefix="tc",
        weight=0.6,
        size=0.35,
        rtu=0.8,
        quantities=("temperature",),
        core=((_m_drift, 1, 3), (_m_steps, 1, 2), (_m_partial, 1, 2), (_m_static, 10, 12)),
        extra=((_m_alarms, 1), (_m_wave, 0.8), (_m_status, 0.6), (_m_ramp, 0.5)),
        counters=("run_hours", "operating_seconds"),
    ),
}


# ------------------------------------------------------------------ the plant
@dataclass
class _Generated:
    plant: Plant
    families: dict[str, str]
    archetypes: dict[str, str]
    driven: DrivenGroup | None = None


def _site(seed: int, rng: np.random.Generator) -> _Site:
    shifts, weekdays = _SCHEDULES[int(rng.integers(0, len(_SCHEDULES)))]
    shift = Shift(shifts, weekdays=weekdays)
    # The shift number (1, 2, 3): a new shift starts after a gap or straight after
    # another working shift; a break and the work after it keep the number.
    numbered: list[tuple[float, float, float]] = []
    no, prev_end, prev_level = 0, None, 0.0
    for a, b, level in shifts:
        if a != prev_end or (prev_level >= 0.5 and level >= 0.5):
            no += 1
        numbered.append((a, b, float(no)))
        prev_end, prev_level = b, level
    sun = Solar(
        "site/sun",
        seed,
        peak=float(rng.uniform(800, 1100)),
        sunrise=float(rng.uniform(5.0, 7.5)),
        sunset=float(rng.uniform(18.0, 21.0)),
        cloudiness=float(rng.uniform(0.1, 0.6)),
        period=float(rng.choice([2.0, 5.0, 10.0])),
    )
    outdoor = RandomWalk(
        "site/outdoor",
        seed,
        mean=float(rng.uniform(0, 25)),
        sd=3.0,
        step_sd=0.02,
        quantum=0.0,
        period=30.0,
        daily_amplitude=float(rng.uniform(2, 8)),
    )
    daylight = Shift([(sun.sunrise, sun.sunset, 1.0)], weekdays=range(7))
    return _Site(shift, Shift(numbered, weekdays=weekdays), sun, daylight, outdoor)


def _fill(d: _Dev, budget: int) -> int:
    """Draw the archetype's core modules, then extra modules until the budget is used."""
    arch = _ARCH[d.archetype]
    added = 0
    for module, lo, hi in arch.core:
        left = budget - added
        if left <= 0:
            break
        want = int(d.rng.integers(lo, hi + 1))
        if module is _m_static and left < 10:
            continue
        added += module(d, min(want, left))
    modules = [m for m, _ in arch.extra]
    weights = _norm([w for _, w in arch.extra])
    while added < budget:
        module = modules[int(d.rng.choice(len(modules), p=weights))]
        left = budget - added
        want = int(d.rng.integers(1, 9))
        if module is _m_static:
            if left < 10:
                continue
            want = max(want, 10)
        if module is _m_group and left < 3:
            continue
        added += module(d, min(want, left))
    return added


def _layout(d: _Dev) -> list[PlantTag]:
    """Addresses for the device's blocks: regions apart, holes inside blocks at the maker's rate."""
    rng = d.rng
    tags: list[PlantTag] = []
    cursor: dict[str, int] = {}
    # Most makers put measurements first and configuration last; some do otherwise.
    regions = ["measure", "status", "counter", "config"]
    if rng.random() < 0.3:
        regions = [regions[int(i)] for i in rng.permutation(len(regions))]
    blocks = sorted(d.blocks, key=lambda b: regions.index(b.region))
    for b in blocks:
        if not b.items:
            continue
        bit_table = b.table in BIT_TABLES
        span = sum(1 if bit_table else max(t.width for t in item) for item in b.items)
        room = span + (0 if b.contiguous else 30 * len(b.items))
        if b.table not in cursor:
            start = int(rng.choice([0, 0, 0, 1, 100, 1000])) if not bit_table else 0
            if b.region == "config" and rng.random() < 0.5:
                start = int(rng.choice([1000, 4000, 40000]))
        else:
            start = cursor[b.table] + int(rng.integers(0, 31))
            if rng.random() < 0.5 and b.region != "measure":
                # A new region at a round address, as register maps are organised.
                step = int(rng.choice([100, 256, 500, 1000]))
                start = (start // step + 1) * step
        if start + room > _ADDRESS_LIMIT:
            start = cursor.get(b.table, 0)
        addr = start
        for item in b.items:
            width = 1 if bit_table else max(t.width for t in item)
            for t in item:
                tags.append(PlantTag(t.name, b.table, addr, t.type, t.signal, **t.opts))
            addr += width
            if not b.contiguous and rng.random() < d.gap_p:
                addr += int(rng.choice([1, 1, 1, 2, 2, 3, 4, 5, 8, 10, 16, 20, 30]))
        cursor[b.table] = addr
    return tags


def _generate(seed: int, n_tags: int | None, *, driven: bool = False) -> _Generated:
    if seed < 0:
        raise ValueError("seed must be >= 0")
    if n_tags is not None and n_tags < 10:
        raise ValueError("a generated plant needs n_tags >= 10")
    rng = np.random.default_rng([seed, 0x6E6])
    site = _site(seed, rng)
    drawn_total = int(rng.integers(30, 151))
    total = n_tags if n_tags is not None else drawn_total
    n_dev = int(rng.integers(2, 7))
    n_dev = max(n_dev, math.ceil(total / 250))
    n_dev = min(n_dev, max(1, total // 10))
    names = list(_ARCH)
    kinds = [
        names[int(i)]
        for i in rng.choice(len(names), size=n_dev, p=_norm([_ARCH[a].weight for a in names]))
    ]
    if driven and kinds[0] not in _DRIVEN_ARCHETYPES:
        kinds[0] = str(rng.choice(_DRIVEN_ARCHETYPES[:4]))
    shares = rng.dirichlet([4.0 * _ARCH[k].size for k in kinds])

    # RS-485: about half the plants have a line with 1-3 small devices on it.
    transports = ["tcp"] * n_dev
    lines = ["line1"] * n_dev
    if n_dev >= 2 and rng.random() < 0.5:
        k = int(rng.integers(1, min(3, n_dev - 1) + 1))
        cand = list(range(1 if driven else 0, n_dev))
        p = _norm([_ARCH[kinds[i]].rtu for i in cand])
        chosen = sorted(
            int(x) for x in rng.choice(cand, size=min(k, len(cand)), replace=False, p=p)
        )
        two_lines = len(chosen) >= 2 and rng.random() < 0.25
        for j, i in enumerate(chosen):
            transports[i] = "rtu"
            lines[i] = "line2" if two_lines and j % 2 else "line1"
    budgets = [max(6, round(total * s)) for s in shares]
    # RS-485 devices are small (a slow bus); the rest goes to the TCP devices.
    cap = max(60, total // 4)
    for i in range(n_dev):
        if transports[i] == "rtu" and budgets[i] > cap:
            spill = budgets[i] - cap
            budgets[i] = cap
            tcp = [j for j in range(n_dev) if transports[j] == "tcp"]
            budgets[max(tcp, key=lambda j: budgets[j])] += spill
    if driven:
        budgets[0] = max(budgets[0], 40)

    units: dict[str, list[int]] = {}
    for line in ("line1", "line2"):
        on = [i for i in range(n_dev) if transports[i] == "rtu" and lines[i] == line]
        units[line] = [int(u) for u in rng.choice(np.arange(1, 33), size=len(on), replace=False)]

    devices: list[PlantDevice] = []
    families: dict[str, str] = {}
    archetypes: dict[str, str] = {}
    counts: dict[str, int] = {}
    info: DrivenGroup | None = None
    overshoot = 0
    for i, kind in enumerate(kinds):
        arch = _ARCH[kind]
        counts[kind] = counts.get(kind, 0) + 1
        name = f"{arch.prefix}{counts[kind]}"
        # Each device its own stream: one device's draws do not shift the next one's.
        # gen:S:TAGS keeps gen:S's device streams: the same makers, bigger maps.
        drng = np.random.default_rng([seed, 0x6E6, i + 1])
        d = _Dev(name, kind, seed, drng, site)
        # Modules overshoot a little (a group or a config block comes whole): the
        # next devices take less, so the plant total stays close to the target.
        budget = max(budgets[i] - overshoot, min(budgets[i], 4))
        used = 0
        if driven and i == 0:
            used += _m_group(d, int(drng.integers(6, 21)), min_followers=6, force_contiguous=True)
            used += _m_static(d, int(drng.integers(10, 41)))
            used += _m_fast(d, int(drng.integers(3, 6)))
        used += _fill(d, max(budget - used, 0))
        overshoot = max(overshoot + used - budgets[i], 0)
        tags = _layout(d)
        rtu = transports[i] == "rtu"
        if rtu:
            line = lines[i]
            unit = units[line].pop(0)
        else:
            line, unit = "line1", 1 if drng.random() < 0.8 else int(drng.integers(1, 248))
        mrpr = int(drng.choice([125, 125, 125, 100, 64, 60, 32]))
        max_gap = 10 if drng.random() < 0.6 else int(drng.integers(0, 21))
        dev = PlantDevice(
            name,
            unit,
            tags,
            transport="rtu" if rtu else "tcp",
            strict_gaps=bool(drng.random() < 0.3),
            line=line,
            turnaround=round(float(drng.uniform(0.003, 0.010)), 4) if rtu else 0.0,
            timeout=float(drng.choice([0.5, 1.0, 1.0, 2.0])),
            retries=int(drng.choice([1, 1, 0, 2])),
            max_registers_per_read=mrpr,
            max_gap=max_gap,
        )
        devices.append(dev)
        archetypes[name] = kind
        for b in d.blocks:
            for item in b.items:
                for t in item:
                    families[f"{name}/{t.name}"] = t.family
        if driven and i == 0:
            info = _driven_info(d)
    if driven:
        plant_name = f"{_DRIVEN_PREFIX}{seed}"
    else:
        plant_name = f"{GEN_PREFIX}{seed}" + (f":{n_tags}" if n_tags is not None else "")
    plant = Plant(plant_name, devices, seed=seed)
    return _Generated(plant, families, archetypes, info)


def _driven_info(d: _Dev) -> DrivenGroup:
    assert d.group is not None
    static = next(b for b in d.blocks if b.role == "static")
    fast = next(b for b in d.blocks if b.role == "fast")

    def paths(names: Sequence[str]) -> tuple[str, ...]:
        return tuple(f"{d.name}/{n}" for n in names)

    g = d.group
    return DrivenGroup(
        device=d.name,
        leader=f"{d.name}/{g.leader}" if g.leader else None,
        leader_signal=g.leader_signal,
        leader_kind=g.kind,
        followers=paths(g.followers),
        static=paths([t.name for item in static.items for t in item if t.type != "string"]),
        fast=paths([t.name for item in fast.items for t in item]),
    )
