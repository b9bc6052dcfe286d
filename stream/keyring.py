"""Per-operator key epochs: a forward-only HKDF ratchet, per-scheme keys, sealing, keyed table keys.

Why a ratchet: Kafka keeps deleted data in
old segments, replicas and backups for days, and statistics consumers keep what they read.
Values sealed (and pseudonyms made) under a per-epoch key become unreadable (unlinkable) once
that epoch's key is gone from *everywhere*.  With a hash ratchet only the **oldest live** epoch
key has to be stored: every newer key is derived from it, no older key can be, so destroying an
epoch is "advance the stored key and overwrite the old state", not "find and delete N keys".

Derivations (HKDF-SHA256, RFC 5869, empty salt; ``op``/``purpose``/``scheme`` are UTF-8, ``e``
is the epoch in decimal ASCII)::

    K[0]        = HKDF(seed,  info = "ipanon/v1 root " + op + "/" + purpose, 32)
    K[e+1]      = HKDF(K[e],  info = "ipanon/v1 ratchet", 32)
    scheme key  = HKDF(K[e],  info = "ipanon/v1 scheme " + scheme + " epoch " + e, KEY_BYTES[scheme])
    seal key    = HKDF(K[e],  info = "ipanon/v1 seal epoch " + e, 32)        (AES-256-GCM)
    index key   = HKDF(seed,  info = "ipanon/v1 index " + op + "/" + purpose, 32)   (stable)
    epoch index = HKDF(K[e],  info = "ipanon/v1 index epoch " + e, 32)       (shreddable)

``seed`` is the operator key material (e.g. ``agents.keystore``'s 32-byte key file).  It is used
**once**, by ``Keyring.create``: a seed that survives can recompute every epoch key from 0 on,
and then destroying epochs proves nothing.  After creation, persist ``Keyring.to_bytes()`` and
delete the seed (or keep it offline, under the operator's own escrow policy, knowingly).

Where the state lives (the shell persists it; ``stream`` does no I/O): one file per operator and
purpose, ``<state>/keys/<operator>.<purpose>.ratchet``, mode 0600, written by write-to-temp +
``fsync`` + ``rename`` + ``fsync(dir)``.  Its content (``to_bytes``) holds only the oldest live
epoch key and the stable index key, so after ``destroy_before(e)`` and the rewrite, no byte that
can derive an epoch before ``e`` exists in the file.  Caveats stated plainly: a filesystem may
keep the old blocks until reused (SSD wear levelling, snapshots, backups of the key directory),
so the key directory must be excluded from backups and snapshots; and Python cannot wipe memory,
so a destroyed key may linger in the process heap until reused — the on-disk guarantee is the
one that matters for segments and replicas left behind.

Epochs come from time, never from the clock: ``epoch_of(at_ms, period_ms, origin_ms)``.
Every failure here is the one ``CryptoError``; messages never contain key bytes.
"""

from __future__ import annotations

import os
import struct
from typing import Dict, Optional, Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import CryptoError
from .pseudonym import KEY_BYTES, AddressScheme, HmacSha256, make_address_scheme

#: version byte of ``Keyring.to_bytes`` and of sealed values
STATE_VERSION = 0x01
SEAL_VERSION = 0x01
_SEAL_HEADER = struct.Struct(">BQ")          # version, epoch
_NONCE_BYTES = 12
_TAG_BYTES = 16
#: refuse to ratchet further than this in one call: a typo'd epoch (or a corrupt sealed value's
#: header) would otherwise spin for minutes.  100k epochs = 11 years of hourly epochs; pick
#: ``origin_ms`` near the deployment so epoch numbers stay small.
MAX_RATCHET_STEPS = 100_000


