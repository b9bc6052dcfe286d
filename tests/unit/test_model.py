"""Binding's public behaviour (frozen, fields, equality, JSON contract, repr, validation) and the
fast address path (``stream.model.network``), which must equal ``parse_network`` exactly."""

from __future__ import annotations

import dataclasses
import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.errors import Rejected
from stream.model import FIELDS, Binding, ip_text, network, parse_network

NET = ipaddress.ip_network("100.64.1.2/32")


def nat(**kw) -> Binding:
    base = dict(kind="nat", action="start", operator="op", ip=NET, subscriber=None, session=None, nas="cgn1",
                at_ms=1_718_000_000_000, inside_ip=ipaddress.ip_address("10.0.0.1"), port_first=1024,
                port_last=2047)
    return Binding(**{**base, **kw})


def radius(**kw) -> Binding:
    base = dict(kind="radius", action="update", operator="op", ip=NET, subscriber="kund-1@isp", session="n/s",
                nas="192.0.2.10", at_ms=1_718_000_000_000, octets_in=5, octets_out=6, session_time_s=7)
    return Binding(**{**base, **kw})


def test_fields_and_defaults():
    assert FIELDS == ("kind", "action", "operator", "ip", "subscriber", "session", "nas", "at_ms", "until_ms",
                      "hwaddr", "client_id", "duid", "circuit_id", "remote_id", "inside_ip", "port_first",
                      "port_last", "octets_in", "octets_out", "session_time_s", "vrf", "proto")
    assert tuple(f.name for f in dataclasses.fields(Binding)) == FIELDS
    b = Binding("radius", "reset", "op", None, None, None, "nas1", 1)  # positional, like any dataclass
    assert all(getattr(b, f) is None for f in FIELDS[8:])
    with pytest.raises(TypeError):
        Binding(kind="radius", action="reset", operator="op", ip=None, subscriber=None, session=None, nas="n")


def test_frozen_slotted_equal_hashable():
    b = radius()
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.subscriber = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        b.__dict__  # noqa: B018 - slotted
    assert b == radius() and hash(b) == hash(radius()) and b != radius(octets_in=9)
    assert b != tuple(getattr(b, f) for f in FIELDS)
    assert dataclasses.replace(b, operator="op2").operator == "op2"
    assert dataclasses.replace(b, operator="op2") == radius(operator="op2")


def test_repr_never_shows_identifiers():
    r = repr(radius(subscriber="secret-user", hwaddr="02:00:00:00:00:01"))
    assert "secret-user" not in r and "02:00" not in r and "100.64" not in r and "192.0.2" not in r
    assert r == "Binding(kind='radius', action='update', operator='op', at_ms=1718000000000)"


@pytest.mark.parametrize("kw,reason", [
    (dict(kind="vpn"), "bad-kind"), (dict(action="begin"), "bad-action"), (dict(ip=None), "missing-address"),
    (dict(at_ms="1"), "bad-timestamp"), (dict(at_ms=True), "bad-timestamp"), (dict(at_ms=1.0), "bad-timestamp"),
])
def test_validation_on_construction(kw, reason):
    with pytest.raises(Rejected) as e:
        radius(**kw)
    assert e.value.reason == reason


@pytest.mark.parametrize("kw,reason", [
    (dict(inside_ip=None), "missing-attribute"), (dict(port_last=None), "bad-port-range"),
    (dict(port_first=3000), "bad-port-range"), (dict(port_last=70000), "bad-port-range"),
])
def test_nat_validation(kw, reason):
    with pytest.raises(Rejected) as e:
        nat(**kw)
    assert e.value.reason == reason
    with pytest.raises(Rejected):
        dataclasses.replace(nat(), **kw)
    assert nat(action="reset", **kw).action == "reset"


