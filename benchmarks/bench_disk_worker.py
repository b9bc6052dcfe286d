"""The worker with its mapping table on disk (``--table-store disk``): fresh restore,
restart with the store intact, RSS.

For each size in ``--sizes`` (default 1M), on a real broker, one real ``ipanon worker`` process:

1. ``n`` live mappings are written straight into the worker's changelog, exactly as the worker
   writes them (``bench_state``'s keys, sealed values, partitions, mixed 60/30/10), each with
   the ``ipanon-revisit`` header the worker puts on its own writes (its schedule instant:
   ``Vault.revisit``).  ``--no-header``: without it (a changelog written before the header:
   the restore opens every value to schedule it).  ``--raw``: keys of the worker's length and
   prefix with random key ids and random values of the sealed length, in random partitions,
   written in aiokafka batches — the restore and restart never open a value when the header is
   there, and sealing 10M values takes longer than the run (the compliance walk then counts
   them as unreadable);
2. the worker starts with an empty data directory: ``fresh_restore_s`` / ``fresh_restore_per_s``
   from its own "mapping table: restored N records … in S s" line (the changelog read into
   RocksDB, one write batch per ``getmany``, schedule entries and checkpoints included), and
   ``fresh_rss_mb`` = its RSS 10 s after that line (the first erasure tick, which compacts every
   partition of a new store, runs meanwhile);
3. SIGTERM; ``n / 100`` more mappings are written (what the worker would have read after its
   checkpoint); the worker starts again on the same data directory:
   ``restart_to_restored_s`` = from the process's start to its "restored" line (Python and
   Faust start-up, the group join and the changelog tail read; processing resumes right after
   the line), ``restart_records`` = records the restart read, ``restart_table_s`` = the
   table's own time for it, ``restart_rss_mb`` = its RSS 10 s after, ``store_bytes_per_mapping``
   = every file of the RocksDB directory ÷ n then.

RSS also 30 and 60 s after the "restored" line (``*_rss_30_mb``, ``*_rss_60_mb``), with the
split at 60 s by kind of mapping (``*_rss_split_mb``: ``rss_split_mb``) and the peak
(``VmHWM``).  ``--env NAME=VALUE``: an environment variable for the worker.  Each size's entry
is also printed to stderr as soon as it ends.

``--bare``: before step 2, a bare aiokafka consumer with the restore's fetch settings reads
the same changelog and does nothing with it: ``bare_read_per_s`` / ``bare_read_cpu_s``, the
ceiling of reading on this machine and broker (the worker's restore cannot be faster).

Prints exactly one JSON line.  The machine is shared: the figures are noisy; give ``uptime``.

    python benchmarks/bench_disk_worker.py [--bootstrap HOST:PORT] [--sizes 1000000 10000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402
import bench_state as BS  # noqa: E402

import agents  # noqa: F401,E402  (first: serves the compiled core when it matches the sources)
from stream import intervals as iv  # noqa: E402

_RESTORED = re.compile(r"mapping table: restored (\d+) records .* in ([\d.]+) s .*process CPU ([\d.]+) s\): (\d+) keys")


def fill(bootstrap: str, w: H.Worker, n: int, first: int, now_ms: int, header: bool) -> float:
    """Write mappings ``first`` … ``first + n - 1`` into ``w``'s changelog; returns seconds."""
    from agents.mapping_table import REVISIT_HEADER, partition_for

    enc = BS.Encoder(w, now_ms)
    parts = w.settings.partitions

    def rows():
        for slot, net, ivl in BS.mixed_mappings(n, now_ms, first):
            key, value = enc.entry(slot, net, (ivl,), now_ms)
            hdr = None
            if header:
                when = enc.vault.revisit(value, (ivl,), ttl_ms=enc.ttl, stale_after_ms=iv.DEFAULT_STALE_AFTER_MS,
                                         now_ms=now_ms)
                hdr = [(REVISIT_HEADER, str(when).encode())]
            yield partition_for(iv.routing_key(H.OPERATOR, net).encode(), parts), key, value, hdr

    t = time.perf_counter()
    asyncio.run(BS.fill_changelog(bootstrap, w.changelog, rows()))
    return time.perf_counter() - t


def fill_raw(bootstrap: str, w: H.Worker, n: int, now_ms: int) -> float:
    """``--raw``: ``n`` records of the worker's key and value sizes, random bytes, each with the
    revisit header (a day from now), handed over in aiokafka batches; returns seconds."""
    import os
    import random

    from agents.mapping_table import REVISIT_HEADER

    enc = BS.Encoder(w, now_ms)
    slot, net, ivl = next(BS.mixed_mappings(1, now_ms))
    key0, value0 = enc.entry(slot, net, (ivl,), now_ms)
    prefix = key0[:len(key0) - 16]
    klen_id, vlen = 16, len(value0)
    hdr = [(REVISIT_HEADER, str(now_ms + 86_400_000).encode())]
    parts = w.settings.partitions
    rnd = random.Random(n)

    async def go() -> None:
        from aiokafka import AIOKafkaProducer

        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, max_batch_size=1024 * 1024,
                             max_request_size=8 * 2**20)
        await p.start()
        try:
            left = n
            pending = []
            while left:
                part = rnd.randrange(parts)
                b = p.create_batch()
                k = 0
                while left and k < 5000:
                    md = b.append(key=prefix + os.urandom(klen_id), value=os.urandom(vlen), timestamp=None, headers=hdr)
                    if md is None:
                        break
                    k += 1
                    left -= 1
                b.close()
                pending.append(await p.send_batch(b, w.changelog, partition=part))
                if len(pending) >= 64:
                    await asyncio.gather(*pending)
                    pending = []
            await asyncio.gather(*pending)
        finally:
            await p.stop()

    t = time.perf_counter()
    asyncio.run(go())
    return time.perf_counter() - t


