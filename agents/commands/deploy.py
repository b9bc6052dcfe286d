"""``ipanon deploy render`` — compose, Kubernetes, Prometheus and Grafana files from one plan.

Everything that depends on the retention promises is computed by the same code as ``ipanon
topics plan|apply|render`` (``agents.commands.topics.build_plan`` → ``stream.policy``), with the
same worker parameters (heartbeat, sweeper period, ingest lag, partitions, prefix, app id) that
the generated worker containers get as ``IPANON_*`` environment variables.  So the manifests
cannot disagree with the plan: regenerate them when a profile changes (``tests/agents/
test_deploy_render.py`` fails when the committed files are stale).

Written files (under ``--out``, default ``deploy/``):

- ``k8s/topics.yaml``    Strimzi ``KafkaTopic`` resources with the computed configs
- ``k8s/worker.yaml``    ConfigMap (operator profiles), Secret (key files — placeholders),
                         worker Deployment and a metrics Service annotated for scraping
- ``compose/compose.yaml`` 3-broker KRaft Kafka, a one-shot ``ipanon topics apply``, 2 workers,
                         Prometheus, Grafana
- ``compose/prometheus.yml`` scrape config + the alert rules of ``deploy/prometheus``
- ``compose/grafana/…``  datasource and dashboard provisioning
- ``grafana/ipanon-dashboard.json`` the dashboard (same metric names as docs/operations.md)

YAML is emitted by a small writer (every string quoted), so no YAML library is needed to render.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

EXAMPLES = """examples:
  ipanon deploy render                       # rewrite deploy/k8s, deploy/compose, deploy/grafana
  ipanon deploy render --out /tmp/d --namespace net --image registry.example/ipanon:1.0
  ipanon deploy render --check               # exit 2 if the committed files are stale
"""

KAFKA_IMAGE = "apache/kafka:4.1.1"
PROMETHEUS_IMAGE = "prom/prometheus:v2.53.0"
GRAFANA_IMAGE = "grafana/grafana:11.1.0"
WEB_PORT = 6066


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy", help="render compose / Kubernetes / Prometheus / Grafana files from the retention plan",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Render deployment files from the operator profiles, with the same plan as\n"
                    "`ipanon topics apply` (topic configs, TTLs) and the worker parameters given here.",
        epilog=EXAMPLES,
    )
    p.add_argument("action", choices=["render"])
    p.add_argument("--out", type=Path, default=None, help="output directory (default: the repository's deploy/)")
    p.add_argument("--operators", type=Path, default=None, help="operator profiles (default config/operators)")
    p.add_argument("--prefix", default="ipanon", help="topic prefix (default ipanon)")
    p.add_argument("--app-id", default="ipanon", help="Faust app id / consumer group (default ipanon)")
    p.add_argument("--partitions", type=int, default=12, help="partitions per topic (default 12)")
    p.add_argument("--replication-factor", type=int, default=3, help="replication factor (default 3)")
    p.add_argument("--heartbeat-ms", type=int, default=60_000, help="worker heartbeat (default 60000)")
    p.add_argument("--sweeper-period-ms", type=int, default=1_000, help="worker sweeper period (default 1000)")
    p.add_argument("--ingest-lag-ms", type=int, default=300_000, help="max raw-record lag (default 300000)")
    p.add_argument("--replicas", type=int, default=2, help="worker replicas (default 2)")
    p.add_argument("--image", default="ipanon:latest", help="worker image (default ipanon:latest)")
    p.add_argument("--cluster", default="ipanon", help="Strimzi cluster label (default ipanon)")
    p.add_argument("--namespace", default="ipanon", help="Kubernetes namespace (default ipanon)")
    p.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    p.set_defaults(func=run)


# -- a small YAML writer ----------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    return json.dumps(str(v), ensure_ascii=False)


def _key(k: str) -> str:
    return k if _PLAIN_KEY.match(k) else json.dumps(k)


def to_yaml(obj: Any, indent: int = 0) -> str:
    """Block YAML for dicts/lists of scalars; multi-line strings as literal blocks."""
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{_key(k)}:\n{to_yaml(v, indent + 2)}")
            elif isinstance(v, str) and "\n" in v:
                body = "".join(f"{pad}  {line}\n" if line else "\n" for line in v.rstrip("\n").split("\n"))
                out.append(f"{pad}{_key(k)}: |\n{body}")
            else:
                out.append(f"{pad}{_key(k)}: {_scalar(v) if not isinstance(v, (dict, list)) else ('{}' if isinstance(v, dict) else '[]')}\n")
        return "".join(out)
    if isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 2)
                out.append(f"{pad}- {inner[indent + 2:]}")
            else:
                out.append(f"{pad}- {_scalar(v)}\n")
        return "".join(out)
    return pad + _scalar(obj) + "\n"


# -- rendering --------------------------------------------------------------------------------


def worker_env(args: argparse.Namespace, bootstrap: str) -> dict[str, str]:
    """The worker's settings (agents/settings.py names); the plan is computed with the same."""
    return {
        "IPANON_BOOTSTRAP": bootstrap,
        "IPANON_APP_ID": args.app_id,
        "IPANON_TOPIC_PREFIX": args.prefix,
        "IPANON_PARTITIONS": str(args.partitions),
        "IPANON_HEARTBEAT_MS": str(args.heartbeat_ms),
        "IPANON_INGEST_LAG_MS": str(args.ingest_lag_ms),
        "IPANON_OPERATORS": "/etc/ipanon/operators",
        "IPANON_KEYS": "/var/lib/ipanon/keys",
        "IPANON_DATA_DIR": "/var/lib/ipanon/worker",
        "IPANON_WEB_PORT": str(WEB_PORT),
        "IPANON_WEB_BIND": "0.0.0.0",
    }


