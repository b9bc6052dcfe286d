"""The Faust application: topics, the mapping table, batch stages and thin agents.

    raw topics ──ingest──► bindings (keyed by routing key) ──mapping──► mapping table
         │   │                                                           ▲     │ sweeper (timer)
         │   └─► stats topic, aggregate parts ──aggregate──► aggregates  │     ▼ tombstones
         └─► dead-letter             lookup requests ──lookup────────────┘──► lookup responses

The stages that read a topic in bulk are ``agents.batch.BatchStage`` loops on plain aiokafka: a
batch is fetched, every output queued at once, the acks awaited and only then the batch's
offsets committed (Faust's per-event stream machinery cost many times the CPU; docs/benchmarks.md).
Ingest and the aggregate stage each run in a consumer group of their own (``<app id>-ingest``,
``<app id>-aggregate``); ingest also makes the statistics, sent in its batch with the bindings
(``Ingest.stats`` = ``StatsAgent.for_ingest``), so an event crosses Kafka twice inside a
worker.  ``<app id>-stats`` serves only the upgrade drain (``agents.stats_drain``).  The
mapping stage (``agents.mapping_stage``) joins no group: it reads exactly the bindings
partitions whose table partitions Faust assigned this worker, starts on a partition only after
the table restored it and lets go of it inside Faust's revoke callback, committing under
``<app id>-mapping``.  The lookup agent stays a Faust agent on the Faust table
(``stream.take_events`` batches, output queued with ``send_soon``, handed to the producer once
per batch by ``ebb``).  A record that fails for any reason is dead-lettered with a reason and
counted; no exception escapes a stage or agent, because an agent that dies stalls its
partitions (faust-streaming #175).  Records are acknowledged only after the whole batch was
handled, so a crash re-delivers the batch:
every step is idempotent (interval updates) or carries a deterministic id (stats records).

``Pipeline`` is the composition root: it builds the Faust app, the topics, the table and its
fence, and hands each component what it uses — ingest (``agents.ingest``), the mapping stage
(``agents.mapping_stage``) over the table writer and the sweeper (``agents.table_writer``), the
lookup agent (``agents.lookup``); ``compose`` adds the optional ``Parts`` (statistics, query
desk, metrics, status pages, answer router, canaries) the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional

import faust

from stream import mapping
from stream.model import Binding
from stream.shred import key_grace_ms

from . import topics as T
from .mapping_table import SCHEDULE_BUCKET_MS, DirectRecoveryTableManager, MappingTable
from .runtime import OperatorRuntime, keys_dir
from .vault import Vault
from .keystore import load_lookup_key
from .logfilter import RepeatFilter
from stream.lookup_wire import LookupSeal, ReplayGuard
from .acl import worker_groups
from .batch import BatchStage, Output
from .fence import Fence, PartitionsLost
from .gapfill import GapFill
from .lookup import Lookups
from .mapping_stage import MappingStage
from .table_writer import Sweeper, TableWriter
from .ingest import DEADLETTER_MAX_BYTES, Ingest, dead_letter_value, lateness_rules  # noqa: F401 (re-exported)
from .kafka_clients import Clients
from .security import faust_credentials
from .settings import Settings

log = logging.getLogger("ipanon")

@dataclass(frozen=True)
class Parts:
    """The optional components a worker runs beside ingest, mapping, sweeper and lookups: all
    of them in a worker (``ipanon worker``), a few or none in tests.  The status pages read the
    metrics, so ``status`` brings ``metrics`` with it; the canaries also need
    ``Settings.canary_period_ms`` > 0."""

    stats: bool = True
    query: bool = True
    metrics: bool = True
    status: bool = True
    answers: bool = True
    canary: bool = True


#: every optional component (a production worker)
ALL_PARTS = Parts()
#: the core alone: ingest, mapping stage, sweeper, heartbeat, lookups
NO_PARTS = Parts(stats=False, query=False, metrics=False, status=False, answers=False, canary=False)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def vault_grace_ms(s: Settings) -> int:
    """How long a vault epoch key outlives the expiry of everything sealed under it, for these
    settings and the table's schedule bucket (the rule: ``stream.shred.key_grace_ms``)."""
    return key_grace_ms(s.sweeper_period_ms, SCHEDULE_BUCKET_MS)


