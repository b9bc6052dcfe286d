"""State cost and recovery: bytes per live mapping on disk, worker RSS, restore time.

For each size in ``--sizes`` (default 1M), on a real broker:

1. write ``n`` live mappings straight into a fresh worker's changelog topic (the topic
   ``ipanon topics apply`` creates, with the plan's configs), each key once, with exactly the
   key, value and partition the worker itself would write: keys from
   ``stream.intervals.table_key`` (or the vault's keyed form when the worker seals values),
   values ``stream.intervals.encode`` (or sealed), partition = murmur2 of the routing key.
   Mixed like the traffic: 60 % RADIUS sessions, 30 % DHCP leases, 10 % CGNAT port blocks.
   Each key is written once, so the topic already is what compaction would leave;
2. ``disk_bytes_per_mapping`` = bytes of the changelog's ``.log`` segment files in the broker's
   data directory ÷ ``n`` (needs the broker's data dir: known when this script starts the
   broker, else pass ``--broker-dir``); ``payload_bytes_per_mapping`` = key + value bytes;
3. a fresh ``ipanon worker`` starts on that changelog (all from the worker's own log, ms
   resolution): ``restore_s`` = from Faust's "Recovery: Starting" (the recovery service
   starting, before the group join) to the table's "mapping table: restored N records …"
   line, after which the agents resume; ``restore_per_s`` = n ÷ restore_s; ``ready_s`` =
   to Faust's "Worker ready"; ``schedule_rebuilt_s`` = to "sweeper: schedule rebuilt from
   the store: N keys" (the schedule is rebuilt in the background after the restore; it opens
   every value); ``table_restore_*`` = the changelog read alone as the worker logs it (its
   seconds, and records per process CPU-second).  Before the table restored itself (Faust's own
   recovery) there was no table line and the schedule line ended the restore.  A restore still
   running at ``--timeout`` is reported with ``restore_complete: false`` and the rate so far from
   the progress lines;
   ``rss_mb`` = the worker's RSS after the restore; ``rss_empty_mb`` = the same worker
   shape with an empty table (first run);
4. ``direct_restore_*``: the same changelog read into a dict by a plain aiokafka consumer
   (assigned partitions, ``getmany`` batches) — the restore rate without Faust's recovery.

``--store disk``: the same changelog, then the on-disk store
(``agents.disk_store.DiskStore``) driven directly, each step in a process of its own:

5. fresh restore: an empty store reads the whole changelog, one store batch per ``getmany``
   batch with each value's schedule entry (its next expiry: the value is opened) and the
   partitions' checkpoints; ``restore_per_s`` = n ÷ its seconds (``restore_open_values_s``
   and ``restore_store_write_s`` are its two main parts); then one erasure tick (flush +
   forced compaction) and ``store_bytes_per_mapping`` = every file of the store ÷ n;
6. restart with the store intact: n/100 more mappings are written to the changelog (what the
   worker wrote after its last checkpoint), then a new process opens the store, reads the
   checkpoints, reads the changelog from them to the end and runs the sweeper's first ``due``:
   ``restart_s`` (from the store's open; the process's start and imports are not in it);
   ``restart_rss_mb`` = that process's RSS then (Python, aiokafka, the vault and RocksDB — not
   a Faust worker's), ``get_p50_us``/``get_p99_us`` = 20 000 gets of sampled live keys in it.

The worker itself on the store (``ipanon worker --table-store disk``: fresh restore, restart
on the intact store, its RSS) is ``bench_disk_worker.py``.

Prints exactly one JSON line.  The machine is shared: figures are noisy.  Targets:
≤ 150 B/mapping on disk, RSS within 20 % from 1M to 10M, restore ≥ 200k mappings/s; with
``--store disk``: RSS within 20 % from 1M to 50M and under 1 GB, restart ≤ 10 s at 10M, lookup
p99 ≤ 10 ms (judged in docs/benchmarks.md "Figures on the quiet machine" and "The mapping table
on disk").

    python benchmarks/bench_state.py [--bootstrap HOST:PORT --broker-dir DIR] [--sizes 1000000 3000000]
    python benchmarks/bench_state.py --store disk --sizes 1000000 10000000 [--dir /var/tmp]
    python benchmarks/bench_state.py --smoke [--store disk]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import re
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as H  # noqa: E402

import agents  # noqa: F401,E402  (first: serves the compiled core when it matches the sources)
from stream import intervals as iv  # noqa: E402

_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def _log_time(line: str) -> float:
    m = _TS.match(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else float("nan")


class Encoder:
    """Key and value bytes exactly as this checkout's worker writes them.  ``w``: anything with
    the worker's ``settings`` and topic ``plan`` (``_harness.Worker``, the tests' ``WorkerProcess``)."""

    def __init__(self, w: H.Worker, now_ms: int) -> None:
        self.kind = "plain-json"
        self.vault = None
        try:  # the lead's crypto-shredded table: keyed table keys, sealed values
            from agents.app import Pipeline, vault_grace_ms
            from agents.runtime import keys_dir
            from agents.vault import Vault

            if "vaults" in Pipeline.__init__.__code__.co_names or hasattr(Pipeline, "_load"):
                op = H.OPERATOR
                ttl = w.plan.retention[op].ttl_ms
                grace = vault_grace_ms(w.settings)
                self.vault = Vault.open_or_create(op, keys_dir(w.settings), ttl_ms=ttl, grace_ms=grace, now_ms=now_ms)
                self.ttl = ttl
                self.kind = "sealed"
        except ImportError:
            pass

    @classmethod
    def sealed(cls, vault, ttl_ms: int) -> "Encoder":
        """An encoder that seals with ``vault`` (no worker needed: ``bench_memory.py``)."""
        enc = cls.__new__(cls)
        enc.kind, enc.vault, enc.ttl = "sealed", vault, ttl_ms
        return enc

    def entry(self, slot: str, net, ivs, now_ms: int) -> tuple[bytes, bytes]:
        if self.vault is None:
            return iv.table_key(H.OPERATOR, slot, net).encode(), iv.encode(ivs)
        from agents.vault import max_until

        key = self.vault.key(slot, net)
        until = max_until(ivs, ttl_ms=self.ttl, stale_after_ms=iv.DEFAULT_STALE_AFTER_MS)
        return key, self.vault.seal(key, net, ivs, until_ms=until, now_ms=now_ms)

    def entry_revisit(self, slot: str, net, ivs, now_ms: int) -> tuple[bytes, bytes, list]:
        """Key, value and headers as the worker's mapping stage writes them now: sealed
        with ``Vault.seal_value`` and its revisit instant in the ``ipanon-revisit`` header (a
        restore into the disk store schedules the key from it without opening the value)."""
        from agents.mapping_table import REVISIT_HEADER

        key = self.vault.key(slot, net)
        raw, revisit = self.vault.seal_value(key, net, ivs, ttl_ms=self.ttl, stale_after_ms=iv.DEFAULT_STALE_AFTER_MS,
                                             now_ms=now_ms)
        return key, raw, [(REVISIT_HEADER, str(int(revisit)).encode())]


def mixed_mappings(n: int, now_ms: int, first: int = 0):
    """(slot, network, interval) for ``n`` distinct live mappings, mixed 60/30/10 (mappings
    ``first`` … ``first + n - 1`` of one sequence: two calls with disjoint ranges, disjoint keys)."""
    t = now_ms - 3_600_000
    for i in range(first, first + n):
        r = i % 10
        if r < 6:  # RADIUS session on 100.64.0.0/10 and up
            net = ipaddress.IPv4Network((0x64400000 + i, 32))
            ivl = iv.Interval(start_ms=t + i % 600_000, end_ms=None, holder=f"kund-{i}@isp.example",
                              session=f"192.0.2.{i % 200 + 1}/{i:08X}", nas=f"192.0.2.{i % 200 + 1}",
                              last_ms=t + 600_000)
            slot = "ip"
        elif r < 9:  # DHCP lease (subscriber = client id / MAC)
            net = ipaddress.IPv4Network((0x0A000000 + i, 32))
            ivl = iv.Interval(start_ms=t, end_ms=None, holder=f"01:02:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                              last_ms=t + 600_000, until_ms=t + 3_600_000)
            slot = "ip"
        else:  # CGNAT block; one block per public address here (a real one holds many per key)
            net = ipaddress.IPv4Network((0xC6000000 + i, 32))
            blk = i % 60
            ivl = iv.Interval(start_ms=t, end_ms=None, holder=str(ipaddress.IPv4Address(0x647F0000 + i)),
                              last_ms=t, port_first=1024 + blk * 1024, port_last=2047 + blk * 1024)
            slot = "nat"
        yield slot, net, ivl


def encoded(enc: Encoder, mappings, now_ms: int, partitions: int):
    """(partition, key, value) for each (slot, network, interval) of ``mappings`` (one
    interval per key), as the worker writes it; partition = murmur2 of the routing key."""
    from agents.mapping_table import partition_for

    for slot, net, ivl in mappings:
        key, value = enc.entry(slot, net, (ivl,), now_ms)
        yield partition_for(iv.routing_key(H.OPERATOR, net).encode(), partitions), key, value


def entries(enc: Encoder, n: int, now_ms: int, partitions: int):
    """(partition, key, value) for ``n`` distinct live mappings, mixed 60/30/10."""
    return encoded(enc, mixed_mappings(n, now_ms), now_ms, partitions)


def write_changelog(bootstrap: str, w, mappings, now_ms: int, revisit: bool = False) -> dict:
    """Write ``mappings`` ((slot, network, interval), each network once, operator
    ``_harness.OPERATOR``) straight into the changelog of ``w`` — a worker that has not started
    yet (its topics applied: ``_harness.Worker`` or the tests' ``WorkerProcess``) — with the
    keys, values and partitions it would write itself (``revisit``: with the revisit header, as
    the mapping stage writes them now).  Returns records written, payload bytes,
    value encoding and seconds."""
    enc = Encoder(w, now_ms)
    if revisit and enc.vault is not None:
        from agents.mapping_table import partition_for

        def rows():
            for slot, net, ivl in mappings:
                key, value, headers = enc.entry_revisit(slot, net, (ivl,), now_ms)
                yield (partition_for(iv.routing_key(H.OPERATOR, net).encode(), w.settings.partitions), key, value,
                       headers)
        source = rows()
    else:
        source = encoded(enc, mappings, now_ms, w.settings.partitions)
    t = time.perf_counter()
    n, payload = asyncio.run(fill_changelog(bootstrap, f"{w.settings.app_id}-mappings-changelog", source))
    return {"records": n, "payload": payload, "kind": enc.kind + ("+revisit" if revisit and enc.vault else ""),
            "s": time.perf_counter() - t}


async def fill_changelog(bootstrap: str, topic: str, rows) -> tuple[int, int]:
    """Produce ``rows`` (partition, key, value[, headers]) to ``topic`` in large aiokafka batches,
    flushed every 50 000; returns (records, key + value bytes).  Shared by the benchmarks that
    seed a worker's changelog directly."""
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1, max_batch_size=512 * 1024,
                         max_request_size=8 * 2**20)
    await p.start()
    n = payload = 0
    try:
        for part, key, value, *headers in rows:
            await p.send(topic, value=value, key=key, partition=part, headers=headers[0] if headers else None)
            n += 1
            payload += len(key) + len(value)
            if n % 50_000 == 0:
                await p.flush()
        await p.flush()
    finally:
        await p.stop()
    return n, payload


