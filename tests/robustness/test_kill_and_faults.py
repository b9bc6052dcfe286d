"""The suite's runs of the kill test and the broker-fault script, at smoke size.

``benchmarks/kill_test.py --smoke`` SIGKILLs the worker 5 times under load on the session broker;
``benchmarks/broker_faults.py --smoke`` stops a broker of its own for 8 s under load.  Both
print one JSON line of figures; here every figure that says "nothing lost" must hold.  The full
runs (20+ kills, 30 s outage, 3-node cluster) are the scripts' defaults; their figures are in
docs/robustness.md ("Figures")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _run(script: str, *args: str, timeout: float) -> dict:
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                       timeout=timeout, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1, p.stdout[-2000:]
    return json.loads(lines[0])


def test_kill_smoke_loses_nothing_and_dedup_is_exact(bootstrap):
    fig = _run("kill_test.py", "--smoke", "--bootstrap", bootstrap, timeout=1500)
    for k in ("kills", "kills_survived", "restarts", "fed", "found", "lost", "stats_records", "stats_distinct_ids",
              "duplicates_before_dedup", "duplicates_after_dedup", "missing_after_dedup", "deadletters", "ok"):
        assert k in fig, k
    assert fig["smoke"] is True and fig["kills"] == fig["kills_survived"] == 5 and fig["restarts"] == 6
    assert fig["fed"] > 0 and fig["found"] == fig["fed"] and fig["lost"] == 0
    assert fig["wrong_holder"] == 0 and fig["multi_holder"] == 0  # exactly one holder per address
    assert fig["stats_distinct_ids"] == fig["fed"] and fig["missing_after_dedup"] == 0
    assert fig["stats_records"] == fig["fed"] + fig["duplicates_before_dedup"]
    assert fig["unexpected_ids"] == 0 and fig["missing_ids"] == 0  # the ids are the reference ones
    assert fig["deadletters"] == 0 and fig["ok"] is True


def test_broker_outage_smoke_loses_nothing_and_the_worker_resumes():
    fig = _run("broker_faults.py", "--smoke", timeout=1500)
    assert fig["smoke"] is True and fig["scenario"] == "single" and fig["down_s"] >= 8
    assert fig["worker_alive_after_fault"] is True
    assert fig["fed"] > fig["fed_when_broker_back"] > 0  # records went in before and after the outage
    assert fig["found"] == fig["fed"] and fig["lost"] == 0
    assert fig["stats_distinct_ids"] == fig["fed"] and fig["deadletters"] == 0 and fig["ok"] is True
