"""Pseudonymisation schemes against their published vectors (both directions), against a
straightforward per-bit reference of the drafts' pseudocode, and for their properties."""

from __future__ import annotations

import ipaddress
import json
import pickle
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.errors import CryptoError
from stream.pseudonym import (ADDRESS_SCHEMES, KEY_BYTES, CryptoPan, Drop, HmacSha256, IpcryptDet,
                              IpcryptPfx, Truncate, make_address_scheme)

VECTORS = Path(__file__).parent / "vectors"
IPC = json.loads((VECTORS / "ipcrypt.json").read_text())
CPAN = json.loads((VECTORS / "cryptopan.json").read_text())
RFC4231 = json.loads((VECTORS / "rfc4231.json").read_text())
A = ipaddress.ip_address

CPAN_CASES = [(s["key"], a, b) for s in CPAN["sets"] for a, b in s["pairs"]]


# -- published vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize("key,plain,cipher", IPC["det"])
def test_ipcrypt_det_vectors_both_directions(key, plain, cipher):
    s = IpcryptDet(bytes.fromhex(key))
    assert str(s.encrypt(A(plain))) == cipher
    assert str(s.decrypt(A(cipher))) == plain


@pytest.mark.parametrize("key,plain,cipher", IPC["pfx"])
def test_ipcrypt_pfx_vectors_both_directions(key, plain, cipher):
    s = IpcryptPfx(bytes.fromhex(key))
    out = s.encrypt(A(plain))
    assert str(out) == cipher
    assert out.version == A(plain).version          # pfx keeps the family
    assert str(s.decrypt(A(cipher))) == plain


@pytest.mark.parametrize("key,plain,cipher", CPAN_CASES)
def test_cryptopan_published_pairs_both_directions(key, plain, cipher):
    s = CryptoPan(bytes.fromhex(key))
    assert str(s.encrypt(A(plain))) == cipher
    assert s.decrypt(A(cipher)) == A(plain)


def test_vectors_hold_in_one_shuffled_batch_with_duplicates():
    # the batched paths (one ECB call for everything, prefix cache) must give the same answers
    rng = random.Random(1)
    for scheme, rows in (("det", IPC["det"]), ("pfx", IPC["pfx"])):
        by_key = {}
        for k, p, c in rows:
            by_key.setdefault(k, []).append((p, c))
        for k, pairs in by_key.items():
            obj = IpcryptDet(bytes.fromhex(k)) if scheme == "det" else IpcryptPfx(bytes.fromhex(k))
            batch = pairs * 3
            rng.shuffle(batch)
            for _ in range(2):   # second pass: pfx prefixes come from the cache
                got = obj.encrypt_many([A(p) for p, _ in batch])
                assert [str(g) for g in got] == [c for _, c in batch]
                back = obj.decrypt_many(got)
                assert [str(b) for b in back] == [p for p, _ in batch]
    for s in CPAN["sets"]:
        obj = CryptoPan(bytes.fromhex(s["key"]))
        got = obj.encrypt_many([A(p) for p, _ in s["pairs"]])
        assert [str(g) for g in got] == [c for _, c in s["pairs"]]


@pytest.mark.parametrize("case", RFC4231["cases"], ids=lambda c: f"case{c['case']}")
def test_hmac_sha256_rfc4231(case):
    h = HmacSha256(bytes.fromhex(case["key"]), min_key_bytes=1)
    mac = h.digest(bytes.fromhex(case["data"]))
    assert mac.hex()[:len(case["hmac_sha256"])] == case["hmac_sha256"]
    assert h.digest_many([bytes.fromhex(case["data"])] * 2) == [mac, mac]


# -- an independent, slow, per-bit reference of the draft's pseudocode ---------------------------


def _aes(key: bytes, block: bytes) -> bytes:
    e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return e.update(block) + e.finalize()


