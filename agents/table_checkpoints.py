"""The mapping table's restore into the disk store: checkpoints and the disk sink.

Part of ``agents.mapping_table.MappingTable`` (docs/state-on-disk.md).  Each partition of the
store carries a checkpoint: the changelog offset it holds everything before, with the instant
every record after it was written after.  A restore continues each partition from its
checkpoint unless it cannot be trusted (``Checkpoints.check``, ``Checkpoints.check_topic_id``),
and writes each ``getmany`` batch as one store write batch with the moved checkpoints
(``apply_restored``).

The port: ``Checkpoints`` reads the table's ``disk``, ``max_checkpoint_age_ms``,
``extra_topic_configs`` and ``app.conf.id``, and shares the table's restore positions
(``restored_to``); ``apply_restored`` takes the store, the schedule function and the positions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Iterable, Optional

from stream import disk_bound as db

log = logging.getLogger("ipanon")

#: the changelog header carrying a write's schedule instant (ms, ASCII): a restore into the disk
#: store schedules the key from it without opening the value
REVISIT_HEADER = "ipanon-revisit"


class Checkpoints:
    """The disk store's checkpoints of one ``MappingTable`` (see the module docstring)."""

    def __init__(self, table: Any, restored_to: dict[int, int]) -> None:
        self.t = table
        #: partition → next changelog offset not yet applied (the table's, shared)
        self.restored_to = restored_to

    def limit_ms(self) -> int:
        """How old a checkpoint may be and still be continued from: half the changelog's
        ``delete.retention.ms`` (a tombstone written after the checkpoint is kept at least that
        long; the half leaves room for records written before the checkpoint time, in flight)."""
        if self.t.max_checkpoint_age_ms is not None:
            return self.t.max_checkpoint_age_ms
        drm = (self.t.extra_topic_configs or {}).get("delete.retention.ms", 86_400_000)
        try:
            return int(drm) // 2
        except (TypeError, ValueError):
            return 43_200_000

    async def check_topic_id(self, clients: Any, topic: str) -> None:
        """A checkpoint is an offset of *one* topic: if the changelog was deleted and created
        again under the same name (Kafka topic ids, KIP-516), every partition of the store is
        restored afresh — the new topic's offsets point into records the store never saw."""
        def topic_id() -> Optional[str]:
            admin = clients.admin(client_id=f"{self.t.app.conf.id}-restore-admin")
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
        st = self.t.disk
        had = st.get_meta(b"topic-id")
        if had is not None and had.decode() != tid:
            log.warning("mapping table: the changelog %s was created again (topic id %s, the store's %s): "
                        "every partition is restored afresh", topic, tid, had.decode())
            for p in sorted(st.partitions()):
                st.drop_partition(p)
            self.restored_to.clear()
        if had is None or had.decode() != tid:
            st.put_meta(b"topic-id", tid.encode())

    def check(self, tps: list, firsts: dict, ends: dict) -> None:  # noqa: C901
        """Drop each partition whose checkpoint cannot be continued from, so it is restored
        afresh: past the changelog's end (the topic was re-created or truncated), before its
        start (records this store never saw were deleted), or older than ``limit_ms`` with
        records after it (tombstones may have been compacted away, and the store would keep
        what they deleted)."""
        st = self.t.disk
        now = time.time_ns() // 1_000_000
        for tp in tps:
            p = tp.partition
            c = self.restored_to.get(p)
            if c is None or p not in st.partitions():
                continue
            at = st.checkpoint_at(p)
            why = None
            if c > ends[tp]:
                why = f"checkpoint {c} past the end offset {ends[tp]}"
            elif c < firsts[tp]:
                why = f"checkpoint {c} before the log start offset {firsts[tp]}"
            elif c < ends[tp] and (at is None or now - at > self.limit_ms()):
                why = f"checkpoint written {'at an unknown time' if at is None else f'{(now - at) / 1000:.0f} s ago'}"
            if why:
                log.warning("mapping table: partition %d of the disk store is restored afresh: %s", p, why)
                st.drop_partition(p)
                self.restored_to.pop(p, None)

    def write(self, parts: Iterable[int], at_ms: int) -> None:
        """Each partition's position as its checkpoint, with ``at_ms``: every record after it was
        written after that instant (the checkpoint age test of ``check``)."""
        st = self.t.disk
        b = st.batch()
        for p in parts:
            c = self.restored_to.get(p)
            if c is not None:
                b.checkpoint(p, c, at_ms)
        st.write(b)


def apply_restored(st: Any, nxt: Optional[Callable[[bytes, bytes], Optional[int]]], restored_to: dict[int, int],
                   batch: dict) -> int:
    """One ``getmany`` batch into the disk store ``st`` as one write batch: values, their
    schedule entries (from ``REVISIT_HEADER``, else ``nxt`` (the table's ``next_expiry``), else
    at once) and each partition's checkpoint; the in-memory position (``restored_to``) moves
    only once it is written.  The schedule key's bucket prefix is computed once per distinct
    header value, and each partition's changes go to the store in one call
    (``Batch.apply_many``)."""
    b = st.batch()
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
    restored_to.update({p: c for p, (c, _) in moved.items()})
    return n


def _bucket_prefix(header: Any, width_ms: int) -> Any:
    """The schedule key prefix (``stream.disk_bound.schedule_key`` without the key) of a
    ``REVISIT_HEADER`` value, or False if it is not a number."""
    try:
        when = int(header)
    except (TypeError, ValueError):
        return False
    return db.schedule_key(db.bucket_of(when, width_ms), b"")
