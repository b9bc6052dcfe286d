"""Routing realms: the chain public:port → realm + inside → subscriber keeps only the NAT
binding's realm, and says "ambiguous" whenever two realms could match."""

from __future__ import annotations

import pytest

from stream.errors import ConfigError
from stream.realm import parse_realms, select

RAW = {
    "north": {"collectors": ["cgn1", "cgn-shared"], "nas": ["192.0.2.10"], "vrfs": ["north-vrf"]},
    "south": {"collectors": ["cgn2", "cgn-shared"], "nas": ["192.0.2.20"], "vrfs": ["south-vrf"]},
}
R = parse_realms(RAW, file="op.toml")
# holders of inside 100.64.0.7 at the same time, in each realm (the address space is reused)
A = ("alice", "192.0.2.10/sess-1")
B = ("bob", "192.0.2.20/sess-9")
X = ("xavier", "198.18.0.1/sess-3")  # NAS in no realm


def run(nat_source, holders, vrf=None):
    s = select(R, R.of_nat(nat_source, vrf), holders, lambda h: h[1])
    return s.status, [h[0] for h in s.kept]


def test_the_nat_sources_realm_picks_the_holder():
    assert run("cgn1", [A, B]) == ("ok", ["alice"])
    assert run("cgn2", [A, B]) == ("ok", ["bob"])
    assert run("cgn2", [A]) == ("ok", [])  # the only holder is in another realm: nobody here


def test_two_realms_could_match_is_ambiguous_never_a_pick():
    assert run("cgn-shared", [A, B]) == ("ambiguous", [])   # one CGN serving both, no VRF logged
    assert run("unknown-cgn", [A, B]) == ("ambiguous", [])  # source in no realm
    assert run("cgn1", [A, X]) == ("ambiguous", [])         # an unmapped NAS could be north too
    assert run("cgn1", [X]) == ("ambiguous", [])


def test_a_logged_vrf_settles_a_shared_cgn():
    assert run("cgn-shared", [A, B], vrf="south-vrf") == ("ok", ["bob"])
    assert run("cgn-shared", [A], vrf="north-vrf") == ("ok", ["alice"])
    assert run("cgn-shared", [A]) == ("ok", ["alice"])  # only one realm has a holder


def test_without_realms_nothing_changes():
    empty = parse_realms(None, file="op.toml")
    s = select(empty, empty.of_nat("cgn1"), [A, B, X], lambda h: h[1])
    assert (s.status, [h[0] for h in s.kept]) == ("ok", ["alice", "bob", "xavier"])


@pytest.mark.parametrize("raw,msg", [
    ({"a": {"nas": ["n1"]}, "b": {"nas": ["n1"]}}, "realms.b.nas"),
    ({"a": {"vrfs": ["v"]}, "b": {"vrfs": ["v"]}}, "realms.b.vrfs"),
    ({"a": {"colour": ["x"]}}, "realms.a.colour"),
    ({"a": {"nas": "n1"}}, "realms.a.nas"),
    ({"a": 3}, "realms.a"),
])
def test_bad_realm_tables_are_refused(raw, msg):
    with pytest.raises(ConfigError) as e:
        parse_realms(raw, file="op.toml")
    assert msg in str(e.value)
