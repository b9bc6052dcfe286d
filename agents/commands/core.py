"""``ipanon core build|status`` — the pure core compiled with mypyc (agents/compiled_core.py)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "core", help="compile the pure core with mypyc, or say whether it runs compiled",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The per-event core (stream/) compiled with mypyc (make install builds it;\n"
                    "docs/operations.md).  The build lives in the environment (not the source tree)\n"
                    "and is used only while it matches the sources byte for byte;\n"
                    "IPANON_CORE=auto|compiled|interpreted chooses.",
        epilog="example:\n  ipanon core build && ipanon core status",
    )
    p.add_argument("action", choices=["build", "status"],
                   help="build: compile (needs mypy and a C compiler); status: compiled or not, and why")
    p.add_argument("--if-possible", action="store_true",
                   help="build: when mypyc or the C compiler is missing or fails, warn and exit 0 (the core "
                        "then runs interpreted)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import compiled_core as core

    if args.action == "status":
        s = core.status()
        print(s.line())
        return 0 if s.active else 1
    try:
        core.build(progress=lambda line: print(f"ipanon core: {line}", file=sys.stderr, flush=True))
    except core.CoreError as e:
        if not args.if_possible:
            raise
        print(f"ipanon core: warning: not compiled, the core will run interpreted: {e}", file=sys.stderr)
    return 0
