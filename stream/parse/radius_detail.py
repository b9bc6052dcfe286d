"""``radius-detail``: FreeRADIUS ``detail`` files (rlm_detail), one accounting packet per record.

A record as FreeRADIUS 3.x writes it (REFERENCE.md §3): a header line with the server's local
time (``Sun Nov 22 09:36:08 2026``), then one ``<TAB>Attribute = value`` line per attribute,
then a blank line.  String values are double-quoted with C-style escapes (``\\"``, ``\\\\``,
``\\n``, ``\\t``, ``\\r``, octal ``\\ooo``); other values (addresses, integers, enum names,
``0x…`` octets) are bare.  Only the first occurrence of a repeated attribute is kept.

The framer ends a record only at a blank line (or end of input), so a growing file never
yields a half-written record while it is being followed.

Event-Timestamp is rendered by FreeRADIUS in the *server's* local zone
(``"Jun 10 2024 08:13:20 CEST"``); non-UTC abbreviations are resolved by the zone rule of
``_time`` (``tz=`` / ``--tz``) before the shared RADIUS rules of ``_radius`` apply.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, Optional

from ..errors import Rejected
from ..model import Binding
from . import Format, register
from ._radius import bindings_from_attributes
from ._time import MONTHS, wall_to_ms

MAX_RECORD_BYTES = 64 * 1024

_HEADER = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$")
_ATTR = re.compile(r"^[ \t]+([A-Za-z0-9][A-Za-z0-9_.:-]*) = (.*)$")
_FR_DATE = re.compile(r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) (\S+)$")
_ESC = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)", re.S)
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'"}


def frame(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Group lines into records: a record ends at a blank line (or at the end of input)."""
    buf: list[bytes] = []
    for line in lines:
        line = line.rstrip(b"\r\n")
        if line.strip():
            buf.append(line)
        elif buf:
            yield b"\n".join(buf)
            buf = []
    if buf:
        yield b"\n".join(buf)


def _unescape(m: re.Match) -> str:
    e = m.group(1)
    if e in _SIMPLE:
        return _SIMPLE[e]
    if e[0] == "x" and len(e) == 3:
        return chr(int(e[1:], 16))
    if e[0] in "01234567":
        return chr(int(e, 8) & 0xFF)
    return e


def _value(raw: str) -> str:
    v = raw.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return _ESC.sub(_unescape, v[1:-1])
    if v.startswith('"'):
        raise Rejected("bad-record", "unterminated quoted value")
    return v


def _event_time(v: str, tz: Optional[str]) -> str:
    """Resolve a non-UTC FreeRADIUS date to epoch seconds text; leave everything else alone."""
    m = _FR_DATE.match(v)
    if not m or m.group(7) in ("UTC", "GMT"):
        return v
    mon, day, year, hh, mi, ss, abbrev = m.groups()
    if mon not in MONTHS:
        raise Rejected("bad-timestamp", "Event-Timestamp month unknown")
    ms = wall_to_ms(int(year), MONTHS[mon], int(day), int(hh), int(mi), int(ss), abbrev, tz)
    return str(ms // 1000)


def attributes(record: bytes) -> dict[str, str]:
    if len(record) > MAX_RECORD_BYTES:
        raise Rejected("oversized", f"record larger than {MAX_RECORD_BYTES} bytes")
    try:
        text = record.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("bad-encoding", "record is not UTF-8") from None
    lines = text.split("\n")
    if not _HEADER.match(lines[0].rstrip("\r")):
        raise Rejected("bad-record", "record does not start with a detail header line")
    attrs: dict[str, str] = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line.strip():
            continue
        m = _ATTR.match(line)
        if m is None:
            raise Rejected("bad-record", "line is not 'Attribute = value'")
        attrs.setdefault(m.group(1), _value(m.group(2)))
    if not attrs:
        raise Rejected("bad-record", "record has no attributes")
    return attrs


def parse(record: bytes, *, operator: str, identity: str = "User-Name",
          tz: Optional[str] = None, **_context: object) -> list[Binding]:
    attrs = attributes(record)
    if "Event-Timestamp" in attrs:
        attrs["Event-Timestamp"] = _event_time(attrs["Event-Timestamp"], tz)
    return bindings_from_attributes(attrs, operator=operator, identity=identity)


register(Format("radius-detail", parse, frame=frame, family="radius",
                description="FreeRADIUS detail file records (header line, TAB Attr = value, blank line)"))
