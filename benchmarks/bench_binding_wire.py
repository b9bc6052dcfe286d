"""Bytes and µs per binding on the bindings topic: ``stream.binding_wire`` against the JSON codec
(``Binding.to_json`` / ``Binding.from_json``) it replaced, on the same bindings in the same run.

Bindings (a realistic mix, ``--n`` of them, cycled): RADIUS Start on an IPv4 address (subscriber,
session, NAS), RADIUS Stop with octet counters and session time, a delegated IPv6 /56, a DHCP
lease (until, hwaddr, client id, circuit/remote id), a NAT port block with inside address and
VRF.  Addresses differ per binding (no cache hit for every record; the worker's address caches
see repeats, which this understates).  Timed: encode of every binding, decode of every record,
best of ``--repeat`` runs in **process CPU time** (the machine is shared).  Decode includes the
full ``Binding`` validation in both codecs.  Prints one JSON line.

    python benchmarks/bench_binding_wire.py            # ~10 s
    python benchmarks/bench_binding_wire.py --smoke    # tiny sizes, for the test suite
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agents  # noqa: F401,E402  (first: serves the compiled core when it matches the sources)
from stream import binding_wire  # noqa: E402
from stream.model import Binding, parse_network  # noqa: E402

T0 = 1_795_300_000_000


def bindings(n: int, rng: random.Random) -> list[Binding]:
    out = []
    for i in range(n):
        sub = f"kund-{rng.randrange(100_000):05d}@isp.example"
        v4 = f"100.{64 + rng.randrange(64)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        at = T0 + i * 10
        k = i % 5
        if k == 0:
            b = Binding("radius", "start", "bench", parse_network(v4), sub, f"S-{i:08x}", "192.0.2.10", at)
        elif k == 1:
            b = Binding("radius", "stop", "bench", parse_network(v4), sub, f"S-{i:08x}", "192.0.2.10", at,
                        octets_in=rng.randrange(1 << 40), octets_out=rng.randrange(1 << 36),
                        session_time_s=rng.randrange(86400))
        elif k == 2:
            p = f"2001:db8:{rng.randrange(1 << 16):x}:{rng.randrange(256) << 8:x}::/56"
            b = Binding("radius", "start", "bench", parse_network(p), sub, f"S-{i:08x}", "192.0.2.10", at)
        elif k == 3:
            mac = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
            b = Binding("dhcp", "start", "bench", parse_network(v4), sub, None, None, at,
                        until_ms=at + 86_400_000, hwaddr=mac, client_id="01:" + mac,
                        circuit_id=f"ge-0/0/{rng.randrange(48)}.100", remote_id=f"olt-{rng.randrange(999)}")
        else:
            first = rng.randrange(15) * 4096 + 1024
            b = Binding("nat", "start", "bench", parse_network(f"203.0.113.{rng.randrange(256)}"), None, None,
                        "cgn-1", at, inside_ip=ipaddress.ip_address(f"10.{rng.randrange(256)}.{rng.randrange(256)}.1"),
                        port_first=first, port_last=first + 4095, vrf=str(rng.randrange(8)))
        out.append(b)
    return out


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def measure(bs: list[Binding], repeat: int) -> dict:
    n = len(bs)
    out = {}
    for name, enc, dec in (("json", Binding.to_json, Binding.from_json),
                           ("wire", binding_wire.encode, binding_wire.decode)):
        raws = [enc(b) for b in bs]
        assert [dec(r) for r in raws] == bs, name
        binding_wire._NET_CACHE.clear()
        te = _best(lambda: [enc(b) for b in bs], repeat)

        def decode_all() -> None:
            binding_wire._NET_CACHE.clear()  # noqa: B023 - addresses new to the reader, as in the worker's first pass
            from stream import model
            model._NET_CACHE.clear()
            for r in raws:  # noqa: B023
                dec(r)  # noqa: B023

        td = _best(decode_all, repeat)
        out[name] = {"bytes_per_binding": round(sum(map(len, raws)) / n, 1),
                     "encode_us": round(te / n * 1e6, 2), "decode_us": round(td / n * 1e6, 2),
                     "encode_decode_us": round((te + td) / n * 1e6, 2)}
    j, w = out["json"], out["wire"]
    out["ratio"] = {"bytes": round(w["bytes_per_binding"] / j["bytes_per_binding"], 3),
                    "encode_decode_time": round(w["encode_decode_us"] / j["encode_decode_us"], 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.n, a.repeat = 200, 1
    bs = bindings(a.n, random.Random(a.seed))
    fig = {"bench": "binding_wire", "smoke": a.smoke, "bindings": a.n, "repeat": a.repeat,
           **measure(bs, a.repeat),
           "machine": {"cores": os.cpu_count(), "load1": round(os.getloadavg()[0], 2),
                       "python": platform.python_version()}}
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
