"""Smoke run of ``benchmarks/bench_core.py`` (tiny sizes): one JSON line whose figures are
consistent with what it fed in.  No timing is asserted."""

from __future__ import annotations

from tests.conftest import bench_smoke

STEPS = ("encode", "decode", "key", "open", "apply", "seal", "stats_build", "stats_out")


def test_bench_core_smoke():
    fig = bench_smoke("bench_core.py")
    assert fig["bench"] == "core" and fig["smoke"] is True
    n, maps = fig["events"], fig["mappings"]
    assert n == 300 and maps == 3000
    assert tuple(fig["steps_us"]) == STEPS
    assert all(fig["steps_us"][s] > 0 for s in STEPS)
    assert abs(fig["steps_sum_us"] - sum(fig["steps_us"].values())) < 0.05
    assert fig["total_us"] > 0 and fig["target_us"] == 20.0
    assert fig["met"] == (fig["total_us"] <= fig["target_us"])
    # a third Starts on new addresses, a third Interims and a third Stops of live sessions
    assert fig["outcomes"] == {"opened": n // 3, "extended": n // 3, "closed": n // 3}
    assert fig["records"] == n
    # the table is put back after every repeat
    assert fig["table_size"] == maps
    assert fig["machine"]["load1"] >= 0
