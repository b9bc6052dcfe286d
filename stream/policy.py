"""Retention maths: how long Kafka can physically keep a record, and what topic configs and
table TTLs keep every operator's promise.

A promise P ("IP addresses are deleted within 24 h", REFERENCE.md §1) is a maximum for
*physical* deletion, counted from the end of the mapping.  Kafka deletes nothing at the instant
a record becomes obsolete (DESIGN.md "Hard facts"), so each topic gets a worst-case persistence
bound computed from its configs and the broker's, and the mapping table's TTL is what is left:

    TTL + sweeper period + schedule bucket + max(bound of topics written up to expiry, B_disk) <= P

(the sweeper's schedule hands a key out at most one bucket width after its expiry instant, and
the sweeper runs at least once per period: it deletes within their sum of the expiry instant).
``B_disk`` is the on-disk mapping store's erasure bound (``stream.disk_bound.DiskBound``:
erasure cycle + erasure tick + compaction allowance; ``PlanParams.disk``), 0 when the table
lives in memory.  The store deletes a key at the instant the sweeper writes its changelog
tombstone, so the worker's disk and the derived topics are parallel paths from that instant:
the later of the two ends the worst case (``docs/state-on-disk.md`` has the proof of B_disk).

Worst-case bounds (all terms in ms; ``hb`` is the worker's heartbeat period — segments roll
only on append, so the worker appends to every partition at least every ``hb``; ``skew`` is 0
with ``message.timestamp.type=LogAppendTime`` and ``message.timestamp.after.max.ms`` with
CreateTime, because retention and compaction lag are judged by record timestamps and a producer
clock running ahead would otherwise stretch both):

``cleanup.policy=delete`` — a record written at t lives in a segment whose largest timestamp is
< t + segment.ms (the append after segment.ms rolls); the segment becomes deletable retention.ms
after that, the retention check runs every log.retention.check.interval.ms, and the file is
unlinked file.delete.delay.ms after being marked deleted::

    B_delete = segment.ms + hb + retention.ms + log.retention.check.interval.ms
               + file.delete.delay.ms + skew

(Kafka can also delete an expired *active* segment — it rolls first — so ``hb`` is slack here;
it is kept so the bound does not depend on that detail.)

``cleanup.policy=compact`` — a value superseded (or tombstoned) at t is removed by the first
cleaner pass that sees the newer record in a non-active segment.  The active segment rolls on
the first append after min(segment.ms, max.compaction.lag.ms) (``LogConfig.maxSegmentMs``,
KIP-354), and a log whose oldest dirty record is older than max.compaction.lag.ms is cleanable
whatever its dirty ratio.  One "pass" therefore comes within::

    L = max(roll + hb, max.compaction.lag.ms, min.compaction.lag.ms) + log.cleaner.backoff.ms

The superseded value is gone after one pass; the tombstone itself is kept delete.retention.ms
after the pass that first cleaned it and removed by the next pass (the heartbeats keep the log
dirty, so a next pass comes); the cleaned-away segment files are unlinked after
file.delete.delay.ms::

    B_compact = 2 L + delete.retention.ms + file.delete.delay.ms + skew

``compact,delete`` — whichever mechanism removes the record first: min(B_delete, B_compact).
A disabled cleaner (``log.cleaner.enable=false``) or an unset max.compaction.lag.ms makes the
compact bound infinite (``None``): with compaction alone Kafka gives no time bound at all.
Cleaning itself is assumed to take negligible time next to these terms (one cleaner thread
per broker; a large backlog of other compacted logs can delay a pass — watch the cleaner's
``max-clean-time-secs`` metric).

Topic roles (shared topics hold every operator's data, so each must satisfy the *strictest*
promise among them):

- ``raw`` (raw inputs, bindings repartition, dead-letter, lookup requests): written when the
  event is ingested, at most ``ingest_lag_ms`` after the mapping ends; budget
  min(strictest lawful promise - ingest lag, ``raw_buffer_ms``) — the buffer cap is data
  minimisation: raw topics are a queue, not an archive.
- ``derived`` (table changelogs — any ``…-changelog`` name is compacted — and lookup
  responses; also the right role for Faust reply topics): written up to the expiry
  instant, so their bound is subtracted from the TTL.  Budget: strictest lawful promise / 24,
  at least what the broker can do, at most 1 h.
- ``stats`` / ``aggregates``: pseudonymised records / k-anonymous cells, budgets from the
  strictest statistics promises.  The ``stats`` budget is also bounded by the strictest
  ``erasure`` of a consent_required operator (a withdrawn subscriber's records must be
  physically gone by then; the erasure notices on ``<prefix>-erasures`` share the role).
  ``stats`` topics use **CreateTime**: the worker stamps each record with its bucket start
  (``stream.stats.record_timestamp_ms``) so the timestamp reveals nothing finer than the bucket
  (LogAppendTime put the event time to within a second on every record).  Stamps are never
  later than the worker's clock and the broker refuses any more than
  ``PlanParams.clock_skew_ms`` ahead of its own, so ``skew`` = that allowance; a stamp earlier
  than the write only makes retention delete the record earlier (at most two buckets: the
  plan refuses a stats retention that does not exceed two of the longest bucket).
- ``audit``: hash-chained audit trail without plaintext identity; kept (no promise applies).
- ``evidence``: the erasure canaries' measurements (``<prefix>-canary-results``: synthetic
  canary ids and durations, no personal data), kept ``evidence_retention_ms`` (400 days) so a
  yearly compliance report can read its whole period; no promise applies.
- ``consent``: compacted consent flags; bounded like ``derived`` and reported, no IP promise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping, Optional

from .config import OperatorPolicy, format_duration
from .disk_bound import DiskBound, persistence_ms
from .errors import ConfigError

# Apache Kafka's own defaults (Kafka 4.x documentation) for everything the bounds read.
KAFKA_TOPIC_DEFAULTS: Mapping[str, str] = MappingProxyType({
    "cleanup.policy": "delete",
    "retention.ms": str(7 * 86_400_000),
    "segment.ms": str(7 * 86_400_000),
    "file.delete.delay.ms": "60000",
    "delete.retention.ms": "86400000",
    "max.compaction.lag.ms": str(2**63 - 1),
    "min.compaction.lag.ms": "0",
    "min.cleanable.dirty.ratio": "0.5",
    "message.timestamp.type": "CreateTime",
    "message.timestamp.after.max.ms": str(2**63 - 1),
})
_LONG_MAX = 2**63 - 1

#: Topic roles (see module doc).
ROLES = ("raw", "derived", "stats", "aggregates", "audit", "consent", "evidence")

def make_layout(prefix: str = "ipanon", app_id: str = "ipanon", operators: Iterable[str] = ()) -> Mapping[str, str]:
    """Topic name → role for a deployment.  Mirrors ``agents/topics.py`` (a unit test keeps
    them in step); the Faust table changelog is ``<app id>-<table>-changelog``.  ``operators``:
    one raw topic ``<prefix>-raw-op-<operator>`` each, the only raw topic its collector may
    write on a secure broker."""
    return MappingProxyType({
        f"{prefix}-raw-radius": "raw",
        f"{prefix}-raw-dhcp": "raw",
        f"{prefix}-raw-nat": "raw",
        **{f"{prefix}-raw-op-{op}": "raw" for op in sorted(set(operators))},
        f"{prefix}-bindings": "raw",
        f"{prefix}-deadletter": "raw",
        f"{prefix}-lookup-requests": "raw",
        f"{prefix}-lookup-responses": "derived",
        f"{prefix}-query-requests": "raw",      # lawful-access inbox: requests, approvals, hold commands
        f"{prefix}-query-responses": "derived",  # status replies and sealed answers (no plaintext identity)
        f"{prefix}-holds": "consent",            # compacted: active legal holds (hold id → hold; tombstone on end)
        f"{prefix}-query-state": "consent",      # compacted: the query desk's snapshot (one key)
        f"{app_id}-mappings-changelog": "derived",
        f"{prefix}-stats": "stats",
        # consent withdrawals: the subscriber's pseudonyms per live epoch, for consumers of
        # <prefix>-stats to delete their copies; kept exactly as long as the records they name
        f"{prefix}-erasures": "stats",
        f"{prefix}-aggregates": "aggregates",
        # cell contributions (pseudonyms, bucket, no raw identifier): needed until their
        # bucket is emitted, bounded like the per-record statistics
        f"{prefix}-aggregate-parts": "stats",
        f"{prefix}-audit": "audit",
        f"{prefix}-consent": "consent",
        # erasure canaries' measurements (synthetic ids, durations): the compliance report's period
        f"{prefix}-canary-results": "evidence",
    })


#: Topics that must have exactly one partition: the audit chain has one writer and one order,
#: and the lawful-access inbox, its snapshot and the hold list are owned by that same writer
#: (one partition = one consumer in the group = one query desk; agents/query_agent.py).
SINGLE_PARTITION_SUFFIXES = ("-audit", "-query-requests", "-query-state", "-holds")


def partitions_for(name: str, default: int) -> int:
    """Planned partition count of a topic (``SINGLE_PARTITION_SUFFIXES`` → 1)."""
    return 1 if name.endswith(SINGLE_PARTITION_SUFFIXES) else default


MAPPINGS_CHANGELOG = "ipanon-mappings-changelog"
DEFAULT_LAYOUT: Mapping[str, str] = make_layout()

_HOUR = 3_600_000
_DAY = 24 * _HOUR
_MIN_SEGMENT_MS = 1_000
_MIN_RETENTION_MS = 1_000


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Broker-level settings the bounds need (topic configs cannot override these)."""

    retention_check_interval_ms: int = 300_000     # log.retention.check.interval.ms
    cleaner_backoff_ms: int = 15_000               # log.cleaner.backoff.ms
    segment_delete_delay_ms: int = 60_000          # log.segment.delete.delay.ms (file.delete.delay.ms default)
    cleaner_enabled: bool = True                   # log.cleaner.enable

    @classmethod
    def from_configs(cls, configs: Mapping[str, str]) -> "BrokerSettings":
        """From broker configs (``describe_configs`` on the broker, or a properties dict);
        absent keys take Kafka's defaults."""
        d = cls()

        def num(key: str, default: int) -> int:
            v = configs.get(key)
            if v is None or v == "":
                return default
            try:
                return int(v)
            except ValueError:
                raise ConfigError(f"broker config {key}={v!r} is not an integer") from None

        return cls(
            retention_check_interval_ms=num("log.retention.check.interval.ms", d.retention_check_interval_ms),
            cleaner_backoff_ms=num("log.cleaner.backoff.ms", d.cleaner_backoff_ms),
            segment_delete_delay_ms=num("log.segment.delete.delay.ms", d.segment_delete_delay_ms),
            cleaner_enabled=str(configs.get("log.cleaner.enable", "true")).lower() != "false",
        )


