"""k-anonymous aggregates: counts per operator × kind × time bucket × address prefix.

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
not added anywhere (``late``, counted per operator in ``late_by_operator``): a second partial
cell would be a differencing attack.

**One owner per cell**: with several workers the bindings partitions, and so a
cell's bindings, are split between them.  The stats stage therefore does not count: it turns
each binding into a *contribution* (``contribution``: the cell coordinates, action, octets,
holder pseudonym and record id — no raw identifier, no exact time) keyed by the cell id, and
one aggregate stage per partition of that topic counts them.  Every cell thus has exactly one
counter, and k applies to the whole cell.  The event-time watermark is the largest *bucket
start* seen (the contribution carries no finer time), which can only delay an emission.  A
contribution repeated by a re-delivered batch has the same record id and is counted once
(``duplicates``).  Version 1 carries one binding; version 2 (``ContributionEncoder.cells``)
carries every binding of one cell from one ingest batch as ``items`` (``[action, octets_in,
octets_out, holder, rid]`` each): the same counts from a fraction of the Kafka records, each
item counted exactly as a version-1 contribution.  The aggregate stage reads both.  ``hold_offset`` tells the agent which offset it may commit: the first
offset of any still-open bucket, so a partition's new owner re-reads every open bucket whole.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from .errors import Rejected
from .model import loads_json
from .stats import Built, compact_json

_esc = json.encoder.encode_basestring_ascii

AGGREGATE_SCHEMA_VERSION = 1
CONTRIBUTION_VERSION = 1
CELL_CONTRIBUTION_VERSION = 2  # one cell's bindings of one batch, as ``items``
MAX_ITEMS = 512  # per version-2 message: ≈ 60 KB, far below the broker's message.max.bytes
_ACTIONS = ("start", "update", "stop")
_KINDS = ("radius", "dhcp", "nat")
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
    rids: set = field(default_factory=set)        # record ids counted (a re-delivery repeats them)


@dataclass(slots=True)
class _Bucket:
    bucket_len_ms: int
    last_ms: int                                  # processing time of the last addition
    cells: dict = field(default_factory=dict)     # (kind, epoch, prefix) -> _Cell
    first_offset: Optional[int] = None            # smallest source offset counted (commit hold)


def contribution(built: Built) -> dict[str, Any]:
    """What the aggregate stage needs of one binding (see the module doc), as a dict."""
    # ``x`` untyped: ``Binding`` does not type-check counters (an old JSON binding may carry a
    # float), and compiled code reading through the annotations would raise TypeError on one
    x: Any = built
    b = x.binding
    rec = x.record
    assert rec is not None
    stop = b.action == "stop"
    return {"v": CONTRIBUTION_VERSION, "operator": b.operator, "kind": b.kind,
            "bucket_ms": rec["bucket_ms"], "bucket_len_ms": rec["bucket_len_ms"], "epoch": x.epoch,
            "prefix": x.cell, "action": b.action,
            "octets_in": (b.octets_in or 0) if stop else 0, "octets_out": (b.octets_out or 0) if stop else 0,
            "holder": x.holder, "rid": rec.get("id")}


def contribution_id(c: Mapping[str, Any]) -> str:
    """The cell id a contribution counts towards (its partitioning key)."""
    return aggregate_id(c["operator"], c["kind"], c["bucket_ms"], c["epoch"], c["prefix"])


def encode_contribution(c: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) on the contributions topic: key = cell id, so one partition owns a cell."""
    return contribution_id(c).encode(), compact_json(c).encode()


_CONTRIBUTION_KEYS = ("v", "operator", "kind", "bucket_ms", "bucket_len_ms", "epoch", "prefix", "action",
                      "octets_in", "octets_out", "holder", "rid")


