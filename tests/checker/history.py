"""Random event histories for the model-based checker (pure: a seed and an instant in, records out).

Each operator gets RADIUS NASes, DHCP servers and CGNAT boxes; each of those is one *source*
(one Kafka key on its raw topic, so its records stay in order) and owns its own address pool.
No address is ever written by two sources: the order in which the worker applies the records of
one address is then exactly the order this module emits them, and the reference model can apply
the same records in the same order.  Within a source the emitted order is perturbed on purpose:
duplicates, records moved a few places later (out of order) or far later (late arrival).

Record kinds:
- ``good``: a record whose bindings must be applied;
- ``too-late``: a record whose mapping expired long ago (hundreds of days): it must be
  dead-lettered with reason ``too-late`` and reach no other topic;
- ``bad``: malformed input; it must be dead-lettered (``reason`` when the generator knows the
  exact reason, else any reason) and bind nothing.

The first address byte says what an address is for, so a lookup never lands on another pool:
100.64-100.79 RADIUS (IPv6 2001:db8:<op><nas>::/48 prefixes), 10.100+ DHCP, 198.51.100+ CGNAT
public, 100.120 never used, 100.125 too-late, 100.126 bad records.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Optional

HOUR = 3_600_000
MIN = 60_000
DAY = 24 * HOUR


@dataclass(frozen=True)
class Raw:
    """One record as it goes onto a raw topic."""

    seq: int                 # position in the send order
    family: str              # radius | dhcp | nat
    fmt: str                 # ipanon-format header
    source: str              # Kafka key (one source = one partition, in order)
    operator: str
    value: bytes
    kind: str = "good"       # good | too-late | bad
    reason: Optional[str] = None  # expected dead-letter reason when known
    note: str = ""           # what the generator did (for mismatch reports)


@dataclass
class Pools:
    """What lookups can ask about, per operator."""

    radius_v4: list = field(default_factory=list)     # addresses that had sessions
    radius_v6: list = field(default_factory=list)     # delegated prefixes (text)
    dhcp_v4: list = field(default_factory=list)
    nat: list = field(default_factory=list)            # (public, [(first, last), …])
    too_late: list = field(default_factory=list)
    unused: list = field(default_factory=list)
    lost_old: list = field(default_factory=list)      # addresses of a lost Stop a day ago


@dataclass
class History:
    seed: int
    t0_ms: int
    records: list
    pools: dict               # operator -> Pools
    span: tuple               # (earliest, latest) event time of good records


@dataclass
class Shape:
    """Sizes and rates of one history."""

    nases: int = 2
    addresses_per_nas: int = 12
    dhcp_servers: int = 1
    dhcp_addresses: int = 8
    nat_boxes: int = 1
    nat_blocks: int = 4
    span_ms: int = 5 * HOUR
    p_dup: float = 0.04
    p_swap: float = 0.05
    p_late: float = 0.02
    p_lost_stop: float = 0.12
    p_reuse_overlap: float = 0.1
    p_v6: float = 0.3
    lost_stop_old: int = 2       # per NAS: sessions whose Stop is lost more than a day ago
    too_late: int = 3            # per operator
    bad: int = 6                 # per operator
    accounting_on: bool = True
    burst: int = 60              # per operator: Start, Interim, Stop back to back


class _Gen:
    def __init__(self, seed: int, t0_ms: int, operators: list[str], shape: Shape) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.t0 = t0_ms - t0_ms % 1000
        self.ops = operators
        self.shape = shape
        self.out: list[tuple[str, str, str, str, bytes, str, Optional[str], str]] = []
        self.pools = {op: Pools() for op in operators}
        self.lo = self.hi = None
        self.nonce = 0

    # -- helpers ----------------------------------------------------------------------------

    def _s(self, ms: int) -> int:
        return ms // 1000

    def _seen(self, ms: int) -> None:
        self.lo = ms if self.lo is None else min(self.lo, ms)
        self.hi = ms if self.hi is None else max(self.hi, ms)

    def _emit_source(self, family: str, fmt: str, source: str, op: str, events: list) -> None:
        """``events``: (at_ms, tiebreak, value bytes, note), emitted in time order, then
        perturbed: duplicates, short moves (out of order), long moves (late)."""
        rng, sh = self.rng, self.shape
        events.sort(key=lambda e: (e[0], e[1]))
        seq = [(v, note) for _, _, v, note in events]
        out: list = []
        moved: list = []  # (position to insert at, item)
        for i, item in enumerate(seq):
            r = rng.random()
            if r < sh.p_late:
                moved.append((i + rng.randint(20, 200), (item[0], item[1] + " late")))
                continue
            if r < sh.p_late + sh.p_swap:
                moved.append((i + rng.randint(1, 4), (item[0], item[1] + " moved")))
                continue
            out.append(item)
            if rng.random() < sh.p_dup:
                moved.append((i + rng.randint(0, 6), (item[0], item[1] + " dup")))
        for pos, item in sorted(moved, key=lambda m: m[0]):
            # positions refer to the unperturbed order; clamp to the current list
            out.insert(min(pos, len(out)), item)
        for v, note in out:
            self.out.append((family, fmt, source, op, v, "good", None, note))

    # -- RADIUS -----------------------------------------------------------------------------

    def radius(self, oi: int, op: str) -> None:
        rng, sh = self.rng, self.shape
        subs = [f"kund-{self.seed}-{oi}-{k}@isp.example" for k in range(sh.nases * sh.addresses_per_nas)]
        for n in range(sh.nases):
            nas = f"192.0.2.{10 + oi * 16 + n}"
            events: list = []
            tie = 0

            def rec(at_ms: int, attrs: dict, note: str) -> None:
                nonlocal tie
                tie += 1
                attrs = {"Event-Timestamp": self._s(at_ms), "NAS-IP-Address": nas, **attrs}
                events.append((at_ms, tie, json.dumps(attrs).encode(), note))
                self._seen(at_ms)

            open_at_reset: list = []
            reset_ms = self.t0 - rng.randint(HOUR, sh.span_ms - HOUR) if sh.accounting_on else None
            sid = 0
            for a in range(sh.addresses_per_nas):
                addr = f"100.{64 + oi}.{n}.{a + 1}"
                v6 = f"2001:db8:{oi:x}{n:02x}:{a:02x}00::/56" if rng.random() < sh.p_v6 else None
                self.pools[op].radius_v4.append(addr)
                if v6:
                    self.pools[op].radius_v6.append(v6)
                t = self.t0 - sh.span_ms + rng.randint(0, 30 * MIN)
                # a lost Stop more than a day ago: its lost-Stop window (a day by default) ends
                # at about t0 - 2.3 h; the address's next session starts at t0 - 1.5 h
                if a < sh.lost_stop_old:
                    sid += 1
                    sub = rng.choice(subs)
                    s = self.t0 - 26 * HOUR - 50 * MIN + rng.randint(0, 10 * MIN) // 1000 * 1000
                    base = {"User-Name": sub, "Acct-Session-Id": f"{sid:08X}", "Framed-IP-Address": addr}
                    if v6:
                        base["Delegated-IPv6-Prefix"] = v6
                    rec(s, {**base, "Acct-Status-Type": "Start"}, f"start {sid} (lost stop, old)")
                    for k in range(1, 3):
                        rec(s + k * 15 * MIN, {**base, "Acct-Status-Type": "Interim-Update",
                                                "Acct-Session-Time": k * 15 * 60}, f"interim {sid} (lost stop, old)")
                    self.pools[op].lost_old.append(addr)
                    t = self.t0 - 90 * MIN
                while t < self.t0 - 10 * MIN:
                    sid += 1
                    sub = rng.choice(subs)
                    dur = rng.randint(5 * MIN, 2 * HOUR) // 1000 * 1000
                    end = min(t + dur, self.t0 - 2 * MIN)
                    base = {"User-Name": sub, "Acct-Session-Id": f"{sid:08X}", "Framed-IP-Address": addr}
                    if v6:
                        base["Delegated-IPv6-Prefix"] = v6
                    rec(t, {**base, "Acct-Status-Type": "Start"}, f"start {sid}")
                    k = t + rng.randint(5, 20) * MIN
                    while k < end:
                        rec(k, {**base, "Acct-Status-Type": "Interim-Update",
                                "Acct-Session-Time": (k - t) // 1000,
                                "Acct-Input-Octets": rng.randrange(1 << 30)}, f"interim {sid}")
                        k += rng.randint(5, 20) * MIN
                    r = rng.random()
                    if r < sh.p_lost_stop:
                        nxt = end + rng.randint(1, 30) * MIN  # no Stop: the next Start takes over
                    elif r < sh.p_lost_stop + sh.p_reuse_overlap:
                        # re-use: another subscriber's Start comes before this session's Stop
                        nxt = end - rng.randint(1, 4) * MIN
                        rec(end, {**base, "Acct-Status-Type": "Stop", "Acct-Session-Time": (end - t) // 1000},
                            f"stop {sid} (after re-use)")
                    else:
                        rec(end, {**base, "Acct-Status-Type": "Stop", "Acct-Session-Time": (end - t) // 1000,
                                  "Acct-Terminate-Cause": "User-Request"}, f"stop {sid}")
                        nxt = end + rng.randint(0, 20) * MIN
                    t = max(nxt, t + 1000)
            if reset_ms is not None:
                tie += 1
                events.append((reset_ms, tie, json.dumps({"Acct-Status-Type": "Accounting-On", "NAS-IP-Address": nas,
                                                          "Event-Timestamp": self._s(reset_ms)}).encode(),
                               "accounting-on"))
            self._emit_source("radius", "radius-json", f"nas-{op}-{n}", op, events)

    def burst(self, oi: int, op: str) -> None:
        """Short sessions, each on its own address, whose Start, Interim and Stop follow each
        other in the stream: the mapping agent writes each key several times in one batch."""
        rng = self.rng
        nas = f"192.0.2.{200 + oi}"
        for i in range(self.shape.burst):
            addr = f"100.{80 + oi}.{i >> 8}.{i & 255}"
            self.pools[op].radius_v4.append(addr)
            t = self.t0 - rng.randint(20 * MIN, 3 * HOUR) // 1000 * 1000
            base = {"User-Name": f"burst-{self.seed}-{oi}-{i}@isp.example", "Acct-Session-Id": f"B{i:07X}",
                    "NAS-IP-Address": nas, "Framed-IP-Address": addr}
            for at, status, extra in ((t, "Start", {}),
                                      (t + 60_000, "Interim-Update", {"Acct-Session-Time": 60}),
                                      (t + 120_000, "Stop", {"Acct-Session-Time": 120})):
                self._seen(at)
                attrs = {**base, "Acct-Status-Type": status, "Event-Timestamp": self._s(at), **extra}
                self.out.append(("radius", "radius-json", f"burst-{op}", op, json.dumps(attrs).encode(),
                                 "good", None, f"{status.lower()} burst {i}"))

    # -- DHCP -------------------------------------------------------------------------------

    def dhcp(self, oi: int, op: str) -> None:
        rng, sh = self.rng, self.shape
        for k in range(sh.dhcp_servers):
            events: list = []
            tie = 0
            for a in range(sh.dhcp_addresses):
                addr = f"10.{100 + oi}.{k}.{a + 1}"
                self.pools[op].dhcp_v4.append(addr)
                t = self.t0 - sh.span_ms + rng.randint(0, HOUR)
                while t < self.t0 - 10 * MIN:
                    mac = f"02:{oi:02x}:{k:02x}:{a:02x}:{rng.randrange(256):02x}:{rng.randrange(256):02x}"
                    valid = rng.choice((600, 1800, 3600))
                    cltt = t
                    tie += 1
                    env = {"hook": "leases4_committed", "LEASES4_SIZE": "1", "DELETED_LEASES4_SIZE": "0",
                           "LEASES4_AT0_ADDRESS": addr, "LEASES4_AT0_HWADDR": mac,
                           "LEASES4_AT0_CLTT": str(self._s(cltt)), "LEASES4_AT0_VALID_LIFETIME": str(valid),
                           "LEASES4_AT0_STATE": "default", "LEASES4_AT0_SUBNET_ID": "1"}
                    events.append((cltt, tie, json.dumps(env).encode(), f"grant {mac}"))
                    self._seen(cltt)
                    renewals = rng.randint(0, 3)
                    for _ in range(renewals):
                        cltt += valid * 1000 // 2
                        if cltt > self.t0 - 2 * MIN:
                            break
                        tie += 1
                        env = {"hook": "lease4_renew", "LEASE4_ADDRESS": addr, "LEASE4_HWADDR": mac,
                               "LEASE4_CLTT": str(self._s(cltt)), "LEASE4_VALID_LIFETIME": str(valid)}
                        events.append((cltt, tie, json.dumps(env).encode(), f"renew {mac}"))
                        self._seen(cltt)
                    lease_end = cltt + valid * 1000
                    if rng.random() < 0.6 and cltt + 60_000 < self.t0 - 2 * MIN:
                        rel = min(cltt + rng.randint(60, valid) * 1000, self.t0 - 2 * MIN)
                        tie += 1
                        env = {"hook": "lease4_release", "LEASE4_ADDRESS": addr, "LEASE4_HWADDR": mac,
                               "LEASE4_CLTT": str(self._s(cltt)), "LEASE4_VALID_LIFETIME": str(valid),
                               "ts_ms": str(rel)}
                        events.append((rel, tie, json.dumps(env).encode(), f"release {mac}"))
                        self._seen(rel)
                        lease_end = rel
                    t = lease_end + rng.randint(1, 30) * MIN
            self._emit_source("dhcp", "kea-hook", f"dhcp-{op}-{k}", op, events)

    # -- CGNAT ------------------------------------------------------------------------------

    def nat(self, oi: int, op: str) -> None:
        rng, sh = self.rng, self.shape
        inside_pool = self.pools[op].radius_v4
        for j in range(sh.nat_boxes):
            public = f"198.51.{100 + oi}.{j + 1}"
            host = f"cgn{j}"
            blocks = [(1024 + i * 1024, 2047 + i * 1024) for i in range(sh.nat_blocks)]
            self.pools[op].nat.append((public, blocks))
            events: list = []
            tie = 0

            def line(ev: str, at_ms: int, inside: str, lo: int, hi: int) -> bytes:
                return (f"<134>Dec  5 12:00:00 {host} JSERVICES_NAT_PORT_BLOCK_{ev}: {inside} -> "
                        f"{public}:{lo}-{hi} 0x{self._s(at_ms):x}").encode()

            for lo, hi in blocks:
                t = self.t0 - sh.span_ms + rng.randint(0, HOUR)
                while t < self.t0 - 10 * MIN:
                    inside = rng.choice(inside_pool)
                    dur = rng.randint(10 * MIN, 90 * MIN) // 1000 * 1000
                    end = min(t + dur, self.t0 - 2 * MIN)
                    tie += 1
                    events.append((t, tie, line("ALLOC", t, inside, lo, hi), f"alloc {inside} {lo}"))
                    self._seen(t)
                    if rng.random() < 0.5 and t + 5 * MIN < end:
                        tie += 1
                        events.append((t + 5 * MIN, tie, line("ACTIVE", t + 5 * MIN, inside, lo, hi), f"active {inside}"))
                    if rng.random() < 0.85:
                        tie += 1
                        events.append((end, tie, line("RELEASE", end, inside, lo, hi), f"release {inside} {lo}"))
                        t = end + rng.randint(0, 10) * MIN
                    else:  # no release: the next allocation of the block takes over
                        t = end + rng.randint(1, 10) * MIN
                    t = max(t, end + 1000) if t <= end else t
            self._emit_source("nat", "juniper", f"nat-{op}-{j}", op, events)

    # -- too late and bad ---------------------------------------------------------------------

    def too_late(self, oi: int, op: str) -> None:
        rng = self.rng
        for i in range(self.shape.too_late):
            addr = f"100.125.{oi}.{i + 1}"
            self.pools[op].too_late.append(addr)
            s = self.t0 - rng.randint(300, 900) * DAY
            base = {"User-Name": f"old-{self.seed}-{i}@isp.example", "Acct-Session-Id": f"OLD{i:05d}",
                    "NAS-IP-Address": "192.0.2.250", "Framed-IP-Address": addr}
            for at, status in ((s, "Start"), (s + HOUR, "Stop")):
                attrs = {**base, "Acct-Status-Type": status, "Event-Timestamp": self._s(at)}
                if status == "Stop":
                    attrs["Acct-Session-Time"] = 3600
                self.out.append(("radius", "radius-json", f"old-{op}", op, json.dumps(attrs).encode(),
                                 "too-late", "too-late", f"too-late {status.lower()}"))

    def bad(self, oi: int, op: str) -> None:
        rng = self.rng
        for i in range(self.shape.bad):
            self.nonce += 1
            addr = f"100.126.{oi}.{i + 1}"
            tag = f"bad-{self.seed}-{self.nonce}"
            base = {"User-Name": f"{tag}@isp.example", "Acct-Session-Id": tag, "NAS-IP-Address": "192.0.2.251",
                    "Framed-IP-Address": addr, "Event-Timestamp": self._s(self.t0 - HOUR)}
            choice = i % 6
            if choice == 0:
                v, reason = (json.dumps({**base, "Acct-Status-Type": "Start"})[:-7]).encode(), "bad-json"
            elif choice == 1:
                v, reason = json.dumps(base).encode(), "missing-attribute"
            elif choice == 2:
                v, reason = json.dumps({**base, "Acct-Status-Type": "Reboot"}).encode(), "unsupported-status"
            elif choice == 3:
                v, reason = json.dumps({**base, "Acct-Status-Type": "Start",
                                        "Framed-IP-Address": f"300.{i}.0.1"}).encode(), None
            elif choice == 4:
                attrs = {k: v for k, v in base.items() if k != "Event-Timestamp"}
                v, reason = json.dumps({**attrs, "Acct-Status-Type": "Start"}).encode(), "missing-timestamp"
            else:
                # a lone surrogate escaped in JSON (valid JSON, no valid UTF-8 text for it)
                raw = json.dumps({**base, "Acct-Status-Type": "Start"}).encode()
                v, reason = raw.replace(tag.encode() + b"@", tag.encode() + b"\\ud800@"), None
            self.out.append(("radius", "radius-json", f"nas-{op}-0", op, v, "bad", reason, f"bad #{choice}"))

    def interleave(self) -> list[Raw]:
        """Sources interleaved at random, each keeping its own order."""
        by_src: dict[str, list] = {}
        for r in self.out:
            by_src.setdefault(r[2], []).append(r)
        queues = [list(reversed(v)) for v in by_src.values()]
        out: list[Raw] = []
        while queues:
            q = self.rng.choice(queues)
            family, fmt, source, op, value, kind, reason, note = q.pop()
            out.append(Raw(len(out), family, fmt, source, op, value, kind, reason, note))
            if not q:
                queues.remove(q)
        return out


def generate(seed: int, t0_ms: int, operators: list[str], shape: Optional[Shape] = None) -> History:
    """A history for ``operators`` whose newest event lies just before ``t0_ms``."""
    shape = shape or Shape()
    g = _Gen(seed, t0_ms, operators, shape)
    for oi, op in enumerate(operators):
        g.radius(oi, op)
        g.burst(oi, op)
        g.dhcp(oi, op)
        g.nat(oi, op)
        g.too_late(oi, op)
        g.bad(oi, op)
        g.pools[op].unused = [f"100.120.{oi}.{i + 1}" for i in range(4)]
    records = g.interleave()
    # bad records are spread over the stream rather than bunched where their source starts
    return History(seed, g.t0, records, g.pools, (g.lo, g.hi))


def shape_for(events: int, operators: int) -> Shape:
    """A shape giving roughly ``events`` records over ``operators`` operators: about 60 % RADIUS
    sessions (≈ 26 records per address over the 5 h span), 15 % back-to-back sessions (3 each),
    15 % DHCP (≈ 29 per address), 10 % CGNAT (≈ 12 per port block)."""
    per_op = max(400, events // max(1, operators))
    nases = max(1, min(32, per_op // 1500))
    addrs = max(4, min(250, round(0.6 * per_op / 26 / nases)))
    servers = max(1, nases // 4)
    blocks = max(4, round(0.1 * per_op / 12))
    boxes = max(1, min(16, blocks // 16))
    return Shape(nases=nases, addresses_per_nas=addrs, burst=max(10, round(0.15 * per_op / 3)),
                 dhcp_servers=servers, dhcp_addresses=max(2, min(250, round(0.15 * per_op / 29 / servers))),
                 nat_boxes=boxes, nat_blocks=max(4, min(60, blocks // boxes)))
