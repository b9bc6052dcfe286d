"""Adversary: what an analyst (reader of <prefix>-erasures) learns from the erasure notices of
``ipanon consent withdraw`` beyond the pseudonyms they must name.

Statistics records are stamped with their bucket start (c1a20d1) so that no exact time reaches
the analyst.  The notices were sent without a timestamp: the erasures topic (CreateTime, a stats
role topic) showed the exact millisecond of each withdrawal next to the subscriber's pseudonym.
And a batch withdrawal (``-`` from stdin, typically a sorted export) put the notices on the topic
in the order of the operator's list, so the order of pseudonyms told the order of the real ids."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from agents.cli import main
from agents.keystore import ensure_demo_keys
from stream.config import load_operators

REPO = Path(__file__).resolve().parents[2]


class _Fut:
    def get(self, timeout=None):
        return None


class _Producer:
    def __init__(self, sent):
        self.sent = sent

    def send(self, topic, key=None, value=None, timestamp_ms=None, **kw):
        self.sent.append((topic, key, value, timestamp_ms))
        return _Fut()

    def flush(self):
        pass

    def close(self):
        pass


@pytest.fixture
def sent(monkeypatch):
    import agents.kafka_io as kio

    out: list = []
    monkeypatch.setattr(kio, "producer", lambda *a, **kw: _Producer(out))
    return out


def test_notices_carry_no_exact_time_and_not_the_operators_order(tmp_path, monkeypatch, sent):
    keys = tmp_path / "keys"
    ensure_demo_keys(keys, ["junet"])
    subs = [f"kund-{i:04d}@isp.example" for i in range(30)]  # a sorted export
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(subs) + "\n"))
    rc = main(["consent", "withdraw", "--operator", "junet", "--keys", str(keys), "--operators",
               str(REPO / "config" / "operators"), "--bootstrap", "127.0.0.1:1", "--topic-prefix", "adv", "-"])
    assert rc == 0
    bucket = load_operators(REPO / "config" / "operators")["junet"].statistics.bucket_ms
    notices = [(json.loads(v), ts) for t, _k, v, ts in sent if t == "adv-erasures"]
    assert len(notices) >= len(subs)
    for v, ts in notices:
        assert ts is not None, "the record timestamp would be the producer's clock: the exact withdrawal time"
        assert ts == v["until_bucket_ms"] and ts % bucket == 0
    # the order on the topic must not be the order of the list (one epoch: one notice per subscriber)
    from agents.ratchet_store import index_ring
    from stream.stats import SUBSCRIBER_DOMAIN

    ring = index_ring(keys, "junet")
    e = notices[-1][0]["epoch"]
    listed = [ring.hmac(e).pseudonym(SUBSCRIBER_DOMAIN + s) for s in subs]
    on_topic = [v["subscriber"] for v, _ in notices if v["epoch"] == e]
    assert sorted(on_topic) == sorted(listed)
    assert on_topic != listed
