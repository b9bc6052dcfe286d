"""Version-2 cell contributions (``stream.aggregate``): one message per cell of a batch.

Checked against the version-1 reference, binding by binding: the messages carry exactly the
contributions ``contribution(built)`` gives, keyed by their cell; an aggregator fed the messages
counts, suppresses, emits and reports late, duplicate and re-read bindings exactly as one fed
version 1; and the decoder refuses every malformed item."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from stream import aggregate as agg
from stream.errors import Rejected
from stream.stats import Built
from tests.unit.test_aggregate import B0, GRACE, HOUR, built
from tests.unit.test_stats_fastpaths import _built, _with


def _v1(x: Built) -> dict:
    return json.loads(agg.encode_contribution(agg.contribution(x))[1])


def _expand(msgs) -> list[dict]:
    out = []
    for key, value, _tag in msgs:
        c = agg.decode_contribution(value)
        assert key.decode() == agg.contribution_id(c)
        out += agg.contribution_items(c)
    return out


def test_cells_carry_exactly_the_version_1_contributions():
    xs = _built(300, 11)  # every operator, all actions, odd texts, 2**70 counters
    enc = agg.ContributionEncoder(limit=5)  # small: the cell cache is cleared along the way
    msgs = enc.cells([(x, i) for i, x in enumerate(xs)])
    key = lambda d: json.dumps(d, sort_keys=True)  # noqa: E731
    assert Counter(map(key, _expand(msgs))) == Counter(key(_v1(x)) for x in xs)
    v2 = [json.loads(v) for _, v, _ in msgs if json.loads(v)["v"] == 2]
    cells = {agg.contribution_id(_v1(x)) for x in xs}
    assert len(v2) == len(cells) < len(xs)  # one message per cell
    # the tag is the cell's first binding's, and the items keep the bindings' order
    first, order = {}, {}
    for i, x in enumerate(xs):
        cid = agg.contribution_id(_v1(x))
        first.setdefault(cid, i)
        order.setdefault(cid, []).append(x.record["id"])
    assert all(tag == first[k.decode()] for k, _, tag in msgs)
    for k, v, _ in msgs:
        assert [i["rid"] for i in agg.contribution_items(agg.decode_contribution(v))] == order[k.decode()]


def test_a_large_cell_is_split_and_odd_bindings_travel_alone_as_version_1():
    xs = [built(f"h{i}", action=("start", "update", "stop")[i % 3], oin=i, oout=2 * i) for i in range(1100)]
    for i, x in enumerate(xs):
        x.record["id"] = f"r{i}"
    odd = Built(_with(_built(5, 3)[0].binding, octets_in=1.5, action="stop"), 7, dict(xs[0].record, id="odd"),
                "h-odd", xs[0].cell)
    msgs = agg.ContributionEncoder().cells([(x, 0) for x in xs + [odd]], max_items=500)
    versions = [json.loads(v)["v"] for _, v, _ in msgs]
    assert sorted(versions) == [1, 2, 2, 2]
    sizes = sorted(len(json.loads(v)["items"]) for _, v, _ in msgs if json.loads(v)["v"] == 2)
    assert sizes == [100, 500, 500]
    assert (msgs[0][0], msgs[0][1]) == agg.encode_contribution(agg.contribution(odd))  # as before this change
    assert Counter(i["rid"] for i in _expand(msgs[1:])) == Counter(f"r{i}" for i in range(1100))


def _feed(msgs_at, a: agg.Aggregator) -> list:
    for key, value, now, off in msgs_at:
        a.add_contribution(agg.decode_contribution(value), now, off)
    return a


def test_an_aggregator_fed_cells_matches_one_fed_version_1():
    """A random stream (several cells and buckets, duplicates across and within batches, late
    bindings after a bucket closed, an inherited bucket) through both encodings."""
    rng = random.Random(5)
    ref, got = agg.Aggregator({"junet": 3}, grace_ms=GRACE, idle_ms=1000), agg.Aggregator({"junet": 3}, grace_ms=GRACE, idle_ms=1000)
    for a in (ref, got):
        a.mark_closed([("junet", B0 - HOUR)])  # emitted by the partition's previous owner
    enc = agg.ContributionEncoder()
    now = B0 + 3 * HOUR + GRACE
    emitted_ref, emitted_got = [], []
    seen = []
    for batch in range(40):
        xs = []
        for _ in range(rng.randrange(1, 60)):
            if seen and rng.random() < 0.15:
                xs.append(rng.choice(seen))  # a re-delivered binding: the same record id
                continue
            at = B0 + rng.randrange(-HOUR, 3 * HOUR)
            x = built(f"h{rng.randrange(12)}", action=rng.choice(("start", "update", "stop")), at=at,
                      cell=f"10.0.{rng.randrange(3)}.0/24", oin=rng.randrange(10**6), oout=rng.randrange(10**6))
            x.record["id"] = f"r{len(seen)}"
            seen.append(x)
            xs.append(x)
        for off, x in enumerate(xs):
            ref.add_contribution(_v1(x), now, batch * 1000 + off)
        for off, (k, v, _) in enumerate(enc.cells([(x, None) for x in xs])):
            got.add_contribution(agg.decode_contribution(v), now, batch * 1000 + off)
        if batch in (10, 25):  # close what is due: later bindings of those buckets are late
            now += 5000
            emitted_ref += ref.due(now)
            emitted_got += got.due(now)
    now += 10 * HOUR
    emitted_ref += ref.due(now)
    emitted_got += got.due(now)
    assert emitted_ref and emitted_got == emitted_ref
    for name in ("late", "late_by_operator", "duplicates", "reread", "suppressed", "emitted", "watermark"):
        assert getattr(got, name) == getattr(ref, name), name
    assert ref.late and ref.duplicates and ref.reread  # the stream did exercise each path


def test_hold_offset_is_the_first_offset_of_an_open_bucket_for_cells_too():
    a = agg.Aggregator({"junet": 1}, grace_ms=GRACE, idle_ms=1000)
    x, y = built("h1"), built("h2", at=B0 + HOUR + 5)
    x.record["id"], y.record["id"] = "a", "b"
    msgs = agg.ContributionEncoder().cells([(x, 0), (y, 0)])
    for off, (_, v, _) in zip((7, 9), msgs):
        a.add_contribution(agg.decode_contribution(v), B0, off)
    assert a.hold_offset() == 7


def test_a_cell_message_made_of_duplicates_counts_nothing():
    a = agg.Aggregator({"junet": 1}, grace_ms=GRACE, idle_ms=1000)
    x = built("h1")
    x.record["id"] = "a"
    (_, v, _), = agg.ContributionEncoder().cells([(x, 0), (x, 0)])
    c = agg.decode_contribution(v)
    assert len(c["items"]) == 2
    assert a.add_contribution(c, B0) is True and a.duplicates == 1
    assert a.add_contribution(c, B0) is False and a.duplicates == 3


GOOD = {"v": 2, "operator": "junet", "kind": "radius", "bucket_ms": B0, "bucket_len_ms": HOUR, "epoch": 7,
        "prefix": "10.0.0.0/24", "items": [["start", 0, 0, "h", "r1"], ["stop", 5, 6, None, None]]}


@pytest.mark.parametrize("bad", [
    {"items": []}, {"items": None}, {"items": "x"}, {"items": {}}, {"items": [["start", 0, 0, "h"]]},
    {"items": [["start", 0, 0, "h", "r", "x"]]}, {"items": [["begin", 0, 0, "h", "r"]]},
    {"items": [["stop", -1, 0, "h", "r"]]}, {"items": [["stop", True, 0, "h", "r"]]},
    {"items": [["stop", 1.5, 0, "h", "r"]]}, {"items": [["stop", 0, "1", "h", "r"]]},
    {"items": [["start", 0, 0, 5, "r"]]}, {"items": [["start", 0, 0, "h", ["r"]]]},
    {"items": [{"action": "start"}]}, {"items": [["start", 0, 0, "h", "r"]] * (agg.MAX_ITEMS + 1)},
    {"kind": "ftp"}, {"bucket_len_ms": 0}, {"epoch": -1}, {"operator": 3}, {"v": 3}, {"prefix": None},
])
def test_a_malformed_cell_message_is_rejected(bad):
    assert agg.decode_contribution(json.dumps(GOOD).encode()) == GOOD
    with pytest.raises(Rejected) as e:
        agg.decode_contribution(json.dumps({**GOOD, **bad}).encode())
    assert e.value.reason == "bad-contribution"


def test_a_version_1_message_keeps_decoding_unchanged():
    x = built("h1", action="stop", oin=3, oout=4)
    x.record["id"] = "r"
    k, v = agg.encode_contribution(agg.contribution(x))
    c = agg.decode_contribution(v)
    assert c["v"] == 1 and agg.contribution_items(c) == [c]


def test_the_same_binding_in_both_versions_counts_once():
    """A rolling upgrade: one worker still writes version 1 (IPANON_CONTRIBUTION_VERSION=1), a
    re-delivered batch comes back as version 2 from another: each record id counts once."""
    a = agg.Aggregator({"junet": 2}, grace_ms=GRACE, idle_ms=0)
    xs = [built(f"h{i}", action="stop", oin=10, oout=20) for i in range(3)]
    for i, x in enumerate(xs):
        x.record["id"] = f"r{i}"
    enc = agg.ContributionEncoder()
    for x in xs[:2]:
        a.add_contribution(agg.decode_contribution(enc.encode(x)[1]), B0)
    (_, v, _), = enc.cells([(x, 0) for x in xs])
    assert a.add_contribution(agg.decode_contribution(v), B0) is True
    assert a.duplicates == 2
    (r,) = a.due(B0 + 2 * HOUR + GRACE)
    assert (r["records"], r["subscribers"], r["octets_in"], r["octets_out"]) == (3, 3, 30, 60)
