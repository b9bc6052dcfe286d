"""RADIUS accounting attributes → bindings, shared by every RADIUS format (JSON, detail files).

Input is a flat mapping of RADIUS attribute name → value as text (or int), as FreeRADIUS
writes it.  Rules (RFC 2866/2869/3162/4818/6911):

- ``Acct-Status-Type`` Start(1) → start, Interim-Update(3, alias Alive) → update, Stop(2) →
  stop, Accounting-On(7)/Accounting-Off(8) → one ``reset`` binding for the NAS (it closes every
  open session of that NAS).  Anything else is rejected (``unsupported-status``).
- One binding per address attribute present: Framed-IP-Address, Framed-IPv6-Address (/128),
  Framed-IPv6-Prefix, Delegated-IPv6-Prefix.  The RFC 2865 special values 255.255.255.254 and
  255.255.255.255 are requests, not assignments, and are ignored.
- Event time: ``Event-Timestamp`` (the NAS clock; epoch seconds, FreeRADIUS's
  ``"Jun 10 2024 06:13:20 UTC"`` or ISO 8601).  Without it, the server's ``Timestamp`` minus
  ``Acct-Delay-Time``.  Neither → rejected (``missing-timestamp``).
- Session: ``<NAS-IP-Address>/<Acct-Session-Id>`` (not Acct-Unique-Session-Id, which
  FreeRADIUS derives from attributes that may differ between Start and Interim).
- Subscriber: the operator's identity attribute (default ``User-Name``).
- Octets: ``Acct-*-Octets + (Acct-*-Gigawords << 32)``.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import datetime
from ipaddress import IPv4Network
from typing import Mapping, Optional, Union

from ..errors import Rejected
from ..model import Binding, radius_binding
from ._fastip import address_text, network as parse_network

STATUS = {
    "start": "start", "1": "start",
    "stop": "stop", "2": "stop",
    "interim-update": "update", "alive": "update", "3": "update",
    "accounting-on": "reset", "7": "reset",
    "accounting-off": "reset", "8": "reset",
}

ADDRESS_ATTRS = (
    "Framed-IP-Address",
    "Framed-IPv6-Address",
    "Framed-IPv6-Prefix",
    "Delegated-IPv6-Prefix",
)
_IGNORED_V4 = {"255.255.255.254", "255.255.255.255"}

# "Jun 10 2024 06:13:20 UTC" — FreeRADIUS's rendering of a date attribute.
_FR_DATE = re.compile(r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) ([A-Z]{1,5}|[+-]\d{4})$")
_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}

#: Event times outside this window are rejected: before 2000 or after 2100 is a broken clock
#: or a unit mix-up (ms sent as s), not a real event.
MIN_EVENT_MS = 946_684_800_000
MAX_EVENT_MS = 4_102_444_800_000

Value = Union[str, int]


def _text(v: Value) -> str:
    return v if isinstance(v, str) else str(v)


def parse_event_time(v: Value) -> int:
    """RADIUS date attribute → epoch ms (UTC)."""
    if isinstance(v, bool):
        raise Rejected("bad-timestamp", "Event-Timestamp is not a date")
    if isinstance(v, int):
        ms = v * 1000
    else:
        s = v.strip()
        if s.isascii() and s.isdigit() and len(s) <= 20:  # int() of 4300+ digits raises
            ms = int(s) * 1000
        else:
            m = _FR_DATE.match(s)
            if m:
                mon, day, year, hh, mm, ss, tz = m.groups()
                if tz not in ("UTC", "GMT", "+0000", "Z"):
                    raise Rejected("bad-timestamp", "Event-Timestamp zone must be UTC")
                if mon not in _MONTHS:
                    raise Rejected("bad-timestamp", "Event-Timestamp month unknown")
                try:
                    ms = calendar.timegm(
                        (int(year), _MONTHS[mon], int(day), int(hh), int(mm), int(ss), 0, 0, 0)
                    ) * 1000
                    time.gmtime(ms // 1000)
                    datetime(int(year), _MONTHS[mon], int(day), int(hh), int(mm), int(ss))
                except (ValueError, OverflowError):
                    raise Rejected("bad-timestamp", "Event-Timestamp out of range") from None
            else:
                try:
                    dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
                except ValueError:
                    raise Rejected("bad-timestamp", "Event-Timestamp format not understood") from None
                if dt.tzinfo is None:
                    raise Rejected("bad-timestamp", "Event-Timestamp without time zone")
                ms = int(dt.timestamp() * 1000)
    if not MIN_EVENT_MS <= ms < MAX_EVENT_MS:
        raise Rejected("bad-timestamp", "Event-Timestamp outside 2000..2100")
    return ms


def _int_value(v: Optional[Value], name: str) -> Optional[int]:
    if v is None:
        return None
    if type(v) is int and 0 <= v < 4_294_967_296:  # the common case, checked first
        return v
    if isinstance(v, bool):
        raise Rejected("bad-attribute", f"{name} is not an integer")
    if isinstance(v, int):
        n = v
    else:
        s = v.strip()
        if not (s.isascii() and s.isdigit()) or len(s) > 20:
            raise Rejected("bad-attribute", f"{name} is not an integer")
        n = int(s)
    if not 0 <= n < 2**32:
        raise Rejected("bad-attribute", f"{name} out of range")
    return n


def _int_attr(attrs: Mapping[str, Value], name: str) -> Optional[int]:
    return _int_value(attrs.get(name), name)


def _octets(attrs: Mapping[str, Value], direction: str) -> Optional[int]:
    lo_name, hi_name = _OCTETS[direction]
    lo = _int_value(attrs.get(lo_name), lo_name)
    hi = attrs.get(hi_name)
    if hi is None:  # Gigawords appear only past 4 GiB
        return lo
    hi = _int_value(hi, hi_name)
    if lo is None and hi is None:
        return None
    return (lo or 0) + ((hi or 0) << 32)


_OCTETS = {d: (f"Acct-{d}-Octets", f"Acct-{d}-Gigawords") for d in ("Input", "Output")}


def _str_value(v: Optional[Value]) -> Optional[str]:
    if v is None:
        return None
    s = (v if isinstance(v, str) else str(v)).strip()
    return s or None


def _str_attr(attrs: Mapping[str, Value], name: str) -> Optional[str]:
    return _str_value(attrs.get(name))


def _event_ms(v: Value) -> int:
    if type(v) is int and MIN_EVENT_MS <= v * 1000 < MAX_EVENT_MS:  # epoch seconds: the common case
        return v * 1000
    return parse_event_time(v)


#: Acct-Status-Type as FreeRADIUS writes it → action, tried before the general spelling rules.
_STATUS_EXACT = {"Start": "start", "Stop": "stop", "Interim-Update": "update", "Alive": "update",
                 "Accounting-On": "reset", "Accounting-Off": "reset", **STATUS}

#: NAS address text → canonical text (a handful per operator; bounded anyway).
_NAS_TEXT: dict[str, str] = {}


def _nas_text(raw: str) -> str:
    text = _NAS_TEXT.get(raw)
    if text is None:
        text = address_text(parse_network(raw, field="NAS-IP-Address").network_address)
        if len(_NAS_TEXT) >= 1024:
            _NAS_TEXT.clear()
        _NAS_TEXT[raw] = text
    return text


def bindings_from_attributes(
    attrs: Mapping[str, Value], *, operator: str, identity: str = "User-Name"
) -> list[Binding]:
    get = attrs.get
    status_raw = get("Acct-Status-Type")
    if status_raw is None:
        raise Rejected("missing-attribute", "Acct-Status-Type is missing")
    action = _STATUS_EXACT.get(status_raw) if type(status_raw) is str else None
    if action is None:
        action = STATUS.get(_text(status_raw).strip().lower())
        if action is None:
            raise Rejected("unsupported-status", "Acct-Status-Type is not Start/Interim/Stop/On/Off")

    v: Optional[Value]
    if "Event-Timestamp" in attrs:
        v = attrs["Event-Timestamp"]
        if type(v) is int and MIN_EVENT_MS <= v * 1000 < MAX_EVENT_MS:  # epoch seconds: the common case
            at_ms = v * 1000
        else:
            at_ms = parse_event_time(v)
    elif "Timestamp" in attrs:
        at_ms = parse_event_time(attrs["Timestamp"]) - 1000 * (_int_attr(attrs, "Acct-Delay-Time") or 0)
    else:
        raise Rejected("missing-timestamp", "neither Event-Timestamp nor Timestamp present")

    v = get("NAS-IP-Address")
    nas = _NAS_TEXT.get(v) if type(v) is str else None  # a NAS seen before (its text as is)
    if nas is None:
        nas_ip = _str_value(v) or _str_value(get("NAS-IPv6-Address"))
        if nas_ip is not None:
            nas_ip = _nas_text(nas_ip)
        nas = nas_ip or _str_value(get("NAS-Identifier"))
        if nas is None:
            raise Rejected("missing-attribute", "NAS-IP-Address and NAS-Identifier both missing")

    if action == "reset":
        return [radius_binding("reset", operator, None, None, None, nas, at_ms, None, None, None)]

    v = get(identity)
    subscriber = v.strip() if type(v) is str else _str_value(v)
    if not subscriber:
        raise Rejected("missing-identity", f"identity attribute {identity} is missing")
    v = get("Acct-Session-Id")
    sid = v.strip() if type(v) is str else _str_value(v)
    if not sid:
        raise Rejected("missing-attribute", "Acct-Session-Id is missing")
    session = f"{nas}/{sid}"
    octets_in: Optional[int]
    octets_out: Optional[int]
    v = get("Acct-Input-Octets")  # _octets(), with the common case (no Gigawords) inline
    if type(v) is int and 0 <= v < 4_294_967_296 and "Acct-Input-Gigawords" not in attrs:
        octets_in = v
    else:
        octets_in = _octets(attrs, "Input")
    v = get("Acct-Output-Octets")
    if type(v) is int and 0 <= v < 4_294_967_296 and "Acct-Output-Gigawords" not in attrs:
        octets_out = v
    else:
        octets_out = _octets(attrs, "Output")
    v = get("Acct-Session-Time")
    session_time_s = v if type(v) is int and 0 <= v < 4_294_967_296 else _int_value(v, "Acct-Session-Time")
    out: list[Binding] = []
    for name in ADDRESS_ATTRS:
        v = get(name)
        if v is None:
            continue
        v = v.strip() if type(v) is str else _str_value(v)
        if not v or v in _IGNORED_V4:
            continue
        net = parse_network(v, field=name)
        if name == "Framed-IP-Address":
            if type(net) is not IPv4Network:
                raise Rejected("bad-address", "Framed-IP-Address must be IPv4")
        elif name == "Framed-IPv6-Address" and net.prefixlen != 128:
            raise Rejected("bad-address", "Framed-IPv6-Address must be a single address")
        out.append(radius_binding(action, operator, net, subscriber, session, nas, at_ms,
                                  octets_in, octets_out, session_time_s))
    if not out:
        raise Rejected("no-address", "no Framed-IP/IPv6 address or prefix in the record")
    return out
