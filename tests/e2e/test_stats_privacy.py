"""Statistics that stay pseudonymous, attacked on the real broker the way they were first broken.
The worker runs as a child process; the tests read only Kafka.

- timestamps: a stats record's Kafka timestamp was its append time, within about a second of the
  event.  Now every stats record is stamped with its bucket start (CreateTime).
- the counter join: matching a stats record's exact octets, session time and bucket against the bindings
  topic relinked every pseudonym.  The same join, run by an attacker who reads both topics and
  knows the public ``counters`` scheme, against an operator with ``counters = "exact"`` (the
  before) and one with the default ``log2`` (the after).
- withdrawal: a withdrawal erased nothing and told nobody.  Now ``ipanon consent withdraw``
  publishes erasure notices naming the subscriber's pseudonyms, a consumer following
  docs/statistics.md drops exactly the withdrawn subscriber's records, and the records are
  physically gone from the stats topic within the profile's ``erasure`` bound.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest

from agents.cli import main as cli
from agents.kafka_io import read_all
from stream.keyring import Keyring, epoch_of
from stream.binding_wire import decode as decode_binding
from stream.model import Binding
from stream.stats import SUBSCRIBER_DOMAIN, bucket_of, coarsen
from tests.conftest import wait_for

pytestmark = pytest.mark.broker

KEY_EPOCH_MS = 86_400_000


def _profile(name: str, *, consent: bool = False, counters: str = "log2", bucket: str = "1h",
             erasure: str | None = None) -> tuple[str, str]:
    er = f'erasure = "{erasure}"\n' if erasure else ""
    return name, (f'name = "{name}"\nkey_epoch = "24h"\n[identity]\nradius_attribute = "User-Name"\n'
                  f'[purposes.lawful_access]\npromise = "181d"\n'
                  f'[purposes.statistics]\npromise = "24h"\nconsent_required = {str(consent).lower()}\nk = 2\n'
                  f'bucket = "{bucket}"\nsubscriber = "hmac-sha256"\naddress = "ipcrypt-pfx"\n'
                  f'counters = "{counters}"\n{er}')


def _radius(sub, action, at_s, ip, session, **acct):
    r = {"User-Name": sub, "Acct-Status-Type": action, "Acct-Session-Id": session,
         "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": ip, "Event-Timestamp": at_s}
    r.update(acct)
    return r


class Feeder:
    def __init__(self, w, bootstrap, tmp_path):
        self.w, self.bootstrap, self.tmp, self.n = w, bootstrap, tmp_path, 0

    def send(self, op, *recs):
        self.n += 1
        f = self.tmp / f"feed{self.n}.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in recs))
        assert cli(["produce", "--format", "radius-json", "--operator", op, "--topic", self.w.topics.raw_radius,
                    "--bootstrap", self.bootstrap, str(f)]) == 0


def _pseudonym(w, op, sub, at_ms):
    e = epoch_of(at_ms, KEY_EPOCH_MS)
    return Keyring.create(op, w.seeds[op]).hmac(e).pseudonym(SUBSCRIBER_DOMAIN + sub)


# -- the counter join (and the timestamps) ---------------------------------------------------------

def counter_join(stats: list[dict], bindings: list[Binding]) -> dict[str, set[str]]:
    """The attack, with no key: index the raw bindings by what a stats record shows —
    operator, kind, action, bucket and the counters after the record's (public) scheme — and
    intersect the candidates over every record of one pseudonym.  Returns pseudonym → the
    subscribers it can be (a single one = linked)."""
    schemes = {(r["operator"]): (r["counters"], r["bucket_len_ms"]) for r in stats}
    index: dict[tuple, set[str]] = defaultdict(set)
    for b in bindings:
        if b.operator not in schemes or b.ip is None or b.subscriber is None:
            continue
        scheme, blen = schemes[b.operator]
        index[(b.operator, b.kind, b.action, bucket_of(b.at_ms, blen), coarsen(b.octets_in, scheme),
               coarsen(b.octets_out, scheme), coarsen(b.session_time_s, scheme))].add(b.subscriber)
    cands: dict[str, set[str]] = {}
    for r in stats:
        c = index.get((r["operator"], r["kind"], r["action"], r["bucket_ms"], r["octets_in"], r["octets_out"],
                       r["session_time_s"]), set())
        cands[r["subscriber"]] = cands[r["subscriber"]] & c if r["subscriber"] in cands else set(c)
    return cands


def test_counter_join_links_every_pseudonym_with_exact_counters_and_only_outliers_with_log2(
        worker_factory, tmp_path, bootstrap):
    """Twelve subscribers with distinct but ordinary counters (one hour bucket, octets within a
    power-of-two class of each other) and one heavy outlier, fed to two operators that differ
    only in ``counters``.  Exact counters: every pseudonym linked (9 of 9 when first found).  log2:
    a pseudonym is linked exactly when its record's class is unique in its bucket — here only
    the outlier; each of the twelve others stays one of twelve candidates."""
    ops = ("cexact", "clog2")
    w = worker_factory(operators=(_profile("cexact", counters="exact"), _profile("clog2"))).start()
    feed = Feeder(w, bootstrap, tmp_path)
    t0 = int(time.time())          # live events: the bindings topic's append time shows the old leak
    subs = [f"kund-j{i:02d}@isp.example" for i in range(12)] + ["kund-big@isp.example"]
    recs = []
    for i, s in enumerate(subs):
        big = s.startswith("kund-big")
        ip, sess = f"100.64.7.{i + 1}", f"S-{i}"
        recs.append(_radius(s, "Start", t0, ip, sess))
        recs.append(_radius(s, "Stop", t0 + 1, ip, sess,
                            **{"Acct-Input-Octets": 3_000_000_000 if big else 10_000_000 + 1_237 * i,
                               "Acct-Output-Octets": 4_000_000_000 if big else 50_000_000 + 7_919 * i,
                               "Acct-Session-Time": 40_000 if big else 1_800 + 7 * i}))
    for op in ops:
        feed.send(op, *recs)
    want = 2 * len(recs)
    wait_for(lambda: len(read_all(bootstrap, w.topics.stats)) >= want, timeout_s=180, what="every stats record")
    read_at = time.time() * 1000
    raw_stats = read_all(bootstrap, w.topics.stats)
    stats = [json.loads(r.value) for r in raw_stats]
    bindings = [decode_binding(r.value) for r in read_all(bootstrap, w.topics.bindings)]
    assert len(stats) == want

    # timestamps: every stats record's timestamp is its bucket start (CreateTime), never the
    # append time; the raw bindings topic (LogAppendTime) shows what the old stamp gave away
    for r, rec in zip(raw_stats, stats):
        assert r.timestamp_type == 0 and r.timestamp == rec["bucket_ms"] and r.timestamp % rec["bucket_len_ms"] == 0
        assert r.timestamp <= read_at
    ev = {(b.operator, b.subscriber, b.action): b.at_ms for b in bindings}
    gaps_raw = sorted(r.timestamp - decode_binding(r.value).at_ms for r in read_all(bootstrap, w.topics.bindings))
    gaps_stats = sorted(ev[(rec["operator"], s, rec["action"])] - r.timestamp
                        for r, rec in zip(raw_stats, stats)
                        for s in subs if _pseudonym(w, rec["operator"], s, rec["bucket_ms"]) == rec["subscriber"])
    print(f"\ntimestamps: append time - event time on the LogAppendTime bindings topic: "
          f"{gaps_raw[0]}..{gaps_raw[-1]} ms; event time - stats timestamp: {gaps_stats[0]}..{gaps_stats[-1]} ms "
          f"(bucket {stats[0]['bucket_len_ms']} ms)")
    assert len(gaps_stats) == want

    truth = {op: {_pseudonym(w, op, s, (t0 + 1) * 1000): s for s in subs} for op in ops}
    figures = {}
    for op in ops:
        cands = counter_join([r for r in stats if r["operator"] == op], bindings)
        assert set(cands) == set(truth[op])
        linked = {p: next(iter(c)) for p, c in cands.items() if len(c) == 1}
        assert all(truth[op][p] == s for p, s in linked.items())        # a link is a correct link
        assert all(truth[op][p] in c for p, c in cands.items())          # the attacker never loses the truth
        figures[op] = (len(linked), len(cands), sorted(len(c) for c in cands.values()))
    print(f"counter join: linked pseudonyms exact {figures['cexact'][0]}/{figures['cexact'][1]}, "
          f"log2 {figures['clog2'][0]}/{figures['clog2'][1]}; log2 candidate set sizes {figures['clog2'][2]}")
    assert figures["cexact"][0] == len(subs)                             # before: all linked
    # after: exactly the reference model's prediction — a unique class in the bucket links
    assert figures["clog2"][0] == 1 and figures["clog2"][2] == [1] + [12] * 12
    linked_log2 = {s for p, c in counter_join([r for r in stats if r["operator"] == "clog2"], bindings).items()
                   if len(c) == 1 for s in c}
    assert linked_log2 == {"kund-big@isp.example"}


# -- withdrawal → notice, and the records gone within the bound ---------------------------------

def test_withdrawal_publishes_erasure_notices_and_the_records_are_gone_within_the_bound(
        worker_factory, tmp_path, bootstrap):
    from agents.kafka_admin import admin_client, topic_configs
    from stream.consent import honour_erasures
    from stream.policy import check_topic

    ERASURE_MS = 120_000
    LAG_MS = 30_000
    w = worker_factory(operators=(_profile("cjunet", consent=True, bucket="10s", erasure="2m"),),
                       ingest_lag_ms=LAG_MS).start()
    feed = Feeder(w, bootstrap, tmp_path)
    A, B = "kund-a@isp.example", "kund-b@isp.example"

    def consent(action, sub):
        assert cli(["consent", action, "--operator", "cjunet", "--keys", str(w.keys), "--bootstrap", bootstrap,
                    "--topic-prefix", w.topics.prefix, "--operators", str(w.operators_dir), sub]) == 0

    def stats():
        return [json.loads(r.value) for r in read_all(bootstrap, w.topics.stats)]

    now = int(time.time())
    pa, pb = (_pseudonym(w, "cjunet", s, now * 1000) for s in (A, B))
    of = lambda p: [r for r in stats() if r["subscriber"] == p]  # noqa: E731

    consent("grant", A)
    consent("grant", B)
    # one address for both: one bindings partition, so B's later record marks A's as processed
    feed.send("cjunet", _radius(A, "Start", now, "100.64.8.1", "S-A"),
              _radius(A, "Interim-Update", now + 1, "100.64.8.1", "S-A", **{"Acct-Input-Octets": 5000}),
              _radius(B, "Start", now, "100.64.8.1", "S-B"))
    wait_for(lambda: len(of(pa)) == 2 and len(of(pb)) == 1, timeout_s=120, what="A's and B's records")
    copy = stats()   # what a downstream consumer has stored by now

    consent("withdraw", A)
    withdrawn_at = time.monotonic()
    notices = [json.loads(r.value) for r in read_all(bootstrap, w.topics.erasures)]
    # the notice names A's pseudonym of every live epoch, and nobody else's
    from agents.ratchet_store import read_ring

    ring = read_ring(w.keys, "cjunet")
    live = range(ring.oldest_epoch, epoch_of(int(time.time() * 1000), KEY_EPOCH_MS) + 1)
    ref = Keyring.create("cjunet", w.seeds["cjunet"])
    assert {(n["epoch"], n["subscriber"]) for n in notices} == \
        {(e, ref.hmac(e).pseudonym(SUBSCRIBER_DOMAIN + A)) for e in live}
    assert pa in {n["subscriber"] for n in notices} and pb not in {n["subscriber"] for n in notices}
    assert all(n["operator"] == "cjunet" and n["reason"] == "consent-withdrawn" for n in notices)
    raw = b"".join((r.key or b"") + (r.value or b"") for r in read_all(bootstrap, w.topics.erasures))
    assert A.encode() not in raw and b"kund-" not in raw

    # a downstream consumer honouring the notice (docs/statistics.md) keeps exactly B's records
    kept = honour_erasures(copy, notices)
    assert {r["subscriber"] for r in kept} == {pb} and len(kept) == 1

    # after the withdrawal nothing new of A's (B's record on the same partition comes after it)
    feed.send("cjunet", _radius(A, "Stop", now + 2, "100.64.8.1", "S-A"),
              _radius(B, "Interim-Update", now + 2, "100.64.8.1", "S-B"))
    wait_for(lambda: len(of(pb)) >= 2, timeout_s=60, what="B's marker")
    assert len(of(pa)) <= 2 and all(r["action"] != "stop" for r in of(pa))

    # the bound: every stats-role topic's *effective* configs on the broker keep the erasure
    # promise (records written up to the withdrawal, in flight within the ingest lag)
    admin = admin_client(bootstrap)
    try:
        actual = topic_configs(admin, [w.topics.stats, w.topics.erasures])
    finally:
        admin.close()
    for name in (w.topics.stats, w.topics.erasures):
        bound = check_topic(w.plan.topic(name), actual[name], w.plan.broker, w.plan.params.heartbeat_ms)
        assert actual[name]["message.timestamp.type"] == "CreateTime"
        assert LAG_MS + bound <= ERASURE_MS, (name, bound)
    rows = [r for r in w.plan.rows if r.purpose == "erasure" and r.operator == "cjunet"]
    assert {r.topic for r in rows} >= {w.topics.stats, w.topics.erasures} and all(r.ok for r in rows)

    # and physically: retention removes A's records from the topic (waited for, not timed)
    wait_for(lambda: of(pa) == [], timeout_s=600, interval_s=5, what="A's records deleted by retention")
    print(f"\nwithdrawal: A's records physically gone {time.monotonic() - withdrawn_at:.0f} s after the withdrawal "
          f"(bound {ERASURE_MS // 1000} s incl. {LAG_MS // 1000} s ingest lag)")
