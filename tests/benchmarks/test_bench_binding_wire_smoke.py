"""Smoke run of ``benchmarks/bench_binding_wire.py`` (tiny sizes): one JSON line whose figures
are consistent with what it fed in.  No timing is asserted."""

from __future__ import annotations

from tests.conftest import bench_smoke


def test_bench_binding_wire_smoke():
    fig = bench_smoke("bench_binding_wire.py")
    assert fig["bench"] == "binding_wire" and fig["smoke"] is True and fig["bindings"] == 200
    for codec in ("json", "wire"):
        for k in ("bytes_per_binding", "encode_us", "decode_us", "encode_decode_us"):
            assert fig[codec][k] > 0, (codec, k)
    # the byte counts are exact, not timings: the binary form is the smaller one
    assert fig["wire"]["bytes_per_binding"] < fig["json"]["bytes_per_binding"]
