"""The query desk: every refusal reason, four-eyes, expiry, replay, state round-trip, answers.

The resolver here is a fake callable (this tests the desk's logic, not a mocked broker)."""

from __future__ import annotations

import json
import secrets
import textwrap

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from stream import access, audit
from stream.access import (BASES, DAY_MS, HOUR_MS, Authority, Policy, QueryDesk, Registry, Staff,
                           public_key_text, request_body, sign_approval, sign_request)
from stream.errors import ConfigError, CryptoError

T0 = 1_780_000_000_000  # a fixed "now"


class Keys:
    def __init__(self):
        self.police_sign = ed25519.Ed25519PrivateKey.generate()
        self.police_enc = x25519.X25519PrivateKey.generate()
        self.rights_sign = ed25519.Ed25519PrivateKey.generate()
        self.rights_enc = x25519.X25519PrivateKey.generate()
        self.staff = {n: ed25519.Ed25519PrivateKey.generate() for n in ("alice", "bob", "carol", "dave")}


@pytest.fixture(scope="module")
def keys():
    return Keys()


@pytest.fixture
def registry(keys):
    police = Authority("se-police", "Police (test)", "SE", keys.police_sign.public_key(),
                       keys.police_enc.public_key(), frozenset({"lek-law-enforcement", "emergency"}),
                       per_hour=60, burst=3)
    rights = Authority("rights-holder", "Rights holder (test)", "SE", keys.rights_sign.public_key(),
                       keys.rights_enc.public_key(), frozenset({"ipred-court-order"}), per_hour=60, burst=10)
    staff = [Staff(n, n, k.public_key(), frozenset(BASES)) for n, k in keys.staff.items() if n != "dave"]
    staff.append(Staff("dave", "dave", keys.staff["dave"].public_key(), frozenset({"lek-law-enforcement"})))
    return Registry.build([police, rights], staff)


