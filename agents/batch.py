"""Batch-native stages: the worker's stateless stages on plain aiokafka ``getmany`` loops.

Faust's per-event stream machinery (one task hop, one ``Conductor.on_message`` and one
ProducerBuffer turn per record) cost the worker many times the CPU per event of the same pure
core on plain aiokafka batches (docs/benchmarks.md, "Where the time goes").  The two stages that keep
no state — **ingest** (raw topics → bindings + dead letters) and **stats** (bindings → stats
records) — therefore run here, one ``BatchStage`` each; so does the mapping stage, which writes
the Faust table: ``agents.mapping_stage.MappingStage`` joins no group and follows the table's
assignment instead.

One ``BatchStage`` is: a consumer in a group of its own (``<app id>-<stage>``, see
``agents.acl.worker_groups``; every worker of a deployment joins it, so partitions spread over
workers like Faust's), a producer of its own, and a loop::

    records = getmany()                       # up to ``batch_size`` records
    outputs = await handle(records)           # pure work: (topic, key, value, partition) tuples
    send every output; await every ack        # the whole batch in flight at once
    commit (last offset + 1) per partition    # only now

so an offset is committed only after every output of every record before it — bindings, stats
records, dead letters — is acknowledged by the broker: "never commit past a record neither
processed nor dead-lettered".  A crash or kill anywhere re-delivers the uncommitted batch;
every step downstream is idempotent (interval updates) or carries a deterministic id (stats
records), as before.

Rebalances: the loop holds a lock from the moment it starts a batch until its commit; the
rebalance listener's ``on_partitions_revoked`` takes the same lock, so a partition is handed
over only after its in-flight batch is committed.  Records fetched before a revocation but
not yet started are dropped (their new owner reads them from the committed offset).

Failures: a failed send (the broker away longer than the producer's timeout) sends the batch's
outputs again after a pause, holding the batch's partitions (no commit, no rebalance hand-over
meanwhile) until the broker takes them; a failed commit (a rebalance took the partitions) is
logged and the records are re-delivered to their new owner; anything else (a bug in
``handle``, a consumer error) restarts the stage's clients after a pause, from the last
commit.  Nothing escapes the task.  Known limit: an output the broker can never take (larger
than its ``message.max.bytes``) is retried for ever and stalls the stage (visible as lag); the
mapping table refuses such values before they are written (``table_writer.MAX_VALUE_BYTES``).

Metrics (``agents.metrics``), per batch rather than per record: records in per topic role /
source format / operator, records out per role, processing latency (batch fetched → committed,
one observation per record), and consumer lag from this stage's own consumer
(``BatchStage.lag``, merged into ``ipanon_consumer_lag_records``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from typing import Any, Awaitable, Callable, Iterable, Optional

from .kafka_clients import aio_batches, send_all

from .fence import PartitionsLost

log = logging.getLogger("ipanon.batch")

#: (topic, key, value, partition) — one record to produce; partition None = the default
#: partitioner (murmur2 of the key, as Faust's producer and ``mapping_table.partition_for``)
#: An optional fifth element is the record's timestamp (ms; CreateTime topics only: the stats
#: records' bucket start, stream.stats.record_timestamp_ms); without it the producer's clock.
Output = tuple  # (topic, key, value, partition[, timestamp_ms])

#: aiokafka producer batch size (bytes per partition batch)
PRODUCER_MAX_BATCH = 256 * 1024
RETRY_PAUSE_S = 1.0

#: the cyclic collector's thresholds in a worker (``tune_gc``).  CPython's default (700, 10, 10)
#: runs a young collection every 700 net container allocations and walks the older generations
#: — a heap holding the mapping table, Faust and the clients — every 7 000 and 70 000; the
#: stages allocate several containers per record (consumer records, bindings, output tuples,
#: stats dicts).  The gain is in the older generations' walks, not the young collections
#: (figures: docs/benchmarks.md "Hot path cuts, third session", cut 6).  Garbage without cycles is
#: freed by reference counting as before; cycles wait longer.  ``IPANON_GC_THRESHOLD=700,10,10``
#: restores CPython's default (0 as the first value turns automatic collection off).
GC_THRESHOLD = (100_000, 50, 50)


def tune_gc() -> tuple[int, ...]:
    """Set the collector's thresholds to ``IPANON_GC_THRESHOLD`` (three integers) or else
    ``GC_THRESHOLD``, once per process (idempotent); returns what is in force."""
    want: tuple[int, ...] = GC_THRESHOLD
    env = os.environ.get("IPANON_GC_THRESHOLD", "").strip()
    if env:
        try:
            got = tuple(int(x) for x in env.split(","))
            if len(got) != 3 or min(got) < 0:
                raise ValueError
            want = got
        except ValueError:
            log.warning("IPANON_GC_THRESHOLD=%r: expected three non-negative integers; using %s", env, GC_THRESHOLD)
    if gc.get_threshold() != want:
        gc.set_threshold(*want)
        log.info("gc thresholds %s", want)
    return gc.get_threshold()


def observe_n(child: Any, value: float, n: int) -> None:
    """``n`` observations of ``value`` on a prometheus Histogram child, in O(1) when the client
    library's internals are the known ones (else one ``observe`` per record)."""
    if n <= 0:
        return
    try:
        bounds, buckets, total = child._upper_bounds, child._buckets, child._sum
    except AttributeError:  # pragma: no cover - another prometheus_client layout
        for _ in range(n):
            child.observe(value)
        return
    total.inc(value * n)
    for i, bound in enumerate(bounds):
        if value <= bound:
            buckets[i].inc(n)
            break


