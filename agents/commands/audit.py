"""``ipanon audit verify|show`` — check and read the lawful-access audit trail on Kafka.

The trail lives on one single-partition topic (``<prefix>-audit``, long retention); both
commands read it from the beginning with kafka-python, without a consumer group (reading the
trail never moves anybody's offsets).  ``verify`` exits 0 when the chain is intact and 1 when
it is not, naming the first broken record by index, Kafka offset and sequence number.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

from ..cli import CliError


def default_bootstrap() -> str:
    from ..broker import LocalBroker

    return LocalBroker().bootstrap


_CHECKED: set[str] = set()


def check_connection(bootstrap: str) -> None:
    """Connect once per process and bootstrap before the kafka-python clients do, so a wrong
    password, an untrusted certificate, a protocol mismatch or an unreachable broker is one
    precise line within seconds, not a ``KafkaTimeoutError`` after half a minute."""
    from ..security import ConnectFailed, diagnose

    if bootstrap in _CHECKED:
        return
    try:
        diagnose(bootstrap)
    except ConnectFailed as e:
        raise CliError(str(e)) from None
    _CHECKED.add(bootstrap)


def missing_topic(bootstrap: str, topic: str, hint: str) -> CliError:
    """The error for a topic the client cannot see: an ACL denial says so."""
    from ..security import current, topic_access

    try:
        access = topic_access(bootstrap, topic)
    except Exception:  # noqa: BLE001 - the plain message is still right
        access = "missing"
    if access == "denied":
        return CliError(f"access to topic {topic} on {bootstrap} denied for {current().describe()} (Kafka ACL)")
    return CliError(f"topic {topic} does not exist on {bootstrap} — {hint}")


def read_topic(bootstrap: str, topic: str, *, timeout_s: float = 30.0,
               begin: Optional[dict] = None) -> list[tuple[int, int, Optional[bytes], bytes]]:
    """Every record of ``topic`` from the beginning to the end offsets seen at the start:
    ``[(partition, offset, key, value)]`` ordered by partition then offset.  ``begin``, if
    given, receives each partition's log-start offset."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    check_connection(bootstrap)
    try:
        from ..kafka_clients import Clients  # TLS/SASL from the environment

        c = Clients(bootstrap).consumer(client_id="ipanon-cli-reader")
    except KafkaError as e:
        raise CliError(f"cannot reach Kafka at {bootstrap} ({type(e).__name__}) — is the broker running?") from None
    try:
        parts = c.partitions_for_topic(topic)
        if not parts:
            raise missing_topic(bootstrap, topic, "start the worker or check --prefix/--topic")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        if begin is not None:
            begin.update({tp.partition: o for tp, o in c.beginning_offsets(tps).items()})
        out: list[tuple[int, int, Optional[bytes], bytes]] = []
        deadline = time.monotonic() + timeout_s
        while any(c.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise CliError(f"timed out reading {topic} from {bootstrap}")
            for tp, msgs in c.poll(timeout_ms=500).items():
                out.extend((tp.partition, m.offset, m.key, m.value) for m in msgs if m.offset < end[tp])
        out.sort(key=lambda r: (r[0], r[1]))
        return out
    finally:
        c.close()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit", help="verify or read the hash-chained lawful-access audit trail",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read the audit topic from the beginning; verify its hash chain or print a trail.",
        epilog="example:\n  ipanon audit verify\n  ipanon audit show rights-demo/2026-0042\n"
               "  ipanon audit show --case 'B 1234-26' --json",
    )
    asub = p.add_subparsers(dest="audit_action", metavar="ACTION", required=True)
    v = asub.add_parser("verify", help="check every record's hash, sequence and link; name the first broken one",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon audit verify --bootstrap 127.0.0.1:9092 --expect-head 3f2a…")
    _common(v)
    v.add_argument("--anchor-key", type=Path, default=None,
                   help="the desk's anchor public key file (default: <keys>/audit-anchor.pub, keys from "
                        "IPANON_KEYS or the worker's data directory)")
    v.add_argument("--max-unanchored-ms", type=int, default=10_000,
                   help="how long records may wait for their signed checkpoint (default 10000)")
    v.add_argument("--max-checkpoint-age", type=int, default=None,
                   help="ms: report BROKEN when the last checkpoint is older (default: 2 checkpoint periods "
                        "of the default heartbeat, 2 h + 10 min)")
    v.add_argument("--no-anchor", action="store_true",
                   help="check the hash chain only (cannot see a forged append, a cut tail or deleted records)")
    v.add_argument("--expect-head", default=None,
                   help="hash of the last record as anchored elsewhere (detects a cut-off tail)")
    v.add_argument("--start-seq", type=int, default=None,
                   help="first sequence number present, when retention removed older records")
    v.add_argument("--start-prev", default=None, help="hash of the record before --start-seq")
    v.set_defaults(func=run_verify)
    s = asub.add_parser("show", help="print the trail of one request or one case",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon audit show se-police-demo/17\n  ipanon audit show --case AM-1234-26")
    _common(s)
    s.add_argument("request_id", nargs="?", default=None, help="request id (authority/number)")
    s.add_argument("--case", default=None, help="case reference instead of a request id")
    s.add_argument("--json", action="store_true", help="one JSON record per line")
    s.set_defaults(func=run_show)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default: the local broker)")
    p.add_argument("--prefix", default="ipanon", help="topic prefix (default ipanon)")
    p.add_argument("--topic", default=None, help="audit topic (default <prefix>-audit)")


def _records(args: argparse.Namespace, begin: Optional[dict] = None):
    topic = args.topic or f"{args.prefix}-audit"
    rows = read_topic(args.bootstrap or default_bootstrap(), topic, begin=begin)
    if len({r[0] for r in rows}) > 1:
        raise CliError(f"{topic} has records on several partitions: an audit trail needs one partition")
    return topic, rows


def anchor_key_path(args: argparse.Namespace) -> Path:
    import os

    if args.anchor_key is not None:
        return args.anchor_key
    keys = os.environ.get("IPANON_KEYS")
    if not keys:
        data = os.environ.get("IPANON_DATA_DIR") or str(Path.home() / ".local" / "state" / "ipanon" / "worker")
        keys = str(Path(data) / "keys")
    return Path(keys) / "audit-anchor.pub"


def run_verify(args: argparse.Namespace) -> int:
    from stream.audit import AuditError, verify

    if (args.start_seq is None) != (args.start_prev is None):
        raise CliError("--start-seq and --start-prev go together")
    if not args.no_anchor and args.start_seq is None and args.expect_head is None:
        return _verify_anchored(args)
    topic, rows = _records(args)
    start = (args.start_seq, args.start_prev) if args.start_seq is not None else None
    try:
        head = verify([r[3] for r in rows], offsets=[r[1] for r in rows], start=start,
                      expect_head=args.expect_head)
    except AuditError as e:
        print(f"audit trail BROKEN on {topic}: {e}", file=sys.stderr)
        return 1
    print(f"audit trail ok on {topic}: {len(rows)} records, head {head}")
    return 0


def _verify_anchored(args: argparse.Namespace) -> int:
    from stream.audit import verify_anchored
    from stream.errors import ConfigError

    from ..query_agent import read_anchor_public

    path = anchor_key_path(args)
    if not path.exists():
        raise CliError(f"{path}: no anchor key; pass --anchor-key (the worker writes <keys>/audit-anchor.pub) "
                       f"or --no-anchor for the hash chain alone")
    try:
        key = read_anchor_public(path)
    except ConfigError as e:
        raise CliError(str(e)) from None
    begin: dict = {}
    topic, rows = _records(args, begin)
    max_age = args.max_checkpoint_age if args.max_checkpoint_age is not None else 2 * 3_600_000 + 600_000
    r = verify_anchored([x[3] for x in rows], offsets=[x[1] for x in rows], first_offset=begin.get(0, 0),
                        public_key=key, now_ms=int(time.time() * 1000), max_unanchored_ms=args.max_unanchored_ms,
                        max_checkpoint_age_ms=max_age)
    since = f"{r.checkpoint_age_ms / 1000:.0f} s" if r.checkpoint_age_ms is not None else "never"
    if not r.ok:
        print(f"audit trail BROKEN on {topic}: {r.problem}: {r.detail} (last checkpoint: {since} ago)",
              file=sys.stderr)
        return 1
    print(f"audit trail ok on {topic}: {r.records} records, head {r.head}, "
          f"last checkpoint seq {r.last_checkpoint_seq} {since} ago" if r.records else
          f"audit trail ok on {topic}: 0 records (empty)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from stream.audit import trail_for

    if (args.request_id is None) == (args.case is None):
        raise CliError("give a request id or --case, not both")
    _, rows = _records(args)
    recs = trail_for([r[3] for r in rows], request_id=args.request_id, case_ref=args.case)
    if not recs:
        print("no audit records for that request/case", file=sys.stderr)
        return 1
    for r in recs:
        if args.json:
            print(json.dumps(r, sort_keys=True))
            continue
        extra = " ".join(f"{k}={r[k]}" for k in ("reason", "staff", "approvals", "needed", "answer_kind",
                                                 "answer_digest", "hold_id") if k in r)
        print(f"{r['seq']:>6} {r['ts_ms']} {r['type']:<18} {r.get('request_id', '-')} "
              f"case={r.get('case_ref', '-')} {extra}".rstrip())
    return 0
