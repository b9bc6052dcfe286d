"""The audit chain: appends verify; every change, removal, insertion and reordering is found,
at the right record."""

from __future__ import annotations

import json

import pytest

from stream import audit
from stream.audit import AuditChain, AuditError, verify
from stream.errors import IpanonError


def trail(n=6):
    chain = AuditChain()
    return [chain.append({"type": "request-received", "request_id": f"se-police/{i}",
                          "request_digest": f"{i:064x}"}, 1000 + i) for i in range(n)]


def test_a_clean_trail_verifies_and_resumes():
    t = trail()
    head = verify(t)
    assert head == json.loads(t[-1])["hash"]
    chain = AuditChain.resume(t[-1])
    t.append(chain.append({"type": "refused", "request_id": "x/1", "reason": "rate-limited"}, 2000))
    assert verify(t) == chain.head
    assert verify([]) == audit.GENESIS


@pytest.mark.parametrize("pos", [0, 5, 40, 100])
def test_a_flipped_byte_is_found_at_its_record(pos):
    t = trail()
    b = bytearray(t[3])
    b[pos % len(b)] ^= 0x01
    t[3] = bytes(b)
    with pytest.raises(AuditError) as e:
        verify(t)
    assert e.value.index == 3 and e.value.kind in ("changed", "malformed")


def test_a_rehashed_edit_breaks_the_next_link():
    t = trail()
    rec = json.loads(t[2])
    rec["reason"] = "rate-limited"
    rec["hash"] = audit.record_hash(rec)
    t[2] = audit.canonical(rec)
    with pytest.raises(AuditError) as e:
        verify(t)
    assert e.value.index == 3 and e.value.kind == "inserted"  # record 3's prev no longer links


def test_a_removed_record():
    t = trail()
    del t[2]
    with pytest.raises(AuditError) as e:
        verify(t, offsets=[10, 11, 13, 14, 15])
    assert (e.value.kind, e.value.index, e.value.offset, e.value.seq) == ("removed", 2, 13, 3)
    assert "seq 2 missing" in str(e.value) and "offset 13" in str(e.value)


def test_a_removed_last_record_needs_the_anchor():
    t = trail()
    head = verify(t)
    assert verify(t[:-1])  # a chain alone cannot know it lost its tail
    with pytest.raises(AuditError) as e:
        verify(t[:-1], expect_head=head)
    assert e.value.kind == "truncated"


def test_an_inserted_copy():
    t = trail()
    t.insert(4, t[1])
    with pytest.raises(AuditError) as e:
        verify(t)
    assert (e.value.kind, e.value.index) == ("inserted", 4)


def test_an_inserted_forgery_with_a_valid_link():
    t = trail()
    prev = json.loads(t[2])
    forged = {"v": 1, "seq": 3, "ts_ms": 1, "prev": prev["hash"], "type": "refused", "reason": "x"}
    forged["hash"] = audit.record_hash(forged)
    t.insert(3, audit.canonical(forged))
    with pytest.raises(AuditError) as e:
        verify(t)
    assert e.value.kind == "inserted" and e.value.index == 4 and "already at record 3" in str(e.value)


def test_an_inserted_record_with_a_foreign_sequence_number():
    t = trail()
    other = AuditChain(next_seq=50)
    t.insert(2, other.append({"type": "refused", "reason": "x"}, 1))
    with pytest.raises(AuditError) as e:
        verify(t)
    assert (e.value.kind, e.value.index) == ("inserted", 2)


def test_a_reordered_pair():
    t = trail()
    t[2], t[3] = t[3], t[2]
    with pytest.raises(AuditError) as e:
        verify(t)
    assert (e.value.kind, e.value.index, e.value.seq) == ("reordered", 2, 3)


def test_start_anchor_for_a_trail_trimmed_by_retention():
    t = trail()
    with pytest.raises(AuditError):
        verify(t[2:])
    prev = json.loads(t[1])["hash"]
    assert verify(t[2:], start=(2, prev)) == json.loads(t[-1])["hash"]


def test_events_cannot_carry_identity():
    chain = AuditChain()
    for bad in ({"type": "answered", "subscriber": "sub-1"}, {"type": "answered", "address": "192.0.2.1"},
                {"type": "nonsense"}, {"type": "answered", "approvals": [1]}):
        with pytest.raises(IpanonError):
            chain.append(bad, 0)
    assert chain.next_seq == 0


def test_trail_for_a_case():
    chain = AuditChain()
    t = [chain.append({"type": "pending", "request_id": "a/1", "case_ref": "C1"}, 1),
         chain.append({"type": "refused", "request_id": "b/1", "case_ref": "C2", "reason": "x"}, 2),
         chain.append({"type": "approval", "request_id": "a/1", "case_ref": "C1", "staff": "alice"}, 3)]
    assert [r["seq"] for r in audit.trail_for(t, case_ref="C1")] == [0, 2]
    assert [r["type"] for r in audit.trail_for(t, request_id="b/1")] == ["refused"]


