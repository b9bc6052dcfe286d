"""stream.aggregate: counts per cell, k-anonymity suppression, and when a bucket is emitted."""

from __future__ import annotations

import dataclasses

from stream.aggregate import Aggregator, aggregate_id
from stream.stats import Built

HOUR = 3_600_000
B0 = 1_717_999_200_000
GRACE = 300_000


class _B:  # the fields the aggregator reads
    def __init__(self, action="start", at=B0 + 1000, op="junet", kind="radius", oin=None, oout=None):
        self.operator, self.kind, self.action, self.at_ms = op, kind, action, at
        self.octets_in, self.octets_out = oin, oout


def built(holder, action="start", at=B0 + 1000, cell="10.0.0.0/24", op="junet", **kw):
    b = _B(action, at, op, **kw)
    rec = {"bucket_ms": at - at % HOUR, "bucket_len_ms": HOUR}
    return Built(b, 7, rec, holder, cell)


def agg(k=3, idle=1000):
    return Aggregator({"junet": k}, grace_ms=GRACE, idle_ms=idle)


def test_counts_and_suppression():
    a = agg(k=3)
    now = B0 + HOUR + GRACE + 10_000
    for h in ("s1", "s2", "s3"):
        a.add(built(h), now)
    a.add(built("s1", action="update"), now)
    a.add(built("s1", action="stop", oin=100, oout=200), now)
    a.add(built("s2", action="stop", oin=1, oout=2), now)
    for h in ("s1", "s2"):  # another cell with 2 < k holders
        a.add(built(h, cell="10.0.1.0/24"), now)
    out = a.due(now + 1000)
    assert len(out) == 1 and a.suppressed == 1
    r = out[0]
    assert (r["sessions"], r["subscribers"], r["records"], r["octets_in"], r["octets_out"]) == (3, 3, 6, 101, 202)
    assert (r["operator"], r["kind"], r["bucket_ms"], r["epoch"], r["prefix"], r["k"]) == (
        "junet", "radius", B0, 7, "10.0.0.0/24", 3)
    assert r["id"] == aggregate_id("junet", "radius", B0, 7, "10.0.0.0/24")


def test_every_emitted_cell_has_at_least_k_distinct_holders():
    a = agg(k=10)
    now = B0 + 2 * HOUR + GRACE
    for i in range(200):
        a.add(built(f"s{i % 23}", cell=f"c{i % 7}"), now)
    a.add(built("lonely", cell="c-single"), now)
    out = a.due(now + 5000)
    assert out and all(r["subscribers"] >= 10 for r in out)
    assert "c-single" not in {r["prefix"] for r in out}


def test_bucket_is_emitted_when_the_clock_passes_its_end_plus_grace():
    a = agg(k=2, idle=1000)
    live = B0 + 1000
    a.add(built("s1", at=live), live)
    a.add(built("s2", at=live), live)
    assert a.due(B0 + HOUR) == []                        # bucket not over
    assert a.due(B0 + HOUR + GRACE - 1) == []            # within grace: late records may still come
    [r] = a.due(B0 + HOUR + GRACE)
    assert r["bucket_ms"] == B0 and a.open_buckets == 0


def test_event_time_watermark_closes_a_bucket_even_if_the_clock_lags():
    a = agg(k=2, idle=1000)
    a.add(built("s1", at=B0 + 1000), 0)
    a.add(built("s2", at=B0 + 1000), 0)
    assert a.due(1000) == []                             # watermark B0: bucket open
    a.add(built("s3", at=B0 + HOUR + GRACE), 1000)       # the watermark is a bucket start (no finer
    assert a.due(2000) == []                             # time travels): B0+HOUR is not past B0's grace
    a.add(built("s4", at=B0 + 2 * HOUR), 1000)           # a bucket starting after B0's end + grace
    out = a.due(2000)
    assert [r["bucket_ms"] for r in out] == [B0] and a.open_buckets == 2


def test_replayed_old_data_is_emitted_after_idle_and_late_records_are_dropped():
    a = agg(k=2, idle=1000)
    now = B0 + 400 * 86_400_000                          # a year later: every bucket is closed by the clock
    a.add(built("s1"), now)
    a.add(built("s2"), now)
    assert a.due(now + 999) == []                        # still receiving (idle rule)
    [r] = a.due(now + 1000)
    assert r["subscribers"] == 2
    assert a.add(built("s3"), now + 2000) is False and a.late == 1   # no second, partial cell
    assert a.due(now + 10_000) == []


def test_operators_do_not_share_cells_and_use_their_own_k():
    a = Aggregator({"junet": 2, "hektor": 3}, grace_ms=0, idle_ms=0)
    now = B0 + 2 * HOUR
    for h in ("a", "b"):
        a.add(built(h, op="junet"), now)
        a.add(built(h, op="hektor"), now)
    out = a.due(now)
    assert [r["operator"] for r in out] == ["junet"] and a.suppressed == 1


