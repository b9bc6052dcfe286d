"""The table gives the same answers after a restart as before it.

Every session here has Start, Interim and Stop on an address of its own, so the last write of
each key is the closed interval.  If the changelog holds the writes out of order (the Interim's
"still open" after the Stop's "closed"), a restore brings back an open interval: the worker then
names a subscriber who no longer held the address, and counts the expiry from the last event +
the lost-Stop window instead of from the Stop.  Lookups ask before and after a SIGTERM restart
and after a SIGKILL restart, and compare every answer with the history that was fed."""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import sys
import time

import pytest

from agents.kafka_io import wait_group_caught_up
from agents.lookup_client import lookup_many
from tests.conftest import REPO

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SESSIONS = 600


def _history(now_s: int) -> list[dict]:
    """SESSIONS sessions, each Start → Interim → Stop on its own address, ending within the last
    two minutes (older Stops would be past the worker's 5 min ingest lag: dead-lettered too-late)."""
    out = []
    base = int(ipaddress.ip_address("100.70.0.1"))
    for i in range(SESSIONS):
        ip = str(ipaddress.ip_address(base + i))
        start = now_s - 240 + i % 60
        common = {"User-Name": f"kund-{i}@isp.example", "Acct-Session-Id": f"S{i:06d}",
                  "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": ip}
        out.append({**common, "Acct-Status-Type": "Start", "Event-Timestamp": start})
        out.append({**common, "Acct-Status-Type": "Interim-Update", "Event-Timestamp": start + 60,
                    "Acct-Session-Time": 60})
        out.append({**common, "Acct-Status-Type": "Stop", "Event-Timestamp": start + 120,
                    "Acct-Session-Time": 120})
    return out


def _expected(history: list[dict]) -> dict[str, tuple[str, int, int]]:
    ends = {}
    for r in history:
        ip = r["Framed-IP-Address"]
        if r["Acct-Status-Type"] == "Start":
            ends[ip] = [r["User-Name"], r["Event-Timestamp"] * 1000, None]
        elif r["Acct-Status-Type"] == "Stop":
            ends[ip][2] = r["Event-Timestamp"] * 1000
    return {ip: tuple(v) for ip, v in ends.items()}


def _wrong_answers(bootstrap, w, expected) -> list[tuple]:
    qs = [{"operator": "connect2ip", "ip": ip, "from_ms": s - 60_000, "to_ms": e + 3_600_000}
          for ip, (_, s, e) in expected.items()]
    ans = lookup_many(bootstrap, w.topics, qs, key=w.lookup_key, timeout_s=120)
    wrong = []
    for q in qs:
        sub, s, e = expected[q["ip"]]
        got = ans.get(q["id"])
        rows = [(h["subscriber"], h["from_ms"], h["to_ms"]) for h in (got or {}).get("holders") or ()]
        if rows != [(sub, s, e)]:
            wrong.append((q["ip"], (sub, s, e), got))
    return wrong


def _restart(w, sig) -> None:
    w.stop(sig)
    w.start()
    # the lookup agent answers only after the table is restored (Faust resumes it then)


def test_answers_survive_sigterm_and_sigkill_restarts(worker_factory, tmp_path, bootstrap):
    w = worker_factory(operators=("connect2ip",)).start()
    history = _history(int(time.time()))
    feed = tmp_path / "sessions.jsonl"
    feed.write_text("".join(json.dumps(r) + "\n" for r in history))
    rc = subprocess.run([sys.executable, "-m", "agents.cli", "produce", "--format", "radius-json",
                         "--operator", "connect2ip", "--topic", w.topics.raw_radius, "--bootstrap", bootstrap,
                         str(feed)], cwd=REPO, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    expected = _expected(history)
    assert wait_group_caught_up(bootstrap, f"{w.settings.app_id}-ingest", w.topics.raw_radius, timeout_s=180)
    assert wait_group_caught_up(bootstrap, f"{w.settings.app_id}-mapping", w.topics.bindings, timeout_s=180)

    before = _wrong_answers(bootstrap, w, expected)
    assert before == [], f"{len(before)} wrong before any restart, e.g. {before[:3]}"

    _restart(w, signal.SIGTERM)
    after_term = _wrong_answers(bootstrap, w, expected)
    assert after_term == [], f"{len(after_term)} of {SESSIONS} wrong after SIGTERM, e.g. {after_term[:3]}"

    _restart(w, signal.SIGKILL)
    after_kill = _wrong_answers(bootstrap, w, expected)
    assert after_kill == [], f"{len(after_kill)} of {SESSIONS} wrong after SIGKILL, e.g. {after_kill[:3]}"
