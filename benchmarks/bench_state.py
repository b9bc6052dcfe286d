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
   seconds, and records per process CPU-second).  Before issue 8 (Faust's own recovery)
   there was no table line and the schedule line ended the restore.  A restore still running
   at ``--timeout`` is reported with ``restore_complete: false`` and the rate so far from
   the progress lines;
   ``rss_mb`` = the worker's RSS after the restore; ``rss_empty_mb`` = the same worker
   shape with an empty table (first run);
4. ``direct_restore_*``: the same changelog read into a dict by a plain aiokafka consumer
   (assigned partitions, ``getmany`` batches) — the restore rate without Faust's recovery.

Prints exactly one JSON line.  The machine is shared: figures are noisy.  Targets (issue 8):
≤ 150 B/mapping on disk, RSS within 20 % from 1M to 10M, restore ≥ 200k mappings/s.

    python benchmarks/bench_state.py [--bootstrap HOST:PORT --broker-dir DIR] [--sizes 1000000 3000000]
    python benchmarks/bench_state.py --smoke
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


def mixed_mappings(n: int, now_ms: int):
    """(slot, network, interval) for ``n`` distinct live mappings, mixed 60/30/10."""
    t = now_ms - 3_600_000
    for i in range(n):
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


def write_changelog(bootstrap: str, w, mappings, now_ms: int) -> dict:
    """Write ``mappings`` ((slot, network, interval), each network once, operator
    ``_harness.OPERATOR``) straight into the changelog of ``w`` — a worker that has not started
    yet (its topics applied: ``_harness.Worker`` or the tests' ``WorkerProcess``) — with the
    keys, values and partitions it would write itself.  Returns records written, payload
    bytes, value encoding and seconds."""
    enc = Encoder(w, now_ms)
    t = time.perf_counter()
    n, payload = asyncio.run(_fill(bootstrap, f"{w.settings.app_id}-mappings-changelog",
                                   encoded(enc, mappings, now_ms, w.settings.partitions)))
    return {"records": n, "payload": payload, "kind": enc.kind, "s": time.perf_counter() - t}


async def _fill(bootstrap: str, topic: str, rows) -> tuple[int, int]:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1, max_batch_size=512 * 1024,
                         max_request_size=8 * 2**20)
    await p.start()
    n = payload = 0
    try:
        for part, key, value in rows:
            await p.send(topic, value=value, key=key, partition=part)
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
                m = re.search(r"total remaining=(\d+)", line)  # Faust's own recovery (before issue 8)
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
    finally:
        w.stop()

    def since(t):
        return round(t - start, 2) if start is not None and t is not None else None

    # restore_s: worker's recovery service start → table restored (agents resume right after);
    # before issue 8 the table was restored and the schedule rebuilt in one step, so the end
    # was the schedule line, which is what it falls back to.
    end = table if table is not None else done
    sec = (end - start) if (start is not None and end is not None) else float("nan")
    rate = round(n / sec) if n and sec == sec and sec > 0 else None
    partial = None
    if end is None and start is not None and progress is not None and progress[0] > start:
        # not finished within the timeout: the rate so far, from the progress lines
        partial = {"restored": n - progress[1], "after_s": round(progress[0] - start, 1)}
        rate = round(partial["restored"] / partial["after_s"]) if partial["after_s"] > 0 else None
    out = {"restored_keys": keys, "restore_complete": end is not None, "restore_partial": partial,
           "restore_s": round(sec, 2) if sec == sec else None, "restore_per_s": rate,
           "ready_s": since(ready), "schedule_rebuilt_s": since(done),
           "rss_mb": round(rss / 1024, 1), "log_tail": "" if end is not None else w.log_tail(400)}
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    ap.add_argument("--bootstrap", help="use this running broker (default: start a throw-away local one)")
    ap.add_argument("--broker-dir", help="state dir of that broker (for on-disk bytes)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one restore")
    a = ap.parse_args()
    if a.smoke:
        a.sizes, a.timeout = [2000], 120.0
    print(json.dumps(run(a)))


if __name__ == "__main__":
    main()
