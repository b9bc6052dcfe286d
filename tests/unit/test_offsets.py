"""``stream.offsets.OffsetTrack``: which delivered records to process and which offsets are
missing, rule by rule, and against a reference model of a consumer that skips and re-delivers."""

from __future__ import annotations

import random

import pytest

from stream.offsets import OffsetTrack


def test_the_first_record_of_a_partition_starts_its_track():
    t = OffsetTrack()
    assert t.admit(0, 17) == (True, None)
    assert t.last(0) == 17 and t.last(1) is None


def test_consecutive_offsets_have_no_gap():
    t = OffsetTrack()
    assert [t.admit(2, o) for o in (5, 6, 7)] == [(True, None)] * 3


def test_a_jump_names_exactly_the_missing_offsets():
    t = OffsetTrack()
    t.admit(0, 10)
    assert t.admit(0, 14) == (True, (11, 14))
    assert t.last(0) == 14


def test_a_redelivery_at_or_below_the_last_offset_is_not_processed_again():
    t = OffsetTrack()
    for o in (3, 4, 5):
        t.admit(1, o)
    assert t.admit(1, 5) == (False, None)
    assert t.admit(1, 0) == (False, None)
    assert t.last(1) == 5
    assert t.admit(1, 6) == (True, None)


def test_partitions_are_tracked_apart():
    t = OffsetTrack()
    t.admit(0, 100)
    assert t.admit(1, 7) == (True, None)
    assert t.admit(0, 101) == (True, None)


def test_a_seed_makes_the_next_offset_expected():
    t = OffsetTrack()
    t.seed(0, 41)  # a snapshot says 41 was decided
    assert t.admit(0, 41) == (False, None)
    assert t.admit(0, 45) == (True, (42, 45))
    t2 = OffsetTrack()
    t2.seed(0, -1)  # nothing decided yet: offset 0 comes first
    assert t2.admit(0, 3) == (True, (0, 3))


def test_a_seed_below_the_track_reopens_what_was_not_kept():
    # the desk's outputs did not reach the broker: it reloads an older snapshot, and must decide
    # again what it had processed since
    t = OffsetTrack()
    for o in range(10, 20):
        t.admit(0, o)
    t.seed(0, 12)
    assert t.admit(0, 20) == (True, (13, 20))


def test_keep_only_forgets_partitions_no_longer_held():
    t = OffsetTrack()
    t.admit(0, 5)
    t.admit(1, 9)
    t.keep_only([1, 2])
    assert t.last(0) is None and t.last(1) == 9
    # partition 0 comes back after another worker read on: no gap is invented from the old offset
    assert t.admit(0, 500) == (True, None)


@pytest.mark.parametrize("seed", range(40))
def test_against_a_consumer_that_skips_and_redelivers(seed):
    """Reference model: a partition of ``n`` records.  The consumer hands them over in order but
    skips runs (Faust's stale-generation skip) and seeks back (a rebalance's re-delivery).  What
    the track admits, with each gap's records put before the record that revealed it, must be
    every offset from the first delivered to the last, once each, in order."""
    rnd = random.Random(seed)
    n = rnd.randint(1, 300)
    delivered, pos = [], 0
    while pos < n:
        r = rnd.random()
        if r < 0.1:
            pos += rnd.randint(1, 20)                    # skipped, never delivered
        elif r < 0.15 and pos:
            pos = max(0, pos - rnd.randint(1, 30))       # seek back: re-delivered
        else:
            delivered.append(pos)
            pos += 1
    if not delivered:
        return
    t = OffsetTrack()
    processed = []
    for off in delivered:
        ok, gap = t.admit(0, off)
        if gap is not None:
            processed.extend(range(*gap))
        if ok:
            processed.append(off)
    assert processed == list(range(delivered[0], max(delivered) + 1))
