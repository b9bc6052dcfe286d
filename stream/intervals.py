"""Who held an address (or a NAT port block) when: half-open intervals per table key.

A table key names one address slot of one operator: ``<operator>|ip|<address or prefix>`` for
RADIUS/DHCP bindings and ``<operator>|nat|<public address>`` for CGNAT port blocks
(``table_key``; the worker stores the keyed form ``keyed_table_key``, which holds a keyed hash
of the address instead of the address).  Its value
is a tuple of ``Interval`` sorted by start.  Everything here is a pure function of
(intervals, binding) or (intervals, query); time is an argument.

Semantics (each rule has a unit test in ``tests/unit/test_intervals.py``):

- *Slot.*  Two intervals compete for the same slot when they are on the same key and, for NAT,
  their port ranges overlap and their protocols may be the same (``proto``: the IANA number of
  a per-protocol block; None, a block for every protocol, competes with each).  Within a slot at most one holder exists at any instant.
- *Same session.*  An event belongs to an existing interval when its session matches (RADIUS:
  ``<nas>/<Acct-Session-Id>``), or — for DHCP and NAT, which have no session — when its holder
  (for NAT: inside address and logged VRF) matches and the intervals touch or overlap.
- **start** opens ``[at, open)``.  A later start by another holder on the same slot closes the
  earlier interval at that instant ("IP re-use").  A duplicate start changes nothing; a start
  that arrives after its own interim or stop (out of order) moves the interval's start earlier.
- **update** (Interim-Update, DHCP renew, NAT ACTIVE) extends ``last_ms`` (and a DHCP lease's
  ``until_ms``).  An update without a start opens the interval at ``at − Acct-Session-Time``
  when the session time is known, else at ``at``.
- **stop** closes the session at ``at``.  A stop without a start records
  ``[at − Acct-Session-Time, at)`` when the session time is known; without it there is nothing
  to record (the outcome says ``orphan-stop``).  A stop for an interval already closed keeps the
  earlier end (duplicates are harmless).
- **reset** (Accounting-On/Off of a NAS) closes every open interval of that NAS at ``at``.
- *Overlap repair.*  After every change, an interval that overlaps a later-starting interval of
  a different holder in the same slot is cut at that start: the newest claim on an address wins.
- *Staleness.*  An open interval whose holder went silent is not current for ever: its
  effective end is ``until_ms`` (DHCP lease end) or ``last_ms + stale_after_ms`` (a lost Stop),
  whichever applies first.  Retention counts from the effective end.

Expiry: an interval is *expired* at ``effective_end + ttl_ms`` (``ttl_ms`` from
``stream.policy``); ``sweep`` drops expired intervals.  ``held`` marks intervals under a legal
hold, which ``sweep`` keeps.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable, Final, Iterable, Optional, Sequence

from .errors import Rejected
from .model import Binding, IPAddress, IPNetwork, _v4_host, freeze, ip_text, slot_constructor

#: Default for how long an open interval stays current without any event (lost Stop).
DEFAULT_STALE_AFTER_MS = 24 * 3600 * 1000
#: IPv6 addresses are routed (partitioned) by their /48, so every prefix a subscriber can be
#: delegated (/48 … /128) lives on the partition that also answers lookups inside it.
V6_ROUTING_PREFIX = 48


class Interval:
    """One holder's tenure of a slot, immutable (see ``stream.model.freeze``).

    A plain class rather than a frozen dataclass: compiled by mypyc, the ``Final`` attributes make
    a native class with read-only attributes, built without a per-field ``object.__setattr__``."""

    __slots__ = ("start_ms", "end_ms", "holder", "session", "nas", "last_ms", "until_ms", "port_first",
                 "port_last", "held", "vrf", "proto")

    def __init__(self, start_ms: int, end_ms: Optional[int], holder: str, session: Optional[str] = None,
                 nas: Optional[str] = None, last_ms: int = 0, until_ms: Optional[int] = None,
                 port_first: Optional[int] = None, port_last: Optional[int] = None, held: bool = False,
                 vrf: Optional[str] = None, proto: Optional[int] = None) -> None:
        self.start_ms: Final = start_ms
        self.end_ms: Final = end_ms          # None while open
        self.holder: Final = holder          # subscriber (ip slots) or inside address (nat slots)
        self.session: Final = session
        self.nas: Final = nas
        self.last_ms: Final = last_ms        # newest event time seen for this interval
        self.until_ms: Final = until_ms      # DHCP lease end
        self.port_first: Final = port_first
        self.port_last: Final = port_last
        self.held: Final = held              # under a legal hold: not swept
        self.vrf: Final = vrf                # NAT: the VRF / routing instance the CGN logged (realm selection)
        self.proto: Final = proto            # NAT: the block's IANA protocol number; None = every protocol

    def _key(self) -> tuple:
        return (self.start_ms, self.end_ms, self.holder, self.session, self.nas, self.last_ms, self.until_ms,
                self.port_first, self.port_last, self.held, self.vrf, self.proto)

    def __eq__(self, other: object) -> bool:
        if type(other) is Interval:
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple:  # pickle and copy through the constructor, in both forms
        return Interval, self._key()

    def effective_end(self, stale_after_ms: int) -> int:
        """The instant this interval stops being current (never None)."""
        e = self.last_ms + stale_after_ms
        end, until = self.end_ms, self.until_ms
        if end is not None and end < e:
            e = end
        if until is not None and until < e:
            e = until
        return e

    def same_slot(self, other: "Interval") -> bool:
        if self.proto is not None and other.proto is not None and self.proto != other.proto:
            return False  # a TCP block and a UDP block of the same ports are two slots
        if self.port_first is None or other.port_first is None:
            return True
        return not (self.port_last < other.port_first or other.port_last < self.port_first)  # type: ignore[operator]

    def __repr__(self) -> str:  # no raw identifiers in reprs
        return f"Interval([{self.start_ms}, {self.end_ms}))"


Intervals = tuple[Interval, ...]

freeze(Interval)
#: ``Interval(*all twelve fields)``, positional (``slot_constructor``: interpreted, a faster
#: equivalent of the constructor; compiled, the constructor)
_new_interval: Callable[..., Interval] = slot_constructor(
    Interval, (1, 2, "h", "s", "n", 3, 4, 5, 6, True, "v", 17))


def _moved(iv: Interval, start_ms: int, end_ms: Optional[int], last_ms: int, until_ms: Optional[int]) -> Interval:
    """``replace(iv, start_ms=…, end_ms=…, last_ms=…, until_ms=…)``: the only fields a binding
    changes (``dataclasses.replace`` is slow, mostly its keyword handling)."""
    return _new_interval(start_ms, end_ms, iv.holder, iv.session, iv.nas, last_ms, until_ms, iv.port_first,
                         iv.port_last, iv.held, iv.vrf, iv.proto)


# -- keys ------------------------------------------------------------------------------------


def slot_of(b: Binding) -> str:
    return "nat" if b.kind == "nat" else "ip"


def table_key(operator: str, slot: str, net: IPNetwork) -> str:
    return f"{operator}|{slot}|{ip_text(net)}"


def routing_key(operator: str, net: IPNetwork | IPAddress) -> str:
    """The partitioning key: IPv4 by address, IPv6 by its /48 (see ``V6_ROUTING_PREFIX``)."""
    if isinstance(net, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        net = ipaddress.ip_network(net)
    if net.version == 6:
        if net.prefixlen < V6_ROUTING_PREFIX:
            raise Rejected("prefix-too-short", f"IPv6 prefixes shorter than /{V6_ROUTING_PREFIX} are not subscriber prefixes")
        net = net.supernet(new_prefix=V6_ROUTING_PREFIX)
    return f"{operator}|{ip_text(net)}"


def candidate_networks(addr: IPAddress) -> list[IPNetwork]:
    """Every network a table key may name that contains ``addr`` (longest first): the address
    itself, and for IPv6 each prefix from /127 up to the routing /48."""
    net = ipaddress.ip_network(addr)
    if addr.version == 4:
        return [net]
    return [net.supernet(new_prefix=p) for p in range(128, V6_ROUTING_PREFIX - 1, -1)]


def candidate_keys(operator: str, slot: str, addr: IPAddress) -> list[str]:
    """Every plain table key whose prefix could contain ``addr`` (longest first)."""
    return [table_key(operator, slot, n) for n in candidate_networks(addr)]


# -- applying bindings -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What ``apply`` did, for metrics: one of opened, extended, closed, duplicate, orphan-stop,
    reopened-earlier, reset, expired-on-arrival."""

    kind: str


