"""``ipanon deploy render``: the committed deploy/ files are exactly what the command renders
from config/operators, and what they carry (topic configs, partitions, worker parameters) is
the plan ``ipanon topics apply`` computes with the same parameters.  No container engine runs
here, so the files are parsed and checked, not started."""

from __future__ import annotations

import argparse
import json

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
    env = {e["name"]: e["value"] for e in c["env"]}
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
