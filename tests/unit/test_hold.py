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


# -- signed holds: the hold desk (stream.hold.HoldDesk) ----------------------------------------

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519  # noqa: E402

from stream import hold as hd  # noqa: E402
from stream.access import Authority, Policy, QueryDesk, Registry, Staff  # noqa: E402
from stream.audit import AuditChain, verify  # noqa: E402

DAY = 24 * H
KEYS = {n: ed25519.Ed25519PrivateKey.generate() for n in ("police", "rights", "s1", "s2", "s3", "ghost")}


def _registry() -> Registry:
    auth = [Authority(n, n, "SE", KEYS[n].public_key(), x25519.X25519PrivateKey.generate().public_key(),
                      frozenset(b), 3600, burst) for n, b, burst in
            (("police", ["lek-law-enforcement"], 50), ("rights", ["ipred-court-order"], 50))]
    staff = [Staff(n, n, KEYS[n].public_key(), frozenset(["ipred-court-order", "lek-law-enforcement", "emergency"]))
             for n in ("s1", "s2", "s3")]
    return Registry.build(auth, staff)


def _desk(policy=None):
    reg = _registry()
    q = QueryDesk(reg, policy)
    return hd.HoldDesk(reg, q.policy, ["junet"], q.charge)


_n = iter(range(10**6))


def order(signer="police", role="authority", *, key=None, **kw):
    body = hd.hold_body(requester=signer, role=role, basis="lek-law-enforcement", operator="junet",
                        ip="198.51.100.7", port=None, from_ms=NOW - 2 * H, to_ms=NOW - H, case_ref="PM-1-26",
                        until_ms=NOW + 7 * DAY, issued_ms=NOW, nonce=f"{next(_n):032x}")
    body.update(kw)
    return body, hd.sign_hold(key or KEYS[signer], body)


def approval(body, staff, *, digest=None, issued=NOW):
    hid = hd.hold_of_body(body).hold_id
    return hd.sign_hold_approval(KEYS[staff], hold_id=hid, hold_digest=digest or hd.hold_digest(body),
                                 staff=staff, issued_ms=issued)


def release(hid, signer, role, *, issued=NOW):
    return hd.sign_hold_release(KEYS[signer], hold_id=hid, requester=signer, role=role, issued_ms=issued,
                                nonce=f"{next(_n):032x}")


def _set(desk, **kw):
    body, msg = order(**kw)
    assert desk.submit(msg, NOW).status == "pending"
    assert desk.approve(approval(body, "s1"), NOW).status == "pending"
    d = desk.approve(approval(body, "s2"), NOW)
    assert d.status == "set" and d.publish is not None
    return body, d.hold_id


def test_a_signed_order_takes_effect_after_two_staff_approvals_only():
    desk = _desk()
    body, msg = order()
    d = desk.submit(msg, NOW)
    assert (d.status, d.reply["needed"], d.reply["request_id"]) == ("pending", 2, f"police/hold-{d.hold_id}")
    assert desk.active == {}  # nothing held while pending
    d1 = desk.approve(approval(body, "s1"), NOW)
    assert d1.status == "pending" and d1.publish is None and desk.active == {}
    assert desk.approve(approval(body, "s1"), NOW).reason == "duplicate-approval"
    d2 = desk.approve(approval(body, "s2"), NOW)
    assert d2.status == "set" and d2.publish.requester == "authority:police"
    assert list(desk.active) == [d.hold_id] == [hd.hold_of_body(body).hold_id]
    assert [e["type"] for e in d.events + d1.events + d2.events] == [
        "legal-hold-received", "legal-hold-pending", "legal-hold-approval", "legal-hold-approval", "legal-hold-set"]


@pytest.mark.parametrize("kw,reason", [
    (dict(signer="rights", basis="ipred-court-order"), "basis-not-allowed"),   # IPRED: no preservation
    (dict(basis="emergency"), "basis-not-allowed"),                            # not registered for it
    (dict(ip="0.0.0.0/0"), "hold-too-wide"),
    (dict(ip="198.51.100.0/31"), "hold-too-wide"),
    (dict(ip="2001:db8::/48"), "hold-too-wide"),
    (dict(until_ms=NOW + 89 * DAY), "hold-too-long"),
    (dict(from_ms=0, to_ms=NOW + DAY), "interval-too-long"),
    (dict(operator="nobody"), "unknown-operator"),
    (dict(issued_ms=NOW - H), "stale-request"),
    (dict(issued_ms=NOW + H), "future-request"),
    (dict(ip="not-an-ip"), "bad-address"),
])
def test_bad_orders_are_refused_and_audited(kw, reason):
    desk = _desk()
    d = desk.submit(order(**kw)[1], NOW)
    assert (d.status, d.reason) == ("refused", reason)
    assert d.events[-1]["type"] == "legal-hold-refused" and d.events[-1]["reason"] == reason
    assert desk.active == {} and desk.pending() == []


def test_v6_slash64_is_the_widest_hold():
    desk = _desk()
    assert desk.submit(order(ip="2001:db8:1:2::/64")[1], NOW).status == "pending"


