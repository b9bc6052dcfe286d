"""The worker-to-worker lookup path attacked from outside on the real broker.

Before: any local user could write a plaintext JSON request to ``<prefix>-lookup-requests`` and
read ``{"status":"ok","holders":[{"subscriber":"…"}]}`` from ``-lookup-responses``; requests
carried raw addresses, also in their Kafka key.  Now (``stream.lookup_wire``) requests and
answers are AES-GCM sealed under the deployment's lookup key: an outsider's request, a forged,
altered, replayed, stale or re-routed one gets no answer at all and is counted in
``ipanon_lookup_refused_total{reason}``; nothing on either topic names an address or a
subscriber, in values, keys or headers.

One worker serves the whole module (its start is most of the cost).  The scan uses addresses
and subscribers the attacks never write in plaintext, so it holds in any test order.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import subprocess
import sys
import time
import urllib.request

import pytest
from kafka import KafkaProducer

from agents.kafka_io import count, read_all, wait_group_caught_up
from agents.lookup_client import lookup_many, request_partition
from stream.intervals import routing_key
from stream.lookup_wire import MAX_AGE_MS, LookupSeal
from tests.conftest import REPO, WorkerProcess, wait_for

pytestmark = pytest.mark.broker

OP = "connect2ip"
SCAN = [(f"100.66.1.1{i:02d}", f"lp-scan-{i:02d}@isp.example") for i in range(12)]
ATTACK = [(f"100.66.2.1{i:02d}", f"lp-attack-{i:02d}@isp.example") for i in range(4)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dep(bootstrap, tmp_path_factory):
    d = tmp_path_factory.mktemp("lookup-path")
    port = free_port()
    w = WorkerProcess(bootstrap, d, f"lp{secrets.token_hex(4)}", [OP], ["--web-port", str(port)])
    w.port = port
    w.start()
    try:
        now = int(time.time())
        recs = []
        for i, (ip, sub) in enumerate(SCAN + ATTACK):
            base = {"User-Name": sub, "Acct-Session-Id": f"LP-{i}", "NAS-IP-Address": "192.0.2.10",
                    "Framed-IP-Address": ip}
            recs += [{**base, "Acct-Status-Type": "Start", "Event-Timestamp": now - 600},
                     {**base, "Acct-Status-Type": "Stop", "Event-Timestamp": now - 60, "Acct-Session-Time": 540}]
        feed = d / "radius.jsonl"
        feed.write_text("".join(json.dumps(r) + "\n" for r in recs))
        rc = subprocess.run([sys.executable, "-m", "agents.cli", "produce", "--format", "radius-json", "--operator",
                             OP, "--topic", w.topics.raw_radius, "--bootstrap", bootstrap, str(feed)],
                            cwd=REPO, capture_output=True, text=True)
        assert rc.returncode == 0, rc.stderr
        n = len(recs)
        wait_for(lambda: count(bootstrap, w.topics.stats) >= n, timeout_s=180, what=f"{n} stats records")
        wait_for(lambda: metrics(w) is not None, timeout_s=60, what="the worker's /metrics")
        # the statistics come from their own consumer group: wait for the table's group as well
        assert wait_group_caught_up(bootstrap, f"{w.settings.app_id}-mapping", w.topics.bindings, timeout_s=180)
        w.at_ms = (now - 300) * 1000
        yield w
    finally:
        w.stop()


def metrics(w) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{w.port}/metrics", timeout=10) as r:
            return r.read().decode()
    except OSError:
        return None


def refused(w, reason: str) -> int:
    m = re.search(r'^ipanon_lookup_refused_total\{reason="%s"\} ([0-9.e+]+)$' % re.escape(reason),
                  metrics(w) or "", re.M)
    return int(float(m.group(1))) if m else 0


def ask(w, pairs, bootstrap):
    qs = [{"operator": OP, "ip": ip, "from_ms": w.at_ms, "to_ms": w.at_ms + 1} for ip, _ in pairs]
    ans = lookup_many(bootstrap, w.topics, qs, key=w.lookup_key, timeout_s=90)
    return qs, ans


def raw_producer(bootstrap):
    # an outsider on the default local broker: a plain client, no credentials, no lookup key
    return KafkaProducer(bootstrap_servers=bootstrap)


def responses_to(bootstrap, w, ids) -> list:
    return [r for r in read_all(bootstrap, w.topics.lookup_responses)
            if r.key is not None and r.key.decode("utf-8", "replace") in ids]


def test_real_lookups_leave_no_address_or_subscriber_on_the_lookup_topics(dep, bootstrap):
    w = dep
    qs, ans = ask(w, SCAN, bootstrap)
    assert [[h["subscriber"] for h in ans[q["id"]]["holders"]] for q in qs] == [[sub] for _, sub in SCAN], ans
    needles = [s.encode() for pair in SCAN for s in pair] + [b"subscriber", b"holders"]
    needles += [sub.encode() for _, sub in ATTACK]  # no answer names them either (the attacks write only their addresses)
    requests = read_all(bootstrap, w.topics.lookup_requests, heartbeats=True)
    responses = read_all(bootstrap, w.topics.lookup_responses, heartbeats=True)
    assert len([r for r in requests if r.value is not None]) >= len(SCAN)
    assert len(responses_to(bootstrap, w, {q["id"] for q in qs})) == len(SCAN)
    leaks = []
    for topic, recs in (("requests", requests), ("responses", responses)):
        for r in recs:
            raw = (r.key or b"") + (r.value or b"") + b"".join(k.encode() + (v or b"") for k, v in r.headers or ())
            leaks += [(topic, r.partition, r.offset, n) for n in needles if n in raw]
    assert leaks == []
    # a genuine request's Kafka key is empty (the old one was "<operator>|<address>"): it goes to
    # its partition explicitly, and the address stays inside the seal
    seal = LookupSeal(w.lookup_key, w.topics.lookup_requests)
    now = time.time_ns() // 1_000_000
    genuine = [r for r in requests if r.value is not None and _opens(seal, r, now)]
    assert len(genuine) >= len(SCAN) and {r.key for r in genuine} == {None}


def test_a_credential_less_plaintext_request_gets_no_answer_and_is_counted(dep, bootstrap):
    w = dep
    before = refused(w, "unauthenticated")
    log_before = w.log().count("refused a request (unauthenticated)")
    ids = set()
    p = raw_producer(bootstrap)
    t0 = time.monotonic()
    n = 0
    for round_ in range(10):
        for ip, _ in ATTACK:  # the plaintext request that once got answers, keyed by the routing key as the old client did
            rid = f"outsider-{round_}-{ip}"
            ids.add(rid)
            req = {"id": rid, "operator": OP, "ip": ip, "port": None, "from_ms": w.at_ms, "to_ms": w.at_ms + 1}
            p.send(w.topics.lookup_requests, key=routing_key(OP, ipaddress.ip_network(ip)).encode(),
                   value=json.dumps(req).encode())
            n += 1
    p.flush()
    p.close()
    wait_for(lambda: refused(w, "unauthenticated") >= before + n, timeout_s=120,
             what=f"{n} plaintext requests counted as refused")
    elapsed = time.monotonic() - t0
    assert refused(w, "unauthenticated") == before + n
    # a sealed request sent after them is answered: the worker has read past them by then
    qs, ans = ask(w, ATTACK[:1], bootstrap)
    assert [h["subscriber"] for h in ans[qs[0]["id"]]["holders"]] == [ATTACK[0][1]]
    assert responses_to(bootstrap, w, ids) == []
    everything = b"".join((r.value or b"") for r in read_all(bootstrap, w.topics.lookup_responses))
    assert b'"status"' not in everything and b"lp-attack" not in everything
    # logged, but at a bounded rate (one line per reason per 10 s), never the request itself
    lines = w.log().count("refused a request (unauthenticated)") - log_before
    assert 1 <= lines <= 2 + elapsed / 10, lines
    assert "outsider-" not in w.log()


def test_forged_altered_replayed_stale_and_rerouted_requests_are_refused(dep, bootstrap):
    w = dep
    reasons = ("unauthenticated", "replayed", "wrong-partition", "stale")
    before = {r: refused(w, r) for r in reasons}
    qs, ans = ask(w, ATTACK[1:2], bootstrap)  # one genuine lookup, answered
    rid = qs[0]["id"]
    assert [h["subscriber"] for h in ans[rid]["holders"]] == [ATTACK[1][1]]
    seal = LookupSeal(w.lookup_key, w.topics.lookup_requests)
    # the genuine request as an eavesdropper on the topic copied it
    now = time.time_ns() // 1_000_000
    (orig,) = [r for r in read_all(bootstrap, w.topics.lookup_requests)
               if r.value is not None and _opens(seal, r, now).get("id") == rid]
    parts = w.settings.partitions
    ip = ATTACK[1][0]
    part = request_partition(OP, ip, parts)
    assert orig.partition == part
    q = {"operator": OP, "ip": ip, "port": None, "from_ms": w.at_ms, "to_ms": w.at_ms + 1}
    forged = LookupSeal(secrets.token_bytes(32), w.topics.lookup_requests).seal_request(
        q, request_id="forged-1", partition=part, now_ms=now)
    altered = bytearray(orig.value)
    altered[40] ^= 0x04  # a bit inside the sealed request (where its fields are)
    stale = seal.seal_request(q, request_id="stale-1", partition=part, now_ms=now - MAX_AGE_MS - 60_000)
    p = raw_producer(bootstrap)
    p.send(w.topics.lookup_requests, partition=part, value=orig.value)                # replayed
    p.send(w.topics.lookup_requests, partition=(part + 1) % parts, value=orig.value)  # replayed elsewhere
    p.send(w.topics.lookup_requests, partition=part, value=forged)                    # forged
    p.send(w.topics.lookup_requests, partition=part, value=bytes(altered))            # altered
    p.send(w.topics.lookup_requests, partition=part, value=stale)                     # stale (a key holder's)
    p.flush()
    p.close()
    want = {"replayed": 1, "wrong-partition": 1, "unauthenticated": 2, "stale": 1}

    def counted():
        return all(refused(w, r) - before[r] >= n for r, n in want.items())
    wait_for(counted, timeout_s=120, what=f"refusals {want}")
    assert {r: refused(w, r) - before[r] for r in reasons} == want
    # the genuine request was answered once; nothing else was
    assert len(responses_to(bootstrap, w, {rid})) == 1
    assert responses_to(bootstrap, w, {"forged-1", "stale-1"}) == []


def _opens(seal: LookupSeal, r, now: int) -> dict:
    try:
        return seal.open_request(r.value, partition=r.partition, now_ms=now)
    except Exception:
        return {}
