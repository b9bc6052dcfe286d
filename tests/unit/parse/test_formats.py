"""Per-format behaviour: exact bindings for hand-written records and the documented rejections."""

from __future__ import annotations

import json

import pytest

from stream.errors import Rejected
from stream.parse import detect, get_format


def one(fmt: str, record: bytes, **ctx) -> dict:
    (b,) = get_format(fmt).parse(record, operator="op", **ctx)
    return b.to_dict()


def reason(fmt: str, record: bytes, **ctx) -> str:
    with pytest.raises(Rejected) as e:
        get_format(fmt).parse(record, operator="op", **ctx)
    return e.value.reason


# -- kea-csv ------------------------------------------------------------------------------

V4 = b"address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id"
V6 = (b"address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,"
      b"fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source,pool_id")


def test_kea_csv_framer_makes_self_contained_records():
    lines = [V4 + b"\n", b"192.0.3.2,00:01:02:03:04:05,,200,1718000200,8,1,1,h,0,,0\n", b"\n",
             V6 + b"\n", b"2001:db8:1::1,00:01:02,200,1718000200,8,100,0,7,128,1,1,h,,0,,0,0,0\n"]
    recs = list(get_format("kea-csv").frame(lines))
    assert recs == [V4 + b"\n192.0.3.2,00:01:02:03:04:05,,200,1718000200,8,1,1,h,0,,0",
                    V6 + b"\n2001:db8:1::1,00:01:02,200,1718000200,8,100,0,7,128,1,1,h,,0,,0,0,0"]


def test_kea_csv_v4_lease_start_and_end():
    b = one("kea-csv", V4 + b"\n192.0.3.2,00:01:02:03:04:05,,200,1718000200,8,1,1,host.example.com,0,,0")
    assert (b["action"], b["ip"], b["subscriber"], b["at_ms"], b["until_ms"]) == (
        "start", "192.0.3.2", "00:01:02:03:04:05", 1718000000000, 1718000200000)


@pytest.mark.parametrize("valid,state", [(0, 0), (200, 1), (200, 2), (200, 3)])
def test_kea_csv_release_reclaim_decline_are_stops(valid, state):
    b = one("kea-csv", V4 + f"\n192.0.3.2,00:01:02:03:04:05,01:aa,{valid},1718000200,8,1,1,,{state},,0".encode())
    assert b["action"] == "stop" and b["subscriber"] == "01:aa"


def test_kea_csv_v6_address_and_prefix_delegation():
    na = one("kea-csv", V6 + b"\n2001:db8:1::1,00:01:02:03,200,1718000200,8,100,0,7,128,1,1,h,,0,,0,0,0")
    pd = one("kea-csv", V6 + b"\n2001:db8:200::,00:01:02:03,200,1718000200,8,100,2,7,56,1,1,h,,0,,0,0,0")
    assert (na["ip"], na["duid"], na["subscriber"]) == ("2001:db8:1::1", "00:01:02:03", "00:01:02:03")
    assert pd["ip"] == "2001:db8:200::/56"


def test_kea_csv_older_header_without_state_column():
    old = b"address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname"
    b = one("kea-csv", old + b"\n10.0.0.5,aa:bb:cc:dd:ee:ff,,3600,1718003600,1,0,0,")
    assert b["action"] == "start" and b["at_ms"] == 1718000000000


@pytest.mark.parametrize("record,why", [
    (b"192.0.3.2,00:01,,200,200,8,1,1,h,0,,0", "missing-header"),
    (V4 + b"\n192.0.3.2,00:01,,200,200,8", "bad-row"),
    (V4 + b"\n192.0.3.2,00:01,,x,1718000200,8,1,1,h,0,,0", "bad-row"),
    (V4 + b"\n192.0.3.2,00:01,,200,1718000200,8,1,1,h,9,,0", "unsupported-state"),
    (V4 + b"\n192.0.3.999,00:01,,200,1718000200,8,1,1,h,0,,0", "bad-address"),
    (V4 + b"\n192.0.3.2,,,200,1718000200,8,1,1,h,0,,0", "missing-identity"),
    (b"foo,bar\n1,2", "bad-header"),
])
def test_kea_csv_rejections(record, why):
    assert reason("kea-csv", record) == why


# -- kea-legal: the time-zone rule --------------------------------------------------------