class ContributionEncoder:
    """``encode_contribution(contribution(built))`` for many bindings, byte for byte, without
    the dict: a cell's id (a SHA-256) and the JSON of its coordinates (the contribution's
    first seven fields) are computed once per cell and cached, since bindings of one pool share
    few cells; each binding then adds its action, octets, holder and record id.  A binding
    whose values are not plain (text, ``int``, ``None``: a float counter from an old JSON
    binding) takes ``encode_contribution``.  Checked against it by
    ``tests/unit/test_stats_fastpaths.py``.  ``cells`` groups a batch by cell (version 2)."""

    def __init__(self, limit: int = 16_384) -> None:
        # cleared when full (≈ 300 B an entry): a batch touches few cells, so it needs few
        self._cells: dict[tuple, tuple[bytes, str]] = {}
        self._limit = limit

    def _cell(self, built: Built) -> Optional[tuple[bytes, str]]:
        """(cell id, the coordinates' JSON members) of a plain binding's cell; None otherwise."""
        x: Any = built  # untyped: the types are tested below (see contribution)
        b = x.binding
        rec = x.record
        assert rec is not None
        ck = (b.operator, b.kind, rec["bucket_ms"], rec["bucket_len_ms"], x.epoch, x.cell)
        # the types before the cache: an equal float or bool (1.0 == 1) would hit an int's entry
        if not (type(ck[0]) is str and type(ck[1]) is str and type(ck[2]) is int and type(ck[3]) is int
                and type(ck[4]) is int and type(ck[5]) is str):
            return None
        cell = self._cells.get(ck)
        if cell is None:
            if len(self._cells) >= self._limit:
                self._cells.clear()
            cell = self._cells[ck] = (
                aggregate_id(*ck[:2], ck[2], ck[4], ck[5]).encode(),
                f'"operator":{_esc(ck[0])},"kind":{_esc(ck[1])},"bucket_ms":{ck[2]!r},'
                f'"bucket_len_ms":{ck[3]!r},"epoch":{ck[4]!r},"prefix":{_esc(ck[5])}')
        return cell

    @staticmethod
    def _item(built: Built) -> Optional[tuple[str, str, str, str, str]]:
        """The binding's own members as JSON texts (action, octets in, out, holder, rid); None
        if one is not plain."""
        x: Any = built  # untyped: the types are tested below (see contribution)
        b = x.binding
        action = b.action
        if action == "stop":
            o_in, o_out = b.octets_in or 0, b.octets_out or 0
        else:
            o_in = o_out = 0
        h = x.holder
        rec = x.record
        assert rec is not None
        rid = rec.get("id")
        if not (type(action) is str and type(o_in) is int and type(o_out) is int
                and (h is None or type(h) is str) and (rid is None or type(rid) is str)):
            return None
        return (_esc(action), repr(o_in), repr(o_out), "null" if h is None else _esc(h),
                "null" if rid is None else _esc(rid))

    def encode(self, built: Built) -> tuple[bytes, bytes]:
        """Version 1: (key, value) of one binding's contribution."""
        cell = self._cell(built)
        item = self._item(built) if cell is not None else None
        if cell is None or item is None:
            return encode_contribution(contribution(built))
        return cell[0], (f'{{"v":{CONTRIBUTION_VERSION},{cell[1]},"action":{item[0]},"octets_in":{item[1]},'
                         f'"octets_out":{item[2]},"holder":{item[3]},"rid":{item[4]}}}').encode()

    def cells(self, built: Iterable[tuple[Built, Any]], max_items: int = MAX_ITEMS) -> list[tuple[bytes, bytes, Any]]:
        """Version 2: ``(built, tag)`` pairs → ``(cell id, value, tag)``, one message per cell
        (per ``max_items`` of it) with its bindings' items in their order; ``tag``: the first
        binding's of the cell (the caller's Kafka timestamp, the same for a whole cell).  A
        binding that is not plain gets its own version-1 message."""
        groups: dict[bytes, tuple[str, list[str], Any]] = {}
        out: list[tuple[bytes, bytes, Any]] = []
        for x, tag in built:
            cell = self._cell(x)
            item = self._item(x) if cell is not None else None
            if cell is None or item is None:
                out.append((*encode_contribution(contribution(x)), tag))
                continue
            g = groups.get(cell[0])
            if g is None:
                g = groups[cell[0]] = (cell[1], [], tag)
            g[1].append(f"[{item[0]},{item[1]},{item[2]},{item[3]},{item[4]}]")
        for key, (coords, items, tag) in groups.items():
            for i in range(0, len(items), max_items):
                out.append((key, f'{{"v":{CELL_CONTRIBUTION_VERSION},{coords},"items":[{",".join(items[i:i + max_items])}]}}'
                            .encode(), tag))
        return out


