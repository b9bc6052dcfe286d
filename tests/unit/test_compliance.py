"""stream.compliance: each figure against a reference model, the identity scanner
against what it must and must not flag, the page's determinism, the signature against edits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from stream import compliance as C
from stream.audit import AuditChain
from stream.config import DEFAULT_IDENTITY_FIELDS, load_operators, parse_operator
from stream.errors import ConfigError
from stream.model import Binding
from stream.policy import KAFKA_DEFAULTS, PlanParams, plan_topics

REPO = Path(__file__).resolve().parents[2]
OPS = load_operators(REPO / "config" / "operators")
H = 3_600_000


# -- the profile schema -----------------------------------------------------------------------


def _profile(extra: str = "") -> str:
    text = (REPO / "config" / "operators" / "connect2ip.toml").read_text()
    return text + extra


def test_profiles_declare_identity_fields_with_the_documented_default():
    assert DEFAULT_IDENTITY_FIELDS == ("name", "postal_address", "personal_number")
    assert all(op.identity_fields == DEFAULT_IDENTITY_FIELDS for op in OPS.values())
    op = parse_operator(_profile('\n[separation]\nidentity_fields = ["personal_number", "phone"]\n'),
                        file="connect2ip.toml")
    assert op.identity_fields == ("personal_number", "phone")


@pytest.mark.parametrize("bad, msg", [
    ('identity_fields = ["shoe_size"]', "separation.identity_fields: 'shoe_size' is not one of"),
    ('identity_fields = "name"', "separation.identity_fields: expected a list"),
    ('identity_fields = ["name", "name"]', "lists a field twice"),
    ('identity_feilds = ["name"]', "separation.identity_feilds: unknown key"),
])
def test_a_bad_identity_field_declaration_names_file_and_field(bad, msg):
    with pytest.raises(ConfigError, match="connect2ip.toml") as e:
        parse_operator(_profile(f"\n[separation]\n{bad}\n"), file="connect2ip.toml")
    assert msg in str(e.value)


# -- promises and bounds ----------------------------------------------------------------------


def test_promises_quote_the_policy_sentence():
    p = C.promises(OPS["connect2ip"])
    assert p[0]["purpose"] == "lawful_access" and p[0]["promise_ms"] == 24 * H
    assert p[0]["source"] == "Connect2IP raderar IP-adresser inom högt 24 timmar."
    junet = C.promises(OPS["junet"])
    assert [x["purpose"] for x in junet][:3] == ["lawful_access", "statistics", "aggregates"]


def test_store_rows_are_the_plan_rows_of_that_operator_and_fail_when_a_bound_exceeds_the_promise():
    plan = plan_topics(OPS, KAFKA_DEFAULTS, PlanParams())
    rows = C.store_rows(plan, plan.rows, "framsteget")
    topics = [r for r in rows if r["kind"] == "topic"]
    ref = [r for r in plan.rows if r.operator == "framsteget" and r.purpose is not None
           and not (("-raw-op-" in r.topic) and not r.topic.endswith("-raw-op-framsteget"))]
    assert [(r["store"], r["bound_ms"], r["promise_ms"]) for r in topics] == [
        (r.topic, r.bound_ms, r.promise_ms) for r in ref]
    assert [r["kind"] for r in rows[-2:]] == ["table", "disk"]
    assert rows[-1]["bound_ms"] == plan.retention["framsteget"].worst_case_ms and all(r["ok"] for r in rows)
    # a topic whose actual configs keep records longer than the promise: the row says so
    broken = [replace(r, bound_ms=r.promise_ms + 1) if r.topic.endswith("-bindings") else r for r in plan.rows]
    bad = [r for r in C.store_rows(plan, broken, "framsteget") if not r["ok"]]
    assert [r["store"] for r in bad] == ["ipanon-bindings"]



def test_store_rows_name_the_on_disk_store_and_its_bound_when_the_table_is_on_disk():
    from stream.disk_bound import DiskBound

    mem = C.store_rows(plan := plan_topics(OPS, KAFKA_DEFAULTS, PlanParams()), plan.rows, "framsteget")
    disk_plan = plan_topics(OPS, KAFKA_DEFAULTS, PlanParams(disk=DiskBound(600_000, 5_000, 60_000)))
    disk = C.store_rows(disk_plan, disk_plan.rows, "framsteget")
    assert mem[-2]["store"] == "mapping table (worker memory)" and "restored from its changelog" in mem[-1]["store"]
    assert disk[-2]["store"] == "mapping table (worker's on-disk store)"
    assert "RocksDB store" in disk[-1]["store"] and "11m 5s" in disk[-1]["store"]
    r = disk_plan.retention["framsteget"]
    assert r.disk_bound_ms == 665_000 and disk[-1]["bound_ms"] == r.worst_case_ms <= r.promise_ms

# -- epochs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("origin, period, oldest, frm, to", [
    (1_000, 1_000, 50, 0, 100_000), (1_000, 1_000, 50, 20_500, 40_000), (5_000, 7_000, 3, 0, 10**6),
    (0, 86_400_000, 20_000, 19_990 * 86_400_000 + 5, 20_010 * 86_400_000), (1_000, 1_000, 0, 0, 10**6),
    (1_000, 1_000, 10**6, 0, 500_000),
])
def test_epochs_destroyed_match_a_brute_force_count(origin, period, oldest, frm, to):
    f = C.epoch_figures(purpose="x", oldest_live_epoch=oldest, origin_ms=origin, period_ms=period, due_after_ms=3,
                        state_written_ms=None, from_ms=frm, to_ms=to)
    ref = [e for e in range(min(oldest, 10**6)) if frm <= origin + (e + 1) * period < to]
    assert f["destroyed_in_period"] == len(ref)
    assert [x["epoch"] for x in f["listed"]] == ref[:C.MAX_LISTED_EPOCHS]
    assert all(x["due_ms"] == x["end_ms"] + 3 for x in f["listed"])


@pytest.mark.parametrize("oldest, now", [(10, 0), (10, 14_000), (10, 16_000), (10, 16_999), (10, 17_000),
                                         (10, 95_500), (0, 5_000)])
def test_keys_past_due_are_counted_against_a_brute_force_model(oldest, now):
    origin, period, due, slack = 1_000, 1_000, 3_000, 2_000
    f = C.epoch_figures(purpose="x", oldest_live_epoch=oldest, origin_ms=origin, period_ms=period, due_after_ms=due,
                        state_written_ms=None, from_ms=0, to_ms=now, now_ms=now, slack_ms=slack)
    ref = [e for e in range(oldest, 10_000) if origin + (e + 1) * period + due + slack <= now]
    assert f["overdue"] == len(ref)
    assert f["overdue_since"] == (C.iso(origin + (oldest + 1) * period + due) if ref else None)


def test_keys_past_due_turn_the_verdict_red():
    e = C.epoch_figures(purpose="lawful_access", oldest_live_epoch=5, origin_ms=0, period_ms=1_000, due_after_ms=0,
                        state_written_ms=None, from_ms=0, to_ms=60_000, now_ms=60_000, slack_ms=1_000)
    r = _report(epochs=[e])
    assert e["overdue"] == 54 and r["verdict"]["kept"] is False
    assert "54 key epoch(s) past their destruction time" in r["verdict"]["problems"][0]
    assert 'data-figure="epochs.0.overdue" class="notkept">54<' in C.render_html(r)


def test_no_key_state_is_said_not_counted_as_zero_destroyed():
    f = C.epoch_figures(purpose="x", oldest_live_epoch=None, origin_ms=0, period_ms=1000, due_after_ms=0,
                        state_written_ms=None, from_ms=0, to_ms=10_000)
    assert f["state"] == "absent" and f["destroyed_in_period"] == 0


# -- holds and requests from a real trail -----------------------------------------------------


def _trail(events):
    chain = AuditChain()
    return [json.loads(chain.append(ev, ts)) for ts, ev in events]


def _req(kind, rid, basis, **kw):
    return {"type": kind, "request_id": rid, "authority": rid.split("/")[0], "basis": basis, "case_ref": "C-1",
            "request_digest": "d" * 64, **kw}


def test_requests_by_basis_and_outcome_count_each_request_once_in_its_period():
    L, I = "lek-law-enforcement", "ipred-court-order"
    trail = _trail([
        (100, _req("request-received", "p/0", L)), (101, _req("answered", "p/0", L, answer_kind="match")),  # before
        (1_000, _req("request-received", "p/1", L)), (1_001, _req("ready", "p/1", L)),
        (1_002, _req("answered", "p/1", L, answer_kind="no-data")),
        (1_100, _req("request-received", "p/2", L)), (1_101, _req("refused", "p/2", L, reason="scope-too-wide")),
        (1_200, _req("request-received", "i/3", I)), (1_201, _req("pending", "i/3", I, approvals=[], needed=2)),
        (1_300, _req("request-received", "i/4", I)), (1_301, _req("pending", "i/4", I, approvals=[], needed=2)),
        (1_900, _req("expired", "i/4", I, reason="expired")),
        (1_400, _req("request-received", "i/5", I)),
        (2_500, _req("answered", "i/5", I, answer_kind="match")),  # answered after the period: pending in it
        (1_500, {"type": "junk-summary", "identity": "unknown", "reason": "bad-signature", "count": 7, "from_ms": 0}),
        (3_000, _req("request-received", "p/6", L)),  # after
    ])
    f = C.request_figures(trail, from_ms=1_000, to_ms=2_000)
    assert f == {"total": 5, "unauthenticated_messages": 7, "by_basis": {
        I: {"expired: not enough approvals": 1, "pending at the end of the period": 2},
        L: {"answered: no-data": 1, "refused: scope-too-wide": 1}}}
    assert "p/1" not in json.dumps(f) and "C-1" not in json.dumps(f)


def test_holds_are_attributed_by_the_holds_topic_and_never_guessed():
    trail = _trail([
        (1_000, {"type": "legal-hold-set", "hold_id": "h1", "case_ref": "X"}),
        (4_000, {"type": "legal-hold-released", "hold_id": "h1", "case_ref": "X", "detail": "released"}),
        (1_500, {"type": "legal-hold-set", "hold_id": "h2", "case_ref": "X"}),           # still active
        (1_600, {"type": "legal-hold-set", "hold_id": "h3", "case_ref": "X"}),           # other operator
        (1_700, {"type": "legal-hold-set", "hold_id": "h4", "case_ref": "X"}),           # operator unknown
        (100, {"type": "legal-hold-set", "hold_id": "h0", "case_ref": "X"}),
        (200, {"type": "legal-hold-released", "hold_id": "h0", "case_ref": "X", "detail": "lapsed"}),  # before
    ])
    ops = {"h0": "a", "h1": "a", "h2": "a", "h3": "b"}
    f = C.hold_figures(trail, ops, operator="a", from_ms=900, to_ms=10_000)
    assert (f["count"], f["released"], f["active_at_end"], f["operator_not_recorded"]) == (2, 1, 1, 1)
    assert f["longest_ms"] == 10_000 - 1_500 and f["released_by"] == {"released": 1}


# -- separation -------------------------------------------------------------------------------


def _binding(subscriber: str, **kw) -> bytes:
    """A binding as the bindings topic carries it (``Binding.to_json``)."""
    d = {"kind": "radius", "action": "start", "operator": "connect2ip", "ip": "100.64.0.1", "subscriber": subscriber,
         "session": "S-1", "nas": "192.0.2.10", "at_ms": 1_796_000_000_000, **kw}
    return Binding.from_dict(d).to_json()


@pytest.mark.parametrize("value, field", [
    ("19121212-1212", "personal_number"), ("191212121212", "personal_number"), ("121212-1212", "personal_number"),
    ("kund 811228-9874 x", "personal_number"), ("701063-2391", "personal_number"),   # samordningsnummer
    ("Storgatan 12", "postal_address"), ("113 51 Stockholm", "postal_address"),
])
def test_the_scanner_finds_declared_identity_in_a_binding(value, field):
    s = C.IdentityScanner(DEFAULT_IDENTITY_FIELDS)
    s.scan_json("b", 0, 7, _binding(value), what="bindings")
    r = s.result()
    assert r["ok"] is False and [(h["field"], h["offset"]) for h in r["hits"]] == [(field, 7)]
    assert value not in json.dumps(r)  # where, never what


@pytest.mark.parametrize("form", ["binary", "json"])
def test_the_report_scans_bindings_topic_records_in_either_wire_form(form):
    """The bindings topic carries ``stream.binding_wire`` records (and, after an upgrade, the old
    JSON ones): the report decodes both, scans every field, and skips other operators' records."""
    from stream import binding_wire

    def record(subscriber: str, operator: str = "connect2ip") -> bytes:
        b = Binding.from_json(_binding(subscriber, operator=operator))
        return binding_wire.encode(b) if form == "binary" else b.to_json()

    s = C.IdentityScanner(DEFAULT_IDENTITY_FIELDS)
    s.scan_binding("b", 0, 7, record("kund 811228-9874 x"), what="bindings", operator="connect2ip")
    s.scan_binding("b", 0, 8, record("kund 811228-9874 x", "other"), what="bindings", operator="connect2ip")
    s.scan_binding("b", 0, 9, record("kund-4711@isp.example"), what="bindings", operator="connect2ip")
    r = s.result()
    assert [(h["field"], h["offset"]) for h in r["hits"]] == [("personal_number", 7)]
    assert r["records_scanned"] == 2