#: one immutable ``Outcome`` per kind ``apply`` returns, shared (no instance per binding)
_OUTCOME = {k: Outcome(k) for k in ("opened", "extended", "closed", "duplicate", "orphan-stop", "reopened-earlier")}


def _interval_from(b: Binding, start_ms: int, end_ms: Optional[int]) -> Interval:
    holder = str(b.inside_ip) if b.kind == "nat" else b.subscriber
    if holder is None:
        raise Rejected("missing-identity", "binding has no subscriber")
    return _new_interval(start_ms, end_ms, holder, b.session, b.nas,
                         max(start_ms, b.at_ms) if end_ms is None else end_ms,
                         b.until_ms, b.port_first, b.port_last, False, b.vrf, b.proto)


def _matches(iv: Interval, b: Binding, probe: Interval) -> bool:
    if not iv.same_slot(probe):
        return False
    if b.session is not None and iv.session is not None:
        return iv.session == b.session
    if iv.holder != probe.holder or iv.vrf != probe.vrf:  # 100.64.0.9 in VRF 7 ≠ in VRF 8
        return False
    # no session (DHCP, NAT): the same holder's interval that is still open, or that ends at or
    # after this event's time (a renewal within the lease), is the same tenure
    return iv.end_ms is None or iv.end_ms >= b.at_ms


def _started_at(b: Binding) -> int:
    if b.session_time_s is not None:
        return b.at_ms - 1000 * b.session_time_s
    return b.at_ms


#: a NAS (``nas`` as carried by an interval) → its routing realm, or None (the default realm)
RealmOf = Callable[[Optional[str]], Optional[str]]


