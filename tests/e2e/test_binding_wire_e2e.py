"""The bindings topic's wire forms through a real worker on the real broker,
as an upgrade from a release whose stats stage read the bindings topic.

Written straight onto ``<prefix>-bindings`` (as an old release's ingest would, keyed by routing
key), with the stats group ``<app id>-stats`` committed at 0 on every partition (its stats stage
had read none of them): one binding in the binary form, one in the JSON form of the release
before (a record left on the topic across the upgrade), and one record of a wire version this
worker does not know.  Statistics are made at ingest now; these bindings are counted by the
upgrade drain (``agents.stats_drain``).  The reference is what the two good bindings say: both
are answered by a lookup and both give exactly the stats record ids
``agents.stats_agent.record_ids`` computes for them; the unknown version is dead-lettered
``unknown-binding-version`` by each of the topic's two consumers (mapping stage and the drain),
with its bytes, and changes nothing else; the drain ends with the group committed up to the
ends the old release left, and says so."""

from __future__ import annotations

import base64
import ipaddress
import json
import time

import pytest

from agents.acl import worker_groups
from agents.kafka_io import producer, read_all, wait_group_caught_up
from agents.lookup_client import lookup_many
from stream import binding_wire
from stream import intervals as iv
from stream.config import parse_operator
from stream.model import Binding
from tests.conftest import wait_for
from tests.e2e.test_stats_drain import DONE, commit_offsets, drained_up_to, end_offsets, group_members

pytestmark = pytest.mark.broker


def test_binary_and_old_json_bindings_are_applied_and_an_unknown_version_is_dead_lettered(worker_factory, bootstrap):
    from agents.stats_agent import record_ids

    w = worker_factory(operators=("connect2ip",))
    policy = parse_operator((w.operators_dir / "connect2ip.toml").read_text(), file="connect2ip.toml")
    now_ms = int(time.time()) * 1000

    def start(sub: str, ip: str) -> Binding:
        return Binding(kind="radius", action="start", operator="connect2ip", ip=ipaddress.ip_network(ip),
                       subscriber=sub, session=f"S-{sub}", nas="192.0.2.10", at_ms=now_ms - 600_000)

    a, b = start("wire@isp.example", "100.72.0.1"), start("json@isp.example", "100.72.0.2")
    future = b"\x03" + binding_wire.encode(a)[1:]  # 2 is known since the protocol of NAT blocks
    p = producer(bootstrap)
    for b_, value in ((a, binding_wire.encode(a)), (b, b.to_json()), (a, future)):
        p.send(w.topics.bindings, key=iv.routing_key(b_.operator, b_.ip).encode(), value=value)
    p.flush()
    p.close()
    ends = end_offsets(bootstrap, w.topics.bindings)
    assert sum(ends.values()) == 3
    stats_group = worker_groups(w.settings.app_id)["stats"]
    commit_offsets(bootstrap, stats_group, w.topics.bindings, {part: 0 for part in ends})  # the old release left it so
    w.start()

    try:
        wait_for(lambda: len(read_all(bootstrap, w.topics.deadletter)) >= 2, timeout_s=180, what="2 dead letters")
    except AssertionError:
        raise AssertionError("dead letters missing; worker log tail:\n" + w.log()[-3000:]) from None
    wait_for(lambda: len(read_all(bootstrap, w.topics.stats)) >= 2, timeout_s=180, what="2 stats records")
    try:
        wait_for(lambda: DONE in w.log(), timeout_s=120, what="the drain to end")
    except AssertionError:
        raise AssertionError("the drain did not end; worker log tail:\n" + w.log()[-3000:]) from None
    assert drained_up_to(bootstrap, w, ends)
    wait_for(lambda: group_members(bootstrap, stats_group) == 0, timeout_s=60, what="the drain stage to leave")
    assert wait_group_caught_up(bootstrap, f"{w.settings.app_id}-mapping", w.topics.bindings, timeout_s=120)
    time.sleep(2)  # anything extra would land by now (only ever adds records to check)

    dead = [json.loads(r.value) for r in read_all(bootstrap, w.topics.deadletter)]
    assert [(d["reason"], d["topic"]) for d in dead] == [("unknown-binding-version", w.topics.bindings)] * 2
    assert all(base64.b64decode(d["value_b64"]) == future for d in dead)

    stats = [json.loads(r.value) for r in read_all(bootstrap, w.topics.stats)]
    assert sorted(s["id"] for s in stats) == sorted(record_ids(w.seeds["connect2ip"], policy, [a, b]))

    qs = [{"operator": "connect2ip", "ip": ip, "from_ms": now_ms - 300_000, "to_ms": now_ms - 299_999}
          for ip in ("100.72.0.1", "100.72.0.2")]
    ans = lookup_many(bootstrap, w.topics, qs, key=w.lookup_key, timeout_s=60)
    assert [[h["subscriber"] for h in ans[q["id"]]["holders"]] for q in qs] == [["wire@isp.example"],
                                                                               ["json@isp.example"]]
    assert "Traceback" not in w.log()
