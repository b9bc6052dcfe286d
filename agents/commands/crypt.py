"""``ipanon crypt encrypt|decrypt`` — the invertible address schemes at the command line.

Contract: ``ipanon crypt encrypt|decrypt --scheme ipcrypt-det|ipcrypt-pfx|cryptopan
--key HEX [ADDR...]`` prints one address per line in compressed canonical text (RFC 5952; IPv4
dotted where the scheme keeps the family, IPv4-mapped IPv6 as ``::ffff:a.b.c.d``), reading
addresses from stdin, one per line, when none are given (blank lines are skipped).  A bad key
length, equal pfx key halves, non-hex key or bad address is a one-line error on stderr and exit
status 2; for stdin, every address before the bad line has already been printed.  Error
messages name the argument position or stdin line, never echo the input or the key.

Stdin is processed in batches of ``BATCH`` lines so the schemes' batched AES paths are used.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import List, Sequence

from ..cli import CliError

SCHEMES = ("ipcrypt-det", "ipcrypt-pfx", "cryptopan")
BATCH = 4096


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "crypt", help="encrypt/decrypt addresses with ipcrypt-det, ipcrypt-pfx or Crypto-PAn",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Encrypt or decrypt IP addresses with an invertible pseudonymisation scheme.\n"
                    "Key lengths: ipcrypt-det 16 bytes (32 hex), ipcrypt-pfx and cryptopan 32 bytes\n"
                    "(64 hex; pfx halves must differ).  Addresses come from the arguments or, when\n"
                    "there are none, from stdin (one per line); output is one address per line.",
        epilog="example:\n"
               "  ipanon crypt encrypt --scheme ipcrypt-pfx \\\n"
               "      --key 0123456789abcdeffedcba98765432101032547698badcfeefcdab8967452301 192.0.2.1\n"
               "  # -> 100.115.72.131\n"
               "  cut -f3 trace.tsv | ipanon crypt encrypt --scheme cryptopan --key \"$(cat cpan.hex)\"",
    )
    # encrypt/decrypt are sub-commands (not a positional choice) so that addresses may follow
    # the options: argparse binds all of a parser's positionals at their first appearance
    dsub = p.add_subparsers(dest="direction", metavar="DIRECTION", required=True)
    for direction in ("encrypt", "decrypt"):
        d = dsub.add_parser(direction, help=f"{direction} addresses",
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=f"example:\n  echo 192.0.2.1 | ipanon crypt {direction} --scheme ipcrypt-det "
                                   f"--key 2b7e151628aed2a6abf7158809cf4f3c")
        d.add_argument("--scheme", required=True, choices=SCHEMES)
        d.add_argument("--key", required=True, metavar="HEX",
                       help="the key in hex (visible in the process list; prefer \"$(cat FILE)\")")
        d.add_argument("addresses", nargs="*", metavar="ADDR", help="addresses (default: read stdin)")
        d.set_defaults(func=run)


def _text(a) -> str:
    if a.version == 6 and a.ipv4_mapped is not None:
        return f"::ffff:{a.ipv4_mapped}"          # RFC 5952 section 5 mixed notation
    return str(a)


def _parse(texts: Sequence[str], where) -> tuple[list, int | None]:
    """Parse until the first bad text; return the good prefix and the bad index (or None)."""
    out = []
    for i, t in enumerate(texts):
        s = t.strip()
        if "%" in s:          # zone ids are meaningless off-link
            return out, i
        try:
            out.append(ipaddress.ip_address(s))
        except ValueError:
            return out, i
    return out, None


def _bad(where: str) -> CliError:
    return CliError(f"crypt: {where} is not an IPv4 or IPv6 address — give one address per "
                    f"argument or stdin line, in text form")


def run(args: argparse.Namespace) -> int:
    from stream.pseudonym import make_address_scheme

    text = args.key.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise CliError(f"crypt: --key must be hexadecimal ({args.scheme}: "
                       f"{64 if args.scheme != 'ipcrypt-det' else 32} hex characters)") from None
    scheme = make_address_scheme(args.scheme, key)      # CryptoError (exit 2) on a bad key
    fn = scheme.encrypt_many if args.direction == "encrypt" else scheme.decrypt_many
    out = sys.stdout

    def emit(addrs: List) -> None:
        if addrs:
            out.write("".join(_text(a) + "\n" for a in fn(addrs)))

    if args.addresses:
        good, bad = _parse(args.addresses, None)
        if bad is not None:
            raise _bad(f"argument {bad + 1}")
        emit(good)
        out.flush()
        return 0
    lineno = 0
    chunk: List[str] = []
    numbers: List[int] = []

    def flush_chunk() -> None:
        good, bad = _parse(chunk, None)
        emit(good)
        out.flush()
        if bad is not None:
            raise _bad(f"stdin line {numbers[bad]}")

    for line in sys.stdin:
        lineno += 1
        if not line.strip():
            continue
        chunk.append(line)
        numbers.append(lineno)
        if len(chunk) >= BATCH:
            flush_chunk()
            chunk.clear()
            numbers.clear()
    if chunk:
        flush_chunk()
    return 0
