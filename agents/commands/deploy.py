"""``ipanon deploy render`` — compose, Kubernetes, Prometheus and Grafana files from one plan.

Everything that depends on the retention promises is computed by the same code as ``ipanon
topics plan|apply|render`` (``agents.commands.topics.build_plan`` → ``stream.policy``), with the
same worker parameters (heartbeat, sweeper period, ingest lag, partitions, prefix, app id) that
the generated worker containers get as ``IPANON_*`` environment variables.  So the manifests
cannot disagree with the plan: regenerate them when a profile changes (``tests/agents/
test_deploy_render.py`` fails when the committed files are stale).

Written files (under ``--out``, default ``deploy/``):

- ``k8s/kafka.yaml``     Strimzi ``Kafka`` + ``KafkaNodePool``: 3 KRaft nodes, one internal TLS
                         listener with SCRAM-SHA-512, ``simple`` authorization (ACLs), no plaintext
- ``k8s/kafka-users.yaml`` Strimzi ``KafkaUser`` per role with exactly the ACLs of ``ipanon acl
                         render`` (the registered authorities included)
- ``k8s/topics.yaml``    Strimzi ``KafkaTopic`` resources with the computed configs
- ``k8s/worker.yaml``    ConfigMaps (operator profiles, the worker's Kafka client file), Secret
                         (key files — placeholders), worker Deployment (SCRAM password and
                         cluster CA from the Secrets Strimzi makes; web server bound to the pod
                         IP), a metrics Service and a NetworkPolicy (web port: Prometheus only)
- ``compose/compose.yaml`` 3-broker KRaft Kafka on TLS (SCRAM for clients, mutual TLS between
                         brokers and for the admin) with the StandardAuthorizer; one-shot
                         services that make the secrets (``ipanon deploy secrets``), create the
                         SCRAM users, ``ipanon topics apply`` and ``ipanon acl apply``; 2
                         workers, Prometheus, Grafana
- ``compose/kafka/server-<n>.properties`` each broker's configuration
- ``compose/prometheus.yml`` scrape config + the alert rules of ``deploy/prometheus``
- ``compose/grafana/…``  datasource and dashboard provisioning
- ``grafana/ipanon-dashboard.json`` the dashboard (same metric names as docs/operations.md)

YAML is emitted by a small writer (every string quoted), so no YAML library is needed to render.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any, Optional

EXAMPLES = """examples:
  ipanon deploy render                       # rewrite deploy/k8s, deploy/compose, deploy/grafana
  ipanon deploy render --out /tmp/d --namespace net --image registry.example/ipanon:1.0
  ipanon deploy render --check               # exit 2 if the committed files are stale
  ipanon deploy secrets --out /secrets --users ipanon-admin,ipanon-worker   # compose: CA, certs, passwords