def apply(intervals: Intervals, b: Binding, *, realm_of: Optional[RealmOf] = None) -> tuple[Intervals, Outcome]:
    """Apply one (non-reset) binding to the intervals of its key.

    ``realm_of`` (from the profile's ``[realms]``, ``stream.realm.RealmMap.of_access``): holders
    in different routing realms share an inside address space, so a later start in one realm
    does not end a holder in another (see ``_repair``)."""
    if b.action == "reset":
        raise ValueError("reset bindings go through apply_reset")
    probe = _interval_from(b, b.at_ms, None)
    idx = None
    for i, iv in enumerate(intervals):  # the first match (a loop: no generator per binding)
        if _matches(iv, b, probe):
            idx = i
            break
    ivs = list(intervals)
    if b.action == "start":
        if idx is None:
            ivs.append(probe)
            outcome = "opened"
        else:
            iv = ivs[idx]
            if b.at_ms < iv.start_ms:
                ivs[idx] = _moved(iv, b.at_ms, iv.end_ms, iv.last_ms, iv.until_ms)
                outcome = "reopened-earlier"
            else:
                if iv.end_ms is None:
                    ivs[idx] = _moved(iv, iv.start_ms, None, max(iv.last_ms, b.at_ms), _later(iv.until_ms, b.until_ms))
                outcome = "duplicate" if b.at_ms == iv.start_ms else "extended"
    elif b.action == "update":
        if idx is None:
            start = _started_at(b)
            ivs.append(_moved(probe, start, probe.end_ms, b.at_ms, probe.until_ms))
            outcome = "opened"
        else:
            iv = ivs[idx]
            if iv.end_ms is not None and iv.end_ms <= b.at_ms and b.session is not None:
                outcome = "duplicate"  # late interim after the stop: the stop is authoritative
            else:
                start = min(iv.start_ms, _started_at(b)) if b.session_time_s is not None else iv.start_ms
                ivs[idx] = _moved(iv, start, iv.end_ms, max(iv.last_ms, b.at_ms), _later(iv.until_ms, b.until_ms))
                outcome = "extended"
    elif b.action == "stop":
        if idx is None:
            if b.session_time_s is None:
                return intervals, _OUTCOME["orphan-stop"]
            ivs.append(_moved(probe, _started_at(b), b.at_ms, b.at_ms, None))
            outcome = "opened"
        else:
            iv = ivs[idx]
            end = b.at_ms if iv.end_ms is None else min(iv.end_ms, b.at_ms)
            start = min(iv.start_ms, _started_at(b))
            if end < start:
                end = start
            outcome = "duplicate" if iv.end_ms == end and iv.start_ms == start else "closed"
            ivs[idx] = _moved(iv, start, end, max(iv.last_ms, end), None)
    else:  # pragma: no cover - Binding validates actions
        raise ValueError(b.action)
    return _repair(ivs, realm_of), _OUTCOME[outcome]


def apply_reset(intervals: Intervals, nas: str, at_ms: int) -> Intervals:
    """Accounting-On/Off: close every open interval of ``nas`` at ``at_ms``."""
    out = []
    changed = False
    for iv in intervals:
        if iv.end_ms is None and iv.nas == nas and iv.start_ms <= at_ms:
            out.append(_moved(iv, iv.start_ms, at_ms, max(iv.last_ms, at_ms), iv.until_ms))
            changed = True
        else:
            out.append(iv)
    return tuple(out) if changed else intervals


def _later(a: Optional[int], b: Optional[int]) -> Optional[int]:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _repair(ivs: list[Interval], realm_of: Optional[RealmOf] = None) -> Intervals:
    """Sort by start and cut any interval overlapped by a later start of another holder in the
    same realm: one address (or port block) has one holder at a time *per routing realm*.  Two
    realms reuse the same private space (RFC 6598 behind two CGNATs), so north's holder of
    100.64.0.9 is not ended by south's Start for 100.64.0.9; the lookup picks the realm from
    the NAT hop (``stream.realm.select``).  Without realms every NAS is in the one default realm.

    A CGNAT public address holds every port block of the retention, thousands on a busy one:
    scanning all later intervals for each made this quadratic (docs/benchmarks.md, "A key's
    history").  When the blocks partition the intervals (``_slot_groups``) each is scanned
    alone, which finds the same first qualifying start, since the others are not its slot."""
    n = len(ivs)
    if n < 2:  # the usual key: one interval, nothing to order or cut
        return tuple(ivs)
    ivs.sort(key=_start_then_port)
    groups = _slot_groups(ivs) if n > 2 else None
    if groups is None:
        _cut(ivs, range(n), realm_of)
    else:
        for idx in groups:
            if len(idx) > 1:
                _cut(ivs, idx, realm_of)
    return tuple(ivs)


def _start_then_port(iv: Interval) -> tuple[int, int]:
    return iv.start_ms, iv.port_first or 0