LEGAL = "{ts} Address: 10.0.0.5 has been assigned for 0 hrs 10 mins 0 secs to a device with hardware address: hwtype=1 aa:bb:cc:dd:ee:ff"


def legal(ts: str) -> bytes:
    return LEGAL.format(ts=ts).encode()


def test_kea_legal_zone_abbreviations():
    utc = one("kea-legal", legal("2024-06-10 06:13:20 UTC"))["at_ms"]
    assert utc == 1718000000000
    assert one("kea-legal", legal("2024-06-10 08:13:20 CEST"))["at_ms"] == utc
    assert one("kea-legal", legal("2024-06-10 08:13:20 CEST"), tz="Europe/Stockholm")["at_ms"] == utc
    assert one("kea-legal", legal("2024-06-10 08:13:20 +0200"))["at_ms"] == utc


def test_kea_legal_dst_overlap_is_settled_by_the_abbreviation():
    # 2024-10-27 02:30 happens twice in Stockholm: first CEST (00:30 UTC), then CET (01:30 UTC)
    cest = one("kea-legal", legal("2024-10-27 02:30:00 CEST"), tz="Europe/Stockholm")["at_ms"]
    cet = one("kea-legal", legal("2024-10-27 02:30:00 CET"), tz="Europe/Stockholm")["at_ms"]
    assert cet - cest == 3_600_000
    assert cest == 1729989000000


def test_kea_legal_ambiguous_or_mismatched_zones_are_rejected():
    assert reason("kea-legal", legal("2024-06-10 08:13:20 IST")) == "ambiguous-timezone"
    # CET is not Stockholm's abbreviation in June
    assert reason("kea-legal", legal("2024-06-10 08:13:20 CET"), tz="Europe/Stockholm") == "bad-timezone"
    # 02:30 does not exist in Stockholm on 2024-03-31
    assert reason("kea-legal", legal("2024-03-31 02:30:00 CEST"), tz="Europe/Stockholm") in (
        "bad-timestamp", "bad-timezone")


def test_kea_legal_prefix_renew_and_v6_identity():
    b = one("kea-legal", b"2024-06-10 06:13:20 UTC Prefix: 2001:db8:200::/56 has been renewed for "
                         b"1 hrs 0 mins 0 secs to a device with DUID: 00:01:00:01:aa:bb and hardware "
                         b"address: hwtype=1 aa:bb:cc:dd:ee:ff (from DUID)")
    assert (b["action"], b["ip"], b["subscriber"], b["until_ms"]) == (
        "update", "2001:db8:200::/56", "00:01:00:01:aa:bb", 1718003600000)
    assert b["hwaddr"] == "aa:bb:cc:dd:ee:ff"


def test_kea_legal_line_without_timestamp_is_rejected():
    assert reason("kea-legal", b"Address: 192.2.1.100 has been released from a device with "
                               b"hardware address: hwtype=1 08:00:2b:02:3f:4e") == "missing-timestamp"


# -- kea-hook -----------------------------------------------------------------------------

def test_kea_hook_lease4_renew_and_release():
    env = {"hook": "lease4_renew", "LEASE4_ADDRESS": "10.0.0.5", "LEASE4_HWADDR": "aa:bb:cc:dd:ee:ff",
           "LEASE4_CLTT": "1718000000", "LEASE4_VALID_LIFETIME": "3600", "LEASE4_CLIENT_ID": "01:aa:bb"}
    b = one("kea-hook", json.dumps(env).encode())
    assert (b["action"], b["ip"], b["subscriber"], b["at_ms"], b["until_ms"]) == (
        "update", "10.0.0.5", "01:aa:bb", 1718000000000, 1718003600000)
    rel = one("kea-hook", json.dumps({**env, "hook": "lease4_release", "ts_ms": "1718000123456"}).encode())
    assert (rel["action"], rel["at_ms"]) == ("stop", 1718000123456)
    exp = one("kea-hook", json.dumps({**env, "hook": "lease4_expire"}).encode())
    assert (exp["action"], exp["at_ms"]) == ("stop", 1718003600000)


