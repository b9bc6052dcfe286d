"""Which table keys hold an open interval of a NAS: what an Accounting-On/Off has to visit.

Pure (no clock, no I/O).  A NAS's reset closes its open intervals (``stream.intervals.apply_reset``).
Without an index the writer opens every key of the operator in the partition to find them,
which blocks the event loop for seconds at millions of keys (docs/mapping.md, "Known limit").

The index is a **superset**: every key of partition ``p`` whose stored value has an open interval
of ``nas`` is in ``keys(p, operator, nas)``; a key there may no longer have one (the reset opens
it, finds nothing to close and drops it).  Each write that goes through the writer updates it
from the key's old and new intervals; values that arrive any other way (a changelog restore)
are added by the schedule rebuild that follows every recovery, which opens every value anyway.
So the writer may trust the index only once that rebuild has finished for the table's current
epoch (``ready``); until then it scans, as before.
"""

from __future__ import annotations

from typing import Iterable, Optional

from .intervals import Intervals


def open_nases(ivs: Intervals) -> frozenset:
    """The NASes with an open interval in ``ivs`` (what a reset of theirs would change)."""
    return frozenset([i.nas for i in ivs if i.end_ms is None and i.nas is not None])


_NONE: frozenset = frozenset()


class ResetIndex:
    """(partition, operator, NAS) → keys that may hold an open interval of that NAS."""

    __slots__ = ("_by", "ready_epoch")

    def __init__(self) -> None:
        self._by: dict[tuple[int, str, str], set[bytes]] = {}
        #: the table epoch whose schedule rebuild completed (every restored value noted); None:
        #: not trusted yet
        self.ready_epoch: Optional[int] = None

    def ready(self, epoch: int) -> bool:
        return self.ready_epoch == epoch

    def update(self, partition: int, operator: str, key: bytes, old: Intervals, new: Intervals) -> None:
        """The key's stored intervals went from ``old`` to ``new`` (``()``: absent or unreadable).
        A value restored behind the writer's back is noted as ``old=()``: added, nothing removed."""
        if len(old) == 1 and len(new) == 1:  # most keys hold one session: no sets to build
            o, n = old[0], new[0]
            if (o.end_ms is None) is (n.end_ms is None) and o.nas == n.nas:
                return
        had = open_nases(old) if old else _NONE
        has = open_nases(new) if new else _NONE
        if had == has:
            return
        by = self._by
        for nas in had:
            if nas not in has:
                s = by.get((partition, operator, nas))
                if s is not None:
                    s.discard(key)
                    if not s:
                        del by[(partition, operator, nas)]
        for nas in has:
            if nas not in had:
                s = by.get((partition, operator, nas))
                if s is None:
                    by[(partition, operator, nas)] = {key}
                else:
                    s.add(key)

    def keys(self, partition: int, operator: str, nas: str) -> list[bytes]:
        """A copy: the caller's writes update the index while it walks."""
        s = self._by.get((partition, operator, nas))
        return [] if s is None else list(s)

    def keep(self, partitions: Iterable[int]) -> None:
        """Forget every partition but ``partitions`` (the rest went to other workers)."""
        mine = set(partitions)
        for k in [k for k in self._by if k[0] not in mine]:
            del self._by[k]

    def __len__(self) -> int:
        return sum(len(s) for s in self._by.values())
