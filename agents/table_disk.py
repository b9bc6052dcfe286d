"""The mapping table's disk mode: its writes to the RocksDB store (``agents.disk_store``).

Part of ``agents.mapping_table.MappingTable`` (``use_disk``; docs/state-on-disk.md "Wiring").
The store only ever holds what the changelog acknowledged, as a prefix of it: a write is kept
*pending* (reads look there first) until its acknowledgement comes and every offset before it
was applied; then, after each outbox flush (``TableOutbox.after_flush``), ``DiskWrites.persist``
applies the acknowledged writes in changelog offset order, with the schedule changes made
meanwhile, in one write batch, and moves the partition's checkpoint past exactly what was
applied.  An acknowledged write after a gap waits; a gap that stays ``GAP_S`` is filled from
the changelog (``DiskWrites._fill_gap``, the restore's reader).

The port: it reads the table's ``disk``, ``epoch``, ``changelog_topic`` and Faust's own
acknowledgement bookkeeping (``faust.Table._on_changelog_sent``); it shares the table's restore
positions (``restored_to``, the table's ``_restored_to``) and is handed the restore's reader
(``read_gap``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Iterator, Optional, Set

import faust

log = logging.getLogger("ipanon")

#: disk mode: seconds acknowledged writes may wait behind an offset never acknowledged to this
#: worker before the changelog is read from the checkpoint (``DiskWrites._fill_gap``)
GAP_S = 30.0


def store_failed(store: Any, e: BaseException) -> None:
    """A read met a damaged block of the disk store (RocksDB "Corruption"): answering from it,
    or dead-lettering the bindings that need it (they would be lost), are both wrong.  The
    store is deleted and the worker exits at once (status 70): its input offsets are
    committed only after its writes, so nothing is lost, and the next start restores every
    partition from the changelog.  Any other error is the caller's."""
    if store is None or not str(e).startswith("Corruption"):
        return
    import os
    import shutil

    import traceback

    # who read (the lookup, the binding, the sweeper, the walk): the callers outside the table
    via = [f.name for f in traceback.extract_stack()[:-1]
           if not f.filename.endswith(("table_disk.py", "mapping_table.py", "table_schedule.py"))][-3:]
    log.critical("mapping table: the disk store %s is damaged (%s; read by %s); it is deleted and the worker "
                 "exits: restart it to restore the table from the changelog", store.path,
                 str(e).splitlines()[0][:300], " < ".join(reversed(via)) or "?")
    shutil.rmtree(store.path, ignore_errors=True)
    for h in logging.getLogger().handlers + log.handlers:
        try:
            h.flush()
        except Exception:
            pass
    os._exit(70)


class reading:
    """``with reading(store):`` around reads of the disk store: a damaged block goes to
    ``store_failed`` (the store deleted, the worker exits); any other error goes on to the
    caller.  A class, not ``contextlib``: its frame is in this module, which ``store_failed``
    leaves out when it names the reader."""

    __slots__ = ("store",)

    def __init__(self, store: Any) -> None:
        self.store = store

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: Any, e: Optional[BaseException], tb: Any) -> bool:
        if isinstance(e, Exception):
            store_failed(self.store, e)
        return False


