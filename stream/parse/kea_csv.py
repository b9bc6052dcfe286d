"""``kea-csv``: Kea memfile lease files (``kea-leases4.csv`` / ``kea-leases6.csv``).

The memfile is an append-only journal (REFERENCE.md §4): every change to a lease appends a full
row, later rows win, and a row with ``valid_lifetime`` 0 (deleted/released) or ``state`` ≠ 0
(1 declined, 2 expired-reclaimed, 3 released) means the address is no longer held.  Columns are
found by the header line — older Kea versions write fewer columns, newer ones more — so the
framer emits *self-contained* records ``b"<header>\\n<row>"``: one Kafka message parses alone.

Per row:
- ``action`` = ``stop`` when valid_lifetime is 0 or state is 1/2/3, else ``start`` (state 0,
  or 4 "registered" for v6);
- ``at_ms`` = (expire − valid_lifetime) × 1000 — the client's last transmission time (cltt) —
  and ``until_ms`` = expire × 1000.  For a deleted row (valid_lifetime 0) Kea keeps the old
  cltt, so at = until = cltt: the file does not record the release instant;
- ``ip`` = the address, or ``address/prefix_len`` for a v6 prefix delegation (lease_type 2);
- ``hwaddr``, ``client_id`` (v4), ``duid`` (v6); subscriber by ``_dhcp.subscriber``.
  A ``start`` row without any identity is rejected (``missing-identity``); a ``stop`` may have
  none (Kea clears identities of declined leases).

Kea escapes commas inside text fields as ``&#x2c``; only the fields used here are read, and
the hostname/user_context columns (which may hold such escapes) are never split on.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Iterable, Iterator, NamedTuple, Optional

from ..errors import Rejected
from ..model import Binding, dhcp_binding
from ._fastip import network as parse_network
from . import Format, register
from ._dhcp import hexid, subscriber
from ._time import MAX_EVENT_MS, MIN_EVENT_MS, check_range

MAX_RECORD_BYTES = 16 * 1024
_STOP_STATES = {1, 2, 3}
_KNOWN_STATES = {0, 1, 2, 3, 4}
_V4_REQUIRED = ("address", "hwaddr", "valid_lifetime", "expire")
_V6_REQUIRED = ("address", "duid", "valid_lifetime", "expire", "lease_type", "prefix_len")

class _Header(NamedTuple):
    v6: bool
    width: int
    valid: int  # column indexes; -1 when the header has no such column
    expire: int
    state: int
    hwaddr: int
    client_id: int
    duid: int
    lease_type: int
    prefix_len: int


_header_cache: dict[bytes, _Header] = {}


def frame(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Emit ``header\\nrow`` for every row; a header line (``address,…``) replaces the current one."""
    header: Optional[bytes] = None
    for line in lines:
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        if line.startswith(b"address,"):
            header = line
            continue
        yield line if header is None else header + b"\n" + line


def _header(h: bytes) -> _Header:
    hit = _header_cache.get(h)
    if hit is not None:
        return hit
    try:
        names = h.decode("ascii").split(",")
    except UnicodeDecodeError:
        raise Rejected("bad-header", "CSV header is not ASCII") from None
    cols = {n: i for i, n in enumerate(names)}
    if names[0] != "address" or len(cols) != len(names):
        raise Rejected("bad-header", "not a Kea lease file header")
    v6 = "duid" in cols
    missing = [c for c in (_V6_REQUIRED if v6 else _V4_REQUIRED) if c not in cols]
    if missing:
        raise Rejected("bad-header", f"Kea lease header lacks {', '.join(missing)}")
    col = cols.get
    hit = _Header(v6, len(names), cols["valid_lifetime"], cols["expire"], col("state", -1), col("hwaddr", -1),
                  col("client_id", -1), col("duid", -1), col("lease_type", -1), col("prefix_len", -1))
    if len(_header_cache) < 256:
        _header_cache[h] = hit
    return hit


