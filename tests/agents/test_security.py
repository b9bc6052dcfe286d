"""Client security settings, secret-file permissions, the local CA, ACL generation (no broker)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from agents.acl import authority_topic, covered_topics, render_kafka_acls, render_strimzi, role_grants, to_kafka_python
from agents.answer_router import authority_of
from agents.keystore import ensure_demo_keys, require_private
from agents.security import (KafkaSecurity, faust_credentials, kafka_python_kwargs, load_security, make_local_pki,
                             ssl_context, write_client_file)
from agents.topics import Topics
from stream.errors import ConfigError
from stream.policy import make_layout

REPO = Path(__file__).resolve().parents[2]
SECRET = "hunter2-not-a-real-password"


def _secret(path: Path, text: str = SECRET, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return path


# -- settings --------------------------------------------------------------------------------

def test_nothing_set_is_plaintext_as_before():
    sec = load_security({})
    assert sec.protocol == "PLAINTEXT" and not sec.sasl and not sec.tls
    assert kafka_python_kwargs(sec) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(sec) is None


def test_file_then_environment_override(tmp_path):
    pki = make_local_pki(tmp_path / "tls")
    pw = _secret(tmp_path / "w.password")
    f = write_client_file(tmp_path / "clients" / "w.toml",
                          KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "ipanon-worker", "-", ca_file=pki["ca"]), pw)
    sec = load_security({"IPANON_KAFKA_SECURITY": str(f)})
    assert (sec.protocol, sec.mechanism, sec.username, sec.password) == ("SASL_SSL", "SCRAM-SHA-512", "ipanon-worker", SECRET)
    assert sec.ca_file == pki["ca"].resolve()
    other = _secret(tmp_path / "o.password", "other-secret")
    sec2 = load_security({"IPANON_KAFKA_SECURITY": str(f), "IPANON_SASL_USERNAME": "ipanon-analyst",
                          "IPANON_SASL_PASSWORD_FILE": str(other)})
    assert (sec2.username, sec2.password) == ("ipanon-analyst", "other-secret")
    kw = kafka_python_kwargs(sec)
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "ipanon-worker" and kw["sasl_plain_password"] == SECRET
    assert isinstance(kw["ssl_context"], ssl.SSLContext) and kw["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    cred = faust_credentials(sec)
    assert cred.protocol.value == "SASL_SSL" and cred.mechanism.value == "SCRAM-SHA-512"


def test_password_never_in_repr_or_description(tmp_path):
    sec = load_security({"IPANON_KAFKA_PROTOCOL": "SASL_SSL", "IPANON_SASL_USERNAME": "u",
                         "IPANON_SASL_PASSWORD_FILE": str(_secret(tmp_path / "p"))})
    for text in (repr(sec), str(sec), sec.describe()):
        assert SECRET not in text
    assert "u" in sec.describe()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_loose_password_file_refused(tmp_path, mode):
    p = _secret(tmp_path / "p", mode=mode)
    with pytest.raises(ConfigError, match="accessible by group/others") as e:
        load_security({"IPANON_SASL_USERNAME": "u", "IPANON_SASL_PASSWORD_FILE": str(p)})
    assert SECRET not in str(e.value) and f"chmod 600 {p}" in str(e.value)


def test_loose_tls_key_refused(tmp_path):
    pki = make_local_pki(tmp_path / "tls")
    key = tmp_path / "client.key"
    key.write_bytes(pki["broker"].read_bytes())
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match="TLS private key file is accessible by group/others"):
        load_security({"IPANON_KAFKA_PROTOCOL": "SSL", "IPANON_SSL_CAFILE": str(pki["ca"]),
                       "IPANON_SSL_CERTFILE": str(pki["broker"]), "IPANON_SSL_KEYFILE": str(key)})


def test_password_inside_security_file_refused(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('protocol = "SASL_SSL"\nusername = "u"\npassword = "x"\n')
    with pytest.raises(ConfigError, match="separate file"):
        load_security({"IPANON_KAFKA_SECURITY": str(f)})


@pytest.mark.parametrize("env, match", [
    ({"IPANON_KAFKA_PROTOCOL": "SASL_SSL"}, "needs a username and a password"),
    ({"IPANON_KAFKA_PROTOCOL": "TLS"}, "is not one of"),
    ({"IPANON_SASL_USERNAME": "u", "IPANON_SASL_PASSWORD": "p", "IPANON_SASL_MECHANISM": "GSSAPI"}, "SASL mechanism"),
    ({"IPANON_KAFKA_PROTOCOL": "SSL", "IPANON_SSL_CAFILE": "/nonexistent/ca.pem"}, "not found"),
])
def test_bad_settings_are_one_clear_error(env, match):
    with pytest.raises(ConfigError, match=match):
        load_security(env)


def test_require_private_accepts_0600_and_0400(tmp_path):
    for mode in (0o600, 0o400):
        p = _secret(tmp_path / f"k{mode:o}", mode=mode)
        assert require_private(p) == p
    with pytest.raises(ConfigError, match="not a regular file"):
        require_private(tmp_path)


# -- the local CA ----------------------------------------------------------------------------

def test_local_pki_verifies_for_loopback_only(tmp_path):
    from cryptography import x509
    from cryptography.x509.oid import ExtensionOID

    pki = make_local_pki(tmp_path / "tls")
    assert (pki["ca_key"].stat().st_mode & 0o077) == 0 and (pki["broker"].stat().st_mode & 0o077) == 0
    certs = x509.load_pem_x509_certificates(pki["broker"].read_bytes())
    leaf, ca = certs
    sans = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert {str(i) for i in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    leaf.verify_directly_issued_by(ca)
    assert ca == x509.load_pem_x509_certificate(pki["ca"].read_bytes())
    assert b"BEGIN PRIVATE KEY" in pki["broker"].read_bytes()  # PKCS#8 first: Kafka's PEM keystore layout
    ctx = ssl_context(KafkaSecurity("SSL", ca_file=pki["ca"]))
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED


# -- ACLs ------------------------------------------------------------------------------------

def test_every_layout_topic_is_readable_only_by_its_roles():
    readers = covered_topics("ipanon", "ipanon", ["junet", "framsteget"])
    layout = make_layout("ipanon", "ipanon", ["junet", "framsteget"])
    assert {"ipanon-raw-op-junet", "ipanon-raw-op-framsteget"} <= set(layout)
    assert set(readers) == set(layout)  # no topic left without a reader (the worker reads them all)
    for name, users in readers.items():
        assert "ipanon-worker" in users
        assert not any(u.startswith("ipanon-collector") for u in users)
        if name in ("ipanon-stats", "ipanon-aggregates", "ipanon-erasures"):
            assert users == {"ipanon-worker", "ipanon-analyst"}
        elif name == "ipanon-audit":
            assert users == {"ipanon-worker", "ipanon-auditor"}
        elif name == "ipanon-query-requests":
            assert users == {"ipanon-worker", "ipanon-staff"}
        elif name == "ipanon-canary-results":  # measurements only: who writes or checks the report
            assert users == {"ipanon-worker", "ipanon-staff", "ipanon-auditor"}
        else:  # raw, changelogs, lookups, replies, holds, state
            assert users == {"ipanon-worker"}, name


def test_authority_grants_are_literal_and_own_topic_only():
    g = role_grants("p", "app", ["rights-demo", "rights"])
    reads = {(x.user, x.name, x.pattern) for x in g if "Read" in x.operations and x.user.startswith("ipanon-authority-")}
    assert reads == {("ipanon-authority-rights-demo", authority_topic("p", "rights-demo"), "literal"),
                     ("ipanon-authority-rights", authority_topic("p", "rights"), "literal")}
    writes = {(x.user, x.name) for x in g if "Write" in x.operations and x.user.startswith("ipanon-authority-")}
    assert writes == {("ipanon-authority-rights-demo", "p-query-requests"), ("ipanon-authority-rights", "p-query-requests")}
    # the worker's prefixes cover both its topic prefix and its app id; nobody else gets a prefix on topics
    prefixed = {(x.user, x.name) for x in g if x.pattern == "prefixed" and x.resource == "topic"}
    assert prefixed == {("ipanon-worker", "p-"), ("ipanon-worker", "app-")}
    assert not any(op in x.operations for x in g for op in ("Alter", "AlterConfigs", "Delete", "All"))


def test_each_collector_writes_only_its_own_operators_raw_topic():
    """No identity writes raw records for every operator, so no collector can frame another
    operator's subscriber.  Reference: the collector of operator O has exactly Write+Describe on
    the literal topic <prefix>-raw-op-O and nothing else; no collector may write a shared family
    topic (the header would pick the operator there)."""
    ops = ["junet", "framsteget", "tele", "tele2"]
    g = role_grants("p", "app", ["se-police-demo"], ops)
    coll = {(x.user, x.resource, x.name, x.pattern, x.operations) for x in g if x.user.startswith("ipanon-collector")}
    assert coll == {(f"ipanon-collector-{o}", "topic", f"p-raw-op-{o}", "literal", ("Write", "Describe")) for o in ops}
    shared = set(Topics("p").raw_shared)
    writers = {x.user for x in g if x.resource == "topic" and "Write" in x.operations and
               (x.name in shared or (x.pattern == "prefixed" and any(t.startswith(x.name) for t in shared)))}
    assert writers == {"ipanon-worker"}
    # the topic decides the operator: each per-operator topic maps back to exactly its operator
    assert Topics("p", ops).raw_operator == {f"p-raw-op-{o}": o for o in ops}


def test_acl_render_cli_has_one_collector_per_operator_profile():
    out = subprocess.run([sys.executable, "-m", "agents.cli", "acl", "render", "--prefix", "zz",
                          "--operator", "junet", "--operator", "framsteget"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    coll = sorted(ln for ln in out.splitlines() if "User:ipanon-collector" in ln)
    assert coll == [
        f"kafka-acls.sh --bootstrap-server BOOTSTRAP --command-config admin.properties --add --allow-principal "
        f"User:ipanon-collector-{o} --operation Write --operation Describe --topic zz-raw-op-{o} "
        f"--resource-pattern-type literal" for o in ("framsteget", "junet")]


def test_render_kafka_acls_and_strimzi_match_the_grants():
    g = role_grants("ipanon", "ipanon", ["se-police-demo"])
    lines = [ln for ln in render_kafka_acls(g, bootstrap="b:9093").splitlines() if not ln.startswith("#")]
    assert len(lines) == len(g)
    assert ("kafka-acls.sh --bootstrap-server b:9093 --command-config admin.properties --add --allow-principal "
            "User:ipanon-analyst --operation Read --operation Describe --topic ipanon-stats "
            "--resource-pattern-type literal") in lines
    docs = render_strimzi(g, cluster="c1").split("\n---\n")
    assert len(docs) == len({x.user for x in g})
    police = next(d for d in docs if "name: ipanon-authority-se-police-demo" in d)
    assert "type: scram-sha-512" in police and "strimzi.io/cluster: c1" in police
    assert f'name: "{authority_topic("ipanon", "se-police-demo")}"' in police
    assert "ipanon-stats" not in police
    assert len(to_kafka_python(g)) == sum(len(x.operations) for x in g)


def test_acl_render_cli_lists_registered_authorities():
    out = subprocess.run([sys.executable, "-m", "agents.cli", "acl", "render", "--prefix", "zz"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "User:ipanon-authority-rights-demo" in out and "User:ipanon-authority-se-police-demo" in out
    assert "--topic zz-query-responses-rights-demo --resource-pattern-type literal" in out


@pytest.mark.parametrize("value, want", [
    (b'{"type":"answer","request_id":"rights-demo/7","sealed":"x"}', "rights-demo"),
    (b'{"type":"status","request_id":"se-police-demo/1","status":"pending"}', "se-police-demo"),
    (b'{"type":"status","request_id":"rights-demo/7","status":"refused","authenticated":false}', None),
    (b'{"type":"status","request_id":null,"status":"refused"}', None),
    (b'{"type":"status","request_id":"../etc/7"}', None),
    (b'{"type":"status","request_id":"UPPER/7"}', None),
    (b"not json", None),
    (None, None),
])
def test_answer_router_routes_only_authenticated_replies(value, want):
    assert authority_of(value) == want


# -- the worker refuses loose key files ------------------------------------------------------

def _worker(tmp_path, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPANON_")}
    env.update(env_extra or {})
    ops = tmp_path / "ops"
    ops.mkdir(exist_ok=True)
    (ops / "connect2ip.toml").write_text((REPO / "config" / "operators" / "connect2ip.toml").read_text())
    return subprocess.run([sys.executable, "-m", "agents.cli", "worker", "--bootstrap", "127.0.0.1:9",
                           "--operators", str(ops), "--keys", str(tmp_path / "keys"), "--data-dir",
                           str(tmp_path / "data"), "--web-port", "0"], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=120)


def test_worker_stops_on_group_readable_operator_key(tmp_path):
    ensure_demo_keys(tmp_path / "keys", ["connect2ip"])
    key = tmp_path / "keys" / "connect2ip.key"
    os.chmod(key, 0o640)
    r = _worker(tmp_path)
    assert r.returncode == 2
    assert f"{key}: key file is accessible by group/others (mode 640); run `chmod 600 {key}`" in r.stderr
    assert key.read_text().strip() not in r.stderr + r.stdout


def test_worker_stops_on_world_readable_sasl_password(tmp_path):
    ensure_demo_keys(tmp_path / "keys", ["connect2ip"])
    pw = _secret(tmp_path / "worker.password", mode=0o644)
    r = _worker(tmp_path, {"IPANON_SASL_USERNAME": "ipanon-worker", "IPANON_SASL_PASSWORD_FILE": str(pw)})
    assert r.returncode == 2
    assert "SASL password file is accessible by group/others (mode 644)" in r.stderr
    assert SECRET not in r.stderr + r.stdout


def test_query_cli_refuses_loose_authority_key(tmp_path):
    key = tmp_path / "a.sign.pem"
    key.write_bytes((REPO / "config" / "keys" / "demo" / "se-police-demo.sign.pem").read_bytes())
    os.chmod(key, 0o644)
    r = subprocess.run([sys.executable, "-m", "agents.cli", "query", "submit", "--authority", "se-police-demo",
                        "--key", str(key), "--basis", "lek-law-enforcement", "--case", "X", "--address", "100.64.1.2",
                        "--from", "1", "--to", "2", "--dry-run"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "private key file is accessible by group/others" in r.stderr
    assert "BEGIN" not in r.stderr


# -- every client connects the same way --------------------------------------------------------

CLIENTS = {"KafkaConsumer", "KafkaProducer", "KafkaAdminClient", "AIOKafkaConsumer", "AIOKafkaProducer",
           "AIOKafkaAdminClient"}


def test_every_kafka_client_in_agents_gets_the_security_settings():
    """A Kafka client built without ``**kafka_python_kwargs(...)`` / ``**aiokafka_kwargs(...)``
    (or another ``**`` expansion built from them) would silently connect in plaintext."""
    import ast

    missing = []
    for path in sorted((REPO / "agents").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name in CLIENTS and not any(k.arg is None for k in node.keywords):
                missing.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
            if name == "App" and not any(k.arg == "broker_credentials" for k in node.keywords):
                missing.append(f"{path.relative_to(REPO)}:{node.lineno} faust.App without broker_credentials")
    assert missing == []


def test_client_certificate_names_the_user(tmp_path):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

    from agents.broker import SSL_PRINCIPAL_RULES
    from agents.security import issue_client_certificate

    pki = make_local_pki(tmp_path / "tls")
    cert, key = issue_client_certificate(tmp_path / "tls", "ipanon-analyst", tmp_path / "c")
    leaf, ca = x509.load_pem_x509_certificates(cert.read_bytes())
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ipanon-analyst"
    assert list(leaf.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(pki["ca"].read_bytes()))
    assert require_private(key) == key
    sec = load_security({"IPANON_KAFKA_PROTOCOL": "SSL", "IPANON_SSL_CAFILE": str(pki["ca"]),
                         "IPANON_SSL_CERTFILE": str(cert), "IPANON_SSL_KEYFILE": str(key)})
    assert ssl_context(sec) is not None and sec.describe() == "SSL (mutual TLS)"
    # the broker's rule maps exactly CN=<user> to User:<user> (Kafka's RULE syntax, KIP-371)
    assert SSL_PRINCIPAL_RULES.startswith("RULE:^CN=([a-z0-9-]+)$/$1/")


def test_cluster_id_never_starts_with_a_dash():
    """StorageTool reads ``-t -abc…`` as a missing value: one local broker start in 64 failed."""
    import base64
    import uuid

    from agents.broker import new_cluster_id

    dash = uuid.UUID(bytes=base64.urlsafe_b64decode("-" + "A" * 21 + "=="))
    ok = uuid.UUID(int=12345)
    seq = iter([dash, dash, ok])
    cid = new_cluster_id(lambda: next(seq))
    assert cid == base64.urlsafe_b64encode(ok.bytes).decode().rstrip("=") and len(cid) == 22
    assert all(not new_cluster_id().startswith("-") for _ in range(500))
