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
    # the id as JSON writes it: a bare 2-byte b"r1" turns up in the random bytes in 0.4 % of runs
    for needle in (b"100.64", b"connect2ip", b"from_ms", b'"r1"'):
        assert needle not in blob
    req = lw.LookupSeal(KEY, TOPIC).open_request(blob, partition=3, now_ms=NOW + 1)
    assert req == {**Q, "id": "r1", "ts_ms": NOW, "partition": 3}
    v6 = lw.LookupSeal(KEY, TOPIC).seal_request({**Q, "ip": "2001:db8:4711:ab00::1"}, request_id="r1",
                                                partition=3, now_ms=NOW)
    assert len(v6) == len(blob)
    assert sealed() != blob  # a fresh nonce every time


def test_plaintext_json_as_old_clients_sent_it_is_unauthenticated():
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
    # (whole tokens: a 1 053-byte blob holds the two bytes "ok" somewhere about once in 60)
    assert b"alice@isp.example" not in blob and b'"ok"' not in blob
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


def _seal_text(text: bytes) -> bytes:
    s = lw.LookupSeal(KEY, TOPIC)
    return lw._seal(s._req, text, s._req_aad, None)


@pytest.mark.parametrize("text", [
    b"[" * 3000 + b"]" * 3000,                                       # nesting past the recursion limit,
    b'{"a":' * 1300 + b"1" + b"}" * 1300,                            # within MAX_REQUEST
    json.dumps({**Q, "id": "\ud800", "ts_ms": NOW, "partition": 3}).encode(),  # id not encodable as a key
    json.dumps({**Q, "id": "x", "ts_ms": NOW, "partition": 3, "extra": 1}).encode(),
    json.dumps({**Q, "id": "x", "ts_ms": float(NOW), "partition": 3}).encode(),
    b"\xff\xfe" + b" " * 300,
])
def test_odd_json_inside_a_valid_seal_is_malformed_never_an_exception(text):
    """Attack by a key holder gone wrong (a buggy desk, a corrupted copy): whatever opens under
    the key must end as a refusal; before, deep nesting raised RecursionError and a lone
    surrogate in the id passed and then broke the answer's Kafka key, both out of the lookup
    agent's loop."""
    refused(_seal_text(text), "malformed")


def test_deeply_nested_answer_is_a_crypto_error_not_a_crash():
    s = lw.LookupSeal(KEY, TOPIC)
    blob = lw._seal(s._ans, b"[" * 100_000 + b"]" * 100_000, lw._LABEL + b"answer\x00r1", None)
    with pytest.raises(CryptoError):
        s.open_answer(blob, request_id="r1")


def test_answer_length_does_not_say_whether_the_address_was_held():
    """Side channel: anyone who can read -lookup-responses (everyone, on the local broker) sees
    each answer's length.  Unpadded, no-data (~40 bytes) and one holder (~110) differ, so a
    replay after a worker restart (or the original answer) told whether an address was held."""
    s = lw.LookupSeal(KEY, TOPIC)
    rid = "desk-0123456789ab-" + "f" * 32
    holder = {"subscriber": "a-rather-long-subscriber-id-0123456789@isp.example", "from_ms": NOW - 86_400_000,
              "to_ms": NOW, "inside_ip": "100.64.255.255", "ports": [65000, 65535]}
    shapes = [{"status": "no-data", "holders": []},
              {"status": "ok", "holders": [holder]},
              {"status": "ok", "holders": [holder, holder]},
              {"status": "end-unknown", "holders": [], "end_unknown": [holder]},
              {"status": "ambiguous", "holders": [], "candidates": 3},
              {"status": "refused", "reason": "unknown-operator"},
              {"status": "refused", "reason": "bad-request"}]
    sizes = {len(s.seal_answer({**a, "id": rid}, request_id=rid)) for a in shapes}
    assert len(sizes) == 1, sizes
    for a in shapes:  # and they still open to what was sealed
        assert s.open_answer(s.seal_answer({**a, "id": rid}, request_id=rid), request_id=rid) == {**a, "id": rid}
    many = {"status": "ok", "holders": [holder] * 40}
    big = len(s.seal_answer(many, request_id=rid)) - 1 - lw.NONCE_LEN - lw.TAG_LEN
    assert big & (big - 1) == 0 and big > lw.ANSWER_PAD  # large answers grow only in doublings
    huge = {"status": "ok", "holders": [holder] * 4000}  # a busy CGNAT address over a long interval
    n = len(json.dumps({**huge, "id": rid}, separators=(",", ":")))
    padded = len(s.seal_answer({**huge, "id": rid}, request_id=rid)) - 1 - lw.NONCE_LEN - lw.TAG_LEN
    assert padded % lw.ANSWER_PAD_STEP == 0 and n <= padded < n + lw.ANSWER_PAD_STEP  # never doubled past 1 MB


def test_an_oversized_request_is_refused_before_it_is_opened():
    """A flood of 1 MB records on the request topic cost one AES-GCM pass each; and a key holder's
    request with a 100 kB id was answered under a 100 kB Kafka key.  Requests are a few PAD blocks."""
    big = sealed(request_id="x" * 100_000)
    refused(big, "malformed")
    refused(b"\x01" + bytes(1_000_000), "malformed")
    refused(sealed(request_id="desk-0123456789ab-" + "f" * 32), "unauthenticated", key=bytes(32))  # normal size: opened
