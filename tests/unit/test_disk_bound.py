"""stream.disk_bound: the erasure-on-disk bound and the on-disk schedule's keys, rule by rule."""

from __future__ import annotations

import pytest

from stream import disk_bound as db


def test_bound_is_cycle_plus_tick_plus_allowance():
    b = db.DiskBound(cycle_ms=60_000, tick_ms=5_000, compaction_allowance_ms=20_000)
    assert b.bound_ms == 85_000


@pytest.mark.parametrize("cycle,tick,allow", [(0, 1, 0), (10, 0, 0), (10, 1, -1), (10, 11, 0)])
def test_bound_refuses_impossible_parameters(cycle, tick, allow):
    with pytest.raises(ValueError):
        db.DiskBound(cycle_ms=cycle, tick_ms=tick, compaction_allowance_ms=allow)


def test_tick_overran_compares_with_the_allowance():
    b = db.DiskBound(cycle_ms=10, tick_ms=1, compaction_allowance_ms=100)
    assert not b.tick_overran(100)
    assert b.tick_overran(100.5)


def test_partition_with_no_recorded_compaction_is_due_at_once():
    assert db.partitions_due({}, [3, 1], now_ms=0, cycle_ms=1_000) == [1, 3]


def test_partition_due_exactly_one_cycle_after_its_last_start():
    last = {0: 1_000, 1: 1_500}
    assert db.partitions_due(last, [0, 1], now_ms=1_999, cycle_ms=1_000) == []
    assert db.partitions_due(last, [0, 1], now_ms=2_000, cycle_ms=1_000) == [0]
    assert db.partitions_due(last, [0, 1], now_ms=2_500, cycle_ms=1_000) == [0, 1]


def test_partitions_due_longest_waiting_first_and_unknown_before_all():
    last = {0: 500, 1: 100, 2: 300}
    assert db.partitions_due(last, [0, 1, 2, 7], now_ms=10_000, cycle_ms=1_000) == [7, 1, 2, 0]


def test_partitions_due_ignores_partitions_not_held():
    assert db.partitions_due({0: 0, 5: 0}, [0], now_ms=10_000, cycle_ms=1) == [0]


def test_worst_case_takes_the_longer_of_topic_and_disk():
    assert db.persistence_ms(1_000, 20, derived_bound_ms=300, disk_bound_ms=200) == 1_320
    assert db.persistence_ms(1_000, 20, derived_bound_ms=300, disk_bound_ms=900) == 1_920


def test_bucket_is_never_early_and_at_most_one_width_late():
    w = 1_000
    for when in (1, 999, 1_000, 1_001, 12_345_678):
        b = db.bucket_of(when, w)
        due_at = b * w
        assert when <= due_at < when + w
        assert db.last_due_bucket(due_at, w) >= b
        assert db.last_due_bucket(due_at - 1, w) < b


def test_bucket_zero_and_negative_instants_are_due_at_once():
    assert db.bucket_of(0, 1_000) == 0
    assert db.bucket_of(-5_000, 1_000) == 0
    assert db.last_due_bucket(0, 1_000) == 0
    assert db.last_due_bucket(-1, 1_000) is None
    assert db.due_upper_bound(-1, 1_000) is None


def test_bucket_refuses_nonpositive_width():
    with pytest.raises(ValueError):
        db.bucket_of(5, 0)


def test_schedule_keys_sort_in_time_order_and_round_trip():
    ks = [db.schedule_key(b, k) for b, k in [(2, b"a"), (1, b"zz"), (256, b"\x00"), (1, b"b"), (70_000_000, b"")]]
    assert [db.split_schedule_key(k) for k in sorted(ks)] == [(1, b"b"), (1, b"zz"), (2, b"a"), (256, b"\x00"),
                                                             (70_000_000, b"")]


def test_due_upper_bound_admits_exactly_the_due_buckets():
    w = 1_000
    ub = db.due_upper_bound(5_500, w)  # buckets 0..5 due
    assert db.schedule_key(5, b"\xff" * 30) < ub
    assert db.schedule_key(6, b"") >= ub
