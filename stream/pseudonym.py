"""Pseudonymisation schemes: keyed hashes for identifiers, and five treatments for addresses.

Identifiers (subscriber ids, session ids) get ``HmacSha256`` pseudonyms (RFC 2104 / RFC 4231).
Addresses get one of:

==============  ===========  ============  ==============================================
scheme          key bytes    invertible    what survives
==============  ===========  ============  ==============================================
``ipcrypt-det`` 16           yes           equality only; output is a 16-byte address
``ipcrypt-pfx`` 32           yes           shared prefixes (native family kept)
``cryptopan``   32           yes           shared prefixes (native family kept)
``truncate``    none         no            the /24 (IPv4) and /48 (IPv6) network, in clear
``drop``        none         no            nothing (``None``)
==============  ===========  ============  ==============================================

``ipcrypt-det`` and ``ipcrypt-pfx`` follow draft-denis-ipcrypt ("Methods for IP Address
Encryption and Obfuscation"): every address is first mapped to 16 bytes (IPv4 as
``::ffff:a.b.c.d``, so an IPv4-mapped IPv6 input *is* an IPv4 input) and a 16-byte result that
is IPv4-mapped is shown as IPv4.  ``cryptopan`` is Xu, Fan, Ammar and Moon's Crypto-PAn (ICNP
2002) with its usual 128-bit IPv6 extension (the one of the Go, C#, Python and Node ports): the
family of the Python object decides the width, so ``::ffff:192.0.2.1`` is a 128-bit input.

Why batching: the prefix-preserving schemes spend one AES block (two for pfx) per
address *bit*; per-bit Python loops run at 3–6k addresses/s.  The blocks of one address are
independent of each other (each depends only on a prefix of the *input*), so ``encrypt_many``
builds every block of a whole batch with C-speed bytes operations (big-integer shifts and
strided slice assignment, no per-bit Python) and runs them through **one** AES-ECB ``update()``
per key; the per-bit output bits are gathered back with strided slices and one ``int(.., 2)``.
Decryption is inherently sequential over bit positions (bit *i* of the plaintext feeds block
*i+1*), so ``decrypt_many`` batches across addresses, one ECB call per bit position.

``ipcrypt-pfx`` results for the leading 24 bits (IPv4) / 64 bits (IPv6) are cached per prefix
(bounded, cleared when full): in operator traffic most addresses come from a few pools, and a
cached prefix saves 48 of the 64 AES blocks of an IPv4 address.

Objects never show their keys: ``repr``/``str`` print ``<redacted>``; key problems raise
``CryptoError`` naming the scheme and the expected length, never the key.  Scheme objects keep a
reusable ECB context and are not thread-safe (one per task/agent).
"""

from __future__ import annotations

import ipaddress
import operator
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _chmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import CryptoError

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

#: key length in bytes of every keyed scheme (HKDF in ``stream.keyring`` derives exactly this).
KEY_BYTES: Dict[str, int] = {
    "ipcrypt-det": 16,
    "ipcrypt-pfx": 32,
    "cryptopan": 32,
    "hmac-sha256": 32,
}
ADDRESS_SCHEMES: Tuple[str, ...] = ("ipcrypt-det", "ipcrypt-pfx", "cryptopan", "truncate", "drop")
INVERTIBLE: Tuple[str, ...] = ("ipcrypt-det", "ipcrypt-pfx", "cryptopan")

_V4 = ipaddress.IPv4Address
_V6 = ipaddress.IPv6Address
_MAPPED = 0xFFFF << 32          # ::ffff:0:0, the IPv4-mapped prefix as an integer
_MAPPED_MASK = ((1 << 96) - 1) << 32
_FULL128 = (1 << 128) - 1

# translate tables used to pull one bit out of every ciphertext byte at C speed
_LOWBIT = bytes(b & 1 for b in range(256))
_TOPBIT = bytes(b >> 7 for b in range(256))
_ASCII01 = bytes(48 + (b & 1) for b in range(256))


