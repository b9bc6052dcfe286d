"""agents.batch without a broker: a batch stage commits only after every output of the batch is
acknowledged, retries failed sends before committing, never handles or commits records of a
partition it no longer owns, lets a rebalance take partitions only between batches; and the
ingest stage's handler (bindings, dead letters with their origin, heartbeats skipped, counters
once per batch)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import namedtuple
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, Histogram

from agents import batch as B
from agents.kafka_io import HEARTBEAT_KEY
from stream.binding_wire import decode as decode_binding

TP = namedtuple("TP", "topic partition")
Rec = namedtuple("Rec", "topic partition offset key value headers")


class FakeConsumer:
    def __init__(self, assigned):
        self.assigned = set(assigned)
        self.commits: list[dict] = []
        self.hw: dict = {}

    def assignment(self):
        return set(self.assigned)

    async def commit(self, offsets):
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    def highwater(self, tp):
        return self.hw.get(tp)


class _FakeBatch:
    def __init__(self):
        self.items: list[tuple] = []

    def append(self, *, key, value, timestamp, headers=None):
        self.items.append((key, value, timestamp))
        return True


async def _metadata(topic):
    return None


class FakeProducer:
    """The aiokafka calls ``agents.kafka_clients.aio_batches`` makes: ``send_batch`` queues a
    batch and returns one future; the test decides when (and how) acks arrive.  A partition
    left to the partitioner stays ``None`` here."""

    client = SimpleNamespace(_wait_on_metadata=_metadata)

    def __init__(self, fail_first: int = 0):
        self.sent: list[tuple] = []
        self.stamps: list = []  # timestamp_ms per record (None: the producer's clock)
        self.futures: list[asyncio.Future] = []
        self.fail_first = fail_first

    def _partition(self, topic, partition, key, value, serialized_key, serialized_value):
        return partition

    def create_batch(self):
        return _FakeBatch()

    async def send_batch(self, batch, topic, *, partition):
        for key, value, ts in batch.items:
            self.sent.append((topic, key, value, partition))
            self.stamps.append(ts)
        f = asyncio.get_running_loop().create_future()
        if self.fail_first:
            self.fail_first -= 1
            f.set_exception(RuntimeError("broker away"))
        self.futures.append(f)
        return f

    def ack_all(self):
        for f in self.futures:
            if not f.done():
                f.set_result(None)


def _stage(handle, counts):
    return B.BatchStage("t", ["raw"], "g-t", handle, role="raw",
                        count=lambda name, n=1: counts.__setitem__(name, counts.get(name, 0) + n),
                        settings=SimpleNamespace(batch_size=100, batch_within_s=0.05))


def _records(tp, offsets):
    return [Rec(tp.topic, tp.partition, o, b"k", b"v%d" % o, []) for o in offsets]


async def _echo(records):
    return [("out", r.key, r.value, None) for r in records]


def test_commit_comes_only_after_every_output_is_acknowledged():
    async def main():
        a, b = TP("raw", 0), TP("raw", 1)
        c, prod, counts = FakeConsumer([a, b]), FakeProducer(), {}
        st = _stage(_echo, counts)
        task = asyncio.ensure_future(st._process(c, prod, {a: _records(a, [5, 6, 7]), b: _records(b, [0])}))
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(prod.sent) == 4 and c.commits == []  # sent, not acknowledged: nothing committed
        prod.ack_all()
        await task
        assert c.commits == [{a: 8, b: 1}]  # last offset + 1 per partition

    asyncio.run(main())


def test_a_failed_send_is_retried_before_anything_is_committed(monkeypatch):
    monkeypatch.setattr(B, "RETRY_PAUSE_S", 0)

    async def main():
        a = TP("raw", 0)
        c, prod, counts = FakeConsumer([a]), FakeProducer(fail_first=1), {}
        st = _stage(_echo, counts)
        task = asyncio.ensure_future(st._process(c, prod, {a: _records(a, [0, 1])}))
        for _ in range(50):
            await asyncio.sleep(0)
        assert c.commits == [] and counts.get("t_send_retries") == 1
        assert len(prod.sent) == 4  # both outputs sent again
        prod.ack_all()
        await task
        assert c.commits == [{a: 2}]

    asyncio.run(main())


def test_records_of_a_partition_revoked_meanwhile_are_neither_handled_nor_committed():
    async def main():
        a, b = TP("raw", 0), TP("raw", 1)
        c, prod, counts = FakeConsumer([a]), FakeProducer(), {}
        seen = []

        async def handle(records):
            seen.extend(records)
            return []

        st = _stage(handle, counts)
        await st._process(c, prod, {a: _records(a, [3]), b: _records(b, [9])})
        assert [r.partition for r in seen] == [0] and c.commits == [{a: 4}]

    asyncio.run(main())


def test_a_rebalance_takes_partitions_only_after_the_in_flight_batch_is_committed():
    async def main():
        a = TP("raw", 0)
        c, prod, counts = FakeConsumer([a]), FakeProducer(), {}
        st = _stage(_echo, counts)
        st._read[a] = 1

        async def one_batch():
            async with st._lock:
                await st._process(c, prod, {a: _records(a, [1])})

        batch = asyncio.ensure_future(one_batch())
        for _ in range(10):
            await asyncio.sleep(0)
        revoke = asyncio.ensure_future(B._Listener(st).on_partitions_revoked([a]))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not revoke.done() and c.commits == []
        prod.ack_all()
        await batch
        await revoke
        assert c.commits == [{a: 2}] and a not in st._read

    asyncio.run(main())


def test_lag_counts_from_the_last_record_handled_else_the_commit():
    a, b, d = TP("raw", 0), TP("raw", 1), TP("raw", 2)
    c = FakeConsumer([a, b, d])
    c.hw = {a: 10, b: 7}
    st = _stage(_echo, {})
    st.consumer = c
    st._read[a] = 4
    st._committed[b] = 7
    st._ends[d] = 3  # end offset at assignment, nothing fetched nor committed yet
    assert st.lag() == {("raw", 0): 6, ("raw", 1): 0, ("raw", 2): 3}


@pytest.mark.parametrize("value", [0.0004, 0.03, 7.0, 100.0])
def test_observe_n_equals_n_single_observations(value):
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h", "x", buckets=(0.001, 0.1, 10.0), registry=r1)
    h2 = Histogram("h", "x", buckets=(0.001, 0.1, 10.0), registry=r2)
    B.observe_n(h1, value, 5)
    for _ in range(5):
        h2.observe(value)
    dump = lambda r: sorted((s.name, tuple(sorted(s.labels.items())), s.value)  # noqa: E731
                            for m in r.collect() for s in m.samples if not s.name.endswith("_created"))
    assert dump(r1) == dump(r2)


# -- the ingest stage's handler on a real Pipeline (no broker: never started) -------------------

@pytest.fixture
def pipeline(tmp_path):
    from agents.app import NO_PARTS, Pipeline
    from agents.runtime import OperatorRuntime
    from agents.settings import Settings

    s = Settings(bootstrap="127.0.0.1:1", app_id="tb", topic_prefix="tb", operators_dir=tmp_path / "ops",
                 keys_dir=tmp_path / "keys", data_dir=tmp_path / "data", partitions=4)
    counts: dict = {}
    p = Pipeline(s, {"op": OperatorRuntime("op", ttl_ms=86_400_000, stats_key=b"k" * 32)}, parts=NO_PARTS)
    p.on_count.append(lambda name, n: counts.__setitem__(name, counts.get(name, 0) + n))
    p.test_counts = counts
    return p


def _raw(offset, value, fmt=b"radius-json", op=b"op"):
    headers = [("ipanon-format", fmt)] + ([("ipanon-operator", op)] if op else [])
    return Rec("tb-raw-radius", 2, offset, b"src", value, headers)


def test_ingest_batch_emits_bindings_dead_letters_and_counts_once_per_batch(pipeline):
    from agents.acl import worker_groups

    start = json.dumps({"User-Name": "a@x", "Acct-Status-Type": "Start", "Acct-Session-Id": "S1",
                        "NAS-IP-Address": "192.0.2.1", "Framed-IP-Address": "100.64.0.1",
                        "Event-Timestamp": 1_700_000_000}).encode()
    records = [_raw(10, start), _raw(11, None)._replace(key=HEARTBEAT_KEY, value=None),
               _raw(12, b"not json"), _raw(13, start, op=None), _raw(14, start)]
    out = asyncio.run(pipeline._ingest_batch(records))
    names = pipeline.names
    bindings = [o for o in out if o[0] == names.bindings]
    dead = [json.loads(o[2]) for o in out if o[0] == names.deadletter]
    assert len(bindings) == 2 and all(o[3] is None and o[1] for o in bindings)
    assert decode_binding(bindings[0][2]).to_dict()["ip"].startswith("100.64.0.1")
    assert [(d["reason"], d["topic"], d["partition"], d["offset"]) for d in dead] == [
        ("bad-json", "tb-raw-radius", 2, 12), ("missing-operator", "tb-raw-radius", 2, 13)]
    assert base64.b64decode(dead[0]["value_b64"]) == b"not json" and dead[0]["format"] == "radius-json"
    assert pipeline.test_counts == {"events_in": 2, "bindings": 2, "rejected:bad-json": 1,
                                    "rejected:missing-operator": 1}
    assert pipeline.ingest_stage.group == worker_groups("tb")["ingest"] == "tb-ingest"


def test_a_reset_goes_to_every_bindings_partition(pipeline):
    from stream.model import Binding

    out: list = []
    b = Binding(kind="radius", action="reset", operator="op", ip=None, subscriber=None, session=None,
                nas="192.0.2.1", at_ms=1)
    pipeline._binding_outputs(b, out)
    assert sorted(o[3] for o in out) == [0, 1, 2, 3] and len({o[1] for o in out}) == 1


def test_dead_letters_keep_at_most_the_cap_of_the_original(pipeline):
    from agents.app import DEADLETTER_MAX_BYTES

    big = b"x" * (DEADLETTER_MAX_BYTES + 10)
    d = json.loads(pipeline.dead_letter_value("t", 0, 1, {}, big, "oversized"))
    assert len(base64.b64decode(d["value_b64"])) == DEADLETTER_MAX_BYTES and d["truncated_from"] == len(big)
    assert "truncated_from" not in json.loads(pipeline.dead_letter_value("t", 0, 1, {}, b"ab", "bad-json"))


def test_an_output_timestamp_reaches_the_producer_and_none_means_the_producers_clock():
    async def stamped(records):  # stats records carry their bucket start (CreateTime topics)
        return [("out", r.key, r.value, None, 3_600_000 * r.offset) if r.offset % 2 else
                ("out", r.key, r.value, None) for r in records]

    async def main():
        a = TP("raw", 0)
        c, prod, counts = FakeConsumer([a]), FakeProducer(), {}
        st = _stage(stamped, counts)
        task = asyncio.ensure_future(st._process(c, prod, {a: _records(a, [1, 2, 3])}))
        for _ in range(20):
            await asyncio.sleep(0)
        for f in prod.futures:
            f.set_result(None)
        await task
        assert prod.stamps == [3_600_000, None, 3 * 3_600_000]
        assert c.commits == [{a: 4}]

    asyncio.run(main())