@pytest.mark.parametrize("value", ["kund-4711@isp.example", "19121212-1213", "0A0B0C0D-00000042", "1765000000",
                                   "02:00:5e:10:00:01", "ge-0/0/1.100:100-200", "Storgatan"])
def test_the_scanner_leaves_account_ids_and_technical_values_alone(value):
    s = C.IdentityScanner(DEFAULT_IDENTITY_FIELDS)
    s.scan_json("b", 0, 0, _binding(value, session=value), what="bindings")
    assert s.result()["ok"] is True and s.result()["records_scanned"] == 1


def test_declared_fields_decide_what_is_looked_for_and_field_names_count():
    s = C.IdentityScanner(("email",))
    s.scan_json("b", 0, 0, _binding("kund-4711@isp.example"), what="bindings")
    assert [h["field"] for h in s.result()["hits"]] == ["email"]
    s = C.IdentityScanner(DEFAULT_IDENTITY_FIELDS)
    s.scan_json("b", 0, 0, json.dumps({"operator": "connect2ip", "ip": "100.64.0.1", "namn": "x"}).encode(), what="")
    s.scan_json("b", 0, 1, json.dumps({"operator": "other", "ip": "100.64.0.1", "namn": "x"}).encode(), what="",
                operator="connect2ip")
    r = s.result()
    assert [(h["field"], h["offset"]) for h in r["hits"]] == [("name", 0)] and r["records_scanned"] == 1


