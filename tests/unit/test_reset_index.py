"""``stream.reset_index``: the keys a NAS's reset must visit, against a reference that looks at
every key (what the writer did before the index, and still does until it is ready)."""

from __future__ import annotations

import random

from stream import intervals as iv
from stream.reset_index import ResetIndex, open_nases

NASES = ["nas-a", "nas-b", "nas-c", None]


def interval(rng: random.Random) -> iv.Interval:
    start = rng.randrange(0, 1000)
    end = None if rng.random() < 0.5 else start + rng.randrange(1, 100)
    return iv.Interval(start_ms=start, end_ms=end, holder="h", nas=rng.choice(NASES), last_ms=start)


def value(rng: random.Random) -> iv.Intervals:
    return tuple(interval(rng) for _ in range(rng.randrange(0, 4)))


def reference(stored: dict, partition: int, operator: str, nas: str) -> set:
    """The keys a full scan would find with an open interval of ``nas``."""
    return {k for (p, op, k), ivs in stored.items()
            if p == partition and op == operator and any(i.end_ms is None and i.nas == nas for i in ivs)}


def test_open_nases_are_the_nases_of_open_intervals_only():
    ivs = (iv.Interval(0, None, "a", nas="x"), iv.Interval(0, 5, "b", nas="y"), iv.Interval(0, None, "c"))
    assert open_nases(ivs) == {"x"}
    assert open_nases(()) == frozenset()


def test_updates_keep_the_index_equal_to_a_scan_of_every_key():
    rng = random.Random(7)
    idx = ResetIndex()
    stored: dict = {}  # (partition, operator, key) → intervals
    for step in range(20_000):
        p, op, k = rng.randrange(3), rng.choice(["op1", "op2"]), b"k%d" % rng.randrange(60)
        old = stored.get((p, op, k), ())
        new = value(rng) if rng.random() < 0.85 else ()  # () : a tombstone
        idx.update(p, op, k, old, new)
        if new:
            stored[(p, op, k)] = new
        else:
            stored.pop((p, op, k), None)
        if step % 97 == 0:
            for p2 in range(3):
                for op2 in ("op1", "op2"):
                    for nas in NASES[:3]:
                        assert set(idx.keys(p2, op2, nas)) == reference(stored, p2, op2, nas)
    assert len(idx) == sum(len(open_nases(v)) for v in stored.values())


def test_values_noted_by_a_rebuild_keep_it_a_superset_and_a_reset_prunes_it():
    """A restore brings values the writer never saw: the rebuild notes them, never removes; a
    later write over a value the index missed still leaves every open key findable."""
    rng = random.Random(11)
    idx = ResetIndex()
    stored: dict = {}
    for i in range(300):  # restored: only noted
        k, v = b"r%d" % i, value(rng)
        stored[(0, "op", k)] = v
        idx.update(0, "op", k, (), v)  # what the rebuild does
    for _ in range(3_000):  # then written through the writer, over what it noted
        k = b"r%d" % rng.randrange(300)
        old, new = stored[(0, "op", k)], value(rng)
        idx.update(0, "op", k, old, new)
        stored[(0, "op", k)] = new
        for nas in NASES[:3]:
            assert reference(stored, 0, "op", nas) <= set(idx.keys(0, "op", nas))
    # the reset visits, closes and writes back: afterwards the NAS has no key left
    for k in idx.keys(0, "op", "nas-a"):
        old = stored[(0, "op", k)]
        new = iv.apply_reset(old, "nas-a", 10_000)
        idx.update(0, "op", k, old, new)
        stored[(0, "op", k)] = new
    assert idx.keys(0, "op", "nas-a") == [] and reference(stored, 0, "op", "nas-a") == set()


def test_keep_forgets_other_partitions_and_ready_is_per_epoch():
    idx = ResetIndex()
    open_a = (iv.Interval(0, None, "h", nas="nas-a"),)
    for p in range(4):
        idx.update(p, "op", b"k", (), open_a)
    idx.keep({1, 3})
    assert [bool(idx.keys(p, "op", "nas-a")) for p in range(4)] == [False, True, False, True]
    assert not idx.ready(0)
    idx.ready_epoch = 2
    assert idx.ready(2) and not idx.ready(3)


def test_keys_is_a_copy_the_caller_may_write_under():
    idx = ResetIndex()
    open_a = (iv.Interval(0, None, "h", nas="nas-a"),)
    for i in range(10):
        idx.update(0, "op", b"k%d" % i, (), open_a)
    for k in idx.keys(0, "op", "nas-a"):
        idx.update(0, "op", k, open_a, iv.apply_reset(open_a, "nas-a", 5))
    assert len(idx) == 0
