"""Consent flags for statistics: records, keys and the in-memory view.

Where an operator's policy says ``consent_required = true`` (Junet, Hektor, op003: traffic data
for statistics only with consent), a subscriber's per-record statistics are emitted only while
that subscriber's latest consent state is ``granted``.

The consent topic is **compacted**: one live record per key, the latest write wins.  Its key is
never the subscriber id but a keyed hash of it, so the topic holds no raw identity::

    key   = "<operator>:" + Keyring.key_id("consent/statistics/" + subscriber)   (32 hex chars)
    value = {"v": 1, "operator": ..., "purpose": "statistics", "state": "granted"|"withdrawn",
             "at_ms": <when the subscriber gave or withdrew it>}
    value = null (a tombstone) — the flag is forgotten, which means "no consent"

``key_id`` uses the keyring's *stable* index key (``stream.keyring``), not an epoch key:
consent outlives key epochs, and both the CLI (from the operator key file) and the worker (from
its persisted statistics ratchet) derive the same index key.  Note the hash is a pseudonym,
not anonymity: whoever holds the operator's index key can test a guessed subscriber id.

Semantics (see docs/statistics.md): the view applies records in topic order (what compaction
keeps is exactly the last write per key), ``at_ms`` is informational.  The worker brings its
view up to the consent topic's end offsets before each batch of bindings, so a consent change
acknowledged by Kafka before a batch starts applies to that batch and to every later one.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Optional

from .errors import Rejected
from .keyring import Keyring

CONSENT_SCHEMA_VERSION = 1
PURPOSES = ("statistics",)
STATES = ("granted", "withdrawn")
_KEY = re.compile(r"^([a-z0-9][a-z0-9_-]{0,62}):([0-9a-f]{32})$")


def consent_key(ring: Keyring, subscriber: str, purpose: str = "statistics") -> str:
    """The consent-topic key of ``subscriber`` for ``ring``'s operator (no raw identity)."""
    if purpose not in PURPOSES:
        raise Rejected("bad-purpose", f"purpose must be one of {', '.join(PURPOSES)}")
    if not isinstance(subscriber, str) or not subscriber.strip():
        raise Rejected("bad-subscriber", "subscriber id must be a non-empty string")
    return f"{ring.operator}:{ring.key_id(f'consent/{purpose}/' + normalise_subscriber(subscriber))}"


_HEXGROUPS = re.compile(r"[0-9a-f]{1,2}(?::[0-9a-f]{1,2})+|[0-9a-f]{2}(?:-[0-9a-f]{2})+|[0-9a-f]{4}(?:\.[0-9a-f]{4})+")
_HEXRUN = re.compile(r"(?:[0-9a-f]{2}){6,}")
_HEXCHARS = re.compile(r"[0-9a-f:.\-]+")  # everything either form can match is made of these


def normalise_subscriber(subscriber: str) -> str:
    """The identity a consent flag is about (withdrawing ``kund-77@…`` left
    ``Kund-77@…`` flowing).  Applied alike to the id an operator types and to the id a binding
    carries: surrounding space removed (as the RADIUS parser does), Unicode NFKC, case folded
    (RADIUS user names and realms are matched case-insensitively by the AAA systems the seed
    operators run), and hex identifiers (MAC, client id, DUID: ``02-00-5E-…``,
    ``0200.5e10.0001``, ``02005e100001``) in the DHCP parsers' lower-case colon form.  Ids that
    differ only in these ways are one subscriber for consent: a withdrawal stops them all."""
    s = unicodedata.normalize("NFKC", subscriber.strip()).casefold()
    if not _HEXCHARS.fullmatch(s):  # fails at the first other character: the common case, fast
        return s
    if _HEXGROUPS.fullmatch(s):
        if ":" in s:
            return ":".join(p.rjust(2, "0") for p in s.split(":"))
        s = s.replace("-", "").replace(".", "")
    if _HEXRUN.fullmatch(s):
        return ":".join(s[i:i + 2] for i in range(0, len(s), 2))
    return s


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    key: str
    operator: str
    state: Optional[str]            # None = tombstone (forgotten = no consent)
    purpose: str = "statistics"
    at_ms: Optional[int] = None

    def __post_init__(self) -> None:
        m = _KEY.match(self.key)
        if not m or m.group(1) != self.operator:
            raise Rejected("bad-consent-key", "consent key must be '<operator>:<32 hex>' of the record's operator")
        if self.state is not None and self.state not in STATES:
            raise Rejected("bad-consent-state", f"state must be one of {', '.join(STATES)}")
        if self.purpose not in PURPOSES:
            raise Rejected("bad-purpose", f"purpose must be one of {', '.join(PURPOSES)}")

    @property
    def granted(self) -> bool:
        return self.state == "granted"

    def encode(self) -> tuple[bytes, Optional[bytes]]:
        if self.state is None:
            return self.key.encode(), None
        return self.key.encode(), json.dumps(
            {"v": CONSENT_SCHEMA_VERSION, "operator": self.operator, "purpose": self.purpose,
             "state": self.state, "at_ms": self.at_ms}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, key: Optional[bytes], value: Optional[bytes]) -> "ConsentRecord":
        if not key:
            raise Rejected("bad-consent-key", "consent record without a key")
        try:
            k = key.decode("ascii")
        except UnicodeDecodeError:
            raise Rejected("bad-consent-key", "consent key is not ASCII") from None
        op = k.split(":", 1)[0]
        if value is None:
            return cls(k, op, None)
        try:
            d = json.loads(value)
            if not isinstance(d, dict) or d.get("v") != CONSENT_SCHEMA_VERSION:
                raise ValueError
            at = d.get("at_ms")
            if at is not None and (not isinstance(at, int) or isinstance(at, bool)):
                raise ValueError
            op, state, purpose = d["operator"], d["state"], d.get("purpose", "statistics")
            # the types here, not in the constructor: compiled, it raises TypeError on them
            # before ``__post_init__`` could name the field
            if type(op) is not str or type(purpose) is not str or not (state is None or type(state) is str):
                raise ValueError
            return cls(k, op, state, purpose, at)
        except (ValueError, KeyError, TypeError, RecursionError):
            raise Rejected("bad-consent-record", "consent value is not a version-1 consent record") from None