def _int(d: Mapping[str, Any], name: str, lo: int = 0) -> int:
    v = d.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise Rejected("bad-contribution", f"{name} must be an integer >= {lo}")
    return v


def decode_contribution(value: Optional[bytes]) -> dict[str, Any]:
    """Parse and check one contribution, version 1 or 2; ``Rejected`` for anything else."""
    try:
        d = loads_json(value, "not JSON", "not JSON") if value is not None else None
    except Rejected:
        raise Rejected("bad-contribution", "not JSON") from None
    if type(d) is dict:  # the common case, checked in two expressions; anything odd: the checks below
        g = d.get
        if (type(g("operator")) is str and type(g("prefix")) is str and g("kind") in _KINDS
                and type(x := g("bucket_ms")) is int and x >= 0 and type(x := g("epoch")) is int and x >= 0
                and type(x := g("bucket_len_ms")) is int and x >= 1):  # the cell's coordinates
            v = g("v")
            if (v == CONTRIBUTION_VERSION and g("action") in _ACTIONS
                    and type(x := g("octets_in")) is int and x >= 0 and type(x := g("octets_out")) is int and x >= 0
                    and ((x := g("holder")) is None or type(x) is str) and ((x := g("rid")) is None or type(x) is str)):
                return d
            if (v == CELL_CONTRIBUTION_VERSION and type(items := g("items")) is list and 0 < len(items) <= MAX_ITEMS
                    and all(type(i) is list and len(i) == 5 and i[0] in _ACTIONS
                            and type(i[1]) is int and i[1] >= 0 and type(i[2]) is int and i[2] >= 0
                            and (i[3] is None or type(i[3]) is str) and (i[4] is None or type(i[4]) is str)
                            for i in items)):
                return d
    if not isinstance(d, dict) or d.get("v") not in (CONTRIBUTION_VERSION, CELL_CONTRIBUTION_VERSION):
        raise Rejected("bad-contribution", f"not a version-{CONTRIBUTION_VERSION} or "
                                           f"-{CELL_CONTRIBUTION_VERSION} contribution")
    for name in ("operator", "prefix"):
        if not isinstance(d.get(name), str):
            raise Rejected("bad-contribution", f"{name} must be a string")
    if d.get("kind") not in _KINDS:
        raise Rejected("bad-contribution", "unknown kind")
    for name in ("bucket_ms", "epoch"):
        _int(d, name)
    _int(d, "bucket_len_ms", 1)
    if d["v"] == CELL_CONTRIBUTION_VERSION:
        items = d.get("items")
        if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS:
            raise Rejected("bad-contribution", f"items must be a list of 1 to {MAX_ITEMS}")
        for i in items:
            if not isinstance(i, list) or len(i) != 5:
                raise Rejected("bad-contribution", "an item must be [action, octets_in, octets_out, holder, rid]")
            _item_checks(dict(zip(("action", "octets_in", "octets_out", "holder", "rid"), i)))
        return d
    _item_checks(d)
    return d


