"""Worker-to-worker lookups on the wire: sealed requests, sealed answers, no replays (pure).

The internal lookup topics (``<prefix>-lookup-requests`` / ``-responses``) carry questions
about addresses and answers naming subscribers between the workers and the query desk.  They
were once plaintext JSON, and anyone who could write the request topic got answers.
Now every record on them is AES-256-GCM sealed under one *lookup key* shared only by the
workers and the desk (``<keys>/lookup.key``, ``agents.keystore.load_lookup_key``):

- a request is sealed (so it is authenticated: a forged or altered one fails the tag) and
  carries inside the seal the time it was made, the partition it was sent to and a fresh
  96-bit nonce; the worker refuses one that is stale, from the future, sent to another
  partition than it names, or already seen (``ReplayGuard``), and answers nothing;
- an answer is sealed too, bound to its request id, so no address or subscriber id is ever
  in plaintext on a topic, and an answer cannot be passed off as another request's.

Two subkeys are derived from the lookup key with HKDF-SHA256 (``info`` = ``ipanon-lookup-v1
request`` / ``answer``), so a request can never be opened as an answer or vice versa.

Byte layout of a sealed record (version 1)::

    offset  size  field
    0       1     version = 0x01
    1       12    nonce (random per record)
    13      n+16  AES-256-GCM ciphertext of the n-byte plaintext, 16-byte tag last

AAD: ``b"ipanon-lookup-v1\\x00request\\x00" + request topic`` for a request (a request made for
one deployment's topic does not open on another's), ``b"ipanon-lookup-v1\\x00answer\\x00" +
request id`` for an answer.  A request's plaintext is canonical JSON ``{"id", "operator", "ip",
"port", "from_ms", "to_ms", "ts_ms", "partition"[, "proto"]}`` (``proto`` only when the lookup
names a protocol) padded with spaces to a multiple of
``PAD`` bytes (an IPv4 and an IPv6 question look the same size); an answer's is the answer's JSON
padded with spaces to the next power of two of at least ``ANSWER_PAD`` bytes (past
``ANSWER_PAD_STEP``, to a multiple of it), so its length on the topic does not say whether the
address was held (no-data, one holder, end-unknown, refused all look alike; only answers with
many holders grow, in doublings, then in 64 KiB steps).

Every failure to open raises ``Rejected`` with one of the ``REFUSALS`` reasons; the detail
never includes any of the record's content.
"""

from __future__ import annotations

import json
import secrets
from typing import Optional

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import CryptoError, Rejected

VERSION = 0x01
NONCE_LEN = 12
TAG_LEN = 16
KEY_LEN = 32
PAD = 256
#: the smallest sealed answer (plaintext bytes); larger ones are padded to a power of two
ANSWER_PAD = 1024
#: ... up to this size; beyond it, to a multiple of it
ANSWER_PAD_STEP = 65536
#: the largest sealed request opened (a real one is 1-2 PAD blocks; ids are short)
MAX_REQUEST = 1 + NONCE_LEN + 32 * PAD + TAG_LEN
#: a request older than this is refused (stale): the askers give up well before (30-60 s)
MAX_AGE_MS = 300_000
#: a request dated further ahead than this is refused (clock skew between hosts is allowed for)
MAX_AHEAD_MS = 60_000
#: the reasons a request is refused without an answer (metric labels; stable)
REFUSALS = ("unauthenticated", "malformed", "stale", "future", "replayed", "wrong-partition")

_LABEL = b"ipanon-lookup-v1\x00"
_FIELDS = ("id", "operator", "ip", "port", "from_ms", "to_ms", "ts_ms", "partition")
#: ... and, only when the lookup names one, "proto" (IANA protocol number): a request without it
#: is sealed exactly as before, so a worker of the release before answers it
_FIELDS_PROTO = frozenset(_FIELDS) | {"proto"}


def _subkey(key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None,
                info=b"ipanon-lookup-v1 " + purpose).derive(key)


def _seal(aead: AESGCM, plaintext: bytes, aad: bytes, nonce: Optional[bytes]) -> bytes:
    nonce = secrets.token_bytes(NONCE_LEN) if nonce is None else nonce
    if len(nonce) != NONCE_LEN:
        raise ValueError("nonce must be 12 bytes")
    return bytes([VERSION]) + nonce + aead.encrypt(nonce, plaintext, aad)


def _open(aead: AESGCM, blob: object, aad: bytes) -> bytes:
    if not isinstance(blob, (bytes, bytearray)) or len(blob) < 1 + NONCE_LEN + TAG_LEN or blob[0] != VERSION:
        raise CryptoError("not a sealed lookup record")
    try:
        return aead.decrypt(bytes(blob[1:1 + NONCE_LEN]), bytes(blob[1 + NONCE_LEN:]), aad)
    except Exception:  # InvalidTag: forged, altered, wrong key or wrong context — one answer
        raise CryptoError("sealed lookup record does not open with this key and context") from None


def nonce_of(blob: bytes) -> bytes:
    """The record's nonce (what ``ReplayGuard`` remembers); only meaningful once it opened."""
    return bytes(blob[1:1 + NONCE_LEN])


