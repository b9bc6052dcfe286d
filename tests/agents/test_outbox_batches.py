"""The outbox's batch hand-over (agents/outbox.py, "The hand-over"): writes to the topics of an
app whose producer is plain aiokafka go out as one batch per topic-partition.  Against the real
broker: order per partition, each write's callback gets its own offset, keyless writes with a
key land where Kafka's partitioner puts them; ``halt`` before the hand-over keeps every write queued
in order; a stall seen after the hand-over, while the batches wait in the producer, fails them
and writes nothing.  Without a broker: a failed batch hands every one of its writes to ``on_undelivered``."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from agents.kafka_clients import Clients, key_partition
from agents.fence import PartitionsLost
from agents.outbox import Outbox


class _Sensors:
    def __init__(self) -> None:
        self.out: list[tuple[str, bytes]] = []

    def on_send_initiated(self, producer, topic, message, keysize, valsize):
        self.out.append((topic, message.value))


class _App:
    def __init__(self, producer) -> None:
        self.producer = type("FaustProducer", (), {"_producer": producer})()
        self.sensors = _Sensors()


class _Topic:
    """What the outbox uses of a Faust topic on the batch path: its name and its app."""

    def __init__(self, name: str, app: _App) -> None:
        self.name, self.app = name, app

    def get_topic_name(self) -> str:
        return self.name


def test_batches_keep_order_and_give_each_write_its_offset(bootstrap):
    from agents.kafka_io import ensure_topics, read_all

    topic, other = f"t-ob-{uuid.uuid4().hex[:8]}", f"t-ob2-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic, other], partitions=4)
    acked: list[tuple[bytes, int, int]] = []

    async def run():
        prod = Clients(bootstrap).aio_producer(client_id="t-ob")
        await prod.start()
        try:
            app = _App(prod)
            ch, ch2 = _Topic(topic, app), _Topic(other, app)
            box = Outbox()
            for i in range(600):
                key = b"k%02d" % (i % 37)
                box.add(ch, key, b"v%04d" % i, partition=i % 4,
                        callback=lambda fut, key=key: acked.append(
                            (key, fut.result().topic_partition.partition, fut.result().offset)))
                if i % 50 == 0:
                    box.add(ch2, b"dl%03d" % i, b"x" * 10, partition=None)  # keyed, no partition
                    box.add(ch2, None, b"y", partition=None)                # neither
            box.add(ch, b"tomb", None, partition=3)
            box.add(ch, b"big", b"z" * 300_000, partition=2)  # larger than a batch: alone, in its place
            box.add(ch, b"after-big", b"a", partition=2)
            n = await box.flush()
            return n, len(box), app.sensors.out
        finally:
            await prod.stop()

    n, left, sensed = asyncio.run(run())
    assert n == 600 + 24 + 3 and left == 0
    got = read_all(bootstrap, topic)
    by_part: dict[int, list] = {}
    offsets = {}
    for r in sorted(got, key=lambda r: (r.partition, r.offset)):
        by_part.setdefault(r.partition, []).append(r.value)
        offsets[(r.partition, r.offset)] = r.key
    for p in range(4):
        expect = [b"v%04d" % i for i in range(600) if i % 4 == p]
        if p == 2:
            expect += [b"z" * 300_000, b"a"]
        if p == 3:
            expect += [None]
        assert by_part[p] == expect, p
    assert len(acked) == 600
    for key, p, off in acked:  # the callback's offset is where that very write is
        assert offsets[(p, off)] == key
    keyed = [r for r in read_all(bootstrap, other) if r.key is not None]
    assert len(keyed) == 12 and all(r.partition == key_partition(r.key, 4) for r in keyed)
    # the records-out sensor saw every write with a value (tombstones excluded, as Faust's)
    assert len(sensed) == 600 + 24 + 2


def test_halt_before_the_hand_over_keeps_every_write_queued_in_order(bootstrap):
    from agents.kafka_io import ensure_topics, read_all

    topic = f"t-ob-halt-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic], partitions=4)

    async def run():
        prod = Clients(bootstrap).aio_producer(client_id="t-ob-halt")
        await prod.start()
        try:
            ch = _Topic(topic, _App(prod))
            box = Outbox()
            box.halt = lambda: True  # a stall seen since the gate let this flush through, not cleared
            gates = {"n": 0}

            async def gate():  # then what the fence does: the group said the partitions are lost
                gates["n"] += 1
                if gates["n"] > 1:
                    raise PartitionsLost("fence: partitions lost")

            box.gate = gate
            for i in range(40):
                box.add(ch, b"k", b"v%02d" % i, partition=i % 4)
            with pytest.raises(PartitionsLost):
                await box.flush()
            return [w[2] for w in box._items]

        finally:
            await prod.stop()

    queued = asyncio.run(run())
    assert read_all(bootstrap, topic) == []
    assert queued == [b"v%02d" % i for i in range(40)]  # every write, in its order


def test_a_stall_seen_after_the_hand_over_sends_nothing(bootstrap):
    """The freeze falls after the hand-over's check, with the batches in the producer's
    accumulator (or in a request not yet written): when the sender takes them or writes them,
    ``halt`` is true, so they fail with PartitionsLost and reach ``on_undelivered``; nothing is
    written.  Then the stall is resolved (membership held): the next flush writes."""
    from agents.kafka_io import ensure_topics, read_all

    topic = f"t-ob-stall-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic], partitions=4)
    undelivered: list = []

    async def run():
        prod = Clients(bootstrap).aio_producer(client_id="t-ob-stall")
        await prod.start()
        try:
            ch = _Topic(topic, _App(prod))
            box = Outbox(on_undelivered=undelivered.extend)
            asked = {"n": 0, "stalled": True}

            def halt() -> bool:  # false at the hand-over's check, true from the next question on
                asked["n"] += 1
                return asked["n"] > 1 and asked["stalled"]

            box.halt = halt
            for i in range(40):
                box.add(ch, b"k%d" % (i % 4), b"v%02d" % i, partition=i % 4)
            with pytest.raises(PartitionsLost):
                await box.flush()
            asked["stalled"] = False  # the fence's gate: the membership held
            for w in undelivered:
                box.add(*w[:3], partition=w[3])
            assert await box.flush() == 40
            return asked["n"]
        finally:
            await prod.stop()

    asked = asyncio.run(run())
    assert asked >= 2
    assert sorted(w[2] for w in undelivered) == [b"v%02d" % i for i in range(40)]
    assert sorted(r.value for r in read_all(bootstrap, topic)) == [b"v%02d" % i for i in range(40)]


class _Batch:
    def __init__(self, tp, builder) -> None:
        self.tp, self.builder = tp, builder
        self.future = asyncio.get_running_loop().create_future()


class _Acc:
    """Enough of aiokafka's accumulator: every batch of partition 1 fails, the others are acked."""

    _closed = False
    _exception = None
    _batch_size = 16384
    _compression_type = 0

    def __init__(self) -> None:
        self.sent: list = []
        self._batches: dict = {}

    def drain_by_nodes(self, *a):
        return {}, False

    def _append_batch(self, builder, tp):
        b = _Batch(tp, builder)
        if tp.partition == 1:
            b.future.set_exception(TimeoutError("no ack"))
        else:
            from aiokafka.structs import RecordMetadata
            b.future.set_result(RecordMetadata(tp.topic, tp.partition, tp, 100, -1, 0, 0))
        self.sent.append((tp.partition, builder.record_count()))
        return b


