"""Adversarial tests of the pure core's caches (added for speed on the hot path).

Caches are where a faster core goes wrong quietly: a derived key, AEAD object, scheme object,
prefix table or pseudonym remembered across a boundary it must not cross.  Each test warms
every cache first and then crosses one boundary:

- an epoch key destroyed (crypto-shredding, ``stream.keyring`` / ``agents.vault``): nothing may
  still open a value sealed under it, derive its keys, or emit one of its pseudonyms;
- a statistics epoch boundary: the same identifier gets unrelated pseudonyms in two epochs;
- an operator boundary: the same input never gives another operator's value or pseudonym,
  even for operators created from the same seed bytes;
- warm against cold: a cached answer equals the answer of a fresh object with empty caches.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from pathlib import Path

import pytest

from agents.vault import Vault
from stream import binding_wire
from stream import intervals as iv
from stream.config import load_operators
from stream.consent import consent_key
from stream.errors import CryptoError
from stream.keyring import Keyring, epoch_of
from stream.model import Binding, parse_network
from stream.pseudonym import IpcryptPfx
from stream.stats import StatsBuilder

OPS = load_operators(Path(__file__).resolve().parents[2] / "config" / "operators")
SEED = bytes(range(32))
HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_717_999_200_000 + 123_456  # 2024-06-10T06:02:03.456Z
PFX_OPS = sorted(n for n, p in OPS.items() if p.statistics.address.kind == "ipcrypt-pfx")


def radius(op: str, sub: str, ip: str, at: int, action: str = "start", session: str = "S-1") -> Binding:
    return Binding(kind="radius", action=action, operator=op, ip=parse_network(ip), subscriber=sub,
                   session=session, nas="192.0.2.10", at_ms=at)


def nat(op: str, public: str, inside: str, at: int) -> Binding:
    return Binding(kind="nat", action="start", operator=op, ip=parse_network(public), subscriber=None,
                   session=None, nas=None, at_ms=at, inside_ip=ipaddress.ip_address(inside),
                   port_first=1024, port_last=2047)


def population(op: str, at: int, n: int = 120) -> list[Binding]:
    """Subscribers on addresses sharing a few /24s (the pfx prefix cache hits) plus NAT blocks."""
    out = [radius(op, f"kund-{i}@isp.example", f"100.64.{i % 3}.{i + 1}", at + i, session=f"S-{i}")
           for i in range(n)]
    out += [nat(op, f"198.51.100.{i + 1}", f"100.65.0.{i + 1}", at + i) for i in range(n // 4)]
    return out


def builder(op: str, seed: bytes = SEED) -> StatsBuilder:
    return StatsBuilder(OPS[op], Keyring.create(op, seed))


def pseudonyms(built) -> dict[str, set]:
    """Every pseudonymous value of a batch's records, by field."""
    out: dict[str, set] = {"subscriber": set(), "ip": set(), "inside": set(), "id": set(), "holder": set()}
    for x in built:
        for f in ("subscriber", "ip", "inside", "id"):
            if x.record[f] is not None:
                out[f].add(x.record[f])
        out["holder"].add(x.holder)
    return out


# -- crypto-shredding ---------------------------------------------------------------------------


def test_a_destroyed_epoch_opens_nothing_and_derives_nothing_even_with_every_cache_warm():
    ring = Keyring.create("junet", SEED, purpose="lawful_access")
    e = 5
    tokens = [ring.seal(f"value-{i}".encode(), e, aad=b"k%d" % i) for i in range(20)]
    # warm every per-epoch cache: AEAD, HMAC, epoch index, scheme objects and the pfx prefix table
    assert [ring.open(t, aad=b"k%d" % i) for i, t in enumerate(tokens)] == [f"value-{i}".encode() for i in range(20)]
    old_hmac = ring.hmac(e).pseudonym("kund-1@isp.example")
    old_kid = ring.key_id("100.64.0.1", epoch=e)
    pfx = ring.address_scheme("ipcrypt-pfx", e)
    old_addr = pfx.encrypt_many([ipaddress.ip_address(f"100.64.0.{i}") for i in range(1, 50)])
    ring.scheme_key("hmac-sha256", e)
    later = ring.seal(b"later", e + 1)

    ring.destroy_before(e + 1)

    for i, t in enumerate(tokens):
        with pytest.raises(CryptoError):
            ring.open(t, aad=b"k%d" % i)
    for derive in (lambda: ring.hmac(e), lambda: ring.key_id("100.64.0.1", epoch=e),
                   lambda: ring.address_scheme("ipcrypt-pfx", e), lambda: ring.scheme_key("hmac-sha256", e),
                   lambda: ring.seal(b"x", e)):
        with pytest.raises(CryptoError):
            derive()
    # the persisted state cannot bring it back either
    again = Keyring.from_bytes(ring.to_bytes())
    with pytest.raises(CryptoError):
        again.open(tokens[0], aad=b"k0")
    # later epochs still work, and none of them reproduces a pseudonym of the destroyed one
    assert ring.open(later) == b"later"
    for e2 in (e + 1, e + 2):
        assert ring.hmac(e2).pseudonym("kund-1@isp.example") != old_hmac
        assert ring.key_id("100.64.0.1", epoch=e2) != old_kid
        new_addr = ring.address_scheme("ipcrypt-pfx", e2).encrypt_many(
            [ipaddress.ip_address(f"100.64.0.{i}") for i in range(1, 50)])
        assert not set(map(str, new_addr)) & set(map(str, old_addr))