def faust_app(s: Settings) -> faust.App:
    """The worker's Faust app (its frame: table and changelog, timers, web, rebalances)."""
    return faust.App(
        s.app_id,
        broker=f"kafka://{s.bootstrap}",
        store="memory://",
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        topic_allow_declare=True,
        table_standby_replicas=0,
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(s.data_dir),
        web_enabled=s.web_enabled,
        web_port=s.web_port or 6066,  # Faust validates the port even when disabled
        web_bind=s.web_bind,
        # Faust's own views (/router/, /table/…, /graph/, /stats/) answer anyone without
        # authentication; ipanon serves only its /status, /status.json and /metrics
        web_router_enabled=False, web_tables_enabled=False, web_graph_enabled=False, web_stats_enabled=False,
        consumer_auto_offset_reset="earliest",
        # no linger: the query desk and lookup answers wait on their acks, and linger per hop
        # was close to half of a lawful answer's time (bench_lawful_latency).  Under load
        # aiokafka still batches, since it keeps one request in flight per broker; bench_e2e
        # measured no throughput difference beyond noise (docs/benchmarks.md).
        producer_linger_ms=0,
        stream_buffer_maxsize=8192,
        broker_commit_every=5000,
        # static membership: a restarted worker (SIGTERM or SIGKILL) takes its partitions back
        # at once instead of waiting out its former self's session (docs/operations.md)
        consumer_group_instance_id=s.group_instance_id,
        broker_session_timeout=s.session_timeout_ms / 1000,
        broker_credentials=faust_credentials(s.security),  # TLS + SASL (agents.security)
        # the mapping table restores its changelog itself, not record by record through
        # Faust's recovery (agents/mapping_table.py: hours for 10M mappings that way)
        TableManager=DirectRecoveryTableManager,
    )


