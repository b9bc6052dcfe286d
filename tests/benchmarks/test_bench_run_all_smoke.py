"""Smoke runs of the benchmarks ``run_all.py`` names first (intervals, e2e, state), of
``profile_summary.py`` and of ``run_all.py`` itself (tiny sizes): each prints one JSON line with
its keys.

No timing is asserted — only that every benchmark runs end to end and that the figures it
reports are consistent with what it fed in (counts, completeness, matched records)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import bench_json

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_bench_intervals_smoke():
    fig = bench_json(str(BENCH / "bench_intervals.py"), "--smoke")
    assert fig["bench"] == "intervals" and fig["smoke"] is True and fig["skipped"] == []
    (size,) = fig["sizes"]
    assert size["mappings"] == 2000
    for k in ("update_ops", "insert_ops", "lookup_ops", "mem_bytes_per_mapping", "fill_s", "rss_mb"):
        assert isinstance(size[k], (int, float)) and size[k] >= 0, k
    assert size["update_ops"] > 0 and size["lookup_ops"] > 0
    assert {"cores", "load1", "python"} <= set(fig["machine"])


@pytest.mark.broker
@pytest.mark.slow
def test_bench_e2e_smoke(bootstrap):
    # generous: on a fresh broker of a machine at load ~30 the worker needed minutes for 300 events
    fig = bench_json(str(BENCH / "bench_e2e.py"), "--smoke", "--bootstrap", bootstrap, "--timeout", "600",
               "--workers", "2", "--partitions", "8", timeout=1800)
    assert fig["bench"] == "e2e" and fig["events"] == 300 and fig["partitions"] == 8
    # every raw event became its stats record (one binding each), and the table took them all
    assert fig["worker_complete"] is True, fig.get("worker_log_tail")
    assert fig["worker_stats_records"] == 300 and fig["worker_table_done"] is True
    assert fig["passthrough_events"] == 300
    assert fig["latency_events"] == 100
    assert fig["latency_p50_ms"] <= fig["latency_p99_ms"]
    for k in ("worker_eps", "passthrough_eps", "ratio", "worker_cpu_s", "worker_rss_mb", "targets_met", "machine",
              "passthrough_events_per_cpu_s", "load1_start"):
        assert k in fig, k
    assert fig["worker_eps"] > 0 and fig["passthrough_eps"] > 0 and fig["worker_cpu_s"] > 0
    r = fig["ratios"]
    assert r["ipanon_over_passthrough"] == fig["ratio"]
    assert r["ipanon_over_passthrough"] == pytest.approx(fig["worker_eps"] / fig["passthrough_eps"], rel=0.01)

    # the Quix Streams peer: the same 300 events, one record each, its state's changelog written
    peer = fig["peer"]
    if importlib.util.find_spec("quixstreams") is None:
        assert peer == {"skipped": "quixstreams not installed: pip install -e .[bench]"}
        assert r["ipanon_over_peer"] is None
    else:
        assert peer["complete"] is True, peer.get("log_tail")
        assert peer["events"] == peer["expected"] == 300
        assert peer["state_committed"] is True and peer["repartition_topics"] == peer["changelog_topics"] == 3
        assert peer["changelog_records"] > 0  # the store's changelog is on
        assert peer["cpu_s"] > 0 and peer["eps"] > 0
        assert r["ipanon_over_peer"] == pytest.approx(fig["worker_eps"] / peer["eps"], rel=0.01)
        assert r["ipanon_over_peer_per_cpu_s"] == pytest.approx(
            fig["worker_events_per_cpu_s"] / peer["events_per_cpu_s"], rel=0.01)

    # two worker processes of a fresh deployment on the same backlog
    sc = fig["scale"]
    assert sc["workers"] == 2 and sc["partitions"] == 8
    assert sc["complete"] is True and sc["table_done"] is True, sc.get("worker_log_tail")
    assert sc["stats_records"] == 300 and sc["cpu_s"] > 0
    assert r["workers_2_over_1"] == pytest.approx(sc["eps"] / fig["worker_eps"], rel=0.01)


@pytest.mark.broker
@pytest.mark.slow
def test_bench_state_smoke(broker):
    fig = bench_json(str(BENCH / "bench_state.py"), "--smoke", "--bootstrap", broker.bootstrap,
               "--broker-dir", str(broker.dir))
    assert fig["bench"] == "state"
    (size,) = fig["sizes"]
    # the fresh worker restored every mapping written to its changelog
    assert size["mappings"] == 2000 and size["restored_keys"] == 2000 and size["direct_restored_keys"] == 2000
    assert size["disk_bytes_per_mapping"] >= size["payload_bytes_per_mapping"] > 20
    assert size["restore_s"] >= 0 and size["rss_mb"] > 0 and fig["rss_empty_mb"] > 0


def test_profile_summary(tmp_path):
    prof = tmp_path / "p.txt"
    prof.write_text("main (agents/cli.py:1);run (stream/intervals.py:10);dumps (json/encoder.py:5) 3\n"
                    "main (agents/cli.py:1);select (selectors.py:2) 1\n")
    fig = bench_json(str(BENCH / "profile_summary.py"), str(prof))
    assert fig["samples"] == 4
    assert dict(map(tuple, fig["self_pct"])) == {"dumps (json/encoder.py)": 75.0, "select (selectors.py)": 25.0}
    assert dict(map(tuple, fig["inclusive_pct"]))["main (agents/cli.py)"] == 100.0
    assert fig["area_self_pct"] == {"json": 75.0, "asyncio": 25.0}


@pytest.mark.broker
def test_run_all_collects_lines(bootstrap, tmp_path):
    out = tmp_path / "latest.jsonl"
    p = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--smoke", "--only", "intervals",
                        "--bootstrap", bootstrap, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["bench"] for r in rows] == ["run", "intervals"]
    assert rows[0]["smoke"] is True and "machine" in rows[0] and "commit" in rows[0]
    assert rows[1]["exit"] == 0 and rows[1]["sizes"][0]["mappings"] == 2000
