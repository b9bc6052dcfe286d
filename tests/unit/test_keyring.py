"""The key ratchet: RFC 5869 underneath, the documented derivations, forward-only destruction,
a persisted form holding only the oldest live key, sealing, and keyed table keys."""

from __future__ import annotations

import ipaddress
import json
import pickle
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from stream.errors import CryptoError
from stream.keyring import (MAX_RATCHET_STEPS, Keyring, epoch_bounds, epoch_of, hkdf_sha256,
                            sealed_epoch)

VECTORS = Path(__file__).parent / "vectors"
RFC5869 = json.loads((VECTORS / "rfc5869.json").read_text())
FIX = json.loads((VECTORS / "keyring_v1.json").read_text())
SEED = bytes.fromhex(FIX["seed"])


def _hkdf(ikm: bytes, info: bytes, n: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=None, info=info).derive(ikm)


@pytest.mark.parametrize("case", RFC5869["cases"], ids=lambda c: f"case{c['case']}")
def test_hkdf_rfc5869(case):
    okm = hkdf_sha256(bytes.fromhex(case["ikm"]), bytes.fromhex(case["info"]), case["length"],
                      bytes.fromhex(case["salt"]) or None)
    assert okm.hex() == case["okm"]


def test_derivations_follow_the_documented_formulas():
    r = Keyring.create("junet", SEED)
    k0 = _hkdf(SEED, b"ipanon/v1 root junet/statistics")
    k1 = _hkdf(k0, b"ipanon/v1 ratchet")
    k2 = _hkdf(k1, b"ipanon/v1 ratchet")
    assert r._epoch_key(0) == k0 and r._epoch_key(1) == k1
    assert r.scheme_key("ipcrypt-pfx", 2) == _hkdf(k2, b"ipanon/v1 scheme ipcrypt-pfx epoch 2", 32)
    assert r.scheme_key("ipcrypt-det", 2) == _hkdf(k2, b"ipanon/v1 scheme ipcrypt-det epoch 2", 16)
    index = _hkdf(SEED, b"ipanon/v1 index junet/statistics")
    h = hmac.HMAC(index, hashes.SHA256())
    h.update(b"junet\x00192.0.2.1")
    assert r.key_id("192.0.2.1") == h.finalize()[:16].hex()
    # sealing: AES-256-GCM under HKDF(K[e], "ipanon/v1 seal epoch e"), header as AAD prefix
    tok = r._seal(b"subscriber-42", 2, b"k", bytes(12))
    header = struct.pack(">BQ", 1, 2)
    aead = AESGCM(_hkdf(k2, b"ipanon/v1 seal epoch 2"))
    assert tok == header + bytes(12) + aead.encrypt(bytes(12), b"subscriber-42", header + b"k")


def test_regression_fixture():
    r = Keyring.create(FIX["operator"], SEED, purpose=FIX["purpose"])
    assert r._epoch_key(0).hex() == FIX["K0"]
    assert r._epoch_key(5).hex() == FIX["K5"]
    assert r._epoch_key(1).hex() == FIX["K1"]
    for scheme, key in FIX["scheme_keys_epoch2"].items():
        assert r.scheme_key(scheme, 2).hex() == key
    assert r.key_id("192.0.2.1") == FIX["key_id_stable_192.0.2.1"]
    assert r.key_id("192.0.2.1", epoch=2) == FIX["key_id_epoch2_192.0.2.1"]
    assert str(r.address_scheme("ipcrypt-pfx", 2).encrypt(ipaddress.ip_address("192.0.2.1"))) == \
        FIX["pfx_epoch2_192.0.2.1"]
    assert r.hmac(2).pseudonym("alice") == FIX["hmac_epoch2_alice"]
    assert r.open(bytes.fromhex(FIX["sealed_epoch2_nonce0_aad_k"]), b"k") == b"subscriber-42"


