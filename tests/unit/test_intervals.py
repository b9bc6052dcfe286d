"""Lookup semantics of stream.intervals: every rule in the module docstring."""

from __future__ import annotations

import ipaddress

import pytest

from stream.errors import Rejected
from stream.intervals import (FORMAT_VERSION, Interval, apply, apply_reset, candidate_keys, decode,
                              decode_value, during, encode, encode_value, expiry_ms, keyed_table_key,
                              next_expiry_ms, next_expiry_of, operator_of, routing_key, sweep, table_key)
from stream.model import Binding

NET = ipaddress.ip_network("100.64.12.34/32")
H = 3_600_000


def rb(action, at, sub="alice", session="nas1/s1", st=None, ip=NET):
    return Binding(kind="radius", action=action, operator="op", ip=ip, subscriber=sub,
                   session=session, nas="nas1", at_ms=at, session_time_s=st)


def run(*bs):
    ivs = ()
    outs = []
    for b in bs:
        ivs, o = apply(ivs, b)
        outs.append(o.kind)
    return ivs, outs


def who(ivs, t):
    return [h.holder for h in during(ivs, t, t + 1)]


def test_start_interim_stop_is_one_closed_interval():
    ivs, outs = run(rb("start", 1000), rb("update", 5000, st=4), rb("stop", 9000, st=8))
    assert outs == ["opened", "extended", "closed"]
    assert [(iv.start_ms, iv.end_ms) for iv in ivs] == [(1000, 9000)]
    assert who(ivs, 999) == [] and who(ivs, 1000) == ["alice"] and who(ivs, 8999) == ["alice"]
    assert who(ivs, 9000) == []  # half-open


def test_reuse_by_another_subscriber_closes_the_earlier_at_that_instant():
    ivs, _ = run(rb("start", 1000), rb("start", 5000, sub="bob", session="nas1/s2"))
    assert who(ivs, 4999) == ["alice"] and who(ivs, 5000) == ["bob"]
    rows = during(ivs, 0, 10_000)
    assert [(r.holder, r.from_ms, r.to_ms) for r in rows] == [("alice", 1000, 5000), ("bob", 5000, 10_000)]


def test_out_of_order_reuse_gives_the_same_answer():
    a, _ = run(rb("start", 1000), rb("start", 5000, sub="bob", session="nas1/s2"))
    b, _ = run(rb("start", 5000, sub="bob", session="nas1/s2"), rb("start", 1000))
    assert during(a, 0, 10_000) == during(b, 0, 10_000)


def test_interim_before_start_opens_at_session_start():
    ivs, outs = run(rb("update", 10_000, st=6))
    assert outs == ["opened"] and ivs[0].start_ms == 4000
    ivs, outs = run(rb("update", 10_000, st=6), rb("start", 4000))
    assert outs[-1] == "duplicate" and len(ivs) == 1


def test_stop_without_start_uses_session_time_or_is_an_orphan():
    ivs, outs = run(rb("stop", 10_000, st=3))
    assert [(iv.start_ms, iv.end_ms) for iv in ivs] == [(7000, 10_000)]
    ivs, outs = run(rb("stop", 10_000))
    assert ivs == () and outs == ["orphan-stop"]


def test_duplicates_change_nothing():
    once, _ = run(rb("start", 1000), rb("stop", 9000, st=8))
    twice, outs = run(rb("start", 1000), rb("start", 1000), rb("stop", 9000, st=8), rb("stop", 9000, st=8))
    assert once == twice and outs[1] == "duplicate" and outs[3] == "duplicate"


def test_late_interim_after_stop_does_not_reopen():
    ivs, outs = run(rb("start", 1000), rb("stop", 9000), rb("update", 8000))
    assert [(iv.start_ms, iv.end_ms) for iv in ivs] == [(1000, 9000)]


def test_reset_closes_open_sessions_of_that_nas_only():
    ivs, _ = run(rb("start", 1000))
    other = Interval(start_ms=1000, end_ms=None, holder="carol", session="nas2/x", nas="nas2", last_ms=1000)
    ivs = ivs + (other,)
    out = apply_reset(ivs, "nas1", 5000)
    assert {(iv.nas, iv.end_ms) for iv in out} == {("nas1", 5000), ("nas2", None)}


def test_stale_open_interval_ends_after_silence():
    ivs, _ = run(rb("start", 1000))
    assert ivs[0].effective_end(stale_after_ms=H) == 1000 + H
    assert who(ivs, 1000 + H - 1) == ["alice"]


def test_dhcp_lease_ends_at_until_and_renewal_extends():
    b = Binding(kind="dhcp", action="start", operator="op", ip=NET, subscriber="01:aa", session=None,
                nas=None, at_ms=0, until_ms=1000)
    ivs, _ = apply((), b)
    assert who(ivs, 999) == ["01:aa"] and who(ivs, 1000) == []
    renew = Binding(kind="dhcp", action="update", operator="op", ip=NET, subscriber="01:aa", session=None,
                    nas=None, at_ms=900, until_ms=1900)
    ivs, o = apply(ivs, renew)
    assert o.kind == "extended" and who(ivs, 1500) == ["01:aa"]


