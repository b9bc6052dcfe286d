"""Statistics made at ingest, in the batch that writes the bindings (no broker: a real
``Pipeline`` with the stats extension, never started; its ingest handler is fed raw records).

Reference model, built here without the code under test's help:

- the accepted bindings are what the raw records' formats parse to (``stream.parse``), minus
  the records constructed to be rejected or too late (a lateness rule is set so that records
  made too late still lie in a live statistics epoch: a leak would show as a record);
- the stats record ids are ``agents.stats_agent.record_ids`` from the operator's key file for
  the accepted bindings that are neither resets nor erasure canaries (canary = the canary
  subscriber namespace *and* an address in 100::/64, spelled out here);
- the previous release's path (the bindings topic read back by ``StatsAgent.handle_batch``,
  the upgrade drain's handler) gives byte-identical stats records and cell contributions for
  what ingest wrote to the bindings topic, in the binary form and in the old JSON form.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import json
import sys
import time
from collections import Counter, namedtuple
from dataclasses import replace

import pytest

from stream.model import Binding
from tests.conftest import REPO

Rec = namedtuple("Rec", "topic partition offset key value headers")
DAY = 86_400_000
# noon (UTC) yesterday: 12 h from any epoch boundary of the 24 h and 7 d key epochs, so late
# records ten minutes old still lie in a live statistics epoch (and would be counted if leaked)
NOW = (int(time.time() * 1000) // DAY - 1) * DAY + DAY // 2
OPS = ("connect2ip", "framsteget")


def _harness():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import _harness
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return _harness


def build(tmp_path, ops, app_id="tsi"):
    from agents.app import NO_PARTS, Pipeline
    from agents.keystore import ensure_demo_keys
    from agents.runtime import OperatorRuntime
    from agents.settings import Settings
    from stream.config import load_operators

    pols = load_operators(REPO / "config" / "operators")
    keys = tmp_path / "keys"
    ensure_demo_keys(keys, list(ops))
    seeds = {op: bytes.fromhex((keys / f"{op}.key").read_text().strip()) for op in ops}
    s = Settings(bootstrap="127.0.0.1:1", app_id=app_id, topic_prefix=app_id, operators_dir=tmp_path / "ops",
                 keys_dir=keys, data_dir=tmp_path / "data", partitions=4, web_enabled=False)
    rt = {op: OperatorRuntime(op, ttl_ms=3_600_000, stats_key=b"k" * 32, policy=pols[op]) for op in ops}
    p = Pipeline(s, rt, parts=replace(NO_PARTS, stats=True), clock=lambda: NOW)
    counts: dict = {}
    p.on_count.append(lambda name, n: counts.__setitem__(name, counts.get(name, 0) + n))
    p.test_counts, p.test_seeds, p.test_pols = counts, seeds, {op: pols[op] for op in ops}
    return p


@pytest.fixture
def pipeline(tmp_path):
    return build(tmp_path, OPS)


# -- the reference ------------------------------------------------------------------------------

def canary_like(b: Binding) -> bool:
    """The erasure canary rule (docs, stream/canary.py), written out independently."""
    sub = b.subscriber or ""
    net = b.ip
    return (sub.startswith("ipanon-canary-") and sub.endswith("@canary.invalid") and net is not None
            and net.version == 6 and net.prefixlen >= 64 and net.subnet_of(ipaddress.ip_network("100::/64")))


def parse(p, rec: Rec, operator: str) -> list[Binding]:
    from stream.parse import get_format

    fmt = dict((k, v.decode()) for k, v in rec.headers)["ipanon-format"]
    return get_format(fmt).parse(rec.value, operator=operator,
                                 identity=p.test_pols[operator].identity.radius_attribute)


def expected_ids(p, bindings_by_op: dict[str, list[Binding]]) -> Counter:
    from agents.stats_agent import record_ids

    out: Counter = Counter()
    for op, bs in bindings_by_op.items():
        out.update(record_ids(p.test_seeds[op], p.test_pols[op], [b for b in bs if not canary_like(b)]))
    return out


def split(p, out):
    n = p.names
    stats = [o for o in out if o[0] == n.stats]
    parts = [o for o in out if o[0] == n.aggregate_parts]
    dead = [json.loads(o[2]) for o in out if o[0] == n.deadletter]
    bindings = [o for o in out if o[0] == n.bindings]
    assert len(stats) + len(parts) + len(dead) + len(bindings) == len(out), {o[0] for o in out}
    return stats, parts, dead, bindings


def items(parts: list) -> list[dict]:
    """The per-binding contributions in ``parts`` (each message checked as the aggregate stage
    reads it; version 2 carries a cell's bindings of the batch)."""
    from stream.aggregate import contribution_id, contribution_items, decode_contribution

    out = []
    for o in parts:
        c = decode_contribution(o[2])
        assert o[1].decode() == contribution_id(c)  # keyed by its cell
        out += contribution_items(c)
    return out


def old_path(p, bindings_out, *, as_json=False):
    """The previous release's stats stage on what ingest wrote to the bindings topic."""
    from stream import binding_wire

    recs = []
    for off, (_t, key, value, part) in enumerate(bindings_out):
        if as_json:
            value = binding_wire.decode(value).to_json()
        recs.append(Rec(p.names.bindings, part or 0, off, key, value, []))
    return asyncio.run(p.stats.handle_batch(recs))


def rec(topic, off, fmt, value, operator=None, key=b"src-1"):
    h = [("ipanon-format", fmt.encode())] if fmt else []
    if operator:
        h.append(("ipanon-operator", operator.encode()))
    return Rec(topic, off % 4, off, key, value, h)


def radius(user, ip, status, at_ms, session, attr="Framed-IP-Address", **extra):
    r = {"User-Name": user, "Acct-Status-Type": status, "Acct-Session-Id": session, "NAS-IP-Address": "192.0.2.9",
         attr: ip, "Event-Timestamp": at_ms // 1000, **extra}
    return json.dumps(r).encode()


def starts(p, subs, net, t, tag):
    """One connect2ip RADIUS Start per subscriber, each on its own address of ``net``.x."""
    return [rec(p.names.raw_radius, i, "radius-json", radius(s, f"{net}.{i + 1}", "Start", t + i, f"{tag}{i}"),
                "connect2ip") for i, s in enumerate(subs)]


# -- the tests ----------------------------------------------------------------------------------

def test_ingest_emits_exactly_the_reference_stats_and_the_old_path_agrees_byte_for_byte(pipeline):
    from agents.ingest import lateness_rules
    from stream import binding_wire
    from stream import canary as C
    from stream.policy import PlanParams, make_layout, plan_topics

    p = pipeline
    n = p.names
    # lateness from the worker's own plan, then one tightened: a Stop older than 2 min is too
    # late for connect2ip (its bytes kept), everything else of this traffic is in time
    plan = plan_topics(p.test_pols, params=PlanParams(heartbeat_ms=60_000, sweeper_period_ms=1000,
                                                      ingest_lag_ms=300_000), layout=make_layout("tsi", "tsi"))
    rules = lateness_rules(p.operators, plan, n)
    r = rules["connect2ip"]
    rules["connect2ip"] = dataclasses.replace(r, bindings_bound_ms=r.promise_ms - 120_000, deadletter_bound_ms=0)
    p.ingest.rules = rules

    fam = {"radius-json": n.raw_radius, "kea-hook": n.raw_dhcp, "ipfix-json": n.raw_nat}
    records: list[Rec] = []
    good: list[tuple[int, str]] = []      # (offset, operator) of records that must be accepted
    bad: dict[int, str] = {}              # offset -> dead-letter reason

    def add(r: Rec, op=None, reason=None):
        records.append(r)
        if reason:
            bad[r.offset] = reason
        elif op:
            good.append((r.offset, op))

    events = _harness().mixed_events(600, NOW, seed=11, addresses=400)
    for i, (fmt, value) in enumerate(events):
        add(rec(fam[fmt], len(records), fmt, value, "connect2ip", key=f"src-{i % 5}".encode()), "connect2ip")
    # framsteget in the same batch, on its own raw topic (the topic names the operator)
    for i, (fmt, value) in enumerate(_harness().mixed_events(150, NOW, seed=12, addresses=100)):
        add(rec(n.operator_raw("framsteget"), len(records), fmt, value, key=f"f-{i % 3}".encode()), "framsteget")
    t = NOW - 30_000
    edge = [
        radius("Kund-Åsa@isp.example", "2001:db8:1::/56", "Start", t, "E1", attr="Delegated-IPv6-Prefix"),
        radius("v6@isp.example", "2001:db8:2::7", "Interim-Update", t, "E2", attr="Framed-IPv6-Address",
               **{"Acct-Session-Time": 99, "Acct-Input-Octets": 5, "Acct-Input-Gigawords": 3}),
        radius("both@isp.example", "100.66.0.1", "Stop", t, "E3", **{"Framed-IPv6-Prefix": "2001:db8:3::/64",
                                                                     "Acct-Session-Time": 7}),
        # canary namespace on an ordinary address: a real subscriber, counted
        radius("ipanon-canary-connect2ip-1@canary.invalid", "100.66.0.2", "Start", t, "E4"),
        # Accounting-On: a reset on every partition, never a stats record
        json.dumps({"Acct-Status-Type": "Accounting-On", "NAS-IP-Address": "192.0.2.77",
                    "Event-Timestamp": t // 1000}).encode(),
        # two leases in one record: two bindings from one raw record
        json.dumps({"hook": "leases4_committed", "LEASES4_SIZE": "2", "DELETED_LEASES4_SIZE": "0",
                    **{f"LEASES4_AT{k}_{f}": v for k in (0, 1) for f, v in (
                        ("ADDRESS", f"10.99.0.{k + 1}"), ("CLTT", str(t // 1000)), ("VALID_LIFETIME", "3600"),
                        ("HWADDR", f"02:00:00:00:99:0{k}"))}}).encode(),
    ]
    for v in edge:
        fmt = "kea-hook" if b'"hook"' in v else "radius-json"
        add(rec(fam[fmt], len(records), fmt, v, "connect2ip"), "connect2ip")
    # erasure canaries, as the canary job writes them: mapped, never counted
    for v in C.records("connect2ip", NOW - 5_000, end_ms=(NOW - 5_000) // 1000 * 1000):
        add(rec(n.operator_raw("connect2ip"), len(records), "radius-json", v, key=C.SOURCE.encode()), "connect2ip")
    # too late (Stops 10 min old, same key epoch as the rest): dead-lettered, never counted
    for k in range(3):
        add(rec(n.raw_radius, len(records), "radius-json",
                radius(f"late{k}@isp.example", f"100.67.0.{k + 1}", "Stop", NOW - 600_000, f"L{k}"), "connect2ip"),
            reason="too-late")
    # rejected
    add(rec(n.raw_radius, len(records), None, radius("nofmt@isp", "100.68.0.1", "Start", t, "R1"), "connect2ip"),
        reason="missing-format")
    add(rec(n.raw_radius, len(records), "radius-json", b"{not json", "connect2ip"), reason="bad-json")
    add(rec(n.raw_radius, len(records), "radius-json", radius("u@x", "100.68.0.2", "Start", t, "R2"), "nobody"),
        reason="unknown-operator")
    add(rec(n.operator_raw("framsteget"), len(records), "radius-json",
            radius("framed@x", "100.68.0.3", "Start", t, "R3"), "connect2ip"), reason="operator-not-allowed")
    from agents.kafka_io import HEARTBEAT_KEY

    records.append(Rec(n.raw_radius, 0, len(records), HEARTBEAT_KEY, None, []))  # skipped

    out = asyncio.run(p.ingest.handle_batch(records))
    stats, parts, dead, bindings = split(p, out)

    # the reference's accepted bindings, parsed here
    by_off = {r.offset: r for r in records}
    ref: dict[str, list[Binding]] = {}
    for off, op in good:
        ref.setdefault(op, []).extend(parse(p, by_off[off], op))
    n_resets = sum(b.action == "reset" for bs in ref.values() for b in bs)
    n_canary = sum(canary_like(b) for bs in ref.values() for b in bs)
    assert n_resets == 1 and n_canary == 2
    # ingest wrote every accepted binding to the bindings topic (the table gets them all)
    got_b = Counter(binding_wire.decode(o[2]).to_json() for o in bindings)
    want_b = Counter()
    for bs in ref.values():
        for b in bs:
            want_b[b.to_json()] += p.settings.partitions if b.action == "reset" else 1
    assert got_b == want_b

    # stats: exactly the reference ids, as many times as the reference has them (two equal
    # bindings, e.g. a lease renewed twice in one second, share their id: readers dedup by it)
    want = expected_ids(p, ref)
    assert sum(want.values()) == sum(len(bs) for bs in ref.values()) - n_resets - n_canary
    assert Counter(o[1].decode() for o in stats) == want
    assert all(json.loads(o[2])["id"] == o[1].decode() for o in stats)
    assert {json.loads(o[2])["operator"] for o in stats} == set(OPS)
    # one contribution per counted binding, naming its record
    assert Counter(c["rid"] for c in items(parts)) == want
    assert p.test_counts["stats_out"] == sum(want.values())

    # dead letters: exactly the rejected and too-late records, none from statistics
    assert sorted((d["offset"], d["reason"]) for d in dead) == sorted(bad.items())
    assert all(d["topic"] == by_off[d["offset"]].topic for d in dead)
    assert all(base64.b64decode(d["value_b64"]) == by_off[d["offset"]].value for d in dead if d["reason"] == "too-late")
    assert "rejected:stats-failed" not in p.test_counts

    # the previous release's path on the same bindings: byte for byte the same outputs
    for as_json in (False, True):
        s2, parts2, dead2, b2 = split(p, old_path(p, bindings, as_json=as_json))
        assert not dead2 and not b2
        assert sorted(s2) == sorted(stats)
        assert sorted(parts2) == sorted(parts)


def test_a_binding_that_fails_its_statistics_is_dead_lettered_once_and_still_mapped(pipeline, monkeypatch):
    """Any failure while pseudonymising one binding (simulated for one subscriber) costs that
    binding its statistics only: one ``stats-failed`` dead letter naming its raw record, every
    other binding's record and contribution, and its own binding still on the bindings topic."""
    from stream import binding_wire
    from stream.stats import StatsBuilder

    real = StatsBuilder.build_many

    def build_many(self, bindings, raw=None):
        if any(b.subscriber == "boom@isp.example" for b in bindings):
            raise RuntimeError("simulated pseudonymiser bug")
        return real(self, bindings, raw)

    monkeypatch.setattr(StatsBuilder, "build_many", build_many)
    p = pipeline
    t = NOW - 30_000
    subs = [f"kund-{i}@isp.example" for i in range(40)]
    subs.insert(17, "boom@isp.example")
    records = starts(p, subs, "100.70.0", t, "B")
    # a framsteget binding in the same batch is unaffected too
    records.append(rec(p.names.raw_radius, len(records), "radius-json",
                       radius("fram@isp.example", "100.71.0.1", "Start", t, "F1"), "framsteget"))
    out = asyncio.run(p.ingest.handle_batch(records))
    stats, parts, dead, bindings = split(p, out)

    assert [(d["reason"], d["topic"], d["offset"], d["detail"]) for d in dead] == \
        [("stats-failed", p.names.raw_radius, 17, "RuntimeError")]
    assert base64.b64decode(dead[0]["value_b64"]) == records[17].value
    assert p.test_counts["rejected:stats-failed"] == 1 and p.test_counts["bindings"] == 42
    # the failing one's binding still goes to the table
    assert sorted(binding_wire.decode(o[2]).subscriber for o in bindings) == sorted([*subs, "fram@isp.example"])
    ok = {"connect2ip": [b for r in records[:-1] for b in parse(p, r, "connect2ip") if b.subscriber != "boom@isp.example"],
          "framsteget": parse(p, records[-1], "framsteget")}
    want = expected_ids(p, ok)
    assert len(want) == 41
    assert Counter(o[1].decode() for o in stats) == want
    assert Counter(c["rid"] for c in items(parts)) == want
    assert p.test_counts["stats_out"] == 41


def test_consent_gates_the_records_at_ingest_and_every_binding_still_contributes(tmp_path, monkeypatch):
    """junet requires consent: a stats record only for a subscriber the consent view allows
    (whatever the spelling: one identity for consent), a cell contribution for every binding;
    with the view not current, no record at all (fail closed) and still every contribution."""
    from stream import binding_wire
    from stream.consent import ConsentRecord, consent_key, grant, withdraw
    from stream.keyring import Keyring

    p = build(tmp_path, ("junet",), app_id="tsc")
    n = p.names
    ring = Keyring.create("junet", p.test_seeds["junet"])  # the operator's key file, as the CLI uses it
    view = p.stats.consent.view
    granted = [f"yes-{i}@isp.example" for i in range(6)] + ["02-00-5E-10-00-01"]  # a MAC as an operator types it
    for s in granted:
        view.apply(grant(ring, s, 1))
    for s in ("withdrawn@isp.example", "forgotten@isp.example"):
        view.apply(grant(ring, s, 1))
    view.apply(withdraw(ring, "withdrawn@isp.example", 2))
    view.apply(ConsentRecord.decode(consent_key(ring, "forgotten@isp.example").encode(), None))

    current = {"v": True}

    async def sync(*a, **kw):
        return current["v"]

    monkeypatch.setattr(p.stats.consent, "sync", sync)
    t = NOW - 30_000
    raws = []
    users = [*(g.upper() if i % 2 else g for i, g in enumerate(granted[:6])),  # granted, spelled otherwise
             "withdrawn@isp.example", "forgotten@isp.example", "never@isp.example"]
    for i, u in enumerate(users):
        raws.append(rec(n.raw_radius, len(raws), "radius-json", radius(u, f"100.72.0.{i + 1}", "Start", t, f"C{i}"),
                        "junet"))
    # a DHCP lease whose MAC was granted in another spelling; a NAT block (no subscriber)
    raws.append(rec(n.raw_dhcp, len(raws), "kea-hook", json.dumps({
        "hook": "lease4_renew", "LEASE4_ADDRESS": "10.72.0.1", "LEASE4_CLTT": str(t // 1000),
        "LEASE4_VALID_LIFETIME": "3600", "LEASE4_HWADDR": "02:00:5E:10:00:01"}).encode(), "junet"))
    raws.append(rec(n.raw_nat, len(raws), "ipfix-json", json.dumps({
        "natEvent": 16, "sourceIPv4Address": "100.127.0.9", "postNATSourceIPv4Address": "198.51.100.9",
        "portRangeStart": 1024, "portRangeEnd": 2047, "observationTimeMilliseconds": t}).encode(), "junet"))

    all_b = [b for r in raws for b in parse(p, r, "junet")]
    assert len(all_b) == len(raws)
    yes = {g.casefold() for g in granted[:6]} | {"02:00:5e:10:00:01"}
    allowed = [b for b in all_b if b.subscriber is not None and b.subscriber.casefold() in yes]
    assert len(allowed) == 7  # six RADIUS + the lease

    out = asyncio.run(p.ingest.handle_batch(raws))
    stats, parts, dead, bindings = split(p, out)
    assert not dead and len(bindings) == len(all_b)
    assert Counter(o[1].decode() for o in stats) == expected_ids(p, {"junet": allowed})
    assert Counter(c["rid"] for c in items(parts)) == expected_ids(p, {"junet": all_b})
    assert p.test_counts["stats_no_consent"] == len(all_b) - len(allowed)
    # the old path, same view: the same records and contributions
    s2, parts2, _, _ = split(p, old_path(p, bindings))
    assert sorted(s2) == sorted(stats) and sorted(parts2) == sorted(parts)

    # the consent view not current: fail closed for records, contributions all the same
    current["v"] = False
    out = asyncio.run(p.ingest.handle_batch(raws))
    stats, parts, dead, bindings = split(p, out)
    assert stats == [] and not dead and len(bindings) == len(all_b)
    assert Counter(c["rid"] for c in items(parts)) == expected_ids(p, {"junet": all_b})
    assert [binding_wire.decode(o[2]).subscriber for o in bindings] == [b.subscriber for b in all_b]


def test_a_batch_without_accepted_bindings_makes_no_statistics(pipeline, monkeypatch):
    """Rejected, too-late-only and heartbeat-only batches never reach the statistics port."""
    from agents.kafka_io import HEARTBEAT_KEY

    p = pipeline
    calls = []
    real = p.ingest.stats

    async def spy(bindings, origins):
        calls.append(len(bindings))
        return await real(bindings, origins)

    p.ingest.stats = spy
    out = asyncio.run(p.ingest.handle_batch([
        Rec(p.names.raw_radius, 0, 0, HEARTBEAT_KEY, None, []),
        rec(p.names.raw_radius, 1, "radius-json", b"[]", "connect2ip"),
    ]))
    assert calls == [] and len(out) == 1 and out[0][0] == p.names.deadletter
    out = asyncio.run(p.ingest.handle_batch([rec(p.names.raw_radius, 2, "radius-json",
                                                 radius("u@isp.example", "100.73.0.1", "Start", NOW - 1000, "S"),
                                                 "connect2ip")]))
    assert calls == [1] and sum(o[0] == p.names.stats for o in out) == 1


def test_only_a_batch_with_a_consent_gated_binding_waits_for_the_consent_view(tmp_path, monkeypatch):
    """Ingest writes the bindings the lawful answers come from: a batch without a binding of a
    consent-required operator must not wait on the consent topic (a consent outage would hold
    every operator's bindings up to the sync timeout)."""
    p = build(tmp_path, ("connect2ip", "junet"), app_id="tsw")
    calls = []

    async def sync(*a, **kw):
        calls.append(1)
        return True

    monkeypatch.setattr(p.stats.consent, "sync", sync)
    t = NOW - 30_000
    c2 = rec(p.names.raw_radius, 0, "radius-json", radius("a@isp.example", "100.74.0.1", "Start", t, "W1"), "connect2ip")
    ju = rec(p.names.raw_radius, 1, "radius-json", radius("b@isp.example", "100.74.0.2", "Start", t, "W2"), "junet")
    out = asyncio.run(p.ingest.handle_batch([c2]))
    assert calls == [] and sum(o[0] == p.names.stats for o in out) == 1
    out = asyncio.run(p.ingest.handle_batch([c2, ju]))
    assert calls == [1]
    assert sum(o[0] == p.names.stats for o in out) == 1   # junet's subscriber gave no consent
    assert sum(o[0] == p.names.aggregate_parts for o in out) == 2


def test_a_binding_that_cannot_be_serialised_for_its_id_is_dead_lettered_and_the_batch_goes_on(pipeline, monkeypatch):
    """The record id's input (``Binding.to_json``) failing for one binding must not make ingest's
    handler raise: the stage would retry the batch for ever and the table would stall.  That
    binding's raw record is dead-lettered ``stats-failed`` once; the others keep their statistics
    and every binding still goes to the bindings topic."""
    real = Binding.to_json

    def to_json(self):
        if self.subscriber == "odd@isp.example":
            raise ValueError("simulated serialiser bug")
        return real(self)

    monkeypatch.setattr(Binding, "to_json", to_json)
    p = pipeline
    t = NOW - 30_000
    subs = [f"kund-{i}@isp.example" for i in range(12)]
    subs.insert(5, "odd@isp.example")
    records = starts(p, subs, "100.72.0", t, "J")
    out = asyncio.run(p.ingest.handle_batch(records))
    stats, parts, dead, bindings = split(p, out)
    assert [(d["reason"], d["offset"], d["detail"]) for d in dead] == [("stats-failed", 5, "ValueError")]
    assert len(bindings) == len(subs)
    monkeypatch.setattr(Binding, "to_json", real)
    want = expected_ids(p, {"connect2ip": [b for r in records for b in parse(p, r, "connect2ip")
                                           if b.subscriber != "odd@isp.example"]})
    assert len(want) == 12
    assert Counter(o[1].decode() for o in stats) == want
    assert Counter(c["rid"] for c in items(parts)) == want


@pytest.mark.parametrize("version", [None, "1", "2"])
def test_a_cells_bindings_leave_in_one_message_unless_version_1_is_asked_for(tmp_path, monkeypatch, version):
    """Version 2 by default: one contribution message per cell of the batch.  During a rolling
    upgrade from a release whose aggregate stage reads version 1 only, IPANON_CONTRIBUTION_VERSION=1
    keeps one message per binding.  Either way the same per-binding contributions."""
    from stream.aggregate import decode_contribution
    from stream.binding_wire import decode

    if version is not None:
        monkeypatch.setenv("IPANON_CONTRIBUTION_VERSION", version)
    p = build(tmp_path, ("connect2ip",), app_id=f"tcv{version or 0}")
    t = NOW - 30_000
    recs = [rec(p.names.raw_radius, i, "radius-json", radius(f"u{i}@isp.example", f"100.75.0.{i + 1}", "Start", t, f"C{i}"),
                "connect2ip") for i in range(12)]  # one /24: one cell
    _, parts, dead, bindings = split(p, asyncio.run(p.ingest.handle_batch(recs)))
    assert not dead and len(bindings) == 12
    assert [decode_contribution(o[2])["v"] for o in parts] == ([1] * 12 if version == "1" else [2])
    each = items(parts)
    assert all(c["holder"] for c in each) and len({c["holder"] for c in each}) == 12
    assert Counter(c["rid"] for c in each) == expected_ids(p, {"connect2ip": [decode(o[2]) for o in bindings]})


def test_an_unknown_contribution_version_is_a_configuration_error(tmp_path, monkeypatch):
    from stream.errors import ConfigError

    monkeypatch.setenv("IPANON_CONTRIBUTION_VERSION", "3")
    with pytest.raises(ConfigError, match="IPANON_CONTRIBUTION_VERSION='3': expected 1 or 2"):
        build(tmp_path, ("connect2ip",), app_id="tcv3")
