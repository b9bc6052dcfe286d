"""agents.metrics without a broker: the compliance fold, counter mapping, label hygiene and the
scrape output over a small in-memory table."""

from __future__ import annotations

import time
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from agents.metrics import Metrics, split_count_name
from agents.topics import Topics
from stream import intervals as iv
from stream.compliance_fold import OperatorState, scan_intervals
from stream.config import load_operators
from tests.conftest import REPO

H = 3_600_000


def ivl(start, end, holder="s", last=None, held=False, until=None):
    return iv.Interval(start_ms=start, end_ms=end, holder=holder, last_ms=last if last is not None else (end or start),
                       held=held, until_ms=until)


def test_scan_takes_the_oldest_effective_end_and_skips_current_and_held():
    now = 100 * H
    items = [
        ("op", (ivl(0, 90 * H), ivl(90 * H, None, last=99 * H))),   # ended 10 h ago; current
        ("op", (ivl(0, 80 * H, held=True),)),                         # held: excluded
        ("op", (ivl(0, None, last=70 * H),)),                         # lost Stop: stale after 24 h → 94 h
        ("other", (ivl(0, 99 * H, until=98 * H),)),                   # lease end before the stop
    ]
    st = scan_intervals(items, now, {"op": 5 * H, "other": H}, {"op": 24 * H, "other": 24 * H})
    op = st["op"]
    assert (op.keys, op.intervals, op.current, op.held) == (3, 4, 1, 1)
    assert op.oldest_end_ms == 90 * H and op.age_ms(now) == 10 * H
    assert op.ratio(now, 20 * H) == 0.5
    assert op.overdue_ms == 5 * H  # ended 10 h ago, TTL 5 h
    assert st["other"].oldest_end_ms == 98 * H and st["other"].overdue_ms == H


def test_nothing_ended_is_ratio_zero():
    assert OperatorState().ratio(5, 10) == 0.0
    st = scan_intervals([("op", (ivl(0, None, last=10),))], 20, {"op": 5}, {"op": 1000})
    assert st["op"].ratio(20, 100) == 0.0 and st["op"].current == 1


def test_count_names_split_into_base_and_label():
    assert split_count_name("rejected:bad-json") == ("rejected", "bad-json")
    assert split_count_name("events_in") == ("events_in", None)


def _pipeline(table_items):
    ops = load_operators(REPO / "config" / "operators")
    operators = {n: SimpleNamespace(name=n, ttl_ms=23 * H, stale_after_ms=24 * H, policy=p) for n, p in ops.items()}
    data = {k: v for k, v in table_items}
    store = SimpleNamespace(_key_partition={k: 0 for k in data})
    table = SimpleNamespace(data=data, active={0}, key_partition=lambda: store._key_partition)
    return SimpleNamespace(operators=operators, on_count=[], names=Topics("t"), table=table, counters={},
                           clock=lambda: 100 * H, app=SimpleNamespace(), vaults=None)


def metrics_of(p, **kw):
    """A ``Metrics`` on the fake pipeline's ports, its counter hook in ``p.on_count``."""
    m = Metrics(p.operators, clock=p.clock, table=p.table, names=p.names, vaults=p.vaults, app=p.app, **kw)
    p.on_count.append(m.on_count)
    return m


def _samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_scrape_reports_counts_compliance_and_no_identifiers():
    key = b"connect2ip|ip|100.64.9.9"
    value = iv.encode((ivl(0, 88 * H, holder="kund-1@isp.example"),))
    p = _pipeline([(key, value), (b"connect2ip|ip|100.64.9.10", b"garbage")])
    m = metrics_of(p)
    for hook in p.on_count:
        hook("rejected:bad-json", 2)
        hook("mapping:opened", 1)
        hook("stats_out", 3)
        hook("something_new", 1)
        hook("expired", 4)
    text = m.render().decode()
    s = _samples(text)
    assert s[("ipanon_rejected_total", (("reason", "bad-json"),))] == 2
    assert s[("ipanon_mapping_updates_total", (("outcome", "opened"),))] == 1
    assert s[("ipanon_stats_records_out_total", ())] == 3
    assert s[("ipanon_worker_events_total", (("name", "something_new"),))] == 1
    assert s[("ipanon_intervals_expired_total", ())] == 4
    assert s[("ipanon_mappings_live", (("operator", "connect2ip"),))] == 1
    assert s[("ipanon_compliance_ratio", (("operator", "connect2ip"), ("purpose", "lawful_access")))] == 0.5
    assert s[("ipanon_promise_seconds", (("operator", "connect2ip"), ("purpose", "lawful_access")))] == 86400
    assert s[("ipanon_compliance_scan_errors", ())] == 1  # the undecodable value
    assert s[("ipanon_mappings_live", (("operator", "junet"),))] == 0
    assert "kund-1" not in text and "100.64.9" not in text
    assert m.recent_expiries and m.recent_expiries[-1][1] == 4
    p.table.restored = True
    assert _samples(m.render().decode())[("ipanon_mapping_table_restored", ())] == 1
    p.table.restored = False  # a rebalance: the table reads its partitions back from the changelog
    assert _samples(m.render().decode())[("ipanon_mapping_table_restored", ())] == 0


