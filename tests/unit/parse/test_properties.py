"""Property tests: whatever bytes arrive, every parser returns bindings or raises ``Rejected`` —
nothing else escapes (an exception in a worker would stall its partition, DESIGN.md)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.errors import Rejected
from stream.model import Binding
from stream.parse import formats

from tests.unit.parse import ipfix_encode

SEEDS = {
    "radius-json": b'{"User-Name":"u","Acct-Status-Type":"Start","Acct-Session-Id":"s","NAS-IP-Address":"192.0.2.1",'
                   b'"Framed-IP-Address":"100.64.0.1","Delegated-IPv6-Prefix":"2001:db8::/56","Event-Timestamp":1718000000}',
    "radius-detail": b'Sun Nov 22 09:36:08 2026\n\tUser-Name = "kund\\"x"\n\tAcct-Status-Type = Start\n'
                     b'\tAcct-Session-Id = "s"\n\tNAS-IP-Address = 192.0.2.10\n\tFramed-IP-Address = 100.64.12.34\n'
                     b'\tEvent-Timestamp = "Jun 10 2024 08:13:20 CEST"\n\tTimestamp = 1795340168',
    "kea-csv": b"address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,"
               b"fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source,pool_id\n"
               b"2001:db8:200::,00:01:02:03,200,1718000200,8,100,2,7,56,1,1,h,,0,,0,0,0",
    "kea-legal": b"2018-01-06 01:02:03 CET Address: 192.2.1.100 has been assigned for 1 hrs 52 mins 15 secs to a device "
                 b"with hardware address: hwtype=1 08:00:2b:02:3f:4e, client-id: 17:34:e2:ff:09:92:54 connected via "
                 b"relay at address: 192.2.16.33, identified by circuit-id: 68:6f:77:64:79 (howdy)",
    "kea-hook": json.dumps({"hook": "leases4_committed", "LEASES4_SIZE": "1", "LEASES4_AT0_ADDRESS": "10.0.0.5",
                            "LEASES4_AT0_HWADDR": "aa:bb:cc:dd:ee:ff", "LEASES4_AT0_CLTT": "1718000000",
                            "LEASES4_AT0_VALID_LIFETIME": "3600"}).encode(),
    "ipfix-json": b'{"natEvent":16,"sourceIPv4Address":"100.64.0.7","postNATSourceIPv4Address":"198.51.100.7",'
                  b'"portRangeStart":40000,"portRangeEnd":40127,"observationTimeMilliseconds":1718000000123}',
    "juniper": b"Oct 30 21:46:04  graphite (FPC Slot 2, PIC Slot 0) 2011-10-31 04:46:04 [FWNAT]: "
               b"ASP_NAT_PORT_BLOCK_ALLOC: 3002:0:0:0:0:0:0:1 -> 33.33.0.3:1050-1099",
    "sixwind": b'Jun 11 08:03:09 vsr fp-cgnat[4269]: USER 100.64.0.1 (matching rule 1): NEW BLOCK (pool "mypool", '
               b'ip public 192.0.2.33, proto 6, port 1 - 512)',
    "nfware": b"<134>Jun 11 08:03:09 cgn1 nfware: A VRF 0 INT 10.0.0.1 EXT 100.64.0.1:1024-1535",
    "a10": b"Jun 11 08:03:09 ax1 NAT-TCP-C: 100.64.1.2:10000<-->198.51.100.9:20000 to 203.0.113.5:443",
    "f5": b"Jun 11 08:03:09 bigip1 tmm: LSN_ADD 100.64.23.122%0:51234 6 194.15.97.34%0:40000 203.0.113.7 443",
    "ipfix": ipfix_encode.message([
        ipfix_encode.template_set(256, ipfix_encode.BLOCK),
        ipfix_encode.data_set(256, ipfix_encode.BLOCK, [{
            "observationTimeMilliseconds": 1718000000123, "natEvent": 16, "sourceIPv4Address": "100.64.0.7",
            "postNATSourceIPv4Address": "198.51.100.7", "portRangeStart": 40000, "portRangeEnd": 40127,
            "ingressVRFID": 7}])]),
}
CTX = [{}, {"year": 2024}, {"ref_ms": 1718000000000, "tz": "Europe/Stockholm"}]


def _check(fmt: str, record: bytes, ctx: dict) -> None:
    try:
        out = formats()[fmt].parse(record, operator="op", **ctx)
    except Rejected as r:
        assert r.reason and r.reason == r.reason.strip().lower()
        return
    assert isinstance(out, list) and all(isinstance(b, Binding) for b in out)
    for b in out:
        json.dumps(b.to_dict())  # the CLI contract must always be serialisable


def test_every_registered_format_has_a_seed():
    assert set(formats()) - {"auto"} == set(SEEDS)


def test_seeds_parse():
    for fmt, rec in SEEDS.items():
        assert formats()[fmt].parse(rec, operator="op", year=2024), fmt


@st.composite
def mutated(draw):
    fmt = draw(st.sampled_from(sorted(SEEDS) + ["auto"]))
    seed = bytearray(SEEDS[fmt if fmt != "auto" else draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "dup"]))
        if not seed:
            break
        i = draw(st.integers(0, len(seed) - 1))
        if op == "flip":
            seed[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del seed[i:]
        elif op == "insert":
            seed[i:i] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
                [b"9", b"\xc2\xb2", b"99999999999999999999", b":", b"\n", b"\t", b'"', b"\\", b"-", b"\xc3", b"\xb2", b"\xd9\xa3",
                 b"{}", b"[", b"%eth0", b"/", b" ", b"0x", b"\x00"]))
        elif op == "delete":
            del seed[i:i + draw(st.integers(1, 8))]
        else:
            j = draw(st.integers(i, len(seed)))
            seed[j:j] = seed[i:j]
    return fmt, bytes(seed)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.sampled_from(CTX))
def test_mutated_records_only_ever_reject(case, ctx):
    fmt, record = case
    _check(fmt, record, ctx)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(SEEDS) + ["auto"]), st.binary(max_size=300), st.sampled_from(CTX))
def test_random_bytes_only_ever_reject(fmt, record, ctx):
    _check(fmt, record, ctx)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["radius-json", "kea-hook", "ipfix-json"]),
       st.dictionaries(st.sampled_from(["User-Name", "Acct-Status-Type", "Acct-Session-Id", "NAS-IP-Address",
                                        "Framed-IP-Address", "Event-Timestamp", "hook", "natEvent",
                                        "LEASE4_ADDRESS", "LEASE4_CLTT", "LEASE4_VALID_LIFETIME", "LEASE4_HWADDR",
                                        "sourceIPv4Address", "postNATSourceIPv4Address", "portRangeStart",
                                        "portRangeEnd", "observationTimeMilliseconds", "ts_ms"]),
                       st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20)
                       | st.lists(st.integers(), max_size=2)),
       st.sampled_from(CTX))
def test_json_formats_with_random_typed_values(fmt, obj, ctx):
    _check(fmt, json.dumps(obj).encode(), ctx)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=60).map(lambda b: b + b"\n"), max_size=20))
def test_framers_never_raise(lines):
    for name, f in formats().items():
        recs = list(f.frame(lines))
        assert all(isinstance(r, bytes) for r in recs), name
