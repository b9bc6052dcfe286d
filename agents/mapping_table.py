"""The mapping table: a Faust table written with *explicit partitions*.

Why not ``table[key] = value``?  Faust derives the changelog partition from the "current
event" context variable (``Table.partition_for_key``); inside ``stream.take_events()`` batches
and in timers there is none, and Faust raises "Cannot modify table key from outside of stream
iteration" (seen here with faust-streaming 0.15.3).  Batching is how we reach the throughput
targets, and the expiry sweeper runs from a timer, so this wrapper passes the partition
explicitly: it writes the local store and calls ``Table.send_changelog(partition, …)`` — the
same two steps Faust's own ``__setitem__``/``__delitem__`` take (a delete sends ``value=None``
with the raw serializer: a real Kafka tombstone).

The partition of a key is the partition of its *routing key* on the bindings topic (Kafka's
default murmur2 partitioner), so lookups and the sweeper can compute it for any key.

Faust's memory store only remembers which partition a key came from for keys it recovered
from the changelog, and does not drop live-written keys when their partition is revoked.  We
keep that map ourselves (``_key_partition`` of the store, the field Faust itself uses) and drop
revoked partitions' keys in ``on_rebalance``, so a worker never sweeps — and so never
tombstones — a key another worker now owns.

Expiry (DESIGN.md "Hard facts"): Faust's windowed-table expiry pops keys only from the local
store, never writes tombstones and forgets its schedule after recovery (faust-streaming
#385, #193).  We do not use it.  ``MappingTable.sweep`` is our own: it walks the keys of the
active partitions, drops intervals past their expiry instant and writes the new value or a
tombstone, and it rebuilds its schedule from the store after every recovery (it has no other
state).
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, Iterable, Optional, Set

import faust
from aiokafka.partitioner import murmur2
from faust.types import TP


def partition_for(routing_key: bytes, partitions: int) -> int:
    """Kafka's DefaultPartitioner (murmur2, positive, modulo), as aiokafka and Java use it."""
    return (murmur2(routing_key) & 0x7FFFFFFF) % partitions


class MappingTable(faust.Table):
    """A ``faust.Table`` of ``bytes → bytes`` with explicit-partition writes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.active: Set[int] = set()
        self.source_topics: Set[str] = set()  # set by the app: the bindings topic
        # min-heap of (expiry_ms, key) — a schedule rebuilt from the store after recovery;
        # stale entries are re-checked when they come up, so it never needs exact updates.
        self._schedule: list[tuple[int, bytes]] = []

    # -- store access -----------------------------------------------------------------------

    def _key_partition(self) -> dict:
        return self.data._key_partition  # faust MemoryStore's own map (see module docstring)

    def get_raw(self, key: bytes) -> Optional[bytes]:
        return self.data.get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.data[key] = value
        self._key_partition()[key] = partition
        self.send_changelog(partition, key, value)

    def delete(self, partition: int, key: bytes) -> None:
        self.data.pop(key, None)
        self._key_partition().pop(key, None)
        self.send_changelog(partition, key, None, value_serializer="raw")

    def keys_of(self, partitions: Iterable[int]) -> list[bytes]:
        ps = set(partitions)
        kp = self._key_partition()
        return [k for k in list(self.data.keys()) if kp.get(k) in ps]

    # -- schedule ---------------------------------------------------------------------------

    def schedule(self, expiry_ms: Optional[int], key: bytes) -> None:
        if expiry_ms is not None:
            heapq.heappush(self._schedule, (expiry_ms, key))

    def due(self, now_ms: int) -> list[bytes]:
        """Keys whose earliest scheduled expiry has come (each once)."""
        out = []
        seen = set()
        while self._schedule and self._schedule[0][0] <= now_ms:
            _, k = heapq.heappop(self._schedule)
            if k not in seen:
                seen.add(k)
                out.append(k)
        return out

    def rebuild_schedule(self, next_expiry: Callable[[bytes, bytes], Optional[int]]) -> int:
        self._schedule = []
        kp = self._key_partition()
        for k, v in list(self.data.items()):
            if kp.get(k) in self.active:
                self.schedule(next_expiry(k, v), k)
        return len(self._schedule)

    # -- rebalance --------------------------------------------------------------------------

    async def on_rebalance(self, assigned: Set[TP], revoked: Set[TP], newly_assigned: Set[TP],
                           generation_id: int = 0) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        # the bindings topic is co-partitioned with the changelog: partition n of one is
        # partition n of the other (Faust's assignor keeps them together)
        names = {self.changelog_topic.get_topic_name(), *self.source_topics}
        mine = {tp.partition for tp in assigned if tp.topic in names}
        self.active = mine
        kp = self._key_partition()
        for k in [k for k, p in kp.items() if p not in mine]:
            self.data.pop(k, None)
            kp.pop(k, None)
