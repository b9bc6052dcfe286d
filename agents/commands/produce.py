"""``ipanon produce --format NAME [--topic T] FILE...`` — ship log records into a raw topic.

Each record (as the format's framer cuts it: a line, a detail-file block, a Kea CSV row with
its header) becomes one Kafka message, unparsed: the worker parses and dead-letters.  Message
conventions are those of ``agents.topics``: key = source id (``host:/abs/path`` or
``host:stdin``; one source stays on one partition, in order), headers ``ipanon-format`` (the
concrete format; ``auto`` resolves per record), ``ipanon-operator`` (when given),
``ipanon-source``, and with ``--follow`` ``ipanon-received-ms`` (when the line was read; the
parsers infer a missing syslog year from it).

Sending is batched (kafka-python ``KafkaProducer`` with linger/batch, acks=all; no per-record
wait); the command flushes at the end and fails (exit 1) if any record was not acknowledged.
Default topic: the raw topic of the format's family (``RAW_BY_FAMILY``); default bootstrap: the
running local broker.  A missing topic is created with the broker's defaults and a warning
(``--no-create-topic`` refuses instead): run ``ipanon topics apply`` to give it the retention
the operators' promises require.

``--follow FILE`` tails one growing file across rotation and keeps its position in a state
file (``agents.follow``; at-least-once, see docs/ingest.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from .parse import add_format_options

EPILOG = """examples:
  ipanon produce --format radius-json --topic ipanon-raw-radius sessions.jsonl
  ipanon produce --format kea-csv --operator junet /var/lib/kea/kea-leases4.csv
  ipanon produce --format radius-detail --follow /var/log/freeradius/radacct/10.0.0.1/detail"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "produce", help="send log records (unparsed) into ipanon's raw Kafka topics",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Frame input files into records and send each as one message to a raw topic.\n"
                    "Progress on stderr; a one-line summary at the end.")
    add_format_options(p)
    p.add_argument("--topic", "-t", default=None, help="topic (default: the raw topic of the format's family)")
    p.add_argument("--own-topic", action="store_true",
                   help="write to the operator's own raw topic <prefix>-raw-op-<operator> (prefix from "
                        "IPANON_TOPIC_PREFIX, default ipanon): the only raw topic an operator's collector "
                        "may write on a secure broker (docs/security.md)")
    p.add_argument("--bootstrap", "-b", default=None, metavar="HOST:PORT",
                   help="Kafka bootstrap servers (default: the running local broker)")
    p.add_argument("--source", default=None, help="source id used as key (default host:/abs/path)")
    p.add_argument("--no-create-topic", action="store_true", help="fail if the topic does not exist")
    p.add_argument("--follow", action="store_true", help="tail one growing file across rotation")
    p.add_argument("--state", type=Path, default=None,
                   help="position state file for --follow (default under $IPANON_STATE/follow/)")
    p.add_argument("--commit-interval", type=float, default=1.0, metavar="S",
                   help="--follow: flush and save the position at most every S seconds (default 1)")
    p.add_argument("--idle-exit", type=float, default=None, metavar="S",
                   help="--follow: exit after S seconds without new data (tests, one-shot catch-up)")
    p.add_argument("files", nargs="+", metavar="FILE", help="input files; - for standard input")
    p.set_defaults(func=run)


