"""The compliance walk over the on-disk mapping table: ``Metrics.walk`` for a table
whose values live in ``agents.disk_store`` (``MappingTable.disk``).

The memory walk keeps each key's summary in two dicts: at tens of millions of keys that alone
would be gigabytes (docs/state-on-disk.md).  Here the table is read a chunk at a time (``DiskStore.items_after``, no
iterator kept across event-loop turns) and each key's packed summary is kept *in the store*, in
the partition's ``m<p>`` column family, as an 8-byte digest of the value it summarises + the
packed summary: a summary whose digest matches the current value is reused, any other value is
opened (at most ``open_budget`` per walk, the rest reported pending, as in memory).  The
summary goes with its key (``Batch.delete`` deletes both, a revoked partition's family is
dropped, the erasure tick compacts it), so it lingers no longer than the value it came from.

What it reads of the table (its reader port, ``agents.mapping_table``): ``disk``, ``active``,
``epoch`` (a rebalance abandons the walk), ``pending_writes()`` (writes not in the store yet)
and ``store_failed(e)``.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Iterator, Optional, Union

from agents.compliance_walk import fold_held
from stream import intervals as iv
from stream.compliance_fold import Fold, pack_summary, summarize

#: items read per chunk (one multi-get of their summaries; a slice ends between chunks)
CHUNK = 256

_INT = struct.Struct(">q")


def digest(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=8).digest()


def encode(packed: Union[int, bytes]) -> bytes:
    return b"i" + _INT.pack(packed) if type(packed) is int else b"b" + packed


def decode(blob: bytes) -> Union[int, bytes]:
    return _INT.unpack(blob[1:9])[0] if blob[:1] == b"i" else blob[1:]


def walk(m: Any, now_ms: Optional[int] = None, slice_s: Optional[float] = None) -> Iterator[None]:
    """``Metrics.walk`` over the disk store (same results, same slicing, same attributes set)."""
    mono = m.mono
    t_start = mono()
    now = m.clock() if now_ms is None else now_ms
    table = m.table
    st = table.disk
    epoch = table.epoch
    vaults = m.vaults
    ops = m.operators
    stale = {n: o.stale_after_ms for n, o in ops.items()}
    names = sorted(ops)
    index = {n: i for i, n in enumerate(names)}
    fold = Fold(now, {n: o.ttl_ms for n, o in ops.items()}, names)
    kept = errors = pending = 0
    budget = m.open_budget
    held_keys = m._held_keys(now)
    busy = 0.0
    s0 = mono()

    def open_summary(key: bytes, raw: bytes) -> Union[int, bytes]:
        operator = iv.operator_of(key)
        ivs = vaults[operator].open(key, raw)[1] if vaults else iv.decode(raw)
        return pack_summary(index[operator], summarize(ivs, stale[operator]))

    for p in sorted(table.active):
        after: Optional[bytes] = None
        while True:
            if p not in table.active or p not in st.partitions():
                break
            try:
                items = st.items_after(p, after, CHUNK)
                if not items:
                    break
                after = items[-1][0]
                sums = st.get_summaries(p, [k for k, _ in items])
            except Exception as e:  # a damaged block: the table deletes the store and exits
                table.store_failed(e)
                raise
            pend = table.pending_writes()
            new = []
            for (key, raw), blob in zip(items, sums):
                w = pend.get(key)
                if w is not None:  # a newer write, not acknowledged yet: what a lookup sees
                    raw = w[2]
                    if raw is None:
                        continue
                if key in held_keys:
                    if fold_held(fold, key, raw, vaults, stale, held_keys[key]):
                        kept += 1
                    else:
                        errors += 1
                    continue
                dg = digest(raw)
                if blob is not None and blob[:8] == dg:
                    fold.add_packed(decode(blob[8:]))
                    kept += 1
                    continue
                if budget <= 0:
                    pending += 1
                    continue
                budget -= 1
                try:
                    packed = open_summary(key, raw)
                except Exception:  # noqa: BLE001
                    errors += 1
                    continue
                new.append((key, dg + encode(packed)))
                fold.add_packed(packed)
                kept += 1
            st.put_summaries(p, new)  # no await since the items were read: they are current
            if len(items) < CHUNK:
                break
            if slice_s is not None and mono() - s0 >= slice_s:
                busy += mono() - s0
                yield
                if table.epoch != epoch:
                    return
                s0 = mono()
    # keys written but not acknowledged yet, not in the store at all
    for key, (_, p, raw) in list(table.pending_writes().items()):
        if raw is None or p not in table.active:
            continue
        try:
            if st.get(p, key) is not None:
                continue
        except Exception as e:  # a damaged block: the table deletes the store and exits
            table.store_failed(e)
            raise
        if budget <= 0:
            pending += 1
            continue
        budget -= 1
        try:
            fold.add_packed(open_summary(key, raw))
            kept += 1
        except Exception:  # noqa: BLE001
            errors += 1
    m.scan_seconds = busy + mono() - s0
    m.scan_errors = errors
    m.scan_pending = pending
    m.walks += 1
    m._scan = (t_start, now, fold.result())
