"""Smoke run of ``benchmarks/bench_reset.py`` (tiny sizes): one JSON line whose resets took the
path they claim and closed exactly the sessions of their NAS.  No timing is asserted."""

from __future__ import annotations

from tests.conftest import bench_smoke


def test_bench_reset_smoke():
    fig = bench_smoke("bench_reset.py")
    assert fig["bench"] == "reset" and fig["smoke"] is True and fig["keys"] == 400 and fig["open_per_nas"] == 10
    # one reset scanned every key, the other went through the index; each closed its NAS's sessions
    assert fig["paths"] == {"resets:scanned": 1, "resets:indexed": 1}
    assert fig["closed"] == {"scanned_nas": 10, "indexed_nas": 10}
    assert fig["indexed_keys_before"] == 400  # every open session was in the index
    assert fig["scan_s"] > 0 and fig["binding_us"]["with_index"] > 0 and fig["index_bytes_per_key"] > 0
