"""Smoke run of ``benchmarks/bench_clients.py`` on the session broker (2000 records, one round):
one JSON line, every client variant drained the whole backlog.  No timing is asserted;
confluent-kafka is a benchmark-only dependency and may be absent."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_bench_clients_smoke(bootstrap):
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_clients.py"), "--smoke",
                        "--bootstrap", bootstrap], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1, p.stdout
    fig = json.loads(lines[0])
    assert fig["bench"] == "clients" and fig["smoke"] is True and fig["records"] == 2000
    variants = ["aiokafka", "aiokafka_batches"]
    if "skipped" not in fig["confluent"]:
        variants.append("confluent")
    for name in variants:
        runs = fig[name]["runs"]
        assert len(runs) == 1 and runs[0]["records"] == 2000 and "incomplete" not in fig[name], name
        assert runs[0]["rps"] > 0 and runs[0]["cpu_s"] >= 0, name
