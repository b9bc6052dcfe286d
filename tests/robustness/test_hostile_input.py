"""Hostile and malformed input: every decoder of untrusted bytes returns or raises
``Rejected`` with a kebab-case reason — never anything else — and odd spellings follow the rules
in docs/robustness.md.

The 1M-input run is ``benchmarks/fuzz_all.py``; here the same engine runs a 3 000-input smoke
sample, plus targeted cases.  Defects found by the fuzzer in files this room does not own are
pinned as ``xfail(strict=True)`` with the exact fix: once fixed they XPASS, which fails the run
and tells whoever fixed it to drop the marker (and the entry in ``KNOWN_CRASH_SITES``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.errors import Rejected
from stream.model import Binding, parse_network
from stream.parse import formats

REPO = Path(__file__).resolve().parents[2]
FUZZ = REPO / "benchmarks" / "fuzz_all.py"
REASON = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

#: crash sites the fuzzer finds today (file:line of the raising frame) → the fix; the fixed ones are
#: listed in docs/robustness.md "Defects the fuzzer found"
KNOWN_CRASH_SITES: dict[str, str] = {}  # every site the fuzzer found is fixed; a new one fails the run


def _radius(**kw) -> bytes:
    rec = {"User-Name": "u", "Acct-Status-Type": "Start", "Acct-Session-Id": "s", "NAS-IP-Address": "192.0.2.1",
           "Framed-IP-Address": "100.64.0.1", "Event-Timestamp": 1718000000}
    rec.update(kw)
    return json.dumps(rec).encode()


def _outcome(fmt: str, record: bytes, **ctx):
    try:
        return [b.ip for b in formats()[fmt].parse(record, operator="op", **ctx)]
    except Rejected as e:
        assert REASON.match(e.reason), e.reason
        return e.reason


# -- the fuzzer's smoke run ---------------------------------------------------------------------

def test_fuzz_smoke_runs_every_target_and_finds_no_new_crash(tmp_path):
    p = subprocess.run([sys.executable, str(FUZZ), "--smoke", "--crash-dir", str(tmp_path)], capture_output=True,
                       text=True, timeout=600, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    fig = json.loads(lines[0])
    for k in ("inputs", "crashes", "crashes_by", "crash_sites", "calls", "accepted", "rejected", "reasons",
              "slowest_call_ms", "wall_s", "inputs_per_s", "machine", "smoke"):
        assert k in fig, k
    assert fig["smoke"] is True and fig["inputs"] == 3000 == sum(fig["calls"].values())
    targets = {f"parse:{n}" for n in formats()} | {"binding-json", "binding-wire", "consent-decode", "hold-set", "access-submit",
                                                    "access-approve", "access-request-from-body"}
    assert set(fig["calls"]) == targets
    # every target both rejected something (with a reason) and accepted something (the mutation
    # engine keeps valid records in the mix, so the accept path is exercised too)
    for t in targets:
        assert fig["rejected"].get(t, 0) > 0 and all(REASON.match(r) for r in fig["reasons"][t]), t
    assert sum(fig["accepted"].values()) > 100
    new = {k: v for k, v in fig["crash_sites"].items() if v not in KNOWN_CRASH_SITES}
    assert new == {}, f"new crash kinds (inputs in {tmp_path}): {new}"


# -- documented rules: addresses ----------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("192.0.2.1", "192.0.2.1/32"),
    (" 192.0.2.1\t", "192.0.2.1/32"),                     # surrounding whitespace stripped
    ("::ffff:192.0.2.1", "::ffff:c000:201/128"),           # IPv4-mapped IPv6 stays IPv6
    ("2001:0DB8:0000::1", "2001:db8::1/128"),              # any valid IPv6 spelling, canonicalised
    ("192.0.2.0/24", "192.0.2.0/24"),
    ("fe80::1%eth0", "bad-address"),                       # zone id: meaningless off-link
    ("192.0.2.1%0", "bad-address"),
    ("010.001.002.003", "bad-address"),                    # leading zeros: ambiguous octal
    ("192.0.2.01", "bad-address"),
    ("0x7f.0.0.1", "bad-address"), ("127.1", "bad-address"), ("3221225985", "bad-address"),
    ("[2001:db8::1]", "bad-address"),
    ("\uff11\uff19\uff12.0.2.1", "bad-address"),           # full-width digits
    ("2001:db8::1/64", "bad-address"),                     # host bits set: rejected, not masked
    ("192.0.2.1/33", "bad-address"), ("", "bad-address"), ("%", "bad-address"),
])
def test_parse_network_rules(text, expected):
    try:
        got = str(parse_network(text))
    except Rejected as e:
        got = e.reason
    assert got == expected


@pytest.mark.parametrize("addr, expected", [
    ("100.64.0.1", "100.64.0.1/32"),
    ("::ffff:100.64.0.1", "bad-address"),   # Framed-IP-Address is an IPv4 attribute (RFC 2865 §5.8)
    ("64:ff9b::100.64.0.1", "bad-address"),
    ("fe80::1%eth0", "bad-address"), ("100.064.0.1", "bad-address"), ("100.64.1", "bad-address"),
])
def test_radius_framed_ip_notations(addr, expected):
    out = _outcome("radius-json", _radius(**{"Framed-IP-Address": addr}))
    assert (str(out[0]) if isinstance(out, list) else out) == expected


# -- documented rules: time, size, encoding, nesting ------------------------------------------

@pytest.mark.parametrize("ts", [0, -1, 946_684_799, 4_102_444_800, 253_402_300_800, 10**20, "1e30", "NaN"])
def test_event_times_outside_2000_to_2100_are_rejected(ts):
    assert _outcome("radius-json", _radius(**{"Event-Timestamp": ts})) in ("bad-timestamp", "bad-attribute")


def test_event_times_at_the_window_edges():
    assert _outcome("radius-json", _radius(**{"Event-Timestamp": 946_684_800})) != "bad-timestamp"
    assert _outcome("radius-json", _radius(**{"Event-Timestamp": 4_102_444_799})) != "bad-timestamp"


def _seed(fmt: str) -> bytes:
    from tests.unit.parse.test_properties import SEEDS

    return SEEDS.get(fmt, SEEDS["radius-json"])


@pytest.mark.parametrize("fmt", sorted(formats()))
def test_oversized_records_are_rejected_before_parsing(fmt):
    seed = _seed(fmt)
    big = seed[:20] + b"A" * (4 << 20) + seed[20:]
    assert _outcome(fmt, big, year=2024) == "oversized"


@pytest.mark.parametrize("fmt", sorted(formats()))
@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deeply_nested_json_is_rejected(fmt, depth):
    for rec in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        assert isinstance(_outcome(fmt, rec, year=2024), str)


@pytest.mark.parametrize("fmt", sorted(formats()))
@pytest.mark.parametrize("bad", [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_invalid_utf8_is_rejected_with_a_reason(fmt, bad):
    seed = _seed(fmt)
    for pos in (0, len(seed) // 2, len(seed)):
        out = _outcome(fmt, seed[:pos] + bad + seed[pos:], year=2024)
        # rejected — or, where the bad bytes fall inside a field the format ignores, still parsed
        assert isinstance(out, (str, list))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(formats())), st.binary(max_size=600),
       st.sampled_from([{}, {"year": 2024}, {"ref_ms": 1_718_000_000_000}, {"tz": "Europe/Stockholm"}]))
def test_random_bytes_never_escape_as_anything_but_rejected(fmt, data, ctx):
    _outcome(fmt, data, **ctx)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))
def test_access_desk_refuses_any_json_with_a_reason(value):
    fx = _access()
    d = fx.desk.submit(json.dumps(value).encode(), fx.now_ms)
    assert d.status == "refused" and REASON.match(d.reason)
    d = fx.desk.approve(json.dumps(value).encode(), fx.now_ms)
    assert d.status in ("refused", "approval-rejected") and REASON.match(d.reason)


_FX = []


def _access():
    """The fuzzer's fixture (demo registry + demo signing keys): one source for both."""
    if not _FX:
        sys.path.insert(0, str(REPO))
        from benchmarks.fuzz_all import AccessFixture

        _FX.append(AccessFixture())
    return _FX[0]


