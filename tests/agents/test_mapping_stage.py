"""agents.mapping_stage: the mapping stage reads exactly the table's partitions, lets go of a
revoked one only after its in-flight batch is acknowledged and committed (and writes nothing to
it afterwards), starts a partition at its own committed offset or, after an upgrade from the
Faust agent, at the offset Faust's group committed; and the mapping handler (outcomes counted
once per batch, bad records dead-lettered with their reason, heartbeats skipped).

The stage's consumer and commits run against the project's real local broker; the table is a
stand-in with the fields the stage reads (``active``, ``restored``, topic names)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from ipaddress import ip_network
from collections import namedtuple
from types import SimpleNamespace

import pytest

from agents.kafka_io import HEARTBEAT_KEY, ensure_topics, producer

TP = namedtuple("TP", "topic partition")
Rec = namedtuple("Rec", "topic partition offset key value headers")


# -- the handler, without a broker ----------------------------------------------------------------

@pytest.fixture
def pipeline(tmp_path):
    from agents.app import NO_PARTS, Pipeline
    from agents.runtime import OperatorRuntime
    from agents.settings import Settings

    s = Settings(bootstrap="127.0.0.1:1", app_id="tm", topic_prefix="tm", operators_dir=tmp_path / "ops",
                 keys_dir=tmp_path / "keys", data_dir=tmp_path / "data", partitions=4)
    counts: dict = {}
    p = Pipeline(s, {"op": OperatorRuntime("op", ttl_ms=86_400_000, stats_key=b"k" * 32)}, parts=NO_PARTS)
    p.on_count.append(lambda name, n: counts.__setitem__(name, counts.get(name, 0) + n))
    p.test_counts = counts
    return p


def test_a_batch_applies_bindings_dead_letters_bad_records_and_counts_once(pipeline):
    from stream import binding_wire
    from stream.model import Binding

    now_s = int(time.time())
    b = Binding(kind="radius", action="start", operator="op", ip=ip_network("100.64.0.1/32"), subscriber="a@x", session="S1",
                nas="192.0.2.1", at_ms=now_s * 1000 - 60_000)
    stranger = Binding(kind="radius", action="start", operator="nobody", ip=ip_network("100.64.0.2/32"), subscriber="b@x",
                       session="S2", nas="192.0.2.1", at_ms=now_s * 1000 - 60_000)
    t = pipeline.names.bindings
    records = [Rec(t, 1, 5, b"k", binding_wire.encode(b), []),
               Rec(t, 1, 6, HEARTBEAT_KEY, None, []),
               Rec(t, 1, 7, b"k", b"\xff\xfe not a binding", []),
               Rec(t, 1, 8, b"k", binding_wire.encode(stranger), [])]
    assert asyncio.run(pipeline.writer.handle_batch(records)) == []
    assert pipeline.test_counts.get("mapping:opened") == 1
    assert pipeline.test_counts.get("rejected:unknown-operator") == 1
    assert sum(v for k, v in pipeline.test_counts.items() if k.startswith("rejected:")) == 2
    writes = list(pipeline.outbox._items)
    changelog = [w for w in writes if w[0] is pipeline.table.changelog_topic]
    dead = [json.loads(w[2]) for w in writes if w[0] is pipeline.deadletter]
    assert len(changelog) == 1 and changelog[0][3] == 1 and changelog[0][2] is not None  # partition of the record
    assert sorted((d["offset"], d["partition"], d["topic"]) for d in dead) == [(7, 1, t), (8, 1, t)]
    assert {d["offset"]: d["reason"] for d in dead}[8] == "unknown-operator"
    assert pipeline.mapping_stage.group == "tm-mapping" and pipeline.mapping_stage in pipeline.batch_stages


def test_values_over_the_large_mark_are_counted_and_logged_at_most_once_a_minute(pipeline, caplog):
    """Each write of a value at or over ``large_value_bytes`` counts ``large_values`` (checked
    against the changelog values the outbox holds); the warning names the operator, not the
    address, once per minute of the worker's clock."""
    import logging

    from stream import binding_wire
    from stream.model import Binding

    now_ms = int(time.time()) * 1000
    pipeline.writer.large_value_bytes = 600
    pipeline.writer.clock = lambda: now_ms
    t = pipeline.names.bindings

    def blocks(first, n):
        return [Rec(t, 2, first + k, b"k", binding_wire.encode(Binding(
            kind="nat", action="start", operator="op", ip=ip_network("198.51.100.7/32"), subscriber=None, session=None,
            nas=None, at_ms=now_ms - 60_000 + first + k, inside_ip=ip_network(f"100.64.0.{k + 1}/32")[0],
            port_first=1024 * (k + 1), port_last=1024 * (k + 1) + 1023)), []) for k in range(n)]

    with caplog.at_level(logging.WARNING, logger="ipanon"):
        asyncio.run(pipeline.writer.handle_batch(blocks(0, 60)))
        sizes = [len(w[2]) for w in pipeline.outbox._items if w[0] is pipeline.table.changelog_topic]
        assert len(sizes) == 60 and sizes == sorted(sizes)  # one public address: the value grows
        large = sum(n >= 600 for n in sizes)
        assert 0 < large < 60 and pipeline.test_counts.get("large_values") == large, sizes
        warned = [r for r in caplog.records if "value written" in r.getMessage()]
        assert len(warned) == 1 and "operator op" in warned[0].getMessage()
        assert "198.51.100.7" not in warned[0].getMessage()

        asyncio.run(pipeline.writer.handle_batch(blocks(100, 1)))  # same minute: counted, not logged
        now_ms += 60_000
        asyncio.run(pipeline.writer.handle_batch(blocks(200, 1)))  # a minute later: logged again
    assert pipeline.test_counts.get("large_values") == large + 2
    assert len([r for r in caplog.records if "value written" in r.getMessage()]) == 2


