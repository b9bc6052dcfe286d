"""agents.disk_store: the mapping table on RocksDB — round trip, batch atomicity with the
checkpoint, reopen without rebuild, the 0700 directory, and erasure on disk within the bound
(every file under the data directory scanned for each deleted value's bytes)."""

from __future__ import annotations

import os
import secrets
import stat

import pytest

from agents.disk_store import DiskStore
from stream import disk_bound as dbound
from stream.errors import ConfigError

BOUND = dbound.DiskBound(cycle_ms=1_000, tick_ms=100, compaction_allowance_ms=60_000)


def key(i: int) -> bytes:
    return b"junet|i" + i.to_bytes(16, "big")


def value(marker: bytes) -> bytes:
    """An 89-byte value (the worker's sealed size) carrying a unique 32-byte marker."""
    return (marker + secrets.token_bytes(89))[:89]


def open_store(path, **kw):
    return DiskStore(path, bound=BOUND, width_ms=1_000, **kw)


def files_with(path, markers: list[bytes]) -> dict[bytes, list[str]]:
    """Each marker → the files (any file under ``path``: SST, .log WAL, MANIFEST, OPTIONS, LOG…)
    that contain its bytes."""
    blobs = {}
    for root, _, names in os.walk(path):
        for n in names:
            fp = os.path.join(root, n)
            with open(fp, "rb") as f:
                blobs[os.path.relpath(fp, path)] = f.read()
    return {m: [n for n, b in blobs.items() if m in b] for m in markers}


def test_round_trip_and_partition_keys(tmp_path):
    with open_store(tmp_path / "s") as s:
        s.put_batch(0, [(key(i), b"v%d" % i) for i in range(100)])
        s.put_batch(1, [(key(1000), b"other")])
        assert s.get(0, key(7)) == b"v7"
        assert s.get(1, key(7)) is None
        assert s.get(2, key(7)) is None  # a partition never held
        assert s.get_many(0, [key(1), key(500)]) == [b"v1", None]
        assert s.keys(0) == [key(i) for i in range(100)]
        assert s.keys(1) == [key(1000)]
        for chunk in (1, 7, 100, 1_000):
            assert list(s.iter_keys(0, chunk)) == [key(i) for i in range(100)]
        assert list(s.iter_keys(3)) == []
        # one operator's keys (a NAS reset walks only its own), across chunk edges
        others = [b"lek|i" + i.to_bytes(16, "big") for i in range(30)] + [b"zz|k"]
        s.put_batch(0, [(k, b"o") for k in others])
        for chunk in (1, 7, 100):
            assert list(s.iter_keys(0, chunk, prefix=b"junet|")) == [key(i) for i in range(100)]
            assert list(s.iter_keys(0, chunk, prefix=b"lek|")) == others[:30]
        assert list(s.iter_keys(0, prefix=b"nobody|")) == [] and list(s.iter_keys(0, prefix=b"zz|")) == [b"zz|k"]
        s.delete(0, others)
        s.delete(0, [key(i) for i in range(50)])
        assert s.keys(0) == [key(i) for i in range(50, 100)]
        assert s.partitions() == {0, 1}


def test_checkpoint_lands_in_the_same_batch_as_the_data(tmp_path):
    with open_store(tmp_path / "s") as s:
        assert s.checkpoint(0) is None
        s.put_batch(0, [(key(1), b"a")], next_offset=11)
        assert s.checkpoint(0) == 11
        b = s.batch().put(0, key(2), b"b").checkpoint(0, 12)
        assert s.get(0, key(2)) is None and s.checkpoint(0) == 11  # nothing before write()
        s.write(b)
        assert s.get(0, key(2)) == b"b" and s.checkpoint(0) == 12
        s.delete(0, [key(1)], next_offset=13)
        assert s.get(0, key(1)) is None and s.checkpoint(0) == 13


_WRITER = """
import sys
from agents.disk_store import DiskStore
from stream.disk_bound import DiskBound
s = DiskStore(sys.argv[1], bound=DiskBound(cycle_ms=1_000, tick_ms=100, compaction_allowance_ms=1_000))
j = 0
while True:
    b = s.batch()
    for p in (0, 1):
        b.put_many(p, [(b"junet|i" + i.to_bytes(16, "big"), b"v" * 89) for i in range(j * 50, j * 50 + 50)])
        b.checkpoint(p, j + 1)
    s.write(b)
    j += 1
    if j == 20:
        print("ready", flush=True)
"""


