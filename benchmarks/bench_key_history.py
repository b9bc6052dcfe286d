"""Per-event CPU and stored size of one table key against its history (intervals retained).

A table key holds every interval of its address that is still inside the operator's retention:
closed RADIUS sessions and DHCP leases of an address, and on a CGNAT public address every port
block of every inside address that shared it.  Each binding on the key opens the whole value,
applies the rule and seals it again (``Vault.open`` → ``stream.mapping.apply`` →
``Vault.seal_value``), and the changelog carries the whole sealed value.  So both grow with the
history, and a value larger than the producer's ``max_request_size`` (1 MiB, aiokafka's default;
the broker's ``message.max.bytes`` is about the same) cannot be written at all.

For each history size (intervals on the key before the timed events):

- ``nat``: a public address shared by 32 inside addresses over 60 port blocks of 1 024 ports,
  each block allocated and released (RFC 8158 events 16/17) once per history interval; the
  timed events allocate a new block and release it (two events per pair);
- ``radius``: an address re-used by one closed 30-minute session per hour of history, plus the
  open session whose Interim-Updates are the timed events.

Figures, per kind and size: ``event_us`` (open + apply + seal, process CPU, best of
``--repeat``), ``open_us`` (``Vault.open`` alone: what every event and every lookup pays),
``value_bytes`` (the sealed value the changelog carries).  Then the bytes per interval (slope
between the two largest sizes), the history at which a value reaches 1 MiB, and for each
profile in ``config/operators`` the retention (the plan's TTL) and how many port blocks (or
sessions) per day on one public address (or address) fill 1 MiB within it.

    python benchmarks/bench_key_history.py                 # sizes 1 … 5000, ~1 min
    python benchmarks/bench_key_history.py --sizes 1,100,20000
    python benchmarks/bench_key_history.py --smoke         # tiny sizes, for the test suite
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import machine  # noqa: E402

from agents.vault import Vault, period_for  # noqa: E402
from stream import intervals as iv  # noqa: E402
from stream import mapping  # noqa: E402
from stream.config import load_operators  # noqa: E402
from stream.keyring import Keyring  # noqa: E402
from stream.model import Binding  # noqa: E402
from stream.policy import plan_topics  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OPERATOR = "junet"  # six months of retention (its profile's TTL seals the values)
T0 = 1_795_300_000_000
DAY_MS = 86_400_000
#: aiokafka's default ``max_request_size``; a record larger than this is refused by the producer
MAX_REQUEST = 1 << 20
#: the key, the record's and the batch's headers around a changelog value (an upper estimate)
RECORD_OVERHEAD = 200
PUBLIC = ipaddress.ip_network("198.51.100.7/32")
ADDRESS = ipaddress.ip_network("100.64.9.9/32")
SHARING = 32  # inside addresses per public address
BLOCKS = 60   # port blocks of 1 024 ports above 1024


def nat_binding(k: int, action: str, at_ms: int) -> Binding:
    blk = k % BLOCKS
    return Binding(kind="nat", action=action, operator=OPERATOR, ip=PUBLIC, subscriber=None, session=None,
                   nas=None, at_ms=at_ms, inside_ip=ipaddress.ip_address(f"100.127.0.{k % SHARING + 1}"),
                   port_first=1024 + 1024 * blk, port_last=2047 + 1024 * blk)


def radius_binding(k: int, action: str, at_ms: int) -> Binding:
    return Binding(kind="radius", action=action, operator=OPERATOR, ip=ADDRESS, subscriber=f"kund-{k:07d}@isp.example",
                   session=f"S-{k:08x}", nas="192.0.2.10", at_ms=at_ms)


def history(kind: str, n: int, rules: mapping.Rules) -> tuple[iv.Intervals, int]:
    """``n`` intervals on one key as the table would hold them, and the instant after them.
    Built interval by interval on an empty key and merged with the table's own rule
    (``_repair``): the same tuple as ``n`` pairs applied in order, without the quadratic build."""
    parts: list[iv.Interval] = []
    if kind == "nat":
        for k in range(n):  # one block allocated and freed every 5 minutes
            at = T0 + k * 300_000
            opened = mapping.apply((), nat_binding(k, "start", at), at, rules).intervals
            parts.extend(mapping.apply(opened, nat_binding(k, "stop", at + 240_000), at + 240_000, rules).intervals)
        return iv._repair(parts), T0 + n * 300_000
    for k in range(n):  # one 30-minute session an hour, then the one still open
        at = T0 + k * 3_600_000
        opened = mapping.apply((), radius_binding(k, "start", at), at, rules).intervals
        parts.extend(mapping.apply(opened, radius_binding(k, "stop", at + 1_800_000), at + 1_800_000, rules).intervals)
    at = T0 + n * 3_600_000
    parts.extend(mapping.apply((), radius_binding(n, "start", at), at, rules).intervals)
    return iv._repair(parts), at + 600_000


def measure(kind: str, n: int, vault: Vault, rules: mapping.Rules, events: int, repeat: int) -> dict:
    ivs, now = history(kind, n, rules)
    net = PUBLIC if kind == "nat" else ADDRESS
    key = vault.key("nat" if kind == "nat" else "ip", net)
    ttl, stale = rules.ttl_ms, rules.stale_after_ms
    base, _ = vault.seal_value(key, net, ivs, ttl_ms=ttl, stale_after_ms=stale, now_ms=now)
    assert vault.open(key, base) == (net, ivs)

    def event(raw: bytes, b: Binding) -> tuple[bytes, str]:
        _, old = vault.open(key, raw)
        change = mapping.apply(old, b, now, rules)
        new, _ = vault.seal_value(key, net, change.intervals, ttl_ms=ttl, stale_after_ms=stale, now_ms=now)
        return new, change.outcome

    outcomes: dict[str, int] = {}
    best_event = best_open = float("inf")
    for _ in range(repeat):
        outcomes.clear()
        t = time.process_time()
        if kind == "nat":
            for e in range(events // 2):  # a new block for a new inside address, then its release
                k = n + e
                raw, o1 = event(base, nat_binding(k, "start", now))
                _, o2 = event(raw, nat_binding(k, "stop", now + 1_000))
                outcomes[o1] = outcomes.get(o1, 0) + 1
                outcomes[o2] = outcomes.get(o2, 0) + 1
            done = 2 * (events // 2)
        else:
            for e in range(events):
                _, o = event(base, radius_binding(n, "update", now + e))
                outcomes[o] = outcomes.get(o, 0) + 1
            done = events
        best_event = min(best_event, (time.process_time() - t) / done)
        t = time.process_time()
        for _ in range(done):
            vault.open(key, base)
        best_open = min(best_open, (time.process_time() - t) / done)
    return {"intervals": len(ivs), "event_us": round(best_event * 1e6, 1), "open_us": round(best_open * 1e6, 1),
            "value_bytes": len(base), "outcomes": dict(outcomes)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,10,100,1000,5000", help="history sizes, comma-separated")
    ap.add_argument("--events", type=int, default=0, help="timed events per size (default: ~50 ms of history work)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    try:
        sizes = [int(s) for s in a.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes: comma-separated whole numbers, not {a.sizes!r}")
    if a.smoke:
        sizes, a.repeat = [1, 10, 40], 1
    if len(sizes) < 2 or sorted(sizes) != sizes or sizes[0] < 1 or len(set(sizes)) != len(sizes):
        ap.error("--sizes: at least two increasing sizes of 1 or more")
    if a.events < 0 or a.repeat < 1:
        ap.error("--events must be 0 (automatic) or more, --repeat 1 or more")

    pols = load_operators(REPO / "config" / "operators")
    plan = plan_topics(pols)
    ttl = plan.retention[OPERATOR].ttl_ms
    rules = mapping.rules_of(pols[OPERATOR], ttl_ms=ttl, stale_after_ms=pols[OPERATOR].sessions.lost_stop_window_ms)
    period = period_for(ttl)
    ring = Keyring.create(OPERATOR, bytes(range(32)), purpose="lawful_access", epoch=0)
    vault = Vault(OPERATOR, Path("/nonexistent/bench_key_history.ratchet"), ring, T0 - T0 % period, period, 0)

    kinds = {}
    for kind in ("nat", "radius"):
        rows = []
        for n in sizes:
            events = max(2, a.events) if a.events else max(4, min(2000, 20000 // n))
            if a.smoke:
                events = 4
            rows.append(measure(kind, n, vault, rules, events, a.repeat))
            print(f"{kind} {n}: {rows[-1]}", file=sys.stderr, flush=True)
        (n1, b1), (n2, b2) = [(r["intervals"], r["value_bytes"]) for r in rows[-2:]]
        per = (b2 - b1) / (n2 - n1)
        wall = int((MAX_REQUEST - RECORD_OVERHEAD - (b2 - per * n2)) / per)
        kinds[kind] = {"rows": rows, "bytes_per_interval": round(per, 1), "intervals_at_1mib": wall,
                       "event_us_growth": round(rows[-1]["event_us"] / rows[0]["event_us"], 1)}
    per_operator = {}
    for name in sorted(pols):
        days = plan.retention[name].ttl_ms / DAY_MS
        per_operator[name] = {"retention_days": round(days, 1),
                              "nat_blocks_per_day_to_1mib": round(kinds["nat"]["intervals_at_1mib"] / days),
                              "radius_sessions_per_day_to_1mib": round(kinds["radius"]["intervals_at_1mib"] / days)}
    print(json.dumps({"bench": "key_history", "smoke": a.smoke, "operator": OPERATOR, "sizes": sizes,
                      "max_request_bytes": MAX_REQUEST, "kinds": kinds, "per_operator": per_operator,
                      "machine": machine()}))


if __name__ == "__main__":
    main()
