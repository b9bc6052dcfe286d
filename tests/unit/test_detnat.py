"""Deterministic NAT (RFC 7422): the inverse lookup agrees with a brute-force table built from
the RFC's forward formula, versions are kept apart in time, and bad configurations are refused."""

from __future__ import annotations

import ipaddress

import pytest

from stream.detnat import expired_versions, lookup, parse_versions
from stream.errors import ConfigError

DAY = 86_400_000
T1 = 1767225600000  # 2026-01-01T00:00:00Z
T2 = 1782864000000  # 2026-07-01T00:00:00Z


def v(**kw) -> dict:
    base = {"version": 1, "valid_from": "2026-01-01T00:00:00Z", "inside": "100.64.0.0/26",
            "outside": "198.51.100.0/30", "ratio": 16, "ports_per_host": 4000}
    return {**base, **kw}


def reference(inside: str, outside: str, ratio: int, pph: int, first: int = 1024) -> dict:
    """(public, port) → inside, from the RFC 7422 forward formula, port by port."""
    table = {}
    ib, ob = ipaddress.ip_network(inside), ipaddress.ip_network(outside)
    for k, a in enumerate(ib):
        out = ob.network_address + k // ratio
        lo = first + pph * (k % ratio)
        for p in range(lo, lo + pph):
            table[(str(out), p)] = str(a)
    return table


def test_inverse_matches_the_forward_formula_for_every_public_port():
    (ver,) = parse_versions([v()], file="op.toml")
    ref = reference("100.64.0.0/26", "198.51.100.0/30", 16, 4000)
    for pub in ("198.51.100.0", "198.51.100.1", "198.51.100.2", "198.51.100.3"):
        for port in range(0, 65536):
            m = ver.inside_for(pub, port)
            assert (m[0] if m else None) == ref.get((pub, port)), (pub, port)
    # and forward agrees with the reference too
    assert ver.public_for("100.64.0.17") == ("198.51.100.1", 1024 + 4000, 1024 + 8000 - 1)
    assert ver.public_for("100.64.1.0") is None


def test_versions_answer_only_while_valid_and_until_retention():
    vs = parse_versions([v(valid_to="2026-07-01T00:00:00Z"),
                         v(version=2, valid_from="2026-07-01T00:00:00Z", inside="100.64.0.64/26")], file="op.toml")
    keep = 180 * DAY
    before, after = T2 - 1000, T2 + 1000
    m1 = lookup(vs, "198.51.100.0", 1024, before, before + 1, now_ms=after, keep_ms=keep)
    m2 = lookup(vs, "198.51.100.0", 1024, after, after + 1, now_ms=after, keep_ms=keep)
    assert [(m.version, m.inside_ip) for m in m1] == [(1, "100.64.0.0")]
    assert [(m.version, m.inside_ip) for m in m2] == [(2, "100.64.0.64")]
    # a query spanning the change sees both, each with its own validity
    both = lookup(vs, "198.51.100.0", 1024, before, after, now_ms=after, keep_ms=keep)
    assert [(m.version, m.from_ms, m.to_ms) for m in both] == [(1, T1, T2), (2, T2, None)]
    # version 1 is kept exactly keep_ms past its end, then never answered again
    assert lookup(vs, "198.51.100.0", 1024, before, before + 1, now_ms=T2 + keep - 1, keep_ms=keep)
    assert lookup(vs, "198.51.100.0", 1024, before, before + 1, now_ms=T2 + keep, keep_ms=keep) == []
    assert expired_versions(vs, now_ms=T2 + keep, keep_ms=keep) == [1]
    assert expired_versions(vs, now_ms=T2 + 100 * keep, keep_ms=keep) == [1]  # in force: never expires
    # no port: nothing is guessed
    assert lookup(vs, "198.51.100.0", None, before, before + 1, now_ms=after, keep_ms=keep) == []
    # ports below first_port or beyond the last host's block map to nobody
    assert lookup(vs, "198.51.100.0", 1023, before, before + 1, now_ms=after, keep_ms=keep) == []
    assert lookup(vs, "198.51.100.0", 1024 + 16 * 4000, before, before + 1, now_ms=after, keep_ms=keep) == []


@pytest.mark.parametrize("bad,field", [
    ([v(ports_per_host=5000)], "ports_per_host"),                       # 16 × 5000 from 1024 > 65535
    ([v(outside="198.51.100.0/31")], "outside"),                        # 2 × 16 < 64 inside addresses
    ([v(), v()], "version"),                                            # version twice
    ([v(), v(version=2, valid_from="2026-03-01T00:00:00Z")], "outside"),  # overlapping in time and pool
    ([v(valid_to="2025-01-01T00:00:00Z")], "valid_to"),
    ([v(valid_from="2026-01-01")], "valid_from"),                      # no zone
    ([v(inside="100.64.0.1/26")], "inside"),                           # host bits set
    ([v(colour="red")], "colour"),
    ({"version": 1}, "deterministic_nat"),
])
def test_bad_configurations_are_refused_naming_the_field(bad, field):
    with pytest.raises(ConfigError) as e:
        parse_versions(bad, file="op.toml")
    assert str(e.value).startswith("op.toml: deterministic_nat") and field in str(e.value)


def test_disjoint_pools_may_overlap_in_time():
    vs = parse_versions([v(), v(version=2, outside="198.51.100.4/30", inside="100.64.0.64/26", realm="b")],
                        file="op.toml")
    (m,) = lookup(vs, "198.51.100.4", 1024, T1, T1 + 1, now_ms=T1, keep_ms=DAY)
    assert (m.inside_ip, m.realm) == ("100.64.0.64", "b")


def test_profile_sections_load_with_the_operator():
    from pathlib import Path

    from stream.config import parse_operator

    text = (Path(__file__).resolve().parents[2] / "config" / "operators" / "connect2ip.toml").read_text()
    extra = '''
[realms.north]
collectors = ["cgn1"]
nas = ["192.0.2.10"]

[[deterministic_nat]]
version = 1
valid_from = "2026-01-01T00:00:00Z"
inside = "100.64.0.0/26"
outside = "198.51.100.0/30"
ratio = 16
ports_per_host = 4000
'''
    op = parse_operator(text + extra, file="connect2ip.toml")
    assert op.realms.of_nat("cgn1") == {"north"} and [v.version for v in op.deterministic_nat] == [1]
    with pytest.raises(ConfigError) as e:
        parse_operator(text + extra.replace("ratio = 16", "ratio = 1"), file="connect2ip.toml")
    assert str(e.value).startswith("connect2ip.toml: deterministic_nat[0].outside")
