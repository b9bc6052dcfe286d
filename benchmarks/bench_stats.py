"""Records per second of the statistics agent's pure path, per address scheme, on one core.

What is timed, per batch of ``--batch`` bindings (the worker's default batch is 2000): decode of
each binding as the agent reads the bindings topic (``stream.binding_wire``, and the binding's
JSON for its record id; ``--json``: the JSON records of releases before it, whose bytes are the
id's input as read), ``StatsBuilder.build_many`` (HMAC subscriber pseudonyms and record ids, one ``encrypt_many`` per epoch for the addresses
and the aggregate cells), ``Aggregator.add`` of every result, and JSON encoding of every record.
Kafka is not involved (the worker's end-to-end rate is ``benchmarks/bench_e2e.py``'s business).

Bindings: RADIUS starts/stops of 5000 subscribers on addresses from 64 IPv4 /24s, one in four
also with a delegated IPv6 /56 binding, all in one key epoch (the usual case).  Figures are the
best of ``--repeat`` runs measured in **process CPU time** (``time.process_time``): the machine
is shared with other busy processes, and wall-clock rates there mostly measure the neighbours.
CPU-time rates are what one dedicated core would do; they are still noisy (caches, turbo).

    python benchmarks/bench_stats.py            # ~15 s
    python benchmarks/bench_stats.py --smoke    # tiny sizes, for the test suite
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agents  # noqa: F401,E402  (first: serves the compiled core when it matches the sources)
from stream import binding_wire  # noqa: E402
from stream.aggregate import Aggregator  # noqa: E402
from stream.config import AddressScheme, load_operators  # noqa: E402
from stream.keyring import Keyring, epoch_of  # noqa: E402
from stream.model import Binding, parse_network  # noqa: E402
from stream.stats import StatsBuilder  # noqa: E402

T0 = 1_795_300_000_000
SCHEMES = ("ipcrypt-pfx", "cryptopan", "ipcrypt-det", "truncate:/24,/48", "drop")


def bindings(n: int, rng: random.Random) -> list[bytes]:
    pools = [f"100.{64 + i // 256}.{i % 256}" for i in range(64)]
    out = []
    for i in range(n):
        sub = f"kund-{rng.randrange(5000):05d}@isp.example"
        if i % 4 == 3:
            ip = f"2001:db8:{rng.randrange(1 << 16):x}:{rng.randrange(256) << 8:x}::/56"
        else:
            ip = f"{rng.choice(pools)}.{rng.randrange(1, 255)}"
        stop = i % 2 == 1
        b = Binding(kind="radius", action="stop" if stop else "start", operator="bench", ip=parse_network(ip),
                    subscriber=sub, session=f"S-{i}", nas="192.0.2.10", at_ms=T0 + i * 10,
                    octets_in=1000 * i if stop else None, octets_out=2000 * i if stop else None)
        out.append(b.to_json())
    return out


def run(scheme: str, raw: list[bytes], batch: int, repeat: int) -> float:
    wire = not binding_wire.is_json(raw[0])
    base = load_operators(Path(__file__).resolve().parents[1] / "config" / "operators")["framsteget"]
    st = dataclasses.replace(base.statistics, address=AddressScheme.parse(scheme, where="bench"))
    pol = dataclasses.replace(base, name="bench", statistics=st)
    ring = Keyring.create("bench", bytes(range(32)), epoch=epoch_of(T0, pol.key_epoch_ms))
    builder = StatsBuilder(pol, ring)
    best = 0.0
    for _ in range(repeat):
        agg = Aggregator({"bench": 10}, grace_ms=300_000)
        t = time.process_time()
        for i in range(0, len(raw), batch):
            chunk = raw[i:i + batch]
            bs = [binding_wire.decode(v) for v in chunk]
            ids = [b.to_json() for b in bs] if wire else chunk  # as agents.stats_agent.handle_batch
            for x in builder.build_many(bs, ids):
                agg.add(x, T0)
                json.dumps(x.record, separators=(",", ":")).encode()
        best = max(best, len(raw) / max(time.process_time() - t, 1e-9))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="bindings per run")
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (test suite)")
    ap.add_argument("--json", action="store_true", help="bindings as JSON records (the previous wire form)")
    a = ap.parse_args()
    if a.smoke:
        a.n, a.batch, a.repeat = 200, 50, 1
    raw = bindings(a.n, random.Random(5))
    if not a.json:
        raw = [binding_wire.encode(Binding.from_json(v)) for v in raw]
    fig = {"bindings": a.n, "batch": a.batch, "smoke": a.smoke, "wire": "json" if a.json else "binary"}
    for s in SCHEMES:
        fig["records_per_s_" + s.split(":")[0].replace("-", "_")] = round(run(s, raw, a.batch, a.repeat))
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
