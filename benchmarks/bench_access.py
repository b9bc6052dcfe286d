"""Cost of the lawful-access core per request, without Kafka: what the query agent adds on top
of the resolver and the broker round trip.

Prints exactly one JSON line.  For ``--requests`` LEK requests (no approval needed; signed
beforehand, as the authority would) it times, on one core:

- ``submit``: ``QueryDesk.submit`` (parse, Ed25519 verify, every check, token bucket);
- ``answer``: ``QueryDesk.answer`` with a constant resolver (HPKE seal to the authority);
- ``audit``: ``AuditChain.append`` of the events of both (SHA-256 + canonical JSON);
- ``verify``: ``stream.audit.verify`` over the whole resulting trail, per record;
- the per-request latency of submit + answer + audit (p50/p99, microseconds),
plus the size of the desk's serialised state after the run (nonces kept for the window).

The machine is shared with other busy processes: figures are noisy.

    python benchmarks/bench_access.py             # 2000 requests, a few seconds
    python benchmarks/bench_access.py --smoke     # tiny, for the test suite
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519  # noqa: E402

import agents  # noqa: F401,E402  (first: serves the compiled core when it matches the sources)
from stream.access import Authority, QueryDesk, Registry, request_body, sign_request  # noqa: E402
from stream.audit import AuditChain, canonical, verify  # noqa: E402

T0 = 1_780_000_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes for the test suite")
    args = ap.parse_args()
    n = 20 if args.smoke else args.requests

    sign, enc = ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    auth = Authority("bench-police", "bench", "SE", sign.public_key(), enc.public_key(),
                     frozenset({"lek-law-enforcement"}), per_hour=10**9, burst=10**6)
    desk = QueryDesk(Registry.build([auth], []))
    msgs = [sign_request(sign, request_body(
        authority="bench-police", request_number=str(i), basis="lek-law-enforcement", case_ref="BENCH-1",
        address=f"100.64.{i // 256 % 256}.{i % 256}", port=1024 + i % 60000, from_ms=T0 - 3_600_000,
        to_ms=T0, issued_ms=T0, nonce=secrets.token_hex(16))) for i in range(n)]
    result = {"matches": [{"subscriber": "sub-000000", "from_ms": T0 - 3_600_000, "to_ms": T0}]}

    def resolve(address, port, from_ms, to_ms):
        return result

    chain = AuditChain()
    trail: list[bytes] = []
    t_submit = t_answer = t_audit = 0.0
    lat = []
    for i, m in enumerate(msgs):
        now = T0 + i  # 1 ms apart: all fresh
        a0 = time.perf_counter()
        d = desk.submit(m, now)
        a1 = time.perf_counter()
        ans = desk.answer(d, resolve, now)
        canonical(ans.reply)
        a2 = time.perf_counter()
        trail.extend(chain.append(e, now) for e in d.events + ans.events)
        a3 = time.perf_counter()
        assert d.status == "ready", d.reason
        t_submit += a1 - a0
        t_answer += a2 - a1
        t_audit += a3 - a2
        lat.append(a3 - a0)
    v0 = time.perf_counter()
    verify(trail)
    t_verify = time.perf_counter() - v0
    lat.sort()
    print(json.dumps({
        "benchmark": "access",
        "requests": n,
        "submit_per_s": round(n / t_submit),
        "answer_per_s": round(n / t_answer),
        "audit_records": len(trail),
        "audit_append_per_s": round(len(trail) / t_audit),
        "audit_verify_per_s": round(len(trail) / t_verify),
        "p50_us": round(lat[len(lat) // 2] * 1e6),
        "p99_us": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6),
        "desk_state_bytes": len(json.dumps(desk.to_dict())),
        "noisy_shared_machine": True,
    }))


if __name__ == "__main__":
    main()
