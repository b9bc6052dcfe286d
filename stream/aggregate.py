"""k-anonymous aggregates: counts per operator × kind × time bucket × address prefix (issue 5).

A cell is ``(operator, kind, bucket_ms, epoch, prefix)`` where ``prefix`` is the aggregate
cell text from ``stream.stats.StatsBuilder`` (a pseudonymised /24 or /48 for ipcrypt-pfx and
Crypto-PAn, the truncated network for ``truncate``, an opaque det token for ``ipcrypt-det``,
``"*"`` for ``drop``).  Per cell:

- ``sessions``: bindings with action ``start`` (new sessions, leases, NAT blocks);
- ``subscribers``: distinct holders (subscriber pseudonyms; for NAT, pseudonyms of the inside
  address) among every binding of the cell;
- ``records``: every binding of the cell;
- ``octets_in`` / ``octets_out``: summed over ``stop`` bindings only — interim updates carry
  running totals, so summing them would count traffic twice.

**Suppression**: a cell with fewer than ``k`` distinct holders (the operator's
``purposes.statistics.k``, default 10) is never emitted, only counted (``suppressed``).  Every
holder counts, consented or not: aggregates are the k-anonymous output the issue allows for
subscribers without consent.

**When a bucket is emitted** (all cells of one operator × bucket together, once): when

1. its end plus ``grace_ms`` lies at or before ``max(event-time watermark, now)`` — the
   watermark is the largest event time seen for the operator, ``now`` the worker's clock, and
   ``grace_ms`` the time a record may still arrive late (default the worker's ingest lag); and
2. no binding of that bucket arrived during the last ``idle_ms`` of processing time.

Rule 2 is what makes a replay of old data (whose buckets are all "closed" by the clock at once)
produce the same cells as live traffic.  A binding that arrives for a bucket already emitted is
not added anywhere (``late``): a second partial cell would be a differencing attack.  Open cells
live in memory only: a worker that dies loses them (counted, never emitted twice).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from .stats import Built

AGGREGATE_SCHEMA_VERSION = 1
DEFAULT_IDLE_MS = 10_000
FIELDS = ("v", "id", "operator", "kind", "bucket_ms", "bucket_len_ms", "epoch", "prefix", "k",
          "sessions", "subscribers", "records", "octets_in", "octets_out")


@dataclass(slots=True)
class _Cell:
    sessions: int = 0
    records: int = 0
    octets_in: int = 0
    octets_out: int = 0
    holders: set = field(default_factory=set)


@dataclass(slots=True)
class _Bucket:
    bucket_len_ms: int
    last_ms: int                                  # processing time of the last addition
    cells: dict = field(default_factory=dict)     # (kind, epoch, prefix) -> _Cell


class Aggregator:
    """Accumulates ``Built`` results and emits closed buckets' k-anonymous cells.

    ``k``: operator → threshold.  Pure: time comes in as ``now_ms``.
    """

    def __init__(self, k: Mapping[str, int], *, grace_ms: int, idle_ms: int = DEFAULT_IDLE_MS,
                 remember: int = 100_000) -> None:
        self.k = dict(k)
        self.grace_ms = grace_ms
        self.idle_ms = idle_ms
        self._open: dict[tuple[str, int], _Bucket] = {}
        self._closed: "OrderedDict[tuple[str, int], None]" = OrderedDict()
        self._remember = remember
        self.watermark: dict[str, int] = {}
        self.late = 0
        self.suppressed = 0
        self.emitted = 0

    def add(self, built: Built, now_ms: int) -> bool:
        """Count one binding; False if its bucket was already emitted (then it is dropped)."""
        b = built.binding
        rec = built.record
        assert rec is not None
        bkey = (b.operator, rec["bucket_ms"])
        if bkey in self._closed:
            self.late += 1
            return False
        wm = self.watermark.get(b.operator)
        if wm is None or b.at_ms > wm:
            self.watermark[b.operator] = b.at_ms
        bucket = self._open.get(bkey)
        if bucket is None:
            bucket = self._open[bkey] = _Bucket(rec["bucket_len_ms"], now_ms)
        bucket.last_ms = max(bucket.last_ms, now_ms)
        ckey = (b.kind, built.epoch, built.cell)
        cell = bucket.cells.get(ckey)
        if cell is None:
            cell = bucket.cells[ckey] = _Cell()
        cell.records += 1
        if b.action == "start":
            cell.sessions += 1
        if b.action == "stop":
            cell.octets_in += b.octets_in or 0
            cell.octets_out += b.octets_out or 0
        if built.holder is not None:
            cell.holders.add(built.holder)
        return True

    def add_many(self, built: Iterable[Built], now_ms: int) -> int:
        return sum(1 for x in built if self.add(x, now_ms))

    def due(self, now_ms: int) -> list[dict[str, Any]]:
        """Close every bucket that satisfies the emission rule; return its unsuppressed cells
        as aggregate records (sorted, so the output is deterministic)."""
        out: list[dict[str, Any]] = []
        for bkey in sorted(self._open):
            operator, start = bkey
            bucket = self._open[bkey]
            horizon = max(self.watermark.get(operator, now_ms), now_ms)
            if start + bucket.bucket_len_ms + self.grace_ms > horizon:
                continue
            if now_ms - bucket.last_ms < self.idle_ms:
                continue
            del self._open[bkey]
            self._closed[bkey] = None
            while len(self._closed) > self._remember:
                self._closed.popitem(last=False)
            k = self.k.get(operator, 10)
            for (kind, epoch, prefix), cell in sorted(bucket.cells.items()):
                if len(cell.holders) < k:
                    self.suppressed += 1
                    continue
                out.append(aggregate_record(operator, kind, start, bucket.bucket_len_ms, epoch, prefix, k, cell))
                self.emitted += 1
        return out

    @property
    def open_buckets(self) -> int:
        return len(self._open)


def aggregate_id(operator: str, kind: str, bucket_ms: int, epoch: int, prefix: str) -> str:
    """Deterministic cell id (SHA-256 of the cell coordinates, which are public in the record
    anyway), so a consumer can drop a duplicate emission."""
    text = f"{operator}\0{kind}\0{bucket_ms}\0{epoch}\0{prefix}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def aggregate_record(operator: str, kind: str, bucket_ms: int, bucket_len_ms: int, epoch: int,
                     prefix: str, k: int, cell: Any) -> dict[str, Any]:
    return {
        "v": AGGREGATE_SCHEMA_VERSION,
        "id": aggregate_id(operator, kind, bucket_ms, epoch, prefix),
        "operator": operator,
        "kind": kind,
        "bucket_ms": bucket_ms,
        "bucket_len_ms": bucket_len_ms,
        "epoch": epoch,
        "prefix": prefix,
        "k": k,
        "sessions": cell.sessions,
        "subscribers": len(cell.holders),
        "records": cell.records,
        "octets_in": cell.octets_in,
        "octets_out": cell.octets_out,
    }

