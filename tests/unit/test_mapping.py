"""The table's decisions in ``stream.mapping``, rule by rule and without a broker: what a binding
does to a key (each outcome, the tombstone, the expiry instant), what the sweeper drops or keeps
under a legal hold, and how a lookup resolves through the CGNAT chain.  Where a rule can be
stated independently (expiry from the effective end, "who held it at instant t") the decisions
are compared with a small reference model over random histories."""

from __future__ import annotations

import ipaddress
import random

import pytest

from stream import mapping
from stream.detnat import parse_versions
from stream.errors import Rejected
from stream.hold import HoldSet, make_hold
from stream.intervals import Interval
from stream.mapping import HOLD_RECHECK_MS, Rules
from stream.model import Binding
from stream.realm import RealmMap

H = 3_600_000
NET = ipaddress.ip_network("100.64.12.34/32")
RULES = Rules(ttl_ms=10 * H, stale_after_ms=24 * H)


def rb(action, at, sub="alice", session="nas1/s1", st=None, nas="nas1", ip=NET):
    return Binding(kind="radius", action=action, operator="op", ip=ip, subscriber=sub,
                   session=session, nas=nas, at_ms=at, session_time_s=st)


def run(*bs, now=0, rules=RULES):
    """Apply bindings in order at ``now``, as the worker does: each one's decision is what the
    key holds next.  Returns (last change, outcomes)."""
    ivs, outs, change = (), [], None
    for b in bs:
        change = mapping.apply(ivs, b, now, rules)
        outs.append(change.outcome)
        ivs = change.intervals
    return change, outs


# -- reference model of expiry: an interval stops being current at its Stop, its lease end or
# -- its last event + the lost-Stop window, whichever is first; it expires ttl later


def ref_end(i: Interval, stale: int) -> int:
    ends = [i.last_ms + stale] + [e for e in (i.end_ms, i.until_ms) if e is not None]
    return min(ends)


def ref_expiry(i: Interval, rules: Rules) -> int:
    return ref_end(i, rules.stale_after_ms) + rules.ttl_ms


# -- apply: each outcome -------------------------------------------------------------------------


def test_opened_writes_one_open_interval_expiring_a_window_and_a_ttl_after_its_last_event():
    c = mapping.apply((), rb("start", 1000), 1000, RULES)
    assert c.outcome == "opened" and c.write and not c.tombstone and c.expired == 0
    assert [(i.start_ms, i.end_ms, i.holder) for i in c.intervals] == [(1000, None, "alice")]
    assert c.expiry_ms == 1000 + 24 * H + 10 * H


def test_extended_moves_the_expiry_with_the_last_event():
    c, outs = run(rb("start", 1000), rb("update", 5000, st=4), now=5000)
    assert outs == ["opened", "extended"] and c.write
    assert c.intervals[0].last_ms == 5000 and c.expiry_ms == 5000 + 24 * H + 10 * H


def test_closed_expires_a_ttl_after_the_stop():
    c, outs = run(rb("start", 1000), rb("stop", 9000, st=8), now=9000)
    assert outs == ["opened", "closed"] and c.write
    assert [(i.start_ms, i.end_ms) for i in c.intervals] == [(1000, 9000)]
    assert c.expiry_ms == 9000 + 10 * H


def test_duplicate_changes_nothing_so_writes_nothing():
    first = mapping.apply((), rb("start", 1000), 1000, RULES)
    c = mapping.apply(first.intervals, rb("start", 1000), 2000, RULES)
    assert c.outcome == "duplicate" and not c.write and c.intervals == first.intervals and c.expiry_ms is None
    stopped = mapping.apply(first.intervals, rb("stop", 9000, st=8), 9000, RULES).intervals
    again = mapping.apply(stopped, rb("stop", 9000, st=8), 9500, RULES)
    assert again.outcome == "duplicate" and not again.write


def test_start_after_its_own_interim_reopens_earlier():
    c, outs = run(rb("update", 10_000), rb("start", 4000), now=10_000)
    assert outs == ["opened", "reopened-earlier"] and c.write
    assert [(i.start_ms, i.last_ms) for i in c.intervals] == [(4000, 10_000)]