def test_a_binding_that_would_outgrow_a_changelog_record_is_dead_lettered_and_the_stage_goes_on(pipeline):
    """Past ``max_value_bytes`` a binding is dead-lettered ``value-too-large`` (bytes kept, so it
    stay in the dead-letter topic), its key keeps the value it had, and the rest of the batch is applied: no
    value the changelog could not take is written, so the stage does not stall on it."""
    from stream import binding_wire
    from stream import intervals as iv
    from stream.model import Binding

    now_ms = int(time.time()) * 1000
    pipeline.writer.max_value_bytes = 500
    t = pipeline.names.bindings
    public = ip_network("198.51.100.7/32")

    def block(k, action="start", ip=public):
        return binding_wire.encode(Binding(
            kind="nat", action=action, operator="op", ip=ip, subscriber=None, session=None, nas=None,
            at_ms=now_ms - 60_000 + k, inside_ip=ip_network(f"100.64.0.{k + 1}/32")[0],
            port_first=1024 * (k + 1), port_last=1024 * (k + 1) + 1023))

    records = [Rec(t, 2, k, b"k", block(k), []) for k in range(60)]
    records.append(Rec(t, 2, 60, b"k", block(0, "start", ip_network("198.51.100.8/32")), []))  # another key
    records.append(Rec(t, 2, 61, b"k", block(0, "stop"), []))  # the full key's first block ends
    asyncio.run(pipeline.writer.handle_batch(records))

    writes = list(pipeline.outbox._items)
    values = [w[2] for w in writes if w[0] is pipeline.table.changelog_topic]
    dead = [json.loads(w[2]) for w in writes if w[0] is pipeline.deadletter]
    assert values and max(len(v) for v in values) <= 500
    refused = [d["offset"] for d in dead]
    assert all(d["reason"] == "value-too-large" and "500" in d["detail"] for d in dead)
    import base64
    assert all(base64.b64decode(d["value_b64"]) == records[d["offset"]].value for d in dead)  # the binding's bytes
    assert refused == list(range(refused[0], 60)) and 0 < refused[0] < 60  # every block past the mark
    assert pipeline.test_counts.get("rejected:value-too-large") == len(refused)
    assert pipeline.test_counts.get("mapping:opened") == refused[0] + 1  # + the other key's block
    assert pipeline.test_counts.get("mapping:closed") == 1
    # the full key kept the value it had, with its first block now closed (a stop adds no interval)
    vault = pipeline.vaults["op"]
    key = vault.key("nat", public)
    net, ivs = vault.open(key, pipeline.table.get_raw(key))
    assert len(ivs) == refused[0] and ivs[0].end_ms == now_ms - 60_000
    assert all(i.end_ms is None for i in ivs[1:])


def test_the_value_limit_fits_a_producer_request():
    """``MAX_VALUE_BYTES`` with the longest table key, as aiokafka sizes the record batch, is
    within its default ``max_request_size`` and the broker's default ``message.max.bytes``."""
    from aiokafka.producer.producer import AIOKafkaProducer
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    from agents.table_writer import MAX_VALUE_BYTES
    from stream import intervals as iv

    import inspect

    key = iv.keyed_table_key("o" * 64, "nat", bytes(iv.KEY_ID_BYTES))
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"x" * MAX_VALUE_BYTES, [("h", b"v" * 64)])
    default = inspect.signature(AIOKafkaProducer).parameters["max_request_size"].default
    assert size <= default == 1 << 20 and size <= 1048588