def _fast_constructors():
    """Address objects from ints without ``__init__``'s parsing and range checks (the ints come
    from our own arithmetic and are in range), ~2x faster; building output objects is the
    biggest per-address cost of ipcrypt-det.  This relies on ``ipaddress``'s private slots
    (``_ip``, and ``_scope_id`` on IPv6 since Python 3.9), so it is verified against the public
    constructors at import and replaced by them if anything differs."""
    new = object.__new__

    def v4(i: int) -> ipaddress.IPv4Address:
        o = new(_V4)
        o._ip = i
        return o

    def v6(i: int) -> ipaddress.IPv6Address:
        o = new(_V6)
        o._ip = i
        o._scope_id = None
        return o

    try:
        for i in (0, 1, 0xC0000201, 0xFFFFFFFF):
            a, b = v4(i), _V4(i)
            assert a == b and hash(a) == hash(b) and str(a) == str(b) and a.packed == b.packed
        for i in (0, 1, 0x20010DB8 << 96 | 1, (1 << 128) - 1, 0xFFFF << 32 | 0xC0000201):
            a, b = v6(i), _V6(i)
            assert a == b and hash(a) == hash(b) and str(a) == str(b) and a.packed == b.packed
            assert a.ipv4_mapped == b.ipv4_mapped and repr(a) == repr(b)
        return v4, v6
    except Exception:  # pragma: no cover - a future ipaddress changed its internals
        return _V4, _V6


_v4, _v6 = _fast_constructors()
# int(address) through a C-level attribute read when the private slot is what int() returns
_int_of = operator.attrgetter("_ip") if _v4 is not _V4 else int


def _check_key(scheme: str, key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise CryptoError(f"{scheme}: key must be bytes ({KEY_BYTES[scheme]} bytes)")
    key = bytes(key)
    if len(key) != KEY_BYTES[scheme]:
        raise CryptoError(f"{scheme}: key must be {KEY_BYTES[scheme]} bytes "
                          f"({2 * KEY_BYTES[scheme]} hex characters), got {len(key)} bytes")
    return key


def _ecb(key: bytes):
    # ECB is the *building block* here: every input block is distinct by construction (det
    # encrypts one address per block, pfx/cryptopan encrypt prefix-dependent padded blocks).
    return Cipher(algorithms.AES(key), modes.ECB())


class _Redacted:
    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key=<redacted>)"

    def __str__(self) -> str:  # an alias (``__str__ = __repr__``) compiles, then fails when called
        return self.__repr__()

    def __reduce__(self):  # keys must not leak through pickling into a changelog or a log
        raise TypeError(f"{type(self).__name__} objects hold key material and cannot be pickled")


def _split_families(addrs: Sequence[IPAddress]):
    """Indices and integer values of the 32-bit and 128-bit inputs, in input order."""
    kinds = set(map(type, addrs))
    if len(kinds) == 1 and kinds <= {_V4, _V6}:           # the usual single-family batch
        vals = list(map(_int_of, addrs))
        idx = list(range(len(addrs)))
        return (idx, vals, [], []) if _V4 in kinds else ([], [], idx, vals)
    i4: List[int] = []
    v4: List[int] = []
    i6: List[int] = []
    v6: List[int] = []
    for i, a in enumerate(addrs):
        if isinstance(a, _V4):
            i4.append(i)
            v4.append(int(a))
        elif isinstance(a, _V6):
            i6.append(i)
            v6.append(int(a))
        else:
            raise TypeError(f"expected an ipaddress IPv4Address/IPv6Address, got {type(a).__name__}")
    return i4, v4, i6, v6


def _fold_mapped(i4: List[int], v4: List[int], i6: List[int], v6: List[int]):
    """Move IPv4-mapped IPv6 inputs to the IPv4 lists: for ipcrypt the 16-byte form decides
    the family, so ``::ffff:192.0.2.1`` *is* ``192.0.2.1`` (and comes out as IPv4)."""
    if not v6:
        return i4, v4, i6, v6
    keep_i, keep_v = [], []
    for i, v in zip(i6, v6):
        if (v & _MAPPED_MASK) == _MAPPED:
            i4.append(i)
            v4.append(v & 0xFFFFFFFF)
        else:
            keep_i.append(i)
            keep_v.append(v)
    return i4, v4, keep_i, keep_v


