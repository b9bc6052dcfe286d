"""The model-based checker: unit tests of the generator and the reference model (no broker; the
short run is test_short_run.py, the long run benchmarks/checker.py)."""

from __future__ import annotations

import json
from collections import Counter


from stream.config import load_operators
from stream.intervals import DEFAULT_STALE_AFTER_MS
from tests.checker import history as H
from tests.checker import model as M
from tests.conftest import REPO

OPS = ["connect2ip", "framsteget"]
T0 = 1_796_500_000_000
TTL = 23 * H.HOUR


def rules(bound=None, promise=None):
    pols = load_operators(REPO / "config" / "operators")
    return {op: M.OperatorRules(op, pols[op], TTL, M.stale_after_ms(pols[op]), promise_ms=promise,
                                bindings_bound_ms=bound) for op in OPS}


def test_history_is_reproducible_and_keeps_each_address_on_one_source():
    a, b = H.generate(5, T0, OPS), H.generate(5, T0, OPS)
    assert [(r.source, r.value) for r in a.records] == [(r.source, r.value) for r in b.records]
    assert [r.value for r in H.generate(6, T0, OPS).records] != [r.value for r in a.records]
    kinds = Counter(r.kind for r in a.records)
    assert kinds["bad"] == 2 * H.Shape().bad and kinds["too-late"] == 2 * 2 * H.Shape().too_late
    assert {r.fmt for r in a.records} == {"radius-json", "kea-hook", "juniper"}
    notes = " ".join(r.note for r in a.records)
    for what in ("dup", "moved", "late", "accounting-on", "lost stop", "after re-use", "release", "alloc"):
        assert what in notes, what
    # the model relies on this: no table key is written by two sources (whose relative order
    # on different partitions the worker does not keep)
    m = M.apply_history(a.records, rules())
    src = {r.seq: r.source for r in a.records}
    for k, seqs in m.log.items():
        assert len({src[s] for s in seqs if not b"Accounting-On" in a.records[s].value}) == 1, k


def test_every_good_record_parses_and_bad_ones_do_not():
    h = H.generate(9, T0, OPS)
    m = M.apply_history(h.records, rules())
    assert set(m.bindings) == {r.seq for r in h.records if r.kind != "bad"}
    assert set(m.rejected) == {r.seq for r in h.records if r.kind == "bad"}
    assert all(reason is not None for reason in m.rejected.values()), m.rejected


def _q(op, ip, t, to=None, port=None):
    return {"operator": op, "ip": ip, "port": port, "from_ms": t, "to_ms": to or t + 1}


def _radius(seq, status, at_s, sub="a@x", sid="S1", ip="100.64.0.1", **kw):
    attrs = {"User-Name": sub, "Acct-Session-Id": sid, "NAS-IP-Address": "192.0.2.1", "Framed-IP-Address": ip,
             "Acct-Status-Type": status, "Event-Timestamp": at_s, **kw}
    return H.Raw(seq, "radius", "radius-json", "nas", "connect2ip", json.dumps(attrs).encode())


def test_model_answers_from_the_rules_for_out_of_order_duplicates_and_reuse():
    s = T0 // 1000
    recs = [
        _radius(0, "Interim-Update", s + 600, **{"Acct-Session-Time": 600}),  # before its Start
        _radius(1, "Start", s),
        _radius(2, "Stop", s + 1200, **{"Acct-Session-Time": 1200}),
        _radius(3, "Interim-Update", s + 900, **{"Acct-Session-Time": 900}),  # late, after the Stop
        _radius(4, "Stop", s + 1200, **{"Acct-Session-Time": 1200}),          # duplicate
        _radius(5, "Start", s + 1500, sub="b@x", sid="S2"),
        _radius(6, "Start", s + 2000, sub="c@x", sid="S3"),                   # re-use: closes b
    ]
    r = rules()
    m = M.Model(M.apply_history(recs, r), r, 2000)
    ms = T0
    now = T0 + H.HOUR

    def ans(q):
        return m.expect(q, now, now).answers

    assert ans(_q("connect2ip", "100.64.0.1", ms + 100_000)) == [("ok", None, (("a@x", ms + 100_000, ms + 100_001, None, None),), ())]
    assert ans(_q("connect2ip", "100.64.0.1", ms + 1_300_000)) == [("no-data", None, (), ())]
    assert ans(_q("connect2ip", "100.64.0.1", ms, ms + 3_000_000)) == [("ok", None, (
        ("a@x", ms, ms + 1_200_000, None, None), ("b@x", ms + 1_500_000, ms + 2_000_000, None, None),
        ("c@x", ms + 2_000_000, ms + 3_000_000, None, None)), ())]


