"""The parser benchmark runs and prints one JSON line with a figure per format (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_parsers.py"


def test_bench_parsers_smoke():
    p = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    fig = json.loads(lines[0])
    assert fig["smoke"] is True and fig["n"] == 300 and fig["target_rps"] == 100_000
    for k in ("radius-json", "radius-detail", "kea-csv", "kea-legal", "kea-hook", "ipfix-json", "juniper",
              "sixwind", "kea-csv+frame"):
        assert isinstance(fig["rps"][k], int) and fig["rps"][k] > 0, k
    assert set(fig["targets_met"]) == set(fig["rps_warm"]) == {"radius-json", "kea-csv", "kea-hook", "ipfix-json"}