def test_unsigned_forged_and_unknown_orders_are_refused_unauthenticated():
    desk = _desk()
    body, msg = order()
    unsigned = msg.replace(msg[msg.index(b'"sig":"') + 7: msg.index(b'"sig":"') + 135], b"0" * 128)
    for raw, reason in ((b"{}", "malformed-hold"), (b"\xff", "malformed-hold"), (unsigned, "bad-signature"),
                        (order(key=KEYS["ghost"])[1], "bad-signature"),
                        (order(signer="ghost")[1], "unknown-requester"),
                        (order(signer="s1", role="authority", key=KEYS["s1"])[1], "unknown-requester")):
        d = desk.submit(raw, NOW)
        assert (d.status, d.reason, d.authenticated) == ("refused", reason, False)
        assert d.events[-1]["detail"] == "unauthenticated" and "request_id" not in d.reply
    assert desk.pending() == []


def test_replayed_order_and_duplicate_hold_are_refused():
    desk = _desk()
    body, msg = order()
    assert desk.submit(msg, NOW).status == "pending"
    assert desk.submit(msg, NOW).reason == "replayed-nonce"


def test_approvals_that_do_not_count():
    desk = _desk()
    body, msg = order(signer="s3", role="staff")
    assert desk.submit(msg, NOW).status == "pending"
    assert desk.approve(approval(body, "s3"), NOW).reason == "own-hold"
    assert desk.approve(approval(body, "s1", digest="0" * 64), NOW).reason == "digest-mismatch"
    assert desk.approve(approval(body, "s1", issued=NOW - 2 * DAY), NOW).reason == "stale-approval"
    other, _ = order()
    assert desk.approve(approval(other, "s1"), NOW).reason == "unknown-hold"
    forged = hd.sign_hold_approval(KEYS["ghost"], hold_id=hd.hold_of_body(body).hold_id,
                                   hold_digest=hd.hold_digest(body), staff="s1", issued_ms=NOW)
    d = desk.approve(forged, NOW)
    assert (d.status, d.reason, d.authenticated) == ("approval-rejected", "bad-signature", False)
    assert desk.active == {}


def test_release_by_requester_at_once_by_others_only_two_staff():
    desk = _desk()
    body, hid = _set(desk)
    d = desk.release(release(hid, "rights", "authority"), NOW)
    assert (d.status, d.reason) == ("refused", "not-hold-requester") and hid in desk.active
    assert desk.release(release(hid, "s1", "staff"), NOW).status == "release-pending"
    assert desk.release(release(hid, "s1", "staff"), NOW).reason == "duplicate-release"
    assert hid in desk.active
    d = desk.release(release(hid, "s2", "staff"), NOW)
    assert d.status == "released" and d.unpublish == hid and desk.active == {}
    assert d.events[0]["detail"] == "released-by-staff" and d.events[0]["approvals"] == ["s1", "s2"]
    _, hid2 = _set(desk, nonce="ab" * 16)
    d = desk.release(release(hid2, "police", "authority"), NOW)
    assert d.status == "released" and d.unpublish == hid2
    assert desk.release(release(hid2, "police", "authority"), NOW).reason == "unknown-hold"
    forged = hd.sign_hold_release(KEYS["ghost"], hold_id=hid, requester="police", role="authority",
                                  issued_ms=NOW, nonce="cd" * 16)
    assert desk.release(forged, NOW).reason == "bad-signature"


def test_lapse_expiry_and_state_round_trip():
    desk = _desk()
    body, hid = _set(desk)
    pend_body, pend = order(nonce="ef" * 16, ip="198.51.100.8")
    desk.submit(pend, NOW)
    desk.approve(approval(pend_body, "s1"), NOW)
    desk.release(release(hid, "s1", "staff"), NOW)
    back = hd.HoldDesk.from_dict(json_round(desk.to_dict()), desk.registry, desk.policy, ["junet"])
    assert back.to_dict() == desk.to_dict()
    assert back.release(release(hid, "s2", "staff"), NOW).status == "released"  # the first vote survived
    assert back.approve(approval(pend_body, "s2"), NOW).status == "set"
    out = back.expire(NOW + 8 * DAY)
    assert [(d.status, d.unpublish is not None) for d in out] == [("lapsed", True)]
    assert back.active == {}


def test_every_event_can_be_chained_and_verified():
    desk = _desk()
    chain = AuditChain()
    body, msg = order()
    recs = []
    for d in (desk.submit(b"junk", NOW), desk.submit(msg, NOW), desk.approve(approval(body, "s1"), NOW),
              desk.approve(approval(body, "s2"), NOW),
              desk.release(release(hd.hold_of_body(body).hold_id, "police", "authority"), NOW)):
        recs += [chain.append(e, NOW) for e in d.events]
    verify(recs)
    assert b"198.51.100.7" not in b"".join(recs)


def test_policy_bounds_for_holds():
    from stream.errors import ConfigError

    for bad in (dict(hold_approvals=1), dict(hold_max_ms=91 * DAY), dict(hold_bases=("nope",))):
        with pytest.raises(ConfigError):
            Policy(**bad)
    assert Policy.from_mapping({"hold_bases": ["lek-law-enforcement", "emergency"]}).hold_bases == (
        "lek-law-enforcement", "emergency")


def json_round(d):
    import json

    return json.loads(json.dumps(d))
