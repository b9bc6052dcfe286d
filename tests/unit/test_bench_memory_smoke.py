"""benchmarks/bench_memory.py runs with --smoke and prints one JSON line with its figures."""

from __future__ import annotations

from tests.conftest import bench_smoke


def test_bench_memory_smoke():
    fig = bench_smoke("bench_memory.py")
    (size,) = fig["sizes"]
    assert size["mappings"] == 20_000
    per = size["bytes_per_mapping"]
    assert set(per) == {"key_value_bytes", "store_dict", "partition_map", "schedule", "walk_summaries"}
    # the key and value objects can be no smaller than their payload
    assert per["key_value_bytes"] >= size["mean_key_bytes"] + size["mean_value_bytes"]
    assert abs(size["total_bytes_per_mapping"] - sum(per.values())) < 1