def test_orphan_stop_without_session_time_records_nothing():
    c = mapping.apply((), rb("stop", 9000), 9000, RULES)
    assert c.outcome == "orphan-stop" and not c.write and c.intervals == () and not c.tombstone


def test_a_binding_already_past_its_expiry_is_expired_on_arrival_and_not_stored():
    now = 100 * H
    # [now - 30 h, now - 20 h) expired at now - 10 h
    late = rb("stop", now - 20 * H, st=10 * 3600)
    c = mapping.apply((), late, now, RULES)
    assert c.outcome == "expired-on-arrival" and c.expired == 1 and not c.write and c.intervals == ()
    # one ms younger is still within its retention: stored
    young = rb("stop", now - 10 * H + 1, st=10 * 3600)
    assert mapping.apply((), young, now, RULES).outcome == "opened"


def test_expired_on_arrival_leaves_the_keys_live_intervals_alone():
    live = mapping.apply((), rb("start", 90 * H, sub="bob", session="nas1/s9"), 90 * H, RULES).intervals
    now = 100 * H
    c = mapping.apply(live, rb("stop", now - 20 * H, st=3600), now, RULES)
    assert c.outcome == "expired-on-arrival" and not c.write and c.intervals == live


def test_a_binding_on_a_key_whose_only_interval_expired_tombstones_it():
    old = (Interval(0, 1000, "alice", "nas1/s1", "nas1", 1000),)   # expired at 1000 + ttl
    now = 1000 + 10 * H
    c = mapping.apply(old, rb("stop", 500, session="nas1/s0"), now, RULES)  # orphan stop: adds nothing
    assert c.outcome == "orphan-stop" and c.expired == 1 and c.write and c.tombstone and c.expiry_ms is None
    c = mapping.apply(old, rb("start", now, sub="bob", session="nas1/s2"), now, RULES)
    assert c.outcome == "opened" and c.expired == 1 and c.write and not c.tombstone
    assert [i.holder for i in c.intervals] == ["bob"]


def test_reset_closes_the_nas_open_intervals_and_nothing_else():
    a = mapping.apply((), rb("start", 1000), 1000, RULES).intervals
    c = mapping.reset(a, "nas1", 5000, RULES)
    assert c.outcome == "reset" and c.write and [(i.start_ms, i.end_ms) for i in c.intervals] == [(1000, 5000)]
    assert c.expiry_ms == 5000 + 10 * H
    other = mapping.reset(a, "nas2", 5000, RULES)
    assert not other.write and other.intervals is a
    assert not mapping.reset(c.intervals, "nas1", 6000, RULES).write  # already closed


def test_realms_keep_holders_of_two_realms_apart():
    north_south = Rules(ttl_ms=10 * H, realms=RealmMap(nas={"bng-n": "north", "bng-s": "south"}))
    a = rb("start", 1000, sub="alice", session="bng-n/1", nas="bng-n")
    b = rb("start", 5000, sub="bob", session="bng-s/1", nas="bng-s")
    apart, _ = run(a, b, now=5000, rules=north_south)
    assert [(i.holder, i.end_ms) for i in apart.intervals] == [("alice", None), ("bob", None)]
    one, _ = run(a, b, now=5000)  # no realms: the later start ends the earlier holder
    assert [(i.holder, i.end_ms) for i in one.intervals] == [("alice", 5000), ("bob", None)]


def test_rules_of_a_profile():
    class Policy:
        realms = RealmMap(nas={"bng-n": "north"})
        deterministic_nat = ()

    r = mapping.rules_of(Policy(), ttl_ms=5, stale_after_ms=7)
    assert (r.ttl_ms, r.stale_after_ms, r.realms.configured, r.detnat) == (5, 7, True, ())
    assert r.realm_of is not None and r.realm_of("bng-n/x") == "north"
    plain = mapping.rules_of(None, ttl_ms=5)
    assert plain.realm_of is None and not plain.realms.configured