def test_nat_blocks_share_an_address_and_a_port_disambiguates():
    def nat(inside, pf, pl, at=0):
        return Binding(kind="nat", action="start", operator="op", ip=ipaddress.ip_network("198.51.100.7/32"),
                       subscriber=None, session=None, nas="cgn1", at_ms=at,
                       inside_ip=ipaddress.ip_address(inside), port_first=pf, port_last=pl)
    ivs = ()
    for b in (nat("10.0.0.1", 1024, 2047), nat("10.0.0.2", 2048, 3071)):
        ivs, _ = apply(ivs, b)
    assert len(during(ivs, 10, 11)) == 2  # without a port: ambiguous between 2
    assert [h.holder for h in during(ivs, 10, 11, port=2100)] == ["10.0.0.2"]


def test_sweep_drops_only_expired_and_keeps_held():
    ivs, _ = run(rb("start", 0), rb("stop", 1000))
    assert expiry_ms(ivs[0], ttl_ms=500) == 1500
    assert sweep(ivs, 1499, ttl_ms=500) == (ivs, 0)
    assert sweep(ivs, 1500, ttl_ms=500) == ((), 1)
    held = tuple(Interval(i.start_ms, i.end_ms, i.holder, i.session, i.nas, i.last_ms, i.until_ms, held=True)
                 for i in ivs)
    assert sweep(held, 10**9, ttl_ms=500) == (held, 0)


def test_codec_roundtrip():
    ivs, _ = run(rb("start", 1000), rb("start", 5000, sub="bob", session="nas1/s2"))
    assert decode(encode(ivs)) == ivs


T = 1_790_000_000_000
#: one interval of each shape, with every field that has a compact form and every one that has not
SHAPES = (
    Interval(T, None, "kund-123456@isp.example", "192.0.2.10/0000ABCD", "192.0.2.10", T + 600_000),
    Interval(T, T + 5, "bob", "nas-7/3f2a", "nas-7", T + 5),                      # NAS-Identifier
    Interval(T, None, "01:02:00:aa:bb:cc", None, None, T + 1, T + 3_600_000),      # DHCP lease
    Interval(T, None, "100.127.0.5", None, "198.51.100.1", T, None, 1024, 2047),   # NAT block
    Interval(T, None, "2001:db8::7", "x", "2001:db8::1", T, None, 0, 65535, True),  # held, IPv6
    Interval(-5, 0, "", "", "", -T),                                               # empty texts, negative
    Interval(T, None, "DEADBEEF", "ABC/abc", "ABC", T),                            # hex texts, odd hex
    Interval(T, None, "2001:DB8::1", "0123", "::ffff:1.2.3.4", T),                 # non-canonical addresses
    Interval(T, None, "ünïcode ✓", "s p a c e", "10.0.0.01x", T),
    Interval(T, None, "00:01:00:01:2b:3c:4d:5e:00:11:22:33:44:55", "ab:cd", "AB:CD", T),  # DUID, colon hex
    Interval(T, None, "01:02:03:04:05:0", "ab:", "a:b", T),                          # not colon hex
)


@pytest.mark.parametrize("one", SHAPES, ids=range(len(SHAPES)))
def test_codec_roundtrip_every_shape(one):
    assert decode(encode((one,))) == (one,)
    for net in ("100.64.0.1/32", "10.0.0.0/8", "0.0.0.0/0", "2001:db8::1/128", "2001:db8:200::/56", "::/0"):
        n = ipaddress.ip_network(net)
        assert decode_value(encode_value(n, (one,))) == (n, (one,))
    assert decode(encode(SHAPES)) == SHAPES


def test_codec_layout_is_compact_and_versioned():
    raw = encode_value(NET, SHAPES[:1])
    assert raw[0] == FORMAT_VERSION == 2
    assert raw[1:6] == bytes([32, 100, 64, 12, 34])                # /32 and the 4 address bytes
    assert raw[6] == 1                                            # one interval
    assert len(raw) == 52                                         # format 1 (text and JSON): 140 bytes
    assert b"192.0.2.10" not in raw and b"0000ABCD" not in raw      # NAS as 4 bytes, id as hex bytes
    dhcp = encode_value(NET, SHAPES[2:3])
    assert len(dhcp) == 26 and bytes([6 << 3 | 4, 1, 2, 0, 0xAA, 0xBB, 0xCC]) in dhcp  # MAC: 6 bytes
    v6 = encode_value(ipaddress.ip_network("2001:db8:200::/56"), ())
    assert v6 == bytes([2, 64 + 56]) + bytes.fromhex("20010db8020000") + b"\0"   # 7 bytes of a /56, 0 intervals
    assert decode(encode(())) == ()


