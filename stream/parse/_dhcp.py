"""Shared rules for DHCP lease formats (Kea CSV, legal log, run_script hook).

Identity (the ``subscriber`` of a DHCP binding), unless the operator's rule says otherwise:
DHCPv4 → client-id, else the hardware address; DHCPv6 → DUID, else the hardware address.
``dhcp_identity`` (a parser keyword) picks one field explicitly: ``client_id``, ``hwaddr``,
``duid``, ``circuit_id`` or ``remote_id``; when that field is absent the default chain applies.

Hex identifiers are normalised to lower-case colon-separated bytes (``08:00:2b:02:3f:4e``);
Kea writes them that way already, hook environments sometimes do not.
"""

from __future__ import annotations

import re
from typing import Optional

from ..errors import Rejected
from ._time import MAX_EVENT_MS

IDENTITY_FIELDS = ("client_id", "hwaddr", "duid", "circuit_id", "remote_id")
#: DHCP carries a lease time in a 32-bit field of seconds (RFC 2131 option 51, RFC 8415
#: valid-lifetime; 0xffffffff = infinity): a longer lifetime cannot come from a DHCP server.
MAX_LIFETIME_S = 0xFFFF_FFFF


def lease_end_ms(at_ms: int, lifetime_s: int) -> int:
    """``at_ms`` + the lease lifetime, or ``bad-lifetime`` for a lifetime no DHCP server can
    send or a lease that would end past 2100 (the bound of every event time)."""
    if lifetime_s > MAX_LIFETIME_S:
        raise Rejected("bad-lifetime", f"lease lifetime longer than {MAX_LIFETIME_S} s (the protocol's 32-bit field)")
    end = at_ms + lifetime_s * 1000
    if end >= MAX_EVENT_MS:
        raise Rejected("bad-lifetime", "lease would end after 2100")
    return end
_HEX = re.compile(r"^[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2})*$")
_HEXRUN = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
_CANON = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2})*\Z")  # already normalised: the common case


def hexid(v: Optional[str], field: str) -> Optional[str]:
    """Normalise a hex identifier; empty → None; anything else non-hex → reject."""
    if v is None or not v:
        return None
    if _CANON.match(v):
        return v
    s = v.strip()
    if not s:
        return None
    if _HEX.match(s):
        return ":".join(p.rjust(2, "0") for p in s.lower().split(":"))
    if _HEXRUN.match(s):
        s = s.lower()
        return ":".join(s[i:i + 2] for i in range(0, len(s), 2))
    raise Rejected("bad-attribute", f"{field} is not a hex identifier")


def subscriber(ids: dict[str, Optional[str]], *, v6: bool, dhcp_identity: Optional[str] = None) -> Optional[str]:
    if dhcp_identity is not None:
        if dhcp_identity not in IDENTITY_FIELDS:
            raise Rejected("bad-identity-rule", f"dhcp identity must be one of {IDENTITY_FIELDS}")
        if ids.get(dhcp_identity):
            return ids[dhcp_identity]
    chain = ("duid", "hwaddr") if v6 else ("client_id", "hwaddr")
    for f in chain:
        if ids.get(f):
            return ids[f]
    return None
