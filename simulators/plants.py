"""Plant builders: the demo plant, a large generated plant, and a plant with weekly shift patterns.

Register maps, types, rates and deadbands are modelled on real devices (an
energy meter, a PV inverter, a drive, a process PLC), so that the optimizer
meets the unevenness of a real plant: a few fast tags, many quiet ones, and
groups that move together.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .generated import generated_plant, parse_gen_name
from .plant import Plant, PlantDevice, PlantTag
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
    RandomWalk,
    Shift,
    Signal,
    Sine,
    Solar,
    Steps,
)

__all__ = [
    "GEN_PLANTS",
    "PLANTS",
    "build_plant",
    "demo_plant",
    "large_plant",
    "types_plant",
    "week_plant",
]

# Polling presets, as a user would write them (seconds).
CONTROL: dict[str, Any] = {
    "interval": 0.5,
    "min_interval": 0.2,
    "max_staleness": 5.0,
    "priority": "high",
}
FAST: dict[str, Any] = {"interval": 1.0, "min_interval": 0.5, "max_staleness": 10.0}
ALARM: dict[str, Any] = {"interval": 1.0, "max_staleness": 5.0, "priority": "high"}
SLOW: dict[str, Any] = {"interval": 5.0, "max_staleness": 60.0}
COUNTER: dict[str, Any] = {"interval": 10.0, "max_staleness": 60.0}
CONFIG: dict[str, Any] = {"interval": 60.0, "max_staleness": 600.0, "priority": "low"}

# The demo wants to show the optimizer at work within minutes.
DEMO_OPTIMIZER: dict[str, Any] = {
    "optimizer": {
        "enabled": True,
        "quick_every": "1m",
        "full_every": "10m",
        "evaluate_after": "2m",
    }
}

WEEKDAYS = (0, 1, 2, 3, 4)


def _above(threshold: float) -> Any:
    return lambda x: (x > threshold).astype(np.float64)


def _below(threshold: float) -> Any:
    return lambda x: (x < threshold).astype(np.float64)


def demo_plant(seed: int = 1, *, break_at: float | None = None) -> Plant:
    """Four TCP devices, 62 tags: meter1, inverter1, drive1, plc1 (strict gaps).

    break_at: plant time at which inverter1/string_current_4 stops following
    the irradiance (for testing cluster triggers); None keeps it correlated.
    """
    s = seed

    def k(path: str) -> tuple[str, int]:
        return path, s

    # Shared physics: the factory works two shifts on weekdays and a
    # Saturday morning; the sun shines on everyone.
    shift = Combine(
        np.maximum,
        Shift([(6, 14, 1.0), (14, 22, 0.8)], weekdays=WEEKDAYS),
        Shift([(6, 12, 0.5)], weekdays=(5,)),
    )
    sun = Solar(*k("site/irradiance"), peak=1000.0, cloudiness=0.35, noise=0.01, period=5.0)
    permit = OnOff(*k("drive1/permit"), rate_per_hour=3.0, duty=0.75, initial=1.0)
    run = Combine(lambda p, sh: p * (sh > 0), permit, shift)
    speed_sp = Steps(*k("drive1/speed_sp"), levels=(1200, 1350, 1450, 1480), rate_per_hour=0.2)
    pump1 = Combine(
        lambda p, sh: p * (sh > 0),
        OnOff(*k("plc1/pump1"), rate_per_hour=2.0, duty=0.8, initial=1.0),
        shift,
    )
    pump2 = OnOff(*k("plc1/pump2"), rate_per_hour=1.0, duty=0.3)
    heater = OnOff(*k("plc1/heater1"), rate_per_hour=4.0, duty=0.4)

    # ---------------------------------------------------------------- drive1
    speed = NoisyAnalog(
        *k("drive1/speed"),
        base=Combine(np.multiply, run, speed_sp),
        noise_sd=2.0,
        quantum=1.0,
        period=0.5,
        lo=0.0,
    )
    fault = OnOff(*k("drive1/fault"), rate_per_hour=0.05, duty=0.05)
    drive = PlantDevice(
        "drive1",
        1,
        [
            PlantTag("run_command", "coil", 0, "bool", run, **ALARM),
            PlantTag("reverse", "coil", 1, "bool", Constant(0), **CONFIG),
            PlantTag("fault_reset", "coil", 2, "bool", Constant(0), **CONFIG),
            PlantTag("running", "discrete", 0, "bool", run, **ALARM),
            PlantTag("fault", "discrete", 1, "bool", fault, **ALARM),
            PlantTag("speed", "holding", 0, "uint16", speed, deadband=10.0, unit="rpm", **CONTROL),
            PlantTag(
                "motor_current",
                "holding",
                1,
                "uint16",
                Follower(*k("drive1/current"), leader=speed, gain=0.02, noise_sd=0.1, quantum=0.1),
                scale=0.1,
                deadband=0.5,
                unit="A",
                **CONTROL,
            ),
            PlantTag(
                "torque",
                "holding",
                2,
                "int16",
                Follower(*k("drive1/torque"), leader=speed, gain=0.045, noise_sd=0.8, quantum=0.1),
                scale=0.1,
                deadband=2.0,
                unit="%",
                **FAST,
            ),
            PlantTag(
                "dc_bus_voltage",
                "holding",
                3,
                "uint16",
                NoisyAnalog(*k("drive1/dc_bus"), base=565.0, noise_sd=1.0, quantum=0.1, period=1.0),
                scale=0.1,
                deadband=5.0,
                unit="V",
                **FAST,
            ),
            PlantTag(
                "run_hours",
                "holding",
                4,
                "uint32",
                Counter(
                    *k("drive1/run_hours"), source=run, gain=1 / HOUR, quantum=0.1, initial=12840.0
                ),
                scale=0.1,
                unit="h",
                interval=60.0,
                max_staleness=600.0,
            ),
            PlantTag(
                "motor_temp",
                "holding",
                6,
                "int16",
                RandomWalk(*k("drive1/motor_temp"), mean=55.0, sd=4.0, step_sd=0.03, period=10.0),
                scale=0.1,
                deadband=1.0,
                unit="°C",
                **SLOW,
            ),
            PlantTag("speed_setpoint", "holding", 100, "uint16", speed_sp, unit="rpm", **COUNTER),
            PlantTag(
                "accel_time", "holding", 101, "uint16", Constant(5.0), scale=0.1, unit="s", **CONFIG
            ),
            PlantTag("ready", "holding", 200, "bool", Constant(1), bit=0, **ALARM),
            PlantTag("status_running", "holding", 200, "bool", run, bit=1, **ALARM),
            PlantTag("status_fault", "holding", 200, "bool", fault, bit=3, **ALARM),
        ],
    )

    # ---------------------------------------------------------------- meter1
    # Counters integrate the noise-free load: the same energy to within the
    # noise, and an event signal integrates in O(changes), not O(seconds),
    # when a server starts days into plant time.
    load_base = Combine(lambda sh, r: 18.0 + 55.0 * sh + 42.0 * r, shift, run)
    load = NoisyAnalog(
        *k("meter1/active_power"),
        base=load_base,
        noise_sd=0.4,
        quantum=0.01,
        period=1.0,
    )
    ac_power = Follower(
        *k("inverter1/ac_power"), leader=sun, gain=48.0, noise_sd=30.0, quantum=1.0, lo=0.0
    )
    # Export and yield integrate the sun (not the noisy inverter power): see load_base.
    export = Combine(lambda sun_w, ld: np.maximum(sun_w * 0.048 - ld, 0.0), sun, load_base)
    meter_tags = [
        PlantTag(
            f"voltage_l{i}",
            "input",
            2 * (i - 1),
            "float32",
            NoisyAnalog(
                *k(f"meter1/voltage_l{i}"),
                base=RandomWalk(
                    *k(f"meter1/grid_l{i}"), mean=231.0, sd=1.5, step_sd=0.05, quantum=0.0
                ),
                noise_sd=0.2,
                quantum=0.1,
                period=1.0,
            ),
            word_order="little",
            deadband=1.0,
            unit="V",
            **FAST,
        )
        for i in (1, 2, 3)
    ]
    meter_tags += [
        PlantTag(
            f"current_l{i}",
            "input",
            6 + 2 * (i - 1),
            "float32",
            Follower(
                *k(f"meter1/current_l{i}"), leader=load, gain=1.52, noise_sd=0.05, quantum=0.01
            ),
            word_order="little",
            deadband=0.5,
            unit="A",
            **FAST,
        )
        for i in (1, 2, 3)
    ]
    meter_tags += [
        PlantTag(
            "active_power",
            "input",
            12,
            "float32",
            load,
            word_order="little",
            deadband=1.0,
            unit="kW",
            **FAST,
        ),
        PlantTag(
            "frequency",
            "input",
            18,
            "float32",
            NoisyAnalog(*k("meter1/frequency"), base=50.0, noise_sd=0.01, quantum=0.01, period=1.0),
            word_order="little",
            deadband=0.05,
            unit="Hz",
            **FAST,
        ),
        PlantTag(
            "energy_import",
            "input",
            256,
            "uint32",
            Counter(
                *k("meter1/energy_import"),
                source=load_base,
                gain=1 / HOUR,
                quantum=0.01,
                initial=123456.78,
            ),
            scale=0.01,
            deadband=1.0,
            unit="kWh",
            **COUNTER,
        ),
        PlantTag(
            "energy_export",
            "input",
            258,
            "uint32",
            Counter(
                *k("meter1/energy_export"),
                source=export,
                gain=1 / HOUR,
                quantum=0.01,
                initial=8021.5,
            ),
            scale=0.01,
            deadband=1.0,
            unit="kWh",
            **COUNTER,
        ),
        PlantTag("serial_number", "holding", 1000, "string", "EM340-2219-0457", length=8, **CONFIG),
        PlantTag("ct_ratio", "holding", 1008, "uint16", Constant(200), **CONFIG),
        PlantTag("phase_sequence_ok", "holding", 1020, "bool", Constant(1), bit=0, **ALARM),
        PlantTag(
            "exporting", "holding", 1020, "bool", Combine(_above(0.0), export), bit=2, **ALARM
        ),
        PlantTag(
            "tamper",
            "holding",
            1020,
            "bool",
            OnOff(*k("meter1/tamper"), rate_per_hour=0.02, duty=0.02),
            bit=8,
            **ALARM,
        ),
    ]
    meter = PlantDevice("meter1", 1, meter_tags)

    # ------------------------------------------------------------- inverter1
    temp_inv = RandomWalk(
        *k("inverter1/temp"),
        mean=38.0,
        sd=2.0,
        step_sd=0.03,
        period=10.0,
        daily_amplitude=8.0,
        peak_hour=14.0,
    )
    power_limit = Steps(
        *k("inverter1/power_limit"),
        levels=(100, 70, 50),
        weights=(0.8, 0.15, 0.05),
        rate_per_hour=0.1,
    )
    strings = [
        PlantTag(
            f"string_current_{i}",
            "input",
            9 + i,
            "uint16",
            Follower(
                *k(f"inverter1/string_{i}"),
                leader=sun,
                gain=0.0095 * (1.0 + 0.02 * (i - 2.5)),
                noise_sd=0.02,
                quantum=0.01,
                break_at=break_at if i == 4 else None,
            ),
            scale=0.01,
            deadband=0.1,
            unit="A",
            **FAST,
        )
        for i in (1, 2, 3, 4)
    ]
    inverter = PlantDevice(
        "inverter1",
        1,
        [
            PlantTag("irradiance", "input", 0, "uint16", sun, deadband=10.0, unit="W/m²", **FAST),
            PlantTag("ac_power", "input", 1, "int32", ac_power, deadband=200.0, unit="W", **FAST),
            PlantTag(
                "dc_voltage",
                "input",
                3,
                "uint16",
                NoisyAnalog(
                    *k("inverter1/dc_voltage"),
                    base=Combine(lambda x: np.where(x > 0, 580.0 + 0.04 * x, 0.0), sun),
                    noise_sd=0.5,
                    quantum=0.1,
                    period=5.0,
                ),
                scale=0.1,
                deadband=5.0,
                unit="V",
                **FAST,
            ),
            *strings,
            PlantTag(
                "inverter_temp",
                "input",
                20,
                "int16",
                temp_inv,
                scale=0.1,
                deadband=0.5,
                unit="°C",
                **SLOW,
            ),
            PlantTag(
                "total_yield",
                "input",
                21,
                "uint32",
                Counter(
                    *k("inverter1/yield"),
                    source=sun,
                    gain=0.048 / HOUR,
                    quantum=0.1,
                    initial=84211.3,
                ),
                scale=0.1,
                deadband=1.0,
                unit="kWh",
                **COUNTER,
            ),
            PlantTag(
                "operating_state",
                "input",
                23,
                "uint16",
                Combine(lambda x: np.where(x > 0, 4.0, 1.0), sun),
                **SLOW,
            ),
            PlantTag(
                "serial_number", "holding", 40000, "string", "SI-5K-77310042", length=10, **CONFIG
            ),
            PlantTag("power_limit", "holding", 40010, "uint16", power_limit, unit="%", **COUNTER),
            PlantTag(
                "grid_connected",
                "holding",
                40020,
                "bool",
                Combine(_above(0.0), sun),
                bit=0,
                **ALARM,
            ),
            PlantTag(
                "derating",
                "holding",
                40020,
                "bool",
                Combine(_below(100.0), power_limit),
                bit=1,
                **ALARM,
            ),
            PlantTag(
                "fan_on", "holding", 40020, "bool", Combine(_above(42.0), temp_inv), bit=4, **ALARM
            ),
        ],
    )

    # ------------------------------------------------------------------ plc1
    level = RandomWalk(
        *k("plc1/tank1_level"), mean=60.0, sd=15.0, step_sd=0.2, period=2.0, lo=0.0, hi=100.0
    )
    flow_base = Combine(lambda a, b: 12.0 * a + 7.5 * b, pump1, pump2)
    flow = NoisyAnalog(
        *k("plc1/flow"),
        base=flow_base,
        noise_sd=0.3,
        quantum=0.01,
        period=1.0,
        lo=0.0,
    )
    plc = PlantDevice(
        "plc1",
        1,
        strict_gaps=True,
        tags=[
            PlantTag(
                "tank1_temp",
                "input",
                0,
                "int16",
                RandomWalk(*k("plc1/tank1_temp"), mean=65.0, sd=1.5, step_sd=0.02, period=5.0),
                scale=0.1,
                deadband=0.5,
                unit="°C",
                **SLOW,
            ),
            PlantTag(
                "tank2_temp",
                "input",
                1,
                "int16",
                RandomWalk(*k("plc1/tank2_temp"), mean=42.0, sd=1.0, step_sd=0.02, period=5.0),
                scale=0.1,
                deadband=0.5,
                unit="°C",
                **SLOW,
            ),
            PlantTag(
                "tank1_level",
                "input",
                2,
                "uint16",
                level,
                scale=0.1,
                deadband=1.0,
                unit="%",
                **SLOW,
            ),
            PlantTag("flow_rate", "input", 4, "float32", flow, deadband=0.5, unit="m³/h", **FAST),
            PlantTag(
                "line_pressure",
                "input",
                6,
                "float32",
                Follower(
                    *k("plc1/pressure"),
                    leader=flow,
                    gain=0.08,
                    offset=1.0,
                    noise_sd=0.02,
                    quantum=0.001,
                ),
                word_order="little",
                deadband=0.05,
                unit="bar",
                **FAST,
            ),
            PlantTag(
                "vibration",
                "input",
                10,
                "uint16",
                Burst(
                    *k("plc1/vibration"),
                    base=0.8,
                    windows=[(10 * HOUR, 10.25 * HOUR)],
                    repeat=DAY,
                    noise_sd=1.5,
                    quantum=0.01,
                    lo=0.0,
                ),
                scale=0.01,
                deadband=0.2,
                unit="mm/s",
                **FAST,
            ),
            PlantTag(
                "tank1_temp_sp",
                "holding",
                100,
                "int16",
                Steps(*k("plc1/tank1_temp_sp"), levels=(60, 65, 70), rate_per_hour=0.1, initial=65),
                scale=0.1,
                unit="°C",
                **COUNTER,
            ),
            PlantTag(
                "level_sp",
                "holding",
                102,
                "uint16",
                Steps(*k("plc1/level_sp"), levels=(50, 60, 70), rate_per_hour=0.05, initial=60),
                scale=0.1,
                unit="%",
                **COUNTER,
            ),
            PlantTag(
                "batch_count",
                "holding",
                200,
                "uint32",
                Counter(
                    *k("plc1/batches"),
                    source=Combine(_above(0.0), shift),
                    gain=1 / 1800,
                    quantum=1.0,
                ),
                **COUNTER,
            ),
            PlantTag(
                "total_volume",
                "holding",
                204,
                "float64",
                Counter(
                    *k("plc1/volume"),
                    source=flow_base,
                    gain=1 / HOUR,
                    quantum=0.001,
                    initial=51234.0,
                ),
                deadband=0.1,
                unit="m³",
                **COUNTER,
            ),
            PlantTag(
                "uptime",
                "holding",
                210,
                "int64",
                Counter(*k("plc1/uptime"), source=1.0, gain=1.0, quantum=1.0, initial=8_640_000.0),
                deadband=60.0,
                unit="s",
                **CONFIG,
            ),
            PlantTag("pump1", "coil", 0, "bool", pump1, **ALARM),
            PlantTag("pump2", "coil", 1, "bool", pump2, **ALARM),
            PlantTag("heater1", "coil", 2, "bool", heater, **ALARM),
            PlantTag("alarm_ack", "coil", 16, "bool", Constant(0), **CONFIG),
            PlantTag("level_high", "discrete", 0, "bool", Combine(_above(85.0), level), **ALARM),
            PlantTag("level_low", "discrete", 1, "bool", Combine(_below(15.0), level), **ALARM),
            PlantTag(
                "door_open",
                "discrete",
                2,
                "bool",
                OnOff(*k("plc1/door"), rate_per_hour=0.2, duty=0.05),
                **ALARM,
            ),
        ],
    )
    return Plant(
        "demo", [meter, inverter, drive, plc], seed=seed, config_extra=dict(DEMO_OPTIMIZER)
    )


# ------------------------------------------------------------------ large plant
_MEASURE_TYPES = (("float32", 2), ("int16", 1), ("uint16", 1), ("int32", 2))


def large_plant(n_tags: int = 10_000, n_devices: int = 100, seed: int = 7) -> Plant:
    """A generated plant of n_tags over n_devices TCP devices, up to 20k tags / 200 devices.

    Every device has: a measurement block in the input registers from 0
    (fast analogs, followers of a device-level process signal, slow walks,
    shift- and sun-driven values) with gaps between groups; counters in
    holding 1000+; status words with alarm bits after them; a slow config
    block (constants and rare setpoint changes) in holding 40000+; and
    coils/discrete inputs. About 1 in 10 devices has strict gaps.
    """
    if n_devices < 1 or n_tags < n_devices:
        raise ValueError("need n_devices >= 1 and n_tags >= n_devices")
    rng = np.random.default_rng(seed)
    sun = Solar("site/sun", seed, period=5.0)
    shifts = [
        Shift([(6, 14, 1.0), (14, 22, 0.8), (22, 6, 0.5)], weekdays=WEEKDAYS),
        Shift([(6, 14, 1.0), (14, 22, 1.0)], weekdays=(0, 1, 2, 3, 4, 5)),
        Shift([(7, 19, 1.0)], weekdays=range(7)),
    ]
    per_dev = [n_tags // n_devices + (1 if i < n_tags % n_devices else 0) for i in range(n_devices)]
    devices = [
        _large_device(f"dev{i:03d}", per_dev[i], seed, rng, sun, shifts) for i in range(n_devices)
    ]
    return Plant(f"large-{n_tags}x{n_devices}", devices, seed=seed)


def _large_device(
    name: str,
    n: int,
    seed: int,
    rng: np.random.Generator,
    sun: Signal,
    shifts: list[Shift],
) -> PlantDevice:
    def key(tag: str) -> tuple[str, int]:
        return f"{name}/{tag}", seed

    # The device's process: what its followers move with.
    # Counters integrate the noise-free `process_base`, which is cheap to
    # integrate from plant time 0 however late the server starts.
    kind = int(rng.integers(0, 3))
    if kind == 0:
        process: Signal = sun
        process_base: Signal = sun
    elif kind == 1:
        process = process_base = Combine(
            lambda p, sh: p * sh,
            OnOff(*key("permit"), rate_per_hour=float(rng.uniform(0.5, 4)), duty=0.8, initial=1.0),
            shifts[int(rng.integers(0, len(shifts)))],
        )
    else:
        process_base = RandomWalk(
            *key("process_level"), mean=50.0, sd=10.0, step_sd=0.5, quantum=0.0, period=5.0
        )
        process = NoisyAnalog(
            *key("process"), base=process_base, noise_sd=0.5, quantum=0.1, period=1.0
        )
    scale_ref = 1000.0 if kind == 0 else 1.0 if kind == 1 else 50.0

    counts = {"measure": 0.45, "counter": 0.08, "bits": 0.12, "config": 0.20, "coil": 0.08}
    n_meas = max(1, round(n * counts["measure"]))
    n_cnt = round(n * counts["counter"])
    n_bits = round(n * counts["bits"])
    n_cfg = round(n * counts["config"])
    n_coil = round(n * counts["coil"])
    n_disc = n - n_meas - n_cnt - n_bits - n_cfg - n_coil
    if n_disc < 0:
        n_cfg += n_disc
        n_disc = 0
    tags: list[PlantTag] = []

    # Measurements: groups of 4..16 tags, gaps of 0..20 registers between.
    addr, left_in_group = 0, int(rng.integers(4, 17))
    for j in range(n_meas):
        if left_in_group == 0:
            addr += int(rng.integers(0, 21))
            left_in_group = int(rng.integers(4, 17))
        left_in_group -= 1
        typ, width = _MEASURE_TYPES[int(rng.integers(0, len(_MEASURE_TYPES)))]
        behaviour = int(rng.integers(0, 4))
        tname = f"m{j:04d}"
        if behaviour == 0:  # follower of the process
            gain = float(rng.uniform(0.5, 2.0)) * 100.0 / scale_ref
            sig: Signal = Follower(
                *key(tname), leader=process, gain=gain, noise_sd=0.05, quantum=0.1, lo=0.0
            )
            deadband, preset = 0.5, FAST
        elif behaviour == 1:  # fast noisy analog
            mean = float(rng.uniform(20, 400))
            sig = NoisyAnalog(
                *key(tname), base=mean, noise_sd=mean * 0.002, quantum=0.1, period=1.0
            )
            deadband, preset = round(mean * 0.01, 1), FAST
        elif behaviour == 2:  # slow walk (temperature, level)
            sig = RandomWalk(
                *key(tname),
                mean=float(rng.uniform(20, 80)),
                sd=2.0,
                step_sd=0.02,
                period=10.0,
                daily_amplitude=float(rng.uniform(0, 3)),
            )
            deadband, preset = 0.5, SLOW
        else:  # burst: quiet most of the time
            start = float(rng.uniform(0, DAY - HOUR))
            sig = Burst(
                *key(tname),
                base=float(rng.uniform(0.5, 5)),
                windows=[(start, start + float(rng.uniform(300, 1800)))],
                repeat=DAY,
                noise_sd=1.0,
                quantum=0.1,
                lo=0.0,
            )
            deadband, preset = 0.3, FAST
        scale = 1.0 if typ in ("float32",) else 0.1
        tags.append(
            PlantTag(tname, "input", addr, typ, sig, scale=scale, deadband=deadband, **preset)
        )
        addr += width

    # Counters in holding 1000+.
    addr = 1000
    for j in range(n_cnt):
        tname = f"c{j:03d}"
        src: Signal | float = process_base if j % 2 == 0 else float(rng.uniform(0.5, 5))
        gain = (1.0 / HOUR) * (100.0 / scale_ref if j % 2 == 0 else 1.0)
        sig = Counter(
            *key(tname), source=src, gain=gain, quantum=0.1, initial=float(rng.uniform(0, 1e5))
        )
        tags.append(
            PlantTag(tname, "holding", addr, "uint32", sig, scale=0.1, deadband=1.0, **COUNTER)
        )
        addr += 2 + int(rng.integers(0, 3))

    # Status words: 16 alarm/state bits each, after the counters.
    addr = (addr // 100 + 1) * 100
    for j in range(n_bits):
        tname = f"b{j:03d}"
        if j % 4 == 0:
            sig = Combine(_above(0.0), process)
        else:
            sig = OnOff(*key(tname), rate_per_hour=float(rng.uniform(0.01, 0.5)), duty=0.1)
        tags.append(PlantTag(tname, "holding", addr + j // 16, "bool", sig, bit=j % 16, **ALARM))

    # Config block: constants and rare setpoint changes.
    addr = 40000
    for j in range(n_cfg):
        tname = f"p{j:04d}"
        if j % 5 == 0:
            base = float(rng.integers(10, 500))
            # Whole numbers: the truth must be what a uint16 register can say.
            levels = (base, float(round(base * 1.1)), float(round(base * 0.9)))
            sig = Steps(*key(tname), levels=levels, rate_per_hour=0.05, initial=base)
        else:
            sig = Constant(float(rng.integers(0, 1000)))
        tags.append(PlantTag(tname, "holding", addr, "uint16", sig, **CONFIG))
        addr += 1 + (1 if rng.random() < 0.1 else 0)

    for j in range(n_coil):
        tname = f"q{j:03d}"
        sig = OnOff(*key(tname), rate_per_hour=float(rng.uniform(0.1, 2)), duty=0.5)
        tags.append(PlantTag(tname, "coil", j, "bool", sig, **ALARM))
    for j in range(n_disc):
        tname = f"i{j:03d}"
        sig = OnOff(*key(tname), rate_per_hour=float(rng.uniform(0.01, 1)), duty=0.2)
        tags.append(PlantTag(tname, "discrete", j, "bool", sig, **ALARM))
    return PlantDevice(name, 1, tags, strict_gaps=bool(rng.random() < 0.1))


# ------------------------------------------------------------------- week plant
def week_plant(seed: int = 3) -> Plant:
    """Four devices whose activity follows daily and weekly patterns.

    lineA: three shifts Mon-Fri (night shift at 60 %); lineB: two shifts
    Mon-Sat with breaks; hvac: 7-19 on weekdays, reduced 9-15 at weekends;
    pv1: the sun, every day.
    """
    s = seed
    line_a = Shift([(6, 14, 1.0), (14, 22, 1.0), (22, 6, 0.6)], weekdays=WEEKDAYS)
    line_b = Shift(
        [
            (6, 10, 1.0),
            (10, 10.5, 0.2),
            (10.5, 14, 1.0),
            (14, 18, 1.0),
            (18, 18.5, 0.2),
            (18.5, 22, 1.0),
        ],
        weekdays=(0, 1, 2, 3, 4, 5),
    )
    hvac_on = Combine(
        np.maximum,
        Shift([(7, 19, 1.0)], weekdays=WEEKDAYS),
        Shift([(9, 15, 0.5)], weekdays=(5, 6)),
    )
    sun = Solar("pv1/irradiance", s, peak=950.0, period=5.0)

    def line(name: str, activity: Signal) -> PlantDevice:
        running = Combine(_above(0.3), activity)
        speed = NoisyAnalog(
            f"{name}/speed",
            s,
            base=Combine(lambda a: 1200.0 * a, activity),
            noise_sd=3.0,
            quantum=1.0,
            period=1.0,
        )
        power = Follower(f"{name}/power", s, leader=speed, gain=0.035, noise_sd=0.2, quantum=0.1)
        return PlantDevice(
            name,
            1,
            [
                PlantTag("running", "discrete", 0, "bool", running, **ALARM),
                PlantTag("speed", "input", 0, "uint16", speed, deadband=10.0, unit="rpm", **FAST),
                PlantTag(
                    "power", "input", 1, "uint16", power, scale=0.1, deadband=0.5, unit="kW", **FAST
                ),
                PlantTag(
                    "oven_temp",
                    "input",
                    2,
                    "int16",
                    Follower(
                        f"{name}/oven",
                        s,
                        leader=activity,
                        gain=150.0,
                        offset=30.0,
                        noise_sd=0.5,
                        quantum=0.1,
                    ),
                    scale=0.1,
                    deadband=1.0,
                    unit="°C",
                    **SLOW,
                ),
                PlantTag(
                    "parts",
                    "holding",
                    0,
                    "uint32",
                    Counter(
                        f"{name}/parts",
                        s,
                        source=Combine(lambda a: a * (a > 0.3), activity),
                        gain=1 / 12,
                        quantum=1.0,
                    ),
                    **COUNTER,
                ),
                PlantTag("shift_level", "holding", 2, "uint16", activity, scale=0.01, **SLOW),
            ],
        )

    hvac = PlantDevice(
        "hvac",
        1,
        [
            PlantTag("fan_on", "coil", 0, "bool", Combine(_above(0.0), hvac_on), **ALARM),
            PlantTag(
                "fan_speed",
                "holding",
                0,
                "uint16",
                NoisyAnalog(
                    "hvac/fan",
                    s,
                    base=Combine(lambda a: 100.0 * a, hvac_on),
                    noise_sd=0.5,
                    quantum=0.1,
                ),
                scale=0.1,
                deadband=2.0,
                unit="%",
                **FAST,
            ),
            PlantTag(
                "supply_temp",
                "holding",
                1,
                "int16",
                RandomWalk(
                    "hvac/supply",
                    s,
                    mean=18.0,
                    sd=0.8,
                    step_sd=0.01,
                    period=10.0,
                    daily_amplitude=2.0,
                ),
                scale=0.1,
                deadband=0.3,
                unit="°C",
                **SLOW,
            ),
            PlantTag(
                "energy",
                "holding",
                10,
                "uint32",
                Counter(
                    "hvac/energy",
                    s,
                    source=Combine(lambda a: 2.0 + 25.0 * a, hvac_on),
                    gain=1 / HOUR,
                    quantum=0.1,
                ),
                scale=0.1,
                deadband=1.0,
                unit="kWh",
                **COUNTER,
            ),
        ],
    )
    pv = PlantDevice(
        "pv1",
        1,
        [
            PlantTag("irradiance", "input", 0, "uint16", sun, deadband=10.0, unit="W/m²", **FAST),
            PlantTag(
                "ac_power",
                "input",
                1,
                "float32",
                Follower(
                    "pv1/ac_power", s, leader=sun, gain=0.03, noise_sd=0.05, quantum=0.01, lo=0.0
                ),
                deadband=0.5,
                unit="kW",
                **FAST,
            ),
        ],
    )
    return Plant("week", [line("lineA", line_a), line("lineB", line_b), hvac, pv], seed=seed)


def types_plant(seed: int = 5) -> Plant:
    """One device with every type peers read, in both byte orders: int8/uint8 (both
    bytes of one register), bit fields beside bits, float16, bcd16/bcd32 and
    byte-swapped strings. Its values move, within each type's range."""

    def wave(key: str, mean: float, amplitude: float, quantum: float = 1.0) -> Sine:
        return Sine(
            key, seed, wave_period=20.0, amplitude=amplitude, mean=mean, quantum=quantum,
            period=0.5,
        )  # fmt: skip

    tags: list[PlantTag] = []
    for base, order in ((0, "big"), (20, "little")):
        s = f"_{order}"
        tags += [
            PlantTag(f"int8_high{s}", "holding", base, "int8", wave(f"a{s}", 0, 120),
                     byte="high", byte_order=order),
            PlantTag(f"uint8_low{s}", "holding", base, "uint8", wave(f"b{s}", 128, 120),
                     byte="low", byte_order=order),
            PlantTag(f"mode{s}", "holding", base + 1, "uint16", wave(f"c{s}", 7, 7),
                     bit=0, bits=4, byte_order=order),
            PlantTag(f"running{s}", "holding", base + 1, "bool", wave(f"d{s}", 0.5, 0.6, 0),
                     bit=4, byte_order=order),
            PlantTag(f"gear{s}", "holding", base + 1, "uint16", wave(f"e{s}", 200, 50),
                     bit=7, bits=9, byte_order=order),
            PlantTag(f"frequency{s}", "input", base, "float16", wave(f"f{s}", 50, 0.5, 0.01),
                     byte_order=order),
            PlantTag(f"setpoint{s}", "holding", base + 2, "bcd16", wave(f"g{s}", 5000, 4000),
                     byte_order=order),
            PlantTag(f"firmware{s}", "holding", base + 3, "bcd16", Constant(2.13),
                     scale=0.01, byte_order=order),
            PlantTag(f"hours{s}", "holding", base + 4, "bcd32", wave(f"h{s}", 5e7, 4e7),
                     byte_order=order, word_order=order),
            PlantTag(f"serial{s}", "holding", base + 6, "string", "SN-0042A",
                     length=4, byte_order=order),
        ]  # fmt: skip
    for tag in tags:
        tag.interval, tag.max_staleness = 0.5, 5.0
    return Plant("types", [PlantDevice("peers", 1, tags)], seed=seed)


PLANTS = ("demo", "large", "week", "types")
# Generated plants are named, not listed: "gen:SEED" or "gen:SEED:TAGS" (simulators.generated).
GEN_PLANTS = "gen:SEED[:TAGS]"


def build_plant(
    name: str, *, seed: int | None = None, n_tags: int = 10_000, n_devices: int = 100
) -> Plant:
    """A plant by name, as the CLI and benchmarks ask for it.

    "gen:SEED" and "gen:SEED:TAGS" build `generated_plant(SEED, TAGS)`: the
    name alone defines the plant, so `seed`, `n_tags` and `n_devices` are
    ignored for them (a report's plant name is then all it takes to rebuild it).
    """
    gen = parse_gen_name(name)
    if gen is not None:
        return generated_plant(*gen)
    if name == "demo":
        return demo_plant() if seed is None else demo_plant(seed)
    if name == "types":
        return types_plant() if seed is None else types_plant(seed)
    if name == "week":
        return week_plant() if seed is None else week_plant(seed)
    if name == "large":
        return (
            large_plant(n_tags, n_devices) if seed is None else large_plant(n_tags, n_devices, seed)
        )
    raise ValueError(f"unknown plant {name!r}; choose from {', '.join(PLANTS)} or {GEN_PLANTS}")
