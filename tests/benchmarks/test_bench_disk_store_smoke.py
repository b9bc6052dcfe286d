"""benchmarks/bench_disk_store.py runs with --smoke and prints one JSON line whose figures are
consistent with each other (no timing is asserted)."""

from __future__ import annotations

from tests.conftest import bench_smoke


def test_bench_disk_store_smoke():
    fig = bench_smoke("bench_disk_store.py")
    assert fig["bench"] == "disk_store" and fig["smoke"] is True
    for k in ("write_mappings_per_s", "disk_bytes_per_mapping", "get_p50_us", "get_p99_us", "reopen_s", "restore_write_mappings_per_s",
              "rss_before_mb", "rss_written_mb", "rss_reopened_mb", "expiry_to_absence_s", "machine"):
        assert k in fig, k
    assert fig["mappings"] == 20_000 and fig["schedule_entries"] == 20_000
    assert (fig["key_bytes"], fig["value_bytes"]) == (28, 89)
    # every mapping's key and value are on disk (compression is off), and the total matches
    assert fig["disk_bytes_per_mapping"] >= fig["key_bytes"] + fig["value_bytes"]
    assert abs(fig["disk_bytes"] / fig["mappings"] - fig["disk_bytes_per_mapping"]) < 0.1
    assert fig["get_p50_us"] <= fig["get_p99_us"]
    # the erasure sample: every deleted value was found on disk before the tick, none after
    assert fig["sample_values_found_before"] == fig["erase_sample"] == 200
    assert fig["sample_values_found_after"] == 0
    assert sorted(fig["erase_tick"]["compacted"]) == list(range(fig["partitions"]))
