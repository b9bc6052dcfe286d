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
