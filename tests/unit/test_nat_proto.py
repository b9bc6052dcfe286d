"""Per-protocol port blocks: a CGN allocates blocks per transport protocol (A10 CEF ``proto=``,
6WIND ``proto 6``, NFWare's protocol number, F5's, IPFIX ``protocolIdentifier`` with natEvent
16/17), so a TCP block 1024-1535 and a UDP block 1024-1535 of the same public address can belong
to two subscribers at the same instant.  The lookup must give each protocol its own holder, and
a lookup without a protocol must say ``ambiguous`` when the protocols' holders differ — never
pick one, and never let one block end the other.

The expected answers are written by reading the lines: which inside address each line names
for which protocol, and which subscriber the RADIUS Start gives that inside address (the
``READ`` table below), not by running a parser."""

from __future__ import annotations

import dataclasses
import ipaddress
import json

import pytest

from stream import binding_wire
from stream import intervals as iv
from stream import mapping
from stream.errors import Rejected
from stream.model import Binding, nat_binding, network
from stream.parse import get_format
from tests.unit.parse import ipfix_encode as enc

T0 = 1_718_000_000_000  # 2024-06-10T06:13:20Z
TCP, UDP = 6, 17
PUBLIC = "198.51.100.7"
#: inside address → subscriber (the RADIUS Starts below), and protocol → inside address as the
#: NAT lines state it
SUBSCRIBER = {"100.64.0.10": "alice", "100.64.0.20": "bob"}
READ = {TCP: "100.64.0.10", UDP: "100.64.0.20"}

#: two lines per vendor, the TCP block first; same public address, same ports, same instant
_CEF = ("2024-06-10T06:13:20+00:00 10.254.254.57 cgn0.thn2/cgn-demo  CEF:0|A10|CFW|6.0.0-P1|CGN 106|"
        "Nat Port Batch Pool Allocated|5|proto={p} src={i} sourceTranslatedAddress=198.51.100.7 "
        "sourceTranslatedPort=1024 cn3=1535 cn3Label=Last Nat Port")
_6WIND = ("Jun 10 06:13:20 vrouter fp-cgnat-logd@main[4269]: USER {i} (matching rule 1): NEW BLOCK "
          "(ip public 198.51.100.7, proto {p}, port 1024 - 1535) at Mon Jun 10 06:13:20 2024")
_6WIND_OLD = ('Jun 10 06:13:20 vsr fp-cgnat[4269]: USER {i} (matching rule 1): NEW BLOCK (pool "p", '
              "ip public 198.51.100.7, proto {p}, port 1024 - 1535)")
_NFWARE = "2024-06-10T06:13:20+00:00 cgn1 nfware: A VRF 0 {p} INT {i}:40000 EXT 198.51.100.7:1024"
_F5 = "Jun 10 06:13:20 bigip1 tmm[1234]: LSN_ADD {i}%0:40000 {p} 198.51.100.7%0:1024 203.0.113.9 443"
_A10_ASCII = "Jun 10 06:13:20 thunder1 NAT-{p}-C: {i}:40000<-->198.51.100.7:1024 to 203.0.113.9:443"
_SRX = ('<14>1 2024-06-10T06:13:20Z srx1 RT_FLOW - RT_FLOW_SESSION_CREATE [junos@2636.1.1.1.2.129 '
        'source-address="{i}" source-port="40000" destination-address="203.0.113.9" destination-port="443" '
        'nat-source-address="198.51.100.7" nat-source-port="1024" protocol-id="{p}"]')
_SRX_BRIEF = ("Jun 10 06:13:20 RT_FLOW: RT_FLOW_SESSION_CREATE: session created {i}/34613->72.14.203.188/5228 "
              "None 198.51.100.7/1024->72.14.203.188/5228 r1 None {p} TCP_1H trust untrust 80497606")


def _lines(fmt: str, template: str, tcp: str, udp: str) -> list[tuple[str, bytes]]:
    return [(fmt, template.format(p=tcp, i=READ[TCP]).encode()), (fmt, template.format(p=udp, i=READ[UDP]).encode())]


