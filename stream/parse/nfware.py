"""``nfware``: NFWare vCGNAT syslog lines (NFWare docs "NAT logging, message format").

    A VRF 0 INT 10.0.0.1 EXT 100.64.0.1:1024-1535                     port block
    A VRF 0 INT 10.0.0.1 EXT 100.64.0.1                               address mapping (1:1)
    A VRF 0 6 INT 10.0.0.1:57938 EXT 100.64.0.1:28475                 port mapping
    A VRF 0 6 INT 10.0.0.1:57938 EXT 100.64.0.1:28475 DST 185.165.123.206:443 DIR OUT   session

``A`` → start, ``D`` → stop.  The number before ``INT`` (``6``) is the mapping's protocol and
becomes the binding's ``proto``; the block and 1:1 forms name none (every protocol).  A port or session mapping becomes a one-port binding (the
destination is dropped: RFC 6888 asks CGNs not to log it, and the mapping needs only the
public port).  The VRF id becomes the binding's ``vrf`` (``"0"``).  The message has no
timestamp of its own: the time comes from the syslog header (``_time`` year/zone rule).
Formats as documented by NFWare and handled by the open-source cgn-ec project.
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
    r"(?:^|[\s:])([AD]) VRF (\d+) (?:(\d+) )?INT ([0-9.]+)(?::\d+)? EXT ([0-9.]+)(?::(\d+)(?:-(\d+))?)?"
    r"(?: DST [0-9.]+:\d+ DIR (?:IN|OUT))?\s*$")


def parse(record: bytes, *, operator: str, tz: Optional[str] = None, year: Optional[int] = None,
          ref_ms: Optional[int] = None, **_context: object) -> list[Binding]:
    line = text(record)
    m = _LINE.search(line)
    if m is None:
        raise Rejected("unrecognised", "not an NFWare NAT log message")
    ev, vrf, proto, inside_addr, public, lo, hi = m.groups()
    if lo is not None and hi is None:
        hi = lo
    at_ms = syslog_time(line, tz=tz, year=year, ref_ms=ref_ms)
    h = syslog_header(line)
    return [binding(action="start" if ev == "A" else "stop", operator=operator, public=public,
                    inside_addr=inside_addr, at_ms=at_ms, first=lo, last=hi, nas=h[1] if h else None,
                    vrf=vrf, proto=None if proto is None else protocol(proto))]


register(Format("nfware", parse, family="nat",
                description="NFWare vCGNAT 'A|D VRF n INT … EXT …' syslog lines"))