def _random_binding(rnd: random.Random, t: int) -> Binding:
    sub, sess = rnd.choice([("alice", "nas1/a"), ("bob", "nas1/b"), ("carol", "nas2/c")])
    action = rnd.choice(["start", "update", "stop"])
    st = rnd.choice([None, rnd.randrange(0, 40)])
    return rb(action, t, sub=sub, session=sess, nas=sess.split("/")[0], st=st)


def test_apply_agrees_with_the_expiry_model_on_random_histories():
    rnd = random.Random(16)
    rules = Rules(ttl_ms=30_000, stale_after_ms=20_000)
    for _ in range(300):
        ivs: tuple = ()
        for _ in range(rnd.randrange(1, 12)):
            t = rnd.randrange(0, 200) * 1000
            now = t + rnd.randrange(0, 80) * 1000
            b = _random_binding(rnd, t)
            c = mapping.apply(ivs, b, now, rules)
            # every interval the model says is past its expiry is gone, every other one is kept
            assert all(ref_expiry(i, rules) > now for i in c.intervals)
            assert c.write == (c.intervals != ivs)
            assert c.tombstone == (c.write and not c.intervals)
            if c.write:
                assert c.expiry_ms == (min(ref_expiry(i, rules) for i in c.intervals) if c.intervals else None)
            if c.outcome == "expired-on-arrival":
                assert c.expired >= 1
            ivs = c.intervals


# -- sweep ----------------------------------------------------------------------------------


def ivl(start, end, sub="alice", last=None, ports=(None, None), held=False):
    return Interval(start, end, sub, None, None, start if last is None else last, None, ports[0], ports[1], held)


def test_sweep_without_holds_drops_the_expired_and_keeps_the_rest():
    rules = Rules(ttl_ms=100, stale_after_ms=1000)
    old, live = ivl(0, 50), ivl(60, 500, "bob")
    d = mapping.sweep((old, live), 150, rules)         # old expired at 150, live at 600
    assert d.intervals == (live,) and d.expired == 1 and d.write and not d.tombstone and not d.held
    assert d.expiry_ms == 600 and d.recheck_ms is None
    d = mapping.sweep((live,), 599, rules)              # nothing due yet: nothing to write
    assert d.intervals == (live,) and not d.write and d.expired == 0
    d = mapping.sweep((old, live), 600, rules)          # all gone: a tombstone
    assert d.write and d.tombstone and d.expired == 2 and d.expiry_ms is None


def test_sweep_agrees_with_the_expiry_model():
    rnd = random.Random(7)
    rules = Rules(ttl_ms=50, stale_after_ms=80)
    for _ in range(500):
        ivs = tuple(sorted((ivl(s := rnd.randrange(0, 300), rnd.choice([None, s + rnd.randrange(0, 100)]),
                                last=s + rnd.randrange(0, 100), held=rnd.random() < 0.1)
                            for _ in range(rnd.randrange(0, 5))), key=lambda i: i.start_ms))
        now = rnd.randrange(0, 600)
        d = mapping.sweep(ivs, now, rules)
        want = tuple(i for i in ivs if i.held or ref_expiry(i, rules) > now)
        assert d.intervals == want and d.expired == len(ivs) - len(want)
        unheld = [ref_expiry(i, rules) for i in want if not i.held]
        assert d.expiry_ms == (min(unheld) if unheld else None)
        assert d.write == (d.expired > 0) and not d.held  # nothing unheld survives past its expiry


def _holds(**kw):
    base = dict(operator="op", ip="100.64.12.34", from_ms=0, to_ms=1000, case_ref="case 1",
                until_ms=10_000, now_ms=0)
    return HoldSet.of([make_hold(**{**base, **kw})])


def test_a_hold_keeps_an_expired_interval_and_brings_the_key_back_soon():
    rules = Rules(ttl_ms=100, stale_after_ms=1000)
    ivs = (ivl(0, 50),)  # expired at 150
    now = 200
    held = mapping.hold_predicate(_holds(), "op", NET, now)
    d = mapping.sweep(ivs, now, rules, is_held=held)
    assert d.intervals == ivs and d.expired == 0 and d.held
    assert d.write and not d.tombstone  # re-sealed so its epoch key outlives the hold
    assert d.recheck_ms == now + HOLD_RECHECK_MS
    # once the hold ends (now >= until) the same key goes
    later = 10_000
    d = mapping.sweep(ivs, later, rules, is_held=mapping.hold_predicate(_holds(), "op", NET, later))
    assert d.tombstone and d.expired == 1 and not d.held


