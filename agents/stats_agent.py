"""The statistics extension: per-record pseudonymised stats, consent, k-anonymous aggregates.

Built into every worker by ``agents.app.Pipeline`` (``Parts.stats``; off only in tests).
What it adds to the Faust app:

- ingest's statistics port ``for_ingest`` (``agents.ingest.Ingest.stats``): per ingest batch,
  brings the consent view up to date (``ConsentFollower.sync``, when some operator requires
  consent: up to 30 s, then fail closed, and ingest waits meanwhile), groups the accepted
  bindings by operator, pseudonymises them in one ``StatsBuilder.build_many`` call per operator
  (``encrypt_many`` per epoch), and returns the records a consent check lets through for
  ``<prefix>-stats`` (key = record id), the batch's cell contributions for
  ``<prefix>-aggregate-parts`` (key = cell id; one message per cell, ``stream.aggregate``
  version 2, or per binding with ``IPANON_CONTRIBUTION_VERSION=1``) and ``stats-failed`` dead letters of the raw
  record: ingest sends them with the bindings and commits its raw offsets only once all are
  acknowledged, so the bindings topic is read by the mapping stage alone;
- the upgrade drain (``agents.stats_drain``): at start, only when the consumer group
  ``<app id>-stats`` has committed offsets behind the bindings topic's end (bindings an earlier
  release's ingest left for its stats stage), the old stage ``handle_batch`` (an
  ``agents.batch.BatchStage`` in that group) until the group reaches those ends;
- stage ``aggregate`` on ``<prefix>-aggregate-parts`` (group ``<app id>-aggregate``): one
  ``stream.aggregate.Aggregator`` per owned partition, so each cell has one counter whatever
  the number of workers; commits stop at the first contribution of a still-open bucket, so a
  partition's next owner rebuilds it whole;
- a task following the compacted ``<prefix>-consent`` topic from the beginning with its own
  group-less consumer (every worker needs *all* consent flags, not a partition of them);
- timer ``ipanon.stats-keys``: destroys key epochs that can no longer receive records, picks up
  ``ipanon keys rotate`` done on disk, and emits closed aggregate buckets to
  ``<prefix>-aggregates`` (under the aggregate stage's lock, then commits past them).

Keys: one ``stream.keyring.Keyring`` per operator for purpose ``statistics``, persisted as
``<keys dir>/<operator>.statistics.ratchet`` (``agents.ratchet_store``).  A record's epoch
comes from its *event time*; an epoch's key is destroyed once
``now - late_ms`` has passed the epoch's end, where ``late_ms`` is how late a binding may still
arrive (default: the worker's ingest lag; ``IPANON_STATS_LATE_MS`` overrides it — replays of
old data need it long).  Aggregate buckets close ``IPANON_AGGREGATES_GRACE_MS`` (default: the
ingest lag) after their end and ``IPANON_STATS_IDLE_MS`` (default 10 s) after their last
binding (``stream.aggregate``).  Bindings of destroyed epochs are counted (``stats_late_epoch``) and
dropped: they can no longer be pseudonymised consistently.

Every failure is per record (dead-letter + count) or per batch (logged, counted): nothing
escapes the agent (faust-streaming #175).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Callable, Mapping, Optional

from stream import binding_wire
from stream.aggregate import Aggregator, ContributionEncoder, decode_contribution
from stream.canary import is_canary
from stream.consent import ConsentRecord, ConsentView, consent_key
from stream.errors import ConfigError, Rejected
from stream.keyring import epoch_of
from stream.model import Binding
from stream.stats import StatsBuilder, compact_json, record_json, record_timestamp_ms

from . import ratchet_store
from .batch import Output
from .kafka_clients import aio_batches, send_all
from .stats_drain import StatsDrain

log = logging.getLogger("ipanon.stats")

#: how long a batch waits for the consent view before failing closed (consent-required
#: operators' records of that batch are then dropped from the per-record topic)
CONSENT_SYNC_TIMEOUT_S = 30.0
KEYS_TICK_S = 2.0
#: the emitted buckets a commit's metadata lists stay below the broker's default
#: offset.metadata.max.bytes (4096), newest first kept
COMMIT_METADATA_MAX = 3500


def _env(settings: Any, name: str) -> Any:
    """Setting ``name``: the settings' extras (lower case) first, then the environment."""
    return (getattr(settings, "extra", None) or {}).get(name.lower()) or os.environ.get(name)


