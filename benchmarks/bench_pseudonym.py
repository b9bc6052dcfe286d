"""Addresses (or identifiers) per second for every keyed pseudonymisation scheme, batched.

Prints exactly one JSON line.  Each figure is the best of ``--repeat`` runs of ``encrypt_many``
(``digest_many`` for HMAC) over a batch of ``--batch`` inputs, ipaddress objects in and out, on
one core.  Two address mixes:

- ``random``: uniformly random addresses (worst case for the ipcrypt-pfx prefix cache; the
  cache is cleared before every run, so every address pays all its AES blocks);
- ``pool``: addresses from 64 /24s (IPv4) or 64 /64s (IPv6), like an operator's pools, with a
  warm prefix cache (what a long-running stats agent sees).

The machine this runs on is shared: figures are noisy, compare them only with care.
Targets: ipcrypt-pfx >= 200k/s, ipcrypt-det >= 1M/s, HMAC >= 1M/s (judged in
docs/pseudonymisation.md "Speed").

    python benchmarks/bench_pseudonym.py            # ~20 s
    python benchmarks/bench_pseudonym.py --smoke    # tiny sizes, for the test suite
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agents  # noqa: F401,E402  (first: serves the compiled core when it matches the sources)
from stream.pseudonym import CryptoPan, HmacSha256, IpcryptDet, IpcryptPfx  # noqa: E402


def _addrs(rng: random.Random, n: int, family: int, mix: str):
    if mix == "random":
        if family == 4:
            return [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(n)]
        return [ipaddress.IPv6Address(rng.getrandbits(128)) for _ in range(n)]
    if family == 4:
        nets = [rng.getrandbits(24) << 8 for _ in range(64)]
        return [ipaddress.IPv4Address(rng.choice(nets) | rng.getrandbits(8)) for _ in range(n)]
    nets = [rng.getrandbits(64) << 64 for _ in range(64)]
    return [ipaddress.IPv6Address(rng.choice(nets) | rng.getrandbits(64)) for _ in range(n)]


def _rate(fn, n: int, repeat: int, before=None) -> float:
    best = float("inf")
    for _ in range(repeat):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return round(n / best) if best > 0 else 0.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    if args.smoke:
        args.batch, args.repeat = 64, 1
    n, rep = args.batch, args.repeat
    rng = random.Random(5)
    key32 = os.urandom(32)
    det, pfx, cpan = IpcryptDet(key32[:16]), IpcryptPfx(key32), CryptoPan(key32[::-1])
    out = {"bench": "pseudonym", "batch": n, "repeat": rep, "unit": "items/s, one core, best of repeat",
           "python": sys.version.split()[0], "smoke": bool(args.smoke)}
    for fam in (4, 6):
        rnd = _addrs(rng, n, fam, "random")
        pool = _addrs(rng, n, fam, "pool")
        out[f"ipcrypt_det_v{fam}"] = _rate(lambda: det.encrypt_many(rnd), n, rep)
        clear = (lambda: (pfx._cache4.clear(), pfx._cache6.clear()))
        out[f"ipcrypt_pfx_v{fam}_random"] = _rate(lambda: pfx.encrypt_many(rnd), n, rep, before=clear)
        pfx.encrypt_many(pool)  # warm the prefix cache, as a running agent would have it
        out[f"ipcrypt_pfx_v{fam}_pool"] = _rate(lambda: pfx.encrypt_many(pool), n, rep)
        out[f"cryptopan_v{fam}"] = _rate(lambda: cpan.encrypt_many(rnd), n, rep)
        small = rnd[: max(1, n // 16)]   # decryption is sequential per bit: keep it short
        out[f"ipcrypt_pfx_v{fam}_decrypt"] = _rate(lambda: pfx.decrypt_many(small), len(small), rep)
    # a stream agent's batches may be small (Faust ``take()``): per-call overhead shows here
    small_n = min(256, n)
    rnd4 = _addrs(rng, small_n, 4, "random")
    out["ipcrypt_pfx_v4_random_batch256"] = _rate(
        lambda: pfx.encrypt_many(rnd4), small_n, rep,
        before=lambda: pfx._cache4.clear())
    out["ipcrypt_det_v4_batch256"] = _rate(lambda: det.encrypt_many(rnd4), small_n, rep)
    ids = [f"user{i:07d}@isp.example".encode() for i in range(n)]
    h = HmacSha256(key32)
    out["hmac_pyca_copy"] = _rate(lambda: h.digest_many(ids), n, rep)
    out["hmac_stdlib_digest"] = _rate(lambda: [hmac.digest(key32, m, "sha256") for m in ids], n, rep)
    base = hmac.new(key32, digestmod=hashlib.sha256)

    def std_copy():
        for m in ids:
            c = base.copy()
            c.update(m)
            c.digest()
    out["hmac_stdlib_copy"] = _rate(std_copy, n, rep)
    out["targets_met"] = {
        "ipcrypt_pfx_200k": out["ipcrypt_pfx_v4_random"] >= 200_000,
        "ipcrypt_det_1M": out["ipcrypt_det_v4"] >= 1_000_000,
        "hmac_1M": out["hmac_pyca_copy"] >= 1_000_000,
    }
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
