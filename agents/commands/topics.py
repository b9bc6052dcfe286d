"""``ipanon topics plan|apply|render`` — topic configs computed from the operators' promises.

One plan (``stream.policy.plan_topics``) feeds all three, so the broker, the printed bounds and
the Kubernetes manifests can never disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

EXAMPLES = """examples:
  ipanon topics plan                                # bounds at Kafka's default broker settings
  ipanon topics plan --broker-settings local --json # at the local test broker's settings
  ipanon topics apply --bootstrap 127.0.0.1:9092    # create/verify; reads the broker's own settings
  ipanon topics apply --alter                       # also fix topics that break a promise
  ipanon topics render --k8s --cluster my-cluster > deploy/k8s/topics.yaml
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "topics", help="plan, create/verify or render ipanon's Kafka topics from the retention promises",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compute every topic's configs from the operator profiles' promises and print, per\n"
                    "operator and topic, the worst-case time raw data can physically persist.\n"
                    "  plan    print the plan (no broker needed)\n"
                    "  apply   create missing topics, verify and (where safe) align existing ones\n"
                    "  render  emit Strimzi KafkaTopic YAML for the same plan",
        epilog=EXAMPLES,
    )
    p.add_argument("action", choices=["plan", "apply", "render"])
    p.add_argument("--operators", type=Path, default=None,
                   help="directory of operator profiles (default $IPANON_OPERATORS or config/operators)")
    p.add_argument("--bootstrap", default=None,
                   help="Kafka bootstrap (apply: default $IPANON_BOOTSTRAP or the local broker; "
                        "plan/render: if given, the broker's settings are read from it)")
    p.add_argument("--broker-settings", choices=["kafka-defaults", "local"], default=None,
                   help="plan/render without a broker: assume Kafka's defaults (default) or the local "
                        "test broker's overrides (agents/broker.py LOCAL_OVERRIDES)")
    p.add_argument("--prefix", default=None, help="topic prefix (default $IPANON_TOPIC_PREFIX or ipanon)")
    p.add_argument("--app-id", default=None, help="Faust app id naming the changelog (default $IPANON_APP_ID or ipanon)")
    p.add_argument("--partitions", type=int, default=None, help="partitions per topic (default $IPANON_PARTITIONS or 4)")
    p.add_argument("--replication-factor", type=int, default=None,
                   help="replication factor (default $IPANON_REPLICATION_FACTOR or 1)")
    # the worker's own parameters: the same flags, variables and defaults as `ipanon worker`
    p.add_argument("--heartbeat-ms", type=int, default=None,
                   help="worker heartbeat period (default $IPANON_HEARTBEAT_MS or 60000)")
    p.add_argument("--sweeper-period-ms", type=int, default=None,
                   help="expiry sweeper period (default $IPANON_SWEEPER_PERIOD_MS or 1000)")
    p.add_argument("--ingest-lag-ms", type=int, default=None,
                   help="max delay from a mapping's end to its last raw record (default $IPANON_INGEST_LAG_MS or 300000)")
    p.add_argument("--table-store", choices=["memory", "disk"], default=None,
                   help="where the worker keeps the mapping table (default $IPANON_TABLE_STORE or memory); "
                        "disk adds the store's erasure bound B_disk to the plan")
    p.add_argument("--erasure-cycle-ms", type=int, default=None,
                   help="disk store: forced-compaction cycle (default $IPANON_ERASURE_CYCLE_MS or the worker's)")
    p.add_argument("--erasure-tick-ms", type=int, default=None,
                   help="disk store: erasure tick period (default $IPANON_ERASURE_TICK_MS or the worker's)")
    p.add_argument("--compaction-allowance-ms", type=int, default=None,
                   help="disk store: longest one erasure tick may take (default $IPANON_COMPACTION_ALLOWANCE_MS "
                        "or the worker's)")
    p.add_argument("--alter", action="store_true",
                   help="apply: also alter existing topics that break a promise (deletes data older than "
                        "the new retention); cleanup.policy is never changed")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--k8s", action="store_true", help="render: Strimzi KafkaTopic resources (the only format)")
    p.add_argument("--cluster", default="ipanon", help="render: strimzi.io/cluster label (default ipanon)")
    p.add_argument("--namespace", default=None, help="render: metadata.namespace")
    p.set_defaults(func=run)


def _env(name: str) -> Optional[str]:
    v = os.environ.get(name)
    return v if v else None