def test_the_changelog_check_accepts_sealed_values_and_flags_plaintext():
    from stream.keyring import Keyring

    ring = Keyring.create("connect2ip", b"k" * 32, purpose="lawful_access", epoch=0)
    sealed = ring.seal(b"\x02" + b"x" * 30, 0, aad=b"connect2ip|i" + b"0" * 16)
    s = C.IdentityScanner(DEFAULT_IDENTITY_FIELDS)
    s.scan_sealed("cl", 0, 0, b"connect2ip|i" + b"0" * 16, sealed, what="changelog")
    s.scan_sealed("cl", 0, 1, b"connect2ip|i" + b"0" * 16, None, what="changelog")
    assert s.result()["ok"] is True
    s.scan_sealed("cl", 0, 2, b"connect2ip|i" + b"1" * 16,
                  json.dumps([{"holder": "19121212-1212", "start_ms": 1}]).encode(), what="changelog")
    r = s.result()
    assert [h["field"] for h in r["hits"]] == ["unsealed value", "personal_number"]
    assert r["scanned"][0] | {} == {**r["scanned"][0], "sealed_values": 1, "tombstones": 1, "unsealed_values": 1}


# -- the report, the page, the signature ------------------------------------------------------


def _report(**over):
    op = OPS["connect2ip"]
    plan = plan_topics(OPS, KAFKA_DEFAULTS, PlanParams())
    sep = C.IdentityScanner(op.identity_fields)
    sep.scan_json("ipanon-bindings", 0, 0, _binding("kund-4711@isp.example"), what="bindings")
    kw = dict(op=op, from_ms=1_796_000_000_000, to_ms=1_796_100_000_000, generated_ms=1_796_100_000_500,
              stores=C.store_rows(plan, plan.rows, op.name), bounds_source="Apache Kafka defaults",
              plan_params={"heartbeat_ms": 60_000}, epochs=[C.epoch_figures(
                  purpose="lawful_access", oldest_live_epoch=100, origin_ms=1_796_000_000_000 - 10 * 3_600_000,
                  period_ms=3_600_000, due_after_ms=4000, state_written_ms=1_796_099_000_000,
                  from_ms=1_796_000_000_000, to_ms=1_796_100_000_000)],
              expiries=C.expiry_figures([1_796_000_000_100], from_ms=1_796_000_000_000, to_ms=1_796_100_000_000,
                                        changelog_records=5, changelog_first_ms=1_796_000_000_000),
              holds=C.hold_figures([], {}, operator=op.name, from_ms=0, to_ms=1),
              requests=C.request_figures([], from_ms=0, to_ms=1), desk_operators=sorted(OPS),
              audit={"ok": True, "records": 3, "head": "ab" * 32, "last_checkpoint_seq": 2,
                     "last_checkpoint": "2026-12-01T00:00:00Z", "anchor_key_id": "k", "topic": "ipanon-audit",
                     "problem": None, "detail": ""},
              location={"bootstrap": "kafka:9092", "brokers": [], "replication_factor": 3, "data_dir": "/d",
                        "keys_dir": "/d/keys", "topics": []},
              separation=sep.result())
    kw.update(over)
    return C.build_report(**kw)


