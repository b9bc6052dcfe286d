"""Hostile values of the wrong type, pinned to the reason (or path) they take.

The core may run compiled by mypyc, which checks annotations at run time: a value of the wrong
type then raises ``TypeError`` where the interpreted code goes on to its own check.  These
inputs once took a different reason (or path) compiled than interpreted; each test asserts
the one they take in both forms, so running this file against the compiled core catches a
regression.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from stream import aggregate as agg
from stream import binding_wire, mapping
from stream import intervals as iv
from stream.consent import ConsentRecord
from stream.errors import Rejected
from stream.keyring import Keyring
from stream.model import Binding, parse_network
from stream.pseudonym import HmacSha256
from stream.schedule import ExpirySchedule
from stream.stats import Built, coarsen, stats_record

T0 = 1_765_000_000_000


def test_reencoding_a_json_binding_without_an_operator_is_rejected():
    b = Binding.from_json(json.dumps({"v": 1, "kind": "radius", "action": "start", "ip": "100.64.0.1",
                                      "subscriber": "s", "at_ms": T0}).encode())
    assert b.operator is None
    with pytest.raises(Rejected) as e:
        binding_wire.encode(b)
    assert e.value.reason == "bad-binding"


@pytest.mark.parametrize("field,value", [("at_ms", 1.5), ("ip", "100.64.0.1"), ("inside_ip", 7), ("proto", "tcp")])
def test_encoding_a_field_of_the_wrong_type_is_rejected(field, value):
    b = Binding("nat", "start", "op", parse_network("203.0.113.9"), None, None, "nas", T0,
                inside_ip=parse_network("100.64.0.1").network_address, port_first=1024, port_last=2047)
    values = [getattr(b, f.name) for f in dataclasses.fields(b)]
    values[binding_wire._FIELD_POS[field]] = value  # as a decoder that skips Binding's checks builds it
    with pytest.raises(Rejected) as e:
        binding_wire.encode(binding_wire._unchecked(values))
    assert e.value.reason == "bad-binding"


def _stop_built(octets_in: object) -> Built:
    b = Binding.from_json(json.dumps({"v": 1, "kind": "radius", "action": "stop", "operator": "op",
                                      "ip": "100.64.0.1", "subscriber": "s", "at_ms": T0,
                                      "octets_in": octets_in, "octets_out": 5}).encode())
    rec = stats_record(b, record_id="00" * 16, epoch=3, subscriber=None, ip="100.64.0.0/24", counters="exact")
    return Built(b, 3, rec, "ab" * 16, "100.64.0.0/24")


def test_a_float_counter_of_an_old_json_binding_takes_the_version_1_path():
    x = _stop_built(1.5)
    assert x.binding.octets_in == 1.5 and x.record["octets_in"] == 1.5  # ``exact``: passed on as it is
    key, value = agg.ContributionEncoder().encode(x)
    assert (key, value) == agg.encode_contribution(agg.contribution(x))
    assert json.loads(value)["octets_in"] == 1.5
    assert agg.ContributionEncoder().cells([(x, "t")]) == [(key, value, "t")]  # alone, as version 1


def test_a_float_bucket_or_a_missing_operator_takes_the_version_1_path():
    x = _stop_built(7)
    nameless = Binding.from_json(x.binding.to_json().replace(b'"operator":"op",', b""))
    assert nameless.operator is None
    for odd in (Built(x.binding, x.epoch, {**x.record, "bucket_ms": 1.0}, x.holder, x.cell),
                Built(nameless, x.epoch, x.record, x.holder, x.cell)):
        assert agg.ContributionEncoder().encode(odd) == agg.encode_contribution(agg.contribution(odd))


def test_coarsen_takes_any_counter_and_log2_only_integers():
    assert coarsen(1.5, "exact") == 1.5 and coarsen(1.5, "drop") is None and coarsen(None, "log2") is None
    assert coarsen(True, "log2") == 1 and coarsen(1000, "log2") == 512
    with pytest.raises(AttributeError):  # as interpreted: a float has no bit_length
        coarsen(1.5, "log2")


def _resolve(address: object = "100.64.0.1", port: object = None, from_ms: object = T0, to_ms: object = T0 + 1,
             proto: object = None) -> dict:
    return mapping.resolve(address, port, from_ms, to_ms, now_ms=T0, rules=mapping.Rules(ttl_ms=10**9),
                           intervals_for=lambda slot, addr: [], owns=lambda net: True, proto=proto)


@pytest.mark.parametrize("kwargs,reason", [
    ({"proto": "tcp"}, "bad-protocol"), ({"proto": 6.0}, "bad-protocol"), ({"proto": 256}, "bad-protocol"),
    ({"proto": True}, "bad-protocol"), ({"port": "80"}, "bad-port"), ({"port": 80.0}, "bad-port"),
    ({"from_ms": float(T0)}, "bad-interval"), ({"to_ms": str(T0 + 1)}, "bad-interval"),
    ({"address": 1684275201}, "bad-address"), ({"address": None}, "bad-address"),
])
def test_a_lookup_value_of_the_wrong_type_is_refused_with_its_reason(kwargs, reason):
    with pytest.raises(Rejected) as e:
        _resolve(**kwargs)
    assert e.value.reason == reason


def test_a_well_typed_lookup_still_answers():
    assert isinstance(_resolve(port=80, proto=6), dict)


KEY = "op:" + "0" * 32


@pytest.mark.parametrize("value", [
    {"operator": 5, "state": "granted"}, {"operator": None, "state": "granted"},
    {"operator": "op", "state": 1}, {"operator": "op", "state": ["granted"]},
    {"operator": "op", "state": "granted", "purpose": 3}, {"operator": "op", "state": "granted", "purpose": None},
    {"operator": ["op"], "state": {"a": 1}},
])
def test_a_consent_field_of_the_wrong_type_is_not_a_consent_record(value):
    with pytest.raises(Rejected) as e:
        ConsentRecord.decode(KEY.encode(), json.dumps({"v": 1, **value}).encode())
    assert e.value.reason == "bad-consent-record"


def test_consent_reasons_of_well_typed_values_are_unchanged():
    for value, reason in (({"operator": "other", "state": "granted"}, "bad-consent-key"),
                          ({"operator": "op", "state": "maybe"}, "bad-consent-state"),
                          ({"operator": "op", "state": "granted", "purpose": "ads"}, "bad-purpose")):
        with pytest.raises(Rejected) as e:
            ConsentRecord.decode(KEY.encode(), json.dumps({"v": 1, **value}).encode())
        assert e.value.reason == reason
    assert ConsentRecord.decode(KEY.encode(), json.dumps({"v": 1, "operator": "op", "state": None}).encode()).state is None


@pytest.mark.parametrize("raw", [b"\x02\xff\x01\x00\x00\x00\xff", b"\x02\xff\x01\x00\x00\x00\x03\xff\xfe",
                                 b"\x02\x20\x01", b"\x02\xff\x05", b"\x03", b"\x02\xff\x01\x00\x00\x00\x0b\x01\x02"])
def test_a_bad_table_value_is_rejected_not_a_type_error(raw):
    with pytest.raises(Rejected) as e:
        iv.decode(raw)
    assert e.value.reason == "bad-value"


def test_float_expiry_in_the_schedule_is_its_ceiling():
    s = ExpirySchedule(width_ms=10)
    s.add(20.5, b"a")
    s.add(30, b"b")
    assert s.pop_due(29) == [] and s.pop_due(30) == [b"a", b"b"]
    with pytest.raises((ValueError, OverflowError)):
        s.add(math.nan, b"c")


def test_str_of_key_holders_is_their_redacted_repr():
    ring = Keyring.create("op", bytes(range(32)))
    assert str(ring) == repr(ring) and "redacted" in str(ring)
    h = HmacSha256(bytes(32))
    assert str(h) == repr(h) == "HmacSha256(key=<redacted>)"
