"""The mapping table's disk mode (``MappingTable.use_disk``) on the real broker: a fresh
restore writes the changelog into RocksDB in batches with schedule entries; a restart with the
store intact reads only the changelog after the checkpoint; the store holds only acknowledged
writes, applied in offset order, so after a crash before the acknowledgement, after a gap in
the acknowledged offsets, or after another owner wrote meanwhile, the restarted store answers
exactly what the changelog says; revoked partitions are dropped whole; a checkpoint that cannot
be continued from (too old, past the end) is restored afresh; the sweeper's schedule is read
from and removed in the store."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from agents.disk_store import DiskStore
from agents.kafka_clients import Clients
from agents.kafka_io import HEARTBEAT_KEY, ensure_topics, producer
from stream.disk_bound import DiskBound

pytestmark = [pytest.mark.broker]

PARTITIONS = 4
BOUND = DiskBound(cycle_ms=60_000, tick_ms=1_000, compaction_allowance_ms=60_000)


def make_table(bootstrap: str, app_id: str, store_dir):
    import faust

    from agents.mapping_table import DirectRecoveryTableManager, MappingTable

    app = faust.App(app_id, broker=f"kafka://{bootstrap}", store="memory://", key_serializer="raw",
                    value_serializer="raw", topic_partitions=PARTITIONS, web_enabled=False,
                    TableManager=DirectRecoveryTableManager)
    table = MappingTable(app, name="mappings", partitions=PARTITIONS, key_type=bytes, value_type=bytes)
    table.restore_clients = Clients(bootstrap)
    table.use_disk(DiskStore(store_dir, bound=BOUND, width_ms=1_000))
    return table


def write(bootstrap: str, topic: str, records, headers=None) -> None:
    p = producer(bootstrap)
    try:
        for partition, key, value in records:
            p.send(topic, key=key, value=value, partition=partition, headers=headers)
        p.flush()
    finally:
        p.close()


def tps(topic: str, parts):
    from faust.types import TP

    return {TP(topic, p) for p in parts}


def contents(table) -> dict:
    """key → (value, partition) of everything in the table's store (pending writes included)."""
    out = {}
    for p in sorted(table.disk.partitions()):
        for k, v in table.disk.iter_items(p):
            out[k] = (v, p)
    for k, (_, p, v) in table._writes.pending.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = (v, p)
    return out


def store_only(table) -> dict:
    return {k: (v, p) for p in sorted(table.disk.partitions()) for k, v in table.disk.iter_items(p)}