class Pipeline:
    """Builds the Faust app for one set of settings and operators (one per process; tests build several)."""

    def __init__(self, settings: Settings, operators: Mapping[str, OperatorRuntime],
                 *, plan: Any = None, clock: Callable[[], int] = now_ms, parts: Parts = ALL_PARTS) -> None:
        self.settings = s = settings
        self.plan = plan
        self.operators = dict(operators)
        #: each operator's parameters of the table's decisions (``stream.mapping``)
        self.rules = {name: mapping.rules_of(op.policy, ttl_ms=op.ttl_ms, stale_after_ms=op.stale_after_ms)
                      for name, op in self.operators.items()}
        self.clock = clock
        self.counters: dict[str, int] = {}
        # crypto-shredding state per operator (agents/vault.py)
        grace = vault_grace_ms(s)
        self.vaults = {name: Vault.open_or_create(name, keys_dir(s), ttl_ms=op.ttl_ms, grace_ms=grace, now_ms=clock(),
                                                  destroy=False) for name, op in self.operators.items()}
        self.app = app = faust_app(s)
        # raw topics include one per operator (<prefix>-raw-op-<op>): the topic decides its operator
        self.names = names = T.Topics(s.topic_prefix, operators=self.operators)
        part = dict(partitions=s.partitions, key_serializer="raw", value_serializer="raw")
        self.bindings = app.topic(names.bindings, internal=True, **part)
        self.deadletter = app.topic(names.deadletter, internal=True, **part)
        self.lookup_requests = app.topic(names.lookup_requests, internal=True, **part)
        self.lookup_responses = app.topic(names.lookup_responses, internal=True, **part)
        # worker-to-worker lookups are sealed under the deployment's lookup key
        self.lookup_seal = LookupSeal(load_lookup_key(keys_dir(s), create=True), names.lookup_requests)
        self.lookup_replays = ReplayGuard()
        self.lookup_refusals = RepeatFilter(prefixes=("ipanon.lookups",))  # one log line per reason per 10 s
        self.table = MappingTable(
            app, name="mappings", partitions=s.partitions, key_type=bytes, value_type=bytes,
            help="address slot → intervals",
            # configs computed from the promises (stream.policy); Faust applies them only when
            # it creates the topic, so the worker verifies existing topics at start-up
            extra_topic_configs=plan.configs_for(self._changelog_name()) if plan is not None else None,
        )
        app.tables.add(self.table)
        #: every write of the mapping stage, sweeper and heartbeat, in order (``ebb`` flushes it)
        self.outbox = self.table.outbox
        # a worker frozen past its group session writes no changelog until the group confirms
        # it still owns its partitions (agents.fence)
        self.fence = Fence(stall_s=s.session_timeout_ms / 2000, lost=self._membership_lost, count=self.count,
                           confirm_s=2 * float(app.conf.broker_heartbeat_interval) + 1.0)
        self.outbox.gate = self.fence.ready
        self.outbox.halt = self.fence.suspect
        app.task(self.fence.run)
        self.holds: Any = None  # stream.hold.HoldSet, from the holds agent (``_set_holds``)
        self.on_count: list[Callable[[str, int], None]] = []
        # the table's reader and writer for the mapping stage, the sweeper and the lookups
        self.writer = TableWriter(self.table, operators=self.operators, rules=self.rules, vaults=self.vaults,
                                  holds=lambda: self.holds, clock=clock, count=self.count,
                                  dead_letter=self._dead_letter_record,
                                  interrupted=lambda: self.mapping_stage.revokes_waiting > 0)
        self.sweeper = Sweeper(self.writer.sweep_once, clock=clock, flush=self.outbox.flush, count=self.count)
        #: called after every completed sweeper pass as ``f(now_ms, expired, seconds)`` (metrics
        #: time it, the canaries look at the table at once); a listener's failure is its own
        self.after_sweep = self.sweeper.listeners
        self.lookups = Lookups(operators=self.operators, rules=self.rules, vaults=self.vaults, load=self.writer.load,
                               active=lambda: self.table.active, partitions=s.partitions, clock=clock,
                               count=self.count, seal=self.lookup_seal, replays=self.lookup_replays,
                               refusals=self.lookup_refusals, responses=self.lookup_responses, flush=self.ebb,
                               gaps=GapFill(Clients.of(s), names.lookup_requests, agent="lookup", count=self.count,
                                            app=app))
        self.table.source_topics = {names.bindings, names.lookup_requests}
        self.table.restore_clients = Clients.of(s)
        self.table.on_recover(self._on_recover)
        if s.table_store == "disk":  # the table on RocksDB (agents.disk_store, docs/state-on-disk.md)
            from .disk_store import DiskStore

            self.table.use_disk(DiskStore(s.store_dir, bound=s.disk_bound(), width_ms=SCHEDULE_BUCKET_MS))
            self.table.next_expiry = self.writer.next_expiry  # restored records written before the revisit header
            app.timer(s.erasure_tick_ms / 1000, name="ipanon.erasure")(self._erase_tick)

        # ingest keeps no state: a plain aiokafka batch loop in a consumer group of its own
        # (agents.batch; Faust's per-event streams cost many times the CPU, docs/benchmarks.md)
        self.batch_stages: list[BatchStage] = []
        self.metrics: Any = None  # agents.metrics.Metrics once composed (``_compose``)
        self.ingest = Ingest(names=names, partitions=s.partitions, operators=self.operators,
                             default_operator=s.default_operator, rules=lateness_rules(self.operators, plan, names),
                             clock=clock, count=self.count)
        self.ingest_stage = self.add_batch_stage("ingest", names.raw, self._ingest_batch, role="raw")
        # the mapping stage: getmany batches on the partitions Faust gives the table, handed over
        # on Faust's rebalances (agents.mapping_stage)
        self.mapping_stage = MappingStage("mapping", names.bindings, worker_groups(s.app_id)["mapping"],
                                          self.writer.handle_batch, flush=self.ebb, table=self.table, fence=self.fence,
                                          fallback_group=s.app_id, settings=s, count=self.count)
        self.batch_stages.append(self.mapping_stage)
        app.task(self.mapping_stage.run)
        app.on_partitions_revoked.connect(self.mapping_stage.on_revoked)
        app.on_partitions_assigned.connect(self.mapping_stage.on_assigned)
        app.agent(self.lookup_requests, name="ipanon.lookup")(self.lookups.run)
        app.timer(s.sweep_interval_s, name="ipanon.sweeper")(self.sweeper.run)
        app.timer(s.heartbeat_ms / 2000, name="ipanon.heartbeat")(self._heartbeat)
        app.task(self._quiet_client_libraries)
        compose(self, parts)

    def _set_holds(self, holds: Any) -> None:
        """The holds agent's port: the sweeper and the mapping stage apply these from now on."""
        self.holds = holds

    # -- helpers ----------------------------------------------------------------------------

    async def _quiet_client_libraries(self) -> None:
        """At DEBUG the Kafka client libraries log record keys and values verbatim (aiokafka
        producer/conn, faust.topics, faust.transport, kafka-python): raw addresses and
        subscriber ids would land in the worker's log.  They never log below INFO here,
        whatever ``--loglevel`` says (the leak scan's finding)."""
        quiet_client_libraries()

    def _changelog_name(self) -> str:
        return f"{self.settings.app_id}-mappings-changelog"

    def _membership_lost(self) -> bool:
        """Faust's group membership is gone or being redone: its consumer's generation was reset
        (the coordinator no longer knew this member) or a rebalance began."""
        if getattr(self.app, "rebalancing", False):
            return True
        try:
            from aiokafka.protocol.commit import OffsetCommitRequest

            gen = self.app.consumer._thread._ensure_consumer()._coordinator.generation
            return gen == OffsetCommitRequest.DEFAULT_GENERATION_ID
        except Exception:  # no consumer yet (starting): nothing was assigned to lose
            return False

    def add_batch_stage(self, name: str, topics: Iterable[str], handle: Any, *, role: str) -> BatchStage:
        """A ``BatchStage`` in the consumer group ``worker_groups(app_id)[name]``, started and
        stopped with the Faust app (an app task: cancelled when the worker stops)."""
        stage = self.make_batch_stage(name, topics, handle, role=role)
        self.app.task(stage.run)
        return stage

    def make_batch_stage(self, name: str, topics: Iterable[str], handle: Any, *, role: str) -> BatchStage:
        """The same, not started: the caller runs and cancels ``stage.run`` (the stats drain)."""
        stage = BatchStage(name, topics, worker_groups(self.settings.app_id)[name], handle, role=role,
                           settings=self.settings, count=self.count, metrics=self.metrics)
        self.batch_stages.append(stage)
        return stage

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n
        for hook in self.on_count:
            hook(name, n)

    def raw_identifier_topics(self) -> list[Any]:
        """Delete-policy topics that can hold raw identifiers and that this worker appends
        heartbeats to (the changelog gets its own, through the table)."""
        return [*(self.app.topic(n, key_serializer="raw", value_serializer="raw") for n in self.names.raw),
                self.bindings, self.deadletter, self.lookup_requests, self.lookup_responses]

    async def _heartbeat(self) -> None:
        """Append a heartbeat to every partition of every topic that can hold raw identifiers.

        Kafka rolls a segment only on append, and deletes or compacts only closed segments:
        a quiet partition would keep its active segment — and the raw data in it — for ever
        (DESIGN.md "Hard facts").  ``stream.policy`` computes the deletion bound assuming an
        append at least every ``heartbeat_ms``; this timer runs twice as often.  A heartbeat
        is a null-valued record with the ``ipanon-heartbeat`` header (on the changelog: a
        tombstone for a reserved key), which every agent skips."""
        try:
            for topic in self.raw_identifier_topics():
                for p in range(self.settings.partitions):
                    topic.send_soon(key=HEARTBEAT_KEY, value=None, partition=p, headers=HEARTBEAT_HEADERS)
            for p in sorted(self.table.active):
                self.table.heartbeat(p, HEARTBEAT_KEY)
            await self.outbox.flush()
            self.count("heartbeats")
        except PartitionsLost as e:
            log.warning("heartbeat: %s; skipped", e)
        except Exception:
            log.exception("heartbeat: failed; will retry")

    def dead_letter_value(self, topic: str, partition: int, offset: int, headers: Mapping[str, str],
                          value: Optional[bytes], reason: str, detail: str = "") -> bytes:
        """The dead-letter record of one input record (``agents.ingest.dead_letter_value``)."""
        return dead_letter_value(topic, partition, offset, headers, value, reason, detail,
                                 received_ms=self.clock())

    def dead_letter(self, event: Any, reason: str, detail: str = "") -> None:
        msg = event.message
        self.outbox.add(self.deadletter, None, self.dead_letter_value(
            msg.topic, msg.partition, msg.offset, _headers(event), msg.value, reason, detail))
        self.count(f"rejected:{reason}")

    def dead_letter_output(self, record: Any, headers: Mapping[str, str], reason: str, detail: str = "") -> Output:
        """``dead_letter`` for a ``BatchStage``: an aiokafka record → the output to produce (the
        caller counts ``rejected:<reason>``)."""
        return self.ingest.dead_letter_output(record, headers, reason, detail)

    def _dead_letter_record(self, r: Any, reason: str, detail: str) -> None:
        """Queue the dead letter of an aiokafka record in the outbox (ordered with the batch's
        other writes; the caller counts it)."""
        self.outbox.add(self.deadletter, None, self.dead_letter_value(
            r.topic, r.partition, r.offset, record_headers(r.headers), r.value, reason, detail))

    async def ebb(self) -> None:
        """Once per batch: publish every queued output and wait until the broker acknowledged
        all of them, so the batch's offsets (the mapping stage commits, ``take_events`` acks after this returns) are
        committed only after its outputs are safely in Kafka.

        The table's changelog writes and the stage's own outputs go through ``self.outbox``,
        which keeps their order (``agents.outbox``).  Anything else queued with Faust's
        ``send_soon`` is drained here too: Faust's ProducerBuffer publishes one message per
        event-loop turn and, past 100 queued, ``wait_until_ebb`` waits message by message
        (several times fewer events per CPU-second; docs/benchmarks.md).  Only writes whose relative
        order does not matter may take that path."""
        await self.outbox.flush()
        q = self.app.producer.buffer.pending
        futs = []
        while not q.empty():
            fm = q.get_nowait()
            futs.append(await fm.message.channel.publish_message(fm, wait=False))
        if futs:
            await asyncio.gather(*futs)

    # -- ingest (agents.ingest) --------------------------------------------------------------

    def parse_raw(self, headers: Mapping[str, str], value: Optional[bytes]) -> list[Binding]:
        return self.ingest.parse_raw(headers, value)

    async def _ingest_batch(self, records: list[Any]) -> list[Output]:
        return await self.ingest.handle_batch(records)

    def _binding_outputs(self, b: Binding, out: list[Output]) -> None:
        self.ingest.binding_outputs(b, out)

    async def _on_recover(self) -> None:
        """After every recovery (the table is restored; the agents resume right after this):
        rebuild the sweeper's schedule in the background — it opens every value."""
        def done(n: int, seconds: float) -> None:
            log.info("sweeper: schedule rebuilt from the store: %d keys (%.1f s)", n, seconds)
            self.writer.resets.ready_epoch = epoch  # every restored value is in the reset index

        epoch = self.table.epoch
        self.writer.resets.keep(self.table.active)
        self.table.rebuild_schedule_soon(self.writer.rebuild_entry, done)
        await self.mapping_stage.follow(self.table.active)  # restored: the stage may read these now

    async def _erase_tick(self) -> None:
        """The disk store's erasure tick (``MappingTable.erase_tick``): a tick longer than the
        allowance breaks the disk term of the retention plan, so it is counted and logged."""
        try:
            info = await self.table.erase_tick(self.clock())
            if info and info.get("overran"):
                self.count("erasure_overruns")
                log.warning("erasure tick took %.0f ms, over the %d ms allowance: the disk bound did not hold",
                            info["duration_ms"], self.settings.compaction_allowance_ms)
        except Exception:
            log.exception("erasure tick failed; will retry")
            self.count("erasure_errors")



