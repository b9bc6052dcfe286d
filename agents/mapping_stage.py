"""The mapping stage on batches: the bindings topic read with ``getmany``, following Faust's table assignment.

The mapping stage writes the Faust table ``MappingTable`` (``agents.mapping_table``), so it must
consume exactly the bindings partitions whose table partitions this worker holds, and a
partition it loses must stop being written before its new owner starts.  Faust's per-event
stream machinery cost more than all the mapping work (docs/benchmarks.md, "Mapping stage on
batches"), so the stage reads the bindings topic with a plain aiokafka consumer that **joins no
group**: it ``assign()``\\ s the partitions Faust gave the table and follows Faust's rebalances.

Why the table and the stage stay together.  Faust's assignor co-partitions every topic its
consumer subscribes to with the same partition count and the same subscribers
(``PartitionAssignor._get_copartitioned_groups``): the table's changelog and the lookup request
topic (both ``partitions`` wide, subscribed by every worker) go together, so table partition *n*
is the worker's that answers lookups on partition *n* — and, here, the one that reads bindings
partition *n* (the bindings key is the table key's routing key: ``mapping_table.partition_for``).
Faust no longer subscribes to the bindings topic; nothing else about the assignment changes.

The hand-over:

- **Revoke.**  Faust's eager rebalance awaits ``app.on_partitions_revoked`` before the worker
  rejoins its group, and every member must rejoin before any partition is handed out again.
  ``on_revoked`` takes the batch lock (so the in-flight batch finishes: its changelog writes
  and dead letters acknowledged, its offsets committed), then unassigns the revoked partitions,
  removes them from ``table.active`` (the sweeper skips them from now on) and flushes the
  table's outbox (a sweep's writes queued before the revoke are acknowledged too).  Only then
  does the callback return.
- **Assign.**  The stage starts reading a partition only after the table has restored it:
  ``follow(table.active)`` is called from the table's recovery callback (after
  ``MappingTable.restore``).  A revoke between the restore and ``follow`` bumps an epoch and the
  stale ``follow`` does nothing.  Each partition starts at the offset the stage committed in
  its group ``<app id>-mapping``; with none there (a deployment upgraded from the Faust agent),
  at the offset Faust's group ``<app id>`` committed for the bindings topic; with neither, at
  the beginning.  Reprocessing is idempotent, only slow.

Offsets are committed with ``commit({tp: offset})`` under ``<app id>-mapping``, a group nobody
joins (Kafka accepts generation-less commits for a group without members; the worker's ACLs
grant it, ``agents.acl.worker_groups``).  Heartbeat records are committed past like any other,
which also keeps a quiet partition's offsets from expiring (offsets of a group without members
expire ``offsets.retention.minutes`` after their last commit).

Every write of a batch goes through the table's ``Outbox`` (``Pipeline.ebb``), the one ordered
path the sweeper and the heartbeat timer also write through, so a sweep and a binding can never
reorder two writes of one key on the changelog.  A failure anywhere (broker away, a bug)
restarts the stage's consumer from the last commit, on the same partitions.

A worker presumed dead by the group (session timeout) because it was frozen learns of it only at
its next heartbeat after the thaw.  ``agents.fence`` keeps it from writing meanwhile: every flush
of the table's outbox passes the fence, which after a stall waits for the group's verdict, and the
revoke that follows a stall drops the revoked partitions' queued writes and the table's copy of
them.  Left: writes already handed to the producer when the freeze came are sent at the thaw.
Static membership (``group_instance_id``) keeps a restarted worker's partitions with it, so a
restart hands nothing over.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Iterable

from .batch import BatchStage, Output

log = logging.getLogger("ipanon.batch")


class MappingStage(BatchStage):
    """A ``BatchStage`` on the bindings topic whose partitions follow the table's (see the module
    docstring).  ``handle(records)`` applies a batch and queues every write in the table's outbox;
    ``flush()`` publishes them and waits for the acks (``Pipeline.ebb``)."""

    def __init__(self, name: str, topic: str, group: str,
                 handle: Callable[[list[Any]], Awaitable[list[Output]]], *, flush: Callable[[], Awaitable[None]],
                 table: Any, fence: Any, fallback_group: str, settings: Any, count: Callable[..., None],
                 metrics: Any = None) -> None:
        super().__init__(name, [topic], group, handle, role="bindings", settings=settings, count=count,
                         metrics=metrics)
        self.topic = topic
        self.flush = flush
        self.table = table
        self.fence = fence  # agents.fence.Fence (None: no freeze detection, tests)
        self.fallback_group = fallback_group
        #: the bindings partitions this stage may read now (a subset of ``table.active``)
        self.owned: set[int] = set()
        #: bumped by every revoke: a ``follow`` started before it does nothing
        self._epoch = 0
        self.fallbacks = 0  # partitions started from Faust's group's offset (upgrade)
        self._pending_assign = False

    #: revokes waiting for the in-flight batch (a long NAS reset gives its batch up for them)
    revokes_waiting = 0

    # -- following the table ------------------------------------------------------------------

    async def on_revoked(self, sender: Any = None, revoked: Iterable[Any] = (), **_: Any) -> None:
        """``app.on_partitions_revoked`` receiver (awaited before the worker rejoins)."""
        self._epoch += 1
        names = {self.table.changelog_topic.get_topic_name(), *self.table.source_topics}
        parts = {tp.partition for tp in revoked if tp.topic in names}
        if not parts:
            return
        self.revokes_waiting += 1
        try:
            await self._revoke(parts)
        finally:
            self.revokes_waiting -= 1

    async def _revoke(self, parts: set[int]) -> None:
        async with self._lock:  # the in-flight batch is acknowledged and committed first
            self.owned -= parts
            self.table.active = self.table.active - parts
            self._reassign()
            if self.fence is not None and self.fence.suspect():
                # stalled past the session: these partitions may have had a new owner for a while,
                # so what this worker queued for them is stale (agents.fence).  Drop it and the copy
                # it came from; the uncommitted bindings behind it are read again by their owner.
                outbox = self.table.outbox
                changelog = self.table.changelog_topic
                n = outbox.discard(lambda w: w[0] is changelog and w[3] in parts)
                keys = self.table.forget(parts)
                self.count("fenced_writes", n)
                log.warning("%s: partitions %s revoked after a stall: %d queued changelog writes dropped, "
                            "%d keys forgotten (read afresh if they come back)", self.name, sorted(parts), n, keys)
                await self.table.outbox.flush(gated=False)  # what is left: other partitions' writes, dead letters
            else:
                await self.flush()  # a sweep's writes queued before the revoke, too
        log.info("%s: partitions %s revoked; no longer written", self.name, sorted(parts))

    async def on_assigned(self, sender: Any = None, assigned: Iterable[Any] = (), **_: Any) -> None:
        """``app.on_partitions_assigned`` receiver: drop anything the new assignment does not
        give the table (eager rebalances revoked it already; this is the belt to those braces)."""
        if self.fence is not None:
            self.fence.clear()  # the group has a current assignment again
        async with self._lock:
            lost = self.owned - set(self.table.active)
            if lost:
                self._epoch += 1
                self.owned -= lost
                self._reassign()
                await self.flush()

    async def follow(self, partitions: Iterable[int]) -> None:
        """Start reading ``partitions`` (the table's active ones, just restored)."""
        epoch = self._epoch
        async with self._lock:
            if epoch != self._epoch or not self.table.restored:
                return  # a rebalance came since: its own recovery calls again
            self.owned = set(partitions) & set(self.table.active)
            self._pending_assign = True  # the loop assigns and seeks (broker calls stay out of Faust's recovery)
        log.info("%s: reading bindings partitions %s", self.name, sorted(self.owned))

    def _reassign(self) -> None:
        c = self.consumer
        if c is None:
            return
        from aiokafka import TopicPartition

        keep = [TopicPartition(self.topic, p) for p in sorted(self.owned)]
        c.assign(keep)
        for tp in list(self._read):
            if tp.partition not in self.owned:
                self._read.pop(tp, None)
                self._committed.pop(tp, None)

    async def _assign(self) -> None:
        """Assign ``owned`` to the consumer and seek each partition to its start (the module
        docstring).  Called by the loop, holding the lock."""
        c = self.consumer
        self._read.clear()
        self._committed.clear()
        if c is None:
            return  # the loop assigns when its consumer is up
        from aiokafka import TopicPartition

        tps = [TopicPartition(self.topic, p) for p in sorted(self.owned)]
        c.assign(tps)
        if not tps:
            return
        starts = {tp: await c.committed(tp) for tp in tps}
        missing = [tp for tp, off in starts.items() if off is None]
        if missing:
            old = await self._faust_offsets(missing)
            for tp in missing:
                if old.get(tp) is not None:
                    starts[tp] = old[tp]
                    self.fallbacks += 1
                    log.info("%s: %s starts at offset %d, committed by group %s (no offset in %s yet)",
                             self.name, tp, old[tp], self.fallback_group, self.group)
        for tp, off in starts.items():
            if off is None:
                await c.seek_to_beginning(tp)
            else:
                c.seek(tp, off)
                self._committed[tp] = off
        try:
            self._ends.update(await c.end_offsets(tps))
        except Exception:  # the lag metric's baseline only
            log.debug("%s: could not read end offsets", self.name, exc_info=True)

    async def _faust_offsets(self, tps: list[Any]) -> dict:
        """Offsets Faust's group committed for ``tps`` (the mapping agent's, before this stage)."""
        from .kafka_clients import Clients

        s = self.settings
        g = Clients.of(s).aio_consumer(client_id=f"{s.app_id}-{self.name}-upgrade", group_id=self.fallback_group)
        await g.start()
        try:  # fetches committed offsets only: a consumer that never subscribes never joins
            return {tp: await g.committed(tp) for tp in tps}
        finally:
            await g.stop()

    # -- the loop -----------------------------------------------------------------------------

    def _clients(self) -> tuple[Any, Any]:
        """The consumer (no producer: every write goes through the table's outbox, ordered
        with the sweeper's).  It never joins its group; the instance id only names it."""
        from .kafka_clients import Clients

        s = self.settings
        c = Clients.of(s).aio_consumer(client_id=f"{s.app_id}-{self.name}", group_id=self.group,
                                       auto_offset_reset="earliest", max_poll_records=s.batch_size,
                                       group_instance_id=f"{s.group_instance_id}-{self.name}")
        return c, None

    async def _serve(self) -> None:
        c, _ = self._clients()
        try:
            await c.start()
            async with self._lock:
                self.consumer = c
                self._pending_assign = True  # after a restart: the same partitions, from the last commit
            log.info("%s: consuming %s (partitions of the table; offsets in group %s)", self.name, self.topic, self.group)
            s = self.settings
            timeout_ms = max(100, int(s.batch_within_s * 1000)) if s.batch_within_s else 100
            while True:
                if self._pending_assign:
                    async with self._lock:
                        await self._assign()
                        self._pending_assign = False
                if not self.owned:
                    await asyncio.sleep(timeout_ms / 1000)
                    continue
                batch = await c.getmany(timeout_ms=timeout_ms, max_records=s.batch_size)
                if batch:
                    async with self._lock:
                        await self._apply(c, batch)
        finally:
            self.consumer = None
            self._read.clear()
            self._committed.clear()
            try:
                await c.stop()
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.debug("%s: consumer stop failed", self.name, exc_info=True)

    async def _apply(self, c: Any, batch: dict) -> None:
        import time

        from aiokafka.structs import OffsetAndMetadata

        t0 = time.monotonic()
        batch = {tp: rs for tp, rs in batch.items() if rs and tp.partition in self.owned}  # revoked meanwhile
        if not batch:
            return
        records = [r for rs in batch.values() for r in rs]
        ends = {tp: rs[-1].offset + 1 for tp, rs in batch.items()}
        outputs = await self.handle(records)  # queues into the outbox; raises only on a bug
        await self.flush()  # every write of the batch acknowledged (raises: restart, nothing committed)
        await c.commit({tp: OffsetAndMetadata(off, "") for tp, off in ends.items()})
        self._committed.update(ends)
        self._read.update(ends)
        self.batches += 1
        self.records += len(records)
        self._observe(records, outputs, time.monotonic() - t0)
