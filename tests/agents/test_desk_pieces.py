"""The query desk's write path and outcomes without a broker (``agents.desk_writer``,
``agents.desk_outcomes``): outputs are delivered, acknowledged, before the snapshot that claims
them; a checkpoint is signed when the trail grew; a ready request whose resolution fails is
refused and audited, never answered; an answer is sealed; junk is counted, not audited.

The desk is the real ``stream.access.QueryDesk``; the topics are fakes that record what was
sent and when its acknowledgement came."""

from __future__ import annotations

import asyncio
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agents.desk_outcomes import DeskOutcomes
from agents.desk_writer import STATE_KEY, DeskWriter, decode_snapshot
from stream import access
from stream.access import BASES, Authority, JunkLedger, QueryDesk, Registry, Staff
from stream.audit import AuditChain
from stream.errors import IpanonError
from tests.unit.test_access import T0, Keys, req


class Topic:
    """A Faust topic stand-in: ``send`` records ("sent", name, key, value) in ``log`` and returns
    a future the broker acknowledges on a later loop turn (then ("ack", name, ...) is logged),
    or fails there when ``fail`` is set."""

    def __init__(self, name, log, fail=False):
        self.name, self.log, self.fail = name, log, fail

    async def send(self, key=None, value=None, partition=None):
        self.log.append(("sent", self.name, key, value))
        fut = asyncio.get_running_loop().create_future()

        def ack():
            if self.fail:
                fut.set_exception(IpanonError(f"{self.name}: not acknowledged"))
            else:
                self.log.append(("ack", self.name, key, value))
                fut.set_result(None)
        asyncio.get_running_loop().call_later(0.001, ack)
        return fut


def writer(log, *, fail=(), checkpoint_ms=3_600_000):
    t = {n: Topic(n, log, fail=n in fail) for n in ("audit", "responses", "holds", "state")}
    return DeskWriter(audit=t["audit"], responses=t["responses"], holds=t["holds"], state=t["state"],
                      anchor_key=ed25519.Ed25519PrivateKey.generate(), checkpoint_ms=checkpoint_ms,
                      bootstrap="unused:9092", audit_name="audit", state_name="state")


def test_outputs_are_delivered_before_the_snapshot_and_a_checkpoint_follows_new_records():
    log = []
    w = writer(log)
    w.audit({"type": "request-received", "request_id": "a/1"}, T0)
    w.reply("a/1", {"type": "status", "status": "pending"})
    asyncio.run(w.save(T0, lambda: {"offset": 7}))
    assert [n for n, _, _ in sends(log)] == ["audit", "responses", "audit", "state"]
    # the snapshot is handed over only after every earlier output was acknowledged
    state_sent = log.index(next(e for e in log if e[:2] == ("sent", "state")))
    assert sorted(n for what, n, _, _ in log[:state_sent] if what == "ack") == ["audit", "audit", "responses"]
    first, checkpoint = audited(log)
    assert first["type"] == "request-received" and first["seq"] == 0
    assert "anchor_sig" in checkpoint and checkpoint["prev"] == first["hash"]  # signed, after the record
    _, key, snap = sends(log)[-1]
    assert key == STATE_KEY and decode_snapshot(snap) == {"offset": 7}
    # nothing new, within the period: no checkpoint, only the snapshot
    log.clear()
    asyncio.run(w.save(T0 + 1000, lambda: {"offset": 8}))
    assert [n for n, _, _ in sends(log)] == ["state"]
    # a new record within the period: signed at once
    log.clear()
    w.audit({"type": "request-received", "request_id": "a/2"}, T0 + 2000)
    asyncio.run(w.save(T0 + 2000, lambda: {"offset": 9}))
    assert [n for n, _, _ in sends(log)] == ["audit", "audit", "state"]
    # idle past the period: a checkpoint again
    log.clear()
    asyncio.run(w.save(T0 + 2000 + 3_600_000, lambda: {"offset": 9}))
    assert [n for n, _, _ in sends(log)] == ["audit", "state"]


def test_a_failed_delivery_writes_no_snapshot():
    log = []
    w = writer(log, fail=("responses",))
    w.audit({"type": "request-received", "request_id": "a/1"}, T0)
    w.reply("a/1", {"type": "status", "status": "pending"})
    with pytest.raises(IpanonError):
        asyncio.run(w.save(T0, lambda: {"offset": 7}))
    assert "state" not in [n for n, _, _ in sends(log)]


def test_the_chain_resumes_from_what_the_writer_sent():
    log = []
    w = writer(log)
    for i in range(3):
        w.audit({"type": "request-received", "request_id": f"a/{i}"}, T0 + i)
    asyncio.run(w.save(T0 + 5, lambda: {}))
    last_audit = [v for n, _, v in sends(log) if n == "audit"][-1]
    assert AuditChain.resume(last_audit).next_seq == w.chain.next_seq


@pytest.fixture(scope="module")
def keys():
    return Keys()