def compose(pipeline: "Pipeline", parts: Parts) -> None:
    """Build the optional components, each with what it uses, in this order: the query desk
    before the audit verifier (its checkpoint key), the verifier before the metrics (they
    export its result), the metrics before the status page and the canaries (which read or
    feed them).  The composition root is the one function that takes the whole pipeline."""
    p = pipeline
    from .answer_router import AnswerRouter
    from .canary import CanaryJob, schedule
    from .metrics import CanaryCollector, Metrics, serve as serve_metrics
    from .query_agent import HoldsFollower, QueryAgent
    from .remote_lookup import RemoteLookups
    from .stats_agent import StatsAgent, StatsPorts
    from .web import AuditVerifier, Status, serve as serve_status

    s, app, names = p.settings, p.app, p.names
    p.stats = p.query = p.status = p.answers = p.canaries = None
    if parts.stats:
        p.stats = StatsAgent(app, settings=s, operators=p.operators, add_stage=p.add_batch_stage,
                             make_stage=p.make_batch_stage,
                             ports=StatsPorts(names=names, clock=p.clock, count=p.count,
                                              dead_letter_output=p.dead_letter_output))
        p.ingest.stats = p.stats.for_ingest  # statistics leave with the bindings, in ingest's batch
    if parts.query:
        lookups = RemoteLookups(settings=s, names=names, seal=p.lookup_seal, requests=p.lookup_requests,
                                clock=p.clock, owns=p.lookups.owns, resolve=p.lookups.resolve,
                                active=lambda: p.table.active, count=p.count)
        p.query = QueryAgent(app, settings=s, names=names, operators=p.operators, clock=p.clock,
                             count=p.count, dead_letter=p.dead_letter, lookups=lookups)
        # every worker applies the holds the desk (on whichever worker) publishes
        p.holds_follower = HoldsFollower(names.holds, settings=s, on_holds=p._set_holds)
        app.task(p.holds_follower.run)
    verifier = None
    if parts.status:
        q = p.query
        verifier = AuditVerifier(names.audit, bootstrap=s.bootstrap, security=s.security, clock=p.clock,
                                 anchor_public=q.anchor_key.public_key() if q is not None else None,
                                 checkpoint_ms=q.checkpoint_ms if q is not None else 3_600_000)
    if parts.metrics or parts.status:  # the status page shows the metrics' figures
        m = p.metrics = Metrics(p.operators, clock=p.clock, table=p.table, names=names, vaults=p.vaults,
                                holds=lambda: p.holds, app=app, stages=p.batch_stages,
                                audit_state=(lambda: verifier.state) if verifier is not None else lambda: None)
        p.on_count.append(m.on_count)
        p.after_sweep.append(m.after_sweep)
        serve_metrics(app, m)
        for stage in p.batch_stages:  # the stages built before the metrics existed
            stage.metrics = m
    if parts.status:
        p.status = Status(p.metrics, operators=p.operators, counters=p.counters, app_id=s.app_id, table=p.table)
        serve_status(app, p.status, verifier)
    if parts.answers and hasattr(names, "query_responses"):
        p.answers = AnswerRouter(app, names=names, plan=p.plan, settings=s, count=p.count, flush=p.ebb)
    period = s.canary_period_ms
    if parts.canary and period > 0:
        job = p.canaries = CanaryJob(
            period, operators=p.operators, settings=s, plan=p.plan, names=names,
            changelog=p._changelog_name(), vaults=p.vaults, table=p.table, clock=p.clock,
            count=p.count, make_topic=lambda name: app.topic(name, key_serializer="raw", value_serializer="raw"))
        schedule(app, job)
        p.after_sweep.append(job.after_sweep)
        if p.metrics is not None:
            p.metrics.registry.register(CanaryCollector(job, wall=p.metrics.wall))