def hkdf_sha256(ikm: bytes, info: bytes, length: int = 32, salt: Optional[bytes] = None) -> bytes:
    """RFC 5869 HKDF with SHA-256 (pyca/cryptography); ``salt=None`` is the RFC's zero salt."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def epoch_of(at_ms: int, period_ms: int, origin_ms: int = 0) -> int:
    """The epoch containing ``at_ms``: epochs are ``[origin + e*period, origin + (e+1)*period)``."""
    if not isinstance(period_ms, int) or period_ms <= 0:
        raise CryptoError("key epoch period must be a positive number of milliseconds")
    if at_ms < origin_ms:
        raise CryptoError("instant lies before the key epoch origin; epochs start at 0")
    return (at_ms - origin_ms) // period_ms


def epoch_bounds(epoch: int, period_ms: int, origin_ms: int = 0) -> Tuple[int, int]:
    """Half-open ``[start_ms, end_ms)`` of ``epoch``."""
    if not isinstance(period_ms, int) or period_ms <= 0:
        raise CryptoError("key epoch period must be a positive number of milliseconds")
    if epoch < 0:
        raise CryptoError("key epochs start at 0")
    start = origin_ms + epoch * period_ms
    return start, start + period_ms


def _label(text: str, what: str) -> bytes:
    if not isinstance(text, str) or not text or any(c in text for c in "/ \0\n"):
        raise CryptoError(f"{what} must be a non-empty name without '/', spaces or control characters")
    return text.encode("utf-8")


class Keyring:
    """One operator's (and purpose's) key epochs from the oldest live one onwards.

    ``Keyring.create(op, seed)`` starts at epoch 0; ``destroy_before(e)`` makes every epoch
    before ``e`` underivable from this object and from its ``to_bytes()``.  Derived scheme
    objects are cached per (scheme, epoch) so an ``ipcrypt-pfx`` prefix cache lives as long as
    its epoch.  Not thread-safe.
    """

    __slots__ = ("operator", "purpose", "_oldest", "_chain", "_index", "_schemes", "_hmacs", "_seals",
                 "_eindex")

    def __init__(self, operator: str, purpose: str, oldest_epoch: int, oldest_key: bytes,
                 index_key: bytes) -> None:
        _label(operator, "operator")
        _label(purpose, "purpose")
        if not isinstance(oldest_epoch, int) or oldest_epoch < 0 or oldest_epoch >= 1 << 64:
            raise CryptoError("key epoch must be an integer 0 <= e < 2**64")
        if len(oldest_key) != 32 or len(index_key) != 32:
            raise CryptoError("keyring state needs 32-byte epoch and index keys")
        self.operator = operator
        self.purpose = purpose
        self._oldest = oldest_epoch
        self._chain: Dict[int, bytes] = {oldest_epoch: bytes(oldest_key)}
        self._index = bytes(index_key)
        self._schemes: Dict[Tuple[str, int], AddressScheme] = {}
        self._hmacs: Dict[int, HmacSha256] = {}
        self._seals: Dict[int, AESGCM] = {}
        self._eindex: Dict[int, HmacSha256] = {}

    # -- construction and persistence -----------------------------------------------------------

    @classmethod
    def create(cls, operator: str, seed: bytes, *, purpose: str = "statistics",
               epoch: int = 0) -> "Keyring":
        """Derive K[0] (and the index key) from ``seed``, then ratchet to ``epoch``.

        Every worker that creates from the same seed agrees on every key, whatever ``epoch``
        it starts at (``epoch`` only saves deriving, and forgets, the earlier ones).
        """
        if not isinstance(seed, (bytes, bytearray)) or len(seed) < 32:
            raise CryptoError("operator key material must be at least 32 bytes")
        op, pu = _label(operator, "operator"), _label(purpose, "purpose")
        root = hkdf_sha256(bytes(seed), b"ipanon/v1 root " + op + b"/" + pu)
        index = hkdf_sha256(bytes(seed), b"ipanon/v1 index " + op + b"/" + pu)
        ring = cls(operator, purpose, 0, root, index)
        if epoch:
            ring.destroy_before(epoch)
        return ring

    def to_bytes(self) -> bytes:
        """The persistent state: only the oldest live epoch key (plus the index key).

        Layout (version 1)::

            offset  size  field
            0       1     version = 0x01
            1       8     oldest live epoch, unsigned big-endian
            9       32    K[oldest]
            41      32    index key
            73      1     n = length of the operator name
            74      n     operator (UTF-8)
            74+n    1     m = length of the purpose
            75+n    m     purpose (UTF-8)
        """
        op, pu = self.operator.encode(), self.purpose.encode()
        if len(op) > 255 or len(pu) > 255:
            raise CryptoError("operator and purpose names must be at most 255 bytes")
        return (struct.pack(">BQ", STATE_VERSION, self._oldest) + self._chain[self._oldest]
                + self._index + bytes([len(op)]) + op + bytes([len(pu)]) + pu)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Keyring":
        try:
            version, oldest = struct.unpack_from(">BQ", data, 0)
            if version != STATE_VERSION:
                raise ValueError
            key, index = data[9:41], data[41:73]
            n = data[73]
            op = bytes(data[74:74 + n]).decode("utf-8")
            m = data[74 + n]
            pu = bytes(data[75 + n:75 + n + m]).decode("utf-8")
            if len(data) != 75 + n + m or len(key) != 32 or len(index) != 32:
                raise ValueError
        except (ValueError, IndexError, struct.error, UnicodeDecodeError):
            raise CryptoError("keyring state is not a version-1 ipanon keyring (truncated or corrupt)") from None
        return cls(op, pu, oldest, key, index)

    def __repr__(self) -> str:
        return (f"Keyring(operator={self.operator!r}, purpose={self.purpose!r}, "
                f"oldest_epoch={self._oldest}, keys=<redacted>)")

    def __str__(self) -> str:  # an alias (``__str__ = __repr__``) compiles, then fails when called
        return self.__repr__()

    def __reduce__(self):
        raise TypeError("Keyring holds key material; persist it with to_bytes(), not pickle")

    # -- the ratchet ---------------------------------------------------------------------------

    @property
    def oldest_epoch(self) -> int:
        return self._oldest

    def _epoch_key(self, epoch: int) -> bytes:
        if not isinstance(epoch, int) or epoch < 0:
            raise CryptoError("key epoch must be a non-negative integer")
        if epoch < self._oldest:
            raise CryptoError(f"key epoch {epoch} was destroyed (oldest live epoch is {self._oldest})")
        k = self._chain.get(epoch)
        if k is not None:
            return k
        have = max(e for e in self._chain if e <= epoch)
        if epoch - have > MAX_RATCHET_STEPS:
            raise CryptoError(f"key epoch {epoch} is more than {MAX_RATCHET_STEPS} epochs ahead of "
                              f"the newest derived one; check the epoch period and origin")
        k = self._chain[have]
        for _ in range(epoch - have):
            k = hkdf_sha256(k, b"ipanon/v1 ratchet")
        self._chain[epoch] = k          # intermediates are not kept: memory stays small
        return k

    def destroy_before(self, epoch: int) -> None:
        """Forget every epoch before ``epoch`` (idempotent; never moves backwards).

        Afterwards this object, and any ``to_bytes()`` taken from now on, can derive ``epoch``
        and later only; cached scheme objects of older epochs are dropped too.
        """
        if not isinstance(epoch, int) or epoch < 0:
            raise CryptoError("key epoch must be a non-negative integer")
        if epoch <= self._oldest:
            return
        self._epoch_key(epoch)
        self._oldest = epoch
        for e in [e for e in self._chain if e < epoch]:
            del self._chain[e]
        for cache in (self._hmacs, self._seals, self._eindex):
            for e in [e for e in cache if 0 <= e < epoch]:     # -1 is the stable index key
                del cache[e]
        for key in [k for k in self._schemes if k[1] < epoch]:
            del self._schemes[key]

    # -- per-scheme keys -----------------------------------------------------------------------

    def scheme_key(self, scheme: str, epoch: int) -> bytes:
        """The ``KEY_BYTES[scheme]``-byte key of ``scheme`` in ``epoch``."""
        if scheme not in KEY_BYTES:
            raise CryptoError(f"no keyed scheme {scheme!r}; expected one of {', '.join(sorted(KEY_BYTES))}")
        k = self._epoch_key(epoch)
        info = b"ipanon/v1 scheme " + scheme.encode() + b" epoch " + str(epoch).encode()
        return hkdf_sha256(k, info, KEY_BYTES[scheme])

    def address_scheme(self, scheme: str, epoch: int, *, v4_prefix: Optional[int] = None,
                       v6_prefix: Optional[int] = None) -> AddressScheme:
        """The (cached) address scheme object for ``epoch``; keyless schemes ignore the epoch.

        ``v4_prefix``/``v6_prefix`` are for ``truncate`` only (``None``: /24 and /48)."""
        cache_key = (f"{scheme}/{v4_prefix}/{v6_prefix}", epoch)
        obj = self._schemes.get(cache_key)
        if obj is None:
            key = self.scheme_key(scheme, epoch) if scheme in KEY_BYTES else None
            obj = make_address_scheme(scheme, key, v4_prefix=v4_prefix, v6_prefix=v6_prefix)
            self._schemes[cache_key] = obj
        return obj

    def hmac(self, epoch: int) -> HmacSha256:
        """The epoch's HMAC-SHA256 pseudonymiser for identifiers (subscriber and session ids)."""
        h = self._hmacs.get(epoch)
        if h is None:
            h = self._hmacs[epoch] = HmacSha256(self.scheme_key("hmac-sha256", epoch))
        return h

    # -- keyed table keys ----------------------------------------------------------------------

    def key_id(self, address_text: str, *, epoch: Optional[int] = None) -> str:
        """A table key for ``address_text`` that is not the address: 32 hex characters of
        HMAC-SHA256(index key, operator NUL address_text).

        ``epoch=None`` uses the stable index key (one key per address for ever: lookups need one
        hash).  With ``epoch=e`` the key comes from K[e] and is shredded with it; a lookup then
        hashes once per live epoch.  The caller canonicalises the text (``model.ip_text``).
        Note: IPv4 has only 2^32 addresses, so anyone holding the index key can invert a key id
        by enumeration; that is why table *values* are sealed under epoch keys.
        """
        return self.key_id_bytes(address_text, epoch=epoch).hex()

    def key_id_bytes(self, address_text: str, *, epoch: Optional[int] = None) -> bytes:
        """``bytes.fromhex(key_id(…))``: the 16 bytes a keyed table key holds, without the hex
        round trip (the mapping stage derives one per binding)."""
        if epoch is None:
            h = self._eindex.get(-1)
            if h is None:
                h = self._eindex[-1] = HmacSha256(self._index)
        else:
            h = self._eindex.get(epoch)
            if h is None:
                info = b"ipanon/v1 index epoch " + str(epoch).encode()
                h = self._eindex[epoch] = HmacSha256(hkdf_sha256(self._epoch_key(epoch), info))
        return h.digest(self.operator.encode() + b"\0" + address_text.encode("utf-8"))[:16]

    # -- sealing values at rest ----------------------------------------------------------------

    def _aead(self, epoch: int) -> AESGCM:
        a = self._seals.get(epoch)
        if a is None:
            k = hkdf_sha256(self._epoch_key(epoch), b"ipanon/v1 seal epoch " + str(epoch).encode())
            a = self._seals[epoch] = AESGCM(k)
        return a

    def seal(self, plaintext: bytes, epoch: int, aad: bytes = b"") -> bytes:
        """Encrypt ``plaintext`` under ``epoch``'s seal key (AES-256-GCM, random 96-bit nonce).

        Layout (version 1)::

            offset  size  field
            0       1     version = 0x01
            1       8     epoch, unsigned big-endian (readable without a key: ``sealed_epoch``)
            9       12    nonce
            21      n+16  AES-256-GCM ciphertext of the n-byte plaintext, tag last

        The authenticated data is bytes 0..8 (version and epoch) followed by ``aad``: pass the
        table key so that a sealed value cannot be replayed under another key.  Random nonces
        are safe far beyond one epoch's volume (NIST SP 800-38D: 2^32 messages per key).
        """
        return self._seal(plaintext, epoch, aad, os.urandom(_NONCE_BYTES))

    def _seal(self, plaintext: bytes, epoch: int, aad: bytes, nonce: bytes) -> bytes:
        header = _SEAL_HEADER.pack(SEAL_VERSION, epoch)
        return header + nonce + self._aead(epoch).encrypt(nonce, bytes(plaintext), header + bytes(aad))

    def open(self, token: bytes, aad: bytes = b"") -> bytes:
        """Decrypt a ``seal`` token.  Destroyed epoch, wrong ``aad``, altered or truncated token,
        unknown version: all raise ``CryptoError``."""
        epoch = sealed_epoch(token)
        if len(token) < _SEAL_HEADER.size + _NONCE_BYTES + _TAG_BYTES:
            raise CryptoError("sealed value is truncated")
        aead = self._aead(epoch)   # raises CryptoError for a destroyed epoch
        header = bytes(token[:_SEAL_HEADER.size])
        nonce = bytes(token[_SEAL_HEADER.size:_SEAL_HEADER.size + _NONCE_BYTES])
        try:
            return aead.decrypt(nonce, bytes(token[_SEAL_HEADER.size + _NONCE_BYTES:]), header + bytes(aad))
        except InvalidTag:
            raise CryptoError("sealed value failed authentication (altered, wrong key or wrong context)") from None


def sealed_epoch(token: bytes) -> int:
    """The epoch a sealed value belongs to, read from its header without any key."""
    if not isinstance(token, (bytes, bytearray, memoryview)) or len(token) < _SEAL_HEADER.size:
        raise CryptoError("sealed value is truncated")
    version, epoch = _SEAL_HEADER.unpack_from(token, 0)
    if version != SEAL_VERSION:
        raise CryptoError("sealed value has an unknown version")
    return epoch