async def _direct_restore(bootstrap: str, topic: str, partitions: int) -> dict:
    """Read the changelog into a dict with a plain consumer (assigned partitions, no group,
    ``getmany`` batches, tombstones delete) up to the end offsets: what a restore costs
    without Faust's per-record recovery machinery."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 2**20, fetch_max_bytes=32 * 2**20)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        table: dict[bytes, bytes] = {}
        where: dict[bytes, int] = {}
        n = 0
        t, cpu = time.perf_counter(), time.process_time()
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await c.getmany(timeout_ms=500, max_records=20_000)
            for tp, recs in batch.items():
                for r in recs:
                    if r.value is None:
                        table.pop(r.key, None)
                        where.pop(r.key, None)
                    else:
                        table[r.key] = r.value
                        where[r.key] = tp.partition
                n += len(recs)
                if recs and recs[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        dt, dc = time.perf_counter() - t, time.process_time() - cpu
    finally:
        await c.stop()
    return {"direct_restored_keys": len(table), "direct_restore_s": round(dt, 2),
            "direct_restore_per_s": round(n / dt) if dt > 0 else None,
            "direct_restore_per_cpu_s": round(n / dc) if dc > 0 else None}


def disk_bytes(data_dir: Path, topic: str) -> int:
    return sum(f.stat().st_size for d in data_dir.glob(f"{topic}-*") for f in d.glob("*.log"))


def restore(w: H.Worker, n: int, timeout_s: float) -> dict:
    """Start ``w`` on its changelog and time the restore from the worker's own log lines."""
    spawned = time.time()
    w.start()
    t0 = time.monotonic()
    start = table = ready = done = None
    keys = -1
    own = None  # the table's own "restored N records … in S s (… process CPU C s)" line
    progress = None  # (log time, records still to restore) from the latest progress line
    try:
        while time.monotonic() - t0 < timeout_s and w.alive():
            for line in w.log_path.read_text(errors="replace").splitlines():
                if start is None and "Recovery]: Starting" in line:
                    start = _log_time(line)
                m = re.search(r"total remaining=(\d+)", line)  # Faust's own recovery (older workers)
                if m:
                    progress = (_log_time(line), int(m.group(1)))
                m = re.search(r"mapping table: restoring: \d+ of \d+ records read .*?, (\d+) remaining", line)
                if m:
                    progress = (_log_time(line), int(m.group(1)))
                m = re.search(r"mapping table: restored (\d+) records .* in ([\d.]+) s .*process CPU ([\d.]+) s\): (\d+) keys", line)
                if m:
                    table = _log_time(line)
                    own = {"records": int(m.group(1)), "s": float(m.group(2)), "cpu_s": float(m.group(3))}
                if ready is None and table is not None and "Worker ready" in line and _log_time(line) >= table:
                    ready = _log_time(line)
                m = re.search(r"schedule rebuilt from the store: (\d+) keys", line)
                if m:
                    done, keys = _log_time(line), int(m.group(1))
            if done is not None and (ready is not None or table is None):
                break
            time.sleep(0.5)
        time.sleep(2)
        rss = H.rss_kb(w.pid)
        exited = w.proc.poll() if w.proc is not None else None  # a worker that died has no RSS
    finally:
        w.stop()

    def since(t):
        return round(t - start, 2) if start is not None and t is not None else None

    # restore_s: worker's recovery service start → table restored (agents resume right after);
    # older workers (Faust's recovery) restored the table and rebuilt the schedule in one step, so
    # the end was the schedule line, which is what it falls back to.
    end = table if table is not None else done
    sec = (end - start) if (start is not None and end is not None) else float("nan")
    rate = round(n / sec) if n and sec == sec and sec > 0 else None
    partial = None
    if end is None and start is not None and progress is not None and progress[0] > start:
        # not finished within the timeout: the rate so far, from the progress lines
        partial = {"restored": n - progress[1], "after_s": round(progress[0] - start, 1)}
        rate = round(partial["restored"] / partial["after_s"]) if partial["after_s"] > 0 else None
    out = {"restored_keys": keys, "restore_complete": end is not None, "restore_partial": partial,
           "spawn_to_ready_s": round(ready - spawned, 2) if ready is not None else None,
           "restore_s": round(sec, 2) if sec == sec else None, "restore_per_s": rate,
           "ready_s": since(ready), "schedule_rebuilt_s": since(done),
           "rss_mb": round(rss / 1024, 1) if exited is None else None, "worker_exit": exited,
           "log_tail": "" if end is not None and exited is None else w.log_tail(1500)}
    if own is not None:  # the changelog read alone, as the worker measured it
        out.update({"table_restore_records": own["records"], "table_restore_s": own["s"],
                    "table_restore_per_s": round(own["records"] / own["s"]) if own["s"] > 0 else None,
                    "table_restore_cpu_s": own["cpu_s"],
                    "table_restore_per_cpu_s": round(own["records"] / own["cpu_s"]) if own["cpu_s"] > 0 else None})
    return out


