"""Synthetic RADIUS accounting traffic with its ground truth (demo, tests, benchmarks).

Deterministic for a seed and a reference time: ``now_ms`` is an argument like everywhere in the
core.  Per operator, a pool of IPv4 addresses (each paired with a delegated IPv6 /56) smaller
than the subscriber base, so addresses are re-used by different subscribers over time.  Each
address sees back-to-back sessions (Start, Interim-Updates, Stop) separated by short gaps; the
last session of an address may still be open at ``now_ms``.  The truth is kept as
``[start_ms, end_ms)`` per address and answers the same questions the worker answers, so the
demo can check every lookup against what it fed rather than against itself.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from typing import Iterator, Optional

MINUTE = 60_000


@dataclass(frozen=True)
class TruthInterval:
    operator: str
    v4: str
    v6: str  # delegated prefix
    subscriber: str
    start_ms: int
    end_ms: Optional[int]  # None = still open at now_ms


@dataclass
class Traffic:
    records: dict[str, list[dict]] = field(default_factory=dict)  # operator → radius-json records
    truth: list[TruthInterval] = field(default_factory=list)
    now_ms: int = 0

    @property
    def record_count(self) -> int:
        return sum(len(v) for v in self.records.values())

    def holder(self, operator: str, v4: str, at_ms: int) -> Optional[str]:
        for t in self.truth:
            if t.operator == operator and t.v4 == v4 and t.start_ms <= at_ms < (t.end_ms or self.now_ms + 1):
                return t.subscriber
        return None

    def holder_v6(self, operator: str, addr: str, at_ms: int) -> Optional[str]:
        a = ipaddress.ip_address(addr)
        for t in self.truth:
            if t.operator == operator and a in ipaddress.ip_network(t.v6) and \
                    t.start_ms <= at_ms < (t.end_ms or self.now_ms + 1):
                return t.subscriber
        return None

    def queries(self, n: int, rng: random.Random) -> Iterator[dict]:
        """Point queries (IPv4 and IPv6 inside delegated prefixes) with the expected holder
        (``None`` = nobody held it then)."""
        for i in range(n):
            t = rng.choice(self.truth)
            # mostly inside an interval, sometimes just before/after it (gaps, re-use edges)
            end = t.end_ms or self.now_ms
            at = rng.choice([t.start_ms, end - 1, rng.randrange(t.start_ms, max(end, t.start_ms + 1)),
                             t.start_ms - 1, end])
            at = min(at, self.now_ms - 1)
            if i % 3 == 2:
                net = ipaddress.ip_network(t.v6)
                addr = str(net.network_address + rng.randrange(1, 2**64))
                yield {"operator": t.operator, "ip": addr, "at_ms": at,
                       "expect": self.holder_v6(t.operator, addr, at)}
            else:
                yield {"operator": t.operator, "ip": t.v4, "at_ms": at,
                       "expect": self.holder(t.operator, t.v4, at)}


def generate(operators: list[str], *, now_ms: int, seed: int = 7, addresses_per_operator: int = 24,
             subscribers_per_operator: int = 40, span_ms: int = 150 * MINUTE,
             identity: Optional[dict[str, str]] = None) -> Traffic:
    """``identity``: operator → the RADIUS attribute its profile identifies subscribers by
    (default User-Name); the truth records that attribute's value as the holder."""
    rng = random.Random(seed)
    tr = Traffic(now_ms=now_ms)
    base = (now_ms - span_ms - 10 * MINUTE) // 1000 * 1000  # RADIUS times are whole seconds
    for oi, op in enumerate(operators):
        recs: list[dict] = []
        subs = [f"{op}-kund-{i:04d}@isp.example" for i in range(subscribers_per_operator)]
        for a in range(addresses_per_operator):
            v4 = str(ipaddress.ip_address("100.64.0.0") + (oi << 12) + a + 1)
            v6 = f"2001:db8:{0x100 + oi:x}:{a:x}00::/56"
            t = base + rng.randrange(0, 20 * MINUTE, 1000)
            n = 0
            prev = None
            while t < now_ms - 2 * MINUTE:
                sub = rng.choice([s for s in subs if s != prev])
                prev = sub
                n += 1
                sid = f"{oi:02X}{a:04X}-{n:08X}"
                nas = f"192.0.2.{10 + oi}"
                dur = rng.randrange(5 * MINUTE, 40 * MINUTE) // 1000 * 1000
                common = {"User-Name": sub, "Acct-Session-Id": sid, "NAS-IP-Address": nas,
                          "Framed-IP-Address": v4, "Delegated-IPv6-Prefix": v6,
                          "Calling-Station-Id": f"02:00:5e:{oi:02x}:{a:02x}:{n % 256:02x}"}
                recs.append({**common, "Acct-Status-Type": "Start", "Event-Timestamp": t // 1000})
                open_ = t + dur >= now_ms
                end = min(t + dur, now_ms - MINUTE)
                k = 1
                while t + k * 10 * MINUTE < end:
                    at = t + k * 10 * MINUTE
                    recs.append({**common, "Acct-Status-Type": "Interim-Update", "Event-Timestamp": at // 1000,
                                 "Acct-Session-Time": (at - t) // 1000, "Acct-Input-Octets": rng.randrange(10**6, 10**9),
                                 "Acct-Output-Octets": rng.randrange(10**6, 10**9)})
                    k += 1
                holder = common[(identity or {}).get(op, "User-Name")]
                if open_:
                    tr.truth.append(TruthInterval(op, v4, v6, holder, t, None))
                    break
                recs.append({**common, "Acct-Status-Type": "Stop", "Event-Timestamp": (t + dur) // 1000,
                             "Acct-Session-Time": dur // 1000, "Acct-Input-Octets": rng.randrange(10**6, 10**9),
                             "Acct-Output-Octets": rng.randrange(10**6, 10**9), "Acct-Terminate-Cause": "User-Request"})
                tr.truth.append(TruthInterval(op, v4, v6, holder, t, t + dur))
                t = t + dur + rng.choice([0, 0, 1000, 30_000, 5 * MINUTE])
        recs.sort(key=lambda r: r["Event-Timestamp"])
        tr.records[op] = recs
    return tr
