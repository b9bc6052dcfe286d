"""Changelog writes the broker never acknowledged (agents/outbox.py ``on_undelivered``,
agents/mapping_table.py ``_reissue``).

The table's store runs ahead of its changelog: ``put`` changes the dict, then queues the write.
If the producer gives up on that write (a broker outage longer than its timeout) the mapping
stage commits nothing and re-reads the batch, but re-applying a binding to a store that already
holds its effect writes nothing — so without a re-issue the changelog would miss the write for
good, and a restart would restore an older answer.  The model here: whatever fails, once the
outbox flushes cleanly the changelog's last record per key equals the store.  No broker: the
changelog channel's ``publish_message`` is replaced by one whose acks fail on demand."""

from __future__ import annotations

import asyncio

import pytest


class FakeChangelog:
    """Stands in for the changelog topic's publishing: records every hand-over and fails the
    acks of the keys in ``failing`` (once each)."""

    def __init__(self) -> None:
        self.log: list[tuple[bytes, bytes | None, int]] = []   # acknowledged, in order
        self.failing: set[bytes] = set()

    def as_future_message(self, *, key, value, partition, headers, key_serializer, value_serializer, callback):
        return (key, value, partition)

    async def publish_message(self, fm, wait=False):
        fut = asyncio.get_running_loop().create_future()
        key, value, partition = fm
        if key in self.failing:
            self.failing.discard(key)
            fut.set_exception(TimeoutError("no ack"))
        else:
            self.log.append((key, value, partition))
            fut.set_result(None)
        return fut

    def last(self) -> dict:
        out: dict = {}
        for key, value, _ in self.log:
            out[key] = value
        return out


@pytest.fixture
def table():
    import faust

    from agents.mapping_table import MappingTable

    app = faust.App("outbox-undelivered", broker="kafka://127.0.0.1:1", store="memory://",
                    key_serializer="raw", value_serializer="raw", topic_partitions=4, web_enabled=False)
    t = MappingTable(app, name="mappings", partitions=4, key_type=bytes, value_type=bytes)
    fake = FakeChangelog()
    t._changelog_topic = fake  # the channel the table's puts and deletes queue on
    t.active = {0, 1, 2, 3}
    return t, fake


def store(t) -> dict:
    return dict(t.data.items())


def flush(t) -> None:
    asyncio.run(t.outbox.flush())


def test_an_unacknowledged_write_is_reissued_with_the_current_value(table):
    t, log = table
    t.put(0, b"k1", b"v1")
    t.put(1, b"k2", b"a")
    log.failing = {b"k1"}
    with pytest.raises(TimeoutError):
        flush(t)
    assert log.last() == {b"k2": b"a"}         # k1 never reached the log
    flush(t)   # the stage's retry: re-applying the binding finds its effect in the store, queues nothing
    assert log.last() == store(t) == {b"k1": b"v1", b"k2": b"a"}


def test_the_reissue_is_the_newest_state_not_the_lost_record(table):
    t, log = table
    t.put(0, b"k", b"old")
    log.failing = {b"k"}
    with pytest.raises(TimeoutError):
        flush(t)
    t.put(0, b"k", b"new")                      # a later binding of the same key, queued before the retry
    flush(t)
    assert log.last()[b"k"] == b"new" == store(t)[b"k"]
    # and a key deleted after its write was lost ends as a tombstone, not the lost value
    t.put(2, b"gone", b"x")
    log.failing = {b"gone"}
    with pytest.raises(TimeoutError):
        flush(t)
    t.delete(2, b"gone")
    flush(t)
    assert log.last()[b"gone"] is None and b"gone" not in store(t)


def test_no_reissue_without_a_failure_and_none_for_a_revoked_partition(table):
    t, log = table
    t.put(3, b"k", b"v")
    flush(t)
    assert log.log == [(b"k", b"v", 3)] and len(t.outbox) == 0
    t.put(3, b"r", b"v")
    log.failing = {b"r"}
    t.active = {0, 1, 2}  # revoked between the write and its failure: its new owner re-reads the binding
    with pytest.raises(TimeoutError):
        flush(t)
    assert len(t.outbox) == 0
    flush(t)
    assert b"r" not in log.last()


def test_without_the_reissue_the_log_would_lose_the_write(table):
    """The violation the reissue prevents, shown on the same fake: with the hook removed the
    retried binding writes nothing new (the stage's re-application is a no-op on the store), so
    the log ends without k1."""
    t, log = table
    t.outbox.on_undelivered = None
    t.put(0, b"k1", b"v1")
    log.failing = {b"k1"}
    with pytest.raises(TimeoutError):
        flush(t)
    flush(t)   # the stage's retry: apply_binding finds its effect already in the store, queues nothing
    assert log.last() != store(t)