def test_other_agents_counter_names_land_in_their_metrics():
    p = _pipeline([])
    m = metrics_of(p)
    for name, n in (("query:answered", 2), ("epochs_shredded", 1), ("stats_epochs_destroyed", 3),
                    ("stats_no_consent", 5), ("holds:refused:unknown-hold", 1), ("too_late_dropped", 4)):
        p.on_count[0](name, n)
    s = _samples(m.render().decode())
    assert s[("ipanon_queries_total", (("outcome", "answered"),))] == 2
    assert s[("ipanon_epochs_shredded_total", (("purpose", "lawful_access"),))] == 1
    assert s[("ipanon_epochs_shredded_total", (("purpose", "statistics"),))] == 3
    assert s[("ipanon_consent_drops_total", ())] == 5
    assert s[("ipanon_too_late_dropped_total", ())] == 4
    assert s[("ipanon_holds_total", (("outcome", "refused_unknown-hold"),))] == 1
    assert not any(k[0].endswith("_created") for k in s)
    assert m.role_of("t-raw-dhcp") == "raw" and m.role_of("t-query-requests") == "query_requests"
    assert m.role_of("elsewhere") == "other"


def test_scan_reuses_summaries_and_opens_at_most_the_budget():
    k1, k2 = b"connect2ip|ip|a", b"connect2ip|ip|b"
    p = _pipeline([(k1, iv.encode((ivl(0, 88 * H),))), (k2, iv.encode((ivl(0, 90 * H),)))])
    m = metrics_of(p)
    m.compliance.open_budget = 1
    _, st = m.scan(now_ms=100 * H)
    assert m.compliance.scan_pending == 1 and st["connect2ip"].intervals == 1
    _, st = m.scan(now_ms=100 * H)
    assert m.compliance.scan_pending == 0 and st["connect2ip"].intervals == 2 and st["connect2ip"].oldest_end_ms == 88 * H
    p.table.data[k1] = iv.encode((ivl(0, 95 * H),))  # a rewritten value is opened again
    _, st = m.scan(now_ms=100 * H)
    assert st["connect2ip"].oldest_end_ms == 90 * H
    del p.table.data[k2]  # a deleted key leaves the figures
    _, st = m.scan(now_ms=100 * H)
    assert st["connect2ip"].intervals == 1 and st["connect2ip"].oldest_end_ms == 95 * H


def test_a_slow_walk_is_reused_for_longer_so_walking_takes_a_bounded_share_of_time():
    from agents.metrics import SCAN_CACHE_S, SCAN_DUTY_FACTOR

    k1 = b"connect2ip|ip|a"
    p = _pipeline([(k1, iv.encode((ivl(0, 88 * H),)))])
    m = metrics_of(p)
    clock = [1000.0]
    m.compliance.mono = lambda: clock[0]
    first = m.scan()
    assert m.scan() is not None and m.compliance._scan[0] == 1000.0
    clock[0] += SCAN_CACHE_S + 0.5  # a fast walk: stale after SCAN_CACHE_S
    m.scan()
    assert m.compliance._scan[0] == clock[0]
    m.compliance.scan_seconds = 3.0  # as at 1M keys: reused for SCAN_DUTY_FACTOR × 3 s
    walked_at = clock[0]
    clock[0] += SCAN_DUTY_FACTOR * 3.0 - 1
    p.table.data[k1] = iv.encode((ivl(0, 95 * H),))
    assert m.scan()[1]["connect2ip"].oldest_end_ms == 88 * H and m.compliance._scan[0] == walked_at
    clock[0] += 2
    assert m.scan()[1]["connect2ip"].oldest_end_ms == 95 * H and m.compliance._scan[0] == clock[0]
    assert first[1]["connect2ip"].intervals == 1


def test_a_sliced_walk_yields_between_slices_and_folds_what_each_key_holds_when_reached():
    keys = [b"connect2ip|ip|%05d" % i for i in range(2000)]
    items = [(k, iv.encode((ivl(0, (50 + i % 40) * H),))) for i, k in enumerate(keys)]
    p = _pipeline(items)
    whole = metrics_of(p)
    whole.open_budget = 10_000
    _, expect = whole.scan(now_ms=100 * H)
    assert expect["connect2ip"].intervals == 2000 and expect["connect2ip"].oldest_end_ms == 50 * H

    m = metrics_of(p)
    m.compliance.open_budget = 10_000
    walk = m.compliance.walk(now_ms=100 * H, slice_s=0.0)  # a slice ends every 64 keys
    next(walk)                                   # first slice done, nothing published yet
    assert m.compliance.walks == 0 and m.compliance.scan_pending == 0
    del p.table.data[keys[0]]                    # agents write between slices (the walk goes from
    p.table.data[keys[1]] = iv.encode((ivl(0, 10 * H),))  # the end): a key expires, another gets an older interval
    yields = 1 + sum(1 for _ in walk)
    assert yields == 2000 // 64 and m.compliance.walks == 1
    st = m.compliance._scan[2]["connect2ip"]
    assert st.intervals == 1999 and st.oldest_end_ms == 10 * H