@pytest.mark.parametrize("raw", [
    b"", b"\x02", b"\x01", b'{"v":1,"i":[]}', b"100.64.0.1\n{}", b"\x02\xff", b"\x02\xff\x01",
    b"\x02\x21\0\0\0\0\0",                         # network tag 33: neither IPv4 nor IPv6
    b"\x02\x18\x0a\x00\x01",                          # 10.0.1.0/24 … then no count
    b"\x02\x10\x0a\x01\x00\x00",                      # 10.1.0.0/16, 0 intervals, a trailing byte
    b"\x02\x08\x0b\x00\x00",                          # 11.0.0.0/8, 0 intervals, a trailing byte
    b"\x02\x07\xff\x00",                              # 255.0.0.0/7: host bits set
    b"\x02\xff\x01\x80\x00\x00\x00",                  # unknown flag bit
    b"\x02\xff\x01\x00" + b"\xff" * 11 + b"\x00",        # a varint longer than 10 bytes
    b"\x02\xff\x01\x00\x00\x00\x40\x00",              # holder runs past the end
    b"\x02\xff\x01\x00\x00\x00\x10\xff\xfe",          # holder is not UTF-8
    b"\x02\xff\x01\x00\x00\x00\x19\x01\x02\x03",      # an address of 3 bytes
    b"\x02\xff\x01\x00\x00\x00\x0d\x01",              # text kind 5 is not used
    b"\x02\xff\x01\x00\x00\x00\x0c\x01",              # colon hex of one byte is never written
    b"\x02\xff\x01\x00\x00\x00\x02",                  # empty hex text
    b"\x02\xff\x01\x40\x00\x00\x00",                  # session-after-nas without either
    b"\x02\xff\x7f\x00",                              # count larger than the value
])
def test_decode_rejects_garbage_with_a_clear_error(raw):
    with pytest.raises(Rejected) as e:
        decode(raw)
    assert e.value.reason == "bad-value"
    with pytest.raises(Rejected):
        decode_value(raw)


def test_decode_never_raises_anything_but_rejected_on_mutations():
    import random

    rng = random.Random(8)
    good = encode_value(NET, SHAPES)
    for _ in range(3000):
        r = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            x = rng.random()
            if x < 0.5 and r:
                r[rng.randrange(len(r))] = rng.randrange(256)
            elif x < 0.75 and r:
                del r[rng.randrange(len(r)):]
            else:
                r.insert(rng.randrange(len(r) + 1), rng.randrange(256))
        try:
            net, ivs = decode_value(bytes(r))
        except Rejected:
            continue
        assert all(isinstance(i, Interval) for i in ivs)
    with pytest.raises(Rejected):
        decode_value(encode(SHAPES))      # no network where the vault needs one
    with pytest.raises(ValueError):
        encode((Interval(2**63, None, "a", last_ms=0),))


def test_next_expiry_of_reads_only_times_and_agrees_with_decoding():
    import random

    rng = random.Random(5)
    cases = [(), SHAPES, SHAPES[4:5]]                                   # none, all, only a held one
    for _ in range(300):
        cases.append(tuple(Interval(rng.randrange(-10**6, 10**13), rng.choice([None, rng.randrange(10**13)]), "h",
                                    last_ms=rng.randrange(10**13), until_ms=rng.choice([None, rng.randrange(10**13)]),
                                    held=rng.random() < 0.2) for _ in range(rng.randrange(1, 4))))
    for ivs in cases:
        for raw in (encode(ivs), encode_value(NET, ivs)):
            assert next_expiry_of(raw, ttl_ms=7 * H, stale_after_ms=5 * H) == next_expiry_ms(ivs, ttl_ms=7 * H, stale_after_ms=5 * H)
    assert next_expiry_of(encode(SHAPES[4:5]), ttl_ms=H) is None
    good = encode_value(NET, SHAPES)
    for bad in (b"", b"\x01", good[:-1], good + b"\0", b"\x02\x21", b'{"v":1,"i":[]}'):
        with pytest.raises(Rejected):
            next_expiry_of(bad, ttl_ms=H)


def test_keyed_table_key_and_operator():
    kid = bytes(range(0x70, 0x80))        # holds 0x7c, the byte of "|"
    k = keyed_table_key("connect2ip", "ip", kid)
    assert k == b"connect2ip|i" + kid and len(k) == 28
    assert keyed_table_key("op", "nat", kid)[:4] == b"op|n"
    assert operator_of(k) == "connect2ip"
    assert operator_of(table_key("junet", "nat", NET).encode()) == "junet"


def test_ipv6_prefix_keys_and_routing():
    op = "op"
    pfx = ipaddress.ip_network("2001:db8:200:ab00::/56")
    addr = ipaddress.ip_address("2001:db8:200:ab12::99")
    assert table_key(op, "ip", pfx) in candidate_keys(op, "ip", addr)
    assert routing_key(op, pfx) == routing_key(op, addr) == "op|2001:db8:200::/48"
    with pytest.raises(Rejected):
        routing_key(op, ipaddress.ip_network("2001:db8::/32"))


def test_empty_query_interval_is_rejected():
    with pytest.raises(Rejected):
        during((), 5, 5)