class _FailingProducer:
    """Enough of aiokafka's producer for the batch path."""

    def __init__(self) -> None:
        self.client = self
        self._metadata = self
        self._message_accumulator = _Acc()

    async def _wait_on_metadata(self, topic):
        return None

    def partitions_for_topic(self, topic):
        return {0, 1}

    async def send(self, node_id, request, **kw):
        raise AssertionError("not reached: the batches are settled in the accumulator")


def test_a_failed_batch_hands_all_its_writes_back():
    undelivered: list = []
    offsets: list = []

    async def run():
        prod = _FailingProducer()
        ch = _Topic("t", _App(prod))
        box = Outbox(on_undelivered=undelivered.extend)
        for i in range(6):
            box.add(ch, b"k%d" % i, b"v", partition=i % 2,
                    callback=lambda fut: offsets.append(fut.result().offset))
        with pytest.raises(TimeoutError):
            await box.flush()
        return prod._message_accumulator.sent

    sent = asyncio.run(run())
    assert sent == [(0, 3), (1, 3)]
    assert [w[1] for w in undelivered] == [b"k1", b"k3", b"k5"]
    assert offsets == [100, 101, 102]


def test_a_producer_without_the_guarded_internals_gets_no_batches():
    """The batch path needs aiokafka's accumulator internals for its fence guard; a producer
    lacking any of them (a newer aiokafka) is written write by write, never batched unguarded."""
    import agents.outbox as ob

    class Acc:
        def __init__(self) -> None:
            self._batches: dict = {}

        def _append_batch(self, *a):
            pass

        def drain_by_nodes(self, *a):
            pass

    class Client:
        async def send(self, *a):
            pass

    def prod(acc=None, client=None):
        return type("P", (), {"_message_accumulator": acc, "client": client, "_txn_manager": None})()

    def writes(p):
        return [(_Topic("t", _App(p)), b"k", b"v", 0, None, None)]

    full = prod(Acc(), Client())
    assert ob._aio_producer(writes(full)) is full
    no_append = Acc()
    no_append._append_batch = None
    no_batches = Acc()
    no_batches._batches = None
    for p in (prod(None, Client()), prod(Acc(), None), prod(no_append, Client()), prod(no_batches, Client())):
        assert ob._aio_producer(writes(p)) is None


def test_the_installed_aiokafka_producer_has_what_the_guard_needs():
    """The pinned aiokafka's own producer takes the batch path (a failure here: aiokafka moved
    the internals ``_Guard`` wraps; re-check the guard's argument before widening the pin)."""
    import agents.outbox as ob
    from aiokafka import AIOKafkaProducer

    async def run():
        p = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")  # never started: no connection
        try:
            return ob._guardable(p)
        finally:
            await p.stop()

    assert asyncio.run(run())
