"""Binary IPFIX (RFC 7011) with RFC 8158 NAT events: packets from the independent encoder in
``ipfix_encode`` go through the collector-side ``Splitter`` and the ``ipfix`` parser, and the
bindings must be exactly the events that were encoded (the reference model below)."""

from __future__ import annotations

import pytest

from tests.unit.parse import ipfix_encode as enc
from stream.errors import Rejected
from stream.parse import get_format
from stream.parse.ipfix import Splitter

ACTION = {16: "start", 17: "stop", 4: "start", 5: "stop"}
T0 = 1718000000000


def expected(row: dict) -> tuple:
    """What an RFC 8158 event means, written from the RFC, not from the parser."""
    inside = row.get("sourceIPv4Address") or row.get("sourceIPv6Address")
    if row["natEvent"] in (16, 17):
        lo, hi = row["portRangeStart"], row["portRangeEnd"]
    else:
        lo = hi = row["postNAPTSourceTransportPort"]
    return (ACTION[row["natEvent"]], row["postNATSourceIPv4Address"], lo, hi, inside,
            row["observationTimeMilliseconds"])


def got(records: list[bytes]) -> list:
    out = []
    for r in records:
        try:
            for b in get_format("ipfix").parse(r, operator="op"):
                d = b.to_dict()
                out.append((d["action"], d["ip"], d["port_first"], d["port_last"], d["inside_ip"], d["at_ms"]))
        except Rejected as e:
            out.append(e.reason)
    return out


def block(ev, inside, public, lo, hi, at=T0, vrf=1):
    return {"observationTimeMilliseconds": at, "natEvent": ev, "sourceIPv4Address": inside,
            "postNATSourceIPv4Address": public, "portRangeStart": lo, "portRangeEnd": hi, "ingressVRFID": vrf}


def session(ev, inside, public, port, at=T0):
    return {"observationTimeMilliseconds": at, "natEvent": ev, "sourceIPv4Address": inside,
            "sourceTransportPort": 5555, "postNATSourceIPv4Address": public, "postNAPTSourceTransportPort": port}


def test_blocks_and_sessions_with_template_in_an_earlier_message():
    sp = Splitter()
    assert sp.split(enc.message([enc.template_set(256, enc.BLOCK), enc.template_set(257, enc.SESSION)]),
                    "192.0.2.1", T0) == []
    rows_b = [block(16, "100.64.0.7", "198.51.100.7", 40000, 40127),
              block(17, "100.64.0.7", "198.51.100.7", 40000, 40127, at=T0 + 60_000)]
    rows_s = [session(4, "100.64.0.8", "198.51.100.7", 1234), session(5, "100.64.0.8", "198.51.100.7", 1234, T0 + 5)]
    out = sp.split(enc.message([enc.data_set(256, enc.BLOCK, rows_b), enc.data_set(257, enc.SESSION, rows_s)]),
                   "192.0.2.1", T0 + 1000)
    assert len(out) == 4  # one self-contained message per data record
    assert got(out) == [expected(r) for r in rows_b + rows_s]


def test_nat64_block_has_an_ipv6_inside_address():
    row = {"observationTimeMilliseconds": T0, "natEvent": 16, "sourceIPv6Address": "2001:db8:200::1",
           "postNATSourceIPv4Address": "192.0.2.7", "portRangeStart": 1024, "portRangeEnd": 1535}
    out = Splitter().split(enc.message([enc.template_set(300, enc.NAT64), enc.data_set(300, enc.NAT64, [row])]),
                           "192.0.2.1", T0)
    assert got(out) == [expected(row)]


def test_templates_are_per_exporter_and_observation_domain():
    sp = Splitter()
    # the same template id means different layouts on two exporters and two domains
    sp.split(enc.message([enc.template_set(256, enc.BLOCK)], domain=1), "192.0.2.1", T0)
    sp.split(enc.message([enc.template_set(256, enc.SESSION)], domain=1), "192.0.2.2", T0)
    sp.split(enc.message([enc.template_set(256, enc.SESSION)], domain=2), "192.0.2.1", T0)
    rb = block(16, "100.64.0.1", "198.51.100.1", 1024, 1279)
    rs = session(4, "100.64.0.2", "198.51.100.2", 2000)
    a = sp.split(enc.message([enc.data_set(256, enc.BLOCK, [rb])], domain=1), "192.0.2.1", T0)
    b = sp.split(enc.message([enc.data_set(256, enc.SESSION, [rs])], domain=1), "192.0.2.2", T0)
    c = sp.split(enc.message([enc.data_set(256, enc.SESSION, [rs])], domain=2), "192.0.2.1", T0)
    assert got(a) == [expected(rb)] and got(b) == [expected(rs)] and got(c) == [expected(rs)]
    # an exporter that never sent the template: forwarded, refused by the worker with a reason
    d = sp.split(enc.message([enc.data_set(256, enc.BLOCK, [rb])], domain=1), "192.0.2.9", T0)
    assert got(d) == ["unknown-template"] and sp.stats.unknown_sets == 1