def _cut(ivs: list[Interval], idx: Sequence[int], realm_of: Optional[RealmOf]) -> None:
    """``_repair``'s cut over the intervals ``ivs[k]`` for ``k`` in ``idx`` (ascending): each is
    cut at the first later start of another holder in its slot and realm."""
    m = len(idx)
    for a in range(m - 1):
        i = idx[a]
        iv = ivs[i]
        start, holder, session, vrf = iv.start_ms, iv.holder, iv.session, iv.vrf
        for b in range(a + 1, m):
            later = ivs[idx[b]]
            if later.start_ms <= start or (later.holder == holder and later.session == session
                                           and later.vrf == vrf):
                continue
            if not iv.same_slot(later):
                continue
            if realm_of is not None and realm_of(iv.nas) != realm_of(later.nas):
                continue
            if iv.end_ms is None or iv.end_ms > later.start_ms:
                ivs[i] = _moved(iv, start, later.start_ms, iv.last_ms, iv.until_ms)
            break


def _slot_groups(ivs: Sequence[Interval]) -> Optional[list[list[int]]]:
    """The indices of ``ivs`` grouped by slot, in order, when "same slot" is "same group": every
    interval has a port block, the distinct blocks are pairwise disjoint, and the protocols are
    all given or all absent.  None otherwise (an address slot, overlapping blocks, mixed
    protocols): then ``_cut`` scans everything."""
    groups: dict[tuple, list[int]] = {}
    for i, iv in enumerate(ivs):
        first, last = iv.port_first, iv.port_last
        if first is None or last is None or last < first:
            return None
        key = (first, last, iv.proto)
        g = groups.get(key)
        if g is None:
            groups[key] = [i]
        else:
            g.append(i)
    if len({k[2] is None for k in groups}) > 1:
        return None
    ranges = sorted({(k[0], k[1]) for k in groups})
    for (_, last), (first, _) in zip(ranges, ranges[1:]):
        if first <= last:
            return None
    return list(groups.values())


# -- expiry ---------------------------------------------------------------------------------


def expiry_ms(iv: Interval, *, ttl_ms: int, stale_after_ms: int = DEFAULT_STALE_AFTER_MS) -> int:
    return iv.effective_end(stale_after_ms) + ttl_ms


def next_expiry_ms(intervals: Intervals, *, ttl_ms: int, stale_after_ms: int = DEFAULT_STALE_AFTER_MS) -> Optional[int]:
    best = None
    for iv in intervals:  # a loop, not min() over a list: one interval is the usual key
        if not iv.held:
            e = iv.effective_end(stale_after_ms)
            if best is None or e < best:
                best = e
    return None if best is None else best + ttl_ms


def sweep(intervals: Intervals, now_ms: int, *, ttl_ms: int,
          stale_after_ms: int = DEFAULT_STALE_AFTER_MS,
          is_held: Optional[Callable[[Interval], bool]] = None) -> tuple[Intervals, int]:
    """Drop intervals whose expiry instant has passed, except those under a legal hold
    (``iv.held`` or ``is_held(iv)``).  Returns (kept, number dropped)."""
    cut = now_ms - ttl_ms  # expiry_ms > now_ms  ⇔  effective_end > now_ms - ttl_ms
    if len(intervals) == 1:  # the usual key: the same test without a generator
        i = intervals[0]
        if i.held or i.effective_end(stale_after_ms) > cut or (is_held is not None and is_held(i)):
            return tuple(intervals), 0
        return (), 1
    kept = tuple(iv for iv in intervals
                 if iv.held or iv.effective_end(stale_after_ms) > cut or (is_held is not None and is_held(iv)))
    return kept, len(intervals) - len(kept)


# -- lookups --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Holding:
    """One answer row: ``holder`` held the address during ``[from_ms, to_ms)``."""

    holder: str
    from_ms: int
    to_ms: int
    port_first: Optional[int] = None
    port_last: Optional[int] = None


#: ICMP and ICMPv6: a NAPT maps their query ids as it maps ports, but an id is not a port.  A
#: lookup without a protocol asks about a port, so these bindings answer only a lookup naming them.
QUERY_ID_PROTOS = frozenset((1, 58))


def during(intervals: Iterable[Interval], from_ms: int, to_ms: int, *, port: Optional[int] = None,
           stale_after_ms: int = DEFAULT_STALE_AFTER_MS, proto: Optional[int] = None) -> list[Holding]:
    """Every holder overlapping ``[from_ms, to_ms)``, clipped to it.  A point query at T is
    ``during(ivs, T, T + 1)``.  With ``port``, only NAT blocks containing that port; with
    ``proto``, only blocks of that protocol or of every protocol; without it, no ICMP query-id
    bindings (``QUERY_ID_PROTOS``)."""
    if to_ms <= from_ms:
        raise Rejected("bad-interval", "query interval is empty")
    out = []
    for iv in intervals:
        if port is not None and iv.port_first is not None and not (iv.port_first <= port <= iv.port_last):  # type: ignore[operator]
            continue
        if (iv.proto != proto and iv.proto is not None) if proto is not None else iv.proto in QUERY_ID_PROTOS:
            continue
        end = iv.effective_end(stale_after_ms)
        lo, hi = max(iv.start_ms, from_ms), min(end, to_ms)
        if lo < hi:
            out.append(Holding(iv.holder, lo, hi, iv.port_first, iv.port_last))
    out.sort(key=lambda h: (h.from_ms, h.holder))
    return out