def test_sigkill_leaves_data_and_checkpoint_of_the_same_batches(tmp_path):
    """A writer killed mid-stream (no flush, no close: the batches are only in the WAL) leaves a
    store whose data is exactly what its checkpoint says: every batch up to it, nothing after."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    path = tmp_path / "s"
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], cwd=repo, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with open_store(path) as s:
        cp = s.checkpoint(0)
        assert cp is not None and cp >= 20
        assert s.checkpoint(1) == cp
        for p in (0, 1):
            assert s.keys(p) == [key(i) for i in range(cp * 50)]


def test_reopen_keeps_data_checkpoint_and_schedule(tmp_path):
    path = tmp_path / "s"
    with open_store(path) as s:
        b = s.batch()
        for i in range(10):
            b.put(i % 2, key(i), b"v%d" % i).schedule(i % 2, 5_000 + i * 1_000, key(i))
        b.checkpoint(0, 40).checkpoint(1, 41)
        s.write(b)
    with open_store(path) as s:  # nothing is rebuilt: the schedule is read as it was written
        assert s.partitions() == {0, 1}
        assert [s.get(i % 2, key(i)) for i in range(10)] == [b"v%d" % i for i in range(10)]
        assert (s.checkpoint(0), s.checkpoint(1)) == (40, 41)
        assert s.due(4_999) == []
        assert s.due(5_000) == [(0, 5, key(0))]
        due = s.due(7_500)
        assert sorted(due) == [(0, 5, key(0)), (0, 7, key(2)), (1, 6, key(1))]
        # the sweeper's write removes the entries it handled, atomically with its result
        b = s.batch()
        for p, bucket, k in due:
            b.delete(p, k).unschedule(p, bucket, k)
        s.write(b)
        assert s.due(7_500) == []
    with open_store(path) as s:
        assert s.due(7_500) == []
        assert [k for _, _, k in s.due(20_000)] == [key(4), key(6), key(8), key(3), key(5), key(7), key(9)]


def test_due_is_never_early_and_honours_limit_and_never(tmp_path):
    with open_store(tmp_path / "s") as s:
        s.schedule(0, 1_001, key(1))  # bucket 2: due at 2 000, not at 1 001
        s.schedule(0, None, key(2))  # never
        s.schedule(0, 0, key(3))  # at the next due
        assert s.due(1_999) == [(0, 0, key(3))]
        assert s.due(2_000) == [(0, 0, key(3)), (0, 2, key(1))]
        assert s.due(2_000, limit=1) == [(0, 0, key(3))]


def test_new_directory_is_0700_and_an_open_one_is_refused(tmp_path):
    old = os.umask(0o022)
    try:
        with open_store(tmp_path / "new" / "s"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "s").stat().st_mode) == 0o700
    for mode in (0o750, 0o705, 0o770):
        d = tmp_path / f"open{mode:o}"
        d.mkdir()
        os.chmod(d, mode)
        with pytest.raises(ConfigError, match="chmod 700"):
            open_store(d)
        assert not (d / "CURRENT").exists()  # refused before RocksDB wrote anything
    f = tmp_path / "file"
    f.write_bytes(b"")
    with pytest.raises(ConfigError, match="not a directory"):
        open_store(f)


def test_deleted_values_leave_every_file_after_the_erasure_tick(tmp_path):
    path = tmp_path / "s"
    n = 300
    markers = {i: b"MARK" + secrets.token_hex(14).encode() for i in range(n)}
    gone = [i for i in range(n) if i % 3 != 0]  # two thirds are deleted, one third stays
    kept = [i for i in range(n) if i % 3 == 0]
    with open_store(path) as s:
        # three partitions; values reach SSTs (flushed), some also overwritten once
        for p in range(3):
            s.put_batch(p, [(key(i), value(markers[i])) for i in range(n) if i % 3 == p or i % 3 == 0 and p == 0])
        s.erase_tick(0)
        assert all(files_with(path, list(markers.values())).values()), "the scan must see every value first"
        # expiry through the on-disk schedule: the sweeper's deletes go with the unschedule
        b = s.batch()
        for i in gone:
            b.schedule(i % 3, 10_000, key(i))
        s.write(b)
        due = s.due(10_000)
        assert sorted(k for _, _, k in due) == sorted(key(i) for i in gone)
        b = s.batch()
        for p, bucket, k in due:
            b.delete(p, k).unschedule(p, bucket, k)
        s.write(b)
        assert all(s.get(i % 3, key(i)) is None for i in gone)
        # deleted but still on disk: this is what the mechanism is for
        found = files_with(path, [markers[i] for i in gone])
        assert all(found.values())
        assert any(f.endswith(".sst") for fs in found.values() for f in fs)
        # a value written and deleted between two ticks lives only in the WAL (and memtable)
        wal_marker = b"WALONLY" + secrets.token_hex(12).encode()
        s.put_batch(1, [(key(9_999), value(wal_marker))])
        s.delete(1, [key(9_999)])
        assert any(f.endswith(".log") for f in files_with(path, [wal_marker])[wal_marker])

        tick = s.erase_tick(10_000 + BOUND.cycle_ms)
        assert sorted(tick["compacted"]) == [0, 1, 2]
        after = files_with(path, [markers[i] for i in gone] + [wal_marker])
        assert {m: fs for m, fs in after.items() if fs} == {}
        # the scan still finds what is live, so its silence above means something
        assert all(files_with(path, [markers[i] for i in kept]).values())
        assert [s.get(i % 3, key(i)) is not None for i in kept] == [True] * len(kept)
    # and nothing comes back on reopen (nothing kept a copy to recover from)
    with open_store(path) as s:
        assert all(s.get(i % 3, key(i)) is None for i in gone)
        assert not any(files_with(path, [markers[i] for i in gone]).values())


def test_no_compaction_before_the_cycle_ends(tmp_path):
    with open_store(tmp_path / "s") as s:
        s.put_batch(0, [(key(1), b"x")])
        assert s.erase_tick(0)["compacted"] == [0]
        assert s.erase_tick(BOUND.cycle_ms - 1)["compacted"] == []
        assert s.erase_tick(BOUND.cycle_ms)["compacted"] == [0]


def test_dropped_partition_leaves_every_file(tmp_path):
    path = tmp_path / "s"
    marker = b"DROPPED" + secrets.token_hex(12).encode()
    keep = b"KEPT" + secrets.token_hex(12).encode()
    with open_store(path) as s:
        s.put_batch(4, [(key(1), value(marker))], next_offset=9)
        s.put_batch(5, [(key(2), value(keep))])
        s.erase_tick(0)
        assert files_with(path, [marker])[marker]
        s.drop_partition(4)
        s.flush()  # the WAL of the drop itself
        assert s.partitions() == {5}
        assert s.get(4, key(1)) is None and s.checkpoint(4) is None
        assert files_with(path, [marker]) == {marker: []}
        assert files_with(path, [keep])[keep]
    with open_store(path) as s:
        assert s.partitions() == {5}


def test_deleted_keys_leave_every_file_after_the_erasure_tick(tmp_path):
    """Keys too (keyed hashes, but still a trace that an address had a mapping): after the
    compaction, the tick's reopen rolls the MANIFEST, which names the first and last key of every
    SST file ever written."""
    path = tmp_path / "s"
    ids = [secrets.token_bytes(16) for _ in range(400)]
    with open_store(path) as s:
        b = s.batch()
        for i, kid in enumerate(ids):
            b.put(0, b"junet|i" + kid, value(b"V%d" % i)).schedule(0, 5_000 if i % 2 else 10**12, b"junet|i" + kid)
        s.write(b)
        s.erase_tick(0)
        gone, kept = ids[1::2], ids[0::2]
        b = s.batch()
        for p, bucket, k in s.due(5_000):
            b.delete(p, k).unschedule(p, bucket, k)
        s.write(b)
        assert s.get(0, b"junet|i" + gone[0]) is None
        before = files_with(path, gone)
        assert sum(1 for fs in before.values() if fs) > len(gone) // 2
        assert any("MANIFEST" in f for fs in before.values() for f in fs)
        s.erase_tick(BOUND.cycle_ms)
        assert {m: fs for m, fs in files_with(path, gone).items() if fs} == {}
        assert sum(1 for fs in files_with(path, kept).values() if fs) > len(kept) // 2
        assert s.get(0, b"junet|i" + kept[0]) is not None


def test_bound_holds_on_a_ticking_clock(tmp_path):
    """Ticks every ``tick_ms`` on a simulated clock: a value deleted just after its partition's
    compaction started is still on disk until the next cycle's tick, and gone by t + B_disk."""
    path = tmp_path / "s"
    marker = b"CLOCK" + secrets.token_hex(12).encode()
    with open_store(path) as s:
        s.put_batch(0, [(key(1), value(marker)), (key(2), value(b"LIVE" + secrets.token_hex(12).encode()))])
        assert s.erase_tick(1_000)["compacted"] == [0]  # compaction of partition 0 starts at 1 000
        t_delete = 1_050
        s.delete(0, [key(1)])
        seen_at = []
        now = 1_100
        while now <= t_delete + BOUND.bound_ms:
            tick = s.erase_tick(now)
            if files_with(path, [marker])[marker]:
                seen_at.append(now)
            else:
                break
            now += BOUND.tick_ms
        # on disk through every tick of the cycle, gone at the first tick of the next one
        assert seen_at == list(range(1_100, 2_000, BOUND.tick_ms))
        assert now == 2_000 and tick["compacted"] == [0]
        assert now <= t_delete + BOUND.bound_ms


