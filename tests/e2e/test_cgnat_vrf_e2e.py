"""One CGN box shared by two routing realms, told apart only by the VRF it logs, through the real
broker and worker: the VRF travels in the binding (bindings topic JSON), is stored with the NAT
interval (sealed table value) and picks the realm at lookup time.

Reference model: north (NAS 192.0.2.10, VRF 1) and south (NAS 192.0.2.20, VRF 2) both give inside
100.64.0.9 to a subscriber at the same time; the shared CGN "cgn-shared" logs one port block of
203.0.113.4 per VRF for 100.64.0.9.  A port in VRF 1's block names north's subscriber only, in
VRF 2's block south's only; a block logged in a VRF no realm lists (3) could be either realm:
"ambiguous", never a pick.  Without the VRF the shared source alone is ambiguous for all three."""

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
collectors = ["cgn-shared"]
nas = ["192.0.2.10"]
vrfs = ["1"]

[realms.south]
collectors = ["cgn-shared"]
nas = ["192.0.2.20"]
vrfs = ["2"]
"""


def iso(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def test_shared_cgn_resolves_each_block_in_its_logged_vrfs_realm(worker_factory, tmp_path, bootstrap):
    profile = (REPO / "config" / "operators" / f"{OP}.toml").read_text() + EXTRA
    w = worker_factory(operators=((OP, profile),)).start()
    now = int(time.time())
    t_r, t_nat = now - 900, (now - 600) * 1000

    radius = [{"User-Name": sub, "Acct-Status-Type": "Start", "Acct-Session-Id": f"s-{sub}",
               "NAS-IP-Address": nas, "Framed-IP-Address": "100.64.0.9", "Event-Timestamp": t_r}
              for sub, nas in (("north@isp.example", "192.0.2.10"), ("south@isp.example", "192.0.2.20"))]
    feed = tmp_path / "radius.jsonl"
    feed.write_text("".join(json.dumps(r) + "\n" for r in radius))
    nat = tmp_path / "nat.log"
    nat.write_text("".join(f"{iso(t_nat)} cgn-shared nfware: A VRF {vrf} INT 100.64.0.9 EXT 203.0.113.4:{lo}-{lo + 255}\n"
                           for vrf, lo in ((1, 1024), (2, 1280), (3, 1536))))
    for fmt, topic, f in (("radius-json", w.topics.raw_radius, feed), ("auto", w.topics.raw_nat, nat)):
        rc = subprocess.run([sys.executable, "-m", "agents.cli", "produce", "--format", fmt, "--operator", OP,
                             "--topic", topic, "--bootstrap", bootstrap, str(f)], cwd=REPO, capture_output=True,
                            text=True)
        assert rc.returncode == 0, rc.stderr
    wait_for(lambda: count(bootstrap, w.topics.bindings) >= 5, timeout_s=120, what="5 bindings")
    assert wait_group_caught_up(bootstrap, f"{w.settings.app_id}-mapping", w.topics.bindings, timeout_s=120)

    at = t_nat + 60_000
    qs = [1100, 1300, 1600, 1900]
    reqs = [{"operator": OP, "ip": "203.0.113.4", "port": p, "from_ms": at, "to_ms": at + 1} for p in qs]
    ans = lookup_many(bootstrap, w.topics, reqs, key=w.lookup_key, timeout_s=90)
    got = [ans[r["id"]] for r in reqs]
    subs = [[h["subscriber"] for h in a.get("holders") or ()] for a in got]
    assert (got[0]["status"], subs[0]) == ("ok", ["north@isp.example"]), got[0]
    assert (got[1]["status"], subs[1]) == ("ok", ["south@isp.example"]), got[1]
    assert got[0]["holders"][0]["inside_ip"] == "100.64.0.9" and got[0]["holders"][0]["ports"] == [1024, 1279]
    assert got[2]["status"] == "ambiguous", got[2]  # VRF 3 is in no realm: the shared box could be either
    assert got[3]["status"] == "no-data", got[3]    # no block holds port 1900
