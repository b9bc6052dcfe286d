"""Smoke run of ``benchmarks/bench_key_history.py`` (tiny sizes): one JSON line whose sizes,
outcomes and derived figures are consistent with what it fed in.  No timing is asserted."""

from __future__ import annotations

from tests.conftest import bench_smoke


def test_bench_key_history_smoke():
    fig = bench_smoke("bench_key_history.py")
    assert fig["bench"] == "key_history" and fig["smoke"] is True and fig["sizes"] == [1, 10, 40]
    nat, radius = fig["kinds"]["nat"], fig["kinds"]["radius"]
    # the history really is on the key: n port blocks, or n closed sessions and the open one
    assert [r["intervals"] for r in nat["rows"]] == [1, 10, 40]
    assert [r["intervals"] for r in radius["rows"]] == [2, 11, 41]
    for r in nat["rows"]:  # each pair: a new block opened, then closed
        assert r["outcomes"] == {"opened": 2, "closed": 2}
    for r in radius["rows"]:  # Interim-Updates of the open session
        assert r["outcomes"] == {"extended": 4}
    for kind in (nat, radius):
        sizes = [r["value_bytes"] for r in kind["rows"]]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # the stored value grows with the history
        assert all(r["event_us"] > 0 and r["open_us"] > 0 for r in kind["rows"])
        # the 1 MiB estimate follows from the slope it reports
        assert abs(kind["intervals_at_1mib"] * kind["bytes_per_interval"] - fig["max_request_bytes"]) < 0.01 * 2**20
    ops = fig["per_operator"]
    assert set(ops) == {"connect2ip", "framsteget", "hektor", "junet", "op003"}
    # longer retention: fewer blocks a day fill the value
    assert ops["hektor"]["nat_blocks_per_day_to_1mib"] < ops["junet"]["nat_blocks_per_day_to_1mib"] \
        < ops["framsteget"]["nat_blocks_per_day_to_1mib"]
