"""benchmarks/bench_metrics_scan.py runs with --smoke and prints one JSON line with its figures."""

from __future__ import annotations

from tests.conftest import bench_smoke


def test_bench_metrics_scan_smoke():
    fig = bench_smoke("bench_metrics_scan.py")
    assert {"keys", "first_scan_s", "open_per_s", "cached_render_s", "rescan_1pct_changed_s", "exposition_bytes",
            "oldest_age_s"} <= set(fig)
    assert fig["keys"] == 300 and fig["oldest_age_s"] == 299 * 60  # the oldest session ended 299 min before
    assert fig["exposition_bytes"] > 1000
