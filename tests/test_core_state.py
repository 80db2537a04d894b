"""Pure core: the read schedule, tag state and recorder, device health."""

from __future__ import annotations

import math

import pytest

from edgeopt.events import EventLog
from edgeopt.modbus.health import DeviceHealth, DeviceState, ReadStats
from edgeopt.modbus.planner import Priority, Read, Table
from edgeopt.schedule import STAGGER_WINDOW, ReadSchedule
from edgeopt.tags import Quality, TagState, TagStats, moved_beyond


def read(start: int, period: float, priority: Priority = Priority.NORMAL) -> Read:
    return Read("d", Table.HOLDING, start, 1, period, (f"d/t{start}",), priority)


def drain(schedule: ReadSchedule, until: float) -> list[tuple[float, int]]:
    """Run the schedule in virtual time, completing each read instantly."""
    ran = []
    now = 0.0
    while True:
        nxt = schedule.next_due()
        if nxt is None or nxt > until:
            return ran
        now = max(now, nxt)
        item = schedule.pop_due(now)
        assert item is not None
        r, due = item
        ran.append((now, r.start))
        schedule.complete(r, due, now)


class TestReadSchedule:
    def test_first_reads_are_staggered_within_the_window(self):
        s = ReadSchedule()
        s.set_reads([read(i, 10.0) for i in range(4)], now=100.0)
        dues = sorted(s.due_of(("d", "holding", i, 1)) for i in range(4))
        assert dues == [100.0, 100.25, 100.5, 100.75]
        assert max(dues) < 100.0 + STAGGER_WINDOW

    def test_each_read_runs_at_its_period(self):
        s = ReadSchedule()
        s.set_reads([read(0, 1.0), read(1, 2.5)], now=0.0)
        ran = drain(s, until=10.0)
        assert sum(1 for _, a in ran if a == 0) == 11  # t = 0..10
        assert [t for t, a in ran if a == 1] == [0.5, 3.0, 5.5, 8.0]

    def test_when_behind_high_priority_goes_first(self):
        s = ReadSchedule()
        s.set_reads(
            [read(0, 1.0, Priority.LOW), read(1, 1.0, Priority.HIGH), read(2, 1.0)], now=0.0
        )
        order = []
        while (item := s.pop_due(5.0)) is not None:
            order.append(item[0].start)
        assert order == [1, 2, 0]

    def test_late_read_skips_missed_periods_instead_of_bursting(self):
        s = ReadSchedule()
        s.set_reads([read(0, 1.0)], now=0.0)
        r, due = s.pop_due(0.0)
        s.complete(r, due, now=3.4)  # the answer took 3.4 s
        assert s.next_due() == pytest.approx(4.0)

    def test_replan_keeps_phase_and_drops_removed_reads(self):
        s = ReadSchedule()
        s.set_reads([read(0, 1.0), read(1, 1.0)], now=0.0)
        before = s.due_of(("d", "holding", 1, 1))
        s.set_reads([read(1, 1.0), read(2, 1.0)], now=0.2)
        assert s.due_of(("d", "holding", 1, 1)) == before
        assert s.due_of(("d", "holding", 0, 1)) is None
        assert len(s) == 2

    def test_faster_period_does_not_wait_out_the_slow_one(self):
        s = ReadSchedule()
        s.set_reads([read(0, 60.0)], now=0.0)
        r, due = s.pop_due(0.0)
        s.complete(r, due, 0.0)
        s.set_reads([read(0, 1.0)], now=5.0)
        assert s.next_due() == pytest.approx(6.0)

    def test_in_flight_read_is_not_due_twice(self):
        s = ReadSchedule()
        s.set_reads([read(0, 1.0)], now=0.0)
        assert s.pop_due(0.0) is not None
        assert s.pop_due(100.0) is None


