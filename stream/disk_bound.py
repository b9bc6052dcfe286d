"""Erasure on disk within a bound: the pure rules behind ``agents.disk_store``.

A key deleted from RocksDB leaves its old value in SST files (until a compaction rewrites
them) and in the write-ahead log (until the memtable that holds it is flushed and the log file
is deleted).  ``agents.disk_store`` bounds both with one mechanism, run on every *erasure tick*
(at least every ``tick_ms``):

1. flush every column family's memtable: the WAL files written before the tick become obsolete
   and are deleted (recycling off, archiving off: ``wal_ttl_seconds = wal_size_limit_mb = 0``);
2. compact, with ``bottommost_level_compaction = force``, every held partition whose last
   forced compaction *started* ``cycle_ms`` or more ago (``partitions_due``).  A forced
   compaction of a whole column family rewrites every SST file of it into the bottommost
   level; with no snapshot or iterator open, a deleted key's tombstone and every older
   version under it are dropped, and the input files are unlinked when the job ends;
3. a revoked partition's column families are dropped whole (their files are unlinked).

The bound (all in ms, time as an argument, no I/O here):

    B_disk = cycle_ms + tick_ms + compaction_allowance_ms

A value deleted at t (its tombstone is in the memtable at t) is in the first forced compaction
of its partition that *starts* after t: the previous one started at some s <= t, the next is
due at s + cycle_ms and starts at the first tick after that (<= t + cycle_ms + tick_ms); it
flushes first (so the tombstone is in an SST when the compaction starts) and ends within
``compaction_allowance_ms`` (the operator's allowance for one tick's flushes and compactions,
checked against the measured duration by ``tick_overran``).  The put that wrote the value left
it in a WAL file that the flush of the first tick after the put made obsolete (<= tick_ms after
the put, which is before t unless both fell in one tick — then the same flush covers both).

The term of the worst-case persistence formula of ``stream.policy`` (``PlanParams.disk``,
``OperatorRetention.worst_case_ms``; ``docs/state-on-disk.md``): the store deletes at the same
instant the sweeper writes the changelog tombstone, so the two paths run in parallel::

    TTL + sweeper period + schedule bucket + max(derived-topic bound, B_disk) <= P
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

#: the schedule column family's key: 8-byte big-endian bucket id, then the table key
BUCKET_BYTES = 8
_BUCKET_MAX = (1 << (8 * BUCKET_BYTES)) - 1


@dataclass(frozen=True)
class DiskBound:
    """The erasure mechanism's parameters and the bound they give."""

    cycle_ms: int                  # every held partition is force-compacted at least this often
    tick_ms: int                   # the erasure tick runs at least this often
    compaction_allowance_ms: int   # the longest one tick's flushes and compactions may take

    def __post_init__(self) -> None:
        if self.cycle_ms <= 0 or self.tick_ms <= 0 or self.compaction_allowance_ms < 0:
            raise ValueError("disk bound: cycle and tick must be positive, the allowance not negative")
        if self.tick_ms > self.cycle_ms:
            raise ValueError("disk bound: the tick must not be longer than the cycle")

    @property
    def bound_ms(self) -> int:
        """``B_disk``: a value deleted at t is in no file under the data directory after t + this."""
        return self.cycle_ms + self.tick_ms + self.compaction_allowance_ms

    def tick_overran(self, tick_duration_ms: float) -> bool:
        """True when a tick took longer than the allowance: the bound did not hold for it."""
        return tick_duration_ms > self.compaction_allowance_ms


def partitions_due(last_started: Mapping[int, int], held: Iterable[int], now_ms: int, cycle_ms: int) -> list[int]:
    """The held partitions whose forced compaction is due at ``now_ms``, longest-waiting first.
    A partition with no recorded start (new, or its start never recorded: ``agents.disk_store``
    keeps a start in its meta only once that compaction ended) is due at once — it may hold
    deletes made before anyone compacted it."""
    due = []
    for p in held:
        s = last_started.get(p)
        if s is None or now_ms - s >= cycle_ms:
            due.append((-1 if s is None else s, p))
    return [p for _, p in sorted(due)]


def persistence_ms(ttl_ms: int, sweeper_delay_ms: int, derived_bound_ms: int, disk_bound_ms: int) -> int:
    """Worst case from a mapping's end to its physical absence from the changelog topic *and*
    the worker's disk (``stream.policy.OperatorRetention.worst_case_ms``; ``disk_bound_ms`` 0
    with the table in memory)."""
    return ttl_ms + sweeper_delay_ms + max(derived_bound_ms, disk_bound_ms)


# -- the on-disk schedule's keys ---------------------------------------------------------------

def bucket_of(when_ms: int, width_ms: int) -> int:
    """The schedule bucket of an instant, as ``stream.schedule.ExpirySchedule``: ``ceil(when /
    width)``, so a key is never due before ``when`` and at most one width after it; instants
    before 0 go to bucket 0 (due at the first ``due`` call)."""
    if width_ms <= 0:
        raise ValueError("schedule bucket width must be positive")
    b = -(-int(when_ms) // width_ms)
    return min(max(b, 0), _BUCKET_MAX)


def last_due_bucket(now_ms: int, width_ms: int) -> Optional[int]:
    """The last bucket due at ``now_ms`` (``b * width <= now``); None when none is."""
    if now_ms < 0:
        return None
    return min(int(now_ms) // width_ms, _BUCKET_MAX)


def schedule_key(bucket: int, key: bytes) -> bytes:
    """Big-endian bucket, then the key: RocksDB's byte order is time order."""
    return bucket.to_bytes(BUCKET_BYTES, "big") + key


def split_schedule_key(skey: bytes) -> tuple[int, bytes]:
    return int.from_bytes(skey[:BUCKET_BYTES], "big"), skey[BUCKET_BYTES:]


def due_upper_bound(now_ms: int, width_ms: int) -> Optional[bytes]:
    """The exclusive upper bound of the due schedule keys at ``now_ms`` (None: nothing is due)."""
    last = last_due_bucket(now_ms, width_ms)
    if last is None:
        return None
    return (last + 1).to_bytes(BUCKET_BYTES + 1, "big") if last == _BUCKET_MAX else (last + 1).to_bytes(BUCKET_BYTES, "big")
