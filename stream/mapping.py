"""The mapping table's decisions, as pure functions: what a binding does to a key, what the
sweeper drops or keeps of a key, and how a lookup resolves (through the CGNAT chain).

The worker's shell (``agents.app``) reads a key's intervals from the table, calls one of these
and writes what it says; the benchmarks' lean engine calls the same ones.  Nothing here reads
the clock, a key or the network: ``now_ms`` is an argument, and a lookup reads the table
through the two callables it is given.  The interval rules themselves (what a Start, Interim,
Stop or reset means) are ``stream.intervals``; this module adds the per-key decision around
them:

- **apply** (``apply``): the binding's rule, then the key's expired intervals are dropped at
  once (a write should not carry data past its expiry); the outcome is the rule's, or
  ``expired-on-arrival`` when what the binding added is already past its expiry instant (so
  it is not stored).  The key is written when its intervals changed, as a tombstone when none
  is left.
- **reset** (``reset``): Accounting-On/Off closes the NAS's open intervals of each key; nothing
  is swept.
- **sweep** (``sweep``): drop the intervals past their expiry instant, keep those under a legal
  hold; a key kept past its expiry by a hold is written again (re-sealed, so its epoch key
  outlives the hold) and looked at again ``HOLD_RECHECK_MS`` later.
- **resolve** (``resolve``): who held an address (and port) during ``[from, to)``; a NAT address
  goes through its logged port blocks and the profile's deterministic NAT versions to the
  inside address, whose holders answer — in the NAT source's routing realm when the profile
  has ``[realms]``, ``ambiguous`` when two realms could match.  A session silent past the
  lost-Stop window is ``end_unknown``, neither a holder nor "no data".  A lookup may name the
  transport protocol (IANA number): per-protocol port blocks of other protocols are then left
  out; without it, blocks of different protocols held by different inside addresses at the same
  time make the answer ``ambiguous``, never a pick.  ICMP query ids (protocol 1 or 58) answer
  only a lookup naming that protocol: an id is not a port (``intervals.QUERY_ID_PROTOS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Final, Optional

from . import detnat
from . import intervals as iv
from .errors import Rejected
from .model import Binding, IPAddress, IPNetwork, freeze, parse_network, slot_constructor
from .realm import RealmMap, select

#: How soon the sweeper looks again at a key kept past its expiry by a legal hold.
HOLD_RECHECK_MS = 5_000

#: Is this interval under a legal hold?  (``hold_predicate``)
IsHeld = Callable[[iv.Interval], bool]


@dataclass(frozen=True, slots=True)
class Rules:
    """One operator's parameters of the table's decisions."""

    ttl_ms: int
    stale_after_ms: int = iv.DEFAULT_STALE_AFTER_MS
    realms: RealmMap = field(default_factory=RealmMap)
    detnat: tuple = ()  # stream.detnat.DetNatVersion, the profile's [[deterministic_nat]]

    @property
    def realm_of(self) -> Optional[iv.RealmOf]:
        """The realm of a NAS for ``stream.intervals.apply`` (None without ``[realms]``)."""
        return self.realms.of_access if self.realms.configured else None


def rules_of(policy: Any, *, ttl_ms: int, stale_after_ms: int = iv.DEFAULT_STALE_AFTER_MS) -> Rules:
    """``Rules`` from an operator's profile (``stream.config.OperatorPolicy``, or None)."""
    realms = getattr(policy, "realms", None)
    return Rules(ttl_ms=ttl_ms, stale_after_ms=stale_after_ms,
                 realms=realms if realms is not None else RealmMap(),
                 detnat=tuple(getattr(policy, "deterministic_nat", ()) or ()))


def expiry_instant(ivs: iv.Intervals, rules: Rules) -> Optional[int]:
    """When the sweeper must next drop something of ``ivs`` (None: nothing left to expire)."""
    return iv.next_expiry_ms(ivs, ttl_ms=rules.ttl_ms, stale_after_ms=rules.stale_after_ms) if ivs else None


# -- a binding ---------------------------------------------------------------------------------


