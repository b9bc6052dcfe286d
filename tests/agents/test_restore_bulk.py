"""The fresh restore's bulk load into the disk store (``DiskStore.bulk_load``: vector memtables
while ``agents.table_restore.Restorer`` reads at least ``BULK_MIN_RECORDS``), without a broker:
the real ``Restorer`` and ``DiskStore`` read a changelog held in memory through a stand-in
consumer, against a reference model (the changelog replayed into a dict, last word per key).

The changelog has hot keys overwritten across many ``getmany`` batches, tombstones then re-puts
and the reverse, exact duplicates, tombstones of keys never seen and keys whose last word is a
tombstone; the memtables are small, so the vector memtables are flushed many times mid-restore.
Checked: the store equals the model, every live key has the schedule entry of its last value's
header, the checkpoints are the end offsets; the store leaves the bulk mode (skip-list memtables
again, in RocksDB's OPTIONS file) when the restore ends, fails, is cut by a rebalance or is
cancelled, and a cut restore continues from its last applied batch to the same state; the
reopen waits for a running erasure tick; a small read (a gap) never switches.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import types
from collections import namedtuple

import pytest
from aiokafka import TopicPartition

import agents.table_restore as tr
from agents import restore_fetch
from agents.disk_store import DiskStore
from agents.mapping_table import REVISIT_HEADER
from agents.table_restore import Restorer
from stream import disk_bound as dbound

BOUND = dbound.DiskBound(cycle_ms=10**9, tick_ms=1_000, compaction_allowance_ms=60_000)
WIDTH = 1_000
TOPIC = "cl"
Rec = namedtuple("Rec", "key value headers offset timestamp")


def changelog(seed: int, parts: int = 3, n: int = 12_000) -> dict[int, list[Rec]]:
    rnd = random.Random(seed)
    t0 = int(time.time() * 1000)  # record times: a checkpoint is not too old to continue from
    logs: dict[int, list[Rec]] = {p: [] for p in range(parts)}
    hot = [b"hot-%d" % i for i in range(20)]
    for i in range(n):
        p = rnd.randrange(parts)
        off = len(logs[p])
        r = rnd.random()
        if r < 0.3:
            k = rnd.choice(hot)  # overwritten hundreds of times, across batches
        elif r < 0.4 and logs[p]:
            k = rnd.choice(logs[p]).key  # an earlier key of the partition, far back or near
        else:
            k = b"k-%d-%d" % (p, rnd.randrange(n))
        if rnd.random() < 0.15:
            logs[p].append(Rec(k, None, (), off, t0 + i))  # a tombstone (of a key never seen too)
            continue
        if rnd.random() < 0.03 and logs[p]:
            last = logs[p][-1]
            logs[p].append(last._replace(offset=off))  # an exact duplicate
            continue
        when = 5_000 + rnd.randrange(50) * 1_000
        logs[p].append(Rec(k, b"v%d-" % i + bytes(rnd.randrange(40)), ((REVISIT_HEADER, str(when).encode()),),
                           off, t0 + i))
    return logs


def model(logs: dict[int, list[Rec]], upto: dict[int, int] | None = None) -> dict[int, dict]:
    """partition → key → (value, header instant) after replaying the changelog (up to ``upto``)."""
    out: dict[int, dict] = {}
    for p, recs in logs.items():
        d: dict = {}
        for r in recs[: (upto or {}).get(p, len(recs))]:
            if r.value is None:
                d.pop(r.key, None)
            else:
                d[r.key] = (r.value, int(r.headers[0][1]))
        out[p] = d
    return out


class Consumer:
    """An aiokafka consumer over ``logs`` (what ``Restorer`` calls of it); ``on_batch`` runs
    after each ``getmany``."""

    def __init__(self, logs, on_batch=None):
        self.logs, self.on_batch, self.pos, self.batches = logs, on_batch, {}, 0

    async def start(self):
        pass

    async def stop(self):
        pass

    def assign(self, tps):
        self.pos = {tp: 0 for tp in tps}

    async def end_offsets(self, tps):
        return {tp: len(self.logs[tp.partition]) for tp in tps}

    async def beginning_offsets(self, tps):
        return {tp: 0 for tp in tps}

    def seek(self, tp, pos):
        self.pos[tp] = pos

    def pause(self, tp):
        pass

    async def position(self, tp):
        return self.pos[tp]

    async def getmany(self, *tps, timeout_ms=0, max_records=None):
        out, left = {}, max_records
        for tp in tps:
            recs = self.logs[tp.partition][self.pos[tp]:self.pos[tp] + left]
            if recs:
                out[tp] = recs
                self.pos[tp] += len(recs)
                left -= len(recs)
            if not left:
                break
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(self)
        return out


class Clients:
    def __init__(self, consumer):
        self.consumer = consumer

    def aio_consumer(self, **kw):
        self.kw = kw
        return self.consumer

    def admin(self, **kw):
        raise RuntimeError("no admin here")  # the topic id check is skipped


class Spy(DiskStore):
    """Records the bulk mode each restore batch was written in, and each switch."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.modes: list[bool] = []
        self.switches: list[tuple[bool, bool]] = []  # (on, an erasure tick running then)
        self.eraser = None

    def write(self, batch):
        self.modes.append(self.bulk)
        super().write(batch)

    def bulk_load(self, on):
        self.switches.append((on, bool(self.eraser and self.eraser.erasing)))
        super().bulk_load(on)


