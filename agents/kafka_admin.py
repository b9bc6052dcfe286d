"""Create and verify ipanon's topics with the configs ``stream.policy`` computes (kafka-python).

Three entry points:

- ``read_broker_settings(admin)`` — the broker-level intervals the bounds depend on, read back
  with ``describe_configs`` on the broker resource (they cannot be set per topic);
- ``apply_plan(admin, plan)`` — ``ipanon topics apply``: create missing topics with exactly the
  planned configs; for existing ones alter where safe, otherwise refuse (see ``apply_plan``);
- ``verify_topics(admin, plan)`` — what the worker calls at start-up: every planned topic that
  exists must keep its budget (``stream.policy.check_topic``), else ``ConfigError`` and the
  worker does not start (Faust applies ``extra_topic_configs`` only when it creates
  a topic, DESIGN.md "Hard facts").

``admin`` is a ``kafka.KafkaAdminClient``; ``admin_client(bootstrap)`` makes one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from stream.config import format_duration
from stream.errors import ConfigError
from stream.policy import BrokerSettings, TopicPlan, TopicSpec, check_topic, config_differences, topic_bound_ms

#: Broker configs read back for the bounds (plus the topic-default fallbacks, for the record).
BROKER_KEYS = ("log.retention.check.interval.ms", "log.cleaner.backoff.ms", "log.segment.delete.delay.ms",
               "log.cleaner.enable")


def admin_client(bootstrap: str, security=None):
    """A ``KafkaAdminClient`` (``agents.kafka_clients``); ``security``: ``agents.security.KafkaSecurity`` (default: the
    process's, from the environment)."""
    from .kafka_clients import Clients

    return Clients(bootstrap, security).admin(client_id="ipanon-topics")


def read_broker_settings(admin) -> tuple[BrokerSettings, dict[str, str]]:
    """``BrokerSettings`` from ``describe_configs`` of every broker; with several brokers the
    *slowest* value of each interval wins (any of them may lead a partition)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    cluster = admin.describe_cluster()
    ids = sorted(b["broker_id"] for b in cluster["brokers"])
    if not ids:
        raise ConfigError("the cluster reports no brokers")
    res = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(i)) for i in ids],
                                 config_filter="all")
    merged: dict[str, str] = {}
    for name, configs in res.get("broker", {}).items():
        for key in BROKER_KEYS:
            v = configs.get(key, {}).get("value")
            if v is None:
                continue
            if key == "log.cleaner.enable":
                merged[key] = "false" if v == "false" or merged.get(key) == "false" else "true"
            else:
                merged[key] = str(max(int(v), int(merged.get(key, v))))
    return BrokerSettings.from_configs(merged), merged


def topic_configs(admin, names: Iterable[str]) -> dict[str, dict[str, str]]:
    """Effective configs (defaults included) of existing topics, by name."""
    from kafka.admin import ConfigResource, ConfigResourceType

    names = list(names)
    if not names:
        return {}
    res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names],
                                 config_filter="all")
    return {n: {k: v.get("value") for k, v in cfg.items() if v.get("value") is not None}
            for n, cfg in res.get("topic", {}).items()}


def _partitions(admin, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}


@dataclass(frozen=True, slots=True)
class TopicOutcome:
    """What ``apply_plan`` did with one topic.  ``action``: created | ok | altered | refused."""

    name: str
    role: str
    action: str
    bound_ms: Optional[int]
    budget_ms: Optional[int]
    detail: str = ""

    def to_dict(self) -> dict:
        return {"topic": self.name, "role": self.role, "action": self.action, "bound_ms": self.bound_ms,
                "budget_ms": self.budget_ms, "detail": self.detail}


def _alter(admin, name: str, changes: Mapping[str, str], timeout_s: float = 15.0) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=dict(changes))])
    status = res.get("topic", {}).get(name)
    if status not in ("OK", None) and not (hasattr(status, "errno") and status.errno == 0):
        raise ConfigError(f"topic {name}: altering configs failed: {status}")
    # KRaft applies the change through the metadata log: a describe right after an "OK" can
    # still show the old values (seen on Kafka 4.1).  Report only what the broker shows.
    deadline = time.monotonic() + timeout_s
    while True:
        now = topic_configs(admin, [name]).get(name, {})
        if all(now.get(k) == v for k, v in changes.items()):
            return
        if time.monotonic() >= deadline:
            raise ConfigError(f"topic {name}: the broker accepted new configs but does not show them after "
                              f"{timeout_s:.0f}s; run `ipanon topics apply` again")
        time.sleep(0.2)


def apply_plan(admin, plan: TopicPlan, *, alter_unsafe: bool = False) -> list[TopicOutcome]:
    """Create or verify every planned topic.

    - missing: created with the planned partitions, replication factor and configs;
    - existing and keeping its budget: configs that differ from the plan are altered to the
      plan (safe: both the old and the new configs keep every promise) — ``altered``;
    - existing but breaking its budget: ``refused`` with the reason, unless ``alter_unsafe``
      (``--alter``), which alters it to the plan (the broker then deletes data older than
      the new retention at its next check);
    - a cleanup.policy that differs from the plan is always refused (turning a changelog into
      a delete topic would drop live state; the other way round keeps data unboundedly).
    Partition counts are never changed (keyed data would move); a mismatch is reported.
    """
    existing = set(admin.list_topics())
    planned = [t.name for t in plan.topics]
    to_create = [t for t in plan.topics if t.name not in existing]
    if to_create:
        admin.create_topics({t.name: {"num_partitions": t.partitions, "replication_factor": t.replication_factor,
                                      "configs": dict(t.configs)} for t in to_create},
                            wait_for_metadata=True)
    present = [n for n in planned if n in existing]
    actual = topic_configs(admin, present)
    parts = _partitions(admin, present)
    hb = plan.params.heartbeat_ms
    out = []
    for spec in plan.topics:
        if spec.name not in existing:
            out.append(TopicOutcome(spec.name, spec.role, "created", spec.bound_ms, spec.budget_ms))
            continue
        cfg = actual.get(spec.name, {})
        note = "" if parts.get(spec.name) == spec.partitions else \
            f"; has {parts.get(spec.name)} partitions, plan says {spec.partitions} (not changed)"
        diffs = config_differences(spec, cfg)
        try:
            bound = check_topic(spec, cfg, plan.broker, hb)
        except ConfigError as e:
            if alter_unsafe and "cleanup.policy" not in diffs:
                _alter(admin, spec.name, {k: v for k, (_, v) in diffs.items()})
                out.append(TopicOutcome(spec.name, spec.role, "altered", spec.bound_ms, spec.budget_ms,
                                        f"was: {e}{note}"))
            else:
                out.append(TopicOutcome(spec.name, spec.role, "refused", topic_bound_ms(cfg, plan.broker, hb),
                                        spec.budget_ms, f"{e}{note}"))
            continue
        if diffs:
            _alter(admin, spec.name, {k: v for k, (_, v) in diffs.items()})
            shown = ", ".join(f"{k} {a}→{v}" for k, (a, v) in sorted(diffs.items()))
            out.append(TopicOutcome(spec.name, spec.role, "altered", spec.bound_ms, spec.budget_ms,
                                    f"{shown}{note}"))
        else:
            out.append(TopicOutcome(spec.name, spec.role, "ok", bound, spec.budget_ms, note.lstrip("; ")))
    return out


def verify_topics(admin, plan: TopicPlan, *, require_all: bool = False,
                  names: Optional[Iterable[str]] = None) -> dict[str, Optional[int]]:
    """Worker start-up check: compute each existing planned topic's bound from its actual
    configs and this broker's settings; raise one ``ConfigError`` listing every topic that
    cannot keep its promise (and, with ``require_all``, every missing one).  Returns the
    bound per checked topic.  The plan's broker settings should come from
    ``read_broker_settings`` so a slower production broker is caught too."""
    wanted = [t for t in plan.topics if names is None or t.name in set(names)]
    existing = set(admin.list_topics())
    problems: list[str] = []
    if require_all:
        problems += [f"topic {t.name} does not exist: run `ipanon topics apply`" for t in wanted
                     if t.name not in existing]
    actual = topic_configs(admin, [t.name for t in wanted if t.name in existing])
    bounds: dict[str, Optional[int]] = {}
    for spec in wanted:
        if spec.name not in actual:
            continue
        try:
            bounds[spec.name] = check_topic(spec, actual[spec.name], plan.broker, plan.params.heartbeat_ms)
        except ConfigError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else
                          f"{len(problems)} topics cannot keep their promises: " + " | ".join(problems))
    return bounds


def describe_outcomes(outcomes: list[TopicOutcome]) -> str:
    w = max(len(o.name) for o in outcomes)
    lines = [f"{'topic':<{w}}  {'action':<8}  {'bound':>10}  {'budget':>10}  detail"]
    for o in outcomes:
        lines.append(f"{o.name:<{w}}  {o.action:<8}  {format_duration(o.bound_ms):>10}  "
                     f"{format_duration(o.budget_ms):>10}  {o.detail}")
    return "\n".join(lines)


def spec_summary(spec: TopicSpec) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.configs.items())


def prepare_retention(admin, operators, params=None, layout=None, *, require_all: bool = True) -> TopicPlan:
    """Worker start-up in one call: read this broker's settings, plan with them, and verify
    every planned topic (``require_all``: missing topics are an error too — run
    ``ipanon topics apply`` first).  Returns the plan; use ``plan.retention[op]`` with
    ``stream.policy.expiry_ms`` and ``plan.configs_for(changelog)`` for Faust's
    ``extra_topic_configs``.  Raises ``ConfigError`` (the worker must not start)."""
    from stream.policy import DEFAULT_LAYOUT, PlanParams, plan_topics, rows_with_bounds

    broker, _ = read_broker_settings(admin)
    plan = plan_topics(operators, broker, params or PlanParams(), layout or DEFAULT_LAYOUT)
    bounds = verify_topics(admin, plan, require_all=require_all)
    # each topic within its budget is not enough: with this worker's TTL, sweeper period and
    # ingest lag, every operator's promise must hold with the bounds the topics really have
    broken = [r for r in rows_with_bounds(plan, bounds) if not r.ok]
    if broken:
        r = broken[0]
        raise ConfigError(f"{len(broken)} promise(s) not kept with this worker's parameters, e.g. {r.operator}'s "
                          f"{r.purpose} promise {format_duration(r.promise_ms)}: {r.topic} gives "
                          f"{format_duration(r.bound_ms)}; the topics were applied with other parameters — run "
                          f"`ipanon topics apply --alter` with the worker's settings")
    return plan
