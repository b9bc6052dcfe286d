"""Run every benchmark with one command; collect their JSON lines.

    python benchmarks/run_all.py              # full sizes (~15-30 min on a 2-core machine)
    python benchmarks/run_all.py --quick      # moderate sizes (~10 min idle; much longer when loaded)
    python benchmarks/run_all.py --smoke      # tiny sizes (~2 min), what the test suite runs
    python benchmarks/run_all.py --only e2e state

Starts one throw-away local broker (``agents.broker.LocalBroker`` in a temporary directory;
Kafka's jars are fetched once by ``ipanon broker start`` / the first run) unless
``--bootstrap`` (and ``--broker-dir`` for on-disk sizes) name a running one, then runs each
benchmark script as a child process.  Every script prints exactly one JSON line; this writes

    benchmarks/results/latest.jsonl    (``--out`` to change)

whose first line describes the run (machine, load, commit, command) and every further line is
one benchmark's output with ``"bench"`` and ``"exit"`` added.  A benchmark that fails is
recorded with its exit code and the tail of its stderr, and the others still run.  It also
prints the lines to stdout (the last line is a one-line summary of the targets).

Benchmarks (each runs on its own too, ``--help`` for its sizes):

- ``parsers``     bench_parsers.py      records/s per input format
- ``pseudonym``   bench_pseudonym.py    addresses/s per pseudonymisation scheme
- ``intervals``   bench_intervals.py    interval-index updates/lookups at 1M and 10M mappings
- ``e2e``         bench_e2e.py          worker events/s, p50/p99 latency, vs aiokafka pass-through
- ``state``       bench_state.py        bytes/mapping on disk, worker RSS, restore rate
- ``lawful``      bench_lawful_latency.py  lookup request → sealed answer p50/p99 (if present)
- every other ``bench_*.py`` found here, under its name without ``bench_`` (e.g. ``stats``,
  ``access``, ``deletion``), with ``--smoke`` passed through and ``--bootstrap`` when it takes one
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as H  # noqa: E402

#: ``--quick``: moderate sizes (~10 min on an idle 2-core machine)
QUICK: dict[str, list[str]] = {
    "parsers": ["-n", "20000"],
    "intervals": ["--sizes", "1000000", "--ops", "10000"],
    "e2e": ["--events", "10000", "--latency-events", "1000"],
    "state": ["--sizes", "200000"],
}

#: name → (script, full-size args, needs the broker)
BENCHES: dict[str, tuple[str, list[str], bool]] = {
    "parsers": ("bench_parsers.py", [], False),
    "pseudonym": ("bench_pseudonym.py", [], False),
    "intervals": ("bench_intervals.py", [], False),
    "e2e": ("bench_e2e.py", [], True),
    "state": ("bench_state.py", [], True),
    "lawful": ("bench_lawful_latency.py", [], True),
}


def discover() -> None:
    """Every other ``bench_*.py`` in this directory runs too (full: no arguments; ``--smoke``
    passed through), so a new benchmark is part of the one command without editing this file."""
    known = {script for script, _, _ in BENCHES.values()}
    for path in sorted(HERE.glob("bench_*.py")):
        if path.name not in known:
            BENCHES[path.stem.removeprefix("bench_")] = (path.name, [], "--bootstrap" in path.read_text(errors="replace"))


discover()


def _commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def _accepts(script: Path, flag: str) -> bool:
    return flag in script.read_text(errors="replace")


def run_one(name: str, smoke: bool, bootstrap: str, broker_dir, timeout_s: float, quick: bool = False) -> dict:
    script, args, needs_broker = BENCHES[name]
    path = HERE / script
    if not path.exists():
        return {"bench": name, "exit": None, "skipped": f"{script} not present"}
    if quick:
        args = QUICK.get(name, args)
    cmd = [sys.executable, str(path), *(["--smoke"] if smoke else args)]
    if needs_broker and _accepts(path, "--bootstrap"):
        cmd += ["--bootstrap", bootstrap]
        if broker_dir and name == "state":  # other scripts' --broker-dir may mean something else
            cmd += ["--broker-dir", str(broker_dir)]
    t = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"bench": name, "exit": None, "error": f"timed out after {timeout_s:.0f}s"}
    out: dict = {"bench": name, "exit": p.returncode, "wall_s": round(time.monotonic() - t, 1)}
    lines = p.stdout.strip().splitlines()
    if p.returncode == 0 and lines:
        try:
            fig = json.loads(lines[-1])
            out = {**fig, **out}
        except ValueError:
            out["error"] = "last stdout line is not JSON"
    else:
        out["error"] = (p.stderr.strip().splitlines() or ["no output"])[-1][:300]
    return out


def summary(rows: list[dict]) -> dict:
    """The throughput and state targets, each with the figure it was judged on (None = not measured)."""
    by = {r["bench"]: r for r in rows}
    s: dict = {}
    e = by.get("e2e", {})
    if "worker_eps" in e:
        s["e2e_eps"] = [e["worker_eps"], e["worker_eps"] >= 50_000]
        s["e2e_ratio"] = [e["ratio"], e["ratio"] >= 0.5]
        over_peer = (e.get("ratios") or {}).get("ipanon_over_peer")  # None: peer skipped (no quixstreams)
        s["e2e_over_quix_peer"] = [over_peer, over_peer is not None and over_peer >= 1.0]
    st = by.get("state", {})
    for row in st.get("sizes", []):
        s[f"disk_B_per_mapping@{row['mappings']}"] = [row.get("disk_bytes_per_mapping"),
                                                       (row.get("disk_bytes_per_mapping") or 1e9) <= 150]
        s[f"restore_per_s@{row['mappings']}"] = [row.get("restore_per_s"), (row.get("restore_per_s") or 0) >= 200_000]
    if st.get("rss_ratio_largest_to_smallest") is not None:
        s["rss_ratio"] = [st["rss_ratio_largest_to_smallest"], st["rss_ratio_largest_to_smallest"] <= 1.2]
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes")
    ap.add_argument("--quick", action="store_true", help="moderate sizes (1M intervals, 200k state, 10k e2e events)")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run only these")
    ap.add_argument("--bootstrap", help="use this running broker (default: start a throw-away local one)")
    ap.add_argument("--broker-dir", help="state dir of that broker (for on-disk sizes)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "latest.jsonl")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark")
    a = ap.parse_args()
    names = a.only or list(BENCHES)
    rows = []
    head = {"bench": "run", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": _commit(),
            "smoke": a.smoke, "quick": a.quick, "command": " ".join(["python", "benchmarks/run_all.py", *sys.argv[1:]]),
            "machine": H.machine()}
    print(json.dumps(head), flush=True)
    with H.broker(a.bootstrap) as (bootstrap, data_dir):
        broker_dir = Path(a.broker_dir) if a.broker_dir else (data_dir.parent if data_dir else None)
        for name in names:
            row = run_one(name, a.smoke, bootstrap, broker_dir, a.timeout, quick=a.quick)
            rows.append(row)
            print(json.dumps(row), flush=True)
    head["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    head["machine_end"] = H.machine()
    head["targets"] = summary(rows)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("".join(json.dumps(r) + "\n" for r in [head, *rows]))
    print(json.dumps({"bench": "summary", "targets": head["targets"], "out": str(a.out)}), flush=True)


if __name__ == "__main__":
    main()