def plan_settings(args: argparse.Namespace, operators_dir: Path):
    """The worker's ``Settings`` for these flags: every plan parameter the flags leave out comes
    from the same environment variables and defaults the worker reads."""
    from ..settings import Settings

    return Settings.from_env(bootstrap=getattr(args, "bootstrap", None) or "unused:9092", operators_dir=operators_dir,
                             topic_prefix=args.prefix, app_id=args.app_id, partitions=args.partitions,
                             replication_factor=args.replication_factor, heartbeat_ms=args.heartbeat_ms,
                             sweeper_period_ms=args.sweeper_period_ms, ingest_lag_ms=args.ingest_lag_ms,
                             table_store=getattr(args, "table_store", None),
                             erasure_cycle_ms=getattr(args, "erasure_cycle_ms", None),
                             erasure_tick_ms=getattr(args, "erasure_tick_ms", None),
                             compaction_allowance_ms=getattr(args, "compaction_allowance_ms", None))


def build_plan(args: argparse.Namespace, admin=None):
    """The plan for these CLI options; broker settings from ``admin`` when given."""
    from stream.config import load_operators
    from stream.policy import KAFKA_DEFAULTS, BrokerSettings, make_layout, plan_topics

    from ..broker import LOCAL_OVERRIDES, REPO_ROOT
    from ..kafka_admin import read_broker_settings
    from ..runtime import plan_params

    ops_dir = args.operators or Path(_env("IPANON_OPERATORS") or REPO_ROOT / "config" / "operators")
    operators = load_operators(ops_dir)
    if admin is not None:
        broker, _ = read_broker_settings(admin)
        source = "read from the broker"
    elif args.broker_settings == "local":
        broker, source = BrokerSettings.from_configs(LOCAL_OVERRIDES), "local test broker overrides"
    else:
        broker, source = KAFKA_DEFAULTS, "Apache Kafka defaults"
    # the same Settings (flags > IPANON_* > defaults) and the same parameters the worker plans with
    settings = plan_settings(args, ops_dir)
    params = plan_params(settings)
    layout = make_layout(settings.topic_prefix, settings.app_id, operators)
    return plan_topics(operators, broker, params, layout), source


def format_plan(plan, source: str) -> str:
    from stream.config import format_duration as d

    b = plan.broker
    out = [f"broker settings ({source}): log.retention.check.interval.ms={b.retention_check_interval_ms} "
           f"log.cleaner.backoff.ms={b.cleaner_backoff_ms} log.cleaner.enable={str(b.cleaner_enabled).lower()}; "
           f"heartbeat {d(plan.params.heartbeat_ms)}, sweeper {d(plan.params.sweeper_period_ms)} "
           f"(+ {d(plan.params.schedule_bucket_ms)} schedule bucket), ingest lag {d(plan.params.ingest_lag_ms)}"]
    disk = plan.params.disk
    if disk is None:
        out.append("mapping store: memory (no on-disk term: B_disk = 0)")
    else:
        out.append(f"mapping store: on disk; B_disk = erasure cycle {d(disk.cycle_ms)} + erasure tick {d(disk.tick_ms)} "
                   f"+ compaction allowance {d(disk.compaction_allowance_ms)} = {d(disk.bound_ms)} ({disk.bound_ms} ms)")
    out += ["", "operators (raw mappings: expiry = end + TTL; "
                "TTL + sweeper + bucket + max(derived-topic bound, B_disk) ≤ promise):"]
    out.append(f"  {'operator':<12} {'promise':>9} {'legal min':>9} {'TTL':>10} {'derived':>9} {'B_disk':>9} "
               f"{'worst case':>10}")
    for r in plan.retention.values():
        out.append(f"  {r.operator:<12} {d(r.promise_ms):>9} {d(r.legal_minimum_ms) if r.legal_minimum_ms else '-':>9} "
                   f"{d(r.ttl_ms):>10} {d(r.derived_bound_ms):>9} {d(r.disk_bound_ms) if disk else '-':>9} "
                   f"{d(r.worst_case_ms):>10}")
    w = max(len(t.name) for t in plan.topics)
    out += ["", "topics (bound = worst-case persistence of a record after it is written):"]
    out.append(f"  {'topic':<{w}} {'role':<10} {'bound':>10} {'budget':>10}  governed by")
    for t in plan.topics:
        gov = f"{t.governed_by[0]} {t.governed_by[1]}" if t.governed_by else "-"
        out.append(f"  {t.name:<{w}} {t.role:<10} {d(t.bound_ms):>10} {d(t.budget_ms):>10}  {gov}")
        out.append(f"  {'':<{w}}   " + " ".join(f"{k}={v}" for k, v in t.configs.items()))
    out += ["", "per operator and topic (worst case after the mapping ends, against the promise):"]
    out.append(f"  {'operator':<12} {'topic':<{w}} {'purpose':<13} {'bound':>10} {'promise':>9}  ok")
    for r in plan.rows:
        out.append(f"  {r.operator:<12} {r.topic:<{w}} {r.purpose or '-':<13} {d(r.bound_ms):>10} "
                   f"{d(r.promise_ms) if r.promise_ms is not None else '-':>9}  {'yes' if r.ok else 'NO'}")
    return "\n".join(out)