class _Listener:
    """aiokafka ``ConsumerRebalanceListener``: revoke waits for the in-flight batch; assign
    reads the committed and end offsets (the lag metric's baseline)."""

    def __init__(self, stage: "BatchStage") -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        async with self.stage._lock:  # the in-flight batch is committed before we let go
            for tp in revoked:
                self.stage._read.pop(tp, None)
                self.stage._committed.pop(tp, None)
            if self.stage.revoke_hook is not None:
                self.stage.revoke_hook(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        st = self.stage
        c = st.consumer
        tps = list(assigned)
        if c is None or not tps:
            return
        log.info("%s: assigned %d partitions", st.name, len(tps))
        try:
            ends = await c.end_offsets(tps)
            st._ends.update(ends)
            for tp in tps:
                off = await c.committed(tp)
                if off is not None:
                    st._committed[tp] = off
        except Exception:  # the lag metric's baseline only; never fail the rebalance for it
            log.debug("%s: could not read offsets of the new assignment", st.name, exc_info=True)
        if st.assign_hook is not None:
            meta: dict = {}
            try:  # the commit metadata the previous owner left (the aggregate stage's emitted buckets)
                got = await c._coordinator.fetch_committed_offsets(tps)
                meta = {tp: om.metadata for tp, om in got.items() if om is not None}
            except Exception:
                log.warning("%s: could not read the commit metadata of the new assignment", st.name, exc_info=True)
            async with st._lock:
                st.assign_hook(tps, meta)


def _listener_class():
    from aiokafka import ConsumerRebalanceListener

    class Listener(_Listener, ConsumerRebalanceListener):
        pass

    return Listener


class BatchStage:
    """One getmany → handle → send → ack → commit loop (see the module docstring).

    ``handle(records)`` gets a batch of aiokafka ``ConsumerRecord`` (heartbeats included: it
    skips them) and returns the outputs to produce.  It must not raise for one bad record
    (dead-letter it instead); if it raises, the batch is retried after a pause."""

    def __init__(self, name: str, topics: Iterable[str], group: str,
                 handle: Callable[[list[Any]], Awaitable[list[Output]]], *, role: str,
                 settings: Any, count: Callable[..., None], metrics: Any = None,
                 count_in: bool = True) -> None:
        self.settings = settings    # agents.settings.Settings: clients, batch size and wait
        self.count = count          # the worker's counter (name, n=1)
        self.metrics = metrics      # agents.metrics.Metrics, or None (no metrics in this worker)
        self.name = name
        self.topics = list(topics)
        self.group = group
        self.handle = handle
        self.role = role            # metrics role of the source topics ("raw", "bindings")
        self.count_in = count_in    # count records in / processing latency for this role here
        # static group membership (a restart within the session timeout moves no partition);
        # off for a stage that stops for good, whose leaving must free its partitions at once
        self.static = True
        self.consumer: Any = None
        self.producer: Any = None
        self._lock = asyncio.Lock()
        self._read: dict[Any, int] = {}        # tp → next offset after the last record handled
        self._committed: dict[Any, int] = {}   # tp → committed offset
        self._ends: dict[Any, int] = {}        # tp → end offset seen at assignment
        self.batches = 0
        self.records = 0
        # stateful stages (the aggregate stage): ``commit_hook(tp, end)`` → (offset, metadata) to
        # commit instead of ``end``; ``assign_hook(tps, metadata by tp)`` and
        # ``revoke_hook(tps)`` run under the batch lock
        self.commit_hook: Optional[Callable[[Any, int], tuple[int, str]]] = None
        self.assign_hook: Optional[Callable[[list, dict], None]] = None
        self.revoke_hook: Optional[Callable[[list], None]] = None

    def _offsets(self, ends: dict) -> dict:
        from aiokafka.structs import OffsetAndMetadata

        if self.commit_hook is None:
            return {tp: OffsetAndMetadata(off, "") for tp, off in ends.items()}
        return {tp: OffsetAndMetadata(*self.commit_hook(tp, off)) for tp, off in ends.items()}

    async def commit_read(self) -> None:
        """Commit every assigned partition at what ``commit_hook`` allows now (a stateful stage
        calls this after it released state without a new batch).  Call it holding ``_lock``."""
        c = self.consumer
        if c is None or not self._read:
            return
        assigned = c.assignment()
        ends = {tp: off for tp, off in self._read.items() if tp in assigned}
        if ends:
            await c.commit(self._offsets(ends))

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled (the Faust app's task); restart the clients on failure."""
        tune_gc()
        while True:
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except PartitionsLost as e:  # expected after a freeze: the revoke follows (agents.fence)
                log.warning("%s: %s; nothing committed, restarting from the last commit", self.name, e)
                self.count(f"{self.name}_restarts")
                await asyncio.sleep(RETRY_PAUSE_S)
            except Exception:
                log.exception("%s: stage failed; restarting its Kafka clients in %.0fs", self.name, RETRY_PAUSE_S)
                self.count(f"{self.name}_restarts")
                await asyncio.sleep(RETRY_PAUSE_S)

    def _clients(self) -> tuple[Any, Any]:
        from .kafka_clients import Clients

        s = self.settings
        cl = Clients.of(s)
        cid = f"{s.app_id}-{self.name}"
        c = cl.aio_consumer(client_id=cid, group_id=self.group, auto_offset_reset="earliest",
                            max_poll_records=s.batch_size,
                            group_instance_id=f"{s.group_instance_id}-{self.name}" if self.static else None,
                            session_timeout_ms=s.session_timeout_ms)
        prod = cl.aio_producer(client_id=cid, max_batch_size=PRODUCER_MAX_BATCH)
        return c, prod

    async def _serve(self) -> None:
        c, prod = self._clients()
        try:
            await prod.start()
            self.producer = prod
            await c.start()
            self.consumer = c
            c.subscribe(self.topics, listener=_listener_class()(self))
            log.info("%s: consuming %s in group %s", self.name, ",".join(self.topics), self.group)
            s = self.settings
            timeout_ms = max(1, int(s.batch_within_s * 1000)) if s.batch_within_s else 100
            while True:
                batch = await c.getmany(timeout_ms=max(timeout_ms, 100), max_records=s.batch_size)
                if batch:
                    async with self._lock:
                        await self._process(c, prod, batch)
        finally:
            self.consumer = self.producer = None
            self._read.clear()
            self._committed.clear()
            for client in (c, prod):
                try:
                    await client.stop()
                except Exception:  # noqa: BLE001 - best effort on the way out
                    log.debug("%s: client stop failed", self.name, exc_info=True)

    # -- one batch ---------------------------------------------------------------------------

    async def _process(self, c: Any, prod: Any, batch: dict) -> None:
        from aiokafka.errors import CommitFailedError, IllegalStateError

        t0 = time.monotonic()
        assigned = c.assignment()
        batch = {tp: rs for tp, rs in batch.items() if rs and tp in assigned}  # revoked meanwhile: not ours
        if not batch:
            return
        records = [r for rs in batch.values() for r in rs]
        ends = {tp: rs[-1].offset + 1 for tp, rs in batch.items()}
        outputs = await self.handle(records)  # raises only on a bug: the stage restarts, nothing committed

        def retrying(e: Exception) -> None:
            # nothing of this batch is committed and the lock holds its partitions here:
            # send the batch's outputs again (duplicates are harmless: idempotent updates,
            # deterministic stats ids) until the broker takes them
            log.warning("%s: sending the outputs of %d records failed (%s); retrying in %.0fs",
                        self.name, len(records), type(e).__name__, RETRY_PAUSE_S)
            self.count(f"{self.name}_send_retries")

        await send_all(aio_batches(prod), outputs, retry_pause_s=RETRY_PAUSE_S, on_retry=retrying)
        try:
            await c.commit(self._offsets(ends))
            self._committed.update(ends)
        except (CommitFailedError, IllegalStateError) as e:
            # a rebalance moved the partitions: their new owner re-reads from the last commit
            log.warning("%s: commit after a rebalance failed (%s); the batch will be re-delivered",
                        self.name, type(e).__name__)
            self.count(f"{self.name}_commit_failures")
        self._read.update(ends)
        self.batches += 1
        self.records += len(records)
        self._observe(records, outputs, time.monotonic() - t0)

    def _observe(self, records: list[Any], outputs: list[Output], seconds: float) -> None:
        m = self.metrics
        if m is None:
            return
        try:
            from .kafka_io import HEARTBEAT_KEY

            if self.count_in:
                labels: dict[tuple[str, str], int] = {}
                n = 0
                for r in records:
                    if r.value is None and r.key == HEARTBEAT_KEY:
                        continue
                    n += 1
                    if self.role == "raw":
                        k = m.raw_labels(r.headers)
                        labels[k] = labels.get(k, 0) + 1
                if self.role == "raw":
                    for (source, operator), k in labels.items():
                        m.records_in.labels(self.role, source, operator).inc(k)
                elif n:
                    m.records_in.labels(self.role, "", "").inc(n)
                observe_n(m.processing.labels(self.role), seconds, n)
            out: dict[str, int] = {}
            for o in outputs:  # indexing, not ``topic, _k, value, *_ =``: no list per output
                if o[2] is not None:
                    out[o[0]] = out.get(o[0], 0) + 1
            for topic, k in out.items():
                m.records_out.labels(m.role_of(topic)).inc(k)
        except Exception:  # pragma: no cover - metrics must never break the stage
            log.debug("%s: metrics update failed", self.name, exc_info=True)

    # -- consumer lag ------------------------------------------------------------------------

    def lag(self) -> dict[tuple[str, int], int]:
        """Records behind the high-water mark per (topic, partition) this stage consumes."""
        c = self.consumer
        out: dict[tuple[str, int], int] = {}
        if c is None:
            return out
        try:
            assignment = list(c.assignment())
        except Exception:
            return out
        for tp in assignment:
            try:
                hw = c.highwater(tp)
            except Exception:
                hw = None
            hw = max(x for x in (hw, self._ends.get(tp), 0) if x is not None)
            done = self._read.get(tp, self._committed.get(tp, 0))
            out[(tp.topic, tp.partition)] = max(0, hw - done)
        return out
