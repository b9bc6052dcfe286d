"""The query agent's pure pieces without a broker: the resolver contract over
``pipeline.resolve``, the snapshot encoding and the hold-record rules."""

from __future__ import annotations

import json

import pytest

from agents.kafka_io import HEARTBEAT_KEY
from agents.query_agent import QueryAgent, _apply_hold_record, decode_snapshot, encode_snapshot
from stream.errors import IpanonError
from stream.hold import make_hold


class FakePipeline:
    """``pipeline.resolve`` answers from a dict (operator, address) -> result."""

    def __init__(self, answers):
        self.answers = answers
        self.operators = {op for op, _ in answers} | {"empty-op"}
        self.calls = []

    def resolve(self, operator, address, port, from_ms, to_ms):
        self.calls.append((operator, address, port, from_ms, to_ms))
        return self.answers.get((operator, address), {"status": "no-data", "holders": []})


def agent(answers):
    a = QueryAgent.__new__(QueryAgent)  # only resolve() is exercised: no Faust app needed
    a.p = FakePipeline(answers)
    return a


def test_single_address_match_is_tagged_with_operator_and_address():
    a = agent({("op1", "100.64.1.2"): {"status": "ok", "holders": [{"subscriber": "s", "from_ms": 1, "to_ms": 2}]}})
    assert a.resolve("100.64.1.2", None, 0, 10) == {
        "matches": [{"operator": "op1", "address": "100.64.1.2", "subscriber": "s", "from_ms": 1, "to_ms": 2}]}
    assert ("op1", "100.64.1.2", None, 0, 10) in a.p.calls and ("empty-op", "100.64.1.2", None, 0, 10) in a.p.calls


def test_nothing_anywhere_is_no_data():
    assert agent({}).resolve("2001:db8::1", 443, 0, 10) == {"no_data": True}


def test_ambiguous_is_summed_and_never_picks_one():
    a = agent({("op1", "198.51.100.7"): {"status": "ambiguous", "candidates": 3},
               ("op2", "198.51.100.7"): {"status": "ambiguous", "candidates": 2}})
    assert a.resolve("198.51.100.7", None, 0, 10) == {"ambiguous": 5}


def test_ipv4_prefix_is_resolved_address_by_address():
    a = agent({("op1", "100.64.1.7"): {"status": "ok", "holders": [{"subscriber": "s7", "from_ms": 1, "to_ms": 2}]}})
    out = a.resolve("100.64.1.0/24", None, 0, 10)
    assert [(m["address"], m["subscriber"]) for m in out["matches"]] == [("100.64.1.7", "s7")]
    assert len({c[1] for c in a.p.calls}) == 256


def test_ipv6_prefix_asks_for_its_first_address_only():
    a = agent({})
    a.resolve("2001:db8:0:100::/56", None, 0, 10)
    assert {c[1] for c in a.p.calls} == {"2001:db8:0:100::"}


def test_snapshot_round_trip_and_unknown_encoding():
    state = {"v": 1, "desk": {"v": 1, "pending": {}, "seen": {"n:a:00": 5}, "buckets": {}}, "holds": [], "offset": 41}
    raw = encode_snapshot(state)
    assert raw[:2] == b"Z1" and decode_snapshot(raw) == state
    with pytest.raises(IpanonError):
        decode_snapshot(json.dumps(state).encode())


def test_hold_records_set_replace_and_tombstone():
    h = make_hold(operator="op1", ip="100.64.1.2", from_ms=0, to_ms=10, case_ref="C-1", until_ms=2_000, now_ms=1_000)
    holds = {}
    assert _apply_hold_record(holds, h.hold_id.encode(), json.dumps(h.to_dict()).encode()) is True
    assert list(holds) == [h.hold_id]
    assert _apply_hold_record(holds, HEARTBEAT_KEY, None) is False and list(holds) == [h.hold_id]
    assert _apply_hold_record(holds, h.hold_id.encode(), b"not json") is False and list(holds) == [h.hold_id]
    assert _apply_hold_record(holds, h.hold_id.encode(), None) is True and holds == {}