def test_signed_request_with_hostile_values_is_refused_for_a_reason():
    fx = _access()
    import random

    rng = random.Random(4)
    for addr, reason in (("fe80::1%eth0", "malformed-request"), ("::ffff:100.64.12.34", "malformed-request"),
                         ("2001:0db8::1", "malformed-request"), ("100.64.12.034", "malformed-request")):
        body = fx.body(rng)
        body["address"] = addr
        d = fx.desk.submit(fx.signed_request(body), fx.now_ms)
        assert (d.status, d.reason) == ("refused", reason), addr
    body = fx.body(rng)
    body["issued_ms"] = 10**18  # far future
    assert fx.desk.submit(fx.signed_request(body), fx.now_ms).reason == "future-request"
    body = fx.body(rng)
    body["issued_ms"] = 0  # far past
    assert fx.desk.submit(fx.signed_request(body), fx.now_ms).reason == "stale-request"


# -- defects the fuzzer found, fixed: each stays a regression test ---------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("decoder", ["binding", "consent", "holds", "submit", "approve"])
def test_deep_json_in_topic_decoders(decoder):
    from stream.consent import ConsentRecord
    from stream.hold import HoldSet

    fx = _access()
    call = {"binding": lambda: Binding.from_json(DEEP), "consent": lambda: ConsentRecord.decode(b"op:k", DEEP),
            "holds": lambda: HoldSet.from_json(DEEP), "submit": lambda: fx.desk.submit(DEEP, fx.now_ms),
            "approve": lambda: fx.desk.approve(DEEP, fx.now_ms)}[decoder]
    try:
        d = call()
    except Rejected as e:
        assert REASON.match(e.reason)
        return
    assert d.status in ("refused", "approval-rejected") and REASON.match(d.reason)