class DiskWrites:
    """The pending writes, acknowledgements and store batches of one ``MappingTable`` in disk
    mode (see the module docstring)."""

    def __init__(self, table: Any, restored_to: dict[int, int]) -> None:
        self.t = table
        #: partition → next changelog offset not yet applied (the table's, shared)
        self.restored_to = restored_to
        #: reads the changelog of ``(topic, [partition], epoch)`` into the store (the restore's
        #: ``Restorer.restore_once``; set by the table)
        self.read_gap: Optional[Callable[[str, list, int], Awaitable[None]]] = None
        #: key → (write sequence, partition, value or None): writes not yet applied to the store,
        #: which only ever holds what the changelog acknowledged (reads look here first)
        self.pending: dict[bytes, tuple[int, int, Optional[bytes]]] = {}
        self.seq = 0
        #: partition → changelog offset → (key, value, seq): acknowledged writes waiting for
        #: every offset before them to be applied (the store is a prefix of the changelog)
        self.acked: dict[int, dict[int, tuple]] = {}
        #: schedule changes for the next store write: (partition, bucket or when, key, is_put)
        self.sched_ops: list[tuple[int, int, bytes, bool]] = []
        #: partitions restored in this epoch: their checkpoint may advance with our own writes
        self.live: Set[int] = set()
        #: partition → when a gap in its acknowledged offsets was first seen (``persist``)
        self.gap_since: dict[int, float] = {}
        self.filling: Set[int] = set()

    def attach(self, store: Any) -> None:
        """``MappingTable.use_disk``: each partition of ``store`` continues from its checkpoint."""
        try:
            for p in sorted(store.partitions()):
                c = store.checkpoint(p)
                if c is None:  # never written with a checkpoint: nothing to continue from
                    store.drop_partition(p)
                else:
                    self.restored_to[p] = c
        except Exception as e:
            if not str(e).startswith("Corruption"):
                raise
            log.error("mapping table: the disk store is damaged (%s); it is deleted and every partition "
                      "restored from the changelog", str(e).splitlines()[0][:300])
            store.wipe()
            self.restored_to.clear()

    # -- reads ----------------------------------------------------------------------------------

    def get(self, key: bytes, partition: Optional[int]) -> Optional[bytes]:
        """``MappingTable.get_raw`` on disk: the newest unacknowledged write, else the store
        (``partition`` when known, else each held partition: a bloom filter each)."""
        w = self.pending.get(key)
        if w is not None:
            return w[2]
        st = self.t.disk
        with reading(st):
            if partition is not None:
                return st.get(partition, key)
            for p in st.partitions():
                v = st.get(p, key)
                if v is not None:
                    return v
        return None

    def partition_of(self, key: bytes) -> Optional[int]:
        w = self.pending.get(key)
        if w is not None:
            return w[1] if w[2] is not None else None
        st = self.t.disk
        with reading(st):
            for p in st.partitions():
                if st.get(p, key) is not None:
                    return p
        return None

    def keys(self, ps: Set[int], prefix: bytes) -> Iterator[bytes]:
        """``MappingTable.keys_of`` on disk: the pending keys at the call (a snapshot), then the
        store's chunk by chunk."""
        pend = {k: v for k, (_, p, v) in self.pending.items() if p in ps and k.startswith(prefix)}
        yield from [k for k, v in pend.items() if v is not None]
        st = self.t.disk
        for p in sorted(ps):
            it = st.iter_keys(p, prefix=prefix)
            while True:
                with reading(st):  # the store's reads only: an error thrown in by the caller is its own
                    k = next(it, None)
                if k is None:
                    break
                if k not in pend:
                    yield k

    def key_count(self) -> int:
        st = self.t.disk
        return sum(st.count_estimate(p) for p in st.partitions())

    # -- writes and their acknowledgements --------------------------------------------------------

    def pend(self, partition: int, key: Optional[bytes], value: Optional[bytes]) -> Callable[[Any], None]:
        """Record a changelog write not yet acknowledged (``key`` None: a heartbeat) and return
        its acknowledgement callback."""
        self.seq += 1
        seq = self.seq
        if key is not None:
            self.pending[key] = (seq, partition, value)

        def acked(fut: Any) -> None:
            self._on_ack(fut, key, value, seq)
        return acked

    def _on_ack(self, fut: Any, key: Optional[bytes], value: Optional[bytes], seq: int) -> None:
        try:
            faust.Table._on_changelog_sent(self.t, fut)
        except Exception:
            pass
        try:
            res = fut.result()
            p, offset = res.topic_partition.partition, res.offset
        except Exception:  # not delivered: ``MappingTable._reissue`` queues the key's current state again
            return
        self.acked.setdefault(p, {})[offset] = (key, value, seq)

    def schedule_op(self, partition: int, when: int, key: bytes, put: bool) -> None:
        """A schedule change (``put``: an entry at ``when``; else the removal of the entry of
        bucket ``when``) for the next store write."""
        self.sched_ops.append((partition, when, key, put))

    def persist(self) -> None:  # noqa: C901
        """After every outbox flush: apply to the store, in changelog offset order, the
        acknowledged writes that continue each live partition's checkpoint, with the schedule
        changes made meanwhile, in one write batch; the checkpoint moves past exactly what was
        applied.  An acknowledged write after a gap waits (the store must stay a prefix of the
        changelog); a gap that stays ``GAP_S`` is filled from the changelog (``_fill_gap``)."""
        st = self.t.disk
        if st is None:
            return
        b = None
        moved: dict[int, int] = {}
        settled: list[tuple] = []
        now = time.time_ns() // 1_000_000
        for p, acked in self.acked.items():
            if not acked or p not in self.live:
                continue
            c = self.restored_to.get(p)
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
                since = self.gap_since.setdefault(p, time.monotonic())
                if time.monotonic() - since >= GAP_S and p not in self.filling:
                    self.filling.add(p)
                    asyncio.ensure_future(self._fill_gap(p, self.t.epoch))
            else:
                self.gap_since.pop(p, None)
        ops = self.sched_ops
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
            with reading(st):  # RocksDB stops writes with its background error (a compaction met a damaged block)
                st.write(b)
        del b
        self.sched_ops = []
        self.restored_to.update(moved)
        pend = self.pending
        for key, _, seq in settled:
            if key is not None:
                w = pend.get(key)
                if w is not None and w[0] <= seq:
                    del pend[key]

    async def _fill_gap(self, p: int, epoch: int) -> None:
        """Acknowledged writes of ``p`` wait behind an offset this worker never saw acknowledged
        (an acknowledgement lost in an outage, whose write the broker kept): read the
        changelog from the checkpoint, like a restore, then carry on."""
        topic = self.t.changelog_topic.get_topic_name()
        log.warning("mapping table: partition %d: acknowledged writes wait behind offset %s for %.0f s; "
                    "reading the changelog from there", p, self.restored_to.get(p), GAP_S)
        self.live.discard(p)
        try:
            await self.read_gap(topic, [p], epoch)
        except Exception:
            log.exception("mapping table: partition %d: reading the changelog gap failed; retrying later", p)
        finally:
            self.filling.discard(p)
            self.gap_since.pop(p, None)
            if epoch == self.t.epoch:
                self.live.add(p)
                self.persist()

    def drop_partitions(self, gone: Callable[[int], bool]) -> int:
        """``MappingTable.forget`` and revoked partitions on disk: the store's partitions and
        everything kept of them here."""
        st = self.t.disk
        n = 0
        for p in sorted(st.partitions()):
            if gone(p):
                n += st.count_estimate(p)
                st.drop_partition(p)
        for d in (self.restored_to, self.acked, self.gap_since):
            for p in [p for p in d if gone(p)]:
                del d[p]
        self.pending = {k: w for k, w in self.pending.items() if not gone(w[1])}
        self.sched_ops = [op for op in self.sched_ops if not gone(op[0])]
        self.live = {p for p in self.live if not gone(p)}
        return n


class StoreEraser:
    """The disk store's erasure ticks of one ``MappingTable`` (``DiskStore.erase_tick``)."""

    def __init__(self, table: Any) -> None:
        self.t = table
        self.erasing = False

    async def erase_tick(self, now_ms: int) -> Optional[dict]:
        """``MappingTable.erase_tick``: one erasure tick at a time."""
        st = self.t.disk
        if st is None or self.erasing:
            return None
        self.erasing = True
        try:
            with reading(st):  # a forced compaction reads every block of its range
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
            self.erasing = False