def test_ratchet_is_forward_only():
    fresh = Keyring.create("junet", SEED)
    r = Keyring.create("junet", SEED)
    r.scheme_key("ipcrypt-pfx", 1)          # populate caches for old epochs
    r.address_scheme("ipcrypt-pfx", 1)
    r.hmac(1)
    r.destroy_before(3)
    assert r.oldest_epoch == 3
    for e in (0, 1, 2):
        with pytest.raises(CryptoError, match="destroyed"):
            r.scheme_key("ipcrypt-pfx", e)
        with pytest.raises(CryptoError):
            r.hmac(e)
        with pytest.raises(CryptoError):
            r.address_scheme("cryptopan", e)
    for e in (3, 4, 9):
        assert r.scheme_key("ipcrypt-pfx", e) == fresh.scheme_key("ipcrypt-pfx", e)
    assert all(e >= 3 for e in r._chain)
    assert all(k[1] >= 3 for k in r._schemes)
    r.destroy_before(2)                     # never moves backwards
    assert r.oldest_epoch == 3
    with pytest.raises(CryptoError):
        r.scheme_key("ipcrypt-pfx", 2)


def test_create_at_a_later_epoch_agrees_with_ratcheting():
    a = Keyring.create("junet", SEED, epoch=7)
    b = Keyring.create("junet", SEED)
    assert a.oldest_epoch == 7
    assert a.scheme_key("hmac-sha256", 8) == b.scheme_key("hmac-sha256", 8)
    with pytest.raises(CryptoError):
        a.scheme_key("hmac-sha256", 6)


def test_persisted_state_holds_only_the_oldest_live_key():
    r = Keyring.create("junet", SEED)
    old = [r._epoch_key(e) for e in range(5)]
    old_scheme = [r.scheme_key(s, e) for e in range(5) for s in ("ipcrypt-pfx", "hmac-sha256")]
    r.destroy_before(3)
    blob = r.to_bytes()
    assert blob[0] == 1 and struct.unpack(">Q", blob[1:9])[0] == 3
    assert blob[9:41] == old[3]
    for k in old[:3] + [old[4]] + old_scheme:
        assert k not in blob
    assert len(blob) == 75 + len("junet") + len("statistics")
    back = Keyring.from_bytes(blob)
    assert (back.operator, back.purpose, back.oldest_epoch) == ("junet", "statistics", 3)
    assert back.scheme_key("ipcrypt-pfx", 4) == r.scheme_key("ipcrypt-pfx", 4)
    assert back.key_id("192.0.2.1") == r.key_id("192.0.2.1")
    with pytest.raises(CryptoError, match="destroyed"):
        back.scheme_key("ipcrypt-pfx", 2)


@pytest.mark.parametrize("mutate", [lambda b: b[:-1], lambda b: b + b"x", lambda b: b"\x02" + b[1:],
                                    lambda b: b"", lambda b: b[:40]])
def test_corrupt_state_is_one_crypto_error(mutate):
    blob = Keyring.create("junet", SEED).to_bytes()
    with pytest.raises(CryptoError):
        Keyring.from_bytes(mutate(blob))


def test_purposes_and_operators_are_independent():
    a = Keyring.create("junet", SEED)
    b = Keyring.create("junet", SEED, purpose="lawful_access")
    c = Keyring.create("connect2ip", SEED)
    keys = {r.scheme_key("ipcrypt-pfx", 0) for r in (a, b, c)}
    assert len(keys) == 3
    assert a.key_id("192.0.2.1") != c.key_id("192.0.2.1")


def test_bad_inputs():
    with pytest.raises(CryptoError, match="at least 32 bytes"):
        Keyring.create("junet", b"short")
    with pytest.raises(CryptoError):
        Keyring.create("ju net", SEED)
    r = Keyring.create("junet", SEED)
    with pytest.raises(CryptoError, match="no keyed scheme"):
        r.scheme_key("truncate", 0)
    with pytest.raises(CryptoError):
        r.scheme_key("ipcrypt-pfx", -1)
    with pytest.raises(CryptoError, match="ahead"):
        r.scheme_key("ipcrypt-pfx", MAX_RATCHET_STEPS + 5)


def test_keyless_address_schemes_come_from_the_keyring_too():
    r = Keyring.create("junet", SEED)
    t = r.address_scheme("truncate", 0, v4_prefix=16)
    assert t.encrypt(ipaddress.ip_address("198.51.100.9")) == ipaddress.ip_address("198.51.0.0")
    assert r.address_scheme("ipcrypt-pfx", 0) is r.address_scheme("ipcrypt-pfx", 0)   # cached


