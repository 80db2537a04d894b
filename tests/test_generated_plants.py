"""Tests for simulators/generated.py: seeded plants ("gen:SEED[:TAGS]") and their new signals.

Only DEV_SEEDS are used here: HELDOUT_SEEDS belong to the benchmark's report.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections import Counter as Tally
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from edgeopt.config import Config, load_config
from simulators import cli
from simulators.generated import (
    ARCHETYPES,
    DEV_SEEDS,
    FAMILIES,
    HELDOUT_SEEDS,
    device_archetypes,
    driven_group_plant,
    generated_plant,
    parse_gen_name,
    plant_families,
)
from simulators.plant import BIT_TABLES, REGISTER_TABLES, Endpoint, Plant, PlantDevice, PlantTag
from simulators.plants import build_plant
from simulators.server import PlantServer
from simulators.signals import (
    DAY,
    HOUR,
    Constant,
    Follower,
    OnOff,
    PartialFollower,
    Ramp,
    Signal,
    Sine,
    Solar,
    Triangle,
)

ROOT = Path(__file__).resolve().parent.parent
SEEDS = list(DEV_SEEDS)[:30]
WEDNESDAY_10H = 2 * DAY + 10 * HOUR


def _plants() -> list[Plant]:
    return [generated_plant(s) for s in SEEDS]


def _config(plant: Plant) -> dict[str, Any]:
    """The plant's config with TCP and RTU endpoints, as the benchmarks build it."""
    eps: dict[str, Endpoint] = dict(plant.tcp_endpoints())
    for line, devices in plant.lines().items():
        for d in devices:
            eps[d.name] = Endpoint("rtu", d.unit_id, port=f"/dev/virtual-{line}", baudrate=9600)
    return plant.to_config(eps, "./state", "./state/edgeopt.sock")


def _numeric(plant: Plant) -> list[tuple[str, PlantTag]]:
    return [(f"{d.name}/{t.name}", t) for d, t in plant.iter_tags() if t.type != "string"]