def _contrib(holder, cell="10.0.0.0/24", rid=None, at=B0 + 1000, action="start", **kw):
    from stream.aggregate import contribution

    x = built(holder, action=action, at=at, cell=cell, **kw)
    x.record["id"] = rid
    return contribution(x)


def test_one_owner_per_cell_equals_one_aggregator_whatever_the_split():
    """Reference model: one aggregator fed everything.  The same contributions routed by cell
    id over 4 partitions (one aggregator each, as the workers' aggregate stages) give exactly
    the same records, including a cell just at k, one just under, and one whose holders arrive
    from every stats partition."""
    import random

    from stream.aggregate import contribution_id

    rng = random.Random(7)
    sizes = {"c20": 20, "c30": 30, "c12": 12, "c10": 10, "c9": 9, "c11": 11}
    cs = []
    for cell, n in sizes.items():
        for i in range(n):
            cs.append(_contrib(f"{cell}-h{i}", cell=cell, rid=f"{cell}-r{i}"))
            cs.append(_contrib(f"{cell}-h{i}", cell=cell, rid=f"{cell}-s{i}", action="stop", oin=i, oout=2 * i))
    rng.shuffle(cs)
    now = B0 + 2 * HOUR + GRACE
    one = agg(k=10, idle=0)
    for c in cs:
        one.add_contribution(c, now)
    ref = one.due(now)
    parts = [agg(k=10, idle=0) for _ in range(4)]
    for off, c in enumerate(cs):
        parts[int(contribution_id(c), 16) % 4].add_contribution(c, now, off)
    got = sorted((r for p in parts for r in p.due(now)), key=lambda r: r["id"])
    assert got == sorted(ref, key=lambda r: r["id"])
    assert {r["prefix"]: r["subscribers"] for r in got} == {"c20": 20, "c30": 30, "c12": 12, "c10": 10, "c11": 11}
    assert sum(p.suppressed for p in parts) == one.suppressed == 1


def test_a_redelivered_contribution_is_counted_once():
    a = agg(k=2, idle=0)
    now = B0 + 2 * HOUR + GRACE
    for rid, h in (("r1", "s1"), ("r2", "s2"), ("r1", "s1")):
        a.add_contribution(_contrib(h, rid=rid, action="stop", oin=5, oout=7), now)
    [r] = a.due(now)
    assert (r["records"], r["octets_in"], a.duplicates) == (2, 10, 1)


def test_hold_offset_keeps_open_buckets_rereadable_and_inherited_buckets_are_not_reemitted():
    a = agg(k=1, idle=0)
    a.add_contribution(_contrib("s1", rid="a", at=B0 + 10), B0 + 20, offset=5)
    a.add_contribution(_contrib("s2", rid="b", at=B0 + HOUR + 10), B0 + HOUR + 20, offset=9)
    assert a.hold_offset() == 5
    [r] = a.due(B0 + HOUR + GRACE)                       # first bucket emitted, second still open
    assert r["bucket_ms"] == B0 and a.hold_offset() == 9
    closed = a.closed_keys()
    assert closed == [("junet", B0)]
    b = agg(k=1, idle=0)                                 # the partition's next owner re-reads from 5
    b.mark_closed(closed)
    assert b.add_contribution(_contrib("s1", rid="a", at=B0 + 10), B0 + HOUR + GRACE, offset=5) is False
    b.add_contribution(_contrib("s2", rid="b", at=B0 + HOUR + 10), B0 + HOUR + GRACE, offset=9)
    assert [x["bucket_ms"] for x in b.due(B0 + 2 * HOUR + GRACE)] == [B0 + HOUR]
    assert (b.reread, b.late) == (1, 0)


def test_late_contributions_are_counted_per_operator():
    a = agg(k=1, idle=0)
    now = B0 + 2 * HOUR + GRACE
    a.add_contribution(_contrib("s1", rid="a"), now)
    assert len(a.due(now)) == 1
    assert a.add_contribution(_contrib("s2", rid="b"), now) is False
    assert (a.late, a.late_by_operator) == (1, {"junet": 1})


def test_contributions_round_trip_and_bad_ones_are_rejected():
    import pytest

    from stream.aggregate import decode_contribution, encode_contribution
    from stream.errors import Rejected

    c = _contrib("s1", rid="r")
    k, v = encode_contribution(c)
    assert decode_contribution(v) == c and len(k) == 32
    assert "at_ms" not in c                              # no exact event time leaves the stats stage
    for bad in (b"x", b"[]", v.replace(b'"start"', b'"begin"'), v.replace(b'"epoch":7', b'"epoch":-1'), None):
        with pytest.raises(Rejected):
            decode_contribution(bad)
