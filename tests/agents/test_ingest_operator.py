"""Without a broker: the collector of one operator must not frame another operator's
subscriber.

The attack as found: a collector set ``ipanon-operator: framsteget`` on a record and the worker
stored a framsteget binding for ``FRAMED-VICTIM@other.example``.  Now the operator of a record on
``<prefix>-raw-op-<operator>`` is the topic's (only that operator's collector may write it,
``agents.acl``), and a header claiming another operator is dead-lettered ``operator-not-allowed``
and counted.  Reference model: a record on an operator topic yields bindings iff its header is
absent or names the topic's operator, and then every binding carries the topic's operator."""

from __future__ import annotations

import asyncio
import json
from collections import namedtuple

from hypothesis import given, settings, strategies as st

from agents.ingest import Ingest
from agents.runtime import OperatorRuntime
from agents.topics import Topics
from stream.binding_wire import decode as decode_binding

Rec = namedtuple("Rec", "topic partition offset key value headers")
OPS = ("connect2ip", "framsteget")
VICTIM = "FRAMED-VICTIM@other.example"


def make_ingest():
    names = Topics("op8", OPS)
    counts: dict = {}
    ops = {n: OperatorRuntime(n, ttl_ms=3_600_000, stats_key=b"k" * 32) for n in OPS}
    ing = Ingest(names=names, partitions=4, operators=ops, default_operator=None, rules={}, clock=lambda: 1_790_000_000_000,
                 count=lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n))
    return ing, names, counts


def radius(sub: str, ip: str, i: int) -> bytes:
    return json.dumps({"User-Name": sub, "Acct-Status-Type": "Start", "Acct-Session-Id": f"S{i}",
                       "NAS-IP-Address": "192.0.2.1", "Framed-IP-Address": ip,
                       "Event-Timestamp": 1_789_999_000 + i}).encode()


def rec(topic: str, header_op, value: bytes, i: int) -> Rec:
    h = [("ipanon-format", b"radius-json")] + ([("ipanon-operator", header_op.encode())] if header_op else [])
    return Rec(topic, 0, i, b"src", value, h)


def test_collector_of_one_operator_cannot_frame_a_subscriber_of_another():
    ing, names, counts = make_ingest()
    own = names.operator_raw("connect2ip")
    genuine = rec(own, "connect2ip", radius("kund-1@connect2ip.example", "100.64.9.1", 1), 1)
    framed = rec(own, "framsteget", radius(VICTIM, "100.64.9.2", 2), 2)  # the attack
    out = asyncio.run(ing.handle_batch([genuine, framed]))
    bindings = [decode_binding(v).to_dict() for t, _, v, _ in out if t == names.bindings]
    dead = [json.loads(v) for t, _, v, _ in out if t == names.deadletter]
    assert [(b["operator"], b["subscriber"]) for b in bindings] == [("connect2ip", "kund-1@connect2ip.example")]
    assert VICTIM.encode() not in b"".join(v for t, _, v, _ in out if t == names.bindings)
    assert [(d["reason"], d["topic"], d["operator"], d["offset"]) for d in dead] == [
        ("operator-not-allowed", own, "framsteget", 2)]
    assert counts == {"events_in": 1, "bindings": 1, "rejected:operator-not-allowed": 1}


def test_the_topic_names_the_operator_when_the_header_is_absent():
    ing, names, counts = make_ingest()
    out = asyncio.run(ing.handle_batch([rec(names.operator_raw("framsteget"), None, radius("f@x", "100.64.9.3", 3), 3)]))
    assert [decode_binding(v).operator for t, _, v, _ in out if t == names.bindings] == ["framsteget"]
    assert "rejected:missing-operator" not in counts


def test_shared_topics_keep_the_header_rule_for_the_open_local_broker():
    """On the shared family topics (no collector may write them on a secure broker) the header
    still picks the operator, as the unauthenticated local demo needs."""
    ing, names, _ = make_ingest()
    out = asyncio.run(ing.handle_batch([rec(names.raw_radius, "framsteget", radius("f@x", "100.64.9.4", 4), 4)]))
    assert [decode_binding(v).operator for t, _, v, _ in out if t == names.bindings] == ["framsteget"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(OPS), st.sampled_from((None, "", *OPS, "unknown-op"))), min_size=1, max_size=12))
def test_operator_topic_reference_model(cases):
    ing, names, counts = make_ingest()
    recs = [rec(names.operator_raw(topic_op), hdr, radius(f"u{i}@x", f"100.64.10.{i + 1}", i), i)
            for i, (topic_op, hdr) in enumerate(cases)]
    out = asyncio.run(ing.handle_batch(recs))
    got_bind = sorted((decode_binding(v).subscriber, decode_binding(v).operator) for t, _, v, _ in out if t == names.bindings)
    got_dead = sorted((json.loads(v)["offset"], json.loads(v)["reason"]) for t, _, v, _ in out if t == names.deadletter)
    want_bind = sorted((f"u{i}@x", topic_op) for i, (topic_op, hdr) in enumerate(cases) if not hdr or hdr == topic_op)
    want_dead = sorted((i, "operator-not-allowed") for i, (topic_op, hdr) in enumerate(cases) if hdr and hdr != topic_op)
    assert got_bind == want_bind and got_dead == want_dead
    assert counts.get("rejected:operator-not-allowed", 0) == len(want_dead)


def _with_headers(topic: str, extra: list, value: bytes, i: int) -> Rec:
    return Rec(topic, 0, i, b"src", value, [("ipanon-format", b"radius-json"), *extra])


def test_a_second_or_unreadable_operator_header_does_not_hide_a_framing_attempt():
    """Adversary: record_headers keeps the last of two headers and drops one that is not UTF-8,
    so a collector that adds ``ipanon-operator: framsteget`` *before* an honest
    ``ipanon-operator: connect2ip`` (or writes the claim in bytes that do not decode) was
    accepted silently: the framing attempt escaped the operator-not-allowed count that is the
    only sign of it.  Every claim must be seen; disagreeing or unreadable claims are refused."""
    ing, names, counts = make_ingest()
    own = names.operator_raw("connect2ip")
    H = "ipanon-operator"
    recs = [_with_headers(own, [(H, b"framsteget"), (H, b"connect2ip")], radius(VICTIM, "100.64.9.2", 1), 1),
            _with_headers(own, [(H, b"\xfeframsteget")], radius(VICTIM, "100.64.9.3", 2), 2),
            _with_headers(own, [(H.encode(), b"framsteget"), (H, b"connect2ip")], radius(VICTIM, "100.64.9.4", 3), 3),
            _with_headers(own, [(H, b"connect2ip"), (H, b"connect2ip")], radius("kund-2@connect2ip.example",
                                                                               "100.64.9.5", 4), 4)]
    out = asyncio.run(ing.handle_batch(recs))
    bindings = [decode_binding(v).to_dict() for t, _, v, _ in out if t == names.bindings]
    dead = [json.loads(v) for t, _, v, _ in out if t == names.deadletter]
    assert [b["subscriber"] for b in bindings] == ["kund-2@connect2ip.example"]  # the same claim twice is fine
    assert [(d["reason"], d["offset"]) for d in dead] == [("operator-not-allowed", i) for i in (1, 2, 3)]
    assert counts["rejected:operator-not-allowed"] == 3
