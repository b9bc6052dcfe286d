"""``a10``: A10 Thunder CGN syslog lines: CEF (what Thunder CFW/CGN writes) and the ASCII form.

**CEF** (ArcSight Common Event Format, ``CEF:Version|Vendor|Product|Version|SignatureID|Name|
Severity|Extension``), as captured from a Thunder in the cgn-ec project's test data::

    2025-05-02T11:34:56.87+00:00 10.254.254.57 cgn0.thn2/cgn-demo  CEF:0|A10|CFW|6.0.0-P1|CGN 106|Nat Port Batch Pool Allocated|5|proto=UDP src=100.65.140.73 sourceTranslatedAddress=99.99.99.12 sourceTranslatedPort=22016 cn3=22271 cn3Label=Last Nat Port

Signature ``CGN 1nn``; the event's *name* decides the action (``Allocated``/``Created`` →
start, ``Freed``/``Deleted`` → stop), so CGN 100 port allocated, 101 freed, 102 session
created, 103 session deleted, 106/107 port batch allocated/freed all read the same way.  Inside
= ``src``, public = ``sourceTranslatedAddress``; ports ``sourceTranslatedPort`` .. ``cn3`` when
``cn3Label`` is ``Last Nat Port`` (a batch), else the one port.  ``proto=ICMP`` (``ICMPv6``)
events carry the ICMP query identifier in the port fields (``spt`` inside,
``sourceTranslatedPort`` public: a NAPT translates a query id as it does a port, RFC 5508 §3.1):
they become a one-id binding of ``proto`` 1 (58), the id in the port fields.  A lookup that
names TCP or UDP never lands on it (other protocols are left out); one that names ICMP (1)
finds it; one without a protocol is the usual *any* lookup (ambiguous when a TCP/UDP holding
of the same number goes to another inside address).  Thunder allocates port batches per
protocol: ``proto`` (name or number) becomes the binding's IANA
``proto`` (``UDP`` → 17), so a TCP and a UDP batch of the same ports stay apart.  Time:
``rt`` (CEF receipt time, epoch ms) when present, else the syslog header.  A collector that
splits off the ``CEF:`` program tag leaves ``0|A10|…``; both are accepted.

**ASCII** form.

A10's own log reference was not reachable from here; the shapes below are those the
open-source cgn-ec project parses (its handler comments and regular expressions), so treat
them as *assumed* until checked against a real Thunder:

    NAT-TCP-C: 100.64.1.2:10000<-->198.51.100.9:20000 to 203.0.113.5:443      port mapping
    NAT-UDP-D: 100.64.1.2:10000<->203.0.113.5:53,198.51.100.9:20000<-->203.0.113.5:53   session
    FIXED-NAT-PORTS 10.10.10.172->192.168.9.173:3000-4000                       fixed-NAT block

Event letter: ``C``/``B`` → start, ``U`` → update, ``D`` → stop.  A port/session mapping is a
one-port binding of the protocol its tag names (``NAT-TCP`` → 6; ``NAT-ICMP`` is refused as
``unsupported-protocol``: no real ASCII ICMP line has been seen to read its id from); ``FIXED-NAT-PORTS`` is a start of the whole range, for
every protocol (``proto`` null).  Time from the syslog
header (``_time`` year/zone rule).
"""

from __future__ import annotations

import re
from typing import Optional

from ..errors import Rejected
from ..model import Binding
from . import Format, register
from ._nat import binding, protocol, text
from ._time import check_range, syslog_header, syslog_time

_ACTION = {"C": "start", "B": "start", "U": "update", "D": "stop"}
_PORTMAP = re.compile(r"\bNAT-([A-Z0-9]+)-([CBUD]): ([0-9.]+):\d+<-->([0-9.]+):(\d+) to [0-9.]+:\d+\s*$")
_SESSION = re.compile(
    r"\bNAT-([A-Z0-9]+)-([CBUD]): ([0-9.]+):\d+<->[0-9.]+:\d+,([0-9.]+):(\d+)<-->[0-9.]+:\d+\s*$")
