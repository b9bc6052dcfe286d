"""agents.vault without a broker: keyed table keys, sealed format-2 values, crypto-shredding."""

from __future__ import annotations

import ipaddress

import pytest

from agents.vault import Vault
from stream import intervals as iv
from stream.errors import CryptoError

H = 3_600_000
T = 1_790_000_000_000
NET = ipaddress.ip_network("100.64.12.34/32")
IVS = (iv.Interval(T, None, "kund-123456@isp.example", "192.0.2.10/0000ABCD", "192.0.2.10", T + 600_000),)


def vault(tmp_path, name="connect2ip", now=T):
    return Vault.open_or_create(name, tmp_path / "keys", ttl_ms=24 * H, grace_ms=0, now_ms=now)


def test_key_is_operator_slot_tag_and_16_byte_key_id(tmp_path):
    v = vault(tmp_path)
    k = v.key("ip", NET)
    assert k[:12] == b"connect2ip|i" and len(k) == 12 + 16
    assert k[12:] == bytes.fromhex(v.ring.key_id("100.64.12.34"))
    assert v.key("nat", NET)[:12] == b"connect2ip|n" and v.key("nat", NET)[12:] == k[12:]
    assert b"100.64" not in k and NET.network_address.packed not in k
    assert iv.operator_of(k) == "connect2ip"
    assert v.key("ip", ipaddress.ip_network("2001:db8::/56")) != v.key("ip", ipaddress.ip_network("2001:db8::/64"))


def test_seal_open_roundtrip_and_size(tmp_path):
    v = vault(tmp_path)
    k = v.key("ip", NET)
    raw = v.seal(k, NET, IVS, until_ms=T + 25 * H, now_ms=T)
    assert v.open(k, raw) == (NET, IVS)
    # 37 bytes of sealing (version, epoch, nonce, tag) around a ≈ 50-byte plaintext
    assert len(raw) == 37 + len(iv.encode_value(NET, IVS)) and len(raw) + len(k) <= 120
    pfx = ipaddress.ip_network("2001:db8:200:ab00::/56")
    kp = v.key("ip", pfx)
    assert v.open(kp, v.seal(kp, pfx, IVS, until_ms=T, now_ms=T)) == (pfx, IVS)


def test_next_expiry_without_decoding_matches_open(tmp_path):
    v = vault(tmp_path)
    k = v.key("ip", NET)
    ivs = IVS + (iv.Interval(T - H, T - 1, "x", last_ms=T - 1, held=True),)
    raw = v.seal(k, NET, ivs, until_ms=T + 25 * H, now_ms=T)
    want = iv.next_expiry_ms(v.open(k, raw)[1], ttl_ms=24 * H, stale_after_ms=H)
    assert v.next_expiry(k, raw, ttl_ms=24 * H, stale_after_ms=H) == want == T + 600_000 + H + 24 * H
    with pytest.raises(CryptoError):
        v.next_expiry(k, raw[:-1], ttl_ms=H, stale_after_ms=H)
    with pytest.raises(CryptoError, match="does not decode"):
        v.next_expiry(k, v.ring.seal(b"100.64.12.34\n{}", v.epoch_at(T + 25 * H), aad=k), ttl_ms=H, stale_after_ms=H)


def test_open_rejects_garbage_other_keys_and_old_formats_with_crypto_error(tmp_path):
    v = vault(tmp_path)
    k = v.key("ip", NET)
    raw = v.seal(k, NET, IVS, until_ms=T + 25 * H, now_ms=T)
    other = v.key("ip", ipaddress.ip_network("100.64.12.35/32"))
    for key, value in ((other, raw),                        # aad = table key: no replay elsewhere
                       (k, raw[:-1]), (k, b""), (k, b"garbage"), (k, raw[:30] + bytes([raw[30] ^ 1]) + raw[31:])):
        with pytest.raises(CryptoError):
            v.open(key, value)
    epoch = v.epoch_at(T + 25 * H)
    # authenticates, but holds format 1 (network text, newline, JSON): unreadable, never a crash
    legacy = v.ring.seal(b'100.64.12.34\n{"v":1,"i":[]}', epoch, aad=k)
    with pytest.raises(CryptoError, match="does not decode"):
        v.open(k, legacy)
    with pytest.raises(CryptoError, match="does not decode"):  # a value without its network
        v.open(k, v.ring.seal(iv.encode(IVS), epoch, aad=k))


