"""Answers sealed to one authority: HPKE (RFC 9180) base mode, with a version byte.

A lawful answer names a subscriber, so it must never sit in plaintext on a Kafka topic (reply
topics included: Faust keeps them for ``reply_expires``).  The query agent therefore seals each
answer to the requesting authority's X25519 public key, and only the holder of the matching
private key (``ipanon query fetch``) can read it.  The operator itself keeps no key that opens
an answer; its audit trail records only the SHA-256 of the sealed blob (``digest``).

Construction: pyca/cryptography 50 ships HPKE, so we use it rather than hand-assembling
ephemeral X25519 + HKDF + AES-GCM: suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
AES-128-GCM, base mode, single shot (RFC 9180 §6.1), i.e. the suite of RFC 9180 Appendix A.1,
whose published vector ``tests/unit/test_seal.py`` checks.  ``info`` binds the blob to its
context (the request id), so an answer cannot be replayed as the answer to another request:
``info = b"ipanon-seal-v1\\x00" + context``.

Byte layout of a sealed blob (version 1)::

    offset  size  field
    0       1     version = 0x01
    1       32    enc: the sender's ephemeral X25519 public key (RFC 9180 §4.1 encapsulation)
    33      n+16  AES-128-GCM ciphertext of the n-byte plaintext, 16-byte tag last

Every failure to open (wrong key, wrong context, truncated or altered blob, unknown version)
raises the one ``CryptoError``, whose message says nothing about which step failed
(Fernet's ``InvalidToken`` habit).
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519

from .errors import CryptoError

VERSION = 0x01
ENC_LEN = 32
TAG_LEN = 16
_INFO_PREFIX = b"ipanon-seal-v1\x00"
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


def _info(context: bytes) -> bytes:
    if not isinstance(context, (bytes, bytearray)):
        raise TypeError("context must be bytes")
    return _INFO_PREFIX + bytes(context)


def seal(public_key: x25519.X25519PublicKey, plaintext: bytes, *, context: bytes = b"") -> bytes:
    """Seal ``plaintext`` so that only the holder of ``public_key``'s private half opens it.

    A fresh ephemeral key is drawn on every call, so sealing the same answer twice gives two
    unrelated blobs (the audit digest identifies one disclosure, not one content).
    """
    if not isinstance(public_key, x25519.X25519PublicKey):
        raise TypeError("public_key must be an X25519PublicKey")
    return bytes([VERSION]) + _SUITE.encrypt(bytes(plaintext), public_key, info=_info(context))


def open_sealed(private_key: x25519.X25519PrivateKey, blob: bytes, *, context: bytes = b"") -> bytes:
    """Open a blob made by ``seal`` with the same ``context``; ``CryptoError`` on any failure."""
    info = _info(context)
    try:
        blob = bytes(blob)
        if len(blob) < 1 + ENC_LEN + TAG_LEN or blob[0] != VERSION:
            raise ValueError
        return _SUITE.decrypt(blob[1:], private_key, info=info)
    except Exception:  # InvalidTag, ValueError, TypeError: all one answer
        raise CryptoError("sealed answer cannot be opened with this key and context") from None


def digest(blob: bytes) -> str:
    """Hex SHA-256 of a sealed blob: what the audit trail records instead of the answer."""
    return hashlib.sha256(blob).hexdigest()
