"""Timestamps in log lines → exact UTC milliseconds, shared by every text format.

Two things make log timestamps ambiguous, and each has one documented rule here
(docs/ingest.md, "Timestamps"):

1. **Zone abbreviations** (Kea's ``%Z``, FreeRADIUS's ``"Jun 10 2024 08:13:20 CEST"``).
   ``UTC``/``GMT``/``Z`` and numeric offsets (``+0200``) are exact.  With a zone supplied
   (``tz="Europe/Stockholm"``, CLI ``--tz``) the wall time is read in that zone and the
   abbreviation must be the zone's own abbreviation at that instant — which also settles the
   repeated hour when DST ends (02:30 CEST and 02:30 CET are different instants).  Without a
   zone, only abbreviations with one meaning worldwide are accepted (``FIXED_ABBREVIATIONS``:
   CET/CEST/EET/EEST/WET/WEST/MSK); ``IST``, ``CST``, ``BST`` … are rejected
   (``ambiguous-timezone``) rather than guessed.

2. **Syslog timestamps without a year** (RFC 3164 ``Jun 11 08:03:09``).  An explicit timestamp
   elsewhere in the line wins (each vendor parser looks for it first).  Otherwise the year is
   ``year`` if the caller supplied one (CLI ``--year``); otherwise it is inferred from a
   reference instant ``ref_ms`` (the collector's ``ipanon-received-ms``): the most recent
   occurrence of that month/day/time that is not more than one day after the reference (a
   line received on 1 January stamped ``Dec 31 23:59:59`` is from the previous year).  With
   neither, the line is rejected (``ambiguous-timestamp``).  The wall time is read in ``tz``
   (default UTC), with the same abbreviation-free rule: in a DST overlap the earlier instant is
   taken (documented; syslog gives no way to tell).

Nothing here reads the clock: the reference instant is always an argument.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import Rejected

UTC_NAMES = frozenset({"UTC", "GMT", "Z", "UT"})

#: Abbreviations that mean one offset wherever they are used (seconds east of UTC).
FIXED_ABBREVIATIONS = {
    "CET": 3600, "CEST": 7200, "MET": 3600, "MEST": 7200,
    "EET": 7200, "EEST": 10800, "WET": 0, "WEST": 3600, "MSK": 10800,
}

MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}

#: Event times outside 2000..2100 are a broken clock or a unit mix-up, not an event.
MIN_EVENT_MS = 946_684_800_000
MAX_EVENT_MS = 4_102_444_800_000

_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")
_DAY_MS = 86_400_000


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """An IANA zone by name; an unknown name is a caller error, not a record error."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise Rejected("bad-timezone", f"unknown time zone {name!r}") from e


def check_range(ms: int) -> int:
    if not MIN_EVENT_MS <= ms < MAX_EVENT_MS:
        raise Rejected("bad-timestamp", "event time outside 2000..2100")
    return ms


def _wall(y: int, mo: int, d: int, h: int, mi: int, s: int) -> datetime:
    try:
        return datetime(y, mo, d, h, mi, s)
    except ValueError:
        raise Rejected("bad-timestamp", "date or time out of range") from None


def wall_to_ms(y: int, mo: int, d: int, h: int, mi: int, s: int, abbrev: str,
               tz: Optional[str] = None, frac_ms: int = 0) -> int:
    """A wall-clock time with a zone abbreviation (or numeric offset) → UTC ms."""
    wall = _wall(y, mo, d, h, mi, s)
    a = abbrev.strip()
    if a.upper() in UTC_NAMES:
        offset = 0
    elif (m := _OFFSET.match(a)) is not None:
        sign, hh, mm = m.groups()
        offset = (int(hh) * 3600 + int(mm) * 60) * (1 if sign == "+" else -1)
    elif tz is not None:
        z = zone(tz)
        for fold in (0, 1):
            local = wall.replace(tzinfo=z, fold=fold)
            if local.tzname() == a:
                # a wall time inside a DST gap does not exist: zoneinfo would shift it
                back = local.astimezone(timezone.utc).astimezone(z)
                if back.replace(tzinfo=None) != wall:
                    raise Rejected("bad-timestamp", "wall time does not exist in that zone")
                ms = int(local.timestamp()) * 1000 + frac_ms
                return check_range(ms)
        raise Rejected("bad-timezone", f"abbreviation {a!r} is not used by zone {tz} at that time")
    elif a in FIXED_ABBREVIATIONS:
        offset = FIXED_ABBREVIATIONS[a]
    else:
        raise Rejected("ambiguous-timezone",
                       f"zone abbreviation {a!r} is ambiguous; supply the zone (--tz)")
    ms = (calendar.timegm(wall.timetuple()) - offset) * 1000 + frac_ms
    return check_range(ms)


def naive_to_ms(wall: datetime, tz: Optional[str], frac_ms: int = 0) -> int:
    """A wall time with no zone at all, read in ``tz`` (default UTC); DST overlap → earlier."""
    if tz is None or tz.upper() in UTC_NAMES:
        return check_range(calendar.timegm(wall.timetuple()) * 1000 + frac_ms)
    z = zone(tz)
    local = wall.replace(tzinfo=z, fold=0)
    back = local.astimezone(timezone.utc).astimezone(z)
    if back.replace(tzinfo=None) != wall:
        raise Rejected("bad-timestamp", "wall time does not exist in that zone")
    return check_range(int(local.timestamp()) * 1000 + frac_ms)