def test_the_page_is_deterministic_self_contained_and_says_when_nothing_is_measured():
    r = _report()
    page = C.render_html(r)
    assert page == C.render_html(json.loads(json.dumps(r)))  # a function of report.json alone
    assert "No canary measurements in this period" in page and r["canaries"]["measured"] is False
    assert "<script" not in page and "https://" not in page and 'src="' not in page
    assert "every promise kept" in page and "NOT KEPT" not in page
    for sid in ("promises", "bounds", "canaries", "epochs", "expiries", "holds", "requests", "audit", "location",
                "separation"):
        assert f'<section id="{sid}">' in page


def test_a_broken_store_a_broken_trail_or_found_identity_turns_the_verdict_red():
    base = _report()
    stores = [dict(s) for s in base["bounds"]["stores"]]
    stores[0].update(ok=False, bound="2d")
    for r in (_report(stores=stores), _report(audit={**base["audit"], "ok": False, "problem": "changed"}),
              _report(separation={**base["separation"], "ok": False, "hit_count": 1})):
        assert r["verdict"]["kept"] is False and len(r["verdict"]["problems"]) == 1
        assert 'class="notkept"' in C.render_html(r)
    with pytest.raises(C.ReportError, match="empty"):
        _report(to_ms=1_796_000_000_000)


