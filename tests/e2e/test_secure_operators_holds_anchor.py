"""The attacks on operators, holds and the audit trail, on the real secure broker (TLS +
SCRAM-SHA-512 + ACLs from ``ipanon acl apply``): per-operator collectors, legal holds and the
audit anchor.

One secure broker and one worker for the module; every client connects as its role's SCRAM
user, and every refusal asserted is the broker's (an ACL) or the worker's (a signature or
registry check, audited).  The attacker identities are those of docs/security.md's threat
table: the collector of one operator, an authority without a preservation basis, staff, the
auditor."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAuthorizationFailedError

from agents.acl import authority_topic, query_topics
from agents.broker import ADMIN_USER, LocalBroker
from agents.kafka_io import count, ensure_topics, read_all
from agents.security import kafka_python_kwargs
from agents.topics import Topics
from tests.conftest import REPO, wait_for

pytestmark = pytest.mark.broker

AUTHORITIES = ("rights-demo", "se-police-demo")
OPERATORS = ("connect2ip", "framsteget")
POLICE, RIGHTS = "ipanon-authority-se-police-demo", "ipanon-authority-rights-demo"
VICTIM = "FRAMED-VICTIM@other.example"
GENUINE = "kund-8@connect2ip.example"
ADDR = "100.64.88.8"
DEMO_KEYS = REPO / "config" / "keys" / "demo"


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    b = LocalBroker(tmp_path_factory.mktemp("secure-broker"), secure=True,
                    users=[ADMIN_USER, "ipanon-worker", "ipanon-staff", "ipanon-auditor",
                           *(f"ipanon-collector-{o}" for o in OPERATORS), *(f"ipanon-authority-{a}" for a in AUTHORITIES)])
    b.start(quiet=True, timeout_s=180)
    try:
        yield b
    finally:
        b.stop()


def env_for(b: LocalBroker, user: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPANON_")}
    env["IPANON_KAFKA_SECURITY"] = str(b.client_file(user))
    env.update(extra)
    return env


def cli(b: LocalBroker, user: str, *args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agents.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**env_for(b, user), **(env or {})}, timeout=timeout)


def write_refused(b: LocalBroker, user: str, topic: str) -> None:
    """The broker refuses ``user`` writes to ``topic`` (idempotence off: see test_security_e2e)."""
    p = KafkaProducer(bootstrap_servers=b.bootstrap, max_block_ms=20_000, enable_idempotence=False, retries=0,
                      **kafka_python_kwargs(b.security(user)))
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            p.send(topic, b"forged", headers=[("ipanon-format", b"radius-json")]).get(timeout=30)
    finally:
        p.close()


def send_as(b: LocalBroker, user: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    p = KafkaProducer(bootstrap_servers=b.bootstrap, max_block_ms=20_000, **kafka_python_kwargs(b.security(user)))
    try:
        for k, v in items:
            p.send(topic, key=k, value=v).get(timeout=30)
    finally:
        p.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read()


@pytest.fixture(scope="module")
def dep(secure, tmp_path_factory):
    """Topics (admin, the worker's plan: per-operator raw topics included), ACLs (``acl apply``
    for both operators' collectors and both authorities), one worker running as ipanon-worker
    with the repository's demo authority and staff registries."""
    from agents.keystore import ensure_demo_keys
    from agents.runtime import apply_topics
    from agents.settings import Settings

    d = tmp_path_factory.mktemp("secure-op-deploy")
    prefix = f"o{uuid.uuid4().hex[:8]}"
    ops = d / "operators"
    ops.mkdir()
    for o in OPERATORS:
        shutil.copy(REPO / "config" / "operators" / f"{o}.toml", ops / f"{o}.toml")
    ensure_demo_keys(d / "keys", list(OPERATORS))
    settings = Settings(bootstrap=secure.bootstrap, app_id=prefix, topic_prefix=prefix, operators_dir=ops,
                        keys_dir=d / "keys", data_dir=d / "data", heartbeat_ms=1000,
                        security=secure.security(ADMIN_USER))
    plan = apply_topics(settings)
    t = Topics(prefix, OPERATORS)
    assert set(t.raw_operator) <= {s.name for s in plan.topics}  # the plan creates each operator's topic
    responses = query_topics(prefix)[1]
    ensure_topics(secure.bootstrap, [authority_topic(prefix, a) for a in AUTHORITIES], partitions=1,
                  configs={authority_topic(prefix, a): plan.configs_for(responses) for a in AUTHORITIES},
                  security=secure.security(ADMIN_USER))
    r = cli(secure, ADMIN_USER, "acl", "apply", "--bootstrap", secure.bootstrap, "--prefix", prefix, "--app-id", prefix,
            "--operators", str(ops), *(x for a in AUTHORITIES for x in ("--authority", a)))
    assert r.returncode == 0, r.stderr
    assert all(f"ipanon-collector-{o}" in r.stdout for o in OPERATORS), r.stdout
    keys = d / "authority-keys"
    keys.mkdir()
    for f in ("se-police-demo.sign.pem", "se-police-demo.enc.pem", "rights-demo.sign.pem",
              "alice-demo.sign.pem", "bob-demo.sign.pem"):
        shutil.copy(DEMO_KEYS / f, keys / f)
        os.chmod(keys / f, 0o600)
    port = free_port()
    log = d / "worker.log"
    w = subprocess.Popen([sys.executable, "-m", "agents.cli", "worker", "--bootstrap", secure.bootstrap,
                          "--topic-prefix", prefix, "--app-id", prefix, "--operators", str(ops), "--keys", str(d / "keys"),
                          "--data-dir", str(d / "data"), "--web-port", str(port), "--heartbeat-ms", "1000",
                          "--loglevel", "info"],
                         cwd=REPO, env=env_for(secure, "ipanon-worker"), stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        worker = secure.security("ipanon-worker")
        wait_for(lambda: w.poll() is not None or count(secure.bootstrap, t.query_state, security=worker) >= 1,
                 timeout_s=240, what=f"the desk's first snapshot (worker log: {log})")
        assert w.poll() is None, log.read_text()[-3000:]
        yield {"prefix": prefix, "t": t, "ops": ops, "keys": keys, "port": port, "log": log, "w": w,
               "anchor": d / "keys" / "audit-anchor.pub",
               "at": ("--bootstrap", secure.bootstrap, "--prefix", prefix)}
    finally:
        if w.poll() is None:
            os.killpg(w.pid, signal.SIGTERM)
            try:
                w.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(w.pid, signal.SIGKILL)
                w.wait(10)


def audit(secure, dep, *, checkpoints=False) -> list[dict]:
    """The trail as the auditor reads it."""
    recs = [json.loads(r.value) for r in read_all(secure.bootstrap, dep["t"].audit, security=secure.security("ipanon-auditor"))]
    return recs if checkpoints else [r for r in recs if r["type"] != "checkpoint"]


def radius(sub: str, status: str, ts_s: int, session: str) -> dict:
    return {"User-Name": sub, "Acct-Status-Type": status, "Acct-Session-Id": session, "NAS-IP-Address": "192.0.2.10",
            "Framed-IP-Address": ADDR, "Event-Timestamp": ts_s}


def lawful_lookup(secure, dep, number: str, from_ms: int, to_ms: int) -> list[str]:
    """The subscribers the guarded path answers for ADDR, as se-police-demo asks (signed
    request, sealed answer opened with its own key)."""
    keys = dep["keys"]
    r = cli(secure, POLICE, "query", "submit", "--authority", "se-police-demo", "--key", str(keys / "se-police-demo.sign.pem"),
            "--basis", "lek-law-enforcement", "--case", f"OP8-{number}", "--address", ADDR, "--from", str(from_ms),
            "--to", str(to_ms), "--number", number, *dep["at"])
    assert r.returncode == 0, r.stderr
    r = cli(secure, POLICE, "query", "fetch", f"se-police-demo/{number}", "--key", str(keys / "se-police-demo.enc.pem"),
            "--wait", "120", *dep["at"])
    assert r.returncode == 0, r.stderr + dep["log"].read_text()[-3000:]
    return [m["subscriber"] for m in json.loads(r.stdout)["result"]["matches"]]


# -- one collector identity per operator, so none can frame another's subscriber -------------

def test_a_collector_may_write_only_its_own_operators_raw_topic(secure, dep):
    t = dep["t"]
    send_as(secure, "ipanon-collector-connect2ip", t.operator_raw("connect2ip"), [(b"probe", b"not a record")])
    write_refused(secure, "ipanon-collector-connect2ip", t.operator_raw("framsteget"))
    for topic in t.raw_shared:  # where the header would pick the operator
        write_refused(secure, "ipanon-collector-connect2ip", topic)
    write_refused(secure, "ipanon-collector-framsteget", t.operator_raw("connect2ip"))
    for topic in (t.bindings, query_topics(dep["prefix"])[0], t.audit, t.holds):
        write_refused(secure, "ipanon-collector-connect2ip", topic)


def test_a_collector_claiming_another_operator_is_dead_lettered_counted_and_never_answered(secure, dep, tmp_path):
    """The attack: connect2ip's collector, on the one raw topic it may write, sets
    ``ipanon-operator: framsteget`` on a session of FRAMED-VICTIM.  The worker dead-letters it
    (``operator-not-allowed``), counts it, and a lawful lookup of the address answers only the
    genuine connect2ip subscriber."""
    t, bs = dep["t"], secure.bootstrap
    admin = secure.security(ADMIN_USER)
    now = int(time.time())
    framed, genuine = tmp_path / "framed.jsonl", tmp_path / "genuine.jsonl"
    framed.write_text(json.dumps(radius(VICTIM, "Start", now - 300, "V-1")) + "\n")
    genuine.write_text("".join(json.dumps(radius(GENUINE, s, ts, "G-1")) + "\n"
                               for s, ts in (("Start", now - 300), ("Stop", now - 60))))
    dl0 = count(bs, t.deadletter, security=admin)
    # the forged header, on the collector's own topic (the only one its ACL allows)
    r = cli(secure, "ipanon-collector-connect2ip", "produce", "--format", "radius-json", "--operator", "framsteget",
            "--topic", t.operator_raw("connect2ip"), "--bootstrap", bs, "--no-create-topic", str(framed))
    assert r.returncode == 0, r.stderr
    # … and the same collector's genuine records, through --own-topic
    r = cli(secure, "ipanon-collector-connect2ip", "produce", "--format", "radius-json", "--operator", "connect2ip",
            "--own-topic", "--bootstrap", bs, "--no-create-topic", str(genuine), env={"IPANON_TOPIC_PREFIX": dep["prefix"]})
    assert r.returncode == 0, r.stderr

    def dead_letters():
        return [json.loads(x.value) for x in read_all(bs, t.deadletter, security=admin) if x.value]
    dead = wait_for(lambda: [d for d in dead_letters() if d["reason"] == "operator-not-allowed"] or None,
                    timeout_s=180, what=f"the dead letter (worker log: {dep['log']})")
    assert [(d["topic"], d["operator"]) for d in dead] == [(t.operator_raw("connect2ip"), "framsteget")]
    assert count(bs, t.deadletter, security=admin) >= dl0 + 1
    m = wait_for(lambda: (x := http(dep["port"], "/metrics").decode()) and
                 'ipanon_rejected_total{reason="operator-not-allowed"} 1.0' in x and x, timeout_s=60,
                 what="the refusal counted")
    assert 'ipanon_rejected_total{reason="operator-not-allowed"} 1.0' in m
    got = wait_for(lambda: (s := lawful_lookup(secure, dep, f"op8-{time.monotonic_ns()}", (now - 400) * 1000,
                                               (now - 30) * 1000)) and s, timeout_s=240,
                   what="the genuine session answered through the desk")
    assert got == [GENUINE], got
    assert VICTIM.encode() not in b"".join(x.value or b"" for x in read_all(bs, t.bindings, security=admin))


# -- holds over the secure broker ------------------------------------------------------------

def test_signed_hold_two_staff_approvals_set_and_released_every_step_audited(secure, dep):
    bs, t, keys, at = secure.bootstrap, dep["t"], dep["keys"], dep["at"]
    now = int(time.time() * 1000)
    # nobody but the worker writes the holds list: not an authority, not staff, not the auditor
    for user in (RIGHTS, POLICE, "ipanon-staff", "ipanon-auditor", "ipanon-collector-connect2ip"):
        write_refused(secure, user, t.holds)

    add = cli(secure, POLICE, "hold", "add", "--authority", "se-police-demo", "--key", str(keys / "se-police-demo.sign.pem"),
              "--operator", "connect2ip", "--ip", ADDR, "--from", str(now - 600_000), "--to", str(now),
              "--case", "SEC-HOLD-1", "--until", str(now + 3_600_000), *at, "--wait", "90")
    assert add.returncode == 0 and "pending" in add.stdout, add.stderr + add.stdout
    hold_id = add.stdout.split()[1]
    # an authority registered only for IPRED may not order a preservation: refused by the desk
    bad = cli(secure, RIGHTS, "hold", "add", "--authority", "rights-demo", "--key", str(keys / "rights-demo.sign.pem"),
              "--basis", "ipred-court-order", "--operator", "connect2ip", "--ip", ADDR, "--from", str(now - 600_000),
              "--to", str(now), "--case", "SEC-HOLD-2", "--until", str(now + 3_600_000), *at, "--wait", "90")
    assert bad.returncode == 2 and "basis-not-allowed" in bad.stderr, bad.stderr + bad.stdout
    # … nor sign as another authority (its own Kafka identity, police's name, its own key)
    forged = cli(secure, RIGHTS, "hold", "add", "--authority", "se-police-demo", "--key", str(keys / "rights-demo.sign.pem"),
                 "--operator", "connect2ip", "--ip", ADDR, "--from", str(now - 600_000), "--to", str(now),
                 "--case", "SEC-HOLD-3", "--until", str(now + 3_600_000), *at, "--wait", "0")
    assert forged.returncode == 0, forged.stderr  # sent; the desk refuses it (junk summary, below)

    # staff approve as ipanon-staff with the command's defaults: they read the inbox to see the
    # order, but not the desk's replies (worker-only), so the approval is sent without waiting
    for staff in ("alice-demo", "bob-demo"):
        r = cli(secure, "ipanon-staff", "hold", "approve", hold_id, "--staff", staff,
                "--key", str(keys / f"{staff}.sign.pem"), *at)
        assert r.returncode == 0 and f"approved hold {hold_id} as {staff}" in r.stdout, r.stderr + r.stdout
        assert "sent without waiting" in r.stderr, r.stderr

    def steps():
        return [(r["type"], r.get("reason") or r.get("detail") or r.get("staff")) for r in audit(secure, dep)
                if r.get("hold_id") == hold_id]
    wait_for(lambda: ("legal-hold-set", None) in steps(), timeout_s=120, what=f"the hold set (log: {dep['log']})")
    listed = cli(secure, ADMIN_USER, "hold", "list", *at, "--json")
    assert [json.loads(x)["hold_id"] for x in listed.stdout.splitlines()] == [hold_id], listed.stderr

    # another authority cannot release it; its requester can
    steal = cli(secure, RIGHTS, "hold", "release", hold_id, "--authority", "rights-demo",
                "--key", str(keys / "rights-demo.sign.pem"), *at, "--wait", "90")
    assert steal.returncode == 2 and "not-hold-requester" in steal.stderr, steal.stderr + steal.stdout
    assert [json.loads(x)["hold_id"] for x in cli(secure, ADMIN_USER, "hold", "list", *at, "--json").stdout.splitlines()] == [hold_id]
    rel = cli(secure, POLICE, "hold", "release", hold_id, "--authority", "se-police-demo",
              "--key", str(keys / "se-police-demo.sign.pem"), *at, "--wait", "90")
    assert rel.returncode == 0 and "released" in rel.stdout, rel.stderr + rel.stdout
    assert cli(secure, ADMIN_USER, "hold", "list", *at, "--json").stdout.strip() == ""

    assert steps() == [("legal-hold-received", None), ("legal-hold-pending", None),
                       ("legal-hold-approval", "alice-demo"), ("legal-hold-approval", "bob-demo"),
                       ("legal-hold-set", None), ("legal-hold-refused", "not-hold-requester"),
                       ("legal-hold-released", "released")]
    trail = audit(secure, dep)
    assert any(r["type"] == "legal-hold-refused" and r.get("reason") == "basis-not-allowed" for r in trail)
    wait_for(lambda: any(r["type"] == "junk-summary" and r.get("reason") == "bad-signature" for r in audit(secure, dep)),
             timeout_s=120, what="the forged signature audited (as a junk summary)")
    assert ADDR.encode() not in b"".join(x.value for x in read_all(bs, t.audit, security=secure.security("ipanon-auditor")))
    v = cli(secure, "ipanon-auditor", "audit", "verify", *at, "--anchor-key", str(dep["anchor"]))
    assert v.returncode == 0 and "last checkpoint seq" in v.stdout, v.stderr + v.stdout


# -- the audit anchor over the secure broker -------------------------------------------------

def test_audit_anchor_verifies_and_catches_forged_and_cut_trails(secure, dep):
    from stream.audit import AuditChain

    bs, t, at = secure.bootstrap, dep["t"], dep["at"]
    admin = secure.security(ADMIN_USER)
    for user in (POLICE, "ipanon-staff", "ipanon-auditor", "ipanon-collector-connect2ip"):
        write_refused(secure, user, t.audit)  # only the worker appends to the trail
    wait_for(lambda: audit(secure, dep, checkpoints=True)[-1]["type"] == "checkpoint", timeout_s=120,
             what="a checkpoint at the head")
    ok = cli(secure, "ipanon-auditor", "audit", "verify", *at, "--anchor-key", str(dep["anchor"]))
    assert ok.returncode == 0 and "last checkpoint seq" in ok.stdout, ok.stderr + ok.stdout

    raw = [r.value for r in read_all(bs, t.audit, security=admin)]
    forged = AuditChain.resume(raw[-1]).append({"type": "refused", "reason": "forged"}, int(time.time() * 1000) - 20_000)
    cases = {"forged": raw + [forged], "truncated": raw[:-1]}
    for name, records in cases.items():  # the admin (super user) copies the trail and edits it
        topic = f"{dep['prefix']}-audit-{name}"
        ensure_topics(bs, [topic], partitions=1, security=admin)
        send_as(secure, ADMIN_USER, topic, [(b"x", v) for v in records])
        r = cli(secure, ADMIN_USER, "audit", "verify", "--bootstrap", bs, "--topic", topic,
                "--anchor-key", str(dep["anchor"]), "--max-unanchored-ms", "0")
        assert r.returncode == 1 and "BROKEN" in r.stderr and "unanchored" in r.stderr, (name, r.stderr)

    # the live trail cut at its front by the admin: broken for the auditor and on the status page
    ka = KafkaAdminClient(bootstrap_servers=bs, **kafka_python_kwargs(admin))
    try:
        ka.delete_records({TopicPartition(t.audit, 0): 2})
    finally:
        ka.close()
    cut = cli(secure, "ipanon-auditor", "audit", "verify", *at, "--anchor-key", str(dep["anchor"]))
    assert cut.returncode == 1 and "truncated-front" in cut.stderr, cut.stderr
    st = wait_for(lambda: (s := json.loads(http(dep["port"], "/status.json"))["audit"]) and s["ok"] is False and s,
                  timeout_s=120, what="status.json reports the cut trail")
    assert st["problem"] == "truncated-front"
    assert "ipanon_audit_chain_ok 0.0" in http(dep["port"], "/metrics").decode()


def test_a_collector_forgetting_own_topic_gets_a_clear_refusal(secure, dep, tmp_path):
    """Adversary (a careless operator): ``ipanon produce --operator connect2ip`` as the
    collector on the secure broker, without --own-topic, aims at the shared family topic the
    collector may not write.  It must fail with one clear line naming --own-topic (exit 2),
    never a traceback, and nothing may reach any raw topic."""
    t, bs = dep["t"], secure.bootstrap
    f = tmp_path / "s.jsonl"
    f.write_text(json.dumps(radius(GENUINE, "Start", int(time.time()) - 30, "C-1")) + "\n")
    admin = secure.security(ADMIN_USER)
    def records(tp):  # the worker's heartbeats left out
        return len(read_all(bs, tp, security=admin))

    before = {tp: records(tp) for tp in (*t.raw_shared, t.operator_raw("connect2ip"))}
    r = cli(secure, "ipanon-collector-connect2ip", "produce", "--format", "radius-json", "--operator", "connect2ip",
            "--bootstrap", bs, str(f), env={"IPANON_TOPIC_PREFIX": dep["prefix"]})
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "--own-topic" in r.stderr, r.stderr[-2000:]
    assert {tp: records(tp) for tp in before} == before
