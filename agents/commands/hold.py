"""``ipanon hold add|release|list`` — legal holds (preservation orders) on mappings.

A hold freezes the expiry of exactly the mappings it names (``stream.hold``) until ``--until``
or a release.  ``add`` and ``release`` send a command to the lawful-access inbox
(``<prefix>-query-requests``, key ``hold``); the query agent (agents/query_agent.py) validates
it, appends ``legal-hold-set`` / ``legal-hold-released`` to the audit trail (id, case, until —
never the address), publishes the active holds on ``<prefix>-holds`` for every worker's
sweeper and confirms on ``<prefix>-query-responses`` (key = hold id).  ``list`` prints the
active holds from ``<prefix>-holds``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional

from ..cli import CliError
from .audit import default_bootstrap, read_topic
from .query import _iso, parse_time_ms


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hold", help="legal holds: keep named mappings past their expiry until a date or a release",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Set, release or list legal holds (preservation orders). Every set and release is audited.",
        epilog="example:\n"
               "  ipanon hold add --operator connect2ip --ip 100.64.12.34 --from 2026-06-10T06:00:00Z \\\n"
               "      --to 2026-06-10T08:00:00Z --case 'PMÖÄ 5331-21' --until 2026-09-01T00:00:00Z\n"
               "  ipanon hold list\n  ipanon hold release 3f2a9c0d1e2b4a5c",
    )
    hsub = p.add_subparsers(dest="hold_action", metavar="ACTION", required=True)
    a = hsub.add_parser("add", help="freeze expiry of the mappings of one address (port) during [from, to)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon hold add --operator connect2ip --ip 198.51.100.7 --port 40123 "
                               "--from 1780000000000 --to 1780000600000 --case B-1234-26 --until 2026-09-01T00:00:00Z")
    a.add_argument("--operator", required=True, help="operator profile name")
    a.add_argument("--ip", required=True, help="address or prefix (canonical text or any valid spelling)")
    a.add_argument("--port", type=int, default=None, help="CGNAT public port (optional)")
    a.add_argument("--from", dest="from_", required=True, help="start of the held usage (ms or ISO 8601 with zone)")
    a.add_argument("--to", required=True, help="end of the held usage, exclusive (ms or ISO 8601)")
    a.add_argument("--case", required=True, help="case reference of the preservation order")
    a.add_argument("--until", required=True, help="when the hold lapses by itself (ms or ISO 8601; at most 90 days)")
    _common(a)
    a.set_defaults(func=run_add)
    r = hsub.add_parser("release", help="end a hold now (its mappings then expire as usual)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon hold release 3f2a9c0d1e2b4a5c")
    r.add_argument("hold_id", help="the id printed by `ipanon hold add`")
    _common(r)
    r.set_defaults(func=run_release)
    ls = hsub.add_parser("list", help="print the active holds (from <prefix>-holds)",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="example:\n  ipanon hold list --json")
    ls.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default: the local broker)")
    ls.add_argument("--prefix", default="ipanon", help="topic prefix (default ipanon)")
    ls.add_argument("--json", action="store_true", help="one JSON hold per line")
    ls.set_defaults(func=run_list)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default: the local broker)")
    p.add_argument("--prefix", default="ipanon", help="topic prefix (default ipanon)")
    p.add_argument("--wait", type=float, default=10.0,
                   help="seconds to wait for the query agent's confirmation (0 = do not wait)")
    p.add_argument("--dry-run", action="store_true", help="print the command instead of sending it")


def _send(args: argparse.Namespace, value: bytes) -> None:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from agents.query_agent import HOLD_KEY

    topic = f"{args.prefix}-query-requests"
    bootstrap = args.bootstrap or default_bootstrap()
    try:
        prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_block_ms=10_000,
                             **__import__("agents.security").security.kafka_python_kwargs())
    except KafkaError as e:
        raise CliError(f"cannot reach Kafka at {bootstrap} ({type(e).__name__}) — is the broker running?") from None
    try:
        if not prod.partitions_for(topic):
            raise CliError(f"topic {topic} does not exist on {bootstrap} — run `ipanon topics apply`")
        prod.send(topic, key=HOLD_KEY, value=value).get(timeout=10)
    except CliError:
        raise
    except Exception as e:
        raise CliError(f"could not send to {topic} on {bootstrap}: {type(e).__name__}") from None
    finally:
        prod.close()


def _confirmation(args: argparse.Namespace, hold_id: str, statuses: set[str]) -> Optional[dict]:
    """The agent's reply for ``hold_id`` with one of ``statuses`` (or None after ``--wait``)."""
    topic = f"{args.prefix}-query-responses"
    bootstrap = args.bootstrap or default_bootstrap()
    deadline = time.monotonic() + args.wait
    while True:
        for _, _, key, value in reversed(read_topic(bootstrap, topic)):
            if key != hold_id.encode() or value is None:
                continue
            try:
                m = json.loads(value)
            except ValueError:
                continue
            if m.get("type") == "hold" and m.get("status") in statuses:
                return m
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)


