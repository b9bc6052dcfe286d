"""Smoke runs of bench_state / bench_memory with ``--store disk`` (tiny sizes): each
prints one JSON line whose figures agree with what it fed in.  No timing is asserted.  The worker
itself on the store: tests/e2e/test_bench_disk_worker_smoke.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import bench_json

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_bench_memory_disk_smoke(tmp_path):
    fig = bench_json(str(BENCH / "bench_memory.py"), "--store", "disk", "--smoke", "--dir", str(tmp_path))
    assert fig["bench"] == "memory" and fig["store"] == "disk" and fig["smoke"] is True
    (size,) = fig["sizes"]
    # the restarted process found every mapping: the checkpoints and a walk opening every value
    assert size["mappings"] == size["walked_keys"] == 20_000
    # key + sealed value of the worker's sizes are on disk (compression off), with the schedule entry
    assert size["disk_bytes_per_mapping"] > 100
    assert 0 < size["rss_before_open_mb"] <= size["rss_walk_mb"]
    for k in ("rocksdb_open", "rocksdb_walk", "writer_rocksdb_written"):
        assert set(size[k]) == {"memtables_mb", "table_readers_mb", "block_cache_mb"}, k
    assert size["writer_rocksdb_written"]["memtables_mb"] > 0  # the writes are in the memtables before the tick
    assert list(tmp_path.iterdir()) == []  # the work directory is removed


@pytest.mark.broker
@pytest.mark.slow
def test_bench_state_disk_smoke(broker, tmp_path):
    fig = bench_json(str(BENCH / "bench_state.py"), "--store", "disk", "--smoke", "--bootstrap", broker.bootstrap,
               "--broker-dir", str(broker.dir), "--dir", str(tmp_path))
    assert fig["bench"] == "state" and fig["store"] == "disk"
    (size,) = fig["sizes"]
    # the bench itself refuses a restore or restart that did not read every record to the end;
    # here: the restart read exactly the tail written after the restore's checkpoints
    assert size["mappings"] == 2000 and size["restart_tail_records"] == 20
    assert size["value_encoding"] == "sealed"
    assert size["store_bytes_per_mapping"] > size["payload_bytes_per_mapping"] > 20
    assert size["changelog_bytes_per_mapping"] >= size["payload_bytes_per_mapping"]
    assert size["gets"] == 2000 and size["get_p50_us"] <= size["get_p99_us"]
    assert 0 < size["restart_rss_start_mb"] <= size["restart_rss_mb"]
    assert size["restore_per_s"] > 0 and size["restart_s"] > 0
