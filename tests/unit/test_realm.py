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


# -- the table keeps one holder per address *per realm* (stream/intervals.py _repair) ----------

import ipaddress  # noqa: E402
import random  # noqa: E402

from stream.intervals import apply, during  # noqa: E402
from stream.model import Binding  # noqa: E402

NET = ipaddress.ip_network("100.64.0.7/32")
M = 60_000


def rstart(sub, nas, at):
    return Binding(kind="radius", action="start", operator="op", ip=NET, subscriber=sub,
                   session=f"{nas}/{sub}", nas=nas, at_ms=at)


def holders_at(ivs, t):
    return sorted(h.holder for h in during(ivs, t, t + 1))


def table(bindings, realm_of):
    ivs = ()
    for b in bindings:
        ivs, _ = apply(ivs, b, realm_of=realm_of)
    return ivs


def test_a_later_start_in_another_realm_does_not_end_the_first_holder():
    bs = [rstart("alice", "192.0.2.10", 0), rstart("bob", "192.0.2.20", 1 * M)]
    assert holders_at(table(bs, R.of_access), 2 * M) == ["alice", "bob"]
    # without realms (one address space) bob's Start ends alice's tenure, as before
    assert holders_at(table(bs, None), 2 * M) == ["bob"]
    assert holders_at(table(bs, None), 0) == ["alice"]


def test_a_later_start_in_the_same_realm_still_ends_the_holder():
    bs = [rstart("alice", "192.0.2.10", 0), rstart("carol", "192.0.2.10", 1 * M),
          rstart("bob", "192.0.2.20", 2 * M)]
    ivs = table(bs, R.of_access)
    assert holders_at(ivs, 30_000) == ["alice"]
    assert holders_at(ivs, 90_000) == ["carol"]           # alice cut at carol's start (same realm)
    assert holders_at(ivs, 3 * M) == ["bob", "carol"]     # bob's realm is another space


def test_realm_repair_matches_a_per_realm_reference_model_in_any_arrival_order():
    """Reference: each realm alone, without realms, gives the holders of that realm; the
    realm-aware table must give their union at every instant, whatever order the starts arrive."""
    nases = ["192.0.2.10", "192.0.2.20", "198.18.0.1"]  # north, south, a NAS in no realm
    rng = random.Random(5)
    for _ in range(300):
        bs = [rstart(f"s{i}", rng.choice(nases), rng.randrange(0, 20) * M) for i in range(rng.randrange(1, 7))]
        shuffled = bs[:]
        rng.shuffle(shuffled)
        got = table(shuffled, R.of_access)
        realms = {R.of_access(n) for n in nases}  # north, south, None (the default realm)
        for t in range(0, 21 * M, M // 2):
            want = sorted(h for r in realms
                          for h in holders_at(table([b for b in bs if R.of_access(b.nas) == r], None), t))
            assert holders_at(got, t) == want, (t, bs)
