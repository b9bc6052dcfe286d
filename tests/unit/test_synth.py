"""``stream.synth``: the demo's generator and its ground truth.

The truth is what the demo checks the worker against, so it is checked here against a model
built independently from the records themselves, parsed by the real parsers (``stream.parse``):
whatever the worker reads is what the truth claims."""

from __future__ import annotations

import ipaddress
import json
import random

from stream.parse import parse_record
from stream.synth import KEA4_HEADER, generate

NOW = 1_796_500_000_000
OPS = ["opa", "opb", "opc"]


def traffic(**kw):
    return generate(OPS, now_ms=NOW, seed=3, addresses_per_operator=6, dhcp_addresses=3, blocks_per_operator=3, **kw)


def test_deterministic_for_a_seed_and_time():
    a, b = traffic(), traffic()
    assert (a.records, a.dhcp, a.nat, a.truth, a.leases, a.blocks) == (b.records, b.dhcp, b.nat, b.truth, b.leases,
                                                                       b.blocks)


def test_radius_only_by_default():
    t = generate(OPS, now_ms=NOW, seed=3, addresses_per_operator=6)
    assert t.records and not t.dhcp and not t.nat and not t.leases and not t.blocks


def test_kea_rows_parse_to_the_leases_of_the_truth():
    t = traffic()
    model = []
    for op in OPS:
        rows = t.dhcp[op]
        assert rows[0] == KEA4_HEADER and len(rows) > 1
        for row in rows[1:]:
            [b] = parse_record("kea-csv", f"{KEA4_HEADER}\n{row}".encode(), operator=op)
            assert b.action == "start"
            model.append((op, str(b.ip.network_address), b.hwaddr, b.at_ms, b.until_ms))
    assert sorted(model) == sorted((x.operator, x.v4, x.subscriber, x.start_ms, x.end_ms) for x in t.leases)
    assert t.dhcp_count == len(model)


def test_leases_of_one_address_never_overlap_and_stay_out_of_the_radius_pool():
    t = traffic()
    by_addr: dict = {}
    for x in t.leases:
        by_addr.setdefault((x.operator, x.v4), []).append((x.start_ms, x.end_ms))
    for ivs in by_addr.values():
        ivs.sort()
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(ivs, ivs[1:]))
    assert not {x.v4 for x in t.leases} & {x.v4 for x in t.truth}


def test_cgnat_lines_parse_to_blocks_inside_one_ended_holding():
    t = traffic()
    parsed = {}
    for op in OPS:
        for line in t.nat[op]:
            [b] = parse_record("a10", line.encode(), operator=op)
            key = (op, str(b.ip.network_address), b.port_first, b.port_last, str(b.inside_ip))
            parsed.setdefault(key, {})[b.action] = b.at_ms
    assert {k: (v["start"], v["stop"]) for k, v in parsed.items()} == {
        (b.operator, b.public, b.port_first, b.port_last, b.inside): (b.start_ms, b.end_ms) for b in t.blocks}
    holdings = [*t.truth, *t.leases]
    for b in t.blocks:
        # exactly one holding of the inside address covers the whole block
        covering = [h for h in holdings if h.operator == b.operator and h.v4 == b.inside and h.end_ms is not None
                    and h.start_ms <= b.start_ms and b.end_ms <= h.end_ms]
        assert len(covering) == 1, b
    # blocks of one public address never share a port
    for op in OPS:
        ports = [p for b in t.blocks if b.operator == op for p in range(b.port_first, b.port_last + 1)]
        assert len(ports) == len(set(ports))


def _holder_model(t, op, v4, at):
    """Reference: replay the parsed RADIUS records and the Kea rows of that address."""
    held = []
    for r in t.records[op]:
        if r.get("Framed-IP-Address") != v4:
            continue
        [b, *_] = parse_record("radius-json", json.dumps(r).encode(), operator=op)
        held.append((r["Acct-Session-Id"], r["Acct-Status-Type"], b.at_ms, r["User-Name"]))
    sessions: dict = {}
    for sid, st, at_ms, who in held:
        s = sessions.setdefault(sid, {"who": who, "start": None, "stop": None})
        if st == "Start":
            s["start"] = at_ms
        elif st == "Stop":
            s["stop"] = at_ms
    hits = [s["who"] for s in sessions.values() if s["start"] <= at < (s["stop"] or NOW + 1)]
    for row in t.dhcp.get(op, [])[1:]:
        addr, hw, _, life, expire = row.split(",")[:5]
        if addr == v4 and (int(expire) - int(life)) * 1000 <= at < int(expire) * 1000:
            hits.append(hw)
    assert len(hits) <= 1
    return hits[0] if hits else None


def test_queries_and_nat_queries_expect_what_the_records_say():
    t = traffic()
    rng = random.Random(5)
    qs = list(t.queries(60, rng))
    assert any(q["expect"] is None for q in qs) and any(q["expect"] for q in qs)
    assert any(ipaddress.ip_address(q["ip"]).version == 6 for q in qs)
    assert any(q["ip"].startswith("100.65.") for q in qs)  # DHCP-held addresses are asked too
    for q in qs:
        if ipaddress.ip_address(q["ip"]).version == 4:
            assert q["expect"] == _holder_model(t, q["operator"], q["ip"], q["at_ms"]), q
    for q in t.nat_queries(30, rng):
        [b] = [b for b in t.blocks if b.operator == q["operator"] and b.public == q["ip"]
               and b.port_first <= q["port"] <= b.port_last]
        assert b.start_ms <= q["at_ms"] < b.end_ms
        assert q["expect"] is not None
        assert q["expect"] == _holder_model(t, q["operator"], b.inside, q["at_ms"]), q
        # outside the block's ports, nobody is behind that public address
        assert t.nat_holder(q["operator"], q["ip"], 65535, q["at_ms"]) is None