@dataclass(frozen=True, slots=True)
class LastSeen:
    """An open session whose holder went silent for longer than the lost-Stop window: it held
    the address from ``from_ms`` and was last seen at ``last_seen_ms``; when it ended is not
    known.  Neither a confirmed holder after ``last_seen_ms + window`` nor "no data"."""

    holder: str
    from_ms: int
    last_seen_ms: int
    window_ms: int
    port_first: Optional[int] = None
    port_last: Optional[int] = None


def last_seen(intervals: Iterable[Interval], from_ms: int, to_ms: int, *, port: Optional[int] = None,
              stale_after_ms: int = DEFAULT_STALE_AFTER_MS, proto: Optional[int] = None) -> list[LastSeen]:
    """Open sessions (no Stop, no lease end before the window ran out, no later holder) whose
    lost-Stop window ended before ``to_ms``: ``during`` stops naming them at ``last_ms +
    stale_after_ms``, and for ``[from_ms, to_ms)`` past that point the honest answer is "last
    held by X, last seen at T, end unknown"."""
    if to_ms <= from_ms:
        raise Rejected("bad-interval", "query interval is empty")
    out = []
    for iv in intervals:
        if iv.end_ms is not None:
            continue  # a Stop, a reset or a later holder ended it: the end is known
        if port is not None and iv.port_first is not None and not (iv.port_first <= port <= iv.port_last):  # type: ignore[operator]
            continue
        if (iv.proto != proto and iv.proto is not None) if proto is not None else iv.proto in QUERY_ID_PROTOS:
            continue
        lapse = iv.last_ms + stale_after_ms
        if iv.until_ms is not None and iv.until_ms <= lapse:
            continue  # a DHCP lease that ran out: its end is known
        if to_ms > lapse and to_ms > iv.start_ms:
            out.append(LastSeen(iv.holder, iv.start_ms, iv.last_ms, stale_after_ms, iv.port_first, iv.port_last))
    out.sort(key=lambda h: (h.from_ms, h.holder))
    return out


# -- codec ----------------------------------------------------------------------------------
#
# Format 2 (binary; format 1 was JSON ``{"v":1,"i":[…]}``, whose first byte is ``{``).  All
# integers are LEB128 varints, signed ones zigzag-mapped (0, -1, 1, -2 … → 0, 1, 2, 3 …):
#
#   value     = version:0x02  network  count:uvarint  interval*count
#   network   = 0xFF                           (no network: ``encode``)
#             | tag:u8  address-bytes          tag 0..32 = IPv4 /tag, 64..192 = IPv6 /(tag-64);
#                                              the network address's first ceil(len/8) bytes
#   interval  = flags:u8
#               start:svarint                  minus the previous interval's start (first: 0)
#               [end:svarint]                  minus start            (flags & 0x01)
#               last:svarint                   minus start
#               [until:svarint]                minus start            (flags & 0x08)
#               [port_first:svarint  port_last:svarint minus port_first]  (flags & 0x10)
#               holder:text
#               [session:text]                 (flags & 0x02); with flags & 0x40 it is only
#                                              what follows "<nas>/" (RADIUS: <nas>/<session id>)
#               [nas:text]                     (flags & 0x04)
#               [ext:u8]                       (flags & 0x80) extension flags, right after flags
#               [vrf:text]                     (ext & 0x01), after nas
#               [proto:u8]                     (ext & 0x02), after vrf: a per-protocol NAT
#                                              block's IANA protocol number
#               held = flags & 0x20; ext & 0xFC must be 0 (an older decoder refuses flags & 0x80,
#               and the VRF-only decoder refuses ext & 0x02, so a value with a VRF or protocol is
#               unreadable to them; every value written before carries no extension byte, or
#               ext 0x01, and decodes unchanged)
#   text      = header:uvarint (length << 3 | kind)  payload:length bytes
#               kind 0 UTF-8; 1 an address (4 or 16 bytes; the text is its canonical form:
#               dotted quad, or Python's compressed IPv6); 2 lower-case hex; 3 upper-case hex;
#               4 lower-case hex bytes separated by ":" (DHCP client ids, MACs, DUIDs as
#               ``stream.parse._dhcp.hexid`` writes them); 5-7 are not used
#
# A RADIUS session with a 23-character subscriber and an 8-hex-digit session id encodes to
# 52 bytes with its network (140 as format 1: network text and JSON); a DHCP lease of a MAC 26.  ``decode``/``decode_value`` raise ``Rejected``
# ("bad-value") for anything that is not a complete format-2 value, never another exception.

FORMAT_VERSION = 0x02
_NO_NET = 0xFF
_F_END, _F_SESSION, _F_NAS, _F_UNTIL, _F_PORTS, _F_HELD, _F_SESSION_AFTER_NAS, _F_EXT = 1, 2, 4, 8, 16, 32, 64, 128
_X_VRF, _X_PROTO = 1, 2  # extension byte flags
_X_KNOWN = _X_VRF | _X_PROTO
_T_UTF8, _T_ADDR, _T_HEX, _T_HEX_UPPER, _T_HEX_COLON = 0, 1, 2, 3, 4
_INT_LIMIT = 1 << 63
_HEX = re.compile(r"(?:[0-9a-f][0-9a-f])+|(?:[0-9A-F][0-9A-F])+")
_HEX_COLON = re.compile(r"[0-9a-f][0-9a-f](?::[0-9a-f][0-9a-f])+")
_HEX_FIRST = frozenset("0123456789abcdefABCDEF")
_NAS_CACHE: dict[str, bytes] = {}
_NAS_CACHE_MAX = 4096