def iso_to_ms(s: str) -> int:
    """ISO 8601 / RFC 3339 with an explicit zone → UTC ms (fraction truncated to ms)."""
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise Rejected("bad-timestamp", "timestamp is not ISO 8601") from None
    if dt.tzinfo is None:
        raise Rejected("bad-timestamp", "ISO timestamp without zone")
    try:
        utc = dt.astimezone(timezone.utc).replace(tzinfo=None)
    except (OverflowError, ValueError):
        raise Rejected("bad-timestamp", "timestamp out of range") from None
    ms = calendar.timegm(utc.timetuple()) * 1000 + utc.microsecond // 1000
    return check_range(ms)


def yearless_to_ms(mon: str, day: int, h: int, mi: int, s: int, *, tz: Optional[str] = None,
                   year: Optional[int] = None, ref_ms: Optional[int] = None) -> int:
    """RFC 3164 ``Mmm dd hh:mm:ss`` → UTC ms, by the year rule in the module docstring."""
    mo = MONTHS.get(mon)
    if mo is None:
        raise Rejected("bad-timestamp", "month name not understood")
    if year is not None:
        return naive_to_ms(_wall(year, mo, day, h, mi, s), tz)
    if ref_ms is None:
        raise Rejected("ambiguous-timestamp",
                       "syslog timestamp has no year: supply --year or a receive time")
    try:
        ref_year = datetime.fromtimestamp(ref_ms // 1000, tz=timezone.utc).year
    except (ValueError, OverflowError, OSError):
        raise Rejected("bad-timestamp", "receive time out of range") from None
    for y in (ref_year + 1, ref_year, ref_year - 1):
        try:
            wall = datetime(y, mo, day, h, mi, s)
        except ValueError:  # 29 Feb in a non-leap year
            continue
        ms = naive_to_ms(wall, tz)
        if ms <= ref_ms + _DAY_MS:
            return ms
    raise Rejected("bad-timestamp", "no year puts this timestamp before the receive time")


# -- syslog headers ---------------------------------------------------------------------------

#: RFC 5424: ``<PRI>1 2018-06-26T17:23:06.269-07:00 HOST APP PROCID MSGID ...``.  The zone is
#: optional here because SRX writes ``1 2014-01-19T11:16:39.616 SRX3400_1 RT_FLOW - …`` without one.
SYSLOG_5424 = re.compile(
    r"^(?:<\d{1,3}>)?1 (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?) (\S+) ")
#: ISO 8601 line prefix, as rsyslog (RSYSLOG_FileFormat) and syslog-ng (ts-format(iso)) write
#: received messages to files: ``2025-05-02T11:34:56.87+00:00 HOST MSG``.
SYSLOG_ISO = re.compile(
    r"^(?:<\d{1,3}>)?(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?) +(\S+)")
#: RFC 3164: ``<PRI>Mmm dd hh:mm:ss HOST ...`` (day space-padded)
SYSLOG_3164 = re.compile(r"^(?:<\d{1,3}>)?([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) +(\S+)")
_ZONED = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")


def syslog_header(line: str) -> Optional[tuple[str, Optional[str], Optional[re.Match]]]:
    """``(kind, host, match)`` for a syslog header at the start of ``line``, else None.

    kind is ``"5424"`` (RFC 5424, or an ISO 8601 file prefix: timestamp in group 1) or
    ``"3164"`` (year-less).  The host is only trusted when it is not itself a message tag
    (``fp-cgnat[42]:``, ``RT_FLOW:``).
    """
    m = SYSLOG_5424.match(line) or SYSLOG_ISO.match(line)
    if m:
        host = m.group(2)
        return "5424", None if host.endswith(":") or "[" in host or host == "-" else host, m
    m = SYSLOG_3164.match(line)
    if m:
        host = m.group(6)
        if host.endswith(":") or "[" in host:
            host = None
        return "3164", host, m
    return None


def iso_local_to_ms(s: str, tz: Optional[str]) -> int:
    """An ISO 8601 time with a zone (exact) or without one (read in ``tz``, default UTC)."""
    if _ZONED.search(s):
        return iso_to_ms(s)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise Rejected("bad-timestamp", "timestamp is not ISO 8601") from None
    return naive_to_ms(dt.replace(microsecond=0), tz, dt.microsecond // 1000)


def syslog_time(line: str, *, tz: Optional[str], year: Optional[int], ref_ms: Optional[int]) -> int:
    """The header timestamp of a syslog line, by the rules above; reject when there is none."""
    h = syslog_header(line)
    if h is None:
        raise Rejected("missing-timestamp", "no timestamp in the line")
    kind, _host, m = h
    assert m is not None
    if kind == "5424":
        return iso_local_to_ms(m.group(1), tz)
    mon, day, hh, mi, ss = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5))
    return yearless_to_ms(mon, day, hh, mi, ss, tz=tz, year=year, ref_ms=ref_ms)


def epoch_ms(v: object, *, unit: str = "s", field: str = "timestamp") -> int:
    """An integer (or digit string) epoch in ``unit`` (s|ms|us|ns) → ms."""
    if isinstance(v, bool):
        raise Rejected("bad-timestamp", f"{field} is not a number")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, str) and v.strip().isascii() and v.strip().isdigit() and len(v.strip()) <= 20:
        v = int(v.strip())
    if not isinstance(v, int):
        raise Rejected("bad-timestamp", f"{field} is not an integer epoch")
    div = {"s": None, "ms": 1, "us": 1000, "ns": 1_000_000}[unit]
    ms = v * 1000 if div is None else v // div
    return check_range(ms)