def _ipfix_json(proto: int) -> tuple[str, bytes]:
    return ("ipfix-json", json.dumps({
        "natEvent": 16, "protocolIdentifier": proto, "sourceIPv4Address": READ[proto],
        "postNATSourceIPv4Address": PUBLIC, "portRangeStart": 1024, "portRangeEnd": 1535,
        "observationTimeMilliseconds": T0}).encode())


_PBLOCK = enc.BLOCK[:-1] + ["protocolIdentifier"]


def _ipfix(proto: int) -> tuple[str, bytes]:
    row = {"observationTimeMilliseconds": T0, "natEvent": 16, "sourceIPv4Address": READ[proto],
           "postNATSourceIPv4Address": PUBLIC, "portRangeStart": 1024, "portRangeEnd": 1535,
           "protocolIdentifier": proto}
    return ("ipfix", enc.message([enc.template_set(256, _PBLOCK), enc.data_set(256, _PBLOCK, [row])]))


PAIRS = {
    "a10-cef": _lines("a10", _CEF, "TCP", "UDP"),
    "a10-cef-numeric": _lines("a10", _CEF, "6", "17"),
    "a10-ascii": _lines("a10", _A10_ASCII, "TCP", "UDP"),
    "sixwind-vsr3": _lines("sixwind", _6WIND, "6", "17"),
    "sixwind-pool": _lines("sixwind", _6WIND_OLD, "6", "17"),
    "nfware": _lines("nfware", _NFWARE, "6", "17"),
    "f5": _lines("f5", _F5, "6", "17"),
    "srx-session": _lines("juniper", _SRX, "6", "17"),
    "srx-brief": _lines("juniper", _SRX_BRIEF, "6", "17"),
    "ipfix-json": [_ipfix_json(TCP), _ipfix_json(UDP)],
    "ipfix": [_ipfix(TCP), _ipfix(UDP)],
}


def parse_one(fmt: str, rec: bytes) -> Binding:
    (b,) = get_format(fmt).parse(rec, operator="op", year=2024)
    return b


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_each_vendor_line_carries_its_protocol(name):
    for (fmt, rec), proto in zip(PAIRS[name], (TCP, UDP)):
        for f in (fmt, "auto"):
            b = parse_one(f, rec)
            assert (b.proto, str(b.inside_ip), str(b.ip.network_address)) == (proto, READ[proto], PUBLIC), rec


def test_a_box_that_allocates_one_block_for_all_protocols_records_none():
    """Juniper PBA, NFWare's block form, A10 FIXED-NAT-PORTS and an IPFIX block without
    protocolIdentifier name no protocol: the block is the address's ports for every protocol."""
    for fmt, rec in (
        ("juniper", b"Oct 31 04:46:04 mx1 (FPC Slot 5, PIC Slot 0) 2011-10-31 04:46:04: ASP_NAT_PORT_BLOCK_ALLOC: "
                    b"100.64.0.10 -> 198.51.100.7:1024-1535"),
        ("nfware", b"2024-06-10T06:13:20+00:00 cgn1 nfware: A VRF 0 INT 100.64.0.10 EXT 198.51.100.7:1024-1535"),
        ("a10", b"Jun 10 06:13:20 thunder1 FIXED-NAT-PORTS 100.64.0.10->198.51.100.7:1024-1535"),
        ("ipfix-json", json.dumps({"natEvent": 16, "sourceIPv4Address": "100.64.0.10",
                                   "postNATSourceIPv4Address": PUBLIC, "portRangeStart": 1024,
                                   "portRangeEnd": 1535, "observationTimeMilliseconds": T0}).encode()),
    ):
        assert parse_one(fmt, rec).proto is None, rec


# -- the lookup ----------------------------------------------------------------------------


