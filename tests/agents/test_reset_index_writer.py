"""NAS resets through the writer's index give the table a full scan gives it, before and after a
restart, and the index is trusted only once the rebuild after a restore has noted every value.

The reference is a second pipeline fed the same bindings whose index is never ready, so every
reset scans every key: what the writer did before the index existed.  No broker: the writer's
calls, the table's memory store and the app's own recovery hook.
"""

from __future__ import annotations

import asyncio
import random
import time
from ipaddress import ip_network
from types import SimpleNamespace

import pytest

from stream.model import Binding

PARTS = 4
NASES = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]


@pytest.fixture
def make(tmp_path):
    from agents.app import NO_PARTS, Pipeline
    from agents.runtime import OperatorRuntime
    from agents.settings import Settings

    def build(name: str):
        # one keys directory: a "restarted" pipeline opens what the first one sealed
        s = Settings(bootstrap="127.0.0.1:1", app_id="ri", topic_prefix="ri", operators_dir=tmp_path / "ops",
                     keys_dir=tmp_path / "keys", data_dir=tmp_path / name, partitions=PARTS)
        counts: dict = {}
        p = Pipeline(s, {"op": OperatorRuntime("op", ttl_ms=86_400_000, stats_key=b"k" * 32)}, parts=NO_PARTS)
        p.on_count.append(lambda n, k: counts.__setitem__(n, counts.get(n, 0) + k))
        p.test_counts = counts
        p.table.active = set(range(PARTS))
        p.table.restored = True
        return p

    return build


def ready(p) -> None:
    """As the app's recovery leaves a pipeline whose table was never restored: index trusted."""
    p.writer.resets.ready_epoch = p.table.epoch


def contents(p) -> dict:
    """key → intervals, opened: the table as a lookup sees it."""
    op = p.operators["op"]
    out = {}
    for k in list(p.table.data.keys()):
        net, ivs = p.writer.load(op, k)
        assert net is not None
        out[k] = ivs
    return out


class Feed:
    """Random RADIUS traffic of ``n`` addresses on three NASes, with resets among it."""

    def __init__(self, seed: int, n: int) -> None:
        self.rng = random.Random(seed)
        self.n = n
        self.t = int(time.time() * 1000) - 3_600_000
        self.open: dict[int, tuple[str, str]] = {}  # address → (session, nas)
        self.serial = 0

    def next(self) -> tuple[int, Binding] | tuple[None, Binding]:
        rng = self.rng
        self.t += rng.randrange(1, 200)
        if rng.random() < 0.01:
            return None, Binding(kind="radius", action="reset", operator="op", ip=None, subscriber=None,
                                 session=None, nas=rng.choice(NASES), at_ms=self.t)
        a = rng.randrange(self.n)
        if a in self.open and rng.random() < 0.6:
            session, nas = self.open[a]
            action = rng.choice(["update", "stop"])
            if action == "stop":
                del self.open[a]
        else:
            self.serial += 1
            session, nas, action = f"S{self.serial}", rng.choice(NASES), "start"
            self.open[a] = (session, nas)
        ip = ip_network(f"100.64.{a // 256}.{a % 256}/32")
        return a % PARTS, Binding(kind="radius", action=action, operator="op", ip=ip, subscriber=f"sub{a}@x",
                                  session=session, nas=nas, at_ms=self.t)


def bindings_record(p, b: Binding):
    """``b`` as the mapping stage hands it to ``handle_batch``: a bindings record of partition 0."""
    from stream import binding_wire

    return SimpleNamespace(topic=p.names.bindings, partition=0, offset=1, key=b"k", value=binding_wire.encode(b),
                           headers=[])


def apply(p, partition, b, now) -> None:
    if partition is None:  # ingest writes a NAS's reset to every bindings partition
        for q in range(PARTS):
            p.writer.apply_binding(q, b, now)
    else:
        p.writer.apply_binding(partition, b, now)


def test_indexed_resets_change_the_table_exactly_as_full_scans(make):
    indexed, scanned = make("a"), make("b")
    ready(indexed)
    feed = Feed(1, 300)
    resets = 0
    for _ in range(6_000):
        part, b = feed.next()
        now = int(time.time() * 1000)
        apply(indexed, part, b, now)
        apply(scanned, part, b, now)
        if part is None:
            resets += 1
            assert contents(indexed) == contents(scanned)
    assert resets >= 30
    assert indexed.test_counts.get("resets:indexed") == resets * PARTS
    assert scanned.test_counts.get("resets:scanned") == resets * PARTS
    assert not indexed.test_counts.get("resets:scanned")