def test_signature_covers_every_byte_of_both_files_and_the_manifest():
    key = ed25519.Ed25519PrivateKey.generate()
    files = {"report.json": b'{"operator": {"name": "connect2ip"}}\n', "report.html": b"<html>x</html>\n"}
    m = C.manifest(files, operator="connect2ip", signed_ms=1_796_000_000_000, public_key=key.public_key())
    mb, sig = C.sign(m, key)
    v = C.verify_files(files, mb, sig, key.public_key())
    assert (v.operator, v.signed_ms) == ("connect2ip", 1_796_000_000_000)
    for name in files:
        for i in range(len(files[name])):
            bad = dict(files)
            b = bytearray(bad[name])
            b[i] ^= 0x20
            bad[name] = bytes(b)
            with pytest.raises(C.ReportError, match=f"{name} was altered"):
                C.verify_files(bad, mb, sig, key.public_key())
    for i in range(len(mb)):
        b = bytearray(mb)
        b[i] ^= 0x01
        with pytest.raises(C.ReportError):
            C.verify_files(files, bytes(b), sig, key.public_key())
    with pytest.raises(C.ReportError, match="altered"):
        C.verify_files(files, mb + b"\n", sig, key.public_key())
    with pytest.raises(C.ReportError, match="trusted report key"):
        C.verify_files(files, mb, sig, ed25519.Ed25519PrivateKey.generate().public_key())
    with pytest.raises(C.ReportError, match="missing"):
        C.verify_files({"report.json": files["report.json"]}, mb, sig, key.public_key())
    # signed by this key for "junet", but the report is about connect2ip (adversary review)
    other = {**files, "report.json": b'{"operator": {"name": "connect2ip"}}\n'}
    m2 = C.manifest(other, operator="junet", signed_ms=1_796_000_000_000, public_key=key.public_key())
    with pytest.raises(C.ReportError, match="about operator 'connect2ip'"):
        C.verify_files(other, *C.sign(m2, key), key.public_key())


