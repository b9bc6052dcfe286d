"""The lawful-access CLI (`ipanon keys|query|audit`) against the real local broker.

The query agent is the lead's; here a few lines play its part with the real ``QueryDesk`` so
the message formats on the topics are exercised end to end exactly as docs/lawful-access.md
specifies them (submit → desk → replies/answer → status/fetch; trail → audit verify)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from agents.cli import main
from agents.commands.audit import read_topic
from agents.commands.query import topic_names
from stream import access
from stream.access import QueryDesk, Registry
from stream.audit import AuditChain, canonical

REPO = Path(__file__).resolve().parents[2]
DEMO_KEYS = REPO / "config" / "keys" / "demo"


def _topics(bootstrap, names, partitions=1):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        admin.close()


def _produce(bootstrap, topic, items):
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for key, value in items:
        p.send(topic, key=key, value=value)
    p.flush()
    p.close()


# --- keys ----------------------------------------------------------------------------------


def test_keys_new_authority_and_staff(tmp_path, capsys):
    out, reg = tmp_path / "keys", tmp_path / "authorities"
    assert main(["keys", "new-authority", "test-police", "--bases", "lek-law-enforcement,emergency",
                 "--burst", "4", "--out", str(out), "--registry", str(reg)]) == 0
    assert main(["keys", "new-staff", "eve", "--bases", "ipred-court-order", "--out", str(out)]) == 0
    staff_toml = capsys.readouterr().out.split("\n", 1)[1]  # first line: the registry path
    (tmp_path / "staff").mkdir()
    (tmp_path / "staff" / "eve.toml").write_text(staff_toml)
    for f in ("test-police.sign.pem", "test-police.enc.pem", "eve.sign.pem"):
        assert stat.S_IMODE(os.stat(out / f).st_mode) == 0o600
    registry = Registry.load(reg)
    auth = registry.authorities["test-police"]
    assert auth.burst == 4 and auth.bases == {"lek-law-enforcement", "emergency"}
    assert registry.staff["eve"].bases == {"ipred-court-order"}
    # the private files belong to the registered public keys
    from agents.commands.keys import load_private
    sign = load_private(out / "test-police.sign.pem", "ed25519")
    enc = load_private(out / "test-police.enc.pem", "x25519")
    assert sign.public_key().public_bytes_raw() == auth.signing_key.public_bytes_raw()
    assert enc.public_key().public_bytes_raw() == auth.encryption_key.public_bytes_raw()
    # never overwritten
    assert main(["keys", "new-staff", "eve", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["keys", "new-authority", "Bad Name", "--out", str(out)]) == 2


# --- audit verify on Kafka -----------------------------------------------------------------


def _chain(n=5):
    chain = AuditChain()
    return [chain.append({"type": "refused", "request_id": f"x/{i}", "reason": "rate-limited"}, 1000 + i)
            for i in range(n)]


@pytest.mark.broker
def test_audit_verify_detects_flip_and_removal_on_the_topic(bootstrap, unique, capsys):
    good, flipped, removed = (f"audit-{k}-{unique}" for k in ("good", "flip", "gone"))
    _topics(bootstrap, [good, flipped, removed])
    trail = _chain()
    _produce(bootstrap, good, [(None, r) for r in trail])
    bad = bytearray(trail[2])
    bad[bad.index(b'"seq":2') + 6] = ord("7")  # one byte: seq 2 -> 7
    _produce(bootstrap, flipped, [(None, r) for r in trail[:2] + [bytes(bad)] + trail[3:]])
    _produce(bootstrap, removed, [(None, r) for r in trail[:3] + trail[4:]])

    assert main(["audit", "verify", "--no-anchor", "--bootstrap", bootstrap, "--topic", good]) == 0
    assert "5 records" in capsys.readouterr().out
    assert main(["audit", "verify", "--no-anchor", "--bootstrap", bootstrap, "--topic", flipped]) == 1
    err = capsys.readouterr().err
    assert "changed at record 2 (offset 2)" in err
    assert main(["audit", "verify", "--no-anchor", "--bootstrap", bootstrap, "--topic", removed]) == 1
    err = capsys.readouterr().err
    assert "removed at record 3 (offset 3)" in err and "seq 3 missing" in err


@pytest.mark.broker
def test_audit_verify_missing_topic_is_one_line(bootstrap, unique, capsys):
    assert main(["audit", "verify", "--no-anchor", "--bootstrap", bootstrap, "--topic", f"nope-{unique}"]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- the query round trip, with the desk in the agent's place ---------------------------------


def _pump(bootstrap, prefix, desk, chain, now_ms, resolve, seen):
    """What the query agent does per message: desk → replies/answers → audit trail."""
    req_topic, resp_topic = topic_names(prefix)
    replies, records = [], []
    for _, offset, key, value in read_topic(bootstrap, req_topic):
        if offset in seen:
            continue
        seen.add(offset)
        kind = json.loads(value).get("type")
        d = desk.submit(value, now_ms) if kind == "request" else desk.approve(value, now_ms)
        records += [chain.append(e, now_ms) for e in d.events]
        if d.reply:
            replies.append((d.request_id.encode(), canonical(d.reply)))
        if d.status == "ready":
            a = desk.answer(d, resolve, now_ms)
            replies.append((a.request_id.encode(), canonical(a.reply)))
            records += [chain.append(e, now_ms) for e in a.events]
    _produce(bootstrap, resp_topic, replies)
    _produce(bootstrap, f"{prefix}-audit", [(None, r) for r in records])


@pytest.mark.broker
def test_ipred_round_trip_through_the_cli(bootstrap, unique, capsys, tmp_path):
    prefix = f"t{unique}"
    _topics(bootstrap, [*topic_names(prefix), f"{prefix}-audit"])
    registry = Registry.load(REPO / "config" / "authorities", REPO / "config" / "staff")
    desk, chain, seen = QueryDesk(registry), AuditChain(), set()
    calls = []

    def resolve(address, port, from_ms, to_ms):
        calls.append((address, port))
        return {"matches": [{"subscriber": "SUBSCRIBER-7f3a", "from_ms": from_ms, "to_ms": to_ms}]}

    kafka = ["--bootstrap", bootstrap, "--prefix", prefix]
    import time
    now = int(time.time() * 1000)
    assert main(["query", "submit", "--authority", "rights-demo", "--key", str(DEMO_KEYS / "rights-demo.sign.pem"),
                 "--basis", "ipred-court-order", "--case", "B 1234-26", "--address", "198.51.100.7",
                 "--port", "40123", "--from", "2026-06-10T06:00:00Z", "--to", "2026-06-10T06:30:00Z",
                 "--number", "42", *kafka]) == 0
    assert capsys.readouterr().out.startswith("submitted rights-demo/42 digest ")
    _pump(bootstrap, prefix, desk, chain, now, resolve, seen)
    assert main(["query", "status", "rights-demo/42", *kafka]) == 0
    assert "pending approvals=0/2" in capsys.readouterr().out

    for staff in ("alice-demo", "alice-demo"):  # the same person twice counts once
        assert main(["query", "approve", "rights-demo/42", "--staff", staff,
                     "--key", str(DEMO_KEYS / f"{staff}.sign.pem"), *kafka]) == 0
    assert "address 198.51.100.7 port 40123" in capsys.readouterr().err  # the approver sees the request
    _pump(bootstrap, prefix, desk, chain, now + 1000, resolve, seen)
    assert calls == [] and desk.pending() == ["rights-demo/42"]
    assert main(["query", "fetch", "rights-demo/42", "--key", str(DEMO_KEYS / "rights-demo.enc.pem"), *kafka]) == 1

    assert main(["query", "approve", "rights-demo/42", "--staff", "bob-demo",
                 "--key", str(DEMO_KEYS / "bob-demo.sign.pem"), *kafka]) == 0
    _pump(bootstrap, prefix, desk, chain, now + 2000, resolve, seen)
    assert calls == [("198.51.100.7", 40123)]
    capsys.readouterr()
    assert main(["query", "fetch", "rights-demo/42", "--key", str(DEMO_KEYS / "rights-demo.enc.pem"), *kafka]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["result"]["matches"][0]["subscriber"] == "SUBSCRIBER-7f3a" and answer["case_ref"] == "B 1234-26"
    # the wrong authority's key cannot open it
    assert main(["query", "fetch", "rights-demo/42", "--key", str(DEMO_KEYS / "se-police-demo.enc.pem"), *kafka]) == 2

    # no plaintext subscriber on any topic of the exchange
    for topic in (*topic_names(prefix), f"{prefix}-audit"):
        assert all(b"SUBSCRIBER-7f3a" not in v for _, _, _, v in read_topic(bootstrap, topic))

    assert main(["audit", "verify", "--no-anchor", *kafka]) == 0
    capsys.readouterr()
    assert main(["audit", "show", "rights-demo/42", *kafka]) == 0
    types = [line.split()[2] for line in capsys.readouterr().out.splitlines()]
    assert types == ["request-received", "pending", "approval", "approval-rejected", "approval", "ready",
                     "answered"]