def test_summaries_of_keys_gone_or_changed_are_dropped_and_the_cache_never_outgrows_the_table():
    keys = [b"connect2ip|ip|%04d" % i for i in range(600)]
    p = _pipeline([(k, iv.encode((ivl(0, 50 * H),))) for k in keys])
    m = metrics_of(p)
    m.compliance.open_budget = 1000
    m.scan(now_ms=100 * H)
    assert len(m.compliance._seen) == len(m.compliance._packed) == 600
    for k in keys[:100]:              # expired between two walks (before the next snapshot)
        del p.table.data[k]
    for k in keys[100:300]:           # rewritten: over the budget of 50, 150 must wait
        p.table.data[k] = iv.encode((ivl(0, 60 * H),))
    m.compliance.open_budget = 50
    _, st = m.scan(now_ms=100 * H)
    assert m.compliance.scan_pending == 150 and st["connect2ip"].keys == 350
    assert len(m.compliance._seen) == len(m.compliance._packed) == 350   # no summary of a deleted key, none of a value no longer held
    assert all(p.table.data[k] is m.compliance._seen[k] for k in m.compliance._seen)


def test_packed_summaries_round_trip_and_are_not_gc_containers():
    import gc

    from stream.compliance_fold import pack_summary, summarize, unpack_summary

    one = summarize((ivl(0, 88 * H),), 24 * H)
    several = summarize((ivl(0, 80 * H, held=True), ivl(80 * H, None, last=99 * H)), 24 * H)
    assert one == 88 * H and several == ((80 * H, True), (123 * H, False))
    for op_index, summary in ((0, one), (4, one), (255, several)):
        packed = pack_summary(op_index, summary)
        assert unpack_summary(packed) == (op_index, summary)
        assert not gc.is_tracked(packed)


def test_a_rebalance_during_a_walk_abandons_it():
    k1 = b"connect2ip|ip|a"
    p = _pipeline([(b"connect2ip|ip|%04d" % i, iv.encode((ivl(0, 88 * H),))) for i in range(600)])
    p.table.epoch = 1
    m = metrics_of(p)
    walk = m.compliance.walk(now_ms=100 * H, slice_s=0.0)
    next(walk)
    p.table.epoch = 2
    assert list(walk) == [] and m.compliance.walks == 0 and m.compliance._scan[1] is None
    assert k1 not in p.table.data


def test_with_the_background_walker_a_scrape_reads_its_result_and_never_walks():
    import asyncio

    from agents import metrics as M

    k1 = b"connect2ip|ip|a"
    p = _pipeline([(k1, iv.encode((ivl(0, 88 * H),)))])
    m = metrics_of(p)
    m.compliance.background = True
    now, states = m.scan()
    assert now == 100 * H and states == {} and m.compliance.walks == 0   # nothing walked yet: empty, not stale
    asyncio.run(m.compliance.walk_in_background())
    assert m.compliance.walks == 1 and m.scan()[1]["connect2ip"].oldest_end_ms == 88 * H
    p.table.data[k1] = iv.encode((ivl(0, 95 * H),))
    assert m.scan()[1]["connect2ip"].oldest_end_ms == 88 * H and m.compliance.walks == 1  # the scrape did not walk
    asyncio.run(m.compliance.walk_in_background())   # renewed only after SCAN_CACHE_S
    assert m.compliance.walks == 1
    m.compliance.mono = lambda: time.monotonic() + M.SCAN_CACHE_S + 1
    asyncio.run(m.compliance.walk_in_background())
    assert m.compliance.walks == 2 and m.scan()[1]["connect2ip"].oldest_end_ms == 95 * H
    s = _samples(m.render().decode())
    assert s[("ipanon_oldest_mapping_age_seconds", (("operator", "connect2ip"),))] == 5 * 3600


def test_a_held_key_is_folded_from_its_value_with_its_hold_and_an_unreadable_one_counts_as_an_error():
    """``fold_held``, the held-key step of both compliance walks (memory and disk)."""
    from agents.compliance_walk import fold_held
    from stream.compliance_fold import Fold

    key = b"op|i" + bytes(16)
    raw = iv.encode((ivl(0, 80 * H), ivl(90 * H, None)))
    fold = Fold(100 * H, {"op": 24 * H})
    seen = []
    assert fold_held(fold, key, raw, None, {"op": 24 * H}, lambda net: (seen.append(net) or (lambda i: i.end_ms is not None)))
    assert seen == [None]
    st = fold.result()["op"]
    assert (st.keys, st.intervals, st.current, st.held) == (1, 2, 1, 1)
    assert not fold_held(fold, key, b"\xff garbage", None, {"op": 24 * H}, lambda net: None)
    assert fold.result()["op"].keys == 1