@pytest.mark.parametrize("other", [dict(operator="other"), dict(ip="100.64.12.35"), dict(from_ms=60, to_ms=1000)])
def test_a_hold_on_something_else_does_not_keep_the_interval(other):
    rules = Rules(ttl_ms=100, stale_after_ms=1000)
    d = mapping.sweep((ivl(0, 50),), 200, rules, is_held=mapping.hold_predicate(_holds(**other), "op", NET, 200))
    assert d.tombstone and not d.held


def test_a_port_hold_keeps_only_the_nat_block_holding_that_port():
    rules = Rules(ttl_ms=100, stale_after_ms=1000)
    a = ivl(0, 50, "100.64.0.1", ports=(1024, 2047))
    b = ivl(0, 50, "100.64.0.2", ports=(2048, 3071))
    held = mapping.hold_predicate(_holds(port=1500), "op", NET, 200)
    d = mapping.sweep((a, b), 200, rules, is_held=held)
    assert d.intervals == (a,) and d.expired == 1 and d.held and d.write


def test_no_holds_means_no_predicate():
    assert mapping.hold_predicate(None, "op", NET, 0) is None
    assert mapping.hold_predicate(HoldSet(), "op", NET, 0) is None


# -- resolve ----------------------------------------------------------------------------------

PUBLIC = "198.51.100.7"


class Table:
    """A reader over (slot, address) → intervals; ``remote`` inside addresses live elsewhere."""

    def __init__(self, rows: dict, remote: frozenset = frozenset()):
        self.rows = rows
        self.remote = remote

    def intervals_for(self, slot, addr):
        return list(self.rows.get((slot, str(addr)), ()))

    def owns(self, net):
        return str(net.network_address) not in self.remote


def resolve(table, address, port, lo, hi, rules=RULES, now=0):
    return mapping.resolve(address, port, lo, hi, now_ms=now, rules=rules,
                           intervals_for=table.intervals_for, owns=table.owns)


def nat(start, end, inside, first, last, source="cgn1", last_ms=None):
    return Interval(start, end, inside, None, source, start if last_ms is None else last_ms, None, first, last)


def sess(start, end, sub, nas="nas1", last=None):
    return Interval(start, end, sub, f"{nas}/{sub}", nas, start if last is None else last)


def points(rows, keys=("subscriber",)):
    """The answer rows as the set of (instant, *keys) they claim."""
    return {(t, *(r[k] for k in keys)) for r in rows for t in range(r["from_ms"], r["to_ms"])}


def held_at(ivs, t, stale, port=None):
    """Reference: who holds the slot at instant t (start ≤ t < effective end, port in block)."""
    return {i.holder for i in ivs if i.start_ms <= t < ref_end(i, stale)
            and (port is None or i.port_first is None or i.port_first <= port <= i.port_last)}


def test_direct_answer_is_who_held_the_address_instant_by_instant():
    rules = Rules(ttl_ms=10 * H, stale_after_ms=50)
    ivs = [sess(0, 30, "alice"), sess(30, None, "bob", last=40)]  # bob lapses at 90
    t = Table({("ip", "100.64.12.34"): ivs})
    out = resolve(t, "100.64.12.34", None, 10, 80, rules)
    assert out["status"] == "ok" and "end_unknown" not in out and "hops" not in out
    assert set(out["holders"][0]) == {"subscriber", "from_ms", "to_ms"}
    assert points(out["holders"]) == {(x, s) for x in range(10, 80) for s in held_at(ivs, x, 50)}
    assert resolve(t, "100.64.12.99", None, 10, 80, rules) == {"status": "no-data", "holders": []}