class Change:
    """What a binding (or reset) does to one key; immutable, a plain class as
    ``stream.intervals.Interval`` is."""

    __slots__ = ("outcome", "intervals", "write", "expired", "expiry_ms")

    def __init__(self, outcome: str, intervals: iv.Intervals, write: bool, expired: int = 0,
                 expiry_ms: Optional[int] = None) -> None:
        self.outcome: Final = outcome        # opened, extended, closed, duplicate, reopened-earlier,
                                             # orphan-stop, expired-on-arrival, reset
        self.intervals: Final = intervals    # the key's intervals from now on
        self.write: Final = write            # they differ from the stored ones: write the key
        self.expired: Final = expired        # intervals dropped as past their expiry instant
        self.expiry_ms: Final = expiry_ms    # when written: the next expiry instant of ``intervals``

    def _key(self) -> tuple:
        return (self.outcome, self.intervals, self.write, self.expired, self.expiry_ms)

    def __eq__(self, other: object) -> bool:
        if type(other) is Change:
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple:  # pickle and copy through the constructor, in both forms
        return Change, self._key()

    def __repr__(self) -> str:
        return (f"Change(outcome={self.outcome!r}, intervals={self.intervals!r}, write={self.write!r}, "
                f"expired={self.expired!r}, expiry_ms={self.expiry_ms!r})")

    @property
    def tombstone(self) -> bool:
        """The key is written with nothing left: delete it."""
        return self.write and not self.intervals


freeze(Change)
#: ``Change(*all five fields)``, positional (``stream.model.slot_constructor``, as
#: ``stream.intervals._new_interval``)
_new_change: Callable[..., Change] = slot_constructor(Change, ("opened", (), True, 2, 7))


def apply(old: iv.Intervals, b: Binding, now_ms: int, rules: Rules, *,
          is_held: Optional[IsHeld] = None) -> Change:
    """A (non-reset) binding on the intervals ``old`` of its key, at ``now_ms``.  ``is_held``:
    intervals under a legal hold survive the sweep that follows (hold_predicate)."""
    new, outcome = iv.apply(old, b, realm_of=rules.realm_of)
    kept, dropped = iv.sweep(new, now_ms, ttl_ms=rules.ttl_ms, stale_after_ms=rules.stale_after_ms,
                             is_held=is_held)
    kind = outcome.kind
    if dropped:
        arrived = set(new) - set(old)
        if arrived and not arrived & set(kept):
            kind = "expired-on-arrival"  # already past its expiry instant: not stored
    write = kept != old
    return _new_change(kind, kept, write, dropped,
                  iv.next_expiry_ms(kept, ttl_ms=rules.ttl_ms, stale_after_ms=rules.stale_after_ms)
                  if write and kept else None)  # expiry_instant, one call less


def reset(old: iv.Intervals, nas: str, at_ms: int, rules: Rules) -> Change:
    """Accounting-On/Off of ``nas`` on one key's intervals (no sweep)."""
    new = iv.apply_reset(old, nas, at_ms)
    write = new is not old
    return Change("reset", new, write, 0, expiry_instant(new, rules) if write else None)


# -- the sweeper -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sweep:
    """What the sweeper does with one due key."""

    intervals: iv.Intervals    # kept
    expired: int               # dropped
    held: bool                 # kept past its expiry instant by a legal hold
    write: bool                # write the key (a tombstone when ``intervals`` is empty)
    recheck_ms: Optional[int]  # held: look again no later than this
    expiry_ms: Optional[int]   # next expiry instant of ``intervals`` (None: none left or all held)

    @property
    def tombstone(self) -> bool:
        return self.write and not self.intervals


def sweep(ivs: iv.Intervals, now_ms: int, rules: Rules, *, is_held: Optional[IsHeld] = None) -> Sweep:
    """The sweeper's decision on a key due at ``now_ms``.  A key kept past its expiry by a hold
    is written although nothing dropped: the writer re-seals it so its epoch key outlives the
    hold.  A key neither dropped from nor held is not written (its re-seal is the vault's
    decision)."""
    kept, dropped = iv.sweep(ivs, now_ms, ttl_ms=rules.ttl_ms, stale_after_ms=rules.stale_after_ms,
                             is_held=is_held)
    nxt = expiry_instant(kept, rules)
    held = nxt is not None and nxt <= now_ms
    return Sweep(kept, dropped, held, bool(dropped) or held, now_ms + HOLD_RECHECK_MS if held else None, nxt)


