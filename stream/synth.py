"""Synthetic RADIUS, Kea DHCP and CGNAT traffic with its ground truth (demo, tests, benchmarks).

Deterministic for a seed and a reference time: ``now_ms`` is an argument like everywhere in the
core.  Per operator, a pool of IPv4 addresses (each paired with a delegated IPv6 /56) smaller
than the subscriber base, so addresses are re-used by different subscribers over time.  Each
address sees back-to-back sessions (Start, Interim-Updates, Stop) separated by short gaps; the
last session of an address may still be open at ``now_ms``.  The truth is kept as
``[start_ms, end_ms)`` per address and answers the same questions the worker answers, so the
demo can check every lookup against what it fed rather than against itself.

Beside RADIUS, each operator has a small DHCP pool (Kea memfile rows: one lease per client,
``[cltt, expire)``, identified by the client's hwaddr) and a CGNAT (A10 CEF port-batch
allocated/freed lines) whose inside addresses are RADIUS- or DHCP-held: each port block lies
inside one ended holding of its inside address, so a public address + port at an instant has
exactly one subscriber behind it, found through the chain.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
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


@dataclass(frozen=True)
class PortBlock:
    """A CGNAT port block: ``public:[port_first, port_last]`` carried ``inside``'s traffic."""
    operator: str
    public: str
    port_first: int
    port_last: int
    inside: str
    start_ms: int
    end_ms: int


#: Kea's memfile header for IPv4 leases (the columns a recent kea-dhcp4 writes)
KEA4_HEADER = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context"


@dataclass
class Traffic:
    records: dict[str, list[dict]] = field(default_factory=dict)  # operator → radius-json records
    truth: list[TruthInterval] = field(default_factory=list)
    now_ms: int = 0
    dhcp: dict[str, list[str]] = field(default_factory=dict)  # operator → kea-leases4.csv lines (header first)
    leases: list[TruthInterval] = field(default_factory=list)  # DHCP truth (v6 "", subscriber = hwaddr)
    nat: dict[str, list[str]] = field(default_factory=dict)  # operator → A10 CEF syslog lines
    blocks: list[PortBlock] = field(default_factory=list)

    @property
    def record_count(self) -> int:
        return sum(len(v) for v in self.records.values())

    @property
    def dhcp_count(self) -> int:
        return sum(len(v) - 1 for v in self.dhcp.values())

    @property
    def nat_count(self) -> int:
        return sum(len(v) for v in self.nat.values())

    def holder(self, operator: str, v4: str, at_ms: int) -> Optional[str]:
        """Who held IPv4 ``v4`` at ``at_ms``: a RADIUS session or a DHCP lease (``None``: nobody)."""
        for t in (*self.truth, *self.leases):
            if t.operator == operator and t.v4 == v4 and t.start_ms <= at_ms < (t.end_ms or self.now_ms + 1):
                return t.subscriber
        return None

    def nat_holder(self, operator: str, public: str, port: int, at_ms: int) -> Optional[str]:
        """Who was behind ``public:port`` at ``at_ms``: the holder of the block's inside address then."""
        for b in self.blocks:
            if b.operator == operator and b.public == public and b.port_first <= port <= b.port_last \
                    and b.start_ms <= at_ms < b.end_ms:
                return self.holder(operator, b.inside, at_ms)
        return None

    def nat_queries(self, n: int, rng: random.Random) -> Iterator[dict]:
        """Public address + port at an instant inside a block, with the expected subscriber."""
        for _ in range(n):
            b = rng.choice(self.blocks)
            at = rng.randrange(b.start_ms, b.end_ms)
            port = rng.randint(b.port_first, b.port_last)
            yield {"operator": b.operator, "ip": b.public, "port": port, "at_ms": at,
                   "expect": self.nat_holder(b.operator, b.public, port, at)}

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
        pool = [*self.truth, *self.leases]
        for i in range(n):
            t = rng.choice(pool)
            # mostly inside an interval, sometimes just before/after it (gaps, re-use edges)
            end = t.end_ms or self.now_ms
            at = rng.choice([t.start_ms, end - 1, rng.randrange(t.start_ms, max(end, t.start_ms + 1)),
                             t.start_ms - 1, end])
            at = min(at, self.now_ms - 1)
            if i % 3 == 2 and t.v6:
                net = ipaddress.ip_network(t.v6)
                addr = str(net.network_address + rng.randrange(1, 2**64))
                yield {"operator": t.operator, "ip": addr, "at_ms": at,
                       "expect": self.holder_v6(t.operator, addr, at)}
            else:
                yield {"operator": t.operator, "ip": t.v4, "at_ms": at,
                       "expect": self.holder(t.operator, t.v4, at)}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def generate(operators: list[str], *, now_ms: int, seed: int = 7, addresses_per_operator: int = 24,
             subscribers_per_operator: int = 40, span_ms: int = 150 * MINUTE,
             identity: Optional[dict[str, str]] = None, dhcp_addresses: int = 0,
             blocks_per_operator: int = 0) -> Traffic:
    """``identity``: operator → the RADIUS attribute its profile identifies subscribers by
    (default User-Name); the truth records that attribute's value as the holder.
    ``dhcp_addresses``: Kea leases on that many IPv4 addresses per operator (100.65.x.y);
    ``blocks_per_operator``: CGNAT port blocks per operator on public 198.51.100.(10 + i)."""
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
        if dhcp_addresses:
            _dhcp(tr, rng, op, oi, dhcp_addresses, base)
        if blocks_per_operator:
            _blocks(tr, rng, op, oi, blocks_per_operator)
    return tr