def _table(nat: list[Binding], subscribers: dict = SUBSCRIBER, t0: int = T0):
    """(slot, address) → intervals, built the way the worker builds them (``mapping.apply``):
    the NAT bindings, and a RADIUS Start 10 min before ``t0`` for each inside address → subscriber."""
    rules = mapping.Rules(ttl_ms=10 * 24 * 3600_000)
    rows: dict = {}

    def put(slot, addr, b):
        rows[(slot, addr)] = mapping.apply(rows.get((slot, addr), ()), b, t0, rules).intervals

    for b in nat:
        put("nat", str(b.ip.network_address), b)
    for inside, sub in subscribers.items():
        put("ip", inside, Binding("radius", "start", "op", network(inside), sub, f"nas1/{sub}", "nas1", t0 - 600_000))
    return rules, lambda slot, addr: list(rows.get((slot, str(addr)), ()))


def _ask(rules, intervals_for, port, proto, at=T0 + 60_000):
    return mapping.resolve(PUBLIC, port, at, at + 1, now_ms=T0 + 120_000, rules=rules,
                           intervals_for=intervals_for, owns=lambda net: True, proto=proto)


def _who(out):
    return out["status"], sorted(h["subscriber"] for h in out.get("holders") or ())


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("order", ["tcp-first", "udp-first"])
def test_same_public_port_range_two_protocols_two_subscribers(name, order):
    recs = PAIRS[name] if order == "tcp-first" else PAIRS[name][::-1]
    first, second = (parse_one(fmt, rec) for fmt, rec in recs)
    # the second block logged a second after the first: a later claim on the same slot would end
    # the first one's tenure (address re-use) — a claim for another protocol must not
    second = dataclasses.replace(second, at_ms=second.at_ms + 1000)
    rules, intervals_for = _table([first, second])
    for port in (1024,) if name in ("nfware", "f5", "srx-session", "srx-brief", "a10-ascii") else (1024, 1300, 1535):
        assert _who(_ask(rules, intervals_for, port, TCP)) == ("ok", [SUBSCRIBER[READ[TCP]]])
        assert _who(_ask(rules, intervals_for, port, UDP)) == ("ok", [SUBSCRIBER[READ[UDP]]])
        # no protocol given: two subscribers could have used that port — never one picked
        out = _ask(rules, intervals_for, port, None)
        assert out["status"] == "ambiguous" and "holders" not in out, out
        assert "protocol" in out["detail"]
        # a protocol neither block was allocated for: nobody held the port for it
        assert _who(_ask(rules, intervals_for, port, 132)) == ("no-data", [])


def _block(action, at, inside, proto, first=1024, last=1535):
    return nat_binding(action, "op", network(PUBLIC), "cgn1", at, ipaddress.ip_address(inside), first, last,
                       None, proto)


def test_a_block_of_another_protocol_neither_ends_nor_closes_the_first():
    ivs, _ = iv.apply((), _block("start", T0, "100.64.0.10", TCP))
    ivs, out = iv.apply(ivs, _block("start", T0 + 1000, "100.64.0.20", UDP))
    assert out.kind == "opened"
    assert [(x.proto, x.end_ms) for x in ivs] == [(TCP, None), (UDP, None)]
    # the UDP block's release closes the UDP block only
    ivs, _ = iv.apply(ivs, _block("stop", T0 + 5000, "100.64.0.20", UDP))
    assert [(x.proto, x.end_ms) for x in ivs] == [(TCP, None), (UDP, T0 + 5000)]
    # the same inside address with a block of each protocol: two tenures, released one by one
    ivs, _ = iv.apply((), _block("start", T0, "100.64.0.10", TCP))
    ivs, _ = iv.apply(ivs, _block("start", T0, "100.64.0.10", UDP))
    ivs, _ = iv.apply(ivs, _block("stop", T0 + 7000, "100.64.0.10", UDP))
    assert sorted((x.proto, x.end_ms) for x in ivs) == [(TCP, None), (UDP, T0 + 7000)]
    # within one protocol the newest claim still wins (address re-use)
    ivs, _ = iv.apply((), _block("start", T0, "100.64.0.10", TCP))
    ivs, _ = iv.apply(ivs, _block("start", T0 + 1000, "100.64.0.20", TCP))
    assert [(x.holder, x.end_ms) for x in ivs] == [("100.64.0.10", T0 + 1000), ("100.64.0.20", None)]
    # a block for every protocol (none logged) competes with each protocol's block
    ivs, _ = iv.apply((), _block("start", T0, "100.64.0.10", None))
    ivs, _ = iv.apply(ivs, _block("start", T0 + 1000, "100.64.0.20", UDP))
    assert [(x.proto, x.end_ms) for x in ivs] == [(None, T0 + 1000), (UDP, None)]


