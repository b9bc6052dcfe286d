"""agents.disk_store alone, without the worker, at N live mappings: bytes on disk per mapping, write
rate in batches, reopen time, get p50/p99, RSS, and the time from expiry to physical absence.

Keys and values are the worker's sizes: 28-byte table keys (operator, "|", slot tag, 16-byte
key id) and 89-byte sealed values (random bytes: ciphertext does not compress), written the way
the worker would — per batch, each value with its schedule entry and the partition's checkpoint
in one WriteBatch.  One JSON line.

Expiry to absence: ``--erase-sample`` keys are deleted through the on-disk schedule (``due`` →
delete + unschedule in one batch), then one erasure tick runs at once (flush + forced compaction
of every partition); every file under the data directory is then scanned for the deleted values'
89 bytes.  ``expiry_to_absence_s`` is the delete's write plus that tick's duration (the scan
in between, which shows the values still on disk after the delete, is not counted): the ``compaction_allowance_ms`` the
bound needs at this size (``stream.disk_bound``: B_disk = cycle + tick + allowance).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _harness as H  # noqa: E402

from agents.disk_store import DiskStore  # noqa: E402
from stream.disk_bound import DiskBound  # noqa: E402

KEY_BYTES, VALUE_BYTES = 28, 89


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def key_of(i: int) -> bytes:
    # "operator01" "|" "i" + a 16-byte id; the id's first bytes vary, like an HMAC's
    return b"operator01|i" + (i * 0x9E3779B97F4A7C15 % (1 << 128)).to_bytes(16, "big")


def run(n: int, partitions: int, batch: int, sample: int, gets: int, workdir: Path) -> dict:
    path = workdir / "store"
    bound = DiskBound(cycle_ms=3_600_000, tick_ms=1_000, compaction_allowance_ms=600_000)
    rng = random.Random(17)
    now = 1_800_000_000_000
    rss0 = _rss()
    s = DiskStore(path, bound=bound)
    write_s = 0.0  # the store's part only: building the batch and writing it, not making the data
    batches = 0
    offsets = [0] * partitions
    for start in range(0, n, batch):
        blob = os.urandom(VALUE_BYTES * batch)
        stop = min(n, start + batch)
        rows = [(i % partitions, key_of(i), blob[j * VALUE_BYTES:(j + 1) * VALUE_BYTES],
                 # months ahead, one-second buckets, as a 6-month TTL would spread them
                 now + 86_400_000 + rng.randrange(180 * 86_400_000)) for j, i in enumerate(range(start, stop))]
        t = time.monotonic()
        b = s.batch()
        for p, k, v, when in rows:
            b.put(p, k, v)
            b.schedule(p, when, k)
        for p in range(partitions):
            offsets[p] += (stop - start) // partitions
            b.checkpoint(p, offsets[p])
        s.write(b)
        write_s += time.monotonic() - t
        batches += 1
    t1 = time.monotonic()
    first_tick = s.erase_tick(now)
    settle_s = time.monotonic() - t1
    disk = s.disk_bytes()
    rss_written = _rss()

    # get latency: random live keys, one get each
    idx = [rng.randrange(n) for _ in range(gets)]
    lat = []
    for i in idx:
        k = key_of(i)
        t = time.perf_counter_ns()
        v = s.get(i % partitions, k)
        lat.append(time.perf_counter_ns() - t)
        if v is None or len(v) != VALUE_BYTES:
            raise SystemExit(f"get: key {i} missing")
    lat.sort()
    s.close()

    # reopen with the store intact: open, read the checkpoints, first due() — no rebuild pass
    t2 = time.monotonic()
    s = DiskStore(path, bound=bound)
    cps = {p: s.checkpoint(p) for p in range(partitions)}
    s.due(now)
    reopen_s = time.monotonic() - t2
    if cps != {p: offsets[p] for p in range(partitions)}:
        raise SystemExit(f"checkpoints after reopen {cps} != {offsets}")
    if s.partitions() != set(range(partitions)):
        raise SystemExit("partitions lost on reopen")
    rss_reopened = _rss()

    # expiry → physical absence for a sample, through the on-disk schedule
    victims = rng.sample(range(n), sample)
    values = {}
    b = s.batch()
    for i in victims:
        p, k = i % partitions, key_of(i)
        values[i] = s.get(p, k)
        b.schedule(p, now + 1, k)
    s.write(b)
    due = s.due(now + 1_000)
    mine = {key_of(i) for i in victims}
    b = s.batch()
    for p, bucket, k in due:
        if k in mine:
            b.delete(p, k).unschedule(p, bucket, k)
    t3 = time.monotonic()
    s.write(b)  # the expiry: deleted (and gone from the table) here
    delete_s = time.monotonic() - t3
    if any(s.get(i % partitions, key_of(i)) is not None for i in victims):
        raise SystemExit("deleted keys still readable")
    before = _scan(path, list(values.values()))  # (not timed: the scan is the proof, not the path)
    t4 = time.monotonic()
    tick = s.erase_tick(now + bound.cycle_ms)
    absent_s = delete_s + time.monotonic() - t4
    after = _scan(path, list(values.values()))
    s.close()

    # a fresh restore's write path: changelog records applied per batch with the checkpoint,
    # no schedule entries (which would need each value opened: docs/state-on-disk.md)
    r = DiskStore(workdir / "restore", bound=bound)
    restore_s = 0.0
    for start in range(0, n, batch):
        blob = os.urandom(VALUE_BYTES * batch)
        stop = min(n, start + batch)
        per = [[(key_of(i), blob[(i - start) * VALUE_BYTES:(i - start + 1) * VALUE_BYTES])
                for i in range(start + p, stop, partitions)] for p in range(partitions)]
        t = time.monotonic()
        b = r.batch()
        for p in range(partitions):
            b.put_many(p, per[p])
            b.checkpoint(p, stop)
        r.write(b)
        restore_s += time.monotonic() - t
    r.close()
    return {
        "mappings": n, "partitions": partitions, "batch": batch, "batches": batches,
        "key_bytes": KEY_BYTES, "value_bytes": VALUE_BYTES, "schedule_entries": n,
        "write_s": round(write_s, 2), "write_mappings_per_s": round(n / write_s),
        "first_tick_s": round(settle_s, 2), "first_tick": first_tick,
        "disk_bytes": disk, "disk_bytes_per_mapping": round(disk / n, 1),
        "get_p50_us": round(lat[len(lat) // 2] / 1000, 1), "get_p99_us": round(lat[int(len(lat) * 0.99)] / 1000, 1),
        "gets": gets,
        "reopen_s": round(reopen_s, 3),
        "restore_write_s": round(restore_s, 2), "restore_write_mappings_per_s": round(n / restore_s),
        "rss_before_mb": round(rss0 / 2**20, 1), "rss_written_mb": round(rss_written / 2**20, 1),
        "rss_reopened_mb": round(rss_reopened / 2**20, 1),
        "erase_sample": sample, "sample_values_found_before": before, "sample_values_found_after": after,
        "expiry_to_absence_s": round(absent_s, 2), "erase_tick": tick,
    }


def _scan(path: Path, needles: list[bytes]) -> int:
    """How many of ``needles`` occur in some file under ``path`` (every file: SST, WAL, MANIFEST…)."""
    left = set(needles)
    for root, _, names in os.walk(path):
        for name in names:
            if not left:
                return len(needles)
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            left = {x for x in left if x not in data}
    return len(needles) - len(left)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="20 000 mappings, a few seconds")
    ap.add_argument("--mappings", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--erase-sample", type=int, default=200)
    ap.add_argument("--gets", type=int, default=20_000)
    ap.add_argument("--dir", help="parent of the store's directory (default: a temporary directory)")
    a = ap.parse_args()
    n = 20_000 if a.smoke else a.mappings
    work = Path(tempfile.mkdtemp(prefix="bench-disk-store-", dir=a.dir))
    try:
        fig = run(n, a.partitions, min(a.batch, n), min(a.erase_sample, n), min(a.gets, n), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"bench": "disk_store", "smoke": a.smoke, **fig, "machine": H.machine()}))


if __name__ == "__main__":
    main()
