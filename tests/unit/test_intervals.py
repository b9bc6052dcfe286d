"""Lookup semantics of stream.intervals: every rule in the module docstring."""

from __future__ import annotations

import ipaddress

import pytest

from stream.errors import Rejected
from stream.intervals import (Interval, apply, apply_reset, candidate_keys, decode, during, encode,
                              expiry_ms, routing_key, sweep, table_key)
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
    held = tuple(iv.__class__(**{**{f: getattr(iv, f) for f in iv.__slots__}, "held": True}) for iv in ivs)
    assert sweep(held, 10**9, ttl_ms=500) == (held, 0)


def test_codec_roundtrip():
    ivs, _ = run(rb("start", 1000), rb("start", 5000, sub="bob", session="nas1/s2"))
    assert decode(encode(ivs)) == ivs


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