def contribution_items(c: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A decoded contribution as version-1 contributions, one per binding (readers and tests:
    what the aggregate stage counts)."""
    if c.get("v") != CELL_CONTRIBUTION_VERSION:
        return [dict(c)]
    coords = {k: c[k] for k in ("operator", "kind", "bucket_ms", "bucket_len_ms", "epoch", "prefix")}
    return [{"v": CONTRIBUTION_VERSION, **coords, "action": a, "octets_in": i, "octets_out": o, "holder": h, "rid": r}
            for a, i, o, h, r in c["items"]]


def _item_checks(d: Mapping[str, Any]) -> None:
    if d.get("action") not in _ACTIONS:
        raise Rejected("bad-contribution", "unknown action")
    for name in ("octets_in", "octets_out"):
        _int(d, name)
    for name in ("holder", "rid"):
        if d.get(name) is not None and not isinstance(d[name], str):
            raise Rejected("bad-contribution", f"{name} must be a string or null")


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
        self.late_by_operator: dict[str, int] = {}
        self.duplicates = 0
        self.reread = 0
        self._inherited: set[tuple[str, int]] = set()
        self.suppressed = 0
        self.emitted = 0

    def add(self, built: Built, now_ms: int) -> bool:
        """Count one binding; False if its bucket was already emitted (then it is dropped)."""
        return self.add_contribution(contribution(built), now_ms)

    def add_contribution(self, c: Mapping[str, Any], now_ms: int, offset: Optional[int] = None) -> bool:
        """Count one contribution, version 1 or 2 (``offset``: its position in the source
        partition, for ``hold_offset``); False if nothing of it was counted: its bucket was
        already emitted (``late``, per binding) or every binding repeats a record already
        counted (``duplicates``)."""
        items = c.get("items")
        if items is None:
            items = ((c["action"], c["octets_in"], c["octets_out"], c.get("holder"), c.get("rid")),)
        op = c["operator"]
        bkey = (op, c["bucket_ms"])
        if bkey in self._inherited:  # emitted by this partition's previous owner: a re-read
            self.reread += len(items)
            return False
        if bkey in self._closed:
            self.late += len(items)
            self.late_by_operator[op] = self.late_by_operator.get(op, 0) + len(items)
            return False
        wm = self.watermark.get(op)
        if wm is None or c["bucket_ms"] > wm:
            self.watermark[op] = c["bucket_ms"]
        bucket = self._open.get(bkey)
        if bucket is None:
            bucket = self._open[bkey] = _Bucket(c["bucket_len_ms"], now_ms)
        bucket.last_ms = max(bucket.last_ms, now_ms)
        if offset is not None and (bucket.first_offset is None or offset < bucket.first_offset):
            bucket.first_offset = offset
        ckey = (c["kind"], c["epoch"], c["prefix"])
        cell = bucket.cells.get(ckey)
        if cell is None:
            cell = bucket.cells[ckey] = _Cell()
        counted = 0
        for action, octets_in, octets_out, holder, rid in items:
            if rid is not None:
                if rid in cell.rids:
                    self.duplicates += 1
                    continue
                cell.rids.add(rid)
            cell.records += 1
            if action == "start":
                cell.sessions += 1
            elif action == "stop":
                cell.octets_in += octets_in
                cell.octets_out += octets_out
            if holder is not None:
                cell.holders.add(holder)
            counted += 1
        return counted > 0

    def hold_offset(self) -> Optional[int]:
        """The smallest source offset counted into a still-open bucket (None: nothing open
        came from an offset): committing no further lets a new owner rebuild them whole."""
        offs = [b.first_offset for b in self._open.values() if b.first_offset is not None]
        return min(offs) if offs else None

    def closed_keys(self, limit: int = 64) -> list[tuple[str, int]]:
        """The most recently emitted buckets (for a new owner: ``mark_closed``)."""
        return list(self._closed)[-limit:]

    def mark_closed(self, keys: Iterable[tuple[str, int]]) -> None:
        """Buckets another owner already emitted: their contributions count as late here."""
        for op, bucket_ms in keys:
            self._closed[(op, bucket_ms)] = None
            self._inherited.add((op, bucket_ms))
            self._open.pop((op, bucket_ms), None)

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


def aggregate_id(operator: object, kind: object, bucket_ms: object, epoch: object, prefix: object) -> str:
    """Deterministic cell id (SHA-256 of the cell coordinates, which are public in the record
    anyway), so a consumer can drop a duplicate emission.  The coordinates are taken as they
    are: a binding that is not plain (an old JSON binding's float time, no operator) reaches
    here through ``encode_contribution``, and its id is the text of what it holds."""
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

