"""``kea-hook``: one JSON object per call of Kea's ``run_script`` hook (libdhcp_run_script.so).

The object is ``{"hook": "<hook point>", <the environment Kea passed, as strings>}`` plus,
optionally, ``"ts_ms"`` (the script's own clock at the call; the snippet in
``deploy/collectors/kea-run-script.sh`` adds it).  Hook points and their bindings:

| hook | action | from |
|---|---|---|
| ``lease4_renew``, ``lease6_renew``, ``lease6_rebind`` | update | ``LEASE4_*`` / ``LEASE6_*`` |
| ``lease4_recover``, ``lease6_recover`` | start | ``LEASE4_*`` / ``LEASE6_*`` |
| ``lease4_release``, ``lease4_decline``, ``lease4_expire`` (+ v6) | stop | ``LEASE4_*`` / ``LEASE6_*`` |
| ``leases4_committed``, ``leases6_committed`` | start per ``LEASES4_AT<i>_*``, stop per ``DELETED_LEASES4_AT<i>_*`` | ``*_SIZE`` counts |

Times: a start/update is at ``CLTT`` and lasts until ``CLTT + VALID_LIFETIME``.  A stop is at
``ts_ms`` when present; else an ``expire`` stop is at ``CLTT + VALID_LIFETIME`` (the moment the
lease ran out) and any other stop at ``CLTT`` (the last instant Kea recorded; the real release
instant is unknown without ``ts_ms``).  ``LEASE6_TYPE`` ``IA_PD`` (or ``2``) makes the binding
the prefix ``ADDRESS/PREFIX_LEN``.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Mapping, Optional

from ..errors import Rejected
from ..model import Binding, dhcp_binding
from ._fastip import network as parse_network
from . import Format, load_json_object, register
from ._dhcp import hexid, subscriber
from ._time import MAX_EVENT_MS, MIN_EVENT_MS, check_range, epoch_ms

MAX_RECORD_BYTES = 256 * 1024
MAX_LEASES = 1024

_SINGLE = {
    "lease4_renew": "update", "lease6_renew": "update", "lease6_rebind": "update",
    "lease4_recover": "start", "lease6_recover": "start",
    "lease4_release": "stop", "lease6_release": "stop",
    "lease4_decline": "stop", "lease6_decline": "stop",
    "lease4_expire": "stop", "lease6_expire": "stop",
}
_COMMITTED = {"leases4_committed": "4", "leases6_committed": "6"}
_STR = frozenset({str})


def _uint(env: Mapping[str, str], name: str) -> int:
    v = env.get(name)
    if v is None:
        raise Rejected("missing-attribute", f"{name} is missing")
    s = v.strip()
    if not (s.isascii() and s.isdigit()) or len(s) > 20:
        raise Rejected("bad-attribute", f"{name} is not an unsigned integer")
    return int(s)


_NAMES: dict[str, tuple[str, ...]] = {}


def _names(p: str) -> tuple[str, ...]:
    """The environment names of one lease with prefix ``p`` (built once per prefix)."""
    names = _NAMES.get(p)
    if names is None:
        names = _NAMES[p] = tuple(p + n for n in ("ADDRESS", "CLTT", "VALID_LIFETIME", "TYPE", "PREFIX_LEN",
                                                  "HWADDR", "CLIENT_ID", "DUID"))
    return names


def _lease(env: Mapping[str, str], p: str, fam: str, action: str, hook: str,
           ts_ms: Optional[int], operator: str, dhcp_identity: Optional[str]) -> Binding:
    n_addr, n_cltt, n_valid, n_type, n_plen, n_hwaddr, n_client_id, n_duid = _names(p)
    addr = env.get(n_addr)
    if not addr:
        raise Rejected("missing-attribute", f"{p}ADDRESS is missing")
    v = env.get(n_cltt)  # _uint(), with the common case inline
    cltt = int(v) if v is not None and v.isdigit() and v.isascii() and len(v) <= 20 else _uint(env, n_cltt)
    v = env.get(n_valid)
    valid = int(v) if v is not None and v.isdigit() and v.isascii() and len(v) <= 20 else _uint(env, n_valid)
    if fam == "6":
        ltype = (env.get(n_type) or "IA_NA").strip().upper()
        if ltype in ("IA_PD", "2"):
            net = parse_network(f"{addr.strip()}/{_uint(env, n_plen)}", field="prefix")
        elif ltype in ("IA_NA", "IA_TA", "0", "1"):
            net = parse_network(addr, field="address")
        else:
            raise Rejected("bad-attribute", f"{p}TYPE is not IA_NA/IA_TA/IA_PD")
        if type(net) is not IPv6Network:
            raise Rejected("bad-address", f"{p}ADDRESS is not IPv{fam}")
        v = env.get(n_hwaddr)
        hwaddr = hexid(v, "hwaddr") if v else None
        client_id = None
        duid = hexid(env.get(n_duid), "duid")
    else:
        net = parse_network(addr, field="address")
        if type(net) is not IPv4Network:
            raise Rejected("bad-address", f"{p}ADDRESS is not IPv{fam}")
        v = env.get(n_hwaddr)
        hwaddr = hexid(v, "hwaddr") if v else None
        v = env.get(n_client_id)
        client_id = hexid(v, "client_id") if v else None
        duid = None
    if dhcp_identity is None:  # subscriber()'s default chain
        sub = (duid or hwaddr or None) if fam == "6" else (client_id or hwaddr or None)
    else:
        sub = subscriber({"hwaddr": hwaddr, "client_id": client_id, "duid": duid}, v6=fam == "6",
                         dhcp_identity=dhcp_identity)
    if sub is None and action != "stop":
        raise Rejected("missing-identity", "lease without client-id/DUID or hardware address")
    end_ms = (cltt + valid) * 1000
    if not MIN_EVENT_MS <= end_ms < MAX_EVENT_MS:
        check_range(end_ms)
    if action == "stop":
        if ts_ms is not None:
            at_ms = ts_ms
        elif hook.endswith("_expire"):
            at_ms = end_ms
        else:
            at_ms = check_range(cltt * 1000)
    else:
        at_ms = cltt * 1000
        if at_ms < MIN_EVENT_MS:  # at ≤ end < MAX
            check_range(at_ms)
    return dhcp_binding(action, operator, net, sub, at_ms, end_ms, hwaddr, client_id, duid, None, None)


def parse(record: bytes, *, operator: str, dhcp_identity: Optional[str] = None,
          **_context: object) -> list[Binding]:
    obj = load_json_object(record, MAX_RECORD_BYTES)
    if _STR.issuperset(map(type, obj.values())):  # what Kea passes: strings only (one pass in C)
        env: dict[str, str] = obj
    else:
        env = {}
        for k, v in obj.items():
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise Rejected("bad-attribute", "hook values must be strings")
            env[k] = str(v)
    hook = env.get("hook", "").strip()
    ts_ms = epoch_ms(env["ts_ms"], unit="ms", field="ts_ms") if "ts_ms" in env else None

    if hook in _SINGLE:
        fam = hook[5]
        return [_lease(env, f"LEASE{fam}_", fam, _SINGLE[hook], hook, ts_ms, operator, dhcp_identity)]
    if hook in _COMMITTED:
        fam = _COMMITTED[hook]
        out: list[Binding] = []
        for prefix, action in ((f"LEASES{fam}", "start"), (f"DELETED_LEASES{fam}", "stop")):
            n = _uint(env, f"{prefix}_SIZE") if f"{prefix}_SIZE" in env else 0
            if n > MAX_LEASES:
                raise Rejected("oversized", f"{prefix}_SIZE larger than {MAX_LEASES}")
            for i in range(n):
                out.append(_lease(env, f"{prefix}_AT{i}_", fam, action, hook, ts_ms,
                                  operator, dhcp_identity))
        return out  # a commit with no leases (e.g. a declined offer) binds nothing
    if not hook:
        raise Rejected("missing-attribute", "no \"hook\" name in the record")
    raise Rejected("unsupported-event", "hook point carries no lease binding")


register(Format("kea-hook", parse, family="dhcp",
                description="JSON of one Kea run_script call: {\"hook\": …, LEASE4_* / LEASES4_AT<i>_* …}"))
