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
tombstones — a key another worker now owns.

**The pieces.**  ``MappingTable`` keeps the surface Faust and the agents call, the in-memory
table and its acknowledgements, and delegates the rest: the changelog restore
(``agents.table_restore.Restorer``, with the disk store's checkpoints and restore sink in
``agents.table_checkpoints``), the disk mode's pending writes, acknowledgements and store
batches (``agents.table_disk.DiskWrites``) and the sweeper's schedule
(``agents.table_schedule.TableSchedule``).  Each piece says in its module docstring what it
reads of the table.  Readers in other modules (the compliance walks) use its public reader
port: ``active``, ``epoch``, ``disk``, ``key_partition()``, ``pending_writes()`` and
``store_failed``.

**Restore.**  Faust's recovery reads the changelog one record at a time (hours for 10M
mappings, docs/benchmarks.md).  ``DirectRecovery`` (installed through the app's
``TableManager`` setting) tells Faust that this table's changelog partitions are already at
their highwater, so Faust reads none of them; then, before Faust resumes the stream
partitions, ``MappingTable.restore`` reads them itself in batches from where this worker's copy
stops (``_restored_to``), cancelled by a rebalance (``epoch``): ``agents.table_restore``.
Whatever is left of Faust's recovery (highwaters, offsets, ``Worker ready``) runs unchanged.

