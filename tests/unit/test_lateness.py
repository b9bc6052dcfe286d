"""stream.lateness: "ingest lag + bound <= promise" per record, at its boundaries.

Reference model, written out independently of the module: the mapping a binding speaks of ends
at the Stop / release / reset instant when the end is known, else at the earlier of the lease
end and last-seen + lost-Stop window; a copy written now to a topic with bound B survives until
now + B, which must not pass end + promise."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream import lateness as L
from stream.model import Binding

H = 3_600_000
DAY = 24 * H
NET = ipaddress.ip_network("100.64.0.1/32")
T0 = 1_790_000_000_000


def rad(action, at_ms=T0):
    return Binding(kind="radius", action=action, operator="op", ip=None if action == "reset" else NET,
                   subscriber=None if action == "reset" else "s", session="n/1", nas="192.0.2.1", at_ms=at_ms)


def dhcp(action, at_ms=T0, until_ms=None):
    return Binding(kind="dhcp", action=action, operator="op", ip=NET, subscriber="01:02", session=None,
                   nas=None, at_ms=at_ms, until_ms=until_ms)


def nat(action, at_ms=T0):
    return Binding(kind="nat", action=action, operator="op", ip=NET, subscriber=None, session=None, nas="cgn",
                   at_ms=at_ms, inside_ip=ipaddress.ip_address("10.0.0.1"), port_first=1024, port_last=2047)


RULE = L.LatenessRule(promise_ms=DAY, stale_after_ms=6 * H, bindings_bound_ms=2 * H, deadletter_bound_ms=H)


def reference_end(b, stale):
    if b.action in ("stop", "reset"):
        return b.at_ms
    ends = [b.at_ms + stale] + ([b.until_ms] if b.until_ms is not None else [])
    return min(ends)


@pytest.mark.parametrize("b,end", [
    (rad("stop"), T0), (rad("reset"), T0), (dhcp("stop"), T0), (nat("stop"), T0),
    (rad("start"), T0 + 6 * H), (rad("update"), T0 + 6 * H), (nat("start"), T0 + 6 * H),
    (dhcp("start", until_ms=T0 + H), T0 + H),            # lease ends before the lost-Stop window
    (dhcp("update", until_ms=T0 + 10 * H), T0 + 6 * H),  # a long lease: the window ends first
])
def test_end_of_the_mapping(b, end):
    assert L.end_ms(b, 6 * H) == end


@pytest.mark.parametrize("b", [rad("stop"), rad("start"), dhcp("start", until_ms=T0 + H), nat("update")])
def test_boundaries(b):
    end = reference_end(b, 6 * H)
    last_ok = end + DAY - 2 * H           # bindings bound exactly fills what is left: accepted
    assert RULE.verdict(b, last_ok) == L.ACCEPT
    assert RULE.verdict(b, last_ok + 1) == L.TOO_LATE            # 1 ms later: the DLQ (1 h) still fits
    assert RULE.verdict(b, end + DAY - H) == L.TOO_LATE           # DLQ bound exactly fills it
    assert RULE.verdict(b, end + DAY - H + 1) == L.TOO_LATE_DROP  # nothing may keep it
    assert RULE.verdict(b, end + 905 * DAY) == L.TOO_LATE_DROP
    assert RULE.verdict(b, b.at_ms) == L.ACCEPT                   # on time


def test_905_days_late_stop_is_refused_even_with_zero_bounds():
    rule = L.LatenessRule(promise_ms=DAY, stale_after_ms=DAY, bindings_bound_ms=0, deadletter_bound_ms=0)
    assert rule.verdict(rad("stop"), T0 + 905 * DAY) == L.TOO_LATE_DROP
    assert rule.verdict(rad("stop"), T0 + DAY) == L.ACCEPT       # bound 0 at the promise: deleted in time


def test_a_dead_letter_topic_with_a_longer_bound_never_gets_what_bindings_may_not():
    rule = L.LatenessRule(promise_ms=DAY, stale_after_ms=DAY, bindings_bound_ms=H, deadletter_bound_ms=2 * H)
    b = rad("stop")
    assert rule.verdict(b, T0 + DAY - H) == L.ACCEPT
    assert rule.verdict(b, T0 + DAY - H + 1) == L.TOO_LATE_DROP


def test_one_record_is_judged_by_its_worst_binding():
    early = dhcp("start", until_ms=T0 + H)
    late_ok = rad("start")
    now = T0 + H + DAY - 2 * H + 1        # past for the short lease, fine for the open session
    assert RULE.verdict(early, now) == L.TOO_LATE and RULE.verdict(late_ok, now) == L.ACCEPT
    assert RULE.verdict_many([late_ok, early], now) == L.TOO_LATE
    assert RULE.verdict_many([late_ok], now) == L.ACCEPT
    assert RULE.verdict_many([], now) == L.ACCEPT


@pytest.mark.parametrize("field", ["promise_ms", "stale_after_ms", "bindings_bound_ms", "deadletter_bound_ms"])
def test_rule_parameters_are_checked(field):
    kw = dict(promise_ms=1, stale_after_ms=1, bindings_bound_ms=1, deadletter_bound_ms=1)
    with pytest.raises(ValueError):
        L.LatenessRule(**{**kw, field: -1})


@given(st.sampled_from(["start", "update", "stop"]), st.integers(0, 40 * DAY), st.integers(0, 3 * DAY),
       st.integers(0, 2 * DAY), st.integers(0, 2 * DAY), st.integers(0, 3 * DAY))
def test_agrees_with_the_reference(action, lag, promise, bb, db, stale):
    b = rad(action)
    now = b.at_ms + lag
    rule = L.LatenessRule(promise_ms=promise, stale_after_ms=stale, bindings_bound_ms=bb, deadletter_bound_ms=db)
    deadline = reference_end(b, stale) + promise
    v = rule.verdict(b, now)
    if now + bb <= deadline:
        assert v == L.ACCEPT
    elif now + db <= deadline:
        assert v == L.TOO_LATE
    else:
        assert v == L.TOO_LATE_DROP
