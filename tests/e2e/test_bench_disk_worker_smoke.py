"""Smoke run of benchmarks/bench_disk_worker.py on the session broker: a worker with its table
on disk restores 2 000 mappings afresh, then restarts on its store and reads only the 20 written
since.  (No timing assertion: the figures are reported, not judged here.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_disk_worker.py"

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_disk_worker_benchmark_smoke(bootstrap):
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--bootstrap", bootstrap],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    r = json.loads(lines[0])["results"][0]
    assert r["mappings"] == 2000, r
    # keys: RocksDB's estimate; records read at the restart: the 20 written since its checkpoint
    # (and any heartbeat the worker wrote after its last checkpoint), not the 2 000 before it
    assert 1900 <= r["fresh_keys"] <= 2100 and 1900 <= r["restart_keys"] <= 2200, r
    assert 20 <= r["restart_records"] < 100, r
    assert r["store_bytes_per_mapping"] > 0 and r["restart_rss_mb"] > 0, r
