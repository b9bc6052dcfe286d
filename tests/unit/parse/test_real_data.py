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


def test_kea_run_script_hook_lines_written_by_real_kea():
    """kea-hook.jsonl was written by deploy/collectors/kea-run-script.sh, called by Kea 2.2's own
    libdhcp_run_script.so during the same perfdhcp run that wrote the memfile."""
    import json

    path = DATA / "kea" / "kea-hook.jsonl"
    calls = [json.loads(line) for line in path.read_text().splitlines()]
    expected = []
    for c in calls:
        if c["hook"] == "leases4_committed":
            for i in range(int(c["LEASES4_SIZE"])):
                p = f"LEASES4_AT{i}_"
                cltt, valid = int(c[p + "CLTT"]), int(c[p + "VALID_LIFETIME"])
                expected.append(("start", c[p + "ADDRESS"], c[p + "HWADDR"], cltt * 1000, (cltt + valid) * 1000))
            for i in range(int(c["DELETED_LEASES4_SIZE"])):
                p = f"DELETED_LEASES4_AT{i}_"
                cltt, valid = int(c[p + "CLTT"]), int(c[p + "VALID_LIFETIME"])
                expected.append(("stop", c[p + "ADDRESS"], c[p + "HWADDR"], int(c["ts_ms"]), (cltt + valid) * 1000))
        else:
            cltt, valid = int(c["LEASE4_CLTT"]), int(c["LEASE4_VALID_LIFETIME"])
            if c["hook"] == "lease4_renew":
                expected.append(("update", c["LEASE4_ADDRESS"], c["LEASE4_HWADDR"], cltt * 1000, (cltt + valid) * 1000))
            else:  # release / expire: at the script's own clock
                assert c["hook"] in ("lease4_release", "lease4_expire")
                expected.append(("stop", c["LEASE4_ADDRESS"], c["LEASE4_HWADDR"], int(c["ts_ms"]), (cltt + valid) * 1000))
    got = parse_file("kea-hook", path)
    assert [(b["action"], b["ip"], b["hwaddr"], b["at_ms"], b["until_ms"]) for b in got] == expected
    assert {c["hook"] for c in calls} >= {"leases4_committed", "lease4_renew", "lease4_release", "lease4_expire"}
    # the same leases as the memfile journal
    with open(DATA / "kea" / "kea-leases4.csv", newline="") as f:
        journal = {(r["address"], r["hwaddr"]) for r in csv.DictReader(f)}
    assert {(b["ip"], b["hwaddr"]) for b in got} <= journal
