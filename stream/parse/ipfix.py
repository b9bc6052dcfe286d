"""``ipfix``: binary IPFIX (RFC 7011) carrying the RFC 8158 NAT information elements.

Why our own decoder: PyPI's ``netflow`` (last release 2023) keys templates by template id alone,
not by exporter and observation domain, and has no template lifetime; both matter when many
CGNs export to one collector over UDP.  The decoder below is small and pure (no I/O, no clock).

Byte layout (all integers big-endian, network order)::

    Message header (16 bytes)
      0  version u16 (= 10)        2  length u16 (whole message, header included)
      4  exportTime u32 (s)        8  sequenceNumber u32      12  observationDomainId u32
    Set header (4 bytes), then the set's records, then optional zero padding
      0  setId u16: 2 template, 3 options template, >= 256 data (= its template id)
      2  length u16 (header included)
    Template record:          templateId u16 (>= 256), fieldCount u16, fieldCount specifiers
    Options template record:  templateId u16, fieldCount u16, scopeFieldCount u16, specifiers
    Field specifier:          ieId u16 (bit 15 set: enterprise-specific), length u16
                              (65535: variable length), enterpriseNumber u32 if bit 15 set
    Template withdrawal:      fieldCount 0 (template id 2 / 3: every template of that kind)
    Data record:              the field values in template order; a variable-length value is
                              preceded by a length byte, or by 255 and a u16 length.

Templates live per (exporter, observation domain, template id) in a ``TemplateCache``.  A
template re-sent with the same id refreshes (or replaces) it; a withdrawal removes it; over UDP a
template not refreshed for ``lifetime_ms`` (RFC 7011 §8.4: the collector's template lifetime,
default 30 min here) expires, and data for it is then *unknown*, never decoded by a stale
layout.

A Kafka record of format ``ipfix`` must decode on its own, so the collector and the file framer
turn each received message into one **self-contained message per data record** (header + the
record's template set + a data set with that record): ``Splitter.split``.  A data set whose
template is unknown or expired is forwarded as it came (without a template), so the worker
dead-letters it as ``unknown-template`` instead of losing it silently.  Options data records
(metadata such as sampling, no NAT event) are counted and not forwarded.  When the exporter's
own records do not name it, the self-contained message gets ``exporterIPv4Address`` (or IPv6)
= the sender's address appended to its template and record, so the binding's ``nas`` says which
CGN logged it.

Decoded values are named as IANA names them and handed to the same NAT-event rules as
``ipfix-json`` (``ipfix_json.bindings``): natEvent 16/17 port blocks, 4/5 and 6/7 sessions, 8-11
BIB, 14/15 address bindings (port blocks when they carry a port range: draft-02 numbering, as
Juniper MX exports).  observationTimeMicro-/Nanoseconds (NTP format) become epoch integers;
addresses become text.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from ..errors import Rejected
from ..model import Binding
from . import Format, register
from .ipfix_json import bindings

VERSION = 10
HEADER = struct.Struct("!HHIII")
SET_HEADER = struct.Struct("!HH")
DEFAULT_TEMPLATE_LIFETIME_MS = 30 * 60 * 1000
MAX_MESSAGE = 65535
_NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01

#: IE id → (IANA name, decoding).  Unknown IEs are skipped by their length.
IES: dict[int, tuple[str, str]] = {
    4: ("protocolIdentifier", "u"), 7: ("sourceTransportPort", "u"),
    8: ("sourceIPv4Address", "v4"), 11: ("destinationTransportPort", "u"),
    12: ("destinationIPv4Address", "v4"), 27: ("sourceIPv6Address", "v6"),
    28: ("destinationIPv6Address", "v6"), 130: ("exporterIPv4Address", "v4"),
    131: ("exporterIPv6Address", "v6"), 225: ("postNATSourceIPv4Address", "v4"),
    226: ("postNATDestinationIPv4Address", "v4"), 227: ("postNAPTSourceTransportPort", "u"),
    228: ("postNAPTDestinationTransportPort", "u"), 230: ("natEvent", "u"),
    234: ("ingressVRFID", "u"), 235: ("egressVRFID", "u"), 236: ("VRFname", "s"),
    281: ("postNATSourceIPv6Address", "v6"), 282: ("postNATDestinationIPv6Address", "v6"),
    283: ("natPoolId", "u"), 284: ("natPoolName", "s"),
    322: ("observationTimeSeconds", "u"), 323: ("observationTimeMilliseconds", "u"),
    324: ("observationTimeMicroseconds", "ntp-us"), 325: ("observationTimeNanoseconds", "ntp-ns"),
    361: ("portRangeStart", "u"), 362: ("portRangeEnd", "u"),
    363: ("portRangeStepSize", "u"), 364: ("portRangeNumPorts", "u"),
}


def _bad(detail: str) -> Rejected:
    return Rejected("bad-ipfix", detail)


@dataclass(frozen=True)
class Template:
    tid: int
    #: (ie id, length, enterprise number or 0) per field
    fields: tuple[tuple[int, int, int], ...]
    scope_count: int = 0  # > 0 for an options template
    raw: bytes = b""      # the template record's bytes, to rebuild self-contained messages


@dataclass
class TemplateCache:
    lifetime_ms: int = DEFAULT_TEMPLATE_LIFETIME_MS
    #: (exporter, domain, template id) → (template, learned_ms)
    entries: dict[tuple[str, int, int], tuple[Template, int]] = field(default_factory=dict)

    def learn(self, exporter: str, domain: int, t: Template, now_ms: int) -> None:
        self.entries[(exporter, domain, t.tid)] = (t, now_ms)

    def withdraw(self, exporter: str, domain: int, tid: int, options: bool) -> None:
        if tid in (2, 3):  # withdraw all templates of that kind
            for k, (t, _) in list(self.entries.items()):
                if k[:2] == (exporter, domain) and bool(t.scope_count) == options:
                    del self.entries[k]
        else:
            self.entries.pop((exporter, domain, tid), None)

    def get(self, exporter: str, domain: int, tid: int, now_ms: int) -> Optional[Template]:
        e = self.entries.get((exporter, domain, tid))
        if e is None:
            return None
        t, learned = e
        if now_ms - learned > self.lifetime_ms:
            del self.entries[(exporter, domain, tid)]
            return None
        return t


def _header(data: bytes) -> tuple[int, int, int, int]:
    if len(data) < HEADER.size:
        raise _bad("shorter than an IPFIX message header")
    version, length, export_s, seq, domain = HEADER.unpack_from(data)
    if version != VERSION:
        raise _bad(f"version {version}, not IPFIX (10)")
    if length < HEADER.size or length > len(data):
        raise _bad("message length field does not match the data")
    return length, export_s, seq, domain


def _sets(data: bytes, length: int) -> Iterator[tuple[int, bytes, bytes]]:
    """(set id, set body, whole set bytes) for each set of one message."""
    i = HEADER.size
    while i < length:
        if length - i < SET_HEADER.size:
            raise _bad("truncated set header")
        sid, slen = SET_HEADER.unpack_from(data, i)
        if slen < SET_HEADER.size or i + slen > length:
            raise _bad("set length runs past the message")
        yield sid, data[i + SET_HEADER.size:i + slen], data[i:i + slen]
        i += slen


def _templates(sid: int, body: bytes) -> Iterator[Template | tuple[int]]:
    """Template records of a set; a withdrawal is yielded as ``(template id,)``."""
    i, n = 0, len(body)
    while n - i >= 4:
        start = i
        tid, count = struct.unpack_from("!HH", body, i)
        i += 4
        if count == 0:
            yield (tid,)
            continue
        scope = 0
        if sid == 3:
            if n - i < 2:
                raise _bad("truncated options template")
            (scope,) = struct.unpack_from("!H", body, i)
            i += 2
            if scope == 0 or scope > count:
                raise _bad("options template scope count out of range")
        if tid < 256:
            raise _bad("template id below 256")
        specs = []
        for _ in range(count):
            if n - i < 4:
                raise _bad("truncated field specifier")
            ie, flen = struct.unpack_from("!HH", body, i)
            i += 4
            pen = 0
            if ie & 0x8000:
                if n - i < 4:
                    raise _bad("truncated enterprise number")
                (pen,) = struct.unpack_from("!I", body, i)
                i += 4
                ie &= 0x7FFF
            if flen == 0:
                raise _bad("field length 0")
            specs.append((ie, flen, pen))
        yield Template(tid, tuple(specs), scope, body[start:i])


def _value(kind: str, v: bytes, name: str) -> object:
    if kind == "u":
        if len(v) > 8:
            raise _bad(f"{name} longer than 8 bytes")
        return int.from_bytes(v, "big")
    if kind == "v4":
        if len(v) != 4:
            raise _bad(f"{name} is not 4 bytes")
        return str(ipaddress.IPv4Address(v))
    if kind == "v6":
        if len(v) != 16:
            raise _bad(f"{name} is not 16 bytes")
        return str(ipaddress.IPv6Address(v))
    if kind == "s":
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(f"{name} is not UTF-8") from None
    if len(v) != 8:  # NTP timestamps (RFC 7011 §6.1.9/6.1.10)
        raise _bad(f"{name} is not an 8-byte NTP timestamp")
    secs, frac = struct.unpack("!II", v)
    secs -= _NTP_EPOCH_OFFSET
    if kind == "ntp-us":
        return secs * 1_000_000 + (frac * 1_000_000 >> 32)
    return secs * 1_000_000_000 + (frac * 1_000_000_000 >> 32)


def _min_len(t: Template) -> int:
    return sum(1 if flen == 65535 else flen for _, flen, _ in t.fields)


def records(t: Template, body: bytes) -> Iterator[tuple[dict, bytes]]:
    """(IANA-named values, the record's raw bytes) for each data record of a data set."""
    i, n, least = 0, len(body), max(1, _min_len(t))
    while n - i >= least:
        start = i
        out: dict = {}
        for ie, flen, pen in t.fields:
            if flen == 65535:
                if i >= n:
                    raise _bad("truncated variable-length field")
                flen = body[i]
                i += 1
                if flen == 255:
                    if n - i < 2:
                        raise _bad("truncated variable-length field")
                    (flen,) = struct.unpack_from("!H", body, i)
                    i += 2
            if n - i < flen:
                raise _bad("data record runs past its set")
            v = body[i:i + flen]
            i += flen
            if pen == 0 and ie in IES:
                name, kind = IES[ie]
                out[name] = _value(kind, v, name)
        yield out, body[start:i]


def message(domain: int, export_s: int, seq: int, sets: Iterable[bytes]) -> bytes:
    """An IPFIX message around the given (complete) sets."""
    payload = b"".join(sets)
    length = HEADER.size + len(payload)
    if length > MAX_MESSAGE:
        raise _bad("message would exceed 65535 bytes")
    return HEADER.pack(VERSION, length, export_s, seq, domain) + payload


def _set(sid: int, body: bytes) -> bytes:
    return SET_HEADER.pack(sid, SET_HEADER.size + len(body)) + body


def _with_exporter(t: Template, exporter: str) -> tuple[bytes, bytes]:
    """The template record (and per-record suffix) with the exporter's address appended as
    exporterIPv4Address/exporterIPv6Address, unless the exporter already sends one: the
    self-contained message then still says which CGN it came from (the binding's ``nas``,
    which routing realms map)."""
    if any(pen == 0 and ie in (130, 131) for ie, _l, pen in t.fields):
        return t.raw, b""
    try:
        a = ipaddress.ip_address(exporter)
    except ValueError:
        return t.raw, b""
    ie = 130 if a.version == 4 else 131
    tid, count = struct.unpack_from("!HH", t.raw)
    tmpl = struct.pack("!HH", tid, count + 1) + t.raw[4:] + struct.pack("!HH", ie, len(a.packed))
    return tmpl, a.packed


@dataclass
class SplitStats:
    messages: int = 0
    records: int = 0
    templates: int = 0
    withdrawals: int = 0
    unknown_sets: int = 0
    options_records: int = 0


class Splitter:
    """Turns received IPFIX messages into self-contained single-record messages (see above)."""

    def __init__(self, lifetime_ms: int = DEFAULT_TEMPLATE_LIFETIME_MS) -> None:
        self.cache = TemplateCache(lifetime_ms)
        self.stats = SplitStats()

    def split(self, data: bytes, exporter: str, now_ms: int) -> list[bytes]:
        """Raises ``Rejected`` (``bad-ipfix``) when the message itself is malformed."""
        length, export_s, seq, domain = _header(data)
        self.stats.messages += 1
        out: list[bytes] = []
        for sid, body, whole in _sets(data, length):
            if sid in (2, 3):
                for t in _templates(sid, body):
                    if isinstance(t, tuple):
                        self.cache.withdraw(exporter, domain, t[0], sid == 3)
                        self.stats.withdrawals += 1
                    else:
                        self.cache.learn(exporter, domain, t, now_ms)
                        self.stats.templates += 1
            elif sid >= 256:
                t = self.cache.get(exporter, domain, sid, now_ms)
                if t is None:
                    self.stats.unknown_sets += 1
                    out.append(message(domain, export_s, seq, [whole]))
                    continue
                tmpl, extra = _with_exporter(t, exporter)
                for _values, raw in records(t, body):
                    if t.scope_count:
                        self.stats.options_records += 1
                        continue
                    self.stats.records += 1
                    out.append(message(domain, export_s, seq, [_set(2, tmpl), _set(sid, raw + extra)]))
            else:
                raise _bad(f"reserved set id {sid}")
        return out


def decode(record: bytes) -> list[dict]:
    """The data records of one self-contained message, as IANA-named values."""
    if len(record) > MAX_MESSAGE:
        raise Rejected("oversized", f"record larger than an IPFIX message ({MAX_MESSAGE} bytes)")
    length, _export_s, _seq, domain = _header(record)
    if length != len(record):
        raise _bad("trailing bytes after the message")
    cache: dict[int, Template] = {}
    out: list[dict] = []
    for sid, body, _whole in _sets(record, length):
        if sid in (2, 3):
            for t in _templates(sid, body):
                if isinstance(t, Template):
                    cache[t.tid] = t
        elif sid >= 256:
            t = cache.get(sid)
            if t is None:
                raise Rejected("unknown-template",
                               f"data set {sid} of domain {domain} has no template (never received or expired)")
            if not t.scope_count:
                out.extend(v for v, _raw in records(t, body))
        else:
            raise _bad(f"reserved set id {sid}")
    if not out:
        raise Rejected("no-data-record", "IPFIX message without a data record")
    return out


def parse(record: bytes, *, operator: str, **_context: object) -> list[Binding]:
    out: list[Binding] = []
    for values in decode(record):
        out.extend(bindings(values, operator))
    return out


def frame(lines: Iterable[bytes]) -> Iterator[bytes]:
    """A file of concatenated IPFIX messages (as ``nfcapd``-less captures or ``cat`` of
    datagrams) → self-contained messages; a template's lifetime runs in export time."""
    data = b"".join(lines)
    sp = Splitter()
    i = 0
    while i < len(data):
        if len(data) - i < HEADER.size:
            yield data[i:]  # the parser rejects it as bad-ipfix: never dropped silently
            return
        (length,) = struct.unpack_from("!H", data, i + 2)
        if length < HEADER.size:
            yield data[i:]
            return
        msg = data[i:i + length]
        (export_s,) = struct.unpack_from("!I", msg, 4)
        try:
            yield from sp.split(msg, "file", export_s * 1000)
        except Rejected:
            yield msg
        i += length


register(Format("ipfix", parse, frame=frame, family="nat",
                description="binary IPFIX (RFC 7011) with RFC 8158 NAT events, one self-contained message per record"))
