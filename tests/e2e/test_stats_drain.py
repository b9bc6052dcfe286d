"""The upgrade drain on the real broker (``agents.stats_drain``): statistics are made at ingest;
bindings an earlier release's ingest left on the bindings topic for its stats stage (consumer
group ``<app id>-stats``) are counted once by the old stage, then that group is left alone.

Reference model: the stats record ids are ``agents.stats_agent.record_ids`` (from the
operator's key file) of every binding the old release left and of every raw record sent while
the new workers run; a record id may repeat (the drain reads what ingest already counted, a
crash re-delivers) but the set of ids must be exactly the reference set.

- two workers of one deployment start together on what an old release left (group committed
  at 0 on every partition, thousands of bindings, binary and old JSON wire forms) while new
  traffic arrives: every id once or more, nothing else; every drain that began ends; the group is
  committed up to the ends the old release left and keeps no member; a worker restarted
  afterwards drains nothing again (the bindings topic grows by heartbeats all the while);
- a fresh deployment with traffic: complete statistics from ingest, no drain, and the stats
  group never gets an offset.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import time

import pytest

from agents.acl import worker_groups
from agents.kafka_io import producer, read_all, wait_group_caught_up
from stream import binding_wire
from stream import intervals as iv
from stream.config import parse_operator
from stream.model import Binding
from tests.conftest import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

OPERATOR = "connect2ip"
READING = re.compile(r"stats drain: (?!could not read).*")   # any drain line but a retried offsets read
DONE = "stats drain: done"
READY = "[^IpanonWorker]: Ready"


# -- helpers (also used by tests/e2e/test_binding_wire_e2e.py) --------------------------------

def group_offsets(bootstrap: str, group: str, topic: str) -> dict[int, tuple]:
    """partition → (committed offset or None, metadata) of ``group`` on ``topic`` (never joins)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        out = {}
        for p in sorted(c.partitions_for_topic(topic) or ()):
            om = c.committed(TopicPartition(topic, p), metadata=True)
            out[p] = (None, None) if om is None or om.offset is None or om.offset < 0 else (om.offset, om.metadata)
        return out
    finally:
        c.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        return {tp.partition: off for tp, off in c.end_offsets(tps).items()}
    finally:
        c.close()