_ICMP = ("ICMP", "ICMPV6", "1", "58")
_FIXED = re.compile(r"\bFIXED-NAT-PORTS ([0-9.]+)->([0-9.]+):(\d+)-(\d+)\s*$")
#: CEF header up to the extension; the vendor must be A10 (pipes in header fields are escaped \|)
CEF = re.compile(r"(?:^|\s)(?:CEF:)?(\d+)\|A10\|(?:[^|\\]|\\.)*\|(?:[^|\\]|\\.)*\|"
                 r"((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|(?:[^|\\]|\\.)*\|(.*)$")
_CEF_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z0-9_.]+)=")
_CEF_START = ("Allocated", "Created")
_CEF_STOP = ("Freed", "Deleted")


def cef_extension(ext: str) -> dict[str, str]:
    """CEF ``key=value`` pairs: a value runs to the next `` key=`` (values may hold spaces)."""
    keys = [m for m in _CEF_KEY.finditer(ext) if m.start() == 0 or ext[m.start() - 1] != "\\"]
    out = {}
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(ext)
        out[m.group(1)] = ext[m.end():end].strip().replace("\\=", "=").replace("\\\\", "\\")
    return out


def _parse_cef(line: str, m: re.Match, *, operator: str, tz: Optional[str], year: Optional[int],
               ref_ms: Optional[int]) -> list[Binding]:
    sig, name, ext = m.group(2).strip(), m.group(3).strip(), m.group(4)
    if not sig.startswith("CGN "):
        raise Rejected("unsupported-event", "A10 CEF event is not a CGN NAT event")
    words = name.split()
    if any(w in words for w in _CEF_START):
        action = "start"
    elif any(w in words for w in _CEF_STOP):
        action = "stop"
    else:
        raise Rejected("unsupported-event", "A10 CEF CGN event carries no allocation or release")
    kv = cef_extension(ext)
    proto = protocol(kv["proto"], "proto") if kv.get("proto") else None
    try:
        inside_addr, public, lo = kv["src"], kv["sourceTranslatedAddress"], kv["sourceTranslatedPort"]
    except KeyError as e:
        raise Rejected("missing-attribute", f"A10 CEF event lacks {e.args[0]}") from None
    hi = kv["cn3"] if "cn3" in kv and kv.get("cn3Label", "").lower() == "last nat port" else lo
    rt = kv.get("rt")
    if rt is not None and rt.isascii() and rt.isdigit():
        at_ms = check_range(int(rt))
    else:
        at_ms = syslog_time(line, tz=tz, year=year, ref_ms=ref_ms)
    h = syslog_header(line)
    return [binding(action=action, operator=operator, public=public, inside_addr=inside_addr,
                    at_ms=at_ms, first=lo, last=hi, nas=h[1] if h else None, proto=proto)]


def parse(record: bytes, *, operator: str, tz: Optional[str] = None, year: Optional[int] = None,
          ref_ms: Optional[int] = None, **_context: object) -> list[Binding]:
    line = text(record)
    c = CEF.search(line)
    if c is not None:
        return _parse_cef(line, c, operator=operator, tz=tz, year=year, ref_ms=ref_ms)
    m = _PORTMAP.search(line) or _SESSION.search(line)
    proto = None
    if m is not None:
        name, ev, inside_addr, public, p = m.groups()
        if name in _ICMP:
            raise Rejected("unsupported-protocol", "ICMP query identifier is not a transport port")
        action, lo, hi, proto = _ACTION[ev], p, p, protocol(name, "protocol tag")
    else:
        f = _FIXED.search(line)
        if f is None:
            raise Rejected("unrecognised", "not an A10 CGN NAT log message")
        inside_addr, public, lo, hi = f.groups()
        action = "start"
    at_ms = syslog_time(line, tz=tz, year=year, ref_ms=ref_ms)
    h = syslog_header(line)
    return [binding(action=action, operator=operator, public=public, inside_addr=inside_addr,
                    at_ms=at_ms, first=lo, last=hi, nas=h[1] if h else None, proto=proto)]


register(Format("a10", parse, family="nat",
                description="A10 Thunder CGN CEF (CGN 100-107) and NAT-<proto>-<C|D> / FIXED-NAT-PORTS lines"))