def run_add(args: argparse.Namespace) -> int:
    from stream.audit import canonical
    from stream.errors import Rejected
    from stream.hold import make_hold

    now = int(time.time() * 1000)
    try:
        h = make_hold(operator=args.operator, ip=args.ip, port=args.port,
                      from_ms=parse_time_ms(args.from_, "--from"), to_ms=parse_time_ms(args.to, "--to"),
                      case_ref=args.case, until_ms=parse_time_ms(args.until, "--until"), now_ms=now)
    except Rejected as e:
        raise CliError(f"hold refused: {e.reason}" + (f" ({e.detail})" if e.detail else "")) from None
    msg = canonical({"type": "hold-set", "v": 1, "hold": h.to_dict()})
    if args.dry_run:
        sys.stdout.write(msg.decode() + "\n")
        return 0
    _send(args, msg)
    if args.wait > 0:
        m = _confirmation(args, h.hold_id, {"set", "refused"})
        if m is None:
            print(f"hold {h.hold_id} sent; no confirmation from the query agent within {args.wait:g}s "
                  f"(is the worker running?)", file=sys.stderr)
            return 1
        if m["status"] == "refused":
            raise CliError(f"hold refused by the query agent: {m.get('reason', 'unknown')}")
    print(f"hold {h.hold_id} set until {_iso(h.until_ms)} (case {h.case_ref})")
    return 0


def run_release(args: argparse.Namespace) -> int:
    from stream.audit import canonical

    msg = canonical({"type": "hold-release", "v": 1, "hold_id": args.hold_id})
    if args.dry_run:
        sys.stdout.write(msg.decode() + "\n")
        return 0
    _send(args, msg)
    if args.wait > 0:
        m = _confirmation(args, args.hold_id, {"released", "refused"})
        if m is None:
            print(f"release of {args.hold_id} sent; no confirmation within {args.wait:g}s", file=sys.stderr)
            return 1
        if m["status"] == "refused":
            raise CliError(f"release refused: {m.get('reason', 'unknown')}")
    print(f"hold {args.hold_id} released")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from agents.query_agent import read_holds

    holds, _ = read_holds(args.bootstrap or default_bootstrap(), f"{args.prefix}-holds")
    if not holds:
        print("no active holds", file=sys.stderr)
        return 0
    for hid, h in sorted(holds.items()):
        d = h.to_dict()
        if args.json:
            print(json.dumps(d, sort_keys=True))
        else:
            port = f":{h.port}" if h.port is not None else ""
            print(f"{hid} {h.operator} {d['ip']}{port} [{_iso(h.from_ms)}, {_iso(h.to_ms)}) "
                  f"case={h.case_ref} until={_iso(h.until_ms)}")
    return 0
