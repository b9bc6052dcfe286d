"""``auto``: pick the format per file, and per record where one file mixes formats.

Detection looks only at a record's own bytes, in this order (first match wins):

| signature | format |
|---|---|
| IPFIX message header (version 10, length = the record's length) | ipfix |
| JSON object with ``"natEvent"`` | ipfix-json |
| JSON object with ``"hook"`` | kea-hook |
| any other JSON object | radius-json |
| ``address,…`` header line followed by a row | kea-csv |
| detail header line (``Sun Nov 22 09:36:08 2026``) then TAB-indented lines | radius-detail |
| ``YYYY-MM-DD hh:mm:ss ZONE Address:|Prefix:`` | kea-legal |
| CEF header with vendor ``A10`` (``CEF:0|A10|…``, or ``0|A10|…`` with the tag split off) | a10 |
| ``*_NAT_PORT_BLOCK_*``, ``RT_SRC_NAT_PBA_*`` or ``RT_FLOW_SESSION_*`` | juniper |
| ``fp-cgnat`` / ``NEW|DESTROY BLOCK (pool|ip public`` / ``CONN: fwd proto`` | sixwind |
| ``A|D VRF n … INT … EXT …`` | nfware |
| ``LSN_ADD|DELETE …`` | f5 |
| ``NAT-<PROTO>-<C|B|U|D>:`` / ``FIXED-NAT-PORTS`` | a10 |

Framing of a file is chosen from its first non-blank line: a Kea CSV header selects the Kea
framer (records carry the header), a detail header line selects the detail framer, anything
else is one record per line.  ``ipanon parse --format auto`` reports what it chose on stderr.
"""

from __future__ import annotations

import itertools
import re
from typing import Iterable, Iterator, Optional

from ..errors import Rejected
from ..model import Binding
from . import Format, frame_lines, get_format, register

_DETAIL_HEAD = re.compile(rb"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}\r?$")
_LEGAL = re.compile(rb"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)? \S+ (?:Address|Prefix): ")
_SIGNATURES = (
    (re.compile(rb"(?:^|\s)(?:CEF:)?\d+\|A10\|"), "a10"),
    (re.compile(rb"_NAT_PORT_BLOCK_|RT_SRC_NAT_PBA_|RT_FLOW_SESSION_"), "juniper"),
    (re.compile(rb"fp-cgnat|\b(?:NEW|DESTROY) BLOCK \((?:pool|ip public)|\bCONN: fwd proto"), "sixwind"),
    (re.compile(rb"\b[AD] VRF \d+ (?:\d+ )?INT \S+ EXT "), "nfware"),
    (re.compile(rb"\bLSN_(?:INBOUND_)?(?:ADD|DELETE) "), "f5"),
    (re.compile(rb"\bNAT-[A-Z]+-[CBUD]: |\bFIXED-NAT-PORTS "), "a10"),
)


def detect(record: bytes) -> str:
    if record[:2] == b"\x00\x0a" and len(record) >= 16 and int.from_bytes(record[2:4], "big") == len(record):
        return "ipfix"
    head = record.lstrip()[:1]
    if head == b"{":
        if b'"natEvent"' in record:
            return "ipfix-json"
        if b'"hook"' in record:
            return "kea-hook"
        return "radius-json"
    first, _, rest = record.partition(b"\n")
    if first.startswith(b"address,") and rest:
        return "kea-csv"
    if _DETAIL_HEAD.match(first) and rest[:1] in (b"\t", b" "):
        return "radius-detail"
    if _LEGAL.match(record):
        return "kea-legal"
    for rx, name in _SIGNATURES:
        if rx.search(record):
            return name
    raise Rejected("unrecognised-format", "no known format matches the record")


def frame(lines: Iterable[bytes]) -> Iterator[bytes]:
    it = iter(lines)
    peeked: list[bytes] = []
    first: Optional[bytes] = None
    for line in it:
        peeked.append(line)
        if line.strip():
            first = line.rstrip(b"\r\n")
            break
    whole = itertools.chain(peeked, it)
    if first is None:
        return
    if first.startswith(b"address,"):
        yield from get_format("kea-csv").frame(whole)
    elif _DETAIL_HEAD.match(first):
        yield from get_format("radius-detail").frame(whole)
    else:
        yield from frame_lines(whole)


def parse(record: bytes, *, operator: str, **context: object) -> list[Binding]:
    return get_format(detect(record)).parse(record, operator=operator, **context)


register(Format("auto", parse, frame=frame, family="auto",
                description="detect the format per file / per record (see stream/parse/auto.py)"))
