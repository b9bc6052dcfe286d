"""The sweeper's schedule (``stream.schedule.ExpirySchedule`` and ``MappingTable.schedule/due``),
no broker: a key is never due before its scheduled instant and at most one bucket after it, each
key once per ``due``, ``schedule(0)`` is due at once, nothing is due until the table is restored,
the rebuild after a recovery resets and refills it; and the retention plan counts the bucket in
the deletion bound."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.schedule import SCHEDULE_BUCKET_MS, SCHEDULE_GROUP, ExpirySchedule

W = SCHEDULE_BUCKET_MS
HOUR = SCHEDULE_GROUP * W
NOW = 1_760_000_123_456  # not aligned to a bucket or an hour


def bucket_end(e: int, w: int = W) -> int:
    """The earliest ``now`` at which a key scheduled at ``e`` may be handed out."""
    return -(-e // w) * w


# -- ExpirySchedule -----------------------------------------------------------------------


@pytest.mark.parametrize("e", [NOW, NOW + 1, NOW + W - 1, NOW + W, bucket_end(NOW), bucket_end(NOW) + 1,
                               NOW + 5 * HOUR + 17, NOW + 181 * 24 * HOUR + 999])
@pytest.mark.parametrize("primed", [False, True], ids=["first-pass", "after-a-pass"])
def test_never_early_and_at_most_one_bucket_late(e, primed):
    s = ExpirySchedule()
    if primed:
        assert s.pop_due(NOW - 1) == []  # the current hour is near, later ones far
    s.add(e, b"k")
    assert s.pop_due(e - 1) == []
    assert s.pop_due(bucket_end(e) - 1) == []  # never before every expiry of its bucket has passed
    assert bucket_end(e) - e < W
    assert s.pop_due(bucket_end(e)) == [b"k"]  # handed out within one bucket of its expiry
    assert s.pop_due(bucket_end(e) + 10 * HOUR) == []  # once
    assert len(s) == 0 and s.next_due_ms() is None


def test_a_late_sweep_gets_every_bucket_it_missed_in_order():
    s = ExpirySchedule()
    for i, e in enumerate([NOW + 3 * W, NOW, NOW + 2 * HOUR, NOW + W]):
        s.add(e, b"k%d" % i)
    assert s.pop_due(NOW - W) == []
    assert s.pop_due(NOW + 3 * HOUR) == [b"k1", b"k3", b"k0", b"k2"]


def test_each_key_once_per_call_however_often_it_was_scheduled():
    s = ExpirySchedule()
    s.pop_due(NOW)  # some buckets near, some far
    for e in (NOW + 10, NOW + 10, NOW + 20, NOW + W + 5, NOW + 2 * HOUR, NOW + 40 * HOUR):
        s.add(e, b"a")  # same bucket twice, several buckets, near and far
    s.add(NOW + 10, b"b")
    s.add(NOW + 2 * HOUR, b"b")
    assert len(s) == 8
    assert s.pop_due(NOW + 3 * HOUR) == [b"a", b"b"]
    assert s.pop_due(NOW + 50 * HOUR) == [b"a"]
    assert len(s) == 0


def test_schedule_zero_and_past_instants_are_due_at_the_next_call():
    s = ExpirySchedule()
    s.add(NOW + HOUR, b"later")
    s.add(0, b"zero")
    s.add(-5, b"negative")
    s.add(NOW - 3 * HOUR, b"past")
    assert s.pop_due(NOW) == [b"zero", b"negative", b"past"]  # bucket 0 (in order of scheduling), then later
    s.add(0, b"zero")  # after a pass too
    assert s.pop_due(NOW) == [b"zero"]
    assert s.pop_due(bucket_end(NOW + HOUR)) == [b"later"]


def test_next_due_len_clear_and_odd_input():
    s = ExpirySchedule()
    assert s.next_due_ms() is None
    s.add(NOW + 50 * HOUR + 1, b"far")
    assert s.next_due_ms() == bucket_end(NOW + 50 * HOUR + 1)
    s.pop_due(NOW)
    s.add(NOW + 2, b"near")
    assert s.next_due_ms() == bucket_end(NOW + 2) and len(s) == 2
    s.add(float(NOW + 2.5), b"float")  # an expiry given as a float still works, never early
    assert s.pop_due(bucket_end(NOW + 2) - 1) == []
    assert s.pop_due(bucket_end(NOW + 2)) == [b"near", b"float"]
    s.clear()
    assert len(s) == 0 and s.pop_due(NOW + 100 * HOUR) == []
    with pytest.raises(ValueError):
        ExpirySchedule(0)
    with pytest.raises(ValueError):
        ExpirySchedule(W, group=70_000)  # offsets in a span are 2 bytes


@settings(max_examples=60, deadline=None)
@given(width=st.sampled_from([1, 7, 1000]), group=st.sampled_from([1, 3, 3600]),
       period=st.integers(min_value=1, max_value=3000),
       expiries=st.lists(st.integers(min_value=-5_000, max_value=200_000), min_size=1, max_size=60),
       start=st.integers(min_value=-3_000, max_value=3_000))
def test_swept_every_period_each_key_comes_within_a_bucket_and_a_period(width, group, period, expiries, start):
    """Keys scheduled at arbitrary instants, some twice; ``pop_due`` called every ``period``:
    each (key, instant) is handed out no earlier than its instant, no later than its bucket's
    end (so less than one bucket after the instant) plus one period, and never twice per call."""
    s = ExpirySchedule(width, group)
    pending: dict[bytes, list[int]] = {}
    for i, e in enumerate(expiries):
        k = b"k%d" % (i % 40)  # keys 0..19 scheduled twice when there are > 40
        s.add(e, k)
        pending.setdefault(k, []).append(e)
    now = start
    while pending:
        out = s.pop_due(now)
        assert len(out) == len(set(out))
        for k in out:
            times = pending[k]
            due = [e for e in times if bucket_end(e, width) <= now]
            assert due, (k, times, now)  # never early
            for e in due:  # late by less than a bucket + a period (from the first call on)
                assert now - max(e, start) < width + period
                times.remove(e)
            if not times:
                del pending[k]
        for times in pending.values():  # nothing left behind that was due
            assert all(bucket_end(e, width) > now for e in times), (times, now)
        now += period
    assert len(s) == 0


def test_many_keys_spread_over_months():
    rnd = random.Random(7)
    s = ExpirySchedule()
    keys = {b"k%d" % i: NOW + rnd.randrange(181 * 24 * HOUR) for i in range(20_000)}
    s.pop_due(NOW)
    for k, e in keys.items():
        s.add(e, k)
    assert len(s) == len(keys)
    seen = {}
    t = NOW
    while t <= NOW + 182 * 24 * HOUR:  # a sweep every 7 minutes: each key at most a bucket + 7 min late
        for k in s.pop_due(t):
            assert k not in seen
            seen[k] = t
        t += 420_000
    assert seen.keys() == keys.keys()
    assert all(keys[k] <= seen[k] < keys[k] + W + 420_000 for k in keys)


# -- MappingTable.schedule / due ----------------------------------------------------------


def make_table():
    import faust

    from agents.mapping_table import MappingTable

    app = faust.App("t-schedule", broker="kafka://localhost:1", store="memory://", key_serializer="raw",
                    value_serializer="raw", web_enabled=False)
    return MappingTable(app, name="mappings", partitions=4, key_type=bytes, value_type=bytes)


def test_table_schedule_and_due():
    table = make_table()
    table.schedule(None, b"never")  # no expiry: a no-op
    table.schedule(NOW + 1500, b"a")
    table.schedule(NOW + 1500, b"a")
    table.schedule(0, b"now")
    assert table.restored is False and table.due(NOW + HOUR) == []  # nothing while a restore runs
    table.restored = True
    assert table.due(NOW - HOUR) == [b"now"]  # the restore kept what was scheduled
    assert table.due(NOW + 1499) == []
    assert table.due(bucket_end(NOW + 1500)) == [b"a"]
    assert table.due(NOW + 1000 * HOUR) == []
    assert len(table._expiry.memory) == 0


def test_rebuild_resets_and_refills_the_schedule_and_rechecks_everything_on_failure():
    table = make_table()
    kp = table.key_partition()
    for i in range(5):
        k = b"k%d" % i
        table.data[k] = b"v%d" % i
        kp[k] = i % 4
    table.active = {0, 1, 2}  # k3 lives in partition 3: someone else's
    table.restored = True
    table.schedule(NOW, b"stale")  # dropped by the rebuild
    done = []

    async def rebuild(next_expiry):
        table.rebuild_schedule_soon(next_expiry, lambda n, secs: done.append(n))
        await table._expiry.rebuild_task

    asyncio.run(rebuild(lambda k, v: NOW + 10_000 * int(k[1:])))
    assert done == [4]
    assert table.due(bucket_end(NOW + 10_000)) == [b"k0", b"k1"]
    assert table.due(bucket_end(NOW + 40_000)) == [b"k2", b"k4"]

    def broken(k, v):
        raise RuntimeError("cannot read")

    asyncio.run(rebuild(broken))  # every key is re-checked at the next sweep
    assert done == [4]
    assert sorted(table.due(0)) == [b"k0", b"k1", b"k2", b"k4"]


# -- the deletion bound counts the bucket ----------------------------------------------------


def test_the_worker_plan_counts_the_schedule_bucket():
    from agents.runtime import plan_params
    from agents.settings import Settings
    from stream.config import load_operators
    from stream.policy import KAFKA_DEFAULTS, PlanParams, plan_topics

    params = plan_params(Settings(bootstrap="localhost:9092"))
    assert params.schedule_bucket_ms == SCHEDULE_BUCKET_MS == PlanParams().schedule_bucket_ms
    assert params.sweeper_delay_ms == params.sweeper_period_ms + SCHEDULE_BUCKET_MS
    plan = plan_topics(load_operators(Path(__file__).resolve().parents[2] / "config" / "operators"),
                       KAFKA_DEFAULTS, params)
    for r in plan.retention.values():
        assert r.schedule_bucket_ms == SCHEDULE_BUCKET_MS
        assert r.worst_case_ms == r.ttl_ms + params.sweeper_period_ms + SCHEDULE_BUCKET_MS + r.derived_bound_ms
        assert r.worst_case_ms <= r.promise_ms
    assert all(row.ok for row in plan.rows)