def test_kea_hook_leases6_committed_with_prefix_and_deleted():
    env = {"hook": "leases6_committed", "LEASES6_SIZE": "2", "DELETED_LEASES6_SIZE": "1"}
    for i, (addr, typ, plen) in enumerate([("2001:db8:1::5", "IA_NA", "128"), ("2001:db8:200::", "IA_PD", "56")]):
        env.update({f"LEASES6_AT{i}_ADDRESS": addr, f"LEASES6_AT{i}_TYPE": typ, f"LEASES6_AT{i}_PREFIX_LEN": plen,
                    f"LEASES6_AT{i}_CLTT": "1718000000", f"LEASES6_AT{i}_VALID_LIFETIME": "600",
                    f"LEASES6_AT{i}_DUID": "00:03:00:01:aa:bb:cc:dd:ee:ff"})
    env.update({"DELETED_LEASES6_AT0_ADDRESS": "2001:db8:1::4", "DELETED_LEASES6_AT0_TYPE": "IA_NA",
                "DELETED_LEASES6_AT0_CLTT": "1717990000", "DELETED_LEASES6_AT0_VALID_LIFETIME": "600",
                "DELETED_LEASES6_AT0_DUID": "00:03:00:01:aa:bb:cc:dd:ee:ff"})
    got = [b.to_dict() for b in get_format("kea-hook").parse(json.dumps(env).encode(), operator="op")]
    assert [(b["action"], b["ip"]) for b in got] == [
        ("start", "2001:db8:1::5"), ("start", "2001:db8:200::/56"), ("stop", "2001:db8:1::4")]


def test_kea_hook_rejections():
    assert reason("kea-hook", b'{"hook": "pkt4_receive"}') == "unsupported-event"
    assert reason("kea-hook", b'{"hook": "lease4_renew", "LEASE4_ADDRESS": "10.0.0.5"}') == "missing-attribute"
    assert reason("kea-hook", b"[1]") == "bad-json"


# -- ipfix-json ---------------------------------------------------------------------------

def test_ipfix_port_block_alloc_and_dealloc():
    rec = {"natEvent": 16, "sourceIPv4Address": "100.64.0.7", "postNATSourceIPv4Address": "198.51.100.7",
           "portRangeStart": 40000, "portRangeEnd": 40127, "observationTimeMilliseconds": 1718000000123}
    b = one("ipfix-json", json.dumps(rec).encode())
    assert (b["action"], b["ip"], b["inside_ip"], b["port_first"], b["port_last"], b["at_ms"]) == (
        "start", "198.51.100.7", "100.64.0.7", 40000, 40127, 1718000000123)
    rec.update(natEvent=17, portRangeEnd=None, portRangeNumPorts=128)
    del rec["portRangeEnd"]
    assert one("ipfix-json", json.dumps(rec).encode())["port_last"] == 40127


def test_ipfix_rejections():
    base = {"sourceIPv4Address": "100.64.0.7", "postNATSourceIPv4Address": "198.51.100.7",
            "portRangeStart": 1024, "portRangeEnd": 2047, "observationTimeMilliseconds": 1718000000000}
    assert reason("ipfix-json", json.dumps({**base, "natEvent": 12}).encode()) == "unsupported-event"
    assert reason("ipfix-json", json.dumps({**base, "natEvent": 16, "portRangeStepSize": 2}).encode()) == "unsupported-port-range"
    assert reason("ipfix-json", json.dumps({**base, "natEvent": 16, "portRangeEnd": 70000}).encode()) == "bad-port-range"
    no_time = {k: v for k, v in base.items() if k != "observationTimeMilliseconds"}
    assert reason("ipfix-json", json.dumps({**no_time, "natEvent": 16}).encode()) == "missing-timestamp"


# -- juniper / sixwind / nfware / a10 / f5 ------------------------------------------------

def test_juniper_jservices_hex_epoch_and_release():
    b = one("juniper", b"<14>Jun 11 08:03:09 mx1 : JSERVICES_NAT_PORT_BLOCK_RELEASE: 10.1.1.2 -> 198.51.100.1:1024-1279 0x624b0492")
    assert (b["action"], b["ip"], b["inside_ip"], b["port_first"], b["port_last"], b["at_ms"]) == (
        "stop", "198.51.100.1", "10.1.1.2", 1024, 1279, 1649083538000)