def _contribution_version(settings: Any) -> int:
    v = _env(settings, "IPANON_CONTRIBUTION_VERSION")
    if v in (None, ""):
        return 2
    if str(v).strip() not in ("1", "2"):
        raise ConfigError(f"IPANON_CONTRIBUTION_VERSION={v!r}: expected 1 or 2")
    return int(v)


def _env_ms(settings: Any, name: str, default: int) -> int:
    v = _env(settings, name)
    if v in (None, ""):
        return default
    try:
        ms = int(v)
    except ValueError:
        raise ConfigError(f"{name}={v!r}: expected an integer number of milliseconds") from None
    if ms < 0:
        raise ConfigError(f"{name}: must not be negative")
    return ms


class ConsentFollower:
    """Follows every partition of the consent topic into a ``ConsentView``."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.view = ConsentView()
        self._consumer: Any = None
        self._tps: list = []
        self._progress = asyncio.Event()
        self._ready = asyncio.Event()
        self.errors = 0

    async def run(self) -> None:
        from aiokafka import TopicPartition

        from .kafka_clients import Clients

        while True:
            c = Clients(self.bootstrap).aio_consumer(client_id="ipanon-consent-follower", group_id=None,
                                                     auto_offset_reset="earliest")
            try:
                await c.start()
                parts: Optional[set] = None
                while not parts:
                    # ``topics()`` fetches metadata into a new object without updating the
                    # consumer's own, so ask the fetched cluster metadata directly
                    parts = (await c._client.fetch_all_metadata()).partitions_for_topic(self.topic)
                    if not parts:
                        await asyncio.sleep(1.0)
                self._tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
                c.assign(self._tps)
                await c.seek_to_beginning(*self._tps)
                self._consumer = c
                self._ready.set()
                log.info("consent follower: following %s (%d partitions)", self.topic, len(parts))
                while True:
                    batch = await c.getmany(timeout_ms=200, max_records=5000)
                    for _tp, recs in batch.items():
                        for r in recs:
                            try:
                                self.view.apply(ConsentRecord.decode(r.key, r.value))
                            except Rejected:
                                self.errors += 1
                    self._progress.set()
                    self._progress = asyncio.Event()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consent follower failed; restarting in 1s")
                self._ready.clear()
                await asyncio.sleep(1.0)
            finally:
                self._consumer = None
                try:
                    await c.stop()
                except Exception:
                    pass

    async def sync(self, timeout_s: float = CONSENT_SYNC_TIMEOUT_S) -> bool:
        """Wait until the view has applied everything the consent topic held when this call
        started.  False (fail closed) if that did not happen within ``timeout_s``."""
        try:
            await asyncio.wait_for(self._sync(), timeout_s)
            return True
        except (asyncio.TimeoutError, Exception):
            log.warning("consent view not current; failing closed for this batch")
            return False

    async def _sync(self) -> None:
        await self._ready.wait()
        c = self._consumer
        ends = await c.end_offsets(self._tps)
        while True:
            c = self._consumer
            if c is None:
                await self._ready.wait()
                continue
            behind = [tp for tp in self._tps if await c.position(tp) < ends[tp]]
            if not behind:
                return
            await self._progress.wait()


@dataclass(frozen=True)
class StatsPorts:
    """What the batch loops use of the worker: topic names, clock, counter, dead letters."""

    names: Any
    clock: Callable[[], int]
    count: Callable[..., None]
    dead_letter_output: Callable[..., Any]  # (record, headers, reason, detail) -> an output


class AggregateStage:
    """The aggregate stage: one ``stream.aggregate.Aggregator`` per partition of
    ``<prefix>-aggregate-parts`` this worker owns, so every cell has one owner; a
    ``agents.batch.BatchStage`` in group ``<app id>-aggregate`` whose commits stop at the first
    contribution of a still-open bucket (its metadata lists the emitted buckets)."""

    def __init__(self, *, ports: StatsPorts, k: dict[str, int], grace_ms: int, idle_ms: int,
                 add_stage: Callable[..., Any]) -> None:
        self.p = ports
        self.k, self._grace_ms, self._idle_ms = k, grace_ms, idle_ms
        self.aggregators: dict[int, Aggregator] = {}
        self.stage = st = add_stage("aggregate", [ports.names.aggregate_parts], self.handle_parts, role="aggregate")
        st.count_in = False
        st.commit_hook, st.assign_hook, st.revoke_hook = self.commit_at, self._assigned, self._revoked

    def _agg(self, partition: int) -> Aggregator:
        a = self.aggregators.get(partition)
        if a is None:
            a = self.aggregators[partition] = Aggregator(self.k, grace_ms=self._grace_ms, idle_ms=self._idle_ms)
        return a

    def _assigned(self, tps: list, meta: dict) -> None:
        """A partition (re)assigned: count it from scratch from the committed offset, which
        is before every bucket still open (``commit_at``); the buckets the last owner emitted
        come in the commit metadata and are not emitted again."""
        for tp in tps:
            a = self.aggregators[tp.partition] = Aggregator(self.k, grace_ms=self._grace_ms, idle_ms=self._idle_ms)
            try:
                a.mark_closed((str(op), int(b)) for op, b in json.loads(meta.get(tp) or "[]"))
            except (ValueError, TypeError):
                log.warning("aggregate: unreadable commit metadata on partition %d; ignored", tp.partition)

    def _revoked(self, tps: list) -> None:
        for tp in tps:  # its new owner rebuilds the open buckets from the committed offset
            self.aggregators.pop(tp.partition, None)

    def commit_at(self, tp: Any, end: int) -> tuple[int, str]:
        a = self.aggregators.get(tp.partition)
        if a is None:
            return end, ""
        hold = a.hold_offset()
        keys = a.closed_keys()
        meta = compact_json(keys)
        while len(meta) > COMMIT_METADATA_MAX and keys:  # the broker refuses more (offset.metadata.max.bytes)
            keys = keys[len(keys) // 2 + 1:]
            meta = compact_json(keys)
        return (end if hold is None else min(end, hold)), meta

    async def handle_parts(self, records: list[Any]) -> list[tuple[str, Optional[bytes], Optional[bytes], Optional[int]]]:
        """One batch of cell contributions: count each into its partition's aggregator."""
        from .app import record_headers

        p = self.p
        now = p.clock()
        out: list[tuple[str, Optional[bytes], Optional[bytes], Optional[int]]] = []
        late: dict[str, int] = {}
        for r in records:
            if r.value is None:
                continue
            try:
                c = decode_contribution(r.value)
                if c["operator"] not in self.k:
                    raise Rejected("unknown-operator", "operator has no profile")
            except Rejected as e:
                out.append(p.dead_letter_output(r, record_headers(r.headers), e.reason, e.detail))
                p.count(f"rejected:{e.reason}")
                continue
            a = self._agg(r.partition)
            before = a.late
            a.add_contribution(c, now, r.offset)
            if a.late != before:
                late[c["operator"]] = late.get(c["operator"], 0) + a.late - before  # per binding
        for op, n in late.items():
            p.count(f"aggregates_late:{op}", n)
        return out

    def due(self, now: int) -> list[dict]:
        """The aggregate records of buckets that closed (counting the suppressed cells)."""
        recs: list[dict] = []
        suppressed = 0
        for part in sorted(self.aggregators):
            a = self.aggregators[part]
            before = a.suppressed
            recs.extend(a.due(now))
            suppressed += a.suppressed - before
        if suppressed:
            self.p.count("suppressed_cells", suppressed)
        return recs

    async def emit(self, tick: Callable[[int], list[dict]], idle: Callable[[], None]) -> None:
        """Under the stage's lock (no batch or rebalance between closing a bucket, sending its
        cells and committing past its contributions): ``tick(now)`` → the closed buckets'
        records, sent, then a commit past them.  ``idle()`` instead while the stage restarts."""
        st = self.stage
        async with st._lock:
            prod = st.producer
            if prod is None or st.consumer is None:  # the stage is (re)starting: emit later
                idle()
                return
            before = sum(a.open_buckets for a in self.aggregators.values())
            recs = tick(self.p.clock())
            closed = before - sum(a.open_buckets for a in self.aggregators.values())
            if await send_all(aio_batches(prod), [(self.p.names.aggregates, r["id"].encode(),
                                                   compact_json(r).encode(), None)
                                                  for r in recs]):
                self.p.count("aggregates_out", len(recs))
            if closed:  # their contributions need no re-reading any more
                await st.commit_read()