def test_instants():
    now = 1_796_000_000_000
    assert C.parse_instant("now", now_ms=now, where="--to") == now
    assert C.parse_instant("now-2h", now_ms=now, where="--from") == now - 2 * H
    assert C.parse_instant("2026-12-01", now_ms=now, where="--from") == 1_796_083_200_000
    assert C.parse_instant("2026-12-01T01:00+01:00", now_ms=now, where="--from") == 1_796_083_200_000
    assert C.parse_instant("1796000000000", now_ms=now, where="--from") == now
    with pytest.raises(ConfigError, match="--from: 'yesterday' is not a time"):
        C.parse_instant("yesterday", now_ms=now, where="--from")


def test_no_string_of_the_report_can_inject_markup():
    """Adversary: profile strings (display name, policy sentence), topic names, broker addresses
    and audit details all reach the page.  Every string of a report poisoned with markup that
    would break out of text or an attribute renders inert (escaped), and the page stays free of
    script and live external references."""
    x = '"><script>alert(1)</script><img src=x onerror=alert(2)><a href="https://evil.example/">'

    def poison(o):
        if isinstance(o, dict):
            return {k: poison(v) for k, v in o.items()}
        if isinstance(o, list):
            return [poison(v) for v in o]
        return o + x if isinstance(o, str) else o

    can = C.canary_results_section([_res(1, "table", 10, 3000)], operator="connect2ip", from_ms=T0,
                                   to_ms=T0 + 100_000, topic="ipanon-canary-results")
    page = C.render_html(poison(_report(canaries=can)))
    assert '<svg class="chart" id="canary-chart"' in page
    assert page.count("&lt;script&gt;") > 10  # the poison is on the page, escaped
    for live in ("<script", "<img", "<a href", "=\"https://"):
        assert live not in page, live


# -- canary measurements over the period (<prefix>-canary-results) ---------------------------

T0 = 1_796_000_000_000


def _res(canary, store, gone_s, per_ms, *, op="connect2ip", bound=50_000, promise=60_000):
    """One results-topic record as the worker writes it (stream.canary.result_records)."""
    return {"v": 1, "operator": op, "store": store, "canary": f"ipanon-canary-{op}-{canary}@canary.invalid",
            "inserted_at_ms": T0 + gone_s * 1000 - per_ms - 2000, "end_ms": T0 + gone_s * 1000 - per_ms,
            "gone_at_ms": T0 + gone_s * 1000, "persistence_ms": per_ms, "persistence_s": per_ms / 1000,
            "bound_ms": bound, "bound_s": bound / 1000, "promise_ms": promise, "promise_s": promise / 1000}


@pytest.mark.parametrize("values,p99", [
    ([7], 7),                                  # n=1: rank ⌈0.99⌉ = 1
    ([5, 1, 3], 5),                            # n=3: rank ⌈2.97⌉ = 3 → sorted [1,3,5][2]
    (list(range(100, 0, -1)), 99),             # n=100: rank 99 → 99 (max is 100)
    (list(range(1, 201)), 198),                # n=200: rank 198
    (list(range(1, 102)), 100),                # n=101: rank ⌈99.99⌉ = 100
])
def test_p99_is_the_nearest_rank_of_a_hand_sorted_list(values, p99):
    assert C.p99_nearest_rank(values) == p99
    assert C.p99_nearest_rank([]) is None


