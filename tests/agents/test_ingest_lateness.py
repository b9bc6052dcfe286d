"""The ingest stage's lateness check with the worker's own retention plan (no broker).

Reference: a record is accepted iff end-of-mapping + promise - now >= the bindings topic's
budget; the plan's budgets and promise are read from the plan here, not from the rule."""

from __future__ import annotations

import asyncio
import json
from collections import namedtuple

import pytest

from agents.ingest import Ingest, lateness_rules
from agents.runtime import OperatorRuntime
from agents.topics import Topics
from stream.binding_wire import decode as decode_binding
from stream.config import load_operators
from stream.policy import PlanParams, make_layout, plan_topics
from tests.conftest import REPO

Rec = namedtuple("Rec", "topic partition offset key value headers")
H = 3_600_000
NOW = 1_790_000_000_000


@pytest.fixture
def setup():
    pols = load_operators(REPO / "config" / "operators")
    pols = {n: pols[n] for n in ("connect2ip", "junet")}
    plan = plan_topics(pols, params=PlanParams(heartbeat_ms=60_000, sweeper_period_ms=1000, ingest_lag_ms=300_000),
                       layout=make_layout("tl", "tl"))
    ops = {n: OperatorRuntime(n, ttl_ms=plan.retention[n].ttl_ms, stats_key=b"k" * 32, policy=p)
           for n, p in pols.items()}
    names = Topics("tl")
    counts: dict = {}
    ingest = Ingest(names=names, partitions=4, operators=ops, default_operator=None,
                    rules=lateness_rules(ops, plan, names), clock=lambda: NOW,
                    count=lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n))
    return ingest, plan, names, ops, counts


def _stop(op: str, at_ms: int, i: int) -> Rec:
    v = json.dumps({"User-Name": f"u{i}", "Acct-Status-Type": "Stop", "Acct-Session-Id": f"S{i}",
                    "NAS-IP-Address": "192.0.2.1", "Framed-IP-Address": f"100.64.0.{i + 1}",
                    "Event-Timestamp": at_ms // 1000}).encode()
    return Rec("tl-raw-radius", 0, i, None, v, [("ipanon-format", b"radius-json"), ("ipanon-operator", op.encode())])


def _start(op: str, at_ms: int, i: int) -> Rec:
    r = _stop(op, at_ms, i)
    return r._replace(value=r.value.replace(b'"Stop"', b'"Start"'))


def test_rules_come_from_the_plan(setup):
    ingest, plan, names, ops, _ = setup
    for n, rule in ingest.rules.items():
        assert rule.promise_ms == ops[n].policy.lawful_access.promise_ms
        assert rule.stale_after_ms == ops[n].stale_after_ms
        assert rule.bindings_bound_ms == plan.topic(names.bindings).budget_ms
        assert rule.deadletter_bound_ms == plan.topic(names.deadletter).budget_ms
    # the plan's own promise: anything within the assumed ingest lag is always accepted
    for n in ops:
        assert plan.params.ingest_lag_ms + ingest.rules[n].bindings_bound_ms <= ingest.rules[n].promise_ms


def test_stops_at_the_boundary_and_905_days_late(setup):
    ingest, plan, names, ops, counts = setup
    budget = plan.topic(names.bindings).budget_ms
    records, expect = [], []
    for op in ("connect2ip", "junet"):
        promise = ops[op].policy.lawful_access.promise_ms
        last_ok = NOW - promise + budget          # end + promise - now == budget: accepted
        for at, ok in ((last_ok, True), (last_ok - 1000, False), (NOW - 905 * 24 * H, False), (NOW - 1000, True)):
            at -= at % 1000                       # RADIUS times are whole seconds
            ok = at + promise - NOW >= budget
            records.append(_stop(op, at, len(records)))
            expect.append(ok)
    out = asyncio.run(ingest.handle_batch(records))
    got_bindings = sorted(decode_binding(o[2]).session for o in out if o[0] == names.bindings)
    dead = [json.loads(o[2]) for o in out if o[0] == names.deadletter]
    want = sorted(f"192.0.2.1/S{i}" for i, ok in enumerate(expect) if ok)
    assert got_bindings == want and len(want) == 4
    assert sorted(d["offset"] for d in dead) == [i for i, ok in enumerate(expect) if not ok]
    assert all(d["reason"] == "too-late" and d["value_dropped"] and "value_b64" not in d for d in dead)
    assert counts["rejected:too-late"] == 4 and counts["too_late_dropped"] == 4 and counts["bindings"] == 4


def test_an_open_session_counts_from_its_lost_stop_window(setup):
    ingest, plan, names, ops, _ = setup
    op = "connect2ip"
    promise, stale = ops[op].policy.lawful_access.promise_ms, ops[op].stale_after_ms
    budget = plan.topic(names.bindings).budget_ms
    at = NOW - promise - stale + budget
    at -= at % 1000
    out = asyncio.run(ingest.handle_batch([_start(op, at, 0), _stop(op, at, 1)]))
    assert [o[0] for o in out] == [names.bindings, names.deadletter]   # the Start is still current, the Stop not


def test_a_shorter_dead_letter_bound_keeps_the_bytes(setup):
    import dataclasses

    ingest, plan, names, ops, _ = setup
    rule = ingest.rules["connect2ip"]
    ingest.rules["connect2ip"] = dataclasses.replace(rule, deadletter_bound_ms=0)
    at = NOW - rule.promise_ms + 1000     # 1 s of the promise left: less than the bindings budget
    out = asyncio.run(ingest.handle_batch([_stop("connect2ip", at, 0)]))
    (d,) = [json.loads(o[2]) for o in out]
    assert d["reason"] == "too-late" and "value_b64" in d and "value_dropped" not in d


def test_a_record_whose_outputs_fail_is_dead_lettered_alone(setup, monkeypatch):
    """An unforeseen failure while writing one record's bindings must not fail the batch (the
    stage would retry that batch for ever)."""
    from stream import binding_wire

    ingest, plan, names, ops, counts = setup
    real = binding_wire.encode

    def encode(b):
        if b.subscriber == "u1":
            raise RuntimeError("simulated")
        return real(b)

    monkeypatch.setattr(binding_wire, "encode", encode)
    out = asyncio.run(ingest.handle_batch([_start("junet", NOW - 1000, i) for i in range(3)]))
    assert [o[0] for o in out] == [names.bindings, names.deadletter, names.bindings]
    assert json.loads(out[1][2])["reason"] == "internal-error" and counts["bindings"] == 2
