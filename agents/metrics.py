"""Every Prometheus metric of the worker, in this one module (DESIGN.md "Conventions").

Built into every worker by ``agents.app.Pipeline`` (``Parts.metrics``) and served by ``serve``.  Three
sources feed it, none of which touches the agents' hot loops with more than a dict update:

- the pipeline's counters: ``Pipeline.count(name, n)`` calls ``Metrics.on_count``; a name
  ``base:label`` (``rejected:bad-json``, ``mapping:opened``) becomes a labelled counter
  (``COUNT_METRICS``).  Unknown names land in ``ipanon_worker_events_total{name=…}`` so nothing
  counted is ever lost;
- a Faust sensor (``_Sensor``): records in per topic role, source format and operator (header
  values are kept only when they name a registered format / a configured operator — a label
  is never taken verbatim from input, which would let one bad collector explode cardinality),
  records out per topic role, processing latency (message in → acked)
  and lookup latency (request's Kafka timestamp → acked);
- a scrape-time collector (``_StateCollector``) reporting the last **compliance walk** of the
  worker's own partitions of the mapping table — live mappings per operator, the **compliance
  ratio** per operator and purpose, the expiry overdue time — and consumer lag from the
  consumers' high-water marks.  The walk runs in the background in 1 ms slices 4 ms apart, between
  event-loop turns (``agents.compliance_walk``), never inside a scrape.

Compliance ratio (``ipanon_compliance_ratio{operator,purpose}``): the age of the oldest raw
mapping still present, divided by the promise.  The age of an interval counts from its
*effective end* (the instant it stopped being current: Stop, lease end, or the staleness bound
— ``stream.intervals.Interval.effective_end``), because retention promises count from there
(REFERENCE.md §1).  An interval still current has age 0.  Intervals under a legal hold are
excluded (they are kept on purpose; ``ipanon_mappings_held`` counts them).  The ratio must stay
below 1: the retention plan puts expiry at ``end + ttl`` with ``ttl < promise``, so a healthy
worker shows at most ``(ttl + schedule bucket + sweeper period) / promise``.  Each worker reports only the
partitions it owns; Prometheus takes the ``max`` over workers.

No label carries an address, a subscriber id, a session id or a key: labels are operator names
from the configuration, topic roles, reasons/outcomes chosen by code, and partition numbers.
All units are base units (seconds, ratios, counts); timestamps are Unix seconds.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily

# the compliance fold is pure: stream.compliance_fold (names re-exported for the agents' callers)
from stream.compliance_fold import (Fold, OperatorState, Summary, pack_summary,  # noqa: F401
                                    scan_intervals, scan_summaries, summarize, unpack_summary)

from .compliance_walk import (OPEN_BUDGET, SCAN_CACHE_S, SCAN_DUTY_FACTOR, WALK_PAUSE_S,  # noqa: F401
                              WALK_SLICE_S, ComplianceWalk)

log = logging.getLogger("ipanon.metrics")

# ``*_created`` series double every counter for no use here (Prometheus ignores them by default)
disable_created_metrics()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The purpose whose promise governs the raw mappings in the table (``purposes.lawful_access``).
TABLE_PURPOSE = "lawful_access"
#: topic roles whose records' processing time is measured, and the request topics among them
TIMED_ROLES = frozenset({"raw", "bindings", "lookup_requests", "query_requests"})
REQUEST_ROLES = frozenset({"lookup_requests", "query_requests"})

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# pipeline counter name → (metric attribute, label value).  Label value ``None``: the metric
# has no label; ``"*"``: the label takes the part after ``base:`` (``rejected:bad-json``);
# anything else is a fixed value.  Every agent counts through the same ``Pipeline.count``.
COUNT_METRICS: dict[str, tuple[str, Optional[str]]] = {
    "events_in": ("events_in", None),
    "rejected": ("rejected", "*"),
    "bindings": ("bindings_out", None),
    "mapping": ("mapping_updates", "*"),
    "expired": ("expired", None),
    "tombstones": ("tombstones", None),
    "too_late_dropped": ("too_late_dropped", None),
    "heartbeats": ("heartbeats", None),
    "sweeper_errors": ("sweeper_errors", None),
    "unreadable_values": ("unreadable_values", None),
    "large_values": ("large_values", None),
    "resets": ("resets", "*"),                   # NAS resets, by how their keys were found
    "fence_stalls": ("fence_stalls", None),
    "fence_refusals": ("fence_refusals", None),
    "fenced_writes": ("fenced_writes", None),
    "stats_out": ("stats_out", None),
    "lookups": ("lookups", None),
    "lookup_answers": ("lookup_answers", "*"),   # by status, counted before the answer is sealed
    "lookup_refused": ("lookup_refused", "*"),   # by reason (stream.lookup_wire.REFUSALS)
    "epochs_shredded": ("epochs_shredded", "lawful_access"),         # mapping-table vault epochs
    "stats_epochs_destroyed": ("epochs_shredded", "statistics"),     # statistics pseudonym epochs
    "stats_no_consent": ("consent_drops", None),
    "consent_drops": ("consent_drops", None),
    "suppressed_cells": ("suppressed_cells", None),
    "aggregates_out": ("aggregates_out", None),
    "aggregates_late": ("aggregates_late", "*"),
    "query": ("queries", "*"),
    "queries": ("queries", "*"),
    "holds": ("holds", "*"),
    "stream_refetched": ("stream_refetched", "*"),   # by agent (agents.gapfill)
    "stream_gap_lost": ("stream_gap_lost", "*"),
}


# -- pure helpers (unit-tested without a worker) ------------------------------------------------


def split_count_name(name: str) -> tuple[str, Optional[str]]:
    base, sep, rest = name.partition(":")
    return (base, rest) if sep else (name, None)


def _label_safe(value: str, limit: int = 64) -> str:
    """Code-chosen names only ever reach labels, but keep them tidy anyway."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in value[:limit]) or "_"


