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


def check_lookups(bootstrap, topics, truth: dict[str, str], at_ms: int, key: bytes) -> None:
    """Every address answers its subscriber.  The table may still be applying the last batch
    (the statistics the test waited for come from another consumer group) or restoring after a
    rebalance, so a *missing* answer is retried; a *wrong* holder fails at once."""
    missing: list = []

    def all_right():
        qs = [{"operator": OPERATOR, "ip": ip, "from_ms": at_ms, "to_ms": at_ms + 1} for ip in truth]
        ans = lookup_many(bootstrap, topics, qs, key=key, timeout_s=90)
        holders = {q["ip"]: [h["subscriber"] for h in (ans.get(q["id"]) or {}).get("holders", [])] for q in qs}
        wrong = [(ip, hs) for ip, hs in holders.items() if hs and hs != [truth[ip]]]
        assert not wrong, f"{len(wrong)} of {len(qs)} lookups name another subscriber, e.g. {wrong[:2]}"
        missing[:] = [ip for ip, hs in holders.items() if not hs]
        return not missing

    try:
        wait_for(all_right, timeout_s=90, what="every lookup answered")
    except AssertionError as e:
        raise AssertionError(f"{e}: {len(missing)} of {len(truth)} still without a holder, e.g. {missing[:3]}") from None


def test_two_workers_split_partitions_and_stay_correct_through_join_and_leave(worker_factory, bootstrap, tmp_path,
                                                                              request):
    p1, p2 = free_port(), free_port()
    w1 = worker_factory(operators=(OPERATOR,), extra=["--web-port", str(p1)]).start()
    wait_for(lambda: partitions(p1) == {0, 1, 2, 3}, timeout_s=150, what="worker 1 to own every partition")
    now = int(time.time())
    at_ms = (now - 200) * 1000

    batch1, truth = sessions(now, 0, 40)
    produce(bootstrap, w1.topics.raw_radius, batch1, tmp_path, operator=OPERATOR, name="b1.jsonl")
    wait_for(lambda: count(bootstrap, w1.topics.stats) >= 40, timeout_s=60, what="stats of batch 1")

    w2 = twin(w1, p2).start()  # joins: the group rebalances
    request.addfinalizer(w2.stop)  # the factory stops only the workers it made
    wait_for(lambda: (a := partitions(p1)) is not None and (b := partitions(p2)) is not None
             and a and b and not a & b and a | b == {0, 1, 2, 3}, timeout_s=150,
             what="the two workers to split the four partitions")

    batch2, truth2 = sessions(now, 40, 40)
    truth.update(truth2)
    produce(bootstrap, w1.topics.raw_radius, batch2, tmp_path, operator=OPERATOR, name="b2.jsonl")
    wait_for(lambda: count(bootstrap, w1.topics.stats) >= 80, timeout_s=90, what="stats of batch 2")
    check_lookups(bootstrap, w1.topics, truth, at_ms, w1.lookup_key)  # answered by both workers, each for its partitions

    w1.stop()  # leaves: worker 2 takes every partition, recovering worker 1's table from the changelog
    wait_for(lambda: partitions(p2) == {0, 1, 2, 3}, timeout_s=150, what="worker 2 to own every partition")
    batch3, truth3 = sessions(now, 80, 20)
    truth.update(truth3)
    produce(bootstrap, w1.topics.raw_radius, batch3, tmp_path, operator=OPERATOR, name="b3.jsonl")
    wait_for(lambda: count(bootstrap, w1.topics.stats) >= 100, timeout_s=90, what="stats of batch 3")
    check_lookups(bootstrap, w1.topics, truth, at_ms, w1.lookup_key)
    # the status page's figures come from a periodic scan of the store (agents/metrics.py): wait
    # for a scan that has seen every mapping, and never more than there are
    def live():
        s = get_json(f"http://127.0.0.1:{p2}/status.json")
        n = s["operators"][OPERATOR]["live"] if s else None
        assert n is None or n <= 100, f"{n} live mappings on the status page, 100 fed"
        return n == 100 and s["table_restored"]
    wait_for(live, timeout_s=60, what="worker 2's status page to count all 100 live mappings")

    # statistics: one record per binding, duplicates (re-delivery after a rebalance) share an id
    stats = [json.loads(r.value) for r in read_all(bootstrap, w1.topics.stats)]
    ids = {r["id"] for r in stats}
    assert len(ids) == 100
    subs = {r["subscriber"] for r in stats}
    assert len(subs) == 100 and not any("@isp.example" in x for x in subs)
    w2.stop()


def _partition(addr: str) -> int:
    import ipaddress

    from agents.mapping_table import partition_for
    from stream.intervals import routing_key

    return partition_for(routing_key(OPERATOR, ipaddress.ip_network(addr)).encode(), 4)