def run(a) -> dict:
    results = []
    with H.broker(a.bootstrap) as (bootstrap, data_dir), tempfile.TemporaryDirectory(prefix="ipanon-bench-state-") as tmp:
        if a.broker_dir:
            data_dir = Path(a.broker_dir) / "data"
        base = H.Worker(bootstrap, Path(tmp) / "empty")
        empty = restore(base, 0, a.timeout)
        for n in a.sizes:
            w = H.Worker(bootstrap, Path(tmp) / f"w{n}")
            now = time.time_ns() // 1_000_000
            filled = write_changelog(bootstrap, w, mixed_mappings(n, now), now)
            payload, fill_s = filled["payload"], filled["s"]
            time.sleep(1)
            disk = disk_bytes(data_dir, w.changelog) if data_dir else None
            direct = asyncio.run(_direct_restore(bootstrap, w.changelog, w.settings.partitions))
            r = restore(w, n, a.timeout)
            row = {"mappings": n, "value_encoding": filled["kind"], "fill_s": round(fill_s, 1),
                   "payload_bytes_per_mapping": round(payload / n, 1),
                   "disk_bytes_per_mapping": round(disk / n, 1) if disk else None, **direct, **r}
            if not row["log_tail"]:
                row.pop("log_tail")
            results.append(row)
    big = [r for r in results if r.get("rss_mb")]
    flat = None
    if len(big) >= 2:
        flat = round(big[-1]["rss_mb"] / big[0]["rss_mb"], 2)
    return {"bench": "state", "smoke": a.smoke, "rss_empty_mb": empty["rss_mb"],
            "empty_restore_s": empty["restore_s"], "sizes": results,
            "rss_ratio_largest_to_smallest": flat,
            "targets": {"disk_bytes_per_mapping": 150, "rss_ratio": 1.2, "restore_per_s": 200_000},
            "machine": H.machine()}


