"""The lookup agent's decision per record (``agents.lookup.Lookups.answer_lookup``) and the lookup key on
disk, without a broker: what an outsider sends is never answered, always counted, and logged
at a bounded rate; what a key holder sends is answered, sealed."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from agents.keystore import LOOKUP_KEY_FILE, ensure_lookup_key, load_lookup_key
from stream.errors import ConfigError
from stream.lookup_wire import LookupSeal

NOW = 1_765_000_000_000


@pytest.fixture
def pipeline(tmp_path):
    from agents.app import NO_PARTS, Pipeline
    from agents.keystore import ensure_demo_keys
    from agents.runtime import OperatorRuntime
    from agents.settings import Settings
    from stream.config import load_operators

    pol = load_operators(Path(__file__).resolve().parents[2] / "config" / "operators")["connect2ip"]
    keys = tmp_path / "keys"
    ensure_demo_keys(keys, ["connect2ip"])
    s = Settings(bootstrap="127.0.0.1:1", app_id="tl", topic_prefix="tl", operators_dir=tmp_path / "ops",
                 keys_dir=keys, data_dir=tmp_path / "data", partitions=4, web_enabled=False)
    op = OperatorRuntime("connect2ip", ttl_ms=3_600_000, stats_key=b"k" * 32, policy=pol)
    p = Pipeline(s, {"connect2ip": op}, clock=lambda: NOW, parts=NO_PARTS)
    p.lookups.resolve = lambda operator, ip, port, lo, hi: {"status": "ok", "holders": [{"subscriber": "alice@isp.example"}]}
    return p


def test_the_worker_creates_a_private_key_and_refuses_a_readable_one(pipeline, tmp_path):
    path = tmp_path / "keys" / LOOKUP_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_lookup_key(tmp_path / "keys") == bytes.fromhex(path.read_text().strip())
    ensure_lookup_key(tmp_path / "keys")  # never replaced once made
    assert load_lookup_key(tmp_path / "keys") == bytes.fromhex(path.read_text().strip())
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_lookup_key(tmp_path / "keys")
    with pytest.raises(ConfigError, match="not found"):
        load_lookup_key(tmp_path / "elsewhere")


def test_outsiders_get_no_answer_and_are_counted(pipeline, caplog):
    raw = json.dumps({"id": "x", "operator": "connect2ip", "ip": "100.64.12.34", "port": None,
                      "from_ms": 0, "to_ms": NOW}).encode()
    with caplog.at_level(logging.WARNING, logger="ipanon.lookups"):
        for _ in range(50):
            assert pipeline.lookups.answer_lookup(raw, 0, NOW) is None
    assert pipeline.counters["lookup_refused:unauthenticated"] == 50
    lines = [r for r in caplog.records if r.name == "ipanon.lookups"]
    assert len(lines) == 1 and "unauthenticated" in lines[0].getMessage()  # rate-limited
    assert "100.64" not in caplog.text


def test_key_holders_get_a_sealed_answer_once(pipeline, tmp_path):
    seal = LookupSeal(load_lookup_key(tmp_path / "keys"), pipeline.names.lookup_requests)
    q = {"operator": "connect2ip", "ip": "100.64.12.34", "port": None, "from_ms": 0, "to_ms": 1}
    blob = seal.seal_request(q, request_id="r1", partition=2, now_ms=NOW - 1000)
    key, value = pipeline.lookups.answer_lookup(blob, 2, NOW)
    assert key == b"r1" and b"alice" not in value
    assert seal.open_answer(value, request_id="r1")["holders"] == [{"subscriber": "alice@isp.example"}]
    assert pipeline.counters["lookup_answers:ok"] == 1
    assert pipeline.lookups.answer_lookup(blob, 2, NOW + 5) is None  # the same record again
    assert pipeline.lookups.answer_lookup(blob, 1, NOW) is None      # or on another partition
    assert pipeline.counters["lookup_refused:replayed"] == 1
    assert pipeline.counters["lookup_refused:wrong-partition"] == 1
    forged = LookupSeal(bytes(32), pipeline.names.lookup_requests).seal_request(q, request_id="r2", partition=2,
                                                                               now_ms=NOW)
    assert pipeline.lookups.answer_lookup(forged, 2, NOW) is None
    assert pipeline.counters["lookup_refused:unauthenticated"] == 1


def _restarted(tmp_path, answer):
    """A second Pipeline on the same key directory: a worker restart (its replay memory is new)."""
    from agents.app import NO_PARTS, Pipeline
    from agents.runtime import OperatorRuntime
    from agents.settings import Settings
    from stream.config import load_operators

    pol = load_operators(Path(__file__).resolve().parents[2] / "config" / "operators")["connect2ip"]
    s = Settings(bootstrap="127.0.0.1:1", app_id="tl", topic_prefix="tl", operators_dir=tmp_path / "ops",
                 keys_dir=tmp_path / "keys", data_dir=tmp_path / "data2", partitions=4, web_enabled=False)
    op = OperatorRuntime("connect2ip", ttl_ms=3_600_000, stats_key=b"k" * 32, policy=pol)
    p = Pipeline(s, {"connect2ip": op}, clock=lambda: NOW, parts=NO_PARTS)
    p.lookups.resolve = lambda operator, ip, port, lo, hi: answer
    return p


def test_a_replay_after_a_restart_is_answered_but_its_length_says_nothing(pipeline, tmp_path):
    """The documented limit (docs/security.md): replay memory is per process.  What a replayer
    who reads the responses topic really gets: a second sealed answer.  Before answers were
    padded its length told an address with a holder (ok) from one without (no-data)."""
    seal = LookupSeal(load_lookup_key(tmp_path / "keys"), pipeline.names.lookup_requests)
    q = {"operator": "connect2ip", "ip": "100.64.12.34", "port": None, "from_ms": 0, "to_ms": 1}
    blob = seal.seal_request(q, request_id="r1", partition=2, now_ms=NOW - 1000)
    assert pipeline.lookups.answer_lookup(blob, 2, NOW) is not None
    assert pipeline.lookups.answer_lookup(blob, 2, NOW) is None  # same process: replayed
    held = _restarted(tmp_path, {"status": "ok", "holders": [{"subscriber": "alice@isp.example",
                                                              "from_ms": NOW - 5000, "to_ms": NOW}]})
    empty = _restarted(tmp_path, {"status": "no-data", "holders": []})
    a = held.lookups.answer_lookup(blob, 2, NOW)
    b = empty.lookups.answer_lookup(blob, 2, NOW)
    assert a is not None and b is not None  # the limit is real: a restarted worker answers again
    assert a[0] == b[0] == b"r1"
    assert len(a[1]) == len(b[1])           # but the replayer cannot tell held from not held
    assert b"alice" not in a[1]


@pytest.mark.parametrize("text", [b"[" * 3000 + b"]" * 3000,
                                  b'{"id":"\\ud800","operator":"connect2ip","ip":"100.64.12.34","port":null,'
                                  b'"from_ms":0,"to_ms":1,"ts_ms":%d,"partition":2}' % NOW])
def test_odd_json_inside_a_valid_seal_never_leaves_the_agent(pipeline, tmp_path, text):
    """Before: RecursionError / UnicodeEncodeError escaped answer_lookup (the agent's loop)."""
    from stream import lookup_wire as lw

    seal = LookupSeal(load_lookup_key(tmp_path / "keys"), pipeline.names.lookup_requests)
    blob = lw._seal(seal._req, text, seal._req_aad, None)
    assert pipeline.lookups.answer_lookup(blob, 2, NOW) is None
    assert pipeline.counters["lookup_refused:malformed"] == 1


def _race(args):
    keys, barrier = args
    barrier.wait()
    return load_lookup_key(keys, create=True)


def test_workers_starting_together_on_a_shared_key_directory_agree_on_one_key(tmp_path):
    """Adversary: replicas start at once on the shared key volume (deploy/k8s: one RWX claim).
    Every one must end with the same complete key, and nothing else private may be left behind."""
    import multiprocessing as mp

    keys = tmp_path / "shared-keys"
    ctx = mp.get_context("fork")
    n = 8
    with ctx.Manager() as m:
        barrier = m.Barrier(n)
        with ctx.Pool(n) as pool:
            got = pool.map(_race, [(keys, barrier)] * n)
    assert len(set(got)) == 1 and len(got[0]) == 32
    assert sorted(p.name for p in keys.iterdir()) == [LOOKUP_KEY_FILE]  # no temp file left
    assert stat.S_IMODE((keys / LOOKUP_KEY_FILE).stat().st_mode) == 0o600
