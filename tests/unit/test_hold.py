"""Legal holds: exact matching, time limits, serialisation (stream/hold.py)."""

from __future__ import annotations

import ipaddress

import pytest

from stream.errors import Rejected
from stream.hold import DEFAULT_MAX_HOLD_MS, HoldSet, LegalHold, is_held, make_hold

NOW = 1_700_000_000_000
H = 3_600_000


def hold(**kw) -> LegalHold:
    args = dict(operator="junet", ip="198.51.100.7", from_ms=NOW - 10 * H, to_ms=NOW - 8 * H,
                case_ref="PMÖÄ 5331-21", until_ms=NOW + 24 * H, now_ms=NOW)
    args.update(kw)
    return make_hold(**args)


A = ipaddress.ip_network("198.51.100.7/32")


def test_matches_overlapping_interval_only():
    s = HoldSet.of([hold()])
    assert s.is_held("junet", A, (NOW - 9 * H, NOW - 7 * H), NOW)
    assert s.is_held("junet", A, (NOW - 12 * H, None), NOW)               # still open
    assert not s.is_held("junet", A, (NOW - 8 * H, NOW - 7 * H), NOW)     # starts at to: half-open
    assert not s.is_held("junet", A, (NOW - 12 * H, NOW - 10 * H), NOW)   # ends at from: half-open
    assert s.is_held("junet", A, (NOW - 12 * H, NOW - 10 * H + 1), NOW)


def test_other_operator_or_address_is_not_held():
    s = HoldSet.of([hold()])
    assert not s.is_held("hektor", A, (NOW - 9 * H, NOW - 7 * H), NOW)
    assert not s.is_held("junet", ipaddress.ip_network("198.51.100.8/32"), (NOW - 9 * H, NOW - 7 * H), NOW)
    assert not s.is_held("junet", ipaddress.ip_network("2001:db8::/32"), (NOW - 9 * H, NOW - 7 * H), NOW)


def test_prefixes_match_both_ways():
    on_addr = HoldSet.of([hold(ip="2001:db8:200:ab12::1")])
    assert on_addr.is_held("junet", ipaddress.ip_network("2001:db8:200:ab00::/56"), (NOW - 9 * H, None), NOW)
    assert not on_addr.is_held("junet", ipaddress.ip_network("2001:db8:200:ac00::/56"), (NOW - 9 * H, None), NOW)
    on_prefix = HoldSet.of([hold(ip="198.51.100.0/24")])
    assert on_prefix.is_held("junet", ipaddress.ip_address("198.51.100.200"), (NOW - 9 * H, None), NOW)


def test_port_must_lie_in_the_block():
    s = HoldSet.of([hold(port=40123)])
    iv = (NOW - 9 * H, NOW - 7 * H)
    assert s.is_held("junet", A, iv, NOW, ports=(40000, 40511))
    assert not s.is_held("junet", A, iv, NOW, ports=(40512, 41023))
    assert s.is_held("junet", A, iv, NOW)   # a mapping without ports: conservatively held
    assert HoldSet.of([hold()]).is_held("junet", A, iv, NOW, ports=(1, 2))  # hold without port: any block


def test_hold_lapses_at_until_and_release_removes_it():
    h = hold(until_ms=NOW + H)
    s = HoldSet.of([h])
    iv = (NOW - 9 * H, NOW - 7 * H)
    assert s.is_held("junet", A, iv, NOW + H - 1)
    assert not s.is_held("junet", A, iv, NOW + H)
    assert s.held_until("junet", A, iv, NOW) == NOW + H
    assert s.held_until("junet", A, (NOW, NOW + 1), NOW) is None
    assert not s.release(h.hold_id).is_held("junet", A, iv, NOW)
    assert len(s.prune(NOW + H)) == 0 and len(s.prune(NOW)) == 1
    with pytest.raises(Rejected) as e:
        s.release("0" * 16)
    assert e.value.reason == "unknown-hold"


def test_held_until_is_the_latest_matching_hold():
    s = HoldSet.of([hold(until_ms=NOW + H), hold(until_ms=NOW + 5 * H, case_ref="B 1-24")])
    assert s.held_until("junet", A, (NOW - 9 * H, None), NOW) == NOW + 5 * H
    assert is_held(s, "junet", A, (NOW - 9 * H, None), NOW + 2 * H)


@pytest.mark.parametrize("kw,reason", [
    (dict(until_ms=NOW + DEFAULT_MAX_HOLD_MS + 1), "hold-too-long"),
    (dict(until_ms=NOW), "hold-in-past"),
    (dict(from_ms=NOW, to_ms=NOW), "bad-hold-interval"),
    (dict(port=70000), "bad-port"),
    (dict(case_ref="  "), "missing-case-ref"),
    (dict(ip="not-an-ip"), "bad-address"),
    (dict(ip="198.51.100.7/24"), "bad-address"),
])
def test_bad_holds_are_rejected_with_a_reason(kw, reason):
    with pytest.raises(Rejected) as e:
        hold(**kw)
    assert e.value.reason == reason


def test_max_hold_is_configurable():
    hold(until_ms=NOW + DEFAULT_MAX_HOLD_MS)  # exactly the maximum is fine
    with pytest.raises(Rejected):
        hold(until_ms=NOW + 2 * H, max_hold_ms=H)


def test_round_trip_and_stable_id():
    s = HoldSet.of([hold(), hold(ip="2001:db8::/48", port=443, case_ref="B 2-24")])
    back = HoldSet.from_json(s.to_json())
    assert back == s
    assert [h.hold_id for h in back.holds] == [h.hold_id for h in s.holds]
    assert s.add(s.holds[0]) is s   # idempotent


def test_tampered_or_broken_json_is_rejected():
    s = HoldSet.of([hold()])
    raw = s.to_json().replace(b"198.51.100.7", b"198.51.100.9")
    with pytest.raises(Rejected) as e:
        HoldSet.from_json(raw)
    assert e.value.reason == "bad-hold"
    with pytest.raises(Rejected):
        HoldSet.from_json(b"{")
    with pytest.raises(Rejected):
        HoldSet.from_json(b'[{"operator": "x"}]')


def test_repr_does_not_show_the_address():
    assert "198.51.100.7" not in repr(hold())
    assert "198.51.100.7" not in repr(HoldSet.of([hold()]))
