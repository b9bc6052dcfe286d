"""The restore's raw records (``agents.restore_fetch``), without a broker: aiokafka's own
``PartitionRecords`` over real record batches.  A consumer marked ``RAW`` gets the decoded
records with the keys, values, headers, offsets and timestamps a ``ConsumerRecord`` has, and the
restore's disk sink leaves the same store from either; every other consumer still gets
``ConsumerRecord``s (its deserializers applied)."""

from __future__ import annotations

import os
import types

from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord, TopicPartition

from agents import restore_fetch
from agents.disk_store import DiskStore
from agents.mapping_table import REVISIT_HEADER
from agents.table_checkpoints import apply_restored
from stream import disk_bound as dbound

TP = TopicPartition("cl", 2)
BOUND = dbound.DiskBound(cycle_ms=10**9, tick_ms=1_000, compaction_allowance_ms=60_000)


def batches() -> list[bytes]:
    out, off = [], 0
    for n in (3, 500, 1):
        b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                      producer_epoch=-1, base_sequence=-1, batch_size=2**22)
        for _ in range(n):
            k = b"k%d" % (off % 97)
            if off % 7 == 3:
                b.append(off, timestamp=1_765_000_000_000 + off, key=k, value=None, headers=[])  # tombstone
            else:
                hdr = [(REVISIT_HEADER, str(1_765_000_000_000 + 1000 * (off % 13)).encode())] if off % 5 else []
                b.append(off, timestamp=1_765_000_000_000 + off, key=k, value=os.urandom(40), headers=hdr)
            off += 1
        out.append(bytes(b.build()))
    return out


def read(bufs: list[bytes], key_deserializer) -> list:
    recs, off = [], 0
    for buf in bufs:
        pr = PartitionRecords(TP, MemoryRecords(buf), [], off, key_deserializer, None, True, 0)
        got = list(pr)
        recs += got
        off = pr.next_fetch_offset
    return recs


def fields(r) -> tuple:
    return r.key, r.value, list(r.headers), r.offset, r.timestamp


def test_raw_records_carry_what_the_restore_reads():
    assert restore_fetch.install()
    bufs = batches()
    plain = read(bufs, None)
    raw = read(bufs, restore_fetch.RAW)
    assert len(plain) == len(raw) == 504
    assert all(type(r) is ConsumerRecord for r in plain)
    assert not any(type(r) is ConsumerRecord for r in raw)
    assert [fields(r) for r in raw] == [fields(r) for r in plain]
    assert [r.offset for r in raw] == list(range(504))


def test_other_consumers_still_get_consumer_records():
    assert restore_fetch.install()
    plain = read(batches(), lambda b: b"K" + b)  # a deserializer of another consumer
    assert all(type(r) is ConsumerRecord for r in plain)
    assert all(r.key.startswith(b"Kk") for r in plain)


def test_the_disk_sink_leaves_the_same_store_from_either(tmp_path):
    assert restore_fetch.install()
    bufs = batches()
    dumps = []
    for name, kd in (("plain", None), ("raw", restore_fetch.RAW)):
        st = DiskStore(tmp_path / name, bound=BOUND, width_ms=1_000)
        t = types.SimpleNamespace(restored_to={})
        assert apply_restored(st, lambda k, v: 5_000, t.restored_to, {TP: read(bufs, kd)}) == 504
        dumps.append((sorted(st.iter_items(2)), st.due(10**15), st.checkpoint(2), st.checkpoint_at(2), t.restored_to))
        st.close()
    assert dumps[0] == dumps[1]
    assert dumps[1][2] == 504 and dumps[1][3] == 1_765_000_000_503
    assert len(dumps[1][0]) > 50


def test_raw_is_the_identity_where_nothing_is_wrapped():
    assert restore_fetch.RAW(b"abc") == b"abc"