def _pick(prefix: str, parts: set[int], used: set[str]) -> str:
    """An address under ``prefix`` whose table partition is one of ``parts``."""
    for i in range(1, 250):
        a = f"{prefix}.{i}"
        if a not in used and _partition(a) in parts:
            used.add(a)
            return a
    raise AssertionError(f"no address under {prefix} on partitions {parts}")


def test_cgnat_chains_and_lawful_answers_span_workers(worker_factory, bootstrap, tmp_path, monkeypatch, request):
    """A CGNAT public address on one worker, its inside address on the other: lookups and the
    query desk (on whichever worker owns the inbox) still answer the whole chain, both ways."""
    import subprocess
    import sys

    from agents.kafka_io import count
    from stream.access import open_answer
    from tests.e2e.test_query_agent import make_registry, replies, send
    from tests.e2e.test_query_agent import request as signed_request

    keys = make_registry(tmp_path / "reg")
    monkeypatch.setenv("IPANON_AUTHORITIES", str(tmp_path / "reg" / "authorities"))
    monkeypatch.setenv("IPANON_STAFF", str(tmp_path / "reg" / "staff"))
    p1, p2 = free_port(), free_port()
    w1 = worker_factory(operators=(OPERATOR,), extra=["--web-port", str(p1)]).start()
    wait_for(lambda: partitions(p1) == {0, 1, 2, 3}, timeout_s=150, what="worker 1 to own every partition")
    w2 = twin(w1, p2).start()
    request.addfinalizer(w2.stop)
    split = wait_for(lambda: (a := partitions(p1)) is not None and (b := partitions(p2)) is not None
                     and a and b and not a & b and a | b == {0, 1, 2, 3} and (a, b), timeout_s=150,
                     what="the two workers to split the four partitions")
    mine, theirs = split
    used: set[str] = set()
    # chain A: public on worker 1, inside on worker 2; chain B the other way round
    chains = [(_pick("198.51.100", mine, used), _pick("100.64.60", theirs, used), "kund-a@isp.example"),
              (_pick("198.51.100", theirs, used), _pick("100.64.60", mine, used), "kund-b@isp.example")]
    now = int(time.time())
    ms = now * 1000
    produce(bootstrap, w1.topics.raw_radius, [radius(sub, f"SX-{i}", inside, "Start", now - 300)
                                             for i, (_, inside, sub) in enumerate(chains)], tmp_path, name="r.jsonl")
    nat = tmp_path / "nat.jsonl"
    nat.write_text("".join(json.dumps({
        "natEvent": 16, "sourceIPv4Address": inside, "postNATSourceIPv4Address": public,
        "portRangeStart": 1024, "portRangeEnd": 2047, "observationTimeMilliseconds": ms - 290_000}) + "\n"
        for public, inside, _ in chains))
    rc = subprocess.run([sys.executable, "-m", "agents.cli", "produce", "--format", "ipfix-json", "--operator", OPERATOR,
                         "--topic", w1.topics.raw_nat, "--bootstrap", bootstrap, str(nat)],
                        capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr

    at = ms - 200_000

    def chain_lookups():
        qs = [{"operator": OPERATOR, "ip": public, "port": 1500, "from_ms": at, "to_ms": at + 1}
              for public, _, _ in chains]
        ans = lookup_many(bootstrap, w1.topics, qs, key=w1.lookup_key, timeout_s=60)
        return [[(h["subscriber"], h["inside_ip"]) for h in (ans.get(q["id"]) or {}).get("holders", [])] for q in qs]

    expected = [[(sub, inside)] for _, inside, sub in chains]
    wait_for(lambda: chain_lookups() == expected, timeout_s=90, what="both chains answered across the workers")

    # lawful requests for both public addresses + port, answered by the desk on either worker
    bodies = {}
    for n, (public, _, _) in enumerate(chains, start=1):
        bodies[n] = signed_request(keys, "police-t", n, address=public, port=1500, from_ms=at, to_ms=at + 1)[1]
    wait_for(lambda: count(bootstrap, w1.topics.query_state) >= 1, timeout_s=120, what="the desk's first snapshot")
    send(bootstrap, w1.topics.query_requests, [("police-t", v) for v in bodies.values()])
    rep = wait_for(lambda: (r := replies(bootstrap, w1.topics.query_responses)) and all(
        any(m["type"] == "answer" for m in r.get(f"police-t/{n}", [])) for n in bodies) and r,
        timeout_s=120, what="both lawful answers")
    for n, (public, inside, sub) in enumerate(chains, start=1):
        ans = [m for m in rep[f"police-t/{n}"] if m["type"] == "answer"]
        assert len(ans) == 1, rep[f"police-t/{n}"]
        result = open_answer(keys["police-t"][1], ans[0])["result"]
        assert [(m["subscriber"], m["inside_ip"], m["address"]) for m in result["matches"]] == [(sub, inside, public)]
    w2.stop()
    w1.stop()
