"""The stats stage's fast paths give what the plain definitions give:
``stream.stats.record_json`` is ``compact_json`` of a stats record, byte for byte;
``stream.aggregate.ContributionEncoder`` is ``encode_contribution(contribution(built))``; and
``decode_contribution``'s one-expression check accepts and rejects exactly what the field-by-
field checks do.  Random bindings through every operator's ``StatsBuilder``, fixed seed."""

from __future__ import annotations

import ipaddress
import json
import random
from pathlib import Path

import pytest

from stream import aggregate as agg
from stream.config import load_operators
from stream.errors import Rejected
from stream.keyring import Keyring
from stream.model import Binding, parse_network
from stream.stats import Built, StatsBuilder, compact_json, flat_json, record_json

OPS = load_operators(Path(__file__).resolve().parents[2] / "config" / "operators")
T0 = 1_765_000_000_000


def _built(n: int, seed: int) -> list[Built]:
    rng = random.Random(seed)
    texts = ["kund-1@isp.example", "a\"b\\c", "ümlaut", "\u2603\n\t", "S-0001"]
    out: list[Built] = []
    for name, pol in sorted(OPS.items()):
        builder = StatsBuilder(pol, Keyring.create(name, bytes(range(32))))
        bs = []
        for i in range(n):
            kind = rng.choice(("radius", "dhcp", "nat"))
            ip = parse_network(rng.choice(("100.64.0.1", "100.64.7.9", "2001:db8:1:200::/56", "203.0.113.9")))
            counter = lambda: rng.choice((None, 0, 5, 2**40, 2**70))  # noqa: E731
            bs.append(Binding(kind, rng.choice(("start", "update", "stop")), name, ip,
                              None if kind == "nat" else rng.choice(texts), rng.choice(texts + [None]), "nas",
                              T0 + rng.randrange(-10**8, 10**8),
                              inside_ip=ipaddress.ip_address("10.0.0.1") if kind == "nat" else None,
                              port_first=1024 if kind == "nat" else None, port_last=2047 if kind == "nat" else None,
                              octets_in=counter(), octets_out=counter(), session_time_s=counter()))
        out += builder.build_many(bs)
    return out


def test_record_json_is_the_compact_encoder():
    """The per-record topic's values are these bytes: they must be compact_json's, exactly."""
    built = _built(300, 5)
    assert len(built) > 1000 and record_json is not compact_json  # the fast path is in use
    for x in built:
        assert record_json(x.record) == compact_json(x.record)
    rec = dict(built[0].record)
    for odd in ({**rec, "octets_in": 1.5}, {**rec, "octets_out": True}, {**rec, "extra": 1},
                dict(reversed(rec.items())), {k: v for k, v in rec.items() if k != "ip"}):
        assert record_json(odd) == compact_json(odd)


def test_flat_json_takes_the_encoder_for_other_dicts():
    enc = flat_json(("a", "b"), [{"a": 1, "b": "x"}])
    assert enc is not compact_json
    for d in ({"a": 1, "b": "x\u2603"}, {"b": 1, "a": 2}, {"a": 1}, {"a": 1, "b": 2, "c": 3}, {"a": 1.5, "b": None},
              {"a": True, "b": None}, {"a": [1], "b": {}}):
        assert enc(d) == compact_json(d)


def test_contribution_encoder_is_encode_contribution():
    enc = agg.ContributionEncoder(limit=7)  # small: the cache is cleared along the way
    built = _built(300, 9)
    for x in built:
        assert enc.encode(x) == agg.encode_contribution(agg.contribution(x))
    x = next(b for b in built if b.binding.action == "stop")
    for odd in (Built(_with(x.binding, octets_in=1.5), x.epoch, x.record, x.holder, x.cell),
                Built(x.binding, x.epoch, {**x.record, "bucket_ms": 1.0}, x.holder, x.cell),
                Built(x.binding, x.epoch, {**x.record, "id": None}, None, x.cell)):
        assert enc.encode(odd) == agg.encode_contribution(agg.contribution(odd))


def _with(b: Binding, **kw) -> Binding:
    from dataclasses import replace

    return replace(b, **kw)


def _decode_by_fields(value):
    """decode_contribution's field-by-field checks alone (the reference)."""
    try:
        d = json.loads(value)
    except (ValueError, RecursionError):
        raise Rejected("bad-contribution", "not JSON") from None
    if not isinstance(d, dict) or d.get("v") != agg.CONTRIBUTION_VERSION:
        raise Rejected("bad-contribution", "v")
    for name in ("operator", "prefix"):
        if not isinstance(d.get(name), str):
            raise Rejected("bad-contribution", name)
    if d.get("kind") not in agg._KINDS or d.get("action") not in agg._ACTIONS:
        raise Rejected("bad-contribution", "kind")
    for name, lo in (("bucket_ms", 0), ("epoch", 0), ("octets_in", 0), ("octets_out", 0), ("bucket_len_ms", 1)):
        v = d.get(name)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise Rejected("bad-contribution", name)
    for name in ("holder", "rid"):
        if d.get(name) is not None and not isinstance(d[name], str):
            raise Rejected("bad-contribution", name)
    return d


def test_decode_contribution_accepts_and_rejects_what_the_field_checks_do():
    good = json.loads(agg.encode_contribution(agg.contribution(_built(5, 1)[0]))[1])
    values = [None, True, False, 0, 1, -1, 2, 1.0, 1.5, "", "x", "radius", "stop", [], {}]
    cases = [json.dumps(good).encode()]
    for k in list(good) + ["other"]:
        cases += [json.dumps({**good, k: v}).encode() for v in values]
        cases.append(json.dumps({n: v for n, v in good.items() if n != k}).encode())
    cases += [b"", b"[]", b"null", b"{", b'{"v":1} x', b"\xff", b" " + cases[0], cases[0] + b"\n"]
    accepted = 0
    for raw in cases:
        try:
            want = _decode_by_fields(raw)
        except Rejected as e:
            with pytest.raises(Rejected) as got:
                agg.decode_contribution(raw)
            assert got.value.reason == e.reason, raw
            continue
        assert agg.decode_contribution(raw) == want, raw
        accepted += 1
    assert accepted > 20