def test_an_indexed_reset_opens_only_the_keys_of_its_nas(make):
    p = make("a")
    ready(p)
    now = int(time.time() * 1000)
    for a in range(2_000):
        nas = NASES[0] if a < 10 else NASES[1]
        ip = ip_network(f"100.64.{a // 256}.{a % 256}/32")
        p.writer.apply_binding(0, Binding(kind="radius", action="start", operator="op", ip=ip, subscriber="s",
                                          session=f"S{a}", nas=nas, at_ms=now - 60_000), now)
    opened = []
    load = p.writer.load
    p.writer.load = lambda op, key: opened.append(key) or load(op, key)
    p.writer.apply_binding(0, Binding(kind="radius", action="reset", operator="op", ip=None, subscriber=None,
                                      session=None, nas=NASES[0], at_ms=now - 1_000), now)
    p.writer.load = load
    assert len(opened) == 10
    closed = [k for k, ivs in contents(p).items() if ivs[-1].end_ms is not None]
    assert sorted(closed) == sorted(opened)


def _restart(make, first, name):
    """A new pipeline with ``first``'s table as a restore leaves it (values in the store, none
    of them seen by its writer), one rebalance later."""
    second = make(name)
    for k in list(first.table.data.keys()):
        second.table.data[k] = first.table.data[k]
        second.table.key_partition()[k] = first.table.key_partition()[k]
    second.table.epoch = 1
    return second


def test_after_a_restart_resets_scan_until_the_rebuild_then_use_the_index(make):
    first, scanned = make("a"), make("b")
    ready(first)
    feed = Feed(2, 300)
    now = int(time.time() * 1000)
    for _ in range(3_000):
        part, b = feed.next()
        apply(first, part, b, now)
        apply(scanned, part, b, now)
    second = _restart(make, first, "c")
    for _ in range(150):  # before the rebuild: the index knows nothing of the restored values
        part, b = feed.next()
        if part is not None:
            apply(second, part, b, now)
            apply(scanned, part, b, now)
    feed.t += 1
    early = Binding(kind="radius", action="reset", operator="op", ip=None, subscriber=None, session=None,
                    nas=NASES[0], at_ms=feed.t)
    apply(second, None, early, now)
    apply(scanned, None, early, now)
    assert contents(second) == contents(scanned)
    assert second.test_counts.get("resets:scanned") == PARTS and not second.test_counts.get("resets:indexed")

    async def recover():  # the app's own hook: rebuild the schedule (and the index) in the background
        await second._on_recover()
        await second.table._expiry.rebuild_task
    asyncio.run(recover())
    assert second.writer.resets.ready(second.table.epoch)
    # the other NASes' sessions were restored and not written since: only the rebuild saw them
    untouched = [ivs for ivs in contents(second).values() if any(i.end_ms is None and i.nas == NASES[1] for i in ivs)]
    assert len(untouched) >= 20
    for nas in NASES[1:]:
        feed.t += 1
        late = Binding(kind="radius", action="reset", operator="op", ip=None, subscriber=None, session=None,
                       nas=nas, at_ms=feed.t)
        apply(second, None, late, now)
        apply(scanned, None, late, now)
        assert contents(second) == contents(scanned)
    for _ in range(3_000):
        part, b = feed.next()
        apply(second, part, b, now)
        apply(scanned, part, b, now)
        if part is None:
            assert contents(second) == contents(scanned)
    assert second.test_counts.get("resets:indexed")


def test_an_index_trusted_before_the_rebuild_would_miss_restored_sessions(make):
    """The planted fault the ready flag guards against: it is what the tests above would see."""
    first = make("a")
    ready(first)
    now = int(time.time() * 1000)
    ip = ip_network("100.64.0.1/32")
    first.writer.apply_binding(1, Binding(kind="radius", action="start", operator="op", ip=ip, subscriber="s",
                                          session="S1", nas=NASES[0], at_ms=now - 60_000), now)
    second = _restart(make, first, "c")
    second.writer.resets.ready_epoch = second.table.epoch  # the fault: no rebuild yet
    second.writer.apply_binding(1, Binding(kind="radius", action="reset", operator="op", ip=None, subscriber=None,
                                           session=None, nas=NASES[0], at_ms=now - 1_000), now)
    (ivs,) = contents(second).values()
    assert ivs[-1].end_ms is None  # still open: the reset never found it


def test_a_rebalance_stops_trusting_the_index_until_its_own_rebuild(make):
    """A partition a rebalance brings is restored behind the writer's back: the index of the
    epoch before does not cover it, so the next reset scans."""
    p = make("a")
    ready(p)
    now = int(time.time() * 1000)
    reset = Binding(kind="radius", action="reset", operator="op", ip=None, subscriber=None, session=None,
                    nas=NASES[0], at_ms=now - 1_000)
    p.writer.apply_binding(0, reset, now)
    p.table.epoch += 1  # what MappingTable.on_rebalance does first
    p.writer.apply_binding(0, reset, now)
    assert p.test_counts.get("resets:indexed") == 1 and p.test_counts.get("resets:scanned") == 1


