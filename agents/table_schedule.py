"""The mapping table's expiry schedule: which keys the sweeper looks at, and when.

Part of ``agents.mapping_table.MappingTable`` (its ``schedule``, ``due_items``, ``due``,
``schedule_complete`` and ``rebuild_schedule_soon`` delegate here).  Memory mode: an
``stream.schedule.ExpirySchedule`` of time buckets, rebuilt from the store after every recovery
(it has no other state).  Nothing is due while a restore runs (the store is half-filled); the
schedule rebuild that follows opens every value, so it runs in the background in
chunks while the agents already work: keys written meanwhile are scheduled by their writer, and
an entry made stale by a write is re-checked when it comes up.  Disk mode: the schedule is in
the store, written with the values (``agents.table_disk.DiskWrites.schedule_op``).

The port: it reads the table's ``disk``, ``restored``, ``active``, ``epoch``, ``data``,
``key_partition()``, ``partition_of`` and ``store_failed`` and nothing else of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Optional

from stream.schedule import ExpirySchedule

log = logging.getLogger("ipanon")

#: disk mode: schedule entries handed to one sweeper pass at most (the rest the next pass; the
#: vault destroys no epoch key while some are left)
DUE_LIMIT = 100_000
#: keys opened per event-loop turn while the schedule is rebuilt in the background
SCHEDULE_CHUNK = 2_000


class TableSchedule:
    """The sweeper's schedule of one ``MappingTable`` (see the module docstring)."""

    def __init__(self, table: Any, writes: Any) -> None:
        self.t = table
        #: the disk mode's store writes (``agents.table_disk.DiskWrites``): schedule changes go
        #: with the next store batch
        self.writes = writes
        # the sweeper's schedule, rebuilt from the store after recovery; stale entries are
        # re-checked when they come up, so it never needs exact updates.
        self.memory = ExpirySchedule()
        self.rebuild_task: Optional[asyncio.Task] = None
        self.due_backlog = False

    def schedule(self, expiry_ms: Optional[int], key: bytes, partition: Optional[int] = None) -> None:
        """``MappingTable.schedule``."""
        if expiry_ms is None:
            return
        t = self.t
        if t.disk is None:
            self.memory.add(expiry_ms, key)
            return
        p = partition if partition is not None else t.partition_of(key)
        if p is not None:
            self.writes.schedule_op(p, int(expiry_ms), key, True)

    def due_items(self, now_ms: int) -> list[tuple[bytes, Optional[int]]]:
        """``MappingTable.due_items``."""
        t = self.t
        if t.disk is None:
            kp = t.key_partition()
            return [(k, kp.get(k)) for k in self.due(now_ms)]
        if not t.restored:
            return []
        try:
            entries = t.disk.due(now_ms, limit=DUE_LIMIT)
        except Exception as e:
            t.store_failed(e)
            raise
        self.due_backlog = len(entries) >= DUE_LIMIT
        out = []
        seen = set()
        for p, bucket, key in entries:
            if p not in t.active:  # being dropped or restored: not this pass's to remove
                continue
            self.writes.schedule_op(p, bucket, key, False)
            if key not in seen:
                seen.add(key)
                out.append((key, p))
        return out

    def due(self, now_ms: int) -> list[bytes]:
        """``MappingTable.due``."""
        if not self.t.restored:
            return []
        return self.memory.pop_due(now_ms)

    @property
    def complete(self) -> bool:
        """``MappingTable.schedule_complete``."""
        t = self.t
        if t.disk is not None:  # the schedule is on disk, written with the values
            return t.restored and not self.due_backlog
        return t.restored and (self.rebuild_task is None or self.rebuild_task.done())

    def rebuild_soon(self, next_expiry: Callable[[bytes, bytes], Optional[int]],
                     done: Callable[[int, float], Any]) -> None:
        """``MappingTable.rebuild_schedule_soon``."""
        if self.t.disk is not None:
            return
        if self.rebuild_task is not None and not self.rebuild_task.done():
            self.rebuild_task.cancel()
        self.memory.clear()
        self.rebuild_task = asyncio.ensure_future(self._rebuild(next_expiry, done, self.t.epoch))

    async def _rebuild(self, next_expiry: Callable[[bytes, bytes], Optional[int]],
                       done: Callable[[int, float], Any], epoch: int) -> None:
        t = self.t
        t0 = time.monotonic()
        kp = t.key_partition()
        keys = [k for k, p in kp.items() if p in t.active]
        n = 0
        try:
            for i in range(0, len(keys), SCHEDULE_CHUNK):
                if epoch != t.epoch:
                    return
                for k in keys[i:i + SCHEDULE_CHUNK]:
                    v = t.data.get(k)  # the value now: the agents may have written since
                    if v is not None and kp.get(k) in t.active:
                        t.schedule(next_expiry(k, v), k)
                        n += 1
                await asyncio.sleep(0)
            if epoch == t.epoch:
                r = done(n, time.monotonic() - t0)
                if asyncio.iscoroutine(r):
                    await r
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sweeper: rebuilding the schedule failed; every key is re-checked now")
            for k in keys:  # never lose an expiry: let the sweeper look at each key once
                t.schedule(0, k)
