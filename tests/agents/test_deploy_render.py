"""``ipanon deploy render``: the committed deploy/ files are exactly what the command renders
from config/operators, and what they carry (topic configs, partitions, worker parameters) is
the plan ``ipanon topics apply`` computes with the same parameters.  No container engine runs
here, so the files are parsed and checked, not started."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agents.cli import main
from agents.commands.deploy import render_all, to_yaml
from agents.commands.topics import build_plan
from tests.conftest import REPO

yaml = pytest.importorskip("yaml", reason="PyYAML (ipanon[test]) parses the generated manifests")

DEPLOY = REPO / "deploy"
DEFAULTS = dict(out=None, operators=None, prefix="ipanon", app_id="ipanon", partitions=12, replication_factor=3,
                heartbeat_ms=60_000, sweeper_period_ms=1_000, ingest_lag_ms=300_000, replicas=2,
                image="ipanon:latest", cluster="ipanon", namespace="ipanon", check=False)


def plan_for(**kw):
    a = argparse.Namespace(**{**DEFAULTS, **kw})
    targs = argparse.Namespace(operators=REPO / "config" / "operators", broker_settings=None,
                               heartbeat_ms=a.heartbeat_ms, sweeper_period_ms=a.sweeper_period_ms,
                               ingest_lag_ms=a.ingest_lag_ms, partitions=a.partitions,
                               replication_factor=a.replication_factor, prefix=a.prefix, app_id=a.app_id)
    return build_plan(targs)[0]


def test_committed_files_are_up_to_date(capsys):
    assert main(["deploy", "render", "--check"]) == 0, capsys.readouterr().err
    files = render_all(argparse.Namespace(**DEFAULTS))
    for rel, text in files.items():
        assert (DEPLOY / rel).read_text() == text, rel


def test_check_notices_a_stale_file(tmp_path, capsys):
    assert main(["deploy", "render", "--out", str(tmp_path)]) == 0
    p = tmp_path / "k8s" / "topics.yaml"
    p.write_text(p.read_text().replace('retention.ms: "', 'retention.ms: "9', 1))
    assert main(["deploy", "render", "--out", str(tmp_path), "--check"]) == 2
    assert "k8s/topics.yaml" in capsys.readouterr().err


def test_strimzi_topics_carry_the_computed_configs():
    plan = plan_for()
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "topics.yaml").read_text()) if d]
    assert [d["spec"]["topicName"] for d in docs] == [t.name for t in plan.topics]
    for d, t in zip(docs, plan.topics):
        assert d["kind"] == "KafkaTopic" and d["metadata"]["labels"]["strimzi.io/cluster"] == "ipanon"
        assert d["spec"]["config"] == dict(t.configs)
        assert d["spec"]["partitions"] == t.partitions and d["spec"]["replicas"] == 3
    assert sum(d["spec"]["partitions"] == 12 for d in docs) >= len(docs) // 2  # single-partition ones by design
    # a changed promise changes the rendered configs (the comparison above can fail)
    assert plan_for(heartbeat_ms=30_000).topics[0].configs != plan.topics[0].configs


def test_worker_deployment_runs_with_the_plans_parameters():
    plan = plan_for()
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "k8s" / "worker.yaml").read_text()) if d}
    c = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}  # POD_IP comes from valueFrom
    assert env["IPANON_PARTITIONS"] == "12" and env["IPANON_HEARTBEAT_MS"] == "60000"
    assert env["IPANON_INGEST_LAG_MS"] == "300000" and env["IPANON_TOPIC_PREFIX"] == "ipanon"
    ttl = json.loads(docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]["ipanon/ttl-ms"])
    assert ttl == {n: r.ttl_ms for n, r in plan.retention.items()}
    assert set(docs["Secret"]["stringData"]) == {f"{n}.key" for n in plan.retention}
    assert all(v == "REPLACE-WITH-64-HEX-DIGITS" for v in docs["Secret"]["stringData"].values())
    profiles = docs["ConfigMap"]["data"]
    for n in plan.retention:
        assert profiles[f"{n}.toml"] == (REPO / "config" / "operators" / f"{n}.toml").read_text()
    assert docs["Service"]["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    vols = {v["name"]: v for v in docs["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert vols["key-seed"]["secret"]["secretName"] == docs["Secret"]["metadata"]["name"]
    claim = vols["keys"]["persistentVolumeClaim"]["claimName"]
    assert claim == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert docs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]  # shared by replicas
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["keys"] == env["IPANON_KEYS"] and mounts["operators"] == env["IPANON_OPERATORS"]


def test_compose_applies_the_same_plan_the_workers_run_with():
    doc = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    s = doc["services"]
    brokers = [n for n in s if n.startswith("kafka-")]
    assert len(brokers) == 3
    voters = {s[b]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for b in brokers}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert all("controller" in s[b]["environment"]["KAFKA_PROCESS_ROLES"] for b in brokers)  # KRaft
    workers = [n for n in s if n.startswith("worker-")]
    assert len(workers) == 2 and {"prometheus", "grafana", "topics"} <= set(s)
    cmd = s["topics"]["command"]
    flags = dict(zip(cmd[2::2], cmd[3::2]))
    for w in workers:
        env = s[w]["environment"]
        assert flags["--partitions"] == env["IPANON_PARTITIONS"]
        assert flags["--heartbeat-ms"] == env["IPANON_HEARTBEAT_MS"]
        assert flags["--ingest-lag-ms"] == env["IPANON_INGEST_LAG_MS"]
        assert flags["--prefix"] == env["IPANON_TOPIC_PREFIX"] and flags["--app-id"] == env["IPANON_APP_ID"]
        assert env["IPANON_BOOTSTRAP"] == flags["--bootstrap"]
    # the flags give the same plan as the Strimzi topics above
    plan = plan_for(partitions=int(flags["--partitions"]), heartbeat_ms=int(flags["--heartbeat-ms"]),
                    sweeper_period_ms=int(flags["--sweeper-period-ms"]), ingest_lag_ms=int(flags["--ingest-lag-ms"]),
                    replication_factor=int(flags["--replication-factor"]))
    k8s = {d["spec"]["topicName"]: d["spec"]["config"]
           for d in yaml.safe_load_all((DEPLOY / "k8s" / "topics.yaml").read_text()) if d}
    assert k8s == {t.name: dict(t.configs) for t in plan.topics}
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{w}:6066" for w in workers)


def test_dashboard_queries_only_metrics_the_worker_exports():
    from agents import metrics

    names = set()
    for line in (REPO / "agents" / "metrics.py").read_text().split('"'):
        if line.startswith("ipanon_"):
            names.add(line)
    dash = json.loads((DEPLOY / "grafana" / "ipanon-dashboard.json").read_text())
    import re

    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"ipanon_[a-z_]+", t["expr"])}
    base = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    assert base and base <= names, base - names
    assert any("ipanon_compliance_ratio" in t["expr"] for p in dash["panels"] for t in p["targets"])
    del metrics


def test_yaml_writer_round_trips():
    obj = {"a": 1, "b": [{"c": "x: y", "d": True}, "e"], "f": "line1\nline2\n", "g": {}, "h": None, "weird key": "1"}
    back = yaml.safe_load(to_yaml(obj))
    assert back == {**obj, "f": "line1\nline2\n"}


# -- the rendered deployments follow the security model (docs/security.md) -------------------

def _k8s(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


def _worker_pod() -> tuple[dict, dict, dict]:
    docs = _k8s("worker.yaml")
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}, dep, pod


def test_k8s_cluster_listens_only_on_tls_with_scram_and_authorises_by_acl():
    kafka = next(d for d in _k8s("kafka.yaml") if d["kind"] == "Kafka")
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert listeners and all(l["tls"] is True and l["authentication"]["type"] == "scram-sha-512" for l in listeners)
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    assert kafka["spec"]["kafka"]["config"]["allow.everyone.if.no.acl.found"] is False
    assert "userOperator" in kafka["spec"]["entityOperator"]  # it turns KafkaUser into SCRAM users + ACLs


def test_k8s_users_are_exactly_what_acl_render_prints(capsys):
    from agents.broker import authority_ids

    authorities = authority_ids()
    assert authorities  # the registered ones: each needs its own user and reply topic
    assert main(["acl", "render", "--format", "strimzi", "--cluster", "ipanon", "--namespace", "ipanon",
                 "--prefix", "ipanon", "--app-id", "ipanon"]) == 0
    want = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    got = _k8s("kafka-users.yaml")
    assert got == want
    names = {d["metadata"]["name"] for d in got}
    assert {"ipanon-worker", "ipanon-analyst", "ipanon-staff", "ipanon-auditor"} <= names
    # one collector per operator profile, none for every operator: none frames another's subscriber
    from agents.broker import operator_ids

    assert {n for n in names if n.startswith("ipanon-collector")} == {f"ipanon-collector-{o}" for o in operator_ids()}
    assert {f"ipanon-authority-{a}" for a in authorities} <= names
    assert all(d["spec"]["authentication"]["type"] == "scram-sha-512" and d["spec"]["authorization"]["acls"]
               for d in got)


def test_k8s_worker_connects_over_tls_with_scram_from_strimzi_secrets(tmp_path):
    import tomllib

    from agents.security import load_security

    docs, dep, pod = _worker_pod()
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert "IPANON_SASL_PASSWORD" not in env and not any("password" in (v or "").lower() for v in env.values())
    kafka = next(d for d in _k8s("kafka.yaml") if d["kind"] == "Kafka")
    host, port = env["IPANON_BOOTSTRAP"].rsplit(":", 1)
    assert host == f"{kafka['metadata']['name']}-kafka-bootstrap"
    assert int(port) in {l["port"] for l in kafka["spec"]["kafka"]["listeners"]}

    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}

    def volume_of(path: str) -> dict:
        mount = max((m for m in mounts if path.startswith(m.rstrip("/") + "/")), key=len)
        return vols[mounts[mount]]

    sec_path = env["IPANON_KAFKA_SECURITY"]
    cm = volume_of(sec_path)["configMap"]["name"]
    text = docs[("ConfigMap", cm)]["data"][Path(sec_path).name]
    conf = tomllib.loads(text)
    assert conf["protocol"] == "SASL_SSL" and conf["mechanism"] == "SCRAM-SHA-512"
    assert conf["username"] == "ipanon-worker" and "password" not in conf
    assert conf["username"] in {d["metadata"]["name"] for d in _k8s("kafka-users.yaml")}
    # the CA is the cluster CA Strimzi publishes; the password is the one of the worker's KafkaUser,
    # copied 0600 to a memory volume by the init container (Secret volumes get fsGroup's group bits)
    assert volume_of(conf["ca_file"])["secret"]["secretName"] == f"{kafka['metadata']['name']}-cluster-ca-cert"
    assert volume_of(conf["password_file"]) == {"name": "kafka-password", "emptyDir": {"medium": "Memory",
                                                                                         "sizeLimit": "1Mi"}}
    init = pod["initContainers"][0]
    init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert vols["kafka-user"]["secret"]["secretName"] == conf["username"]
    assert f"cp {init_mounts['kafka-user']}/password {conf['password_file']}" in init["command"][-1]
    assert f"chmod 600 {conf['password_file']}" in init["command"][-1]

    # the client file is one ipanon loads: same text with the paths pointed at local files
    pw = tmp_path / "password"
    pw.write_text("x" * 48 + "\n")
    pw.chmod(0o600)
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    local = tmp_path / "worker.toml"
    local.write_text(text.replace(conf["password_file"], str(pw)).replace(conf["ca_file"], str(ca)))
    sec = load_security({}, file=local)
    assert (sec.protocol, sec.username, sec.password) == ("SASL_SSL", "ipanon-worker", "x" * 48)


def test_k8s_web_server_binds_the_pod_ip_and_admits_only_prometheus():
    docs, dep, pod = _worker_pod()
    c = pod["containers"][0]
    names = [e["name"] for e in c["env"]]
    env = {e["name"]: e for e in c["env"]}
    assert env["IPANON_WEB_BIND"]["value"] == "$(POD_IP)"  # not 0.0.0.0
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert names.index("POD_IP") < names.index("IPANON_WEB_BIND")  # $(VAR) expands earlier variables only
    web = next(p["containerPort"] for p in c["ports"] if p["name"] == "web")
    assert env["IPANON_WEB_PORT"]["value"] == str(web)
    (policy,) = [d for (kind, _), d in docs.items() if kind == "NetworkPolicy"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == dep["spec"]["template"]["metadata"]["labels"]
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": web}]
    assert [f["podSelector"]["matchLabels"] for f in rule["from"]] == [{"app.kubernetes.io/name": "prometheus"}]


def _properties(text: str) -> dict[str, str]:
    return dict(l.split("=", 1) for l in text.splitlines() if l and not l.startswith("#"))


def test_compose_brokers_speak_tls_only_with_scram_and_acls():
    doc = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    s = doc["services"]
    brokers = sorted(n for n in s if n.startswith("kafka-"))
    for b in brokers:
        mount = next(v for v in s[b]["volumes"] if v.endswith(":/mnt/shared/config/server.properties:ro"))
        props = _properties((DEPLOY / "compose" / mount.split(":")[0]).read_text())
        proto = dict(x.split(":") for x in props["listener.security.protocol.map"].split(","))
        listeners = [l.split("://")[0] for l in props["listeners"].split(",")]
        assert {proto[l] for l in listeners} <= {"SSL", "SASL_SSL"}, props["listeners"]
        for l in listeners:  # a TLS listener without SASL must demand a client certificate
            if proto[l] == "SSL":
                assert props[f"listener.name.{l.lower()}.ssl.client.auth"] == "required"
        assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
        assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        assert props["allow.everyone.if.no.acl.found"] == "false"
        assert props["super.users"] == "User:ipanon-admin;User:ipanon-broker"
        assert not any("password" in k and "jaas" not in k for k in props)
        assert "password=" not in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
        client_port = next(l.rsplit(":", 1)[1] for l in props["listeners"].split(",") if l.startswith("SASL_SSL"))
    workers = [n for n in s if n.startswith("worker-")]
    for w in workers:
        env = s[w]["environment"]
        assert env["IPANON_KAFKA_SECURITY"].endswith("/clients/ipanon-worker.toml")
        assert all(b.rsplit(":", 1)[1] == client_port for b in env["IPANON_BOOTSTRAP"].split(","))
        assert {"topics", "acls"} <= set(s[w]["depends_on"])
        assert all(p.startswith("127.0.0.1:") for p in s[w]["ports"])  # the host sees the web port on loopback only
    for name, svc in s.items():
        env = svc.get("environment", {})
        assert "IPANON_SASL_PASSWORD" not in env and not any("password=" in str(v) for v in env.values()), name
        assert "password=" not in json.dumps(svc.get("command", "")), name  # never in argv
    assert "--add-config-file" in s["users"]["command"][0]
    assert s["acls"]["command"][:2] == ["acl", "apply"]
    assert s["topics"]["environment"]["IPANON_KAFKA_SECURITY"].endswith("/clients/ipanon-admin.toml")


def test_compose_secrets_are_private_and_load(tmp_path):
    import os
    import stat

    from agents.commands.deploy import make_compose_secrets
    from agents.security import load_security

    users = ["ipanon-admin", "ipanon-worker", "ipanon-authority-rights-demo"]
    uid = 4321 if os.geteuid() == 0 else None
    made = make_compose_secrets(tmp_path / "s", users, kafka_uid=uid, ipanon_uid=uid)
    for part in ("kafka", "ipanon", "pki"):
        for p in [made[part], *made[part].rglob("*")]:
            mode = stat.S_IMODE(p.stat().st_mode)
            if p.is_dir():
                assert mode == 0o700, p
            elif p.name != "ca.pem" and not (part == "pki" and p.suffix == ".pem"):
                assert mode == 0o600, (p, oct(mode))
            if uid is not None and part != "pki":
                assert p.stat().st_uid == uid, p
    for user in users:
        sec = load_security({}, file=made["ipanon"] / "clients" / f"{user}.toml")
        assert (sec.protocol, sec.mechanism, sec.username) == ("SASL_SSL", "SCRAM-SHA-512", user)
        scram = (made["kafka"] / "scram" / f"{user}.properties").read_text()
        assert scram == f"SCRAM-SHA-512=iterations=8192,password={sec.password}\n" and len(sec.password) == 48
    admin = _properties((made["kafka"] / "admin-mtls.properties").read_text())
    assert admin["security.protocol"] == "SSL"
    assert Path(admin["ssl.keystore.location"]).is_file() and Path(admin["ssl.truststore.location"]).is_file()
    # a second run keeps every password (the brokers already hold their SCRAM credentials)
    before = {u: (made["ipanon"] / "passwords" / f"{u}.password").read_text() for u in users}
    assert main(["deploy", "secrets", "--out", str(tmp_path / "s"), "--users", ",".join(users)]) == 0
    assert before == {u: (made["ipanon"] / "passwords" / f"{u}.password").read_text() for u in users}