"""

KAFKA_IMAGE = "apache/kafka:4.1.1"
PROMETHEUS_IMAGE = "prom/prometheus:v2.53.0"
GRAFANA_IMAGE = "grafana/grafana:11.1.0"
WEB_PORT = 6066
#: compose brokers: clients (SCRAM over TLS), controllers and brokers + admin (mutual TLS)
CLIENT_PORT, CONTROLLER_PORT, INTERNAL_PORT = 9092, 9093, 9094
#: the Strimzi internal TLS listener (SCRAM-SHA-512)
STRIMZI_TLS_PORT = 9093
KAFKA_UID = 1000      # apache/kafka image's user
IPANON_UID = 10001    # the worker image's user (DOCKERFILE)
#: pods allowed to reach the workers' web port (``/metrics``, ``/status``): Prometheus only
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy", help="render compose / Kubernetes / Prometheus / Grafana files from the retention plan",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Render deployment files from the operator profiles, with the same plan as\n"
                    "`ipanon topics apply` (topic configs, TTLs) and the worker parameters given here.",
        epilog=EXAMPLES,
    )
    p.add_argument("action", choices=["render", "secrets"],
                   help="render: write the files; secrets: make the compose deployment's CA, certificates "
                        "and SCRAM passwords under --out (run by its one-shot `secrets` service)")
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
    p.add_argument("--users", default=None, help="secrets: comma-separated Kafka users (default: every role "
                                                 "and registered authority)")
    p.add_argument("--kafka-uid", type=int, default=None, help="secrets: owner of the brokers' files")
    p.add_argument("--ipanon-uid", type=int, default=None, help="secrets: owner of the clients' files")
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


def worker_env(args: argparse.Namespace, bootstrap: str, security_file: str, web_bind: str) -> dict[str, str]:
    """The worker's settings (agents/settings.py names); the plan is computed with the same.
    Kafka security comes from a client file (agents/security.py), never from a variable
    holding a password."""
    return {
        "IPANON_BOOTSTRAP": bootstrap,
        "IPANON_KAFKA_SECURITY": security_file,
        "IPANON_APP_ID": args.app_id,
        "IPANON_TOPIC_PREFIX": args.prefix,
        "IPANON_PARTITIONS": str(args.partitions),
        "IPANON_HEARTBEAT_MS": str(args.heartbeat_ms),
        "IPANON_INGEST_LAG_MS": str(args.ingest_lag_ms),
        "IPANON_OPERATORS": "/etc/ipanon/operators",
        "IPANON_KEYS": "/var/lib/ipanon/keys",
        "IPANON_DATA_DIR": "/var/lib/ipanon/worker",
        "IPANON_WEB_PORT": str(WEB_PORT),
        "IPANON_WEB_BIND": web_bind,
    }


def topics_apply_command(args: argparse.Namespace, bootstrap: str) -> list[str]:
    return ["ipanon", "topics", "apply", "--bootstrap", bootstrap, "--operators", "/etc/ipanon/operators",
            "--prefix", args.prefix, "--app-id", args.app_id, "--partitions", str(args.partitions),
            "--replication-factor", str(args.replication_factor), "--heartbeat-ms", str(args.heartbeat_ms),
            "--sweeper-period-ms", str(args.sweeper_period_ms), "--ingest-lag-ms", str(args.ingest_lag_ms)]


HEADER = "# Generated by `ipanon deploy render` from config/operators/*.toml — do not edit.\n"


def all_users(authorities, operators=()) -> list[str]:
    """Every Kafka user of a deployment: the roles, one collector per operator and one per
    registered authority."""
    from ..acl import user_for
    from ..broker import SECURE_USERS

    return [*SECURE_USERS, *(user_for("collector", o) for o in sorted(operators)),
            *(user_for("authority", a) for a in sorted(authorities))]


#: the worker's Kafka client file in k8s (agents/security.py format; no secret in it)
K8S_SECURITY = "/etc/ipanon/kafka/worker.toml"
K8S_PASSWORD = "/var/run/ipanon/kafka/password"   # copied from the KafkaUser Secret, 0600
K8S_CA = "/etc/ipanon/kafka-ca/ca.crt"            # Strimzi's cluster CA certificate


def k8s_client_file() -> str:
    return (f'# ipanon Kafka client security of the worker (agents/security.py); no secret here\n'
            f'protocol = "SASL_SSL"\nmechanism = "SCRAM-SHA-512"\nusername = "ipanon-worker"\n'
            f'password_file = "{K8S_PASSWORD}"\nca_file = "{K8S_CA}"\n')


def render_k8s_kafka(args: argparse.Namespace) -> str:
    """A Strimzi KRaft cluster whose only listener is TLS with SCRAM-SHA-512, with ACLs on."""
    ns, cluster = args.namespace, args.cluster
    labels = {"strimzi.io/cluster": cluster}
    docs = [
        {"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaNodePool",
         "metadata": {"name": "dual-role", "namespace": ns, "labels": labels},
         "spec": {"replicas": 3, "roles": ["controller", "broker"],
                  "storage": {"type": "jbod", "volumes": [{"id": 0, "type": "persistent-claim", "size": "100Gi",
                                                           "deleteClaim": False, "kraftMetadata": "shared"}]}}},
        {"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "Kafka",
         "metadata": {"name": cluster, "namespace": ns,
                      "annotations": {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}},
         "spec": {
             "kafka": {
                 # the only listener: TLS, SCRAM-SHA-512 users (KafkaUser); no plaintext port exists
                 "listeners": [{"name": "tls", "port": STRIMZI_TLS_PORT, "type": "internal", "tls": True,
                                "authentication": {"type": "scram-sha-512"}}],
                 # every KafkaUser gets exactly its ACLs; anything not granted is refused
                 "authorization": {"type": "simple"},
                 "config": {"offsets.topic.replication.factor": args.replication_factor,
                            "transaction.state.log.replication.factor": args.replication_factor,
                            "transaction.state.log.min.isr": min(2, args.replication_factor),
                            "default.replication.factor": args.replication_factor,
                            "min.insync.replicas": min(2, args.replication_factor),
                            "auto.create.topics.enable": False,
                            "allow.everyone.if.no.acl.found": False}},
             "entityOperator": {"topicOperator": {}, "userOperator": {}}}},
    ]
    return HEADER + "---\n".join(to_yaml(d) for d in docs)


def render_k8s_users(args: argparse.Namespace, authorities, operators=()) -> str:
    """``ipanon acl render --format strimzi`` for this deployment."""
    from ..acl import render_strimzi, role_grants

    return HEADER + render_strimzi(role_grants(args.prefix, args.app_id, authorities, operators), cluster=args.cluster,
                                   namespace=args.namespace)


def render_k8s_worker(args: argparse.Namespace, plan: Any, profiles: dict[str, str]) -> str:
    ns = args.namespace
    # the web server listens on the pod IP only (not 0.0.0.0); the NetworkPolicy below lets
    # only Prometheus reach it
    env = worker_env(args, f"{args.cluster}-kafka-bootstrap:{STRIMZI_TLS_PORT}", K8S_SECURITY, "$(POD_IP)")
    labels = {"app.kubernetes.io/name": "ipanon", "app.kubernetes.io/component": "worker"}
    operators = sorted(plan.retention)
    docs = [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "ipanon-kafka-client", "namespace": ns, "labels": labels},
         "data": {"worker.toml": k8s_client_file()}},
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
                     "securityContext": {"runAsNonRoot": True, "runAsUser": IPANON_UID, "fsGroup": IPANON_UID},
                     # the key directory must be writable and shared by every replica: the table's
                     # ratchet state lives there (agents/vault.py), so the Secret only seeds it.
                     # Secret volumes get group bits from fsGroup; ipanon refuses such secret files,
                     # so the SCRAM password is copied to a memory volume and made 0600.
                     "initContainers": [{
                         "name": "seed-secrets", "image": args.image,
                         "command": ["sh", "-c", "cp -n /etc/ipanon/key-seed/*.key /var/lib/ipanon/keys/ && "
                                     "chmod 600 /var/lib/ipanon/keys/*.key && "
                                     f"cp /etc/ipanon/kafka-user/password {K8S_PASSWORD} && chmod 600 {K8S_PASSWORD}"],
                         "volumeMounts": [
                             {"name": "key-seed", "mountPath": "/etc/ipanon/key-seed", "readOnly": True},
                             {"name": "keys", "mountPath": "/var/lib/ipanon/keys"},
                             {"name": "kafka-user", "mountPath": "/etc/ipanon/kafka-user", "readOnly": True},
                             {"name": "kafka-password", "mountPath": str(Path(K8S_PASSWORD).parent)}],
                     }],
                     "containers": [{
                         "name": "worker", "image": args.image,
                         "args": ["worker", "--loglevel", "info"],
                         "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                 *({"name": k, "value": v} for k, v in env.items())],
                         "ports": [{"name": "web", "containerPort": WEB_PORT}],
                         "readinessProbe": {"httpGet": {"path": "/status.json", "port": "web"},
                                            "periodSeconds": 10},
                         "volumeMounts": [
                             {"name": "operators", "mountPath": "/etc/ipanon/operators", "readOnly": True},
                             {"name": "kafka-client", "mountPath": str(Path(K8S_SECURITY).parent), "readOnly": True},
                             {"name": "kafka-password", "mountPath": str(Path(K8S_PASSWORD).parent), "readOnly": True},
                             {"name": "kafka-ca", "mountPath": str(Path(K8S_CA).parent), "readOnly": True},
                             {"name": "keys", "mountPath": "/var/lib/ipanon/keys"},
                             {"name": "data", "mountPath": "/var/lib/ipanon/worker"}],
                     }],
                     "volumes": [
                         {"name": "operators", "configMap": {"name": "ipanon-operators"}},
                         {"name": "kafka-client", "configMap": {"name": "ipanon-kafka-client"}},
                         # made by Strimzi's user operator for the KafkaUser ipanon-worker
                         {"name": "kafka-user", "secret": {"secretName": "ipanon-worker", "defaultMode": 256,
                                                           "items": [{"key": "password", "path": "password"}]}},
                         {"name": "kafka-password", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                         # made by Strimzi's cluster operator: the CA that signed the brokers' certificates
                         {"name": "kafka-ca", "secret": {"secretName": f"{args.cluster}-cluster-ca-cert",
                                                         "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                         {"name": "key-seed", "secret": {"secretName": "ipanon-keys", "defaultMode": 384}},
                         {"name": "keys", "persistentVolumeClaim": {"claimName": "ipanon-key-state"}},
                         {"name": "data", "emptyDir": {}}],
                 }}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "ipanon-worker-metrics", "namespace": ns, "labels": labels,
                      "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(WEB_PORT),
                                      "prometheus.io/path": "/metrics"}},
         "spec": {"selector": labels, "ports": [{"name": "web", "port": WEB_PORT, "targetPort": "web"}]}},
        # the workers accept no connection but Prometheus's on the web port (they only connect out)
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "ipanon-worker", "namespace": ns, "labels": labels},
         "spec": {"podSelector": {"matchLabels": labels}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": PROMETHEUS_POD_LABELS}}],
                               "ports": [{"protocol": "TCP", "port": WEB_PORT}]}]}},
    ]
    return HEADER + "---\n".join(to_yaml(d) for d in docs)


SECRETS = "/secrets"   # the compose volume every service mounts; made by the `secrets` service


def broker_properties(args: argparse.Namespace, node: int) -> dict[str, str]:
    """One compose broker: SCRAM over TLS for clients, mutual TLS between brokers, for the
    controllers and for the admin's one-shot services; StandardAuthorizer, deny by default."""
    from ..broker import ADMIN_USER, BROKER_PRINCIPAL, SSL_PRINCIPAL_RULES

    rf = args.replication_factor
    return {  # node.id, process.roles and the voters come from the environment (render_compose)
        "listeners": f"SASL_SSL://:{CLIENT_PORT},CONTROLLER://:{CONTROLLER_PORT},INTERNAL://:{INTERNAL_PORT}",
        "advertised.listeners": f"SASL_SSL://kafka-{node}:{CLIENT_PORT},INTERNAL://kafka-{node}:{INTERNAL_PORT}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "INTERNAL",
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL,INTERNAL:SSL",
        "listener.name.controller.ssl.client.auth": "required",
        "listener.name.internal.ssl.client.auth": "required",
        "ssl.principal.mapping.rules": SSL_PRINCIPAL_RULES,
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": f"{SECRETS}/kafka/broker.pem",
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": f"{SECRETS}/kafka/ca.pem",
        "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN_USER};{BROKER_PRINCIPAL}",
        "log.dirs": "/var/lib/kafka/data",
        "offsets.topic.replication.factor": str(rf),
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(min(2, rf)),
        "min.insync.replicas": str(min(2, rf)),
        "auto.create.topics.enable": "false",
    }