class Progress:
    """A progress line on stderr: redrawn in place on a TTY, a plain line every 5 s otherwise."""

    def __init__(self, total_bytes: Optional[int], stream=None) -> None:
        self.total = total_bytes
        self.stream = stream = stream if stream is not None else sys.stderr
        self.tty = stream.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0
        self.every = 0.1 if self.tty else 5.0
        self.drawn = False

    def update(self, records: int, done_bytes: Optional[int], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        el = max(now - self.t0, 1e-9)
        msg = f"ipanon produce: {records:,} records  {records / el:,.0f} rec/s"
        if self.total and done_bytes is not None:
            msg += f"  {100 * done_bytes / self.total:5.1f}% of {self.total / 1e6:,.1f} MB"
        if self.tty:
            self.stream.write("\r" + msg.ljust(72))
            self.drawn = True
        else:
            self.stream.write(msg + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\r" + " " * 72 + "\r")
            self.stream.flush()


def default_bootstrap() -> str:
    from ..broker import LocalBroker

    return LocalBroker().bootstrap


OWN_TOPIC_HINT = ("On a secure broker an operator's collector may write only its own raw topic "
                  "<prefix>-raw-op-<operator>: pass --operator NAME --own-topic (docs/security.md).")


def _refused(e: BaseException) -> bool:
    """An authorisation refusal (the error class, or kafka-python's message for CreateTopics)."""
    from kafka.errors import ClusterAuthorizationFailedError, TopicAuthorizationFailedError

    return isinstance(e, (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)) or \
        "Authorization failed" in str(e)


def ensure_topics(bootstrap: str, topics: set[str], *, create: bool) -> None:
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError

    from ..cli import CliError
    from ..kafka_clients import Clients  # TLS/SASL from the environment

    admin = Clients(bootstrap).admin(client_id="ipanon-produce")
    try:
        have = set(admin.list_topics())
        missing = sorted(topics - have)
        if missing and not create:
            raise CliError(f"topic(s) {', '.join(missing)} do not exist — run `ipanon topics apply` "
                           "or drop --no-create-topic")
        if missing:
            try:
                admin.create_topics([NewTopic(t) for t in missing])
            except KafkaError as e:
                # on a secure broker a collector sees (and may write) only its own raw topic, so
                # the shared family topic looks missing and creating it is refused
                if _refused(e):
                    raise CliError(f"the broker refused {', '.join(missing)} to this user (not authorised). "
                                   f"{OWN_TOPIC_HINT}") from None
                raise CliError(f"cannot create {', '.join(missing)} ({type(e).__name__})") from None
            for t in missing:
                print(f"ipanon: created topic {t} with the broker's default configs — run "
                      "`ipanon topics apply` to set the retention the operators' promises require",
                      file=sys.stderr)
    finally:
        admin.close()


def state_path(args: argparse.Namespace, path: Path, topic_hint: str) -> Path:
    if args.state:
        return args.state
    base = Path(os.environ.get("IPANON_STATE") or Path.home() / ".local" / "state" / "ipanon")
    h = hashlib.sha256(f"{path.resolve()}\0{topic_hint}".encode()).hexdigest()[:16]
    return base / "follow" / f"{path.name}.{h}.json"


def run(args: argparse.Namespace) -> int:
    from stream.errors import Rejected
    from stream.parse import detect, get_format

    from ..cli import CliError
    from ..topics import H_FORMAT, H_OPERATOR, H_RECEIVED_MS, H_SOURCE, RAW_BY_FAMILY

    fmt = get_format(args.format)
    if args.follow and (len(args.files) != 1 or args.files[0] == "-"):
        raise CliError("--follow takes exactly one file (not -)")
    for f in args.files:
        if f != "-" and not os.access(f, os.R_OK) and not args.follow:
            raise CliError(f"cannot read {f}")

    if args.own_topic:
        from ..topics import Topics

        if args.topic or args.operator == "default":
            raise CliError("--own-topic needs --operator and no --topic")
        args.topic = Topics(os.environ.get("IPANON_TOPIC_PREFIX") or "ipanon").operator_raw(args.operator)

    def topic_for(name: str) -> str:
        if args.topic:
            return args.topic
        fam = get_format(name).family
        if fam not in RAW_BY_FAMILY:
            raise CliError(f"format {name} has no raw topic family: pass --topic")
        return RAW_BY_FAMILY[fam]

    auto = fmt.name == "auto"
    wanted = {args.topic} if args.topic else ({topic_for(fmt.name)} if not auto else set(RAW_BY_FAMILY.values()))
    bootstrap = args.bootstrap or default_bootstrap()
    ensure_topics(bootstrap, wanted, create=not args.no_create_topic)

    from ..kafka_clients import BULK_PRODUCER, Clients

    producer = Clients(bootstrap).producer(client_id="ipanon-produce", batch_size=512 * 1024,
                                           max_request_size=4 * 1024 * 1024, **BULK_PRODUCER)
    failures: list[BaseException] = []
    unrouted: list[bytes] = []
    host = socket.gethostname()
    base_headers = [(H_OPERATOR, args.operator.encode())] if args.operator != "default" else []
    sent = 0
    t0 = time.monotonic()
    total = sum(os.path.getsize(f) for f in args.files if f != "-" and os.path.isfile(f))
    progress = Progress(total or None)
    done_before = 0

    def send(record: bytes, key: bytes, source_h, received_ms: Optional[int]) -> None:
        nonlocal sent
        name = fmt.name
        if auto:
            try:
                name = detect(record)
            except Rejected:
                name = "auto"  # the worker dead-letters it with the reason
        headers = [(H_FORMAT, name.encode()), source_h, *base_headers]
        if received_ms is not None:
            headers.append((H_RECEIVED_MS, str(received_ms).encode()))
        if args.topic:
            topic = args.topic
        elif name == "auto":  # no family to route by: report it like `parse` does, send nothing
            unrouted.append(record)
            print(json.dumps({"line": record.decode("utf-8", "backslashreplace"),
                              "reason": "unrecognised-format", "detail": "not sent: no topic"}),
                  file=sys.stderr)
            return
        else:
            topic = topic_for(name)
        fut = producer.send(topic, value=record, key=key, headers=headers)
        fut.add_errback(failures.append)
        sent += 1

    try:
        if args.follow:
            _follow(args, fmt, producer, send, failures, host, progress)
        else:
            for f in args.files:
                source = args.source or f"{host}:{'stdin' if f == '-' else os.path.abspath(f)}"
                key = source.encode()
                source_h = (H_SOURCE, key)
                fh = sys.stdin.buffer if f == "-" else open(f, "rb")
                try:
                    for record in fmt.frame(fh):
                        send(record, key, source_h, None)
                        if sent & 1023 == 0:
                            progress.update(sent, done_before + (fh.tell() if fh is not sys.stdin.buffer else 0))
                finally:
                    if fh is not sys.stdin.buffer:
                        done_before += fh.tell()
                        fh.close()
            producer.flush()
    finally:
        progress.close()
        producer.close(timeout=10)
    el = time.monotonic() - t0
    if failures:
        if all(_refused(f) for f in failures):
            raise CliError(f"the broker refused all {len(failures)} records to this user (not authorised). "
                           f"{OWN_TOPIC_HINT}")
        print(f"ipanon: {len(failures)} of {sent} records were not acknowledged: {failures[0]!r}", file=sys.stderr)
        return 1
    where = args.topic or ", ".join(sorted(wanted))
    skipped = f", {len(unrouted)} unrecognised not sent" if unrouted else ""
    print(f"ipanon: produced {sent} records to {where} in {el:.2f}s ({sent / max(el, 1e-9):,.0f} rec/s){skipped}",
          file=sys.stderr)
    return 0


def _follow(args, fmt, producer, send, failures, host, progress) -> None:
    from ..cli import CliError
    from ..follow import Follower, FollowStopped, StateFile
    from ..topics import H_SOURCE

    path = Path(args.files[0])
    state = StateFile(state_path(args, path, args.topic or fmt.name))
    source = args.source or f"{host}:{path.resolve()}"
    key = source.encode()
    source_h = (H_SOURCE, key)
    last_data = time.monotonic()
    last_commit = time.monotonic()
    pending = None  # position of the last record handed to the producer
    committed = state.load()

    def commit() -> None:
        nonlocal pending, last_commit, committed
        last_commit = time.monotonic()
        if pending is None or pending == committed:
            return
        producer.flush()
        if failures:  # never move the position past a record that was not acknowledged
            raise CliError(f"{len(failures)} records were not acknowledged; position kept at {committed}")
        state.save(pending, source=source)
        committed = pending

    def on_idle() -> None:
        if time.monotonic() - last_commit >= args.commit_interval:
            commit()
        progress.update(sent_count(), None)

    def stop() -> bool:
        return args.idle_exit is not None and time.monotonic() - last_data >= args.idle_exit

    count = 0

    def sent_count() -> int:
        return count

    fol = Follower(path, start=committed, header_lines=fmt.header_lines, on_idle=on_idle, stop=stop)
    try:
        for record in fmt.frame(fol.lines()):
            last_data = time.monotonic()
            send(record, key, source_h, int(time.time() * 1000))
            count += 1
            pending = fol.pos
            if time.monotonic() - last_commit >= args.commit_interval:
                commit()
    except FollowStopped:
        pass
    finally:
        commit()
