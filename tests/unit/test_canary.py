"""stream.canary: the one "is this a canary" rule, the reserved records, and the measurement."""

from __future__ import annotations

import ipaddress

import pytest

from stream import canary as C
from stream.parse import get_format


@pytest.mark.parametrize("attr", ["User-Name", "Calling-Station-Id"])
def test_records_parse_through_the_real_parser_into_canaries(attr):
    recs = C.records("connect2ip", 1_765_000_000_123, end_ms=1_765_000_000_000, identity_attribute=attr, k=3)
    bs = [b for r in recs for b in get_format(C.FORMAT).parse(r, operator="connect2ip", identity=attr)]
    assert [b.action for b in bs] == ["start", "stop"]
    assert all(C.is_canary(b) for b in bs)
    assert bs[1].at_ms == 1_765_000_000_000 and bs[0].at_ms == 1_765_000_000_000 - 1000
    assert bs[0].ip == ipaddress.ip_network(C.address(1_765_000_000_123, 3))
    assert C.is_canary_subscriber(bs[0].subscriber) and bs[0].subscriber.endswith("@canary.invalid")


def test_real_subscribers_and_addresses_are_not_canaries():
    for sub in ("alice@isp.example", "ipanon-canary-x@canary.invalid.example.com", "canary.invalid", None,
                "x-ipanon-canary-1@canary.invalid.", "ipanon-canary-1@canary.example"):
        assert not C.is_canary_subscriber(sub), sub
    for a in ("100.64.0.1", "2001:db8::1", "100:0:0:1::1", "::1", "100::/63", "not an address", "1.0.0.0"):
        assert not C.is_canary_address(a), a
    for a in ("100::1", "100::ffff:ffff:ffff:ffff", "100::/64", ipaddress.ip_network("100::5")):
        assert C.is_canary_address(a), a
    # every address the injector can pick is in the block, distinct per k
    addrs = {C.address(1_765_000_000_123, k) for k in range(16)}
    assert len(addrs) == 16 and all(C.is_canary_address(a) for a in addrs)


def test_visible_holders_never_name_a_canary():
    hs = [{"address": str(C.address(1)), "subscriber": C.subscriber("op", 1)},
          {"address": "192.0.2.1", "subscriber": "bob@isp.example"}]
    assert C.visible_holders(hs) == [hs[1]]


IMPOSTORS = [C.subscriber("connect2ip", 1_765_000_000_123), "ipanon-canary-me@canary.invalid"]


@pytest.mark.parametrize("name", IMPOSTORS)
@pytest.mark.parametrize("ip", ["100.64.12.34", "2001:db8:4711:ab00::1", "2001:db8:4711:ab00::/56"])
def test_a_real_subscriber_named_like_a_canary_is_still_counted_and_named(name, ip):
    """Attack: the subscriber id is what the access request carries (on many BNGs the PPPoE
    user name is whatever the CPE sends).  A subscriber who calls themselves
    ipanon-canary-…@canary.invalid on an address the operator really assigned must not vanish
    from the statistics or from a lawful answer (before the fix: either field sufficed)."""
    attr = "User-Name"
    key = "Framed-IP-Address" if ":" not in ip else ("Framed-IPv6-Prefix" if "/" in ip else "Framed-IPv6-Address")
    rec = {"NAS-IP-Address": "192.0.2.10", "Acct-Session-Id": "s1", key: ip, attr: name,
           "Acct-Status-Type": "Start", "Event-Timestamp": 1_765_000_000}
    import json
    bs = get_format(C.FORMAT).parse(json.dumps(rec).encode(), operator="connect2ip", identity=attr)
    assert bs and bs[0].subscriber == name
    assert not C.is_canary(bs[0])
    holder = {"operator": "connect2ip", "address": ip.split("/")[0], "subscriber": name, "from_ms": 0, "to_ms": 1}
    assert C.visible_holders([holder]) == [holder]


def test_a_real_subscriber_on_the_canary_block_is_not_a_canary_either():
    """The other half: an address in 100::/64 with a real name (an operator that misassigns the
    discard block) is still counted and named; only the pair is a canary."""
    b = type("B", (), {"subscriber": "alice@isp.example", "ip": ipaddress.ip_network("100::7")})()
    assert not C.is_canary(b)
    assert C.visible_holders([{"address": "100::7", "subscriber": "alice@isp.example"}])


def test_measurement_is_observed_gone_minus_end_and_open_ones_keep_rising():
    c = C.Canary("op", 1, end_ms=10_000, expiry_ms=15_000, inserted_ms=10_100)
    c.saw("table", False, 10_050)          # not arrived yet: proves nothing
    assert c.persistence_ms("table", 10_050) is None
    c.saw("table", True, 10_200)
    assert c.persistence_ms("table", 14_000) == 4_000        # still held: so far
    c.saw("table", False, 16_500)
    c.saw("table", True, 17_000)                             # gone is final
    assert c.persistence_ms("table", 99_000) == 6_500
    figs = {f.store: f for f in C.summarize([c], 20_000, bounds={("op", "table"): 7_000}, promises={"op": 8_000})}
    assert figs["table"].measured_ms == 6_500 and figs["table"].verdict == "kept"
    assert figs["changelog"].measured_ms is None and figs["changelog"].verdict == "unmeasured"
    # a stopped sweeper: the table never lets go; the figure passes the bound, then the promise
    s = C.Canary("op", 2, end_ms=10_000, expiry_ms=15_000, inserted_ms=10_100)
    s.saw("table", True, 10_200)
    f = lambda now: {x.store: x for x in C.summarize([c, s], now, bounds={("op", "table"): 7_000},
                                                      promises={"op": 8_000})}["table"]
    assert f(17_500).verdict == "over-bound" and f(18_001).verdict == "broken" and f(18_001).open == 1


def test_store_bounds_from_plan_numbers():
    b = C.store_bounds(ttl_ms=10_000, sweeper_period_ms=1000, schedule_bucket_ms=1000, epoch_period_ms=1000,
                       key_grace_ms=4000, disk_bound_ms=30_000, topic_rows={"changelog": 20_000, "raw": None})
    assert b == {"table": 12_000, "epoch-key": 16_000, "disk": 30_000, "changelog": 20_000, "bindings": None,
                 "raw": None}


def test_result_records_one_per_store_gone_with_no_personal_data():
    c = C.Canary("junet", 1000, end_ms=10_000, expiry_ms=30_000, inserted_ms=9_000)
    for s in C.STORES:
        c.saw(s, True, 11_000)
    c.saw("table", False, 31_500)
    c.saw("raw", False, 40_000)
    recs = C.result_records(c, bounds={("junet", "table"): 35_000}, promise_ms=60_000)
    assert [(r["store"], r["persistence_ms"], r["persistence_s"], r["bound_s"]) for r in recs] == [
        ("table", 21_500, 21.5, 35.0), ("raw", 30_000, 30.0, None)]
    assert all(r["canary"] == C.subscriber("junet", 1000) and C.is_canary_subscriber(r["canary"]) for r in recs)
    assert recs[0]["gone_at_ms"] == 31_500 and recs[0]["inserted_at_ms"] == 9_000 and recs[0]["promise_s"] == 60.0
