"""The restore's batch sinks without a broker: ``agents.table_checkpoints.apply_restored`` (disk) leaves the
store exactly as the per-record ``Batch`` calls do (values, tombstones, heartbeats, schedule
entries from the revisit header, from ``next_expiry`` when the header is missing or not a
number, none when ``next_expiry`` says never; the checkpoints), and ``agents.table_restore.apply_memory`` leaves
the memory dict and key → partition map at the changelog's last word per key."""

from __future__ import annotations

import types
from collections import namedtuple

from agents.disk_store import DiskStore
from agents.mapping_table import REVISIT_HEADER
from agents.table_checkpoints import apply_restored
from agents.table_restore import apply_memory
from stream import disk_bound as dbound

BOUND = dbound.DiskBound(cycle_ms=1_000, tick_ms=100, compaction_allowance_ms=60_000)
TP = namedtuple("TP", "topic partition")
Rec = namedtuple("Rec", "key value headers offset timestamp")


def records() -> dict:
    """Two partitions' worth of one ``getmany`` batch, every case of the restore."""
    h = lambda v: ((REVISIT_HEADER, v),)  # noqa: E731
    p0 = [Rec(b"a", b"1", h(b"5000"), 0, 100),
          Rec(b"b", b"2", h(b"5000"), 1, 101),            # the same header value: one prefix
          Rec(b"c", b"3", h(b"12001"), 2, 102),
          Rec(b"d", b"4", (), 3, 103),                     # no header: next_expiry
          Rec(b"e", b"5", h(b"soon"), 4, 104),             # not a number: next_expiry
          Rec(b"never", b"6", None, 5, 105),               # next_expiry says never: no entry
          Rec(b"a", None, (), 6, 106),                     # tombstone after a put in one batch
          Rec(None, b"x", (), 7, 107),                     # no key: skipped
          Rec(b"f", b"7", (("other", b"1"), (REVISIT_HEADER, b"bad"), (REVISIT_HEADER, b"3000")), 8, 108)]
    p2 = [Rec(b"g", None, (), 40, 0),                      # a tombstone of a key never seen
          Rec(b"g", b"8", h(b"-5"), 41, 0),                # before 0: bucket 0; timestamp 0: now
          Rec(b"heartbeat", None, (), 42, 0)]
    return {TP("t", 0): p0, TP("t", 1): [], TP("t", 2): p2}


def next_expiry(k: bytes, v: bytes):
    return None if k == b"never" else 7_000


def per_record(st: DiskStore, batch: dict) -> None:
    """What the restore did before: one ``Batch`` call per change."""
    b = st.batch()
    for tp, recs in batch.items():
        for r in recs:
            if r.key is None:
                continue
            if r.value is None:
                b.delete(tp.partition, r.key)
                continue
            b.put(tp.partition, r.key, r.value)
            when = None
            for hk, hv in r.headers or ():
                if hk == REVISIT_HEADER:
                    try:
                        when = int(hv)
                    except (TypeError, ValueError):
                        when = None
            if when is None:
                when = next_expiry(r.key, r.value)
            b.schedule(tp.partition, when, r.key)
    st.write(b)


def dump(st: DiskStore) -> dict:
    return {p: (sorted(st.iter_items(p)), st.due(10**12)) for p in sorted(st.partitions())}


def test_disk_sink_matches_the_per_record_calls(tmp_path):
    want = DiskStore(tmp_path / "want", bound=BOUND, width_ms=1_000)
    per_record(want, records())
    got = DiskStore(tmp_path / "got", bound=BOUND, width_ms=1_000)
    t = types.SimpleNamespace(disk=got, next_expiry=next_expiry, _restored_to={})
    assert apply_restored(t.disk, t.next_expiry, t._restored_to, records()) == 12
    assert dump(got) == dump(want)
    assert dump(got)[0][0] == [(b"b", b"2"), (b"c", b"3"), (b"d", b"4"), (b"e", b"5"), (b"f", b"7"), (b"never", b"6")]
    due = got.due(10**12)
    assert (0, 3, b"f") in due and (0, 5, b"b") in due and (0, 13, b"c") in due and (0, 7, b"e") in due
    assert (2, 0, b"g") in due and not [k for _, _, k in due if k == b"never"]
    assert t._restored_to == {0: 9, 2: 43} and got.checkpoint(0) == 9 and got.checkpoint(2) == 43
    assert got.checkpoint_at(0) == 108 and got.checkpoint_at(2) > 10**12  # timestamp 0: the wall clock
    assert 1 not in got.partitions()  # an empty partition is not touched


def test_memory_sink_keeps_the_last_word_per_key():
    t = types.SimpleNamespace(data=types.SimpleNamespace(data={b"g": b"old"}), _restored_to={},
                              key_partition=lambda: kp)
    kp = {b"g": 2}
    assert apply_memory(t.data.data, t.key_partition(), t._restored_to, records()) == 12
    assert t.data.data == {b"b": b"2", b"c": b"3", b"d": b"4", b"e": b"5", b"never": b"6", b"f": b"7", b"g": b"8"}
    assert kp == {k: 0 for k in (b"b", b"c", b"d", b"e", b"never", b"f")} | {b"g": 2}
    assert t._restored_to == {0: 9, 2: 43}
