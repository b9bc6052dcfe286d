"""``ipanon consent grant|withdraw`` — write a subscriber's statistics consent to the consent topic.

The record's key is a keyed hash of the subscriber (``stream.consent.consent_key``), derived from
the operator's key material in ``--keys``; the subscriber id itself is never written to Kafka.
A subscriber of ``-`` reads one subscriber id per line from stdin (bulk changes; also keeps ids
out of the shell history and the process list).

``withdraw`` also publishes an **erasure notice** on ``<prefix>-erasures`` for operators whose
profile sets ``consent_required``: the subscriber's statistics pseudonym
for every epoch still derivable from the worker's ratchet (``stream.consent.erasure_notices``),
so consumers of ``<prefix>-stats`` can delete their copies (docs/statistics.md).  It is written
before the consent flag, so no consumer sees a withdrawal without its notice.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "consent", help="grant or withdraw a subscriber's consent to statistics",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write consent flags to the compacted <prefix>-consent topic.  The key is a keyed\n"
                    "hash of the subscriber (no raw identity on the topic).  Where an operator's profile\n"
                    "sets purposes.statistics.consent_required, per-record statistics of a subscriber\n"
                    "are emitted only while the latest flag is 'granted'.",
        epilog="example:\n"
               "  ipanon consent grant --operator junet --keys ~/.config/ipanon/keys kund-0001@isp.example\n"
               "  ipanon consent withdraw --operator junet --keys ~/.config/ipanon/keys kund-0001@isp.example\n"
               "  cut -f1 withdrawn.tsv | ipanon consent withdraw --operator junet -",
    )
    csub = p.add_subparsers(dest="consent_action", metavar="ACTION", required=True)
    for action, text in (("grant", "the subscriber consents (statistics)"),
                         ("withdraw", "the subscriber withdraws consent (applies to every later batch)")):
        a = csub.add_parser(action, help=text, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=f"example:\n  ipanon consent {action} --operator junet kund-0001@isp.example")
        a.add_argument("subscriber", help="subscriber id as the operator's logs name it, or - for stdin")
        a.add_argument("--operator", "-o", required=True, help="operator name (its profile and key file)")
        a.add_argument("--keys", type=Path, help="directory of operator key files (default: IPANON_KEYS or the worker's)")
        a.add_argument("--bootstrap", help="Kafka bootstrap host:port (default: the running local broker)")
        a.add_argument("--topic-prefix", help="topic prefix (default ipanon)")
        a.add_argument("--operators", type=Path,
                       help="operator profiles directory (default: IPANON_OPERATORS or config/operators); "
                            "withdraw reads the profile's key epoch, bucket and promise for the erasure notice")
        a.set_defaults(func=run, state="granted" if action == "grant" else "withdrawn")


def run(args: argparse.Namespace) -> int:
    from stream.consent import ConsentRecord, consent_key

    from ..cli import CliError
    from ..ratchet_store import index_ring
    from ..runtime import keys_dir
    from ..settings import Settings
    from ..topics import Topics

    settings = Settings.from_env(bootstrap=args.bootstrap, topic_prefix=args.topic_prefix, keys_dir=args.keys,
                                 operators_dir=getattr(args, "operators", None))
    ring = index_ring(keys_dir(settings), args.operator)
    if args.subscriber == "-":
        subs = [line.strip() for line in sys.stdin if line.strip()]
    else:
        subs = [args.subscriber]
    if not subs:
        raise CliError("no subscriber ids given")
    now = time.time_ns() // 1_000_000
    recs = [ConsentRecord(consent_key(ring, s), args.operator, args.state, "statistics", now) for s in subs]
    notices = _notices(settings, ring, args, subs, now) if args.state == "withdrawn" else []
    topic = Topics(settings.topic_prefix).consent
    erasures = Topics(settings.topic_prefix).erasures
    from kafka.errors import KafkaError

    from ..kafka_io import producer

    try:
        prod = producer(settings.bootstrap, retries=60, retry_backoff_ms=500)  # a new topic may still elect its leader
        try:
            # stamped with the withdrawal's bucket start, as stats records are (the producer's
            # clock would tell the analyst the exact withdrawal time), and in random order (a
            # sorted list of ids would otherwise order the pseudonyms)
            secrets.SystemRandom().shuffle(notices)
            futures = [prod.send(erasures, key=k, value=v, timestamp_ms=json.loads(v)["until_bucket_ms"])
                       for k, v in notices]
            prod.flush()  # the notices first: a consumer never sees a withdrawal without them
            for f in futures:
                f.get(timeout=30)
            futures = [prod.send(topic, key=k, value=v) for k, v in (r.encode() for r in recs)]
            prod.flush()
            for f in futures:
                f.get(timeout=30)
        finally:
            prod.close()
    except KafkaError as e:
        raise CliError(f"cannot write to {topic} at {settings.bootstrap} ({type(e).__name__}); "
                       f"is the broker running and the topic created (`ipanon topics apply`)?") from None
    for r in recs:
        print(f"{args.state} {r.key}")
    if notices:
        print(f"erasure notices: {len(notices)} on {erasures} (one per live statistics epoch and subscriber)")
    return 0


def _notices(settings, ring, args, subs: list[str], now: int) -> list[tuple[bytes, bytes]]:
    """Erasure notices for a withdrawal (none when the operator's statistics need no consent:
    withdrawing then changes nothing, and the CLI says so)."""
    from stream.config import load_operators
    from stream.consent import erasure_notices
    from stream.errors import ConfigError

    from ..cli import CliError

    try:
        policies = load_operators(settings.operators_dir)
    except ConfigError as e:
        raise CliError(f"withdraw needs the operator's profile for the erasure notice: {e}") from None
    pol = policies.get(args.operator)
    if pol is None:
        raise CliError(f"operator {args.operator!r} has no profile in {settings.operators_dir} (--operators): "
                       f"withdraw needs it for the erasure notice")
    st = pol.statistics
    if not st.consent_required:
        print(f"note: {args.operator}'s statistics do not depend on consent (consent_required = false): "
              f"records keep flowing and no erasure notice is published", file=sys.stderr)
        return []
    if st.subscriber == "drop":
        print(f"note: {args.operator}'s records carry no subscriber pseudonym (subscriber = \"drop\"): no notice "
              f"can name them; they are gone within purposes.statistics.erasure by retention", file=sys.stderr)
        return []
    out = []
    for s in subs:
        out.extend(erasure_notices(ring, s, key_epoch_ms=pol.key_epoch_ms, promise_ms=st.promise_ms,
                                   bucket_ms=st.bucket_ms, now_ms=now))
    return out
