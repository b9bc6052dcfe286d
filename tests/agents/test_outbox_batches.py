"""The outbox's batch hand-over (agents/outbox.py, "The hand-over"): writes to the topics of an
app whose producer is plain aiokafka go out as one batch per topic-partition.  Against the real
broker: order per partition, each write's callback gets its own offset, keyless writes with a
key land where Kafka's partitioner puts them; ``halt`` between two batches keeps the rest queued
in order.  Without a broker: a failed batch hands every one of its writes to ``on_undelivered``."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from agents.kafka_clients import Clients, key_partition
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


def test_halt_between_batches_keeps_the_rest_queued_in_order(bootstrap):
    from agents.kafka_io import ensure_topics, read_all

    topic = f"t-ob-halt-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic], partitions=4)

    async def run():
        prod = Clients(bootstrap).aio_producer(client_id="t-ob-halt")
        await prod.start()
        try:
            ch = _Topic(topic, _App(prod))
            box = Outbox()
            asked = {"n": 0}

            def halt() -> bool:  # a freeze noticed after the first batch was handed over
                asked["n"] += 1
                return asked["n"] > 1

            box.halt = halt

            async def gate():  # what the fence does after a freeze: the group said the partitions are lost
                if asked["n"] > 1:
                    raise RuntimeError("fence: partitions lost")

            box.gate = gate
            for i in range(40):
                box.add(ch, b"k", b"v%02d" % i, partition=i % 4)
            with pytest.raises(RuntimeError):
                await box.flush()
            return [w[2] for w in box._items]

        finally:
            await prod.stop()

    queued = asyncio.run(run())
    sent = [r.value for r in read_all(bootstrap, topic)]
    assert sent == [b"v%02d" % i for i in range(0, 40, 4)]  # partition 0's batch only
    assert queued == [b"v%02d" % i for i in range(40) if i % 4]  # the rest, in their order


class _FailingProducer:
    """Enough of aiokafka's producer for the batch path; every ack of partition 1 fails."""

    def __init__(self) -> None:
        self.client = self
        self._metadata = self
        self.sent: list = []

    async def _wait_on_metadata(self, topic):
        return None

    def partitions_for_topic(self, topic):
        return {0, 1}

    def create_batch(self):
        class B:
            def __init__(self):
                self.n = 0

            def append(self, *, key, value, timestamp, headers=()):
                self.n += 1
                return self.n

        return B()

    async def send_batch(self, b, topic, *, partition):
        fut = asyncio.get_running_loop().create_future()
        if partition == 1:
            fut.set_exception(TimeoutError("no ack"))
        else:
            from aiokafka.structs import RecordMetadata, TopicPartition
            fut.set_result(RecordMetadata(topic, partition, TopicPartition(topic, partition), 100, -1, 0, 0))
        self.sent.append((partition, b.n))
        return fut


def test_a_failed_batch_hands_all_its_writes_back():
    undelivered: list = []
    offsets: list = []

    async def run():
        ch = _Topic("t", _App(_FailingProducer()))
        box = Outbox(on_undelivered=undelivered.extend)
        for i in range(6):
            box.add(ch, b"k%d" % i, b"v", partition=i % 2,
                    callback=lambda fut: offsets.append(fut.result().offset))
        with pytest.raises(TimeoutError):
            await box.flush()

    asyncio.run(run())
    assert [w[1] for w in undelivered] == [b"k1", b"k3", b"k5"]
    assert offsets == [100, 101, 102]
