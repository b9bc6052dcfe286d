"""The mapping table's own changelog restore (agents/mapping_table.py, not Faust's) on the real
broker: after a restore the worker's copy is exactly what the changelog holds for its
partitions — last write wins, tombstones and heartbeats remove, other partitions untouched —
a second restore continues from where the first stopped, a rebalance drops revoked
partitions and stops a restore it superseded, and nothing is due for the sweeper until the
restore is complete."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from agents.kafka_clients import Clients
from agents.kafka_io import HEARTBEAT_KEY, ensure_topics, producer

pytestmark = [pytest.mark.broker]

PARTITIONS = 4


def make_table(bootstrap: str, app_id: str):
    import faust

    from agents.mapping_table import DirectRecoveryTableManager, MappingTable

    app = faust.App(app_id, broker=f"kafka://{bootstrap}", store="memory://", key_serializer="raw",
                    value_serializer="raw", topic_partitions=PARTITIONS, web_enabled=False,
                    TableManager=DirectRecoveryTableManager)
    table = MappingTable(app, name="mappings", partitions=PARTITIONS, key_type=bytes, value_type=bytes)
    table.restore_clients = Clients(bootstrap)
    return table


def write(bootstrap: str, topic: str, records) -> None:
    p = producer(bootstrap)
    try:
        for partition, key, value in records:
            p.send(topic, key=key, value=value, partition=partition)
        p.flush()
    finally:
        p.close()


def tps(topic: str, parts):
    from faust.types import TP

    return {TP(topic, p) for p in parts}


def contents(table) -> dict:
    kp = table.key_partition()
    return {k: (v, kp[k]) for k, v in table.data.items()}


def test_restore_is_exactly_the_changelog_and_continues_where_it_stopped(bootstrap):
    app_id = f"r{uuid.uuid4().hex[:8]}"
    table = make_table(bootstrap, app_id)
    topic = table.changelog_topic.get_topic_name()
    assert topic == f"{app_id}-mappings-changelog"
    ensure_topics(bootstrap, [topic], partitions=PARTITIONS)

    # 3 000 keys over the four partitions, then overwrites, tombstones and heartbeats
    first = [(i % PARTITIONS, b"k%d" % i, b"v%d" % i) for i in range(3000)]
    later = ([(i % PARTITIONS, b"k%d" % i, b"w%d" % i) for i in range(0, 3000, 7)]
             + [(i % PARTITIONS, b"k%d" % i, None) for i in range(0, 3000, 11)]
             + [(p, HEARTBEAT_KEY, None) for p in range(PARTITIONS)])
    write(bootstrap, topic, first + later)
    expected = {}
    for p, k, v in first + later:
        if v is None:
            expected.pop(k, None)
        else:
            expected[k] = (v, p)

    async def scenario():
        # this worker holds partitions 0-2; partition 3 is someone else's
        await table.on_rebalance(tps(topic, [0, 1, 2]), set(), tps(topic, [0, 1, 2]))
        assert table.restored is False and table.due(2**62) == []
        await table.restore(tps(topic, [0, 1, 2]))
        assert table.restored is True
        mine = {k: x for k, x in expected.items() if x[1] != 3}
        assert contents(table) == mine
        assert table._restored_to == {p: sum(1 for r in first + later if r[0] == p) for p in (0, 1, 2)}

        # nothing new: a restore after a rebalance that kept the partitions reads nothing
        kept = dict(table._restored_to)
        await table.on_rebalance(tps(topic, [0, 1, 2]), set(), set())
        await table.restore(tps(topic, [0, 1, 2]))
        assert table.restore_stats["records"] == 0 and contents(table) == mine and table._restored_to == kept

        # more changelog records arrive; a second restore reads only those
        more = [(0, b"k0", b"again"), (1, b"k1", None), (2, b"new", b"x"), (3, b"k3", b"not mine")]
        write(bootstrap, topic, more)
        await table.restore(tps(topic, [0, 1, 2]))
        mine[b"k0"] = (b"again", 0)
        mine.pop(b"k1", None)
        mine[b"new"] = (b"x", 2)
        assert contents(table) == mine
        assert table.restore_stats["records"] == 3  # not the whole changelog again

        # partition 1 moves away, partition 3 comes: 1's keys go, 3 is read from its start
        await table.on_rebalance(tps(topic, [0, 2, 3]), tps(topic, [1]), tps(topic, [3]))
        assert not any(p == 1 for _, p in contents(table).values()) and 1 not in table._restored_to
        await table.restore(tps(topic, [0, 2, 3]))
        want = {k: x for k, x in mine.items() if x[1] != 1}
        want.update({k: x for k, x in expected.items() if x[1] == 3})
        want[b"k3"] = (b"not mine", 3)
        assert contents(table) == want

    asyncio.run(scenario())


def test_a_rebalance_stops_the_restore_it_superseded(bootstrap, monkeypatch):
    import aiokafka

    import agents.table_restore as mt

    app_id = f"r{uuid.uuid4().hex[:8]}"
    table = make_table(bootstrap, app_id)
    topic = table.changelog_topic.get_topic_name()
    ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
    write(bootstrap, topic, [(i % PARTITIONS, b"k%d" % i, b"v") for i in range(4000)])
    monkeypatch.setattr(mt, "RESTORE_BATCH", 100)  # many small batches

    # the rebalance lands while the restore waits for its third batch
    real_getmany = aiokafka.AIOKafkaConsumer.getmany
    calls = []

    async def getmany(self, *a, **kw):
        batch = await real_getmany(self, *a, **kw)
        calls.append(sum(len(r) for r in batch.values()))
        if len(calls) == 3:
            await table.on_rebalance(tps(topic, [0]), tps(topic, [1, 2, 3]), set())
        return batch

    monkeypatch.setattr(aiokafka.AIOKafkaConsumer, "getmany", getmany)

    async def scenario():
        await table.on_rebalance(tps(topic, range(4)), set(), tps(topic, range(4)))
        await table.restore(tps(topic, range(4)))
        assert len(calls) == 3  # it stopped at the first batch of the new generation
        assert table.restored is False  # and does not claim completion
        assert all(p == 0 for _, p in contents(table).values())  # nor re-adds revoked keys
        had = table._restored_to.get(0, 0)
        assert had < 1000 and len(table.data) == had
        await table.restore(tps(topic, [0]))  # the next recovery finishes partition 0 only
        assert table.restored is True
        assert sorted(table.data.keys()) == sorted(b"k%d" % i for i in range(0, 4000, 4))
        assert table._restored_to == {0: 1000}
        assert table.restore_stats["records"] == 1000 - had  # continued, not restarted

    asyncio.run(scenario())


def test_own_acknowledged_writes_advance_the_restored_offset_only_when_contiguous(bootstrap):
    from faust.types import TP

    table = make_table(bootstrap, f"r{uuid.uuid4().hex[:8]}")
    topic = table.changelog_topic.get_topic_name()
    ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
    write(bootstrap, topic, [(1, b"a", b"1")] * 5)

    class Acked:
        def __init__(self, partition, offset):
            self.res = type("R", (), {"topic_partition": TP(topic, partition), "offset": offset})()

        def result(self):
            return self.res

    async def restore():
        await table.on_rebalance(tps(topic, [0, 1]), set(), tps(topic, [0, 1]))
        table._on_changelog_sent(Acked(0, 0))  # during a restore: nothing moves
        await table.restore(tps(topic, [0, 1]))

    asyncio.run(restore())
    assert table._restored_to == {0: 0, 1: 5}  # an empty partition's copy ends at 0
    table._on_changelog_sent(Acked(0, 0))
    table._on_changelog_sent(Acked(0, 1))
    assert table._restored_to[0] == 2  # our writes, right where the copy ended
    table._on_changelog_sent(Acked(1, 6))  # someone else's record at 5: read it next time
    table._on_changelog_sent(Acked(1, 7))
    assert table._restored_to[1] == 5
    table._on_changelog_sent(Acked(2, 0))  # a partition this worker does not hold
    assert 2 not in table._restored_to