def test_lookups_where_the_protocol_does_not_matter():
    # one subscriber holds both protocols' blocks: the answer is the same either way
    rules, intervals_for = _table([_block("start", T0, "100.64.0.10", TCP), _block("start", T0, "100.64.0.10", UDP)])
    for proto in (None, TCP, UDP):
        assert _who(_ask(rules, intervals_for, 1300, proto)) == ("ok", ["alice"])
    # a block for all protocols answers a lookup of any protocol, and one without
    rules, intervals_for = _table([_block("start", T0, "100.64.0.20", None)])
    for proto in (None, TCP, UDP, 132):
        assert _who(_ask(rules, intervals_for, 1300, proto)) == ("ok", ["bob"])
    # the TCP block ended before the UDP one began: no overlap, so no ambiguity over the span
    rules, intervals_for = _table([_block("start", T0, "100.64.0.10", TCP), _block("stop", T0 + 30_000, "100.64.0.10", TCP),
                                   _block("start", T0 + 30_000, "100.64.0.20", UDP)])
    out = mapping.resolve(PUBLIC, 1300, T0, T0 + 60_000, now_ms=T0 + 120_000, rules=rules,
                          intervals_for=intervals_for, owns=lambda net: True)
    assert _who(out) == ("ok", ["alice", "bob"])
    assert _who(_ask(rules, intervals_for, 1300, None, at=T0 + 45_000)) == ("ok", ["bob"])
    assert _who(_ask(rules, intervals_for, 1300, TCP, at=T0 + 45_000)) == ("no-data", [])


def test_bad_protocol_numbers_are_refused():
    for bad in (-1, 256, "6", True, 6.0):
        with pytest.raises(Rejected) as e:
            _block("start", T0, "100.64.0.10", bad)
        assert e.value.reason == "bad-binding"
    rules, intervals_for = _table([])
    for bad in (-1, 256, "tcp", True):
        with pytest.raises(Rejected) as e:
            _ask(rules, intervals_for, 1300, bad)
        assert e.value.reason == "bad-protocol"


# -- the bindings topic and the table's stored value ----------------------------------------


def test_protocol_survives_the_bindings_topic_and_old_records_still_decode():
    for proto in (TCP, UDP, 0, 255):
        b = _block("start", T0, "100.64.0.10", proto)
        raw = binding_wire.encode(b)
        assert raw[0] == 2
        assert binding_wire.decode(raw) == b and binding_wire.decode(raw).proto == proto
        assert Binding.from_json(b.to_json()) == b
    # without a protocol the record stays version 1, byte for byte what the release before wrote
    b = _block("start", T0, "100.64.0.10", None)
    raw = binding_wire.encode(b)
    assert raw[0] == 1 and binding_wire.decode(raw) == b
    assert b'"proto"' not in b.to_json()  # its JSON (the stats record id's input) is unchanged


def test_the_stored_interval_keeps_the_protocol():
    ivs = (iv.Interval(T0, None, "100.64.0.10", None, "cgn1", T0, None, 1024, 1535, proto=TCP),
           iv.Interval(T0, T0 + 9, "100.64.0.20", None, "cgn1", T0 + 9, None, 1024, 1535, True, "7", UDP),
           iv.Interval(T0 + 30, None, "100.64.0.30", None, None, T0 + 40, None, 1536, 2047))
    raw = iv.encode_value(network(PUBLIC), ivs)
    assert iv.decode_value(raw)[1] == ivs
    assert iv.next_expiry_of(raw, ttl_ms=5, stale_after_ms=100) == iv.next_expiry_ms(ivs, ttl_ms=5, stale_after_ms=100)


