"""stream.stats: records carry no raw identifier, pseudonyms are keyed per epoch, ids are
deterministic, and the address scheme follows the operator's policy."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path

import pytest

from stream.config import AddressScheme, load_operators
from stream.keyring import Keyring, epoch_of
from stream.model import Binding, parse_network
from stream.pseudonym import IpcryptPfx
from stream.stats import FIELDS, STATS_SCHEMA_VERSION, StatsBuilder, bucket_of

OPS = load_operators(Path(__file__).resolve().parents[2] / "config" / "operators")
SEED = bytes(range(32))
T0 = 1_717_999_200_000 + 123_456  # 2024-06-10T06:02:03.456Z

SUB = "kund-4711@isp.example"


def radius(action="start", at=T0, sub=SUB, ip="100.64.12.34", **kw):
    return Binding(kind="radius", action=action, operator="junet", ip=parse_network(ip), subscriber=sub,
                   session="0A0B0C0D-00000042", nas="192.0.2.10", at_ms=at, hwaddr="02:00:5e:10:00:01",
                   circuit_id="ge-0/0/1.101", **kw)


def nat(at=T0):
    return Binding(kind="nat", action="start", operator="junet", ip=parse_network("198.51.100.7"),
                   subscriber=None, session=None, nas=None, at_ms=at,
                   inside_ip=ipaddress.ip_address("100.64.99.5"), port_first=1024, port_last=2047)


def builder(op="junet", address=None, subscriber=None, epoch=None):
    pol = OPS[op]
    st = pol.statistics
    if address is not None:
        st = dataclasses.replace(st, address=AddressScheme.parse(address, where="test"))
    if subscriber is not None:
        st = dataclasses.replace(st, subscriber=subscriber)
    pol = dataclasses.replace(pol, statistics=st)
    e = epoch_of(T0, pol.key_epoch_ms) if epoch is None else epoch
    return StatsBuilder(pol, Keyring.create(pol.name, SEED, epoch=e))


def with_op(b, op):
    return dataclasses.replace(b, operator=op)


def test_record_has_exactly_the_schema_fields_and_no_raw_value():
    b = radius(octets_in=5, octets_out=7, session_time_s=60, action="stop")
    [x] = builder().build_many([b])
    rec = x.record
    assert tuple(rec) == FIELDS and rec["v"] == STATS_SCHEMA_VERSION == 3
    text = json.dumps(rec)
    for raw in (SUB, "100.64.12.34", "0A0B0C0D", "192.0.2.10", "02:00:5e:10:00:01", "ge-0/0/1.101", str(T0)):
        assert raw not in text
    assert rec["bucket_ms"] == bucket_of(T0) == 1_717_999_200_000 and rec["bucket_len_ms"] == 3_600_000
    # the profile's default counters scheme: log2 (largest power of two <= value)
    assert rec["counters"] == "log2" and (rec["octets_in"], rec["octets_out"], rec["session_time_s"]) == (4, 4, 32)
    assert rec["epoch"] == epoch_of(T0, 7 * 86_400_000)
    assert len(rec["subscriber"]) == 32 and len(rec["id"]) == 32 and rec["nat_block_size"] is None


def test_pseudonyms_equal_the_documented_derivation():
    bld = builder()
    [x] = bld.build_many([radius()])
    e = x.record["epoch"]
    h = bld.ring.hmac(e)
    assert x.record["subscriber"] == h.pseudonym("subscriber\0" + SUB)
    assert x.record["id"] == h.pseudonym("record\0" + radius().to_json().decode())
    # ipcrypt-pfx under the epoch's pfx key: the record's address is the scheme's output
    pfx = IpcryptPfx(bld.ring.scheme_key("ipcrypt-pfx", e))
    assert x.record["ip"] == str(pfx.encrypt(ipaddress.ip_address("100.64.12.34")))
    assert x.cell == str(ipaddress.ip_network((pfx.encrypt(ipaddress.ip_address("100.64.12.34")), 24), strict=False))


def test_same_subscriber_same_pseudonym_within_an_epoch_different_across_epochs():
    bld = builder(epoch=0)
    week = 7 * 86_400_000
    a, b, c = bld.build_many([radius(at=T0), radius(at=T0 + 3_600_000, ip="100.64.0.1"),
                              radius(at=T0 + week)])
    assert a.record["subscriber"] == b.record["subscriber"]
    assert a.record["epoch"] + 1 == c.record["epoch"]
    assert a.record["subscriber"] != c.record["subscriber"]
    assert a.record["id"] != c.record["id"]


def test_record_ids_are_deterministic_and_distinct():
    bs = [radius(), radius(action="stop", at=T0 + 1000), radius(sub="other")]
    one = [x.record for x in builder().build_many(bs)]
    two = [x.record for x in builder().build_many(bs)]
    assert one == two
    assert len({r["id"] for r in one}) == 3
    # the agent passes the bytes it read from the bindings topic: same ids
    assert [x.record for x in builder().build_many(bs, [b.to_json() for b in bs])] == one


def test_destroyed_epoch_is_reported_late_not_pseudonymised():
    e = epoch_of(T0, 7 * 86_400_000)
    bld = builder(epoch=e + 1)
    out = bld.build_many([radius(at=T0), radius(at=T0 + 7 * 86_400_000)])
    assert len(out) == 1 and out[0].record["epoch"] == e + 1
    assert len(bld.late) == 1 and bld.late[0].at_ms == T0


def test_truncate_policy_keeps_the_network_and_the_prefix_cell():
    bld = builder("connect2ip")
    [v4, v6] = bld.build_many([with_op(radius(), "connect2ip"),
                               with_op(radius(ip="2001:db8:200:ab00::/56"), "connect2ip")])
    # prefixlen is the length of what ``ip`` holds: the truncated network, not the original's 32 or 56
    assert v4.record["ip"] == "100.64.12.0" and v4.record["prefixlen"] == 24 and v4.cell == "100.64.12.0/24"
    assert v6.record["ip"] == "2001:db8:200::" and v6.record["prefixlen"] == 48
    [short] = bld.build_many([with_op(radius(ip="100.64.0.0/20"), "connect2ip")])  # shorter than the cut: kept
    assert (short.record["ip"], short.record["prefixlen"]) == ("100.64.0.0", 20)
    assert v6.cell == "2001:db8:200::/48"


@pytest.mark.parametrize("scheme", ["ipcrypt-pfx", "cryptopan"])
def test_prefix_preserving_schemes_keep_shared_prefixes_in_records_and_cells(scheme):
    bld = builder(address=scheme)
    a, b = bld.build_many([radius(ip="100.64.12.34"), radius(ip="100.64.12.200", sub="x")])
    assert a.cell == b.cell and a.record["ip"] != b.record["ip"]
    assert a.record["ip"].rsplit(".", 1)[0] == b.record["ip"].rsplit(".", 1)[0]
    assert "100.64.12" not in a.record["ip"]
    [p] = bld.build_many([radius(ip="2001:db8:200:ab00::/56")])
    assert ipaddress.ip_network(p.record["ip"] + "/56")  # host bits masked to the bound prefix


def test_ipcrypt_det_cells_are_det_tokens_of_the_truncated_network():
    bld = builder(address="ipcrypt-det")
    a, b, c = bld.build_many([radius(ip="100.64.12.34"), radius(ip="100.64.12.200", sub="x"),
                              radius(ip="100.64.13.1", sub="y")])
    assert a.cell == b.cell != c.cell
    assert a.record["ip"] != b.record["ip"] and "100.64.12" not in a.cell


def test_drop_schemes():
    bld = builder(address="drop", subscriber="drop")
    [x] = bld.build_many([radius()])
    assert x.record["ip"] is None and x.record["subscriber"] is None and x.cell == "*"
    assert x.holder is not None  # still counted (distinct) by the aggregator, never emitted


def test_nat_record_has_no_subscriber_block_size_and_pseudonymised_inside():
    [x] = builder().build_many([nat()])
    rec = x.record
    assert rec["subscriber"] is None and rec["nat_block_size"] == 1024
    assert rec["inside"] and rec["inside"] != "100.64.99.5" and rec["ip"] != "198.51.100.7"
    assert x.holder is not None and x.holder != builder().build_many([radius()])[0].holder


def test_reset_bindings_produce_nothing():
    reset = Binding(kind="radius", action="reset", operator="junet", ip=None, subscriber=None, session=None,
                    nas="192.0.2.10", at_ms=T0)
    assert builder().build_many([reset]) == []


def test_builder_refuses_a_foreign_keyring():
    from stream.errors import CryptoError

    with pytest.raises(CryptoError):
        StatsBuilder(OPS["junet"], Keyring.create("hektor", SEED))
    assert "key" not in repr(builder()).lower().replace("keyring", "")


def test_published_json_schema_lists_exactly_the_emitted_fields():
    from stream.aggregate import AGGREGATE_SCHEMA_VERSION
    from stream.aggregate import FIELDS as AGG_FIELDS

    doc = json.loads((Path(__file__).resolve().parents[2] / "docs" / "stats-schema.json").read_text())
    st, ag = doc["$defs"]["stats"], doc["$defs"]["aggregate"]
    assert st["required"] == list(FIELDS) and set(st["properties"]) == set(FIELDS)
    assert st["properties"]["v"]["const"] == STATS_SCHEMA_VERSION
    assert ag["required"] == list(AGG_FIELDS) and set(ag["properties"]) == set(AGG_FIELDS)
    assert ag["properties"]["v"]["const"] == AGGREGATE_SCHEMA_VERSION
    [x] = builder().build_many([radius()])
    for name, value in x.record.items():  # the types the schema promises
        t = st["properties"][name].get("type")
        if t is not None:
            types = t if isinstance(t, list) else [t]
            ok = {"integer": int, "string": str, "null": type(None)}
            assert any(isinstance(value, ok[k]) and not isinstance(value, bool) for k in types), name


def test_counters_are_coarsened_per_profile_scheme():
    """Exact counters are a join key back to the bindings topic, so they are coarsened."""
    from stream.stats import coarsen

    b = radius(octets_in=1_234_567, octets_out=0, session_time_s=3_599, action="stop")
    got = {}
    for scheme in ("log2", "drop", "exact"):
        st = dataclasses.replace(OPS["junet"].statistics, counters=scheme)
        bld = StatsBuilder(dataclasses.replace(OPS["junet"], statistics=st),
                           Keyring.create("junet", SEED, epoch=epoch_of(T0, OPS["junet"].key_epoch_ms)))
        [x] = bld.build_many([b])
        got[scheme] = (x.record["counters"], x.record["octets_in"], x.record["octets_out"], x.record["session_time_s"])
    assert got == {"log2": ("log2", 1_048_576, 0, 2_048), "drop": ("drop", None, None, None),
                   "exact": ("exact", 1_234_567, 0, 3_599)}
    # reference model: [2^n, 2^(n+1)) named by its lower bound
    for v in (1, 2, 3, 4, 5, 1023, 1024, 1025, 2**40 + 7):
        c = coarsen(v, "log2")
        assert c <= v < 2 * c and c & (c - 1) == 0
    assert coarsen(None, "log2") is None and coarsen(0, "log2") == 0
    with pytest.raises(ValueError):
        coarsen(5, "round")


def test_record_timestamp_is_a_bucket_start_never_ahead_never_far_behind():
    """The Kafka timestamp must not carry the event time to the second: it would link a record to
    its binding."""
    from stream.stats import record_timestamp_ms

    H = 3_600_000
    now = 1_717_999_200_000 + 40 * 60_000 + 1_234           # 40 min into an hour
    assert record_timestamp_ms(bucket_of(now - 900), now, H) == bucket_of(now)          # live event
    assert record_timestamp_ms(bucket_of(now) - H, now, H) == bucket_of(now) - H       # previous bucket
    assert record_timestamp_ms(bucket_of(now) - 50 * H, now, H) == bucket_of(now) - H  # replay: not deleted on arrival
    assert record_timestamp_ms(bucket_of(now) + 3 * H, now, H) == bucket_of(now)       # event clock ahead
    for dt in range(0, 3 * H, 61_013):
        ts = record_timestamp_ms(bucket_of(now - dt), now, H)
        assert ts % H == 0 and ts <= now
