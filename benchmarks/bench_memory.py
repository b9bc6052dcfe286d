"""Where a worker's memory goes per live mapping: the structures the mapping table keeps, built
the way the worker builds them, measured one at a time by the process's RSS growth.

No broker: the table's structures are built in this process from ``n`` mappings (mixed 60/30/10
like ``bench_state.py``, keys and sealed values exactly as the worker writes them):

1. ``key_value_bytes``: the key and value ``bytes`` objects (what the changelog restore creates);
2. ``store_dict``: the store's own dict (key → value; Faust's ``MemoryStore.data``);
3. ``partition_map``: the key → partition dict the table keeps (``MappingTable.key_partition()``);
4. ``schedule``: the sweeper's schedule, the real ``stream.schedule.ExpirySchedule`` filled
   with every key at its next expiry, as ``MappingTable.schedule`` does (time buckets of
   ``SCHEDULE_BUCKET_MS`` grouped in spans of an hour: ~10 bytes per key).  Counted with
   ``tracemalloc`` (its live allocations), not by RSS growth: ~10 MB at 1M keys fit into memory
   the build loop freed, so the RSS hardly grows (``schedule_rss_growth`` says by how much).
   This data set's expiries fall on three instants a day or more ahead; a worker's, spread over
   24 h to 181 d with some in the current hour, cost 10.6-11.8 bytes per key the same way;
5. ``walk_summaries``: the compliance walk's per-key summary cache (``agents.metrics.Metrics``)
   once every value has been opened (after ``n / OPEN_BUDGET`` walks in a worker).

Each figure is bytes per mapping (RSS growth ÷ n, except ``schedule``); ``total`` is their
sum, the part of a worker's RSS that grows with the table (the rest, ~80 MB, is the
interpreter, Faust and aiokafka).  Prints exactly one JSON line per run with one entry per size.

``--store disk``: the same mappings in the on-disk store (``agents.disk_store``),
whose memory should not grow with the table.  One process writes them (per batch of 20 000,
each value with its schedule entry at its next expiry and the checkpoints, then one erasure
tick); a second process — the restarted worker — opens the store and measures its RSS: after
the open (``rss_open_mb``), after the sweeper's first ``due`` (``rss_due_mb``), and after a
compliance walk that reads every key a partition at a time (``iter_keys``) and opens every
value (``rss_walk_mb``; ``walk_s``).  Beside each RSS, RocksDB's own accounts summed over the
column families: memtables (``rocksdb.cur-size-all-mem-tables``), table readers' index and
filter blocks outside the block cache (``rocksdb.estimate-table-readers-mem``), and the block
cache (``rocksdb.block-cache-usage``, capped by the store at 8 MB: ``disk_store.BLOCK_CACHE_BYTES``).  ``rss_growth_per_mapping``
= (``rss_walk_mb`` − the process's RSS before the open) ÷ n.

    python benchmarks/bench_memory.py [--sizes 1000000 10000000]
    python benchmarks/bench_memory.py --store disk --sizes 1000000 10000000 [--dir /var/tmp]
    python benchmarks/bench_memory.py --smoke [--store disk]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _harness as H  # noqa: E402


def _rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def one_size(n: int) -> dict:
    """Build the structures for ``n`` mappings in this process and measure each (run in a
    child per size, so sizes do not share an allocator's free lists)."""
    from types import SimpleNamespace

    import bench_state
    from stream.schedule import ExpirySchedule
    from agents.metrics import Metrics
    from agents.vault import Vault
    from stream import intervals as iv

    now = int(time.time() * 1000)
    ttl = 23 * 3_600_000
    vault = Vault.open_or_create(H.OPERATOR, Path(tempfile.mkdtemp(prefix="ipanon-bench-mem-")), ttl_ms=ttl,
                                 grace_ms=61_000, now_ms=now)
    partitions = 8
    base = _rss()
    keys: list[bytes] = []
    values: list[bytes] = []
    parts: list[int] = []
    t = time.perf_counter()
    for part, key, value in bench_state.entries(bench_state.Encoder.sealed(vault, ttl), n, now, partitions):
        keys.append(key)
        values.append(value)
        parts.append(part)
    build_s = time.perf_counter() - t
    lists = _rss()
    # the three lists' own arrays (8 B per slot each) are scaffolding, not worker state
    list_overhead = sum(sys.getsizeof(x) for x in (keys, values, parts))
    store = dict(zip(keys, values))
    after_store = _rss()
    kp = dict(zip(keys, parts))
    after_kp = _rss()
    tracemalloc.start()
    traced0 = tracemalloc.get_traced_memory()[0]
    schedule = ExpirySchedule()
    for k, v in zip(keys, values):
        schedule.add(vault.next_expiry(k, v, ttl_ms=ttl, stale_after_ms=iv.DEFAULT_STALE_AFTER_MS), k)
    schedule.pop_due(now)  # as the sweeper's first pass: the current hour's buckets become near
    gc.collect()
    schedule_bytes = tracemalloc.get_traced_memory()[0] - traced0
    tracemalloc.stop()
    after_schedule = _rss()
    assert len(schedule) == n
    ops = {H.OPERATOR: SimpleNamespace(name=H.OPERATOR, ttl_ms=ttl, stale_after_ms=iv.DEFAULT_STALE_AFTER_MS,
                                        policy=None)}
    table = SimpleNamespace(data=store, active=set(range(partitions)), key_partition=lambda: kp)
    m = Metrics(ops, clock=lambda: now, table=table, vaults={H.OPERATOR: vault})
    m.compliance.open_budget = n
    t = time.perf_counter()
    _, states = m.scan(now_ms=now)
    walk_s = time.perf_counter() - t
    after_walk = _rss()
    assert states[H.OPERATOR].keys == n, states
    parts_b = {
        "key_value_bytes": lists - base - list_overhead,
        "store_dict": after_store - lists,
        "partition_map": after_kp - after_store,
        "schedule": schedule_bytes,
        "walk_summaries": after_walk - after_schedule,
    }
    per = {k: round(v / n, 1) for k, v in parts_b.items()}
    return {"mappings": n, "bytes_per_mapping": per, "total_bytes_per_mapping": round(sum(parts_b.values()) / n, 1),
            "total_mb": round(sum(parts_b.values()) / 2**20, 1), "rss_mb": round(after_walk / 2**20, 1),
            "mean_key_bytes": round(sum(map(len, keys)) / n, 1), "mean_value_bytes": round(sum(map(len, values)) / n, 1),
            "build_s": round(build_s, 1), "full_walk_s": round(walk_s, 1),
            "schedule_rss_growth": round((after_schedule - after_kp) / n, 1)}


# -- the on-disk store ----------------------------------------------------------------------

DISK_PARTITIONS = 8
DISK_TTL_MS = 23 * 3_600_000


def _rocks_memory(store) -> dict:
    """RocksDB's own memory accounts, summed over the store's column families (MB)."""
    def prop(name: str) -> int:
        total = 0
        for cf in store._cf.values():  # the store's column families (a benchmark may look inside)
            total += cf.property_int_value(name) or 0
        return total

    some = next(iter(store._cf.values()))
    return {"memtables_mb": round(prop("rocksdb.cur-size-all-mem-tables") / 2**20, 1),
            "table_readers_mb": round(prop("rocksdb.estimate-table-readers-mem") / 2**20, 1),
            "block_cache_mb": round((some.property_int_value("rocksdb.block-cache-usage") or 0) / 2**20, 1)}


def _vault(work: Path, now: int):
    from agents.vault import Vault

    return Vault.open_or_create(H.OPERATOR, work / "keys", ttl_ms=DISK_TTL_MS, grace_ms=61_000, now_ms=now,
                                destroy=False)


def disk_write(n: int, work: Path, now: int) -> dict:
    """Write ``n`` mappings into a fresh store under ``work`` (the first process)."""
    import bench_state
    from agents.disk_store import DiskStore
    from stream import intervals as iv
    from stream.disk_bound import DiskBound

    vault = _vault(work, now)
    store = DiskStore(work / "store", bound=DiskBound(**bench_state.DISK_BOUND))
    rss0 = _rss()
    offsets = [0] * DISK_PARTITIONS
    b, pending = store.batch(), 0
    t = time.perf_counter()
    for part, key, value in bench_state.entries(bench_state.Encoder.sealed(vault, DISK_TTL_MS), n, now,
                                                DISK_PARTITIONS):
        b.put(part, key, value)
        b.schedule(part, vault.next_expiry(key, value, ttl_ms=DISK_TTL_MS, stale_after_ms=iv.DEFAULT_STALE_AFTER_MS), key)
        offsets[part] += 1
        pending += 1
        if pending == 20_000:
            for p in range(DISK_PARTITIONS):
                b.checkpoint(p, offsets[p])
            store.write(b)
            b, pending = store.batch(), 0
    for p in range(DISK_PARTITIONS):
        b.checkpoint(p, offsets[p])
    store.write(b)
    write_s = time.perf_counter() - t
    rss_written = _rss()
    rocks_written = _rocks_memory(store)
    t = time.perf_counter()
    store.erase_tick(now)
    tick_s = time.perf_counter() - t
    disk = store.disk_bytes()
    store.close()
    return {"write_s": round(write_s, 1), "writes_per_s": round(n / write_s), "first_tick_s": round(tick_s, 1),
            "disk_bytes_per_mapping": round(disk / n, 1), "writer_rss_before_mb": round(rss0 / 2**20, 1),
            "writer_rss_written_mb": round(rss_written / 2**20, 1), "writer_rocksdb_written": rocks_written}


def disk_reopen(n: int, work: Path, now: int) -> dict:
    """The restarted worker (the second process): open, first due, a walk opening every value."""
    import bench_state
    from agents.disk_store import DiskStore
    from stream.disk_bound import DiskBound

    vault = _vault(work, now)
    rss0 = _rss()
    t = time.perf_counter()
    store = DiskStore(work / "store", bound=DiskBound(**bench_state.DISK_BOUND))
    cps = sum(store.checkpoint(p) or 0 for p in range(DISK_PARTITIONS))
    open_s = time.perf_counter() - t
    rss_open, rocks_open = _rss(), _rocks_memory(store)
    due = store.due(now)
    rss_due = _rss()
    t = time.perf_counter()
    keys = opened = 0
    for p in sorted(store.partitions()):
        for k in store.iter_keys(p):
            keys += 1
            v = store.get(p, k)
            if v is not None:
                vault.open(k, v)
                opened += 1
    walk_s = time.perf_counter() - t
    rss_walk, rocks_walk = _rss(), _rocks_memory(store)
    store.close()
    if cps != n or keys != n or opened != n:
        raise SystemExit(f"reopened store: checkpoints {cps}, keys {keys}, opened {opened}, expected {n}")
    return {"open_s": round(open_s, 3), "first_due": len(due), "rss_before_open_mb": round(rss0 / 2**20, 1),
            "rss_open_mb": round(rss_open / 2**20, 1), "rss_due_mb": round(rss_due / 2**20, 1),
            "rss_walk_mb": round(rss_walk / 2**20, 1), "walk_s": round(walk_s, 1), "walked_keys": keys,
            "rocksdb_open": rocks_open, "rocksdb_walk": rocks_walk,
            "rss_growth_per_mapping": round((rss_walk - rss0) / n, 2)}


def _child(args: list[str]) -> dict:
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{args} failed: {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny size (for the test suite)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--store", choices=["memory", "disk"], default="memory",
                    help="memory: the worker's in-memory table (default); disk: the on-disk store")
    ap.add_argument("--dir", help="--store disk: parent of the work directory (default: the system temp dir)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--disk-child", choices=["write", "reopen"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--now-ms", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child and a.disk_child:
        fn = disk_write if a.disk_child == "write" else disk_reopen
        print(json.dumps(fn(a.child, a.work, a.now_ms)))
        return
    if a.child:
        print(json.dumps(one_size(a.child)))
        return
    sizes = [20_000] if a.smoke else a.sizes
    out = []
    for n in sizes:
        if a.store == "disk":
            import shutil

            work = Path(tempfile.mkdtemp(prefix="ipanon-bench-mem-disk-", dir=a.dir))
            try:
                now = int(time.time() * 1000)
                common = ["--child", str(n), "--work", str(work), "--now-ms", str(now)]
                w = _child([*common, "--disk-child", "write"])
                r = _child([*common, "--disk-child", "reopen"])
            finally:
                shutil.rmtree(work, ignore_errors=True)
            out.append({"mappings": n, **w, **r})
            continue
        r = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"size {n} failed: {r.stderr.strip()[-2000:]}")
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    fig = {"bench": "memory", "store": a.store, "smoke": a.smoke, "sizes": out, "machine": H.machine()}
    if a.store == "disk" and len(out) >= 2:
        fig["rss_walk_ratio_largest_to_smallest"] = round(out[-1]["rss_walk_mb"] / out[0]["rss_walk_mb"], 2)
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