def _ref_pfx_encrypt(key: bytes, addr) -> ipaddress._BaseAddress:
    """draft-denis-ipcrypt ipcrypt_pfx_encrypt, bit by bit, as the draft writes it."""
    k1, k2 = key[:16], key[16:]
    b16 = (b"\0" * 10 + b"\xff\xff" + addr.packed) if addr.version == 4 else addr.packed
    x = int.from_bytes(b16, "big")
    start = 96 if b16[:12] == b"\0" * 10 + b"\xff\xff" else 0
    out = x & (((1 << start) - 1) << (128 - start)) if start else 0
    padded = (1 << start) | (x >> (128 - start)) if start else 1
    for plen in range(start, 128):
        blk = padded.to_bytes(16, "big")
        e = bytes(a ^ b for a, b in zip(_aes(k1, blk), _aes(k2, blk)))
        pos = 127 - plen
        orig = (x >> pos) & 1
        out |= ((e[15] & 1) ^ orig) << pos
        padded = ((padded << 1) | orig) & ((1 << 128) - 1)
    if start:
        return ipaddress.IPv4Address(out & 0xFFFFFFFF)
    return ipaddress.IPv6Address(out)


def test_reference_pfx_matches_the_published_vectors():
    # the oracle below is only worth something if it is right
    for k, p, c in IPC["pfx"]:
        assert str(_ref_pfx_encrypt(bytes.fromhex(k), A(p))) == c


@settings(max_examples=25, deadline=None)
@given(key=st.binary(min_size=32, max_size=32).filter(lambda k: k[:16] != k[16:]),
       v4=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=12),
       v6=st.lists(st.integers(0, 2**128 - 1), min_size=0, max_size=4))
def test_batched_pfx_equals_per_bit_reference(key, v4, v6):
    addrs = [ipaddress.IPv4Address(v) for v in v4] + [ipaddress.IPv6Address(v) for v in v6]
    random.Random(len(addrs)).shuffle(addrs)
    s = IpcryptPfx(key)
    want = [_ref_pfx_encrypt(key, a) for a in addrs]
    assert s.encrypt_many(addrs) == want
    assert s.encrypt_many(addrs) == want      # now through the prefix cache
    assert s.decrypt_many(want) == [ipaddress.IPv4Address(int(a) & 0xFFFFFFFF)
                                    if a.version == 6 and (int(a) >> 32) == 0xFFFF else a
                                    for a in addrs]


def _ref_cryptopan_encrypt(key: bytes, addr):
    """Crypto-PAn as the paper and the reference code describe it, one AES call per bit."""
    nbits = 32 if addr.version == 4 else 128
    pad = int.from_bytes(_aes(key[:16], key[16:]), "big")
    x = int(addr)
    ks = 0
    for j in range(nbits):
        prefix = (x >> (nbits - j)) << (128 - j) if j else 0
        block = prefix | (pad & ((1 << (128 - j)) - 1))
        ks = (ks << 1) | (_aes(key[:16], block.to_bytes(16, "big"))[0] >> 7)
    return type(addr)(x ^ ks)


def test_reference_cryptopan_matches_the_sample_pairs():
    s = CPAN["sets"][0]
    for p, c in s["pairs"][:5]:
        assert str(_ref_cryptopan_encrypt(bytes.fromhex(s["key"]), A(p))) == c


@settings(max_examples=25, deadline=None)
@given(key=st.binary(min_size=32, max_size=32),
       v4=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=10),
       v6=st.lists(st.integers(0, 2**128 - 1), min_size=0, max_size=3))
def test_batched_cryptopan_equals_per_bit_reference(key, v4, v6):
    addrs = [ipaddress.IPv4Address(v) for v in v4] + [ipaddress.IPv6Address(v) for v in v6]
    random.Random(len(addrs)).shuffle(addrs)
    s = CryptoPan(key)
    want = [_ref_cryptopan_encrypt(key, a) for a in addrs]
    assert s.encrypt_many(addrs) == want
    assert s.decrypt_many(want) == addrs


