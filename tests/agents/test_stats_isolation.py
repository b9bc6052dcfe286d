"""The stats handler of bindings read from the bindings topic (``StatsAgent.handle_batch``: the
old stats stage, now the upgrade drain's handler, agents.stats_drain; ingest's port shares its
emitting, tests/agents/test_stats_at_ingest.py) dead-letters a failing binding alone, never its
batch (no broker: the handler on a real Pipeline that is never started).

Reference: every valid binding of the batch yields exactly one stats record (connect2ip: no
consent gate, one record per non-reset binding), and every bad one exactly one dead letter."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from collections import namedtuple

import pytest

from stream.model import Binding

Rec = namedtuple("Rec", "topic partition offset key value headers")
NOW_S = int(time.time())


@pytest.fixture
def pipeline(tmp_path):
    from agents.app import NO_PARTS, Pipeline
    from agents.keystore import ensure_demo_keys
    from agents.runtime import OperatorRuntime
    from agents.settings import Settings
    from stream.config import load_operators
    from tests.conftest import REPO

    pol = load_operators(REPO / "config" / "operators")["connect2ip"]
    keys = tmp_path / "keys"
    ensure_demo_keys(keys, ["connect2ip"])
    s = Settings(bootstrap="127.0.0.1:1", app_id="ts", topic_prefix="ts", operators_dir=tmp_path / "ops",
                 keys_dir=keys, data_dir=tmp_path / "data", partitions=4, web_enabled=False)
    op = OperatorRuntime("connect2ip", ttl_ms=3_600_000, stats_key=b"k" * 32, policy=pol)
    p = Pipeline(s, {"connect2ip": op}, parts=replace(NO_PARTS, stats=True))
    counts: dict = {}
    p.on_count.append(lambda name, n: counts.__setitem__(name, counts.get(name, 0) + n))
    p.test_counts = counts
    return p


def _binding(i: int, subscriber: str = None) -> bytes:
    import ipaddress

    return Binding(kind="radius", action="start", operator="connect2ip",
                   ip=ipaddress.ip_network(f"100.64.{i // 250}.{i % 250 + 1}/32"),
                   subscriber=subscriber or f"kund-{i}@isp", session=f"nas/S{i}", nas="192.0.2.1",
                   at_ms=NOW_S * 1000 - i).to_json()


def _records(values):
    return [Rec("ts-bindings", 0, off, b"k", v, []) for off, v in enumerate(values)]


def _run(p, values):
    stats = p.stats
    out = asyncio.run(stats.handle_batch(_records(values)))
    stats_out = [o for o in out if o[0] == p.names.stats]
    dead = [json.loads(o[2]) for o in out if o[0] == p.names.deadletter]
    return stats_out, dead


def test_a_surrogate_binding_is_dead_lettered_alone(pipeline):
    good = [_binding(i) for i in range(300)]
    bad = _binding(300).replace(b'"kund-300@isp"', b'"kund-\xed\xa0\x80"')
    values = good[:150] + [bad] + good[150:]
    stats_out, dead = _run(pipeline, values)
    assert len(stats_out) == 300 and len({o[1] for o in stats_out}) == 300
    assert [(d["reason"], d["offset"]) for d in dead] == [("bad-encoding", 150)]
    assert pipeline.test_counts["stats_out"] == 300 and pipeline.test_counts["rejected:bad-encoding"] == 1


def test_a_binding_that_fails_pseudonymisation_costs_only_itself(pipeline, monkeypatch):
    """Any unforeseen failure inside the pseudonymiser (simulated for one subscriber) must not
    take the batch's other 300 records with it."""
    from stream.stats import StatsBuilder

    real = StatsBuilder.build_many

    def build_many(self, bindings, raw=None):
        if any(b.subscriber == "boom@isp" for b in bindings):
            raise RuntimeError("simulated pseudonymiser bug")
        return real(self, bindings, raw)

    monkeypatch.setattr(StatsBuilder, "build_many", build_many)
    good = [_binding(i) for i in range(300)]
    values = good[:10] + [_binding(300, "boom@isp")] + good[10:]
    stats_out, dead = _run(pipeline, values)
    assert len(stats_out) == 300
    assert [(d["reason"], d["offset"], d["detail"]) for d in dead] == [("stats-failed", 10, "RuntimeError")]
    c = pipeline.test_counts
    assert c["stats_out"] == 300 and c["rejected:stats-failed"] == 1 and c["stats_batch_errors"] == 1



