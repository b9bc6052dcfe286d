"""The ``ipanon`` command line.

Every module in ``agents/commands/`` contributes subcommands through ``register(subparsers)``
and is discovered here, so adding a command never means editing this file.  Command modules
import Faust/Kafka lazily inside their handlers: ``ipanon parse`` must not pay for Faust.

Errors: anything derived from ``stream.errors.IpanonError`` or ``agents.broker.BrokerError``
(and ``CliError``) prints one line ``ipanon: <what> — <what to do>`` and exits 2; nothing
prints a traceback unless ``IPANON_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys
from typing import Optional, Sequence

from stream.errors import IpanonError

from . import commands
from .broker import BrokerError
from .compiled_core import CoreError, require as require_core


class CliError(IpanonError):
    """A one-line user-facing error; the CLI exits 2.  (An ``IpanonError`` so that it is caught
    even when this module also runs as ``__main__``.)"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


#: one bootstrap server: a host name, IPv4 address or [IPv6] address, and an optional port
_SERVER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(\d{1,5}))?")


def check_bootstrap(value: str, where: str) -> None:
    """``host:port[,host:port…]`` or a ``CliError`` naming ``where`` it came from (a flag or an
    environment variable); checked before any Kafka client sees it, whose errors for a
    malformed address are tracebacks, not messages."""
    for server in value.split(","):
        m = _SERVER.fullmatch(server.strip())
        if m is None or (m.group(1) is not None and not 0 < int(m.group(1)) < 65536):
            raise CliError(f"{where} {value!r} is not host:port[,host:port…] (e.g. localhost:9092)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ipanon",
        formatter_class=_Formatter,
        description="Streaming IP-address log anonymiser for network operators.",
        epilog="example:\n  ipanon demo            # local broker, worker, synthetic traffic, checks\n"
               "  ipanon <command> --help for each command's options and an example",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        importlib.import_module(f"{commands.__name__}.{mod.name}").register(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if args.command != "core":  # IPANON_CORE=compiled without a usable build stops here
            require_core()
        if hasattr(args, "bootstrap"):  # every command that talks to Kafka has --bootstrap
            if args.bootstrap is not None:
                check_bootstrap(args.bootstrap, "--bootstrap")
            elif os.environ.get("IPANON_BOOTSTRAP"):
                check_bootstrap(os.environ["IPANON_BOOTSTRAP"], "IPANON_BOOTSTRAP")
        rc = args.func(args)
        return int(rc or 0)
    except (IpanonError, BrokerError, CliError, CoreError) as e:
        if os.environ.get("IPANON_DEBUG"):
            raise
        print(f"ipanon: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ipanon: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