# -- properties ----------------------------------------------------------------------------------


def _common_prefix(a: int, b: int, nbits: int) -> int:
    x = a ^ b
    return nbits - x.bit_length()


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=32, max_size=32).filter(lambda k: k[:16] != k[16:]),
       fam=st.sampled_from([32, 128]), base=st.integers(0, 2**128 - 1),
       k=st.integers(0, 127), tail=st.integers(0, 2**128 - 1))
def test_prefix_schemes_preserve_exactly_the_shared_prefix(key, fam, base, k, tail):
    k = k % fam
    mask = (1 << fam) - 1
    a = base & mask
    # b shares exactly k leading bits with a: same first k bits, bit k flipped, random rest
    flip = 1 << (fam - 1 - k)
    low = flip - 1
    b = ((a & ~(flip | low)) | ((a ^ flip) & flip) | (tail & low)) & mask
    mk = ipaddress.IPv4Address if fam == 32 else ipaddress.IPv6Address
    if fam == 128 and ((a >> 32) == 0xFFFF or (b >> 32) == 0xFFFF):
        return  # IPv4-mapped: ipcrypt treats those as IPv4 (tested separately)
    for s in (IpcryptPfx(key), CryptoPan(key)):
        ea, eb = s.encrypt_many([mk(a), mk(b)])
        assert _common_prefix(int(ea), int(eb), fam) == k
        assert s.decrypt_many([ea, eb]) == [mk(a), mk(b)]


@settings(max_examples=40, deadline=None)
@given(key=st.binary(min_size=16, max_size=16),
       vals=st.lists(st.integers(0, 2**128 - 1).filter(lambda v: v >> 32 != 0xFFFF), max_size=20))
def test_det_roundtrip_and_batch_equals_single(key, vals):
    s = IpcryptDet(key)
    addrs = [ipaddress.IPv6Address(v) if v >> 32 else ipaddress.IPv4Address(v) for v in vals]
    enc = s.encrypt_many(addrs)
    assert enc == [s.encrypt(a) for a in addrs]
    assert s.decrypt_many(enc) == addrs
    assert len(set(enc)) == len(set(addrs))   # a permutation: no collisions


def test_ipv4_mapped_input_is_the_ipv4_address_for_ipcrypt():
    pfx = IpcryptPfx(bytes(range(32)))
    det = IpcryptDet(bytes(range(16)))
    v4, mapped = A("192.0.2.1"), A("::ffff:192.0.2.1")
    assert pfx.encrypt(mapped) == pfx.encrypt(v4)
    assert pfx.encrypt(mapped).version == 4
    assert det.encrypt(mapped) == det.encrypt(v4)
    # Crypto-PAn decides by the object's family: a mapped address is a 128-bit input
    cp = CryptoPan(bytes(range(32)))
    assert cp.encrypt(mapped).version == 6


def test_cache_is_bounded_and_clearing_changes_nothing():
    s = IpcryptPfx(bytes(range(32)), cache_size=8)
    rng = random.Random(3)
    addrs = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(50)]
    first = s.encrypt_many(addrs)
    assert len(s._cache4) <= 8 + 50
    # a batch mixing cached and uncached prefixes takes both paths and keeps input order
    s2 = IpcryptPfx(bytes(range(32)))
    s2.encrypt_many(addrs[::2])
    assert s2.encrypt_many(addrs) == first
    again = [s.encrypt(a) for a in addrs]
    assert again == first
    assert first == [_ref_pfx_encrypt(bytes(range(32)), a) for a in addrs]


# -- keys never leak, bad keys fail clearly ------------------------------------------------------


KEY32 = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3ca9f5ba40db214c3798f2e1c23456789a")


@pytest.mark.parametrize("cls,key", [(IpcryptDet, KEY32[:16]), (IpcryptPfx, KEY32), (CryptoPan, KEY32),
                                     (HmacSha256, KEY32)])
