"""Two routing realms reusing the same inside range, and deterministic NAT (RFC 7422) with no
log line, through the real broker and worker.

Reference model: north and south each give inside 100.64.0.9 to a different subscriber at the
same time (RADIUS NAS 192.0.2.10 / 192.0.2.20); each realm's CGN logs its own port block for
that inside address.  A lookup of a north public port must name the north subscriber only, a
CGN in no realm must give "ambiguous", and a deterministic public port maps by the RFC 7422
formula to an inside address whose north holder is the answer.

The mapping table ends an address's holder when another subscriber's Start for that address
arrives later (stream/intervals.py ``_repair``) only within one routing realm: checked with
simultaneous starts and with the realistic case, the south subscriber starting a minute after
north (before the realm-aware rule, north's holder was cut there and north's lookup named
nobody)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from agents.kafka_io import count, wait_group_caught_up
from agents.lookup_client import lookup_many
from tests.conftest import REPO, wait_for

pytestmark = pytest.mark.broker

OP = "connect2ip"
EXTRA = """
[realms.north]
collectors = ["cgn-north"]
nas = ["192.0.2.10"]

[realms.south]
collectors = ["cgn-south"]
nas = ["192.0.2.20"]

[[deterministic_nat]]
version = 1
valid_from = "2026-01-01T00:00:00Z"
inside = "100.64.1.0/26"
outside = "198.51.100.0/30"
ratio = 16
ports_per_host = 4000
realm = "north"
"""


def iso(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


@pytest.mark.parametrize("south_delay_s", [0, 60])
def test_realms_keep_reused_inside_space_apart_and_deterministic_nat_needs_no_log(worker_factory, tmp_path,
                                                                                   bootstrap, south_delay_s):
    profile = (REPO / "config" / "operators" / f"{OP}.toml").read_text() + EXTRA
    w = worker_factory(operators=((OP, profile),)).start()
    now = int(time.time())
    t_r, t_nat = now - 900, (now - 600) * 1000

    def start(sub, addr, nas):
        return {"User-Name": sub, "Acct-Status-Type": "Start", "Acct-Session-Id": f"s-{sub}",
                "NAS-IP-Address": nas, "Framed-IP-Address": addr,
                "Event-Timestamp": t_r + (south_delay_s if nas == "192.0.2.20" else 0)}

    radius = [start("north@isp.example", "100.64.0.9", "192.0.2.10"),
              start("south@isp.example", "100.64.0.9", "192.0.2.20"),
              start("det-north@isp.example", "100.64.1.17", "192.0.2.10"),
              start("det-south@isp.example", "100.64.1.17", "192.0.2.20")]
    feed = tmp_path / "radius.jsonl"
    feed.write_text("".join(json.dumps(r) + "\n" for r in radius))
    nat = tmp_path / "nat.log"
    nat.write_text("".join(
        f"{iso(t_nat)} {host} nfware: A VRF 0 INT 100.64.0.9 EXT {pub}:1024-1279\n"
        for host, pub in (("cgn-north", "203.0.113.1"), ("cgn-south", "203.0.113.2"), ("cgn-other", "203.0.113.3"))))
    for fmt, topic, f in (("radius-json", w.topics.raw_radius, feed), ("auto", w.topics.raw_nat, nat)):
        rc = subprocess.run([sys.executable, "-m", "agents.cli", "produce", "--format", fmt, "--operator", OP,
                             "--topic", topic, "--bootstrap", bootstrap, str(f)], cwd=REPO, capture_output=True,
                            text=True)
        assert rc.returncode == 0, rc.stderr
    # 4 RADIUS starts + 3 NAT blocks must be bindings before "caught up" means anything
    wait_for(lambda: count(bootstrap, w.topics.bindings) >= 7, timeout_s=120, what="7 bindings")
    assert wait_group_caught_up(bootstrap, f"{w.settings.app_id}-mapping", w.topics.bindings, timeout_s=120)

    at = t_nat + 60_000
    # RFC 7422 forward formula by hand: k = 17 → public 198.51.100.(17 // 16) = .1,
    # ports 1024 + 4000 · (17 mod 16) = 5024 .. 9023
    qs = [
        ("203.0.113.1", 1100), ("203.0.113.2", 1100), ("203.0.113.3", 1100),
        ("198.51.100.1", 5024), ("198.51.100.1", 9023), ("198.51.100.1", 9024), ("198.51.100.1", None),
    ]
    reqs = [{"operator": OP, "ip": ip, "port": p, "from_ms": at, "to_ms": at + 1} for ip, p in qs]
    ans = lookup_many(bootstrap, w.topics, reqs, key=w.lookup_key, timeout_s=90)
    got = [ans[r["id"]] for r in reqs]
    subs = [[h["subscriber"] for h in a.get("holders") or ()] for a in got]
    assert (got[0]["status"], subs[0]) == ("ok", ["north@isp.example"]), got[0]
    assert (got[1]["status"], subs[1]) == ("ok", ["south@isp.example"]), got[1]
    assert got[2]["status"] == "ambiguous", got[2]          # CGN in no realm: two realms could match
    assert (got[3]["status"], subs[3]) == ("ok", ["det-north@isp.example"]), got[3]
    assert got[3]["holders"][0]["inside_ip"] == "100.64.1.17" and got[3]["holders"][0]["ports"] == [5024, 9023]
    assert subs[4] == ["det-north@isp.example"]
    assert got[5]["status"] == "no-data", got[5]            # port 9024 is 100.64.1.18's block: nobody holds it
    assert got[6]["status"] == "ambiguous", got[6]          # deterministic pool without a port
