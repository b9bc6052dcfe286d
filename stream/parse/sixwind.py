"""``sixwind``: 6WIND Turbo Router / vSR ``fp-cgnat`` syslog lines.

Port-block mapping (6WIND user guide, CGNAT events)::

    Jun 11 08:03:09 vsr fp-cgnat[4269]: USER 100.64.0.1 (matching rule 1): NEW BLOCK (pool "mypool", ip public 192.0.2.33, proto 6, port 1 - 512)
    Jun 11 08:07:30 vsr fp-cgnat[4269]: USER 100.64.0.1 (matching rule 1): DESTROY BLOCK (pool "mypool", ip public 192.0.2.33, proto 6, port 1 - 512)

Session mapping (one port; the public side is the destination of the ``back`` direction)::

    … fp-cgnat[2484]: NEW CONN: fwd proto 6 10.100.0.1:4241 -> 10.200.0.1:33815, back proto 6 10.200.0.1:33815 --> 10.175.0.3:10752

NEW → start, DESTROY → stop.  The lines carry no year and no zone: the time comes from the
syslog header by the year/zone rule of ``_time`` (``year``/``ref_ms``/``tz``).  Blocks are per
protocol on 6WIND; the binding does not record the protocol (a lookup is by address and port).
"""

from __future__ import annotations

import re
from typing import Optional

from ..errors import Rejected
from ..model import Binding
from . import Format, register
from ._nat import binding, text
from ._time import syslog_header, syslog_time

_BLOCK = re.compile(
    r"\bUSER (\S+) \(matching rule [^)]*\): (NEW|DESTROY) BLOCK \(pool \"[^\"]*\", ip public (\S+?), "
    r"proto \d+, port (\d+) - (\d+)\)")
_CONN = re.compile(
    r"\b(NEW|DESTROY) CONN: fwd proto \d+ (\S+):\d+ -> \S+, back proto \d+ \S+ -+> (\S+):(\d+)\s*$")


def parse(record: bytes, *, operator: str, tz: Optional[str] = None, year: Optional[int] = None,
          ref_ms: Optional[int] = None, **_context: object) -> list[Binding]:
    line = text(record)
    m = _BLOCK.search(line)
    if m is not None:
        inside_addr, ev, public, lo, hi = m.groups()
    else:
        c = _CONN.search(line)
        if c is None:
            raise Rejected("unrecognised", "not a 6WIND fp-cgnat block/conn message")
        ev, inside_addr, public, lo = c.groups()
        hi = lo
    at_ms = syslog_time(line, tz=tz, year=year, ref_ms=ref_ms)
    h = syslog_header(line)
    return [binding(action="start" if ev == "NEW" else "stop", operator=operator, public=public,
                    inside_addr=inside_addr, at_ms=at_ms, first=lo, last=hi, nas=h[1] if h else None)]


register(Format("sixwind", parse, family="nat",
                description="6WIND fp-cgnat NEW/DESTROY BLOCK (and CONN) syslog lines"))
