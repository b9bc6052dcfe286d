"""``juniper``: Juniper CGNAT port-block syslog lines (MX services cards and SRX).

Recognised messages (REFERENCE.md §5):

- MX MS-MPC/MS-DPC ``ASP_NAT_PORT_BLOCK_ALLOC|ACTIVE|RELEASE: <inside> -> <public>:<lo>-<hi>``;
  the PIC prefixes its own timestamp ``2011-10-31 04:46:04`` (UTC: the PIC clock runs in UTC,
  which is why it differs from the routing engine's local header time in the same line).
- MX-SPC3 (Next Gen Services) ``JSERVICES_NAT_PORT_BLOCK_ALLOC|ACTIVE|RELEASE: <inside> ->
  <public>:<lo>-<hi> [0x<epoch>]``: the trailing hex is the event's epoch seconds.
- SRX ``RT_SRC_NAT_PBA_ALLOC|RELEASE|INTERIM`` in structured form
  (``internal-ip="…" block-port-low="…" block-port-high="…" reflexive-ip="…" epoch-time-64="…"``,
  hex epoch seconds) or brief form (``Subscriber <inside> used/maximum [u/m] blocks, allocates
  port block [<lo>-<hi>] from <public> in source pool …``).

- SRX ``RT_FLOW_SESSION_CREATE|CLOSE`` (``_LS`` for logical systems; ``_USF`` from MX-SPC3 Next Gen
  Services): source-NAT session logs,
  which SRX deployments without port blocks produce.  Structured form (``source-address="…"
  source-port="…" nat-source-address="…" nat-source-port="…" protocol-id="…"``) or brief form
  (``session created <src>/<sport>-><dst>/<dport> [0x<tag>] <service> <nat-src>/<nat-sport>->…``).
  Each is a one-port binding public ``nat-source-address:nat-source-port`` → inside
  ``source-address`` over the session's life: CREATE → start, CLOSE → stop.  A session whose
  source was not translated (``nat-source`` = ``source``, e.g. destination NAT only) carries no
  CGNAT binding and is rejected as ``no-source-nat``; an ICMP session (``protocol-id="1"``/``58``)
  carries a query id, not a port (``unsupported-protocol``).  Other ``RT_FLOW_*`` messages
  (DENY …) are ``unsupported-event``.  The source side's VRF becomes the binding's ``vrf``:
  ``src-vrf`` (newer Junos) or else ``src-vrf-grp`` (the L3VPN VRF group, Junos 22.4+), when not
  ``N/A``; the brief form names none.  ``protocol-id`` becomes the binding's ``proto``; in the
  brief form it is the number after the two NAT rule names (``… r1 None 6 TCP_1H …``, the
  Junos 10/11 layout), and a brief line in another layout records none.  Port blocks (MX and
  SRX PBA) are allocated for all protocols and record none.

ALLOC → start, ACTIVE/INTERIM → update (the interim log refreshes a block that is still in
use), RELEASE → stop.  Time: the explicit epoch/inline timestamp of the message wins; else the
syslog header (RFC 5424 exact; RFC 3164 by the year rule of ``_time``).  ``nas`` is the syslog
host when the header names one.
"""

from __future__ import annotations

import re
from typing import Optional

from ..errors import Rejected
from ..model import Binding
from . import Format, register
from ._nat import binding, protocol, text
from ._time import check_range, naive_to_ms, syslog_header, syslog_time, _wall

_ACTION = {"ALLOC": "start", "ACTIVE": "update", "INTERIM": "update", "RELEASE": "stop"}
_MX = re.compile(
    r"\b(?:ASP|JSERVICES)_NAT_PORT_BLOCK_(ALLOC|ACTIVE|RELEASE):?\s+(\S+)\s+->\s+(\S+):(\d+)-(\d+)"
    r"(?:\s+0x([0-9a-fA-F]{1,16}))?")
_PIC_TIME = re.compile(r"\s(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})\s")
_SRX = re.compile(r"\bRT_SRC_NAT_PBA_(ALLOC|RELEASE|INTERIM)\b(.*)$", re.S)
_KV = re.compile(r'([a-z0-9-]+)="([^"]*)"')
_FLOW = re.compile(r"\bRT_FLOW_SESSION_(CREATE|CLOSE)(?:_LS|_USF)?\b(.*)$", re.S)
_FLOW_BRIEF = re.compile(
    r"\bsession (?:created|closed [^:]*:) (\S+)/(\d+)->\S+/\d+ (?:0x[0-9a-fA-F]+ )?\S+ (\S+)/(\d+)->\S+/\d+ "
    r"(?:\S+ \S+ (\d{1,3}) )?")
_FLOW_ACTION = {"CREATE": "start", "CLOSE": "stop"}
_SRX_BRIEF = re.compile(r"Subscriber (\S+) .*?port block \[(\d+)-(\d+)\] from (\S+)")