def test_model_expiry_window_allows_either_answer_only_inside_the_sweepers_bound():
    s = T0 // 1000
    r = rules()
    m = M.Model(M.apply_history([_radius(0, "Start", s), _radius(1, "Stop", s + 60, **{"Acct-Session-Time": 60})], r), r, 2000)
    q = _q("connect2ip", "100.64.0.1", T0 + 1000)
    exp_at = T0 + 60_000 + TTL
    held = ("ok", None, (("a@x", T0 + 1000, T0 + 1001, None, None),), ())
    assert m.expect(q, exp_at - 10, exp_at - 1).answers == [held]
    assert set(m.expect(q, exp_at + 500, exp_at + 900).answers) == {("no-data", None, (), ()), held}
    assert m.expect(q, exp_at + 2000, exp_at + 3000).answers == [("no-data", None, (), ())]


def test_model_too_late_rule_counts_open_sessions_from_the_lost_stop_window():
    s = T0 // 1000
    r = rules(bound=16 * H.HOUR, promise=24 * H.HOUR)
    recs = [_radius(0, "Start", s), _radius(1, "Stop", s + 60, **{"Acct-Session-Time": 60})]
    # at T0 + 8 h 59 s the Stop has 15 h 1 s of its promise left: less than the bound
    a = M.apply_history(recs, r, {0: T0 + 9 * H.HOUR, 1: T0 + 9 * H.HOUR})
    assert a.too_late == {1} and 0 in a.bindings
    a = M.apply_history(recs, r, {0: T0 + 8 * H.HOUR, 1: T0 + 8 * H.HOUR})
    assert not a.too_late
    # the Start speaks for up to the lost-Stop window: too late only a window later
    a = M.apply_history(recs[:1], r, {0: T0 + DEFAULT_STALE_AFTER_MS + 8 * H.HOUR + 1})
    assert a.too_late == {0}


def test_model_past_the_lost_stop_window_is_end_unknown_not_no_data():
    s = T0 // 1000
    r = rules()
    recs = [_radius(0, "Start", s), _radius(1, "Interim-Update", s + 600, **{"Acct-Session-Time": 600})]
    m = M.Model(M.apply_history(recs, r), r, 2000)
    last = T0 + 600_000
    window = r["connect2ip"].stale_after_ms
    now = T0 + window + H.HOUR
    inside = _q("connect2ip", "100.64.0.1", last + window - 1)
    past = _q("connect2ip", "100.64.0.1", last + window + 1)
    across = _q("connect2ip", "100.64.0.1", last + window - 10, last + window + 10)
    assert m.expect(inside, now, now).answers == [("ok", None, (("a@x", last + window - 1, last + window, None, None),), ())]
    assert m.expect(past, now, now).answers == [(M.END_UNKNOWN, None, (), (("a@x", T0, last, None, None),))]
    assert m.expect(across, now, now).answers == [
        ("ok", None, (("a@x", last + window - 10, last + window, None, None),), (("a@x", T0, last, None, None),))]
    # a Stop ends it: the end is known
    stop = _radius(2, "Stop", s + 900, **{"Acct-Session-Time": 900})
    m = M.Model(M.apply_history(recs + [stop], r), r, 2000)
    assert m.expect(past, now, now).answers == [("no-data", None, (), ())]