def bare_read(bootstrap: str, topic: str, partitions: int) -> dict:
    """The ceiling of the restore's reading: an aiokafka consumer with the restore's settings
    (``mapping_table.RESTORE_*``) reads every partition of ``topic`` to its end offsets and does
    nothing with the records (same broker, same run)."""
    from aiokafka import TopicPartition

    from agents.kafka_clients import Clients
    from agents.mapping_table import RESTORE_BATCH, RESTORE_FETCH_BYTES, RESTORE_PARTITION_FETCH_BYTES

    async def go() -> dict:
        c = Clients(bootstrap).aio_consumer(client_id="bench-bare-read", group_id=None, auto_offset_reset="earliest",
                                            fetch_max_bytes=RESTORE_FETCH_BYTES,
                                            max_partition_fetch_bytes=RESTORE_PARTITION_FETCH_BYTES)
        await c.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            c.assign(tps)
            ends = await c.end_offsets(tps)
            for tp in tps:
                c.seek(tp, 0)
            t0, cpu0, n = time.monotonic(), time.process_time(), 0
            left = {tp for tp in tps if ends[tp] > 0}
            while left:
                for recs in (await c.getmany(*left, timeout_ms=500, max_records=RESTORE_BATCH)).values():
                    n += len(recs)
                for tp in list(left):
                    if await c.position(tp) >= ends[tp]:
                        left.discard(tp)
                        c.pause(tp)
            dt, dcpu = time.monotonic() - t0, time.process_time() - cpu0
        finally:
            await c.stop()
        return {"records": n, "s": round(dt, 2), "per_s": round(n / dt) if dt > 0 else None, "cpu_s": round(dcpu, 2)}

    return asyncio.run(go())


