"""``ipanon stats tail [--aggregates]`` — print decoded statistics records for analysts."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats", help="read pseudonymised statistics and k-anonymous aggregates",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read the statistics topics (schema: docs/stats-schema.json, docs/statistics.md).",
        epilog="example:\n  ipanon stats tail --operator junet\n  ipanon stats tail --aggregates --follow",
    )
    ssub = p.add_subparsers(dest="stats_action", metavar="ACTION", required=True)
    t = ssub.add_parser("tail", help="print records as JSON lines (one per record)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon stats tail --aggregates --last 20")
    t.add_argument("--aggregates", action="store_true", help="read <prefix>-aggregates instead of <prefix>-stats")
    t.add_argument("--operator", "-o", help="only this operator's records")
    t.add_argument("--last", type=int, default=None, help="only the last N records (after filtering)")
    t.add_argument("--follow", "-f", action="store_true", help="keep printing new records until interrupted")
    t.add_argument("--bootstrap", help="Kafka bootstrap host:port (default: the running local broker)")
    t.add_argument("--topic-prefix", help="topic prefix (default ipanon)")
    t.set_defaults(func=run_tail)


def decode(value: bytes) -> dict:
    """One record as printed: the record itself plus ``bucket_utc`` (ISO 8601) for reading."""
    rec = json.loads(value)
    if isinstance(rec, dict) and isinstance(rec.get("bucket_ms"), int):
        rec["bucket_utc"] = _dt.datetime.fromtimestamp(rec["bucket_ms"] / 1000, _dt.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
    return rec


def _emit(recs, operator):
    out = []
    for r in recs:
        if r.value is None:
            continue
        try:
            d = decode(r.value)
        except ValueError:
            continue
        if operator and d.get("operator") != operator:
            continue
        out.append(d)
    return out


def run_tail(args: argparse.Namespace) -> int:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from ..cli import CliError
    from ..kafka_io import read_all
    from ..settings import Settings
    from ..topics import Topics

    s = Settings.from_env(bootstrap=args.bootstrap, topic_prefix=args.topic_prefix)
    names = Topics(s.topic_prefix)
    topic = names.aggregates if args.aggregates else names.stats
    try:
        recs = _emit(read_all(s.bootstrap, topic), args.operator)
        if args.last is not None:
            recs = recs[-args.last:] if args.last > 0 else []
        for d in recs:
            print(json.dumps(d, separators=(",", ":")))
        sys.stdout.flush()
        if not args.follow:
            return 0
        c = KafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None, enable_auto_commit=False,
                          **__import__("agents.security").security.kafka_python_kwargs(s.security))
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_end(*tps)
        try:
            while True:
                for _tp, batch in c.poll(timeout_ms=1000).items():
                    for d in _emit(batch, args.operator):
                        print(json.dumps(d, separators=(",", ":")), flush=True)
        finally:
            c.close()
    except KafkaError as e:
        raise CliError(f"cannot read {topic} at {s.bootstrap} ({type(e).__name__}); is the broker running?") from None
