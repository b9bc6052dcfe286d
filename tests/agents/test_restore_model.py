"""The adversary's restore tests of the disk store: the real ``MappingTable`` with the
real ``DiskStore`` and its own changelog restore, over the real local broker, against a reference
model — the changelog replayed into a dict, last word per key.

The changelog is built to trip a restore that writes in bulk: more than one ``getmany`` batch
per partition (``agents.table_restore.RESTORE_BATCH``), hot keys overwritten hundreds of times
across batches, tombstones then re-puts (and the reverse) far apart, exact duplicate records,
keys whose last record is a tombstone, tombstones of keys never seen, heartbeats, records with
and without the revisit header (and with one that is not a number), values that never expire.

Checked after every restore: the store holds exactly the model; each partition's checkpoint is
its end offset; at any checkpoint a cancelled or killed restore leaves, the store is the model of
the changelog *prefix* before it (a checkpoint never runs ahead of its data); a restart on the
store left by a cut restore reads only the rest; the expiry schedule hands every live key out
exactly once at its right instant when swept as the sweeper does, and an old entry of a deleted
or overwritten key neither brings it back nor expires it early.  (``test_restore_apply`` checks
one batch's sink without a broker; ``test_mapping_table_restore`` the memory store;
``test_mapping_table_disk`` small disk restores; ``test_restore_files`` the files left.)
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from agents.kafka_io import HEARTBEAT_KEY, ensure_topics
from stream import disk_bound as dbound
from tests.agents.test_mapping_table_disk import make_table, store_only, tps

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PARTITIONS = 4
MINE = [0, 1, 2]  # partition 3 belongs to another worker: never in the store
WIDTH_MS = 1_000  # make_table's schedule bucket width
REVISIT = "ipanon-revisit"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def bulk_from_the_first_record(monkeypatch):
    """A restore that switches to a bulk-load mode past some size (``BULK_MIN_RECORDS``, if the
    restore has one) uses it here, whatever the threshold: that path is the one under test."""
    import agents.table_restore as tr

    monkeypatch.setattr(tr, "BULK_MIN_RECORDS", 1, raising=False)


# -- the changelog and its model -----------------------------------------------------------------

def _value(rng: random.Random, mark: bytes, instant) -> bytes:
    """A value naming its own expiry instant (``next_expiry`` reads it), the test's marker and
    24 random bytes that make it unique (the file scans look for those)."""
    head = b"never" if instant is None else b"%d" % instant
    return head + b"|" + mark + rng.randbytes(24)


def next_expiry(key: bytes, value: bytes):
    head = value.split(b"|", 1)[0]
    return None if head == b"never" else int(head)


def changelog(seed: int, mark: bytes, per_partition: int = 40_000) -> list[tuple]:
    """``(partition, key, value or None, headers)`` in production order."""
    rng = random.Random(seed)
    out: list[tuple] = []
    for p in MINE + [3]:
        n = per_partition if p in MINE else 500
        live: list[bytes] = []
        dead: list[bytes] = []
        hot = [b"hot-%d-%d" % (p, i) for i in range(5)]
        recs: list[tuple] = []
        fresh = 0

        def put(key: bytes) -> tuple:
            r = rng.random()
            instant = None if r < 0.03 else rng.randrange(1_000, 200_000)
            v = _value(rng, mark, instant)
            if instant is None or r < 0.25:
                h = []  # no header: next_expiry opens the value
            elif r < 0.30:
                h = [(REVISIT, b"soon")]  # not a number: next_expiry
            else:
                h = [(REVISIT, b"%d" % instant)]
            return (p, key, v, h)

        while len(recs) < n:
            r = rng.random()
            if r < 0.30 or not live:
                k = b"k-%d-%d" % (p, fresh)
                fresh += 1
                live.append(k)
                recs.append(put(k))
            elif r < 0.45:
                recs.append(put(rng.choice(hot)))
            elif r < 0.55:
                k = live.pop(rng.randrange(len(live)))
                dead.append(k)
                recs.append((p, k, None, []))
            elif r < 0.60 and dead:
                k = dead.pop(rng.randrange(len(dead)))
                live.append(k)
                recs.append(put(k))
            elif r < 0.66:
                recs.append(rng.choice(recs))  # an exact duplicate of an earlier record
            elif r < 0.67:
                recs.append((p, b"ghost-%d-%d" % (p, len(recs)), None, []))  # never seen
            elif r < 0.675:
                recs.append((p, HEARTBEAT_KEY, None, []))
            elif r < 0.69:
                recs.append(recs[-1])  # the same record twice in a row
            else:
                recs.append(put(rng.choice(live)))
        # a hot key ends on a tombstone, another is deleted then put again, far from its start
        recs += [(p, hot[0], None, []), (p, hot[1], None, []), put(hot[1])]
        out += recs
    return out


def model(recs, parts=None, upto: dict | None = None) -> dict:
    """key → (value, partition): the changelog replayed (only ``parts``; the first ``upto[p]``
    records of partition p)."""
    state: dict = {}
    seen: dict = {}
    for p, k, v, _ in recs:
        if parts is not None and p not in parts:
            continue
        i = seen[p] = seen.get(p, 0) + 1
        if upto is not None and i > upto.get(p, 0):
            continue
        if v is None:
            state.pop(k, None)
        else:
            state[k] = (v, p)
    state.pop(HEARTBEAT_KEY, None)
    return state


def produce(bootstrap: str, topic: str, recs) -> None:
    from agents.kafka_io import producer

    pr = producer(bootstrap, linger_ms=20, batch_size=512 * 1024)
    try:
        for p, k, v, h in recs:
            pr.send(topic, key=k, value=v, partition=p, headers=list(h))
        pr.flush()
    finally:
        pr.close()


def setup(bootstrap, tmp_path, seed):
    app_id = f"adv{uuid.uuid4().hex[:8]}"
    table = make_table(bootstrap, app_id, tmp_path / "state")
    table.next_expiry = next_expiry
    topic = table.changelog_topic.get_topic_name()
    ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
    mark = b"@" + uuid.uuid4().hex[:14].encode() + b"@"
    recs = changelog(seed, mark)
    produce(bootstrap, topic, recs)
    return app_id, table, topic, recs, mark


def reopen_table(table, bootstrap, app_id, tmp_path):
    table.disk.close()
    t = make_table(bootstrap, app_id, tmp_path / "state")
    t.next_expiry = next_expiry
    return t


async def restore(table, topic, parts=MINE):
    await table.on_rebalance(tps(topic, parts), set(), tps(topic, parts))
    await table.restore(tps(topic, parts))


def counts(recs) -> dict:
    n: dict = {}
    for p, *_ in recs:
        n[p] = n.get(p, 0) + 1
    return n


# -- the schedule ------------------------------------------------------------------------------

def instants_of_puts(recs) -> dict:
    """key → every instant some put record of it asked for (a stale entry may be at any of them)."""
    out: dict = {}
    for p, k, v, h in recs:
        if v is not None and p in MINE:
            out.setdefault(k, set()).add(next_expiry(k, v))
    return out


def sweep_as_the_sweeper(table, recs, want: dict) -> None:
    """Walk every schedule bucket boundary in time order through ``due_items`` (each entry then
    removed by the next store write, as the sweeper's results do).  A key handed out is looked up
    (``get_raw``): absent → skipped; its instant not reached → scheduled again at it (the
    sweeper's reschedule); reached → expired (the sweeper's tombstone, kept here in ``gone``).
    Every live key must expire exactly once, at the first boundary at or after its instant;
    a deleted key must never be found again."""
    asked = instants_of_puts(recs)
    expired: dict = {}
    gone: set = set()
    top = max(i for s in asked.values() for i in s if i is not None)
    for b in range(0, dbound.bucket_of(top, WIDTH_MS) + 2):
        now = b * WIDTH_MS
        for key, p in table.due_items(now):
            assert p in MINE, (key, p)
            assert key in asked, f"{key!r} is scheduled but no record of it was ever put"
            if key in gone:
                continue
            v = table.get_raw(key, p)
            if v is None:
                assert key not in want, f"live key {key!r} unreadable at {now}"
                continue
            assert key in want and want[key] == (v, p), f"{key!r} came back: {v!r} at {now}"
            w = next_expiry(key, v)
            if w is None:  # an entry of an earlier put that had an instant: stale, nothing to do
                assert asked[key] - {None}, f"{key!r} never expires, yet it is due at {now}"
                continue
            assert b <= dbound.bucket_of(w, WIDTH_MS)  # handed out late: an entry was lost
            if dbound.bucket_of(w, WIDTH_MS) * WIDTH_MS <= now:
                assert key not in expired
                expired[key] = now
                gone.add(key)
            else:
                table.schedule(w, key, p)
        table._writes.persist()  # the handed-out entries go with the next store write
    for key, (v, p) in want.items():
        w = next_expiry(key, v)
        if w is None:
            assert key not in expired
        else:
            assert expired.get(key) == dbound.bucket_of(w, WIDTH_MS) * WIDTH_MS, (key, w, expired.get(key))


# -- the tests ---------------------------------------------------------------------------------

def test_fresh_restore_over_many_batches_is_the_replayed_changelog_and_its_schedule(bootstrap, tmp_path):
    from agents.table_restore import RESTORE_BATCH

    app_id, table, topic, recs, _ = setup(bootstrap, tmp_path, seed=1701)
    n = counts(recs)
    assert all(n[p] > RESTORE_BATCH for p in MINE)  # every partition spans several batches
    want = model(recs, MINE)
    asyncio.run(restore(table, topic))
    assert table.restored
    got = store_only(table)
    assert len(got) == len(want) and got == want
    assert table.disk.partitions() == set(MINE)
    assert {p: table.disk.checkpoint(p) for p in MINE} == {p: n[p] for p in MINE} == table._restored_to
    assert table.restore_stats["records"] == sum(n[p] for p in MINE)
    # keys whose last word is a tombstone: absent, also through the table's reads
    dead = {k for p, k, v, _ in recs if p in MINE and k not in want and k != HEARTBEAT_KEY}
    assert len(dead) > 1000
    assert all(table.get_raw(k) is None for k in sorted(dead)[:2000])
    assert b"hot-0-0" not in got and got[b"hot-1-1"][1] == 1
    sweep_as_the_sweeper(table, recs, want)


def _cut_at_third_batch(monkeypatch, on_cut):
    import aiokafka

    real = aiokafka.AIOKafkaConsumer.getmany
    calls = []

    async def getmany(self, *a, **kw):
        batch = await real(self, *a, **kw)
        calls.append(sum(len(r) for r in batch.values()))
        if len(calls) == 3:
            await on_cut()
        return batch

    monkeypatch.setattr(aiokafka.AIOKafkaConsumer, "getmany", getmany)
    return calls


def test_a_restore_cut_by_a_rebalance_then_a_restart_on_its_store_ends_at_the_model(
        bootstrap, tmp_path, monkeypatch):
    app_id, table, topic, recs, _ = setup(bootstrap, tmp_path, seed=1702)
    n = counts(recs)

    async def cut():  # the same partitions come back in a new generation
        await table.on_rebalance(tps(topic, MINE), set(), set())

    calls = _cut_at_third_batch(monkeypatch, cut)
    asyncio.run(restore(table, topic))
    assert len(calls) == 3 and table.restored is False
    monkeypatch.undo()
    # whatever the store holds at its checkpoints is exactly the changelog before them
    ck = {p: table.disk.checkpoint(p) or 0 for p in MINE}
    assert sum(ck.values()) < sum(n[p] for p in MINE)
    assert store_only(table) == model(recs, MINE, upto=ck)
    # the worker restarts on that store: it reads only what is after the checkpoints
    table = reopen_table(table, bootstrap, app_id, tmp_path)
    assert {p: table._restored_to.get(p, 0) for p in MINE} == ck
    asyncio.run(restore(table, topic))
    assert table.restored
    assert table.restore_stats["records"] == sum(n[p] - ck[p] for p in MINE)
    want = model(recs, MINE)
    assert store_only(table) == want
    assert {p: table.disk.checkpoint(p) for p in MINE} == {p: n[p] for p in MINE}
    sweep_as_the_sweeper(table, recs, want)


_KILLED_CHILD = textwrap.dedent("""
    import asyncio, os, signal, sys
    import aiokafka
    import agents.table_restore as tr
    from tests.agents.test_restore_model import make_table, next_expiry, restore, MINE
    tr.BULK_MIN_RECORDS = 1  # the bulk-load path, if the restore has one (the fixture's)
    import agents.disk_store as ds
    init = ds.DiskStore.__init__
    def small_memtables(self, *a, **kw):  # as at scale: column families flush on their own mid-restore
        init(self, *a, **{**kw, "write_buffer_bytes": 256 * 1024})
    ds.DiskStore.__init__ = small_memtables
    bootstrap, app_id, state, topic, after = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    table = make_table(bootstrap, app_id, state)
    table.next_expiry = next_expiry
    real = aiokafka.AIOKafkaConsumer.getmany
    calls = []
    async def getmany(self, *a, **kw):
        calls.append(1)
        if len(calls) > after:
            os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush: the worker dies here
        return await real(self, *a, **kw)
    aiokafka.AIOKafkaConsumer.getmany = getmany
    asyncio.run(restore(table, topic))
    print("restore finished without being killed", flush=True)
""")


@pytest.mark.parametrize("after", [2, 4])
def test_a_restore_killed_half_way_leaves_a_prefix_and_the_next_start_completes_it(
        bootstrap, tmp_path, after):
    app_id, table, topic, recs, _ = setup(bootstrap, tmp_path, seed=1703 + after)
    n = counts(recs)
    table.disk.close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", _KILLED_CHILD, bootstrap, app_id, str(tmp_path / "state"), topic,
                        str(after)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stdout[-2000:], r.stderr[-4000:])
    table = make_table(bootstrap, app_id, tmp_path / "state")
    table.next_expiry = next_expiry
    ck = {p: table._restored_to.get(p, 0) for p in MINE}
    assert store_only(table) == model(recs, MINE, upto=ck)  # a prefix, never data past a checkpoint
    asyncio.run(restore(table, topic))
    assert table.restored
    assert table.restore_stats["records"] == sum(n[p] - ck[p] for p in MINE)
    want = model(recs, MINE)
    assert store_only(table) == want
    sweep_as_the_sweeper(table, recs, want)