def topics_apply_command(args: argparse.Namespace, bootstrap: str) -> list[str]:
    return ["ipanon", "topics", "apply", "--bootstrap", bootstrap, "--operators", "/etc/ipanon/operators",
            "--prefix", args.prefix, "--app-id", args.app_id, "--partitions", str(args.partitions),
            "--replication-factor", str(args.replication_factor), "--heartbeat-ms", str(args.heartbeat_ms),
            "--sweeper-period-ms", str(args.sweeper_period_ms), "--ingest-lag-ms", str(args.ingest_lag_ms)]


HEADER = "# Generated by `ipanon deploy render` from config/operators/*.toml — do not edit.\n"


def render_k8s_worker(args: argparse.Namespace, plan: Any, profiles: dict[str, str]) -> str:
    ns = args.namespace
    env = worker_env(args, f"{args.cluster}-kafka-bootstrap:9092")
    labels = {"app.kubernetes.io/name": "ipanon", "app.kubernetes.io/component": "worker"}
    operators = sorted(plan.retention)
    docs = [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "ipanon-operators", "namespace": ns, "labels": labels},
         "data": {f"{name}.toml": text for name, text in sorted(profiles.items())}},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": "ipanon-keys", "namespace": ns, "labels": labels,
                      "annotations": {"ipanon/note": "replace each value with the operator's key file "
                                      "(ipanon keys …); never commit real keys"}},
         "stringData": {f"{name}.key": "REPLACE-WITH-64-HEX-DIGITS" for name in operators}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": "ipanon-key-state", "namespace": ns, "labels": labels,
                      "annotations": {"ipanon/note": "key and ratchet state shared by every worker replica; "
                                      "exclude from backups and snapshots (docs/operations.md)"}},
         "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "16Mi"}}}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "ipanon-worker", "namespace": ns, "labels": labels},
         "spec": {
             "replicas": args.replicas,
             "selector": {"matchLabels": labels},
             "template": {
                 "metadata": {"labels": labels,
                              "annotations": {"ipanon/ttl-ms": json.dumps({n: r.ttl_ms for n, r in sorted(plan.retention.items())})}},
                 "spec": {
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
                     # the key directory must be writable and shared by every replica: the table's
                     # ratchet state lives there (agents/vault.py), so the Secret only seeds it
                     "initContainers": [{
                         "name": "seed-keys", "image": args.image,
                         "command": ["sh", "-c", "cp -n /etc/ipanon/key-seed/*.key /var/lib/ipanon/keys/ && "
                                     "chmod 600 /var/lib/ipanon/keys/*.key"],
                         "volumeMounts": [
                             {"name": "key-seed", "mountPath": "/etc/ipanon/key-seed", "readOnly": True},
                             {"name": "keys", "mountPath": "/var/lib/ipanon/keys"}],
                     }],
                     "containers": [{
                         "name": "worker", "image": args.image,
                         "args": ["worker", "--loglevel", "info"],
                         "env": [{"name": k, "value": v} for k, v in env.items()],
                         "ports": [{"name": "web", "containerPort": WEB_PORT}],
                         "readinessProbe": {"httpGet": {"path": "/status.json", "port": "web"},
                                            "periodSeconds": 10},
                         "volumeMounts": [
                             {"name": "operators", "mountPath": "/etc/ipanon/operators", "readOnly": True},
                             {"name": "keys", "mountPath": "/var/lib/ipanon/keys"},
                             {"name": "data", "mountPath": "/var/lib/ipanon/worker"}],
                     }],
                     "volumes": [
                         {"name": "operators", "configMap": {"name": "ipanon-operators"}},
                         {"name": "key-seed", "secret": {"secretName": "ipanon-keys", "defaultMode": 384}},
                         {"name": "keys", "persistentVolumeClaim": {"claimName": "ipanon-key-state"}},
                         {"name": "data", "emptyDir": {}}],
                 }}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "ipanon-worker-metrics", "namespace": ns, "labels": labels,
                      "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(WEB_PORT),
                                      "prometheus.io/path": "/metrics"}},
         "spec": {"selector": labels, "ports": [{"name": "web", "port": WEB_PORT, "targetPort": "web"}]}},
    ]
    return HEADER + "---\n".join(to_yaml(d) for d in docs)