def desk_of(keys):
    police = Authority("se-police", "Police (test)", "SE", keys.police_sign.public_key(),
                       keys.police_enc.public_key(), frozenset({"lek-law-enforcement", "emergency"}),
                       per_hour=60, burst=3)
    staff = [Staff(n, n, k.public_key(), frozenset(BASES)) for n, k in keys.staff.items()]
    return QueryDesk(Registry.build([police], staff))


def outcomes(keys, resolve):
    log, counts = [], []
    w = writer(log)
    desk = desk_of(keys)
    o = DeskOutcomes(w, JunkLedger(["se-police"]), count=lambda name, n=1: counts.append(name),
                     resolve=resolve, answer=lambda d, resolver, now: desk.answer(d, resolver, now))
    return desk, w, o, log, counts


def sent(w, log):
    asyncio.run(w.deliver())
    return log


def sends(log):
    return [(n, k, v) for what, n, k, v in log if what == "sent"]


def audited(log):
    return [json.loads(v) for n, _, v in sends(log) if n == "audit"]


def test_a_ready_request_whose_resolution_fails_is_refused_and_audited_never_answered(keys):
    async def resolve(*a, **kw):
        raise IpanonError("lookup timed out")

    desk, w, o, log, counts = outcomes(keys, resolve)
    raw, _ = req(keys)
    d = desk.submit(raw, T0)
    assert d.status == "ready"
    asyncio.run(o.emit(d, T0, b"se-police"))
    sent(w, log)
    text = json.dumps([json.loads(v) for _, _, v in sends(log)])
    assert '"resolution-failed"' in text and "sealed" not in text
    replies = [json.loads(v) for n, _, v in sends(log) if n == "responses"]
    assert replies[-1]["status"] == "refused" and replies[-1]["reason"] == "resolution-failed"
    assert "query:resolution-failed" in counts and "query:answered" not in counts


def test_a_ready_request_is_answered_sealed_to_the_authority(keys):
    async def resolve(address, port, from_ms, to_ms, proto=None):
        return {"matches": [{"operator": "op1", "address": address, "subscriber": "sub-0042",
                             "from_ms": from_ms, "to_ms": to_ms}]}

    desk, w, o, log, counts = outcomes(keys, resolve)
    raw, _ = req(keys)
    asyncio.run(o.emit(desk.submit(raw, T0), T0, b"se-police"))
    sent(w, log)
    assert all(b"sub-0042" not in v for _, _, v in sends(log))  # no plaintext subscriber on any topic
    answer = [json.loads(v) for n, _, v in sends(log) if n == "responses"][-1]
    opened = access.open_answer(keys.police_enc, answer)
    assert opened["result"]["matches"][0]["subscriber"] == "sub-0042"
    assert "query:answered" in counts


def test_junk_is_counted_not_audited(keys):
    async def resolve(*a, **kw):
        raise AssertionError("junk is never resolved")

    desk, w, o, log, counts = outcomes(keys, resolve)
    for i in range(20):
        asyncio.run(o.emit(desk.submit(b"not a request %d" % i, T0), T0, b"se-police"))
    sent(w, log)
    assert audited(log) == []
    assert counts.count("query:junk_se-police") == 20


def test_the_desks_reloads_connect_with_the_workers_security_not_the_processs(monkeypatch):
    """The desk's reload (audit chain + snapshot) and the holds follower's first read build their
    clients from the worker's ``Settings.security``: a worker configured for TLS/SASL in its
    settings must not read its audit trail over whatever the process environment says."""
    import agents.desk_writer as dw
    import agents.kafka_io as kio
    from agents.query_agent import HoldsFollower
    from agents.security import KafkaSecurity

    sec = KafkaSecurity(protocol="SASL_SSL", username="desk", password="x")
    seen = []

    class Consumer:  # an empty partition: last_record answers None
        def assign(self, tps): pass
        def end_offsets(self, tps): return {tp: 0 for tp in tps}
        def beginning_offsets(self, tps): return {tp: 0 for tp in tps}
        def close(self): pass

    class Clients:
        def __init__(self, bootstrap, security=None):
            seen.append(("clients", security))
        def consumer(self, **kw):
            return Consumer()

    monkeypatch.setattr(dw, "Clients", Clients)
    w = DeskWriter(audit=None, responses=None, holds=None, state=None, anchor_key=None, checkpoint_ms=1,
                   bootstrap="b:9092", audit_name="audit", state_name="state", security=sec)
    chain, snap = w.load()
    assert snap is None and seen == [("clients", sec), ("clients", sec)]

    seen.clear()
    monkeypatch.setattr(kio, "read_all", lambda b, t, heartbeats=False, security=None, **kw: seen.append(security) or [])

    class S:
        bootstrap, security = "b:9092", sec

    HoldsFollower("p-holds", settings=S(), on_holds=lambda hs: None)
    assert seen == [sec]