def hold_predicate(holds: Any, operator: str, net: IPNetwork, now_ms: int) -> Optional[IsHeld]:
    """Is an interval of ``operator``'s key ``net`` under a legal hold in ``holds`` (a
    ``stream.hold.HoldSet``)?  None when there are no holds at all (the sweep's fast path)."""
    if holds is None or not getattr(holds, "holds", ()):
        return None

    def held(i: iv.Interval) -> bool:
        ports = (i.port_first, i.port_last) if i.port_first is not None else None
        return holds.is_held(operator, net, (i.start_ms, i.end_ms), now_ms, ports=ports)

    return held


# -- lookups -----------------------------------------------------------------------------------

#: (slot "ip" or "nat", address) → the intervals of every key of that slot holding the address
IntervalsFor = Callable[[str, IPAddress], list]
#: is the table partition of this (inside) network held by this worker?
Owns = Callable[[IPNetwork], bool]


def _holders(ivs: list, lo: int, hi: int, stale_after_ms: int, extra: dict) -> tuple[list, list]:
    """The answer rows of ``ivs`` during ``[lo, hi)``: confirmed holders, and the sessions
    silent past the lost-Stop window (``end_unknown``); ``extra`` is added to each row."""
    rows = [{"subscriber": h.holder, "from_ms": h.from_ms, "to_ms": h.to_ms, **extra}
            for h in iv.during(ivs, lo, hi, stale_after_ms=stale_after_ms)]
    unknown = [{"subscriber": u.holder, "from_ms": u.from_ms, "last_seen_ms": u.last_seen_ms,
                "window_ms": u.window_ms, **extra}
               for u in iv.last_seen(ivs, lo, hi, stale_after_ms=stale_after_ms)]
    return rows, unknown


def _answer(rows: list, unknown: list, hops: list) -> dict:
    out: dict = {"status": "ok" if rows or hops else ("end-unknown" if unknown else "no-data"), "holders": rows}
    if unknown:
        out["end_unknown"] = unknown
    if hops:  # the asker completes them (agents.lookup_client.complete_hops)
        out["hops"] = hops
    return out


def _proto_clash(chain: list) -> Optional[tuple]:
    """Two hops of different logged protocols, at overlapping times, to different inside
    addresses: without the lookup's protocol either could be the answer.  The protocols, or None."""
    for i, a in enumerate(chain):
        if a[5] is None:
            continue
        for b in chain[i + 1:]:
            if b[5] is not None and b[5] != a[5] and b[0] != a[0] and a[1] < b[2] and b[1] < a[2]:
                return tuple(sorted({c[5] for c in chain if c[5] is not None}))
    return None


def check_proto(proto: Any) -> Optional[int]:
    """A lookup's protocol: None (any) or an IANA protocol number; ``Rejected("bad-protocol")``."""
    if proto is not None and (type(proto) is not int or not 0 <= proto <= 255):
        raise Rejected("bad-protocol", "protocol must be an IANA protocol number 0..255")
    return proto


