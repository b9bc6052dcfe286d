"""``ipanon broker start|stop|status|fetch`` — the local Apache Kafka from Maven Central."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "broker", help="run a local single-node Kafka (KRaft) broker for demos and tests",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Manage a local Apache Kafka broker assembled from Maven Central.\n"
                    "Listens on 127.0.0.1 on free ports; prints the bootstrap address.",
        epilog="example:\n  ipanon broker start && ipanon broker status && ipanon broker stop\n"
               "  ipanon broker start --secure --dir /tmp/ipanon-secure\n"
               "  IPANON_KAFKA_SECURITY=/tmp/ipanon-secure/clients/ipanon-admin.toml ipanon acl apply --bootstrap HOST:PORT",
    )
    p.add_argument("action", choices=["start", "stop", "status", "fetch", "wipe"],
                   help="start/stop are idempotent; fetch only downloads the jars; wipe stops and deletes the data")
    p.add_argument("--dir", type=Path, default=None,
                   help="state directory (default ~/.local/state/ipanon/broker, or $IPANON_STATE/broker)")
    p.add_argument("--heap", default="768m", help="broker JVM heap (default 768m)")
    p.add_argument("--secure", action="store_true",
                   help="TLS + SASL/SCRAM-SHA-512 listener with ACL authorisation (users per role; "
                        "client files in DIR/clients/, see docs/security.md); a directory is formatted "
                        "one way or the other")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..broker import LocalBroker, fetch

    b = LocalBroker(args.dir, heap=args.heap, secure=args.secure)
    if args.action == "fetch":
        print(fetch())
        return 0
    if args.action == "start":
        info = b.start()
        print(info.bootstrap)
        if args.secure:
            import sys

            print(f"secure: SASL_SSL (SCRAM-SHA-512), ACLs on; client files: {b.dir / 'clients'}/<user>.toml "
                  f"(set IPANON_KAFKA_SECURITY); grant roles with `ipanon acl apply`", file=sys.stderr)
        return 0
    if args.action == "stop":
        print(b.stop().line())
        return 0
    if args.action == "wipe":
        b.wipe()
        print(f"wiped {b.dir}")
        return 0
    info = b.status()
    print(info.line())
    return 0 if info.running else 1
