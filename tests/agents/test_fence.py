"""The fence (agents/fence.py): a worker frozen past its group session writes no changelog until
the group confirms it still owns its partitions; the revoke that follows drops what it queued for
the lost partitions and the copy behind it.  No broker: the freeze is a blocking sleep in the
event loop, the group's answer a flag."""

from __future__ import annotations

import asyncio
import time

import pytest

from agents.fence import Fence, PartitionsLost
from agents.outbox import Outbox


def test_no_stall_no_wait():
    async def go():
        f = Fence(stall_s=0.3, confirm_s=5.0, lost=lambda: True, tick_s=0.05)
        t = asyncio.create_task(f.run())
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        await f.ready()           # lost() would raise, but nothing stalled: not even consulted
        waited = time.monotonic() - t0
        t.cancel()
        return waited, f.stalls

    waited, stalls = asyncio.run(go())
    assert stalls == 0 and waited < 1.0


def test_a_freeze_then_lost_membership_refuses_the_flush_and_keeps_the_writes():
    lost = {"v": False}

    class Chan:
        sent: list = []

        def as_future_message(self, **kw):
            return kw

        async def publish_message(self, fm, wait=False):
            self.sent.append(fm["key"])
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    async def go():
        f = Fence(stall_s=0.3, confirm_s=3.0, lost=lambda: lost["v"], tick_s=0.05)
        box = Outbox()
        box.gate = f.ready
        t = asyncio.create_task(f.run())
        await asyncio.sleep(0.1)
        ch = Chan()
        box.add(ch, b"k", b"stale", partition=0)
        time.sleep(0.6)           # SIGSTOP: the loop does not run
        asyncio.get_running_loop().call_later(0.3, lambda: lost.update(v=True))  # the heartbeat after the thaw fails
        with pytest.raises(PartitionsLost):
            await box.flush()
        assert ch.sent == [] and len(box) == 1
        assert box.discard(lambda w: w[3] == 0) == 1 and len(box) == 0
        t.cancel()
        return f

    f = asyncio.run(go())
    assert f.stalls == 1 and f.fenced == 1


def test_a_freeze_the_group_survived_flushes_after_the_confirmation_window():
    async def go():
        f = Fence(stall_s=0.3, confirm_s=0.5, lost=lambda: False, tick_s=0.05)
        t = asyncio.create_task(f.run())
        await asyncio.sleep(0.1)
        time.sleep(0.6)
        t0 = time.monotonic()
        await f.ready()
        waited = time.monotonic() - t0
        second = time.monotonic()
        await f.ready()            # cleared: no second wait
        t.cancel()
        return waited, time.monotonic() - second, f

    waited, again, f = asyncio.run(go())
    assert waited >= 0.5 and again < 0.3 and f.stalls == 1 and f.fenced == 0


def test_without_its_ticker_the_fence_never_blocks():
    f = Fence(stall_s=0.1, confirm_s=10.0, lost=lambda: True, tick_s=0.01)
    time.sleep(0.2)
    asyncio.run(f.ready())
    assert not f.suspect()


def test_the_revoke_after_a_stall_drops_the_lost_partitions_writes_and_copy():
    """MappingStage.on_revoked in the suspect state: the changelog writes queued for the revoked
    partitions are dropped, the table forgets those partitions (keys and restore position), and
    what is left (another partition's write, a dead letter) is still flushed."""
    import faust

    from agents.mapping_stage import MappingStage
    from agents.mapping_table import MappingTable

    app = faust.App("fence-revoke", broker="kafka://127.0.0.1:1", store="memory://", key_serializer="raw",
                    value_serializer="raw", topic_partitions=4, web_enabled=False)
    table = MappingTable(app, name="mappings", partitions=4, key_type=bytes, value_type=bytes)
    sent: list = []

    class Chan:
        def __init__(self, name):
            self.name = name

        def get_topic_name(self):
            return self.name

        def as_future_message(self, **kw):
            return kw

        async def publish_message(self, fm, wait=False):
            sent.append((self.name, fm["key"], fm["partition"]))
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    changelog, deadletter = Chan("cl"), Chan("dl")
    table._changelog_topic = changelog
    table.active = {0, 1}

    class P:
        counted: dict = {}

        def count(self, name, n=1):
            self.counted[name] = self.counted.get(name, 0) + n

    class StalledFence:
        def suspect(self):
            return True

    p = P()
    stage = MappingStage.__new__(MappingStage)
    stage.count, stage.fence, stage.table, stage.name, stage.consumer = p.count, StalledFence(), table, "mapping", None
    stage._epoch, stage.owned, stage._read, stage._committed = 0, {0, 1}, {}, {}
    stage._lock = None

    async def go():
        stage._lock = asyncio.Lock()
        table.put(0, b"a", b"stale-a")
        table.put(1, b"b", b"kept-b")
        table._restored_to.update({0: 17, 1: 9})
        table.outbox.add(deadletter, None, b"dead", partition=None)

        class TP:
            def __init__(self, topic, partition):
                self.topic, self.partition = topic, partition

        await stage.on_revoked(None, revoked=[TP("cl", 0)])

    asyncio.run(go())
    assert sent == [("cl", b"b", 1), ("dl", None, None)]      # partition 0's write never left
    assert table.data.get(b"a") is None and 0 not in table._restored_to   # its copy forgotten
    assert table.data.get(b"b") == b"kept-b" and table._restored_to[1] == 9
    assert p.counted == {"fenced_writes": 1} and stage.owned == {1} and table.active == {1}


def test_a_freeze_between_two_writes_of_one_flush_stops_the_hand_over_there():
    """Each hand-over to the producer is an ``await``: a SIGSTOP can fall between two writes of
    one flush.  After the thaw the rest of that flush must not be handed over before the fence
    has the group's verdict (here: lost, so they stay queued for the revoke to drop)."""
    lost = {"v": False}
    sent: list = []

    class Chan:
        def as_future_message(self, **kw):
            return kw

        async def publish_message(self, fm, wait=False):
            sent.append(fm["key"])
            if fm["key"] == b"k1":
                time.sleep(0.6)   # frozen right after handing k1 over
                asyncio.get_running_loop().call_later(0.2, lambda: lost.update(v=True))
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    async def go():
        f = Fence(stall_s=0.3, confirm_s=3.0, lost=lambda: lost["v"], tick_s=0.05)
        box = Outbox()
        box.gate, box.halt = f.ready, f.suspect
        t = asyncio.create_task(f.run())
        await asyncio.sleep(0.1)
        ch = Chan()
        for k in (b"k1", b"k2", b"k3"):
            box.add(ch, k, b"v", partition=0)
        with pytest.raises(PartitionsLost):
            await box.flush()
        t.cancel()
        return [w[1] for w in box._items]

    queued = asyncio.run(go())
    assert sent == [b"k1"] and queued == [b"k2", b"k3"]


def test_stalls_and_refusals_are_counted_for_the_metrics():
    """``ipanon_fence_stalls_total`` / ``ipanon_fence_refusals_total``: an operator sees a
    stall without reading the log."""
    counted: list = []
    now = [0.0]
    f = Fence(stall_s=1.0, confirm_s=0.2, lost=lambda: True, tick_s=0.1, clock=lambda: now[0], count=counted.append)
    f._running = True
    now[0] = 5.0
    assert f.suspect() and counted == ["fence_stalls"]
    with pytest.raises(PartitionsLost):
        asyncio.run(f.ready())
    assert counted == ["fence_stalls", "fence_refusals"]
