"""The query agent's pure pieces without a broker: the resolver contract over
``pipeline.resolve``, the snapshot encoding and the hold-record rules."""

from __future__ import annotations

import asyncio
import json

import pytest

from agents.kafka_io import HEARTBEAT_KEY
from agents.lookup_client import complete_hops
from agents.desk_writer import decode_snapshot, encode_snapshot
from agents.query_agent import QueryAgent, _apply_hold_record
from stream.errors import IpanonError
from stream.hold import make_hold
from agents.remote_lookup import RemoteLookups


class FakePipeline:
    """``pipeline.resolve`` answers from a dict (operator, address) -> result; it owns every
    partition unless ``owned`` says which addresses it holds."""

    def __init__(self, answers, owned=None):
        self.answers = answers
        self.operators = {op for op, _ in answers} | {"empty-op"}
        self.calls = []
        self.owned = owned

    def owns(self, operator, net):
        return self.owned is None or str(net.network_address) in self.owned

    def resolve(self, operator, address, port, from_ms, to_ms):
        self.calls.append((operator, address, port, from_ms, to_ms))
        return self.answers.get((operator, address), {"status": "no-data", "holders": []})


class SyncAgent:
    """The agent's async ``resolve`` driven to completion (no event loop in these tests)."""

    def __init__(self, a):
        self.a, self.p = a, a.p

    def resolve(self, *args):
        return asyncio.run(self.a.resolve(*args))


def agent(answers, owned=None, elsewhere=None):
    """``elsewhere``: the other worker's pipeline, reached instead of the lookup topics."""
    a = QueryAgent.__new__(QueryAgent)  # only resolve() is exercised: no Faust app needed
    a.p = FakePipeline(answers, owned)
    a.operators = a.p.operators
    a.lookups = RemoteLookups(settings=None, names=None, seal=None, requests=None, clock=lambda: 0,
                              owns=a.p.owns, resolve=a.p.resolve)
    if elsewhere is not None:
        async def ask_remote(queries):
            return [elsewhere.resolve(q["operator"], q["ip"], q["port"], q["from_ms"], q["to_ms"]) for q in queries]
        a.lookups._ask_remote = ask_remote
    return SyncAgent(a)


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


def test_an_address_another_worker_holds_is_asked_there_and_cgnat_second_hops_are_completed():
    # public 198.51.100.7 port 1500 is on this worker; its inside address 100.64.9.9 elsewhere
    here = {("op1", "198.51.100.7"): {"status": "ok", "holders": [], "hops": [
        {"inside_ip": "100.64.9.9", "from_ms": 100, "to_ms": 200, "ports": [1024, 2047]}]}}
    there = FakePipeline({("op1", "100.64.9.9"): {"status": "ok", "holders": [
        {"subscriber": "kund", "from_ms": 50, "to_ms": 150}]},
        ("op1", "100.64.1.2"): {"status": "ok", "holders": [{"subscriber": "s2", "from_ms": 1, "to_ms": 2}]}})
    a = agent(here, owned={"198.51.100.7"}, elsewhere=there)
    assert a.resolve("198.51.100.7", 1500, 0, 1000) == {"matches": [
        {"operator": "op1", "address": "198.51.100.7", "subscriber": "kund", "from_ms": 50, "to_ms": 150,
         "inside_ip": "100.64.9.9", "ports": [1024, 2047]}]}
    assert ("op1", "100.64.9.9", None, 100, 200) in there.calls  # the hop: the block's interval, no port
    assert [c[1] for c in a.p.calls if c[0] == "op1"] == ["198.51.100.7"]
    # an address this worker does not hold at all is answered by its owner
    out = a.resolve("100.64.1.2", None, 0, 10)
    assert out == {"matches": [{"operator": "op1", "address": "100.64.1.2", "subscriber": "s2", "from_ms": 1, "to_ms": 2}]}
    assert ("op1", "100.64.1.2", None, 0, 10) in there.calls and ("op1", "100.64.1.2", None, 0, 10) not in a.p.calls


def test_a_lookup_without_an_answer_refuses_instead_of_answering_from_part_of_the_table():
    a = agent({("op1", "100.64.1.2"): {"status": "ok", "holders": []}}, owned=set())
    async def no_answer(queries):
        return [None for _ in queries]
    a.a.lookups._ask_remote = no_answer
    with pytest.raises(IpanonError, match="timed out"):
        a.resolve("100.64.1.2", None, 0, 10)


