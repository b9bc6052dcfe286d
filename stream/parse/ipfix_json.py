"""``ipfix-json``: IPFIX NAT event records (RFC 8158) as flat JSON with IANA element names.

This is what IPFIX collectors (pmacct, goflow2, Logstash's netflow codec …) emit after
decoding.  Elements read (IANA names, values as JSON numbers or strings):

- ``natEvent`` (IE 230): 16 port block allocation → start, 17 de-allocation → stop;
  4/6 NAT44/NAT64 session create → start, 5/7 delete → stop (one-port range);
  8/10 BIB create → start, 9/11 delete → stop (one-port range);
  14 address binding create → start, 15 delete → stop (no ports) — but a 14/15 that carries
  ``portRangeStart`` is a port block: Juniper MX/NFX250 export the numbering of
  draft-ietf-behave-ipfix-nat-logging-02, where 14/15 are port block allocation/de-allocation
  (IANA's 16/17), and reading it as a portless address binding would hand the whole public
  address to one inside address.
  Anything else (3 addresses exhausted, 12 ports exhausted, 13 quota, 18 threshold, historic
  1/2) carries no binding → ``unsupported-event``.
- inside: ``sourceIPv4Address`` (8) or ``sourceIPv6Address`` (27, NAT64);
  public: ``postNATSourceIPv4Address`` (225) or ``postNATSourceIPv6Address`` (281).
- ports: ``portRangeStart``/``portRangeEnd`` (361/362); an end may be derived from
  ``portRangeNumPorts`` (364) when ``portRangeStepSize`` (363) is absent or 1 — a stepped range is
  not a contiguous block and is rejected (``unsupported-port-range``).  Session/BIB events use
  ``postNAPTSourceTransportPort`` (227).
- time: ``observationTimeMilliseconds`` (323), else ``observationTimeMicroseconds``/
  ``…Nanoseconds``/``…Seconds`` (324/325/322), each an epoch integer or an RFC 3339 string.
- ``nas``: ``exporterIPv4Address``/``exporterIPv6Address`` (130/131) when present.
- ``proto``: ``protocolIdentifier`` (4) when present — the protocol a per-protocol port block or
  session was allocated for; absent, the block is for every protocol.
- ``vrf``: ``VRFname`` (236; trailing NUL padding of a fixed-length field dropped) when present
  and not empty, else ``ingressVRFID`` (234) as decimal text (``"7"``) — list it in a realm's
  ``vrfs`` in the form the exporter sends.
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import Rejected
from ..model import Binding
from . import Format, load_json_object, register
from ._nat import binding, port, protocol
from ._time import check_range, epoch_ms, iso_to_ms

MAX_RECORD_BYTES = 16 * 1024

_EVENTS = {16: ("start", "block"), 17: ("stop", "block"),
           4: ("start", "port"), 5: ("stop", "port"), 6: ("start", "port"), 7: ("stop", "port"),
           8: ("start", "port"), 9: ("stop", "port"), 10: ("start", "port"), 11: ("stop", "port"),
           14: ("start", "address"), 15: ("stop", "address")}
_TIMES = (("observationTimeMilliseconds", "ms"), ("observationTimeMicroseconds", "us"),
          ("observationTimeNanoseconds", "ns"), ("observationTimeSeconds", "s"))


def _int(v: Any, field: str) -> int:
    if type(v) is int:  # the common case, checked first
        return v
    if isinstance(v, bool):
        raise Rejected("bad-attribute", f"{field} is not an integer")
    if isinstance(v, str) and v.strip().isascii() and v.strip().isdigit() and len(v.strip()) <= 20:
        return int(v.strip())
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, int):
        return v
    raise Rejected("bad-attribute", f"{field} is not an integer")


def _str(obj: dict, v4: str, v6: str) -> Optional[str]:
    """The string value of ``v4``, else of ``v6``, else None."""
    v = obj.get(v4)
    if type(v) is str:
        return v
    n = v4
    if v is None:
        v, n = obj.get(v6), v6
        if v is None:
            return None
    if not isinstance(v, str):
        raise Rejected("bad-attribute", f"{n} must be a string")
    return v


def _time(obj: dict) -> int:
    v = obj.get("observationTimeMilliseconds")
    if type(v) is int:  # the common case
        return check_range(v)
    for name, unit in _TIMES:
        v = obj.get(name)
        if v is None:
            continue
        if isinstance(v, str) and not (v.strip().isascii() and v.strip().isdigit()):
            return iso_to_ms(v.strip())
        return epoch_ms(v, unit=unit, field=name)
    raise Rejected("missing-timestamp", "no observationTime* element")


def _vrf(obj: dict) -> Optional[str]:
    name = obj.get("VRFname")
    if name is not None:
        if not isinstance(name, str):
            raise Rejected("bad-attribute", "VRFname must be a string")
        name = name.rstrip("\x00").strip()
        if name:
            return name
    vid = obj.get("ingressVRFID")
    return None if vid is None else str(_int(vid, "ingressVRFID"))


def parse(record: bytes, *, operator: str, **_context: object) -> list[Binding]:
    return bindings(load_json_object(record, MAX_RECORD_BYTES), operator)


def bindings(obj: dict, operator: str) -> list[Binding]:
    """The binding of one NAT event given as IANA-named values (JSON here, binary in ``ipfix``)."""
    if "natEvent" not in obj:
        raise Rejected("missing-attribute", "natEvent is missing")
    ev = _EVENTS.get(_int(obj["natEvent"], "natEvent"))
    if ev is None:
        raise Rejected("unsupported-event", "natEvent carries no binding")
    action, shape = ev
    if shape == "address" and "portRangeStart" in obj:  # draft-02 numbering: a port block (see above)
        shape = "block"
    inside_addr = obj.get("sourceIPv4Address")  # _str(), with the common case inline
    if type(inside_addr) is not str:
        inside_addr = _str(obj, "sourceIPv4Address", "sourceIPv6Address")
    public = obj.get("postNATSourceIPv4Address")
    if type(public) is not str:
        public = _str(obj, "postNATSourceIPv4Address", "postNATSourceIPv6Address")
    if inside_addr is None or public is None:
        raise Rejected("missing-attribute", "inside or post-NAT source address missing")
    at_ms = _time(obj)
    nas = obj.get("exporterIPv4Address")
    if type(nas) is not str and (nas is not None or obj.get("exporterIPv6Address") is not None):
        nas = _str(obj, "exporterIPv4Address", "exporterIPv6Address")
    first = last = None
    if shape == "block":
        if "portRangeStart" not in obj:
            raise Rejected("missing-attribute", "portRangeStart is missing")
        first = port(_int(obj["portRangeStart"], "portRangeStart"), "portRangeStart")
        step = obj.get("portRangeStepSize")
        if step is not None and _int(step, "portRangeStepSize") not in (0, 1):
            raise Rejected("unsupported-port-range", "stepped port ranges are not contiguous blocks")
        if "portRangeEnd" in obj:
            last = port(_int(obj["portRangeEnd"], "portRangeEnd"), "portRangeEnd")
        elif "portRangeNumPorts" in obj:
            n = _int(obj["portRangeNumPorts"], "portRangeNumPorts")
            if n < 1:
                raise Rejected("bad-port-range", "portRangeNumPorts must be positive")
            last = first + n - 1
        else:
            raise Rejected("missing-attribute", "portRangeEnd and portRangeNumPorts both missing")
    elif shape == "port":
        if "postNAPTSourceTransportPort" not in obj:
            raise Rejected("missing-attribute", "postNAPTSourceTransportPort is missing")
        first = last = port(_int(obj["postNAPTSourceTransportPort"], "postNAPTSourceTransportPort"))
    return [binding(action=action, operator=operator, public=public, inside_addr=inside_addr,
                    at_ms=at_ms, first=first, last=last, nas=nas,
                    vrf=_vrf(obj) if "ingressVRFID" in obj or "VRFname" in obj else None,
                    proto=None if "protocolIdentifier" not in obj else protocol(
                        _int(obj["protocolIdentifier"], "protocolIdentifier"), "protocolIdentifier"))]


register(Format("ipfix-json", parse, family="nat",
                description="IPFIX NAT events (RFC 8158) as JSON with IANA element names"))
