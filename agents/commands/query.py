"""``ipanon query submit|approve|status|fetch`` — the authority's and the approver's side of
lawful access (message formats: ``stream.access`` and docs/lawful-access.md).

- ``submit``: an authority signs a request with its Ed25519 key and sends it to
  ``<prefix>-query-requests`` (key = authority id);
- ``approve``: a staff member signs an approval of one request (over its digest, read back from
  the request topic unless ``--digest`` is given) and sends it to the same topic;
- ``status``: prints every status reply for a request from ``<prefix>-query-responses``;
- ``fetch``: opens the sealed answer with the authority's X25519 private key.

``--dry-run`` prints the signed message instead of sending it (for scripts and tests).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from ..cli import CliError
from .audit import default_bootstrap, read_topic
from .keys import load_private


def topic_names(prefix: str) -> tuple[str, str]:
    """(requests+approvals topic, responses topic) for a deployment prefix."""
    return f"{prefix}-query-requests", f"{prefix}-query-responses"


def parse_time_ms(text: str, what: str) -> int:
    """Integer ms since the epoch, or ISO 8601 with a zone (``2026-06-10T06:15:00Z``)."""
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{what}: {text!r} is neither integer ms nor ISO 8601") from None
    if dt.tzinfo is None:
        raise CliError(f"{what}: {text!r} has no time zone (add Z or +02:00)")
    return int(dt.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query", help="lawful lookups: submit a signed request, approve it, check status, fetch the answer",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The authority's and the approving staff's side of lawful access.",
        epilog="example:\n"
               "  ipanon query submit --authority rights-demo --key config/keys/demo/rights-demo.sign.pem \\\n"
               "      --basis ipred-court-order --case 'B 1234-26' --address 198.51.100.7 --port 40123 \\\n"
               "      --from 2026-06-10T06:00:00Z --to 2026-06-10T06:30:00Z\n"
               "  ipanon query approve rights-demo/20260610-0001 --staff alice-demo \\\n"
               "      --key config/keys/demo/alice-demo.sign.pem\n"
               "  ipanon query status rights-demo/20260610-0001\n"
               "  ipanon query fetch rights-demo/20260610-0001 --key config/keys/demo/rights-demo.enc.pem",
    )
    qsub = p.add_subparsers(dest="query_action", metavar="ACTION", required=True)

    s = qsub.add_parser("submit", help="sign and send a lookup request",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon query submit --authority se-police-demo "
                               "--key config/keys/demo/se-police-demo.sign.pem \\\n"
                               "      --basis lek-law-enforcement --case AM-1-26 --address 100.64.1.2 "
                               "--from 1780000000000 --to 1780000600000")
    s.add_argument("--authority", required=True, help="authority id (as registered)")
    s.add_argument("--key", type=Path, required=True, help="the authority's Ed25519 private key (PEM)")
    s.add_argument("--basis", required=True, help="ipred-court-order | lek-law-enforcement | emergency")
    s.add_argument("--case", required=True, help="case reference (court order or investigation number)")
    s.add_argument("--address", required=True, help="one address, or a prefix within the policy's bound")
    s.add_argument("--port", type=int, default=None, help="source port (CGNAT; only with one address)")
    s.add_argument("--proto", default=None,
                   help="the flow's transport protocol, tcp | udp | an IANA number (CGNAT blocks are per "
                        "protocol; without it a port held for TCP and UDP by two subscribers is ambiguous)")
    s.add_argument("--from", dest="from_", required=True, help="interval start (ms or ISO 8601 with zone)")
    s.add_argument("--to", required=True, help="interval end, exclusive (ms or ISO 8601 with zone)")
    s.add_argument("--number", default=None, help="request number (default: time-based, unique)")
    s.add_argument("--issued-ms", type=int, default=None, help="issue time (default: now)")
    s.add_argument("--nonce", default=None, help="hex nonce (default: 128 random bits)")
    _common(s)
    s.set_defaults(func=run_submit)

    a = qsub.add_parser("approve", help="sign and send one staff approval",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon query approve rights-demo/7 --staff bob-demo "
                               "--key config/keys/demo/bob-demo.sign.pem")
    a.add_argument("request_id", help="authority/number")
    a.add_argument("--staff", required=True, help="your staff id (as registered)")
    a.add_argument("--key", type=Path, required=True, help="your Ed25519 private key (PEM)")
    a.add_argument("--digest", default=None,
                   help="request digest to approve (default: read the request back from the topic and show it)")
    a.add_argument("--issued-ms", type=int, default=None, help="approval time (default: now)")
    _common(a)
    a.set_defaults(func=run_approve)

    st = qsub.add_parser("status", help="print the status replies of a request",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="example:\n  ipanon query status rights-demo/7 --wait 10")
    st.add_argument("request_id")
    st.add_argument("--wait", type=float, default=0.0, help="seconds to wait for a first reply")
    _common(st, send=False)
    st.set_defaults(func=run_status)

    f = qsub.add_parser("fetch", help="open the sealed answer with the authority's X25519 key",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon query fetch rights-demo/7 --key config/keys/demo/rights-demo.enc.pem")
    f.add_argument("request_id")
    f.add_argument("--key", type=Path, required=True, help="the authority's X25519 private key (PEM)")
    f.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the answer")
    _common(f, send=False)
    f.set_defaults(func=run_fetch)


def _common(p: argparse.ArgumentParser, *, send: bool = True) -> None:
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default: the local broker)")
    p.add_argument("--prefix", default="ipanon", help="topic prefix (default ipanon)")
    if send:
        p.add_argument("--dry-run", action="store_true", help="print the signed message instead of sending it")


def _send(args: argparse.Namespace, key: str, value: bytes) -> None:
    send_to_inbox(args, key.encode(), value)


def send_to_inbox(args: argparse.Namespace, key: bytes, value: bytes) -> None:
    """Send one signed message to ``<prefix>-query-requests`` and wait for the acknowledgement."""
    from kafka.errors import KafkaError

    from .audit import check_connection, missing_topic

    topic = topic_names(args.prefix)[0]
    bootstrap = args.bootstrap or default_bootstrap()
    check_connection(bootstrap)

    try:
        from ..kafka_clients import Clients  # TLS/SASL from the environment

        prod = Clients(bootstrap).producer(client_id="ipanon-query", max_block_ms=10_000)
    except KafkaError as e:
        raise CliError(f"cannot reach Kafka at {bootstrap} ({type(e).__name__}) — is the broker running?") from None
    try:
        if not prod.partitions_for(topic):
            raise missing_topic(bootstrap, topic, "start the worker first")
        prod.send(topic, key=key, value=value).get(timeout=10)
    except CliError:
        raise
    except Exception as e:  # kafka errors: one line, no traceback
        raise CliError(f"could not send to {topic} on {bootstrap}: {type(e).__name__}") from None
    finally:
        prod.close()


def run_submit(args: argparse.Namespace) -> int:
    from stream.access import request_body, request_digest, sign_request
    from stream.model import ip_text, parse_network

    proto = None
    if args.proto is not None:
        from stream.errors import Rejected
        from stream.parse._nat import protocol
        try:
            proto = protocol(args.proto, "--proto")
        except Rejected as e:
            raise CliError(e.detail) from None
    key = load_private(args.key, "ed25519")
    now_ms = int(time.time() * 1000)
    issued = args.issued_ms if args.issued_ms is not None else now_ms
    number = args.number or f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    body = request_body(authority=args.authority, request_number=number, basis=args.basis, case_ref=args.case,
                        address=ip_text(parse_network(args.address)), port=args.port,
                        from_ms=parse_time_ms(args.from_, "--from"), to_ms=parse_time_ms(args.to, "--to"),
                        issued_ms=issued, nonce=args.nonce or secrets.token_hex(16), proto=proto)
    msg = sign_request(key, body)
    rid = f"{args.authority}/{number}"
    if args.dry_run:
        sys.stdout.write(msg.decode() + "\n")
        return 0
    _send(args, args.authority, msg)
    print(f"submitted {rid} digest {request_digest(body)}")
    return 0


def find_request(bootstrap: str, topic: str, request_id: str) -> Optional[dict]:
    """The last request body on the topic with this id (unverified: the desk verifies)."""
    found = None
    for _, _, _, value in read_topic(bootstrap, topic):
        try:
            msg = json.loads(value)
            b = msg["body"]
            if msg.get("type") == "request" and f"{b['authority']}/{b['request_number']}" == request_id:
                found = b
        except (ValueError, KeyError, TypeError):
            continue
    return found


def run_approve(args: argparse.Namespace) -> int:
    from stream.access import request_digest, sign_approval

    if "/" not in args.request_id:
        raise CliError("request id is authority/number")
    key = load_private(args.key, "ed25519")
    digest = args.digest
    if digest is None:
        body = find_request(args.bootstrap or default_bootstrap(), topic_names(args.prefix)[0], args.request_id)
        if body is None:
            raise CliError(f"no request {args.request_id} on the request topic: pass --digest")
        digest = request_digest(body)
        port = f" port {body['port']}" if body["port"] is not None else ""
        port += f" protocol {body['proto']}" if body.get("proto") is not None else ""
        print(f"approving {args.request_id}: basis {body['basis']} case {body['case_ref']} "
              f"address {body['address']}{port} [{_iso(body['from_ms'])}, {_iso(body['to_ms'])}) "
              f"digest {digest}", file=sys.stderr)
    issued = args.issued_ms if args.issued_ms is not None else int(time.time() * 1000)
    msg = sign_approval(key, request_id=args.request_id, request_digest=digest, staff=args.staff, issued_ms=issued)
    if args.dry_run:
        sys.stdout.write(msg.decode() + "\n")
        return 0
    _send(args, args.request_id.split("/", 1)[0], msg)
    print(f"approved {args.request_id} as {args.staff}")
    return 0


def _replies(args: argparse.Namespace, wait_s: float) -> list[dict]:
    shared = topic_names(args.prefix)[1]
    # the authority's own copy (agents.answer_router): the only reply topic its ACLs allow
    own = f"{shared}-{args.request_id.split('/', 1)[0]}"
    bootstrap = args.bootstrap or default_bootstrap()
    deadline = time.monotonic() + wait_s
    while True:
        out = []
        rows = []
        try:
            rows = read_topic(bootstrap, own)
        except CliError as e:
            if "does not exist" not in str(e):  # denied, unreachable, …: say so
                raise
        try:  # the shared topic too (the operator's view; it also holds replies to forged claims)
            rows += read_topic(bootstrap, shared)
        except CliError as e:
            if "denied" in str(e):
                if not rows:
                    raise CliError(f"no reply topic for {args.request_id.split('/', 1)[0]} yet, and {e}") from None
            elif "does not exist" not in str(e):
                raise
        seen: set[bytes] = set()
        for _, _, _, value in rows:
            if value is None or value in seen:  # a heartbeat, or a routed copy read twice
                continue
            seen.add(value)
            try:
                msg = json.loads(value)
            except (ValueError, TypeError):
                continue
            if isinstance(msg, dict) and msg.get("request_id") == args.request_id:
                out.append(msg)
        out.sort(key=lambda m: m.get("ts_ms", 0) if isinstance(m.get("ts_ms"), int) else 0)
        if out or time.monotonic() >= deadline:
            return out
        time.sleep(0.5)


def run_status(args: argparse.Namespace) -> int:
    replies = _replies(args, args.wait)
    if not replies:
        print(f"no reply for {args.request_id} yet", file=sys.stderr)
        return 1
    for m in replies:
        if m.get("type") == "answer":
            print(f"{_iso(m['ts_ms'])} answered (sealed; open with: ipanon query fetch {args.request_id} --key …)")
            continue
        extra = ""
        if m.get("reason"):
            extra += f" reason={m['reason']}"
        if m.get("authenticated") is False:
            extra += " (unauthenticated message claiming this id)"
        if "needed" in m:
            extra += f" approvals={m.get('approvals', 0)}/{m['needed']}"
        print(f"{_iso(m.get('ts_ms', 0))} {m.get('status')}{extra}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from stream.access import open_answer

    key = load_private(args.key, "x25519")
    deadline = time.monotonic() + max(args.wait, 0.0)
    while True:
        answers = [m for m in _replies(args, 0.0) if m.get("type") == "answer"]
        if answers or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if not answers:
        print(f"no answer for {args.request_id} yet (see: ipanon query status {args.request_id})", file=sys.stderr)
        return 1
    print(json.dumps(open_answer(key, answers[-1]), indent=2, sort_keys=True))
    return 0