from .kafka_io import HEARTBEAT_KEY, record_headers  # noqa: E402  (one definition for writers and readers)
HEARTBEAT_HEADERS = [("ipanon-heartbeat", b"1")]


#: loggers that dump record keys/values at DEBUG (see ``Pipeline._quiet_client_libraries``)
RECORD_DUMPING_LOGGERS = ("aiokafka", "kafka", "faust.topics", "faust.transport")


#: loggers that put a whole message (key and value) into a WARNING: faust.topics logs the
#: failed message's repr when a send fails (``Topic._on_published``); the failure itself still
#: reaches the writer, whose flush raises it
RECORD_DUMPING_WARNINGS = ("faust.topics",)


def quiet_client_libraries() -> None:
    for name in RECORD_DUMPING_LOGGERS:
        lg = logging.getLogger(name)
        if lg.getEffectiveLevel() < logging.INFO:
            lg.setLevel(logging.INFO)
    for name in RECORD_DUMPING_WARNINGS:
        lg = logging.getLogger(name)
        if lg.getEffectiveLevel() < logging.ERROR:
            lg.setLevel(logging.ERROR)


def is_heartbeat(event: Any) -> bool:
    msg = event.message
    return msg.value is None and msg.key == HEARTBEAT_KEY


def _headers(event: Any) -> dict[str, str]:
    return record_headers(event.message.headers)