class StatsAgent:
    def __init__(self, app: Any, *, settings: Any, operators: Mapping[str, Any], ports: StatsPorts,
                 add_stage: Callable[..., Any], make_stage: Callable[..., Any]) -> None:
        """``app``: the Faust app (tasks, timer, the aggregates topic); ``add_stage(name, topics,
        handle, role=)``: a started ``agents.batch.BatchStage`` in the stage's consumer group
        (``Pipeline.add_batch_stage``); ``make_stage``: the same, not started (the drain runs it
        only while it has something to read)."""
        from .runtime import keys_dir

        self.p = p = ports  # the batch loops below read their ports as self.p
        s = settings
        self.keys_dir = keys_dir(s)
        self.late_ms = _env_ms(s, "IPANON_STATS_LATE_MS", s.ingest_lag_ms)
        idle_ms = _env_ms(s, "IPANON_STATS_IDLE_MS", 10_000)
        grace_ms = _env_ms(s, "IPANON_AGGREGATES_GRACE_MS", s.ingest_lag_ms)
        now = p.clock()
        self.builders: dict[str, StatsBuilder] = {}
        k = {}
        for name, op in operators.items():
            pol = op.policy
            if pol is None:
                raise ConfigError(f"operator {name}: the statistics extension needs its loaded profile")
            ring = ratchet_store.load_or_create(self.keys_dir, name, epoch=self._live_epoch(pol, now))
            self.builders[name] = StatsBuilder(pol, ring)
            k[name] = pol.statistics.k
        self.consent_required = {n for n, op in operators.items() if op.policy.statistics.consent_required}
        self.contributions = ContributionEncoder()
        # version 2 (a cell's bindings in one message) unless the deployment still runs workers
        # of a release whose aggregate stage reads version 1 only (docs/operations.md, upgrades)
        self.cell_contributions = _contribution_version(s) == 2
        self.aggregates = app.topic(p.names.aggregates, internal=True, partitions=s.partitions,
                                      key_serializer="raw", value_serializer="raw")
        self.consent = ConsentFollower(s.bootstrap, p.names.consent)
        app.task(self._consent_task)
        # the records are made at ingest, in its batch (``for_ingest``); what an earlier release's
        # ingest left on the bindings topic for its stats stage is read once (agents.stats_drain)
        self.drain = StatsDrain(settings=s, topic=p.names.bindings, handle=self.handle_batch, make_stage=make_stage)
        app.task(self.drain.run)
        self.aggregate = AggregateStage(ports=p, k=k, grace_ms=grace_ms, idle_ms=idle_ms, add_stage=add_stage)
        app.timer(KEYS_TICK_S, name="ipanon.stats-keys")(self._tick)

    def _live_epoch(self, pol: Any, now: int) -> int:
        """The oldest epoch that can still receive records at ``now``."""
        return epoch_of(max(0, now - self.late_ms), pol.key_epoch_ms)

    async def _consent_task(self) -> None:
        if self.consent_required:
            await self.consent.run()

    # -- per batch ---------------------------------------------------------------------------

    def handle(self, bindings: list[Binding], raws: Optional[list[bytes]], now: int,
               consent_current: bool, parts: Optional[list] = None) -> list[tuple[bytes, bytes]]:
        """Pseudonymise one batch (``raws``: each binding's bytes as read, or None: the builder
        serialises each binding for its record id); returns the (key, value) stats messages to
        send and appends each binding's cell contribution (key, value) to ``parts``."""
        p = self.p
        by_op: dict[str, tuple[list[Binding], list]] = defaultdict(lambda: ([], []))
        for b, r in zip(bindings, raws if raws is not None else repeat(None)):
            if is_canary(b):  # erasure canaries are never counted (stream.canary)
                continue
            bs, rs = by_op[b.operator]
            bs.append(b)
            rs.append(r)
        # pseudonymise everything first: a failure leaves no trace (aggregates, counters), so
        # the caller can retry record by record
        done = []
        for name, (bs, rs) in by_op.items():
            builder = self.builders[name]
            done.append((name, builder, builder.build_many(bs, None if raws is None else rs), len(builder.late)))
        out = []
        no_consent = 0
        stamps: dict[tuple[int, int], int] = {}  # (bucket start, length) -> Kafka timestamp: buckets repeat
        cells: list = []  # (built, Kafka timestamp): the contributions, grouped by cell below
        for name, builder, built, late in done:
            if late:
                p.count("stats_late_epoch", late)
            gate = name in self.consent_required
            blen = builder.bucket_ms
            for x in built:
                rec = x.record
                # Kafka timestamp = the bucket start, not the append time; the
                # contribution is stamped the same: the append time would carry the event time
                ts = stamps.get((rec["bucket_ms"], blen))
                if ts is None:
                    ts = stamps[(rec["bucket_ms"], blen)] = record_timestamp_ms(rec["bucket_ms"], now, blen)
                cells.append((x, ts))
                if gate:
                    sub = x.binding.subscriber
                    if (not consent_current or sub is None
                            or not self.consent.view.allows(consent_key(builder.ring, sub))):
                        no_consent += 1
                        continue
                out.append((rec["id"].encode(), record_json(rec).encode(), ts))
        if no_consent:
            p.count("stats_no_consent", no_consent)
        if parts is not None:
            if self.cell_contributions:  # one message per cell of the batch (stream.aggregate, version 2)
                parts.extend(self.contributions.cells(cells))
            else:
                encode = self.contributions.encode
                parts.extend((*encode(x), ts) for x, ts in cells)
        return out

    async def for_ingest(self, bindings: list[Binding], origins: list[Any]) -> list[Output]:
        """Ingest's port (``agents.ingest.Ingest.stats``): the stats records, cell contributions
        and dead letters of a batch's accepted bindings, sent with the bindings in the same
        batch (``origins``: each binding's raw record, for a dead letter).  The record id is
        HMAC'd over ``Binding.to_json`` (docs/statistics.md), which the binding gives back
        unchanged from the bindings topic's binary form: a binding re-read there keeps its id."""
        gated = self.consent_required
        # the view is brought up to date (a broker round trip) only for a batch that needs it
        consent_current = await self.consent.sync() if gated and any(b.operator in gated for b in bindings) else True
        out: list[Output] = []
        # no raws: the builder serialises each binding it pseudonymises, inside the step whose
        # failure ``_emit`` retries binding by binding (a binding that cannot be serialised is
        # dead-lettered alone; a raise here would make ingest retry its batch for ever)
        self._emit(bindings, None, origins, consent_current, out, {})
        return out

    async def handle_batch(self, records: list[Any]) -> list[Output]:
        """The upgrade drain's handler (``agents.stats_drain``): bindings as read from the
        bindings topic (written by an ingest of a release that left statistics to this stage)
        → the stats records (and dead letters) to produce."""
        from .app import HEARTBEAT_KEY, record_headers

        p = self.p
        consent_current = await self.consent.sync() if self.consent_required else True
        out: list[Output] = []
        good: list[Binding] = []
        raws: list[bytes] = []
        origins: list[Any] = []
        rejected: dict[str, int] = {}
        builders = self.builders
        for r in records:
            value = r.value
            if value is None and r.key == HEARTBEAT_KEY:
                continue
            try:
                b = binding_wire.decode(value)
                if b.operator not in builders:
                    raise Rejected("unknown-operator", "operator has no profile")
                good.append(b)
                # the record id is HMAC'd over the binding's JSON (docs/statistics.md), whatever
                # the wire form: a binding re-read across the upgrade keeps its id
                raws.append(value if binding_wire.is_json(value) else b.to_json())
                origins.append(r)
            except Rejected as e:
                out.append(p.dead_letter_output(r, record_headers(r.headers), e.reason, e.detail))
                rejected[e.reason] = rejected.get(e.reason, 0) + 1
            except Exception as e:
                log.exception("stats: unexpected error; record dead-lettered")
                out.append(p.dead_letter_output(r, record_headers(r.headers), "internal-error", type(e).__name__))
                rejected["internal-error"] = rejected.get("internal-error", 0) + 1
        self._emit(good, raws, origins, consent_current, out, rejected)
        return out

    def _emit(self, good: list[Binding], raws: Optional[list[bytes]], origins: list[Any], consent_current: bool,
              out: list[Output], rejected: dict[str, int]) -> None:
        """Append the stats records and contributions of ``good`` to ``out`` (and a dead letter
        of its origin for a binding that fails alone), then count."""
        from .app import record_headers

        p = self.p
        now = p.clock()
        parts: list = []
        try:
            msgs = self.handle(good, raws, now, consent_current, parts)
        except Exception:
            # one binding must not cost its batch the statistics: redo it binding by binding and
            # dead-letter only those that fail
            log.warning("stats: a batch of %d bindings failed; retrying them one by one", len(good))
            p.count("stats_batch_errors")
            msgs = []
            for b, value, r in zip(good, raws if raws is not None else repeat(None), origins):
                try:
                    msgs.extend(self.handle([b], None if raws is None else [value], now, consent_current, parts))
                except Exception as e:
                    log.error("stats: one binding failed (%s); dead-lettered", type(e).__name__)
                    out.append(p.dead_letter_output(r, record_headers(r.headers), "stats-failed", type(e).__name__))
                    rejected["stats-failed"] = rejected.get("stats-failed", 0) + 1
        for reason, n in rejected.items():
            p.count(f"rejected:{reason}", n)
        topic = p.names.stats
        # in id order (HMAC: random), so offsets do not replay the batch's event order
        out.extend((topic, key, value, None, ts) for key, value, ts in sorted(msgs))
        if msgs:
            p.count("stats_out", len(msgs))
        out.extend((p.names.aggregate_parts, key, value, None, ts) for key, value, ts in parts)

    # -- timer -------------------------------------------------------------------------------

    def tick(self, now: int) -> list[dict]:
        """Destroy epochs past their use (and follow ``ipanon keys rotate`` on disk); return
        the aggregate records of buckets that closed (counting the suppressed cells)."""
        self.destroy_keys(now)
        return self.aggregate.due(now)

    def destroy_keys(self, now: int) -> None:
        """Destroy epochs past their use (and follow ``ipanon keys rotate`` on disk)."""
        for name, builder in self.builders.items():
            ring = builder.ring
            before = ring.oldest_epoch
            on_disk = ratchet_store.read_ring(self.keys_dir, name)
            target = max(self._live_epoch(builder.policy, now), on_disk.oldest_epoch if on_disk else 0)
            ring.destroy_before(target)
            if ring.oldest_epoch != before or on_disk is None or on_disk.oldest_epoch != ring.oldest_epoch:
                ratchet_store.write_ring(self.keys_dir, ring)
                self.p.count("stats_epochs_destroyed", ring.oldest_epoch - before)

    async def _tick(self) -> None:
        try:
            await self.aggregate.emit(self.tick, lambda: self.destroy_keys(self.p.clock()))
        except Exception:
            log.exception("stats keys/aggregates tick failed; will retry")
            self.p.count("stats_tick_errors")


def record_ids(seed: bytes, policy: Any, bindings: list[Binding]) -> list[str]:
    """The stats record ids the worker emits for ``bindings`` of ``policy``'s operator, from the
    operator key file's 32 bytes (benchmarks and tests checking completeness; the worker's
    ratchet derives the same keys).  Bindings of every epoch are covered, resets yield none."""
    from stream.keyring import Keyring

    builder = StatsBuilder(policy, Keyring.create(policy.name, seed))
    return [x.record["id"] for x in builder.build_many(bindings)]
