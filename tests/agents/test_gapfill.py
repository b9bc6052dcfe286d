"""``agents.gapfill``: records Faust's stream skipped are read back before the batch goes on.

Without a broker: the filler's bookkeeping with a scripted reader (what is read, in which order
it is handed over, what is counted when the read fails or the broker no longer has the records),
and the lookup agent's loop answering a request that only the read-back delivered.  With the real
broker: ``read_range`` reads exactly the missing offsets of one partition."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from agents.gapfill import GapFill, Refetched, read_range
from agents.kafka_clients import Clients
from stream.offsets import MAX_GAP
from tests.agents.test_lookup_agent import NOW, pipeline  # noqa: F401  (the fixture: a Pipeline without a broker)


def ev(partition: int, offset: int, value: bytes = b"v") -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(topic="t", partition=partition, offset=offset, key=None,
                                                   value=value, headers=[]))


class Reader:
    """A scripted broker: the records at every offset, minus the first ``deleted`` (retention)."""

    def __init__(self, deleted: int = 0, fail: bool = False) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.deleted, self.fail = deleted, fail

    async def __call__(self, clients, topic, partition, start, end):
        self.calls.append((partition, start, end))
        if self.fail:
            raise ConnectionError("broker away")
        recs = [Refetched(topic, partition, o, None, b"r%d" % o, []) for o in range(max(start, self.deleted), end)]
        return recs, max(0, min(self.deleted, end) - start)


def make(reader: Reader, counters: dict, **kw) -> GapFill:
    def count(name, n=1):
        counters[name] = counters.get(name, 0) + n
    return GapFill(Clients("127.0.0.1:1"), "t", agent="lookup", count=count, read=reader, **kw)


def offsets(events) -> list[tuple[int, int]]:
    return [(e.message.partition, e.message.offset) for e in events]


def test_a_gap_is_read_back_and_put_before_the_record_that_revealed_it():
    counters: dict = {}
    r = Reader()
    g = make(r, counters)
    first = asyncio.run(g.complete([ev(0, 0), ev(0, 1), ev(1, 7)]))
    assert offsets(first) == [(0, 0), (0, 1), (1, 7)] and r.calls == []
    out = asyncio.run(g.complete([ev(0, 5), ev(1, 8), ev(0, 6)]))
    assert r.calls == [(0, 2, 5)]
    assert offsets(out) == [(0, 2), (0, 3), (0, 4), (0, 5), (1, 8), (0, 6)]
    assert [e.message.value for e in out[:3]] == [b"r2", b"r3", b"r4"]
    assert counters == {"stream_refetched:lookup": 3}


def test_redeliveries_after_a_seek_back_are_dropped_and_counted_when_asked():
    counters: dict = {}
    g = make(Reader(), counters, repeats="query:already-decided")
    asyncio.run(g.complete([ev(0, o) for o in range(10)]))
    out = asyncio.run(g.complete([ev(0, o) for o in range(6, 12)]))
    assert offsets(out) == [(0, 10), (0, 11)]
    assert counters == {"query:already-decided": 4}


def test_a_partition_given_away_and_back_starts_a_new_track():
    r = Reader()
    g = make(r, {})
    asyncio.run(g.complete([ev(2, 3)]))
    asyncio.run(g.on_assigned(None, [SimpleNamespace(topic="t", partition=0), SimpleNamespace(topic="other", partition=2)]))
    out = asyncio.run(g.complete([ev(2, 900)]))
    assert offsets(out) == [(2, 900)] and r.calls == []


def test_a_read_that_fails_is_logged_and_counted_as_lost_and_the_batch_goes_on(caplog):
    counters: dict = {}
    g = make(Reader(fail=True), counters)
    asyncio.run(g.complete([ev(0, 1)]))
    with caplog.at_level(logging.ERROR, logger="ipanon"):
        out = asyncio.run(g.complete([ev(0, 4)]))
    assert offsets(out) == [(0, 4)]
    assert counters == {"stream_gap_lost:lookup": 2}
    assert "could not read back 2 records" in caplog.text and "ConnectionError" in caplog.text


def test_records_retention_already_deleted_are_counted_as_lost():
    counters: dict = {}
    g = make(Reader(deleted=5), counters)
    g.seed(0, 1)
    out = asyncio.run(g.complete([ev(0, 8)]))
    assert offsets(out) == [(0, 5), (0, 6), (0, 7), (0, 8)]
    assert counters == {"stream_refetched:lookup": 3, "stream_gap_lost:lookup": 3}


def test_a_gap_too_large_to_read_back_is_reported_not_read():
    counters: dict = {}
    r = Reader()
    g = make(r, counters)
    g.seed(0, 0)
    out = asyncio.run(g.complete([ev(0, MAX_GAP + 2)]))
    assert offsets(out) == [(0, MAX_GAP + 2)] and r.calls == []
    assert counters == {"stream_gap_lost:lookup": MAX_GAP + 1}


def test_the_lookup_agent_answers_a_request_only_the_read_back_delivered(pipeline, tmp_path):
    """The checker's loss: a sealed request on a kept partition that Faust's stream skipped.  The
    agent's loop (``Lookups.run``) gets offsets 0 and 2; offset 1 comes from the read-back; all
    three requests are answered."""
    from agents.keystore import load_lookup_key
    from stream.lookup_wire import LookupSeal
    p = pipeline
    seal = LookupSeal(load_lookup_key(tmp_path / "keys"), p.names.lookup_requests)
    q = {"operator": "connect2ip", "ip": "100.64.12.34", "port": None, "from_ms": 0, "to_ms": 1}
    blobs = [seal.seal_request(q, request_id=f"r{i}", partition=2, now_ms=NOW - 1000) for i in range(3)]
    sent: list[bytes] = []
    p.lookups.responses = SimpleNamespace(send_soon=lambda key, value: sent.append(key))

    async def read(clients, topic, partition, start, end):
        return [Refetched(topic, partition, o, None, blobs[o], []) for o in range(start, end)], 0

    p.lookups.gaps = GapFill(Clients("127.0.0.1:1"), p.names.lookup_requests, agent="lookup", count=p.count, read=read)

    class Stream:
        async def take_events(self, n, within):
            yield [ev(2, 0, blobs[0])]
            yield [ev(2, 2, blobs[2])]

    asyncio.run(p.lookups.run(Stream()))
    assert sent == [b"r0", b"r1", b"r2"]
    assert p.counters["stream_refetched:lookup"] == 1


@pytest.mark.broker
def test_read_range_reads_exactly_the_missing_offsets_from_the_broker(bootstrap, unique):
    from agents.kafka_io import ensure_topics, producer

    topic = f"gapfill-{unique}"
    ensure_topics(bootstrap, [topic], partitions=2)
    p = producer(bootstrap)
    for i in range(30):
        p.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 2, headers=[("h", b"%d" % i)])
    p.flush()
    p.close()
    recs, gone = asyncio.run(read_range(Clients(bootstrap), topic, 1, 3, 11))
    assert gone == 0
    assert [(r.partition, r.offset, r.key, r.value) for r in recs] == \
        [(1, o, b"k%d" % (2 * o + 1), b"v%d" % (2 * o + 1)) for o in range(3, 11)]
    assert dict(recs[0].headers)["h"] == b"7"
    assert recs[0].message is recs[0]
    # a range that ends at the partition's end reads to it and stops
    tail, _ = asyncio.run(read_range(Clients(bootstrap), topic, 0, 12, 15))
    assert [r.offset for r in tail] == [12, 13, 14]


def test_the_log_says_whether_anything_but_heartbeats_was_missing(caplog):
    from agents.kafka_io import HEARTBEAT_KEY

    async def read(clients, topic, partition, start, end):
        return [Refetched(topic, partition, o, HEARTBEAT_KEY if o % 2 else b"k", None if o % 2 else b"x", [])
                for o in range(start, end)], 0

    g = GapFill(Clients("127.0.0.1:1"), "t", agent="query", count=lambda *a: None, read=read)
    g.seed(0, 0)
    with caplog.at_level(logging.INFO, logger="ipanon"):
        asyncio.run(g.complete([ev(0, 2)]))      # offset 1 only: a heartbeat
        asyncio.run(g.complete([ev(0, 5)]))      # 3 and 4: one of them a request
    levels = [(r.levelname, r.getMessage()) for r in caplog.records if "handed over" in r.getMessage()]
    assert levels[0][0] == "INFO" and "read 1 back (1 heartbeats)" in levels[0][1]
    assert levels[1][0] == "WARNING" and "read 2 back (1 heartbeats)" in levels[1][1]


@pytest.mark.parametrize("reloaded_by", ["run", "tick"])
def test_the_desk_decides_every_inbox_record_after_its_snapshot_even_those_never_handed_over(reloaded_by):
    """The query desk's loop (``QueryAgent.run``): its snapshot says offset 3 was decided; Faust
    first hands over 6, having skipped 4 (a request) and 5 (a heartbeat), then seeks back and
    re-delivers 3 and 6 before 7.  The desk decides 4, 6 and 7 — nothing twice, nothing left
    undecided — whether its loop or its timer (``tick``, which runs every second) reloaded the
    snapshot first."""
    from agents.kafka_io import HEARTBEAT_KEY
    from agents.query_agent import QueryAgent

    a = QueryAgent.__new__(QueryAgent)  # the loop only: no Faust app needed
    decided: list = []
    counters: dict = {}

    def count(name, n=1):
        counters[name] = counters.get(name, 0) + n

    async def decide(value, key, now):
        decided.append(value)

    # the snapshot as ``_load_sync`` reads it: desk, chain, holds, inbox offset 3, junk
    a._load_sync = lambda: (SimpleNamespace(pending=lambda: []), SimpleNamespace(next_seq=1), None, 3, {})
    a._new_holddesk = lambda holds: SimpleNamespace(active={}, pending=lambda: [])
    a.junk, a.writer = SimpleNamespace(load=lambda j: None), SimpleNamespace()

    async def read(clients, topic, partition, start, end):
        by = {4: (b"k", b"req-4"), 5: (HEARTBEAT_KEY, None)}
        return [Refetched(topic, partition, o, *by[o], []) for o in range(start, end)], 0

    a.decide, a.clock, a.count = decide, lambda: 0, count
    a._lock, a.stale, a.dirty, a.offset = None, True, False, -1
    a.gaps = GapFill(Clients("127.0.0.1:1"), "inbox", agent="query", count=count, read=read,
                     repeats="query:already-decided")
    if reloaded_by == "tick":
        asyncio.run(a.reload())
        assert not a.stale

    class Stream:
        async def take_events(self, n, within):
            yield [ev(0, 6, b"req-6")]
            yield [ev(0, 3, b"req-3"), ev(0, 6, b"req-6"), ev(0, 7, b"req-7")]

    asyncio.run(a.run(Stream()))
    assert decided == [b"req-4", b"req-6", b"req-7"]
    assert a.offset == 7
    assert counters == {"query:already-decided": 2, "stream_refetched:query": 2}