Expiry (DESIGN.md "Hard facts"): Faust's windowed-table expiry pops keys only from the local
store, never writes tombstones and forgets its schedule after recovery (faust-streaming
#385, #193).  We do not use it.  ``MappingTable.sweep`` is our own: it walks the keys of the
active partitions, drops intervals past their expiry instant and writes the new value or a
tombstone, and it rebuilds its schedule from the store after every recovery (it has no other
state; ``agents.table_schedule``).

The schedule (``stream.schedule.ExpirySchedule``) keeps keys in time buckets of ``SCHEDULE_BUCKET_MS``, not
one ``(expiry, key)`` tuple each: a small fraction of the memory per scheduled key
(``benchmarks/bench_memory.py``).  A bucket is handed out only once every expiry it
covers has passed, so a key is never due before its expiry instant and at most one bucket
width after it: the sweeper deletes within sweeper period + bucket width of the expiry
instant, and the retention plan subtracts both from the TTL
(``stream.policy.PlanParams.schedule_bucket_ms``, set from ``SCHEDULE_BUCKET_MS`` by
``agents.runtime.plan_params``).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Set

import faust
from aiokafka.partitioner import murmur2
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from stream.schedule import SCHEDULE_BUCKET_MS, SCHEDULE_GROUP, ExpirySchedule  # noqa: F401 (re-exported)

from .outbox import Outbox
from .table_checkpoints import REVISIT_HEADER  # noqa: F401 (re-exported)
from .table_disk import GAP_S, DiskWrites, StoreEraser, store_failed  # noqa: F401 (re-exported)
from .table_restore import (  # noqa: F401 (re-exported)
    PROGRESS_EVERY_S,
    RESTORE_BATCH,
    RESTORE_FETCH_BYTES,
    RESTORE_PARTITION_FETCH_BYTES,
    STALL_S,
    Restorer,
)
from .table_schedule import DUE_LIMIT, SCHEDULE_CHUNK, TableSchedule  # noqa: F401 (re-exported)


def partition_for(routing_key: bytes, partitions: int) -> int:
    """Kafka's DefaultPartitioner (murmur2, positive, modulo), as aiokafka and Java use it."""
    return (murmur2(routing_key) & 0x7FFFFFFF) % partitions


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
        #: partition → next changelog offset not yet applied to this worker's copy (one dict,
        #: shared with the pieces below)
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
        # -- the pieces (module docstring) --
        self._writes = DiskWrites(self, self._restored_to)
        self._expiry = TableSchedule(self, self._writes)
        self._restorer = Restorer(self, self._restored_to, self._writes)
        self._eraser = StoreEraser(self)
        self._writes.read_gap = self._restorer.restore_once

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
        return self._writes.get(key, partition)

    def store_failed(self, e: BaseException) -> None:
        """A read of the disk store failed with ``e``: a damaged block deletes the store and
        exits (``agents.table_disk.store_failed``); any other error is the caller's."""
        store_failed(self.disk, e)

    def pending_writes(self) -> Mapping[bytes, tuple[int, int, Optional[bytes]]]:
        """Disk mode: a read-only view of the writes not yet in the store, key → (write
        sequence, partition, value or None for a delete); what a lookup sees before the store.
        Empty in memory mode."""
        return MappingProxyType(self._writes.pending)

    def put(self, partition: int, key: bytes, value: bytes, *, revisit_ms: Optional[int] = None) -> None:
        """Write ``key`` (and schedule it at ``revisit_ms``, carried on the changelog record so a
        restore into the disk store schedules it without opening the value)."""
        headers = None if revisit_ms is None else [(REVISIT_HEADER, str(int(revisit_ms)).encode())]
        if self.disk is None:
            self.data[key] = value
            self.key_partition()[key] = partition
            cb = self._on_changelog_sent
        else:
            cb = self._writes.pend(partition, key, value)
        self.outbox.add(self.changelog_topic, key, value, partition=partition, headers=headers, callback=cb)
        if revisit_ms is not None:
            self.schedule(revisit_ms, key, partition)

    def delete(self, partition: int, key: bytes) -> None:
        if self.disk is None:
            self.data.pop(key, None)
            self.key_partition().pop(key, None)
            cb = self._on_changelog_sent
        else:
            cb = self._writes.pend(partition, key, None)
        self.outbox.add(self.changelog_topic, key, None, partition=partition, callback=cb)

    def heartbeat(self, partition: int, key: bytes) -> None:
        """Queue a changelog heartbeat (a tombstone of a reserved key): acknowledged like any
        other write, so the offsets this worker applies stay contiguous."""
        cb = self._on_changelog_sent if self.disk is None else self._writes.pend(partition, None, None)
        self.outbox.add(self.changelog_topic, key, None, partition=partition, callback=cb)

    def partition_of(self, key: bytes) -> Optional[int]:
        """The partition holding ``key`` here (None: not held)."""
        if self.disk is None:
            return self.key_partition().get(key)
        return self._writes.partition_of(key)

    def forget(self, partitions: Set[int]) -> int:
        """Drop this worker's copy of ``partitions`` (keys and restore position), so that if they
        come back they are read afresh from the changelog: used when writes of theirs were
        discarded (``agents.fence``) and the copy ran ahead of the log.  Returns keys dropped."""
        return self._drop_partitions(partitions.__contains__)

    def _drop_partitions(self, gone: Callable[[int], bool]) -> int:
        """Drop the keys and the restore position of every partition ``gone`` selects."""
        if self.disk is not None:
            return self._writes.drop_partitions(gone)
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
                                callback=self._writes.pend(partition, key, value))

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
        of millions, too many to list at once), after the keys pending at the call (a
        snapshot: the caller's own writes join the pending set as it goes)."""
        ps = set(partitions)
        if self.disk is not None:
            yield from self._writes.keys(ps, prefix)
            return
        kp = self.key_partition()
        for k in list(self.data.keys()):  # the snapshot only: filtered as the caller goes
            if k.startswith(prefix) and kp.get(k) in ps:
                yield k

    # -- disk mode ------------------------------------------------------------------------------

    def use_disk(self, store: Any) -> None:
        """Keep the values in ``store`` (``agents.disk_store.DiskStore``) instead of Faust's memory
        store: each partition continues from the store's checkpoint (docs/state-on-disk.md)."""
        self.disk = store
        self._writes.attach(store)
        self.outbox.after_flush = self._writes.persist

    def key_count(self) -> int:
        """Keys held (disk mode: RocksDB's estimate)."""
        if self.disk is None:
            return len(self.data)
        return self._writes.key_count()

    async def erase_tick(self, now_ms: int) -> Optional[dict]:
        """One erasure tick of the disk store (``DiskStore.erase_tick``): the flush and forced
        compactions run in a thread while the worker goes on; the reopen that retires the old
        MANIFEST runs here, in the event loop, where no write batch or iterator is ever open."""
        return await self._eraser.erase_tick(now_ms)

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

    # -- rebalance and restore (``agents.table_restore``) --------------------------------------

    async def on_rebalance(self, assigned: Set[TP], revoked: Set[TP], newly_assigned: Set[TP],
                           generation_id: int = 0) -> None:
        self.epoch += 1  # stops a restore or schedule rebuild still running (sync with this)
        self.restored = False
        self._writes.live = set()
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        # the changelog is co-partitioned with the lookup request topic (Faust's assignor keeps
        # same-width topics of the same subscribers together); the mapping stage reads bindings
        # partition n exactly when changelog partition n is here (agents.mapping_stage)
        names = {self.changelog_topic.get_topic_name(), *self.source_topics}
        mine = {tp.partition for tp in assigned if tp.topic in names}
        self.active = mine
        self._drop_partitions(lambda p: p not in mine)

    async def restore(self, tps: Iterable[TP]) -> None:
        """Bring every assigned changelog partition of this table up to the changelog's end
        offsets (taken when the restore starts), then mark the table restored.  Retries after
        a broker error from where it stopped; returns early if a rebalance superseded it."""
        await self._restorer.restore(tps)


class TableOutbox(Outbox):
    """The table's ``Outbox``: ``after_flush`` runs after every flush, delivered or not (the
    disk mode applies the acknowledged writes to its store then: ``DiskWrites.persist``)."""

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
