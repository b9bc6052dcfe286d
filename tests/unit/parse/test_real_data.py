"""Files written by the real software (tests/data/make_*.sh) parse exactly.

Expectations are derived from what went *in* (the radclient input) or from the CSV fields
themselves, never from the parser: every packet radclient sent is one record in the detail
file and yields one binding per address attribute (or one reset), at its Event-Timestamp."""

from __future__ import annotations

import csv
import ipaddress

from parsehelp import DATA, parse_file

STATUS = {"Start": "start", "Interim-Update": "update", "Stop": "stop",
          "Accounting-On": "reset", "Accounting-Off": "reset"}
ADDR = ("Framed-IP-Address", "Framed-IPv6-Address", "Framed-IPv6-Prefix", "Delegated-IPv6-Prefix")


def radclient_packets() -> list[dict[str, str]]:
    packets, cur = [], {}
    for line in (DATA / "freeradius" / "radclient-input.txt").read_text().splitlines():
        if not line.strip():
            if cur:
                packets.append(cur)
            cur = {}
            continue
        k, v = (s.strip() for s in line.split("=", 1))
        cur[k] = v.strip('"')
    if cur:
        packets.append(cur)
    return packets


def expected_radius() -> list[tuple]:
    out = []
    for p in radclient_packets():
        action = STATUS[p["Acct-Status-Type"]]
        at_ms = int(p["Event-Timestamp"]) * 1000
        if action == "reset":
            out.append((action, None, None, None, p["NAS-IP-Address"], at_ms))
            continue
        for a in ADDR:
            if a in p:
                ip = str(ipaddress.ip_network(p[a]))
                ip = ip.split("/")[0] if ip.endswith(("/32", "/128")) else ip
                out.append((action, ip, p["User-Name"], f"{p['NAS-IP-Address']}/{p['Acct-Session-Id']}",
                            p["NAS-IP-Address"], at_ms))
    return out


def test_freeradius_detail_reproduces_every_packet_sent():
    # the server ran with TZ=Europe/Stockholm: Event-Timestamp is rendered in CEST
    got = parse_file("radius-detail", DATA / "freeradius" / "detail", tz="Europe/Stockholm")
    key = [(b["action"], b["ip"], b["subscriber"], b["session"], b["nas"], b["at_ms"]) for b in got]
    assert key == expected_radius()
    # and without --tz the unambiguous abbreviation CEST gives the same instants
    assert parse_file("radius-detail", DATA / "freeradius" / "detail") == got


def test_freeradius_detail_has_the_scenarios_it_claims():
    text = (DATA / "freeradius" / "detail").read_text()
    assert "CEST" in text and "Acct-Status-Type = Accounting-On" in text
    assert "Delegated-IPv6-Prefix" in text and "Framed-IPv6-Prefix" in text
    got = parse_file("radius-detail", DATA / "freeradius" / "detail")
    reused = {b["subscriber"] for b in got if b["ip"] == "100.64.0.10"}
    assert reused == {"kund-0001@isp.example", "kund-0003@isp.example"}  # IP re-use


def test_kea_memfile_every_row_is_one_exact_binding():
    path = DATA / "kea" / "kea-leases4.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    got = parse_file("kea-csv", path)
    assert len(got) == len(rows) > 0
    for row, b in zip(rows, got):
        valid, expire, state = int(row["valid_lifetime"]), int(row["expire"]), int(row["state"])
        assert b["ip"] == row["address"]
        assert b["hwaddr"] == row["hwaddr"]
        assert b["client_id"] == (row["client_id"] or None)
        assert b["subscriber"] == (row["client_id"] or row["hwaddr"])
        assert b["at_ms"] == (expire - valid) * 1000
        assert b["until_ms"] == expire * 1000
        assert b["action"] == ("stop" if valid == 0 or state in (1, 2, 3) else "start")
    # perfdhcp simulated 24 clients from base MAC 02:00:00:00:00:00
    assert {b["hwaddr"] for b in got} == {f"02:00:00:00:00:{i:02x}" for i in range(24)}
    assert {b["action"] for b in got} == {"start", "stop"}
