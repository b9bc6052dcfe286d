"""Real CGNAT log lines (tests/data/cgnat/, origins in tests/data/README) parse exactly.

Every expected value below was written by reading the line, not by running a parser: the
public address and port(s), the inside address, the action the event names, and the instant
its timestamp states (converted here with the standard library, independently of
``stream.parse._time``)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from parsehelp import DATA
from stream.errors import Rejected
from stream.parse import detect, get_format

CGNAT = DATA / "cgnat"


def ms(iso: str) -> int:
    dt = datetime.fromisoformat(iso)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return round(dt.timestamp() * 1000)


def lines(name: str) -> list[bytes]:
    return [l for l in (CGNAT / name).read_bytes().splitlines() if l.strip()]


def outcome(fmt: str, rec: bytes, **ctx):
    """(action, public, first, last, inside, at_ms, nas) or the rejection reason."""
    try:
        (b,) = get_format(fmt).parse(rec, operator="op", **ctx)
    except Rejected as e:
        return e.reason
    d = b.to_dict()
    return (d["action"], d["ip"], d["port_first"], d["port_last"], d["inside_ip"], d["at_ms"], d["nas"])


A10 = [
    ("start", "99.99.99.12", 22016, 22271, "100.65.140.73", ms("2025-05-02T11:34:56.870+00:00"), "10.254.254.57"),
    # ICMP (proto 1): spt/sourceTranslatedPort are the query id, inside and public
    ("start", "99.99.99.13", 48856, 48856, "100.65.161.0", ms("2025-05-02T11:35:00.620+00:00"), "10.254.254.57"),
    ("stop", "99.99.99.8", 37892, 37892, "100.65.150.5", ms("2025-05-02T11:35:00.620+00:00"), "10.254.254.57"),
    ("stop", "99.99.99.12", 22016, 22271, "100.65.140.73", ms("2025-05-02T11:35:00.870+00:00"), "10.254.254.57"),
    "missing-timestamp",  # the CEF message alone, its syslog header split off by the collector
]

SRX = [
    ("start", "211.36.132.131", 43335, 43335, "10.213.110.248", ms("2012-05-08T02:52:01"), None),
    ("stop", "211.36.132.123", 40488, 40488, "10.254.251.48", ms("2012-05-08T02:52:02"), None),
    ("stop", "211.36.132.229", 52104, 52104, "10.253.4.144", ms("2012-05-08T02:52:06"), None),
    ("stop", "132.58.192.15", 57572, 57572, "10.40.29.180", ms("2014-01-19T11:16:37.266"), "SRX3400_1"),
    "no-source-nat",  # destination NAT only: nat-source = source
    ("start", "10.176.11.11", 59627, 59627, "10.176.101.11", ms("2019-04-08T20:17:19.120+12:00"), "Internet"),
    "unsupported-protocol",  # MX-SPC3 _USF sample: an ICMP session (protocol-id 1)
]

SIXWIND = [
    "missing-attribute",  # the guide prints "ip public," with no address
    "missing-attribute",
    ("start", "192.0.2.33", 1, 512, "100.64.0.1", ms("2012-06-11T08:03:09"), "vsr"),
]


@pytest.mark.parametrize("fmt,name,expected", [
    ("a10", "a10-cef.log", A10),
    ("juniper", "juniper-srx-session.log", SRX),
    ("sixwind", "sixwind-vsr3.log", SIXWIND),
])
def test_real_lines_parse_as_read_by_hand_and_auto_agrees(fmt, name, expected):
    recs = lines(name)
    assert len(recs) == len(expected)
    for rec, want in zip(recs, expected):
        assert detect(rec) == fmt
        assert outcome(fmt, rec, year=2012) == want, rec
        assert outcome("auto", rec, year=2012) == want, rec


def test_iso8601_file_prefix_reaches_every_nat_format():
    """rsyslog/syslog-ng file prefix ``<ISO time> <host> <msg>`` gives each vendor its time and host."""
    at = ms("2025-05-02T11:34:56.870+00:00")
    pre = b"2025-05-02T11:34:56.87+00:00 cgn1 "
    cases = {
        "nfware": pre + b"nfware: A VRF 0 INT 10.0.0.1 EXT 100.64.0.1:1024-1535",
        "juniper": pre + b"RT_NAT: RT_SRC_NAT_PBA_ALLOC Subscriber 10.0.10.10 used/maximum [1/4] blocks, "
                         b"allocates port block [48640-48895] from 1.2.84.172 in source pool guest lsys_id: 0",
        "sixwind": pre + b'fp-cgnat[1]: USER 100.64.0.1 (matching rule 1): NEW BLOCK (pool "p", ip public '
                         b"192.0.2.33, proto 6, port 1 - 512)",
        "f5": pre + b"tmm: LSN_ADD 100.64.23.122%0:51234 6 194.15.97.34%0:40000 203.0.113.7 443",
        "a10": pre + b"NAT-TCP-C: 100.64.1.2:10000<-->198.51.100.9:20000 to 203.0.113.5:443",
    }
    for fmt, rec in cases.items():
        assert detect(rec) == fmt
        (b,) = get_format(fmt).parse(rec, operator="op")
        assert (b.at_ms, b.nas) == (at, "cgn1"), fmt
    # a zone-less ISO prefix is read in --tz
    rec = b"2025-05-02T13:34:56 cgn1 nfware: A VRF 0 INT 10.0.0.1 EXT 100.64.0.1:1024-1535"
    (b,) = get_format("nfware").parse(rec, operator="op", tz="Europe/Stockholm")
    assert b.at_ms == ms("2025-05-02T11:34:56+00:00")


def test_sixwind_vsr3_nat64_block_with_public_address_and_line_time_wins():
    # constructed from the vSR 3 NAT64 guide's shape with the public address filled in
    rec = (b"Jan  1 00:00:00 vrouter fp-cgnat-logd@main[4269]: USER 2001:db8:200::1 (matching rule 1): "
           b"DESTROY BLOCK (ip public 192.0.2.7, proto 17, port 1024 - 1536) at Tue Jun 11 08:07:30 2020")
    assert outcome("sixwind", rec, year=2031) == (
        "stop", "192.0.2.7", 1024, 1536, "2001:db8:200::1", ms("2020-06-11T08:07:30"), "vrouter")


def test_a10_cef_rt_time_wins_and_unknown_events_are_refused():
    rec = (b"Jun 11 08:03:09 ax1 CEF:0|A10|CFW|6.0.0|CGN 106|Nat Port Batch Pool Allocated|5|proto=TCP "
           b"src=100.64.1.2 sourceTranslatedAddress=198.51.100.9 sourceTranslatedPort=1024 cn3=1279 "
           b"cn3Label=Last Nat Port rt=1718092989123")
    assert outcome("a10", rec) == ("start", "198.51.100.9", 1024, 1279, "100.64.1.2", 1718092989123, "ax1")
    other = b"Jun 11 08:03:09 ax1 CEF:0|A10|CFW|6.0.0|FW 200|Session Denied|5|src=1.2.3.4"
    assert outcome("a10", other, year=2024) == "unsupported-event"
    no_port = b"Jun 11 08:03:09 ax1 CEF:0|A10|CFW|6.0.0|CGN 100|Nat Port Allocated|5|proto=TCP src=100.64.1.2"
    assert outcome("a10", no_port, year=2024) == "missing-attribute"


def test_srx_other_flow_messages_are_refused_with_a_reason():
    deny = (b"Dec 16 05:02:28  RT_FLOW: RT_FLOW_SESSION_DENY: session denied 10.0.0.32/9370->63.251.254.131/370 "
            b"None 17(0) default-permit trust untrust")
    assert detect(deny) == "juniper"
    assert outcome("juniper", deny, year=2012) == "unsupported-event"
    icmp = (b'<14>1 2024-06-10T08:13:20Z srx1 RT_FLOW - RT_FLOW_SESSION_CREATE [junos@2636.1.1.1.2.129 '
            b'source-address="100.64.0.9" source-port="7" destination-address="8.8.8.8" destination-port="0" '
            b'nat-source-address="192.0.2.1" nat-source-port="9" protocol-id="1"]')
    assert outcome("juniper", icmp) == "unsupported-protocol"


#: the protocol each real A10 CEF line names (``proto=``), as IANA numbers, read by hand
A10_PROTO = [17, 1, 1, 17]


def test_a10_cef_real_lines_carry_their_protocol_icmp_ids_as_protocol_1():
    recs = lines("a10-cef.log")[:4]
    for rec, want in zip(recs, A10_PROTO):
        for fmt in ("a10", "auto"):
            (b,) = get_format(fmt).parse(rec, operator="op")
            assert b.proto == want, rec
    # the ASCII NAT-ICMP form stays refused: no real line shows where it puts the id
    ascii_icmp = b"Jun 10 06:13:20 thunder1 NAT-ICMP-C: 100.64.1.2:7<-->198.51.100.9:20000 to 203.0.113.5:0"
    assert outcome("a10", ascii_icmp, year=2024) == "unsupported-protocol"


def test_an_icmp_id_binding_answers_only_lookups_naming_icmp():
    """The real CGN 100 ICMP line holds id 48856 of 99.99.99.13 for 100.65.161.0.  A lookup that
    names TCP or UDP never lands on it; one that names ICMP finds it.  One without a protocol asks
    about a port, and a query id is not a port: no holder from the id alone, and the TCP holder
    (not an ambiguity) when a TCP session of the same number goes to another inside address."""
    from stream import mapping
    from tests.unit.test_nat_proto import _table

    (icmp,) = get_format("a10").parse(lines("a10-cef.log")[1], operator="op")
    t0 = icmp.at_ms
    # a TCP session on the same public address and number, another inside address (constructed)
    tcp_line = (b"2025-05-02T11:35:00.62+00:00 10.254.254.57 cgn0.thn2/cgn-demo  CEF:0|A10|CFW|6.0.0-P1|CGN 102|"
                b"Nat Session Created|5|proto=TCP src=100.65.161.9 spt=40000 dst=203.0.113.5 dpt=443 "
                b"sourceTranslatedAddress=99.99.99.13 sourceTranslatedPort=48856")
    (tcp,) = get_format("a10").parse(tcp_line, operator="op")
    subs = {"100.65.161.0": "pinger", "100.65.161.9": "browser"}
    rules, only_icmp = _table([icmp], subs, t0)
    _, both = _table([icmp, tcp], subs, t0)

    def ask(intervals_for, proto):
        at = t0 + 1000
        out = mapping.resolve("99.99.99.13", 48856, at, at + 1, now_ms=t0 + 60_000, rules=rules,
                              intervals_for=intervals_for, owns=lambda net: True, proto=proto)
        return out["status"], sorted(h["subscriber"] for h in out.get("holders") or ())

    assert ask(only_icmp, 6) == ("no-data", [])
    assert ask(only_icmp, 17) == ("no-data", [])
    assert ask(only_icmp, 1) == ("ok", ["pinger"])
    assert ask(only_icmp, None) == ("no-data", [])
    assert ask(both, 6) == ("ok", ["browser"])
    assert ask(both, 1) == ("ok", ["pinger"])
    assert ask(both, None) == ("ok", ["browser"])


def test_f5_splunk_format_line_from_f5s_own_project_is_refused_with_a_reason_never_misread():
    """BIG-IP's Splunk-format LSN line (``lsn_event="…",start="…",cli="…",nat="…"``), verbatim
    from F5's Telemetry Streaming unit data with its addresses redacted by F5: no format reads it
    (``f5`` parses only the legacy ``LSN_ADD a%rd:p proto b%rd:p …`` shape), so it is
    dead-lettered with a reason and never bound."""
    (rec,) = lines("f5-splunk-redacted.log")
    assert outcome("f5", rec) == "unrecognised"
    assert outcome("auto", rec) == "unrecognised-format"
