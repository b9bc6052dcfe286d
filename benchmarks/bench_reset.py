"""A NAS's Accounting-On/Off on a large table: every key scanned, against the reset index.

A reset closes the open intervals of one NAS (``stream.intervals.apply_reset``).  Ingest writes
it to every bindings partition, and each partition's owner must find those intervals among its
keys.  Scanning opens every key of the operator in the partition, with the event loop blocked;
the index (``stream.reset_index``) opens only the keys it lists for that NAS.

One worker's ``Pipeline`` (its ``TableWriter`` and memory table, no broker) is filled with
``--keys`` RADIUS sessions in one partition: ``--open`` on NAS A, as many on NAS B, the rest on
other NASes.  Then in the same run:

- ``scan_s``: the reset of NAS A with the index not trusted (as after a restore, before the
  schedule rebuild has noted every value; and always in disk mode), process CPU, through the
  stage's ``handle_batch``; ``scan_loop_max_gap_ms``: the longest the event loop went without a
  turn meanwhile (the scan lets it run every ``RESET_CHUNK`` keys);
- ``indexed_s``: the reset of NAS B through the index, process CPU;
- ``upkeep_us``: per binding, what keeping the index costs on the hot path (start + stop pairs on
  fresh addresses, with the index against a no-op stand-in; best of ``--repeat``);
- ``index_bytes_per_key``: the index's memory per open session (tracemalloc).

    python benchmarks/bench_reset.py                   # 100 000 keys, ~30 s
    python benchmarks/bench_reset.py --keys 1000000    # ~5 min, ~3 GB
    python benchmarks/bench_reset.py --smoke           # tiny, for the test suite
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import machine  # noqa: E402

import agents  # noqa: F401,E402  (first: serves the compiled core when it matches the sources)
from stream import intervals as iv  # noqa: E402
from stream.model import Binding  # noqa: E402
from stream.reset_index import ResetIndex  # noqa: E402

NAS_A, NAS_B = "192.0.2.1", "192.0.2.2"
OTHERS = [f"192.0.2.{i}" for i in range(10, 42)]


def address(i: int) -> ipaddress.IPv4Network:
    return ipaddress.ip_network((int(ipaddress.ip_address("10.0.0.0")) + i, 32))


def start(i: int, nas: str, at_ms: int) -> Binding:
    return Binding(kind="radius", action="start", operator="op", ip=address(i), subscriber=f"kund-{i:08d}@isp.example",
                   session=f"S-{i:08x}", nas=nas, at_ms=at_ms)


def reset(nas: str, at_ms: int) -> Binding:
    return Binding(kind="radius", action="reset", operator="op", ip=None, subscriber=None, session=None, nas=nas,
                   at_ms=at_ms)


class NoIndex(ResetIndex):
    """The writer's index with nothing kept: what the hot path paid before it."""

    def update(self, *a, **k) -> None:
        pass


def pipeline(tmp: Path):
    from agents.app import NO_PARTS, Pipeline
    from agents.runtime import OperatorRuntime
    from agents.settings import Settings

    s = Settings(bootstrap="127.0.0.1:1", app_id="br", topic_prefix="br", operators_dir=tmp / "ops",
                 keys_dir=tmp / "keys", data_dir=tmp / "data", partitions=1)
    p = Pipeline(s, {"op": OperatorRuntime("op", ttl_ms=86_400_000, stats_key=b"k" * 32)}, parts=NO_PARTS)
    p.table.active, p.table.restored = {0}, True
    counts: dict = {}
    p.on_count.append(lambda name, n: counts.__setitem__(name, counts.get(name, 0) + n))
    p.test_counts = counts
    return p


def cpu(f) -> float:
    t = time.process_time()
    f()
    return time.process_time() - t


def as_stage(p, b: Binding) -> tuple[float, float]:
    """``b`` through ``TableWriter.handle_batch``, as the mapping stage hands it over: (process
    CPU, the longest the event loop went without a turn meanwhile)."""
    import asyncio

    from stream import binding_wire

    rec = argparse.Namespace(topic=p.names.bindings, partition=0, offset=0, key=b"k", value=binding_wire.encode(b),
                             headers=[])

    async def run() -> tuple[float, float]:
        gap, done = 0.0, False

        async def ticker() -> None:
            nonlocal gap
            last = time.monotonic()
            while not done:
                await asyncio.sleep(0)
                t = time.monotonic()
                gap, last = max(gap, t - last), t

        tick = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        c = time.process_time()
        await p.writer.handle_batch([rec])
        c = time.process_time() - c
        done = True
        await tick
        return c, gap
    return asyncio.run(run())