# -- the on-disk store: --store disk ------------------------------------------------------

#: erasure parameters of the store in these runs (the tick is not run during the restore: the
#: figures are the restore's; one tick after it settles the files for the bytes-on-disk figure)
DISK_BOUND = dict(cycle_ms=50 * 60_000, tick_ms=1_000, compaction_allowance_ms=5 * 60_000)
SAMPLE_KEYS = 20_000


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return round(int(f.read().split()[1]) * 4096 / 2**20, 1)


async def _apply_changelog(c, store, vault, ttl_ms: int, tps, start: dict, ends: dict, sample_every: int = 0) -> dict:
    """Read ``tps`` from ``start`` to ``ends`` into ``store``: one store batch per ``getmany``
    batch, each value with its schedule entry (its next expiry: the value is opened, as the
    worker's restore must) and each partition's checkpoint (the next offset) in the same batch."""
    from stream import intervals as ivs

    for tp in tps:
        c.seek(tp, start[tp.partition])
    remaining = {tp for tp in tps if ends[tp] > start[tp.partition]}
    n = puts = deletes = 0
    open_s = write_s = 0.0
    sample: list[tuple[int, str]] = []
    t, cpu = time.perf_counter(), time.process_time()
    while remaining:
        got = await c.getmany(*remaining, timeout_ms=500, max_records=20_000)
        if not got:
            continue
        b = store.batch()
        for tp, recs in got.items():
            p = tp.partition
            for r in recs:
                if r.value is None:
                    b.delete(p, r.key)
                    deletes += 1
                    continue
                t0 = time.perf_counter()
                when = vault.next_expiry(r.key, r.value, ttl_ms=ttl_ms, stale_after_ms=ivs.DEFAULT_STALE_AFTER_MS)
                open_s += time.perf_counter() - t0
                b.put(p, r.key, r.value)
                b.schedule(p, when, r.key)
                puts += 1
                if sample_every and puts % sample_every == 0:
                    sample.append((p, r.key.hex()))
            b.checkpoint(p, recs[-1].offset + 1)
            n += len(recs)
            if recs[-1].offset + 1 >= ends[tp]:
                remaining.discard(tp)
        t0 = time.perf_counter()
        store.write(b)
        write_s += time.perf_counter() - t0
    return {"records": n, "puts": puts, "deletes": deletes, "s": time.perf_counter() - t,
            "cpu_s": time.process_time() - cpu, "open_s": open_s, "write_s": write_s, "sample": sample}