def _uvarint(out: bytearray, v: int) -> None:
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)


def _svarint(out: bytearray, v: int) -> None:
    if v >= 0:
        if v >= _INT_LIMIT:
            raise ValueError("interval field out of the 64-bit range")
        v <<= 1
    else:
        if v < -_INT_LIMIT:
            raise ValueError("interval field out of the 64-bit range")
        v = (~v << 1) | 1
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)


def _packed_address(s: str) -> Optional[bytes]:
    """The 4 or 16 bytes of ``s`` if ``s`` is an address in canonical text form, else None."""
    if s.count(".") == 3 and s[:1].isdigit() and ":" not in s:
        # four decimal parts without ipaddress's parser (a NAT holder, the inside address, on
        # every write): whatever ``int`` lets through beyond plain digits (a sign, "_", spaces,
        # other scripts' digits, leading zeros) fails the canonical comparison, so exactly the
        # texts IPv4Address(s) packs to s's own bytes pass (tests/unit/test_intervals_bytes.py)
        try:
            packed = bytes(map(int, s.split(".")))
        except ValueError:  # an empty or non-numeric part, or one above 255
            return None
        return packed if ".".join(map(str, packed)) == s else None
    if ":" in s and ("::" in s or s.count(":") == 7) and "%" not in s:
        try:
            a = ipaddress.IPv6Address(s)
        except ValueError:
            return None
        return a.packed if str(a) == s else None
    return None


def _text(out: bytearray, s: str, try_address: bool) -> None:
    if try_address and 7 <= len(s) <= 39:
        packed = _packed_address(s)
        if packed is not None:
            _uvarint(out, len(packed) << 3 | _T_ADDR)
            out += packed
            return
    if s[:1] not in _HEX_FIRST:  # neither hex form: no regex (subscriber names, session ids)
        pass
    elif not len(s) & 1 and _HEX.fullmatch(s):  # whole hex pairs: an even length
        b = bytes.fromhex(s)
        _uvarint(out, len(b) << 3 | (_T_HEX if s.islower() or s.isdigit() else _T_HEX_UPPER))
        out += b
        return
    if s[:1] in _HEX_FIRST and ":" in s and _HEX_COLON.fullmatch(s):  # at least two pairs, one ":"
        b = bytes.fromhex(s.replace(":", ""))
        _uvarint(out, len(b) << 3 | _T_HEX_COLON)
        out += b
        return
    b = s.encode("utf-8")
    _uvarint(out, len(b) << 3 | _T_UTF8)
    out += b


def _nas_text(s: str) -> bytes:
    b = _NAS_CACHE.get(s)
    if b is None:
        buf = bytearray()
        _text(buf, s, True)
        b = bytes(buf)
        if len(_NAS_CACHE) >= _NAS_CACHE_MAX:
            _NAS_CACHE.clear()
        _NAS_CACHE[s] = b
    return b


def _network_bytes(net: Optional[IPNetwork]) -> bytes:
    if net is None:
        return bytes((_NO_NET,))
    p = net.prefixlen
    return bytes((p if net.version == 4 else 64 + p,)) + net.network_address.packed[:(p + 7) >> 3]


def _encode(net: Optional[IPNetwork], intervals: Intervals) -> bytes:
    out = bytearray((FORMAT_VERSION,))
    out += _network_bytes(net)
    _uvarint(out, len(intervals))
    prev = 0
    for i in intervals:
        start, end, until, session, nas = i.start_ms, i.end_ms, i.until_ms, i.session, i.nas
        flags = 0
        if end is not None:
            flags |= _F_END
        if session is not None:
            flags |= _F_SESSION
            if nas is not None and session.startswith(nas) and session[len(nas):len(nas) + 1] == "/":
                flags |= _F_SESSION_AFTER_NAS
                session = session[len(nas) + 1:]
        if nas is not None:
            flags |= _F_NAS
        if until is not None:
            flags |= _F_UNTIL
        if i.port_first is not None:
            flags |= _F_PORTS
        if i.held:
            flags |= _F_HELD
        vrf, proto = i.vrf, i.proto
        ext = (0 if vrf is None else _X_VRF) | (0 if proto is None else _X_PROTO)
        if ext:
            flags |= _F_EXT
        out.append(flags)
        if ext:
            out.append(ext)
        _svarint(out, start - prev)
        prev = start
        if end is not None:
            _svarint(out, end - start)
        _svarint(out, i.last_ms - start)
        if until is not None:
            _svarint(out, until - start)
        if flags & _F_PORTS:
            _svarint(out, i.port_first)  # type: ignore[arg-type]
            _svarint(out, i.port_last - i.port_first)  # type: ignore[operator]
        _text(out, i.holder, True)
        if session is not None:
            _text(out, session, False)
        if nas is not None:
            out += _nas_text(nas)
        if vrf is not None:
            _text(out, vrf, False)
        if proto is not None:
            if type(proto) is not int or not 0 <= proto <= 255:
                raise ValueError("interval proto is not a protocol number 0..255")
            out.append(proto)
    return bytes(out)


