"""``ipanon hold add|approve|release|list`` — legal holds (preservation orders) on mappings.

A hold freezes the expiry of exactly the mappings it names (``stream.hold``) until ``--until``
or a release.  Every command that changes a hold is a message signed with the sender's
Ed25519 key (``stream.hold``: the wire forms), sent to the lawful-access inbox
(``<prefix>-query-requests``, key ``hold``):

- ``add``: an authority registered for a basis that allows preservation (the policy's
  ``hold_bases``, default ``lek-law-enforcement``), or a staff member, signs the order;
- ``approve``: a staff member signs their approval of exactly that order (its digest); the hold
  takes effect after two distinct staff members (never the requester) approved it;
- ``release``: the requester ends it at once; anyone else needs two staff members' releases.

The query agent (agents/query_agent.py) checks each message, appends every step to the audit
trail (id, case, requester, reason — never the address), publishes holds in effect on
``<prefix>-holds`` for every worker's sweeper and confirms on the responses topic (an
authority reads its copy on ``<prefix>-query-responses-<authority>``).  ``list`` prints the
holds in effect.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Optional

from ..cli import CliError
from .audit import default_bootstrap, read_topic
from .keys import load_private
from .query import _iso, parse_time_ms


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hold", help="legal holds: keep named mappings past their expiry until a date or a release",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Set, approve, release or list legal holds (preservation orders). Every step is "
                    "signed and audited; a hold takes effect after two staff approvals.",
        epilog="example:\n"
               "  ipanon hold add --authority se-police-demo --key config/keys/demo/se-police-demo.sign.pem \\\n"
               "      --operator connect2ip --ip 100.64.12.34 --from 2026-06-10T06:00:00Z \\\n"
               "      --to 2026-06-10T08:00:00Z --case 'PMÖÄ 5331-21' --until 2026-07-01T00:00:00Z\n"
               "  ipanon hold approve 3f2a9c0d1e2b4a5c --staff alice-demo --key config/keys/demo/alice-demo.sign.pem\n"
               "  ipanon hold approve 3f2a9c0d1e2b4a5c --staff bob-demo --key config/keys/demo/bob-demo.sign.pem\n"
               "  ipanon hold list\n"
               "  ipanon hold release 3f2a9c0d1e2b4a5c --authority se-police-demo "
               "--key config/keys/demo/se-police-demo.sign.pem",
    )
    hsub = p.add_subparsers(dest="hold_action", metavar="ACTION", required=True)
    a = hsub.add_parser("add", help="sign and send a hold order for one address (port) during [from, to)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon hold add --staff carol-demo --key config/keys/demo/carol-demo.sign.pem "
                               "--operator connect2ip --ip 198.51.100.7 --port 40123 \\\n"
                               "      --from 1780000000000 --to 1780000600000 --case B-1234-26 "
                               "--until 2026-07-01T00:00:00Z")
    _signer(a)
    a.add_argument("--basis", default="lek-law-enforcement", help="legal basis (default lek-law-enforcement)")
    a.add_argument("--operator", required=True, help="operator profile name")
    a.add_argument("--ip", required=True, help="one IPv4 address, or an IPv6 address or prefix up to a /64")
    a.add_argument("--port", type=int, default=None, help="CGNAT public port (optional)")
    a.add_argument("--from", dest="from_", required=True, help="start of the held usage (ms or ISO 8601 with zone)")
    a.add_argument("--to", required=True, help="end of the held usage, exclusive (ms or ISO 8601)")
    a.add_argument("--case", required=True, help="case reference of the preservation order")
    a.add_argument("--until", required=True, help="when the hold lapses by itself (ms or ISO 8601; "
                                                  "at most the policy's hold_max_ms, default 30 days)")
    a.add_argument("--issued-ms", type=int, default=None, help="issue time (default: now)")
    _common(a)
    a.set_defaults(func=run_add)
    ap = hsub.add_parser("approve", help="sign and send one staff approval of a pending hold",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="example:\n  ipanon hold approve 3f2a9c0d1e2b4a5c --staff bob-demo "
                                "--key config/keys/demo/bob-demo.sign.pem")
    ap.add_argument("hold_id", help="the id printed by `ipanon hold add`")
    ap.add_argument("--staff", required=True, help="your staff id (as registered)")
    ap.add_argument("--key", type=Path, required=True, help="your Ed25519 private key (PEM)")
    ap.add_argument("--digest", default=None, help="the order's digest (default: read the order back and show it)")
    ap.add_argument("--issued-ms", type=int, default=None, help="approval time (default: now)")
    _common(ap)
    ap.set_defaults(func=run_approve)
    r = hsub.add_parser("release", help="end a hold (requester: at once; staff: two needed)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  ipanon hold release 3f2a9c0d1e2b4a5c --authority se-police-demo "
                               "--key config/keys/demo/se-police-demo.sign.pem")
    r.add_argument("hold_id", help="the id printed by `ipanon hold add`")
    _signer(r)
    r.add_argument("--issued-ms", type=int, default=None, help="release time (default: now)")
    _common(r)
    r.set_defaults(func=run_release)
    ls = hsub.add_parser("list", help="print the holds in effect (from <prefix>-holds)",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="example:\n  ipanon hold list --json")
    ls.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default: the local broker)")
    ls.add_argument("--prefix", default="ipanon", help="topic prefix (default ipanon)")
    ls.add_argument("--json", action="store_true", help="one JSON hold per line")
    ls.set_defaults(func=run_list)


def _signer(p: argparse.ArgumentParser) -> None:
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--authority", default=None, help="sign as this registered authority")
    who.add_argument("--staff", default=None, help="sign as this registered staff member")
    p.add_argument("--key", type=Path, required=True, help="the signer's Ed25519 private key (PEM)")


def _who(args: argparse.Namespace) -> tuple[str, str]:
    return ("authority", args.authority) if args.authority else ("staff", args.staff)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default: the local broker)")
    p.add_argument("--prefix", default="ipanon", help="topic prefix (default ipanon)")
    p.add_argument("--wait", type=float, default=10.0,
                   help="seconds to wait for the query agent's confirmation (0 = do not wait)")
    p.add_argument("--dry-run", action="store_true", help="print the signed message instead of sending it")


def _send(args: argparse.Namespace, value: bytes) -> None:
    from agents.query_agent import HOLD_KEY

    from .query import send_to_inbox

    send_to_inbox(args, HOLD_KEY, value)


def _hold_replies(args: argparse.Namespace, hold_id: str, authority: Optional[str]) -> list[dict]:
    """The agent's replies for ``hold_id`` in order.  An authority reads its own reply topic;
    staff and the operator the shared one."""
    shared = f"{args.prefix}-query-responses"
    bootstrap = args.bootstrap or default_bootstrap()
    if authority:
        try:
            rows = read_topic(bootstrap, f"{shared}-{authority}")
        except CliError:  # its reply topic does not exist yet: nothing for it so far
            rows = []
    else:
        rows = read_topic(bootstrap, shared)
    out = []
    for _, _, _, value in rows:
        try:
            m = json.loads(value)
        except (ValueError, TypeError):
            continue
        if isinstance(m, dict) and m.get("type") == "hold" and m.get("hold_id") == hold_id:
            out.append(m)
    return out


def _send_and_wait(args: argparse.Namespace, hold_id: str, msg: bytes, authority: Optional[str]) -> Optional[dict]:
    """Send ``msg``; with ``--wait``, return the first reply for ``hold_id`` that arrived after
    it (None after ``--wait`` seconds).  A refusal is an error (exit 2, the reason)."""
    before = 0
    if args.wait > 0:
        try:
            before = len(_hold_replies(args, hold_id, authority))
        except CliError as e:
            if authority or "(Kafka ACL)" not in str(e):
                raise
            # staff on a secure broker read the inbox, not the desk's replies (worker-only,
            # docs/security.md): send anyway, unconfirmed; the desk audits every step
            print(f"note: {e}; sent without waiting for the query agent's confirmation "
                  f"(the outcome is on the audit trail)", file=sys.stderr)
            args.wait = 0
    _send(args, msg)
    deadline = time.monotonic() + args.wait
    while args.wait > 0:
        new = _hold_replies(args, hold_id, authority)[before:]
        if new:
            m = new[0]
            if m.get("status") in ("refused", "approval-rejected"):
                raise CliError(f"refused by the query agent: {m.get('reason', 'unknown')} (hold {hold_id})")
            return m
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)
    return None


def run_add(args: argparse.Namespace) -> int:
    from stream.errors import Rejected
    from stream.hold import hold_body, hold_digest, hold_of_body, sign_hold
    from stream.model import ip_text, parse_network

    role, who = _who(args)
    key = load_private(args.key, "ed25519")
    try:
        ip = ip_text(parse_network(args.ip, field="--ip"))
        body = hold_body(requester=who, role=role, basis=args.basis, operator=args.operator, ip=ip, port=args.port,
                         from_ms=parse_time_ms(args.from_, "--from"), to_ms=parse_time_ms(args.to, "--to"),
                         case_ref=args.case.strip(), until_ms=parse_time_ms(args.until, "--until"),
                         issued_ms=args.issued_ms if args.issued_ms is not None else int(time.time() * 1000),
                         nonce=secrets.token_hex(16))
        hid = hold_of_body(body).hold_id
    except Rejected as e:
        raise CliError(f"hold refused: {e.reason}" + (f" ({e.detail})" if e.detail else "")) from None
    msg = sign_hold(key, body)
    if args.dry_run:
        sys.stdout.write(msg.decode() + "\n")
        return 0
    if _send_and_wait(args, hid, msg, who if role == "authority" else None) is None and args.wait > 0:
        print(f"hold {hid} sent; no confirmation from the query agent within {args.wait:g}s "
              f"(is the worker running?)", file=sys.stderr)
        return 1
    print(f"hold {hid} pending: two staff approvals needed (digest {hold_digest(body)}; case {body['case_ref']})")
    return 0


def find_order(bootstrap: str, topic: str, hold_id: str) -> Optional[dict]:
    """The last hold order on the inbox whose id is ``hold_id`` (unverified: the desk verifies)."""
    from stream.hold import hold_of_body

    found = None
    for _, _, _, value in read_topic(bootstrap, topic):
        try:
            msg = json.loads(value)
            if msg.get("type") == "hold-request" and hold_of_body(msg["body"]).hold_id == hold_id:
                found = msg["body"]
        except Exception:  # anything unreadable is not the order we look for
            continue
    return found


def run_approve(args: argparse.Namespace) -> int:
    from stream.hold import hold_digest, sign_hold_approval

    key = load_private(args.key, "ed25519")
    digest = args.digest
    if digest is None:
        body = find_order(args.bootstrap or default_bootstrap(), f"{args.prefix}-query-requests", args.hold_id)
        if body is None:
            raise CliError(f"no hold order {args.hold_id} on the request topic: pass --digest")
        digest = hold_digest(body)
        port = f" port {body['port']}" if body["port"] is not None else ""
        print(f"approving hold {args.hold_id}: {body['role']} {body['requester']} basis {body['basis']} "
              f"case {body['case_ref']} operator {body['operator']} address {body['ip']}{port} "
              f"[{_iso(body['from_ms'])}, {_iso(body['to_ms'])}) until {_iso(body['until_ms'])} digest {digest}",
              file=sys.stderr)
    issued = args.issued_ms if args.issued_ms is not None else int(time.time() * 1000)
    msg = sign_hold_approval(key, hold_id=args.hold_id, hold_digest=digest, staff=args.staff, issued_ms=issued)
    if args.dry_run:
        sys.stdout.write(msg.decode() + "\n")
        return 0
    m = _send_and_wait(args, args.hold_id, msg, None)
    print(f"approved hold {args.hold_id} as {args.staff}" + (f": {m['status']}" if m else ""))
    return 0


def run_release(args: argparse.Namespace) -> int:
    from stream.hold import sign_hold_release

    role, who = _who(args)
    key = load_private(args.key, "ed25519")
    issued = args.issued_ms if args.issued_ms is not None else int(time.time() * 1000)
    msg = sign_hold_release(key, hold_id=args.hold_id, requester=who, role=role, issued_ms=issued,
                            nonce=secrets.token_hex(16))
    if args.dry_run:
        sys.stdout.write(msg.decode() + "\n")
        return 0
    m = _send_and_wait(args, args.hold_id, msg, who if role == "authority" else None)
    if args.wait > 0:
        if m is None:
            print(f"release of {args.hold_id} sent; no confirmation within {args.wait:g}s", file=sys.stderr)
            return 1
        if m["status"] == "release-pending":
            print(f"release of hold {args.hold_id} recorded: one more staff member must release it")
            return 0
    print(f"hold {args.hold_id} released")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from agents.query_agent import read_holds

    from .audit import check_connection

    bootstrap = args.bootstrap or default_bootstrap()
    check_connection(bootstrap)
    holds, _ = read_holds(bootstrap, f"{args.prefix}-holds")
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