def req(keys, *, authority="se-police", number=None, basis="lek-law-enforcement", address="198.51.100.7",
        port=40123, from_ms=T0 - HOUR_MS, to_ms=T0 - HOUR_MS // 2, issued_ms=T0, nonce=None, key=None):
    body = request_body(authority=authority, request_number=number or secrets.token_hex(4), basis=basis,
                        case_ref="AM-1234-26", address=address, port=port, from_ms=from_ms, to_ms=to_ms,
                        issued_ms=issued_ms, nonce=nonce or secrets.token_hex(16))
    if key is None:
        key = keys.rights_sign if authority == "rights-holder" else keys.police_sign
    return sign_request(key, body), body


def ipred(keys, **kw):
    return req(keys, authority="rights-holder", basis="ipred-court-order", **kw)


def approval(keys, body, staff, *, issued_ms=T0, digest=None):
    rid = f"{body['authority']}/{body['request_number']}"
    return sign_approval(keys.staff[staff], request_id=rid, request_digest=digest or access.request_digest(body),
                         staff=staff, issued_ms=issued_ms)


def fake_resolver(calls):
    def resolve(address, port, from_ms, to_ms):
        calls.append((address, port, from_ms, to_ms))
        return {"matches": [{"subscriber": "sub-0042", "from_ms": from_ms, "to_ms": to_ms}]}
    return resolve


def test_lek_request_is_ready_without_approval_and_answer_is_sealed(keys, registry):
    desk = QueryDesk(registry)
    raw, body = req(keys)
    d = desk.submit(raw, T0)
    assert d.status == "ready" and d.reason is None
    assert [e["type"] for e in d.events] == ["request-received", "ready"]
    calls = []
    a = desk.answer(d, fake_resolver(calls), T0 + 5)
    assert calls == [("198.51.100.7", 40123, body["from_ms"], body["to_ms"])]
    # the reply carries no plaintext subscriber; only the authority's key opens it
    assert b"sub-0042" not in json.dumps(a.reply).encode()
    opened = access.open_answer(keys.police_enc, a.reply)
    assert opened["result"]["matches"][0]["subscriber"] == "sub-0042"
    assert opened["request_id"] == d.request_id and opened["request_digest"] == d.request.digest
    with pytest.raises(CryptoError):
        access.open_answer(keys.rights_enc, a.reply)
    assert a.events[0]["answer_digest"] == audit_digest(a.sealed)
    assert a.events[0]["answer_kind"] == "match"


def audit_digest(blob):
    import hashlib
    return hashlib.sha256(blob).hexdigest()


# --- every refusal reason ------------------------------------------------------------------


def refused(desk, raw, now=T0):
    d = desk.submit(raw, now)
    assert d.status == "refused", d
    assert d.events[-1]["type"] == "refused" and d.events[-1]["reason"] == d.reason
    assert d.reply["status"] == "refused" and d.reply["reason"] == d.reason
    return d.reason


def test_malformed_request(keys, registry):
    desk = QueryDesk(registry)
    assert refused(desk, b"not json") == "malformed-request"
    assert refused(desk, b'{"type":"request","v":1}') == "malformed-request"
    raw, body = req(keys)
    msg = json.loads(raw)
    msg["body"]["extra"] = 1
    assert refused(desk, json.dumps(msg).encode()) == "malformed-request"
    raw, _ = req(keys, address="2001:DB8::1")  # not canonical text: would not re-encode exactly
    assert refused(desk, raw) == "malformed-request"


def test_unknown_authority(keys, registry):
    raw, _ = req(keys, authority="nobody")
    assert refused(QueryDesk(registry), raw) == "unknown-authority"


def test_forged_signature(keys, registry):
    desk = QueryDesk(registry)
    raw, _ = req(keys, key=keys.rights_sign)  # police request signed by someone else
    assert refused(desk, raw) == "bad-signature"
    raw, _ = req(keys)
    msg = json.loads(raw)
    msg["body"]["port"] = 40124  # altered after signing
    d = desk.submit(json.dumps(msg).encode(), T0)
    assert d.reason == "bad-signature"
    # the id is only claimed: the reply and the trail say so
    assert d.reply["authenticated"] is False and d.events[-1]["detail"] == "unauthenticated"
    raw, _ = req(keys, port=70000)
    d = desk.submit(raw, T0)
    assert d.reason == "bad-scope" and "authenticated" not in d.reply and "detail" not in d.events[-1]


def test_forgeries_do_not_consume_rate_or_nonces(keys, registry):
    desk = QueryDesk(registry)
    nonce = secrets.token_hex(16)
    for _ in range(10):
        raw, _ = req(keys, key=keys.rights_sign, nonce=nonce)
        assert refused(desk, raw) == "bad-signature"
    raw, _ = req(keys, nonce=nonce)
    assert desk.submit(raw, T0).status == "ready"


def test_basis_not_allowed(keys, registry):
    raw, _ = req(keys, basis="ipred-court-order")  # police is not registered for IPRED
    assert refused(QueryDesk(registry), raw) == "basis-not-allowed"
    raw, _ = req(keys, basis="curiosity")
    assert refused(QueryDesk(registry), raw) == "basis-not-allowed"


def test_freshness(keys, registry):
    p = Policy()
    desk = QueryDesk(registry, p)
    raw, _ = req(keys, issued_ms=T0 - p.max_age_ms)
    assert refused(desk, raw) == "stale-request"
    raw, _ = req(keys, issued_ms=T0 - p.max_age_ms + 1)
    assert desk.submit(raw, T0).status == "ready"
    raw, _ = req(keys, issued_ms=T0 + p.clock_skew_ms + 1)
    assert refused(desk, raw) == "future-request"
    raw, _ = req(keys, issued_ms=T0 + p.clock_skew_ms)
    assert desk.submit(raw, T0).status == "ready"


def test_replayed_nonce_and_duplicate_id(keys, registry):
    desk = QueryDesk(registry)
    raw, body = req(keys)
    assert desk.submit(raw, T0).status == "ready"
    assert refused(desk, raw, T0 + 1) == "replayed-nonce"
    raw2, _ = req(keys, number=body["request_number"])  # same id, fresh nonce
    assert refused(desk, raw2, T0 + 2) == "duplicate-request-id"


def test_nonce_memory_is_bounded_by_the_freshness_window(keys, registry):
    p = Policy()
    desk = QueryDesk(registry, p)
    raw, _ = req(keys)
    desk.submit(raw, T0)
    assert len(desk.to_dict()["seen"]) == 2
    desk.expire(T0 + p.max_age_ms)
    assert desk.to_dict()["seen"] == {}
    # and the replay is still refused, now by freshness
    assert refused(desk, raw, T0 + p.max_age_ms) == "stale-request"


def test_scope(keys, registry):
    desk = QueryDesk(registry)
    raw, _ = req(keys, address="198.51.100.0/24", port=None)
    assert desk.submit(raw, T0).status == "ready"
    raw, _ = req(keys, address="198.51.100.0/23", port=None)
    assert refused(desk, raw) == "scope-too-wide"
    raw, _ = req(keys, address="2001:db8:1:ab00::/56", port=None)
    assert desk.submit(raw, T0).status == "ready"
    raw, _ = req(keys, address="2001:db8::/48", port=None)
    assert refused(desk, raw) == "scope-too-wide"
    raw, _ = req(keys, address="198.51.100.0/24", port=80)
    assert refused(desk, raw) == "bad-scope"
    raw, _ = req(keys, port=70000)
    assert refused(desk, raw) == "bad-scope"


def test_interval(keys, registry):
    desk = QueryDesk(registry)
    raw, _ = req(keys, from_ms=T0, to_ms=T0)
    assert refused(desk, raw) == "bad-interval"
    raw, _ = req(keys, from_ms=T0 - 31 * DAY_MS - 1, to_ms=T0)
    assert refused(desk, raw) == "interval-too-long"
    raw, _ = req(keys, basis="emergency", from_ms=T0 - DAY_MS - 1, to_ms=T0)
    assert refused(desk, raw) == "interval-too-long"
    raw, _ = req(keys, basis="emergency", from_ms=T0 - DAY_MS, to_ms=T0)
    assert desk.submit(raw, T0).status == "ready"


def test_rate_limit_token_bucket(keys, registry):
    desk = QueryDesk(registry)  # police: burst 3, 60 per hour = one per minute
    for i in range(3):
        assert desk.submit(req(keys)[0], T0).status == "ready"
    assert refused(desk, req(keys)[0], T0) == "rate-limited"
    assert refused(desk, req(keys)[0], T0 + 59_999) == "rate-limited"
    assert desk.submit(req(keys)[0], T0 + 60_000).status == "ready"
    assert refused(desk, req(keys)[0], T0 + 60_001) == "rate-limited"
    # the other authority has its own bucket
    assert desk.submit(ipred(keys)[0], T0 + 60_001).status == "pending"


# --- four eyes -----------------------------------------------------------------------------


def test_ipred_needs_two_distinct_approvals(keys, registry):
    desk = QueryDesk(registry)
    raw, body = ipred(keys)
    d = desk.submit(raw, T0)
    assert d.status == "pending" and d.needed == 2
    assert d.reply["status"] == "pending" and d.reply["request_digest"] == d.request.digest
    d1 = desk.approve(approval(keys, body, "alice"), T0 + 10)
    assert d1.status == "pending" and d1.approvals == ("alice",)
    again = desk.approve(approval(keys, body, "alice", issued_ms=T0 + 20), T0 + 20)
    assert again.status == "approval-rejected" and again.reason == "duplicate-approval"
    assert again.approvals == ("alice",)  # counted once
    d2 = desk.approve(approval(keys, body, "bob"), T0 + 30)
    assert d2.status == "ready" and d2.approvals == ("alice", "bob")
    assert [e["type"] for e in d2.events] == ["approval", "ready"]
    assert desk.pending() == []
    # a third approval after the fact finds nothing to approve
    late = desk.approve(approval(keys, body, "carol"), T0 + 40)
    assert late.reason == "unknown-request"


def test_one_approval_stays_pending_then_expires(keys, registry):
    p = Policy()
    desk = QueryDesk(registry, p)
    raw, body = ipred(keys)
    desk.submit(raw, T0)
    assert desk.approve(approval(keys, body, "alice"), T0 + 1).status == "pending"
    assert desk.expire(T0 + p.pending_ttl_ms - 1) == []
    [d] = desk.expire(T0 + p.pending_ttl_ms)
    assert d.status == "expired" and d.reply["status"] == "expired" and d.events[0]["type"] == "expired"
    assert desk.pending() == []


def test_approvals_expire(keys, registry):
    p = Policy(approval_ttl_ms=HOUR_MS)
    desk = QueryDesk(registry, p)
    raw, body = ipred(keys)
    desk.submit(raw, T0)
    desk.approve(approval(keys, body, "alice"), T0)
    d = desk.approve(approval(keys, body, "bob", issued_ms=T0 + HOUR_MS), T0 + HOUR_MS)
    assert d.status == "pending" and d.approvals == ("bob",)  # alice's approval lapsed
    old = desk.approve(approval(keys, body, "carol", issued_ms=T0), T0 + HOUR_MS)
    assert old.reason == "stale-approval"


@pytest.mark.parametrize("case, reason", [
    ("unknown-staff", "unknown-staff"), ("forged", "bad-signature"), ("digest", "digest-mismatch"),
    ("basis", "staff-not-allowed"), ("malformed", "malformed-approval")])
def test_bad_approvals_do_not_count(keys, registry, case, reason):
    desk = QueryDesk(registry)
    raw, body = ipred(keys)
    desk.submit(raw, T0)
    rid = f"rights-holder/{body['request_number']}"
    dig = access.request_digest(body)
    if case == "unknown-staff":
        msg = sign_approval(keys.staff["alice"], request_id=rid, request_digest=dig, staff="mallory", issued_ms=T0)
    elif case == "forged":
        msg = sign_approval(keys.staff["alice"], request_id=rid, request_digest=dig, staff="bob", issued_ms=T0)
    elif case == "digest":
        msg = approval(keys, body, "alice", digest="0" * 64)
    elif case == "basis":
        msg = approval(keys, body, "dave")  # dave may approve LEK only
    else:
        msg = b'{"type":"approval"}'
    d = desk.approve(msg, T0 + 1)
    assert d.status == "approval-rejected" and d.reason == reason
    assert d.events[0]["type"] == "approval-rejected" and d.events[0]["reason"] == reason
    assert desk.pending() == [rid]
    assert desk.approve(approval(keys, body, "alice"), T0 + 2).approvals == ("alice",)


def test_state_round_trips_through_json(keys, registry):
    desk = QueryDesk(registry)
    raw, body = ipred(keys)
    desk.submit(raw, T0)
    desk.submit(req(keys)[0], T0)
    desk.approve(approval(keys, body, "alice"), T0 + 1)
    state = json.loads(json.dumps(desk.to_dict()))
    again = QueryDesk.from_dict(state, registry)
    assert again.to_dict() == desk.to_dict()
    assert again.submit(raw, T0 + 2).reason == "replayed-nonce"
    assert again.approve(approval(keys, body, "bob"), T0 + 3).status == "ready"


def test_every_refusal_reason_is_documented():
    import pathlib
    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "lawful-access.md").read_text()
    missing = [r for r in access.REASONS if f"`{r}`" not in doc]
    assert missing == []