KAFKA_DEFAULTS = BrokerSettings()


@dataclass(frozen=True, slots=True)
class PlanParams:
    """What the worker promises to do, and deployment shape.  The worker must use the same
    ``heartbeat_ms``, ``sweeper_period_ms`` and ``schedule_bucket_ms`` the plan was computed with."""

    heartbeat_ms: int = 60_000          # worker appends to every changelog/response partition at least this often
    sweeper_period_ms: int = 1_000      # the expiry sweeper runs at least this often (agents.settings)
    schedule_bucket_ms: int = 1_000     # … and is handed a key at most this long after its expiry instant
                                        # (agents.mapping_table.SCHEDULE_BUCKET_MS)
    ingest_lag_ms: int = 300_000        # max delay between a mapping's end and its last raw record being written
    raw_buffer_ms: int = _DAY           # raw topics never keep more than this (data minimisation)
    derived_divisor: int = 24           # derived-topic budget = strictest lawful promise / this …
    derived_cap_ms: int = _HOUR         # … capped here
    partitions: int = 4
    replication_factor: int = 1
    audit_retention_ms: int = -1        # audit chain: kept (-1 = forever); holds no plaintext identity
    evidence_retention_ms: int = 400 * 86_400_000  # canary measurements: a yearly report's period and more
    clock_skew_ms: int = 10_000         # CreateTime topics (stats): broker refuses stamps further ahead
    #: the on-disk mapping store's erasure parameters (B_disk = cycle + tick + allowance), the
    #: same ``DiskBound`` the worker's store runs its erasure tick with; None = table in memory
    disk: Optional[DiskBound] = None

    def __post_init__(self) -> None:
        for name in ("heartbeat_ms", "sweeper_period_ms", "raw_buffer_ms", "derived_divisor",
                     "derived_cap_ms", "partitions", "replication_factor"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"plan parameter {name} must be positive")
        if self.ingest_lag_ms < 0:
            raise ConfigError("plan parameter ingest_lag_ms must not be negative")
        if self.schedule_bucket_ms < 0:
            raise ConfigError("plan parameter schedule_bucket_ms must not be negative")
        if self.disk is not None and not isinstance(self.disk, DiskBound):
            raise ConfigError("plan parameter disk must be a stream.disk_bound.DiskBound or None")

    @property
    def disk_bound_ms(self) -> int:
        """``B_disk``: how long a value the sweeper deleted can stay in the worker's store files
        (0 with the table in memory: nothing on the worker's disk outlives the delete)."""
        return 0 if self.disk is None else self.disk.bound_ms

    @property
    def sweeper_delay_ms(self) -> int:
        """The longest the sweeper takes to delete a mapping after its expiry instant."""
        return self.sweeper_period_ms + self.schedule_bucket_ms