def encode(intervals: Intervals) -> bytes:
    """Format 2 without a network (see the layout above)."""
    return _encode(None, intervals)


def encode_value(net: IPNetwork, intervals: Intervals) -> bytes:
    """Format 2 with the key's network: what the vault seals as a table value."""
    return _encode(net, intervals)


class _Bad(Exception):
    pass


def _uv(raw: bytes, pos: int) -> tuple[int, int]:
    b = raw[pos]
    if b < 0x80:
        return b, pos + 1
    v = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = raw[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, pos
        shift += 7
        if shift > 63:
            raise _Bad("varint longer than 10 bytes")


def _sv(raw: bytes, pos: int) -> tuple[int, int]:
    v, pos = _uv(raw, pos)
    return (-(v >> 1) - 1 if v & 1 else v >> 1), pos


def _text_at(raw: bytes, pos: int) -> tuple[str, int]:
    h, pos = _uv(raw, pos)
    end = pos + (h >> 3)
    if end > len(raw):
        raise _Bad("text runs past the end")
    chunk = raw[pos:end]
    kind = h & 7
    if kind == _T_UTF8:
        return chunk.decode("utf-8"), end
    if kind == _T_ADDR:
        if len(chunk) == 4:
            return ".".join(map(str, chunk)), end
        if len(chunk) == 16:
            return str(ipaddress.IPv6Address(chunk)), end
        raise _Bad("address text of a bad length")
    if not chunk:
        raise _Bad("empty hex text")
    if kind == _T_HEX:
        return chunk.hex(), end
    if kind == _T_HEX_UPPER:
        return chunk.hex().upper(), end
    if kind == _T_HEX_COLON and len(chunk) >= 2:
        return chunk.hex(":"), end
    raise _Bad("unknown text kind")


def _network_tag(tag: int) -> tuple[int, int]:
    """(address width in bytes, prefix length) of a network tag other than ``_NO_NET``."""
    if tag <= 32:
        return 4, tag
    if 64 <= tag <= 192:
        return 16, tag - 64
    raise _Bad("unknown network tag")


def _network_at(raw: bytes, pos: int) -> tuple[Optional[IPNetwork], int]:
    tag = raw[pos]
    pos += 1
    if tag == _NO_NET:
        return None, pos
    if tag == 32:  # a single IPv4 address, the usual key: no ipaddress constructor
        end = pos + 4
        if end > len(raw):
            raise _Bad("network runs past the end")
        return _v4_host(int.from_bytes(raw[pos:end], "big")), end
    width, p = _network_tag(tag)
    end = pos + ((p + 7) >> 3)
    if end > len(raw):
        raise _Bad("network runs past the end")
    n = int.from_bytes(raw[pos:end].ljust(width, b"\0"), "big")
    net = ipaddress.IPv4Network((n, p)) if width == 4 else ipaddress.IPv6Network((n, p))  # strict: no host bits
    return net, end


def _decode(raw: bytes) -> tuple[Optional[IPNetwork], Intervals]:
    if not isinstance(raw, (bytes, bytearray)):
        raise Rejected("bad-value", "table value is not bytes")
    try:
        if raw[0] != FORMAT_VERSION:
            raise _Bad(f"unknown format version {raw[0]}")
        net, pos = _network_at(raw, 1)
        n, pos = _uv(raw, pos)
        if n > len(raw):
            raise _Bad("interval count larger than the value")
        out = []
        prev = 0
        uv, new = _uv, _new_interval
        for _ in range(n):
            flags = raw[pos]
            pos += 1
            ext = 0
            if flags & _F_EXT:
                ext = raw[pos]
                pos += 1
                if ext & ~_X_KNOWN:
                    raise _Bad("unknown extension flag")
            v, pos = uv(raw, pos)
            start = prev = prev + (-(v >> 1) - 1 if v & 1 else v >> 1)
            end = until = pf = pl = session = nas = vrf = proto = None
            if flags & _F_END:
                v, pos = uv(raw, pos)
                end = start + (-(v >> 1) - 1 if v & 1 else v >> 1)
            v, pos = uv(raw, pos)
            last = start + (-(v >> 1) - 1 if v & 1 else v >> 1)
            if flags & _F_UNTIL:
                v, pos = _sv(raw, pos)
                until = start + v
            if flags & _F_PORTS:
                pf, pos = _sv(raw, pos)
                v, pos = _sv(raw, pos)
                pl = pf + v
            h = raw[pos]
            if h < 0x80 and h & 7 == _T_UTF8:  # a short UTF-8 holder (a subscriber name): inline
                pos += 1
                e = pos + (h >> 3)
                if e > len(raw):
                    raise _Bad("text runs past the end")
                holder = raw[pos:e].decode("utf-8")
                pos = e
            else:
                holder, pos = _text_at(raw, pos)
            if flags & _F_SESSION:
                session, pos = _text_at(raw, pos)
            if flags & _F_NAS:
                nas, pos = _text_at(raw, pos)
            if ext & _X_VRF:
                vrf, pos = _text_at(raw, pos)
            if ext & _X_PROTO:
                proto = raw[pos]
                pos += 1
            if flags & _F_SESSION_AFTER_NAS:
                if session is None or nas is None:
                    raise _Bad("session after nas without both")
                session = nas + "/" + session
            out.append(new(start, end, holder, session, nas, last, until, pf, pl, bool(flags & _F_HELD), vrf, proto))
        if pos != len(raw):
            raise _Bad("trailing bytes")
    except (_Bad, IndexError, ValueError) as exc:  # UnicodeDecodeError and ipaddress errors are ValueErrors
        detail = str(exc) if isinstance(exc, _Bad) else ("truncated" if isinstance(exc, IndexError) else "bad field")
        raise Rejected("bad-value", f"not a format-{FORMAT_VERSION} interval value ({detail})") from None
    return net, tuple(out)


def _skip_text(raw: bytes, pos: int) -> int:
    h, pos = _uv(raw, pos)
    return pos + (h >> 3)


def next_expiry_of(raw: bytes, *, ttl_ms: int, stale_after_ms: int = DEFAULT_STALE_AFTER_MS) -> Optional[int]:
    """``next_expiry_ms(decode(raw), …)`` reading only the times and flags of a format-2 value
    (network and texts skipped, no ``Interval`` built): the sweeper's schedule rebuild opens
    every value of a restored table.  ``Rejected`` like ``decode`` for a value that is not
    format 2 (texts are skipped by their length, not checked)."""
    if not isinstance(raw, (bytes, bytearray)):
        raise Rejected("bad-value", "table value is not bytes")
    try:
        if raw[0] != FORMAT_VERSION:
            raise _Bad(f"unknown format version {raw[0]}")
        tag = raw[1]
        pos = 2 if tag == _NO_NET else 2 + ((_network_tag(tag)[1] + 7) >> 3)
        n, pos = _uv(raw, pos)
        if n > len(raw):
            raise _Bad("interval count larger than the value")
        best = None
        prev = 0
        for _ in range(n):
            flags = raw[pos]
            pos += 1
            ext = 0
            if flags & _F_EXT:
                ext = raw[pos]
                pos += 1
                if ext & ~_X_KNOWN:
                    raise _Bad("unknown extension flag")
            v, pos = _sv(raw, pos)
            start = prev = prev + v
            end = until = None
            if flags & _F_END:
                v, pos = _sv(raw, pos)
                end = start + v
            v, pos = _sv(raw, pos)
            eff = start + v + stale_after_ms
            if flags & _F_UNTIL:
                v, pos = _sv(raw, pos)
                until = start + v
            if flags & _F_PORTS:
                pos = _sv(raw, _sv(raw, pos)[1])[1]
            pos = _skip_text(raw, pos)
            if flags & _F_SESSION:
                pos = _skip_text(raw, pos)
            if flags & _F_NAS:
                pos = _skip_text(raw, pos)
            if ext & _X_VRF:
                pos = _skip_text(raw, pos)
            if ext & _X_PROTO:
                pos += 1
            if flags & _F_HELD:
                continue
            if end is not None and end < eff:
                eff = end
            if until is not None and until < eff:
                eff = until
            if best is None or eff < best:
                best = eff
        if pos != len(raw):
            raise _Bad("trailing bytes" if pos < len(raw) else "truncated")
    except (_Bad, IndexError) as e:
        raise Rejected("bad-value", f"not a format-{FORMAT_VERSION} interval value ({e if isinstance(e, _Bad) else 'truncated'})") from None
    return None if best is None else best + ttl_ms


def decode(raw: bytes) -> Intervals:
    """The intervals of a format-2 value (with or without a network); ``Rejected`` otherwise."""
    return _decode(raw)[1]


def decode_value(raw: bytes) -> tuple[IPNetwork, Intervals]:
    """(network, intervals) of a value written by ``encode_value``; ``Rejected`` otherwise."""
    net, ivs = _decode(raw)
    if net is None:
        raise Rejected("bad-value", "table value has no network")
    return net, ivs


# -- table keys of the keyed (sealed) table ------------------------------------------------

#: slot → the one byte after ``<operator>|`` in a keyed table key
SLOT_TAGS = {"ip": b"i", "nat": b"n"}
KEY_ID_BYTES = 16


def keyed_table_key(operator: str, slot: str, key_id: bytes) -> bytes:
    """``<operator> "|" <slot tag: i or n> <16-byte key id>``: the operator stays readable (and
    ``operator_of`` cheap); the address is only in the keyed hash (``Keyring.key_id``)."""
    return operator.encode() + b"|" + SLOT_TAGS[slot] + key_id


def operator_of(key: bytes) -> str:
    """The operator of a table key, keyed or plain (operator names cannot contain ``|``)."""
    return key.split(b"|", 1)[0].decode("utf-8", "replace")


def holders_of(intervals: Sequence[Interval]) -> set[str]:
    return {iv.holder for iv in intervals}
