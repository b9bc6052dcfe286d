"""``sixwind``: 6WIND Turbo Router / vSR ``fp-cgnat`` syslog lines.

Port-block mapping (6WIND user guide, CGNAT events)::

    Jun 11 08:03:09 vsr fp-cgnat[4269]: USER 100.64.0.1 (matching rule 1): NEW BLOCK (pool "mypool", ip public 192.0.2.33, proto 6, port 1 - 512)
    Jun 11 08:07:30 vsr fp-cgnat[4269]: USER 100.64.0.1 (matching rule 1): DESTROY BLOCK (pool "mypool", ip public 192.0.2.33, proto 6, port 1 - 512)

Virtual Service Router 3 (``fp-cgnat-logd``) writes no ``pool`` field and stamps the event
itself; NAT64 blocks have an IPv6 inside address (vSR 3 CG-NAT deployment guide, NAT64 logging)::

    Jun 11 08:03:09 vrouter fp-cgnat-logd@main[4269]: USER 2001:db8:200::1 (matching rule 1): NEW BLOCK (ip public 192.0.2.33, proto 6, port 1024 - 1536) at Tue Jun 11 08:03:09 2020

The trailing ``at <ctime>`` wins over the syslog header (it has a year; read in ``tz``,
default UTC).  A line whose ``ip public`` is empty (as printed in that guide) names no public
address and is rejected (``missing-attribute``), never bound to a guessed one.  ``@main`` is the
VRF the CG-NAT runs in (vSR 3 runs one ``fp-cgnat-logd@<vrf>`` per VRF): it becomes the
binding's ``vrf``; the older ``fp-cgnat[pid]`` tag names none (``vrf`` null).

Session mapping (one port; the public side is the destination of the ``back`` direction)::

    … fp-cgnat[2484]: NEW CONN: fwd proto 6 10.100.0.1:4241 -> 10.200.0.1:33815, back proto 6 10.200.0.1:33815 --> 10.175.0.3:10752

NEW → start, DESTROY → stop.  Without ``at``, the lines carry no year and no zone: the time comes from the
syslog header by the year/zone rule of ``_time`` (``year``/``ref_ms``/``tz``).  Blocks are per
protocol on 6WIND: ``proto 6`` becomes the binding's ``proto`` (the ``fwd`` protocol for a CONN).
"""

from __future__ import annotations

import re
from typing import Optional

from ..errors import Rejected
from ..model import Binding
from . import Format, register
from ._nat import binding, protocol, text
from ._time import MONTHS, _wall, naive_to_ms, syslog_header, syslog_time

_BLOCK = re.compile(
    r"\bUSER (\S+) \(matching rule [^)]*\): (NEW|DESTROY) BLOCK \((?:pool \"[^\"]*\", )?ip public ?([^,\s]*), "
    r"proto (\d+), port (\d+) - (\d+)\)"
    r"(?: at [A-Z][a-z]{2} ([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) (\d{4}))?")
_VRF = re.compile(r"\bfp-cgnat(?:-logd)?@([^\s\[\]:]+)\[")
_CONN = re.compile(
    r"\b(NEW|DESTROY) CONN: fwd proto (\d+) (\S+):\d+ -> \S+, back proto \d+ \S+ -+> (\S+):(\d+)\s*$")


def parse(record: bytes, *, operator: str, tz: Optional[str] = None, year: Optional[int] = None,
          ref_ms: Optional[int] = None, **_context: object) -> list[Binding]:
    line = text(record)
    m = _BLOCK.search(line)
    at_ms = None
    if m is not None:
        inside_addr, ev, public, proto, lo, hi, mon, day, hh, mi, ss, yy = m.groups()
        if not public:
            raise Rejected("missing-attribute", "block line names no public address")
        if mon is not None:
            mo = MONTHS.get(mon)
            if mo is None:
                raise Rejected("bad-timestamp", "month name not understood")
            at_ms = naive_to_ms(_wall(int(yy), mo, int(day), int(hh), int(mi), int(ss)), tz)
    else:
        c = _CONN.search(line)
        if c is None:
            raise Rejected("unrecognised", "not a 6WIND fp-cgnat block/conn message")
        ev, proto, inside_addr, public, lo = c.groups()
        hi = lo
    if at_ms is None:
        at_ms = syslog_time(line, tz=tz, year=year, ref_ms=ref_ms)
    h = syslog_header(line)
    v = _VRF.search(line)
    return [binding(action="start" if ev == "NEW" else "stop", operator=operator, public=public,
                    inside_addr=inside_addr, at_ms=at_ms, first=lo, last=hi, nas=h[1] if h else None,
                    vrf=v.group(1) if v else None, proto=protocol(proto))]


register(Format("sixwind", parse, family="nat",
                description="6WIND fp-cgnat NEW/DESTROY BLOCK (and CONN) syslog lines"))
