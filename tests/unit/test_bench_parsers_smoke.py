"""The parser benchmark runs and prints one JSON line with a figure per format (no timing asserted)."""

from __future__ import annotations

from tests.conftest import bench_smoke


def test_bench_parsers_smoke():
    fig = bench_smoke("bench_parsers.py")
    assert fig["smoke"] is True and fig["n"] == 300 and fig["target_rps"] == 100_000
    for k in ("radius-json", "radius-detail", "kea-csv", "kea-legal", "kea-hook", "ipfix-json", "juniper",
              "sixwind", "kea-csv+frame", "ipfix", "a10-cef", "juniper-srx-session", "sixwind-vsr3"):
        assert isinstance(fig["rps"][k], int) and fig["rps"][k] > 0, k
    assert set(fig["targets_met"]) == set(fig["rps_warm"]) == {"radius-json", "kea-csv", "kea-hook", "ipfix-json"}
