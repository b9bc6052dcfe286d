"""Interval-index micro-benchmark: table updates and lookups with 1M and 10M live mappings.

The worker keeps one value per address slot in a dict (Faust's memory store) and does, per
binding, ``get → intervals.decode → intervals.apply → intervals.sweep → intervals.encode → put``
and, per lookup, ``candidate_keys → get → decode → during``.  This does exactly that on a
plain dict filled with ``--sizes`` live mappings (one RADIUS interval per IPv4 address, every
value a distinct bytes object, as in the store), single core, no Kafka:

- ``update_ops``: Interim-Updates of existing sessions (random keys);
- ``insert_ops``: Starts on fresh addresses (a new key each);
- ``lookup_ops``: point lookups of random live addresses (``during(ivs, T, T+1)``), with
  per-lookup p50/p99 (µs, wall clock: on a loaded machine this includes time the process
  was not scheduled);
- every rate also per CPU-second of this process (``*_per_cpu_s``), steadier than wall-clock
  rates when the machine is shared;
- ``fill_s`` and ``mem_bytes_per_mapping`` (RSS growth of the process ÷ mappings: the cost of
  a mapping in the in-memory store, keys and dict included).

Each size runs in a child process, so sizes do not share memory.  If a size does not fit
(``--max-rss-gb``) it is reported as skipped.  Prints exactly one JSON line.  The machine is
shared: figures are noisy.

    python benchmarks/bench_intervals.py [--sizes 1000000 10000000] [--ops 20000]
    python benchmarks/bench_intervals.py --smoke
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import agents  # noqa: F401,E402  (first: serves the compiled core when it matches the sources)
from stream import intervals as iv  # noqa: E402
from stream.model import Binding  # noqa: E402

OP = "connect2ip"
T0 = 1_790_000_000_000
TTL = 24 * 3600 * 1000


def _addr(i: int) -> str:
    i += 1 << 24  # 1.0.0.0 upwards: any i < 2**31 is a distinct unicast-looking IPv4 address
    return f"{i >> 24 & 255}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def _value(i: int) -> bytes:
    """iv.encode of the open RADIUS interval of mapping ``i``: what the worker would store."""
    return iv.encode((iv.Interval(start_ms=T0, end_ms=None, holder=f"kund-{i}@isp.example",
                                  session=f"192.0.2.10/{i:08X}", nas="192.0.2.10", last_ms=T0 + 600_000),))


def _binding(i: int, action: str, at_ms: int) -> Binding:
    return Binding(kind="radius", action=action, operator=OP, ip=ipaddress.ip_network(_addr(i)),
                   subscriber=f"kund-{i}@isp.example", session=f"192.0.2.10/{i:08X}", nas="192.0.2.10",
                   at_ms=at_ms, session_time_s=(at_ms - T0) // 1000 if action == "update" else None)


def one_size(n: int, ops: int) -> dict:
    from _harness import rss_kb

    gc.collect()
    rss0 = rss_kb(os.getpid())
    d: dict[bytes, bytes] = {}
    prefix = f"{OP}|ip|"
    t = time.perf_counter()
    for i in range(n):
        d[(prefix + _addr(i)).encode()] = _value(i)
    fill_s = time.perf_counter() - t
    rss1 = rss_kb(os.getpid())
    assert iv.decode(d[(prefix + _addr(n - 1)).encode()])[0].holder == f"kund-{n - 1}@isp.example"

    rng = random.Random(n)
    idx = [rng.randrange(n) for _ in range(ops)]
    now = T0 + 900_000

    def update(i: int, action: str, at: int) -> None:
        bnd = _binding(i, action, at)
        key = iv.table_key(OP, iv.slot_of(bnd), bnd.ip).encode()
        raw = d.get(key)
        old = iv.decode(raw) if raw is not None else ()
        new, _ = iv.apply(old, bnd)
        kept, _ = iv.sweep(new, now, ttl_ms=TTL)
        if kept != old:
            d[key] = iv.encode(kept)
            iv.next_expiry_ms(kept, ttl_ms=TTL)

    bnds_at = T0 + 700_000
    t, c = time.perf_counter(), time.process_time()
    for i in idx:
        update(i, "update", bnds_at)
    update_ops = ops / (time.perf_counter() - t)
    update_cpu = ops / max(time.process_time() - c, 1e-9)
    assert iv.decode(d[(prefix + _addr(idx[0])).encode()])[0].last_ms == bnds_at

    t, c = time.perf_counter(), time.process_time()
    for k in range(ops):
        update(n + k, "start", bnds_at)
    insert_ops = ops / (time.perf_counter() - t)
    insert_cpu = ops / max(time.process_time() - c, 1e-9)

    addrs = [ipaddress.ip_address(_addr(i)) for i in idx]
    found = 0
    lat = []
    clock = time.perf_counter
    t, c = time.perf_counter(), time.process_time()
    for addr in addrs:
        t1 = clock()
        out = []
        for key in iv.candidate_keys(OP, "ip", addr):
            raw = d.get(key.encode())
            if raw is not None:
                out.extend(iv.decode(raw))
        found += bool(iv.during(out, T0 + 1000, T0 + 1001))
        lat.append(clock() - t1)
    lookup_ops = ops / (time.perf_counter() - t)
    lookup_cpu = ops / max(time.process_time() - c, 1e-9)
    lat.sort()
    assert found == ops, "every looked-up address is held at that instant"
    return {"mappings": n, "fill_s": round(fill_s, 2), "update_ops": round(update_ops), "insert_ops": round(insert_ops),
            "lookup_ops": round(lookup_ops), "update_ops_per_cpu_s": round(update_cpu),
            "insert_ops_per_cpu_s": round(insert_cpu), "lookup_ops_per_cpu_s": round(lookup_cpu),
            "lookup_p50_us": round(lat[len(lat) // 2] * 1e6, 1), "lookup_p99_us": round(lat[int(len(lat) * 0.99)] * 1e6, 1),
            "mem_bytes_per_mapping": round((rss1 - rss0) * 1024 / n),
            "rss_mb": round(rss_kb(os.getpid()) / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--ops", type=int, default=20_000, help="timed operations of each kind per size")
    ap.add_argument("--max-rss-gb", type=float, default=8.0, help="skip sizes estimated to need more memory")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(one_size(a.child, a.ops)))
        return
    if a.smoke:
        a.sizes, a.ops = [2000], 200
    from _harness import machine

    results, skipped = [], []
    for n in a.sizes:
        if n * 400 / 2**30 > a.max_rss_gb:  # ~300 B/mapping measured; 400 leaves a margin
            skipped.append({"mappings": n, "reason": f"estimated > {a.max_rss_gb} GB"})
            continue
        p = subprocess.run([sys.executable, __file__, "--child", str(n), "--ops", str(a.ops)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            skipped.append({"mappings": n, "reason": (p.stderr.strip().splitlines() or ["failed"])[-1][:200]})
            continue
        results.append(json.loads(p.stdout))
    print(json.dumps({"bench": "intervals", "smoke": a.smoke, "ops": a.ops, "sizes": results, "skipped": skipped,
                      "machine": machine()}))


if __name__ == "__main__":
    main()