def test_legal_hold_events_chain_without_the_address():
    chain = AuditChain()
    raw = chain.append(audit.legal_hold_event("set", hold_id="ab12cd34ef56ab78", case_ref="PMÖÄ 5331-21",
                                              until_ms=5000), 1)
    rec = audit.parse_record(raw)
    assert (rec["type"], rec["hold_id"], rec["until_ms"]) == ("legal-hold-set", "ab12cd34ef56ab78", 5000)
    assert rec["case_ref"] == "PMÖÄ 5331-21"  # non-ASCII survives the ASCII-escaped encoding
    chain.append(audit.legal_hold_event("released", hold_id="ab12cd34ef56ab78", case_ref="x"), 2)
    with pytest.raises(IpanonError):
        audit.legal_hold_event("extended", hold_id="x", case_ref="x")


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 12), data=st.data())
def test_any_single_tampering_is_detected_at_or_near_its_place(n, data):
    t = trail(n)
    op = data.draw(st.sampled_from(["flip", "remove", "swap", "duplicate"]))
    i = data.draw(st.integers(0, n - 2))  # not the last record: a cut-off tail needs the anchor
    if op == "flip":
        b = bytearray(t[i])
        pos = data.draw(st.integers(0, len(b) - 1))
        b[pos] ^= 1 << data.draw(st.integers(0, 7))
        t[i] = bytes(b)
        want = {i}
    elif op == "remove":
        del t[i]
        want = {i}
    elif op == "swap":
        t[i], t[i + 1] = t[i + 1], t[i]
        want = {i}
    else:
        j = data.draw(st.integers(0, n - 1))
        t.insert(i + 1, t[j])
        want = {i + 1, i + 2}  # the copy, or (if it repeats the record before) the record after
    with pytest.raises(AuditError) as e:
        verify(t)
    assert e.value.index in want, (op, i, e.value)


# -- the anchor: signed checkpoints (verify_anchored) ------------------------------------------

from cryptography.hazmat.primitives.asymmetric import ed25519 as _ed  # noqa: E402

from stream.audit import AuditChain as _Chain, verify_anchored  # noqa: E402

_KEY = _ed.Ed25519PrivateKey.generate()
_T = 1_700_000_000_000


def _trail(n=4):
    c = _Chain()
    recs = [c.append({"type": "refused", "reason": "bad-signature"}, _T + i) for i in range(n)]
    recs.append(c.checkpoint(_KEY, _T + n))
    return c, recs


def _check(recs, now=_T + 100, **kw):
    return verify_anchored(recs, public_key=_KEY.public_key(), now_ms=now, **kw)


def test_an_anchored_trail_verifies_and_reports_checkpoint_age():
    c, recs = _trail()
    r = _check(recs, now=_T + 5_000)
    assert r.ok and r.records == 5 and r.last_checkpoint_seq == 4 and r.checkpoint_age_ms == 5_000 - 4
    assert r.unanchored == 0


def test_forged_append_is_unanchored_once_older_than_the_grace():
    c, recs = _trail()
    forged = c.append({"type": "refused", "reason": "x"}, _T + 50)  # links perfectly, no signature
    assert _check(recs + [forged], now=_T + 60, max_unanchored_ms=1_000).ok  # in flight
    r = _check(recs + [forged], now=_T + 5_000, max_unanchored_ms=1_000)
    assert (r.ok, r.problem, r.unanchored) == (False, "unanchored", 1)
    future = _Chain.resume(recs[-1]).append({"type": "refused"}, _T + 10**9)
    assert _check(recs + [future], now=_T + 60).problem == "unanchored"


def test_rewritten_tail_with_a_copied_or_forged_checkpoint_is_broken():
    c, recs = _trail()
    c2 = _Chain.resume(recs[2])  # rewrite from seq 3 on, consistently hashed
    rewritten = recs[:3] + [c2.append({"type": "refused", "reason": "rewritten"}, _T + 3)]
    r = _check(rewritten + [recs[4]])
    assert not r.ok and r.problem == "inserted"  # the old checkpoint no longer links
    r = _check(rewritten + [c2.checkpoint(_ed.Ed25519PrivateKey.generate(), _T + 4)])
    assert (r.ok, r.problem) == (False, "bad-checkpoint")
    r = _check(rewritten, now=_T + 60_000)
    assert (r.ok, r.problem) == (False, "no-checkpoint")  # the only checkpoint was cut off


def test_truncated_tail_and_deleted_front_are_broken():
    c, recs = _trail()
    more = recs + [c.append({"type": "refused"}, _T + 10), c.checkpoint(_KEY, _T + 11)]
    assert _check(more[:-1], now=_T + 60_000).problem == "unanchored"   # lost its checkpoint
    r = _check(recs, now=_T + 7_200_000, max_checkpoint_age_ms=3_600_000)  # cut back to an old one
    assert (r.ok, r.problem) == (False, "stale-anchor")
    assert _check(more[3:], offsets=list(range(3, len(more)))).problem == "truncated-front"
    assert _check(more[3:]).problem == "removed"  # seq 3 where 0 was due
    assert _check([], first_offset=10).problem == "truncated-front"
    assert _check([]).ok


def test_trail_without_any_checkpoint_is_not_anchored():
    c = _Chain()
    recs = [c.append({"type": "refused"}, _T)]
    assert _check(recs).problem == "no-checkpoint"
