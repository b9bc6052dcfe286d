"""agents.disk_walk: the compliance walk over the on-disk table gives what the memory walk gives
over the same values, keeps its summaries in the store (a second walk opens nothing), re-opens
a changed value, and a deleted key's summary goes with it."""

from __future__ import annotations

from types import SimpleNamespace

from agents.disk_store import DiskStore
from stream import intervals as iv
from stream.disk_bound import DiskBound
from tests.agents.test_metrics import H, _pipeline, ivl, metrics_of

BOUND = DiskBound(cycle_ms=60_000, tick_ms=1_000, compaction_allowance_ms=60_000)


def items():
    out = []
    for i in range(700):
        k = b"connect2ip|ip|k%04d" % i
        if i % 5 == 0:
            v = iv.encode((ivl(0, (80 + i % 20) * H), ivl(90 * H, None, last=99 * H)))
        else:
            v = iv.encode((ivl(0, (70 + i % 30) * H),))
        out.append((k, v))
    out.append((b"connect2ip|ip|bad", b"garbage"))
    return out


def disk_pipeline(tmp_path, its):
    p = _pipeline([])
    st = DiskStore(tmp_path / "s", bound=BOUND)
    b = st.batch()
    for i, (k, v) in enumerate(its):
        b.put(i % 2, k, v)
    st.write(b)
    pending: dict = {}
    p.table = SimpleNamespace(disk=st, active={0, 1}, epoch=0, pending_writes=lambda: pending,
                              store_failed=lambda e: None, pending=pending)
    return p, st


def result(m, now):
    for _ in m.compliance.walk(now):
        pass
    return m.compliance._scan[2], m.compliance.scan_errors, m.compliance.scan_pending


def test_disk_walk_matches_the_memory_walk_and_keeps_its_summaries_in_the_store(tmp_path):
    its = items()
    now = 100 * H
    mem = metrics_of(_pipeline(its))
    want = result(mem, now)
    assert want[0]["connect2ip"].keys == 700 and want[1] == 1

    p, st = disk_pipeline(tmp_path, its)
    m = metrics_of(p)
    assert result(m, now) == want
    stored = st.get_summaries(0, [k for k, _ in its[:10:2]])
    assert all(s is not None for s in stored)  # kept in the store's m<p> family

    # a second walk opens nothing: every summary matches its value's digest (the unreadable
    # value has none: with no budget it is pending, as in the memory walk)
    m.compliance.open_budget = 0
    assert result(m, now) == (want[0], 0, 1)

    # a changed value is opened again (the old summary's digest no longer matches)
    k0, _ = its[0]
    b = st.batch().put(0, k0, iv.encode((ivl(0, 50 * H),)))
    st.write(b)
    assert result(m, now)[2] == 2  # pending: no budget left to open it
    m.compliance.open_budget = 10
    got = result(m, now)
    assert got[1:] == (1, 0) and got[0]["connect2ip"].oldest_end_ms == 50 * H

    # a pending (unacknowledged) delete hides the key; a stored delete takes its summary with it
    p.table.pending[its[2][0]] = (1, 0, None)
    assert result(m, now)[0]["connect2ip"].keys == 699
    st.write(st.batch().delete(0, its[2][0]))
    assert st.get_summaries(0, [its[2][0]]) == [None]
    # a partition not held here any more is not walked, and never re-created by a walk
    p.table.active = {0}
    st.drop_partition(1)
    assert result(m, now)[0]["connect2ip"].keys == 349
    assert st.partitions() == {0}
    st.close()


def test_a_damaged_block_met_checking_a_pending_write_goes_to_store_failed(tmp_path):
    """The walk's check of an unacknowledged write against the store is a read like any other:
    a Corruption there must reach ``store_failed`` (which deletes the store and exits), not end
    the walk with a bare traceback."""
    import pytest

    p, st = disk_pipeline(tmp_path, items()[:4])
    failed: list = []
    p.table.store_failed = failed.append
    p.table.pending[b"connect2ip|ip|new"] = (1, 0, items()[0][1])
    real_get = st.get

    def damaged(part, key):
        if key == b"connect2ip|ip|new":
            raise OSError("Corruption: block checksum mismatch")
        return real_get(part, key)

    st.get = damaged
    m = metrics_of(p)
    with pytest.raises(OSError):
        result(m, 100 * H)
    assert [str(e) for e in failed] == ["Corruption: block checksum mismatch"]
