"""The worker-to-worker lookup format (stream.lookup_wire): layout, and every way a request or
answer that was not made by a key holder, for this place and time, is refused."""

from __future__ import annotations

import json

import pytest

from stream import lookup_wire as lw
from stream.errors import CryptoError, Rejected

KEY = bytes(range(32))
TOPIC = "t1-lookup-requests"
NOW = 1_765_000_000_000
Q = {"operator": "connect2ip", "ip": "100.64.12.34", "port": None, "from_ms": NOW - 60_000, "to_ms": NOW - 59_999}


def sealed(**kw):
    args = dict(request_id="r1", partition=3, now_ms=NOW)
    args.update(kw)
    return lw.LookupSeal(KEY, TOPIC).seal_request(Q, **args)


def refused(blob, reason, *, key=KEY, topic=TOPIC, partition=3, now_ms=NOW):
    with pytest.raises(Rejected) as e:
        lw.LookupSeal(key, topic).open_request(blob, partition=partition, now_ms=now_ms)
    assert e.value.reason == reason
    assert "100.64" not in str(e.value)  # a refusal never repeats the content


def test_layout_round_trip_and_no_plaintext():
    blob = sealed()
    assert blob[0] == lw.VERSION
    assert (len(blob) - 1 - lw.NONCE_LEN - lw.TAG_LEN) % lw.PAD == 0  # padded: v4 and v6 look alike
    for needle in (b"100.64", b"connect2ip", b"from_ms", b"r1"):
        assert needle not in blob
    req = lw.LookupSeal(KEY, TOPIC).open_request(blob, partition=3, now_ms=NOW + 1)
    assert req == {**Q, "id": "r1", "ts_ms": NOW, "partition": 3}
    v6 = lw.LookupSeal(KEY, TOPIC).seal_request({**Q, "ip": "2001:db8:4711:ab00::1"}, request_id="r1",
                                                partition=3, now_ms=NOW)
    assert len(v6) == len(blob)
    assert sealed() != blob  # a fresh nonce every time


def test_plaintext_json_as_in_the_issue_is_unauthenticated():
    refused(json.dumps({**Q, "id": "x"}).encode(), "unauthenticated")
    refused(b"", "unauthenticated")
    refused(None, "unauthenticated")


def test_wrong_key_forged_tag_and_every_altered_byte_are_refused():
    blob = sealed()
    refused(blob, "unauthenticated", key=bytes(32))
    refused(blob, "unauthenticated", topic="other-lookup-requests")  # another deployment's topic
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        refused(bytes(bad), "unauthenticated")
    refused(blob[:-1], "unauthenticated")


def test_time_partition_and_replay():
    blob = sealed()
    refused(blob, "wrong-partition", partition=4)
    refused(blob, "stale", now_ms=NOW + lw.MAX_AGE_MS + 1)
    refused(blob, "future", now_ms=NOW - lw.MAX_AHEAD_MS - 1)
    lw.LookupSeal(KEY, TOPIC).open_request(blob, partition=3, now_ms=NOW + lw.MAX_AGE_MS)  # the edge is in
    guard = lw.ReplayGuard()
    guard.check(lw.nonce_of(blob), NOW, NOW)
    with pytest.raises(Rejected) as e:
        guard.check(lw.nonce_of(blob), NOW, NOW + 10)
    assert e.value.reason == "replayed"
    guard.check(lw.nonce_of(sealed()), NOW, NOW + 10)  # another request is fine
    # memory is bounded by the window: an old nonce is forgotten once it could only be stale
    guard.check(lw.nonce_of(sealed()), NOW + 10 * lw.MAX_AGE_MS, NOW + 10 * lw.MAX_AGE_MS)
    assert len(guard) == 1


def test_a_sealed_non_request_is_malformed():
    s = lw.LookupSeal(KEY, TOPIC)
    blob = lw._seal(s._req, b'{"ip": "100.64.12.34"}', s._req_aad, None)
    refused(blob, "malformed")


def test_answers_are_bound_to_their_request_and_direction():
    s = lw.LookupSeal(KEY, TOPIC)
    ans = {"id": "r1", "status": "ok", "holders": [{"subscriber": "alice@isp.example"}]}
    blob = s.seal_answer(ans, request_id="r1")
    assert b"alice" not in blob and b"ok" not in blob
    assert s.open_answer(blob, request_id="r1") == ans
    with pytest.raises(CryptoError):
        s.open_answer(blob, request_id="r2")
    with pytest.raises(CryptoError):
        lw.LookupSeal(bytes(32), TOPIC).open_answer(blob, request_id="r1")
    # an answer cannot be replayed as a request, nor a request read as an answer
    refused(blob, "unauthenticated")
    with pytest.raises(CryptoError):
        s.open_answer(sealed(request_id="r1"), request_id="r1")


def test_key_must_be_32_bytes():
    with pytest.raises(ValueError):
        lw.LookupSeal(b"short", TOPIC)
    assert "0001" not in repr(lw.LookupSeal(KEY, TOPIC))
