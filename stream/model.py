"""The canonical model: one ``Binding`` per "this address (or prefix, or port block) belongs to
this subscriber from this instant" fact, whatever format it arrived in.

Conventions (DESIGN.md): integer milliseconds named ``*_ms``; addresses are ``ipaddress``
objects inside the core and text only at the edges; instances are frozen and slotted.

``ip`` is always an ``IPv4Network``/``IPv6Network``: a single address is a /32 or /128.  Its
text form (``ip_text``) is the compressed canonical address for a full-length network
(``100.64.12.34``) and ``addr/len`` for a prefix (``2001:db8:200:ab00::/56``).  For NAT
bindings ``ip`` is the *public* address and ``inside_ip`` the private one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Optional, Union

from .errors import Rejected

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

KINDS = ("radius", "dhcp", "nat")
ACTIONS = ("start", "update", "stop", "reset")

#: Bumped whenever the JSON form of a Binding changes incompatibly.
BINDING_SCHEMA_VERSION = 1


def ip_text(net: IPNetwork) -> str:
    """Compressed canonical text: the bare address for /32 and /128, ``addr/len`` otherwise."""
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return net.with_prefixlen


def parse_network(text: str, *, field: str = "address") -> IPNetwork:
    """Parse an address or prefix into a network; reject host bits and odd notations.

    Documented rules: leading/trailing whitespace is stripped; zone ids (``fe80::1%eth0``) are
    rejected (``bad-address``) since a zone is meaningless off-link; an IPv4-mapped IPv6
    address (``::ffff:192.0.2.1``) is kept as IPv6 (it is what the device reported); IPv4
    octets with leading zeros are rejected by Python's ``ipaddress`` (ambiguous octal).
    A prefix with host bits set (``2001:db8::1/64``) is rejected, not silently masked.
    """
    if not isinstance(text, str):
        raise Rejected("bad-address", f"{field} is not an IP address or prefix")
    s = text.strip()
    if not s or "%" in s:
        raise Rejected("bad-address", f"{field} is not an IP address or prefix")
    try:
        if "/" in s:
            return ipaddress.ip_network(s, strict=True)
        addr = ipaddress.ip_address(s)
        return ipaddress.ip_network(addr)
    except ValueError:
        raise Rejected("bad-address", f"{field} is not an IP address or prefix") from None


@dataclass(frozen=True, slots=True)
class Binding:
    """One fact about who holds an address, normalised from any input format."""

    kind: str
    action: str
    operator: str
    ip: Optional[IPNetwork]  # None only for a RADIUS reset (Accounting-On/Off) of a whole NAS
    subscriber: Optional[str]
    session: Optional[str]
    nas: Optional[str]
    at_ms: int
    until_ms: Optional[int] = None
    hwaddr: Optional[str] = None
    client_id: Optional[str] = None
    duid: Optional[str] = None
    circuit_id: Optional[str] = None
    remote_id: Optional[str] = None
    inside_ip: Optional[ipaddress.IPv4Address | ipaddress.IPv6Address] = None
    port_first: Optional[int] = None
    port_last: Optional[int] = None
    octets_in: Optional[int] = None
    octets_out: Optional[int] = None
    session_time_s: Optional[int] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise Rejected("bad-kind", f"kind must be one of {KINDS}")
        if self.action not in ACTIONS:
            raise Rejected("bad-action", f"action must be one of {ACTIONS}")
        if self.ip is None and self.action != "reset":
            raise Rejected("missing-address", "only a reset binding may lack an address")
        if not isinstance(self.at_ms, int) or isinstance(self.at_ms, bool):
            raise Rejected("bad-timestamp", "at_ms must be an integer")
        if self.kind == "nat" and self.action != "reset":
            if self.inside_ip is None:
                raise Rejected("missing-attribute", "NAT binding without inside address")
            if (self.port_first is None) != (self.port_last is None):
                raise Rejected("bad-port-range", "NAT port range needs both ends")
            if self.port_first is not None and not (
                0 <= self.port_first <= self.port_last <= 65535  # type: ignore[operator]
            ):
                raise Rejected("bad-port-range", "NAT port range out of order or > 65535")

    # -- text edges ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of ``ipanon parse`` (and of the bindings topic)."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "ip":
                v = ip_text(v) if v is not None else None
            elif f.name == "inside_ip":
                v = str(v) if v is not None else None
            d[f.name] = v
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Binding":
        try:
            kw = {f.name: d.get(f.name) for f in dataclasses.fields(cls)}
            if kw["ip"] is not None:
                kw["ip"] = parse_network(kw["ip"], field="ip")
            if kw["inside_ip"] is not None:
                kw["inside_ip"] = ipaddress.ip_address(kw["inside_ip"])
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise Rejected("bad-binding", type(e).__name__) from None

    @classmethod
    def from_json(cls, raw: bytes) -> "Binding":
        try:
            d = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise Rejected("bad-json", "binding is not JSON") from None
        if not isinstance(d, dict):
            raise Rejected("bad-binding", "binding is not a JSON object")
        return cls.from_dict(d)

    def __repr__(self) -> str:  # never print raw identifiers by accident (logs, tracebacks)
        return f"Binding(kind={self.kind!r}, action={self.action!r}, operator={self.operator!r}, at_ms={self.at_ms})"