def _gather_bits(section_bits: bytes, n: int, nbits: int) -> bytes:
    """``section_bits`` holds one 0/1 byte per (bit position j, address i) at ``j*n + i``;
    return the per-address keystreams, ``nbits / 8`` bytes each (MSB first), concatenated."""
    ks = bytearray(n * nbits)
    for j in range(nbits):
        ks[j::nbits] = section_bits[j * n:(j + 1) * n]
    if not ks:
        return b""
    return int(ks.translate(_ASCII01), 2).to_bytes(n * nbits // 8, "big")


# ---------------------------------------------------------------------------------------------
# HMAC-SHA256 pseudonyms for identifiers
# ---------------------------------------------------------------------------------------------


class HmacSha256(_Redacted):
    """Keyed pseudonyms for identifiers: HMAC-SHA256 (RFC 2104, vectors of RFC 4231).

    One pre-keyed pyca/cryptography ``HMAC`` is ``copy()``-ed per message: keying costs two
    SHA-256 compressions that the copy skips.  Measured here against stdlib ``hmac.digest``
    (~0.4M/s), a pre-keyed stdlib ``hmac`` copy (~0.86M/s) and hand-rolled ipad/opad
    ``hashlib`` copies (~0.86M/s), the pyca copy was fastest (~1.1M msgs/s, 32-byte messages).
    """

    __slots__ = ("_base",)

    def __init__(self, key: bytes, *, min_key_bytes: int = 32) -> None:
        # HMAC takes any key length (RFC 2104); ipanon's own keys are always 32 HKDF bytes, so
        # anything shorter is a wiring mistake.  ``min_key_bytes`` exists for RFC 4231's
        # vectors (4-, 20-, 25- and 131-byte keys) and for continuity with external keys.
        if not isinstance(key, (bytes, bytearray, memoryview)) or len(key) < max(1, min_key_bytes):
            raise CryptoError(f"hmac-sha256: key must be at least {max(1, min_key_bytes)} bytes "
                              f"(ipanon derives {KEY_BYTES['hmac-sha256']})")
        key = bytes(key)
        self._base = _chmac.HMAC(key, hashes.SHA256())

    def digest(self, data: bytes) -> bytes:
        h = self._base.copy()
        h.update(data)
        return h.finalize()

    def digest_many(self, items: Iterable[bytes]) -> List[bytes]:
        copy = self._base.copy
        out: List[bytes] = []
        append = out.append
        for data in items:
            h = copy()
            h.update(data)
            append(h.finalize())
        return out

    def pseudonym(self, text: str, nbytes: int = 16) -> str:
        """Lower-case hex of the first ``nbytes`` of HMAC(key, UTF-8 text) (default 128 bits)."""
        return self.digest(text.encode("utf-8"))[:nbytes].hex()

    def pseudonym_many(self, texts: Iterable[str], nbytes: int = 16) -> List[str]:
        return [d[:nbytes].hex() for d in self.digest_many(t.encode("utf-8") for t in texts)]


# ---------------------------------------------------------------------------------------------
# ipcrypt-det: one AES-128 block per address
# ---------------------------------------------------------------------------------------------


_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"


def _to16(a: IPAddress) -> bytes:
    if isinstance(a, _V4):
        return _MAPPED_PREFIX + a.packed
    if isinstance(a, _V6):
        return a.packed
    raise TypeError(f"expected an ipaddress IPv4Address/IPv6Address, got {type(a).__name__}")


def _from16(b: bytes) -> IPAddress:
    v = int.from_bytes(b, "big")
    if v >> 32 == 0xFFFF:
        return _v4(v & 0xFFFFFFFF)
    return _v6(v)


class IpcryptDet(_Redacted):
    """draft-denis-ipcrypt deterministic mode: ``AES-128(key, ip16)``.

    Equal inputs give equal outputs (joinable within a key epoch), nothing else survives; the
    output is always a 16-byte value and shown as IPv6 (as IPv4 only in the 2^-96 case that it
    happens to be IPv4-mapped, exactly like the draft's ``bytes_to_ip``).
    """

    __slots__ = ("_enc", "_dec")

    def __init__(self, key: bytes) -> None:
        key = _check_key("ipcrypt-det", key)
        c = _ecb(key)
        self._enc = c.encryptor()
        self._dec = c.decryptor()

    def encrypt_many(self, addrs: Sequence[IPAddress]) -> List[IPAddress]:
        ct = self._enc.update(b"".join(map(_to16, addrs)))
        return [_from16(ct[i:i + 16]) for i in range(0, len(ct), 16)]

    def decrypt_many(self, addrs: Sequence[IPAddress]) -> List[IPAddress]:
        pt = self._dec.update(b"".join(map(_to16, addrs)))
        return [_from16(pt[i:i + 16]) for i in range(0, len(pt), 16)]

    def encrypt(self, addr: IPAddress) -> IPAddress:
        return self.encrypt_many([addr])[0]

    def decrypt(self, addr: IPAddress) -> IPAddress:
        return self.decrypt_many([addr])[0]


# ---------------------------------------------------------------------------------------------
# prefix-preserving schemes: shared batching machinery
# ---------------------------------------------------------------------------------------------


#: addresses per internal batch: bigger batches amortise per-call overhead, but the block
#: buffers (n * bits * 16 bytes per key: 256 KiB for 512 IPv4 addresses) should stay in the CPU
#: cache.  Sizes from 256 to 2048 measured within noise of each other (bench_pseudonym).
CHUNK = 512


class _PrefixPreserving(_Redacted):
    __slots__ = ()

    # each scheme defines these three; declared here so the shared methods below type-check
    def _encrypt_chunk(self, values: List[int], nbits: int) -> List[int]:
        raise NotImplementedError

    def encrypt_many(self, addrs: Sequence[IPAddress]) -> List[IPAddress]:
        raise NotImplementedError

    def decrypt_many(self, addrs: Sequence[IPAddress]) -> List[IPAddress]:
        raise NotImplementedError

    def _encrypt_family(self, values: List[int], nbits: int) -> List[int]:
        if len(values) <= CHUNK:
            return self._encrypt_chunk(values, nbits)
        out: List[int] = []
        for k in range(0, len(values), CHUNK):
            out += self._encrypt_chunk(values[k:k + CHUNK], nbits)
        return out

    def encrypt(self, addr: IPAddress) -> IPAddress:
        return self.encrypt_many([addr])[0]

    def decrypt(self, addr: IPAddress) -> IPAddress:
        return self.decrypt_many([addr])[0]


# -- ipcrypt-pfx -------------------------------------------------------------------------------
#
# draft-denis-ipcrypt pfx, for the 16-byte form x of an address and prefix length L running from
# 96 (IPv4) or 0 (IPv6) to 127:
#     padded(L)   = (1 << L) | (x >> (128 - L))          (a 1 marker above the L prefix bits)
#     bit(L)      = lsb(AES(K1, padded(L)) XOR AES(K2, padded(L)))
#     out bit (127-L)  = in bit (127-L) XOR bit(L)
# Writing T = padded(start) || (the family's address bits), padded(start + j) is the 128-bit
# window of T starting at bit j.  With T left-shifted by t = j % 8 bits, that window starts at
# byte j // 8, so eight big-integer shifts of the whole batch give every window as a byte
# slice, and a strided slice assignment copies one window column for all addresses at once.


class IpcryptPfx(_PrefixPreserving):
    """draft-denis-ipcrypt prefix-preserving mode (32-byte key ``K1 || K2``, halves differ).

    Two addresses sharing a k-bit prefix share exactly a k-bit prefix of their outputs; IPv4
    stays IPv4 (dotted), IPv6 stays IPv6.  ``cache_size`` bounds the prefix cache (entries).
    """

    __slots__ = ("_e1", "_e2", "_cache4", "_cache6", "_cache_size")

    def __init__(self, key: bytes, *, cache_size: int = 1 << 16) -> None:
        key = _check_key("ipcrypt-pfx", key)
        if key[:16] == key[16:]:
            raise CryptoError("ipcrypt-pfx: the two 16-byte key halves must differ")
        self._e1 = _ecb(key[:16]).encryptor()
        self._e2 = _ecb(key[16:]).encryptor()
        self._cache4: Dict[int, bytes] = {}
        self._cache6: Dict[int, bytes] = {}
        self._cache_size = cache_size

    # keystream: for each address, the nbits bits bit(start..start+nbits-1), MSB first
    def _keystream(self, values: List[int], nbits: int, skip: int) -> bytes:
        """Keystream bits ``skip..nbits-1`` of every value, ``(nbits - skip) / 8`` bytes per
        value, concatenated.  ``values`` are the family-width integers."""
        n = len(values)
        if n == 0:
            return b""
        top = (1 << 96) | 0xFFFF if nbits == 32 else 1      # padded(start) as a 128-bit integer
        abytes = nbits // 8
        rlen = 16 + abytes
        rec = bytearray(rlen * n)
        topb = top.to_bytes(16, "big")
        joined = b"".join(v.to_bytes(abytes, "big") for v in values)
        for m in range(16):
            rec[m::rlen] = topb[m:m + 1] * n
        for m in range(abytes):
            rec[16 + m::rlen] = joined[m::abytes]
        big = int.from_bytes(rec, "big")
        shifted = [bytes(rec)] + [(big << t).to_bytes(rlen * n, "big") for t in range(1, 8)]
        width = nbits - skip
        sec = 16 * n
        buf = bytearray(sec * width)
        for k in range(width):
            j = skip + k
            q, t = divmod(j, 8)
            src = shifted[t]
            const = (((top << j) | 0) & _FULL128)            # window without address bits
            base = sec * k
            buf[base:base + sec] = const.to_bytes(16, "big") * n
            # only window bytes holding address bits vary: those with 8m + 7 >= 128 - j
            m0 = max(0, -(-(121 - j) // 8))
            for m in range(m0, 16):
                buf[base + m:base + sec:16] = src[q + m::rlen]
        c1 = self._e1.update(buf)[15::16].translate(_LOWBIT)
        c2 = self._e2.update(buf)[15::16].translate(_LOWBIT)
        bits = (int.from_bytes(c1, "big") ^ int.from_bytes(c2, "big")).to_bytes(len(c1), "big")
        return _gather_bits(bits, n, width)

    def _encrypt_chunk(self, values: List[int], nbits: int) -> List[int]:
        if not values:
            return []
        abytes = nbits // 8
        hbytes = 3 if nbits == 32 else 8                     # cached head: /24 or /64
        rest = nbits - 8 * hbytes
        cache = self._cache4 if nbits == 32 else self._cache6
        get = cache.get
        out = [0] * len(values)
        hit_i: List[int] = []
        hit_h: List[bytes] = []
        miss_i: List[int] = []
        for i, v in enumerate(values):
            h = get(v >> rest)
            if h is None:
                miss_i.append(i)
            else:
                hit_i.append(i)
                hit_h.append(h)
        if miss_i:
            ks = self._keystream([values[i] for i in miss_i], nbits, 0)
            if len(cache) + len(miss_i) > self._cache_size:
                cache.clear()
            frm = int.from_bytes
            for k, i in enumerate(miss_i):
                chunk = ks[k * abytes:(k + 1) * abytes]
                v = values[i]
                cache[v >> rest] = chunk[:hbytes]
                out[i] = v ^ frm(chunk, "big")
        if hit_i:
            tb = abytes - hbytes
            tail = self._keystream([values[i] for i in hit_i], nbits, 8 * hbytes)
            frm = int.from_bytes
            for k, (i, h) in enumerate(zip(hit_i, hit_h)):
                out[i] = values[i] ^ frm(h + tail[k * tb:(k + 1) * tb], "big")
        return out

    def encrypt_many(self, addrs: Sequence[IPAddress]) -> List[IPAddress]:
        i4, v4, i6, v6 = _fold_mapped(*_split_families(addrs))
        out: List[Optional[IPAddress]] = [None] * len(addrs)
        for i, v in zip(i4, self._encrypt_family(v4, 32)):
            out[i] = _v4(v)
        for i, v in zip(i6, self._encrypt_family(v6, 128)):
            out[i] = _v6(v)
        return out  # type: ignore[return-value]

    def _decrypt_family(self, values: List[int], nbits: int) -> List[int]:
        n = len(values)
        if n == 0:
            return []
        top = (1 << 96) | 0xFFFF if nbits == 32 else 1
        plain = [0] * n                       # recovered prefix bits so far
        for j in range(nbits):
            blocks = b"".join((((top << j) | p) & _FULL128).to_bytes(16, "big") for p in plain)
            c1 = self._e1.update(blocks)[15::16]
            c2 = self._e2.update(blocks)[15::16]
            shift = nbits - 1 - j
            plain = [(p << 1) | (((v >> shift) ^ a ^ b) & 1)
                     for p, v, a, b in zip(plain, values, c1, c2)]
        return plain

    def decrypt_many(self, addrs: Sequence[IPAddress]) -> List[IPAddress]:
        i4, v4, i6, v6 = _fold_mapped(*_split_families(addrs))
        out: List[Optional[IPAddress]] = [None] * len(addrs)
        for i, v in zip(i4, self._decrypt_family(v4, 32)):
            out[i] = _v4(v)
        for i, v in zip(i6, self._decrypt_family(v6, 128)):
            out[i] = _v6(v)
        return out  # type: ignore[return-value]


# -- Crypto-PAn --------------------------------------------------------------------------------
#
# Xu/Fan/Ammar/Moon: AES key K[0:16], pad = AES(K[0:16], K[16:32]).  For bit j of an n-bit
# address (MSB first): block(j) = first j address bits || pad bits j..127; keystream bit j = the
# most significant bit of AES(block(j)).  Built per bit position for the whole batch: window
# columns left of the boundary byte come from the addresses, the boundary byte is blended
# through a 256-byte translate table, and columns to the right are the pad.


class CryptoPan(_PrefixPreserving):
    """Crypto-PAn (prefix-preserving, 32-byte key), IPv4 and the 128-bit IPv6 extension."""

    __slots__ = ("_enc", "_pad", "_blend")

    def __init__(self, key: bytes) -> None:
        key = _check_key("cryptopan", key)
        self._enc = _ecb(key[:16]).encryptor()
        self._pad = self._enc.update(key[16:])
        # blend[j] maps an address byte to (its top j%8 bits || the pad's remaining bits)
        self._blend: List[Optional[bytes]] = []
        for j in range(128):
            q, t = divmod(j, 8)
            if t == 0:
                self._blend.append(None)
                continue
            hi = (0xFF << (8 - t)) & 0xFF
            p = self._pad[q] & ~hi & 0xFF
            self._blend.append(bytes((b & hi) | p for b in range(256)))

    def _keystream(self, values: List[int], nbits: int) -> bytes:
        n = len(values)
        abytes = nbits // 8
        joined = b"".join(v.to_bytes(abytes, "big") for v in values)
        cols = [joined[m::abytes] for m in range(abytes)]
        sec = 16 * n
        buf = bytearray(self._pad * (n * nbits))
        for j in range(nbits):
            q, t = divmod(j, 8)
            base = sec * j
            for m in range(q):
                buf[base + m:base + sec:16] = cols[m]
            if t:
                buf[base + q:base + sec:16] = cols[q].translate(self._blend[j])
        bits = self._enc.update(buf)[0::16].translate(_TOPBIT)
        return _gather_bits(bits, n, nbits)

    def _encrypt_chunk(self, values: List[int], nbits: int) -> List[int]:
        if not values:
            return []
        ks = self._keystream(values, nbits)
        b = nbits // 8
        frm = int.from_bytes
        return [v ^ frm(ks[k * b:(k + 1) * b], "big") for k, v in enumerate(values)]

    def encrypt_many(self, addrs: Sequence[IPAddress]) -> List[IPAddress]:
        i4, v4, i6, v6 = _split_families(addrs)
        out: List[Optional[IPAddress]] = [None] * len(addrs)
        for i, v in zip(i4, self._encrypt_family(v4, 32)):
            out[i] = _v4(v)
        for i, v in zip(i6, self._encrypt_family(v6, 128)):
            out[i] = _v6(v)
        return out  # type: ignore[return-value]

    def _decrypt_family(self, values: List[int], nbits: int) -> List[int]:
        n = len(values)
        if n == 0:
            return []
        pad = int.from_bytes(self._pad, "big")
        plain = [0] * n
        for j in range(nbits):
            keep = _FULL128 >> j                    # pad bits j..127
            blocks = b"".join(((p << (128 - j)) | (pad & keep)).to_bytes(16, "big") if j else
                              self._pad for p in plain)
            c = self._enc.update(blocks)[0::16]
            shift = nbits - 1 - j
            plain = [(p << 1) | (((v >> shift) & 1) ^ (b >> 7)) for p, v, b in zip(plain, values, c)]
        return plain

    def decrypt_many(self, addrs: Sequence[IPAddress]) -> List[IPAddress]:
        i4, v4, i6, v6 = _split_families(addrs)
        out: List[Optional[IPAddress]] = [None] * len(addrs)
        for i, v in zip(i4, self._decrypt_family(v4, 32)):
            out[i] = _v4(v)
        for i, v in zip(i6, self._decrypt_family(v6, 128)):
            out[i] = _v6(v)
        return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# keyless treatments
# ---------------------------------------------------------------------------------------------


class Truncate:
    """Zero the host bits: keep the /``v4_prefix`` (default 24) or /``v6_prefix`` (default 48).

    Not a pseudonym: the kept network is in clear.  The result is the network address
    (``192.0.2.0``), so it is still an address object and its text never carries a length.
    """

    __slots__ = ("v4_prefix", "v6_prefix", "_m4", "_m6")

    def __init__(self, v4_prefix: int = 24, v6_prefix: int = 48) -> None:
        if not (0 <= v4_prefix <= 32) or not (0 <= v6_prefix <= 128):
            raise CryptoError("truncate: prefix lengths must be 0..32 (IPv4) and 0..128 (IPv6)")
        self.v4_prefix = v4_prefix
        self.v6_prefix = v6_prefix
        self._m4 = (0xFFFFFFFF << (32 - v4_prefix)) & 0xFFFFFFFF
        self._m6 = (_FULL128 << (128 - v6_prefix)) & _FULL128

    def __repr__(self) -> str:
        return f"Truncate(v4_prefix={self.v4_prefix}, v6_prefix={self.v6_prefix})"

    def encrypt(self, addr: IPAddress) -> IPAddress:
        if isinstance(addr, _V4):
            return _v4(int(addr) & self._m4)
        if isinstance(addr, _V6):
            return _v6(int(addr) & self._m6)
        raise TypeError(f"expected an ipaddress IPv4Address/IPv6Address, got {type(addr).__name__}")

    def encrypt_many(self, addrs: Sequence[IPAddress]) -> List[IPAddress]:
        return [self.encrypt(a) for a in addrs]


class Drop:
    """Keep nothing: every address becomes ``None``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Drop()"

    def encrypt(self, addr: IPAddress) -> None:
        return None

    def encrypt_many(self, addrs: Sequence[IPAddress]) -> List[None]:
        return [None] * len(addrs)


AddressScheme = Union[IpcryptDet, IpcryptPfx, CryptoPan, Truncate, Drop]


def make_address_scheme(name: str, key: Optional[bytes] = None, *,
                        v4_prefix: Optional[int] = None, v6_prefix: Optional[int] = None) -> AddressScheme:
    """The address scheme called ``name`` (one of ``ADDRESS_SCHEMES``), keyed with ``key``.

    ``v4_prefix``/``v6_prefix`` only matter for ``truncate`` (``None``: /24 and /48), so
    ``stream.config.AddressScheme``'s fields can be passed through as they are.

    Keyed schemes need exactly ``KEY_BYTES[name]`` bytes; the keyless ones reject a key, so a
    policy that names the wrong scheme fails loudly instead of silently not using its key.
    """
    if name == "ipcrypt-det":
        return IpcryptDet(key)  # type: ignore[arg-type]
    if name == "ipcrypt-pfx":
        return IpcryptPfx(key)  # type: ignore[arg-type]
    if name == "cryptopan":
        return CryptoPan(key)  # type: ignore[arg-type]
    if name in ("truncate", "drop"):
        if key is not None:
            raise CryptoError(f"{name}: this scheme takes no key")
        if name == "drop":
            return Drop()
        return Truncate(24 if v4_prefix is None else v4_prefix, 48 if v6_prefix is None else v6_prefix)
    raise CryptoError(f"unknown address scheme {name!r}; expected one of {', '.join(ADDRESS_SCHEMES)}")