def render_compose(args: argparse.Namespace, authorities, operators=()) -> str:
    from ..broker import ADMIN_USER

    brokers = [1, 2, 3]
    bootstrap = ",".join(f"kafka-{i}:{CLIENT_PORT}" for i in brokers)
    secrets_vol = f"secrets:{SECRETS}"
    done = {"condition": "service_completed_successfully"}
    services: dict[str, Any] = {}
    users = all_users(authorities, operators)
    services["secrets"] = {
        "image": args.image, "build": {"context": "../..", "dockerfile": "deploy/compose/Dockerfile"},
        "user": "0",  # hands each file to the user that reads it (brokers: 1000, ipanon: 10001)
        "command": ["deploy", "secrets", "--out", SECRETS, "--users", ",".join(users),
                    "--kafka-uid", str(KAFKA_UID), "--ipanon-uid", str(IPANON_UID)],
        "volumes": [secrets_vol],
    }
    for i in brokers:
        services[f"kafka-{i}"] = {
            "image": KAFKA_IMAGE,
            "hostname": f"kafka-{i}",
            # the rest of the configuration is ./kafka/server-<n>.properties (the image's file input)
            "environment": {
                "KAFKA_NODE_ID": str(i),
                "KAFKA_PROCESS_ROLES": "broker,controller",
                "KAFKA_CONTROLLER_QUORUM_VOTERS": ",".join(f"{n}@kafka-{n}:{CONTROLLER_PORT}" for n in brokers),
                "CLUSTER_ID": "MkU3OEVBNTcwNTJENDM2Qg",  # any 22-character base64 UUID; same for all three
            },
            "depends_on": {"secrets": done},
            "volumes": [f"kafka-{i}:/var/lib/kafka/data", f"./kafka/server-{i}.properties:/mnt/shared/config/server.properties:ro",
                        f"{secrets_vol}:ro"],
        }
    # SCRAM credentials through the admin API (mutual TLS as the admin), passwords from files:
    # kafka-configs --add-config-file, so no password is on a command line
    services["users"] = {
        "image": KAFKA_IMAGE,
        "entrypoint": ["sh", "-c"],
        "command": [f"set -e; for f in {SECRETS}/kafka/scram/*.properties; do u=$$(basename $$f .properties); "
                    f"/opt/kafka/bin/kafka-configs.sh --bootstrap-server kafka-1:{INTERNAL_PORT} "
                    f"--command-config {SECRETS}/kafka/admin-mtls.properties --alter --entity-type users "
                    f"--entity-name $$u --add-config-file $$f; done"],
        "depends_on": [f"kafka-{i}" for i in brokers],
        "volumes": [f"{secrets_vol}:ro"],
        "restart": "on-failure",
    }
    admin_env = {"IPANON_KAFKA_SECURITY": f"{SECRETS}/ipanon/clients/{ADMIN_USER}.toml"}
    common_volumes = ["../../config/operators:/etc/ipanon/operators:ro", "./keys:/var/lib/ipanon/keys"]
    services["topics"] = {
        "image": args.image,
        "command": topics_apply_command(args, bootstrap)[1:],
        "environment": admin_env,
        "depends_on": {"users": done},
        "volumes": [common_volumes[0], f"{secrets_vol}:ro"],
        "restart": "on-failure",
    }
    services["acls"] = {
        "image": args.image,
        "command": ["acl", "apply", "--bootstrap", bootstrap, "--prefix", args.prefix, "--app-id", args.app_id,
                    *(x for a in sorted(authorities) for x in ("--authority", a)),
                    # one collector user per operator profile, writing only <prefix>-raw-op-<operator>
                    "--operators", "/etc/ipanon/operators"],
        "environment": admin_env,
        "depends_on": {"users": done},
        "volumes": [common_volumes[0], f"{secrets_vol}:ro"],
        "restart": "on-failure",
    }
    # inside the compose network the web server must listen beyond loopback for Prometheus;
    # on the host it is published on 127.0.0.1 only
    env = worker_env(args, bootstrap, f"{SECRETS}/ipanon/clients/ipanon-worker.toml", "0.0.0.0")
    for w in (1, 2):
        services[f"worker-{w}"] = {
            "image": args.image,
            "command": ["worker", "--loglevel", "info"],
            "environment": env,
            "depends_on": {"topics": done, "acls": done},
            "volumes": common_volumes + [f"worker-{w}:/var/lib/ipanon/worker", f"{secrets_vol}:ro"],
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
           "volumes": {**{f"kafka-{i}": {} for i in brokers}, "worker-1": {}, "worker-2": {}, "secrets": {}}}
    return HEADER + to_yaml(doc)


