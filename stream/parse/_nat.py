"""Shared helpers for NAT/CGNAT formats (IPFIX JSON and vendor syslog lines).

A NAT binding says: from ``at_ms``, public address ``ip`` ports ``port_first..port_last``
belong to inside address ``inside_ip``.  Single-port mappings (session/BIB logs) become a
one-port range; address-only mappings (1:1 NAT) carry no ports.  ``subscriber`` is null — the
subscriber is found by resolving ``inside_ip`` through the RADIUS/DHCP bindings.  ``nas`` is the
logging device when the line names it (the syslog host), so one operator's CGNs stay apart.
``vrf`` is the VRF / routing instance the line logs (NFWare ``VRF n``, 6WIND ``@vrf``, IPFIX
``VRFname``/``ingressVRFID``), as text exactly as logged: ``stream.realm`` maps it to a realm.
``proto`` is the IANA protocol number of a per-protocol block or session when the line logs one
(A10 ``proto=TCP``, 6WIND ``proto 6``, NFWare's and F5's number, SRX ``protocol-id``, IPFIX
``protocolIdentifier``); None when the box allocates one block for all protocols (Juniper PBA,
NFWare's block form, A10 ``FIXED-NAT-PORTS``) or the line names none.

Syslog lines reach these parsers whole — with or without ``<PRI>`` and the RFC 3164/5424
header — whether they came from a file or from ``ipanon collect syslog``.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from ..errors import Rejected
from ..model import Binding, nat_binding
from ._fastip import is_single, network as parse_network

MAX_LINE_BYTES = 8 * 1024


def text(record: bytes) -> str:
    if len(record) > MAX_LINE_BYTES:
        raise Rejected("oversized", f"line longer than {MAX_LINE_BYTES} bytes")
    try:
        return record.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Rejected("bad-encoding", "line is not UTF-8") from None


def inside(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    net = parse_network(addr, field="inside address")
    if not is_single(net):
        raise Rejected("bad-address", "inside address must be a single address")
    return net.network_address


def port(v: str | int, field: str = "port") -> int:
    if type(v) is int and 0 <= v <= 65535:  # the common case, checked first
        return v
    if isinstance(v, bool):
        raise Rejected("bad-port-range", f"{field} is not a port number")
    if isinstance(v, str):
        s = v.strip()
        if not (s.isascii() and s.isdigit()) or len(s) > 5:
            raise Rejected("bad-port-range", f"{field} is not a port number")
        v = int(s)
    if not isinstance(v, int) or not 0 <= v <= 65535:
        raise Rejected("bad-port-range", f"{field} out of range")
    return v


#: protocol names as vendors write them (A10 CEF ``proto=UDP``, ``NAT-TCP-C``) → IANA number
PROTOCOLS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPV6": 58, "IPV6-ICMP": 58, "SCTP": 132, "DCCP": 33,
             "GRE": 47, "ESP": 50, "UDPLITE": 136, "UDP-LITE": 136}


def protocol(v: str | int, field: str = "protocol") -> int:
    """An IANA protocol number, from a number (``6``, ``"17"``) or a name (``TCP``, ``udp``)."""
    if type(v) is int and 0 <= v <= 255:
        return v
    if isinstance(v, str):
        s = v.strip()
        if s.isascii() and s.isdigit() and len(s) <= 3 and int(s) <= 255:
            return int(s)
        n = PROTOCOLS.get(s.upper())
        if n is not None:
            return n
    raise Rejected("bad-attribute", f"{field} is not a protocol number or known name")


def binding(*, action: str, operator: str, public: str, inside_addr: str, at_ms: int,
            first: Optional[str | int] = None, last: Optional[str | int] = None,
            nas: Optional[str] = None, vrf: Optional[str] = None, proto: Optional[int] = None) -> Binding:
    pub = parse_network(public, field="public address")
    if not is_single(pub):
        raise Rejected("bad-address", "public address must be a single address")
    pf = first if first is None or (type(first) is int and 0 <= first <= 65535) else port(first, "first port")
    pl = last if last is None or (type(last) is int and 0 <= last <= 65535) else port(last, "last port")
    return nat_binding(action, operator, pub, nas, at_ms, inside(inside_addr), pf, pl, vrf, proto)