def test_past_the_lost_stop_window_the_answer_is_end_unknown_not_no_data():
    rules = Rules(ttl_ms=10 * H, stale_after_ms=50)
    t = Table({("ip", "100.64.12.34"): [sess(0, None, "alice", last=40)]})  # current until 90
    out = resolve(t, "100.64.12.34", None, 100, 200, rules)
    assert out == {"status": "end-unknown", "holders": [],
                   "end_unknown": [{"subscriber": "alice", "from_ms": 0, "last_seen_ms": 40, "window_ms": 50}]}
    both = resolve(t, "100.64.12.34", None, 80, 200, rules)  # a confirmed stretch, then unknown
    assert both["status"] == "ok" and both["holders"] == [{"subscriber": "alice", "from_ms": 80, "to_ms": 90}]
    assert both["end_unknown"][0]["last_seen_ms"] == 40


def test_one_cgnat_hop_names_the_inside_address_and_the_block():
    t = Table({("nat", PUBLIC): [nat(0, 100, "100.64.0.1", 1024, 2047), nat(0, 100, "100.64.0.2", 2048, 3071)],
               ("ip", "100.64.0.1"): [sess(0, 60, "alice"), sess(60, None, "bob", last=90)],
               ("ip", "100.64.0.2"): [sess(0, None, "carol", last=90)]})
    out = resolve(t, PUBLIC, 1500, 50, 80)
    assert out == {"status": "ok", "holders": [
        {"subscriber": "alice", "from_ms": 50, "to_ms": 60, "inside_ip": "100.64.0.1", "ports": [1024, 2047]},
        {"subscriber": "bob", "from_ms": 60, "to_ms": 80, "inside_ip": "100.64.0.1", "ports": [1024, 2047]}]}


def test_cgnat_chains_agree_with_the_instant_by_instant_model():
    rnd = random.Random(1616)
    stale = 60
    rules = Rules(ttl_ms=10 * H, stale_after_ms=stale)
    insides = ["100.64.0.1", "100.64.0.2", "100.64.0.3"]
    blocks = [(1024, 2047), (2048, 3071)]
    for _ in range(200):
        nat_ivs, rows = [], {}
        for first, last in blocks:  # one holder per block at a time: consecutive tenures
            t = rnd.randrange(0, 30)
            while t < 150:
                end = t + rnd.randrange(5, 60)
                open_ = rnd.random() < 0.2
                nat_ivs.append(nat(t, None if open_ else end, rnd.choice(insides), first, last,
                                   last_ms=t if not open_ else t + rnd.randrange(0, 40)))
                if open_:
                    break
                t = end + rnd.randrange(0, 10)
        for ip in insides:
            t, subs = rnd.randrange(0, 30), []
            while t < 150:
                end = t + rnd.randrange(5, 80)
                open_ = rnd.random() < 0.2
                subs.append(sess(t, None if open_ else end, rnd.choice("abcd"), last=t + rnd.randrange(0, 40)))
                if open_:
                    break
                t = end
            rows[("ip", ip)] = subs
        rows[("nat", PUBLIC)] = nat_ivs
        table = Table(rows)
        port = rnd.choice([1500, 2500, 4000])
        lo = rnd.randrange(0, 150)
        hi = lo + rnd.randrange(1, 80)
        out = resolve(table, PUBLIC, port, lo, hi, rules)
        want = {(x, s, inside) for x in range(lo, hi) for inside in held_at(nat_ivs, x, stale, port)
                for s in held_at(rows[("ip", inside)], x, stale)}
        assert points(out["holders"], ("subscriber", "inside_ip")) == want
        assert out["status"] in ("ok", "no-data", "end-unknown")
        if want:
            assert out["status"] == "ok"


def test_a_public_address_without_a_port_is_ambiguous():
    t = Table({("nat", PUBLIC): [nat(0, 100, "100.64.0.1", 1024, 2047), nat(0, 100, "100.64.0.2", 2048, 3071)]})
    out = resolve(t, PUBLIC, None, 0, 50)
    assert out["status"] == "ambiguous" and out["candidates"] == 2


