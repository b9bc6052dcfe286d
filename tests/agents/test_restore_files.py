"""The adversary's file checks of a fresh restore into the disk store: the real
``MappingTable`` and ``DiskStore`` restoring a changelog of the real local broker
(``test_restore_model``'s changelog: overwrites, tombstones, re-puts, duplicates).

- Nothing the restore writes is readable by group or others, even under umask 022 (the data
  directory is 0700, docs/security.md: "Files ipanon writes are created 0600").
- A restore leaves no file outside the data directory (a bulk load staging SST files in the temp
  directory, say): the temp directory stays empty, and no file made in /tmp, /var/tmp or /dev/shm
  during the restore holds a byte of the changelog's values.
- Inside it, only RocksDB's own files; and after the first erasure tick, no file under it holds a
  value the changelog deleted or overwrote (a tombstone lost in a bulk load, a staging file left
  behind, an ingested file the forced compaction did not rewrite), while every live value is found
  (the scan would see them).
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import tempfile
import time
from pathlib import Path

import pytest

from tests.agents.test_restore_model import MINE, REPO, bulk_from_the_first_record, model, restore, setup  # noqa: F401

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: names RocksDB gives the files of a DB directory (rocksdict adds its config file)
ROCKSDB_FILE = re.compile(r"^(\d{6,}\.(sst|log|blob)|MANIFEST-\d{6,}|OPTIONS-\d{6,}|CURRENT|IDENTITY|LOCK|LOG"
                          r"|LOG\.old\.\d+|rocksdict-config\.json)$")


def values_found(path: Path, mark: bytes) -> set[bytes]:
    """The 24 random bytes after each occurrence of ``mark`` in the file."""
    try:
        data = path.read_bytes()
    except OSError:
        return set()
    return set(re.findall(re.escape(mark) + b"(.{24})", data, re.S))


def tail(v: bytes, mark: bytes) -> bytes:
    return v.split(mark, 1)[1]


def test_a_fresh_restore_leaves_no_file_readable_by_group_or_others(bootstrap, tmp_path):
    old = os.umask(0o022)  # a common default: what an operator's shell or unit gives the worker
    try:
        app_id, table, topic, recs, mark = setup(bootstrap, tmp_path, seed=1801)
        asyncio.run(restore(table, topic))
        assert table.restored
        table.disk.flush()
        asyncio.run(table.erase_tick(10**12))
        state = tmp_path / "state"
        opened = []
        for root, dirs, files in os.walk(state):
            for name in dirs + files:
                f = Path(root) / name
                mode = stat.S_IMODE(f.lstat().st_mode)
                if mode & 0o077:
                    opened.append(f"{f.relative_to(state)} {mode:04o}")
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert opened == [], f"group/other bits on {len(opened)} entries: {opened[:12]}"
    finally:
        os.umask(old)


def _new_files(roots, since: float, skip: list[Path]):
    skip = {str(s) for s in skip}
    for root in roots:
        for dirpath, dirs, files in os.walk(root, onerror=lambda e: None):
            d = Path(dirpath)
            dirs[:] = [x for x in dirs if str(d / x) not in skip]  # pruned before they are listed
            for name in files:
                f = d / name
                try:
                    st = f.lstat()
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_mtime >= since and st.st_size < 256 * 2**20:
                    yield f


def test_a_fresh_restore_writes_nothing_outside_its_directory_and_erases_what_the_changelog_deleted(
        bootstrap, tmp_path, tmp_path_factory, monkeypatch):
    private_tmp = tmp_path / "tmpdir"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    app_id, table, topic, recs, mark = setup(bootstrap, tmp_path, seed=1802)
    t0 = time.time() - 1
    # the memtables flushed before each batch, as at scale (a 16 MB write buffer holds ≈ 100k
    # records): a deleted value then sits in an older SST file, which only a compaction rewrites
    import aiokafka

    real = aiokafka.AIOKafkaConsumer.getmany

    async def getmany(self, *a, **kw):
        table.disk.flush()
        return await real(self, *a, **kw)

    monkeypatch.setattr(aiokafka.AIOKafkaConsumer, "getmany", getmany)
    asyncio.run(restore(table, topic))
    monkeypatch.setattr(aiokafka.AIOKafkaConsumer, "getmany", real)
    assert table.restored
    info = asyncio.run(table.erase_tick(10**12))
    assert sorted(info["compacted"]) == MINE

    # nothing in the temp directory, nothing with the values anywhere else in the temp places
    assert list(private_tmp.iterdir()) == []
    # this run's basetemp (its broker holds the changelog); the clone's parent (the suite's path
    # guard refuses any read beside the clone)
    skip = [Path(tmp_path_factory.getbasetemp()).resolve(), REPO.parent]  # path-guard
    leaked = [str(f) for f in _new_files(["/tmp", "/var/tmp", "/dev/shm"], t0, skip) if values_found(f, mark)]
    assert leaked == [], f"files outside the data directory hold the restored values: {leaked}"

    # inside it: RocksDB's files only, no deleted or overwritten value, every live value
    state = tmp_path / "state"
    strays = [str(f.relative_to(state)) for f in state.rglob("*")
              if f.is_dir() or f.parent != state or not ROCKSDB_FILE.match(f.name)]
    assert strays == [], f"files in the data directory that are not RocksDB's: {strays}"
    want = model(recs, MINE)
    live = {tail(v, mark) for v, _ in want.values()}
    ever = {tail(v, mark) for p, k, v, _ in recs if v is not None and p in MINE}
    dead = ever - live
    assert len(dead) > 10_000
    found: dict[bytes, list[str]] = {}
    for f in state.iterdir():
        for t in values_found(f, mark):
            found.setdefault(t, []).append(f.name)
    lingering = {t: fs for t, fs in found.items() if t in dead}
    assert not lingering, f"{len(lingering)} deleted or overwritten values still on disk, e.g. {list(lingering.items())[:3]}"
    assert live <= set(found), f"{len(live - set(found))} live values not found: the scan cannot see the files"