def test_events_are_valid_audit_events_and_carry_no_address(keys, registry):
    desk = QueryDesk(registry)
    raw, body = ipred(keys)
    events = list(desk.submit(raw, T0).events)
    events += desk.approve(approval(keys, body, "alice"), T0).events
    d = desk.approve(approval(keys, body, "bob"), T0)
    events += d.events
    events += desk.answer(d, fake_resolver([]), T0).events
    events += desk.submit(b"junk", T0).events
    chain = audit.AuditChain()
    trail = [chain.append(e, T0) for e in events]
    audit.verify(trail)
    blob = b"".join(trail)
    assert b"198.51.100.7" not in blob and b"sub-0042" not in blob and b"40123" not in blob


# --- registry loading ----------------------------------------------------------------------


def _write(d, name, text):
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(textwrap.dedent(text))


def test_registry_loads_and_errors_name_file_and_field(tmp_path, keys):
    a, s = tmp_path / "authorities", tmp_path / "staff"
    _write(a, "police.toml", f"""
        id = "se-police"
        signing_key = "{public_key_text(keys.police_sign.public_key())}"
        encryption_key = "{public_key_text(keys.police_enc.public_key())}"
        bases = ["lek-law-enforcement"]
        [rate_limit]
        per_hour = 30
        burst = 5
        """)
    _write(s, "alice.toml", f'id = "alice"\nsigning_key = "{public_key_text(keys.staff["alice"].public_key())}"\n')
    reg = Registry.load(a)
    assert reg.authorities["se-police"].burst == 5 and reg.staff["alice"].bases == frozenset(BASES)
    _write(a, "bad.toml", 'id = "other"\nsigning_key = "ed25519:00"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml.*signing_key"):
        Registry.load(a)
    _write(a, "bad.toml", f'id = "other"\nsigning_key = "{public_key_text(keys.police_sign.public_key())}"\n'
                          f'encryption_key = "{public_key_text(keys.police_enc.public_key())}"\nbases = ["snooping"]\n')
    with pytest.raises(ConfigError, match=r"bad\.toml.*bases.*snooping"):
        Registry.load(a)


def test_policy_refuses_ipred_without_approval():
    with pytest.raises(ConfigError, match="ipred"):
        Policy.from_mapping({"approvals_required": {"ipred-court-order": 0}})
    assert Policy.from_mapping({"approvals_required": {"emergency": 1}}).approvals_required == {
        "ipred-court-order": 2, "lek-law-enforcement": 0, "emergency": 1}
    with pytest.raises(ConfigError, match="unknown"):
        Policy.from_mapping({"max_age": 1})


def test_demo_registry_in_config_loads():
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2]
    reg = Registry.load(root / "config" / "authorities", root / "config" / "staff")
    assert any("ipred-court-order" in a.bases for a in reg.authorities.values())
    assert len(reg.staff) >= 2


