"""Erasure canaries: synthetic bindings whose deletion the worker measures.

A canary is an ordinary RADIUS Start + Stop pair, produced to the operator's own raw topic, so it
is parsed, mapped, changelogged, swept, tombstoned and key-shredded like any record.  What makes
it a canary is this module's one rule (``is_canary``), used by every stage that must treat it
differently: statistics never count it, the lawful-access desk never names it.  The rule needs
both the reserved subscriber name and the reserved address: a name alone is not proof (the
subscriber chooses it on many access networks), an address in the block is never assigned.

Reserved namespace (documented in docs/operations.md "Erasure canaries"):

- subscriber ``ipanon-canary-<operator>-<n>@canary.invalid``: ``.invalid`` is reserved by
  RFC 6761 §6.4 and never resolves or is delegated, so no real subscriber account can carry it;
- address: one IPv6 /128 inside ``100::/64``, the RFC 6666 *discard-only* block.  It is never
  assigned to a subscriber (traffic to it is dropped by design), so a canary cannot take an
  address from, or end the session of, a real subscriber (a later Start ends an earlier holder
  of the same address: stream.mapping) and a real lookup can never land on it;
- NAS ``192.0.0.8`` (RFC 7600 IPv4 dummy address: no real NAS has it, so no Accounting-On/Off
  of a real NAS closes a canary early) and session ``ipanon-canary-<n>``.

The measurement (``Canary``, ``summarize``): for each store — the mapping table, the changelog,
the bindings topic, the operator's raw topic, the worker's disk, the epoch key — the instant the
canary was first *observed* gone, minus the mapping's end.  That is the same baseline as the
promise and the plan's bounds (``stream.policy``: "worst case after the mapping ends").  A store
still holding the canary contributes ``now - end`` (a lower bound that keeps rising): a stopped
sweeper shows up as a figure that grows past the bound, not as a missing figure.

Pure: time arrives as arguments.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

DOMAIN = "canary.invalid"
SUBSCRIBER_PREFIX = "ipanon-canary-"
#: RFC 6666 discard-only address block
NETWORK = ipaddress.IPv6Network("100::/64")
#: RFC 7600 IPv4 dummy address, as the canary's NAS
NAS = "192.0.0.8"
FORMAT = "radius-json"
SOURCE = "ipanon-canary"

#: the stores a canary is followed through, in the order the report lists them
STORES = ("table", "changelog", "bindings", "raw", "disk", "epoch-key")


def is_canary_subscriber(subscriber: Optional[str]) -> bool:
    return (isinstance(subscriber, str) and subscriber.startswith(SUBSCRIBER_PREFIX)
            and subscriber.endswith("@" + DOMAIN))


_NET_HI = int(NETWORK.network_address) >> 64


def is_canary_address(address: Any) -> bool:
    """An address or network (object or text) inside the canary block.  On the statistics hot
    path: an IPv4 network is answered by one type check."""
    t = type(address)
    if t is ipaddress.IPv4Network or t is ipaddress.IPv4Address:
        return False
    if t is not ipaddress.IPv6Network:
        try:
            address = ipaddress.ip_network(str(address), strict=False)
        except ValueError:
            return False
        if address.version != 6:
            return False
    return address.prefixlen >= 64 and int(address.network_address) >> 64 == _NET_HI


def is_canary(binding: Any) -> bool:
    """The one rule: a binding naming the canary subscriber namespace *and* an address in the
    canary block.  Both, never either: the subscriber id comes from the access request (on
    many BNGs the PPPoE user name is whatever the CPE sends), so a name alone would let a real
    subscriber call themselves ``ipanon-canary-…@canary.invalid`` and vanish from statistics
    and from lawful answers; the address is the operator's to assign, and it never assigns one
    in the discard-only block."""
    return (is_canary_subscriber(getattr(binding, "subscriber", None))
            and is_canary_address(getattr(binding, "ip", "0.0.0.0")))


def visible_holders(holders: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Lookup holders an authority may be told about: never a canary (the desk answers a
    lookup that would only name canaries as not retained).  Same rule as ``is_canary``: the
    holder's subscriber in the namespace *and* the address asked about in the canary block, so
    a real subscriber whose user name imitates a canary is still named."""
    return [h for h in holders if not (is_canary_subscriber(h.get("subscriber"))
                                       and is_canary_address(h.get("address", "0.0.0.0")))]