def resolve(address: object, port: object, from_ms: object, to_ms: object, *, now_ms: int, rules: Rules,
            intervals_for: IntervalsFor, owns: Owns, proto: object = None) -> dict:
    """Who held ``address`` (``port``) during ``[from_ms, to_ms)``, from the keys this worker
    holds.  When the inside address of a NAT hop lives on another worker (``owns`` says no),
    the hop comes back as ``"hops": [{"inside_ip", "from_ms", "to_ms", "ports"}]`` for the asker
    to look up — never silently left out; with ``[realms]`` that is an error instead (the
    asker's merge cannot tell realms apart).  ``proto`` (IANA number, None = any): see the
    module docstring.  ``Rejected`` for an address that is not one address, or a bad protocol.

    The request's values arrive as decoded, so their types are checked here, each with its
    reason (typed parameters would make compiled code raise TypeError on entry instead)."""
    proto = check_proto(proto)
    if not isinstance(address, str):
        raise Rejected("bad-address", "address is not an IP address or prefix")
    if port is not None and type(port) is not int:
        raise Rejected("bad-port", "port must be an integer")
    if type(from_ms) is not int or type(to_ms) is not int:
        raise Rejected("bad-interval", "query interval bounds must be integers (ms)")
    net = parse_network(address)
    if net.prefixlen != net.max_prefixlen:
        raise Rejected("bad-address", "lookups take a single address")
    addr = net.network_address
    stale = rules.stale_after_ms
    realms, versions = rules.realms, rules.detnat
    # one hop per logged NAT holding and per deterministic version:
    # (inside address, from, to, ports, realms of the NAT source and its logged VRF, protocol)
    chain: list[tuple[str, int, int, list, frozenset, Optional[int]]] = []
    for x in intervals_for("nat", addr):
        for h in iv.during([x], from_ms, to_ms, port=port, stale_after_ms=stale, proto=proto):
            chain.append((h.holder, h.from_ms, h.to_ms, [h.port_first, h.port_last], realms.of_nat(x.nas, x.vrf),
                          x.proto))
    for m in detnat.lookup(versions, str(addr), port, from_ms, to_ms, now_ms=now_ms, keep_ms=rules.ttl_ms):
        chain.append((m.inside_ip, max(from_ms, m.from_ms), to_ms if m.to_ms is None else min(to_ms, m.to_ms),
                      [m.port_first, m.port_last], frozenset({m.realm}) if m.realm else frozenset(), None))
    chain.sort(key=lambda c: (c[1], c[0]))
    if proto is None and port is not None:
        clash = _proto_clash(chain)
        if clash is not None:
            return {"status": "ambiguous", "candidates": len({c[0] for c in chain}),
                    "detail": f"port {port} is in per-protocol blocks of protocols {', '.join(map(str, clash))} "
                              f"held by different inside addresses: give the protocol"}
    if port is None and (chain or detnat.covers(versions, str(addr), from_ms, to_ms, now_ms=now_ms,
                                                keep_ms=rules.ttl_ms)):
        return {"status": "ambiguous",
                "candidates": len({c[0] for c in chain}) or max(v.ratio for v in versions),
                "detail": "CGNAT public address without a source port (RFC 6302)"}
    if not chain:
        return _answer(*_holders(intervals_for("ip", addr), from_ms, to_ms, stale, {}), [])
    rows: list = []
    unknown: list = []
    hops: list = []
    seen: set = set()
    for inside_ip, lo, hi, ports, nat_realms, _proto in chain:
        hop = (inside_ip, lo, hi, tuple(ports), nat_realms)
        if hop in seen:  # the same inside address's blocks of two protocols: one answer
            continue
        seen.add(hop)
        inside = parse_network(inside_ip)
        if not owns(inside):  # the second hop lives on another worker
            if realms.configured:  # the asker's merge cannot tell realms apart: never over-answer
                return {"status": "error", "reason": "realm-hop-remote",
                        "detail": "the inside address lives on another worker; realms need a local hop"}
            hops.append({"inside_ip": inside_ip, "from_ms": lo, "to_ms": hi, "ports": ports})
            continue
        ivs = intervals_for("ip", inside.network_address)
        if realms.configured:
            cands = [x for x in ivs if iv.during([x], lo, hi, stale_after_ms=stale)
                     or iv.last_seen([x], lo, hi, stale_after_ms=stale)]
            sel = select(realms, nat_realms, cands, lambda x: x.nas or x.session)
            if sel.status != "ok":
                return {"status": "ambiguous", "candidates": len(cands),
                        "detail": f"inside {inside_ip} is held in several routing realms "
                                  f"({', '.join(sel.realms)})"}
            ivs = sel.kept
        r, u = _holders(ivs, lo, hi, stale, {"inside_ip": inside_ip, "ports": ports})
        rows += r
        unknown += u
    return _answer(rows, unknown, hops)
