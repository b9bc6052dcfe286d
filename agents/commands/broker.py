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
        epilog="example:\n  ipanon broker start && ipanon broker status && ipanon broker stop",
    )
    p.add_argument("action", choices=["start", "stop", "status", "fetch", "wipe"],
                   help="start/stop are idempotent; fetch only downloads the jars; wipe stops and deletes the data")
    p.add_argument("--dir", type=Path, default=None,
                   help="state directory (default ~/.local/state/ipanon/broker, or $IPANON_STATE/broker)")
    p.add_argument("--heap", default="768m", help="broker JVM heap (default 768m)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..broker import LocalBroker, fetch

    b = LocalBroker(args.dir, heap=args.heap)
    if args.action == "fetch":
        print(fetch())
        return 0
    if args.action == "start":
        info = b.start()
        print(info.bootstrap)
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
