"""The pseudonym benchmark runs and prints one JSON line with every figure (no timing asserted)."""

from __future__ import annotations

from tests.conftest import bench_smoke


def test_bench_pseudonym_smoke():
    fig = bench_smoke("bench_pseudonym.py")
    for fam in (4, 6):
        for k in (f"ipcrypt_det_v{fam}", f"ipcrypt_pfx_v{fam}_random", f"ipcrypt_pfx_v{fam}_pool",
                  f"cryptopan_v{fam}", f"ipcrypt_pfx_v{fam}_decrypt"):
            assert isinstance(fig[k], (int, float)) and fig[k] > 0, k
    for k in ("hmac_pyca_copy", "hmac_stdlib_digest", "hmac_stdlib_copy"):
        assert fig[k] > 0
    assert fig["smoke"] is True and fig["batch"] == 64
    assert set(fig["targets_met"]) == {"ipcrypt_pfx_200k", "ipcrypt_det_1M", "hmac_1M"}