# -- the lookup request: the legal desk's signed body and the workers' sealed request -------

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519  # noqa: E402

from stream import access, lookup_wire  # noqa: E402

NOW = 1_780_000_000_000


def _desk():
    sign, enc = ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    police = access.Authority("se-police", "Police (test)", "SE", sign.public_key(), enc.public_key(),
                              frozenset({"lek-law-enforcement"}), per_hour=60, burst=10)
    return access.QueryDesk(access.Registry.build([police], [])), sign


def _request(sign, **kw):
    body = access.request_body(authority="se-police", request_number=kw.pop("number"), basis="lek-law-enforcement",
                               case_ref="AM-1-26", address=PUBLIC, port=kw.pop("port", 1300),
                               from_ms=NOW - 3_600_000, to_ms=NOW - 3_000_000, issued_ms=NOW,
                               nonce=kw.pop("nonce"), **kw)
    return access.sign_request(sign, body), body


def test_the_desk_request_may_name_the_protocol_and_a_request_without_it_is_unchanged():
    desk, sign = _desk()
    # without a protocol: the body has exactly the fields it always had, and the resolver is
    # called as before (four arguments)
    raw, body = _request(sign, number="r1", nonce="11" * 16)
    assert "proto" not in body and "proto" not in json.loads(raw)["body"]
    d = desk.submit(raw, NOW)
    assert d.status == "ready" and d.request.proto is None
    calls = []
    desk.answer(d, lambda *a, **k: calls.append((a, k)) or {"no_data": True}, NOW)
    assert calls == [((PUBLIC, 1300, NOW - 3_600_000, NOW - 3_000_000), {})]
    # with one: signed as part of the body, carried to the resolver
    raw, body = _request(sign, number="r2", nonce="22" * 16, proto=UDP)
    d = desk.submit(raw, NOW)
    assert d.status == "ready" and d.request.proto == UDP and d.request.body() == body
    calls = []
    desk.answer(d, lambda *a, **k: calls.append((a, k)) or {"no_data": True}, NOW)
    assert calls == [((PUBLIC, 1300, NOW - 3_600_000, NOW - 3_000_000), {"proto": UDP})]
    assert access.request_from_body(body).proto == UDP
    # a protocol out of range, or without a port, is refused; a non-integer is malformed
    for n, kw, reason in (("r3", {"proto": 256}, "bad-scope"), ("r4", {"proto": TCP, "port": None}, "bad-scope"),
                          ("r5", {"proto": "tcp"}, "malformed-request")):
        raw, _ = _request(sign, number=n, nonce=n.encode().hex() * 8, **kw)
        d = desk.submit(raw, NOW)
        assert (d.status, d.reason) == ("refused", reason), n


def test_the_sealed_worker_request_carries_the_protocol_only_when_named():
    seal = lookup_wire.LookupSeal(bytes(range(32)), "t-lookup-requests")
    q = {"operator": "op", "ip": PUBLIC, "port": 1300, "from_ms": NOW, "to_ms": NOW + 1}
    plain = seal.open_request(seal.seal_request(q, request_id="a", partition=0, now_ms=NOW), partition=0, now_ms=NOW)
    assert "proto" not in plain  # what a worker of the release before expects, exactly
    for p in (None, TCP, UDP):
        got = seal.open_request(seal.seal_request({**q, "proto": p}, request_id="b", partition=0, now_ms=NOW),
                                partition=0, now_ms=NOW)
        assert got.get("proto") == p
    for bad in (256, -1, "6", True):
        blob = seal.seal_request({**q, "proto": bad}, request_id="c", partition=0, now_ms=NOW)
        with pytest.raises(Rejected) as e:
            seal.open_request(blob, partition=0, now_ms=NOW)
        assert e.value.reason == "malformed"