# -- the metrics -------------------------------------------------------------------------------


class Metrics:
    """All of the worker's metrics, on a registry of its own (one per pipeline)."""

    def __init__(self, operators: Mapping[str, Any], *, clock: Callable[[], int], table: Any,
                 names: Any = None, vaults: Optional[Mapping[str, Any]] = None,
                 holds: Callable[[], Any] = lambda: None, app: Any = None, stages: Sequence[Any] = (),
                 audit_state: Callable[[], Any] = lambda: None, registry: Optional[CollectorRegistry] = None,
                 wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        """``operators``: name → ``OperatorRuntime``; ``table``: the mapping table, read only
        (``data``, ``active``, ``key_partition()``, ``restored``); ``names``: the topic names
        (``agents.topics.Topics``: topic roles, lag sources); ``vaults``: name → ``Vault`` (None:
        plain values); ``holds()``: the current ``HoldSet`` or None; ``app``: the Faust app whose
        consumer's lag is reported; ``stages``: the batch stages (``lag()``), a list the worker
        may still extend; ``audit_state()``: the audit verifier's last result or None."""
        self.operators = operators
        self.clock = clock
        self.table = table
        self.names = names
        self.app = app
        self.stages = stages
        self._audit_state = audit_state
        self.wall = wall
        self.mono = mono
        self.registry = r = registry or CollectorRegistry()
        ops = sorted(operators)
        self.operator_names = set(ops)

        def counter(name, doc, labels=()):
            return Counter(name, doc, labels, registry=r)

        self.records_in = counter("ipanon_records_in_total", "Kafka records consumed (heartbeats excluded), "
                                  "per topic role, source format and operator header", ("role", "source", "operator"))
        self.records_out = counter("ipanon_records_out_total", "Records produced, per topic role (heartbeats excluded)",
                                   ("role",))
        self.events_in = counter("ipanon_events_in_total", "Raw records parsed into bindings")
        self.rejected = counter("ipanon_rejected_total", "Records dead-lettered, by reason", ("reason",))
        self.bindings_out = counter("ipanon_bindings_out_total", "Canonical bindings emitted by ingest")
        self.mapping_updates = counter("ipanon_mapping_updates_total", "Bindings applied to the mapping table, by outcome",
                                       ("outcome",))
        self.expired = counter("ipanon_intervals_expired_total", "Raw mapping intervals dropped at expiry")
        self.tombstones = counter("ipanon_tombstones_total", "Changelog tombstones written for emptied table keys")
        self.too_late_dropped = counter("ipanon_too_late_dropped_total", "Records past their promise whose bytes "
                                        "not even the dead-letter topic may keep (dead-lettered without them)")
        self.heartbeats = counter("ipanon_heartbeats_total", "Heartbeat rounds appended to raw-identifier topics")
        self.sweeper_errors = counter("ipanon_sweeper_errors_total", "Sweeper passes that failed")
        self.stats_out = counter("ipanon_stats_records_out_total", "Pseudonymised statistics records emitted")
        self.lookups = counter("ipanon_lookups_total", "Lookup requests answered")
        self.unreadable_values = counter("ipanon_unreadable_values_total", "Table values that could not be "
                                         "opened (sealed under a destroyed epoch key): treated as gone")
        self.large_values = counter("ipanon_table_large_values_total", "Table values written at 256 KiB or more: "
                                    "a key's history growing towards the changelog's 1 MiB record limit")
        self.resets = counter("ipanon_table_resets_total", "NAS Accounting-On/Off resets applied, by how their "
                              "keys were found: indexed, or scanned (every key: after a restore, disk mode)", ("path",))
        self.fence_stalls = counter("ipanon_fence_stalls_total", "Event-loop stalls past half the group session "
                                    "timeout: no changelog write until the group confirms the membership")
        self.fence_refusals = counter("ipanon_fence_refusals_total", "Flushes refused after a stall: membership lost")
        self.fenced_writes = counter("ipanon_fenced_writes_total", "Changelog writes discarded because their "
                                     "partitions were revoked after a stall (their bindings are read again by the owner)")
        self.epochs_shredded = counter("ipanon_epochs_shredded_total", "Key epochs destroyed (crypto-shredding), "
                                       "per purpose", ("purpose",))
        self.consent_drops = counter("ipanon_consent_drops_total", "Statistics records dropped for lack of consent")
        self.suppressed_cells = counter("ipanon_suppressed_cells_total", "Aggregate cells suppressed (k-anonymity)")
        self.aggregates_out = counter("ipanon_aggregates_out_total", "Aggregate records emitted")
        self.aggregates_late = counter("ipanon_aggregates_late_total", "Bindings not counted in any aggregate: "
                                       "their bucket was already emitted, by operator", ("operator",))
        self.queries = counter("ipanon_queries_total", "Lawful-access query steps, by outcome", ("outcome",))
        self.holds = counter("ipanon_holds_total", "Legal-hold commands, by outcome", ("outcome",))
        self.stream_refetched = counter("ipanon_stream_refetched_total", "Records Faust's stream skipped on a "
                                        "partition kept through a rebalance, read back from the broker, by agent",
                                        ("agent",))
        self.stream_gap_lost = counter("ipanon_stream_gap_lost_total", "Records skipped by Faust's stream that could "
                                       "not be read back (deleted by retention, or the read failed), by agent",
                                       ("agent",))
        self.other = counter("ipanon_worker_events_total", "Other worker counters, by name", ("name",))
        self.lookup_answers = counter("ipanon_lookup_answers_total", "Lookup answers produced, by status", ("status",))
        self.lookup_refused = counter("ipanon_lookup_refused_total", "Lookup requests refused without an answer "
                                      "(not sealed under the lookup key, stale, future, replayed, wrong partition), "
                                      "by reason", ("reason",))
        self.processing = Histogram("ipanon_processing_seconds", "Time from a record's arrival in the worker "
                                    "to its acknowledgement, per topic role", ("role",),
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.request_latency = Histogram("ipanon_request_latency_seconds", "Time from a lookup or query request's "
                                         "Kafka timestamp to its acknowledgement by the worker, per topic role",
                                         ("role",), buckets=LATENCY_BUCKETS, registry=r)
        self.sweep_duration = Histogram("ipanon_sweep_duration_seconds", "Duration of one expiry sweeper pass",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.sweeper_last_run = Gauge("ipanon_sweeper_last_run_timestamp_seconds",
                                      "Unix time the expiry sweeper last completed a pass", registry=r)
        self.promise = Gauge("ipanon_promise_seconds", "Maximum keep time promised, per operator and purpose",
                             ("operator", "purpose"), registry=r)
        self.ttl = Gauge("ipanon_ttl_seconds", "Table TTL from the retention plan (expiry = end + TTL)",
                         ("operator",), registry=r)
        # exported by _StateCollector only once a check has run: a gauge registered here reads
        # 0 (broken) before the first check while /status says it has not checked yet
        self.audit_ok = Gauge("ipanon_audit_chain_ok", "1 if the audit trail verified at the last check, 0 if broken "
                              "(absent until the first check)", registry=None)
        self.audit_records = Gauge("ipanon_audit_chain_records", "Audit records verified at the last check",
                                   registry=None)
        self.audit_checked = Gauge("ipanon_audit_chain_checked_timestamp_seconds",
                                   "Unix time of the last audit trail verification", registry=r)
        self.last_expiry = Gauge("ipanon_last_expiry_timestamp_seconds", "Unix time intervals were last expired",
                                 registry=r)
        self.up = Gauge("ipanon_worker_start_timestamp_seconds", "Unix time this worker started", registry=r)
        self.up.set(wall())
        for name in ops:
            op = operators[name]
            self.ttl.labels(name).set(op.ttl_ms / 1000)
            for purpose, promise_ms in promises_of(op).items():
                self.promise.labels(name, purpose).set(promise_ms / 1000)
        self._bound: dict[tuple[str, Optional[str]], Any] = {}
        self._roles: dict[str, str] = {}
        #: the compliance walk of this worker's table partitions (``agents.compliance_walk``)
        self.compliance = ComplianceWalk(operators, clock=clock, table=table, vaults=vaults, holds=holds, mono=mono)
        #: the last few expiry events for the status page: (unix seconds, intervals dropped)
        self.recent_expiries: list[tuple[float, int]] = []
        self.registry.register(_StateCollector(self))

    # -- counters ----------------------------------------------------------------------------

    def on_count(self, name: str, n: int) -> None:
        """The ``Pipeline.on_count`` hook: a dict lookup and an ``inc`` (cached child)."""
        child = self._bound.get((name, None))
        if child is None:
            child = self._bind(name)
            self._bound[(name, None)] = child
        child.inc(n)
        if name == "expired":
            t = self.wall()
            self.last_expiry.set(t)
            self.recent_expiries.append((t, n))
            del self.recent_expiries[:-20]

    def _bind(self, name: str) -> Any:
        base, value = split_count_name(name)
        spec = COUNT_METRICS.get(base)
        if spec is None:
            return self.other.labels(_label_safe(name))
        attr, label = spec
        metric = getattr(self, attr)
        if label is None:  # a suffix on an unlabelled counter ("events_in:x") counts in the total
            return metric
        if label != "*":
            return metric.labels(label)
        return metric.labels(_label_safe(value or "unknown"))

    def after_sweep(self, now_ms: int, expired: int, seconds: float) -> None:
        """The sweeper's listener: how long the pass took and when it last completed."""
        self.sweep_duration.observe(seconds)
        self.sweeper_last_run.set(self.wall())

    # -- table scan --------------------------------------------------------------------------

    def scan(self, now_ms: Optional[int] = None) -> tuple[int, dict[str, OperatorState]]:
        """The compliance walk's last result (``ComplianceWalk.scan``)."""
        return self.compliance.scan(now_ms)

    # -- consumer lag ------------------------------------------------------------------------

    def consumer_lag(self) -> dict[tuple[str, int], int]:
        """Records behind the high-water mark per (topic, partition) this worker consumes:
        Faust's consumer (``faust_lag``) and every batch stage's own consumer
        (``agents.batch.BatchStage.lag``: raw topics for ingest, bindings for the mapping stage).
        During an upgrade drain (``agents.stats_drain``) the bindings are read by two consumers;
        a partition read by both reports the larger lag."""
        out = faust_lag(self.app, self.names)
        for stage in self.stages:
            try:
                lags = stage.lag()
            except Exception:  # noqa: BLE001 - a scrape never fails for one stage
                continue
            for k, v in lags.items():
                out[k] = max(out.get(k, 0), v)
        return out

    # -- audit -------------------------------------------------------------------------------

    def audit_state(self) -> Optional[dict]:
        """The audit trail's verification state, if anything in the worker verifies it:
        the ``audit_state()`` port (a dict ``{"ok": bool, "records": int, "checked_ms": int,
        "detail": str}``, from ``agents.web.AuditVerifier``)."""
        st = self._audit_state()
        return st if isinstance(st, dict) else None

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def raw_labels(self, headers: Any) -> tuple[str, str]:
        """(source, operator) labels of a raw record from its Kafka headers: a header value
        only when it names a registered format / a configured operator, else ``none``
        (absent) or ``unknown`` — never free text in a label."""
        hdr = record_headers(headers)
        source = hdr.get("ipanon-format", "")
        source = source if source in _known_formats() else ("none" if not source else "unknown")
        operator = hdr.get("ipanon-operator", "")
        if operator not in self.operator_names:
            operator = "none" if not operator else "unknown"
        return source, operator

    def role_of(self, topic: str) -> str:
        """A bounded label for a topic: its name after ``<prefix>-`` (``raw`` for every raw
        topic, ``changelog`` for Faust changelogs, ``other`` for anything foreign)."""
        role = self._roles.get(topic)
        if role is None:
            n = self.names
            if topic in n.raw:
                role = "raw"
            elif topic.endswith("-changelog"):
                role = "changelog"
            elif topic.startswith(n.prefix + "-"):
                role = _label_safe(topic[len(n.prefix) + 1:].replace("-", "_"), 32)
            else:
                role = "other"
            if len(self._roles) < 256:
                self._roles[topic] = role
        return role


def faust_lag(app: Any, names: Any) -> dict[tuple[str, int], int]:
    """Records behind the high-water mark per (topic, partition) Faust's consumer reads.

    The read offset is the offset of the last record handed to an agent (Faust's
    consumer), the high-water mark the next offset to be written; a caught-up partition
    has lag 0.  Partitions not read yet count from the committed offset, and with neither
    from offset 0 — every assigned partition has a series, so "no series" never hides lag."""
    out: dict[tuple[str, int], int] = {}
    if app is None or names is None:
        return out
    try:
        consumer = app.consumer
        assignment = consumer.assignment()
    except Exception:  # not started yet
        return out
    n = names
    sources = set(n.raw) | {n.bindings, n.lookup_requests, f"{n.prefix}-query-requests", n.consent}
    read = getattr(consumer, "_read_offset", {}) or {}
    committed = getattr(consumer, "_committed_offset", {}) or {}
    mon_end = getattr(app.monitor, "tp_end_offsets", {}) or {}
    for tp in assignment:
        if tp.topic not in sources:
            continue
        try:
            hw = consumer.highwater(tp)
        except Exception:
            hw = None
        hw = max(x for x in (hw, mon_end.get(tp), 0) if x is not None)
        r = read.get(tp) if hasattr(read, "get") else None
        if r is not None:
            done = r + 1
        else:
            c = committed.get(tp) if hasattr(committed, "get") else None
            # nothing read and nothing committed yet: the group starts from the earliest
            # offset, so everything up to the high-water mark is still to read (an upper
            # bound where retention has already removed the oldest segments)
            done = c if c is not None else 0
        out[(tp.topic, tp.partition)] = max(0, hw - done)
    return out


def promises_of(op: Any) -> dict[str, int]:
    """Promise per purpose (ms) from an ``OperatorRuntime``'s policy (none without a policy)."""
    pol = getattr(op, "policy", None)
    if pol is None:
        return {}
    return {"lawful_access": pol.lawful_access.promise_ms, "statistics": pol.statistics.promise_ms}


class _StateCollector:
    """Scrape-time gauges: table state, compliance, consumer lag, audit state."""

    def __init__(self, m: Metrics) -> None:
        self.m = m

    def describe(self):  # no scan at registration time
        return []

    def collect(self):
        m = self.m
        now_ms, states = m.scan()
        live = GaugeMetricFamily("ipanon_mappings_live", "Raw mapping intervals in this worker's table partitions",
                                 labels=("operator",))
        cur = GaugeMetricFamily("ipanon_mappings_current", "Intervals not yet at their effective end",
                                labels=("operator",))
        held = GaugeMetricFamily("ipanon_mappings_held", "Intervals kept under a legal hold", labels=("operator",))
        keys = GaugeMetricFamily("ipanon_table_keys", "Mapping table keys (address slots) in this worker's partitions",
                                 labels=("operator",))
        age = GaugeMetricFamily("ipanon_oldest_mapping_age_seconds", "Age since its effective end of the oldest "
                                "raw mapping still present (unheld)", labels=("operator",))
        ratio = GaugeMetricFamily("ipanon_compliance_ratio", "Age of the oldest raw mapping still present ÷ the "
                                  "promise (must stay < 1)", labels=("operator", "purpose"))
        overdue = GaugeMetricFamily("ipanon_expiry_overdue_seconds", "How far past its expiry instant the most "
                                    "overdue raw mapping is (0 = the sweeper keeps up)", labels=("operator",))
        for name in sorted(m.operators):
            st = states.get(name, OperatorState())
            live.add_metric([name], st.intervals)
            cur.add_metric([name], st.current)
            held.add_metric([name], st.held)
            keys.add_metric([name], st.keys)
            age.add_metric([name], st.age_ms(now_ms) / 1000)
            overdue.add_metric([name], st.overdue_ms / 1000)
            pol = getattr(m.operators[name], "policy", None)
            if pol is not None:
                ratio.add_metric([name, TABLE_PURPOSE], st.ratio(now_ms, pol.lawful_access.promise_ms))
        yield from (live, cur, held, keys, age, ratio, overdue)
        scan = GaugeMetricFamily("ipanon_compliance_scan_seconds", "Work time of the last compliance walk of the "
                                 "table (run in slices between event-loop turns)")
        scan.add_metric([], m.compliance.scan_seconds)
        yield scan
        errs = GaugeMetricFamily("ipanon_compliance_scan_errors", "Table values the last scan could not decode")
        errs.add_metric([], m.compliance.scan_errors)
        yield errs
        table = m.table
        rest = GaugeMetricFamily("ipanon_mapping_table_restored", "1 once every assigned partition of the mapping "
                                 "table is restored from its changelog, 0 while restoring (figures above are partial)")
        rest.add_metric([], 1 if getattr(table, "restored", True) else 0)
        yield rest
        pend = GaugeMetricFamily("ipanon_compliance_scan_pending", "Changed table values not opened yet "
                                 "(over the per-scan budget); the figures above leave them out")
        pend.add_metric([], m.compliance.scan_pending)
        yield pend
        lag = GaugeMetricFamily("ipanon_consumer_lag_records", "Records behind the high-water mark, per consumed "
                                "topic role and partition", labels=("topic", "role", "partition"))
        for (topic, part), n in sorted(m.consumer_lag().items()):
            lag.add_metric([topic, m.role_of(topic), str(part)], n)
        yield lag
        st = m.audit_state()
        if st is not None and st.get("ok") is not None:
            m.audit_ok.set(1 if st["ok"] else 0)
            m.audit_records.set(st.get("records", 0))
            if st.get("checked_ms"):
                m.audit_checked.set(st["checked_ms"] / 1000)
            for g in (m.audit_ok, m.audit_records, m.audit_checked):
                yield from g.collect()


def _sensor_class():
    import faust

    class _Sensor(faust.Sensor):
        """Faust sensor feeding ``Metrics`` (records in/out, latencies).  Never raises."""

        def __init__(self, metrics: Metrics, **kw: Any) -> None:
            super().__init__(**kw)
            self.metrics = metrics
            self._in: dict[tuple[str, int, int], float] = {}

        def on_message_in(self, tp, offset, message) -> None:
            m = self.metrics
            try:
                if message.value is None and message.key == HEARTBEAT_KEY:
                    return
                role = m.role_of(tp.topic)
                source, operator = m.raw_labels(message.headers) if role == "raw" else ("", "")
                m.records_in.labels(role, source, operator).inc()
                if role in TIMED_ROLES:
                    self._in[(tp.topic, tp.partition, offset)] = m.mono()
                    if len(self._in) > 200_000:  # never grow without bound if acks are lost
                        self._in.clear()
            except Exception:  # pragma: no cover - metrics must never break consumption
                log.debug("sensor: on_message_in failed", exc_info=True)

        def on_message_out(self, tp, offset, message) -> None:
            m = self.metrics
            try:
                t0 = self._in.pop((tp.topic, tp.partition, offset), None)
                if t0 is None:
                    return
                role = m.role_of(tp.topic)
                m.processing.labels(role).observe(m.mono() - t0)
                if role in REQUEST_ROLES and message.timestamp:
                    m.request_latency.labels(role).observe(max(0.0, m.wall() - float(message.timestamp)))
            except Exception:  # pragma: no cover
                log.debug("sensor: on_message_out failed", exc_info=True)

        def on_send_initiated(self, producer, topic, message, keysize, valsize) -> Any:
            m = self.metrics
            try:
                value = getattr(message, "value", None)
                if value is None:
                    return None
                role = m.role_of(topic if isinstance(topic, str) else str(topic))
                m.records_out.labels(role).inc()
            except Exception:  # pragma: no cover
                log.debug("sensor: on_send_initiated failed", exc_info=True)
            return None

        def on_send_many(self, topic: str, n: int) -> None:
            """``n`` writes with a value to ``topic`` handed over at once (``agents.outbox``):
            what ``n`` calls of ``on_send_initiated`` count."""
            m = self.metrics
            try:
                if n:
                    m.records_out.labels(m.role_of(topic)).inc(n)
            except Exception:  # pragma: no cover
                log.debug("sensor: on_send_many failed", exc_info=True)

    return _Sensor


_FORMATS: set[str] = set()


def _known_formats() -> set[str]:
    if not _FORMATS:
        from stream.parse import formats

        _FORMATS.update(formats())
    return _FORMATS


from .kafka_io import HEARTBEAT_KEY, record_headers  # noqa: E402


def serve(app: Any, m: Metrics) -> None:
    """In a worker: the Faust sensor, the background compliance walk and ``GET /metrics`` on
    the worker's web server (Prometheus text format 0.0.4)."""
    app.sensors.add(_sensor_class()(m))
    m.compliance.background = True  # scrapes read the background walk's result; they never walk themselves
    app.timer(SCAN_CACHE_S, name="ipanon.compliance-walk")(m.compliance.walk_in_background)

    @app.page("/metrics", name="ipanon-metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type=; the header carries it whole
        return web.bytes(m.render(), headers={"Content-Type": CONTENT_TYPE})


class CanaryCollector:
    """Erasure canaries' measured persistence (``agents.canary``), per operator and store, with
    the computed bound and the promise beside it, so one rule compares them
    (deploy/prometheus/ipanon-rules.yml: measured > promise ⇒ critical)."""

    def __init__(self, job: Any, *, wall: Callable[[], float] = time.time) -> None:
        self.job = job
        self.wall = wall

    def collect(self):
        labels = ("operator", "store")
        meas = GaugeMetricFamily("ipanon_canary_persistence_seconds", "Erasure canaries: worst measured time "
                                 "from a canary mapping's end until it was observed gone from the store (still "
                                 "held: until now)", labels=labels)
        bound = GaugeMetricFamily("ipanon_canary_bound_seconds", "Computed worst case after a mapping's end for "
                                  "the store (the retention plan's numbers)", labels=labels)
        prom = GaugeMetricFamily("ipanon_canary_promise_seconds", "The operator's lawful-access promise, beside "
                                 "each store's figure", labels=labels)
        held = GaugeMetricFamily("ipanon_canaries_held", "Canaries the store still holds", labels=labels)
        for f in self.job.figures(int(self.wall() * 1000)):
            lv = [f.operator, f.store]
            if f.measured_ms is not None:
                meas.add_metric(lv, f.measured_ms / 1000)
            if f.bound_ms is not None:
                bound.add_metric(lv, f.bound_ms / 1000)
            if f.promise_ms is not None:
                prom.add_metric(lv, f.promise_ms / 1000)
            held.add_metric(lv, f.open)
        return [meas, bound, prom, held]
