"""The pseudonym benchmark runs and prints one JSON line with every figure (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pseudonym.py"


def test_bench_pseudonym_smoke():
    p = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    fig = json.loads(lines[0])
    for fam in (4, 6):
        for k in (f"ipcrypt_det_v{fam}", f"ipcrypt_pfx_v{fam}_random", f"ipcrypt_pfx_v{fam}_pool",
                  f"cryptopan_v{fam}", f"ipcrypt_pfx_v{fam}_decrypt"):
            assert isinstance(fig[k], (int, float)) and fig[k] > 0, k
    for k in ("hmac_pyca_copy", "hmac_stdlib_digest", "hmac_stdlib_copy"):
        assert fig[k] > 0
    assert fig["smoke"] is True and fig["batch"] == 64
    assert set(fig["targets_met"]) == {"ipcrypt_pfx_200k", "ipcrypt_det_1M", "hmac_1M"}
