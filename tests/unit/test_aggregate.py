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
    assert a.due(1000) == []                             # watermark B0+1000: bucket open
    a.add(built("s3", at=B0 + HOUR + GRACE), 1000)       # next bucket's event moves the watermark
    out = a.due(2000)
    assert [r["bucket_ms"] for r in out] == [B0] and a.open_buckets == 1


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