# -- bounds from configs ------------------------------------------------------------------


def _num(configs: Mapping[str, str], key: str) -> int:
    v = configs.get(key)
    if v is None:
        v = KAFKA_TOPIC_DEFAULTS[key]
    try:
        return int(float(v)) if "." in str(v) else int(v)
    except ValueError:
        raise ConfigError(f"topic config {key}={v!r} is not a number") from None


def _skew(configs: Mapping[str, str]) -> Optional[int]:
    if configs.get("message.timestamp.type", KAFKA_TOPIC_DEFAULTS["message.timestamp.type"]) == "LogAppendTime":
        return 0
    after = _num(configs, "message.timestamp.after.max.ms")
    return None if after >= _LONG_MAX else after


def _add(*terms: Optional[int]) -> Optional[int]:
    if any(t is None for t in terms):
        return None
    total = sum(terms)  # type: ignore[arg-type]
    return None if total >= _LONG_MAX else total


def delete_bound_ms(configs: Mapping[str, str], broker: BrokerSettings, heartbeat_ms: int) -> Optional[int]:
    """B_delete for these (effective) topic configs; ``None`` = unbounded (retention.ms = -1)."""
    retention = _num(configs, "retention.ms")
    if retention < 0:
        return None
    return _add(_num(configs, "segment.ms"), heartbeat_ms, retention, broker.retention_check_interval_ms,
                _num(configs, "file.delete.delay.ms"), _skew(configs))


