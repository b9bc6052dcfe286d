"""Smoke run of benchmarks/bench_lawful_latency.py on the session broker: one JSON line with
the documented keys and every answer correct.  (No timing assertion: figures are reported.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_lawful_latency.py"
KEYS = {"mappings", "requests", "basis", "fill_s", "fill_per_s", "latency_ms_p50", "latency_ms_p99",
        "latency_ms_max", "latency_ms_min", "correct", "heartbeat_ms", "fill", "restore_s", "ready_s", "schedule_rebuilt_s",
        "worker_cpu_s", "bench_cpu_s", "load1_before", "load1_after", "slowest_ms", "warmup_ms",
        "store", "pad", "pad_s", "restart_s", "rss_mb", "rss_after_mb", "gets", "get_p50_us", "get_p99_us"}


def _run(bootstrap: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--bootstrap", bootstrap, *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert set(figures) == KEYS
    return figures


def test_lawful_latency_benchmark_smoke(bootstrap):
    figures = _run(bootstrap)
    assert figures["store"] == "memory" and figures["gets"] is None and figures["rss_mb"] is None
    assert figures["mappings"] == 200 and figures["requests"] == 5
    assert figures["fill"] == "ingest" and figures["restore_s"] is None  # the smoke fills through ingest
    assert figures["correct"] == 5  # every sealed answer opened to the filled subscriber
    assert figures["latency_ms_min"] <= figures["latency_ms_p50"] <= figures["latency_ms_p99"] <= figures["latency_ms_max"]
    assert len(figures["warmup_ms"]) == 1  # --smoke: one warm-up request, left out of the figures
    slowest = figures["slowest_ms"]       # [request index, ms], slowest first
    assert [n for n, _ in slowest] and all(0 <= n < 5 for n, _ in slowest)
    assert abs(slowest[0][1] - figures["latency_ms_max"]) <= 0.06


def test_lawful_latency_benchmark_disk_smoke(bootstrap):
    """--store disk: the worker on its on-disk table, padded with 2 000 random records, restarted on
    its intact store before the requests; then the store opened in the bench process for gets."""
    figures = _run(bootstrap, "--store", "disk", "--pad", "2000", "--restart")
    assert figures["store"] == "disk" and figures["pad"] == 2000 and figures["fill"] == "changelog"
    assert figures["restore_s"] is not None and figures["restart_s"] > 0
    assert figures["correct"] == 5  # answered from the restarted worker's store
    assert figures["rss_mb"] > 0 and figures["rss_after_mb"] > 0
    # every one of the 20 000 sampled filled keys was found in the store (the bench fails otherwise)
    assert figures["gets"] == 20_000 and figures["get_p50_us"] <= figures["get_p99_us"]
