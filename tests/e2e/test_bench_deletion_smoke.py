"""Smoke run of benchmarks/bench_deletion.py on the session broker: one JSON line with the
documented keys.  (No timing assertion: the figures are reported, not judged here.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_deletion.py"
KEYS = {"promise_ms", "heartbeat_ms", "trials", "broker_retention_check_interval_ms", "broker_cleaner_backoff_ms",
        "delete_bound_ms", "delete_measured_ms", "delete_measured_max_ms", "compact_bound_ms",
        "compact_value_measured_ms", "compact_tombstone_measured_ms", "compact_measured_max_ms", "ttl_ms",
        "within_bound"}


def test_deletion_bound_benchmark_smoke(broker):
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--broker-dir", str(broker.dir)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert set(figures) == KEYS
    assert figures["trials"] == 1 and len(figures["delete_measured_ms"]) == 1
    assert figures["delete_bound_ms"] <= figures["promise_ms"]
