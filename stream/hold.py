"""Legal holds: freeze expiry of exactly the mappings a preservation order names.

A preservation order (rättegångsbalken 27 kap. 16 §; e.g. PMÖÄ 5331-21) or a court order can
forbid deleting named data (REFERENCE.md §2).  A hold names one operator, one address or prefix,
optionally one port (CGNAT public address + port, RFC 6302), a half-open time interval
``[from_ms, to_ms)`` of the *usage* it covers, a case reference, and ``until_ms``: the instant
the hold lapses by itself.  Holds are always time-limited — a preservation order is for a
limited period (90 days under 27:16 RB as we read it; extended by a new order) — and
``make_hold`` refuses anything longer than ``max_hold_ms``.

Matching (``LegalHold.matches``), all conditions must hold:

- same operator;
- the mapping's address/prefix and the hold's overlap (either contains the other: a hold on
  one IPv6 address holds the delegated /56 it lies in, a hold on a /24 holds each /32 in it);
- port: a hold without a port matches any mapping; a hold with a port matches a mapping whose
  port block contains it, and a mapping without a port block (conservatively — it may be the
  far end of the chain; the caller resolves CGNAT chains and holds every link);
- the mapping's interval ``[start_ms, end_ms)`` overlaps ``[from_ms, to_ms)`` (``end_ms=None``
  = still open);
- ``now_ms < until_ms`` (a lapsed hold matches nothing; releasing removes it).

Pure: time arrives as ``now_ms``; nothing here reads the clock.  Reprs never show the address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Union

from .errors import Rejected
from .model import IPAddress, IPNetwork, ip_text, parse_network

_REQUESTER_RE = re.compile(r"^(authority|staff):[a-z0-9][a-z0-9-]{0,62}$")

#: Longest hold ``make_hold`` accepts (90 days): a preservation order is time-limited.
DEFAULT_MAX_HOLD_MS = 90 * 86_400_000

Key = Union[IPNetwork, IPAddress]


def _as_network(key: Key) -> IPNetwork:
    if isinstance(key, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return key
    return ipaddress.ip_network(key)


@dataclass(frozen=True, slots=True)
class LegalHold:
    """One hold.  ``hold_id`` is derived from the content (stable across replays)."""

    operator: str
    network: IPNetwork = field(repr=False)
    port: Optional[int]
    from_ms: int
    to_ms: int
    case_ref: str
    until_ms: int
    created_ms: int
    # who ordered it ("authority:<id>" or "staff:<id>"); None only for holds made before signing
    requester: Optional[str] = None

    @property
    def hold_id(self) -> str:
        raw = json.dumps(self.to_dict(with_id=False), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    def matches(self, operator: str, key: Key, start_ms: int, end_ms: Optional[int], now_ms: int,
                ports: Optional[tuple[int, int]] = None) -> bool:
        if now_ms >= self.until_ms or operator != self.operator:
            return False
        net = _as_network(key)
        if net.version != self.network.version:
            return False
        if not (net.subnet_of(self.network) or self.network.subnet_of(net)):  # type: ignore[arg-type]
            return False
        if self.port is not None and ports is not None and not (ports[0] <= self.port <= ports[1]):
            return False
        return start_ms < self.to_ms and (end_ms is None or self.from_ms < end_ms)

    def to_dict(self, *, with_id: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"operator": self.operator, "ip": ip_text(self.network), "port": self.port,
                             "from_ms": self.from_ms, "to_ms": self.to_ms, "case_ref": self.case_ref,
                             "until_ms": self.until_ms, "created_ms": self.created_ms}
        if self.requester is not None:
            d["requester"] = self.requester
        if with_id:
            d["hold_id"] = self.hold_id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LegalHold":
        try:
            h = cls(operator=d["operator"], network=parse_network(d["ip"], field="ip"), port=d.get("port"),
                    from_ms=d["from_ms"], to_ms=d["to_ms"], case_ref=d["case_ref"], until_ms=d["until_ms"],
                    created_ms=d["created_ms"], requester=d.get("requester"))
        except (KeyError, TypeError, AttributeError):
            raise Rejected("bad-hold", "hold record lacks a field or has a wrong type") from None
        _validate(h)
        if "hold_id" in d and d["hold_id"] != h.hold_id:
            raise Rejected("bad-hold", "hold_id does not match the hold's content")
        return h


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate(h: LegalHold) -> None:
    if not h.operator or not isinstance(h.operator, str):
        raise Rejected("bad-hold", "operator is required")
    if not isinstance(h.case_ref, str) or not h.case_ref.strip():
        raise Rejected("missing-case-ref", "a hold needs the case reference of the order")
    for name in ("from_ms", "to_ms", "until_ms", "created_ms"):
        if not _is_int(getattr(h, name)):
            raise Rejected("bad-timestamp", f"{name} must be integer milliseconds")
    if h.from_ms >= h.to_ms:
        raise Rejected("bad-hold-interval", "from must be before to (half-open [from, to))")
    if h.port is not None and not (_is_int(h.port) and 0 <= h.port <= 65535):
        raise Rejected("bad-port", "port must be 0..65535")
    if h.until_ms <= h.created_ms:
        raise Rejected("hold-in-past", "until must be after the hold is made")
    if h.requester is not None and not (isinstance(h.requester, str) and _REQUESTER_RE.match(h.requester)):
        raise Rejected("bad-hold", "requester must be authority:<id> or staff:<id>")


def make_hold(*, operator: str, ip: str, from_ms: int, to_ms: int, case_ref: str, until_ms: int,
              now_ms: int, port: Optional[int] = None, max_hold_ms: int = DEFAULT_MAX_HOLD_MS,
              requester: Optional[str] = None) -> LegalHold:
    """Validate and build a hold made at ``now_ms``.  Raises ``Rejected`` with a reason:
    ``bad-address``, ``bad-port``, ``bad-hold-interval``, ``missing-case-ref``,
    ``hold-in-past``, ``hold-too-long``."""
    h = LegalHold(operator, parse_network(ip, field="ip"), port, from_ms, to_ms, case_ref.strip()
                  if isinstance(case_ref, str) else case_ref, until_ms, now_ms, requester)
    _validate(h)
    if until_ms - now_ms > max_hold_ms:
        raise Rejected("hold-too-long", f"a hold may last at most {max_hold_ms // 86_400_000} days; "
                                        f"renew it with a new order")
    return h


@dataclass(frozen=True, slots=True)
class HoldSet:
    """An immutable set of holds; every change returns a new set."""

    holds: tuple[LegalHold, ...] = ()

    def add(self, hold: LegalHold) -> "HoldSet":
        if any(h.hold_id == hold.hold_id for h in self.holds):
            return self
        return HoldSet(self.holds + (hold,))

    def release(self, hold_id: str) -> "HoldSet":
        if not any(h.hold_id == hold_id for h in self.holds):
            raise Rejected("unknown-hold", "no hold with that id")
        return HoldSet(tuple(h for h in self.holds if h.hold_id != hold_id))

    def prune(self, now_ms: int) -> "HoldSet":
        """Drop lapsed holds (they match nothing anyway)."""
        return HoldSet(tuple(h for h in self.holds if now_ms < h.until_ms))

    def matching(self, operator: str, key: Key, interval: tuple[int, Optional[int]], now_ms: int, *,
                 ports: Optional[tuple[int, int]] = None) -> tuple[LegalHold, ...]:
        start, end = interval
        return tuple(h for h in self.holds if h.matches(operator, key, start, end, now_ms, ports))

    def is_held(self, operator: str, key: Key, interval: tuple[int, Optional[int]], now_ms: int, *,
                ports: Optional[tuple[int, int]] = None) -> bool:
        """True if any active hold covers this mapping (see module doc for the rules)."""
        return bool(self.matching(operator, key, interval, now_ms, ports=ports))

    def held_until(self, operator: str, key: Key, interval: tuple[int, Optional[int]], now_ms: int, *,
                   ports: Optional[tuple[int, int]] = None) -> Optional[int]:
        """When the sweeper may look again: the latest ``until_ms`` of the matching holds, or
        None if the mapping is not held.  (A release can end a hold earlier; the sweeper
        re-checks then.)"""
        m = self.matching(operator, key, interval, now_ms, ports=ports)
        return max(h.until_ms for h in m) if m else None

    def to_json(self) -> bytes:
        return json.dumps([h.to_dict() for h in self.holds], separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "HoldSet":
        try:
            items = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise Rejected("bad-json", "hold set is not JSON") from None
        if not isinstance(items, list):
            raise Rejected("bad-hold", "hold set must be a JSON list")
        return cls(tuple(LegalHold.from_dict(d) for d in items))

    @classmethod
    def of(cls, holds: Iterable[LegalHold]) -> "HoldSet":
        s = cls()
        for h in holds:
            s = s.add(h)
        return s

    def __len__(self) -> int:
        return len(self.holds)


def is_held(holds: HoldSet, operator: str, key: Key, interval: tuple[int, Optional[int]], now_ms: int, *,
            ports: Optional[tuple[int, int]] = None) -> bool:
    """Function form of ``HoldSet.is_held``."""
    return holds.is_held(operator, key, interval, now_ms, ports=ports)


# --------------------------------------------------------------------------------------------
# the hold desk: signed preservation orders, staff approval, guarded release
#
# Wire forms (one JSON object per message on the lawful-access inbox, like requests)::
#
#   {"type": "hold-request", "v": 1, "body": {...}, "sig": hex}
#       body = {"requester", "role" ("authority"|"staff"), "basis", "operator", "ip", "port",
#               "from_ms", "to_ms", "case_ref", "until_ms", "issued_ms", "nonce"}
#       signed bytes = b"ipanon-hold-v1\x00" + canonical(body); hold_digest = SHA-256 of them
#   {"type": "hold-approval", "v": 1, "body": {"hold_id", "hold_digest", "staff", "issued_ms"}, "sig"}
#       signed bytes = b"ipanon-hold-approval-v1\x00" + canonical(body)
#   {"type": "hold-release", "v": 1, "body": {"hold_id", "requester", "role", "issued_ms", "nonce"}, "sig"}
#       signed bytes = b"ipanon-hold-release-v1\x00" + canonical(body)
#
# A hold takes effect only after ``policy.hold_approvals`` distinct staff members (never its own
# requester) approved exactly the signed order (its digest).  Its requester may release it at
# once; anyone else needs two distinct staff members' signed releases.

HOLD_DOMAIN = b"ipanon-hold-v1\x00"
HOLD_APPROVAL_DOMAIN = b"ipanon-hold-approval-v1\x00"
HOLD_RELEASE_DOMAIN = b"ipanon-hold-release-v1\x00"
HOLD_MESSAGE_TYPES = ("hold-request", "hold-approval", "hold-release")
ROLES = ("authority", "staff")
#: Distinct staff releases that end a hold its requester did not release.
STAFF_RELEASES = 2

#: Every reason the hold desk gives (docs/lawful-access.md mirrors this).
HOLD_REASONS = {
    "malformed-hold": "not a well-formed signed hold message",
    "unknown-requester": "the signer is not a registered authority or staff member",
    "bad-signature": "the signature does not verify with the registered key",
    "basis-not-allowed": "the basis does not allow a preservation order, or the signer is not registered for it",
    "unknown-operator": "no such operator profile",
    "stale-request": "issued longer ago than the freshness window",
    "future-request": "issued further in the future than the clock-skew bound",
    "replayed-nonce": "this signer already used this nonce",
    "duplicate-hold": "a hold with this id is already pending or active",
    "hold-too-wide": "wider than one address (IPv4) or one /64 (IPv6)",
    "interval-too-long": "the held usage interval is longer than the policy allows",
    "hold-too-long": "the hold would last longer than the policy allows",
    "rate-limited": "the authority's request budget is used up",
    "unknown-hold": "no pending or active hold has this id",
    "digest-mismatch": "the approval is for a different version of the order",
    "own-hold": "the requester cannot approve their own hold",
    "stale-approval": "approval issued outside the freshness window",
    "duplicate-approval": "this staff member already approved; counted once",
    "not-hold-requester": "only the hold's requester or two staff members may release it",
    "duplicate-release": "this staff member already asked to release this hold",
    "expired": "not enough approvals before the pending hold expired",
}

_HOLD_FIELDS = frozenset({"requester", "role", "basis", "operator", "ip", "port", "from_ms", "to_ms",
                          "case_ref", "until_ms", "issued_ms", "nonce"})
_HOLD_APPROVAL_FIELDS = frozenset({"hold_id", "hold_digest", "staff", "issued_ms"})
_HOLD_RELEASE_FIELDS = frozenset({"hold_id", "requester", "role", "issued_ms", "nonce"})
_HOLD_ID_RE = re.compile(r"^[0-9a-f]{16}$")


def _signed(domain: bytes, body: dict[str, Any]) -> bytes:
    from .audit import canonical

    return domain + canonical(body)


def hold_digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(_signed(HOLD_DOMAIN, body)).hexdigest()


def hold_body(*, requester: str, role: str, basis: str, operator: str, ip: str, port: Optional[int],
              from_ms: int, to_ms: int, case_ref: str, until_ms: int, issued_ms: int, nonce: str) -> dict[str, Any]:
    return {"requester": requester, "role": role, "basis": basis, "operator": operator, "ip": ip, "port": port,
            "from_ms": from_ms, "to_ms": to_ms, "case_ref": case_ref, "until_ms": until_ms,
            "issued_ms": issued_ms, "nonce": nonce}


def hold_of_body(body: dict[str, Any]) -> LegalHold:
    """The hold a (shape-checked) order body names; its id is what the signer can compute."""
    h = LegalHold(body["operator"], parse_network(body["ip"], field="ip"), body["port"], body["from_ms"],
                  body["to_ms"], body["case_ref"], body["until_ms"], body["issued_ms"],
                  f"{body['role']}:{body['requester']}")
    _validate(h)
    return h


def _sign(private_key: Any, kind: str, domain: bytes, body: dict[str, Any]) -> bytes:
    from .audit import canonical

    return canonical({"type": kind, "v": 1, "body": dict(body), "sig": private_key.sign(_signed(domain, body)).hex()})


def sign_hold(private_key: Any, body: dict[str, Any]) -> bytes:
    """The wire message of a hold order signed by its requester (``ipanon hold add``)."""
    return _sign(private_key, "hold-request", HOLD_DOMAIN, body)


def sign_hold_approval(private_key: Any, *, hold_id: str, hold_digest: str, staff: str, issued_ms: int) -> bytes:
    return _sign(private_key, "hold-approval", HOLD_APPROVAL_DOMAIN,
                 {"hold_id": hold_id, "hold_digest": hold_digest, "staff": staff, "issued_ms": issued_ms})


def sign_hold_release(private_key: Any, *, hold_id: str, requester: str, role: str, issued_ms: int,
                      nonce: str) -> bytes:
    return _sign(private_key, "hold-release", HOLD_RELEASE_DOMAIN,
                 {"hold_id": hold_id, "requester": requester, "role": role, "issued_ms": issued_ms, "nonce": nonce})


def _shape(raw: bytes, kind: str, fields: frozenset) -> tuple[dict[str, Any], bytes]:
    from .access import _envelope

    body, sig = _envelope(raw, kind, "malformed-hold")
    if set(body) != fields:
        raise Rejected("malformed-hold", f"body fields differ from the v1 {kind} fields")
    for k, v in body.items():
        if k == "port":
            if v is not None and not _is_int(v):
                raise Rejected("malformed-hold", "port must be an integer or null")
        elif k.endswith("_ms"):
            if not _is_int(v) or v < 0:
                raise Rejected("malformed-hold", f"{k} must be a non-negative integer")
        elif not isinstance(v, str) or not v or len(v) > 200:
            raise Rejected("malformed-hold", f"{k} is missing or malformed")
    for k in ("requester", "staff"):
        if k in body and not re.match(r"^[a-z0-9][a-z0-9-]{0,62}$", body[k]):
            raise Rejected("malformed-hold", f"{k} is not a registry id")
    if "role" in body and body["role"] not in ROLES:
        raise Rejected("malformed-hold", "role is authority or staff")
    if "hold_id" in body and not _HOLD_ID_RE.match(body["hold_id"]):
        raise Rejected("malformed-hold", "hold_id is 16 hex digits")
    if "nonce" in body and not re.match(r"^[0-9a-f]{32,128}$", body["nonce"]):
        raise Rejected("malformed-hold", "nonce is 32-128 hex digits")
    return body, sig


@dataclass(frozen=True, slots=True)
class HoldDecision:
    """What the hold desk decided about one message (or one lapse).

    ``status``: ``refused`` | ``pending`` | ``set`` | ``approval-rejected`` | ``release-pending``
    | ``released`` | ``lapsed`` | ``expired``.  ``publish``: the hold to put on the holds topic
    (``set``), ``unpublish``: the id to tombstone there (``released``/``lapsed``).
    ``events``: audit events; ``reply``: the status message (key = hold id); ``authenticated``
    False when the signature never verified (the claimed names are not to be believed)."""

    status: str
    hold_id: Optional[str]
    reason: Optional[str] = None
    hold: Optional[LegalHold] = None
    events: tuple[dict[str, Any], ...] = ()
    reply: Optional[dict[str, Any]] = None
    authenticated: bool = True
    publish: Optional[LegalHold] = None
    unpublish: Optional[str] = None
    requester: Optional[str] = None


@dataclass(slots=True)
class _PendingHold:
    hold: LegalHold
    digest: str
    submitted_ms: int
    approvals: dict[str, int]


class _Refusal(Exception):
    """Carries the refusal of a message that is not a validly signed one (``HoldDesk._verified``)."""

    def __init__(self, decision: "HoldDecision") -> None:
        super().__init__(decision.reason)
        self.decision = decision


class HoldDesk:
    """The pure state machine behind signed legal holds (see the wire forms above).

    ``registry`` and ``policy`` are ``stream.access`` objects; ``operators`` the configured
    operator names; ``charge(authority_id, now_ms)`` takes a token from the authority's request
    budget (``QueryDesk.charge``) so holds and requests share one rate limit."""

    def __init__(self, registry: Any, policy: Any, operators: Iterable[str],
                 charge: Optional[Any] = None) -> None:
        self.registry = registry
        self.policy = policy
        self.operators = frozenset(operators)
        self.charge = charge
        self.active: dict[str, LegalHold] = {}
        self._pending: dict[str, _PendingHold] = {}
        self._releases: dict[str, dict[str, int]] = {}   # hold id -> staff id -> issued_ms
        self._seen: dict[str, int] = {}                   # "<role>:<id>:<nonce>" -> forget at ms

    # -- helpers ------------------------------------------------------------------------------

    def _signer(self, role: str, ident: str) -> Any:
        reg = self.registry.authorities if role == "authority" else self.registry.staff
        return reg.get(ident)

    def _prune(self, now_ms: int) -> None:
        for k in [k for k, t in self._seen.items() if t <= now_ms]:
            del self._seen[k]

    def _fresh(self, issued_ms: int, now_ms: int) -> None:
        if issued_ms + self.policy.max_age_ms <= now_ms:
            raise Rejected("stale-request")
        if issued_ms > now_ms + self.policy.clock_skew_ms:
            raise Rejected("future-request")

    def _nonce(self, who: str, nonce: str, issued_ms: int) -> None:
        key = f"{who}:{nonce}"
        if key in self._seen:
            raise Rejected("replayed-nonce")
        self._seen[key] = issued_ms + self.policy.max_age_ms

    def _reply(self, status: str, hid: Optional[str], now_ms: int, requester: Optional[str] = None,
               **extra: Any) -> dict[str, Any]:
        r: dict[str, Any] = {"type": "hold", "v": 1, "hold_id": hid, "status": status, "ts_ms": now_ms}
        if requester and requester.startswith("authority:") and hid and extra.get("authenticated", True):
            # routed to the authority's own reply topic like its requests' replies
            r["request_id"] = f"{requester.split(':', 1)[1]}/hold-{hid}"
        r.update({k: v for k, v in extra.items() if v is not None})
        return r

    def _refuse(self, reason: str, hid: Optional[str], now_ms: int, *, authenticated: bool = True,
                hold: Optional[LegalHold] = None, requester: Optional[str] = None, case_ref: Optional[str] = None,
                kind: str = "legal-hold-refused", before: tuple = ()) -> HoldDecision:
        ev: dict[str, Any] = {"type": kind, "hold_id": hid, "reason": reason,
                              "case_ref": hold.case_ref if hold else case_ref,
                              "requester": requester}
        extra: dict[str, Any] = {"reason": reason}
        if not authenticated:
            ev["detail"] = "unauthenticated"
            extra["authenticated"] = False
        status = "approval-rejected" if kind == "legal-hold-approval-rejected" else "refused"
        return HoldDecision(status, hid, reason, hold, before + (_clean(ev),),
                            self._reply(status, hid, now_ms, requester if authenticated else None, **extra),
                            authenticated, requester=requester)

    def _verified(self, raw: bytes, kind: str, fields: Any, domain: bytes, now_ms: int) -> tuple[dict, str, Any]:
        """``(body, "role:requester", signer)`` of a message of ``kind`` signed by a registered
        requester; raises ``_Refusal`` with the audited refusal otherwise."""
        try:
            body, sig = _shape(raw, kind, fields)
        except Rejected as e:
            raise _Refusal(self._refuse(e.reason, None, now_ms, authenticated=False)) from None
        who = f"{body['role']}:{body['requester']}"
        signer = self._signer(body["role"], body["requester"])
        if signer is None:
            raise _Refusal(self._refuse("unknown-requester", None, now_ms, authenticated=False, requester=who))
        try:
            signer.signing_key.verify(sig, _signed(domain, body))
        except Exception:  # InvalidSignature
            raise _Refusal(self._refuse("bad-signature", None, now_ms, authenticated=False, requester=who)) from None
        return body, who, signer

    # -- orders ---------------------------------------------------------------------------------

    def submit(self, raw: bytes, now_ms: int) -> HoldDecision:
        """Check one signed hold order; park it for staff approval or refuse it."""
        self._prune(now_ms)
        try:
            body, who, signer = self._verified(raw, "hold-request", _HOLD_FIELDS, HOLD_DOMAIN, now_ms)
        except _Refusal as r:
            return r.decision
        digest = hold_digest(body)
        try:
            hold = hold_of_body(body)
        except Rejected as e:
            return self._refuse(e.reason, None, now_ms, requester=who, case_ref=body["case_ref"])
        hid = hold.hold_id
        received = (_clean({"type": "legal-hold-received", "hold_id": hid, "case_ref": hold.case_ref,
                            "requester": who, "basis": body["basis"], "request_digest": digest,
                            "until_ms": hold.until_ms}),)
        try:
            self._check(body, signer, hold, who, now_ms)
        except Rejected as e:
            return self._refuse(e.reason, hid, now_ms, hold=hold, requester=who, before=received)
        self._pending[hid] = _PendingHold(hold, digest, now_ms, {})
        needed = self.policy.hold_approvals
        ev = _clean({"type": "legal-hold-pending", "hold_id": hid, "case_ref": hold.case_ref, "approvals": [],
                     "needed": needed})
        return HoldDecision("pending", hid, hold=hold, events=received + (ev,), requester=who,
                            reply=self._reply("pending", hid, now_ms, who, approvals=0, needed=needed,
                                              hold_digest=digest))

    def _check(self, body: dict[str, Any], signer: Any, hold: LegalHold, who: str, now_ms: int) -> None:
        p = self.policy
        if body["basis"] not in p.hold_bases or body["basis"] not in signer.bases:
            raise Rejected("basis-not-allowed")
        self._fresh(body["issued_ms"], now_ms)
        self._nonce(who, body["nonce"], body["issued_ms"])
        if hold.operator not in self.operators:
            raise Rejected("unknown-operator")
        if hold.hold_id in self._pending or hold.hold_id in self.active:
            raise Rejected("duplicate-hold")
        net = hold.network
        if net.prefixlen < (p.hold_min_prefixlen_v4 if net.version == 4 else p.hold_min_prefixlen_v6):
            raise Rejected("hold-too-wide")
        if hold.port is not None and net.prefixlen != net.max_prefixlen:
            raise Rejected("hold-too-wide", "a port only with one address")
        if hold.to_ms - hold.from_ms > p.hold_max_interval_ms:
            raise Rejected("interval-too-long")
        if hold.until_ms <= now_ms:
            raise Rejected("hold-in-past")
        if hold.until_ms - now_ms > p.hold_max_ms:
            raise Rejected("hold-too-long")
        if body["role"] == "authority" and self.charge is not None:
            self.charge(body["requester"], now_ms)

    # -- approvals ------------------------------------------------------------------------------

    def approve(self, raw: bytes, now_ms: int) -> HoldDecision:
        """Count one staff approval; the hold takes effect with the last one needed."""
        self._prune(now_ms)
        rej = "legal-hold-approval-rejected"
        try:
            body, sig = _shape(raw, "hold-approval", _HOLD_APPROVAL_FIELDS)
        except Rejected as e:
            return self._refuse(e.reason, None, now_ms, authenticated=False, kind=rej)
        hid = body["hold_id"]
        staff = self.registry.staff.get(body["staff"])
        if staff is None:
            return self._refuse("unknown-requester", None, now_ms, authenticated=False, kind=rej)
        try:
            staff.signing_key.verify(sig, _signed(HOLD_APPROVAL_DOMAIN, body))
        except Exception:
            return self._refuse("bad-signature", None, now_ms, authenticated=False, kind=rej)
        pend = self._pending.get(hid)
        who = f"staff:{staff.id}"
        if pend is None:
            return self._refuse("unknown-hold", hid, now_ms, kind=rej, requester=who)
        hold = pend.hold
        reason = None
        issued = body["issued_ms"]
        if body["hold_digest"] != pend.digest:
            reason = "digest-mismatch"
        elif hold.requester == who:
            reason = "own-hold"
        elif issued + self.policy.approval_ttl_ms <= now_ms or issued > now_ms + self.policy.clock_skew_ms:
            reason = "stale-approval"
        elif staff.id in pend.approvals:
            reason = "duplicate-approval"
        if reason:
            return self._refuse(reason, hid, now_ms, hold=hold, kind=rej, requester=who)
        pend.approvals[staff.id] = issued
        ttl = self.policy.approval_ttl_ms
        valid = sorted(s for s, t in pend.approvals.items() if t + ttl > now_ms)
        needed = self.policy.hold_approvals
        events: list[dict[str, Any]] = [_clean({"type": "legal-hold-approval", "hold_id": hid,
                                                "case_ref": hold.case_ref, "staff": staff.id,
                                                "approvals": valid, "needed": needed})]
        if len(valid) < needed:
            return HoldDecision("pending", hid, hold=hold, events=tuple(events), requester=hold.requester,
                                reply=self._reply("pending", hid, now_ms, hold.requester, approvals=len(valid),
                                                  needed=needed, hold_digest=pend.digest))
        del self._pending[hid]
        self.active[hid] = hold
        events.append(_clean({"type": "legal-hold-set", "hold_id": hid, "case_ref": hold.case_ref,
                              "until_ms": hold.until_ms, "approvals": valid, "requester": hold.requester}))
        return HoldDecision("set", hid, hold=hold, events=tuple(events), publish=hold, requester=hold.requester,
                            reply=self._reply("set", hid, now_ms, hold.requester, until_ms=hold.until_ms))

    # -- release ----------------------------------------------------------------------------------

    def release(self, raw: bytes, now_ms: int) -> HoldDecision:
        """A signed release: by the hold's requester at once, else two distinct staff members."""
        self._prune(now_ms)
        try:
            body, who, signer = self._verified(raw, "hold-release", _HOLD_RELEASE_FIELDS, HOLD_RELEASE_DOMAIN, now_ms)
        except _Refusal as r:
            return r.decision
        hid = body["hold_id"]
        hold = self.active.get(hid) or (self._pending[hid].hold if hid in self._pending else None)
        try:
            self._fresh(body["issued_ms"], now_ms)
            self._nonce(who, body["nonce"], body["issued_ms"])
            if hold is None:
                raise Rejected("unknown-hold")
        except Rejected as e:
            return self._refuse(e.reason, hid, now_ms, hold=hold, requester=who)
        if hold.requester != who:
            if body["role"] != "staff":
                return self._refuse("not-hold-requester", hid, now_ms, hold=hold, requester=who)
            votes = self._releases.setdefault(hid, {})
            ttl = self.policy.approval_ttl_ms
            for s in [s for s, t in votes.items() if t + ttl <= now_ms]:
                del votes[s]
            if signer.id in votes:
                return self._refuse("duplicate-release", hid, now_ms, hold=hold, requester=who)
            votes[signer.id] = body["issued_ms"]
            if len(votes) < STAFF_RELEASES:
                ev = _clean({"type": "legal-hold-release-requested", "hold_id": hid, "case_ref": hold.case_ref,
                             "staff": signer.id, "approvals": sorted(votes), "needed": STAFF_RELEASES})
                return HoldDecision("release-pending", hid, hold=hold, events=(ev,), requester=who,
                                    reply=self._reply("release-pending", hid, now_ms, hold.requester,
                                                      approvals=len(votes), needed=STAFF_RELEASES))
            detail = "released-by-staff"
            approvals: Optional[list[str]] = sorted(votes)
        else:
            detail, approvals = "released", None
        return self._end(hid, now_ms, detail, who, approvals)

    def _end(self, hid: str, now_ms: int, detail: str, who: Optional[str] = None,
             approvals: Optional[list[str]] = None) -> HoldDecision:
        was_active = hid in self.active
        hold = self.active.pop(hid, None) or self._pending.pop(hid).hold
        self._releases.pop(hid, None)
        ev = _clean({"type": "legal-hold-released", "hold_id": hid, "case_ref": hold.case_ref,
                     "until_ms": hold.until_ms, "detail": detail, "requester": who, "approvals": approvals})
        status = "lapsed" if detail == "lapsed" else ("expired" if detail == "expired" else "released")
        return HoldDecision(status, hid, hold=hold, events=(ev,), unpublish=hid if was_active else None,
                            requester=hold.requester,
                            reply=self._reply(status, hid, now_ms, hold.requester))

    def expire(self, now_ms: int) -> list[HoldDecision]:
        """Lapse active holds whose ``until`` passed; drop pending ones that waited too long."""
        self._prune(now_ms)
        out = [self._end(h, now_ms, "lapsed") for h, x in sorted(self.active.items()) if now_ms >= x.until_ms]
        ttl = self.policy.pending_ttl_ms
        out += [self._end(h, now_ms, "expired") for h, p in sorted(self._pending.items())
                if p.submitted_ms + ttl <= now_ms or now_ms >= p.hold.until_ms]
        return out

    def pending(self) -> list[str]:
        return sorted(self._pending)

    # -- state ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "active": [h.to_dict() for h in self.active.values()],
                "pending": {hid: {"hold": p.hold.to_dict(), "digest": p.digest, "submitted_ms": p.submitted_ms,
                                  "approvals": dict(p.approvals)} for hid, p in self._pending.items()},
                "releases": {h: dict(v) for h, v in self._releases.items()}, "seen": dict(self._seen)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], registry: Any, policy: Any, operators: Iterable[str],
                  charge: Optional[Any] = None) -> "HoldDesk":
        desk = cls(registry, policy, operators, charge)
        for h in d.get("active", []):
            hold = LegalHold.from_dict(h)
            desk.active[hold.hold_id] = hold
        for hid, p in d.get("pending", {}).items():
            desk._pending[hid] = _PendingHold(LegalHold.from_dict(p["hold"]), str(p["digest"]),
                                              int(p["submitted_ms"]), {s: int(t) for s, t in p["approvals"].items()})
        desk._releases = {h: {s: int(t) for s, t in v.items()} for h, v in d.get("releases", {}).items()}
        desk._seen = {k: int(v) for k, v in d.get("seen", {}).items()}
        return desk


def _clean(ev: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ev.items() if v is not None}