class TestTagState:
    def test_stores_first_value_changes_and_value_before_a_change(self):
        t = TagState("d/x", deadband=0.5, max_staleness=100.0)
        assert [s.value for s in t.observe(10.0, 0.0)] == [10.0]
        assert t.observe(10.2, 1.0) == []  # within the deadband
        assert t.observe(10.3, 2.0) == []
        stored = t.observe(11.0, 3.0)
        # The held value at t=2 is stored before the change, so trends stay true.
        assert [(s.ts, s.value) for s in stored] == [(2.0, 10.3), (3.0, 11.0)]

    def test_heartbeat_after_max_staleness(self):
        t = TagState("d/x", deadband=1.0, max_staleness=10.0)
        t.observe(5.0, 0.0)
        assert t.observe(5.0, 9.0) == []
        assert [s.ts for s in t.observe(5.0, 10.0)] == [10.0]

    def test_zero_deadband_stores_any_change(self):
        t = TagState("d/x", deadband=0.0, max_staleness=100.0)
        t.observe(1, 0.0)
        assert [s.value for s in t.observe(2, 1.0)] == [2]

    def test_failure_then_recovery(self):
        t = TagState("d/x", deadband=0.0, max_staleness=100.0)
        t.observe(1.0, 0.0)
        bad = t.fail("timeout", 1.0)
        assert [(s.value, s.quality) for s in bad] == [(None, "bad")]
        assert t.fail("timeout", 2.0) == []  # no repeat while still bad
        back = t.observe(1.0, 3.0)
        assert [(s.value, s.quality) for s in back] == [(1.0, "good")]
        assert t.quality is Quality.GOOD

    def test_goes_stale_after_max_staleness_without_reads(self):
        t = TagState("d/x", deadband=0.0, max_staleness=5.0)
        t.observe(1.0, 0.0)
        assert t.check_stale(4.0) == []
        stale = t.check_stale(6.0)
        assert t.quality is Quality.STALE and [s.quality for s in stale] == ["stale"]
        assert "not read for" in t.reason

    def test_nan_is_bad_quality_but_kept(self):
        t = TagState("d/x", deadband=0.0, max_staleness=5.0)
        (s,) = t.observe(float("nan"), 0.0)
        assert t.quality is Quality.BAD and math.isnan(s.value)

    def test_stats_count_events_against_the_last_event_value(self):
        stats = TagStats()
        for ts, v in enumerate([0.0, 0.3, 0.6, 0.9, 1.2, 1.2]):
            stats.observe(v, float(ts), deadband=0.5)
        # Drift of 0.3 per step: an event each time 0.5 is exceeded from the last event.
        assert stats.changes == 2
        assert list(stats.recent_events) == [2.0, 4.0]
        assert stats.event_rate() == pytest.approx(2 / 5)

    @pytest.mark.parametrize(
        ("a", "b", "db", "moved"),
        [
            (1.0, 1.5, 0.5, False),
            (1.0, 1.51, 0.5, True),
            ("a", "b", 10.0, True),
            (True, False, 0.0, True),
            (None, 1.0, 0.0, True),
            (float("nan"), float("nan"), 0.0, False),
        ],
    )
    def test_moved_beyond(self, a, b, db, moved):
        assert moved_beyond(a, b, db) is moved