def table(tmp_path, consumer) -> types.SimpleNamespace:
    st = Spy(tmp_path / "store", bound=BOUND, width_ms=WIDTH, write_buffer_bytes=64 * 1024)
    t = types.SimpleNamespace(
        epoch=1, disk=st, restored=False, restore_stats=None, next_expiry=lambda k, v: 0,
        changelog_topic=types.SimpleNamespace(get_topic_name=lambda: TOPIC),
        restore_clients=Clients(consumer), app=types.SimpleNamespace(conf=types.SimpleNamespace(id="t")),
        max_checkpoint_age_ms=None, extra_topic_configs={}, key_count=lambda: 0,
        _eraser=types.SimpleNamespace(erasing=False))
    st.eraser = t._eraser
    t.restored_to = {}
    t.writes = types.SimpleNamespace(live=set(), acked={}, persist=lambda: None)
    t.restorer = Restorer(t, t.restored_to, t.writes)
    return t


def memtable(st: DiskStore) -> str:
    opts = sorted(st.path.glob("OPTIONS-*"))[-1].read_text()
    kinds = {line.split("=", 1)[1].strip() for line in opts.splitlines() if line.strip().startswith("memtable_factory=")}
    assert len(kinds) == 1, kinds
    return kinds.pop()


def check_equals_model(st: DiskStore, want: dict[int, dict]) -> None:
    due = {}
    for p, b, k in st.due(10**12):
        due.setdefault((p, k), set()).add(b)
    for p, d in want.items():
        got = dict(st.iter_items(p)) if p in st.partitions() else {}
        assert got == {k: v for k, (v, _) in d.items()}, f"partition {p}"
        for k, (_, when) in d.items():
            assert dbound.bucket_of(when, WIDTH) in due.get((p, k), ()), (p, k, when)


@pytest.fixture(autouse=True)
def small(monkeypatch):
    monkeypatch.setattr(tr, "BULK_MIN_RECORDS", 1_000)
    monkeypatch.setattr(tr, "RESTORE_BATCH", 997)  # keys span many batches


def test_bulk_restore_equals_the_model(tmp_path):
    logs = changelog(1)
    t = table(tmp_path, Consumer(logs))
    st = t.disk
    asyncio.run(t.restorer.restore([TopicPartition(TOPIC, p) for p in logs]))
    assert t.restored and not st.bulk
    assert t.restore_clients.kw.get("key_deserializer") is restore_fetch.RAW  # aiokafka's records, not copies
    assert st.modes and all(st.modes[1:-1]), "the restore's batches were not written in bulk mode"
    assert st.switches == [(True, False), (False, False)]
    assert memtable(st) == "SkipListFactory"
    assert st.count_estimate(0) > 0 and len(list(st.path.glob("*.sst"))) > 3  # the memtables were flushed mid-restore
    check_equals_model(st, model(logs))
    assert {p: st.checkpoint(p) for p in logs} == {p: len(r) for p, r in logs.items()}
    # and again after a restart on the store
    st.reopen()
    check_equals_model(st, model(logs))


def test_small_read_is_not_a_bulk_load(tmp_path, monkeypatch):
    monkeypatch.setattr(tr, "BULK_MIN_RECORDS", 10**9)
    logs = changelog(2, n=3_000)
    t = table(tmp_path, Consumer(logs))
    asyncio.run(t.restorer.restore([TopicPartition(TOPIC, p) for p in logs]))
    assert t.disk.switches == [] and not any(t.disk.modes)
    check_equals_model(t.disk, model(logs))


def test_a_cut_restore_leaves_bulk_mode_and_continues_from_its_last_batch(tmp_path):
    logs = changelog(3)

    def rebalance(c):
        if c.batches == 5:
            t.epoch += 1  # a rebalance: the restore stops after this batch

    t = table(tmp_path, Consumer(logs, rebalance))
    st = t.disk
    tps = [TopicPartition(TOPIC, p) for p in logs]

    async def cut():
        await t.restorer.restore(tps)
        await asyncio.sleep(0.2)  # a leave in a task of its own would run now

    asyncio.run(cut())
    assert not t.restored and not st.bulk and memtable(st) == "SkipListFactory"
    part = dict(t.restored_to)
    assert 0 < sum(part.values()) < sum(map(len, logs.values()))
    assert {p: st.checkpoint(p) for p in part} == part
    check_equals_model(st, model(logs, {p: part.get(p, 0) for p in logs}))
    # the next recovery continues from the checkpoints, in bulk mode again
    t.restore_clients = Clients(Consumer(logs))
    asyncio.run(t.restorer.restore(tps))
    assert t.restored and not st.bulk
    assert t.restore_stats["records"] == sum(map(len, logs.values())) - sum(part.values())
    check_equals_model(st, model(logs))