def _vault(keys: Path, op: str = "junet", now: int = T0) -> Vault:
    return Vault.open_or_create(op, keys, ttl_ms=DAY, grace_ms=2 * 60_000, now_ms=now, destroy=False)


def test_vault_values_are_unreadable_after_destroy_due_in_this_and_every_other_process(tmp_path):
    v = _vault(tmp_path)
    sharer = _vault(tmp_path)  # a second worker on the same key directory, loaded before the shredding
    stored = {}
    for i in range(40):
        net = parse_network(f"100.64.1.{i + 1}")
        key = v.key("ip", net)
        ivs = (iv.Interval(start_ms=T0 - HOUR + i, end_ms=T0 - 30 * 60_000, holder=f"kund-{i}@isp.example",
                           session=f"S-{i}", last_ms=T0 - 30 * 60_000),)
        raw, _ = v.seal_value(key, net, ivs, ttl_ms=DAY, stale_after_ms=iv.DEFAULT_STALE_AFTER_MS, now_ms=T0)
        stored[key] = (raw, net, ivs)
        assert v.open(key, raw) == (net, ivs)          # warm
        assert sharer.open(key, raw) == (net, ivs)     # warm in the other process too
        v.next_expiry(key, raw, ttl_ms=DAY, stale_after_ms=iv.DEFAULT_STALE_AFTER_MS)

    later = T0 + 3 * DAY  # every epoch those values were sealed under has ended, grace included
    assert v.destroy_due(later) > 0
    assert sharer.destroy_due(later) > 0  # the other worker's own sweep
    fresh = _vault(tmp_path, now=later)   # a restart reads the state file
    for key, (raw, _, _) in stored.items():
        for who in (v, sharer, fresh):
            with pytest.raises(CryptoError):
                who.open(key, raw)
            with pytest.raises(CryptoError):
                who.next_expiry(key, raw, ttl_ms=DAY, stale_after_ms=iv.DEFAULT_STALE_AFTER_MS)


def test_stats_after_shredding_emit_no_record_and_no_pseudonym_of_the_destroyed_epoch():
    op = PFX_OPS[0]
    b = builder(op)
    period = OPS[op].key_epoch_ms
    e = epoch_of(T0, period)
    batch = population(op, T0)
    old = pseudonyms(b.build_many(batch))
    assert old["subscriber"] and old["ip"] and old["inside"]

    b.ring.destroy_before(e + 1)
    again = b.build_many(batch)
    assert again == [] and len(b.late) == len(batch), "a binding of a destroyed epoch was pseudonymised"

    nxt = [dataclasses.replace(x, at_ms=x.at_ms + period) for x in batch]  # the same people, next epoch
    new = pseudonyms(b.build_many(nxt))
    for f in ("subscriber", "ip", "inside", "id", "holder"):
        shared = old[f] & new[f]
        assert not shared, f"{len(shared)} {f} pseudonyms of the destroyed epoch came out again"


# -- epochs and operators -----------------------------------------------------------------------


@pytest.mark.parametrize("op", sorted(OPS))
def test_the_same_identifier_gets_unrelated_pseudonyms_in_two_stats_epochs(op):
    period = OPS[op].key_epoch_ms
    b = builder(op)
    first = population(op, T0)
    second = [dataclasses.replace(x, at_ms=x.at_ms + period) for x in first]
    # three orders: epoch by epoch on one builder (warm caches), both epochs in one call, fresh builders
    warm = [pseudonyms(b.build_many(first)), pseudonyms(b.build_many(second))]
    built = builder(op).build_many(first + second)
    e0 = epoch_of(T0, period)
    mixed = [pseudonyms([x for x in built if x.epoch == e0]), pseudonyms([x for x in built if x.epoch == e0 + 1])]
    cold = [pseudonyms(builder(op).build_many(first)), pseudonyms(builder(op).build_many(second))]
    assert warm == mixed == cold, "a cached pseudonym differs from the one a fresh builder makes"
    keyed_ip = OPS[op].statistics.address.kind in ("ipcrypt-pfx", "ipcrypt-det", "cryptopan")
    for f in ("subscriber", "holder", "id", *(("ip", "inside") if keyed_ip else ())):
        if warm[0][f]:
            shared = warm[0][f] & warm[1][f]
            assert not shared, f"{op}: {len(shared)} {f} pseudonyms equal in epochs {e0} and {e0 + 1}"


