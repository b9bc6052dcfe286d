"""``ipanon acl render|apply`` — Kafka ACLs per role, computed from the topic layout (roles
and the reasoning: ``agents.acl``, docs/security.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "acl", help="render or apply the Kafka ACLs of every role (collector per operator, worker, analyst, authority, staff, auditor)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="ACLs for every ipanon role, generated from the same topic layout as `ipanon topics`.\n"
                    "render: kafka-acls.sh command lines or Strimzi KafkaUser YAML.  apply: create them with\n"
                    "the admin client (run as the Kafka super user: IPANON_KAFKA_SECURITY=…/ipanon-admin.toml).",
        epilog="example:\n"
               "  ipanon acl render --format kafka-acls --bootstrap kafka-1:9093\n"
               "  ipanon acl render --format strimzi --cluster my-cluster > kafka-users.yaml\n"
               "  IPANON_KAFKA_SECURITY=/tmp/ipanon-secure/clients/ipanon-admin.toml ipanon acl apply --bootstrap 127.0.0.1:9093",
    )
    asub = p.add_subparsers(dest="acl_action", metavar="ACTION", required=True)
    for name, helptext in (("render", "print the ACLs (nothing is sent)"), ("apply", "create the ACLs on the broker")):
        a = asub.add_parser(name, help=helptext, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="example:\n  ipanon acl " + ("render --format strimzi" if name == "render"
                                                                 else "apply --bootstrap 127.0.0.1:9093"))
        a.add_argument("--prefix", default=os.environ.get("IPANON_TOPIC_PREFIX") or "ipanon", help="topic prefix")
        a.add_argument("--app-id", default=None, help="worker app id / consumer group (default: IPANON_APP_ID or ipanon)")
        a.add_argument("--authorities", type=Path, default=None,
                       help="authority registry directory (default config/authorities)")
        a.add_argument("--authority", action="append", default=[],
                       help="an authority id (repeatable; replaces the registry)")
        a.add_argument("--operators", type=Path, default=None,
                       help="operator profiles directory: one collector user per profile, writing only "
                            "<prefix>-raw-op-<operator> (default IPANON_OPERATORS or config/operators)")
        a.add_argument("--operator", action="append", default=[],
                       help="an operator name (repeatable; replaces the profiles directory)")
        a.add_argument("--bootstrap", default=None, help="Kafka bootstrap (apply: default IPANON_BOOTSTRAP or the local broker)")
        if name == "render":
            a.add_argument("--format", choices=["kafka-acls", "strimzi"], default="kafka-acls")
            a.add_argument("--cluster", default="ipanon", help="Strimzi cluster label (default ipanon)")
            a.add_argument("--namespace", default=None, help="Kubernetes namespace for the KafkaUser resources")
            a.add_argument("--command-config", default="admin.properties",
                           help="kafka-acls.sh --command-config file named in the lines")
        a.set_defaults(func=run)


def grants_for(args: argparse.Namespace):
    from ..acl import role_grants
    from ..broker import authority_ids, operator_ids

    app_id = args.app_id or os.environ.get("IPANON_APP_ID") or "ipanon"
    authorities = args.authority or authority_ids(args.authorities)
    operators = args.operator or operator_ids(args.operators)
    return role_grants(args.prefix, app_id, authorities, operators)


def run(args: argparse.Namespace) -> int:
    from ..acl import apply_grants, render_kafka_acls, render_strimzi
    from ..cli import CliError

    grants = grants_for(args)
    if args.acl_action == "render":
        if args.format == "strimzi":
            sys.stdout.write(render_strimzi(grants, cluster=args.cluster, namespace=args.namespace))
        else:
            sys.stdout.write(render_kafka_acls(grants, bootstrap=args.bootstrap or "BOOTSTRAP",
                                               command_config=args.command_config))
        return 0
    bootstrap = args.bootstrap or os.environ.get("IPANON_BOOTSTRAP")
    if not bootstrap:
        from ..broker import LocalBroker

        bootstrap = LocalBroker().bootstrap
    from kafka.errors import KafkaError

    from ..kafka_admin import admin_client
    from ..security import connect_hint

    try:
        admin = admin_client(bootstrap)
    except KafkaError as e:
        raise CliError(f"cannot reach Kafka at {bootstrap} ({type(e).__name__}); {connect_hint()}") from None
    try:
        sent, had = apply_grants(admin, grants)
    except RuntimeError as e:
        raise CliError(str(e)) from None
    except KafkaError as e:
        raise CliError(f"the broker refused the ACLs ({type(e).__name__}): run as the Kafka super user; "
                       f"{connect_hint()}") from None
    finally:
        admin.close()
    users = sorted({g.user for g in grants})
    print(f"acl: {sent} bindings created, {had} already present, for {len(users)} users: {', '.join(users)}")
    return 0