def commit_offsets(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` for ``group`` as a stage of the old release would have left them."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        c.assign([TopicPartition(topic, p) for p in offsets])
        c.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
    finally:
        c.close()
    assert {p: v[0] for p, v in group_offsets(bootstrap, group, topic).items()} == offsets


def group_members(bootstrap: str, group: str) -> int:
    from kafka import KafkaAdminClient

    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        g = a.describe_groups([group])[group]
        return len(g.get("members") or ())
    finally:
        a.close()


def stats_ids(bootstrap: str, topic: str) -> list[str]:
    return [json.loads(r.value)["id"] for r in read_all(bootstrap, topic, timeout_s=20)]


def policy_of(w):
    return parse_operator((w.operators_dir / f"{OPERATOR}.toml").read_text(), file=f"{OPERATOR}.toml")


def raw_radius(user: str, ip: str, at_s: int, session: str) -> bytes:
    return json.dumps({"User-Name": user, "Acct-Status-Type": "Start", "Acct-Session-Id": session,
                       "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": ip, "Event-Timestamp": at_s}).encode()


def send_raw(bootstrap: str, w, values: list[bytes], sources: int = 8) -> list[Binding]:
    """Send RADIUS records (several sources: every raw partition, so every worker's ingest gets
    some); returns their bindings as the format parses them (the reference)."""
    from agents import topics as T
    from stream.parse import get_format

    p = producer(bootstrap)
    try:
        for i, v in enumerate(values):
            p.send(w.topics.raw_radius, key=f"src-{i % sources}".encode(), value=v,
                   headers=[(T.H_FORMAT, b"radius-json"), (T.H_OPERATOR, OPERATOR.encode())])
        p.flush()
    finally:
        p.close()
    fmt = get_format("radius-json")
    return [b for v in values for b in fmt.parse(v, operator=OPERATOR, identity="User-Name")]


def leave_old_release_bindings(bootstrap: str, w, bindings: list[tuple[Binding, bytes]]) -> dict[int, int]:
    """What an old release's ingest wrote (keyed by routing key) and its stats stage had not read
    (group committed at 0 on every partition); returns the bindings topic's end offsets then."""
    p = producer(bootstrap)
    try:
        for b, value in bindings:
            p.send(w.topics.bindings, key=iv.routing_key(b.operator, b.ip).encode(), value=value)
        p.flush()
    finally:
        p.close()
    ends = end_offsets(bootstrap, w.topics.bindings)
    commit_offsets(bootstrap, worker_groups(w.settings.app_id)["stats"], w.topics.bindings, {p: 0 for p in ends})
    return ends


def drained_up_to(bootstrap: str, w, ends: dict[int, int]) -> bool:
    got = group_offsets(bootstrap, worker_groups(w.settings.app_id)["stats"], w.topics.bindings)
    return set(got) == set(ends) and all(got[p][0] is not None and got[p][0] >= ends[p] for p in ends)


def _tail(w) -> str:
    return w.log()[-3000:]


# -- the tests ----------------------------------------------------------------------------------

def test_two_workers_starting_together_drain_what_the_old_release_left_exactly_once_by_id(worker_factory, bootstrap,
                                                                                         request):
    from agents.stats_agent import record_ids

    w1 = worker_factory(operators=(OPERATOR,))
    w2 = w1.twin(2)
    request.addfinalizer(w2.stop)  # the factory stops only the workers it made
    policy, seed = policy_of(w1), w1.seeds[OPERATOR]
    stats_group = worker_groups(w1.settings.app_id)["stats"]
    now_s = int(time.time())

    def old(i: int) -> Binding:
        return Binding(kind="radius", action="start", operator=OPERATOR,
                       ip=ipaddress.ip_network(f"100.{80 + i // 25_000}.{i // 250 % 100}.{i % 250 + 1}"),
                       subscriber=f"old-{i}@isp.example",
                       session=f"O-{i}", nas="192.0.2.10", at_ms=(now_s - 600) * 1000 - i)

    # enough that a drain outlasts the few seconds between the two workers' starts
    olds = [old(i) for i in range(30_000)]
    # the binary form, and every 7th in the JSON form of the release before the binary one
    left = [(b, b.to_json() if i % 7 == 0 else binding_wire.encode(b)) for i, b in enumerate(olds)]
    ends = leave_old_release_bindings(bootstrap, w1, left)
    assert sum(ends.values()) == len(olds) and all(ends.values())

    w1.start()
    w2.start()
    # new traffic while the drains run: statistics from ingest (the drain may count it again)
    fresh = send_raw(bootstrap, w1, [raw_radius(f"new-{i}@isp.example", f"100.81.{i // 250}.{i % 250 + 1}",
                                                now_s - 60, f"N-{i}") for i in range(400)])
    want = set(record_ids(seed, policy, olds)) | set(record_ids(seed, policy, fresh))
    assert len(want) == len(olds) + len(fresh)

    def began(w) -> int:
        return len([m for m in READING.findall(w.log()) if not m.startswith(DONE)])

    def settled() -> bool:
        # every worker is up (its drain check runs right then), every drain that began ended,
        # and the group is committed up to what the old release left
        return (all(READY in w.log() and (not began(w) or DONE in w.log()) for w in (w1, w2))
                and drained_up_to(bootstrap, w1, ends))

    try:
        wait_for(settled, timeout_s=240, interval_s=2, what="the workers' drains to end")
        time.sleep(5)  # a drain check that had not spoken yet has by now
        wait_for(settled, timeout_s=120, interval_s=2, what="the workers' drains to end")
    except AssertionError:
        missing = len(want - set(stats_ids(bootstrap, w1.topics.stats)))
        raise AssertionError(f"drains did not end ({missing} of {len(want)} reference ids missing, group at "
                             f"{group_offsets(bootstrap, stats_group, w1.topics.bindings)} of {ends}); "
                             f"worker 1:\n{_tail(w1)}\nworker 2:\n{_tail(w2)}") from None
    # each worker saw the group behind at most once; a worker that started after the other had
    # drained everything rightly finds nothing to do (with 30 000 bindings both normally take part)
    print("drains begun per worker:", began(w1), began(w2))
    assert all(began(w) <= 1 for w in (w1, w2)) and began(w1) + began(w2) >= 1
    wait_for(lambda: group_members(bootstrap, stats_group) == 0, timeout_s=60, what="the drain stages to leave")

    groups = worker_groups(w1.settings.app_id)
    assert wait_group_caught_up(bootstrap, groups["ingest"], w1.topics.raw_radius, timeout_s=120)
    got = stats_ids(bootstrap, w1.topics.stats)
    missing, extra = want - set(got), set(got) - want
    assert not missing and not extra, (len(missing), len(extra), len(got))

    # the group stays where the drain left it while the bindings topic grows (heartbeats, new
    # bindings): nobody reads in it any more
    before = group_offsets(bootstrap, stats_group, w1.topics.bindings)
    send_raw(bootstrap, w1, [raw_radius("later@isp.example", "100.82.0.1", now_s - 30, "L-1")])
    time.sleep(6)
    assert group_offsets(bootstrap, stats_group, w1.topics.bindings) == before
    grown = end_offsets(bootstrap, w1.topics.bindings)
    assert any(grown[p] > before[p][0] for p in grown)

    # a worker restarted now finds the group drained: no second drain, whatever was appended
    w1.stop(signal.SIGTERM)
    mark = len(w1.log())
    w1.start()
    late = send_raw(bootstrap, w1, [raw_radius("after@isp.example", "100.82.0.2", now_s - 20, "L-2")])
    rid = record_ids(seed, policy, late)[0]
    wait_for(lambda: rid in stats_ids(bootstrap, w1.topics.stats), timeout_s=180, interval_s=2,
             what="the restarted worker's statistics")
    time.sleep(5)  # the drain's check runs at start, beside ingest: give it time to speak
    assert not READING.findall(w1.log()[mark:]), w1.log()[mark:][-3000:]
    assert group_offsets(bootstrap, stats_group, w1.topics.bindings) == before
    for w in (w1, w2):
        assert "Traceback" not in w.log()


def test_a_fresh_deployment_never_drains_and_never_uses_the_stats_group(worker_factory, bootstrap):
    from agents.stats_agent import record_ids

    w = worker_factory(operators=(OPERATOR,)).start()
    now_s = int(time.time())
    fresh = send_raw(bootstrap, w, [raw_radius(f"f-{i}@isp.example", f"100.83.0.{i + 1}", now_s - 60, f"F-{i}")
                                    for i in range(200)])
    want = record_ids(w.seeds[OPERATOR], policy_of(w), fresh)
    groups = worker_groups(w.settings.app_id)
    try:
        wait_for(lambda: len(set(stats_ids(bootstrap, w.topics.stats))) >= len(want), timeout_s=180, interval_s=2,
                 what="every stats record")
    except AssertionError:
        raise AssertionError(f"stats missing; worker log tail:\n{_tail(w)}") from None
    assert wait_group_caught_up(bootstrap, groups["ingest"], w.topics.raw_radius, timeout_s=60)
    assert wait_group_caught_up(bootstrap, groups["mapping"], w.topics.bindings, timeout_s=120)
    time.sleep(5)  # heartbeats keep growing the bindings topic meanwhile
    assert sorted(set(stats_ids(bootstrap, w.topics.stats))) == sorted(want)
    assert not READING.findall(w.log()), READING.findall(w.log())
    assert all(off is None for off, _ in group_offsets(bootstrap, groups["stats"], w.topics.bindings).values())
    assert group_members(bootstrap, groups["stats"]) == 0
    assert "Traceback" not in w.log()
