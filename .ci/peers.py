#!/usr/bin/env python3
"""Optional real peers of the test suite: which are missing, and what their absence skipped.

  python .ci/peers.py before           one line per missing peer and the one command that installs them
  python .ci/peers.py after JUNIT.xml  how many tests were skipped, per missing peer (and other reasons)

`make test` runs both around pytest.  The Debian packages here are exactly .ci/apt-packages
(tests/unit/test_self_contained.py checks that, and that every tool a test looks up with
shutil.which is listed here)."""

from __future__ import annotations

import shutil
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

APT_FILE = Path(__file__).resolve().parent / "apt-packages"


@dataclass(frozen=True)
class Peer:
    name: str                   # the word the tests' skip reasons use
    executables: tuple[str, ...]  # any one of these on PATH will do
    apt: str                    # Debian package that provides it
    used_by: str


PEERS = (
    Peer("promtool", ("promtool",), "prometheus", "alert rule unit tests (tests/agents/test_prometheus_rules.py)"),
    Peer("prometheus", ("prometheus",), "prometheus", "a real Prometheus scraping the worker (tests/e2e/test_operations.py)"),
    Peer("chromium", ("chromium", "chromium-browser"), "chromium",
         "the status page and the compliance report rendered in headless Chromium "
         "(tests/e2e/test_operations.py, tests/e2e/test_compliance_report.py)"),
    Peer("softflowd", ("softflowd",), "softflowd",
         "a real IPFIX exporter feeding the collector (tests/e2e/test_cgnat_softflowd.py)"),
)


def missing() -> list[Peer]:
    return [p for p in PEERS if not any(shutil.which(e) for e in p.executables)]


def install_command(peers) -> str:
    import os

    pkgs = sorted({p.apt for p in peers})
    sudo = "" if os.geteuid() == 0 else "sudo "
    return f"{sudo}apt-get install -y --no-install-recommends {' '.join(pkgs)}"


def before() -> None:
    gone = missing()
    if not gone:
        print(f"== optional test peers: all present ({', '.join(p.name for p in PEERS)}); nothing will skip for them")
        return
    print(f"== optional test peers missing: {', '.join(p.name for p in gone)} — tests that need them will SKIP:")
    for p in gone:
        print(f"   {p.name:<11} {p.used_by}")
    print(f"== install them (Debian; the list is .ci/apt-packages): {install_command(gone)}")


def after(junit: Path) -> None:
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        print(f"== no test report at {junit}: skip counts unknown")
        return
    reasons = [s.get("message", "") for s in root.iter("skipped")]
    per_peer: Counter = Counter()
    other: Counter = Counter()
    for r in reasons:
        peer = next((p for p in PEERS if r.lower().startswith(p.name)), None)
        if peer:
            per_peer[peer.name] += 1
        else:
            other[r] += 1
    if per_peer:
        gone = [p for p in PEERS if per_peer[p.name]]
        print(f"== {sum(per_peer.values())} tests skipped for missing peers "
              f"({', '.join(f'{n}: {c}' for n, c in sorted(per_peer.items()))}); {install_command(gone)}")
    else:
        print("== 0 tests skipped for missing peers")
    for r, c in sorted(other.items()):
        print(f"== {c} skipped: {r}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["before"]:
        before()
    elif argv[:1] == ["after"] and len(argv) == 2:
        after(Path(argv[1]))
    else:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