def test_the_worker_role_may_use_the_mapping_group():
    from agents.acl import role_grants, worker_groups

    assert worker_groups("app")["mapping"] == "app-mapping"
    groups = {g.name for g in role_grants("p", "app") if g.user == "ipanon-worker" and g.resource == "group"}
    assert "app-mapping" in groups


# -- the stage on a real broker ------------------------------------------------------------------

class Table:
    """What the stage reads of ``MappingTable``."""

    def __init__(self, changelog: str, active: set[int]) -> None:
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: changelog)
        self.source_topics: set[str] = set()
        self.active = set(active)
        self.restored = True


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: c.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        c.close()


def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in offsets]
        c.assign(tps)
        c.commit({TopicPartition(topic, p): OffsetAndMetadata(o, None, -1) for p, o in offsets.items()})
    finally:
        c.close()


def _produce(bootstrap: str, topic: str, per_partition: dict[int, int], tag: str) -> None:
    p = producer(bootstrap)
    try:
        for part, n in per_partition.items():
            for i in range(n):
                p.send(topic, key=b"k", value=f"{tag}-{part}-{i}".encode(), partition=part)
        p.flush(timeout=30)
    finally:
        p.close()


@contextlib.asynccontextmanager
async def _running(stage):
    """``stage.run()`` as a task for the body, cancelled (and awaited) after it."""
    task = asyncio.ensure_future(stage.run())
    try:
        yield task
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