def test_canary_results_count_max_p99_per_store_in_the_period_only():
    """Reference by hand: table measurements in [T0, T0+1000 s): canaries 1..4 with 3, 9, 5, 4 s
    (sorted 3 4 5 9: max 9, p99 rank ⌈3.96⌉ = 4 → 9); canary 0 gone before the period and canary
    9 gone at the period's end (exclusive) are out; another operator's 70 s is not ours; canary 2
    reported twice (a restarted worker) counts once, its longer figure."""
    recs = [_res(0, "table", -1, 30_000), _res(1, "table", 10, 3000), _res(2, "table", 20, 8000),
            _res(2, "table", 21, 9000), _res(3, "table", 30, 5000), _res(4, "table", 40, 4000),
            _res(9, "table", 1000, 59_000), _res(1, "disk", 15, 7000), _res(5, "table", 50, 70_000, op="junet")]
    sec = C.canary_results_section(recs, operator="connect2ip", from_ms=T0, to_ms=T0 + 1_000_000, topic="t-cr")
    rows = {m["store"]: m for m in sec["measurements"]}
    assert sec["measured"] is True and set(rows) == {"table", "disk"}
    assert (rows["table"]["count"], rows["table"]["max_ms"], rows["table"]["p99_ms"]) == (4, 9000, 9000)
    assert (rows["disk"]["count"], rows["disk"]["max_ms"], rows["disk"]["p99_ms"]) == (1, 7000, 7000)
    assert rows["table"]["verdict"] == "kept" and rows["table"]["promise_ms"] == 60_000
    # the chart: one point per canary (its worst store), in time order
    assert [p["persistence_ms"] for p in sec["chart"]["points"]] == [7000, 9000, 5000, 4000]
    assert sec["canaries"] == 4 and sec["chart"]["promise_ms"] == 60_000 and sec["records_read"] == len(recs)
    empty = C.canary_results_section(recs, operator="connect2ip", from_ms=T0 + 2_000_000, to_ms=T0 + 3_000_000,
                                     topic="t-cr")
    assert empty["measured"] is False and empty["measurements"] == []


def test_p99_below_max_with_many_canaries_and_the_chart_is_binned():
    # 200 canaries: persistence 1..200 s; p99 = rank 198 → 198 s; max 200 s
    recs = [_res(i, "raw", 10 + i, i * 1000) for i in range(1, 201)]
    sec = C.canary_results_section(recs, operator="connect2ip", from_ms=T0, to_ms=T0 + 1_000_000, topic="t",)
    (row,) = sec["measurements"]
    assert (row["count"], row["max_ms"], row["p99_ms"]) == (200, 200_000, 198_000)
    assert row["verdict"] == "broken"  # 200 s > the 60 s promise
    many = [_res(i, "raw", i, 1000) for i in range(1, C.MAX_CHART_POINTS * 2 + 1)]
    s2 = C.canary_results_section(many, operator="connect2ip", from_ms=T0, to_ms=T0 + 10_000_000, topic="t")
    assert s2["chart"]["binned"] and len(s2["chart"]["points"]) <= C.MAX_CHART_POINTS
    assert s2["measurements"][0]["count"] == C.MAX_CHART_POINTS * 2  # the figures are never binned


def test_a_canary_over_the_promise_turns_the_verdict_red_and_the_chart_shows_the_promise():
    ok = C.canary_results_section([_res(1, "table", 10, 3000)], operator="connect2ip", from_ms=T0,
                                  to_ms=T0 + 100_000, topic="ipanon-canary-results")
    assert _report(canaries=ok)["verdict"]["kept"] is True
    bad = C.canary_results_section([_res(1, "table", 10, 3000), _res(2, "changelog", 20, 61_000)],
                                   operator="connect2ip", from_ms=T0, to_ms=T0 + 100_000, topic="ipanon-canary-results")
    r = _report(canaries=bad)
    assert r["verdict"]["kept"] is False and r["verdict"]["problems"] == ["changelog: measured persistence exceeds the promise"]
    page = C.render_html(r)
    assert page == C.render_html(json.loads(json.dumps(r)))  # deterministic, a function of report.json
    assert page.count('<svg class="chart" id="canary-chart"') == 1 and page.count('<circle class="canary"') == 2
    assert 'class="promise"' in page and "promise 1m" in page
    assert 'data-figure="canaries.measurements.0.p99">3s<' in page
    assert 'data-figure="canaries.measurements.1.count">1<' in page


def test_results_records_are_parsed_strictly():
    good = json.dumps(_res(1, "table", 10, 3000)).encode()
    assert C.parse_canary_result(good)["persistence_ms"] == 3000
    for bad in (b"", b"{", b"[]", json.dumps({**_res(1, "table", 10, 3000), "store": "attic"}).encode(),
                json.dumps({**_res(1, "table", 10, 3000), "persistence_ms": "3000"}).encode(),
                json.dumps({**_res(1, "table", 10, 3000), "gone_at_ms": True}).encode()):
        assert C.parse_canary_result(bad) is None, bad
