"""Bad and late records through a real worker on the real broker.

- 300 valid RADIUS Starts + 1 with an encoded surrogate (bytes ED A0 80) in User-Name: the bad
  one is dead-lettered alone at ingest (``bad-encoding``); each of the 300 yields exactly one
  binding and exactly one statistics record (the ids a reference computes from the same
  records, no duplicates, nothing else).
- Records 905 days late (a Stop, and a Start whose lost-Stop window ended long ago) are
  dead-lettered ``too-late`` without their bytes and never reach the bindings topic.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from agents.kafka_io import producer, read_all
from stream.config import parse_operator
from stream.binding_wire import decode as decode_binding
from stream.parse import get_format
from tests.conftest import wait_for

pytestmark = pytest.mark.broker

DAY_S = 86_400


def _start(i: int, at_s: int, user: bytes = None) -> bytes:
    rec = {"User-Name": f"kund-{i}@isp.example", "Acct-Status-Type": "Start", "Acct-Session-Id": f"S-{i}",
           "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": f"100.70.{i // 250}.{i % 250 + 1}",
           "Event-Timestamp": at_s}
    raw = json.dumps(rec).encode()
    if user is not None:
        raw = raw.replace(f'"kund-{i}@isp.example"'.encode(), b'"' + user + b'"')
    return raw


def test_bad_and_too_late_records_are_dead_lettered_alone(worker_factory, bootstrap):
    from agents.stats_agent import record_ids

    w = worker_factory(operators=("connect2ip",))
    policy = parse_operator((w.operators_dir / "connect2ip.toml").read_text(), file="connect2ip.toml")
    now_s = int(time.time())
    good = [_start(i, now_s - 60 + i % 50) for i in range(300)]
    bad = _start(300, now_s, user=b"kund-\xed\xa0\x80")
    late_stop = json.dumps({"User-Name": "late@isp.example", "Acct-Status-Type": "Stop", "Acct-Session-Id": "L-1",
                            "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": "100.71.0.1",
                            "Acct-Session-Time": 600, "Event-Timestamp": now_s - 905 * DAY_S}).encode()
    late_start = _start(301, now_s - 905 * DAY_S)
    values = good[:100] + [bad] + good[100:200] + [late_stop, late_start] + good[200:]

    w.start()
    p = producer(bootstrap)
    headers = [("ipanon-format", b"radius-json"), ("ipanon-operator", b"connect2ip")]
    for v in values:
        p.send(w.topics.raw_radius, value=v, headers=headers, partition=0)  # offsets = positions
    p.flush()
    p.close()

    fmt = get_format("radius-json")
    expected_bindings = [b for v in good for b in fmt.parse(v, operator="connect2ip")]
    assert len(expected_bindings) == 300
    seed = w.seeds["connect2ip"]
    expected_ids = set(record_ids(seed, policy, expected_bindings))
    assert len(expected_ids) == 300

    try:
        wait_for(lambda: len(read_all(bootstrap, w.topics.deadletter)) >= 3, timeout_s=240, what="3 dead letters")
    except AssertionError:
        raise AssertionError("no dead letters; worker log tail:\n" + w.log()[-3000:]) from None
    wait_for(lambda: len(read_all(bootstrap, w.topics.stats)) >= 300, timeout_s=240, what="300 stats records")
    time.sleep(3)  # anything extra would land by now (only ever adds records to check)

    dead = [json.loads(r.value) for r in read_all(bootstrap, w.topics.deadletter)]
    by_reason = sorted((d["reason"], d["offset"]) for d in dead)
    assert by_reason == [("bad-encoding", 100), ("too-late", 201), ("too-late", 202)], by_reason
    (enc,) = [d for d in dead if d["reason"] == "bad-encoding"]
    assert base64.b64decode(enc["value_b64"]) == bad
    for d in dead:
        if d["reason"] == "too-late":   # the 24 h promise is long gone: not even the DLQ keeps the bytes
            assert d["value_dropped"] is True and "value_b64" not in d

    bindings = [decode_binding(r.value).to_dict() for r in read_all(bootstrap, w.topics.bindings)]
    assert len(bindings) == 300
    assert sorted(b["subscriber"] for b in bindings) == sorted(b.subscriber for b in expected_bindings)
    assert min(b["at_ms"] for b in bindings) >= (now_s - 3600) * 1000   # nothing 905 days old

    stats = [json.loads(r.value) for r in read_all(bootstrap, w.topics.stats)]
    assert len(stats) == 300 and {s["id"] for s in stats} == expected_ids
    assert "Traceback" not in w.log()
