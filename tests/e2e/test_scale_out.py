"""Scale-out on the real broker: two workers of one deployment (same topics, app id, profiles
and key directory — as a Kubernetes Deployment with one Secret) split the partitions; lookups
and statistics stay correct while the second joins and the first leaves.

The workers must share the key directory: the mapping table's keys and values are derived
from the per-operator ratchet state kept there (agents/vault.py), so a worker with other keys
could not read the partitions it takes over.
"""

from __future__ import annotations

import copy
import json
import time

import pytest

from agents.kafka_io import count, read_all
from agents.lookup_client import lookup_many
from tests.conftest import wait_for
from tests.e2e.test_operations import free_port, get_json, produce, radius

pytestmark = [pytest.mark.broker, pytest.mark.slow]

OPERATOR = "connect2ip"


def twin(w, web_port: int):
    """A second worker process of ``w``'s deployment: own data directory, log and web port."""
    t = copy.copy(w)
    t.proc = None
    args = [str(w.dir / "data2") if a == str(w.dir / "data") else a for a in w.args]
    for i, a in enumerate(args[:-1]):
        if a == "--web-port":  # the fixture's "0" and the test's own port: both become the twin's
            args[i + 1] = str(web_port)
    t.args = args
    t.log_path = w.dir / "worker2.log"
    return t


def partitions(port: int):
    s = get_json(f"http://127.0.0.1:{port}/status.json")
    return set(s["partitions"]) if s else None


def sessions(now: int, first: int, n: int) -> tuple[list[dict], dict[str, str]]:
    """``n`` RADIUS sessions on distinct addresses (Start 300 s ago); address → subscriber."""
    recs, truth = [], {}
    for i in range(first, first + n):
        ip = f"100.65.{i // 250}.{i % 250 + 1}"
        user = f"sub{i}@isp.example"
        recs.append(radius(user, f"SO-{i}", ip, "Start", now - 300))
        truth[ip] = user
    return recs, truth


def check_lookups(bootstrap, topics, truth: dict[str, str], at_ms: int) -> None:
    qs = [{"operator": OPERATOR, "ip": ip, "from_ms": at_ms, "to_ms": at_ms + 1} for ip in truth]
    ans = lookup_many(bootstrap, topics, qs, timeout_s=90)
    wrong = [(q["ip"], ans.get(q["id"])) for q in qs
             if [h["subscriber"] for h in (ans.get(q["id"]) or {}).get("holders", [])] != [truth[q["ip"]]]]
    assert not wrong, f"{len(wrong)} of {len(qs)} lookups wrong, e.g. {wrong[:2]}"


def test_two_workers_split_partitions_and_stay_correct_through_join_and_leave(worker_factory, bootstrap, tmp_path):
    p1, p2 = free_port(), free_port()
    w1 = worker_factory(operators=(OPERATOR,), extra=["--web-port", str(p1)]).start()
    wait_for(lambda: partitions(p1) == {0, 1, 2, 3}, timeout_s=150, what="worker 1 to own every partition")
    now = int(time.time())
    at_ms = (now - 200) * 1000

    batch1, truth = sessions(now, 0, 40)
    produce(bootstrap, w1.topics.raw_radius, batch1, tmp_path, operator=OPERATOR, name="b1.jsonl")
    wait_for(lambda: count(bootstrap, w1.topics.stats) >= 40, timeout_s=60, what="stats of batch 1")

    w2 = twin(w1, p2).start()  # joins: the group rebalances
    wait_for(lambda: (a := partitions(p1)) is not None and (b := partitions(p2)) is not None
             and a and b and not a & b and a | b == {0, 1, 2, 3}, timeout_s=150,
             what="the two workers to split the four partitions")

    batch2, truth2 = sessions(now, 40, 40)
    truth.update(truth2)
    produce(bootstrap, w1.topics.raw_radius, batch2, tmp_path, operator=OPERATOR, name="b2.jsonl")
    wait_for(lambda: count(bootstrap, w1.topics.stats) >= 80, timeout_s=90, what="stats of batch 2")
    check_lookups(bootstrap, w1.topics, truth, at_ms)  # answered by both workers, each for its partitions

    w1.stop()  # leaves: worker 2 takes every partition, recovering worker 1's table from the changelog
    wait_for(lambda: partitions(p2) == {0, 1, 2, 3}, timeout_s=150, what="worker 2 to own every partition")
    batch3, truth3 = sessions(now, 80, 20)
    truth.update(truth3)
    produce(bootstrap, w1.topics.raw_radius, batch3, tmp_path, operator=OPERATOR, name="b3.jsonl")
    wait_for(lambda: count(bootstrap, w1.topics.stats) >= 100, timeout_s=90, what="stats of batch 3")
    check_lookups(bootstrap, w1.topics, truth, at_ms)
    # the status page's figures come from a periodic scan of the store (agents/metrics.py): wait
    # for a scan that has seen every mapping, and never more than there are
    def live():
        s = get_json(f"http://127.0.0.1:{p2}/status.json")
        n = s["operators"][OPERATOR]["live"] if s else None
        assert n is None or n <= 100, f"{n} live mappings on the status page, 100 fed"
        return n == 100
    wait_for(live, timeout_s=60, what="worker 2's status page to count all 100 live mappings")

    # statistics: one record per binding, duplicates (re-delivery after a rebalance) share an id
    stats = [json.loads(r.value) for r in read_all(bootstrap, w1.topics.stats)]
    ids = {r["id"] for r in stats}
    assert len(ids) == 100
    subs = {r["subscriber"] for r in stats}
    assert len(subs) == 100 and not any("@isp.example" in x for x in subs)
    w2.stop()
