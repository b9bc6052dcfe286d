"""``ipanon parse --format NAME [--operator OP] FILE...`` — input files → canonical bindings.

Contract: one JSON object per binding per line on stdout (``Binding.to_dict()``);
every rejected record as one JSON object ``{"line", "reason", "detail", "file", "record"}`` on
stderr (``line`` is the record's text); a one-line count summary on stderr at the end; exit 0
when every file was read (rejects or not), 2 when a file could not be read or the format is
unknown.  ``-`` reads standard input.  ``--format auto`` prints which format it chose per file.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from typing import IO, Iterable, Optional

FORMAT_NAMES = ("radius-json, radius-detail, kea-csv, kea-legal, kea-hook, ipfix-json, juniper, "
                "sixwind, nfware, a10, f5, auto")

EPILOG = """examples:
  ipanon parse --format radius-detail --operator junet /var/log/freeradius/radacct/*/detail-*
  ipanon parse --format kea-legal --tz Europe/Stockholm kea-legal0.txt
  ipanon parse --format auto --year 2024 nat-syslog.txt
  cat leases.csv | ipanon parse --format kea-csv -"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "parse", help="parse input files into canonical bindings (JSON lines on stdout)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Parse RADIUS, DHCP and NAT logs into ipanon's canonical bindings.\n"
                    "Bindings go to stdout as JSON lines, rejects and a summary to stderr.")
    add_context_options(p)
    p.add_argument("files", nargs="+", metavar="FILE", help="input files; - for standard input")
    p.set_defaults(func=run)


def add_format_options(p: argparse.ArgumentParser) -> None:
    """--format and --operator, shared by ``parse`` and ``produce``."""
    p.add_argument("--format", "-f", required=True, metavar="NAME",
                   help="input format: " + FORMAT_NAMES + " (auto detects; docs/ingest.md)")
    p.add_argument("--operator", "-o", default="default", help="operator name (default: default)")


def add_context_options(p: argparse.ArgumentParser) -> None:
    """Parsing options (``parse`` only: ``produce`` ships records unparsed)."""
    add_format_options(p)
    p.add_argument("--tz", default=None, metavar="ZONE",
                   help="IANA zone for zone abbreviations (Kea CET/CEST) and zone-less syslog times")
    p.add_argument("--year", type=int, default=None,
                   help="year of syslog timestamps that carry none (RFC 3164)")
    p.add_argument("--identity", default=None, metavar="ATTR",
                   help="RADIUS identity attribute (default User-Name)")
    p.add_argument("--dhcp-identity", default=None,
                   choices=["client_id", "hwaddr", "duid", "circuit_id", "remote_id"],
                   help="DHCP identity field (default client-id/DUID, else hwaddr)")


def context(args: argparse.Namespace) -> dict:
    ctx: dict = {}
    if args.tz:
        from stream.parse._time import zone

        zone(args.tz)  # an unknown zone is a usage error: fail before reading anything
        ctx["tz"] = args.tz
    if args.year is not None:
        ctx["year"] = args.year
    if args.identity:
        ctx["identity"] = args.identity
    if args.dhcp_identity:
        ctx["dhcp_identity"] = args.dhcp_identity
    return ctx


def open_input(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    return open(path, "rb")


def _text(record: bytes) -> str:
    return record.decode("utf-8", errors="backslashreplace")


def run(args: argparse.Namespace) -> int:
    from stream.errors import Rejected
    from stream.parse import detect, get_format

    fmt = get_format(args.format)  # unknown → Rejected → "ipanon: …", exit 2
    ctx = context(args)
    out = sys.stdout
    err = sys.stderr
    n_records = n_bindings = n_rejects = 0
    reasons: collections.Counter = collections.Counter()
    unreadable = 0
    for path in args.files:
        try:
            fh = open_input(path)
        except OSError as e:
            print(f"ipanon: cannot read {path}: {e.strerror}", file=err)
            unreadable += 1
            continue
        chosen: collections.Counter = collections.Counter()
        try:
            for i, record in enumerate(fmt.frame(fh), 1):
                n_records += 1
                try:
                    if fmt.name == "auto":
                        name = detect(record)
                        chosen[name] += 1
                        bindings = get_format(name).parse(record, operator=args.operator, **ctx)
                    else:
                        bindings = fmt.parse(record, operator=args.operator, **ctx)
                except Exception as x:  # a parser bug: reported like the worker's dead letter, never a traceback
                    r = x if isinstance(x, Rejected) else Rejected("internal-error", type(x).__name__)
                    n_rejects += 1
                    reasons[r.reason] += 1
                    err.write(json.dumps({"line": _text(record), "reason": r.reason, "detail": r.detail,
                                          "file": path, "record": i}) + "\n")
                    continue
                for b in bindings:
                    out.write(json.dumps(b.to_dict(), separators=(",", ":")) + "\n")
                n_bindings += len(bindings)
        except OSError as e:
            print(f"ipanon: error reading {path}: {e.strerror}", file=err)
            unreadable += 1
        finally:
            if fh is not sys.stdin.buffer:
                fh.close()
        if fmt.name == "auto":
            what = ", ".join(f"{k} ×{v}" for k, v in chosen.most_common()) or "nothing recognised"
            print(f"ipanon: auto: {path}: {what}", file=err)
    out.flush()
    why = (" (" + ", ".join(f"{k} ×{v}" for k, v in reasons.most_common()) + ")") if reasons else ""
    print(f"ipanon: {n_records} records, {n_bindings} bindings, {n_rejects} rejected{why}"
          f"{f', {unreadable} unreadable file(s)' if unreadable else ''}", file=err)
    return 2 if unreadable else 0