# -- junk: unauthenticated input is counted and summarised, never audited one by one ----------

def test_junk_ledger_summarises_per_identity_and_reason_per_interval():
    from stream.access import JunkLedger, is_junk
    from stream.audit import AuditChain

    led = JunkLedger(["police", "alice"])
    assert [led.identity(k) for k in (b"police", b"alice", b"hold", b"invented", b"\xff", None)] == [
        "police", "alice", "hold", "unknown", "unknown", "unknown"]
    for i in range(1000):
        led.add(led.identity(b"police" if i % 2 else b"x%d" % i), "bad-signature" if i % 4 < 2 else "malformed-request",
                1_000 + i)
    assert led.flush(1_000 + 59_999, 60_000) == []  # the interval is not over
    events = led.flush(61_000, 60_000)
    assert sum(e["count"] for e in events) == 1000 and len(events) == 4
    assert {(e["identity"], e["reason"]) for e in events} == {
        ("police", "bad-signature"), ("police", "malformed-request"),
        ("unknown", "bad-signature"), ("unknown", "malformed-request")}
    chain = AuditChain()
    for e in events:
        chain.append(e, 61_000)  # every summary is a valid audit event
    assert led.flush(10**9, 60_000) == []  # nothing new, nothing written
    led.add("police", "bad-signature", 5)
    assert JunkLedger(["police"]).load(led.to_dict()).to_dict() == led.to_dict()
    assert is_junk("refused", "bad-signature") and is_junk("refused", "stale-request", authenticated=False)
    assert not is_junk("refused", "stale-request") and not is_junk("pending", None)
    assert is_junk("approval-rejected", "unknown-staff") and not is_junk("approval-rejected", "digest-mismatch")
