"""The spine end to end on the real local broker: a raw RADIUS event in → a stats record whose
subscriber is a pseudonym (never the raw id) → a lookup that returns the right subscriber."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from agents.kafka_io import count, count_records, read_all, wait_group_caught_up
from agents.lookup_client import lookup_many
from tests.conftest import REPO, wait_for

pytestmark = pytest.mark.broker

SUBSCRIBER = "kund-4711@isp.example"


def test_raw_radius_to_pseudonymous_stats_and_exact_lookup(worker_factory, tmp_path, bootstrap):
    w = worker_factory(operators=("connect2ip",)).start()
    now = int(time.time())
    records = [
        {"User-Name": SUBSCRIBER, "Acct-Status-Type": "Start", "Acct-Session-Id": "0A0B0C0D-00000042",
         "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": "100.64.12.34",
         "Delegated-IPv6-Prefix": "2001:db8:200:ab00::/56", "Event-Timestamp": now - 600},
        {"User-Name": SUBSCRIBER, "Acct-Status-Type": "Stop", "Acct-Session-Id": "0A0B0C0D-00000042",
         "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": "100.64.12.34",
         "Delegated-IPv6-Prefix": "2001:db8:200:ab00::/56", "Event-Timestamp": now - 300,
         "Acct-Session-Time": 300},
        {"User-Name": "other@isp.example", "Acct-Status-Type": "Start", "Acct-Session-Id": "0A0B0C0D-00000043",
         "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": "100.64.12.34", "Event-Timestamp": now - 200},
    ]
    feed = tmp_path / "radius.jsonl"
    feed.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json at all\n")
    rc = subprocess.run([sys.executable, "-m", "agents.cli", "produce", "--format", "radius-json",
                         "--operator", "connect2ip", "--topic", w.topics.raw_radius, "--bootstrap", bootstrap,
                         str(feed)], cwd=REPO, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr

    wait_for(lambda: count(bootstrap, w.topics.stats) >= 5 and count_records(bootstrap, w.topics.deadletter) >= 1,
             timeout_s=120, what="stats and dead-letter records")

    stats = [json.loads(r.value) for r in read_all(bootstrap, w.topics.stats)]
    assert len(stats) == 5  # 2 addresses × (start, stop) + 1 start
    raw = b"".join(r.value for r in read_all(bootstrap, w.topics.stats))
    for needle in (SUBSCRIBER, "other@isp.example", "100.64.12.34", "2001:db8:200:ab00", "0A0B0C0D"):
        assert needle.encode() not in raw
    pseudonyms = {s["subscriber"] for s in stats}
    assert len(pseudonyms) == 2 and all(len(p) == 32 for p in pseudonyms)
    assert len({s["id"] for s in stats}) == 5  # deterministic ids, distinct per binding

    dl = [json.loads(r.value) for r in read_all(bootstrap, w.topics.deadletter)]
    assert [d["reason"] for d in dl] == ["bad-json"]
    assert dl[0]["topic"] == w.topics.raw_radius and dl[0]["offset"] == 3

    # the statistics come from their own consumer group: wait for the table's group as well
    assert wait_group_caught_up(bootstrap, f"{w.settings.app_id}-mapping", w.topics.bindings, timeout_s=120)
    ms = now * 1000
    qs = [
        {"operator": "connect2ip", "ip": "100.64.12.34", "from_ms": ms - 450_000, "to_ms": ms - 449_999},
        {"operator": "connect2ip", "ip": "100.64.12.34", "from_ms": ms - 100_000, "to_ms": ms - 99_999},
        {"operator": "connect2ip", "ip": "100.64.12.34", "from_ms": ms - 250_000, "to_ms": ms - 249_999},
        {"operator": "connect2ip", "ip": "2001:db8:200:ab77::1", "from_ms": ms - 450_000, "to_ms": ms - 449_999},
        {"operator": "connect2ip", "ip": "100.64.12.34", "from_ms": ms - 700_000, "to_ms": ms},
    ]
    ans = lookup_many(bootstrap, w.topics, qs, key=w.lookup_key, timeout_s=60)
    got = [ans[q["id"]] for q in qs]
    assert [h["subscriber"] for h in got[0]["holders"]] == [SUBSCRIBER]
    assert [h["subscriber"] for h in got[1]["holders"]] == ["other@isp.example"]
    assert got[2]["status"] == "no-data"  # the gap between the Stop and the re-use
    assert [h["subscriber"] for h in got[3]["holders"]] == [SUBSCRIBER]  # inside the delegated /56
    assert [(h["subscriber"], h["from_ms"], h["to_ms"]) for h in got[4]["holders"]] == [
        (SUBSCRIBER, ms - 600_000, ms - 300_000), ("other@isp.example", ms - 200_000, ms)]
