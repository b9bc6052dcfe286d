"""``kea-legal``: Kea forensic logging (legal_log hook) lines, DHCPv4, DHCPv6 and prefixes.

Line shape (REFERENCE.md §4; the hook prints "mins")::

    2018-01-06 01:02:03 CET Address: 192.2.1.100 has been assigned for 1 hrs 52 mins 15 secs
      to a device with hardware address: hwtype=1 08:00:2b:02:3f:4e, client-id: 17:34:e2:…
      connected via relay at address: 192.2.16.33, identified by circuit-id: 68:6f:… (howdy)
    2018-01-06 02:10:00 CET Address: 192.2.1.100 has been released from a device with …
    2018-01-06 01:05:00 CET Address: 2001:db8:1:: has been assigned for 0 hrs 11 mins 53 secs
      to a device with DUID: 17:34:e2:ff:09:92:54
    … Prefix: 2001:db8:200::/56 has been assigned for …

- The timestamp prefix ``%Y-%m-%d %H:%M:%S %Z`` is required (a line without one cannot be placed
  in time: ``missing-timestamp``); the zone abbreviation follows the rule of ``_time``
  (``tz=``/``--tz``, or an unambiguous abbreviation).
- ``assigned`` → start, ``renewed``/``rebound`` → update (both with ``until_ms`` = time + the
  logged lifetime), ``released``/``declined``/``expired``/``deleted`` → stop.
- Identifiers: ``hardware address``, ``client-id``, ``DUID``, ``circuit-id``, ``remote-id``
  (hex, the printable rendering in parentheses is ignored).
"""

from __future__ import annotations

import re
from typing import Optional

from ..errors import Rejected
from ..model import Binding
from ._fastip import network as parse_network
from . import Format, register
from ._dhcp import hexid, lease_end_ms, subscriber
from ._time import wall_to_ms

MAX_RECORD_BYTES = 8 * 1024

_LINE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))? (\S+) "
    r"(Address|Prefix): (\S+) has been (assigned|renewed|rebound|released|declined|expired|deleted)\b(.*)$",
    re.S)
# at most 10 digits a field: int() of a 4 300+ digit string raises, and 10 digits already
# exceed any lifetime DHCP can carry (``_dhcp.MAX_LIFETIME_S``)
_DURATION = re.compile(r"^ for (\d+) hrs (\d+) mins? (\d+) secs\b")
_MAX_DIGITS = 10
_IDS = {
    "hwaddr": re.compile(r"hardware address: (?:hwtype=\d+ )?([0-9a-fA-F:]+)"),
    "client_id": re.compile(r"client-id: ([0-9a-fA-F:]+)"),
    "duid": re.compile(r"DUID: ([0-9a-fA-F:]+)"),
    "circuit_id": re.compile(r"circuit-id: ([0-9a-fA-F:]+)"),
    "remote_id": re.compile(r"remote-id: ([0-9a-fA-F:]+)"),
}
_ACTION = {"assigned": "start", "renewed": "update", "rebound": "update",
           "released": "stop", "declined": "stop", "expired": "stop", "deleted": "stop"}


def parse(record: bytes, *, operator: str, tz: Optional[str] = None,
          dhcp_identity: Optional[str] = None, **_context: object) -> list[Binding]:
    if len(record) > MAX_RECORD_BYTES:
        raise Rejected("oversized", f"record larger than {MAX_RECORD_BYTES} bytes")
    try:
        line = record.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Rejected("bad-encoding", "line is not UTF-8") from None
    m = _LINE.match(line)
    if m is None:
        if re.match(r"^(Address|Prefix): ", line):
            raise Rejected("missing-timestamp", "legal log line without its timestamp prefix")
        raise Rejected("unrecognised", "not a Kea legal log lease line")
    y, mo, d, hh, mi, ss, frac, abbrev, what, addr, verb, rest = m.groups()
    frac_ms = int((frac or "0").ljust(6, "0")[:3]) if frac else 0
    at_ms = wall_to_ms(int(y), int(mo), int(d), int(hh), int(mi), int(ss), abbrev, tz, frac_ms)
    action = _ACTION[verb]

    net = parse_network(addr, field=what.lower())
    if what == "Prefix" and net.version != 6:
        raise Rejected("bad-address", "a delegated prefix must be IPv6")
    if what == "Address" and net.prefixlen != net.max_prefixlen:
        raise Rejected("bad-address", "Address: must be a single address")

    until_ms = None
    if action in ("start", "update"):
        dm = _DURATION.match(rest)
        if dm is None:
            raise Rejected("bad-record", "assigned/renewed line without its lifetime")
        if max(len(x) for x in dm.groups()) > _MAX_DIGITS:
            raise Rejected("bad-lifetime", "lease lifetime longer than DHCP can carry")
        h, mins, s = (int(x) for x in dm.groups())
        until_ms = lease_end_ms(at_ms, h * 3600 + mins * 60 + s)

    ids: dict[str, Optional[str]] = {}
    for name, rx in _IDS.items():
        im = rx.search(rest)
        ids[name] = hexid(im.group(1).rstrip(":"), name) if im else None
    v6 = net.version == 6
    sub = subscriber(ids, v6=v6, dhcp_identity=dhcp_identity)
    if sub is None and action != "stop":
        raise Rejected("missing-identity", "no client-id, DUID or hardware address in the line")
    return [Binding(kind="dhcp", action=action, operator=operator, ip=net, subscriber=sub,
                    session=None, nas=None, at_ms=at_ms, until_ms=until_ms, **ids)]


register(Format("kea-legal", parse, family="dhcp",
                description="Kea forensic (legal_log) lines with timestamp prefix, v4/v6/prefix"))