def test_complete_hops_merges_second_hops_and_flags_a_missing_one():
    first = {"id": "x", "status": "ok", "holders": [{"subscriber": "a", "from_ms": 1, "to_ms": 2,
                                                     "inside_ip": "10.0.0.1", "ports": [1, 2]}],
             "hops": [{"inside_ip": "10.0.0.2", "from_ms": 5, "to_ms": 9, "ports": [3, 4]}]}
    done = complete_hops(first, [{"status": "ok", "holders": [{"subscriber": "b", "from_ms": 5, "to_ms": 7}]}])
    assert done == {"id": "x", "status": "ok", "holders": [
        first["holders"][0], {"subscriber": "b", "from_ms": 5, "to_ms": 7, "inside_ip": "10.0.0.2", "ports": [3, 4]}]}
    empty = dict(first, holders=[])
    assert complete_hops(empty, [{"status": "no-data", "holders": []}])["status"] == "no-data"
    assert complete_hops(first, [None])["status"] == "error"
    assert complete_hops(first, [{"status": "error", "reason": "internal-error"}])["reason"] == "incomplete-hop"
    with pytest.raises(ValueError):
        complete_hops(first, [])


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


def test_a_forged_claim_is_routed_only_when_asked_for_the_claimed_name():
    from agents.answer_router import authority_of

    forged = json.dumps({"type": "status", "request_id": "police/10", "status": "refused",
                         "reason": "bad-signature", "authenticated": False}).encode()
    assert authority_of(forged) is None                      # never creates a topic for it
    assert authority_of(forged, claimed=True) == "police"    # copied only to an existing topic
    assert authority_of(json.dumps({"request_id": None, "authenticated": False}).encode(), claimed=True) is None
    hold_reply = json.dumps({"type": "hold", "hold_id": "ab" * 8, "status": "pending",
                             "request_id": f"police/hold-{'ab' * 8}"}).encode()
    assert authority_of(hold_reply) == "police"


def test_connection_diagnosis_names_an_unreachable_broker_at_once():
    import socket
    import time

    from agents.security import ConnectFailed, diagnose

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    with pytest.raises(ConnectFailed) as e:
        diagnose(f"127.0.0.1:{port}")
    assert e.value.kind == "unreachable" and "nothing listens" in str(e.value)
    assert time.monotonic() - t < 5


def test_a_remote_lookup_lost_on_its_way_is_asked_once_more_and_answered():
    """The desk's asker: the first request record is lost (its owner restarted after taking it,
    say); after a third of the timeout the unanswered lookup is sealed again (a new nonce, so the
    owner's replay guard takes it; the same request id, so the answer still matches) and its
    answer arrives.  One that is never answered comes back None at the timeout."""
    from types import SimpleNamespace

    from stream.lookup_wire import LookupSeal, nonce_of

    seal = LookupSeal(bytes(range(32)), "t-lookup-requests")
    counters: dict = {}
    r = RemoteLookups(settings=SimpleNamespace(partitions=4), names=None, seal=seal, requests="topic",
                      clock=lambda: 1_765_000_000_000, owns=lambda *a: False, resolve=None, timeout_s=0.6,
                      count=lambda name, n=1: counters.__setitem__(name, counters.get(name, 0) + n))
    sent: list = []

    async def started():
        return None

    async def send(outs):
        sent.append(outs)
        if len(sent) == 2:  # the second round reaches the owner; the first was lost
            for _, _, value, part in outs:
                rid = next(k for k in r._waiting if seal.open_request(value, partition=part,
                                                                      now_ms=1_765_000_000_000)["id"] == k)
                if "100.64.1.2" in json.dumps(seal.open_request(value, partition=part, now_ms=1_765_000_000_000)):
                    r._waiting[rid].set_result({"status": "ok", "holders": []})

    r._ensure_started, r._send = started, send
    qs = [{"operator": "op1", "ip": "100.64.1.2", "port": None, "from_ms": 0, "to_ms": 10},
          {"operator": "op1", "ip": "100.64.9.9", "port": None, "from_ms": 0, "to_ms": 10}]
    out = asyncio.run(r._ask_remote(qs))
    assert out == [{"status": "ok", "holders": []}, None]
    assert len(sent) == 2 and len(sent[0]) == 2 and len(sent[1]) == 2
    assert counters == {"lookups_resent": 2}
    first = {nonce_of(v) for _, _, v, _ in sent[0]}
    assert not first & {nonce_of(v) for _, _, v, _ in sent[1]}   # sealed again, not replayed
    ids = lambda batch: sorted(seal.open_request(v, partition=p, now_ms=1_765_000_000_000)["id"]  # noqa: E731
                               for _, _, v, p in batch)
    assert ids(sent[0]) == ids(sent[1])
    assert r._waiting == {}
