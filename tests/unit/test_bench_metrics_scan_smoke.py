"""benchmarks/bench_metrics_scan.py runs with --smoke and prints one JSON line with its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_metrics_scan.py"


def test_bench_metrics_scan_smoke():
    out = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1
    fig = json.loads(lines[0])
    assert {"keys", "first_scan_s", "open_per_s", "cached_render_s", "rescan_1pct_changed_s", "exposition_bytes",
            "oldest_age_s"} <= set(fig)
    assert fig["keys"] == 300 and fig["oldest_age_s"] == 299 * 60  # the oldest session ended 299 min before
    assert fig["exposition_bytes"] > 1000