def test_a_hop_on_another_worker_comes_back_for_the_asker():
    t = Table({("nat", PUBLIC): [nat(0, 100, "100.64.0.1", 1024, 2047)],
               ("ip", "100.64.0.1"): [sess(0, None, "alice", last=90)]}, remote=frozenset({"100.64.0.1"}))
    out = resolve(t, PUBLIC, 1500, 10, 20)
    assert out == {"status": "ok", "holders": [],
                   "hops": [{"inside_ip": "100.64.0.1", "from_ms": 10, "to_ms": 20, "ports": [1024, 2047]}]}
    realms = Rules(ttl_ms=10 * H, realms=RealmMap(collectors={"cgn1": frozenset({"north"})}))
    assert resolve(t, PUBLIC, 1500, 10, 20, realms)["reason"] == "realm-hop-remote"


REALMS = RealmMap(collectors={"cgn-n": frozenset({"north"}), "cgn-any": frozenset()},
                  nas={"bng-n": "north", "bng-s": "south"})


def _two_realm_table(source):
    return Table({("nat", PUBLIC): [nat(0, 100, "100.64.0.9", 1024, 2047, source=source)],
                  ("ip", "100.64.0.9"): [sess(0, None, "alice", nas="bng-n", last=90),
                                         sess(0, None, "bob", nas="bng-s", last=90)]})


def test_realms_pick_the_inside_holder_of_the_nat_sources_realm():
    rules = Rules(ttl_ms=10 * H, realms=REALMS)
    out = resolve(_two_realm_table("cgn-n"), PUBLIC, 1500, 10, 20, rules)
    assert out["status"] == "ok" and [r["subscriber"] for r in out["holders"]] == ["alice"]


def test_realms_ambiguous_when_the_nat_source_could_be_either():
    rules = Rules(ttl_ms=10 * H, realms=REALMS)
    out = resolve(_two_realm_table("cgn-unknown"), PUBLIC, 1500, 10, 20, rules)
    assert out["status"] == "ambiguous" and out["candidates"] == 2
    assert "north" in out["detail"] and "south" in out["detail"]


T1 = 1767225600000  # 2026-01-01T00:00:00Z
DETNAT = parse_versions([{"version": 1, "valid_from": "2026-01-01T00:00:00Z", "inside": "100.64.0.0/30",
                          "outside": "198.51.100.0/31", "ratio": 2, "ports_per_host": 1000}], file="op.toml")


def test_deterministic_nat_resolves_from_the_rfc_7422_formula_without_a_log_line():
    rules = Rules(ttl_ms=10 * H, detnat=DETNAT)
    # k = in − inside_base; out = outside_base + k // ratio; lo = 1024 + 1000·(k mod ratio)
    for k, inside in enumerate(["100.64.0.0", "100.64.0.1", "100.64.0.2", "100.64.0.3"]):
        public = str(ipaddress.ip_address("198.51.100.0") + k // 2)
        lo_port = 1024 + 1000 * (k % 2)
        t = Table({("ip", inside): [sess(T1, None, f"sub{k}", last=T1 + 90)]})
        for port in (lo_port, lo_port + 999):
            out = resolve(t, public, port, T1 + 10, T1 + 20, rules, now=T1 + 100)
            assert out == {"status": "ok", "holders": [{"subscriber": f"sub{k}", "from_ms": T1 + 10, "to_ms": T1 + 20,
                                                        "inside_ip": inside, "ports": [lo_port, lo_port + 999]}]}
        # the next block is another inside's (or past the pool's ports): not this subscriber
        assert resolve(t, public, lo_port + 1000, T1 + 10, T1 + 20, rules, now=T1 + 100)["holders"] == []
    out = resolve(Table({}), "198.51.100.0", None, T1 + 10, T1 + 20, rules, now=T1 + 100)
    assert out["status"] == "ambiguous" and out["candidates"] == 2  # the ratio: nothing logged


def test_a_lookup_takes_one_address():
    with pytest.raises(Rejected) as e:
        resolve(Table({}), "100.64.0.0/24", None, 0, 10)
    assert e.value.reason == "bad-address"