def test_a_cancelled_or_failed_restore_leaves_bulk_mode(tmp_path):
    logs = changelog(4)
    tps = [TopicPartition(TOPIC, p) for p in logs]
    t = table(tmp_path, Consumer(logs))
    st = t.disk

    async def cancelled():
        async def slow(*a, **kw):
            await asyncio.sleep(10)

        t.restore_clients.consumer.getmany = slow
        task = asyncio.ensure_future(t.restorer.restore(tps))
        await asyncio.sleep(0.3)
        assert st.bulk
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)

    asyncio.run(cancelled())
    assert not st.bulk and memtable(st) == "SkipListFactory"

    async def failed():
        async def boom(*a, **kw):
            t.epoch += 1  # the retry loop then gives up: a rebalance came meanwhile
            raise OSError("broker away")

        t.restore_clients = Clients(Consumer(logs))
        t.restore_clients.consumer.getmany = boom
        await t.restorer.restore(tps)

    asyncio.run(failed())
    assert st.switches[-2:] == [(True, False), (False, False)]
    assert not st.bulk and memtable(st) == "SkipListFactory"


def test_the_switch_waits_for_a_running_erasure_tick(tmp_path):
    logs = changelog(5, n=4_000)
    t = table(tmp_path, Consumer(logs))
    t._eraser.erasing = True

    async def go():
        async def tick_ends():
            await asyncio.sleep(0.3)
            t._eraser.erasing = False

        asyncio.ensure_future(tick_ends())
        await t.restorer.restore([TopicPartition(TOPIC, p) for p in logs])

    asyncio.run(go())
    assert t.disk.switches == [(True, False), (False, False)]
    check_equals_model(t.disk, model(logs))


def levels(st: DiskStore, cf: str) -> list[int]:
    return [int(st._cf[cf].property_value(f"rocksdb.num-files-at-level{lv}")) for lv in range(7)]


def l0_stalls(st: DiskStore, cf: str) -> dict[str, int]:
    """RocksDB's count of L0-file-count write delays and stops for ``cf`` since the open."""
    stats = st._cf[cf].property_value("rocksdb.cfstats")
    return {k: int(v) for k, v in re.findall(r"(l0-file-count-limit-(?:delays|stops)): (\d+)", stats)}


def test_the_bulk_load_leaves_compaction_to_after_it_and_the_writes_after_it_never_stall(tmp_path):
    # one partition, ≈ 7 MB of values through 64 KiB memtables: ≈ 40 flushes, past RocksDB's
    # default L0 stall (20 files: delay, 36: stop)
    rnd = random.Random(6)
    t0 = int(time.time() * 1000)
    hdr = ((REVISIT_HEADER, b"9000"),)
    logs = {0: [Rec(b"k-%d" % rnd.randrange(10**9), rnd.randbytes(80), hdr, i, t0 + i) for i in range(80_000)]}
    seen: list[tuple[bool, list[int]]] = []
    pinned: list[int] = []

    def look(c):
        if "d0" in st._cf:  # made by the first batch's write
            seen.append((st.bulk, levels(st, "d0")))
            pinned.append(st._cf["d0"].property_int_value("rocksdb.block-cache-pinned-usage"))

    t = table(tmp_path, Consumer(logs, look))
    st = t.disk
    asyncio.run(t.restorer.restore([TopicPartition(TOPIC, 0)]))
    assert t.restored and not st.bulk
    during = [lv for bulk, lv in seen if bulk]
    assert during and max(lv[0] for lv in during) >= 36, during[-1]  # L0 only grew: no compaction ran
    assert not any(any(lv[1:]) for lv in during), "a compaction ran during the bulk load"
    # the L0 files' index and filter blocks are not pinned outside the block cache's cap (the
    # whole store is in L0 until the merge ends): here ≈ 2.2 B per key when they were, ≈ 0.6
    # without (each tiny file's pinned top level; ≈ 0.1 B per key with the worker's file sizes)
    assert max(pinned) < 1.0 * len(logs[0]), f"{max(pinned)} B pinned for {len(logs[0])} keys in L0"
    # reopened for normal use with ≥ 36 L0 files: the merge runs in the background, writes go on
    assert l0_stalls(st, "d0") == {"l0-file-count-limit-delays": 0, "l0-file-count-limit-stops": 0}
    st.write(st.batch().put(0, b"after", b"v").schedule(0, 9_000, b"after"))
    assert st.get(0, b"after") == b"v"
    deadline = time.monotonic() + 60
    while levels(st, "d0")[0] >= 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert levels(st, "d0")[0] < 4, "the compaction after the bulk load did not run"
    check_equals_model(st, {0: {**model(logs)[0], b"after": (b"v", 9_000)}})
