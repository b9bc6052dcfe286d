"""benchmarks/bench_access.py runs with --smoke and prints one JSON line with its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_access.py"


def test_bench_access_smoke():
    out = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1
    fig = json.loads(lines[0])
    assert {"requests", "submit_per_s", "answer_per_s", "audit_records", "audit_append_per_s",
            "audit_verify_per_s", "p50_us", "p99_us", "desk_state_bytes"} <= set(fig)
    assert fig["requests"] == 20 and fig["audit_records"] == 20 * 3  # received, ready, answered
    assert fig["p50_us"] <= fig["p99_us"]