def _uint(s: str, field: str) -> int:
    if not (s.isascii() and s.isdigit()) or len(s) > 20:
        raise Rejected("bad-row", f"{field} is not an unsigned integer")
    return int(s)


def parse(record: bytes, *, operator: str, dhcp_identity: Optional[str] = None,
          **_context: object) -> list[Binding]:
    if len(record) > MAX_RECORD_BYTES:
        raise Rejected("oversized", f"record larger than {MAX_RECORD_BYTES} bytes")
    head, sep, row = record.partition(b"\n")
    if not sep:
        raise Rejected("missing-header", "Kea CSV record without its header line")
    hdr = _header(head.rstrip(b"\r"))
    try:
        fields = row.rstrip(b"\r").decode("utf-8").split(",")
    except UnicodeDecodeError:
        raise Rejected("bad-encoding", "row is not UTF-8") from None
    if len(fields) != hdr.width:
        raise Rejected("bad-row", f"row has {len(fields)} fields, header has {hdr.width}")

    s = fields[hdr.valid]  # _uint(s), with the common case inline
    valid = int(s) if s.isdigit() and s.isascii() and len(s) <= 20 else _uint(s, "valid_lifetime")
    s = fields[hdr.expire]
    expire = int(s) if s.isdigit() and s.isascii() and len(s) <= 20 else _uint(s, "expire")
    if hdr.state < 0:
        state = 0
    else:
        s = fields[hdr.state]
        state = 0 if s == "0" else _uint(s, "state")
    if state not in _KNOWN_STATES:
        raise Rejected("unsupported-state", "lease state is not 0..4")
    if expire < valid:
        raise Rejected("bad-row", "expire is before the lease start")
    at_ms = (expire - valid) * 1000
    until_ms = expire * 1000
    if not (MIN_EVENT_MS <= at_ms and until_ms < MAX_EVENT_MS):  # at ≤ until: both in range
        check_range(at_ms)
        check_range(until_ms)
    action = "stop" if valid == 0 or state in _STOP_STATES else "start"

    addr = fields[0]
    if hdr.v6:
        lease_type = _uint(fields[hdr.lease_type], "lease_type")
        plen = _uint(fields[hdr.prefix_len], "prefix_len")
        if lease_type == 2:
            net = parse_network(f"{addr}/{plen}", field="prefix")
        elif lease_type in (0, 1):
            net = parse_network(addr, field="address")
        else:
            raise Rejected("bad-row", "lease_type is not 0 (NA), 1 (TA) or 2 (PD)")
        if type(net) is not IPv6Network:
            raise Rejected("bad-address", "v6 lease with an IPv4 address")
        duid = hexid(fields[hdr.duid], "duid")
        hwaddr = hexid(fields[hdr.hwaddr], "hwaddr") if hdr.hwaddr >= 0 else None
        client_id = None
    else:
        net = parse_network(addr, field="address")
        if type(net) is not IPv4Network:
            raise Rejected("bad-address", "v4 lease with an IPv6 address")
        hwaddr = hexid(fields[hdr.hwaddr], "hwaddr")
        client_id = hexid(fields[hdr.client_id], "client_id") if hdr.client_id >= 0 else None
        duid = None
    if dhcp_identity is None:  # subscriber()'s default chain
        sub = (duid or hwaddr or None) if hdr.v6 else (client_id or hwaddr or None)
    else:
        ids = {"duid": duid, "hwaddr": hwaddr} if hdr.v6 else {"hwaddr": hwaddr, "client_id": client_id}
        sub = subscriber(ids, v6=hdr.v6, dhcp_identity=dhcp_identity)
    if sub is None and action == "start":
        raise Rejected("missing-identity", "lease row without client-id/DUID or hardware address")
    return [dhcp_binding(action, operator, net, sub, at_ms, until_ms, hwaddr, client_id, duid, None, None)]


register(Format("kea-csv", parse, frame=frame, family="dhcp", header_lines=1,
                description="Kea memfile lease4/lease6 CSV journal (records carry their header)"))