def compact_bound_ms(configs: Mapping[str, str], broker: BrokerSettings, heartbeat_ms: int) -> Optional[int]:
    """B_compact (tombstone included); ``None`` when compaction gives no time bound."""
    max_lag = _num(configs, "max.compaction.lag.ms")
    if not broker.cleaner_enabled or max_lag >= _LONG_MAX:
        return None
    roll = min(_num(configs, "segment.ms"), max_lag)
    one_pass = max(roll + heartbeat_ms, max_lag, _num(configs, "min.compaction.lag.ms")) + broker.cleaner_backoff_ms
    return _add(2 * one_pass, _num(configs, "delete.retention.ms"), _num(configs, "file.delete.delay.ms"),
                _skew(configs))


def topic_bound_ms(configs: Mapping[str, str], broker: BrokerSettings, heartbeat_ms: int) -> Optional[int]:
    """Worst-case time a record written at t can still be on disk after t, for any
    ``cleanup.policy``; ``None`` = no bound."""
    policies = {p.strip() for p in configs.get("cleanup.policy", "delete").split(",")}
    bounds = []
    if "delete" in policies:
        bounds.append(delete_bound_ms(configs, broker, heartbeat_ms))
    if "compact" in policies:
        bounds.append(compact_bound_ms(configs, broker, heartbeat_ms))
    finite = [b for b in bounds if b is not None]
    return min(finite) if finite else None


# -- configs from budgets -----------------------------------------------------------------


