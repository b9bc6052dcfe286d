"""An IPFIX (RFC 7011) encoder written from the RFC's byte layout, independent of
``stream.parse.ipfix``: the tests build exporter traffic with it and compare the decoder's
bindings against what was encoded."""

from __future__ import annotations

import ipaddress
import struct

#: IANA IE ids (RFC 8158 NAT events) and their encoded lengths
IE = {
    "sourceIPv4Address": (8, 4), "sourceIPv6Address": (27, 16), "sourceTransportPort": (7, 2),
    "postNATSourceIPv4Address": (225, 4), "postNAPTSourceTransportPort": (227, 2),
    "natEvent": (230, 1), "ingressVRFID": (234, 4), "observationTimeMilliseconds": (323, 8),
    "portRangeStart": (361, 2), "portRangeEnd": (362, 2), "portRangeNumPorts": (364, 2),
    "exporterIPv4Address": (130, 4), "protocolIdentifier": (4, 1),
}


def template_set(tid: int, names: list[str], *, enterprise: tuple[int, int, int] | None = None) -> bytes:
    """Set id 2 with one template; ``enterprise`` = (ie, length, PEN) appended as a private IE."""
    spec = b"".join(struct.pack("!HH", *IE[n]) for n in names)
    count = len(names)
    if enterprise:
        ie, ln, pen = enterprise
        spec += struct.pack("!HHI", ie | 0x8000, ln, pen)
        count += 1
    body = struct.pack("!HH", tid, count) + spec
    return struct.pack("!HH", 2, 4 + len(body)) + body


def withdrawal_set(tid: int) -> bytes:
    return struct.pack("!HHHH", 2, 8, tid, 0)


def options_template_set(tid: int) -> bytes:
    # scope: exporterIPv4Address; one option field: protocolIdentifier
    body = struct.pack("!HHH", tid, 2, 1) + struct.pack("!HHHH", 130, 4, 4, 1)
    return struct.pack("!HH", 3, 4 + len(body)) + body


def value(name: str, v) -> bytes:
    _ie, ln = IE[name]
    if name.endswith(("IPv4Address", "IPv6Address")):
        return ipaddress.ip_address(v).packed
    return int(v).to_bytes(ln, "big")


def data_set(tid: int, names: list[str], rows: list[dict], *, private: bytes = b"", pad: int = 0) -> bytes:
    body = b"".join(b"".join(value(n, r[n]) for n in names) + private for r in rows) + b"\x00" * pad
    return struct.pack("!HH", tid, 4 + len(body)) + body


def message(sets: list[bytes], *, domain: int = 1, export_s: int = 1718000000, seq: int = 0) -> bytes:
    payload = b"".join(sets)
    return struct.pack("!HHIII", 10, 16 + len(payload), export_s, seq, domain) + payload


BLOCK = ["observationTimeMilliseconds", "natEvent", "sourceIPv4Address", "postNATSourceIPv4Address",
         "portRangeStart", "portRangeEnd", "ingressVRFID"]
SESSION = ["observationTimeMilliseconds", "natEvent", "sourceIPv4Address", "sourceTransportPort",
           "postNATSourceIPv4Address", "postNAPTSourceTransportPort"]
NAT64 = ["observationTimeMilliseconds", "natEvent", "sourceIPv6Address", "postNATSourceIPv4Address",
         "portRangeStart", "portRangeEnd"]