def test_to_dict_is_the_cli_contract():
    d = nat(ip=ipaddress.ip_network("2001:db8:200:ab00::/56"), inside_ip=ipaddress.ip_address("2001:db8::1")).to_dict()
    # proto is written only when set (a binding without it keeps its JSON and stats record id)
    assert list(d) == [f for f in FIELDS if f != "proto"]
    assert list(nat(proto=17).to_dict()) == list(FIELDS) and nat(proto=17).to_dict()["proto"] == 17
    assert d["ip"] == "2001:db8:200:ab00::/56" and d["inside_ip"] == "2001:db8::1" and d["port_first"] == 1024
    assert radius().to_dict()["ip"] == "100.64.1.2"
    assert radius(ip=ipaddress.ip_network("2001:db8::1/128")).to_dict()["ip"] == "2001:db8::1"
    assert radius(ip=ipaddress.ip_network("10.0.0.0/8")).to_dict()["ip"] == "10.0.0.0/8"
    assert Binding("radius", "reset", "op", None, None, None, "n", 1).to_dict()["ip"] is None


@pytest.mark.parametrize("b", [radius(), nat(), radius(ip=ipaddress.ip_network("2001:db8::/56"), subscriber="ü\"\\"),
                               Binding("radius", "reset", "op", None, None, None, "n", 1)])
def test_json_round_trip(b):
    raw = b.to_json()
    assert raw == json.dumps(b.to_dict(), separators=(",", ":")).encode()
    assert Binding.from_json(raw) == b and Binding.from_dict(json.loads(raw)) == b
    assert Binding.from_json(raw.decode()) == b  # str is accepted like json.loads accepts it
    assert Binding.from_json(raw.decode().encode("utf-16")) == b  # json.loads sniffs UTF-16


@pytest.mark.parametrize("raw,reason", [
    (b"{", "bad-json"), (b"\xff{}", "bad-json"), (b'{"kind": "\xc3"}', "bad-json"), (b"[" * 100_000, "bad-json"),
    (b'{"a":1} x', "bad-json"), (b"[]", "bad-binding"), (b"{}", "bad-kind"),
    (b'{"kind":"nat","action":"start","ip":"1.2.3.4","at_ms":1,"inside_ip":"10.0.0.1","port_first":"1","port_last":2}',
     "bad-binding"),
    (b'{"kind":"nat","action":"start","ip":"1.2.3.4","at_ms":1,"inside_ip":"10.0.0.01"}', "bad-binding"),
    (b'{"kind":"nat","action":"start","ip":"1.2.3.4","at_ms":1,"inside_ip":" 10.0.0.1"}', "bad-binding"),
    (b'{"kind":"nat","action":"start","ip":"1.2.3.4","at_ms":1,"inside_ip":"10.0.0.0/8"}', "bad-binding"),
    (b'{"kind":"radius","action":"start","ip":"1.2.3.04","at_ms":1}', "bad-address"),
    (b'{"kind":"radius","action":"start","ip":["1.2.3.4"],"at_ms":1}', "bad-address"),
    (b'{"kind":"radius","action":"start","ip":"10.0.0.1/8","at_ms":1}', "bad-address"),
])
def test_from_json_rejections(raw, reason):
    with pytest.raises(Rejected) as e:
        Binding.from_json(raw)
    assert e.value.reason == reason


def test_from_json_inside_ip_forms():
    base = {"kind": "nat", "action": "start", "ip": "1.2.3.4", "at_ms": 1}
    for v, want in [("10.0.0.1", "10.0.0.1"), ("::ffff:10.0.0.1", "::ffff:a00:1"), ("fe80::1%eth0", "fe80::1%eth0"),
                    (167772161, "10.0.0.1")]:
        b = Binding.from_dict({**base, "inside_ip": v})
        assert b.inside_ip == ipaddress.ip_address(v) and str(b.inside_ip) == want


def test_fast_v4_network_is_an_ordinary_network():
    n = network("100.64.7.9")
    ref = ipaddress.IPv4Network("100.64.7.9")
    assert type(n) is ipaddress.IPv4Network and n == ref and hash(n) == hash(ref) and n.prefixlen == 32
    assert str(n) == "100.64.7.9/32" and ip_text(n) == "100.64.7.9" and list(n.hosts()) == list(ref.hosts())
    assert n.network_address == ipaddress.IPv4Address("100.64.7.9") and n.broadcast_address == ref.broadcast_address
    assert ref in {n} and n.overlaps(ipaddress.ip_network("100.64.0.0/16")) and n.version == 4


