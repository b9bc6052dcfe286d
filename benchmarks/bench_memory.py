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

    python benchmarks/bench_memory.py [--sizes 1000000 10000000]
    python benchmarks/bench_memory.py --smoke
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
    pipeline = SimpleNamespace(operators=ops, on_count=[], table=table, counters={}, clock=lambda: now,
                               app=SimpleNamespace(), vaults={H.OPERATOR: vault})
    m = Metrics(pipeline)
    m.open_budget = n
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny size (for the test suite)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(one_size(a.child)))
        return
    sizes = [20_000] if a.smoke else a.sizes
    out = []
    for n in sizes:
        r = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"size {n} failed: {r.stderr.strip()[-2000:]}")
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(json.dumps({"bench": "memory", "smoke": a.smoke, "sizes": out, "machine": H.machine()}))


if __name__ == "__main__":
    main()