async def _until(pred, timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_the_stage_follows_the_table_hands_over_after_its_batch_and_starts_upgrades_at_fausts_offsets(
        bootstrap, unique, tmp_path):
    from agents.mapping_stage import MappingStage
    from agents.settings import Settings

    app_id = f"tms{unique}"
    topic = f"{app_id}-bindings"
    changelog = f"{app_id}-mappings-changelog"
    ensure_topics(bootstrap, [topic], partitions=2)
    _produce(bootstrap, topic, {0: 6, 1: 4}, "old")
    # a deployment upgraded from the Faust agent: Faust's group had read partition 0 up to 4
    _commit(bootstrap, app_id, topic, {0: 4})

    s = Settings(bootstrap=bootstrap, app_id=app_id, topic_prefix=app_id, data_dir=tmp_path / "data",
                 keys_dir=tmp_path / "keys", partitions=2, batch_size=100, batch_within_s=0.05)
    seen: list[tuple[int, int, bytes]] = []
    flushed: list[int] = []
    gate = asyncio.Event()
    gate.set()
    counts: dict = {}
    p = SimpleNamespace(settings=s, count=lambda name, n=1: counts.__setitem__(name, counts.get(name, 0) + n))

    waiting: list[int] = []

    async def handle(records):
        if not gate.is_set():
            waiting.append(len(records))
        await gate.wait()  # a slow batch: the revoke must wait for it
        seen.extend((r.partition, r.offset, r.value) for r in records)
        return []

    async def flush():
        flushed.append(len(seen))

    async def scenario():
        table = Table(changelog, {0, 1})
        st = MappingStage("mapping", topic, f"{app_id}-mapping", handle, flush=flush, table=table, fence=None,
                          fallback_group=app_id, settings=p.settings, count=p.count)
        async with _running(st):
            await st.follow({0, 1})
            await _until(lambda: len(seen) == 2 + 4, what="the old records")
            # partition 0 from Faust's group's offset, partition 1 (nothing committed) from the start
            assert sorted((pt, off) for pt, off, _ in seen) == [(0, 4), (0, 5), (1, 0), (1, 1), (1, 2), (1, 3)]
            assert st.fallbacks == 1
            await _until(lambda: _committed(bootstrap, f"{app_id}-mapping", topic, 2) == {0: 6, 1: 4},
                         what="the stage's commits")

            # a batch in flight when partition 0 is revoked: the revoke returns only after it is
            # handled, flushed and committed
            gate.clear()
            _produce(bootstrap, topic, {0: 3}, "mid")
            await _until(lambda: waiting, what="the batch to reach the handler")
            revoke = asyncio.ensure_future(st.on_revoked(None, {TP(changelog, 0)}))
            await asyncio.sleep(0.5)  # the revoke has had every chance to return early
            assert not revoke.done(), "the revoke returned while a batch of the partition was in flight"
            gate.set()
            await asyncio.wait_for(revoke, 30)
            assert [off for pt, off, v in seen if v.startswith(b"mid")] == [6, 7, 8]
            assert flushed and flushed[-1] == len(seen)  # the batch's writes were flushed before the revoke returned
            assert _committed(bootstrap, f"{app_id}-mapping", topic, 2)[0] == 9
            assert table.active == {1} and st.owned == {1}

            # nothing of a revoked partition is read any more; the kept one goes on
            n0 = len(seen)
            _produce(bootstrap, topic, {0: 3, 1: 2}, "late")
            await _until(lambda: sum(v.startswith(b"late-1") for _, _, v in seen) == 2, what="partition 1")
            await asyncio.sleep(1.0)
            assert [pt for pt, _, _ in seen[n0:]] == [1, 1]

            # assigned again after a rebalance: from the stage's own commit, not Faust's
            table.active = {0, 1}
            await st.follow({0, 1})
            await _until(lambda: sum(v.startswith(b"late-0") for _, _, v in seen) == 3, what="partition 0 again")
            assert [off for pt, off, v in seen if pt == 0 and v.startswith(b"late")] == [9, 10, 11]
            assert st.fallbacks == 1

            # a follow that a revoke overtook (it started before the revoke, got the lock after
            # the revoke was called) assigns nothing
            await st._lock.acquire()
            table.active = {0, 1}
            late_follow = asyncio.ensure_future(st.follow({0, 1}))
            await asyncio.sleep(0)
            revoke = asyncio.ensure_future(st.on_revoked(None, {TP(changelog, 0), TP(changelog, 1)}))
            await asyncio.sleep(0)
            st._lock.release()
            await asyncio.wait_for(asyncio.gather(late_follow, revoke), 30)
            assert st.owned == set() and table.active == set()

    asyncio.run(scenario())


def test_a_batch_given_up_for_a_waiting_revoke_is_not_committed_and_is_read_again(bootstrap, unique, tmp_path):
    """A long NAS reset gives its batch up when a revoke waits (``TableWriter.handle_batch``
    raises ``PartitionsLost``): the revoke goes on at once, nothing of the batch is committed,
    and the partition kept is read again from the last commit."""
    from agents.fence import PartitionsLost
    from agents.mapping_stage import MappingStage
    from agents.settings import Settings

    app_id = f"tmg{unique}"
    topic = f"{app_id}-bindings"
    changelog = f"{app_id}-mappings-changelog"
    ensure_topics(bootstrap, [topic], partitions=2)
    s = Settings(bootstrap=bootstrap, app_id=app_id, topic_prefix=app_id, data_dir=tmp_path / "data",
                 keys_dir=tmp_path / "keys", partitions=2, batch_size=100, batch_within_s=0.05)
    seen: list[tuple[int, int, bytes]] = []
    flushed: list[int] = []
    counts: dict = {}
    stage: list = []
    give_up = asyncio.Event()

    async def handle(records):
        if give_up.is_set():  # a long reset: goes on until a revoke waits, then gives the batch up
            while stage[0].revokes_waiting == 0:
                await asyncio.sleep(0.01)
            give_up.clear()
            raise PartitionsLost("a rebalance began during a NAS reset")
        seen.extend((r.partition, r.offset, r.value) for r in records)
        return []

    async def flush():
        flushed.append(len(seen))

    async def scenario():
        table = Table(changelog, {0, 1})
        st = MappingStage("mapping", topic, f"{app_id}-mapping", handle, flush=flush, table=table, fence=None,
                          fallback_group=app_id, settings=s, count=lambda name, n=1: counts.__setitem__(
                              name, counts.get(name, 0) + n))
        stage.append(st)
        async with _running(st):
            await st.follow({0, 1})
            _produce(bootstrap, topic, {0: 2, 1: 2}, "a")
            await _until(lambda: len(seen) == 4, what="the first records")
            await _until(lambda: _committed(bootstrap, f"{app_id}-mapping", topic, 2) == {0: 2, 1: 2},
                         what="their commits")
            give_up.set()
            _produce(bootstrap, topic, {0: 1, 1: 1}, "b")
            await asyncio.sleep(1.0)  # the batch is in the handler, scanning
            n_flushed = len(flushed)
            revoke = asyncio.ensure_future(st.on_revoked(None, {TP(changelog, 0)}))
            await asyncio.wait_for(revoke, 10)  # not held until the scan would have ended
            assert len(flushed) > n_flushed  # the revoke flushed what the batch had queued
            assert _committed(bootstrap, f"{app_id}-mapping", topic, 2) == {0: 2, 1: 2}  # nothing of the batch
            assert st.revokes_waiting == 0
            await _until(lambda: counts.get("mapping_restarts") == 1, what="the stage's restart")
            # the kept partition's record is read again; the revoked one's is not read here
            table.active = {1}
            await st.follow({1})
            await _until(lambda: any(v.startswith(b"b") for _, _, v in seen), what="the batch read again")
            await asyncio.sleep(0.5)
            assert [(pt, off) for pt, off, v in seen if v.startswith(b"b")] == [(1, 2)]
            await _until(lambda: _committed(bootstrap, f"{app_id}-mapping", topic, 2)[1] == 3, what="its commit")

    asyncio.run(scenario())
