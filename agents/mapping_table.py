"""The mapping table: a Faust table written with *explicit partitions*, restored by us.

Why not ``table[key] = value``?  Faust derives the changelog partition from the "current
event" context variable (``Table.partition_for_key``); inside ``stream.take_events()`` batches
and in timers there is none, and Faust raises "Cannot modify table key from outside of stream
iteration" (seen here with faust-streaming 0.15.3).  Batching is how we reach the throughput
targets, and the expiry
sweeper runs from a timer, so this wrapper passes the partition explicitly: it writes the local
store and queues the changelog record (a delete queues ``value=None``: a real Kafka tombstone) in
the table's ``Outbox`` (``agents.outbox``), which publishes the writes in the order they were
made.  Faust's own ``send_changelog`` goes through a producer buffer that can reorder two writes
of one key, and a restore would then bring back the older value.

The partition of a key is the partition of its *routing key* on the bindings topic (Kafka's
default murmur2 partitioner), so lookups and the sweeper can compute it for any key.

Faust's memory store only remembers which partition a key came from for keys it recovered
from the changelog, and does not drop live-written keys when their partition is revoked.  We
keep that map ourselves (``_key_partition`` of the store, the field Faust itself uses) and drop
revoked partitions' keys in ``on_rebalance``, so a worker never sweeps — and so never
tombstones — a key another worker now owns.  Readers in other modules (the compliance walks)
use its public reader port: ``active``, ``epoch``, ``disk``, ``key_partition()``,
``pending_writes()`` and ``store_failed``.

**Restore (issue 8).**  Faust's recovery hands every changelog record through its consumer,
the conductor, a task and the recovery loop one at a time: ≈ 540 records/s here, hours for
10M mappings (docs/benchmarks.md).  ``DirectRecovery`` (installed through the app's
``TableManager`` setting) tells Faust that this table's changelog partitions are already at
their highwater, so Faust reads none of them; then, *before* Faust resumes the stream
partitions (the lookup agent stays paused and the mapping stage reads nothing meanwhile:
``agents.mapping_stage``), ``MappingTable.restore``
reads the assigned changelog partitions with a plain aiokafka consumer (``assign``,
``getmany`` batches of 20 000, dict updates, tombstones pop) from where this worker's copy
stops (``_restored_to``: offset 0 for a partition it did not hold; afterwards advanced by each
of its own acknowledged writes that lands right there, so a partition kept through a rebalance
costs next to nothing) up to the end offsets taken when the restore starts, logging progress
every 5 s.  A rebalance during the restore cancels
it (Faust cancels the awaiting coroutine; the epoch check stops anything still running), and
the next recovery continues each partition from the last batch applied.  Whatever is left of
Faust's recovery (highwaters, offsets, ``Worker ready``) runs unchanged.

Expiry (DESIGN.md "Hard facts"): Faust's windowed-table expiry pops keys only from the local
store, never writes tombstones and forgets its schedule after recovery (faust-streaming
#385, #193).  We do not use it.  ``MappingTable.sweep`` is our own: it walks the keys of the
active partitions, drops intervals past their expiry instant and writes the new value or a
tombstone, and it rebuilds its schedule from the store after every recovery (it has no other
state; ``agents.table_schedule``).

The schedule (``stream.schedule.ExpirySchedule``) keeps keys in time buckets of ``SCHEDULE_BUCKET_MS``, not
one ``(expiry, key)`` tuple each: ≈ 10 bytes per scheduled key instead of 112
(``benchmarks/bench_memory.py`` at 1M).  A bucket is handed out only once every expiry it
covers has passed, so a key is never due before its expiry instant and at most one bucket
width after it: the sweeper deletes within sweeper period + bucket width of the expiry
instant, and the retention plan subtracts both from the TTL
(``stream.policy.PlanParams.schedule_bucket_ms``, set from ``SCHEDULE_BUCKET_MS`` by
``agents.runtime.plan_params``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Set

import faust
from aiokafka.partitioner import murmur2
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from stream import disk_bound as db
from stream.schedule import SCHEDULE_BUCKET_MS, SCHEDULE_GROUP, ExpirySchedule  # noqa: F401 (re-exported)

from .outbox import Outbox
from .table_schedule import DUE_LIMIT, SCHEDULE_CHUNK, TableSchedule  # noqa: F401 (re-exported)

log = logging.getLogger("ipanon")

#: the changelog header carrying a write's schedule instant (ms, ASCII): a restore into the disk
#: store schedules the key from it without opening the value
REVISIT_HEADER = "ipanon-revisit"
#: disk mode: seconds acknowledged writes may wait behind an offset never acknowledged to this
#: worker before the changelog is read from the checkpoint (``MappingTable._fill_gap``)
GAP_S = 30.0

#: records per ``getmany`` while restoring, and fetch sizes of the restore consumer
RESTORE_BATCH = 20_000
RESTORE_FETCH_BYTES = 32 * 2**20
RESTORE_PARTITION_FETCH_BYTES = 8 * 2**20
#: seconds between restore progress lines
PROGRESS_EVERY_S = 5.0
#: a partition whose position has not moved for this long although it is short of its end
#: offset is treated as restored (see ``_restore_once``)
STALL_S = 60.0


def partition_for(routing_key: bytes, partitions: int) -> int:
    """Kafka's DefaultPartitioner (murmur2, positive, modulo), as aiokafka and Java use it."""
    return (murmur2(routing_key) & 0x7FFFFFFF) % partitions


