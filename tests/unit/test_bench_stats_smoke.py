"""The statistics benchmark runs and prints one JSON line with every figure (no timing asserted)."""

from __future__ import annotations

from tests.conftest import bench_smoke


def test_bench_stats_smoke():
    fig = bench_smoke("bench_stats.py")
    for k in ("ipcrypt_pfx", "cryptopan", "ipcrypt_det", "truncate", "drop"):
        assert isinstance(fig[f"records_per_s_{k}"], int) and fig[f"records_per_s_{k}"] > 0, k
    assert fig["smoke"] is True and fig["bindings"] == 200 and fig["batch"] == 50
