"""The sweeper's schedule: table keys by expiry instant, in time buckets (``ExpirySchedule``).

Pure (no clock: ``pop_due`` takes ``now_ms``).  The mapping table (``agents.mapping_table``)
keeps one and hands the sweeper the keys that came due; the sweeper re-checks each key, so the
schedule never needs exact updates.

Keys sit in time buckets of ``SCHEDULE_BUCKET_MS``, not one ``(expiry, key)`` tuple each: a small
fraction of the memory per scheduled key (``benchmarks/bench_memory.py``, docs/benchmarks.md).  A bucket is
handed out only once every expiry it covers has passed, so a key is never due before its expiry
instant and at most one bucket width after it: the sweeper deletes within sweeper period +
bucket width of the expiry instant, and the retention plan subtracts both from the TTL
(``stream.policy.PlanParams.schedule_bucket_ms``, set from ``SCHEDULE_BUCKET_MS`` by
``agents.runtime.plan_params``).
"""

from __future__ import annotations

import heapq
import math
from array import array
from typing import Optional, Union

#: width of the sweeper's schedule buckets (``ExpirySchedule``): a key is due at most this long
#: after its expiry instant, never before.  Part of the deletion bound: the worker's retention
#: plan uses it as ``PlanParams.schedule_bucket_ms`` (``agents.runtime.plan_params``).
SCHEDULE_BUCKET_MS = 1_000
#: buckets per span of the schedule's far level (``ExpirySchedule``): 3 600 × 1 s = 1 h
SCHEDULE_GROUP = 3_600


#: ``ExpirySchedule._near_end`` before the first ``pop_due``: below any bucket id an expiry gives
_NOTHING_NEAR = -(1 << 80)


class ExpirySchedule:
    """The sweeper's schedule: keys by expiry instant, in buckets ``width_ms`` wide.

    A key with expiry ``e`` belongs to bucket ``b = ceil(e / width_ms)``, which covers the
    expiries in ``((b-1)·width_ms, b·width_ms]``; ``pop_due(now)`` hands out (and forgets) every
    bucket with ``b·width_ms <= now``.  So a key is never handed out before its expiry and at most
    ``width_ms`` after it (plus however long until the next ``pop_due``).  Entries are never
    updated or removed: a key scheduled again is simply in two buckets, and the caller re-checks
    a key when it comes up (``pop_due`` returns each key once per call).

    Two levels, so that memory stays small however far ahead the expiries lie (a 181-day TTL
    spreads 1M keys over 15M one-second buckets, and a list, an int and a heap slot per bucket
    would cost more than the ``(expiry, key)`` tuple per key this replaced):

    - *near*: the buckets of the spans already reached (``group`` buckets each, 1 h at the
      defaults), a dict bucket id → list of keys plus a min-heap of the ids — 8 bytes per key
      (a list slot; the key object is the store's) and one list per non-empty bucket;
    - *far*: everything later, grouped by span: span id → (list of keys, ``array('H')`` of each
      key's bucket offset in the span) plus a min-heap of the span ids — 10 bytes per key.
      When ``pop_due`` reaches a span it moves the span's keys to their near buckets (each
      entry once; a span holds the expiries of one hour).
    """

    __slots__ = ("width_ms", "group", "_near", "_near_ids", "_near_end", "_far", "_far_ids")

    def __init__(self, width_ms: int = SCHEDULE_BUCKET_MS, group: int = SCHEDULE_GROUP) -> None:
        if width_ms <= 0 or not 0 < group <= 65_536:
            raise ValueError("schedule bucket width must be positive, and a span 1 to 65 536 buckets")
        self.width_ms = width_ms
        self.group = group
        self.clear()

    def clear(self) -> None:
        self._near: dict[int, list[bytes]] = {}
        self._near_ids: list[int] = []  # min-heap of the ids in _near
        #: buckets below this id are near (a multiple of ``group``); nothing is near at first
        self._near_end = _NOTHING_NEAR
        self._far: dict[int, tuple[list[bytes], array]] = {}
        self._far_ids: list[int] = []  # min-heap of the ids in _far

    def add(self, expiry_ms: Union[int, float], key: bytes) -> None:
        # a float expiry as its ceiling (the same bucket, never early): an int bucket id either way
        ms = expiry_ms if type(expiry_ms) is int else math.ceil(expiry_ms)
        b = -(-ms // self.width_ms)  # ceil: never early
        if b < self._near_end:  # a bucket of a span already reached (often a new one)
            keys = self._near.get(b)
            if keys is None:
                self._near[b] = [key]
                heapq.heappush(self._near_ids, b)
            else:
                keys.append(key)
            return
        c, off = divmod(b, self.group)
        try:  # spans are few and hold many keys each
            keys, offs = self._far[c]
        except KeyError:
            keys, offs = self._far[c] = ([], array("H"))
            heapq.heappush(self._far_ids, c)
        keys.append(key)
        offs.append(off)

    def _reach(self, last: int) -> None:
        """Make every bucket up to ``last`` near: move the far spans it lies in."""
        group = self.group
        c_last = last // group
        far, far_ids, near, near_ids = self._far, self._far_ids, self._near, self._near_ids
        while far_ids and far_ids[0] <= c_last:
            c = heapq.heappop(far_ids)
            keys, offs = far.pop(c)
            base = c * group
            for k, off in zip(keys, offs):
                b = base + off
                bucket = near.get(b)
                if bucket is None:
                    near[b] = [k]
                    heapq.heappush(near_ids, b)
                else:
                    bucket.append(k)
        self._near_end = max(self._near_end, (c_last + 1) * group)

    def pop_due(self, now_ms: int) -> list[bytes]:
        """Keys of every bucket that ended at or before ``now_ms``, each once, earliest bucket
        first; those buckets are forgotten."""
        last = now_ms // self.width_ms  # b·width_ms <= now_ms  ⇔  b <= last
        if last >= self._near_end:
            self._reach(last)
        ids = self._near_ids
        if not ids or ids[0] > last:
            return []
        near = self._near
        out = dict.fromkeys(near.pop(heapq.heappop(ids)))  # ordered, de-duplicated
        while ids and ids[0] <= last:
            for k in near.pop(heapq.heappop(ids)):
                out[k] = None
        return list(out)

    def next_due_ms(self) -> Optional[int]:
        """The earliest instant at which ``pop_due`` returns something (None when empty)."""
        firsts = []
        if self._near_ids:
            firsts.append(self._near_ids[0])
        if self._far_ids:
            c = self._far_ids[0]
            firsts.append(c * self.group + min(self._far[c][1]))
        return min(firsts) * self.width_ms if firsts else None

    def __len__(self) -> int:
        """Entries held (a key scheduled twice counts twice); walks the buckets."""
        return sum(map(len, self._near.values())) + sum(len(keys) for keys, _ in self._far.values())