def _human_s(s: float) -> str:
    s = int(s + 0.5)
    return f"{s // 3600} h {s // 60 % 60:02d} min" if s >= 3600 else (f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s")


class MappingTable(faust.Table):
    """A ``faust.Table`` of ``bytes → bytes`` with explicit-partition writes and its own
    changelog restore."""

    #: this table restores its changelog itself (``DirectRecovery`` skips it)
    restores_itself = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: the changelog writes, in the order the store was changed (``agents.outbox``: Faust's
        #: ``send_changelog`` can reorder them); the app shares it and flushes it
        self.outbox = TableOutbox(on_undelivered=self._reissue)
        self.active: Set[int] = set()
        self.source_topics: Set[str] = set()  # set by the app: the bindings topic
        #: builds the restore consumer (``agents.kafka_clients.Clients``: bootstrap, TLS/SASL); set
        #: by the app (None: the app's brokers, the process's security)
        self.restore_clients: Any = None
        #: partition → next changelog offset not yet applied to this worker's copy
        self._restored_to: dict[int, int] = {}
        #: bumped by every rebalance: a restore or schedule rebuild of an older epoch stops
        self.epoch = 0
        #: False from a rebalance until every assigned partition is restored
        self.restored = False
        #: what the last (or running) restore did, for the log and status pages
        self.restore_stats: dict[str, Any] = {}
        # -- disk mode (``use_disk``; docs/state-on-disk.md "Wiring") --
        #: the RocksDB store, or None: the values live in Faust's memory store (``self.data``)
        self.disk: Any = None
        #: (key, value) → its schedule instant, for restored records without ``REVISIT_HEADER``
        self.next_expiry: Optional[Callable[[bytes, bytes], Optional[int]]] = None
        #: a checkpoint older than this is not continued from (the changelog may have dropped
        #: tombstones after it: ``delete.retention.ms``); None: from the changelog's config
        self.max_checkpoint_age_ms: Optional[int] = None
        #: key → (write sequence, partition, value or None): writes not yet applied to the store,
        #: which only ever holds what the changelog acknowledged (reads look here first)
        self._pending: dict[bytes, tuple[int, int, Optional[bytes]]] = {}
        self._seq = 0
        #: partition → changelog offset → (key, value, seq): acknowledged writes waiting for
        #: every offset before them to be applied (the store is a prefix of the changelog)
        self._acked: dict[int, dict[int, tuple]] = {}
        #: schedule changes for the next store write: (partition, bucket or when, key, is_put)
        self._sched_ops: list[tuple[int, int, bytes, bool]] = []
        #: partitions restored in this epoch: their checkpoint may advance with our own writes
        self._live: Set[int] = set()
        #: partition → when a gap in its acknowledged offsets was first seen (``_persist``)
        self._gap_since: dict[int, float] = {}
        self._filling: Set[int] = set()
        self._erasing = False
        #: the sweeper's schedule (``agents.table_schedule``; its disk changes go with the next
        #: store batch: ``schedule_op``)
        self._expiry = TableSchedule(self, self)

    def schedule_op(self, partition: int, when: int, key: bytes, put: bool) -> None:
        """A schedule change (``put``: an entry at ``when``; else the removal of the entry of
        bucket ``when``) for the next store write."""
        self._sched_ops.append((partition, when, key, put))

    # -- store access -----------------------------------------------------------------------

    def key_partition(self) -> dict:
        """key → table partition of every key this worker holds: the live map (faust
        MemoryStore's own ``_key_partition``, see the module docstring), for readers that walk
        the table (sweeper, metrics); a key missing from it, or whose partition is not in
        ``active``, is not this worker's to touch."""
        return self.data._key_partition

    def get_raw(self, key: bytes, partition: Optional[int] = None) -> Optional[bytes]:
        """The stored value of ``key`` (None: absent).  Disk mode: the newest unacknowledged write,
        else the store (``partition`` when known, else each held partition: a bloom filter each)."""
        if self.disk is None:
            return self.data.get(key)
        w = self._pending.get(key)
        if w is not None:
            return w[2]
        try:
            if partition is not None:
                return self.disk.get(partition, key)
            for p in self.disk.partitions():
                v = self.disk.get(p, key)
                if v is not None:
                    return v
        except Exception as e:
            self.store_failed(e)
            raise
        return None

    def store_failed(self, e: BaseException) -> None:
        """A read met a damaged block of the disk store (RocksDB "Corruption"): answering from it,
        or dead-lettering the bindings that need it (they would be lost), are both wrong.  The
        store is deleted and the worker exits at once (status 70): its input offsets are
        committed only after its writes, so nothing is lost, and the next start restores every
        partition from the changelog.  Any other error is the caller's."""
        if self.disk is None or not str(e).startswith("Corruption"):
            return
        import os
        import shutil

        log.critical("mapping table: the disk store %s is damaged (%s); it is deleted and the worker exits: "
                     "restart it to restore the table from the changelog", self.disk.path,
                     str(e).splitlines()[0][:300])
        shutil.rmtree(self.disk.path, ignore_errors=True)
        for h in logging.getLogger().handlers + log.handlers:
            try:
                h.flush()
            except Exception:
                pass
        os._exit(70)

    def pending_writes(self) -> Mapping[bytes, tuple[int, int, Optional[bytes]]]:
        """Disk mode: a read-only view of the writes not yet in the store, key → (write
        sequence, partition, value or None for a delete); what a lookup sees before the store.
        Empty in memory mode."""
        return MappingProxyType(self._pending)

    def put(self, partition: int, key: bytes, value: bytes, *, revisit_ms: Optional[int] = None) -> None:
        """Write ``key`` (and schedule it at ``revisit_ms``, carried on the changelog record so a
        restore into the disk store schedules it without opening the value)."""
        headers = None if revisit_ms is None else [(REVISIT_HEADER, str(int(revisit_ms)).encode())]
        if self.disk is None:
            self.data[key] = value
            self.key_partition()[key] = partition
            cb = self._on_changelog_sent
        else:
            cb = self._pend(partition, key, value)
        self.outbox.add(self.changelog_topic, key, value, partition=partition, headers=headers, callback=cb)
        if revisit_ms is not None:
            self.schedule(revisit_ms, key, partition)

    def delete(self, partition: int, key: bytes) -> None:
        if self.disk is None:
            self.data.pop(key, None)
            self.key_partition().pop(key, None)
            cb = self._on_changelog_sent
        else:
            cb = self._pend(partition, key, None)
        self.outbox.add(self.changelog_topic, key, None, partition=partition, callback=cb)

    def heartbeat(self, partition: int, key: bytes) -> None:
        """Queue a changelog heartbeat (a tombstone of a reserved key): acknowledged like any
        other write, so the offsets this worker applies stay contiguous."""
        cb = self._on_changelog_sent if self.disk is None else self._pend(partition, None, None)
        self.outbox.add(self.changelog_topic, key, None, partition=partition, callback=cb)

    def partition_of(self, key: bytes) -> Optional[int]:
        """The partition holding ``key`` here (None: not held)."""
        if self.disk is None:
            return self.key_partition().get(key)
        w = self._pending.get(key)
        if w is not None:
            return w[1] if w[2] is not None else None
        for p in self.disk.partitions():
            if self.disk.get(p, key) is not None:
                return p
        return None

    def forget(self, partitions: Set[int]) -> int:
        """Drop this worker's copy of ``partitions`` (keys and restore position), so that if they
        come back they are read afresh from the changelog: used when writes of theirs were
        discarded (``agents.fence``) and the copy ran ahead of the log.  Returns keys dropped."""
        return self._drop_partitions(partitions.__contains__)

    def _drop_partitions(self, gone: Callable[[int], bool]) -> int:
        """Drop the keys and the restore position of every partition ``gone`` selects."""
        if self.disk is not None:
            return self._drop_disk_partitions(gone)
        kp = self.key_partition()
        keys = [k for k, p in kp.items() if gone(p)]
        for k in keys:
            self.data.pop(k, None)
            kp.pop(k, None)
        for p in [p for p in self._restored_to if gone(p)]:
            del self._restored_to[p]
        return len(keys)

    def _reissue(self, failed: list) -> None:
        """Changelog writes the broker never acknowledged (the producer gave up: an outage
        longer than its timeout).  The store already holds them, so re-reading their bindings
        from the uncommitted offset changes nothing and writes nothing: queue the *current*
        state of each such key again (its newest value, or a tombstone), which is what the log
        must end with whatever order the lost writes had.  A partition revoked meanwhile is
        left alone: its new owner re-reads the uncommitted bindings itself."""
        seen = set()
        for channel, key, _value, partition, _headers, _cb in failed:
            if channel is not self.changelog_topic or key in seen or partition not in self.active:
                continue
            seen.add(key)
            if self.disk is None:
                self.outbox.add(self.changelog_topic, key, self.data.get(key), partition=partition,
                                callback=self._on_changelog_sent)
            else:
                value = self.get_raw(key, partition)
                self.outbox.add(self.changelog_topic, key, value, partition=partition,
                                callback=self._pend(partition, key, value))

    def _on_changelog_sent(self, fut: Any) -> None:
        """Each acknowledged changelog write: if it landed exactly where this worker's copy of
        the partition ends, the copy now ends after it (the store already holds the write), so
        a partition kept through the next rebalance is not read again.  A write that lands
        anywhere else (another writer in between, acks out of order, a restore running) leaves
        the offset alone: the next restore reads from there, as Faust's recovery would."""
        super()._on_changelog_sent(fut)
        if not self.restored:
            return
        try:
            res = fut.result()
            p, offset = res.topic_partition.partition, res.offset
        except Exception:
            return
        if self._restored_to.get(p) == offset:
            self._restored_to[p] = offset + 1

    def keys_of(self, partitions: Iterable[int], prefix: bytes = b"") -> Iterator[bytes]:
        """The keys of ``partitions`` starting with ``prefix``, each once; the caller may write
        while it walks.  On disk the store's keys come chunk by chunk (a partition can hold tens
        of millions: a list of them was ≈ 69 B per key), after the keys pending at the call (a
        snapshot: the caller's own writes join the pending set as it goes)."""
        ps = set(partitions)
        if self.disk is not None:
            pend = {k: v for k, (_, p, v) in self._pending.items() if p in ps and k.startswith(prefix)}
            yield from [k for k, v in pend.items() if v is not None]
            for p in sorted(ps):
                yield from (k for k in self.disk.iter_keys(p, prefix=prefix) if k not in pend)
            return
        kp = self.key_partition()
        yield from [k for k in list(self.data.keys()) if k.startswith(prefix) and kp.get(k) in ps]

    # -- disk mode ------------------------------------------------------------------------------

    def use_disk(self, store: Any) -> None:
        """Keep the values in ``store`` (``agents.disk_store.DiskStore``) instead of Faust's memory
        store: each partition continues from the store's checkpoint (docs/state-on-disk.md)."""
        self.disk = store
        try:
            for p in sorted(store.partitions()):
                c = store.checkpoint(p)
                if c is None:  # never written with a checkpoint: nothing to continue from
                    store.drop_partition(p)
                else:
                    self._restored_to[p] = c
        except Exception as e:
            if not str(e).startswith("Corruption"):
                raise
            log.error("mapping table: the disk store is damaged (%s); it is deleted and every partition "
                      "restored from the changelog", str(e).splitlines()[0][:300])
            store.wipe()
            self._restored_to.clear()
        self.outbox.after_flush = self._persist

    def _pend(self, partition: int, key: Optional[bytes], value: Optional[bytes]) -> Callable[[Any], None]:
        """Record a changelog write not yet acknowledged (``key`` None: a heartbeat) and return
        its acknowledgement callback."""
        self._seq += 1
        seq = self._seq
        if key is not None:
            self._pending[key] = (seq, partition, value)

        def acked(fut: Any) -> None:
            self._on_disk_ack(fut, key, value, seq)
        return acked

    def _on_disk_ack(self, fut: Any, key: Optional[bytes], value: Optional[bytes], seq: int) -> None:
        try:
            faust.Table._on_changelog_sent(self, fut)
        except Exception:
            pass
        try:
            res = fut.result()
            p, offset = res.topic_partition.partition, res.offset
        except Exception:  # not delivered: ``_reissue`` queues the key's current state again
            return
        self._acked.setdefault(p, {})[offset] = (key, value, seq)

    def _persist(self) -> None:
        """After every outbox flush: apply to the store, in changelog offset order, the
        acknowledged writes that continue each live partition's checkpoint, with the schedule
        changes made meanwhile, in one write batch; the checkpoint moves past exactly what was
        applied.  An acknowledged write after a gap waits (the store must stay a prefix of the
        changelog); a gap that stays ``GAP_S`` is filled from the changelog (``_fill_gap``)."""
        st = self.disk
        if st is None:
            return
        b = None
        moved: dict[int, int] = {}
        settled: list[tuple] = []
        now = time.time_ns() // 1_000_000
        for p, acked in self._acked.items():
            if not acked or p not in self._live:
                continue
            c = self._restored_to.get(p)
            if c is None:
                continue
            for o in [o for o in acked if o < c]:  # read by a restore since
                settled.append(acked.pop(o))
            c0 = c
            while True:
                w = acked.pop(c, None)
                if w is None:
                    break
                key, value, _ = w
                if key is not None:
                    if b is None:
                        b = st.batch()
                    if value is None:
                        b.delete(p, key)
                    else:
                        b.put(p, key, value)
                    settled.append(w)
                c += 1
            if c != c0:
                if b is None:
                    b = st.batch()
                b.checkpoint(p, c, now)
                moved[p] = c
            if acked:
                since = self._gap_since.setdefault(p, time.monotonic())
                if time.monotonic() - since >= GAP_S and p not in self._filling:
                    self._filling.add(p)
                    asyncio.ensure_future(self._fill_gap(p, self.epoch))
            else:
                self._gap_since.pop(p, None)
        ops = self._sched_ops
        if ops:
            held = st.partitions()
            for p, t, key, put in ops:
                if p not in held:
                    continue
                if b is None:
                    b = st.batch()
                if put:
                    b.schedule(p, t, key)
                else:
                    b.unschedule(p, t, key)
        if b is not None:
            st.write(b)
        del b
        self._sched_ops = []
        self._restored_to.update(moved)
        pend = self._pending
        for key, _, seq in settled:
            if key is not None:
                w = pend.get(key)
                if w is not None and w[0] <= seq:
                    del pend[key]

    async def _fill_gap(self, p: int, epoch: int) -> None:
        """Acknowledged writes of ``p`` wait behind an offset this worker never saw acknowledged
        (an acknowledgement lost in an outage, whose write the broker kept): read the
        changelog from the checkpoint, like a restore, then carry on."""
        topic = self.changelog_topic.get_topic_name()
        log.warning("mapping table: partition %d: acknowledged writes wait behind offset %s for %.0f s; "
                    "reading the changelog from there", p, self._restored_to.get(p), GAP_S)
        self._live.discard(p)
        try:
            await self._restore_once(topic, [p], epoch)
        except Exception:
            log.exception("mapping table: partition %d: reading the changelog gap failed; retrying later", p)
        finally:
            self._filling.discard(p)
            self._gap_since.pop(p, None)
            if epoch == self.epoch:
                self._live.add(p)
                self._persist()

    def _drop_disk_partitions(self, gone: Callable[[int], bool]) -> int:
        st = self.disk
        n = 0
        for p in sorted(st.partitions()):
            if gone(p):
                n += st.count_estimate(p)
                st.drop_partition(p)
        for d in (self._restored_to, self._acked, self._gap_since):
            for p in [p for p in d if gone(p)]:
                del d[p]
        self._pending = {k: w for k, w in self._pending.items() if not gone(w[1])}
        self._sched_ops = [op for op in self._sched_ops if not gone(op[0])]
        self._live = {p for p in self._live if not gone(p)}
        return n

    def key_count(self) -> int:
        """Keys held (disk mode: RocksDB's estimate)."""
        if self.disk is None:
            return len(self.data)
        return sum(self.disk.count_estimate(p) for p in self.disk.partitions())

    async def erase_tick(self, now_ms: int) -> Optional[dict]:
        """One erasure tick of the disk store (``DiskStore.erase_tick``): the flush and forced
        compactions run in a thread while the worker goes on; the reopen that retires the old
        MANIFEST runs here, in the event loop, where no write batch or iterator is ever open."""
        st = self.disk
        if st is None or self._erasing:
            return None
        self._erasing = True
        try:
            info = dict(await asyncio.to_thread(st.erase_tick, now_ms, roll_manifest=False))
            if info.get("compacted"):
                t0 = time.monotonic()
                try:
                    st.reopen()
                except Exception:
                    import gc

                    gc.collect()  # a handle left in a traceback keeps the DB locked
                    st._open()
                info["duration_ms"] = round(info.get("duration_ms", 0.0) + (time.monotonic() - t0) * 1000, 1)
                info["overran"] = st.bound.tick_overran(info["duration_ms"])
                st.last_tick = info
            return info
        finally:
            self._erasing = False

    # -- schedule (``agents.table_schedule``) ------------------------------------------------

    def schedule(self, expiry_ms: Optional[int], key: bytes, partition: Optional[int] = None) -> None:
        """Look at ``key`` again at ``expiry_ms`` (None: never; 0: at the next ``due``).  Disk
        mode: an entry of the store's schedule (written with the next store batch; an entry made
        stale by a later write is re-checked when it comes up, like the memory schedule's)."""
        self._expiry.schedule(expiry_ms, key, partition)

    def due_items(self, now_ms: int) -> list[tuple[bytes, Optional[int]]]:
        """``(key, partition)`` of the keys due at ``now_ms`` (``due``).  Disk mode: read from the
        store's schedule (only the due buckets); each entry is removed with the next store batch,
        the one that carries the sweeper's results, so a crash before it loses no expiry."""
        return self._expiry.due_items(now_ms)

    def due(self, now_ms: int) -> list[bytes]:
        """Keys scheduled at or before ``now_ms`` rounded down to whole buckets (each once):
        never before their scheduled instant, at most ``SCHEDULE_BUCKET_MS`` after it.  None
        while a restore runs: the store is half-filled, and a sweep would write over what the
        restore is still to apply."""
        return self._expiry.due(now_ms)

    @property
    def schedule_complete(self) -> bool:
        """Restored and no schedule rebuild running: every stored key is in the schedule, so
        the sweeper will reach each one when it is due (the vault destroys epoch keys only then)."""
        return self._expiry.complete

    def rebuild_schedule_soon(self, next_expiry: Callable[[bytes, bytes], Optional[int]],
                              done: Callable[[int, float], Any]) -> None:
        """Rebuild the schedule in the background, ``SCHEDULE_CHUNK`` keys per event-loop turn;
        ``done(keys, seconds)`` when complete (not called if a rebalance stopped it).  Disk
        mode: nothing to rebuild (the schedule is in the store)."""
        self._expiry.rebuild_soon(next_expiry, done)

    # -- rebalance --------------------------------------------------------------------------

    async def on_rebalance(self, assigned: Set[TP], revoked: Set[TP], newly_assigned: Set[TP],
                           generation_id: int = 0) -> None:
        self.epoch += 1  # stops a restore or schedule rebuild still running (sync with this)
        self.restored = False
        self._live = set()
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        # the changelog is co-partitioned with the lookup request topic (Faust's assignor keeps
        # same-width topics of the same subscribers together); the mapping stage reads bindings
        # partition n exactly when changelog partition n is here (agents.mapping_stage)
        names = {self.changelog_topic.get_topic_name(), *self.source_topics}
        mine = {tp.partition for tp in assigned if tp.topic in names}
        self.active = mine
        self._drop_partitions(lambda p: p not in mine)

    # -- restore ----------------------------------------------------------------------------

    async def restore(self, tps: Iterable[TP]) -> None:
        """Bring every assigned changelog partition of this table up to the changelog's end
        offsets (taken when the restore starts), then mark the table restored.  Retries after
        a broker error from where it stopped; returns early if a rebalance superseded it."""
        epoch = self.epoch
        topic = self.changelog_topic.get_topic_name()
        parts = sorted({tp.partition for tp in tps if tp.topic == topic})
        if not parts:
            self.restored = True
            self._live = set()
            return
        delay = 1.0
        while epoch == self.epoch:
            try:
                await self._restore_once(topic, parts, epoch)
                break
            except asyncio.CancelledError:
                raise
            except Exception as e:  # broker away, authorisation, …: keep what we have, retry
                if epoch != self.epoch:
                    return
                if self.disk is not None and str(e).startswith("Corruption"):
                    # RocksDB found a damaged block: never answer from it; start from the changelog
                    log.error("mapping table: the disk store is damaged (%s); it is deleted and every partition "
                              "restored from the changelog", str(e).splitlines()[0][:300])
                    self.disk.wipe()
                    self._restored_to.clear()
                    self._acked.clear()
                    continue
                log.warning("mapping table: restore interrupted (%s: %s); retrying in %.0f s from where it stopped",
                            type(e).__name__, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        if epoch == self.epoch:
            self.restored = True
            if self.disk is not None:
                self._live = set(parts)
                self._persist()  # our writes acknowledged during the restore

    async def _restore_once(self, topic: str, parts: list[int], epoch: int) -> None:
        from aiokafka import TopicPartition

        from .kafka_clients import Clients

        t0, cpu0 = time.monotonic(), time.process_time()
        disk = self.disk
        # the one loop below, two sinks: Faust's memory store or the disk store
        apply = self._apply_memory if disk is None else self._apply_restored
        restored_to = self._restored_to
        cl = self.restore_clients or Clients(",".join(f"{u.host}:{u.port or 9092}" for u in self.app.conf.broker))
        c = cl.aio_consumer(client_id=f"{self.app.conf.id}-restore", group_id=None, auto_offset_reset="earliest",
                            fetch_max_bytes=RESTORE_FETCH_BYTES, max_partition_fetch_bytes=RESTORE_PARTITION_FETCH_BYTES)
        await c.start()
        try:
            tps = [TopicPartition(topic, p) for p in parts]
            c.assign(tps)
            ends = await c.end_offsets(tps) if tps else {}
            firsts = await c.beginning_offsets(tps) if tps else {}
            if disk is not None:
                await self._check_topic_id(cl, topic)
                self._check_checkpoints(tps, firsts, ends)
            # records after the end offsets were written after this instant (checkpoint times)
            wall0 = time.time_ns() // 1_000_000
            todo: dict[Any, int] = {}
            for tp in tps:
                pos = max(restored_to.get(tp.partition, 0), firsts[tp])
                if pos < ends[tp]:
                    c.seek(tp, pos)
                    todo[tp] = ends[tp]
                else:
                    c.pause(tp)
                    restored_to[tp.partition] = pos  # nothing to read: the copy ends here
            if disk is not None:
                self._write_checkpoints([p for p in parts if TopicPartition(topic, p) not in todo], wall0)
            total = sum(ends[tp] - max(restored_to.get(tp.partition, 0), firsts[tp]) for tp in todo)
            if epoch != self.epoch:
                return
            log.info("mapping table: restoring partitions %s from %s: up to %d records to read (%d keys held)",
                     parts, topic, total, self.key_count())
            n = 0
            last_log = t0
            remaining = set(todo)
            stalled: dict[Any, tuple[int, float]] = {}  # tp → (position, since when unchanged)
            while remaining:
                batch = await c.getmany(*remaining, timeout_ms=500, max_records=RESTORE_BATCH)
                if epoch != self.epoch:
                    return  # a rebalance came: the next recovery continues from restored_to
                n += apply(batch)
                await asyncio.sleep(0)  # getmany does not yield while it has records buffered
                if epoch != self.epoch:
                    return
                now = time.monotonic()
                for tp in list(remaining):
                    pos = await c.position(tp)  # past compacted-away or marker offsets too
                    if pos < todo[tp]:
                        was = stalled.get(tp)
                        if was is None or was[0] != pos:
                            stalled[tp] = (pos, now)
                            continue
                        if now - was[1] < STALL_S:
                            continue
                        # nothing readable between pos and the end offset for STALL_S: the tail
                        # was compacted away without a batch left to step over (never seen here)
                        log.warning("mapping table: %s has no records between offset %d and its end offset %d "
                                    "for %.0f s; treating it as restored", tp, pos, todo[tp], now - was[1])
                        pos = todo[tp]
                    remaining.discard(tp)
                    c.pause(tp)
                    restored_to[tp.partition] = max(restored_to.get(tp.partition, 0), pos)
                    if disk is not None:
                        self._write_checkpoints([tp.partition], wall0)
                if now - last_log >= PROGRESS_EVERY_S and remaining:
                    last_log = now
                    rate = n / (now - t0)
                    left = sum(max(0, todo[tp] - restored_to.get(tp.partition, 0)) for tp in remaining)
                    log.info("mapping table: restoring: %d of %d records read (%.0f/s), %d remaining, about %s left",
                             n, total, rate, left, _human_s(left / rate) if rate > 0 else "?")
            dt, dcpu = time.monotonic() - t0, time.process_time() - cpu0
            keys = self.key_count()
            self.restore_stats = {"records": n, "keys": keys, "store": "memory" if disk is None else "disk", "partitions": parts, "seconds": round(dt, 3),
                                  "cpu_seconds": round(dcpu, 3), "at": time.time()}
            log.info("mapping table: restored %d records of partitions %s in %.2f s (%.0f records/s, "
                     "%.0f per CPU-second, process CPU %.2f s): %d keys",
                     n, parts, dt, n / dt if dt > 0 else 0, n / dcpu if dcpu > 0 else 0, dcpu, keys)
        finally:
            await c.stop()

    # -- restore into the disk store -------------------------------------------------------------

    def _checkpoint_limit_ms(self) -> int:
        """How old a checkpoint may be and still be continued from: half the changelog's
        ``delete.retention.ms`` (a tombstone written after the checkpoint is kept at least that
        long; the half leaves room for records written before the checkpoint time, in flight)."""
        if self.max_checkpoint_age_ms is not None:
            return self.max_checkpoint_age_ms
        drm = (self.extra_topic_configs or {}).get("delete.retention.ms", 86_400_000)
        try:
            return int(drm) // 2
        except (TypeError, ValueError):
            return 43_200_000

    async def _check_topic_id(self, clients: Any, topic: str) -> None:
        """A checkpoint is an offset of *one* topic: if the changelog was deleted and created
        again under the same name (Kafka topic ids, KIP-516), every partition of the store is
        restored afresh — the new topic's offsets point into records the store never saw."""
        def topic_id() -> Optional[str]:
            admin = clients.admin(client_id=f"{self.app.conf.id}-restore-admin")
            try:
                tid = admin.describe_topics([topic])[0].get("topic_id")
                return None if tid is None else str(tid)
            finally:
                admin.close()

        try:
            tid = await asyncio.to_thread(topic_id)
        except Exception as e:  # the offset checks still apply
            log.warning("mapping table: could not read the changelog's topic id (%s: %s)", type(e).__name__, e)
            return
        if not tid or tid == "00000000-0000-0000-0000-000000000000":
            return
        st = self.disk
        had = st.get_meta(b"topic-id")
        if had is not None and had.decode() != tid:
            log.warning("mapping table: the changelog %s was created again (topic id %s, the store's %s): "
                        "every partition is restored afresh", topic, tid, had.decode())
            for p in sorted(st.partitions()):
                st.drop_partition(p)
            self._restored_to.clear()
        if had is None or had.decode() != tid:
            st.put_meta(b"topic-id", tid.encode())

    def _check_checkpoints(self, tps: list, firsts: dict, ends: dict) -> None:  # noqa: C901
        """Drop each partition whose checkpoint cannot be continued from, so it is restored
        afresh: past the changelog's end (the topic was re-created or truncated), before its
        start (records this store never saw were deleted), or older than
        ``_checkpoint_limit_ms`` with records after it (tombstones may have been compacted away,
        and the store would keep what they deleted)."""
        st = self.disk
        now = time.time_ns() // 1_000_000
        for tp in tps:
            p = tp.partition
            c = self._restored_to.get(p)
            if c is None or p not in st.partitions():
                continue
            at = st.checkpoint_at(p)
            why = None
            if c > ends[tp]:
                why = f"checkpoint {c} past the end offset {ends[tp]}"
            elif c < firsts[tp]:
                why = f"checkpoint {c} before the log start offset {firsts[tp]}"
            elif c < ends[tp] and (at is None or now - at > self._checkpoint_limit_ms()):
                why = f"checkpoint written {'at an unknown time' if at is None else f'{(now - at) / 1000:.0f} s ago'}"
            if why:
                log.warning("mapping table: partition %d of the disk store is restored afresh: %s", p, why)
                st.drop_partition(p)
                self._restored_to.pop(p, None)

    def _write_checkpoints(self, parts: Iterable[int], at_ms: int) -> None:
        """Each partition's position as its checkpoint, with ``at_ms``: every record after it was
        written after that instant (the checkpoint age test of ``_check_checkpoints``)."""
        b = self.disk.batch()
        for p in parts:
            c = self._restored_to.get(p)
            if c is not None:
                b.checkpoint(p, c, at_ms)
        self.disk.write(b)

    def _apply_memory(self, batch: dict) -> int:
        """The memory form of ``_apply_restored``: one ``getmany`` batch into Faust's memory store
        (its dict and key → partition map; a tombstone pops the key), the position moved."""
        data = self.data.data  # the memory store's dict itself: no per-record method calls
        kp = self.key_partition()
        restored_to = self._restored_to
        n = 0
        for tp, recs in batch.items():
            if not recs:
                continue
            p = tp.partition
            for r in recs:
                k = r.key
                if k is None:
                    continue
                v = r.value
                if v is None:  # tombstone (a heartbeat too: its key is never stored)
                    data.pop(k, None)
                    kp.pop(k, None)
                else:
                    data[k] = v
                    kp[k] = p
            n += len(recs)
            restored_to[p] = recs[-1].offset + 1
        return n

    def _apply_restored(self, batch: dict) -> int:
        """One ``getmany`` batch into the disk store as one write batch: values, their schedule
        entries (from ``REVISIT_HEADER``, else ``next_expiry``, else at once) and each
        partition's checkpoint; the in-memory position moves only once it is written.  The
        schedule key's bucket prefix is computed once per distinct header value, and each
        partition's changes go to the store in one call (``Batch.apply_many``)."""
        st = self.disk
        b = st.batch()
        nxt = self.next_expiry
        width = st.width_ms
        prefixes: dict = {}  # header value → its schedule key's bucket prefix (False: not a number)
        moved = {}
        n = 0
        for tp, recs in batch.items():
            if not recs:
                continue
            ops: list = []
            add = ops.append
            for r in recs:
                k = r.key
                if k is None:
                    continue
                v = r.value
                if v is None:  # a tombstone (a heartbeat too: its key is never stored)
                    add((k, None, None))
                    continue
                pre = None
                for hk, hv in r.headers or ():
                    if hk == REVISIT_HEADER:
                        pre = prefixes.get(hv)
                        if pre is None:
                            pre = prefixes[hv] = _bucket_prefix(hv, width)
                if pre:
                    add((k, v, pre + k))
                else:
                    when = nxt(k, v) if nxt is not None else 0
                    add((k, v, None if when is None else db.schedule_key(db.bucket_of(when, width), k)))
            b.apply_many(tp.partition, ops)
            n += len(recs)
            # records after this one were written after it: its timestamp is the checkpoint's time
            moved[tp.partition] = (recs[-1].offset + 1, recs[-1].timestamp)
        now = time.time_ns() // 1_000_000
        for p, (c, at) in moved.items():
            b.checkpoint(p, c, at if isinstance(at, int) and at > 0 else now)
        st.write(b)
        del b
        self._restored_to.update({p: c for p, (c, _) in moved.items()})
        return n


def _bucket_prefix(header: Any, width_ms: int) -> Any:
    """The schedule key prefix (``stream.disk_bound.schedule_key`` without the key) of a
    ``REVISIT_HEADER`` value, or False if it is not a number."""
    try:
        when = int(header)
    except (TypeError, ValueError):
        return False
    return db.schedule_key(db.bucket_of(when, width_ms), b"")


class TableOutbox(Outbox):
    """The table's ``Outbox``: ``after_flush`` runs after every flush, delivered or not (the
    disk mode applies the acknowledged writes to its store then: ``MappingTable._persist``)."""

    __slots__ = ("after_flush",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_flush: Optional[Callable[[], None]] = None

    async def flush(self, *, gated: bool = True) -> int:
        try:
            return await super().flush(gated=gated)
        finally:
            if self.after_flush is not None:
                self.after_flush()


class DirectRecovery(Recovery):
    """Faust's ``Recovery`` minus the per-record changelog path for tables that restore
    themselves (``restores_itself``): their active changelog partitions are reported as
    already at the highwater, and ``table.restore`` runs before the streams resume."""

    def _restores_itself(self, tp: TP) -> bool:
        return getattr(self.tp_to_table.get(tp), "restores_itself", False)

    async def _build_offsets(self, consumer: Any, tps: Set[TP], destination: Any, title: str) -> None:
        await super()._build_offsets(consumer, tps, destination, title)
        if title == "active":  # called right after the active highwaters were built
            for tp in tps:
                if self._restores_itself(tp):
                    hw = self.active_highwaters.get(tp)
                    if hw is not None:
                        destination[tp] = hw

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        # awaited through Recovery._wait: a new rebalance cancels this coroutine (RebalanceAgain)
        if self.app.consumer_generation_id == generation_id:
            for table in self.tables.values():
                if getattr(table, "restores_itself", False):
                    await table.restore(self.actives_for_table.get(table, set()))
        await super().on_recovery_completed(generation_id)


class DirectRecoveryTableManager(TableManager):
    """``faust.App(..., TableManager=DirectRecoveryTableManager)``: Faust's table manager with
    ``DirectRecovery``."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = DirectRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
