"""Resource pressure: thresholds, hysteresis, events, and the psutil sampler."""

from __future__ import annotations

from edgeopt.config import ResourcesConfig
from edgeopt.events import EventLog
from edgeopt.resources import Pressure, PressureMonitor, PsutilSampler, ResourceSample

CONFIG = ResourcesConfig(cpu_high=80, memory_high=85, disk_high=90, temp_high=75)


def monitor(**kwargs: object) -> PressureMonitor:
    return PressureMonitor(CONFIG, EventLog(), **kwargs)  # type: ignore[arg-type]


def test_below_every_threshold_is_normal() -> None:
    m = monitor()
    assert m.update(ResourceSample(50, 60, 70, 50), 0.0) is Pressure.NORMAL
    assert not m.defer_compaction


def test_a_threshold_raises_elevated_and_its_margin_critical() -> None:
    m = monitor()
    assert m.update(ResourceSample(cpu_percent=81), 0.0) is Pressure.ELEVATED
    assert "cpu_percent" in m.reason
    assert m.defer_compaction
    assert m.update(ResourceSample(cpu_percent=91), 1.0) is Pressure.CRITICAL
    assert m.update(ResourceSample(temperature=86), 2.0) is Pressure.CRITICAL


def test_hysteresis_holds_the_level_near_the_threshold() -> None:
    m = monitor(hold=3)
    m.update(ResourceSample(cpu_percent=82), 0.0)
    # Just under the threshold, but within the hysteresis band: stays elevated.
    for t in range(10):
        assert m.update(ResourceSample(cpu_percent=77), float(t)) is Pressure.ELEVATED
    # Clearly below: needs `hold` samples in a row to come down.
    assert m.update(ResourceSample(cpu_percent=60), 20.0) is Pressure.ELEVATED
    assert m.update(ResourceSample(cpu_percent=60), 21.0) is Pressure.ELEVATED
    assert m.update(ResourceSample(cpu_percent=60), 22.0) is Pressure.NORMAL


def test_a_spike_in_the_calm_run_restarts_the_count() -> None:
    m = monitor(hold=2)
    m.update(ResourceSample(memory_percent=90), 0.0)
    m.update(ResourceSample(memory_percent=50), 1.0)
    m.update(ResourceSample(memory_percent=84), 2.0)  # inside the band again
    assert m.update(ResourceSample(memory_percent=50), 3.0) is Pressure.ELEVATED
    assert m.update(ResourceSample(memory_percent=50), 4.0) is Pressure.NORMAL


def test_critical_comes_down_through_elevated() -> None:
    m = monitor(hold=1)
    m.update(ResourceSample(cpu_percent=95), 0.0)
    assert m.update(ResourceSample(cpu_percent=82), 1.0) is Pressure.ELEVATED
    assert m.update(ResourceSample(cpu_percent=10), 2.0) is Pressure.NORMAL


def test_every_level_change_is_an_event_and_reaches_listeners() -> None:
    m = monitor(hold=1)
    seen: list[tuple[Pressure, Pressure]] = []
    m.listeners.append(lambda old, new, _why: seen.append((old, new)))
    m.update(ResourceSample(disk_percent=95), 10.0)
    m.update(ResourceSample(disk_percent=95), 11.0)  # no change, no event
    m.update(ResourceSample(disk_percent=10), 12.0)
    assert m.events is not None
    events = [e for e in m.events.recent() if e.kind == "pressure"]
    assert [(e.data["previous"], e.data["level"]) for e in events] == [
        ("normal", "elevated"),
        ("elevated", "normal"),
    ]
    assert seen == [(Pressure.NORMAL, Pressure.ELEVATED), (Pressure.ELEVATED, Pressure.NORMAL)]


def test_missing_metrics_are_ignored() -> None:
    m = PressureMonitor(ResourcesConfig())  # no temp_high
    assert m.update(ResourceSample(temperature=500.0), 0.0) is Pressure.NORMAL
    assert m.status()["level"] == "normal"


def test_psutil_sampler_reads_this_machine() -> None:
    sample = PsutilSampler("/").sample()
    assert sample.memory_percent is not None and 0 <= sample.memory_percent <= 100
    assert sample.cpu_percent is not None and sample.cpu_percent >= 0


def test_the_reason_describes_the_latest_sample_while_the_level_eases() -> None:
    """`status` shows reason and sample side by side: they must not disagree."""
    m = monitor(hold=3)
    m.update(ResourceSample(cpu_percent=100.0), 0.0)
    assert m.level is Pressure.CRITICAL and m.reason.startswith("cpu_percent 100.0 >=")
    m.update(ResourceSample(cpu_percent=0.0), 10.0)
    assert m.level is Pressure.CRITICAL  # it holds a while
    assert "100.0" not in m.reason
    assert m.reason == "below the thresholds for 1 of 3 samples before critical ends"
    m.update(ResourceSample(cpu_percent=79.0), 20.0)  # in the band: elevated still wanted
    assert m.reason == "cpu_percent 79.0 >= 80.0 for 2 of 3 samples before critical ends"