def grant(ring: Keyring, subscriber: str, at_ms: int) -> ConsentRecord:
    return ConsentRecord(consent_key(ring, subscriber), ring.operator, "granted", "statistics", at_ms)


def withdraw(ring: Keyring, subscriber: str, at_ms: int) -> ConsentRecord:
    return ConsentRecord(consent_key(ring, subscriber), ring.operator, "withdrawn", "statistics", at_ms)


class ConsentView:
    """The latest consent state per key, fed in topic order (last write wins)."""

    __slots__ = ("_granted", "applied")

    def __init__(self) -> None:
        self._granted: set[str] = set()
        self.applied = 0

    def apply(self, rec: ConsentRecord) -> None:
        if rec.granted:
            self._granted.add(rec.key)
        else:
            self._granted.discard(rec.key)
        self.applied += 1

    def allows(self, key: str) -> bool:
        return key in self._granted

    def __len__(self) -> int:
        return len(self._granted)

    def __repr__(self) -> str:
        return f"ConsentView(granted={len(self._granted)})"


# -- erasure notices ----------------------------------------------------------------------------

ERASURE_SCHEMA_VERSION = 1


def erasure_epochs(ring: Keyring, key_epoch_ms: int, promise_ms: int, now_ms: int) -> range:
    """The epochs whose records a withdrawal must name: every epoch the ring can still derive
    (older ones are destroyed: nobody can name their pseudonyms any more) that a record still
    within the statistics promise can have, up to the current one."""
    from .keyring import epoch_of

    first = max(ring.oldest_epoch, epoch_of(max(0, now_ms - promise_ms), key_epoch_ms))
    return range(first, epoch_of(now_ms, key_epoch_ms) + 1)


def erasure_notices(ring: Keyring, subscriber: str, *, key_epoch_ms: int, promise_ms: int,
                    bucket_ms: int, now_ms: int) -> list[tuple[bytes, bytes]]:
    """The ``<prefix>-erasures`` records for ``subscriber`` withdrawing consent at ``now_ms``:
    one per live epoch, ``key = "<operator>:<epoch>:<pseudonym>"``, value::

        {"v": 1, "operator", "epoch", "subscriber": <the pseudonym stats records carry>,
         "reason": "consent-withdrawn", "until_bucket_ms": <start of the withdrawal's bucket>}

    A consumer deletes every stats record with the same operator, epoch and subscriber whose
    ``bucket_ms <= until_bucket_ms`` (a later bucket can only hold records emitted after a new
    grant).  The notice names pseudonyms, never the subscriber id."""
    from .stats import SUBSCRIBER_DOMAIN, bucket_of

    if not isinstance(subscriber, str) or not subscriber:
        raise Rejected("bad-subscriber", "subscriber id must be a non-empty string")
    until = bucket_of(now_ms, bucket_ms)
    out = []
    for e in erasure_epochs(ring, key_epoch_ms, promise_ms, now_ms):
        p = ring.hmac(e).pseudonym(SUBSCRIBER_DOMAIN + normalise_subscriber(subscriber))  # as stream.stats does
        value = {"v": ERASURE_SCHEMA_VERSION, "operator": ring.operator, "epoch": e, "subscriber": p,
                 "reason": "consent-withdrawn", "until_bucket_ms": until}
        out.append((f"{ring.operator}:{e}:{p}".encode(), json.dumps(value, separators=(",", ":")).encode()))
    return out


def honour_erasures(records: list[dict], notices: list[dict]) -> list[dict]:
    """What a downstream consumer keeps of ``records`` (stats records, decoded) after
    ``notices`` (decoded erasure values): the reference model of docs/statistics.md."""
    erase: dict[tuple[str, int, str], int] = {}
    for n in notices:
        k = (n["operator"], n["epoch"], n["subscriber"])
        erase[k] = max(erase.get(k, n["until_bucket_ms"]), n["until_bucket_ms"])
    return [r for r in records
            if r.get("subscriber") is None
            or r["bucket_ms"] > erase.get((r["operator"], r["epoch"], r["subscriber"]), -1)]
