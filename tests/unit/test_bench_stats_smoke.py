"""The statistics benchmark runs and prints one JSON line with every figure (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_stats.py"


def test_bench_stats_smoke():
    p = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    fig = json.loads(lines[0])
    for k in ("ipcrypt_pfx", "cryptopan", "ipcrypt_det", "truncate", "drop"):
        assert isinstance(fig[f"records_per_s_{k}"], int) and fig[f"records_per_s_{k}"] > 0, k
    assert fig["smoke"] is True and fig["bindings"] == 200 and fig["batch"] == 50
