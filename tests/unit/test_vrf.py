"""The VRF / routing instance a CGN logs travels with the NAT binding: parsed from the line, kept
in the Binding (and its JSON on the bindings topic), stored with the NAT interval (binary codec,
backward compatible) so the lookup can pick the realm by ``RealmMap.of_nat(source, vrf)``.

Expected values are read from the lines by hand; the old-codec values are hex captured from the
format-2 encoder as it was before the VRF (commit bc9f507), not produced by the code under test."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from stream import intervals as iv
from stream.errors import Rejected
from stream.model import Binding, nat_binding, network
from stream.parse import detect, get_format
from tests.unit.parse import ipfix_encode as enc  # the independent RFC 7011 encoder of the parser tests

DATA = Path(__file__).resolve().parents[1] / "data" / "cgnat"
T0 = 1_718_000_000_000


def one(fmt: str, rec: bytes, **ctx) -> Binding:
    (b,) = get_format(fmt).parse(rec, operator="op", **ctx)
    return b


# -- parsers -------------------------------------------------------------------------------


def test_nfware_documented_lines_carry_their_vrf():
    recs = [l for l in (DATA / "nfware-doc.log").read_bytes().splitlines() if l.strip()]
    want = [  # (action, public, first, last, inside, vrf), read from each line
        ("start", "100.64.0.1", 1024, 1535, "10.0.0.1", "0"),
        ("start", "100.64.0.1", None, None, "10.0.0.1", "0"),
        ("start", "100.64.0.1", 28475, 28475, "10.0.0.1", "0"),
        ("start", "100.64.0.1", 28475, 28475, "10.0.0.1", "0"),
    ]
    assert len(recs) == len(want)
    for rec, w in zip(recs, want):
        line = b"2025-05-02T11:34:56+00:00 cgn1 nfware: " + rec  # an rsyslog file prefix
        for fmt in ("nfware", "auto"):
            b = one(fmt, line)
            assert (b.action, str(b.ip.network_address), b.port_first, b.port_last, str(b.inside_ip), b.vrf) == w
            assert b.nas == "cgn1"
    d = one("nfware", b"Jun 11 08:03:09 cgn1 nfware: D VRF 12 INT 10.0.0.1 EXT 100.64.0.1:1024-1535", year=2024)
    assert (d.action, d.vrf) == ("stop", "12")


def test_sixwind_vsr3_logd_instance_is_the_vrf():
    real = (DATA / "sixwind-vsr3.log").read_bytes().splitlines()
    # the older fp-cgnat[pid] tag names no VRF
    assert one("sixwind", real[2], year=2020).vrf is None
    # vSR 3's fp-cgnat-logd@main line (deployment guide) with its empty "ip public" filled in
    # (the guide prints none, and such a line is refused): the instance after "@" is the VRF
    rec = real[0].replace(b"(ip public,", b"(ip public 192.0.2.33,")
    assert b"fp-cgnat-logd@main[4269]" in rec
    for fmt in ("sixwind", "auto"):
        b = one(fmt, rec, year=2020)
        assert (b.vrf, str(b.ip.network_address), str(b.inside_ip), b.port_first, b.port_last) == (
            "main", "192.0.2.33", "2001:db8:200::1", 1024, 1536)
    other = rec.replace(b"@main[", b"@cust-7[")
    assert one("sixwind", other, year=2020).vrf == "cust-7"


def test_srx_session_log_names_the_source_vrf_group():
    real = (DATA / "juniper-srx-vrf.log").read_bytes().splitlines()
    header = b"<14>1 2024-05-27T10:00:00Z vsrx-right "  # the TechPost quotes the lines without one
    # static NAT between overlapping tenants: 10.1.2.10:50440 of VRF group tenant-1 leaves as
    # 10.21.2.10:50440 (src-vrf-grp="tenant-1"; dst-vrf-grp names the far side, not the inside)
    for fmt in ("juniper", "auto"):
        b = one(fmt, header + real[0])
        assert (b.action, str(b.ip.network_address), b.port_first, b.port_last, str(b.inside_ip), b.vrf, b.nas) == (
            "stop", "10.21.2.10", 50440, 50440, "10.1.2.10", "tenant-1", "vsrx-right")
    # the same tenant without translation carries no CGNAT binding at all
    with pytest.raises(Rejected) as e:
        one("juniper", header + real[1])
    assert e.value.reason == "no-source-nat"
    # newer Junos also writes src-vrf; "N/A" names none
    kv = (b'<14>1 2024-05-27T10:00:00Z srx1 RT_FLOW - RT_FLOW_SESSION_CREATE [junos@2636.1.1.1.2.129 '
          b'source-address="100.64.0.9" source-port="4000" destination-address="198.51.100.1" destination-port="443" '
          b'nat-source-address="192.0.2.1" nat-source-port="1025" protocol-id="6" src-vrf-grp="%s" src-vrf="%s"]')
    assert one("juniper", kv % (b"grp-a", b"cust-7")).vrf == "cust-7"
    assert one("juniper", kv % (b"grp-a", b"N/A")).vrf == "grp-a"
    assert one("juniper", kv % (b"N/A", b"N/A")).vrf is None
    srx_brief = (DATA / "juniper-srx-session.log").read_bytes().splitlines()[0]
    assert one("juniper", srx_brief, year=2012).vrf is None


def _json_event(**extra) -> bytes:
    return json.dumps({"natEvent": 16, "sourceIPv4Address": "100.64.0.9", "postNATSourceIPv4Address": "192.0.2.1",
                       "portRangeStart": 1024, "portRangeEnd": 1279, "observationTimeMilliseconds": T0,
                       **extra}).encode()


def test_ipfix_json_vrf_name_then_ingress_vrf_id():
    assert one("ipfix-json", _json_event()).vrf is None
    assert one("ipfix-json", _json_event(ingressVRFID=7)).vrf == "7"
    assert one("ipfix-json", _json_event(ingressVRFID="7")).vrf == "7"
    assert one("ipfix-json", _json_event(VRFname="north", ingressVRFID=7)).vrf == "north"
    assert one("ipfix-json", _json_event(VRFname="north\x00\x00\x00", ingressVRFID=7)).vrf == "north"
    assert one("ipfix-json", _json_event(VRFname="", ingressVRFID=7)).vrf == "7"  # an empty name names nothing
    for bad in ({"VRFname": 5}, {"ingressVRFID": "seven"}, {"ingressVRFID": True}):
        with pytest.raises(Rejected):
            one("ipfix-json", _json_event(**bad))


def test_binary_ipfix_ingress_vrf_id_from_an_independent_encoder():
    row = {"observationTimeMilliseconds": T0, "natEvent": 16, "sourceIPv4Address": "100.64.0.9",
           "postNATSourceIPv4Address": "192.0.2.1", "portRangeStart": 1024, "portRangeEnd": 1279,
           "ingressVRFID": 4_000_000_001}
    msg = enc.message([enc.template_set(256, enc.BLOCK), enc.data_set(256, enc.BLOCK, [row])])
    b = one("ipfix", msg)
    assert (b.vrf, str(b.inside_ip), b.port_first, b.port_last) == ("4000000001", "100.64.0.9", 1024, 1279)


# -- the Binding ---------------------------------------------------------------------------


def test_binding_vrf_is_validated_text_and_survives_the_bindings_topic_json():
    pub, inside = network("192.0.2.1"), ipaddress.ip_address("100.64.0.9")
    b = nat_binding("start", "op", pub, "cgn1", T0, inside, 1024, 1279, "7")
    assert Binding.from_json(b.to_json()) == b and b.to_dict()["vrf"] == "7"
    assert nat_binding("start", "op", pub, "cgn1", T0, inside, 1024, 1279).vrf is None
    for bad, reason in ((7, "bad-binding"), ("\udca0", "bad-encoding")):
        with pytest.raises(Rejected) as e:
            nat_binding("start", "op", pub, "cgn1", T0, inside, 1024, 1279, bad)
        assert e.value.reason == reason
        with pytest.raises(Rejected):
            Binding("nat", "start", "op", pub, None, None, None, T0, inside_ip=inside, vrf=bad)
    # a record written before the field existed (no "vrf" key) still decodes, with vrf None
    old = (b'{"kind":"nat","action":"start","operator":"op","ip":"192.0.2.1","subscriber":null,"session":null,'
           b'"nas":"cgn1","at_ms":1718000000000,"until_ms":null,"hwaddr":null,"client_id":null,"duid":null,'
           b'"circuit_id":null,"remote_id":null,"inside_ip":"100.64.0.9","port_first":1024,"port_last":1279,'
           b'"octets_in":null,"octets_out":null,"session_time_s":null}')
    o = Binding.from_json(old)
    assert (o.vrf, o.nas, o.port_first) == (None, "cgn1", 1024)


# -- intervals: codec ----------------------------------------------------------------------

#: encode_value(192.0.2.1/32, two NAT blocks of cgn1, the second open and held), by the format-2
#: encoder before the VRF existed
OLD_NAT = bytes.fromhex("0220c0000201021580f0bc8c806480bab70380bab7038010fe0321644000092063676e313480bab70300"
                        "8014fe03216440000a2063676e31")
#: encode_value(100.64.0.9/32, one open RADIUS session kund-1 at NAS 192.0.2.10), same encoder
OLD_RADIUS = bytes.fromhex("022064400009014680f0bc8c8064c0cf24306b756e642d3122abcd000121c000020a")


def test_values_written_before_the_vrf_decode_unchanged_and_reencode_byte_identical():
    net, ivs = iv.decode_value(OLD_NAT)
    assert net == ipaddress.ip_network("192.0.2.1/32")
    assert ivs == (iv.Interval(T0, T0 + 3_600_000, "100.64.0.9", None, "cgn1", T0 + 3_600_000, None, 1024, 1279),
                   iv.Interval(T0 + 3_600_000, None, "100.64.0.10", None, "cgn1", T0 + 3_600_000, None, 1280, 1535,
                               True))
    assert all(x.vrf is None for x in ivs)
    assert iv.encode_value(net, ivs) == OLD_NAT
    net, ivs = iv.decode_value(OLD_RADIUS)
    assert ivs == (iv.Interval(T0, None, "kund-1", "192.0.2.10/abcd0001", "192.0.2.10", T0 + 300_000, None),)
    assert iv.encode_value(net, ivs) == OLD_RADIUS


@pytest.mark.parametrize("vrf", ["7", "0", "main", "07", "AB", "", "vrf ü", "2001:db8::1"])
def test_vrf_round_trips_and_the_expiry_reader_skips_it(vrf):
    ivs = (iv.Interval(T0, None, "100.64.0.9", None, "cgn1", T0 + 5, None, 1024, 1279, vrf=vrf),
           iv.Interval(T0 + 9, T0 + 20, "100.64.0.9", None, "cgn1", T0 + 20, None, 1280, 1535, True, vrf),
           iv.Interval(T0 + 30, T0 + 40, "100.64.0.7", None, None, T0 + 40, None, 1536, 1791))
    raw = iv.encode_value(ipaddress.ip_network("192.0.2.1/32"), ivs)
    assert iv.decode_value(raw)[1] == ivs
    assert iv.decode(iv.encode(ivs)) == ivs
    for ttl in (0, 1000):
        assert iv.next_expiry_of(raw, ttl_ms=ttl, stale_after_ms=100) == iv.next_expiry_ms(
            ivs, ttl_ms=ttl, stale_after_ms=100)


def test_unknown_extension_bits_and_truncation_are_refused():
    ivs = (iv.Interval(T0, None, "100.64.0.9", None, "cgn1", T0, None, 1024, 1279, vrf="7"),)
    raw = bytearray(iv.encode(ivs))
    ext_at = 4  # version, no-network tag, count, flags, ext
    assert raw[ext_at - 1] & 0x80 and raw[ext_at] == 1
    for bits in (0x04, 0x80, 0x05):  # 0x01 VRF and 0x02 protocol are known
        bad = bytes(raw[:ext_at]) + bytes((bits,)) + bytes(raw[ext_at + 1:])
        for read in (iv.decode, lambda r: iv.next_expiry_of(r, ttl_ms=0)):
            with pytest.raises(Rejected) as e:
                read(bad)
            assert e.value.reason == "bad-value"
    for n in range(1, len(raw)):
        with pytest.raises(Rejected):
            iv.decode(bytes(raw[:n]))


# -- intervals: apply ----------------------------------------------------------------------


def _nat(action: str, at: int, inside: str, vrf, first=1024, last=1279) -> Binding:
    return nat_binding(action, "op", network("192.0.2.1"), "cgn1", at, ipaddress.ip_address(inside), first, last, vrf)


def test_same_inside_address_in_two_vrfs_is_two_holders():
    ivs, _ = iv.apply((), _nat("start", T0, "100.64.0.9", "7"))
    # the block passes to 100.64.0.9 of VRF 8: another subscriber, so VRF 7's tenure ends there
    ivs, out = iv.apply(ivs, _nat("start", T0 + 60_000, "100.64.0.9", "8"))
    assert out.kind == "opened"
    assert [(x.vrf, x.start_ms, x.end_ms) for x in ivs] == [("7", T0, T0 + 60_000), ("8", T0 + 60_000, None)]
    # VRF 7's stop (late) does not close VRF 8's block
    ivs, out = iv.apply(ivs, _nat("stop", T0 + 90_000, "100.64.0.9", "7"))
    assert [(x.vrf, x.end_ms) for x in ivs] == [("7", T0 + 60_000), ("8", None)]
    ivs, out = iv.apply(ivs, _nat("stop", T0 + 120_000, "100.64.0.9", "8"))
    assert [(x.vrf, x.end_ms) for x in ivs] == [("7", T0 + 60_000), ("8", T0 + 120_000)]
    # the same VRF's duplicate start is the same tenure; the stored value keeps the VRFs
    again, out = iv.apply(ivs, _nat("start", T0 + 60_000, "100.64.0.9", "8"))
    assert out.kind == "duplicate" and again == ivs
    assert iv.decode(iv.encode(ivs)) == ivs


# -- the lookup: one CGN box shared by two realms, told apart only by the logged VRF ---------

from stream import mapping  # noqa: E402
from stream.realm import parse_realms  # noqa: E402

SHARED = parse_realms({"north": {"collectors": ["cgn-shared"], "nas": ["192.0.2.10"], "vrfs": ["1"]},
                       "south": {"collectors": ["cgn-shared"], "nas": ["192.0.2.20"], "vrfs": ["2"]}},
                      file="op.toml")


def _shared_box_table(nat_lines: list[bytes]):
    """(slot, address) → intervals, built the way the worker builds them: parsed lines and
    RADIUS Starts through ``mapping.apply``."""
    rules = mapping.Rules(ttl_ms=10 * 24 * 3600_000, realms=SHARED)
    rows: dict = {}

    def put(slot, addr, b):
        key = (slot, addr)
        rows[key] = mapping.apply(rows.get(key, ()), b, T0, rules).intervals

    for line in nat_lines:
        b = one("nfware", line)
        put("nat", str(b.ip.network_address), b)
    inside = network("100.64.0.9")
    for sub, nas in (("north@isp", "192.0.2.10"), ("south@isp", "192.0.2.20")):  # same inside, same instant
        put("ip", "100.64.0.9", Binding("radius", "start", "op", inside, sub, f"{nas}/s-{sub}", nas, T0 - 600_000))
    return rules, lambda slot, addr: list(rows.get((slot, str(addr)), ()))


def _who(rules, intervals_for, port):
    out = mapping.resolve("203.0.113.4", port, T0 + 60_000, T0 + 60_001, now_ms=T0 + 120_000, rules=rules,
                          intervals_for=intervals_for, owns=lambda net: True)
    return out["status"], [h["subscriber"] for h in out.get("holders") or ()]


def test_a_shared_cgn_is_resolved_by_the_logged_vrf():
    at = b"2024-06-10T06:13:20+00:00 cgn-shared nfware: "  # T0
    rules, intervals_for = _shared_box_table([
        at + b"A VRF 1 INT 100.64.0.9 EXT 203.0.113.4:1024-1279",
        at + b"A VRF 2 INT 100.64.0.9 EXT 203.0.113.4:1280-1535",
        at + b"A VRF 3 INT 100.64.0.9 EXT 203.0.113.4:1536-1791",  # a VRF in no realm
    ])
    assert _who(rules, intervals_for, 1100) == ("ok", ["north@isp"])
    assert _who(rules, intervals_for, 1300) == ("ok", ["south@isp"])
    # VRF 3 maps to no realm: the shared source could be either, so never a pick
    assert _who(rules, intervals_for, 1600)[0] == "ambiguous"
    assert _who(rules, intervals_for, 1900) == ("no-data", [])


# -- IPFIX natEvent numbering: Juniper MX exports draft-02 values ------------------------------


def test_draft_numbered_port_block_event_is_a_block_never_a_whole_address():
    """Juniper's "Mapping Between Field Values for IPFIX Flow Templates and Logs Exported From an MX
    Series Router or NFX250" lists natEvent 14 = port block allocation, 15 = de-allocation
    (draft-ietf-behave-ipfix-nat-logging-02); IANA's registry has them as address binding
    create/delete (blocks are 16/17).  With a port range the event can only be a block: read as an
    address binding it would hand every port of 192.0.2.1 to 100.64.0.9."""
    names = enc.BLOCK  # time, natEvent, inside, public, portRangeStart, portRangeEnd, ingressVRFID
    for ev, action in ((14, "start"), (15, "stop")):
        row = {"observationTimeMilliseconds": T0, "natEvent": ev, "sourceIPv4Address": "100.64.0.9",
               "postNATSourceIPv4Address": "192.0.2.1", "portRangeStart": 1024, "portRangeEnd": 1279,
               "ingressVRFID": 0}
        b = one("ipfix", enc.message([enc.template_set(256, names), enc.data_set(256, names, [row])]))
        assert (b.action, b.port_first, b.port_last, str(b.inside_ip)) == (action, 1024, 1279, "100.64.0.9")
        j = one("ipfix-json", _json_event(natEvent=ev))
        assert (j.action, j.port_first, j.port_last) == (action, 1024, 1279)
    # an IANA address binding (no port range) stays an address binding
    addr = json.dumps({"natEvent": 14, "sourceIPv4Address": "100.64.0.9", "postNATSourceIPv4Address": "192.0.2.1",
                       "observationTimeMilliseconds": T0}).encode()
    a = one("ipfix-json", addr)
    assert (a.action, a.port_first, a.port_last) == ("start", None, None)