def test_repr_and_pickle_hide_keys():
    r = Keyring.create("junet", SEED)
    text = repr(r) + str(r)
    assert "redacted" in text and "junet" in text
    for e in range(3):
        assert r._epoch_key(e).hex()[:12] not in text
    assert SEED.hex()[:12] not in text
    with pytest.raises(TypeError):
        pickle.dumps(r)


# -- epochs from time ----------------------------------------------------------------------------


def test_epoch_of_is_half_open():
    day = 86_400_000
    origin = 1_700_000_000_000
    assert epoch_of(origin, day, origin) == 0
    assert epoch_of(origin + day - 1, day, origin) == 0
    assert epoch_of(origin + day, day, origin) == 1
    assert epoch_bounds(1, day, origin) == (origin + day, origin + 2 * day)
    s, e = epoch_bounds(41, day, origin)
    assert epoch_of(s, day, origin) == 41 and epoch_of(e, day, origin) == 42
    with pytest.raises(CryptoError):
        epoch_of(origin - 1, day, origin)
    with pytest.raises(CryptoError):
        epoch_of(origin, 0, origin)
    with pytest.raises(CryptoError):
        epoch_bounds(-1, day, origin)


# -- sealing -------------------------------------------------------------------------------------


def test_seal_roundtrip_header_and_fresh_nonces():
    r = Keyring.create("junet", SEED)
    t1 = r.seal(b"subscriber-42", 5, b"table-key")
    t2 = r.seal(b"subscriber-42", 5, b"table-key")
    assert t1 != t2                                       # random nonce
    assert t1[0] == 1 and sealed_epoch(t1) == 5
    assert len(t1) == 1 + 8 + 12 + len(b"subscriber-42") + 16
    assert r.open(t1, b"table-key") == b"subscriber-42"
    assert b"subscriber-42" not in t1


def test_every_bad_token_is_one_crypto_error():
    r = Keyring.create("junet", SEED)
    tok = r.seal(b"subscriber-42", 5, b"k")
    with pytest.raises(CryptoError):
        r.open(tok, b"other-key")                         # replayed under another table key
    for i in range(len(tok)):                             # every byte is covered
        bad = bytearray(tok)
        bad[i] ^= 0x01
        with pytest.raises(CryptoError):
            r.open(bytes(bad), b"k")
    for cut in (0, 5, 20, 36):
        with pytest.raises(CryptoError):
            r.open(tok[:cut], b"k")
    other = Keyring.create("connect2ip", SEED)
    with pytest.raises(CryptoError):
        other.open(tok, b"k")


def test_destroyed_epoch_cannot_open_its_values():
    r = Keyring.create("junet", SEED)
    old = r.seal(b"subscriber-42", 2)
    new = r.seal(b"subscriber-43", 3)
    r.destroy_before(3)
    with pytest.raises(CryptoError, match="destroyed"):
        r.open(old)
    assert r.open(new) == b"subscriber-43"
    restored = Keyring.from_bytes(r.to_bytes())
    with pytest.raises(CryptoError):
        restored.open(old)
    assert restored.open(new) == b"subscriber-43"


def test_epoch_key_ids_are_shredded_with_their_epoch():
    r = Keyring.create("junet", SEED)
    k2 = r.key_id("192.0.2.1", epoch=2)
    assert k2 != r.key_id("192.0.2.1", epoch=3) != r.key_id("192.0.2.1")
    assert len(k2) == 32 and int(k2, 16) >= 0
    stable = r.key_id("192.0.2.1")
    r.destroy_before(3)
    with pytest.raises(CryptoError):
        r.key_id("192.0.2.1", epoch=2)
    assert r.key_id("192.0.2.1") == stable


def test_config_address_scheme_fields_pass_through():
    # stream.config.AddressScheme carries kind + optional prefix lengths (None unless truncate)
    r = Keyring.create("junet", SEED)
    a = ipaddress.ip_address("192.0.2.77")
    assert r.address_scheme("truncate", 0, v4_prefix=None, v6_prefix=None).encrypt(a) == \
        ipaddress.ip_address("192.0.2.0")
    assert r.address_scheme("drop", 0, v4_prefix=None, v6_prefix=None).encrypt(a) is None
    pfx = r.address_scheme("ipcrypt-pfx", 0, v4_prefix=None, v6_prefix=None)
    assert pfx.decrypt(pfx.encrypt(a)) == a