def test_a_reset_that_scans_lets_the_event_loop_run_between_chunks(make):
    """A scanning reset at millions of keys must not hold the loop for seconds: the heartbeats
    and the fence's clock run in it (docs/mapping.md, "Known limit")."""
    from agents.table_writer import RESET_CHUNK

    p = make("a")  # never ready: the reset scans every key, as in disk mode or right after a restore
    now = int(time.time() * 1000)
    n = 5 * RESET_CHUNK + 17
    for a in range(n):
        ip = ip_network(f"10.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}/32")
        p.writer.apply_binding(0, Binding(kind="radius", action="start", operator="op", ip=ip, subscriber="s",
                                          session=f"S{a}", nas=NASES[a % 2], at_ms=now - 60_000), now)
    reset = Binding(kind="radius", action="reset", operator="op", ip=None, subscriber=None, session=None,
                    nas=NASES[0], at_ms=now - 1_000)
    rec = bindings_record(p, reset)

    async def scenario():
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        before = ticks
        await p.writer.handle_batch([rec])
        done = True
        await t
        return ticks - before

    ticks = asyncio.run(scenario())
    assert ticks >= 5  # one turn of the loop per chunk of keys opened
    assert p.test_counts.get("resets:scanned") == 1 and p.test_counts.get("mapping:reset") == 1
    closed = [ivs for ivs in contents(p).values() if ivs[-1].end_ms is not None]
    assert len(closed) == (n + 1) // 2  # every session of the NAS, and only those


def test_a_long_reset_gives_its_batch_up_when_a_revoke_waits(make):
    """A scanning reset holds the mapping stage's lock, and a revoke waits for that lock: at
    tens of millions of keys past the group's rebalance timeout.  So the batch is given up
    (``PartitionsLost``, nothing committed, the owner reads it again); it is not dead-lettered."""
    from agents.fence import PartitionsLost
    from agents.table_writer import RESET_CHUNK

    p = make("a")
    now = int(time.time() * 1000)
    for a in range(3 * RESET_CHUNK):
        ip = ip_network(f"10.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}/32")
        p.writer.apply_binding(0, Binding(kind="radius", action="start", operator="op", ip=ip, subscriber="s",
                                          session=f"S{a}", nas=NASES[0], at_ms=now - 60_000), now)
    reset = Binding(kind="radius", action="reset", operator="op", ip=None, subscriber=None, session=None,
                    nas=NASES[0], at_ms=now - 1_000)
    rec = bindings_record(p, reset)
    stage = p.mapping_stage

    async def scenario():
        stage.revokes_waiting = 0

        async def revoke_soon():
            await asyncio.sleep(0)
            stage.revokes_waiting += 1  # what on_revoked does before it waits for the lock
        asyncio.ensure_future(revoke_soon())
        with pytest.raises(PartitionsLost):
            await p.writer.handle_batch([rec])
    asyncio.run(scenario())
    closed = sum(1 for ivs in contents(p).values() if ivs[-1].end_ms is not None)
    assert 0 < closed < 3 * RESET_CHUNK  # given up part-way: the owner applies it again
    dead = [w for w in p.outbox._items if w[0] is p.deadletter]
    assert dead == [] and not any(k.startswith("rejected:") for k in p.test_counts)


def test_on_revoked_counts_itself_waiting_until_it_has_the_lock():
    from agents.mapping_stage import MappingStage

    class Table:
        changelog_topic = type("T", (), {"get_topic_name": lambda self: "cl"})()
        source_topics = {"b"}
        active = {0, 1}
        outbox = None

    async def flush():
        pass

    s = MappingStage.__new__(MappingStage)
    s.name, s.table, s.fence, s.flush, s.owned, s._epoch, s.consumer = "mapping", Table(), None, flush, {0, 1}, 0, None
    s._lock, s.revokes_waiting, s._read, s._committed = asyncio.Lock(), 0, {}, {}
    tp = type("TP", (), {"topic": "b", "partition": 1})()

    async def scenario():
        await s._lock.acquire()  # a batch in flight
        t = asyncio.ensure_future(s.on_revoked(revoked=[tp]))
        for _ in range(3):
            await asyncio.sleep(0)
        waiting = s.revokes_waiting
        s._lock.release()
        await t
        return waiting
    assert asyncio.run(scenario()) == 1
    assert s.revokes_waiting == 0 and s.owned == {0}