def test_juniper_srx_brief_form_takes_time_from_rfc5424_header():
    b = one("juniper", b"<14>1 2024-06-10T08:13:20.250+02:00 srx1 RT_NAT - RT_SRC_NAT_PBA_RELEASE "
                       b"Subscriber 10.0.10.10 used/maximum [0/4] blocks, releases port block "
                       b"[48640-48895] from 1.2.84.172 in source pool guest lsys_id: 0")
    assert (b["action"], b["ip"], b["port_first"], b["at_ms"], b["nas"]) == (
        "stop", "1.2.84.172", 48640, 1718000000250, "srx1")


def test_sixwind_destroy_block_and_year_inference():
    line = (b'Dec 31 23:59:59 vsr fp-cgnat[4269]: USER 100.64.0.1 (matching rule 1): DESTROY BLOCK '
            b'(pool "mypool", ip public 192.0.2.33, proto 6, port 1 - 512)')
    # received just after new year: the line is from the previous year
    ref = 1735689610000  # 2025-01-01 00:00:10 UTC
    b = one("sixwind", line, ref_ms=ref)
    assert (b["action"], b["at_ms"]) == ("stop", 1735689599000)
    assert reason("sixwind", line) == "ambiguous-timestamp"
    assert one("sixwind", line, year=2030, tz="Europe/Stockholm")["at_ms"] == 1924988399000


def test_sixwind_conn_is_a_one_port_binding():
    b = one("sixwind", b"Jun 14 12:17:35 dut-vm fp-cgnat[2484]: NEW CONN: fwd proto 6 10.100.0.1:4241 -> "
                       b"10.200.0.1:33815, back proto 6 10.200.0.1:33815 --> 10.175.0.3:10752", year=2024)
    assert (b["ip"], b["inside_ip"], b["port_first"], b["port_last"]) == ("10.175.0.3", "10.100.0.1", 10752, 10752)


def test_nfware_a10_f5_lines():
    nf = one("nfware", b"<134>Jun 11 08:03:09 cgn1 nfware: D VRF 0 INT 10.0.0.1 EXT 100.64.0.1:1024-1535", year=2024)
    assert (nf["action"], nf["ip"], nf["inside_ip"], nf["port_first"], nf["port_last"]) == (
        "stop", "100.64.0.1", "10.0.0.1", 1024, 1535)
    addr = one("nfware", b"Jun 11 08:03:09 cgn1 nfware: A VRF 0 INT 10.0.0.1 EXT 100.64.0.1", year=2024)
    assert (addr["port_first"], addr["port_last"]) == (None, None)
    a10 = one("a10", b"Jun 11 08:03:09 ax1 NAT-TCP-C: 100.64.1.2:10000<-->198.51.100.9:20000 to 203.0.113.5:443", year=2024)
    assert (a10["action"], a10["ip"], a10["port_first"]) == ("start", "198.51.100.9", 20000)
    f5 = one("f5", b"Jun 11 08:03:09 bigip1 tmm: LSN_DELETE 100.64.23.122%0:51234 6 194.15.97.34%0:40000 203.0.113.7 443", year=2024)
    assert (f5["action"], f5["ip"], f5["inside_ip"], f5["port_first"]) == ("stop", "194.15.97.34", "100.64.23.122", 40000)


# -- auto ---------------------------------------------------------------------------------

@pytest.mark.parametrize("record,fmt", [
    (b'{"natEvent": 16}', "ipfix-json"),
    (b'{"hook": "lease4_renew"}', "kea-hook"),
    (b'{"User-Name": "x"}', "radius-json"),
    (V4 + b"\n1,2", "kea-csv"),
    (b"Sun Nov 22 09:36:08 2026\n\tUser-Name = \"x\"", "radius-detail"),
    (legal("2024-06-10 06:13:20 UTC"), "kea-legal"),
    (b"RT_SRC_NAT_PBA_ALLOC [internal-ip=\"1\"]", "juniper"),
    (b"x fp-cgnat[1]: y", "sixwind"),
    (b"A VRF 0 INT 10.0.0.1 EXT 100.64.0.1", "nfware"),
    (b"LSN_ADD 1%0:1 6 2%0:2 3 4", "f5"),
    (b"FIXED-NAT-PORTS 10.10.10.172->192.168.9.173:3000-4000", "a10"),
])
def test_auto_detects_each_format(record, fmt):
    assert detect(record) == fmt


def test_auto_rejects_what_no_format_claims():
    assert reason("auto", b"hello world") == "unrecognised-format"
