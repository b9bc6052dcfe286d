"""The model-based checker's long run: random histories through real workers on a real broker,
SIGTERM and SIGKILL restarts, a second worker joining and leaving, broker restarts; every
lookup answer compared with the reference model (tests/checker, docs/checker.md).

Prints ONE JSON line (histories, events, lookups, mismatches, restarts, restart_kinds, seconds,
and the statistics / dead-letter / expiry figures) and exits 1 on any mismatch; mismatch
reports (seed, the key's history, both answers) go to stderr.

    python benchmarks/checker.py                          # 50 000+ events, 20+ restarts, 2 400 lookups
    python benchmarks/checker.py --seed 7 --events 5000 --restarts 4 --lookups 300
    python benchmarks/checker.py --broker-dir ~/.local/state/ipanon/broker   # a local broker of yours
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    from agents.broker import LocalBroker
    from tests.checker.driver import KINDS, Params, run

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--events", type=int, default=55_000, help="events requested (the generator gives a few %% fewer)")
    ap.add_argument("--restarts", type=int, default=20, help="faults injected (mixed kinds; a twin join gets its leave)")
    ap.add_argument("--lookups", type=int, default=2_400)
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    ap.add_argument("--no-expiry", action="store_true", help="skip the expiry phase")
    ap.add_argument("--broker-dir", type=Path, default=None,
                    help="state directory of the local broker to use (it is restarted by 'broker' faults); "
                         "default: a throw-away broker")
    ap.add_argument("--workdir", type=Path, default=None, help="keep worker data and logs here (default: a temp dir)")
    ap.add_argument("--smoke", action="store_true", help="a short run (1 500 events, 4 restarts)")
    a = ap.parse_args(argv)
    if a.smoke:
        a.events, a.restarts, a.lookups = 1_500, 4, 500
    params = Params(seed=a.seed, events=a.events, restarts=a.restarts, lookups=a.lookups,
                    kinds=tuple(k for k in a.kinds.split(",") if k), expiry_phase=not a.no_expiry)
    with tempfile.TemporaryDirectory(prefix="ipanon-checker-") as tmp:
        if a.workdir is not None:
            a.workdir.mkdir(parents=True, exist_ok=True)
            tmp = str(a.workdir)
        own = a.broker_dir is None
        broker = LocalBroker(a.broker_dir or Path(tmp) / "broker")
        broker.start(quiet=True)
        try:
            res = run(params, broker, Path(tmp), report=lambda s: print(s, file=sys.stderr, flush=True))
        finally:
            if own:
                broker.stop()
    print(json.dumps(res), flush=True)
    return 1 if res["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