def _truth_window(tag: PlantTag, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """The tag's decoded truth at every change in [t0, t1] (like the benchmark's ground truth)."""
    assert isinstance(tag.signal, Signal)
    times = np.concatenate(([t0], tag.signal.change_times(t0, t1)))
    return times, tag.truth(times)


# ------------------------------------------------------------------ names
def test_seed_ranges_are_disjoint() -> None:
    assert set(DEV_SEEDS).isdisjoint(HELDOUT_SEEDS)
    assert len(HELDOUT_SEEDS) >= 40 and len(DEV_SEEDS) >= 30
    assert all(s in DEV_SEEDS for s in SEEDS)


def test_parse_gen_name() -> None:
    assert parse_gen_name("gen:17") == (17, None)
    assert parse_gen_name("gen:17:300") == (17, 300)
    for bad in ("demo", "gen:", "gen:x", "gen:1:", "gen:1:0", "gen:-1", "gen:1:2:3", "xgen:1"):
        assert parse_gen_name(bad) is None, bad


def test_build_plant_by_name() -> None:
    p = build_plant("gen:17")
    assert p.name == "gen:17" and p.seed == 17
    # The name alone defines the plant: the other arguments do not apply.
    q = build_plant("gen:17", seed=3, n_tags=10_000, n_devices=100)
    assert _config(q) == _config(p)
    big = build_plant("gen:3:200")
    assert big.name == "gen:3:200" and 180 <= big.n_tags <= 220
    with pytest.raises(ValueError, match="gen:SEED"):
        build_plant("gen:x")


def test_n_tags_is_approximate() -> None:
    for seed in SEEDS[:10]:
        for n in (60, 200, 500):
            got = generated_plant(seed, n).n_tags
            assert 0.85 * n <= got <= 1.15 * n + 5, (seed, n, got)
    # A bigger map of the same plant: the same makers, the same device kinds.
    small, big = generated_plant(3), generated_plant(3, 300)
    assert device_archetypes(big).items() >= device_archetypes(small).items()


# ------------------------------------------------------------ determinism
def _digest(plant: Plant) -> str:
    h = hashlib.sha256(json.dumps(_config(plant), sort_keys=True).encode())
    ts = np.arange(WEDNESDAY_10H, WEDNESDAY_10H + 2 * HOUR, 0.5)
    for _, tag in _numeric(plant):
        h.update(tag.truth(ts).tobytes())
    return h.hexdigest()


def test_deterministic_in_process() -> None:
    for seed in (0, 7, 23):
        a, b = generated_plant(seed), generated_plant(seed)
        assert _config(a) == _config(b)
        assert plant_families(a) == plant_families(b)
        for (path, ta), (_, tb) in zip(_numeric(a), _numeric(b), strict=True):
            # b is asked at other times first: its chunks are built in another order.
            tb.truth(np.array([5 * DAY, 0.0, 3 * HOUR]))
            times, truth = _truth_window(ta, WEDNESDAY_10H, WEDNESDAY_10H + 2 * HOUR)
            assert np.array_equal(truth, tb.truth(times)), path
    assert _config(generated_plant(1)) != _config(generated_plant(2))


def test_rebuilt_identically_in_another_process() -> None:
    code = (
        "import sys; sys.path.insert(0, '.'); import tests.test_generated_plants as t; "
        "from simulators.generated import generated_plant; print(t._digest(generated_plant(11)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == _digest(generated_plant(11))


# ---------------------------------------------------------- configs, sizes
def test_configs_validate_and_sizes() -> None:
    for plant in _plants():
        cfg = Config.model_validate({**_config(plant), "source": f"<plant {plant.name}>"})
        assert sum(len(d.tags) for d in cfg.devices) == plant.n_tags
        assert 2 <= len(plant.devices) <= 6, plant.name
        assert 25 <= plant.n_tags <= 165, (plant.name, plant.n_tags)
        for d in plant.devices:
            assert 1 <= d.unit_id <= 247
            assert d.max_registers_per_read <= 125 and 0 <= d.max_gap <= 124
            for t in d.tags:
                assert t.max_staleness >= t.interval > 0, (plant.name, d.name, t.name)
                assert t.min_interval is None or t.min_interval <= t.interval
                assert t.deadband >= 0 and t.priority in ("high", "normal", "low")


def test_cli_accepts_generated_plants(tmp_path: Path) -> None:
    out = tmp_path / "gen.yaml"
    assert cli.main(["config", "--plant", "gen:5", "-o", str(out)]) == 0
    cfg = load_config(out)
    assert sum(len(d.tags) for d in cfg.devices) == generated_plant(5).n_tags
    # A plant with RS-485 devices gets them in the config too (on a named line).
    rtu_seed = next(s for s in SEEDS if generated_plant(s).lines())
    assert cli.main(["config", "--plant", f"gen:{rtu_seed}:60", "-o", str(out)]) == 0
    assert any(d.transport == "rtu" for d in load_config(out).devices)
    args = cli._parser().parse_args(["serve", "--plant", "gen:5:40", "--base-port", "0"])
    assert args.plant == "gen:5:40"
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["serve", "--plant", "gen:five"])


# -------------------------------------------------------------- the truth
def test_truth_and_registers_over_two_hours() -> None:
    """Every numeric tag's truth over 2 h is what the codec decodes, and always fits its type."""
    t0 = WEDNESDAY_10H
    for plant in _plants()[:6]:
        for path, tag in _numeric(plant):
            times, truth = _truth_window(tag, t0, t0 + 2 * HOUR)
            assert np.all(np.isfinite(truth)), path
            pick = np.unique(np.linspace(0, times.size - 1, 5).astype(int))
            for i in pick.tolist():
                t = float(times[i])
                if tag.table in REGISTER_TABLES:
                    tag.encode(t)  # raises if the value overflows the register type
                assert float(tag.read_value(t)) == truth[i], path
        # And far into plant time (counters must not overflow).
        for _, tag in _numeric(plant):
            for t in (6.9 * DAY, 30 * DAY):
                if tag.table in REGISTER_TABLES:
                    tag.encode(t)


def test_truth_of_a_150_tag_plant_is_fast() -> None:
    seed = max(SEEDS, key=lambda s: generated_plant(s).n_tags)
    plant = generated_plant(seed)
    assert plant.n_tags >= 120
    t = time.perf_counter()
    changes = 0
    for _, tag in _numeric(plant):
        times, _ = _truth_window(tag, WEDNESDAY_10H, WEDNESDAY_10H + HOUR)
        changes += times.size
    elapsed = time.perf_counter() - t
    assert changes > 1000 and elapsed < 3.0, (changes, elapsed)


def _events(values: np.ndarray, deadband: float) -> int:
    """Changes that leave the deadband around the value at the previous event."""
    if values.size == 0:
        return 0
    n, ref = 0, values[0]
    for v in values[1:].tolist():
        if (abs(v - ref) > deadband) if deadband > 0 else v != ref:
            n, ref = n + 1, v
    return n


def test_most_tags_quiet_a_few_busy() -> None:
    per_hour: list[int] = []
    for plant in _plants()[:8]:
        for _, tag in _numeric(plant):
            _, truth = _truth_window(tag, WEDNESDAY_10H, WEDNESDAY_10H + HOUR)
            per_hour.append(_events(truth, tag.deadband))
    ev = np.array(per_hour)
    assert np.mean(ev < 60) > 0.5  # most tags: under one event a minute
    assert 0.02 < np.mean(ev > 1200) < 0.3  # a few: more than one every 3 s


# ------------------------------------------------------- families, layout
def test_every_family_and_archetype_appears() -> None:
    seen: Tally[str] = Tally()
    kinds: set[str] = set()
    for plant in _plants():
        fam = plant_families(plant)
        assert set(fam) == {f"{d.name}/{t.name}" for d, t in plant.iter_tags()}
        assert set(fam.values()) <= set(FAMILIES)
        seen.update(fam.values())
        kinds |= set(device_archetypes(plant).values())
    assert set(seen) == set(FAMILIES), set(FAMILIES) - set(seen)
    assert kinds == set(ARCHETYPES)
    assert plant_families(build_plant("demo")) == {}


def test_family_signals() -> None:
    """Spot checks that a family's tags are what its name says."""
    hidden_groups = exposed_groups = 0
    for plant in _plants():
        fam = plant_families(plant)
        for d in plant.devices:
            leaders = {id(t.signal) for t in d.tags if fam[f"{d.name}/{t.name}"] == "group_leader"}
            followed = set()
            for t in d.tags:
                if fam[f"{d.name}/{t.name}"] == "group_follower":
                    assert isinstance(t.signal, Follower)
                    followed.add(id(t.signal.leader))
            exposed_groups += len(followed & leaders)
            hidden_groups += len(followed - leaders)
            for t in d.tags:
                f = fam[f"{d.name}/{t.name}"]
                if f == "static":
                    assert isinstance(t.signal, Constant | str) and t.max_staleness >= 120
                if f in ("alarm", "duty_cycle") and t.type == "bool":
                    assert t.priority in ("high", "normal")
                if f == "partial":
                    assert isinstance(t.signal, PartialFollower | Follower)
    assert hidden_groups > 3 and exposed_groups > 3


def test_register_maps_are_varied() -> None:
    plants = _plants()
    devices = [d for p in plants for d in p.devices]
    tags = [t for d in devices for t in d.tags]
    types = Tally(t.type for t in tags)
    assert set(types) == {
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "float32",
        "float64",
        "string",
        "bool",
    }
    assert types["float64"] + types["int64"] + types["uint64"] + types["string"] < 0.1 * len(tags)
    assert any(t.word_order == "little" for t in tags if t.width == 2)
    assert {0.1, 0.01} <= {t.scale for t in tags}
    assert any(t.bit is not None and t.table == "holding" for t in tags)
    assert {t.table for t in tags} == {"holding", "input", "coil", "discrete"}
    assert any(d.strict_gaps for d in devices) and not all(d.strict_gaps for d in devices)
    assert any(d.max_registers_per_read < 125 for d in devices)
    assert any(d.max_gap != 10 for d in devices)
    # Holes of 1..30 registers between neighbouring tags of a block.
    holes: Tally[int] = Tally()
    for d in devices:
        for table in REGISTER_TABLES:
            slots = d.slots(table)
            for a, b in itertools.pairwise(slots):
                holes[b.address - (a.address + a.width)] += 1
    assert holes[0] > sum(v for k, v in holes.items() if k > 0)  # mostly contiguous
    assert any(0 < k <= 30 for k in holes)


def test_rtu_lines() -> None:
    plants = [generated_plant(s) for s in DEV_SEEDS]
    with_rtu = [p for p in plants if p.lines()]
    assert 0.35 <= len(with_rtu) / len(plants) <= 0.65
    assert any(len(devs) >= 2 for p in with_rtu for devs in p.lines().values())
    for p in with_rtu:
        assert any(d.transport == "tcp" for d in p.devices)
        for devs in p.lines().values():
            assert len({d.unit_id for d in devs}) == len(devs)
            assert all(0.003 <= d.turnaround <= 0.010 for d in devs)


def test_timing_as_integrators_set_it() -> None:
    tags = [t for p in _plants() for _, t in p.iter_tags()]
    intervals = Tally(t.interval for t in tags)
    assert intervals[1.0] > 0.4 * len(tags)
    assert intervals[0.5] > 0.05 * len(tags) and intervals[5.0] > 0.05 * len(tags)
    prios = Tally(t.priority for t in tags)
    assert prios["normal"] > prios["high"] > 0 and prios["low"] > 0
    stale = np.array([t.max_staleness for t in tags])
    assert stale.min() >= 2.0 and stale.max() >= 300


# ---------------------------------------------------------- driven groups
def test_driven_group_plant() -> None:
    for seed in SEEDS[:10]:
        plant, g = driven_group_plant(seed)
        assert plant.name == f"gen-driven:{seed}"
        dev = plant.device(g.device)
        assert dev.transport == "tcp"
        followers = [plant.tag(p) for p in g.followers]
        assert len(followers) >= 6 and len({t.table for t in followers}) == 1
        for a, b in itertools.pairwise(followers):
            assert b.address == a.address + a.width  # contiguous
        for t in followers:
            assert isinstance(t.signal, Follower) and t.signal.leader is g.leader_signal
        if g.leader is not None:
            assert plant.tag(g.leader).signal is g.leader_signal
        static = [plant.tag(p) for p in g.static]
        assert len(static) >= 10
        for a, b in itertools.pairwise(static):
            assert b.address == a.address + a.width and a.table == b.table
        assert all(isinstance(t.signal, Constant) and t.max_staleness >= 120 for t in static)
        assert 3 <= len(g.fast) <= 5
        for p in g.fast:
            t = plant.tag(p)
            assert t.width == 1
            _, truth = _truth_window(t, WEDNESDAY_10H, WEDNESDAY_10H + 600)
            assert _events(truth, t.deadband) > 100, p
        fam = plant_families(plant)
        assert {fam[p] for p in g.followers} == {"group_follower"}
        assert {fam[p] for p in g.static} == {"static"}
        Config.model_validate({**_config(plant), "source": "<driven>"})
    # Both cases occur: the common signal hidden, and exposed as a tag.
    leaders = {driven_group_plant(s)[1].leader is None for s in SEEDS[:10]}
    assert leaders == {True, False}


# ---------------------------------------------------------------- signals
def _new_signals(seed: int = 1) -> dict[str, Signal]:
    sun = Solar("sun", seed)
    coupled = OnOff("coupled", seed, rate_per_hour=1.0, duty=0.6, initial=1.0)
    return {
        "sine": Sine(
            "s", seed, wave_period=900, amplitude=10, mean=50, noise_sd=0.1, quantum=0.1, period=2
        ),
        "triangle": Triangle(
            "t", seed, wave_period=300, amplitude=5, mean=5, quantum=0.1, gate=coupled, idle=0
        ),
        "ramp": Ramp(
            "r", seed, levels=(0, 20, 50, 100), rate_per_hour=1.0, slope=0.2, resolution=2.0
        ),
        "ramp_busy": Ramp(
            "r2", seed, levels=(0, 50, 100), rate_per_hour=30.0, slope=0.05, quantum=0.5
        ),
        "partial": PartialFollower(
            "p", seed, leader=sun, coupled=coupled, gain=0.01, noise_sd=0.02, quantum=0.01
        ),
    }


@pytest.mark.parametrize("kind", list(_new_signals()))
def test_new_signals_are_consistent(kind: str) -> None:
    sig = _new_signals()[kind]
    rng = np.random.default_rng(0)
    ts = np.concatenate(
        [rng.uniform(-100, 3 * DAY, 2000), np.arange(0, 3 * DAY, sig.chunk), [DAY, 2 * DAY]]
    )
    assert np.array_equal(sig.values(ts), np.array([sig.value(float(t)) for t in ts]))
    other = _new_signals()[kind]
    assert np.array_equal(sig.values(ts), other.values(ts[::-1])[::-1])
    t0, t1 = 0.5 * DAY, 2.2 * DAY
    ct = sig.change_times(t0, t1)
    assert ct.size and np.all(np.diff(ct) > 0)
    assert np.all(sig.values(ct) != sig.values(np.nextafter(ct, -np.inf)))
    dense = np.sort(rng.uniform(t0, t1, 20000))
    idx = np.searchsorted(ct, dense, side="right") - 1
    anchors = np.where(idx >= 0, np.append(ct, t0)[idx], t0)
    assert np.array_equal(sig.values(dense), sig.values(anchors))
    mid = 1.3 * DAY
    assert np.array_equal(
        ct, np.concatenate([sig.change_times(t0, mid), sig.change_times(mid, t1)])
    )


def test_new_signal_shapes() -> None:
    s = _new_signals()
    ts = np.arange(0, 2 * DAY, 1.0)
    sine = s["sine"].values(ts)
    assert 39 <= sine.min() < 41 and 59 < sine.max() <= 61
    tri, gate = s["triangle"].values(ts), s["triangle"].gate
    assert gate is not None
    off = gate.values(ts) == 0
    assert off.any() and np.all(tri[off] == 0) and tri[~off].max() > 9
    # A ramp moves in small steps between its targets and rests on them.
    ramp = s["ramp"]
    assert isinstance(ramp, Ramp)
    r = ramp.values(np.arange(0, 3 * DAY, 2.0))
    steps = np.abs(np.diff(r))
    # (Steeper only when the next target comes before the ramp ends.)
    assert np.median(steps[steps > 0]) <= 0.2 * 2.0 + 1e-9
    assert {0.0, 20.0, 50.0, 100.0} < set(np.unique(r).tolist())
    # The partial follower tracks the sun while coupled and wanders otherwise.
    p, sun = s["partial"], Solar("sun", 1)
    assert isinstance(p, PartialFollower)
    t5 = np.arange(0, 3 * DAY, 5.0)
    day = (t5 % DAY > 8 * HOUR) & (t5 % DAY < 18 * HOUR)
    coupled = p.coupled.values(t5) != 0
    dl, dp = np.diff(sun.values(t5)), np.diff(p.values(t5))
    on = (day & coupled)[1:] & (day & coupled)[:-1]
    off = (day & ~coupled)[1:] & (day & ~coupled)[:-1]
    assert on.sum() > 100 and off.sum() > 100
    assert np.corrcoef(dl[on], dp[on])[0, 1] > 0.8
    assert abs(np.corrcoef(dl[off], dp[off])[0, 1]) < 0.3


# ------------------------------------------------------------ real sockets
def _candidates(tag: PlantTag, t0: float, t1: float) -> set[Any]:
    if isinstance(tag.signal, str):
        return {tag.signal}
    times = [t0, *tag.signal.change_times(t0, t1).tolist()]
    return {tag.read_value(t) for t in times}


async def _read(client: Any, tag: PlantTag, unit: int) -> Any:
    fn = {
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
    }[tag.table]
    r = await fn(tag.address, count=tag.width, device_id=unit)
    assert not r.isError(), (tag.name, r)
    return bool(r.bits[0]) if tag.table in BIT_TABLES else tag.codec.decode(r.registers)


def _loosely_equal(got: Any, want: set[Any]) -> bool:
    if got in want:
        return True
    # Loosely: a read may straddle a refresh the change list rounds differently.
    nums = [w for w in want if isinstance(w, float | int) and not isinstance(w, bool)]
    return isinstance(got, float) and any(abs(got - w) <= 1e-6 * max(1.0, abs(w)) for w in nums)


async def test_serve_generated_plant_over_modbus() -> None:
    # A plant with TCP devices, an RS-485 line and a strict-gaps TCP device.
    seed = next(
        s
        for s in SEEDS
        if (p := generated_plant(s)).lines()
        and any(d.transport == "tcp" and _strict_hole(d) for d in p.devices)
    )
    plant = generated_plant(seed)
    holes = 0
    clock = time.time() - WEDNESDAY_10H
    async with PlantServer(plant, base_port=0, clock_start=clock, baudrate=None) as srv:
        checked = 0
        for dev in plant.devices:
            ep = srv.endpoints[dev.name]
            client: Any
            if dev.transport == "tcp":
                client = AsyncModbusTcpClient(str(ep.host), port=int(ep.port or 0), timeout=2)
                tags = dev.tags
            else:
                client = AsyncModbusSerialClient(port=str(ep.port), baudrate=9600, timeout=2)
                tags = dev.tags[:4]
            assert await client.connect()
            try:
                for tag in tags:
                    t0 = srv.plant_time()
                    got = await _read(client, tag, dev.unit_id)
                    want = _candidates(tag, t0, srv.plant_time())
                    assert _loosely_equal(got, want), (dev.name, tag.name, got, want)
                    checked += 1
                hole = _strict_hole(dev) if dev.transport == "tcp" else None
                if hole is not None:
                    # A read across a hole of a strict-gaps device: ILLEGAL DATA ADDRESS.
                    table, start, count = hole
                    fn = client.read_holding_registers
                    if table == "input":
                        fn = client.read_input_registers
                    r = await fn(start, count=count, device_id=dev.unit_id)
                    assert r.isError() and r.exception_code == 2
                    holes += 1
            finally:
                client.close()
        assert checked >= 20 and holes >= 1


def _strict_hole(dev: PlantDevice) -> tuple[str, int, int] | None:
    """(table, start, count) of a read across a hole, on a strict-gaps device."""
    if not dev.strict_gaps:
        return None
    for table in REGISTER_TABLES:
        for a, b in itertools.pairwise(dev.slots(table)):
            end = b.address + b.width
            if b.address > a.address + a.width and end - a.address <= 100:
                return table, a.address, end - a.address
    return None