@pytest.mark.parametrize("value", [[], 5, {"a": 1}, True])
def test_non_string_address_in_a_binding_is_rejected(value):
    d = json.loads(Binding(kind="radius", action="start", operator="op", ip=parse_network("100.64.0.1"),
                           subscriber="u", session="s", nas=None, at_ms=1).to_json())
    d["ip"] = value
    with pytest.raises(Rejected) as e:
        Binding.from_json(json.dumps(d).encode())
    assert e.value.reason == "bad-address"


@pytest.mark.parametrize("fmt", ["a10", "f5", "juniper", "nfware", "sixwind"])
def test_huge_receive_time_header_is_rejected(fmt):
    # agents/app.py passes any all-digit ipanon-received-ms header as ref_ms
    line = _seed(fmt)
    # a year-less syslog line (the 3164 form), so the receive time is consulted
    with pytest.raises(Rejected) as e:
        formats()[fmt].parse(line if fmt != "juniper" else b"Oct 30 21:46:04 graphite [FWNAT]: ASP_NAT_PORT_BLOCK_ALLOC: "
                             b"3002::1 -> 33.33.0.3:1050-1099", operator="op", ref_ms=10**20)
    assert e.value.reason == "bad-timestamp"


def test_kea_csv_huge_integer_field_is_rejected():
    rec = _seed("kea-csv").replace(b",1718000200,", b"," + b"9" * 5000 + b",")
    with pytest.raises(Rejected) as e:
        formats()["kea-csv"].parse(rec, operator="op")
    assert e.value.reason == "bad-row"


def test_kea_hook_huge_integer_field_is_rejected():
    rec = _seed("kea-hook").replace(b'"3600"', b'"' + b"9" * 5000 + b'"')
    with pytest.raises(Rejected) as e:
        formats()["kea-hook"].parse(rec, operator="op")
    assert e.value.reason == "bad-attribute"


def test_radius_huge_integer_attribute_is_rejected():
    rec = _radius(**{"Acct-Status-Type": "Interim-Update", "Acct-Input-Octets": "9" * 5000})
    with pytest.raises(Rejected) as e:
        formats()["radius-json"].parse(rec, operator="op")
    assert e.value.reason == "bad-attribute"