def test_operators_never_share_a_pseudonym_value_or_key_even_from_the_same_seed(tmp_path):
    ops = sorted(OPS)
    assert len(ops) >= 2
    # same seed bytes for every operator: only the operator separates them
    builders = {op: builder(op) for op in ops}
    per_op = {}
    for op in ops + ops[::-1]:  # interleaved twice: warm caches of one operator before the next
        batch = population(op, T0)
        per_op.setdefault(op, []).append(pseudonyms(builders[op].build_many(batch)))
    for op in ops:
        assert per_op[op][0] == per_op[op][1] == pseudonyms(builder(op).build_many(population(op, T0)))
    for i, a in enumerate(ops):
        for o in ops[i + 1:]:
            for f in ("subscriber", "holder", "id"):
                shared = per_op[a][0][f] & per_op[o][0][f]
                assert not shared, f"{a} and {o} share {len(shared)} {f} pseudonyms"
            if all(OPS[x].statistics.address.kind == "ipcrypt-pfx" for x in (a, o)):
                for f in ("ip", "inside"):
                    assert not per_op[a][0][f] & per_op[o][0][f], f"{a} and {o} share {f} pseudonyms"
            ra, ro = builders[a].ring, builders[o].ring
            assert consent_key(ra, "kund-1@isp.example") != consent_key(ro, "kund-1@isp.example")
            assert ra.key_id("100.64.0.1") != ro.key_id("100.64.0.1")
            tok = ra.seal(b"v", ra.oldest_epoch, aad=b"k")
            with pytest.raises(CryptoError):
                ro.open(tok, aad=b"k")

    # mapping table vaults: keys differ, and a value of one operator never opens under another
    vaults = {op: _vault(tmp_path / "keys", op) for op in ops}
    net = parse_network("100.64.0.1")
    ivs = (iv.Interval(start_ms=T0, end_ms=None, holder="kund-1@isp.example", session="S", last_ms=T0),)
    keys = {op: v.key("ip", net) for op, v in vaults.items()}
    assert len(set(keys.values())) == len(ops)
    for a in ops:
        raw, _ = vaults[a].seal_value(keys[a], net, ivs, ttl_ms=DAY, stale_after_ms=iv.DEFAULT_STALE_AFTER_MS,
                                      now_ms=T0)
        assert vaults[a].open(keys[a], raw) == (net, ivs)
        for o in ops:
            if o != a:
                for k in (keys[a], keys[o]):
                    with pytest.raises(CryptoError):
                        vaults[o].open(k, raw)


# -- warm against cold --------------------------------------------------------------------------


def test_pfx_prefix_cache_of_any_size_gives_the_uncached_answer():
    key = bytes(range(32))
    rng = random.Random(16)
    addrs = [ipaddress.ip_address(f"100.64.{rng.randrange(4)}.{rng.randrange(256)}") for _ in range(400)]
    addrs += [ipaddress.ip_address(f"2001:db8:{rng.randrange(3):x}::{rng.randrange(1 << 16):x}") for _ in range(200)]
    rng.shuffle(addrs)
    ref = [IpcryptPfx(key, cache_size=1 << 16).encrypt(a) for a in addrs]  # one at a time, cold-ish
    for size in (1, 3, 64, 1 << 16):
        p = IpcryptPfx(key, cache_size=size)
        assert p.encrypt_many(addrs) == ref
        assert p.encrypt_many(addrs[::-1]) == ref[::-1]
        assert p.decrypt_many(ref) == addrs
    other = IpcryptPfx(bytes(range(1, 33)))
    other.encrypt_many(addrs)  # another key's warm cache is never consulted
    assert IpcryptPfx(key).encrypt_many(addrs) == ref
    assert sum(a == b for a, b in zip(other.encrypt_many(addrs), ref)) < len(addrs) // 50


def test_codecs_decode_exactly_what_was_encoded_whatever_was_decoded_before():
    rng = random.Random(7)
    bs = []
    for i in range(300):
        op = rng.choice(sorted(OPS))
        if i % 5 == 0:
            bs.append(nat(op, f"198.51.100.{i % 250 + 1}", f"100.65.{i % 7}.{i % 250 + 1}", T0 + i))
        else:
            ip = f"100.64.{i % 3}.{i % 250 + 1}" if i % 2 else f"2001:db8:{i:x}::/64"
            bs.append(radius(op, f"kund-{i % 40}@isp.example", ip, T0 + rng.randrange(DAY),
                             action=rng.choice(["start", "update", "stop"]), session=f"S-{i % 60}"))
    wires = [binding_wire.encode(b) for b in bs]
    assert [binding_wire.decode(w) for w in wires] == bs
    order = list(range(len(bs)))
    rng.shuffle(order)
    assert [binding_wire.decode(wires[i]) for i in order] == [bs[i] for i in order]

    values = []
    for b in bs:
        ivs = (iv.Interval(start_ms=b.at_ms, end_ms=None if b.action != "stop" else b.at_ms + 60_000,
                           holder=b.subscriber or str(b.inside_ip), session=b.session, nas=b.nas, last_ms=b.at_ms,
                           port_first=b.port_first, port_last=b.port_last),)
        values.append((b.ip, ivs, iv.encode_value(b.ip, ivs)))
    for i in order:
        net, ivs, raw = values[i]
        assert iv.decode_value(raw) == (net, ivs)