def _dhcp(tr: Traffic, rng: random.Random, op: str, oi: int, n_addresses: int, base: int) -> None:
    """Back-to-back leases per address, each to another client; the last may end after now."""
    clients = [f"02:00:5e:{0x80 + oi:02x}:00:{i:02x}" for i in range(max(4, 2 * n_addresses))]
    rows: list[tuple[int, str]] = []
    for a in range(n_addresses):
        v4 = str(ipaddress.ip_address("100.65.0.0") + (oi << 12) + a + 1)
        t = base + rng.randrange(0, 20 * MINUTE, 1000)
        prev = None
        while t < tr.now_ms - 2 * MINUTE:
            hw = rng.choice([c for c in clients if c != prev])
            prev = hw
            life = rng.randrange(5 * MINUTE, 30 * MINUTE, 1000)
            rows.append((t, f"{v4},{hw},,{life // 1000},{(t + life) // 1000},1,0,0,,0,"))
            tr.leases.append(TruthInterval(op, v4, "", hw, t, t + life))
            t = t + life + rng.choice([0, 1000, 30_000, 3 * MINUTE])
    rows.sort(key=lambda r: r[0])
    tr.dhcp[op] = [KEA4_HEADER, *(r for _, r in rows)]


def _blocks(tr: Traffic, rng: random.Random, op: str, oi: int, n: int) -> None:
    """Port blocks, each within one ended holding (RADIUS or DHCP) of its inside address."""
    ended = [t for t in (*tr.truth, *tr.leases) if t.operator == op and t.end_ms is not None
             and t.end_ms <= tr.now_ms - MINUTE and t.end_ms - t.start_ms >= 5 * MINUTE]
    public = f"198.51.100.{10 + oi}"
    lines: list[tuple[int, str]] = []
    for k, t in enumerate(rng.sample(ended, min(n, len(ended)))):
        lo, hi = 1024 + 512 * k, 1024 + 512 * k + 511
        b = PortBlock(op, public, lo, hi, t.v4, t.start_ms + MINUTE, t.end_ms - MINUTE)
        tr.blocks.append(b)
        for at, sig, name in ((b.start_ms, 106, "Allocated"), (b.end_ms, 107, "Freed")):
            lines.append((at, f"{_iso(at)} 192.0.2.{100 + oi} cgn0/demo  CEF:0|A10|CFW|6.0.0-P1|CGN {sig}|"
                              f"Nat Port Batch Pool {name}|5|proto=UDP src={b.inside} "
                              f"sourceTranslatedAddress={public} sourceTranslatedPort={lo} cn3={hi} "
                              f"cn3Label=Last Nat Port"))
    lines.sort(key=lambda r: r[0])
    tr.nat[op] = [line for _, line in lines]
