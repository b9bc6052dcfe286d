"""CGNAT through the whole chain on the real local broker: binary IPFIX over UDP
(``ipanon collect ipfix``), A10 CEF, SRX session logs and a 6WIND vSR 3 NAT64 line
(``ipanon produce --format auto``) → the worker → a lookup of public:port at T names the
subscriber that RADIUS says held the inside address then.  A10 batches are per protocol: a UDP
and a TCP batch of the same public ports go to two subscribers, and the lookup names the
protocol (without it: ambiguous).  The real A10 ICMP line binds query id 48856 as protocol 1: a
lookup naming ICMP finds its subscriber, one naming TCP or no protocol finds nobody.  A line no format knows is
dead-lettered with its reason.

The reference model is the scenario itself: who held which inside address (RADIUS) and which
public:port block each CGNAT event gave that inside address."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from agents.kafka_io import read_all, wait_group_caught_up
from agents.lookup_client import lookup_many
from tests.conftest import REPO, wait_for
from tests.unit.parse import ipfix_encode as enc

pytestmark = pytest.mark.broker

OP = "connect2ip"
# subscriber → inside address (IPv4 CGNAT space, or a delegated IPv6 prefix for NAT64)
SUBS = {
    "ipfix-block@isp.example": "100.64.0.7",
    "ipfix-session@isp.example": "100.64.0.8",
    "ipfix-nat64@isp.example": "2001:db8:300::/56",
    "a10@isp.example": "100.65.140.73",
    "a10-tcp@isp.example": "100.65.140.74",
    "a10-icmp@isp.example": "100.65.161.0",
    "srx@isp.example": "10.213.110.248",
    "sixwind64@isp.example": "2001:db8:200::/56",
}


def radius(sub: str, addr: str, t_s: int) -> dict:
    r = {"User-Name": sub, "Acct-Status-Type": "Start", "Acct-Session-Id": f"s-{sub}",
         "NAS-IP-Address": "192.0.2.10", "Event-Timestamp": t_s}
    r["Delegated-IPv6-Prefix" if "/" in addr else "Framed-IP-Address"] = addr
    return r


def iso(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def test_public_port_at_t_resolves_through_ipfix_a10_srx_and_nat64(worker_factory, tmp_path, bootstrap):
    w = worker_factory(operators=(OP,)).start()
    now = int(time.time())
    t_radius, t_nat = now - 900, (now - 600) * 1000

    feed = tmp_path / "radius.jsonl"
    feed.write_text("".join(json.dumps(radius(s, a, t_radius)) + "\n" for s, a in SUBS.items()))
    rc = subprocess.run([sys.executable, "-m", "agents.cli", "produce", "--format", "radius-json", "--operator", OP,
                         "--topic", w.topics.raw_radius, "--bootstrap", bootstrap, str(feed)],
                        cwd=REPO, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr

    # -- binary IPFIX over UDP on loopback, through `ipanon collect ipfix` --
    col = subprocess.Popen([sys.executable, "-m", "agents.cli", "collect", "ipfix", "--listen", "127.0.0.1:0",
                            "--operator", OP, "--topic", w.topics.raw_nat, "--bootstrap", bootstrap,
                            "--max-messages", "3", "--duration", "60"],
                           cwd=REPO, stderr=subprocess.PIPE, text=True)
    first = col.stderr.readline()
    port = int(first.rsplit(":", 1)[1].split()[0])
    rows_block = [{"observationTimeMilliseconds": t_nat, "natEvent": 16, "sourceIPv4Address": "100.64.0.7",
                   "postNATSourceIPv4Address": "198.51.100.7", "portRangeStart": 40000, "portRangeEnd": 40127,
                   "ingressVRFID": 1}]
    rows_sess = [{"observationTimeMilliseconds": t_nat, "natEvent": 4, "sourceIPv4Address": "100.64.0.8",
                  "sourceTransportPort": 5555, "postNATSourceIPv4Address": "198.51.100.7",
                  "postNAPTSourceTransportPort": 41000}]
    rows_64 = [{"observationTimeMilliseconds": t_nat, "natEvent": 16, "sourceIPv6Address": "2001:db8:300::1",
                "postNATSourceIPv4Address": "198.51.100.8", "portRangeStart": 2048, "portRangeEnd": 2559}]
    msgs = [enc.message([enc.template_set(256, enc.BLOCK), enc.template_set(257, enc.SESSION),
                         enc.template_set(258, enc.NAT64)]),
            enc.message([enc.data_set(256, enc.BLOCK, rows_block), enc.data_set(257, enc.SESSION, rows_sess)], seq=1),
            enc.message([enc.data_set(258, enc.NAT64, rows_64)], seq=3)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for m in msgs:
            s.sendto(m, ("127.0.0.1", port))
    _out, err = col.communicate(timeout=90)
    assert col.returncode == 0, first + err
    assert "3 records" in err, err

    # -- vendor syslog lines in the real shapes, stamped now --
    lines = [
        f"{iso(t_nat)} 10.254.254.57 cgn0.thn2/cgn-demo  CEF:0|A10|CFW|6.0.0-P1|CGN 106|Nat Port Batch Pool "
        f"Allocated|5|proto=UDP src=100.65.140.73 sourceTranslatedAddress=99.99.99.12 sourceTranslatedPort=22016 "
        f"cn3=22271 cn3Label=Last Nat Port",
        # the same public ports, batch for TCP, to another subscriber (a second later)
        f"{iso(t_nat + 1000)} 10.254.254.57 cgn0.thn2/cgn-demo  CEF:0|A10|CFW|6.0.0-P1|CGN 106|Nat Port Batch Pool "
        f"Allocated|5|proto=TCP src=100.65.140.74 sourceTranslatedAddress=99.99.99.12 sourceTranslatedPort=22016 "
        f"cn3=22271 cn3Label=Last Nat Port",
        f"<14>1 {iso(t_nat)} srx1 RT_FLOW - RT_FLOW_SESSION_CREATE [junos@2636.1.1.1.2.35 "
        f'source-address="10.213.110.248" source-port="34613" destination-address="72.14.203.188" '
        f'destination-port="5228" service-name="None" nat-source-address="211.36.132.131" nat-source-port="43335" '
        f'nat-destination-address="72.14.203.188" nat-destination-port="5228" protocol-id="6"]',
        f"{iso(t_nat)} vrouter fp-cgnat-logd@main[4269]: USER 2001:db8:200::1 (matching rule 1): NEW BLOCK "
        f"(ip public 192.0.2.77, proto 6, port 1024 - 1535)",
        # the real CGN 100 ICMP line, stamped now: query id 48856 of 99.99.99.13, protocol 1
        f"{iso(t_nat)} 10.254.254.57 cgn0.thn2/cgn-demo  CEF:0|A10|CFW|6.0.0-P1|CGN 100|"
        "Nat Port Allocated|5|proto=ICMP src=100.65.161.0 spt=48856 sourceTranslatedAddress=99.99.99.13 "
        "sourceTranslatedPort=48856 dst=8.8.8.8 dpt=0",
        # no format knows this line: dead-lettered with its reason, never misread
        f"{iso(t_nat)} cgn9 kernel: link eth0 up",
    ]
    nat = tmp_path / "cgnat.log"
    nat.write_text("\n".join(lines) + "\n")
    rc = subprocess.run([sys.executable, "-m", "agents.cli", "produce", "--format", "auto", "--operator", OP,
                         "--topic", w.topics.raw_nat, "--bootstrap", bootstrap, str(nat)],
                        cwd=REPO, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr

    # (read, not counted: the topic's heartbeat records count too, and read_all leaves them out)
    dl: list = []
    wait_for(lambda: dl.extend(json.loads(r.value) for r in read_all(bootstrap, w.topics.deadletter)) or dl,
             timeout_s=120, what="the unknown line dead-lettered")
    assert [d["reason"] for d in dl] == ["unrecognised-format"]
    assert wait_group_caught_up(bootstrap, f"{w.settings.app_id}-mapping", w.topics.bindings, timeout_s=120)

    at = t_nat + 60_000
    cases = [  # (public, port, expected subscriber)
        ("198.51.100.7", 40100, "ipfix-block@isp.example"),
        ("198.51.100.7", 41000, "ipfix-session@isp.example"),
        ("198.51.100.8", 2048, "ipfix-nat64@isp.example"),
        ("211.36.132.131", 43335, "srx@isp.example"),
        ("192.0.2.77", 1500, "sixwind64@isp.example"),
    ]
    qs = [{"operator": OP, "ip": ip, "port": p, "from_ms": at, "to_ms": at + 1} for ip, p, _ in cases]
    # the A10 batches of 99.99.99.12:22016-22271, by the flow's protocol (UDP 17, TCP 6, none)
    by_proto = [(17, "a10@isp.example"), (6, "a10-tcp@isp.example")]
    qs += [{"operator": OP, "ip": "99.99.99.12", "port": 22271, "from_ms": at, "to_ms": at + 1, "proto": p}
           for p, _ in by_proto]
    qs.append({"operator": OP, "ip": "99.99.99.12", "port": 22271, "from_ms": at, "to_ms": at + 1})
    # the ICMP id 48856 of 99.99.99.13: found by protocol 1, never by a TCP lookup nor by one
    # without a protocol (a port question: an id is not a port)
    qs.append({"operator": OP, "ip": "99.99.99.13", "port": 48856, "from_ms": at, "to_ms": at + 1, "proto": 1})
    qs.append({"operator": OP, "ip": "99.99.99.13", "port": 48856, "from_ms": at, "to_ms": at + 1, "proto": 6})
    qs.append({"operator": OP, "ip": "99.99.99.13", "port": 48856, "from_ms": at, "to_ms": at + 1})
    # outside every block/session: nobody, never a guess
    qs.append({"operator": OP, "ip": "198.51.100.7", "port": 39999, "from_ms": at, "to_ms": at + 1})
    ans = lookup_many(bootstrap, w.topics, qs, key=w.lookup_key, timeout_s=90)
    got = [ans[q["id"]] for q in qs]
    for (ip, p, sub), a in zip(cases + [("99.99.99.12", 22271, s) for _, s in by_proto], got):
        assert [h["subscriber"] for h in a["holders"]] == [sub], (ip, p, a)
    assert got[-5]["status"] == "ambiguous" and not got[-5].get("holders"), got[-5]
    assert [h["subscriber"] for h in got[-4]["holders"]] == ["a10-icmp@isp.example"], got[-4]
    assert got[-3]["status"] == "no-data" and not got[-3].get("holders"), got[-3]
    assert got[-2]["status"] == "no-data" and not got[-2].get("holders"), got[-2]
    assert got[-1]["status"] == "no-data", got[-1]
