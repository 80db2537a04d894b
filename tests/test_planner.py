"""The read planner: table cases, limits, barriers, and never worse than max_insert."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.modbus.planner import (
    CostModel,
    DeviceLimits,
    PlanTag,
    Priority,
    Read,
    Table,
    fixed_block_plan,
    plan_reads,
    plan_table,
    split_read,
)

UNIT_COST = CostModel(per_read=20.0, per_register=1.0, per_bit=0.125)


def tags_at(addresses: list[int], interval: float = 1.0, width: int = 1) -> list[PlanTag]:
    return [
        PlanTag(f"d/t{a}", "d", Table.HOLDING, a, width, interval, Priority.NORMAL)
        for a in addresses
    ]


def spans(reads: list) -> list[tuple[int, int]]:
    return [(r.start, r.count) for r in reads]


# Telegraf's worked example, plus our cost-aware variants.
@pytest.mark.parametrize(
    ("addresses", "max_gap", "expected"),
    [
        ([1, 2, 3, 5, 6, 10, 11, 12, 14], 0, [(1, 3), (5, 2), (10, 3), (14, 1)]),
        ([1, 2, 3, 5, 6, 10, 11, 12, 14], 10, [(1, 14)]),
        ([0, 1, 2, 4, 5, 20, 21], 10, [(0, 6), (20, 2)]),  # gap 14 > max_gap
        ([0, 1, 2, 4, 5, 20, 21], 20, [(0, 22)]),  # bridging 14 costs less than a request
        ([0, 100], 124, [(0, 1), (100, 1)]),  # bridging 99 costs more than a request
        ([0, 200], 124, [(0, 1), (200, 1)]),  # span over 125 registers
    ],
)
def test_plan_table_merges_like_the_worked_examples(addresses, max_gap, expected):
    reads = plan_table(tags_at(addresses), Table.HOLDING, DeviceLimits(max_gap=max_gap), UNIT_COST)
    assert spans(reads) == expected


def test_slow_block_is_not_reread_with_the_fast_registers():
    fast = tags_at([0, 1, 2, 4, 5], interval=1.0)
    slow = tags_at([20, 21], interval=60.0)
    reads = plan_table(fast + slow, Table.HOLDING, DeviceLimits(max_gap=20), UNIT_COST)
    assert spans(reads) == [(0, 6), (20, 2)]
    assert [r.period for r in reads] == [1.0, 60.0]


def test_read_period_is_the_fastest_member_and_priority_the_highest():
    tags = [
        PlanTag("d/a", "d", Table.INPUT, 0, 2, 5.0, Priority.LOW),
        PlanTag("d/b", "d", Table.INPUT, 2, 2, 0.5, Priority.HIGH),
    ]
    (read,) = plan_table(tags, Table.INPUT, DeviceLimits(), CostModel.tcp())
    assert read.period == 0.5
    assert read.priority is Priority.HIGH
    assert read.tags == ("d/a", "d/b")


def test_wide_tags_respect_device_register_limit():
    tags = tags_at([0, 4, 8, 12], width=4)
    reads = plan_table(tags, Table.HOLDING, DeviceLimits(max_registers=8), CostModel.tcp())
    assert spans(reads) == [(0, 8), (8, 8)]
    assert all(r.count <= 8 for r in reads)


def test_bits_use_the_bit_limit():
    tags = [PlanTag(f"d/c{a}", "d", Table.COIL, a, 1, 1.0) for a in range(0, 3000, 100)]
    reads = plan_table(tags, Table.COIL, DeviceLimits(max_gap=200), CostModel.serial(9600))
    assert all(r.count <= 2000 for r in reads)
    assert sum(len(r.tags) for r in reads) == 30


def test_barrier_keeps_refused_neighbours_apart():
    limits = DeviceLimits(max_gap=10, barriers=frozenset({(Table.HOLDING, 10)}))
    reads = plan_table(tags_at([0, 1, 10, 11]), Table.HOLDING, limits, UNIT_COST)
    assert spans(reads) == [(0, 2), (10, 2)]
    # A barrier on another table changes nothing here.
    other = DeviceLimits(max_gap=10, barriers=frozenset({(Table.INPUT, 10)}))
    assert spans(plan_table(tags_at([0, 1, 10, 11]), Table.HOLDING, other, UNIT_COST)) == [(0, 12)]


def test_split_read_halves_by_address_and_gives_up_on_one_tag():
    (read,) = plan_table(tags_at([0, 2, 4, 6]), Table.HOLDING, DeviceLimits(), UNIT_COST)
    assert split_read(read, {f"d/t{a}": a for a in [0, 2, 4, 6]}) == (Table.HOLDING, 4)
    (single,) = plan_table(tags_at([3]), Table.HOLDING, DeviceLimits(), UNIT_COST)
    assert split_read(single, {"d/t3": 3}) is None


def test_plan_summary_and_bus_occupancy():
    tags = [*tags_at([0, 1, 2]), PlanTag("d/c", "d", Table.COIL, 0, 1, 1.0)]
    cost = CostModel.serial(9600)
    plan = plan_reads(tags, {"d": DeviceLimits()}, {"d": cost})
    assert plan.summary() == "2 reads cover 3 registers for 4 tags (and 1 bits)"
    expected = cost.read_seconds(Table.HOLDING, 3) + cost.read_seconds(Table.COIL, 1)
    assert plan.bus_seconds_per_second("d") == pytest.approx(expected)


def test_serial_cost_matches_the_wire_arithmetic():
    cost = CostModel.serial(9600, turnaround=0.0)
    # 125 registers: 8 + 255 bytes plus 7 characters of silence, 11 bits each.
    assert cost.read_seconds(Table.HOLDING, 125) == pytest.approx((8 + 255 + 7) * 11 / 9600)


layout = st.lists(
    st.tuples(st.integers(0, 400), st.integers(1, 4), st.sampled_from([0.5, 1.0, 5.0, 60.0])),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(layout, st.integers(0, 30), st.sampled_from([9600, 19200, 0]))
def test_never_costs_more_than_fixed_max_insert(entries, max_gap, baud):
    """The cost-aware plan is never worse than Telegraf-style grouping."""
    tags, used = [], set()
    for address, width, interval in entries:
        cells = set(range(address, address + width))
        if cells & used:
            continue
        used |= cells
        tags.append(PlanTag(f"d/{address}", "d", Table.HOLDING, address, width, interval))
    cost = CostModel.serial(baud) if baud else CostModel.tcp()
    limits = {"d": DeviceLimits(max_gap=max_gap)}
    planned = plan_reads(tags, limits, {"d": cost})
    baseline = fixed_block_plan(tags, limits)

    def per_second(reads):
        return sum(cost.read_seconds(r.table, r.count) / r.period for r in reads)

    assert per_second(planned.reads) <= per_second(baseline) * (1 + 1e-9)
    covered = sorted(k for r in planned.reads for k in r.tags)
    assert covered == sorted(t.key for t in tags)
    by_key = {t.key: t for t in tags}
    for r in planned.reads:
        assert r.count <= 125
        for k in r.tags:
            assert r.start <= by_key[k].address and by_key[k].end <= r.end
            assert r.period <= by_key[k].interval


def test_split_read_puts_the_barrier_at_a_hole_never_between_adjacent_tags():
    # Tags at 0..5 are contiguous; the hole is 6..9. The median (address 3)
    # would split two adjacent tags and cost a second read forever.
    keys = [f"d/t{a}" for a in (0, 1, 2, 3, 4, 5, 10, 11)]
    read = Read("d", Table.HOLDING, 0, 12, 1.0, tuple(keys))
    addresses = {k: int(k[3:]) for k in keys}
    widths = dict.fromkeys(keys, 1)
    assert split_read(read, addresses, widths) == (Table.HOLDING, 10)
    # A float32 (2 registers) at 4 covers 5: no hole between it and 6.
    keys2 = ["d/a", "d/b", "d/c", "d/e"]
    read2 = Read("d", Table.HOLDING, 0, 12, 1.0, tuple(keys2))
    addr2 = {"d/a": 0, "d/b": 4, "d/c": 6, "d/e": 11}
    wid2 = {"d/a": 2, "d/b": 2, "d/c": 1, "d/e": 1}
    assert split_read(read2, addr2, wid2) in {(Table.HOLDING, 4), (Table.HOLDING, 11)}
    # Contiguous tags only: some devices refuse at a bank edge; halve as before.
    keys3 = [f"d/t{a}" for a in range(4)]
    read3 = Read("d", Table.HOLDING, 0, 4, 1.0, tuple(keys3))
    assert split_read(read3, {k: int(k[3:]) for k in keys3}, dict.fromkeys(keys3, 1)) == (
        Table.HOLDING,
        2,
    )


def test_serial_silence_is_three_and_a_half_characters_then_fixed_at_19200_baud():
    slow, fast = CostModel.serial(9600, turnaround=0.0), CostModel.serial(38400, turnaround=0.0)
    assert slow.per_read == pytest.approx(20 * 11 / 9600)  # 13 bytes + 2 × 3.5 characters
    assert fast.per_read == pytest.approx(13 * 11 / 38400 + 2 * 0.00175)