def closed_on(p, nas: str) -> int:
    """Sessions of ``nas`` closed in the table (read back: the reset really did its work)."""
    op = p.operators["op"]
    n = 0
    for k in list(p.table.data.keys()):
        _, ivs = p.writer.load(op, k)
        n += sum(1 for i in ivs if i.nas == nas and i.end_ms is not None)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=100_000, help="sessions (table keys) in the partition")
    ap.add_argument("--open", type=int, default=100, help="open sessions on each of the two reset NASes")
    ap.add_argument("--repeat", type=int, default=5, help="upkeep: best of this many rounds")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    a = ap.parse_args()
    if a.smoke:
        a.keys, a.open, a.repeat = 400, 10, 1
    if a.open < 1 or a.keys < 2 * a.open or a.repeat < 1:
        ap.error("need --open >= 1, --keys >= 2 × --open and --repeat >= 1")

    with tempfile.TemporaryDirectory() as d:
        p = pipeline(Path(d))
        w = p.writer
        w.resets.ready_epoch = p.table.epoch
        now = int(time.time() * 1000)
        t0 = now - 3_600_000
        fill_t = time.monotonic()
        for i in range(a.keys):
            nas = NAS_A if i < a.open else NAS_B if i < 2 * a.open else OTHERS[i % len(OTHERS)]
            w.apply_binding(0, start(i, nas, t0 + i % 1_000_000), now)
            if i and i % 200_000 == 0:
                print(f"filled {i}/{a.keys} keys ({time.monotonic() - fill_t:.0f} s)", file=sys.stderr)
        p.outbox._items.clear()  # the changelog writes a broker would take; not measured here
        indexed_keys = len(w.resets)

        w.resets.ready_epoch = None  # not trusted: the writer scans
        scan_s, loop_gap_s = as_stage(p, reset(NAS_A, now - 1_000))
        w.resets.ready_epoch = p.table.epoch
        indexed_s = cpu(lambda: w.apply_binding(0, reset(NAS_B, now - 1_000), now))
        counts = dict(p.test_counts)
        closed_a, closed_b = closed_on(p, NAS_A), closed_on(p, NAS_B)

        def pairs(index: ResetIndex, base: int, n: int) -> float:
            w.resets = index
            index.ready_epoch = p.table.epoch

            def run() -> None:
                for i in range(base, base + n):
                    b = start(i, OTHERS[i % len(OTHERS)], t0 + 5_000)
                    w.apply_binding(0, b, now)
                    w.apply_binding(0, Binding(kind="radius", action="stop", operator="op", ip=b.ip,
                                               subscriber=b.subscriber, session=b.session, nas=b.nas,
                                               at_ms=t0 + 6_000), now)
                p.outbox._items.clear()
            return cpu(run) / (2 * n) * 1e6

        n = max(50, min(5_000, a.keys // 20))
        with_idx, without = [], []
        kept = w.resets  # the filled index: its NAS sets exist, as in a running worker
        for r in range(a.repeat):
            base = a.keys + 2 * r * n
            if r % 2:  # alternate which goes first: the second of a round runs on a warmer heap
                without.append(pairs(NoIndex(), base + n, n))
                with_idx.append(pairs(kept, base, n))
            else:
                with_idx.append(pairs(kept, base, n))
                without.append(pairs(NoIndex(), base + n, n))

        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        idx = ResetIndex()
        keys = list(p.table.data.keys())[:indexed_keys]
        one = (iv.Interval(start_ms=t0, end_ms=None, holder="h", nas=OTHERS[0], last_ms=t0),)
        for k in keys:
            idx.update(0, "op", k, (), one)
        index_bytes = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()

    print(json.dumps({
        "bench": "reset", "smoke": a.smoke, "keys": a.keys, "open_per_nas": a.open,
        "indexed_keys_before": indexed_keys,
        "scan_s": round(scan_s, 4), "indexed_s": round(indexed_s, 5),
        "scan_us_per_key": round(scan_s / a.keys * 1e6, 2),
        "scan_loop_max_gap_ms": round(loop_gap_s * 1000, 1),
        "speedup": round(scan_s / indexed_s, 1) if indexed_s > 0 else None,
        "closed": {"scanned_nas": closed_a, "indexed_nas": closed_b},
        "paths": {k: v for k, v in counts.items() if k.startswith("resets:")},
        "upkeep_us": round(min(with_idx) - min(without), 2),
        "binding_us": {"with_index": round(min(with_idx), 2), "without": round(min(without), 2)},
        "index_bytes_per_key": round(index_bytes / max(1, len(keys)), 1),
        "machine": machine()}))


if __name__ == "__main__":
    main()
