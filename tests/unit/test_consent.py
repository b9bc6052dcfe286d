"""stream.consent: keys are keyed hashes (no raw identity), records round-trip, last write wins."""

from __future__ import annotations

import pytest

from stream.consent import ConsentRecord, ConsentView, consent_key, grant, withdraw
from stream.errors import Rejected
from stream.keyring import Keyring

SEED = bytes(range(32))
SUB = "kund-0001@isp.example"


def ring(op="junet", epoch=0):
    return Keyring.create(op, SEED, epoch=epoch)


def test_key_is_operator_plus_keyed_hash_stable_across_epochs():
    k = consent_key(ring(), SUB)
    op, h = k.split(":")
    assert op == "junet" and len(h) == 32 and SUB not in k
    assert k == consent_key(ring(epoch=50), SUB)               # index key: outlives epochs
    assert k == f"junet:{ring().key_id('consent/statistics/' + SUB)}"
    assert k != consent_key(ring(), "kund-0002@isp.example")
    assert k.split(":")[1] != consent_key(ring("hektor"), SUB).split(":")[1]
    assert k != consent_key(Keyring.create("junet", bytes(32)), SUB)  # another key, another hash


def test_records_round_trip_and_hold_no_identity():
    g = grant(ring(), SUB, 1_700_000_000_000)
    key, value = g.encode()
    assert SUB.encode() not in key + value
    back = ConsentRecord.decode(key, value)
    assert back == g and back.granted
    tomb = ConsentRecord.decode(key, None)
    assert tomb.state is None and not tomb.granted


@pytest.mark.parametrize("key,value,reason", [
    (None, b"{}", "bad-consent-key"),
    (b"junet:xyz", None, "bad-consent-key"),
    (b"junet:" + b"a" * 32, b"not json", "bad-consent-record"),
    (b"junet:" + b"a" * 32, b'{"v":1,"operator":"junet","state":"maybe"}', "bad-consent-state"),
    (b"junet:" + b"a" * 32, b'{"v":1,"operator":"hektor","state":"granted"}', "bad-consent-key"),
    (b"junet:" + b"a" * 32, b'{"v":2,"operator":"junet","state":"granted"}', "bad-consent-record"),
])
def test_bad_records_are_rejected_with_a_reason(key, value, reason):
    with pytest.raises(Rejected) as e:
        ConsentRecord.decode(key, value)
    assert e.value.reason == reason


def test_view_applies_in_order_last_write_wins():
    r = ring()
    v = ConsentView()
    k = consent_key(r, SUB)
    assert not v.allows(k)
    v.apply(grant(r, SUB, 1))
    assert v.allows(k) and not v.allows(consent_key(r, "someone-else"))
    v.apply(withdraw(r, SUB, 2))
    assert not v.allows(k)
    v.apply(grant(r, SUB, 3))
    v.apply(ConsentRecord.decode(k.encode(), None))            # tombstone: forgotten = no consent
    assert not v.allows(k) and len(v) == 0 and v.applied == 4
    assert SUB not in repr(v)
