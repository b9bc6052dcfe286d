"""Erasure end to end on the real broker: exact lookups before expiry (instant, interval, IPv6
prefix, CGNAT chain with and without a port), then — after the computed bound — no raw
address–subscriber pair anywhere: not in lookups, not in any topic read from the beginning, not
in any file of the worker's data directory or of the broker's log directories, and nothing the
remaining keys decrypt."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agents.kafka_io import read_all
from agents.lookup_client import lookup_many
from tests.conftest import REPO, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PROMISE_S = 60
#: the records that end a mapping reach Kafka a few seconds after the mapping ends here (the test
#: writes them after the fact); the plan must allow for that lag, as a deployment's would
INGEST_LAG_MS = 15_000


def fast_profile(name: str) -> str:
    text = (REPO / "config" / "operators" / "connect2ip.toml").read_text()
    text = re.sub(r'^name = ".*"$', f'name = "{name}"', text, flags=re.M)
    # the lawful-access promise (the first `promise`) is what this test is about; statistics keep
    # the seed profile's 24 h promise and key epoch
    return re.sub(r'^promise = ".*"$', f'promise = "{PROMISE_S}s"', text, count=1, flags=re.M)


def produce(bootstrap, topic, fmt, lines, tmp_path, operator):
    f = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rc = subprocess.run([sys.executable, "-m", "agents.cli", "produce", "--format", fmt, "--operator", operator,
                         "--topic", topic, "--bootstrap", bootstrap, str(f)], cwd=REPO, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr


def all_topic_bytes(bootstrap, prefix) -> bytes:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        names = [t for t in admin.list_topics() if t.startswith(prefix + "-")]
    finally:
        admin.close()
    assert len(names) >= 10, names
    out = []
    for t in names:
        for r in read_all(bootstrap, t):
            out += [r.key or b"", r.value or b"", b"".join(v for _, v in (r.headers or []))]
    return b"\n".join(out)


def needles_in_files(needles: list[bytes], *dirs: Path, chunk: int = 1 << 20, attempts: int = 10) -> list[tuple[str, bytes]]:
    """(file, needle) for every needle found in any file under ``dirs``, read a chunk at a time
    (with an overlap, so a needle across a chunk boundary is found): the session broker's data
    directory holds every test's topics with their preallocated index files, many GB in all
    (a whole-directory read took the suite to 22 GB and the OOM killer in a CI rehearsal).

    The broker keeps working meanwhile: a file it deletes or renames between the listing and the
    read (a producer-state snapshot, a segment it cleans: ``.log`` becomes ``.deleted``) starts
    the whole scan again, so a renamed file is read under its new name rather than skipped."""
    overlap = max(len(n) for n in needles) - 1
    for _ in range(attempts):
        found: list[tuple[str, bytes]] = []
        try:
            for d in dirs:
                for p in Path(d).rglob("*"):
                    if not p.is_file():
                        continue
                    with open(p, "rb") as f:
                        tail = b""
                        while block := f.read(chunk):
                            window = tail + block
                            found += [(str(p), n) for n in needles if n in window and (str(p), n) not in found]
                            tail = window[-overlap:] if overlap else b""
        except FileNotFoundError:
            continue
        return found
    raise AssertionError(f"files under {dirs} kept vanishing while they were read, {attempts} scans in a row")


def test_lookups_exact_then_physically_gone(worker_factory, tmp_path, bootstrap, broker):
    op = f"fast{uuid.uuid4().hex[:6]}"
    w = worker_factory(operators=((op, fast_profile(op)),), ingest_lag_ms=INGEST_LAG_MS).start()
    # the lag that counts ends when ingest reads the record: a Stop written 5 s after its end to
    # a worker still starting up would be past what the 60 s promise leaves (too-late)
    wait_for(lambda: "ingest: assigned" in w.log(), timeout_s=150, what="the ingest stage to have its partitions")
    tag = uuid.uuid4().hex[:10]
    sub1, sub2 = f"erase-{tag}-one@isp.example", f"erase-{tag}-two@isp.example"
    now = int(time.time())
    radius = [
        {"User-Name": sub1, "Acct-Status-Type": "Start", "Acct-Session-Id": f"{tag}-1", "NAS-IP-Address": "192.0.2.10",
         "Framed-IP-Address": "100.64.77.1", "Delegated-IPv6-Prefix": "2001:db8:77:1100::/56", "Event-Timestamp": now - 40},
        {"User-Name": sub1, "Acct-Status-Type": "Stop", "Acct-Session-Id": f"{tag}-1", "NAS-IP-Address": "192.0.2.10",
         "Framed-IP-Address": "100.64.77.1", "Delegated-IPv6-Prefix": "2001:db8:77:1100::/56",
         "Event-Timestamp": now - 5, "Acct-Session-Time": 35},
        {"User-Name": sub2, "Acct-Status-Type": "Start", "Acct-Session-Id": f"{tag}-2", "NAS-IP-Address": "192.0.2.10",
         "Framed-IP-Address": "100.64.77.2", "Event-Timestamp": now - 40},
        {"User-Name": sub2, "Acct-Status-Type": "Stop", "Acct-Session-Id": f"{tag}-2", "NAS-IP-Address": "192.0.2.10",
         "Framed-IP-Address": "100.64.77.2", "Event-Timestamp": now - 5, "Acct-Session-Time": 35},
    ]
    ms = now * 1000
    nat = [
        {"natEvent": 16, "sourceIPv4Address": "100.64.77.1", "postNATSourceIPv4Address": "198.51.100.77",
         "portRangeStart": 1024, "portRangeEnd": 2047, "observationTimeMilliseconds": ms - 39_000},
        {"natEvent": 16, "sourceIPv4Address": "100.64.77.2", "postNATSourceIPv4Address": "198.51.100.77",
         "portRangeStart": 2048, "portRangeEnd": 3071, "observationTimeMilliseconds": ms - 39_000},
        {"natEvent": 17, "sourceIPv4Address": "100.64.77.1", "postNATSourceIPv4Address": "198.51.100.77",
         "portRangeStart": 1024, "portRangeEnd": 2047, "observationTimeMilliseconds": ms - 6_000},
        {"natEvent": 17, "sourceIPv4Address": "100.64.77.2", "postNATSourceIPv4Address": "198.51.100.77",
         "portRangeStart": 2048, "portRangeEnd": 3071, "observationTimeMilliseconds": ms - 6_000},
    ]
    produce(bootstrap, w.topics.raw_radius, "radius-json", radius, tmp_path, op)
    produce(bootstrap, w.topics.raw_nat, "ipfix-json", nat, tmp_path, op)

    t = ms - 20_000
    queries = {
        "instant": {"operator": op, "ip": "100.64.77.1", "from_ms": t, "to_ms": t + 1},
        "interval": {"operator": op, "ip": "100.64.77.2", "from_ms": ms - 60_000, "to_ms": ms},
        "v6": {"operator": op, "ip": "2001:db8:77:11ff::42", "from_ms": t, "to_ms": t + 1},
        "nat_port": {"operator": op, "ip": "198.51.100.77", "port": 2100, "from_ms": t, "to_ms": t + 1},
        "nat_noport": {"operator": op, "ip": "198.51.100.77", "from_ms": t, "to_ms": t + 1},
    }

    def current():
        qs = {k: dict(v) for k, v in queries.items()}
        got = lookup_many(bootstrap, w.topics, list(qs.values()), key=w.lookup_key, timeout_s=60)
        return {k: got.get(q["id"], {"status": "unanswered"}) for k, q in qs.items()}

    def applied():  # every binding in the table: each query's answer is in (not just some)
        a = current()
        return a if all(a[k].get("status") == "ok" for k in ("instant", "interval", "v6", "nat_port")) \
            and a["nat_noport"].get("status") == "ambiguous" else None

    before = wait_for(applied, timeout_s=120, what="bindings to be applied")
    assert [h["subscriber"] for h in before["instant"]["holders"]] == [sub1]
    assert [(h["subscriber"], h["from_ms"], h["to_ms"]) for h in before["interval"]["holders"]] == [(sub2, ms - 40_000, ms - 5_000)]
    assert [h["subscriber"] for h in before["v6"]["holders"]] == [sub1]
    assert [(h["subscriber"], h["inside_ip"]) for h in before["nat_port"]["holders"]] == [(sub2, "100.64.77.2")]
    assert before["nat_noport"]["status"] == "ambiguous" and before["nat_noport"]["candidates"] == 2

    # the computed bounds: the table's worst case (TTL + sweeper + changelog bound) and every
    # topic's (ingest lag + its deletion bound) all fit in the promise, counted from the end
    worst = w.plan.retention[op].worst_case_ms
    assert worst <= PROMISE_S * 1000
    assert all(t.role not in ("raw", "derived") or INGEST_LAG_MS + t.bound_ms <= PROMISE_S * 1000
               for t in w.plan.topics), [(t.name, t.bound_ms) for t in w.plan.topics]
    end_ms = ms - 5_000
    time.sleep(max(0.0, (end_ms + PROMISE_S * 1000) / 1000 - time.time()) + 1)

    after = current()
    assert {k: a["status"] for k, a in after.items()} == {k: "no-data" for k in queries}, after

    needles = [sub1.encode(), sub2.encode(), tag.encode()]
    topics_blob = all_topic_bytes(bootstrap, w.topics.prefix)
    assert [n for n in needles if n in topics_blob] == []
    # physically: no segment file of the broker and no file of the worker holds them
    assert needles_in_files(needles, w.dir / "data", Path(broker.dir) / "data") == []

    # crypto-shredding: whatever copies of table values are still in the changelog (compaction
    # may lag), the worker's remaining key state opens none of them that holds these mappings
    from agents.vault import Vault
    from stream.errors import CryptoError

    vault = Vault.open_or_create(op, w.keys, ttl_ms=w.plan.retention[op].ttl_ms, grace_ms=0,
                                 now_ms=int(time.time() * 1000))
    opened = []
    for r in read_all(bootstrap, f"{w.topics.prefix}-mappings-changelog", heartbeats=True):
        if r.value is None:
            continue
        try:
            net, ivs = vault.open(r.key, r.value)
        except CryptoError:
            continue
        opened += [i.holder for i in ivs]
    assert sub1 not in opened and sub2 not in opened


def test_expiry_survives_kill_restart_and_a_joining_worker(worker_factory, tmp_path, bootstrap):
    """SIGKILL the worker while its mappings are live; the restarted worker (and a second one
    joining the group) recover the table from the changelog, rebuild the sweeper's schedule, and
    still erase on time once the sessions end."""
    import signal

    op = f"fast{uuid.uuid4().hex[:6]}"
    w = worker_factory(operators=((op, fast_profile(op)),), ingest_lag_ms=INGEST_LAG_MS).start()
    tag = uuid.uuid4().hex[:10]
    subs = [f"kill-{tag}-{i}@isp.example" for i in range(8)]
    common = [{"User-Name": sub, "Acct-Session-Id": f"{tag}-{i}", "NAS-IP-Address": "192.0.2.10",
               "Framed-IP-Address": f"100.64.88.{i + 1}"} for i, sub in enumerate(subs)]
    start = int(time.time()) - 30
    produce(bootstrap, w.topics.raw_radius, "radius-json",
            [{**c, "Acct-Status-Type": "Start", "Event-Timestamp": start} for c in common], tmp_path, op)
    probe_ms = start * 1000 + 10_000

    def statuses():
        q = [{"operator": op, "ip": c["Framed-IP-Address"], "from_ms": probe_ms, "to_ms": probe_ms + 1} for c in common]
        got = lookup_many(bootstrap, w.topics, q, key=w.lookup_key, timeout_s=60)
        return [got.get(x["id"], {}).get("status", "unanswered") for x in q]

    wait_for(lambda: statuses() == ["ok"] * len(subs), timeout_s=120, what="all mappings stored")
    w.stop(signal.SIGKILL)
    w.start()                      # restarted: recovers the table from the changelog
    joiner = w.twin().start()      # and a second worker joins, forcing a rebalance
    try:
        wait_for(lambda: statuses() == ["ok"] * len(subs), timeout_s=180, what="lookups after restart")
        end = int(time.time())
        produce(bootstrap, w.topics.raw_radius, "radius-json",
                [{**c, "Acct-Status-Type": "Stop", "Event-Timestamp": end, "Acct-Session-Time": end - start}
                 for c in common], tmp_path, op)
        time.sleep(max(0.0, end + PROMISE_S + 1 - time.time()))
        assert statuses() == ["no-data"] * len(subs)
        blob = all_topic_bytes(bootstrap, w.topics.prefix)
        assert [s for s in subs if s.encode() in blob] == []
    finally:
        joiner.stop()