class LookupSeal:
    """Seals and opens lookup requests and answers for one deployment's request topic."""

    def __init__(self, key: bytes, request_topic: str) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
            raise ValueError("the lookup key must be 32 bytes")
        self._req = AESGCM(_subkey(bytes(key), b"request"))
        self._ans = AESGCM(_subkey(bytes(key), b"answer"))
        self._req_aad = _LABEL + b"request\x00" + request_topic.encode()

    def __repr__(self) -> str:  # never the key
        return "LookupSeal(…)"

    # -- requests ---------------------------------------------------------------------------

    def seal_request(self, query: dict, *, request_id: str, partition: int, now_ms: int,
                     nonce: Optional[bytes] = None) -> bytes:
        """``query`` (``operator``, ``ip``, ``port``, ``from_ms``, ``to_ms``, optional ``proto``)
        sealed for the worker owning ``partition``, dated ``now_ms``."""
        body = {"id": request_id, "operator": query["operator"], "ip": query["ip"], "port": query.get("port"),
                "from_ms": query["from_ms"], "to_ms": query["to_ms"], "ts_ms": int(now_ms), "partition": int(partition)}
        if query.get("proto") is not None:
            body["proto"] = query["proto"]
        text = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        text += b" " * (-len(text) % PAD)
        return _seal(self._req, text, self._req_aad, nonce)

    def open_request(self, blob: object, *, partition: int, now_ms: int) -> dict:
        """The request inside ``blob`` as received on ``partition`` at ``now_ms``; ``Rejected``
        (``unauthenticated``, ``malformed``, ``stale``, ``future``, ``wrong-partition``) if it
        must not be answered.  Replays are ``ReplayGuard``'s business (it needs memory)."""
        if isinstance(blob, (bytes, bytearray)) and len(blob) > MAX_REQUEST:
            # no request is this large (a few PAD blocks): refused before spending AES-GCM on it
            raise Rejected("malformed", f"a lookup request is at most {MAX_REQUEST} bytes")
        try:
            text = _open(self._req, blob, self._req_aad)
        except CryptoError:
            raise Rejected("unauthenticated", "the request is not sealed under the lookup key") from None
        try:
            req = json.loads(text)
            if not isinstance(req, dict) or (set(req) != set(_FIELDS) and set(req) != _FIELDS_PROTO):
                raise ValueError
            p = req.get("proto")
            if p is not None and (type(p) is not int or not 0 <= p <= 255):
                raise ValueError
            ts, part = req["ts_ms"], req["partition"]
            if not isinstance(ts, int) or not isinstance(part, int) or not isinstance(req["id"], str):
                raise ValueError
            req["id"].encode()  # a lone surrogate (JSON "\\ud800") cannot be the answer's key
        except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: not a request either
            raise Rejected("malformed", "a sealed request that is not a lookup request") from None
        if part != partition:
            raise Rejected("wrong-partition", "the request names another partition than it arrived on")
        if now_ms - ts > MAX_AGE_MS:
            raise Rejected("stale", f"the request is older than {MAX_AGE_MS} ms")
        if ts - now_ms > MAX_AHEAD_MS:
            raise Rejected("future", f"the request is dated more than {MAX_AHEAD_MS} ms ahead")
        return req

    # -- answers ----------------------------------------------------------------------------

    def seal_answer(self, answer: dict, *, request_id: str) -> bytes:
        text = json.dumps(answer, separators=(",", ":")).encode()
        size = ANSWER_PAD
        while size < len(text) and size < ANSWER_PAD_STEP:
            size *= 2
        if size < len(text):  # past 64 KiB in steps: doubling could push a large answer past
            size = -(-len(text) // ANSWER_PAD_STEP) * ANSWER_PAD_STEP  # the producer's 1 MB limit
        text += b" " * (size - len(text))
        return _seal(self._ans, text, _LABEL + b"answer\x00" + request_id.encode(), None)

    def open_answer(self, blob: object, *, request_id: str) -> dict:
        """``CryptoError`` unless ``blob`` is an answer sealed under this key for ``request_id``."""
        text = _open(self._ans, blob, _LABEL + b"answer\x00" + request_id.encode())
        try:
            ans = json.loads(text)
        except (ValueError, RecursionError):
            raise CryptoError("sealed lookup answer is not JSON") from None
        if not isinstance(ans, dict):
            raise CryptoError("sealed lookup answer is not an object")
        return ans


class ReplayGuard:
    """Nonces of the requests accepted within the freshness window: a second request with the
    same nonce is ``replayed``.  Entries older than the window are dropped (a request that old
    is refused as stale anyway), so the memory is bounded by the authentic request rate."""

    def __init__(self, window_ms: int = MAX_AGE_MS + MAX_AHEAD_MS) -> None:
        self.window_ms = window_ms
        self._seen: dict[bytes, int] = {}
        self._pruned_ms = 0

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, nonce: bytes, ts_ms: int, now_ms: int) -> None:
        """Remember ``nonce`` (its request dated ``ts_ms``); ``Rejected("replayed")`` if seen."""
        if now_ms - self._pruned_ms >= 1000:
            cutoff = now_ms - self.window_ms
            self._seen = {n: t for n, t in self._seen.items() if t >= cutoff}
            self._pruned_ms = now_ms
        if nonce in self._seen:
            raise Rejected("replayed", "this request was already answered")
        self._seen[nonce] = ts_ms