def test_destroyed_epoch_shreds_the_value_and_survives_a_restart(tmp_path):
    v = vault(tmp_path)
    k = v.key("ip", NET)
    raw = v.seal(k, NET, IVS, until_ms=T + 2 * H, now_ms=T)
    later = v.epoch_end_ms(v.epoch_at(T + 2 * H)) + 1
    again = vault(tmp_path, now=later)                        # reopened after the epoch ended
    assert again.ring.oldest_epoch > v.epoch_at(T + 2 * H)    # destroyed on open (grace 0)
    with pytest.raises(CryptoError):
        again.open(k, raw)
    assert again.key("ip", NET) == k                          # the index key is not shredded
    fresh = again.seal(k, NET, IVS, until_ms=later + 2 * H, now_ms=later)
    assert again.open(k, fresh) == (NET, IVS)


def test_seal_value_uses_the_earliest_expiry_and_a_stop_shreds_every_earlier_version(tmp_path):
    """Start and Interim versions are sealed as if the session stopped at their last event, so
    once the Stop's version expires and its epoch is destroyed, none of them opens either."""
    v = vault(tmp_path)
    k = v.key("ip", NET)
    ttl, stale = 24 * H, H
    start = iv.Interval(T, None, "kund-123456@isp.example", "s", "192.0.2.10", T)
    interim = iv.Interval(T, None, "kund-123456@isp.example", "s", "192.0.2.10", T + 600_000)
    stop = iv.Interval(T, T + 900_000, "kund-123456@isp.example", "s", "192.0.2.10", T + 900_000)
    raws = [v.seal_value(k, NET, (x,), ttl_ms=ttl, stale_after_ms=stale, now_ms=at)[0]
            for x, at in ((start, T), (interim, T + 600_000), (stop, T + 900_000))]
    assert v.open(k, raws[0]) == (NET, (start,))
    gone = v.epoch_end_ms(v.epoch_at(T + 900_000 + ttl)) + 1
    again = vault(tmp_path, now=gone)
    for raw in raws:
        with pytest.raises(CryptoError):
            again.open(k, raw)


def test_revisit_of_a_stored_value_reads_its_epoch_from_the_header(tmp_path):
    v = vault(tmp_path)
    k = v.key("ip", NET)
    ttl, stale = 24 * H, H
    ivs = (iv.Interval(T, None, "kund-123456@isp.example", "s", "192.0.2.10", T),)
    raw, when = v.seal_value(k, NET, ivs, ttl_ms=ttl, stale_after_ms=stale, now_ms=T)
    assert when == T + ttl == v.revisit(raw, ivs, ttl_ms=ttl, stale_after_ms=stale, now_ms=T)
    # the former sealing (lost-Stop expiry) is re-sealed at the first visit
    legacy = v.seal(k, NET, ivs, until_ms=T + stale + ttl, now_ms=T)
    assert v.revisit(legacy, ivs, ttl_ms=ttl, stale_after_ms=stale, now_ms=T + 5) == T + 5


def test_persisting_never_moves_the_state_file_backwards(tmp_path):
    """Two workers on one key directory: the one that destroyed less must not bring the other's
    destroyed epochs back into the file."""
    a = vault(tmp_path)
    b = vault(tmp_path)
    later = a.epoch_end_ms(a.epoch_at(T + 5 * H))
    assert a.destroy_due(later) > 0
    b.destroy_due(b.epoch_end_ms(b.epoch_at(T + 2 * H)))     # b is behind, and writes
    assert vault(tmp_path, now=T).ring.oldest_epoch == a.ring.oldest_epoch
    assert b.ring.oldest_epoch == a.ring.oldest_epoch


def _start(keys, barrier, out):
    barrier.wait()  # every process past its imports: they race for the first write
    try:
        v = Vault.open_or_create("connect2ip", keys, ttl_ms=24 * H, grace_ms=0, now_ms=T)
        out.put(("ok", v.ring.to_bytes(), v.origin_ms))
    except BaseException as e:  # noqa: BLE001 - the parent reports it
        out.put(("error", repr(e), None))


def test_workers_starting_together_on_one_key_directory_share_one_ring(tmp_path):
    """Several workers sharing a table share its key directory: started together on an empty
    one, each must end with the ring the first created — not a random one of its own written
    over it (the values it sealed would then open for no one else, and for itself after a
    restart), and not a crash on another's temp file."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for round_ in range(5):
        keys = tmp_path / f"keys{round_}"
        n = 6
        barrier, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_start, args=(keys, barrier, out)) for _ in range(n)]
        for p in procs:
            p.start()
        got = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert [g[0] for g in got] == ["ok"] * n, [g[1] for g in got if g[0] != "ok"]
        assert len({(g[1], g[2]) for g in got}) == 1, f"round {round_}: the workers hold different rings"
        on_disk = Vault.open_or_create("connect2ip", keys, ttl_ms=24 * H, grace_ms=0, now_ms=T)
        assert on_disk.ring.to_bytes() == got[0][1]