def test_a_store_that_cannot_be_opened_is_one_clear_config_error(tmp_path):
    """A damaged store (here: its MANIFEST gone) or one another process holds: a ConfigError of
    one line naming the directory and what to do, not RocksDB's traceback."""
    path = tmp_path / "s"
    with open_store(path) as s:
        s.put_batch(0, [(key(1), b"v")], next_offset=1)
        s.flush()
        with pytest.raises(ConfigError, match="cannot be opened") as held:
            open_store(path)  # the first one still holds the LOCK
        assert "\n" not in str(held.value)
    for f in path.glob("MANIFEST-*"):
        f.unlink()
    with pytest.raises(ConfigError, match="cannot be opened.*restores the table from the changelog") as e:
        open_store(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_the_last_compaction_survives_a_reopen(tmp_path):
    """A restarted worker does not rewrite its whole store at its first tick: each partition's
    last forced compaction start is kept, so it is next due one cycle after it, as without the
    restart.  A partition never compacted is due at once."""
    path = tmp_path / "s"
    with open_store(path) as s:
        s.put_batch(0, [(key(1), b"v")], next_offset=1)
        assert s.erase_tick(10_000)["compacted"] == [0]
        s.put_batch(1, [(key(2), b"v")], next_offset=1)
    with open_store(path) as s:
        assert s.last_compacted == {0: 10_000}
        assert s.erase_tick(10_500)["compacted"] == [1]  # never compacted: at once
        assert s.erase_tick(10_999)["compacted"] == []
        assert s.erase_tick(11_000)["compacted"] == [0]  # one cycle (1 s) after its last start
        s.drop_partition(0)
    with open_store(path) as s:
        assert s.last_compacted == {1: 10_500}


def test_index_and_filter_blocks_live_in_the_bounded_block_cache(tmp_path):
    """RSS must not grow with the table: RocksDB's index and filter blocks are held in
    the block cache (capped), not beside it in the table readers, where they took ≈ 3.3 B per
    key (≈ 170 MB at 50M mappings).  Every key still reads back after the reopen."""
    n = 50_000
    s = open_store(tmp_path / "s")
    keys = [key(i) for i in range(n)]
    b = s.batch()
    for k in keys:
        b.put(0, k, secrets.token_bytes(89))
        b.schedule(0, 10**12, k)
    s.write(b)
    s.erase_tick(0)  # flush + forced compaction: the keys are in SST files
    s.reopen()
    readers = sum(s._cf[name].property_int_value("rocksdb.estimate-table-readers-mem") or 0 for name in ("d0", "s0"))
    assert readers < 0.5 * n, f"table readers hold {readers / n:.2f} B per key outside the block cache"
    assert all(v is not None for v in s.get_many(0, keys[::97]))
    s.close()


def test_flush_and_compaction_give_the_freed_memory_back(tmp_path, monkeypatch):
    """A fresh restore's RSS must not keep what RocksDB freed: every flush (each
    erasure tick) and a tick's forced compactions end with glibc's ``malloc_trim(0)``, which
    hands the free pages of every malloc arena back to the kernel.  Without it the flushed
    memtables and the compactions' buffers stayed in the worker's RSS after a fresh restore
    (docs/benchmarks.md "Fresh restore: the freed memtables")."""
    import platform

    import agents.disk_store as ds

    if platform.libc_ver()[0] == "glibc":
        assert ds._MALLOC_TRIM is not None  # found on this platform: the call below is the real one
    calls = []
    monkeypatch.setattr(ds, "_MALLOC_TRIM", lambda pad: calls.append(pad) or 1)
    with open_store(tmp_path / "s") as s:
        s.put_batch(0, [(key(i), b"v") for i in range(1_000)], next_offset=1)
        s.flush()
        assert calls == [0]
        calls.clear()
        assert s.erase_tick(10_000)["compacted"] == [0]
        assert calls == [0, 0]  # after the tick's flush, and after its compactions
        calls.clear()
        assert s.erase_tick(10_001)["compacted"] == []
        assert calls == [0]  # the flush only


def test_opening_the_store_limits_the_malloc_arenas(tmp_path, monkeypatch):
    """RocksDB's flush and compaction threads and the erasure tick's thread must share one malloc
    arena instead of an arena each, or RSS grows with the table: opening the store
    calls glibc's ``mallopt(M_ARENA_MAX, 2)`` before RocksDB starts its threads — unless the
    operator set ``MALLOC_ARENA_MAX``, which wins (docs/benchmarks.md "RSS from 1M to 50M")."""
    import platform

    import agents.disk_store as ds

    if platform.libc_ver()[0] == "glibc":
        assert ds._MALLOPT is not None  # found on this platform: the call below is the real one
    calls = []
    monkeypatch.setattr(ds, "_MALLOPT", lambda param, value: calls.append((param, value)) or 1)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    with open_store(tmp_path / "a"):
        assert calls == [(-8, 2)]  # M_ARENA_MAX (glibc's malloc.h), two arenas
    calls.clear()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    with open_store(tmp_path / "b"):
        assert calls == []  # the operator's setting is left alone
