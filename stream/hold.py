"""Legal holds: freeze expiry of exactly the mappings a preservation order names.

A preservation order (rättegångsbalken 27 kap. 16 §; e.g. PMÖÄ 5331-21) or a court order can
forbid deleting named data (REFERENCE.md §2).  A hold names one operator, one address or prefix,
optionally one port (CGNAT public address + port, RFC 6302), a half-open time interval
``[from_ms, to_ms)`` of the *usage* it covers, a case reference, and ``until_ms``: the instant
the hold lapses by itself.  Holds are always time-limited — a preservation order is for a
limited period (90 days under 27:16 RB as we read it; extended by a new order) — and
``make_hold`` refuses anything longer than ``max_hold_ms``.

Matching (``LegalHold.matches``), all conditions must hold:

- same operator;
- the mapping's address/prefix and the hold's overlap (either contains the other: a hold on
  one IPv6 address holds the delegated /56 it lies in, a hold on a /24 holds each /32 in it);
- port: a hold without a port matches any mapping; a hold with a port matches a mapping whose
  port block contains it, and a mapping without a port block (conservatively — it may be the
  far end of the chain; the caller resolves CGNAT chains and holds every link);
- the mapping's interval ``[start_ms, end_ms)`` overlaps ``[from_ms, to_ms)`` (``end_ms=None``
  = still open);
- ``now_ms < until_ms`` (a lapsed hold matches nothing; releasing removes it).

Pure: time arrives as ``now_ms``; nothing here reads the clock.  Reprs never show the address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Union

from .errors import Rejected
from .model import IPAddress, IPNetwork, ip_text, parse_network

#: Longest hold ``make_hold`` accepts (90 days): a preservation order is time-limited.
DEFAULT_MAX_HOLD_MS = 90 * 86_400_000

Key = Union[IPNetwork, IPAddress]


def _as_network(key: Key) -> IPNetwork:
    if isinstance(key, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return key
    return ipaddress.ip_network(key)


@dataclass(frozen=True, slots=True)
class LegalHold:
    """One hold.  ``hold_id`` is derived from the content (stable across replays)."""

    operator: str
    network: IPNetwork = field(repr=False)
    port: Optional[int]
    from_ms: int
    to_ms: int
    case_ref: str
    until_ms: int
    created_ms: int

    @property
    def hold_id(self) -> str:
        raw = json.dumps(self.to_dict(with_id=False), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    def matches(self, operator: str, key: Key, start_ms: int, end_ms: Optional[int], now_ms: int,
                ports: Optional[tuple[int, int]] = None) -> bool:
        if now_ms >= self.until_ms or operator != self.operator:
            return False
        net = _as_network(key)
        if net.version != self.network.version:
            return False
        if not (net.subnet_of(self.network) or self.network.subnet_of(net)):  # type: ignore[arg-type]
            return False
        if self.port is not None and ports is not None and not (ports[0] <= self.port <= ports[1]):
            return False
        return start_ms < self.to_ms and (end_ms is None or self.from_ms < end_ms)

    def to_dict(self, *, with_id: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"operator": self.operator, "ip": ip_text(self.network), "port": self.port,
                             "from_ms": self.from_ms, "to_ms": self.to_ms, "case_ref": self.case_ref,
                             "until_ms": self.until_ms, "created_ms": self.created_ms}
        if with_id:
            d["hold_id"] = self.hold_id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LegalHold":
        try:
            h = cls(operator=d["operator"], network=parse_network(d["ip"], field="ip"), port=d.get("port"),
                    from_ms=d["from_ms"], to_ms=d["to_ms"], case_ref=d["case_ref"], until_ms=d["until_ms"],
                    created_ms=d["created_ms"])
        except (KeyError, TypeError):
            raise Rejected("bad-hold", "hold record lacks a field or has a wrong type") from None
        _validate(h)
        if "hold_id" in d and d["hold_id"] != h.hold_id:
            raise Rejected("bad-hold", "hold_id does not match the hold's content")
        return h


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate(h: LegalHold) -> None:
    if not h.operator or not isinstance(h.operator, str):
        raise Rejected("bad-hold", "operator is required")
    if not isinstance(h.case_ref, str) or not h.case_ref.strip():
        raise Rejected("missing-case-ref", "a hold needs the case reference of the order")
    for name in ("from_ms", "to_ms", "until_ms", "created_ms"):
        if not _is_int(getattr(h, name)):
            raise Rejected("bad-timestamp", f"{name} must be integer milliseconds")
    if h.from_ms >= h.to_ms:
        raise Rejected("bad-hold-interval", "from must be before to (half-open [from, to))")
    if h.port is not None and not (_is_int(h.port) and 0 <= h.port <= 65535):
        raise Rejected("bad-port", "port must be 0..65535")
    if h.until_ms <= h.created_ms:
        raise Rejected("hold-in-past", "until must be after the hold is made")


def make_hold(*, operator: str, ip: str, from_ms: int, to_ms: int, case_ref: str, until_ms: int,
              now_ms: int, port: Optional[int] = None, max_hold_ms: int = DEFAULT_MAX_HOLD_MS) -> LegalHold:
    """Validate and build a hold made at ``now_ms``.  Raises ``Rejected`` with a reason:
    ``bad-address``, ``bad-port``, ``bad-hold-interval``, ``missing-case-ref``,
    ``hold-in-past``, ``hold-too-long``."""
    h = LegalHold(operator, parse_network(ip, field="ip"), port, from_ms, to_ms, case_ref.strip()
                  if isinstance(case_ref, str) else case_ref, until_ms, now_ms)
    _validate(h)
    if until_ms - now_ms > max_hold_ms:
        raise Rejected("hold-too-long", f"a hold may last at most {max_hold_ms // 86_400_000} days; "
                                        f"renew it with a new order")
    return h


@dataclass(frozen=True, slots=True)
class HoldSet:
    """An immutable set of holds; every change returns a new set."""

    holds: tuple[LegalHold, ...] = ()

    def add(self, hold: LegalHold) -> "HoldSet":
        if any(h.hold_id == hold.hold_id for h in self.holds):
            return self
        return HoldSet(self.holds + (hold,))

    def release(self, hold_id: str) -> "HoldSet":
        if not any(h.hold_id == hold_id for h in self.holds):
            raise Rejected("unknown-hold", "no hold with that id")
        return HoldSet(tuple(h for h in self.holds if h.hold_id != hold_id))

    def prune(self, now_ms: int) -> "HoldSet":
        """Drop lapsed holds (they match nothing anyway)."""
        return HoldSet(tuple(h for h in self.holds if now_ms < h.until_ms))

    def matching(self, operator: str, key: Key, interval: tuple[int, Optional[int]], now_ms: int, *,
                 ports: Optional[tuple[int, int]] = None) -> tuple[LegalHold, ...]:
        start, end = interval
        return tuple(h for h in self.holds if h.matches(operator, key, start, end, now_ms, ports))

    def is_held(self, operator: str, key: Key, interval: tuple[int, Optional[int]], now_ms: int, *,
                ports: Optional[tuple[int, int]] = None) -> bool:
        """True if any active hold covers this mapping (see module doc for the rules)."""
        return bool(self.matching(operator, key, interval, now_ms, ports=ports))

    def held_until(self, operator: str, key: Key, interval: tuple[int, Optional[int]], now_ms: int, *,
                   ports: Optional[tuple[int, int]] = None) -> Optional[int]:
        """When the sweeper may look again: the latest ``until_ms`` of the matching holds, or
        None if the mapping is not held.  (A release can end a hold earlier; the sweeper
        re-checks then.)"""
        m = self.matching(operator, key, interval, now_ms, ports=ports)
        return max(h.until_ms for h in m) if m else None

    def to_json(self) -> bytes:
        return json.dumps([h.to_dict() for h in self.holds], separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "HoldSet":
        try:
            items = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise Rejected("bad-json", "hold set is not JSON") from None
        if not isinstance(items, list):
            raise Rejected("bad-hold", "hold set must be a JSON list")
        return cls(tuple(LegalHold.from_dict(d) for d in items))

    @classmethod
    def of(cls, holds: Iterable[LegalHold]) -> "HoldSet":
        s = cls()
        for h in holds:
            s = s.add(h)
        return s

    def __len__(self) -> int:
        return len(self.holds)


def is_held(holds: HoldSet, operator: str, key: Key, interval: tuple[int, Optional[int]], now_ms: int, *,
            ports: Optional[tuple[int, int]] = None) -> bool:
    """Function form of ``HoldSet.is_held``."""
    return holds.is_held(operator, key, interval, now_ms, ports=ports)