async def _disk_child(a) -> dict:
    """One process = one worker's store: ``restore`` (fresh: empty directory, the whole
    changelog) or ``restart`` (the store intact: from its checkpoints to the end)."""
    import random

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from agents.disk_store import DiskStore
    from agents.vault import Vault
    from stream.disk_bound import DiskBound

    rss0 = _rss_mb()
    bound = DiskBound(**DISK_BOUND)
    vault = Vault.open_or_create(H.OPERATOR, Path(a.keys_dir), ttl_ms=a.ttl_ms, grace_ms=a.grace_ms, now_ms=a.now_ms,
                                 destroy=False)
    c = AIOKafkaConsumer(bootstrap_servers=a.bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 2**20, fetch_max_bytes=32 * 2**20)
    tps = [TopicPartition(a.changelog, p) for p in range(a.partitions)]
    out: dict = {}
    t0 = time.perf_counter()
    store = DiskStore(Path(a.store), bound=bound)
    if a.disk_child == "restore":
        start = {p: 0 for p in range(a.partitions)}
    else:
        start = {p: store.checkpoint(p) or 0 for p in range(a.partitions)}
        out["open_s"] = round(time.perf_counter() - t0, 3)
    await c.start()
    try:
        c.assign(tps)
        ends = await c.end_offsets(tps)
        every = max(1, a.expect // SAMPLE_KEYS) if a.disk_child == "restore" else 0
        r = await _apply_changelog(c, store, vault, a.ttl_ms, tps, start, ends, every)
    finally:
        await c.stop()
    due = store.due(a.now_ms)  # the sweeper's first pass: no schedule to rebuild
    total_s = time.perf_counter() - t0
    rss_caught_up = _rss_mb()
    out.update({"records": r["records"], "puts": r["puts"], "deletes": r["deletes"], "s": round(r["s"], 2),
                "cpu_s": round(r["cpu_s"], 2), "open_values_s": round(r["open_s"], 2),
                "store_write_s": round(r["write_s"], 2), "total_s": round(total_s, 3), "first_due": len(due),
                "checkpoints": {str(p): store.checkpoint(p) for p in range(a.partitions)},
                "ends": {str(tp.partition): ends[tp] for tp in tps},
                "rss_start_mb": rss0, "rss_caught_up_mb": rss_caught_up})
    sample_path = Path(a.store).parent / "sample.json"
    if a.disk_child == "restore":
        sample_path.write_text(json.dumps(r["sample"]))
        t1 = time.perf_counter()
        tick = store.erase_tick(a.now_ms)  # settles the files: flush + forced compaction
        out.update({"first_tick_s": round(time.perf_counter() - t1, 2), "first_tick_overran": tick.get("overran"),
                    "disk_bytes": store.disk_bytes(), "keys_estimate": sum(store.count_estimate(p) for p in range(a.partitions))})
    else:
        sample = [(p, bytes.fromhex(k)) for p, k in json.loads(sample_path.read_text())]
        random.Random(17).shuffle(sample)
        out.update(H.timed_gets(store, sample, "restart: sampled key of partition {p} missing"))
        out["rss_after_gets_mb"] = _rss_mb()
    store.close()
    return out


def _run_disk_child(kind: str, w, bootstrap: str, store: Path, now_ms: int, expect: int, timeout: float) -> dict:
    import subprocess

    from agents.app import vault_grace_ms
    from agents.runtime import keys_dir

    cmd = [sys.executable, __file__, "--disk-child", kind, "--bootstrap", bootstrap, "--changelog", w.changelog,
           "--partitions", str(w.settings.partitions), "--store-dir", str(store), "--keys-dir", str(keys_dir(w.settings)),
           "--ttl-ms", str(w.plan.retention[H.OPERATOR].ttl_ms), "--grace-ms", str(vault_grace_ms(w.settings)),
           "--now-ms", str(now_ms), "--expect", str(expect)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise SystemExit(f"{kind} child failed: {p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_disk(a) -> dict:
    """``--store disk``: per size, the changelog filled as above, then a fresh restore into an
    ``agents.disk_store.DiskStore`` and a restart with the store intact, each in its own process
    (its RSS is the store's process, not a Faust worker's: the worker wiring is measured once it
    runs on the store)."""
    results = []
    with H.broker(a.bootstrap) as (bootstrap, data_dir), \
            tempfile.TemporaryDirectory(prefix="ipanon-bench-state-disk-", dir=a.dir) as tmp:
        if a.broker_dir:
            data_dir = Path(a.broker_dir) / "data"
        for n in a.sizes:
            w = H.Worker(bootstrap, Path(tmp) / f"w{n}")
            now = time.time_ns() // 1_000_000
            filled = write_changelog(bootstrap, w, mixed_mappings(n, now), now)
            time.sleep(1)
            log_disk = disk_bytes(data_dir, w.changelog) if data_dir else None
            store = Path(tmp) / f"w{n}" / "store"
            fresh = _run_disk_child("restore", w, bootstrap, store, now, n, a.timeout)
            # what the worker wrote after its last checkpoint: read again at the restart
            tail_n = max(1, n // 100)
            tail = write_changelog(bootstrap, w, mixed_mappings(tail_n, now, first=n), now)
            again = _run_disk_child("restart", w, bootstrap, store, now, tail_n, a.timeout)
            if fresh["puts"] != n or again["puts"] != tail_n:
                raise SystemExit(f"restore read {fresh['puts']} of {n}, restart {again['puts']} of {tail_n}")
            if again["checkpoints"] != again["ends"]:
                raise SystemExit(f"restart stopped before the end: {again['checkpoints']} != {again['ends']}")
            results.append({
                "mappings": n, "value_encoding": filled["kind"], "fill_s": round(filled["s"], 1),
                "payload_bytes_per_mapping": round(filled["payload"] / n, 1),
                "changelog_bytes_per_mapping": round(log_disk / n, 1) if log_disk else None,
                "store_bytes_per_mapping": round(fresh["disk_bytes"] / n, 1),
                "restore_s": fresh["s"], "restore_per_s": round(n / fresh["s"]) if fresh["s"] > 0 else None,
                "restore_cpu_s": fresh["cpu_s"], "restore_open_values_s": fresh["open_values_s"],
                "restore_store_write_s": fresh["store_write_s"], "restore_rss_mb": fresh["rss_caught_up_mb"],
                "first_tick_s": fresh["first_tick_s"],
                "restart_tail_records": again["records"], "restart_open_s": again["open_s"],
                "restart_s": again["total_s"], "restart_rss_start_mb": again["rss_start_mb"],
                "restart_rss_mb": again["rss_caught_up_mb"], "rss_after_gets_mb": again["rss_after_gets_mb"],
                "get_p50_us": again["get_p50_us"], "get_p99_us": again["get_p99_us"], "gets": again["gets"],
            })
            import shutil

            shutil.rmtree(store, ignore_errors=True)
    rss = [r["rss_after_gets_mb"] for r in results]
    return {"bench": "state", "store": "disk", "smoke": a.smoke, "sizes": results,
            "rss_ratio_largest_to_smallest": round(rss[-1] / rss[0], 2) if len(rss) >= 2 else None,
            "disk_bound": DISK_BOUND,
            "targets": {"rss_ratio": 1.2, "rss_mb": 1024, "restart_s_at_10M": 10, "restore_per_s": 200_000,
                        "get_p99_us_at_50M": 10_000},
            "machine": H.machine()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    ap.add_argument("--bootstrap", help="use this running broker (default: start a throw-away local one)")
    ap.add_argument("--broker-dir", help="state dir of that broker (for on-disk bytes)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one restore")
    ap.add_argument("--store", choices=["memory", "disk"], default="memory",
                    help="memory: the worker's restore (default); disk: restore and restart of the on-disk store "
                         "driven directly (the worker on it: bench_disk_worker.py)")
    ap.add_argument("--dir", help="--store disk: parent of the work directory (default: the system temp dir)")
    for name in ("--disk-child", "--changelog", "--keys-dir"):
        ap.add_argument(name, help=argparse.SUPPRESS)
    ap.add_argument("--store-dir", dest="store_path", help=argparse.SUPPRESS)
    for name in ("--partitions", "--ttl-ms", "--grace-ms", "--now-ms", "--expect"):
        ap.add_argument(name, type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.disk_child:
        a.store = a.store_path
        print(json.dumps(asyncio.run(_disk_child(a))))
        return
    if a.smoke:
        a.sizes, a.timeout = [2000], 120.0
    print(json.dumps(run_disk(a) if a.store == "disk" else run(a)))


if __name__ == "__main__":
    main()
