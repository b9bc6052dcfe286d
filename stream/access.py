"""Lawful access: signed requests, the checks they must pass, four-eyes approval, sealed answers.

An authority (police under LEK, a rights holder holding an IPRED court order) asks "who had
address A (port P) during [from_ms, to_ms)?".  This module decides, as a pure state machine,
whether and when that question may be answered; it never looks anything up itself.  The query
agent feeds it messages and the current time and acts on its ``Decision``s:

    desk = QueryDesk(registry, policy)            # state: QueryDesk.from_dict(saved, registry, policy)
    d = desk.submit(request_bytes, now_ms)        # refused | pending | ready
    d = desk.approve(approval_bytes, now_ms)      # pending | ready | approval-rejected | refused
    ds = desk.expire(now_ms)                      # expired pending requests; prunes nonces
    a = desk.answer(ready_decision, resolve, now_ms)   # calls resolve(), seals to the authority

Every ``Decision`` carries the audit events to append (``stream.audit``) and the status reply
to send to the requester (plain JSON without identity); an ``Answer`` carries the sealed reply.

Request (after ETSI TS 102 657's RetainedDataHeader: requestID = authorisedOrganisationID +
requestNumber; the country code lives in the authority registration).  Wire form, one JSON
object per Kafka message::

    {"type": "request", "v": 1, "body": {...}, "sig": "<hex Ed25519 signature>"}
    body = {"authority", "request_number", "basis", "case_ref", "address", "port" (int|null),
            "from_ms", "to_ms", "issued_ms", "nonce"[, "proto" (int 0..255)]}

``proto`` (optional, absent = any protocol): the transport protocol of the flow as an IANA
number (6 TCP, 17 UDP).  A CGN allocates port blocks per protocol, so without it a public
port held by different subscribers for TCP and UDP is answered ``ambiguous``, never one of them
(``stream.mapping.resolve``).  A body without the key is signed exactly as before.
    signed bytes = b"ipanon-request-v1\\x00" + canonical(body)     (stream.audit.canonical)
    request_id = authority + "/" + request_number;  request_digest = SHA-256(signed bytes) hex

Approval (one per staff member, over the digest, so a staff member approves exactly the request
they saw and nothing substituted later)::

    {"type": "approval", "v": 1, "body": {"request_id", "request_digest", "staff", "issued_ms"},
     "sig": hex}        signed bytes = b"ipanon-approval-v1\\x00" + canonical(body)

Checks, in this order (the first failure is the refusal reason; ``REASONS`` lists them):
malformed-request, unknown-authority, bad-signature (nothing below runs for unauthenticated
input, so forgeries cannot drain an authority's rate budget or poison its nonces),
basis-not-allowed, stale-request / future-request (freshness against ``max_age_ms`` and the
clock-skew bound), replayed-nonce, duplicate-request-id, bad-scope / scope-too-wide,
bad-interval / interval-too-long, rate-limited.  Nonces and request ids are remembered only as
long as a request carrying them could still be fresh (``issued_ms + max_age_ms``): after that
the freshness check refuses a replay on its own, so the memory is bounded by the number of
authentic requests per freshness window.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from . import seal as _seal
from .audit import canonical
from .errors import ConfigError, CryptoError, IpanonError, Rejected
from .model import IPNetwork, ip_text, parse_network

BASES = ("ipred-court-order", "lek-law-enforcement", "emergency")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

REQUEST_DOMAIN = b"ipanon-request-v1\x00"
APPROVAL_DOMAIN = b"ipanon-approval-v1\x00"
WIRE_VERSION = 1

#: Every reason code the desk can give, with what it means (docs/lawful-access.md mirrors this).
REASONS = {
    "malformed-request": "not a well-formed signed request message",
    "unknown-authority": "the authority is not in the registry",
    "bad-signature": "the signature does not verify with the registered key",
    "basis-not-allowed": "the legal basis is unknown or not allowed for this authority",
    "stale-request": "issued longer ago than the freshness window",
    "future-request": "issued further in the future than the clock-skew bound",
    "replayed-nonce": "this authority already used this nonce",
    "duplicate-request-id": "this request id is already in use",
    "bad-scope": "a port was given with a prefix, or the port is out of range, or a protocol "
                 "without a port or out of 0..255",
    "scope-too-wide": "the prefix covers more addresses than the policy allows",
    "bad-interval": "from_ms is not before to_ms",
    "interval-too-long": "the interval is longer than the basis allows",
    "rate-limited": "the authority's request budget is used up",
    "expired": "not enough approvals before the pending request expired",
    # approvals (the request itself stays as it was)
    "malformed-approval": "not a well-formed signed approval message",
    "unknown-staff": "the approver is not in the staff registry",
    "staff-not-allowed": "the approver may not approve this legal basis",
    "unknown-request": "no pending request has this id",
    "digest-mismatch": "the approval is for a different version of the request",
    "stale-approval": "approval issued outside the freshness window",
    "duplicate-approval": "this staff member already approved; counted once",
}

#: Authority and staff ids: lower-case letters, digits and "-" (safe in file names and TOML).
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ID_RE = ID_RE
_NUMBER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NONCE_RE = re.compile(r"^[0-9a-f]{32,128}$")
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_REQUEST_FIELDS = frozenset({"authority", "request_number", "basis", "case_ref", "address", "port",
                             "from_ms", "to_ms", "issued_ms", "nonce"})
_REQUEST_FIELDS_PROTO = _REQUEST_FIELDS | {"proto"}
_APPROVAL_FIELDS = frozenset({"request_id", "request_digest", "staff", "issued_ms"})


# --------------------------------------------------------------------------------------------
# policy and registry


@dataclass(frozen=True, slots=True)
class Policy:
    """What the operator allows.  Defaults are this project's choice, not law: tune per operator.

    ``approvals_required``: distinct staff approvals per basis (ITS rapport 27: the operator's
    staff approve each disclosure; IPRED therefore needs at least one, default two = four eyes).
    ``max_interval_ms``: longest ``[from, to)`` per basis (an IPRED order names a short
    interval, NJA 2012 s. 975: two hours and seventeen minutes).
    """

    max_age_ms: int = 15 * 60_000          # a request is fresh for 15 min after issued_ms
    clock_skew_ms: int = 2 * 60_000        # and may be issued up to 2 min "in the future"
    pending_ttl_ms: int = 3 * DAY_MS       # a request waits at most this long for approvals
    approval_ttl_ms: int = DAY_MS          # an approval counts for this long after issued_ms
    min_prefixlen_v4: int = 24             # widest IPv4 prefix one request may cover (/24)
    min_prefixlen_v6: int = 56             # widest IPv6 prefix (/56: one typical end-user site)
    approvals_required: Mapping[str, int] = field(default_factory=lambda: {
        "ipred-court-order": 2, "lek-law-enforcement": 0, "emergency": 0})
    max_interval_ms: Mapping[str, int] = field(default_factory=lambda: {
        "ipred-court-order": 7 * DAY_MS, "lek-law-enforcement": 31 * DAY_MS, "emergency": DAY_MS})
    # Legal holds (stream.hold.HoldDesk): a preservation order is a criminal-procedure measure
    # (RB 27:16), so by default only a LEK authority (or operator staff) may ask for one.
    hold_bases: tuple[str, ...] = ("lek-law-enforcement",)
    hold_approvals: int = 2                # distinct staff approvals before a hold takes effect
    hold_max_ms: int = 30 * DAY_MS         # longest a hold may last; renewed by a new order
    hold_max_interval_ms: int = 31 * DAY_MS  # longest usage interval one hold may name
    hold_min_prefixlen_v4: int = 32        # one IPv4 address
    hold_min_prefixlen_v6: int = 64        # one IPv6 /64

    def __post_init__(self) -> None:
        for name in ("max_age_ms", "clock_skew_ms", "pending_ttl_ms", "approval_ttl_ms"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"policy: {name} must be a positive integer (ms)")
        if not 0 <= self.min_prefixlen_v4 <= 32 or not 0 <= self.min_prefixlen_v6 <= 128:
            raise ConfigError("policy: min_prefixlen_v4 must be 0..32 and min_prefixlen_v6 0..128")
        for basis in BASES:
            n = self.approvals_required.get(basis)
            if not isinstance(n, int) or n < 0:
                raise ConfigError(f"policy: approvals_required.{basis} must be an integer >= 0")
            m = self.max_interval_ms.get(basis)
            if not isinstance(m, int) or m <= 0:
                raise ConfigError(f"policy: max_interval_ms.{basis} must be a positive integer")
        if not isinstance(self.hold_bases, tuple) or any(b not in BASES for b in self.hold_bases):
            raise ConfigError(f"policy: hold_bases must be a list of {list(BASES)}")
        if not isinstance(self.hold_approvals, int) or self.hold_approvals < 2:
            raise ConfigError("policy: hold_approvals must be an integer >= 2 (two staff approve a hold)")
        for name in ("hold_max_ms", "hold_max_interval_ms"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"policy: {name} must be a positive integer (ms)")
        if self.hold_max_ms > 90 * DAY_MS:
            raise ConfigError("policy: hold_max_ms may be at most 90 days (a preservation order's limit)")
        if not 0 <= self.hold_min_prefixlen_v4 <= 32 or not 0 <= self.hold_min_prefixlen_v6 <= 128:
            raise ConfigError("policy: hold_min_prefixlen_v4 must be 0..32 and hold_min_prefixlen_v6 0..128")
        if self.approvals_required["ipred-court-order"] < 1:
            raise ConfigError("policy: approvals_required.ipred-court-order must be >= 1 "
                              "(staff approve each IPRED disclosure, ITS rapport 27)")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], *, source: str = "policy") -> "Policy":
        known = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {sorted(unknown)}")
        base = cls()
        kw: dict[str, Any] = dict(d)
        for m in ("approvals_required", "max_interval_ms"):
            if m in kw:
                kw[m] = {**getattr(base, m), **kw[m]}
        if isinstance(kw.get("hold_bases"), list):
            kw["hold_bases"] = tuple(kw["hold_bases"])
        return replace(base, **kw)


def _parse_key(text: Any, kind: str, where: str):
    prefix = f"{kind}:"
    if not isinstance(text, str) or not text.startswith(prefix):
        raise ConfigError(f"{where}: must be \"{prefix}<64 hex digits>\"")
    try:
        raw = bytes.fromhex(text[len(prefix):])
        if len(raw) != 32:
            raise ValueError
        cls = ed25519.Ed25519PublicKey if kind == "ed25519" else x25519.X25519PublicKey
        return cls.from_public_bytes(raw)
    except ValueError:
        raise ConfigError(f"{where}: not a 32-byte {kind} public key in hex") from None


def public_key_text(key: ed25519.Ed25519PublicKey | x25519.X25519PublicKey) -> str:
    """The registry spelling of a public key (``ed25519:<hex>`` / ``x25519:<hex>``)."""
    kind = "ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "x25519"
    return f"{kind}:{key.public_bytes_raw().hex()}"


@dataclass(frozen=True, slots=True)
class Authority:
    """A registered requester.  ``per_hour``/``burst``: its token bucket."""

    id: str
    name: str
    country: str
    signing_key: ed25519.Ed25519PublicKey = field(repr=False)
    encryption_key: x25519.X25519PublicKey = field(repr=False)
    bases: frozenset[str]
    per_hour: int
    burst: int


@dataclass(frozen=True, slots=True)
class Staff:
    """An operator employee who may approve disclosures (for ``bases``)."""

    id: str
    name: str
    signing_key: ed25519.Ed25519PublicKey = field(repr=False)
    bases: frozenset[str]


def _need(d: Mapping[str, Any], key: str, typ: type, where: str):
    if key not in d:
        raise ConfigError(f"{where}: missing field {key!r}")
    v = d[key]
    if not isinstance(v, typ) or isinstance(v, bool):
        raise ConfigError(f"{where}: field {key!r} must be a {typ.__name__}")
    return v


def _bases(d: Mapping[str, Any], where: str, default: Optional[list] = None) -> frozenset[str]:
    raw = d.get("bases", default)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: field 'bases' must be a non-empty list of {list(BASES)}")
    bad = [b for b in raw if b not in BASES]
    if bad:
        raise ConfigError(f"{where}: field 'bases' has unknown basis {bad[0]!r} (known: {list(BASES)})")
    return frozenset(raw)


def authority_from_mapping(d: Mapping[str, Any], *, source: str) -> Authority:
    ident = _need(d, "id", str, source)
    if not _ID_RE.match(ident):
        raise ConfigError(f"{source}: field 'id' must be lower-case letters, digits and '-' (max 63)")
    rl = d.get("rate_limit", {"per_hour": 60, "burst": 10})
    if not isinstance(rl, dict):
        raise ConfigError(f"{source}: [rate_limit] must be a table with per_hour and burst")
    per_hour = _need(rl, "per_hour", int, f"{source} [rate_limit]")
    burst = _need(rl, "burst", int, f"{source} [rate_limit]")
    if per_hour <= 0 or burst <= 0:
        raise ConfigError(f"{source}: [rate_limit] per_hour and burst must be positive")
    return Authority(
        id=ident, name=str(d.get("name", ident)), country=str(d.get("country", "SE")),
        signing_key=_parse_key(_need(d, "signing_key", str, source), "ed25519", f"{source}: field 'signing_key'"),
        encryption_key=_parse_key(_need(d, "encryption_key", str, source), "x25519",
                                  f"{source}: field 'encryption_key'"),
        bases=_bases(d, source), per_hour=per_hour, burst=burst)


def staff_from_mapping(d: Mapping[str, Any], *, source: str) -> Staff:
    ident = _need(d, "id", str, source)
    if not _ID_RE.match(ident):
        raise ConfigError(f"{source}: field 'id' must be lower-case letters, digits and '-' (max 63)")
    return Staff(id=ident, name=str(d.get("name", ident)),
                 signing_key=_parse_key(_need(d, "signing_key", str, source), "ed25519",
                                        f"{source}: field 'signing_key'"),
                 bases=_bases(d, source, default=list(BASES)))


@dataclass(frozen=True, slots=True)
class Registry:
    """Who may ask (authorities) and who may approve (staff), loaded once at the edge."""

    authorities: Mapping[str, Authority]
    staff: Mapping[str, Staff]

    @classmethod
    def build(cls, authorities: list[Authority], staff: list[Staff]) -> "Registry":
        return cls({a.id: a for a in authorities}, {s.id: s for s in staff})

    @classmethod
    def load(cls, authorities_dir: Path, staff_dir: Optional[Path] = None) -> "Registry":
        """Load ``authorities_dir/*.toml`` and ``staff_dir/*.toml`` (default: the sibling
        ``staff`` directory).  Errors name the file and the field."""
        authorities_dir = Path(authorities_dir)
        staff_dir = Path(staff_dir) if staff_dir is not None else authorities_dir.parent / "staff"
        auths = [authority_from_mapping(d, source=str(p)) for p, d in _toml_files(authorities_dir)]
        staff = [staff_from_mapping(d, source=str(p)) for p, d in _toml_files(staff_dir)] if staff_dir.is_dir() else []
        for kind, items in (("authority", auths), ("staff", staff)):
            ids = [x.id for x in items]
            dup = {i for i in ids if ids.count(i) > 1}
            if dup:
                raise ConfigError(f"{kind} id {sorted(dup)[0]!r} is registered twice")
        if not auths:
            raise ConfigError(f"{authorities_dir}: no authority registrations (*.toml)")
        return cls.build(auths, staff)


def _toml_files(d: Path):
    if not d.is_dir():
        raise ConfigError(f"{d}: registry directory does not exist")
    for p in sorted(d.glob("*.toml")):
        try:
            with p.open("rb") as f:
                yield p, tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML ({e})") from None


# --------------------------------------------------------------------------------------------
# messages


@dataclass(frozen=True, slots=True)
class Request:
    """A verified lookup request.  ``address`` is a network (a /32 or /128 for one address)."""

    authority: str
    request_number: str
    basis: str
    case_ref: str
    address: IPNetwork
    port: Optional[int]
    from_ms: int
    to_ms: int
    issued_ms: int
    nonce: str
    digest: str  # SHA-256 of the signed bytes, hex
    proto: Optional[int] = None  # the flow's IANA protocol number; None: any (the body has no "proto")

    @property
    def request_id(self) -> str:
        return f"{self.authority}/{self.request_number}"

    def body(self) -> dict[str, Any]:
        return request_body(authority=self.authority, request_number=self.request_number,
                            basis=self.basis, case_ref=self.case_ref, address=ip_text(self.address),
                            port=self.port, from_ms=self.from_ms, to_ms=self.to_ms,
                            issued_ms=self.issued_ms, nonce=self.nonce, proto=self.proto)


def request_body(*, authority: str, request_number: str, basis: str, case_ref: str, address: str,
                 port: Optional[int], from_ms: int, to_ms: int, issued_ms: int, nonce: str,
                 proto: Optional[int] = None) -> dict[str, Any]:
    body = {"authority": authority, "request_number": request_number, "basis": basis,
            "case_ref": case_ref, "address": address, "port": port, "from_ms": from_ms,
            "to_ms": to_ms, "issued_ms": issued_ms, "nonce": nonce}
    if proto is not None:  # only when given: a body without it signs as before
        body["proto"] = proto
    return body


def _signed(domain: bytes, body: Mapping[str, Any]) -> bytes:
    return domain + canonical(body)


def sign_request(private_key: ed25519.Ed25519PrivateKey, body: Mapping[str, Any]) -> bytes:
    """The wire message for ``body`` signed by the authority (used by ``ipanon query submit``)."""
    sig = private_key.sign(_signed(REQUEST_DOMAIN, body))
    return canonical({"type": "request", "v": WIRE_VERSION, "body": dict(body), "sig": sig.hex()})


def sign_approval(private_key: ed25519.Ed25519PrivateKey, *, request_id: str, request_digest: str,
                  staff: str, issued_ms: int) -> bytes:
    """The wire message of one staff approval (used by ``ipanon query approve``)."""
    body = {"request_id": request_id, "request_digest": request_digest, "staff": staff,
            "issued_ms": issued_ms}
    sig = private_key.sign(_signed(APPROVAL_DOMAIN, body))
    return canonical({"type": "approval", "v": WIRE_VERSION, "body": body, "sig": sig.hex()})


def _envelope(raw: bytes, kind: str, reason: str) -> tuple[dict[str, Any], bytes]:
    try:
        msg = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, TypeError, RecursionError):
        raise Rejected(reason, "not JSON") from None
    if not isinstance(msg, dict) or msg.get("type") != kind or msg.get("v") != WIRE_VERSION:
        raise Rejected(reason, f"not a v{WIRE_VERSION} {kind} message")
    body, sig = msg.get("body"), msg.get("sig")
    if not isinstance(body, dict) or not isinstance(sig, str):
        raise Rejected(reason, "body or sig missing")
    try:
        sig_bytes = bytes.fromhex(sig)
    except ValueError:
        raise Rejected(reason, "sig is not hex") from None
    if len(sig_bytes) != 64:
        raise Rejected(reason, "sig is not 64 bytes")
    return body, sig_bytes


def _int(body: Mapping[str, Any], key: str, reason: str) -> int:
    v = body.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise Rejected(reason, f"{key} must be a non-negative integer")
    return v


def _str(body: Mapping[str, Any], key: str, reason: str, pattern: Optional[re.Pattern] = None,
         max_len: int = 200) -> str:
    v = body.get(key)
    if not isinstance(v, str) or not v or len(v) > max_len or (pattern and not pattern.match(v)):
        raise Rejected(reason, f"{key} is missing or malformed")
    return v


def parse_request(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """Split and shape-check a request message; return ``(body, signature)``.  Raises
    ``Rejected('malformed-request')``.  No signature check here (the key depends on the body)."""
    r = "malformed-request"
    body, sig = _envelope(raw, "request", r)
    if set(body) != _REQUEST_FIELDS and set(body) != _REQUEST_FIELDS_PROTO:
        raise Rejected(r, "body fields differ from the v1 request fields")
    _str(body, "authority", r, _ID_RE)
    _str(body, "request_number", r, _NUMBER_RE)
    _str(body, "basis", r, max_len=64)
    _str(body, "case_ref", r)
    _str(body, "address", r, max_len=64)
    _str(body, "nonce", r, _NONCE_RE, max_len=128)
    for k in ("from_ms", "to_ms", "issued_ms"):
        _int(body, k, r)
    if body["port"] is not None:
        _int(body, "port", r)
    if "proto" in body:
        _int(body, "proto", r)
    return body, sig


def request_digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(_signed(REQUEST_DOMAIN, body)).hexdigest()


# --------------------------------------------------------------------------------------------
# decisions


@dataclass(frozen=True, slots=True)
class Decision:
    """What the desk decided about one message.

    ``status``: ``refused`` (terminal, ``reason`` set), ``pending`` (waiting for approvals),
    ``ready`` (hand ``request`` to ``QueryDesk.answer``), ``expired`` (terminal), or
    ``approval-rejected`` (an approval that did not count; the request is unchanged).
    ``events``: audit events to append, in order.  ``reply``: status message for the requester
    (LOOKUP_RESPONSES, key ``request_id``) or None.  ``request_id`` may be None when the message
    was too malformed to name one.
    """

    status: str
    request_id: Optional[str]
    reason: Optional[str] = None
    request: Optional[Request] = None
    approvals: tuple[str, ...] = ()
    needed: int = 0
    events: tuple[dict[str, Any], ...] = ()
    reply: Optional[dict[str, Any]] = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A sealed answer: ``reply`` goes to LOOKUP_RESPONSES (key ``request_id``), ``events`` to
    the audit trail.  ``sealed`` is the blob inside ``reply`` (``digest`` = its SHA-256)."""

    request_id: str
    reply: dict[str, Any]
    sealed: bytes = field(repr=False)
    digest: str
    events: tuple[dict[str, Any], ...]


Resolver = Callable[[str, Optional[int], int, int], dict]


def _status_reply(status: str, request_id: Optional[str], now_ms: int, **extra: Any) -> dict[str, Any]:
    return {"type": "status", "v": WIRE_VERSION, "request_id": request_id, "status": status,
            "ts_ms": now_ms, **{k: v for k, v in extra.items() if v is not None}}


def _ev(kind: str, req: Optional[Request] = None, **fields: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": kind}
    if req is not None:
        ev.update(request_id=req.request_id, authority=req.authority, basis=req.basis,
                  case_ref=req.case_ref, request_digest=req.digest)
    ev.update({k: v for k, v in fields.items() if v is not None})
    return ev


# --------------------------------------------------------------------------------------------
# the desk


@dataclass(slots=True)
class _Pending:
    request: Request
    submitted_ms: int
    needed: int
    approvals: dict[str, int]  # staff id -> approval issued_ms


class QueryDesk:
    """The pure state machine behind the query agent.  Not thread-safe; one desk per partition
    of the request topic (messages are keyed by authority id, so one desk sees all of one
    authority's requests and approvals, in order).  ``to_dict``/``from_dict`` round-trip the
    whole state as JSON-able data for a Faust table."""

    def __init__(self, registry: Registry, policy: Optional[Policy] = None) -> None:
        self.registry = registry
        self.policy = policy or Policy()
        self._pending: dict[str, _Pending] = {}
        self._seen: dict[str, int] = {}        # "n:<authority>:<nonce>" / "i:<request id>" -> forget at ms
        self._forget: list[tuple[int, str]] = []  # min-heap over _seen: pruning costs O(log n) per entry
        self._buckets: dict[str, tuple[int, int]] = {}  # authority -> (units, last_ms)

    # -- requests -----------------------------------------------------------------------------

    def submit(self, raw: bytes, now_ms: int) -> Decision:
        """Check one request message; refuse it, park it for approvals, or declare it ready."""
        self._prune(now_ms)
        try:
            body, sig = parse_request(raw)
        except Rejected as e:
            return self._refuse(e.reason, None, None, now_ms, authenticated=False)
        rid = f"{body['authority']}/{body['request_number']}"
        auth = self.registry.authorities.get(body["authority"])
        if auth is None:
            return self._refuse("unknown-authority", rid, None, now_ms, authenticated=False)
        try:
            auth.signing_key.verify(sig, _signed(REQUEST_DOMAIN, body))
        except InvalidSignature:
            return self._refuse("bad-signature", rid, None, now_ms, authenticated=False)
        try:
            address = parse_network(body["address"])
            if ip_text(address) != body["address"]:
                # one spelling per address, so body() re-encodes to the signed bytes exactly
                raise Rejected("malformed-request", "address is not in canonical text form")
        except Rejected:
            return self._refuse("malformed-request", rid, None, now_ms)
        req = Request(authority=auth.id, request_number=body["request_number"], basis=body["basis"],
                      case_ref=body["case_ref"], address=address, port=body["port"],
                      from_ms=body["from_ms"], to_ms=body["to_ms"], issued_ms=body["issued_ms"],
                      nonce=body["nonce"], digest=request_digest(body), proto=body.get("proto"))
        received = (_ev("request-received", req),)
        try:
            self._check(req, auth, now_ms)
        except Rejected as e:
            return self._refuse(e.reason, rid, req, now_ms, received)
        needed = self.policy.approvals_required[req.basis]
        if needed == 0:
            return Decision("ready", rid, request=req, events=received + (_ev("ready", req, needed=0),))
        self._pending[rid] = _Pending(req, now_ms, needed, {})
        return Decision("pending", rid, request=req, needed=needed,
                        events=received + (_ev("pending", req, approvals=[], needed=needed),),
                        reply=_status_reply("pending", rid, now_ms, approvals=0, needed=needed,
                                            request_digest=req.digest))

    def _check(self, req: Request, auth: Authority, now_ms: int) -> None:
        p = self.policy
        if req.basis not in BASES or req.basis not in auth.bases:
            raise Rejected("basis-not-allowed")
        if req.issued_ms + p.max_age_ms <= now_ms:
            raise Rejected("stale-request")
        if req.issued_ms > now_ms + p.clock_skew_ms:
            raise Rejected("future-request")
        forget_ms = req.issued_ms + p.max_age_ms
        nkey, ikey = f"n:{auth.id}:{req.nonce}", f"i:{req.request_id}"
        if nkey in self._seen:
            raise Rejected("replayed-nonce")
        self._remember(nkey, forget_ms)  # remembered even if a later check refuses: no second try
        if ikey in self._seen or req.request_id in self._pending:
            raise Rejected("duplicate-request-id")
        self._remember(ikey, forget_ms)
        net = req.address
        if req.port is not None and (net.prefixlen != net.max_prefixlen or not 0 <= req.port <= 65535):
            raise Rejected("bad-scope")
        if req.proto is not None and (req.port is None or not 0 <= req.proto <= 255):
            raise Rejected("bad-scope")  # a protocol narrows a port lookup, nothing else
        widest = p.min_prefixlen_v4 if net.version == 4 else p.min_prefixlen_v6
        if net.prefixlen < widest:
            raise Rejected("scope-too-wide")
        if req.from_ms >= req.to_ms:
            raise Rejected("bad-interval")
        if req.to_ms - req.from_ms > p.max_interval_ms[req.basis]:
            raise Rejected("interval-too-long")
        self._take_token(auth, now_ms)

    def charge(self, authority_id: str, now_ms: int) -> None:
        """Take one token from a registered authority's budget (legal holds share it with
        requests); raises ``Rejected('rate-limited')``."""
        self._take_token(self.registry.authorities[authority_id], now_ms)

    def _take_token(self, auth: Authority, now_ms: int) -> None:
        """Token bucket in integer units: one token = HOUR_MS units, refilled at ``per_hour``
        units per ms, so the arithmetic is exact (no float drift across restarts)."""
        cap = auth.burst * HOUR_MS
        units, last = self._buckets.get(auth.id, (cap, now_ms))
        units = min(cap, units + max(0, now_ms - last) * auth.per_hour)
        if units < HOUR_MS:
            self._buckets[auth.id] = (units, max(last, now_ms))
            raise Rejected("rate-limited")
        self._buckets[auth.id] = (units - HOUR_MS, max(last, now_ms))

    def _refuse(self, reason: str, rid: Optional[str], req: Optional[Request], now_ms: int,
                before: tuple = (), *, authenticated: bool = True) -> Decision:
        """A refusal.  Before the signature is verified the request id is only *claimed*: the
        event and the reply say ``unauthenticated`` so nobody can make a forged refusal pass
        for the fate of a real request."""
        ev = _ev("refused", req, reason=reason)
        if req is None and rid is not None:
            ev["request_id"] = rid
        extra = {}
        if not authenticated:
            ev["detail"] = "unauthenticated"
            extra["authenticated"] = False
        return Decision("refused", rid, reason=reason, request=req, events=before + (ev,),
                        reply=_status_reply("refused", rid, now_ms, reason=reason, **extra))

    # -- approvals ----------------------------------------------------------------------------

    def approve(self, raw: bytes, now_ms: int) -> Decision:
        """Count one staff approval.  A bad approval never changes the request's state."""
        self._prune(now_ms)
        r = "malformed-approval"
        try:
            body, sig = _envelope(raw, "approval", r)
            if set(body) != _APPROVAL_FIELDS:
                raise Rejected(r, "body fields differ from the v1 approval fields")
            rid = _str(body, "request_id", r, max_len=130)
            _str(body, "staff", r, _ID_RE)
            _str(body, "request_digest", r, _DIGEST_RE)
            _int(body, "issued_ms", r)
        except Rejected as e:
            return self._reject_approval(e.reason, None, None, now_ms)
        staff = self.registry.staff.get(body["staff"])
        if staff is None:
            return self._reject_approval("unknown-staff", rid, None, now_ms)
        try:
            staff.signing_key.verify(sig, _signed(APPROVAL_DOMAIN, body))
        except InvalidSignature:
            return self._reject_approval("bad-signature", rid, staff.id, now_ms)
        pend = self._pending.get(rid)
        if pend is None:
            return self._reject_approval("unknown-request", rid, staff.id, now_ms)
        req = pend.request
        if body["request_digest"] != req.digest:
            return self._reject_approval("digest-mismatch", rid, staff.id, now_ms, pend)
        if req.basis not in staff.bases:
            return self._reject_approval("staff-not-allowed", rid, staff.id, now_ms, pend)
        issued = body["issued_ms"]
        if issued + self.policy.approval_ttl_ms <= now_ms or issued > now_ms + self.policy.clock_skew_ms:
            return self._reject_approval("stale-approval", rid, staff.id, now_ms, pend)
        if staff.id in pend.approvals:
            return self._reject_approval("duplicate-approval", rid, staff.id, now_ms, pend)
        pend.approvals[staff.id] = issued
        valid = self._valid_approvals(pend, now_ms)
        events = [_ev("approval", req, staff=staff.id, approvals=valid, needed=pend.needed)]
        if len(valid) >= pend.needed:
            del self._pending[rid]
            events.append(_ev("ready", req, approvals=valid, needed=pend.needed))
            return Decision("ready", rid, request=req, approvals=tuple(valid), needed=pend.needed,
                            events=tuple(events))
        return Decision("pending", rid, request=req, approvals=tuple(valid), needed=pend.needed,
                        events=tuple(events),
                        reply=_status_reply("pending", rid, now_ms, approvals=len(valid), needed=pend.needed,
                                            request_digest=req.digest))

    def _valid_approvals(self, pend: _Pending, now_ms: int) -> list[str]:
        ttl = self.policy.approval_ttl_ms
        return sorted(s for s, t in pend.approvals.items() if t + ttl > now_ms)

    def _reject_approval(self, reason: str, rid: Optional[str], staff: Optional[str], now_ms: int,
                         pend: Optional[_Pending] = None) -> Decision:
        req = pend.request if pend else None
        ev = _ev("approval-rejected", req, reason=reason, staff=staff)
        if req is None and rid is not None:
            ev["request_id"] = rid
        return Decision("approval-rejected", rid, reason=reason, request=req,
                        approvals=tuple(self._valid_approvals(pend, now_ms)) if pend else (),
                        needed=pend.needed if pend else 0, events=(ev,))

    # -- time ---------------------------------------------------------------------------------

    def expire(self, now_ms: int) -> list[Decision]:
        """Drop pending requests older than ``pending_ttl_ms`` (each becomes an ``expired``
        decision with a reply and an audit event) and forget nonces past their window."""
        self._prune(now_ms)
        out = []
        for rid in sorted(self._pending):
            pend = self._pending[rid]
            if pend.submitted_ms + self.policy.pending_ttl_ms <= now_ms:
                del self._pending[rid]
                valid = self._valid_approvals(pend, now_ms)
                out.append(Decision("expired", rid, reason="expired", request=pend.request,
                                    approvals=tuple(valid), needed=pend.needed,
                                    events=(_ev("expired", pend.request, reason="expired",
                                                approvals=valid, needed=pend.needed),),
                                    reply=_status_reply("expired", rid, now_ms, reason="expired")))
        return out

    def _remember(self, key: str, forget_ms: int) -> None:
        self._seen[key] = forget_ms
        heapq.heappush(self._forget, (forget_ms, key))

    def _prune(self, now_ms: int) -> None:
        while self._forget and self._forget[0][0] <= now_ms:
            t, k = heapq.heappop(self._forget)
            if self._seen.get(k) == t:
                del self._seen[k]

    def pending(self) -> list[str]:
        return sorted(self._pending)

    # -- answers ------------------------------------------------------------------------------

    def answer(self, decision: Decision, resolve: Resolver, now_ms: int) -> Answer:
        """Resolve a ``ready`` decision and seal the result to the requesting authority."""
        if decision.status != "ready" or decision.request is None:
            raise IpanonError("only a ready decision can be answered")
        req = decision.request
        args = (ip_text(req.address), req.port, req.from_ms, req.to_ms)
        # the protocol only when the request names one: resolvers written before it take four
        result = resolve(*args) if req.proto is None else resolve(*args, proto=req.proto)
        return seal_answer(self.registry, req, result, now_ms)

    # -- state --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": 1,
            "pending": {rid: {"body": p.request.body(), "submitted_ms": p.submitted_ms, "needed": p.needed,
                              "approvals": dict(p.approvals)} for rid, p in self._pending.items()},
            "seen": dict(self._seen),
            "buckets": {a: list(b) for a, b in self._buckets.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], registry: Registry, policy: Optional[Policy] = None) -> "QueryDesk":
        if d.get("v") != 1:
            raise IpanonError("unknown QueryDesk state version")
        desk = cls(registry, policy)
        for rid, p in d["pending"].items():
            req = request_from_body(p["body"])
            desk._pending[rid] = _Pending(req, int(p["submitted_ms"]), int(p["needed"]),
                                          {s: int(t) for s, t in p["approvals"].items()})
        for k, v in d["seen"].items():
            desk._remember(k, int(v))
        desk._buckets = {a: (int(b[0]), int(b[1])) for a, b in d["buckets"].items()}
        return desk


def answer_plaintext(req: Request, result: Mapping[str, Any], now_ms: int) -> bytes:
    """The JSON sealed inside an answer (what ``ipanon query fetch`` prints)."""
    return canonical({"request_id": req.request_id, "request_digest": req.digest, "case_ref": req.case_ref,
                      "answered_ms": now_ms, "result": dict(result)})


def _answer_kind(result: Mapping[str, Any]) -> str:
    if result.get("no_data"):
        return "no-data"
    if "ambiguous" in result:
        return "ambiguous"
    if "end_unknown" in result and not result.get("matches"):
        return "end-unknown"  # a last holder whose session went silent: neither a match nor no data
    return "match"


def seal_answer(registry: Registry, req: Request, result: Mapping[str, Any], now_ms: int) -> Answer:
    """Seal a resolver result to ``req``'s authority; usable on another partition than the
    desk (the resolving agent only needs the registry and the ready ``Request``)."""
    auth = registry.authorities.get(req.authority)
    if auth is None:
        raise IpanonError("authority of a ready request is no longer registered")
    if not isinstance(result, Mapping):
        raise IpanonError("resolver must return a JSON object")
    blob = _seal.seal(auth.encryption_key, answer_plaintext(req, result, now_ms),
                      context=req.request_id.encode("utf-8"))
    dig = _seal.digest(blob)
    reply = {"type": "answer", "v": WIRE_VERSION, "request_id": req.request_id, "ts_ms": now_ms,
             "sealed": base64.b64encode(blob).decode("ascii")}
    ev = _ev("answered", req, answer_digest=dig, answer_kind=_answer_kind(result))
    return Answer(req.request_id, reply, blob, dig, (ev,))


def open_answer(private_key: x25519.X25519PrivateKey, reply: Mapping[str, Any]) -> dict[str, Any]:
    """Open an ``answer`` reply with the authority's X25519 private key (``ipanon query fetch``)."""
    try:
        blob = base64.b64decode(reply["sealed"], validate=True)
        rid = str(reply["request_id"])
    except (KeyError, ValueError, TypeError):
        raise CryptoError("sealed answer cannot be opened with this key and context") from None
    return json.loads(_seal.open_sealed(private_key, blob, context=rid.encode("utf-8")))


def request_from_body(body: Mapping[str, Any]) -> Request:
    """A Request from a body (e.g. the ``request`` of a ready decision passed through a topic);
    no signature check: only for bodies that already passed the desk."""
    return Request(authority=body["authority"], request_number=body["request_number"], basis=body["basis"],
                   case_ref=body["case_ref"], address=parse_network(body["address"]), port=body["port"],
                   from_ms=body["from_ms"], to_ms=body["to_ms"], issued_ms=body["issued_ms"],
                   nonce=body["nonce"], digest=request_digest(body), proto=body.get("proto"))


# --------------------------------------------------------------------------------------------
# junk: unauthenticated input


#: Refusal reasons given before any signature verified: the sender is unknown.
JUNK_REASONS = frozenset({"malformed-request", "unknown-authority", "bad-signature", "malformed-approval",
                          "unknown-staff", "malformed-hold", "unknown-requester"})


def is_junk(status: str, reason: Optional[str], authenticated: bool = True) -> bool:
    """True for a refusal of unauthenticated input (a request, approval or hold message whose
    signature never verified)."""
    return status in ("refused", "approval-rejected") and (not authenticated or reason in JUNK_REASONS)


class JunkLedger:
    """Counts unauthenticated messages per claimed identity and reason, and summarises them as
    one audit event per (identity, reason) per interval, so that a flood costs the infinite
    audit trail a bounded number of records.  The identity is the message key only when it
    names a registered authority or staff member (else ``unknown``; ``hold`` for the hold key):
    nothing an attacker invents reaches the trail or a metric label."""

    def __init__(self, known_ids: Any) -> None:
        self.known = frozenset(known_ids)
        self.counts: dict[str, int] = {}   # "<identity>|<reason>" -> n
        self.since_ms: Optional[int] = None

    def identity(self, key: Optional[bytes]) -> str:
        if key == b"hold":
            return "hold"
        try:
            k = bytes(key).decode("ascii") if key is not None else ""
        except (UnicodeDecodeError, TypeError):
            return "unknown"
        return k if k in self.known else "unknown"

    def add(self, identity: str, reason: str, now_ms: int) -> None:
        if self.since_ms is None:
            self.since_ms = now_ms
        k = f"{identity}|{reason}"
        self.counts[k] = self.counts.get(k, 0) + 1

    def flush(self, now_ms: int, interval_ms: int) -> list[dict[str, Any]]:
        """The summary events once ``interval_ms`` has passed since the first uncounted message."""
        if self.since_ms is None or now_ms - self.since_ms < interval_ms:
            return []
        out = []
        for k in sorted(self.counts):
            ident, reason = k.split("|", 1)
            out.append({"type": "junk-summary", "identity": ident, "reason": reason, "count": self.counts[k],
                        "from_ms": self.since_ms, "detail": "unauthenticated"})
        self.counts, self.since_ms = {}, None
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "since_ms": self.since_ms}

    def load(self, d: Mapping[str, Any]) -> "JunkLedger":
        self.counts = {str(k): int(v) for k, v in d.get("counts", {}).items()}
        self.since_ms = d.get("since_ms")
        return self