class TestDeviceHealth:
    def test_online_degraded_offline_and_back(self):
        h = DeviceHealth(offline_after=3, probe_min=1.0, probe_max=8.0)
        for i in range(8):
            h.success(float(i))
        assert h.failure("timeout", 8.0) is None  # one failure in nine: still online
        assert h.failure("timeout", 9.0) is None  # two in ten: not yet a share to worry
        assert h.failure("timeout", 10.0) is DeviceState.ONLINE
        assert h.state is DeviceState.OFFLINE  # three in a row with no answer
        assert not h.may_poll(10.5) and h.may_poll(11.0)
        h.failure("timeout", 11.0)  # a failed probe doubles the backoff
        assert h.next_probe == pytest.approx(13.0)
        # Answering again, but a third of the recent reads failed: degraded.
        assert h.success(13.0) is DeviceState.OFFLINE
        assert h.state is DeviceState.DEGRADED and h.may_poll(13.0)
        for i in range(20):
            h.success(14.0 + i)
        assert h.state is DeviceState.ONLINE
        assert h.last_error == "timeout" and h.last_error_at == 11.0

    def test_one_busy_read_in_five_does_not_flap_the_device(self):
        # Defect 3 of the wire-integrity issue: exception 6 on one read of five,
        # the others fine, went degraded -> recovered every second.
        h = DeviceHealth(offline_after=3)
        changes = 0
        for i in range(200):
            if i % 5 == 0:
                changed = h.failure("exception 6", float(i), answered=True)
            else:
                changed = h.success(float(i))
            changes += changed is not None
        assert h.state is DeviceState.ONLINE and changes == 0

    def test_a_device_that_answers_only_with_exceptions_is_degraded_never_offline(self):
        h = DeviceHealth(offline_after=3)
        for i in range(30):
            h.failure("exception 4", float(i), answered=True)
        assert h.state is DeviceState.DEGRADED and h.failures_in_row == 0
        assert h.may_poll(31.0)

    def test_degraded_recovers_with_hysteresis(self):
        h = DeviceHealth(offline_after=10)
        for i in range(10):
            h.failure("timeout", float(i), answered=True) if i % 2 else h.success(float(i))
        assert h.state is DeviceState.DEGRADED  # half the reads failed
        transitions = [h.success(10.0 + i) for i in range(20)]
        # It comes back once, when the share fell to RECOVER_SHARE, not at the first success.
        assert transitions[0] is None
        assert [t for t in transitions if t is not None] == [DeviceState.DEGRADED]
        assert h.state is DeviceState.ONLINE

    def test_last_error_keeps_its_time_and_says_when_the_device_recovered(self):
        h = DeviceHealth(offline_after=3)
        for i in range(3):
            h.failure("timeout", 10.0 + i, wall=1000.0 + i)
        assert h.state is DeviceState.OFFLINE and h.recovered_ts is None
        h.success(20.0, wall=1010.0)  # answering, but degraded: not recovered yet
        assert h.state is DeviceState.DEGRADED and h.recovered_ts is None
        for i in range(20):
            h.success(21.0 + i, wall=1011.0 + i)
        assert h.state is DeviceState.ONLINE
        assert (h.last_error, h.last_error_ts) == ("timeout", 1002.0)
        # Recovered at the first good read with the device online again.
        assert h.recovered_ts is not None and 1011.0 <= h.recovered_ts <= 1030.0
        # A refusal that says nothing about health is the last error, with no recovery yet.
        h.note("exception 2 (ILLEGAL DATA ADDRESS) on holding 0+10", 50.0, 1040.0)
        assert h.state is DeviceState.ONLINE and h.recovered_ts is None
        assert h.last_error_ts == 1040.0
        h.success(51.0, wall=1041.0)
        assert h.recovered_ts == 1041.0

    def test_read_stats_count_resends_and_reconnects(self):
        stats = ReadStats()
        stats.record(0.01, 4, None, None)
        stats.record(0.35, 4, None, None, attempts=2)  # the resend's wait is its latency
        stats.record(0.02, 4, "connection", None, attempts=3, reconnected=True)
        assert (stats.retried, stats.resends, stats.reconnects) == (2, 3, 1)
        assert stats.latency_ms()["p95"] == pytest.approx(350.0)

    def test_probe_backoff_is_capped(self):
        h = DeviceHealth(offline_after=1, probe_min=1.0, probe_max=8.0)
        for i in range(10):
            h.failure("x", float(i))
        assert h.next_probe - 9.0 == pytest.approx(8.0)

    def test_read_stats_percentiles(self):
        stats = ReadStats()
        for i in range(100):
            stats.record((i + 1) / 1000, 10, None, None)
        stats.record(0.5, 10, "exception", 2)
        lat = stats.latency_ms()
        assert lat["p50"] == pytest.approx(51.0) and lat["p99"] == pytest.approx(100.0)
        assert stats.errors == 1 and stats.exceptions[2] == 1 and stats.registers == 1000


def test_event_log_subscribe_and_recent():
    log = EventLog(keep=2)
    seen = []
    unsubscribe = log.subscribe(seen.append)
    log.emit(1.0, "a", "first")
    unsubscribe()
    log.emit(2.0, "b", "second")
    log.emit(3.0, "c", "third")
    assert [e.kind for e in seen] == ["a"]
    assert [e.kind for e in log.recent()] == ["b", "c"]
