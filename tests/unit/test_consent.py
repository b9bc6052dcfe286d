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


def test_consent_matches_the_subscriber_whatever_the_spelling():
    """Withdrawing ``kund-77@…`` once left ``Kund-77@…`` flowing (keys compared byte for
    byte).  The binding's spelling and the operator's spelling must meet in one key."""
    from stream.consent import normalise_subscriber

    r = ring()
    base = consent_key(r, "kund-77@isp.example")
    for spelling in ("Kund-77@isp.example", "KUND-77@ISP.EXAMPLE", " kund-77@Isp.Example\t", "ｋｕｎｄ-77@isp.example"):
        assert consent_key(r, spelling) == base, spelling
    assert consent_key(r, "kund-78@isp.example") != base
    mac = consent_key(r, "02:00:5e:10:00:01")           # how the DHCP parsers write a MAC
    for spelling in ("02:00:5E:10:00:01", "02-00-5e-10-00-01", "0200.5e10.0001", "02005E100001", "2:0:5e:10:0:1"):
        assert consent_key(r, spelling) == mac, spelling
    assert normalise_subscriber("Kund-77@ISP.example") == "kund-77@isp.example"
    view = ConsentView()
    view.apply(grant(r, "Kund-77@isp.example", 1))
    assert view.allows(consent_key(r, "kund-77@isp.example"))
    view.apply(withdraw(r, "kund-77@isp.example", 2))   # the reported attack
    assert not view.allows(consent_key(r, "Kund-77@isp.example"))
    with pytest.raises(Rejected):
        consent_key(r, "   ")


def test_erasure_notices_name_the_pseudonyms_of_every_live_epoch_and_nothing_raw():
    """A withdrawal must tell consumers what to drop: the notice carries exactly what stats
    records carry for the subscriber (the epoch's HMAC pseudonym), for every epoch the ring can
    still derive within the promise."""
    import json

    from stream.consent import erasure_epochs, erasure_notices, honour_erasures
    from stream.keyring import epoch_of
    from stream.stats import SUBSCRIBER_DOMAIN

    DAY = 86_400_000
    now = 20_000 * DAY + 5 * 3_600_000 + 123
    r = ring(epoch=epoch_of(now, DAY) - 3)
    # epochs: from max(oldest live, epoch of now - promise) to the current one
    assert list(erasure_epochs(r, DAY, 2 * DAY, now)) == [19_998, 19_999, 20_000]
    assert list(erasure_epochs(r, DAY, 30 * DAY, now)) == [19_997, 19_998, 19_999, 20_000]
    out = erasure_notices(r, "kund-77@isp.example", key_epoch_ms=DAY, promise_ms=2 * DAY, bucket_ms=3_600_000,
                          now_ms=now)
    vals = [json.loads(v) for _k, v in out]
    assert [(v["epoch"], v["subscriber"]) for v in vals] == \
        [(e, r.hmac(e).pseudonym(SUBSCRIBER_DOMAIN + "kund-77@isp.example")) for e in (19_998, 19_999, 20_000)]
    assert all(k.decode() == f"junet:{v['epoch']}:{v['subscriber']}" for (k, _), v in zip(out, vals))
    assert all(v["until_bucket_ms"] == 20_000 * DAY + 5 * 3_600_000 and v["reason"] == "consent-withdrawn"
               for v in vals)
    assert b"kund-77" not in b"".join(k + v for k, v in out)
    with pytest.raises(Rejected):
        erasure_notices(r, "", key_epoch_ms=DAY, promise_ms=DAY, bucket_ms=3_600_000, now_ms=now)

    # the consumer rule: drop records of a named (operator, epoch, pseudonym) up to the bucket
    p = vals[-1]["subscriber"]
    recs = [{"operator": "junet", "epoch": 20_000, "subscriber": p, "bucket_ms": vals[-1]["until_bucket_ms"]},
            {"operator": "junet", "epoch": 20_000, "subscriber": p, "bucket_ms": vals[-1]["until_bucket_ms"] + 3_600_000},
            {"operator": "junet", "epoch": 20_000, "subscriber": "0" * 32, "bucket_ms": 0},
            {"operator": "hektor", "epoch": 20_000, "subscriber": p, "bucket_ms": 0},
            {"operator": "junet", "epoch": 20_000, "subscriber": None, "bucket_ms": 0}]
    assert honour_erasures(recs, vals) == recs[1:]
