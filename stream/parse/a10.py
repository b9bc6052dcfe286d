"""``a10``: A10 Thunder CGN ASCII syslog lines.

A10's own log reference was not reachable from here; the shapes below are those the
open-source cgn-ec project parses (its handler comments and regular expressions), so treat
them as *assumed* until checked against a real Thunder:

    NAT-TCP-C: 100.64.1.2:10000<-->198.51.100.9:20000 to 203.0.113.5:443      port mapping
    NAT-UDP-D: 100.64.1.2:10000<->203.0.113.5:53,198.51.100.9:20000<-->203.0.113.5:53   session
    FIXED-NAT-PORTS 10.10.10.172->192.168.9.173:3000-4000                       fixed-NAT block

Event letter: ``C``/``B`` → start, ``U`` → update, ``D`` → stop.  A port/session mapping is a
one-port binding; ``FIXED-NAT-PORTS`` is a start of the whole range.  Time from the syslog
header (``_time`` year/zone rule).
"""

from __future__ import annotations

import re
from typing import Optional

from ..errors import Rejected
from ..model import Binding
from . import Format, register
from ._nat import binding, text
from ._time import syslog_header, syslog_time

_ACTION = {"C": "start", "B": "start", "U": "update", "D": "stop"}
_PORTMAP = re.compile(r"\bNAT-[A-Z]+-([CBUD]): ([0-9.]+):\d+<-->([0-9.]+):(\d+) to [0-9.]+:\d+\s*$")
_SESSION = re.compile(r"\bNAT-[A-Z]+-([CBUD]): ([0-9.]+):\d+<->[0-9.]+:\d+,([0-9.]+):(\d+)<-->[0-9.]+:\d+\s*$")
_FIXED = re.compile(r"\bFIXED-NAT-PORTS ([0-9.]+)->([0-9.]+):(\d+)-(\d+)\s*$")


def parse(record: bytes, *, operator: str, tz: Optional[str] = None, year: Optional[int] = None,
          ref_ms: Optional[int] = None, **_context: object) -> list[Binding]:
    line = text(record)
    m = _PORTMAP.search(line) or _SESSION.search(line)
    if m is not None:
        ev, inside_addr, public, p = m.groups()
        action, lo, hi = _ACTION[ev], p, p
    else:
        f = _FIXED.search(line)
        if f is None:
            raise Rejected("unrecognised", "not an A10 CGN NAT log message")
        inside_addr, public, lo, hi = f.groups()
        action = "start"
    at_ms = syslog_time(line, tz=tz, year=year, ref_ms=ref_ms)
    h = syslog_header(line)
    return [binding(action=action, operator=operator, public=public, inside_addr=inside_addr,
                    at_ms=at_ms, first=lo, last=hi, nas=h[1] if h else None)]


register(Format("a10", parse, family="nat",
                description="A10 Thunder CGN NAT-<proto>-<C|D> / FIXED-NAT-PORTS lines (assumed shapes)"))
