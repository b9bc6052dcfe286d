"""``ipanon collect syslog|ipfix --listen HOST:PORT`` — receive CGNAT logs, publish them to the raw NAT topic.

``ipfix``: IPFIX over UDP; each data record becomes one self-contained IPFIX message (its
template + the record, ``stream.parse.ipfix``) with ``ipanon-format: ipfix`` and
``ipanon-source: ipfix:<peer>``; malformed datagrams and data for unknown templates are
published as received, for the worker to dead-letter with the reason.

``syslog``:

Every message (UDP datagram or RFC 6587 TCP frame, see ``agents.collect``) becomes one message
on the raw NAT topic: value = the syslog message bytes as received, key = the sender's address,
headers ``ipanon-format`` (``--format``, default ``auto``: the worker detects the vendor per
line), ``ipanon-source`` (``syslog:<peer>``), ``ipanon-received-ms`` (receive time; the
parsers infer a missing syslog year from it), ``ipanon-operator`` when given.
"""

from __future__ import annotations

import argparse
import sys
import time

EPILOG = """examples:
  ipanon collect syslog --listen 0.0.0.0:5514 --operator junet
  ipanon collect syslog --listen 127.0.0.1:5514 --max-messages 100 --duration 30
  ipanon collect ipfix --listen 0.0.0.0:4739 --operator junet --template-lifetime 1800"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect", help="receive CGNAT syslog (UDP+TCP) or IPFIX (UDP) and publish it to the raw NAT topic",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Listen for syslog over UDP and TCP (RFC 3164/5424 messages, RFC 6587 framing)\n"
                    "and publish every message unparsed to ipanon's raw NAT topic; or IPFIX over UDP\n"
                    "(RFC 7011, RFC 8158 NAT events), one self-contained message per data record.")
    p.add_argument("source", choices=["syslog", "ipfix"], help="what to collect (syslog | ipfix)")
    p.add_argument("--listen", "-l", required=True, metavar="HOST:PORT", help="address to listen on")
    p.add_argument("--topic", "-t", default=None, help="topic (default: the raw NAT topic)")
    p.add_argument("--own-topic", action="store_true",
                   help="write to the operator's own raw topic <prefix>-raw-op-<operator> (prefix from "
                        "IPANON_TOPIC_PREFIX, default ipanon): the only raw topic an operator's collector "
                        "may write on a secure broker")
    p.add_argument("--format", "-f", default=None,
                   help="value of the ipanon-format header (default: auto for syslog, ipfix for ipfix)")
    p.add_argument("--template-lifetime", type=float, default=1800.0, metavar="S",
                   help="ipfix: seconds an unrefreshed template stays valid (default 1800)")
    p.add_argument("--operator", "-o", default=None, help="operator name for the ipanon-operator header")
    p.add_argument("--bootstrap", "-b", default=None, metavar="HOST:PORT",
                   help="Kafka bootstrap servers (default: the running local broker)")
    p.add_argument("--no-udp", action="store_true", help="TCP only")
    p.add_argument("--no-tcp", action="store_true", help="UDP only")
    p.add_argument("--max-messages", type=int, default=None, help="stop after N messages")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--no-create-topic", action="store_true", help="fail if the topic does not exist")
    p.set_defaults(func=run)


def parse_listen(text: str) -> tuple[str, int]:
    from ..cli import CliError

    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CliError(f"--listen must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def run(args: argparse.Namespace) -> int:
    from stream.parse import get_format

    from ..collect import IpfixCollector, SyslogCollector
    from ..topics import H_FORMAT, H_OPERATOR, H_RECEIVED_MS, H_SOURCE, RAW_NAT
    from .produce import default_bootstrap, ensure_topics

    if args.format is None:
        args.format = "ipfix" if args.source == "ipfix" else "auto"
    if args.format != "auto":
        get_format(args.format)  # unknown → exit 2 before listening
    if args.template_lifetime <= 0:
        from ..cli import CliError

        raise CliError("--template-lifetime must be positive")
    host, port = parse_listen(args.listen)
    if args.own_topic:
        import os

        from ..cli import CliError
        from ..topics import Topics

        if args.topic or not args.operator:
            raise CliError("--own-topic needs --operator and no --topic")
        args.topic = Topics(os.environ.get("IPANON_TOPIC_PREFIX") or "ipanon").operator_raw(args.operator)
    topic = args.topic or RAW_NAT
    bootstrap = args.bootstrap or default_bootstrap()
    ensure_topics(bootstrap, {topic}, create=not args.no_create_topic)

    from ..kafka_clients import BULK_PRODUCER, Clients  # TLS/SASL from the environment

    producer = Clients(bootstrap).producer(client_id="ipanon-collect", **BULK_PRODUCER)
    failures: list[BaseException] = []
    fmt_h = (H_FORMAT, args.format.encode())
    op_h = [(H_OPERATOR, args.operator.encode())] if args.operator else []

    def sink(msg: bytes, peer: str, received_ms: int) -> None:
        headers = [fmt_h, (H_SOURCE, f"{args.source}:{peer}".encode()),
                   (H_RECEIVED_MS, str(received_ms).encode()), *op_h]
        producer.send(topic, value=msg, key=peer.encode(), headers=headers).add_errback(failures.append)

    if args.source == "ipfix":
        col = IpfixCollector(host, port, sink, template_lifetime_ms=int(args.template_lifetime * 1000))
        protos = "udp"
    else:
        col = SyslogCollector(host, port, sink, udp=not args.no_udp, tcp=not args.no_tcp)
        protos = "/".join(p for p, on in (("udp", not args.no_udp), ("tcp", not args.no_tcp)) if on)
    print(f"ipanon: collecting {args.source} on {protos} {col.address[0]}:{col.address[1]} → {topic}",
          file=sys.stderr, flush=True)
    t0 = time.monotonic()
    try:
        stats = col.serve(max_messages=args.max_messages, duration_s=args.duration)
    except KeyboardInterrupt:
        stats = col.stats
    finally:
        producer.flush()
        producer.close(timeout=10)
    el = time.monotonic() - t0
    if failures:
        print(f"ipanon: {len(failures)} messages were not acknowledged: {failures[0]!r}", file=sys.stderr)
        return 1
    if args.source == "ipfix":
        sp = col.splitter.stats
        print(f"ipanon: collected {stats.total} IPFIX messages from {len(stats.peers)} peer(s) in {el:.1f}s → "
              f"{col.records_out} records to {topic} ({sp.templates} templates, {sp.withdrawals} withdrawals, "
              f"{sp.unknown_sets} data sets without a template and {col.malformed} malformed forwarded for "
              f"dead-lettering, {sp.options_records} options records not forwarded)", file=sys.stderr)
        return 0
    print(f"ipanon: collected {stats.total} messages (udp {stats.udp}, tcp {stats.tcp}, "
          f"{stats.oversized} oversized dropped) from {len(stats.peers)} peer(s) in {el:.1f}s → {topic}",
          file=sys.stderr)
    return 0