def render_k8s(plan, *, cluster: str, namespace: Optional[str] = None) -> str:
    """Strimzi ``KafkaTopic`` resources (kafka.strimzi.io/v1beta2), one document per topic.
    Written by hand (no YAML dependency); every config value is a quoted string."""
    from stream.config import format_duration as d

    docs = []
    for t in plan.topics:
        lines = ["apiVersion: kafka.strimzi.io/v1beta2", "kind: KafkaTopic", "metadata:",
                 f"  name: {t.name}"]
        if namespace:
            lines.append(f"  namespace: {namespace}")
        lines += ["  labels:", f"    strimzi.io/cluster: {json.dumps(cluster)}",
                  f"    ipanon/role: {t.role}", "  annotations:",
                  f"    ipanon/worst-case-persistence-ms: {json.dumps(str(t.bound_ms) if t.bound_ms is not None else 'unbounded')}",
                  f"    ipanon/worst-case-persistence: {json.dumps(d(t.bound_ms))}"]
        if t.governed_by:
            lines.append(f"    ipanon/governed-by: {json.dumps(' '.join(t.governed_by))}")
        lines += ["spec:", f"  topicName: {t.name}", f"  partitions: {t.partitions}",
                  f"  replicas: {t.replication_factor}", "  config:"]
        lines += [f"    {k}: {json.dumps(v)}" for k, v in t.configs.items()]
        docs.append("\n".join(lines) + "\n")
    header = ("# Generated by `ipanon topics render --k8s` from config/operators/*.toml — do not edit;\n"
              f"# broker settings assumed: log.retention.check.interval.ms={plan.broker.retention_check_interval_ms}, "
              f"log.cleaner.backoff.ms={plan.broker.cleaner_backoff_ms}\n")
    return header + "---\n" + "---\n".join(docs)


def run(args: argparse.Namespace) -> int:
    from ..cli import CliError

    if args.action == "render" and not args.k8s:
        raise CliError("render needs a format: ipanon topics render --k8s")
    admin = None
    bootstrap = args.bootstrap
    if args.action == "apply" and not bootstrap:
        bootstrap = _env("IPANON_BOOTSTRAP")
        if not bootstrap:
            from ..broker import LocalBroker

            bootstrap = LocalBroker().bootstrap
    try:
        if bootstrap:
            from ..kafka_admin import admin_client

            try:
                admin = admin_client(bootstrap)
            except Exception as e:  # kafka-python raises NoBrokersAvailable & co.
                raise CliError(f"cannot reach Kafka at {bootstrap}: {type(e).__name__} — check --bootstrap") from None
        plan, source = build_plan(args, admin)
        if args.action == "plan":
            print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan, source))
            return 0
        if args.action == "render":
            sys.stdout.write(render_k8s(plan, cluster=args.cluster, namespace=args.namespace))
            return 0
        from ..kafka_admin import apply_plan, describe_outcomes

        outcomes = apply_plan(admin, plan, alter_unsafe=args.alter)
        refused = [o for o in outcomes if o.action == "refused"]
        if args.json:
            print(json.dumps({"plan": plan.to_dict(), "outcomes": [o.to_dict() for o in outcomes]}, indent=2))
        else:
            print(format_plan(plan, source))
            print()
            print(describe_outcomes(outcomes))
        if refused:
            print(f"ipanon: {len(refused)} topic(s) refused: {refused[0].detail}", file=sys.stderr)
            return 2
        return 0
    finally:
        if admin is not None:
            admin.close()