def changelog_state(bootstrap: str, topic: str, parts) -> dict:
    """What a fresh restore of ``parts`` gives: the changelog read from its start, last write wins."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        tp_list = [TopicPartition(topic, p) for p in parts]
        c.assign(tp_list)
        c.seek_to_beginning(*tp_list)
        ends = c.end_offsets(tp_list)
        state = {}
        while any(c.position(tp) < ends[tp] for tp in tp_list):
            for tp, recs in c.poll(timeout_ms=1000).items():
                for r in recs:
                    if r.key is None:
                        continue
                    if r.value is None:
                        state.pop(r.key, None)
                    else:
                        state[r.key] = (r.value, tp.partition)
        state.pop(HEARTBEAT_KEY, None)
        return state
    finally:
        c.close()


class Delivered:
    """What a Faust future message's callback sees: ``result()`` → the broker's metadata."""

    def __init__(self, md) -> None:
        self.md = md

    def result(self):
        return self.md


class Failed:
    def result(self):
        raise RuntimeError("not delivered")


async def deliver(table, bootstrap: str, *, only=None, persist: bool = True) -> list:
    """Send the table's queued changelog writes to the real broker in order (``only``: indices of
    the writes to send; the others are dropped, as if never handed over), call each one's
    acknowledgement callback with the broker's answer, then ``DiskWrites.persist`` as
    ``TableOutbox.flush`` does.  Returns the offsets written."""
    from aiokafka import AIOKafkaProducer

    items, table.outbox._items = table.outbox._items, []
    p = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await p.start()
    offsets = []
    try:
        for i, (channel, key, value, partition, headers, cb) in enumerate(items):
            if only is not None and i not in only:
                continue
            md = await p.send_and_wait(channel.get_topic_name(), key=key, value=value, partition=partition,
                                       headers=headers)
            offsets.append(md.offset)
            if cb is not None:
                cb(Delivered(md))
    finally:
        await p.stop()
    if persist:
        table._writes.persist()
    return offsets


def setup(bootstrap, tmp_path):
    app_id = f"d{uuid.uuid4().hex[:8]}"
    table = make_table(bootstrap, app_id, tmp_path / "state")
    topic = table.changelog_topic.get_topic_name()
    ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
    return app_id, table, topic


def reopen(table, bootstrap, app_id, tmp_path):
    """The worker restarts: the store is closed as it is (nothing pending is written) and a new
    table opens the same directory."""
    table.disk.close()
    return make_table(bootstrap, app_id, tmp_path / "state")


def test_fresh_restore_then_restart_reads_only_after_the_checkpoint(bootstrap, tmp_path):
    app_id, table, topic = setup(bootstrap, tmp_path)
    first = [(i % PARTITIONS, b"k%d" % i, b"v%d" % i) for i in range(3000)]
    later = ([(i % PARTITIONS, b"k%d" % i, b"w%d" % i) for i in range(0, 3000, 7)]
             + [(i % PARTITIONS, b"k%d" % i, None) for i in range(0, 3000, 11)]
             + [(p, HEARTBEAT_KEY, None) for p in range(PARTITIONS)])
    write(bootstrap, topic, first + later)
    # records carrying their schedule instant: the restore schedules them without opening them
    write(bootstrap, topic, [(0, b"timed", b"t")], headers=[("ipanon-revisit", b"5000")])

    async def scenario(t):
        await t.on_rebalance(tps(topic, [0, 1, 2]), set(), tps(topic, [0, 1, 2]))
        await t.restore(tps(topic, [0, 1, 2]))
        assert t.restored is True

    asyncio.run(scenario(table))
    want = {k: x for k, x in changelog_state(bootstrap, topic, [0, 1, 2]).items()}
    assert len(want) > 1500
    assert store_only(table) == want  # partition 3 is someone else's: not in the store
    assert table.disk.partitions() == {0, 1, 2}
    ends = {p: sum(1 for r in first + later if r[0] == p) + (p == 0) for p in (0, 1, 2)}
    assert {p: table.disk.checkpoint(p) for p in (0, 1, 2)} == ends == table._restored_to
    # the schedule: the header's instant for "timed" (bucket 5), at once for the others (no
    # next_expiry here): every stored key has an entry (a key deleted later keeps a stale one,
    # which the sweeper finds empty and removes)
    due = table.disk.due(4_999)
    assert (0, 5, b"timed") not in due and set(want) - {b"timed"} <= {k for _, _, k in due}
    assert (0, 5, b"timed") in table.disk.due(5_000)

    # restart with the store intact: more records arrive meanwhile; only they are read
    more = [(0, b"k4", b"again"), (1, b"k1", None), (2, b"new", b"x"), (3, b"k3", b"not mine")]
    write(bootstrap, topic, more)
    table = reopen(table, bootstrap, app_id, tmp_path)
    assert table._restored_to == ends
    asyncio.run(scenario(table))
    assert table.restore_stats["records"] == 3 and table.restore_stats["store"] == "disk"
    assert store_only(table) == changelog_state(bootstrap, topic, [0, 1, 2])

    # partition 1 is revoked: its column families are dropped whole, its checkpoint with them
    async def revoke(t):
        await t.on_rebalance(tps(topic, [0, 2]), tps(topic, [1]), set())

    asyncio.run(revoke(table))
    assert table.disk.partitions() == {0, 2} and 1 not in table._restored_to
    assert table.disk.checkpoint(1) is None and table.get_raw(b"k5") is None


def test_own_writes_reach_the_store_only_once_acknowledged_and_in_offset_order(bootstrap, tmp_path):
    app_id, table, topic = setup(bootstrap, tmp_path)
    write(bootstrap, topic, [(0, b"a", b"a0"), (0, b"b", b"b0"), (1, b"c", b"c0")])

    async def restore(t, parts=(0, 1)):
        await t.on_rebalance(tps(topic, parts), set(), tps(topic, parts))
        await t.restore(tps(topic, parts))

    asyncio.run(restore(table))
    assert table._restored_to == {0: 2, 1: 1}

    # a write is readable at once, but not in the store until the broker acknowledged it
    table.put(0, b"a", b"a1", revisit_ms=7_000)
    table.delete(0, b"b")
    table.heartbeat(0, HEARTBEAT_KEY)
    table.put(1, b"d", b"d1")
    assert table.get_raw(b"a") == b"a1" and table.get_raw(b"b") is None and table.get_raw(b"d", 1) == b"d1"
    assert table.disk.get(0, b"a") == b"a0" and table.disk.get(0, b"b") == b"b0"
    offsets = asyncio.run(deliver(table, bootstrap))
    assert offsets == [2, 3, 4, 1]
    assert table._writes.pending == {}
    assert table.disk.get(0, b"a") == b"a1" and table.disk.get(0, b"b") is None and table.disk.get(1, b"d") == b"d1"
    # the heartbeat's offset counts too: the checkpoint is contiguous
    assert table.disk.checkpoint(0) == 5 and table.disk.checkpoint(1) == 2
    assert (0, 7, b"a") in table.disk.due(7_000)  # the schedule entry went with the batch

    # a restart with the store intact reads nothing: the store already is the changelog
    table = reopen(table, bootstrap, app_id, tmp_path)
    asyncio.run(restore(table))
    assert table.restore_stats["records"] == 0
    assert store_only(table) == changelog_state(bootstrap, topic, [0, 1])


def test_a_crash_before_the_acknowledgement_leaves_the_store_at_the_changelog(bootstrap, tmp_path):
    """The store never runs ahead of the changelog: a write made but never acknowledged (the
    worker died first) is not in the store after the restart, so the re-read bindings write it
    again instead of finding it there and writing nothing (the changelog would lack it for ever)."""
    app_id, table, topic = setup(bootstrap, tmp_path)
    write(bootstrap, topic, [(0, b"a", b"a0")])

    async def restore(t):
        await t.on_rebalance(tps(topic, [0]), set(), tps(topic, [0]))
        await t.restore(tps(topic, [0]))

    asyncio.run(restore(table))
    table.put(0, b"a", b"a1")
    table.put(0, b"z", b"z1")
    table._writes.persist()  # a flush that got no acknowledgement (e.g. a sweep's, before the crash)
    assert table.get_raw(b"a") == b"a1" and table.disk.get(0, b"a") == b"a0" and table.disk.get(0, b"z") is None
    table = reopen(table, bootstrap, app_id, tmp_path)  # crash: the writes never reached the broker
    asyncio.run(restore(table))
    assert table.get_raw(b"a") == b"a0" and table.get_raw(b"z") is None
    assert store_only(table) == changelog_state(bootstrap, topic, [0])

    # same, with the write on the broker but its acknowledgement lost: the restart reads it
    table.put(0, b"a", b"a2")
    asyncio.run(deliver(table, bootstrap, persist=False))
    table = reopen(table, bootstrap, app_id, tmp_path)
    asyncio.run(restore(table))
    assert table.get_raw(b"a") == b"a2" and table.restore_stats["records"] == 1


def test_acknowledged_writes_after_a_gap_wait_and_a_restart_reads_the_gap(bootstrap, tmp_path):
    """Another writer's record (or one whose acknowledgement was lost) sits between the checkpoint
    and our acknowledged writes: they are not applied, the checkpoint does not pass the gap, and
    the restart reads from there — the store then says what the changelog says."""
    app_id, table, topic = setup(bootstrap, tmp_path)

    async def restore(t):
        await t.on_rebalance(tps(topic, [0]), set(), tps(topic, [0]))
        await t.restore(tps(topic, [0]))

    asyncio.run(restore(table))
    assert table._restored_to == {0: 0}
    write(bootstrap, topic, [(0, b"k", b"foreign"), (0, b"x", b"foreign-x")])  # offsets 0, 1
    table.put(0, b"k", b"mine")
    table.put(0, b"y", b"y1")
    assert asyncio.run(deliver(table, bootstrap)) == [2, 3]
    assert table.disk.checkpoint(0) == 0 and table.disk.get(0, b"k") is None  # waits behind the gap
    assert table.get_raw(b"k") == b"mine" and table.get_raw(b"y") == b"y1"  # but reads see them
    assert sorted(table._writes.acked[0]) == [2, 3]
    table = reopen(table, bootstrap, app_id, tmp_path)
    asyncio.run(restore(table))
    assert store_only(table) == changelog_state(bootstrap, topic, [0]) == {
        b"k": (b"mine", 0), b"x": (b"foreign-x", 0), b"y": (b"y1", 0)}


def test_the_gap_is_filled_from_the_changelog_while_running(bootstrap, tmp_path, monkeypatch):
    import agents.table_disk as td

    monkeypatch.setattr(td, "GAP_S", 0.0)
    app_id, table, topic = setup(bootstrap, tmp_path)

    async def scenario():
        await table.on_rebalance(tps(topic, [0]), set(), tps(topic, [0]))
        await table.restore(tps(topic, [0]))
        write(bootstrap, topic, [(0, b"x", b"lost-ack")])  # offset 0: never acknowledged to us
        table.put(0, b"y", b"y1")
        await deliver(table, bootstrap)  # offset 1 acknowledged: waits, and the gap is read
        for _ in range(100):
            if table.disk.checkpoint(0) == 2:
                break
            await asyncio.sleep(0.1)

    asyncio.run(scenario())
    assert table.disk.checkpoint(0) == 2 and table._writes.pending == {} and table._writes.acked.get(0) == {}
    assert store_only(table) == changelog_state(bootstrap, topic, [0])


def test_another_owner_in_between_and_a_checkpoint_too_old_or_past_the_end(bootstrap, tmp_path):
    app_id, table, topic = setup(bootstrap, tmp_path)
    write(bootstrap, topic, [(0, b"a", b"a0"), (0, b"b", b"b0")])

    async def restore(t):
        await t.on_rebalance(tps(topic, [0]), set(), tps(topic, [0]))
        await t.restore(tps(topic, [0]))

    asyncio.run(restore(table))
    table.disk.close()
    # meanwhile another worker owned partition 0 and wrote (a tombstone among its writes)
    write(bootstrap, topic, [(0, b"a", None), (0, b"c", b"c1")])
    table = make_table(bootstrap, app_id, tmp_path / "state")
    asyncio.run(restore(table))
    assert table.restore_stats["records"] == 2
    assert store_only(table) == changelog_state(bootstrap, topic, [0]) == {b"b": (b"b0", 0), b"c": (b"c1", 0)}

    # a checkpoint older than the changelog keeps tombstones is not continued from
    write(bootstrap, topic, [(0, b"d", b"d1")])
    table.disk.close()
    table = make_table(bootstrap, app_id, tmp_path / "state")
    table.max_checkpoint_age_ms = 0
    asyncio.run(restore(table))
    assert table.restore_stats["records"] == 5  # the whole partition, afresh
    assert store_only(table) == changelog_state(bootstrap, topic, [0])

    # a checkpoint past the changelog's end (the topic was re-created): afresh too
    b = table.disk.batch().put(0, b"ghost", b"g").checkpoint(0, 10_000, 0)
    table.disk.write(b)
    table.disk.close()
    table = make_table(bootstrap, app_id, tmp_path / "state")
    asyncio.run(restore(table))
    assert b"ghost" not in store_only(table)
    assert store_only(table) == changelog_state(bootstrap, topic, [0])


def test_sweeper_schedule_in_the_store(bootstrap, tmp_path):
    app_id, table, topic = setup(bootstrap, tmp_path)

    async def restore(t):
        await t.on_rebalance(tps(topic, [0, 1]), set(), tps(topic, [0, 1]))
        await t.restore(tps(topic, [0, 1]))

    assert table.due_items(10**12) == []  # nothing while not restored
    asyncio.run(restore(table))
    table.put(0, b"a", b"1", revisit_ms=3_000)
    table.put(1, b"b", b"1", revisit_ms=9_000)
    asyncio.run(deliver(table, bootstrap))
    assert table.due_items(2_999) == []
    assert table.due_items(3_000) == [(b"a", 0)]
    assert table.schedule_complete
    # handed out but not removed until the next store batch: a crash before it loses nothing
    assert table.disk.due(3_000) == [(0, 3, b"a")]
    table.schedule(20_000, b"a", 0)  # the sweeper's result
    table._writes.persist()
    assert table.disk.due(10_000) == [(1, 9, b"b")]
    table = reopen(table, bootstrap, app_id, tmp_path)
    asyncio.run(restore(table))
    assert table.due_items(20_000) == [(b"a", 0), (b"b", 1)]  # no rebuild: it was on disk
    assert list(table.keys_of([0])) == [b"a"] and sorted(table.keys_of([0, 1])) == [b"a", b"b"]
    assert list(table.keys_of([0, 1], b"b")) == [b"b"] and list(table.keys_of([0, 1], b"c")) == []
    # pending writes: a new key is walked, a deleted one is not, and writing while walking
    # (a NAS reset rewrites each key it meets) walks no key twice
    table.put(0, b"a2", b"x")
    table.delete(1, b"b")
    walked = []
    for k in table.keys_of([0, 1]):
        walked.append(k)
        table.put(0 if k.startswith(b"a") else 1, k, b"rewritten")
    assert sorted(walked) == [b"a", b"a2"]


def test_the_erasure_tick_runs_beside_the_table(bootstrap, tmp_path):
    app_id, table, topic = setup(bootstrap, tmp_path)
    write(bootstrap, topic, [(0, b"k%d" % i, os.urandom(40)) for i in range(500)])

    async def scenario():
        await table.on_rebalance(tps(topic, [0]), set(), tps(topic, [0]))
        await table.restore(tps(topic, [0]))
        table.delete(0, b"k1")
        await deliver(table, bootstrap)
        info = await table.erase_tick(10**12)
        assert info["compacted"] == [0] and info["overran"] is False
        assert table.get_raw(b"k2") is not None and table.get_raw(b"k1") is None  # reopened, usable
        assert table.disk.checkpoint(0) == 501

    asyncio.run(scenario())


def test_a_key_walk_paused_across_the_erasure_tick_and_store_batches_walks_every_key_once(bootstrap, tmp_path):
    """A NAS reset that scans lets the event loop run between chunks of keys
    (``TableWriter.reset_steps``): meanwhile the erasure tick reopens the store and acknowledged
    writes reach it.  The walk must go on over the reopened store, every key once."""
    app_id, table, topic = setup(bootstrap, tmp_path)
    n = 23_456  # past two of the store walk's 10 000-key chunks
    write(bootstrap, topic, [(0, b"k%06d" % i, b"v") for i in range(n)])

    async def scenario():
        await table.on_rebalance(tps(topic, [0]), set(), tps(topic, [0]))
        await table.restore(tps(topic, [0]))
        walk = table.keys_of([0], b"k")
        seen = [next(walk) for _ in range(100)]
        table.delete(0, b"k000050")  # behind the walk
        table.delete(0, b"k020000")  # ahead of it: not walked
        table.put(0, b"k030000", b"new")  # a new key ahead of it: walked (it is in the store)
        await deliver(table, bootstrap)
        info = await table.erase_tick(10**12)  # reopens the store under the paused walk
        assert info["compacted"] == [0]
        seen += list(walk)
        return seen

    seen = asyncio.run(scenario())
    assert len(seen) == len(set(seen)) == n  # n − the one deleted ahead + the one added
    assert b"k020000" not in seen and b"k030000" in seen


def test_a_changelog_created_again_is_restored_afresh_even_past_the_old_checkpoint(bootstrap, tmp_path):
    """A checkpoint is an offset of one topic: after the changelog is deleted and created again
    and refilled past the old checkpoint, the offsets alone look fine; the topic id does not."""
    import time

    from kafka import KafkaAdminClient

    app_id, table, topic = setup(bootstrap, tmp_path)
    write(bootstrap, topic, [(0, b"old%d" % i, b"o") for i in range(5)])

    async def restore(t):
        await t.on_rebalance(tps(topic, [0]), set(), tps(topic, [0]))
        await t.restore(tps(topic, [0]))

    asyncio.run(restore(table))
    assert table.disk.checkpoint(0) == 5 and table.disk.get_meta(b"topic-id") is not None
    table.disk.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
        for _ in range(120):
            if topic not in admin.list_topics():
                break
            time.sleep(0.5)
    finally:
        admin.close()
    for _ in range(60):
        try:
            ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
            write(bootstrap, topic, [(0, b"new%d" % i, b"n") for i in range(8)])
            break
        except Exception:  # the deletion still in progress on the broker
            time.sleep(1)
    table = make_table(bootstrap, app_id, tmp_path / "state")
    asyncio.run(restore(table))
    assert store_only(table) == changelog_state(bootstrap, topic, [0]) == {b"new%d" % i: (b"n", 0) for i in range(8)}


def test_a_store_damaged_where_rocksdb_reads_it_is_restored_from_the_changelog(bootstrap, tmp_path):
    """Corrupted SST blocks pass the open (RocksDB checks sizes, not contents) and fail the first
    read: the restore deletes the store and reads the changelog afresh, never answering from it."""
    app_id, table, topic = setup(bootstrap, tmp_path)
    write(bootstrap, topic, [(p, b"k%d" % i, b"v%d" % i) for i in range(40) for p in (i % 2,)])

    async def restore(t):
        await t.on_rebalance(tps(topic, [0, 1]), set(), tps(topic, [0, 1]))
        await t.restore(tps(topic, [0, 1]))

    asyncio.run(restore(table))
    table.disk.flush()
    table.disk.close()
    for f in (tmp_path / "state").glob("*.sst"):
        with open(f, "r+b") as fh:  # the first data block (the footer and index at the end kept)
            fh.write(os.urandom(16))
    table = make_table(bootstrap, app_id, tmp_path / "state")
    asyncio.run(asyncio.wait_for(restore(table), 60))
    assert table.restored and store_only(table) == changelog_state(bootstrap, topic, [0, 1])
    assert len(store_only(table)) == 40


def test_a_damaged_block_met_by_a_read_deletes_the_store_and_exits(tmp_path, monkeypatch):
    """A lookup or binding that meets a damaged block must neither answer from the store nor be
    dead-lettered (lost): the store is deleted and the worker exits, to restore on its next start."""
    from agents.mapping_table import MappingTable
    from agents.table_disk import DiskWrites

    exits = []
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code))
    t = MappingTable.__new__(MappingTable)
    t.disk = DiskStore(tmp_path / "state", bound=BOUND)
    t._writes = DiskWrites(t, {})

    class Broken:
        path = t.disk.path

        def get(self, p, key):
            raise Exception("Corruption: block checksum mismatch: (test)")

        def partitions(self):
            return {0}

    t.disk.close()
    t.disk = Broken()
    with pytest.raises(Exception, match="Corruption"):
        t.get_raw(b"k")
    assert exits == [70] and not (tmp_path / "state").exists()
    # any other error is the caller's: no exit
    Broken.get = lambda self, p, key: (_ for _ in ()).throw(OSError("disk full"))
    (tmp_path / "state").mkdir()
    with pytest.raises(OSError):
        t.get_raw(b"k", 0)
    assert exits == [70] and (tmp_path / "state").exists()


def test_every_read_of_the_store_that_meets_a_damaged_block_deletes_it_and_exits(tmp_path, monkeypatch):
    """Not only ``get_raw``: the partition of a key (the sweeper's schedule, a binding), the key
    walk of a reset binding, the batch write (RocksDB refuses writes once a compaction met a damaged
    block) and the erasure tick's compactions go the same way, with one CRITICAL line naming the
    reader; none answers or dead-letters from a damaged store."""
    import logging

    from agents.mapping_table import MappingTable
    from agents.table_disk import DiskWrites, StoreEraser

    exits = []
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code))
    path = tmp_path / "state"
    bad = Exception("Corruption: block checksum mismatch: (test)")

    class Broken:
        def __init__(self):
            self.path = path

        def partitions(self):
            return {0}

        def get(self, p, key):
            raise bad

        def iter_keys(self, p, prefix=b""):
            yield b"k0"
            raise bad

        def batch(self):
            class B:
                def schedule(self, *a):
                    pass
            return B()

        def write(self, b):
            raise bad

        def erase_tick(self, now_ms, roll_manifest=True):
            raise bad

    t = MappingTable.__new__(MappingTable)
    t.disk = Broken()
    t._writes = DiskWrites(t, {})
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("ipanon").addHandler(handler)
    try:
        reads = {
            "partition_of": lambda: t._writes.partition_of(b"k"),
            "keys": lambda: list(t._writes.keys({0}, b"")),
            "persist": lambda: (t._writes.schedule_op(0, 1, b"k", True), t._writes.persist()),
            "erase_tick": lambda: asyncio.run(StoreEraser(t).erase_tick(0)),
        }
        for what, read in reads.items():
            path.mkdir()
            exits.clear()
            records.clear()
            with pytest.raises(Exception, match="Corruption"):
                read()
            crit = [r.getMessage() for r in records if r.levelno == logging.CRITICAL]
            assert exits == [70] and not path.exists(), what
            assert len(crit) == 1 and "is damaged" in crit[0] and "read by " in crit[0], (what, crit)
    finally:
        logging.getLogger("ipanon").removeHandler(handler)