def test_template_expiry_and_resend():
    sp = Splitter(lifetime_ms=60_000)
    row = block(16, "100.64.0.1", "198.51.100.1", 1024, 1279)
    sp.split(enc.message([enc.template_set(256, enc.BLOCK)]), "192.0.2.1", T0)
    assert got(sp.split(enc.message([enc.data_set(256, enc.BLOCK, [row])]), "192.0.2.1", T0 + 60_000)) == [expected(row)]
    # not refreshed within its lifetime: the old layout is never used again
    assert got(sp.split(enc.message([enc.data_set(256, enc.BLOCK, [row])]), "192.0.2.1", T0 + 60_001)) == ["unknown-template"]
    # re-sent (here with a new layout for the same id): the new one is used
    sp.split(enc.message([enc.template_set(256, enc.SESSION)]), "192.0.2.1", T0 + 70_000)
    rs = session(5, "100.64.0.2", "198.51.100.2", 2000)
    assert got(sp.split(enc.message([enc.data_set(256, enc.SESSION, [rs])]), "192.0.2.1", T0 + 70_001)) == [expected(rs)]


def test_withdrawal_options_enterprise_fields_and_padding():
    sp = Splitter()
    row = block(16, "100.64.0.1", "198.51.100.1", 1024, 1279)
    sp.split(enc.message([enc.template_set(256, enc.BLOCK, enterprise=(12, 4, 2636)), enc.options_template_set(400)]),
             "192.0.2.1", T0)
    out = sp.split(enc.message([enc.data_set(256, enc.BLOCK, [row], private=b"\xde\xad\xbe\xef", pad=3),
                                enc.data_set(400, [], [{}], private=b"\xc0\x00\x02\x01\x06")]), "192.0.2.1", T0)
    assert got(out) == [expected(row)] and sp.stats.options_records == 1
    sp.split(enc.message([enc.withdrawal_set(256)]), "192.0.2.1", T0)
    assert got(sp.split(enc.message([enc.data_set(256, enc.BLOCK, [row], private=b"\0\0\0\0")]), "192.0.2.1", T0)) == [
        "unknown-template"]


@pytest.mark.parametrize("data", [
    b"\x00\x09" + b"\x00" * 14,                                  # NetFlow v9, not IPFIX
    enc.message([enc.template_set(256, enc.BLOCK)])[:-3],         # truncated
    b"\x00\x0a\x00\x05",                                          # shorter than a header
    enc.message([b"\x00\x01\x00\x04"]),                           # reserved set id
])
def test_malformed_messages_are_refused_with_a_reason(data):
    with pytest.raises(Rejected) as e:
        Splitter().split(data, "192.0.2.1", T0)
    assert e.value.reason == "bad-ipfix"
    with pytest.raises(Rejected) as e:
        get_format("ipfix").parse(data, operator="op")
    assert e.value.reason == "bad-ipfix"


def test_non_binding_events_are_refused():
    row = block(16, "100.64.0.1", "198.51.100.1", 1024, 1279)
    row["natEvent"] = 13  # quota exceeded: no binding
    out = Splitter().split(enc.message([enc.template_set(256, enc.BLOCK), enc.data_set(256, enc.BLOCK, [row])]),
                           "192.0.2.1", T0)
    assert got(out) == ["unsupported-event"]


def test_file_framer_reads_concatenated_messages():
    rows = [block(16, "100.64.0.1", "198.51.100.1", 1024, 1279), block(17, "100.64.0.1", "198.51.100.1", 1024, 1279)]
    data = (enc.message([enc.template_set(256, enc.BLOCK)]) + enc.message([enc.data_set(256, enc.BLOCK, rows[:1])])
            + enc.message([enc.data_set(256, enc.BLOCK, rows[1:])]))
    recs = list(get_format("ipfix").frame([data[:10], data[10:]]))
    assert got(recs) == [expected(r) for r in rows]


def test_the_exporter_address_becomes_the_bindings_nas():
    row = block(16, "100.64.0.7", "198.51.100.7", 40000, 40127)
    out = Splitter().split(enc.message([enc.template_set(256, enc.BLOCK), enc.data_set(256, enc.BLOCK, [row])]),
                           "192.0.2.1", T0)
    (b,) = get_format("ipfix").parse(out[0], operator="op")
    assert b.nas == "192.0.2.1"
    # an exporter that names itself keeps its own value
    names = enc.BLOCK + ["exporterIPv4Address"]
    out = Splitter().split(enc.message([enc.template_set(256, names),
                                        enc.data_set(256, names, [{**row, "exporterIPv4Address": "10.9.9.9"}])]),
                           "192.0.2.1", T0)
    (b,) = get_format("ipfix").parse(out[0], operator="op")
    assert b.nas == "10.9.9.9"
