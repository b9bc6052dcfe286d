"""``f5``: F5 BIG-IP CGNAT (LSN) translation log lines.

Shape as parsed by the open-source cgn-ec project (F5's own reference was not reachable from
here, so this is *assumed*)::

    LSN_ADD 100.64.23.122%0:51234 6 194.15.97.34%0:40000 203.0.113.7 443
    LSN_DELETE 100.64.23.122%0:51234 6 194.15.97.34%0:40000 203.0.113.7 443

``%N`` is the route domain; the number after the inside address (``6``) is the protocol, the
binding's ``proto``.  ``LSN_ADD``/``LSN_INBOUND_ADD`` → start, ``LSN_DELETE``/
``LSN_INBOUND_DELETE`` → stop; each is a one-port binding (destination dropped).  Time from the
syslog header (``_time`` year/zone rule).
"""

from __future__ import annotations

import re
from typing import Optional

from ..errors import Rejected
from ..model import Binding
from . import Format, register
from ._nat import binding, protocol, text
from ._time import syslog_header, syslog_time

_LINE = re.compile(
    r"\bLSN_(ADD|DELETE|INBOUND_ADD|INBOUND_DELETE) ([0-9.]+)%\d+:\d+ (\d+) ([0-9.]+)%\d+:(\d+) [0-9.]+ \d+\s*$")


def parse(record: bytes, *, operator: str, tz: Optional[str] = None, year: Optional[int] = None,
          ref_ms: Optional[int] = None, **_context: object) -> list[Binding]:
    line = text(record)
    m = _LINE.search(line)
    if m is None:
        raise Rejected("unrecognised", "not an F5 LSN translation log message")
    ev, inside_addr, proto, public, p = m.groups()
    at_ms = syslog_time(line, tz=tz, year=year, ref_ms=ref_ms)
    h = syslog_header(line)
    return [binding(action="stop" if ev.endswith("DELETE") else "start", operator=operator,
                    public=public, inside_addr=inside_addr, at_ms=at_ms, first=p, last=p,
                    nas=h[1] if h else None, proto=protocol(proto))]


register(Format("f5", parse, family="nat", description="F5 BIG-IP LSN_ADD/LSN_DELETE lines (assumed shape)"))
