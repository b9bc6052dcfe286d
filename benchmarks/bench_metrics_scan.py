"""Cost of a ``/metrics`` scrape: the compliance scan walks this worker's partitions of the
mapping table and opens every sealed value (``agents.vault.Vault.open``: AES-256-GCM + the format-2 decode).

Prints exactly one JSON line: the table size (keys, one closed session each), the first scan
(every value opened) and values opened per second, a full ``/metrics`` render when no value
changed (summaries reused), a rescan after 1 % of the values changed, the exposition size, and
the worker's way of walking: the background walk (``ComplianceWalk.walk_in_background``, 2 ms slices)
after another 1 % changed, beside a task that sleeps 1 ms at a time — ``loop_max_block_ms`` is
the longest the event loop was held (what a lookup answer could wait behind the walk).  No Kafka: the table is an in-memory stand-in with the store layout
``agents.metrics`` reads (``data``, ``active``, ``key_partition()``), filled with values sealed
by a real ``Vault``.  The machine is shared with other busy processes: figures are noisy.

    python benchmarks/bench_metrics_scan.py            # 50 000 keys
    python benchmarks/bench_metrics_scan.py --smoke    # 300 keys, for the test suite
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.metrics import Metrics  # noqa: E402
from agents.topics import Topics  # noqa: E402
from agents.vault import Vault  # noqa: E402
from stream import intervals as iv  # noqa: E402
from stream.config import load_operators  # noqa: E402

H = 3_600_000
NOW = 1_780_000_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=50_000)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    n = 300 if a.smoke else a.keys
    repo = Path(__file__).resolve().parents[1]
    policies = load_operators(repo / "config" / "operators")
    name = "connect2ip"
    ttl = 23 * H
    with tempfile.TemporaryDirectory() as d:
        vault = Vault.open_or_create(name, Path(d), ttl_ms=ttl, grace_ms=3000, now_ms=NOW)
        data, kp = {}, {}
        base = int(ipaddress.IPv4Address("100.64.0.0"))
        for i in range(n):
            net = ipaddress.ip_network(ipaddress.IPv4Address(base + i))
            end = NOW - (i % 1000) * 60_000
            ivs = (iv.Interval(start_ms=end - 600_000, end_ms=end, holder=f"sub{i}@isp.example",
                               session=f"nas/{i}", nas="nas", last_ms=end),)
            key = vault.key("ip", net)
            data[key] = vault.seal(key, net, ivs, until_ms=end + ttl, now_ms=NOW)
            kp[key] = i % 4
        table = SimpleNamespace(data=data, active={0, 1, 2, 3}, key_partition=lambda: kp)
        ops = {name: SimpleNamespace(name=name, ttl_ms=ttl, stale_after_ms=24 * H, policy=policies[name])}
        m = Metrics(ops, clock=lambda: NOW, table=table, names=Topics("bench"), vaults={name: vault})
        m.compliance.open_budget = n  # the first scan opens every value
        t0 = time.perf_counter()
        _, states = m.scan(now_ms=NOW)
        scan_s = time.perf_counter() - t0
        assert states[name].intervals == n and m.compliance.scan_errors == 0 and m.compliance.scan_pending == 0
        t0 = time.perf_counter()
        m.compliance._scan = (-1e9, 0, {})  # force a fresh scan inside the render: values unchanged, summaries reused
        text = m.render()
        render_s = time.perf_counter() - t0
        changed = n // 100  # 1 % of the keys rewritten between scrapes
        for key in list(data)[:changed]:
            data[key] = bytes(data[key])  # a new value object (same content): opened again
        t0 = time.perf_counter()
        m.scan(now_ms=NOW)
        rescan_s = time.perf_counter() - t0
        for key in list(data)[changed:2 * changed]:
            data[key] = bytes(data[key])
        walk_s, block_ms = asyncio.run(_background_walk(m))
        assert m.compliance._scan[2][name].intervals == n and m.compliance.scan_pending == 0
    print(json.dumps({"keys": n, "first_scan_s": round(scan_s, 4), "open_per_s": round(n / scan_s),
                      "cached_render_s": round(render_s, 4), "rescan_1pct_changed_s": round(rescan_s, 4),
                      "exposition_bytes": len(text), "oldest_age_s": states[name].age_ms(NOW) // 1000,
                      "background_walk_s": round(walk_s, 3), "background_walk_busy_s": round(m.compliance.scan_seconds, 3),
                      "loop_max_block_ms": round(block_ms, 2)}))


async def _background_walk(m: Metrics) -> tuple[float, float]:
    """One background walk beside a 1 ms ticker: (walk wall seconds, longest loop block in ms)."""
    m.compliance.background = True
    m.compliance._scan = (-1e9, None, {})
    done = False
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - t - 0.001)

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    await m.compliance.walk_in_background()
    walk_s = time.perf_counter() - t0
    done = True
    await tick
    return walk_s, worst * 1000


if __name__ == "__main__":
    main()