def render_broker_properties(args: argparse.Namespace) -> dict[str, str]:
    brokers = [1, 2, 3]
    return {f"compose/kafka/server-{i}.properties":
            HEADER + "".join(f"{k}={v}\n" for k, v in broker_properties(args, i).items())
            for i in brokers}


def make_compose_secrets(out: Path, users: list[str], *, hosts=("kafka-1", "kafka-2", "kafka-3", "localhost"),
                         kafka_uid: Optional[int] = None, ipanon_uid: Optional[int] = None) -> dict[str, Path]:
    """The compose deployment's secrets, made once (existing ones are kept):

    - ``pki/``: the CA (its key stays here, root only) and the brokers' certificate;
    - ``kafka/`` (the brokers' user): ``ca.pem``, ``broker.pem`` (PEM keystore), the admin's
      client keystore and ``admin-mtls.properties`` (mutual TLS as ``ipanon-admin``), and
      ``scram/<user>.properties`` for ``kafka-configs --add-config-file``;
    - ``ipanon/`` (the worker image's user): ``ca.pem``, ``passwords/<user>.password`` and a
      client file ``clients/<user>.toml`` per user (``IPANON_KAFKA_SECURITY``).

    Every secret file is 0600, every directory 0700."""
    import secrets as _secrets
    import shutil

    from ..broker import ADMIN_USER
    from ..security import (KafkaSecurity, _write_private, issue_client_certificate, make_local_pki,
                            write_client_file)

    out = Path(out)
    pki, kafka, ipanon = out / "pki", out / "kafka", out / "ipanon"
    if not (pki / "ca.key").exists():
        make_local_pki(pki, hosts=tuple(hosts))
    if not (pki / "clients" / f"{ADMIN_USER}.key").exists():
        issue_client_certificate(pki, ADMIN_USER, pki / "clients")
    for d in (out, pki, kafka, kafka / "scram", ipanon, ipanon / "passwords", ipanon / "clients"):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        d.chmod(0o700)
    out.chmod(0o755)  # each service reaches only its own 0700 subdirectory
    for d in (kafka, ipanon):
        shutil.copyfile(pki / "ca.pem", d / "ca.pem")
    _write_private(kafka / "broker.pem", (pki / "broker.pem").read_bytes())
    _write_private(kafka / "admin.pem", (pki / "clients" / f"{ADMIN_USER}.key").read_bytes()
                   + (pki / "clients" / f"{ADMIN_USER}.pem").read_bytes())
    _write_private(kafka / "admin-mtls.properties", (
        "security.protocol=SSL\nssl.keystore.type=PEM\n"
        f"ssl.keystore.location={kafka / 'admin.pem'}\nssl.truststore.type=PEM\n"
        f"ssl.truststore.location={kafka / 'ca.pem'}\n").encode())
    for user in users:
        pw_file = ipanon / "passwords" / f"{user}.password"
        if not pw_file.exists():
            _write_private(pw_file, (_secrets.token_hex(24) + "\n").encode())
        pw = pw_file.read_text().strip()
        _write_private(kafka / "scram" / f"{user}.properties",
                       f"SCRAM-SHA-512=iterations=8192,password={pw}\n".encode())
        write_client_file(ipanon / "clients" / f"{user}.toml",
                          KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", user, "-", ca_file=ipanon / "ca.pem"),
                          pw_file).chmod(0o600)
    for d, uid in ((kafka, kafka_uid), (ipanon, ipanon_uid)):
        if uid is not None:
            for p in [d, *d.rglob("*")]:
                os.chown(p, uid, uid)
    return {"pki": pki, "kafka": kafka, "ipanon": ipanon}


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
# The first stage compiles the per-event core with mypyc (the full python image has the C compiler
# and headers); the worker image takes only that build, which it uses while it matches the
# installed sources (docs/operations.md, "The compiled core"; `ipanon core status` says which).
FROM python:3.11 AS core
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY agents ./agents
RUN pip install --no-cache-dir '.[compile]' && IPANON_CORE_DIR=/opt/ipanon-core ipanon core build

FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY agents ./agents
RUN pip install --no-cache-dir . && useradd --uid 10001 --create-home ipanon
COPY --from=core /opt/ipanon-core /opt/ipanon-core
ENV IPANON_CORE_DIR=/opt/ipanon-core
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
    from ..broker import authority_ids

    authorities = authority_ids()
    files = {
        "k8s/kafka.yaml": render_k8s_kafka(args),
        "k8s/kafka-users.yaml": render_k8s_users(args, authorities, sorted(plan.retention)),
        "k8s/topics.yaml": render_k8s(plan, cluster=args.cluster, namespace=args.namespace),
        "k8s/worker.yaml": render_k8s_worker(args, plan, profiles),
        "compose/compose.yaml": render_compose(args, authorities, sorted(plan.retention)),
        **render_broker_properties(args),
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

    if args.action == "secrets":
        from ..broker import authority_ids, operator_ids

        if args.out is None:
            raise CliError("deploy secrets needs --out DIR (the compose `secrets` volume)")
        users = [u for u in (args.users or "").split(",") if u] or all_users(authority_ids(), operator_ids())
        made = make_compose_secrets(args.out, users, kafka_uid=args.kafka_uid, ipanon_uid=args.ipanon_uid)
        print(f"secrets for {len(users)} users in {args.out} ({', '.join(sorted(made))})", file=sys.stderr)
        return 0
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