# -- the records -----------------------------------------------------------------------------


def address(seq: int, k: int = 0) -> ipaddress.IPv6Address:
    """The canary address of injection ``seq`` (its ms timestamp); ``k`` (0-15) varies it so a
    worker can pick one whose table partition it owns."""
    if not 0 <= k < 16:
        raise ValueError("k must be 0..15")
    return NETWORK.network_address + (((seq << 4) | k) & ((1 << 64) - 1))


def subscriber(operator: str, seq: int) -> str:
    return f"{SUBSCRIBER_PREFIX}{operator}-{seq}@{DOMAIN}"


def records(operator: str, seq: int, *, end_ms: int, identity_attribute: str = "User-Name",
            k: int = 0) -> list[bytes]:
    """The raw ``radius-json`` records of one canary: a Start one second before ``end_ms`` and
    a Stop at ``end_ms`` (whole seconds: RADIUS event times are)."""
    if end_ms % 1000:
        raise ValueError("end_ms must be a whole second")
    base = {"NAS-IP-Address": NAS, "Acct-Session-Id": f"{SUBSCRIBER_PREFIX}{seq}",
            "Framed-IPv6-Address": str(address(seq, k)), identity_attribute: subscriber(operator, seq)}
    return [json.dumps({**base, "Acct-Status-Type": st, "Event-Timestamp": end_ms // 1000 - d}).encode()
            for st, d in (("Start", 1), ("Stop", 0))]


# -- the measurement -------------------------------------------------------------------------


@dataclass
class Canary:
    """One canary's life as observed.  ``present``/``gone``: store → first instant observed."""

    operator: str
    seq: int
    end_ms: int
    expiry_ms: int
    inserted_ms: int
    present: dict = field(default_factory=dict)
    gone: dict = field(default_factory=dict)
    tombstone_ms: Optional[int] = None
    sealed_epoch: Optional[int] = None

    def saw(self, store: str, here: bool, now_ms: int) -> None:
        """One observation.  Gone counts only after the store was seen holding the canary (a
        scan before it arrived proves nothing), and is final: the first observation wins."""
        if store in self.gone:
            return
        if here:
            self.present.setdefault(store, now_ms)
        elif store in self.present:
            self.gone[store] = now_ms

    def persistence_ms(self, store: str, now_ms: int) -> Optional[int]:
        """Measured persistence after the mapping's end: when first seen gone, or — still held —
        how long so far.  None: the store never held it (or not yet seen)."""
        if store in self.gone:
            return self.gone[store] - self.end_ms
        if store in self.present:
            return now_ms - self.end_ms
        return None

    @property
    def done(self) -> bool:
        return all(s in self.gone for s in STORES)


@dataclass(frozen=True)
class StoreFigure:
    operator: str
    store: str
    measured_ms: Optional[int]     # worst case over the canaries (closed and still open)
    open: int                      # canaries the store still holds
    closed: int                    # canaries observed gone from it
    bound_ms: Optional[int]
    promise_ms: Optional[int]

    @property
    def verdict(self) -> str:
        """``kept`` / ``over-bound`` (measured > computed bound) / ``broken`` (measured > promise)."""
        if self.measured_ms is None:
            return "unmeasured"
        if self.promise_ms is not None and self.measured_ms > self.promise_ms:
            return "broken"
        if self.bound_ms is not None and self.measured_ms > self.bound_ms:
            return "over-bound"
        return "kept"


def summarize(canaries: Sequence[Canary], now_ms: int, *, bounds: Mapping[tuple[str, str], Optional[int]],
              promises: Mapping[str, int]) -> list[StoreFigure]:
    """Per operator and store: the worst measured persistence, against bound and promise."""
    out = []
    ops = sorted({c.operator for c in canaries} | set(promises))
    for op in ops:
        mine = [c for c in canaries if c.operator == op]
        for store in STORES:
            vals = [v for v in (c.persistence_ms(store, now_ms) for c in mine) if v is not None]
            out.append(StoreFigure(op, store, max(vals) if vals else None,
                                   sum(1 for c in mine if store in c.present and store not in c.gone),
                                   sum(1 for c in mine if store in c.gone),
                                   bounds.get((op, store)), promises.get(op)))
    return out


RESULT_VERSION = 1


def result_records(c: Canary, *, bounds: Mapping[tuple[str, str], Optional[int]],
                   promise_ms: Optional[int]) -> list[dict]:
    """The records a finished canary leaves on ``<prefix>-canary-results``, one per store it was
    measured in: what the compliance report reads for its period (max, p99, chart).  No personal
    data: the canary id is its reserved synthetic subscriber name (``subscriber``)."""
    def s(ms: Optional[int]) -> Optional[float]:
        return None if ms is None else ms / 1000

    out = []
    for store in STORES:
        if store not in c.gone:
            continue
        b = bounds.get((c.operator, store))
        per = c.gone[store] - c.end_ms
        out.append({"v": RESULT_VERSION, "operator": c.operator, "store": store, "canary": subscriber(c.operator, c.seq),
                    "inserted_at_ms": c.inserted_ms, "end_ms": c.end_ms, "gone_at_ms": c.gone[store],
                    "persistence_ms": per, "persistence_s": s(per), "bound_ms": b, "bound_s": s(b),
                    "promise_ms": promise_ms, "promise_s": s(promise_ms)})
    return out


def store_bounds(*, ttl_ms: int, sweeper_period_ms: int, schedule_bucket_ms: int, epoch_period_ms: int,
                 key_grace_ms: int, disk_bound_ms: Optional[int],
                 topic_rows: Mapping[str, Optional[int]]) -> dict[str, Optional[int]]:
    """Computed worst case after a mapping's end, per store, from the same numbers as
    ``ipanon topics plan``: the table by TTL + sweeper period + schedule bucket; an epoch key by
    the end of the epoch holding the expiry (≤ expiry + one period) + the vault's grace + one
    sweep (destruction runs in the sweeper); topics and disk from the plan's rows."""
    table = ttl_ms + sweeper_period_ms + schedule_bucket_ms
    return {"table": table, "epoch-key": ttl_ms + epoch_period_ms + key_grace_ms + sweeper_period_ms,
            "disk": disk_bound_ms, **{s: topic_rows.get(s) for s in ("changelog", "bindings", "raw")}}


def report_rows(figures: Iterable[Mapping[str, Any]]) -> list[dict]:
    """The compliance report's canary rows (``stream.compliance.canary_section``) from per-store
    figures ``{"store", "measured_ms", "bound_ms", "promise_ms"}`` (the worker's gauges).  The
    gauges carry a worst case, not a distribution: ``p99`` is not given."""
    from .config import format_duration

    def fmt(ms: Optional[int]) -> Optional[str]:
        return None if ms is None else format_duration(int(ms))

    out = []
    for f in figures:
        m, b, pr = f.get("measured_ms"), f.get("bound_ms"), f.get("promise_ms")
        if m is None:
            continue
        out.append({"store": f["store"], "max_ms": m, "max": fmt(m), "p99": "—", "bound_ms": b, "bound": fmt(b) or "—",
                    "promise_ms": pr, "promise": fmt(pr) or "—",
                    "verdict": StoreFigure("", f["store"], m, 0, 0, b, pr).verdict})
    return out