def test_repr_and_pickle_never_show_the_key(cls, key):
    obj = cls(key)
    for text in (repr(obj), str(obj)):
        assert "redacted" in text
        assert key.hex() not in text and key.hex()[:8] not in text
    with pytest.raises(TypeError):
        pickle.dumps(obj)


@pytest.mark.parametrize("name", ["ipcrypt-det", "ipcrypt-pfx", "cryptopan"])
@pytest.mark.parametrize("length", [0, 15, 17, 31, 33, 64])
def test_bad_key_length_is_a_crypto_error_naming_the_expected_length(name, length):
    if length == KEY_BYTES[name]:
        return
    key = bytes(range(1, length + 1))
    with pytest.raises(CryptoError) as e:
        make_address_scheme(name, key)
    assert f"{KEY_BYTES[name]} bytes" in str(e.value)
    assert key.hex() not in str(e.value) or not key


def test_equal_pfx_halves_are_refused():
    with pytest.raises(CryptoError, match="halves must differ"):
        IpcryptPfx(KEY32[:16] * 2)


def test_hmac_rejects_short_keys_by_default():
    with pytest.raises(CryptoError, match="at least 32 bytes"):
        HmacSha256(b"Jefe")


def test_hmac_pseudonyms():
    h = HmacSha256(KEY32)
    p = h.pseudonym("alice@example")
    assert len(p) == 32 and int(p, 16) >= 0
    assert p == h.digest(b"alice@example")[:16].hex()
    assert h.pseudonym_many(["alice@example", "bob"]) == [p, h.pseudonym("bob")]
    assert HmacSha256(KEY32[::-1]).pseudonym("alice@example") != p


# -- keyless treatments and the factory ----------------------------------------------------------


def test_truncate_and_drop():
    t = Truncate()
    assert t.encrypt_many([A("192.0.2.77"), A("2001:db8:1234:5678::1")]) == [
        A("192.0.2.0"), A("2001:db8:1234::")]
    assert Truncate(16, 32).encrypt(A("198.51.100.9")) == A("198.51.0.0")
    assert Drop().encrypt_many([A("192.0.2.1"), A("::1")]) == [None, None]
    with pytest.raises(CryptoError):
        Truncate(33)


def test_factory_knows_every_scheme_and_refuses_misuse():
    for name in ADDRESS_SCHEMES:
        key = bytes(range(KEY_BYTES[name])) if name in KEY_BYTES else None
        obj = make_address_scheme(name, key)
        out = obj.encrypt_many([A("192.0.2.1")])
        assert len(out) == 1
    with pytest.raises(CryptoError, match="takes no key"):
        make_address_scheme("truncate", b"x" * 16)
    with pytest.raises(CryptoError, match="unknown address scheme"):
        make_address_scheme("rot13", None)


def test_non_address_input_is_a_type_error():
    with pytest.raises(TypeError):
        IpcryptPfx(KEY32).encrypt_many(["192.0.2.1"])


def test_batches_larger_than_a_chunk_are_split_without_changing_results(monkeypatch):
    import stream.pseudonym as P
    rng = random.Random(9)
    addrs = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(23)] + \
            [ipaddress.IPv6Address(rng.getrandbits(128)) for _ in range(9)]
    rng.shuffle(addrs)
    key = bytes(range(32))
    whole = {name: cls(key).encrypt_many(addrs) for name, cls in (("pfx", IpcryptPfx), ("cp", CryptoPan))}
    monkeypatch.setattr(P, "CHUNK", 4)
    for name, cls in (("pfx", IpcryptPfx), ("cp", CryptoPan)):
        s = cls(key)
        got = s.encrypt_many(addrs)
        assert got == whole[name]
        assert got == [s.encrypt(a) for a in addrs]
        assert s.decrypt_many(got) == addrs