def _delete_configs(budget_ms: int, broker: BrokerSettings, params: PlanParams,
                    create_time: bool = False) -> Optional[dict[str, str]]:
    """Configs whose B_delete <= budget, keeping as much retention as the budget allows;
    ``None`` if the broker's intervals alone exceed the budget.  ``create_time``: the writer
    sets the timestamps (stats: bucket starts), the skew allowance comes off the retention."""
    fdd = max(1_000, min(60_000, budget_ms // 48))
    seg = max(_MIN_SEGMENT_MS, min(_DAY, budget_ms // 24))
    skew = params.clock_skew_ms if create_time else 0
    retention = budget_ms - seg - params.heartbeat_ms - broker.retention_check_interval_ms - fdd - skew
    if retention < _MIN_RETENTION_MS:
        return None
    cfg = {
        "cleanup.policy": "delete",
        "retention.ms": str(retention),
        "segment.ms": str(seg),
        "file.delete.delay.ms": str(fdd),
        "message.timestamp.type": "LogAppendTime",
    }
    if create_time:
        cfg["message.timestamp.type"] = "CreateTime"
        cfg["message.timestamp.after.max.ms"] = str(skew)
    return cfg


def _compact_configs(budget_ms: int, broker: BrokerSettings, params: PlanParams) -> Optional[dict[str, str]]:
    """Configs whose B_compact <= budget: max.compaction.lag = segment.ms + hb (so one pass is
    seg + hb + backoff), delete.retention.ms = segment.ms, then 3 seg + 2 hb + 2 backoff + fdd
    <= budget."""
    if not broker.cleaner_enabled:
        return None
    fdd = max(1_000, min(60_000, budget_ms // 48))
    seg = (budget_ms - 2 * params.heartbeat_ms - 2 * broker.cleaner_backoff_ms - fdd) // 3
    seg = min(seg, _DAY)
    if seg < _MIN_SEGMENT_MS:
        return None
    return {
        "cleanup.policy": "compact",
        "segment.ms": str(seg),
        "max.compaction.lag.ms": str(seg + params.heartbeat_ms),
        "min.compaction.lag.ms": "0",
        "delete.retention.ms": str(seg),
        "min.cleanable.dirty.ratio": "0.1",
        "file.delete.delay.ms": str(fdd),
        "message.timestamp.type": "LogAppendTime",
    }


def _min_feasible(kind: str, broker: BrokerSettings, params: PlanParams) -> int:
    """Smallest budget ``kind`` configs can meet on this broker (search; the maths is monotone)."""
    make = _compact_configs if kind == "compact" else _delete_configs
    lo, hi = 1, 1_000 * _DAY
    if make(hi, broker, params) is None:
        return _LONG_MAX
    while lo < hi:
        mid = (lo + hi) // 2
        if make(mid, broker, params) is None:
            lo = mid + 1
        else:
            hi = mid
    return lo


# -- the plan -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its configs and what they guarantee.

    ``bound_ms`` is the worst-case persistence of a record after it is written (``None`` =
    kept by design); ``budget_ms`` is the largest bound the plan may rely on — an existing
    topic whose actual bound exceeds it cannot keep the promise (``check_topic``).
    ``governed_by`` names the operator and profile field whose promise set the budget.
    """

    name: str
    role: str
    configs: Mapping[str, str]
    partitions: int
    replication_factor: int
    bound_ms: Optional[int]
    budget_ms: Optional[int]
    governed_by: Optional[tuple[str, str]] = None

    @property
    def cleanup_policy(self) -> str:
        return self.configs["cleanup.policy"]


@dataclass(frozen=True, slots=True)
class OperatorRetention:
    """What the worker needs per operator: ``expiry = end + ttl_ms``.

    ``worst_case_ms`` = ttl + sweeper period + schedule bucket + max(derived-topic bound,
    B_disk): the latest a raw mapping can physically exist after its end, in a topic or in the
    worker's store files; it never exceeds ``promise_ms``.  ``disk_bound_ms`` is 0 when the
    table lives in memory.
    """

    operator: str
    promise_ms: int
    legal_minimum_ms: Optional[int]
    ttl_ms: int
    sweeper_period_ms: int
    schedule_bucket_ms: int
    derived_bound_ms: int
    disk_bound_ms: int = 0

    @property
    def deletion_bound_ms(self) -> int:
        """After the sweeper's delete: the later of the derived topics' bound and B_disk."""
        return max(self.derived_bound_ms, self.disk_bound_ms)

    @property
    def worst_case_ms(self) -> int:
        return persistence_ms(self.ttl_ms, self.sweeper_period_ms + self.schedule_bucket_ms,
                              self.derived_bound_ms, self.disk_bound_ms)


@dataclass(frozen=True, slots=True)
class BoundRow:
    """One line of ``ipanon topics plan``: worst case after the mapping (or record) ends."""

    operator: str
    topic: str
    role: str
    purpose: Optional[str]
    bound_ms: Optional[int]
    promise_ms: Optional[int]

    @property
    def ok(self) -> bool:
        return self.promise_ms is None or (self.bound_ms is not None and self.bound_ms <= self.promise_ms)


@dataclass(frozen=True, slots=True)
class TopicPlan:
    broker: BrokerSettings
    params: PlanParams
    topics: tuple[TopicSpec, ...]
    retention: Mapping[str, OperatorRetention]
    rows: tuple[BoundRow, ...] = field(default=())

    def topic(self, name: str) -> TopicSpec:
        for t in self.topics:
            if t.name == name:
                return t
        raise ConfigError(f"topic {name!r} is not in the plan")

    def configs_for(self, name: str) -> dict[str, str]:
        """Plain dict of a topic's configs (e.g. Faust ``extra_topic_configs``)."""
        return dict(self.topic(name).configs)

    def to_dict(self) -> dict:
        return {
            "broker": {
                "log.retention.check.interval.ms": self.broker.retention_check_interval_ms,
                "log.cleaner.backoff.ms": self.broker.cleaner_backoff_ms,
                "log.segment.delete.delay.ms": self.broker.segment_delete_delay_ms,
                "log.cleaner.enable": self.broker.cleaner_enabled,
            },
            "params": {"heartbeat_ms": self.params.heartbeat_ms,
                       "sweeper_period_ms": self.params.sweeper_period_ms,
                       "schedule_bucket_ms": self.params.schedule_bucket_ms,
                       "ingest_lag_ms": self.params.ingest_lag_ms,
                       "disk": None if self.params.disk is None else {
                           "cycle_ms": self.params.disk.cycle_ms, "tick_ms": self.params.disk.tick_ms,
                           "compaction_allowance_ms": self.params.disk.compaction_allowance_ms,
                           "bound_ms": self.params.disk.bound_ms}},
            "topics": [
                {"name": t.name, "role": t.role, "partitions": t.partitions,
                 "replication_factor": t.replication_factor, "configs": dict(t.configs),
                 "bound_ms": t.bound_ms, "budget_ms": t.budget_ms,
                 "governed_by": list(t.governed_by) if t.governed_by else None}
                for t in self.topics
            ],
            "operators": {
                n: {"promise_ms": r.promise_ms, "legal_minimum_ms": r.legal_minimum_ms, "ttl_ms": r.ttl_ms,
                    "sweeper_period_ms": r.sweeper_period_ms, "schedule_bucket_ms": r.schedule_bucket_ms,
                    "derived_bound_ms": r.derived_bound_ms, "disk_bound_ms": r.disk_bound_ms,
                    "worst_case_ms": r.worst_case_ms}
                for n, r in self.retention.items()
            },
            "rows": [
                {"operator": r.operator, "topic": r.topic, "role": r.role, "purpose": r.purpose,
                 "bound_ms": r.bound_ms, "promise_ms": r.promise_ms, "ok": r.ok}
                for r in self.rows
            ],
        }


def _strictest(operators: Iterable[OperatorPolicy], key) -> tuple[OperatorPolicy, int]:
    ops = sorted(operators, key=lambda o: (key(o), o.name))
    return ops[0], key(ops[0])


def plan_topics(operators: Mapping[str, OperatorPolicy], broker: BrokerSettings = KAFKA_DEFAULTS,
                params: PlanParams = PlanParams(),
                layout: Mapping[str, str] = DEFAULT_LAYOUT) -> TopicPlan:
    """Topic configs and per-operator TTLs that keep every promise on this broker.

    Shared topics get the strictest promise among ``operators`` (named in ``governed_by``).
    Raises ``ConfigError`` naming the operator's file and field when a promise is shorter
    than what the broker can physically guarantee, or the resulting TTL falls below a legal
    minimum.
    """
    if not operators:
        raise ConfigError("no operator profiles: nothing to plan")
    unknown = sorted(set(layout.values()) - set(ROLES))
    if unknown:
        raise ConfigError(f"topic layout uses unknown role {unknown[0]!r}")
    ops = list(operators.values())
    law_op, law_min = _strictest(ops, lambda o: o.lawful_access.promise_ms)
    law_gov = (law_op.name, "purposes.lawful_access.promise")

    def fail(op: OperatorPolicy, fieldname: str, what: str) -> ConfigError:
        return ConfigError(f"{op.file}: {fieldname}: {what}")

    # derived (changelog, responses): written up to the expiry instant
    need = max(_min_feasible("compact", broker, params), _min_feasible("delete", broker, params))
    derived_budget = max(min(law_min // params.derived_divisor, params.derived_cap_ms), need)
    if derived_budget + params.sweeper_delay_ms >= law_min:
        raise fail(law_op, "purposes.lawful_access.promise",
                   f"{format_duration(law_min)} is shorter than what this broker can physically guarantee "
                   f"({format_duration(need)} deletion delay + {format_duration(params.sweeper_delay_ms)} sweeper "
                   f"period and schedule bucket); lower log.retention.check.interval.ms / log.cleaner.backoff.ms or lengthen the promise")

    # raw: written at most ingest_lag after the mapping ends
    raw_budget = min(law_min - params.ingest_lag_ms, params.raw_buffer_ms)
    if _delete_configs(raw_budget, broker, params) is None:
        raise fail(law_op, "purposes.lawful_access.promise",
                   f"{format_duration(law_min)} minus the {format_duration(params.ingest_lag_ms)} ingest lag leaves "
                   f"no room for raw-topic retention on this broker (needs ≥ "
                   f"{format_duration(_min_feasible('delete', broker, params))})")

    st_op, st_min = _strictest(ops, lambda o: o.statistics.promise_ms)
    ag_op, ag_min = _strictest(ops, lambda o: o.statistics.aggregates_promise_ms)
    erasing = [o for o in ops if o.statistics.erasure_ms is not None]
    er_op, er_min = _strictest(erasing, lambda o: o.statistics.erasure_ms) if erasing else (None, None)
    max_bucket = max(o.statistics.bucket_ms for o in ops)

    specs: list[TopicSpec] = []
    for name, role in layout.items():
        gov: Optional[tuple[str, str]] = None
        if role == "raw":
            budget, cfg, gov = raw_budget, _delete_configs(raw_budget, broker, params), law_gov
        elif role in ("derived", "consent"):
            # changelogs (Faust names them ``…-changelog``) and consent are compacted
            compact = role == "consent" or name.endswith("-changelog")
            make = _compact_configs if compact else _delete_configs
            budget, cfg = derived_budget, make(derived_budget, broker, params)
            gov = law_gov if role == "derived" else None
        elif role in ("stats", "aggregates"):
            op, p = (st_op, st_min) if role == "stats" else (ag_op, ag_min)
            fieldname = "purposes.statistics." + ("promise" if role == "stats" else "aggregates_promise")
            if role == "stats" and er_op is not None and er_min < p:
                op, p, fieldname = er_op, er_min, "purposes.statistics.erasure"
            budget = p - params.ingest_lag_ms if role == "stats" else p
            cfg = _delete_configs(budget, broker, params, create_time=role == "stats")
            if cfg is None:
                raise fail(op, fieldname, f"{format_duration(p)} is too short for the {name} topic on this broker")
            if role == "stats" and int(cfg["retention.ms"]) <= 2 * max_bucket:
                # records are stamped with their bucket start, up to two buckets before the write
                raise fail(op, fieldname, f"{format_duration(p)} leaves {name} a retention of "
                                          f"{format_duration(int(cfg['retention.ms']))}, not more than two statistics "
                                          f"buckets ({format_duration(max_bucket)}): records stamped with their bucket "
                                          f"start would be deleted on arrival; shorten purposes.statistics.bucket")
            gov = (op.name, fieldname)
        elif role == "evidence":  # canary measurements: no personal data, kept for the yearly report
            budget = None
            # planned like a delete topic with all its intervals, so the plan and the start-up
            # check (which reads the broker's defaults for whatever is unset) get one bound
            cfg = _delete_configs(params.evidence_retention_ms, broker, params)
        else:  # audit
            budget = None
            cfg = {"cleanup.policy": "delete", "retention.ms": str(params.audit_retention_ms)}
        assert cfg is not None
        bound = topic_bound_ms(cfg, broker, params.heartbeat_ms)
        assert budget is None or (bound is not None and bound <= budget), (name, bound, budget)
        specs.append(TopicSpec(name, role, MappingProxyType(dict(sorted(cfg.items()))),
                               partitions_for(name, params.partitions),
                               params.replication_factor, bound, budget, gov))

    derived_bound = max((s.bound_ms or 0) for s in specs if s.role == "derived") if any(
        s.role == "derived" for s in specs) else 0
    # after the sweeper's delete: the derived topics and the worker's store files in parallel
    disk_bound = params.disk_bound_ms
    deletion = max(derived_bound, disk_bound)
    delay = deletion + params.sweeper_delay_ms
    retention: dict[str, OperatorRetention] = {}
    for op in sorted(ops, key=lambda o: o.name):
        la = op.lawful_access
        ttl = la.promise_ms - delay
        if ttl <= 0:
            raise fail(op, "purposes.lawful_access.promise",
                       f"{format_duration(la.promise_ms)} leaves no time to keep mappings after the "
                       f"{format_duration(delay)} deletion delay{_deletion_terms(derived_bound, params)}")
        if la.legal_minimum_ms is not None and ttl < la.legal_minimum_ms:
            raise fail(op, "purposes.lawful_access.legal_minimum",
                       f"{format_duration(la.legal_minimum_ms)} cannot be met: promise "
                       f"{format_duration(la.promise_ms)} minus the {format_duration(delay)} "
                       f"deletion delay{_deletion_terms(derived_bound, params)} leaves a TTL of {format_duration(ttl)}")
        retention[op.name] = OperatorRetention(op.name, la.promise_ms, la.legal_minimum_ms, ttl,
                                               params.sweeper_period_ms, params.schedule_bucket_ms, derived_bound,
                                               disk_bound)

    rows = []
    for op in sorted(ops, key=lambda o: o.name):
        r = retention[op.name]
        for s in specs:
            purpose, promise = {
                "raw": ("lawful_access", op.lawful_access.promise_ms),
                "derived": ("lawful_access", op.lawful_access.promise_ms),
                "stats": ("statistics", op.statistics.promise_ms),
                "aggregates": ("statistics", op.statistics.aggregates_promise_ms),
            }.get(s.role, (None, None))
            row = BoundRow(op.name, s.name, s.role, purpose, row_bound_ms(s.role, s.bound_ms, r, params), promise)
            assert row.ok, row
            rows.append(row)
            if s.role == "stats" and op.statistics.erasure_ms is not None:
                # consent withdrawal: records written up to then (in flight: within the ingest
                # lag) are physically gone within the topic's bound (docs/statistics.md)
                row = BoundRow(op.name, s.name, s.role, "erasure", row_bound_ms(s.role, s.bound_ms, r, params),
                               op.statistics.erasure_ms)
                assert row.ok, row
                rows.append(row)
    return TopicPlan(broker, params, tuple(specs), MappingProxyType(retention), tuple(rows))


def _deletion_terms(derived_bound: int, params: PlanParams) -> str:
    """The deletion delay's terms, for a refusal: which of the derived-topic bound and B_disk
    governs, and what B_disk is made of, so the operator knows which setting to change."""
    d = format_duration
    sweep = f"sweeper {d(params.sweeper_period_ms)} + schedule bucket {d(params.schedule_bucket_ms)}"
    if params.disk is None:
        return f" ({sweep} + derived-topic bound {d(derived_bound)})"
    b = params.disk
    disk = (f"B_disk {d(b.bound_ms)} ({b.bound_ms} ms) = erasure cycle {d(b.cycle_ms)} + erasure tick {d(b.tick_ms)} "
            f"+ compaction allowance {d(b.compaction_allowance_ms)}")
    if b.bound_ms > derived_bound:
        return (f" ({sweep} + max(derived-topic bound {d(derived_bound)}, {disk}): the on-disk store's erasure "
                f"term B_disk governs; shorten its erasure cycle, tick or allowance, or lengthen the promise)")
    return f" ({sweep} + max(derived-topic bound {d(derived_bound)}, {disk}))"


def row_bound_ms(role: str, topic_bound_ms: Optional[int], retention: OperatorRetention,
                 params: PlanParams) -> Optional[int]:
    """Worst case after a mapping ends for one topic: raw and stats records are written up to the
    ingest lag after the end, derived ones (changelog, responses) up to the expiry instant plus
    the sweeper's delay; then the topic keeps them for its bound."""
    if role in ("raw", "stats"):
        return _add(params.ingest_lag_ms, topic_bound_ms)
    if role == "derived":
        return _add(retention.ttl_ms, params.sweeper_delay_ms, topic_bound_ms)
    return topic_bound_ms


def rows_with_bounds(plan: TopicPlan, bounds: Mapping[str, Optional[int]]) -> tuple[BoundRow, ...]:
    """The plan's rows with each topic's *actual* bound (from its configs on the broker) in place
    of the planned one: what the worker's own TTL, sweeper and ingest lag really give.  A row
    that is not ``ok`` means the topics were set up for other parameters than the worker's."""
    out = []
    for r in plan.rows:
        if r.topic in bounds:
            r = BoundRow(r.operator, r.topic, r.role, r.purpose,
                         row_bound_ms(r.role, bounds[r.topic], plan.retention[r.operator], plan.params), r.promise_ms)
        out.append(r)
    return tuple(out)


# -- what the worker calls ----------------------------------------------------------------


def expiry_ms(end_ms: int, retention: OperatorRetention) -> int:
    """The instant the sweeper must delete a mapping that ended at ``end_ms`` (half-open
    interval end).  A binding arriving with ``now_ms >= expiry_ms(...)`` must not be stored."""
    return end_ms + retention.ttl_ms


def check_topic(spec: TopicSpec, actual: Mapping[str, str], broker: BrokerSettings,
                heartbeat_ms: int) -> Optional[int]:
    """Compute an existing topic's bound from its *effective* configs (``describe_configs``
    values, defaults included) and raise ``ConfigError`` if the plan cannot rely on it.

    Refuses: a changelog/consent topic that is not compacted (live state would be deleted);
    a bounded topic whose bound is infinite or exceeds ``spec.budget_ms``.  Returns the bound.
    """
    policies = {p.strip() for p in actual.get("cleanup.policy", "delete").split(",")}
    want = {p.strip() for p in spec.cleanup_policy.split(",")}
    if "compact" in want and "compact" not in policies:
        raise ConfigError(f"topic {spec.name}: cleanup.policy={actual.get('cleanup.policy', 'delete')} but it must be "
                          f"compact (it holds live table state); recreate the topic")
    if "compact" in policies and "compact" not in want:
        raise ConfigError(f"topic {spec.name}: cleanup.policy={actual.get('cleanup.policy')} but the plan says "
                          f"{spec.cleanup_policy}; recreate the topic")
    bound = topic_bound_ms(actual, broker, heartbeat_ms)
    if spec.budget_ms is None:
        return bound
    if bound is None or bound > spec.budget_ms:
        who = f" set by {spec.governed_by[0]}'s {spec.governed_by[1]}" if spec.governed_by else ""
        keys = ("retention.ms", "segment.ms", "max.compaction.lag.ms", "delete.retention.ms",
                "file.delete.delay.ms", "message.timestamp.type")
        shown = ", ".join(f"{k}={actual[k]}" for k in keys if k in actual)
        raise ConfigError(f"topic {spec.name}: worst-case persistence {format_duration(bound)} exceeds the "
                          f"{format_duration(spec.budget_ms)} budget{who} ({shown}); "
                          f"run `ipanon topics apply --alter` or fix the topic by hand")
    return bound


def config_differences(spec: TopicSpec, actual: Mapping[str, str]) -> dict[str, tuple[Optional[str], str]]:
    """Planned configs whose actual value differs: ``{key: (actual, planned)}``."""
    out = {}
    for k, v in spec.configs.items():
        a = actual.get(k)
        if a != v:
            out[k] = (a, v)
    return out
