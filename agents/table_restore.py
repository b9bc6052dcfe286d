"""The mapping table's own changelog restore.

Part of ``agents.mapping_table.MappingTable`` (its ``restore`` delegates here).  Faust's recovery
hands every changelog record through its consumer, the conductor, a task and the recovery loop
one at a time: hours for 10M mappings (docs/benchmarks.md).
``agents.mapping_table.DirectRecovery`` tells Faust that this table's changelog partitions are
already at their highwater, so Faust reads none of them; then, *before* Faust resumes the
stream partitions (the lookup agent stays paused and the mapping stage reads nothing
meanwhile: ``agents.mapping_stage``), ``Restorer.restore`` reads the assigned changelog
partitions with a plain aiokafka consumer (``assign``, ``getmany`` batches of 20 000, dict
updates, tombstones pop) from where this worker's copy stops (the table's ``_restored_to``:
offset 0 for a partition it did not hold; afterwards advanced by each of its own acknowledged
writes that lands right there, so a partition kept through a rebalance costs next to nothing)
up to the end offsets taken when the restore starts, logging progress every 5 s.  A rebalance
during the restore cancels it (Faust cancels the awaiting coroutine; the epoch check stops
anything still running), and the next recovery continues each partition from the last batch
applied.  The one reading loop has two sinks: Faust's memory store (``apply_memory``) or the
disk store (``agents.table_checkpoints.apply_restored``).

The port: it reads the table's ``epoch``, ``changelog_topic``, ``disk``, ``data``,
``key_partition()``, ``next_expiry``, ``restore_clients``, ``app.conf`` and ``key_count()``,
sets its ``restored`` and ``restore_stats``, shares its restore positions (``restored_to``) and
hands the disk mode's writes (``agents.table_disk.DiskWrites``) the partitions now live.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterable

from . import restore_fetch
from .table_checkpoints import Checkpoints, apply_restored

log = logging.getLogger("ipanon")

#: records per ``getmany`` while restoring, and fetch sizes of the restore consumer
RESTORE_BATCH = 20_000
RESTORE_FETCH_BYTES = 32 * 2**20
RESTORE_PARTITION_FETCH_BYTES = 8 * 2**20
#: seconds between restore progress lines
PROGRESS_EVERY_S = 5.0
#: a restore with at least this many records to read opens the disk store for a bulk load
#: (``DiskStore.bulk_load``: vector memtables) until it ends
BULK_MIN_RECORDS = 100_000
#: a partition whose position has not moved for this long although it is short of its end
#: offset is treated as restored (see ``Restorer.restore_once``)
STALL_S = 60.0


def _human_s(s: float) -> str:
    s = int(s + 0.5)
    return f"{s // 3600} h {s // 60 % 60:02d} min" if s >= 3600 else (f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s")


def apply_memory(data: dict, kp: dict, restored_to: dict[int, int], batch: dict) -> int:
    """The memory form of ``apply_restored``: one ``getmany`` batch into Faust's memory store
    (its dict ``data`` and key → partition map ``kp``; a tombstone pops the key), the position
    moved."""
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


class Restorer:
    """The changelog restore of one ``MappingTable`` (see the module docstring)."""

    def __init__(self, table: Any, restored_to: dict[int, int], writes: Any) -> None:
        self.t = table
        #: partition → next changelog offset not yet applied (the table's, shared)
        self.restored_to = restored_to
        self.writes = writes
        self.checkpoints = Checkpoints(table, restored_to)

    def _apply_memory(self, batch: dict) -> int:
        # the memory store's dict itself: no per-record method calls
        return apply_memory(self.t.data.data, self.t.key_partition(), self.restored_to, batch)

    def _apply_disk(self, batch: dict) -> int:
        return apply_restored(self.t.disk, self.t.next_expiry, self.restored_to, batch)

    async def restore(self, tps: Iterable[Any]) -> None:
        """``MappingTable.restore``."""
        t = self.t
        epoch = t.epoch
        topic = t.changelog_topic.get_topic_name()
        parts = sorted({tp.partition for tp in tps if tp.topic == topic})
        if not parts:
            t.restored = True
            self.writes.live = set()
            return
        delay = 1.0
        while epoch == t.epoch:
            try:
                await self.restore_once(topic, parts, epoch, bulk=True)
                break
            except asyncio.CancelledError:
                raise
            except Exception as e:  # broker away, authorisation, …: keep what we have, retry
                if epoch != t.epoch:
                    return
                if t.disk is not None and str(e).startswith("Corruption"):
                    # RocksDB found a damaged block: never answer from it; start from the changelog
                    log.error("mapping table: the disk store is damaged (%s); it is deleted and every partition "
                              "restored from the changelog", str(e).splitlines()[0][:300])
                    t.disk.wipe()
                    self.restored_to.clear()
                    self.writes.acked.clear()
                    continue
                log.warning("mapping table: restore interrupted (%s: %s); retrying in %.0f s from where it stopped",
                            type(e).__name__, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        if epoch == t.epoch:
            t.restored = True
            if t.disk is not None:
                self.writes.live = set(parts)
                self.writes.persist()  # our writes acknowledged during the restore

    async def _bulk_load(self, on: bool) -> None:
        """``DiskStore.bulk_load(on)`` once no erasure tick is running (a tick's thread uses the
        DB handles a reopen replaces)."""
        eraser = getattr(self.t, "_eraser", None)
        while eraser is not None and eraser.erasing:
            await asyncio.sleep(0.05)
        self.t.disk.bulk_load(on)

    async def _bulk_load_off(self) -> None:
        try:
            await self._bulk_load(False)
        except Exception:  # the store cannot be reopened: the table's own reads report it
            log.exception("mapping table: the disk store could not leave its bulk load mode")

    async def restore_once(self, topic: str, parts: list[int], epoch: int, bulk: bool = False) -> None:
        """Read ``parts`` of ``topic`` from this worker's positions to the end offsets taken now
        (also the disk mode's gap filler: ``DiskWrites.read_gap``).  ``bulk``: with the disk
        store opened for a bulk load (``DiskStore.bulk_load``) while it reads at least
        ``BULK_MIN_RECORDS`` records; it leaves that mode before this returns (a cancelled
        restore: in a task of its own)."""
        cancelled = False
        try:
            await self._restore_once(topic, parts, epoch, bulk)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            if getattr(self.t.disk, "bulk", False):
                if cancelled:  # a cancelled coroutine cannot await: the switch-back runs on its own
                    asyncio.get_running_loop().create_task(self._bulk_load_off())
                else:
                    await self._bulk_load_off()

    async def _restore_once(self, topic: str, parts: list[int], epoch: int, bulk: bool) -> None:  # noqa: C901
        from aiokafka import TopicPartition

        from .kafka_clients import Clients

        t = self.t
        t0, cpu0 = time.monotonic(), time.process_time()
        disk = t.disk
        ck = self.checkpoints
        # the one loop below, two sinks: Faust's memory store or the disk store
        apply = self._apply_memory if disk is None else self._apply_disk
        restored_to = self.restored_to
        cl = t.restore_clients or Clients(",".join(f"{u.host}:{u.port or 9092}" for u in t.app.conf.broker))
        # the decoded records themselves, not aiokafka's ConsumerRecord copies (agents.restore_fetch)
        raw = {"key_deserializer": restore_fetch.RAW} if restore_fetch.install() else {}
        c = cl.aio_consumer(client_id=f"{t.app.conf.id}-restore", group_id=None, auto_offset_reset="earliest",
                            fetch_max_bytes=RESTORE_FETCH_BYTES, max_partition_fetch_bytes=RESTORE_PARTITION_FETCH_BYTES,
                            **raw)
        await c.start()
        try:
            tps = [TopicPartition(topic, p) for p in parts]
            c.assign(tps)
            ends = await c.end_offsets(tps) if tps else {}
            firsts = await c.beginning_offsets(tps) if tps else {}
            if disk is not None:
                await ck.check_topic_id(cl, topic)
                ck.check(tps, firsts, ends)
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
                ck.write([p for p in parts if TopicPartition(topic, p) not in todo], wall0)
            total = sum(ends[tp] - max(restored_to.get(tp.partition, 0), firsts[tp]) for tp in todo)
            if epoch != t.epoch:
                return
            if bulk and disk is not None and total >= BULK_MIN_RECORDS:
                await self._bulk_load(True)
                if epoch != t.epoch:
                    return
            log.info("mapping table: restoring partitions %s from %s: up to %d records to read (%d keys held%s)",
                     parts, topic, total, t.key_count(), ", bulk load" if getattr(disk, "bulk", False) else "")
            n = 0
            last_log = t0
            remaining = set(todo)
            stalled: dict[Any, tuple[int, float]] = {}  # tp → (position, since when unchanged)
            while remaining:
                batch = await c.getmany(*remaining, timeout_ms=500, max_records=RESTORE_BATCH)
                if epoch != t.epoch:
                    return  # a rebalance came: the next recovery continues from restored_to
                n += apply(batch)
                await asyncio.sleep(0)  # getmany does not yield while it has records buffered
                if epoch != t.epoch:
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
                        ck.write([tp.partition], wall0)
                if now - last_log >= PROGRESS_EVERY_S and remaining:
                    last_log = now
                    rate = n / (now - t0)
                    left = sum(max(0, todo[tp] - restored_to.get(tp.partition, 0)) for tp in remaining)
                    log.info("mapping table: restoring: %d of %d records read (%.0f/s), %d remaining, about %s left",
                             n, total, rate, left, _human_s(left / rate) if rate > 0 else "?")
            if getattr(disk, "bulk", False):  # the table serves once the store left the mode: timed too
                await self._bulk_load_off()
            dt, dcpu = time.monotonic() - t0, time.process_time() - cpu0
            keys = t.key_count()
            t.restore_stats = {"records": n, "keys": keys, "store": "memory" if disk is None else "disk", "partitions": parts, "seconds": round(dt, 3),
                               "cpu_seconds": round(dcpu, 3), "at": time.time()}
            log.info("mapping table: restored %d records of partitions %s in %.2f s (%.0f records/s, "
                     "%.0f per CPU-second, process CPU %.2f s): %d keys",
                     n, parts, dt, n / dt if dt > 0 else 0, n / dcpu if dcpu > 0 else 0, dcpu, keys)
        finally:
            await c.stop()