def vm_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` figure in kB (``VmHWM``: the peak RSS so far)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_split_mb(pid: int) -> dict:
    """RSS by kind of mapping (``/proc/<pid>/smaps``): ``heap`` (the main malloc arena, brk),
    ``anon`` (other anonymous memory), ``file`` (code and other mapped files); ``anon`` split
    further into ``anon_arenas`` (mappings starting on a 64 MiB boundary: glibc's malloc arenas
    of threads other than the main one, where RocksDB's background threads and the erasure
    tick's thread allocate) and ``anon_other`` (the rest: Python's own object arenas, glibc's
    mmapped large blocks, thread stacks), and ``anon_vmas`` (how many anonymous mappings)."""
    out = {"heap": 0, "anon": 0, "file": 0, "anon_arenas": 0, "anon_other": 0}
    kind, arena, vmas = "anon", False, 0
    try:
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            f = line.split()
            if f and "-" in f[0] and len(f) >= 5 and not f[0].endswith(":"):
                name = f[5] if len(f) > 5 else ""
                kind = "heap" if name == "[heap]" else ("file" if name.startswith("/") else "anon")
                arena = kind == "anon" and int(f[0].split("-")[0], 16) % (64 * 2**20) == 0
                vmas += kind == "anon"
            elif f and f[0] == "Rss:":
                out[kind] += int(f[1])
                if kind == "anon":
                    out["anon_arenas" if arena else "anon_other"] += int(f[1])
    except OSError:
        pass
    r = {k: round(v / 1024, 1) for k, v in out.items()}
    r["anon_vmas"] = vmas
    return r


def run_once(w: H.Worker, timeout_s: float) -> dict:
    """Start ``w``; wait for its table's "restored" line; RSS 10, 30 and 60 s later (``rss_mb``,
    ``rss_30_mb``, ``rss_60_mb``: the erasure ticks meanwhile flush the memtables, and the first
    one after a fresh restore force-compacts the whole new store) and its split at 60 s
    (``rss_split_mb``); the peak RSS (``VmHWM``) at the "restored" line and at 60 s; stop it."""
    w.log_path.write_text("")
    t0 = time.monotonic()
    w.start()
    got = None
    try:
        while time.monotonic() - t0 < timeout_s and w.alive() and got is None:
            for line in w.log_path.read_text(errors="replace").splitlines():
                m = _RESTORED.search(line)
                if m:
                    got = (time.monotonic() - t0, m)
            if got is None:
                time.sleep(0.2)
        if got is None:
            return {"complete": False, "log_tail": w.log_tail(400)}
        peak_restore = vm_kb(w.pid, "VmHWM")
        time.sleep(10)
        rss = H.rss_kb(w.pid)
        cpu = H.cpu_s(w.pid)
        time.sleep(20)
        rss30 = H.rss_kb(w.pid)
        time.sleep(30)
        rss60 = H.rss_kb(w.pid)
        split = rss_split_mb(w.pid)
        peak = vm_kb(w.pid, "VmHWM")
    finally:
        w.stop()
    wall, m = got
    records, secs, cpus, keys = int(m.group(1)), float(m.group(2)), float(m.group(3)), int(m.group(4))
    return {"complete": True, "to_restored_s": round(wall, 2), "records": records, "table_s": secs,
            "table_cpu_s": cpus, "keys": keys, "rss_mb": round(rss / 1024, 1), "cpu_s_at_rss": round(cpu, 1),
            "rss_split_mb": split, "rss_30_mb": round(rss30 / 1024, 1), "rss_60_mb": round(rss60 / 1024, 1),
            "peak_rss_at_restored_mb": round(peak_restore / 1024, 1), "peak_rss_mb": round(peak / 1024, 1)}


def store_bytes(w: H.Worker) -> int:
    root = Path(w.settings.data_dir) / "state"
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def run(a) -> dict:
    results = []
    with H.broker(a.bootstrap) as (bootstrap, _data_dir), tempfile.TemporaryDirectory(prefix="ipanon-bench-disk-") as tmp:
        for n in a.sizes:
            w = H.Worker(bootstrap, Path(tmp) / f"w{n}")
            w.args += ["--table-store", "disk"]
            w.env.update(dict(e.split("=", 1) for e in a.env))
            now = int(time.time() * 1000)
            fill_s = fill_raw(bootstrap, w, n, now) if a.raw else fill(bootstrap, w, n, 0, now, not a.no_header)
            bare = bare_read(bootstrap, w.changelog, w.settings.partitions) if a.bare else None
            fresh = run_once(w, a.timeout)
            tail = max(1, n // 100)
            if a.raw:
                fill_raw(bootstrap, w, tail, now)
            else:
                fill(bootstrap, w, tail, n, now, not a.no_header)
            again = run_once(w, a.timeout)
            r = {"mappings": n, "header": not a.no_header, "raw": a.raw, "fill_s": round(fill_s, 1)}
            if bare is not None:
                r.update({"bare_read_per_s": bare["per_s"], "bare_read_s": bare["s"], "bare_read_cpu_s": bare["cpu_s"]})
            if fresh.get("complete"):
                r.update({"fresh_restore_s": fresh["table_s"],
                          "fresh_restore_per_s": round(fresh["records"] / fresh["table_s"]) if fresh["table_s"] else None,
                          "fresh_restore_cpu_s": fresh["table_cpu_s"], "fresh_to_restored_s": fresh["to_restored_s"],
                          "fresh_keys": fresh["keys"], "fresh_rss_mb": fresh["rss_mb"],
                          "fresh_rss_30_mb": fresh["rss_30_mb"], "fresh_rss_60_mb": fresh["rss_60_mb"],
                          "fresh_rss_split_mb": fresh["rss_split_mb"],
                          "fresh_peak_rss_at_restored_mb": fresh["peak_rss_at_restored_mb"],
                          "fresh_peak_rss_mb": fresh["peak_rss_mb"]})
            else:
                r["fresh"] = fresh
            if again.get("complete"):
                r.update({"restart_to_restored_s": again["to_restored_s"], "restart_records": again["records"],
                          "restart_table_s": again["table_s"], "restart_keys": again["keys"],
                          "restart_rss_mb": again["rss_mb"], "restart_rss_30_mb": again["rss_30_mb"],
                          "restart_rss_60_mb": again["rss_60_mb"],
                          "restart_rss_split_mb": again["rss_split_mb"], "restart_peak_rss_mb": again["peak_rss_mb"],
                          "store_bytes_per_mapping": round(store_bytes(w) / (n + tail), 1)})
            else:
                r["restart"] = again
            results.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)  # each size as it ends (a long run)
    rss = [r.get("restart_rss_mb") for r in results if r.get("restart_rss_mb")]
    return {"bench": "disk_worker", "results": results,
            "rss_ratio_largest_to_smallest": round(rss[-1] / rss[0], 2) if len(rss) >= 2 else None,
            "targets": {"restart_s_at_10M": 10, "restore_per_s": 200_000, "rss_mb": 1024, "rss_ratio": 1.2},
            "machine": H.machine()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", default=None, help="an existing broker (default: start one)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for one restore")
    ap.add_argument("--no-header", action="store_true", help="changelog records without the revisit header")
    ap.add_argument("--raw", action="store_true", help="random keys/values of the worker's sizes (fast fill)")
    ap.add_argument("--bare", action="store_true",
                    help="first read the changelog with a bare consumer doing nothing (the reading's ceiling)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for the worker (e.g. MALLOC_ARENA_MAX=2)")
    ap.add_argument("--smoke", action="store_true", help="a tiny run (tests)")
    a = ap.parse_args()
    if a.smoke:
        a.sizes, a.timeout = [2000], 180.0
    print(json.dumps(run(a)))


if __name__ == "__main__":
    main()
