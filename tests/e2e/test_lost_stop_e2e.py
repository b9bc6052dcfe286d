"""A session whose Stop never came, asked about after its lost-Stop window, on the real broker.

The window comes from the operator profile (``[sessions] lost_stop_after``).  Past it, the
answer is ``end-unknown`` with the last holder and when it was last seen: not ``no-data`` (which
an authority reads as "not retained") and not a confirmed holder."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from agents.kafka_io import wait_group_caught_up
from agents.lookup_client import lookup_many
from tests.conftest import REPO

pytestmark = pytest.mark.broker

PROFILE = (REPO / "config" / "operators" / "connect2ip.toml").read_text().replace(
    "[identity]", '[sessions]\ninterim_interval = "30s"\nlost_stop_after = "2m"\n\n[identity]', 1)


def test_silent_session_past_the_window_answers_end_unknown(worker_factory, tmp_path, bootstrap):
    w = worker_factory(operators=[("connect2ip", PROFILE)]).start()
    now = int(time.time())
    recs = [
        # silent since 4 min ago: past the 2 min window
        {"User-Name": "silent@isp.example", "Acct-Status-Type": "Start", "Acct-Session-Id": "A1",
         "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": "100.64.50.1", "Event-Timestamp": now - 300},
        {"User-Name": "silent@isp.example", "Acct-Status-Type": "Interim-Update", "Acct-Session-Id": "A1",
         "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": "100.64.50.1", "Event-Timestamp": now - 240,
         "Acct-Session-Time": 60},
        # stopped: its end is known, so after it the address is simply free
        {"User-Name": "gone@isp.example", "Acct-Status-Type": "Start", "Acct-Session-Id": "B1",
         "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": "100.64.50.2", "Event-Timestamp": now - 280},
        {"User-Name": "gone@isp.example", "Acct-Status-Type": "Stop", "Acct-Session-Id": "B1",
         "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": "100.64.50.2", "Event-Timestamp": now - 200,
         "Acct-Session-Time": 80},
    ]
    feed = tmp_path / "s.jsonl"
    feed.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rc = subprocess.run([sys.executable, "-m", "agents.cli", "produce", "--format", "radius-json",
                         "--operator", "connect2ip", "--topic", w.topics.raw_radius, "--bootstrap", bootstrap,
                         str(feed)], cwd=REPO, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    assert wait_group_caught_up(bootstrap, f"{w.settings.app_id}-ingest", w.topics.raw_radius, timeout_s=120)
    assert wait_group_caught_up(bootstrap, f"{w.settings.app_id}-mapping", w.topics.bindings, timeout_s=120)
    ms = now * 1000
    qs = [
        {"operator": "connect2ip", "ip": "100.64.50.1", "from_ms": ms - 200_000, "to_ms": ms - 199_999},  # in window
        {"operator": "connect2ip", "ip": "100.64.50.1", "from_ms": ms - 10_000, "to_ms": ms - 9_999},    # past it
        {"operator": "connect2ip", "ip": "100.64.50.2", "from_ms": ms - 10_000, "to_ms": ms - 9_999},    # stopped
    ]
    ans = lookup_many(bootstrap, w.topics, qs, key=w.lookup_key, timeout_s=60)
    inside, past, stopped = (ans[q["id"]] for q in qs)
    assert inside["status"] == "ok" and [h["subscriber"] for h in inside["holders"]] == ["silent@isp.example"]
    assert past["status"] == "end-unknown" and past["holders"] == []
    assert past["end_unknown"] == [{"subscriber": "silent@isp.example", "from_ms": ms - 300_000,
                                    "last_seen_ms": ms - 240_000, "window_ms": 120_000}]
    assert stopped["status"] == "no-data" and "end_unknown" not in stopped