def render_compose(args: argparse.Namespace) -> str:
    brokers = [1, 2, 3]
    voters = ",".join(f"{i}@kafka-{i}:9093" for i in brokers)
    bootstrap = ",".join(f"kafka-{i}:9092" for i in brokers)
    services: dict[str, Any] = {}
    for i in brokers:
        services[f"kafka-{i}"] = {
            "image": KAFKA_IMAGE,
            "hostname": f"kafka-{i}",
            "environment": {
                "KAFKA_NODE_ID": str(i),
                "KAFKA_PROCESS_ROLES": "broker,controller",
                "KAFKA_CONTROLLER_QUORUM_VOTERS": voters,
                "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
                "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://kafka-{i}:9092",
                "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
                "CLUSTER_ID": "MkU3OEVBNTcwNTJENDM2Qg",  # any 22-character base64 UUID; same for all three
                "KAFKA_LOG_DIRS": "/var/lib/kafka/data",
                "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "3",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "3",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "2",
                "KAFKA_MIN_INSYNC_REPLICAS": "2",
                "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
            },
            "volumes": [f"kafka-{i}:/var/lib/kafka/data"],
        }
    env = worker_env(args, bootstrap)
    common_volumes = ["../../config/operators:/etc/ipanon/operators:ro", "./keys:/var/lib/ipanon/keys"]
    services["topics"] = {
        "image": args.image, "build": {"context": "../..", "dockerfile": "deploy/compose/Dockerfile"},
        "command": topics_apply_command(args, bootstrap)[1:],
        "depends_on": [f"kafka-{i}" for i in brokers],
        "volumes": common_volumes[:1],
        "restart": "on-failure",
    }
    for w in (1, 2):
        services[f"worker-{w}"] = {
            "image": args.image,
            "command": ["worker", "--loglevel", "info"],
            "environment": env,
            "depends_on": {"topics": {"condition": "service_completed_successfully"}},
            "volumes": common_volumes + [f"worker-{w}:/var/lib/ipanon/worker"],
            "ports": [f"127.0.0.1:{WEB_PORT + w - 1}:{WEB_PORT}"],
            "restart": "unless-stopped",
        }
    services["prometheus"] = {
        "image": PROMETHEUS_IMAGE,
        "command": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.retention.time=30d"],
        "volumes": ["./prometheus.yml:/etc/prometheus/prometheus.yml:ro",
                    "../prometheus/ipanon-rules.yml:/etc/prometheus/ipanon-rules.yml:ro"],
        "ports": ["127.0.0.1:9090:9090"],
    }
    services["grafana"] = {
        "image": GRAFANA_IMAGE,
        "volumes": ["./grafana/provisioning:/etc/grafana/provisioning:ro",
                    "../grafana:/var/lib/grafana/dashboards:ro"],
        "ports": ["127.0.0.1:3000:3000"],
        "depends_on": ["prometheus"],
    }
    doc = {"name": "ipanon", "services": services,
           "volumes": {**{f"kafka-{i}": {} for i in brokers}, "worker-1": {}, "worker-2": {}}}
    return HEADER + to_yaml(doc)