def _hex_epoch(h: str) -> int:
    return check_range(int(h, 16) * 1000)


def _host(line: str) -> Optional[str]:
    h = syslog_header(line)
    return h[1] if h else None


def parse(record: bytes, *, operator: str, tz: Optional[str] = None, year: Optional[int] = None,
          ref_ms: Optional[int] = None, **_context: object) -> list[Binding]:
    line = text(record)
    m = _MX.search(line) if "_NAT_PORT_BLOCK_" in line else None
    if m is not None:
        ev, inside_addr, public, lo, hi, hexts = m.groups()
        if hexts:
            at_ms = _hex_epoch(hexts)
        else:
            pic = _PIC_TIME.search(line[: m.start()] + " ")
            if pic:
                at_ms = naive_to_ms(_wall(*(int(x) for x in pic.groups())), "UTC")
            else:
                at_ms = syslog_time(line, tz=tz, year=year, ref_ms=ref_ms)
        return [binding(action=_ACTION[ev], operator=operator, public=public, inside_addr=inside_addr,
                        at_ms=at_ms, first=lo, last=hi, nas=_host(line))]
    m = _SRX.search(line) if "RT_SRC_NAT_PBA_" in line else None
    if m is not None:
        ev, rest = m.groups()
        kv = dict(_KV.findall(rest))
        if "internal-ip" in kv:
            try:
                inside_addr, public = kv["internal-ip"], kv["reflexive-ip"]
                lo, hi = kv["block-port-low"], kv["block-port-high"]
            except KeyError as e:
                raise Rejected("missing-attribute", f"SRX PBA log lacks {e.args[0]}") from None
        else:
            b = _SRX_BRIEF.search(rest)
            if b is None:
                raise Rejected("bad-record", "SRX PBA log without subscriber/port block")
            inside_addr, lo, hi, public = b.groups()
        ep = kv.get("epoch-time-64") or kv.get("epoch-time")
        if ep:
            if not re.fullmatch(r"[0-9a-fA-F]{1,16}", ep):
                raise Rejected("bad-timestamp", "epoch-time is not hex")
            at_ms = _hex_epoch(ep)
        else:
            at_ms = syslog_time(line, tz=tz, year=year, ref_ms=ref_ms)
        return [binding(action=_ACTION[ev], operator=operator, public=public, inside_addr=inside_addr,
                        at_ms=at_ms, first=lo, last=hi, nas=_host(line))]
    m = _FLOW.search(line)
    if m is not None:
        return _flow(line, m, operator=operator, tz=tz, year=year, ref_ms=ref_ms)
    if "RT_FLOW_" in line:
        raise Rejected("unsupported-event", "SRX RT_FLOW message carries no NAT binding")
    raise Rejected("unrecognised", "not a Juniper NAT port-block or session message")


def _flow(line: str, m: re.Match, *, operator: str, tz: Optional[str], year: Optional[int],
          ref_ms: Optional[int]) -> list[Binding]:
    ev, rest = m.groups()
    kv = dict(_KV.findall(rest))
    vrf = None
    if "source-address" in kv:
        for name in ("src-vrf", "src-vrf-grp"):
            v = kv.get(name)
            if v and v != "N/A":
                vrf = v
                break
        try:
            inside_addr, inside_port = kv["source-address"], kv["source-port"]
            public, p = kv["nat-source-address"], kv["nat-source-port"]
        except KeyError as e:
            raise Rejected("missing-attribute", f"SRX session log lacks {e.args[0]}") from None
        proto = kv.get("protocol-id")
        if proto in ("1", "58"):
            raise Rejected("unsupported-protocol", "ICMP query identifier is not a transport port")
    else:
        b = _FLOW_BRIEF.search(rest)
        if b is None:
            raise Rejected("bad-record", "SRX session log without source and NAT source")
        inside_addr, inside_port, public, p, proto = b.groups()
        if proto in ("1", "58"):
            raise Rejected("unsupported-protocol", "ICMP query identifier is not a transport port")
    if public == inside_addr and p == inside_port:
        raise Rejected("no-source-nat", "session source was not translated")
    at_ms = syslog_time(line, tz=tz, year=year, ref_ms=ref_ms)
    return [binding(action=_FLOW_ACTION[ev], operator=operator, public=public, inside_addr=inside_addr,
                    at_ms=at_ms, first=p, last=p, nas=_host(line), vrf=vrf,
                    proto=protocol(proto, "protocol-id") if proto else None)]


register(Format("juniper", parse, family="nat",
                description="Juniper MX ASP_/JSERVICES_NAT_PORT_BLOCK_*, SRX RT_SRC_NAT_PBA_* and RT_FLOW_SESSION_* syslog"))
