"""agents.canary.CanaryJob.watch without a broker: what it concludes from the worker's own table
and vault, and that a canary whose partition moved away is dropped rather than left to rise."""

from __future__ import annotations

from types import SimpleNamespace

from agents.canary import CanaryJob, Tracked
from stream import canary as C
from stream.keyring import Keyring


class FakeTable:
    def __init__(self):
        self.values = {}
        self.active = {0, 1}

    def get_raw(self, key):
        return self.values.get(key)


def job():
    ring = Keyring.create("op", b"\x01" * 32, purpose="lawful_access", epoch=5)
    p = SimpleNamespace(operators={"op": None}, table=FakeTable(), vaults={"op": SimpleNamespace(ring=ring)},
                        counters={}, clock=lambda: 0)
    p.count = lambda name, n=1: p.counters.__setitem__(name, p.counters.get(name, 0) + n)
    j = CanaryJob.__new__(CanaryJob)
    j.table, j.vaults, j.count, j.clock = p.table, p.vaults, p.count, p.clock  # the ports watch() uses
    j.pending, j.finished, j._soon = [], {"op": __import__("collections").deque(maxlen=64)}, False
    return j, p, ring


def track(j, part=0):
    c = C.Canary("op", 1, end_ms=10_000, expiry_ms=15_000, inserted_ms=10_100)
    t = Tracked(c, table_key=b"k%d" % part, routing_key=b"r", partition=part, marker=b"m", address="100::1",
                raw_partition=0, raw_offset=3)
    j.pending.append(t)
    return t


def test_table_then_key_are_observed_gone_and_the_sweep_triggers_a_changelog_scan():
    j, p, ring = job()
    t = track(j)
    j.watch(10_500)
    assert t.c.present == {}  # not in the table yet: nothing concluded
    p.table.values[b"k0"] = ring.seal(b"x", 6, aad=b"k0")
    j.watch(11_000)
    assert set(t.c.present) == set(C.STORES) and t.c.sealed_epoch == 6
    del p.table.values[b"k0"]
    j.watch(15_200)
    assert t.c.gone == {"table": 15_200} and j._soon  # read the changelog now, for the tombstone
    j.watch(16_000)
    assert "epoch-key" not in t.c.gone  # epoch 6 still derivable
    ring.destroy_before(7)
    j.watch(17_000)
    assert t.c.gone["epoch-key"] == 17_000 and t.c.persistence_ms("epoch-key", 0) == 7_000


def test_a_canary_whose_partition_moved_away_is_dropped_not_left_rising():
    j, p, ring = job()
    t = track(j, part=1)
    p.table.values[b"k1"] = ring.seal(b"x", 6, aad=b"k1")
    j.watch(11_000)
    p.table.active = {0}
    j.watch(12_000)
    assert j.pending == [] and p.counters.get("canaries_abandoned") == 1
    assert list(j.finished["op"]) == []