def render_prometheus(args: argparse.Namespace) -> str:
    return HEADER + to_yaml({
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": ["/etc/prometheus/ipanon-rules.yml"],
        "scrape_configs": [{"job_name": "ipanon", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [f"worker-1:{WEB_PORT}", f"worker-2:{WEB_PORT}"]}]}],
    })


def grafana_provisioning() -> dict[str, str]:
    return {
        "compose/grafana/provisioning/datasources/prometheus.yml": HEADER + to_yaml({
            "apiVersion": 1,
            "datasources": [{"name": "Prometheus", "uid": "prometheus", "type": "prometheus", "access": "proxy",
                             "url": "http://prometheus:9090", "isDefault": True}]}),
        "compose/grafana/provisioning/dashboards/ipanon.yml": HEADER + to_yaml({
            "apiVersion": 1,
            "providers": [{"name": "ipanon", "type": "file", "folder": "ipanon",
                           "options": {"path": "/var/lib/grafana/dashboards"}}]}),
    }


def dashboard() -> dict:
    """The Grafana dashboard: one panel per concern, every query on a documented metric."""
    ds = {"type": "prometheus", "uid": "prometheus"}
    panels = []

    def panel(title, exprs, unit="short", kind="timeseries", thresholds=None, w=12, h=8):
        i = len(panels)
        p = {"id": i + 1, "type": kind, "title": title, "datasource": ds,
             "gridPos": {"x": (i % 2) * 12 if w == 12 else 0, "y": (i // 2) * h, "w": w, "h": h},
             "targets": [{"refId": chr(65 + j), "datasource": ds, "expr": e, "legendFormat": lf}
                         for j, (e, lf) in enumerate(exprs)],
             "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}}
        if thresholds:
            p["fieldConfig"]["defaults"]["thresholds"] = {
                "mode": "absolute", "steps": [{"color": "green", "value": None}] +
                [{"color": c, "value": v} for v, c in thresholds]}
            p["fieldConfig"]["defaults"]["custom"] = {"thresholdsStyle": {"mode": "line"}}
        panels.append(p)

    panel("Compliance ratio (oldest raw mapping age ÷ promise)",
          [("max by (operator, purpose) (ipanon_compliance_ratio)", "{{operator}} {{purpose}}")],
          unit="percentunit", thresholds=[(0.9, "orange"), (1, "red")])
    panel("Live raw mappings", [("sum by (operator) (ipanon_mappings_live)", "{{operator}}"),
                                ("sum by (operator) (ipanon_mappings_held)", "{{operator}} held")])
    panel("Records in / out per second",
          [("sum by (source, operator) (rate(ipanon_records_in_total{role=\"raw\"}[5m]))", "in {{source}} {{operator}}"),
           ("sum by (role) (rate(ipanon_records_out_total[5m]))", "out {{role}}")], unit="ops")
    panel("Rejected per second, by reason", [("sum by (reason) (rate(ipanon_rejected_total[5m]))", "{{reason}}")],
          unit="ops")
    panel("Expiry: intervals expired and tombstones per second",
          [("sum(rate(ipanon_intervals_expired_total[5m]))", "expired"),
           ("sum(rate(ipanon_tombstones_total[5m]))", "tombstones"),
           ("sum by (purpose) (rate(ipanon_epochs_shredded_total[5m]))", "epochs shredded {{purpose}}")], unit="ops")
    panel("Expiry overdue and sweeper age",
          [("max by (operator) (ipanon_expiry_overdue_seconds)", "overdue {{operator}}"),
           ("time() - ipanon_sweeper_last_run_timestamp_seconds", "since sweep {{instance}}")], unit="s")
    panel("Consumer lag (records)", [("sum by (topic) (ipanon_consumer_lag_records)", "{{topic}}")])
    panel("Processing latency p95",
          [("histogram_quantile(0.95, sum by (le, role) (rate(ipanon_processing_seconds_bucket[5m])))", "{{role}}"),
           ("histogram_quantile(0.95, sum by (le, role) (rate(ipanon_request_latency_seconds_bucket[5m])))",
            "request {{role}}")],
          unit="s")
    panel("Lookups and queries by outcome",
          [("sum by (status) (rate(ipanon_lookup_answers_total[5m]))", "lookup {{status}}"),
           ("sum by (outcome) (rate(ipanon_queries_total[5m]))", "query {{outcome}}")], unit="ops")
    panel("Statistics: records out, consent drops, suppressed cells",
          [("sum(rate(ipanon_stats_records_out_total[5m]))", "stats out"),
           ("sum(rate(ipanon_consent_drops_total[5m]))", "consent drops"),
           ("sum(rate(ipanon_suppressed_cells_total[5m]))", "suppressed cells")], unit="ops")
    panel("Audit trail verified (1 = ok)", [("min(ipanon_audit_chain_ok)", "verified")], kind="stat",
          thresholds=[(1, "green")])
    panel("Promise and TTL", [("max by (operator, purpose) (ipanon_promise_seconds)", "promise {{operator}} {{purpose}}"),
                              ("max by (operator) (ipanon_ttl_seconds)", "ttl {{operator}}")], unit="s", kind="stat")
    return {"uid": "ipanon", "title": "ipanon — retention and flow", "schemaVersion": 39, "version": 1,
            "editable": True, "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
            "tags": ["ipanon"], "timezone": "utc", "panels": panels,
            "templating": {"list": []}, "annotations": {"list": []}}


DOCKERFILE = """# Generated by `ipanon deploy render` — the worker image for compose (build context: repo root).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY agents ./agents
RUN pip install --no-cache-dir . && useradd --uid 10001 --create-home ipanon
USER 10001
ENTRYPOINT ["ipanon"]
"""


def render_all(args: argparse.Namespace) -> dict[str, str]:
    """Every generated file (path relative to ``--out`` → text)."""
    from ..broker import REPO_ROOT
    from .topics import build_plan, render_k8s

    ops_dir = args.operators or REPO_ROOT / "config" / "operators"
    targs = argparse.Namespace(operators=ops_dir, broker_settings=None, heartbeat_ms=args.heartbeat_ms,
                               sweeper_period_ms=args.sweeper_period_ms, ingest_lag_ms=args.ingest_lag_ms,
                               partitions=args.partitions, replication_factor=args.replication_factor,
                               prefix=args.prefix, app_id=args.app_id)
    plan, _ = build_plan(targs)  # Apache Kafka's default broker settings, as Strimzi runs them
    profiles = {p.stem: p.read_text() for p in sorted(Path(ops_dir).glob("*.toml"))}
    files = {
        "k8s/topics.yaml": render_k8s(plan, cluster=args.cluster, namespace=args.namespace),
        "k8s/worker.yaml": render_k8s_worker(args, plan, profiles),
        "compose/compose.yaml": render_compose(args),
        "compose/prometheus.yml": render_prometheus(args),
        "compose/Dockerfile": DOCKERFILE,
        "grafana/ipanon-dashboard.json": json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n",
    }
    files.update(grafana_provisioning())
    return files


def run(args: argparse.Namespace) -> int:
    import sys

    from ..broker import REPO_ROOT
    from ..cli import CliError

    out = args.out or REPO_ROOT / "deploy"
    files = render_all(args)
    if args.check:
        stale = [p for p, text in files.items() if not (out / p).exists() or (out / p).read_text() != text]
        if stale:
            raise CliError(f"{len(stale)} generated file(s) differ from the profiles, e.g. {out / stale[0]}; "
                           f"run `ipanon deploy render`")
        print(f"{len(files)} files up to date in {out}")
        return 0
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
    return 0