def test_the_aggregator_sees_each_good_binding_once_despite_the_retry(pipeline, monkeypatch):
    """The failed whole-batch attempt must leave no trace: each good binding yields exactly one
    cell contribution (on the one-by-one retry), keyed by its cell id, and none for the bad one."""
    from stream.aggregate import contribution_id, contribution_items, decode_contribution
    from stream.stats import StatsBuilder

    real = StatsBuilder.build_many

    def build_many(self, bindings, raw=None):
        if any(b.subscriber == "boom@isp" for b in bindings):
            raise RuntimeError("simulated pseudonymiser bug")
        return real(self, bindings, raw)

    monkeypatch.setattr(StatsBuilder, "build_many", build_many)
    values = [_binding(i) for i in range(20)] + [_binding(20, "boom@isp")]
    stats = pipeline.stats
    out = asyncio.run(stats.handle_batch(_records(values)))
    parts = [o for o in out if o[0] == pipeline.names.aggregate_parts]
    stats_out = [o for o in out if o[0] == pipeline.names.stats]
    assert len(stats_out) == 20
    cs = [decode_contribution(o[2]) for o in parts]
    assert all(o[1].decode() == contribution_id(c) for o, c in zip(parts, cs))
    assert all(o[4] == c["bucket_ms"] for o, c in zip(parts, cs))  # Kafka timestamp: the bucket start, no finer
    each = [i for c in cs for i in contribution_items(c)]
    assert sorted(i["rid"] for i in each) == sorted(o[1].decode() for o in stats_out)  # each once


def test_the_aggregate_commit_holds_open_buckets_and_its_metadata_fits_the_broker(pipeline):
    """The aggregate stage commits no further than the first contribution of a still-open
    bucket, and lists the newest emitted buckets in metadata under 4096 bytes (the broker's
    default offset.metadata.max.bytes) even with 63-character operator names."""
    from collections import namedtuple

    from stream.aggregate import Aggregator

    stats = pipeline.stats
    a = stats.aggregate.aggregators[0] = Aggregator({"o": 1}, grace_ms=0)
    for i in range(64):
        a.mark_closed([("x" * 63, 1_700_000_000_000 + i)])
    a.add_contribution({"operator": "o", "kind": "radius", "bucket_ms": 0, "bucket_len_ms": 1, "epoch": 0,
                        "prefix": "*", "action": "start", "octets_in": 0, "octets_out": 0, "holder": "h",
                        "rid": "r"}, 0, offset=7)
    off, meta = stats.aggregate.commit_at(namedtuple("TP", "topic partition")("t", 0), 100)
    keys = json.loads(meta)
    assert off == 7 and len(meta.encode()) < 4096 and keys and keys[-1] == ["x" * 63, 1_700_000_000_063]
    assert stats.aggregate.commit_at(namedtuple("TP", "topic partition")("t", 1), 100) == (100, "")  # not owned


def test_binary_and_old_json_bindings_give_the_same_ids_and_an_unknown_version_is_dead_lettered(pipeline):
    """The bindings topic carries ``stream.binding_wire`` records; JSON ones written before the
    upgrade are still read, and a binding keeps its stats record id whichever form it was read
    in (dedup by id across the upgrade).  A record of a version this worker does not know is
    dead-lettered with ``unknown-binding-version`` and its bytes, alone."""
    import base64

    from stream import binding_wire

    js = [_binding(i) for i in range(20)]
    wire = [binding_wire.encode(Binding.from_json(v)) for v in js]
    future = b"\x03" + wire[0][1:]  # an unknown wire version (2 is a NAT binding with its protocol)
    stats_json, dead_json = _run(pipeline, js)
    stats_wire, dead = _run(pipeline, wire[:10] + [future] + wire[10:])
    assert not dead_json and len(stats_wire) == 20
    assert sorted(o[1] for o in stats_wire) == sorted(o[1] for o in stats_json)  # same record ids
    assert [(d["reason"], d["offset"]) for d in dead] == [("unknown-binding-version", 10)]
    assert base64.b64decode(dead[0]["value_b64"]) == future and "version 3" in dead[0]["detail"]