_octet = st.one_of(st.integers(0, 255).map(str), st.text("0123456789", min_size=1, max_size=4))
_quadish = st.builds(lambda p, sep: sep.join(p), st.lists(_octet, min_size=1, max_size=5),
                     st.sampled_from([".", ".", ".", ":", " ", "/"]))


@given(st.one_of(_quadish, st.text(max_size=20), st.sampled_from(
    ["1.2.3.4", " 1.2.3.4", "1.2.3.4 ", "01.2.3.4", "1.2.3.4/32", "0.0.0.0", "255.255.255.255", "1.2.3", "1.2.3.4.5",
     "1.2.3.256", "::1", "::ffff:1.2.3.4", "1.2.3.4%eth0", "١.2.3.4", "1.2.3.4\x00", "0x1.2.3.4", "1..2.3"])))
def test_network_equals_parse_network(text):
    def outcome(f):
        try:
            n = f(text, field="f")
        except Rejected as e:
            return ("rejected", e.reason, e.detail)
        return (type(n), n, ip_text(n), n.with_prefixlen)

    assert outcome(network) == outcome(parse_network)
    assert outcome(network) == outcome(network)  # cached answer too


def test_subclass_and_pickle_keep_working():
    import copy
    import pickle

    class Sub(Binding):
        pass

    s = Sub("radius", "update", "op", NET, "u", "n/s", "n", 1)
    assert type(s) is Sub and s.subscriber == "u" and s != radius()
    with pytest.raises(Rejected):
        Sub("radius", "update", "op", None, "u", "n/s", "n", 1)
    b = nat()
    assert pickle.loads(pickle.dumps(b)) == b and copy.copy(b) == b and copy.deepcopy(b) == b
    assert type(pickle.loads(pickle.dumps(b))) is Binding


@pytest.mark.parametrize("args,reason", [
    (("begin", "op", NET, None, 1, ipaddress.ip_address("10.0.0.1"), 1, 2), "bad-action"),
    (("start", "op", None, None, 1, ipaddress.ip_address("10.0.0.1"), 1, 2), "missing-address"),
    (("start", "op", NET, None, "1", ipaddress.ip_address("10.0.0.1"), 1, 2), "bad-timestamp"),
    (("start", "op", NET, None, True, ipaddress.ip_address("10.0.0.1"), 1, 2), "bad-timestamp"),
    (("start", "op", NET, None, 1, None, 1, 2), "missing-attribute"),
    (("start", "op", NET, None, 1, ipaddress.ip_address("10.0.0.1"), 1, None), "bad-port-range"),
    (("start", "op", NET, None, 1, ipaddress.ip_address("10.0.0.1"), 3, 2), "bad-port-range"),
    (("start", "op", NET, None, 1, ipaddress.ip_address("10.0.0.1"), 3, 65536), "bad-port-range"),
    (("start", "op", NET, None, 1, ipaddress.ip_address("10.0.0.1"), "1", 2), "bad-binding"),
])
def test_parser_factories_validate_like_the_constructor(args, reason):
    from stream import model

    def outcome(f):
        try:
            return f()
        except Rejected as e:
            return e.reason
        except TypeError:
            return "bad-binding"

    names = ("action", "operator", "ip", "nas", "at_ms", "inside_ip", "port_first", "port_last")
    assert outcome(lambda: model.nat_binding(*args)) == reason
    assert outcome(lambda: Binding(kind="nat", subscriber=None, session=None, **dict(zip(names, args)))) == reason
    ok = model.nat_binding("start", "op", NET, "cgn1", 1, ipaddress.ip_address("10.0.0.1"), 1, 2)
    assert ok == Binding("nat", "start", "op", NET, None, None, "cgn1", 1, inside_ip=ipaddress.ip_address("10.0.0.1"),
                         port_first=1, port_last=2)
    assert model.radius_binding("reset", "op", None, None, None, "n", 1, None, None, None) == \
        Binding("radius", "reset", "op", None, None, None, "n", 1)
    assert outcome(lambda: model.radius_binding("update", "op", None, "s", "n/s", "n", 1, None, None, None)) == \
        "missing-address"
    assert outcome(lambda: model.dhcp_binding("start", "op", NET, "s", 1.5, None, None, None, None, None, None)) == \
        "bad-timestamp"
