"""RFC 8158 NAT events a real exporter sent: FD.io VPP's DET44 IPFIX logging, as a collector
printed them (tests/data/cgnat/vpp-det44-ipfix.txt, origin in tests/data/README).  No binary
capture of them is public; the collector printed each record's IANA element names and values in
its template's order, so the test reads the text into name → value, gives it to ``ipfix-json``,
and builds the same record as binary IPFIX with the RFC-layout encoder of the parser tests
(field lengths of RFC 8158 / the IANA registry) for ``ipfix``.

Expected values are written by reading the lines: NAT44 session create (natEvent 4) and delete
(5) of inside 10.0.0.11 → public 192.168.33.2:6938, TCP (protocolIdentifier 6), VRF id 0, at
the printed epoch milliseconds (which the printed local time, +0200, agrees with)."""

from __future__ import annotations

import json
from datetime import datetime

from parsehelp import DATA
from stream import mapping
from stream.model import Binding, network
from stream.parse import detect, get_format
from tests.unit.parse import ipfix_encode as enc

LINES = [l for l in (DATA / "cgnat" / "vpp-det44-ipfix.txt").read_text().splitlines() if l.strip()]
#: (action, at_ms, inside, public, port, proto, vrf), read from each line
WANT = [("start", 1758891217327, "10.0.0.11", "192.168.33.2", 6938, 6, "0"),
        ("stop", 1758891277399, "10.0.0.11", "192.168.33.2", 6938, 6, "0")]
#: the printed local times, to check the epoch values were read right
PRINTED = ["2025-09-26 14:53:37 +0200", "2025-09-26 14:54:37 +0200"]


def record(line: str) -> dict:
    """``name value[(label)] …`` → {name: value}: numbers as integers, addresses as text."""
    words = line.split()
    out: dict = {}
    i = 0
    while i < len(words):
        name, value = words[i], words[i + 1]
        i += 2
        if "(" in value:  # "1758891217327(2025-09-26" … "+0200)": the label may hold spaces
            value = value.split("(", 1)[0]
            while not words[i - 1].endswith(")"):
                i += 1
        out[name] = value if "." in value else int(value)
    return out


def outcome(b: Binding) -> tuple:
    return (b.action, b.at_ms, str(b.inside_ip), str(b.ip.network_address), b.port_first, b.proto, b.vrf)


def test_the_lines_were_read_right():
    assert len(LINES) == len(WANT) == 2
    for line, want, printed in zip(LINES, WANT, PRINTED):
        r = record(line)
        assert list(r) == ["observationTimeMilliseconds", "natEvent", "sourceIPv4Address", "postNATSourceIPv4Address",
                           "protocolIdentifier", "sourceTransportPort", "postNAPTSourceTransportPort", "ingressVRFID"]
        assert r["observationTimeMilliseconds"] == want[1]
        assert int(datetime.strptime(printed, "%Y-%m-%d %H:%M:%S %z").timestamp()) == want[1] // 1000


def test_vpp_nat44_session_events_as_ipfix_json_and_as_binary_ipfix():
    for line, want in zip(LINES, WANT):
        r = record(line)
        as_json = json.dumps(r).encode()
        assert detect(as_json) == "ipfix-json"
        (j,) = get_format("ipfix-json").parse(as_json, operator="op")
        assert outcome(j) == want
        names = list(r)  # the exporter's template order
        msg = enc.message([enc.template_set(256, names), enc.data_set(256, names, [r])], export_s=want[1] // 1000)
        (b,) = get_format("ipfix").parse(msg, operator="op")
        assert outcome(b) == want
        assert b.port_last == b.port_first  # a session: one port


def test_the_session_answers_a_tcp_lookup_only_while_it_lasted():
    rules = mapping.Rules(ttl_ms=10 * 24 * 3600_000)
    rows: dict = {}

    def put(slot, addr, b):
        rows[(slot, addr)] = mapping.apply(rows.get((slot, addr), ()), b, WANT[1][1], rules).intervals

    for line in LINES:
        (b,) = get_format("ipfix-json").parse(json.dumps(record(line)).encode(), operator="op")
        put("nat", "192.168.33.2", b)
    put("ip", "10.0.0.11", Binding("radius", "start", "op", network("10.0.0.11"), "det44@isp.example", "n/1", "n",
                                   WANT[0][1] - 600_000))

    def who(at, proto):
        out = mapping.resolve("192.168.33.2", 6938, at, at + 1, now_ms=WANT[1][1] + 60_000, rules=rules,
                              intervals_for=lambda slot, a: list(rows.get((slot, str(a)), ())),
                              owns=lambda net: True, proto=proto)
        return out["status"], [h["subscriber"] for h in out.get("holders") or ()]

    during = WANT[0][1] + 30_000  # 14:54:07, between create and delete
    assert who(during, 6) == ("ok", ["det44@isp.example"])
    assert who(during, None) == ("ok", ["det44@isp.example"])  # one protocol logged: nothing to tell apart
    assert who(during, 17) == ("no-data", [])                  # the mapping was TCP's
    assert who(WANT[1][1] + 1, 6) == ("no-data", [])           # after the delete event
