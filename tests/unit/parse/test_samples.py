"""Every sample parses, to exactly these bindings (values worked out by hand from the sample
text: epoch seconds of the stated times, durations added up).  The FreeRADIUS sample is written
by FreeRADIUS itself (tests/data/make_freeradius.sh); the Kea legal-log and NAT syslog lines are
cited in tests/data/samples/README.md."""

from __future__ import annotations

from parsehelp import DATA, parse_file

NULLS = dict(until_ms=None, hwaddr=None, client_id=None, duid=None, circuit_id=None, remote_id=None,
             inside_ip=None, port_first=None, port_last=None, octets_in=None, octets_out=None,
             session_time_s=None, vrf=None)


def radius(action, ip, at_ms, **kw):
    return {**NULLS, "kind": "radius", "action": action, "operator": "op", "ip": ip,
            "subscriber": "kund-4711@isp.example", "session": "192.0.2.10/0A0B0C0D-00000042",
            "nas": "192.0.2.10", "at_ms": at_ms, **kw}


def test_freeradius_detail_sample():
    got = parse_file("radius-detail", DATA / "freeradius" / "sample-detail")
    t = 1718000000000  # Jun 10 2024 06:13:20 UTC
    interim = dict(octets_in=1048576, octets_out=5242880, session_time_s=300)
    stop = dict(octets_in=2097152, octets_out=10485760, session_time_s=3600)
    assert got == [
        radius("start", "100.64.12.34", t),
        radius("start", "2001:db8:100:1::/64", t),
        radius("start", "2001:db8:200:ab00::/56", t),
        radius("update", "100.64.12.34", t + 300_000, **interim),
        radius("update", "2001:db8:200:ab00::/56", t + 300_000, **interim),
        radius("stop", "100.64.12.34", t + 3_600_000, **stop),
        radius("stop", "2001:db8:200:ab00::/56", t + 3_600_000, **stop),
    ]


def test_kea_legal_sample(samples):
    got = parse_file("kea-legal", samples / "kea-legal.txt")
    base = {**NULLS, "kind": "dhcp", "operator": "op", "session": None, "nas": None}
    t1 = 1515196923000  # 2018-01-06 01:02:03 CET = 00:02:03 UTC
    assert got == [
        {**base, "action": "start", "ip": "192.2.1.100", "subscriber": "17:34:e2:ff:09:92:54",
         "at_ms": t1, "until_ms": t1 + (3600 + 52 * 60 + 15) * 1000, "hwaddr": "08:00:2b:02:3f:4e",
         "client_id": "17:34:e2:ff:09:92:54", "circuit_id": "68:6f:77:64:79"},
        {**base, "action": "stop", "ip": "192.2.1.100", "subscriber": "08:00:2b:02:3f:4e",
         "at_ms": 1515201000000, "hwaddr": "08:00:2b:02:3f:4e"},  # 02:10:00 CET
        {**base, "action": "start", "ip": "2001:db8:1::", "subscriber": "17:34:e2:ff:09:92:54",
         "at_ms": 1515197100000, "until_ms": 1515197100000 + (11 * 60 + 53) * 1000,
         "duid": "17:34:e2:ff:09:92:54"},
    ]


def test_nat_syslog_sample_with_auto(samples):
    got = parse_file("auto", samples / "nat-syslog.txt", year=2024)
    base = {**NULLS, "kind": "nat", "action": "start", "operator": "op", "subscriber": None, "session": None}
    assert got == [
        # PIC timestamp 2011-10-31 04:46:04 (UTC), not the RE's local header time
        {**base, "ip": "33.33.0.3", "nas": "graphite", "at_ms": 1320036364000,
         "inside_ip": "3002::1", "port_first": 1050, "port_last": 1099},
        # epoch-time-64 0x624b0492 = 2022-04-04 14:45:38 UTC
        {**base, "ip": "1.2.84.172", "nas": None, "at_ms": 1649083538000,
         "inside_ip": "10.0.10.10", "port_first": 48640, "port_last": 48895},
        # year-less header, year supplied: 2024-06-11 08:03:09 UTC; "proto 6": a TCP block
        {**base, "ip": "192.0.2.33", "nas": "vsr", "at_ms": 1718092989000,
         "inside_ip": "100.64.0.1", "port_first": 1, "port_last": 512, "proto": 6},
    ]
