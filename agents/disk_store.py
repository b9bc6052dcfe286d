"""The mapping table on disk: RocksDB through ``rocksdict`` (the table's disk mode,
``agents.mapping_table``, ``Settings.table_store = "disk"``; ``docs/state-on-disk.md``).

Layout (one RocksDB per worker, in a directory kept mode 0700):

- ``d<p>``: table partition p's data, table key → sealed value (``agents.vault``);
- ``s<p>``: partition p's expiry schedule, ``stream.disk_bound.schedule_key(bucket, key)`` → b"":
  RocksDB's byte order is time order, so ``due(now)`` reads only the due buckets and a restart
  needs no rebuild pass;
- ``m<p>``: the compliance walk's summary of each key (``agents.disk_walk``): a digest of the
  value it summarises + the packed summary; deleted with the key (``Batch.delete``);
- ``meta``: ``b"o" + p`` → the next changelog offset to read for p (the checkpoint), ``b"t" + p``
  → when it was written (ms; a store whose checkpoint is older than the changelog keeps its
  tombstones must not continue from it).

Every change goes through one ``WriteBatch`` (``write``): data, schedule entries and the
checkpoint of a batch land together or not at all, so a store reopened after a crash is at a
consistent prefix and reads the changelog only from its checkpoint.

Erasure on disk (``stream.disk_bound``): ``erase_tick(now)`` flushes every memtable (the WAL
files written before it become obsolete and are deleted: recycling and archiving are off) and
force-compacts each partition whose last forced compaction started ``cycle_ms`` ago, which
drops deleted keys' values from the SST files, then reopens the DB (a fresh MANIFEST: the old
one names the first and last key of every SST file ever made); ``drop_partition`` drops a
revoked partition's column families whole.  The bound and its proof: ``docs/state-on-disk.md``.  Compression is off: the values are AES-GCM ciphertext (nothing to
gain), and the erasure test can then find a value's bytes in any file it is still in.

An iterator pins the SST files it reads, so every read here finishes before it returns
(``keys`` builds a list): an open iterator would keep deleted values' files alive past the bound.

``DiskStore`` is the one public class; it hands its iterator walks to ``Walks`` and its erasure
to ``Erasure`` (each holds only the store, never a handle: ``reopen`` replaces them all).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import stat
import struct
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional

import rocksdict as rd

from stream import disk_bound as db
from stream.errors import ConfigError
from stream.schedule import SCHEDULE_BUCKET_MS

_OFFSET = struct.Struct(">Q")
_META = "meta"


def _cf_data(p: int) -> str:
    return f"d{p}"


def _cf_sched(p: int) -> str:
    return f"s{p}"


def _cf_sum(p: int) -> str:
    return f"m{p}"


def _part_cfs(p: int) -> tuple[str, str, str]:
    return _cf_data(p), _cf_sched(p), _cf_sum(p)


def _meta_key(p: int) -> bytes:
    return b"o" + p.to_bytes(4, "big")


def _meta_time_key(p: int) -> bytes:
    return b"t" + p.to_bytes(4, "big")


def _meta_compacted_key(p: int) -> bytes:
    return b"c" + p.to_bytes(4, "big")


#: an L0 file count no store reaches (``_options``)
L0_NO_STALL = 1 << 30


def _options(*, write_buffer_bytes: int, total_wal_bytes: int, cache_bytes: int, bulk: bool = False) -> rd.Options:
    o = rd.Options(raw_mode=True)
    if bulk:  # a bulk load (``DiskStore.bulk_load``): see there
        o.set_allow_concurrent_memtable_write(False)  # the vector memtable needs it off
        o.set_memtable_factory(rd.MemtableFactory.vector())
        o.set_disable_auto_compactions(True)  # one compaction after the load, not levels during it
    # a bulk load leaves its flushes in L0, which the compaction after it merges into the last
    # level in one job; RocksDB's L0-count stall (20/36 files) would stop every write meanwhile
    # (minutes at 50M), so it is off: the pending-compaction-bytes limits stay as the backstop
    o.set_level_zero_slowdown_writes_trigger(L0_NO_STALL)
    o.set_level_zero_stop_writes_trigger(L0_NO_STALL)
    o.create_if_missing(True)
    o.create_missing_column_families(True)
    o.set_compression_type(rd.DBCompressionType.none())
    # the WAL: never reused (a recycled file keeps old records until overwritten), never archived
    o.set_recycle_log_file_num(0)
    o.set_wal_ttl_seconds(0)
    o.set_wal_size_limit_mb(0)
    o.set_max_total_wal_size(total_wal_bytes)  # forces flushes of CFs holding old WALs back
    o.set_write_buffer_size(write_buffer_bytes)
    o.set_db_write_buffer_size(4 * write_buffer_bytes)  # all CFs' memtables together
    o.set_keep_log_file_num(2)  # the info LOG (no keys, no values): keep it small
    o.set_max_background_jobs(2)
    bbo = rd.BlockBasedOptions()
    bbo.set_block_cache(rd.Cache(cache_bytes))
    bbo.set_bloom_filter(10, False)
    # index and filter blocks live in the block cache (bounded), not beside it in the table
    # readers, where they grew with the store (docs/benchmarks.md); partitioned, so a get
    # loads one small index/filter partition instead of a whole file's index (which a cache
    # smaller than all the indexes would reload for every get); only each file's top level
    # stays pinned.  Not L0's blocks: after a bulk load the whole store is in L0 until the
    # merge ends, and pinned there they grew with the store outside the cap
    bbo.set_cache_index_and_filter_blocks(True)
    bbo.set_pin_l0_filter_and_index_blocks_in_cache(False)
    bbo.set_index_type(rd.BlockBasedIndexType.two_level_index_search())
    bbo.set_partition_filters(True)
    bbo.set_pin_top_level_index_and_filter(True)
    o.set_block_based_table_factory(bbo)
    return o


def _load_malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_MALLOC_TRIM = _load_malloc_trim()


#: glibc's ``mallopt`` parameter for the number of malloc arenas (``M_ARENA_MAX``)
_M_ARENA_MAX = -8
#: the arenas a worker with the disk store keeps (``limit_malloc_arenas``)
MALLOC_ARENAS = 2


def _load_mallopt():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None).mallopt
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOPT = _load_mallopt()


def limit_malloc_arenas(n: int = MALLOC_ARENAS) -> bool:
    """Let glibc's malloc keep at most ``n`` arenas in this process (``mallopt(M_ARENA_MAX)``;
    left alone if the operator set ``MALLOC_ARENA_MAX``).  By default every thread that
    allocates while another holds the lock gets an arena of its own, up to 8 per core: RocksDB's
    flush and compaction threads and the erasure tick's thread fill and free their own arenas,
    and what a compaction leaves behind — blocks it put in the block cache, beside pages it
    freed — stays spread over them, pages ``release_freed_memory`` cannot hand back.  That part
    grew with the store (docs/benchmarks.md "RSS from 1M to 50M").  Two arenas: the main thread's
    and one all the others share.  False where there is no such call."""
    if _MALLOPT is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(_MALLOPT(_M_ARENA_MAX, int(n)))


def release_freed_memory() -> bool:
    """Give the free pages of every malloc arena back to the kernel (glibc ``malloc_trim(0)``).
    A flushed memtable (and a compaction's buffers) is freed to malloc, which keeps the pages:
    after a fresh restore that was most of the worker's RSS above a restarted one
    (docs/benchmarks.md "Fresh restore: the freed memtables").  False where there is no such
    call."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` mode 0700, or check an existing one is not group/other-accessible."""
    path = Path(path)
    if path.exists():
        st = path.stat()
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{path}: state directory is not a directory")
        if st.st_mode & 0o077:
            raise ConfigError(f"{path}: state directory is accessible to group/others (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}); run `chmod 700 {path}`")
        return path
    path.mkdir(parents=True, mode=0o700)
    os.chmod(path, 0o700)  # mkdir's mode is masked by the umask, which may not be ours
    return path


def private_umask() -> int:
    """Keep group and other bits off every file this process creates from now on (umask |= 077),
    and return the umask it had.  RocksDB creates its SST, WAL, MANIFEST and LOG files on its own
    threads at any time with the process umask (0644 under the common 022), so a umask set around
    ``open`` would not cover them; the 0700 directory alone is one permission away from exposure."""
    old = os.umask(0o077)
    os.umask(old | 0o077)
    return old


class Batch:
    """The changes of one ``DiskStore.write``, built straight into a RocksDB ``WriteBatch``
    (one call into rocksdict per change): applied atomically, in order, or not at all."""

    __slots__ = ("_store", "_wb", "_data", "_sched", "_sums", "_meta")

    def __init__(self, store: "DiskStore") -> None:
        self._store = store
        self._wb = rd.WriteBatch(raw_mode=True)
        self._data = store._data_h
        self._sched = store._sched_h
        self._sums = store._sum_h
        self._meta = store._h[_META]

    def _d(self, p: int) -> rd.ColumnFamily:
        h = self._data.get(p)
        if h is None:
            self._store.ensure_partition(p)  # an empty CF if the batch is dropped: harmless
            h = self._data[p]
        return h

    def _s(self, p: int) -> rd.ColumnFamily:
        h = self._sched.get(p)
        if h is None:
            self._store.ensure_partition(p)
            h = self._sched[p]
        return h

    def put(self, p: int, key: bytes, value: bytes) -> "Batch":
        self._wb.put(key, value, self._d(p))
        return self

    def put_many(self, p: int, items: Iterable[tuple[bytes, bytes]]) -> "Batch":
        put, h = self._wb.put, self._d(p)
        for k, v in items:
            put(k, v, h)
        return self

    def delete(self, p: int, key: bytes) -> "Batch":
        """Delete ``key`` and the walk's summary of it (derived data goes with the data)."""
        self._wb.delete(key, self._d(p))
        self._wb.delete(key, self._sums[p])
        return self

    def schedule(self, p: int, when_ms: Optional[int], key: bytes) -> "Batch":
        """Look at ``key`` again at ``when_ms`` (None: never; 0: at the next ``due``)."""
        if when_ms is not None:
            self._wb.put(db.schedule_key(db.bucket_of(when_ms, self._store.width_ms), key), b"", self._s(p))
        return self

    def apply_many(self, p: int, items: Iterable[tuple[bytes, Optional[bytes], Optional[bytes]]]) -> "Batch":
        """In order, for a restore: ``(key, value, schedule key)`` is ``put`` plus a ready-made
        schedule entry (``stream.disk_bound.schedule_key``; None: none); ``(key, None, _)`` is
        ``delete``.  The same changes as those calls, without a Python call per change."""
        wb = self._wb
        put, dele, d, s, m = wb.put, wb.delete, self._d(p), self._s(p), self._sums[p]
        for k, v, sk in items:
            if v is None:
                dele(k, d)
                dele(k, m)
            else:
                put(k, v, d)
                if sk is not None:
                    put(sk, b"", s)
        return self

    def unschedule(self, p: int, bucket: int, key: bytes) -> "Batch":
        """Remove a schedule entry ``due`` handed out (write it with the sweeper's result)."""
        self._wb.delete(db.schedule_key(bucket, key), self._s(p))
        return self

    def checkpoint(self, p: int, next_offset: int, at_ms: Optional[int] = None) -> "Batch":
        """The next changelog offset of partition ``p`` to read once this batch is applied
        (``at_ms``: when; ``DiskStore.checkpoint_at``)."""
        self._d(p)
        self._wb.put(_meta_key(p), _OFFSET.pack(next_offset), self._meta)
        if at_ms is not None:
            self._wb.put(_meta_time_key(p), _OFFSET.pack(max(0, int(at_ms))), self._meta)
        return self

    def __len__(self) -> int:
        return self._wb.len()


class Walks:
    """The store's reads that walk a column family with an iterator (``DiskStore.iter_keys``,
    ``iter_items``, ``items_after``, ``due``): each iterator and column family handle is let go
    before the walk returns or yields (module docstring).  Goes through the store for every
    handle: ``DiskStore.reopen`` replaces them all."""

    __slots__ = ("_st",)

    def __init__(self, store: "DiskStore") -> None:
        self._st = store

    def chunk(self, p: int, after: Optional[bytes], n: int, items: bool, prefix: bytes = b"") -> list:
        """Up to ``n`` keys (or items) of partition ``p`` after ``after`` (else from the first
        key at or past ``prefix``) that start with ``prefix``; the iterator and the column family
        handle are let go before this returns."""
        cf = self._st._cf.get(_cf_data(p))
        if cf is None:
            return []
        start = after if after is not None else (prefix or None)
        if items:
            it = cf.items(from_key=start) if start is not None else cf.items()
        else:
            it = cf.keys(from_key=start) if start is not None else cf.keys()
        out = []
        for x in it:
            k = x[0] if items else x
            if after is not None and k == after:
                continue
            if not k.startswith(prefix):
                break  # keys are in order: past the prefix's range
            out.append(x)
            if len(out) >= n:
                break
        del it, cf
        return out

    def iter_keys(self, p: int, chunk: int = 10_000, prefix: bytes = b"") -> Iterator[bytes]:
        """Partition ``p``'s keys (those starting with ``prefix``) in key order, ``chunk`` at a
        time, without holding them all: each chunk's iterator (and column family handle) is let
        go before its keys are yielded (an iterator left open by a paused generator would pin SST
        files past the erasure bound, and a handle would keep the DB open through ``reopen``)."""
        after: Optional[bytes] = None
        while True:
            keys = self.chunk(p, after, chunk, False, prefix)
            if not keys:
                return
            yield from keys
            if len(keys) < chunk:
                return
            after = keys[-1]

    def iter_items(self, p: int, chunk: int = 10_000) -> Iterator[tuple[bytes, bytes]]:
        """``iter_keys`` with the values."""
        after: Optional[bytes] = None
        while True:
            items = self.chunk(p, after, chunk, True)
            if not items:
                return
            yield from items
            if len(items) < chunk:
                return
            after = items[-1][0]

    def due(self, now_ms: int, limit: Optional[int] = None) -> list[tuple[int, int, bytes]]:
        """``(partition, bucket, key)`` of every schedule entry due at ``now_ms`` (bucket order per
        partition), reading only the due buckets.  Entries stay until ``Batch.unschedule``
        removes them, so a crash between ``due`` and the sweeper's write loses no expiry."""
        upper = db.due_upper_bound(now_ms, self._st.width_ms)
        if upper is None:
            return []
        out: list[tuple[int, int, bytes]] = []
        for p in sorted(self._st._held):
            ro = rd.ReadOptions()
            ro.set_iterate_upper_bound(upper)
            it = self._st._cf[_cf_sched(p)].keys(read_opt=ro)
            for sk in it:
                b, k = db.split_schedule_key(sk)
                out.append((p, b, k))
                if limit is not None and len(out) >= limit:
                    break
            del it
            if limit is not None and len(out) >= limit:
                break
        return out


class Erasure:
    """The store's erasure on disk (module docstring, ``stream.disk_bound``): the flush, the
    forced compactions and the tick that runs them.  State stays on the store
    (``DiskStore.last_compacted``, ``last_tick``), and the tick calls the store's ``flush``,
    ``compact_partition`` and ``reopen`` (the erasure test plants its defects there)."""

    __slots__ = ("_st",)

    def __init__(self, store: "DiskStore") -> None:
        self._st = store

    def load_last_compacted(self) -> None:
        """``DiskStore.last_compacted`` from ``meta``: kept there once a forced compaction ended,
        so a restarted worker does not rewrite its whole store at its first tick (a partition
        with none is compacted at the first tick)."""
        st = self._st
        try:
            for p in st._held:
                raw = st._cf[_META].get(_meta_compacted_key(p))
                if raw is not None:
                    st.last_compacted[p] = _OFFSET.unpack(raw)[0]
        except Exception:  # a damaged meta block: compact at the first tick (the table wipes it)
            st.last_compacted.clear()

    def flush(self) -> None:
        """Flush every column family's memtable (the WAL files before it become obsolete), then
        give the freed memtables' pages back to the kernel (``release_freed_memory``)."""
        st = self._st
        for name, cf in list(st._cf.items()):
            try:
                cf.flush(True)
            except Exception:
                if name in st._cf:  # not a partition dropped meanwhile (tick in a thread)
                    raise
        release_freed_memory()

    def compact(self, p: int) -> None:
        """Force-compact partition ``p``'s column families and ``meta`` (the bottommost level too:
        deleted keys' values are dropped from the SST files)."""
        st = self._st
        co = rd.CompactOptions()
        co.set_bottommost_level_compaction(rd.BottommostLevelCompaction.force())
        co.set_exclusive_manual_compaction(False)
        for name in _part_cfs(p):
            cf = st._cf.get(name)
            if cf is not None:  # None: dropped meanwhile (the worker runs the tick in a thread)
                cf.compact_range(None, None, co)
            del cf
        st._cf[_META].compact_range(None, None, co)

    def tick(self, now_ms: int, *, roll_manifest: bool = True) -> dict:
        """One erasure tick (``stream.disk_bound``): flush, force-compact the due partitions and,
        if any was compacted, ``reopen`` (so the MANIFEST names no key the compactions removed).
        Blocking (seconds at millions of keys): the worker (``MappingTable.erase_tick``) runs it
        in a thread with ``roll_manifest=False`` — reads and writes go on meanwhile — and calls
        ``reopen`` itself in the event loop, where no ``Batch`` or iterator is ever left open.
        Returns what it did."""
        st = self._st
        t0 = time.monotonic()
        st.flush()
        held = set(st._held)  # a snapshot: the event loop may add or drop partitions meanwhile
        due = db.partitions_due(st.last_compacted, held, now_ms, st.bound.cycle_ms)
        for p in due:
            st.last_compacted[p] = now_ms
            st.compact_partition(p)
            if p in st._held:  # its start, once the compaction ended (a crash before: due again)
                st._cf[_META][_meta_compacted_key(p)] = _OFFSET.pack(max(0, int(now_ms)))
        if due and roll_manifest:
            st.reopen()
        if due:
            release_freed_memory()  # the compactions' buffers
        ms = (time.monotonic() - t0) * 1000
        st.last_tick = {"at_ms": now_ms, "compacted": due, "duration_ms": round(ms, 1),
                        "overran": st.bound.tick_overran(ms)}
        return st.last_tick


#: the block cache's cap.  The cache is the part of RocksDB's memory that follows the store's
#: size up to its cap, and its blocks, put there by the compaction threads among pages they
#: freed, keep more RSS than their own size (docs/benchmarks.md "RSS from 1M to 50M").  A cap
#: that is full at every size no longer adds to the RSS as the store grows.  What a get costs is
#: not the cache (the index and filter partitions of a large store never fitted a larger cap
#: either): it reads the missing partitions from the OS page cache (figures in
#: docs/benchmarks.md).
BLOCK_CACHE_BYTES = 8 * 2**20


def _cannot_open(path: Path, e: Exception) -> ConfigError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ConfigError(f"{path}: the mapping table's store cannot be opened ({first}); stop every process using "
                       f"it, or move the directory away (and delete it) so the worker restores the table from the "
                       f"changelog")


class DiskStore:
    """The mapping table's RocksDB (see the module docstring)."""

    def __init__(self, path: Path, *, bound: db.DiskBound, width_ms: int = SCHEDULE_BUCKET_MS,
                 write_buffer_bytes: int = 16 * 2**20, total_wal_bytes: int = 64 * 2**20,
                 cache_bytes: int = BLOCK_CACHE_BYTES) -> None:
        self.path = ensure_private_dir(Path(path))
        private_umask()
        limit_malloc_arenas()  # before RocksDB starts its threads (see there)
        self.bound = bound
        self.width_ms = width_ms
        self._sizes = {"write_buffer_bytes": write_buffer_bytes, "total_wal_bytes": total_wal_bytes,
                       "cache_bytes": cache_bytes}
        #: opened for a bulk load (``bulk_load``)
        self.bulk = False
        self._opts = _options(**self._sizes)
        try:
            self._open()
        except Exception as e:  # corruption, a missing MANIFEST, a lock held: one clear line
            raise _cannot_open(self.path, e) from None
        #: partition → when its last forced compaction started (``Erasure``)
        self.last_compacted: dict[int, int] = {}
        self.last_tick: dict = {}  # what the last ``erase_tick`` did
        self._wo = rd.WriteOptions()
        self._walks = Walks(self)
        self._erasure = Erasure(self)
        self._erasure.load_last_compacted()

    def _open(self) -> None:
        existing = rd.Rdict.list_cf(str(self.path), self._opts) if (self.path / "CURRENT").exists() else []
        cfs = {name: self._opts for name in existing if name != "default"}
        cfs.setdefault(_META, self._opts)
        self._db = rd.Rdict(str(self.path), self._opts, column_families=cfs)
        self._cf: dict[str, rd.Rdict] = {}
        self._h: dict[str, rd.ColumnFamily] = {}
        self._data_h: dict[int, rd.ColumnFamily] = {}  # partition → its CFs' handles (Batch)
        self._sched_h: dict[int, rd.ColumnFamily] = {}
        self._sum_h: dict[int, rd.ColumnFamily] = {}
        for name in cfs:
            self._open_cf(name)
        self._held = set()
        for p in sorted(int(n[1:]) for n in cfs if n[:1] == "d" and n[1:].isdigit()):
            self.ensure_partition(p)

    def reopen(self) -> None:
        """Close and open the DB again: RocksDB writes a fresh MANIFEST and deletes the old one,
        which still names the first and last key of every SST file ever made (deleted keys
        among them).  Every ``Batch`` must be written first: a pending one holds CF handles,
        which keep the old DB open (RocksDB then refuses the new open: its LOCK is held)."""
        self.close()
        self._open()

    def bulk_load(self, on: bool) -> None:
        """Open the store again for a bulk load (``on``: a fresh restore, ``agents.table_restore``)
        or for normal use.  A bulk load's memtables are vectors: a write appends, and the sort
        happens when the memtable is flushed, on RocksDB's flush thread, instead of a skip-list
        insert on the thread that holds the GIL (docs/benchmarks.md "Fresh restore: vector
        memtables").  A get or an iterator on a vector memtable scans or sorts it, so the store
        must leave this mode before it serves reads.  Flushes, then ``reopen`` (same rules)."""
        if on == self.bulk:
            return
        self.flush()
        self.bulk = on
        self._opts = _options(**self._sizes, bulk=on)
        self.reopen()

    def wipe(self) -> None:
        """Delete the whole store and open it empty (a damaged store: its contents come back
        from the changelog; deleting them is also what erasure wants)."""
        try:
            self.close()
        except Exception:  # a damaged DB may not close cleanly: its files go anyway
            pass
        shutil.rmtree(self.path, ignore_errors=True)
        ensure_private_dir(self.path)
        self.last_compacted.clear()
        self._open()

    def _open_cf(self, name: str) -> None:
        self._cf[name] = self._db.get_column_family(name)
        self._h[name] = self._db.get_column_family_handle(name)

    # -- partitions ---------------------------------------------------------------------------

    def partitions(self) -> set[int]:
        return set(self._held)

    def ensure_partition(self, p: int) -> None:
        if p in self._held:
            return
        for name in _part_cfs(p):
            if name not in self._cf:
                self._db.create_column_family(name, self._opts)
                self._open_cf(name)
        d, sc, m = _part_cfs(p)
        self._data_h[p], self._sched_h[p], self._sum_h[p] = self._h[d], self._h[sc], self._h[m]
        self._held.add(p)

    def drop_partition(self, p: int) -> None:
        """Forget partition ``p`` (revoked): its column families are dropped whole and their
        files unlinked once no handle is left; the checkpoint goes with them."""
        if p not in self._held:
            return
        self._held.discard(p)
        self.last_compacted.pop(p, None)
        self._cf[_META].delete(_meta_key(p))
        self._cf[_META].delete(_meta_time_key(p))
        self._cf[_META].delete(_meta_compacted_key(p))
        self._data_h.pop(p, None)
        self._sched_h.pop(p, None)
        self._sum_h.pop(p, None)
        for name in _part_cfs(p):
            self._cf.pop(name, None)
            self._h.pop(name, None)  # the handles keep the CF's files alive
            self._db.drop_column_family(name)

    # -- writes -------------------------------------------------------------------------------

    def batch(self) -> Batch:
        return Batch(self)

    def write(self, batch: Batch) -> None:
        """Apply ``batch`` atomically (one RocksDB ``WriteBatch``); the batch is spent."""
        wb = batch._wb
        if wb is None:
            raise ValueError("this batch was written already")
        # a spent batch lets go of the CF handles: a handle left alive keeps the DB (and a
        # dropped CF's files) open after close / drop
        batch._wb = batch._data = batch._sched = batch._sums = batch._meta = None
        self._db.write(wb, self._wo)

    def put_batch(self, p: int, items: Iterable[tuple[bytes, bytes]], *, next_offset: Optional[int] = None) -> None:
        b = Batch(self).put_many(p, items)
        if next_offset is not None:
            b.checkpoint(p, next_offset)
        self.write(b)

    def delete(self, p: int, keys: Iterable[bytes], *, next_offset: Optional[int] = None) -> None:
        b = Batch(self)
        for k in keys:
            b.delete(p, k)
        if next_offset is not None:
            b.checkpoint(p, next_offset)
        self.write(b)

    def schedule(self, p: int, when_ms: Optional[int], key: bytes) -> None:
        self.write(Batch(self).schedule(p, when_ms, key))

    # -- reads --------------------------------------------------------------------------------

    def get(self, p: int, key: bytes) -> Optional[bytes]:
        cf = self._cf.get(_cf_data(p))
        return None if cf is None else cf.get(key)

    def get_many(self, p: int, keys: list[bytes]) -> list[Optional[bytes]]:
        cf = self._cf.get(_cf_data(p))
        return [None] * len(keys) if cf is None else cf.get(keys)

    def keys(self, p: int) -> list[bytes]:
        """Partition ``p``'s keys (a list: the iterator is closed before this returns)."""
        cf = self._cf.get(_cf_data(p))
        return [] if cf is None else list(cf.keys())

    def iter_keys(self, p: int, chunk: int = 10_000, prefix: bytes = b"") -> Iterator[bytes]:
        """Partition ``p``'s keys (those starting with ``prefix``) in key order (``Walks.iter_keys``)."""
        return self._walks.iter_keys(p, chunk, prefix)

    def iter_items(self, p: int, chunk: int = 10_000) -> Iterator[tuple[bytes, bytes]]:
        """``iter_keys`` with the values."""
        return self._walks.iter_items(p, chunk)

    def items_after(self, p: int, after: Optional[bytes], n: int) -> list[tuple[bytes, bytes]]:
        """Up to ``n`` items of ``p`` after key ``after`` (None: from the first), as a list."""
        return self._walks.chunk(p, after, n, True)

    def get_summaries(self, p: int, keys: list[bytes]) -> list[Optional[bytes]]:
        """The compliance walk's stored summaries of ``keys`` (None: none)."""
        cf = self._cf.get(_cf_sum(p))
        return [None] * len(keys) if cf is None else cf.get(keys)

    def put_summaries(self, p: int, items: list[tuple[bytes, bytes]]) -> None:
        """Store the walk's summaries of ``p``'s keys (nothing if ``p`` is no longer held: a
        dropped partition is never re-created by a walk)."""
        h = self._sum_h.get(p)
        if h is None or not items:
            return
        wb = rd.WriteBatch(raw_mode=True)
        for k, v in items:
            wb.put(k, v, h)
        del h
        self._db.write(wb, self._wo)

    def count_estimate(self, p: int) -> int:
        cf = self._cf.get(_cf_data(p))
        return 0 if cf is None else (cf.property_int_value("rocksdb.estimate-num-keys") or 0)

    def checkpoint(self, p: int) -> Optional[int]:
        """The next changelog offset of ``p`` to read (None: none recorded, read from the start)."""
        raw = self._cf[_META].get(_meta_key(p))
        return None if raw is None else _OFFSET.unpack(raw)[0]

    def get_meta(self, name: bytes) -> Optional[bytes]:
        """A store-wide value of ``meta`` (``b"x"`` + name; the changelog's topic id)."""
        return self._cf[_META].get(b"x" + name)

    def put_meta(self, name: bytes, value: bytes) -> None:
        self._cf[_META][b"x" + name] = value

    def checkpoint_at(self, p: int) -> Optional[int]:
        """When ``p``'s checkpoint was written (ms; None: not recorded)."""
        raw = self._cf[_META].get(_meta_time_key(p))
        return None if raw is None else _OFFSET.unpack(raw)[0]

    def due(self, now_ms: int, limit: Optional[int] = None) -> list[tuple[int, int, bytes]]:
        """``(partition, bucket, key)`` of every schedule entry due at ``now_ms`` (``Walks.due``)."""
        return self._walks.due(now_ms, limit)

    # -- erasure (``Erasure``; the erasure test plants its defects in these three) ------------------------------------------------------------------------------

    def flush(self) -> None:
        """Flush every column family's memtable, then give the freed pages back (``Erasure.flush``)."""
        self._erasure.flush()

    def compact_partition(self, p: int) -> None:
        """Force-compact partition ``p``'s column families and ``meta`` (``Erasure.compact``)."""
        self._erasure.compact(p)

    def erase_tick(self, now_ms: int, *, roll_manifest: bool = True) -> dict:
        """One erasure tick (``Erasure.tick``): flush, force-compact the due partitions, reopen."""
        return self._erasure.tick(now_ms, roll_manifest=roll_manifest)

    # -- housekeeping -------------------------------------------------------------------------

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def close(self) -> None:
        self._cf.clear()
        self._h.clear()
        self._data_h.clear()
        self._sched_h.clear()
        self._sum_h.clear()
        self._db.close()

    def __enter__(self) -> "DiskStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
