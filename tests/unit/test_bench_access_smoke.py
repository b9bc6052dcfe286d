"""benchmarks/bench_access.py runs with --smoke and prints one JSON line with its figures."""

from __future__ import annotations

from tests.conftest import bench_smoke


def test_bench_access_smoke():
    fig = bench_smoke("bench_access.py")
    assert {"requests", "submit_per_s", "answer_per_s", "audit_records", "audit_append_per_s",
            "audit_verify_per_s", "p50_us", "p99_us", "desk_state_bytes"} <= set(fig)
    assert fig["requests"] == 20 and fig["audit_records"] == 20 * 3  # received, ready, answered
    assert fig["p50_us"] <= fig["p99_us"]
