"""``ipanon topics apply`` against the real local broker: topics are created with exactly the
computed configs (read back with describe_configs), broker settings are read from the broker,
and an existing topic that cannot keep a promise is refused (or fixed with --alter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.broker import LOCAL_OVERRIDES
from agents.kafka_admin import admin_client, apply_plan, read_broker_settings, topic_configs, verify_topics
from stream.config import load_operators
from stream.errors import ConfigError
from stream.policy import BrokerSettings, PlanParams, make_layout, plan_topics

OPERATORS = Path(__file__).resolve().parents[2] / "config" / "operators"
WEEK_MS = str(7 * 86_400_000)


@pytest.fixture
def admin(bootstrap):
    a = admin_client(bootstrap)
    try:
        yield a
    finally:
        a.close()


def _plan(admin, prefix):
    broker, _ = read_broker_settings(admin)
    return plan_topics(load_operators(OPERATORS), broker, PlanParams(), make_layout(prefix, prefix))


def test_broker_settings_are_read_from_the_broker(admin):
    broker, raw = read_broker_settings(admin)
    assert broker == BrokerSettings.from_configs(LOCAL_OVERRIDES)
    assert raw["log.retention.check.interval.ms"] == LOCAL_OVERRIDES["log.retention.check.interval.ms"]


def test_apply_creates_topics_with_exactly_the_planned_configs(admin, unique):
    prefix = f"t{unique}"
    plan = _plan(admin, prefix)
    outcomes = apply_plan(admin, plan)
    assert {o.action for o in outcomes} == {"created"}
    actual = topic_configs(admin, [t.name for t in plan.topics])
    for spec in plan.topics:
        for key, value in spec.configs.items():
            assert actual[spec.name][key] == value, (spec.name, key)
    parts = {t["name"]: len(t["partitions"]) for t in admin.describe_topics([t.name for t in plan.topics])}
    assert parts == {t.name: t.partitions for t in plan.topics}
    assert {n for n, k in parts.items() if k == 1} == {f"{prefix}-audit", f"{prefix}-query-requests",
                                                      f"{prefix}-query-state", f"{prefix}-holds"}
    assert set(parts.values()) == {1, plan.params.partitions}
    # the start-up check passes and reports the planned bounds
    bounds = verify_topics(admin, plan, require_all=True)
    assert bounds == {t.name: t.bound_ms for t in plan.topics}
    # applying again changes nothing
    assert {o.action for o in apply_plan(admin, plan)} == {"ok"}


def test_existing_topic_with_retention_too_long_is_refused(admin, unique, capsys):
    from agents.cli import main

    prefix = f"t{unique}"
    raw = f"{prefix}-raw-radius"
    admin.create_topics({raw: {"num_partitions": 4, "replication_factor": 1,
                               "configs": {"retention.ms": WEEK_MS}}}, wait_for_metadata=True)
    plan = _plan(admin, prefix)
    outcome = {o.name: o for o in apply_plan(admin, plan)}[raw]
    assert outcome.action == "refused"
    assert "retention.ms=604800000" in outcome.detail and "connect2ip" in outcome.detail
    # refused means untouched
    assert topic_configs(admin, [raw])[raw]["retention.ms"] == WEEK_MS
    # the worker's start-up check refuses too
    with pytest.raises(ConfigError, match=raw):
        verify_topics(admin, plan)
    # the CLI exits 2 with one clear line naming the topic
    rc = main(["topics", "apply", "--bootstrap", admin.config["bootstrap_servers"], "--prefix", prefix,
               "--app-id", prefix])
    err = capsys.readouterr().err
    assert rc == 2
    assert raw in err and "exceeds" in err and "--alter" in err


def test_alter_fixes_a_topic_that_breaks_a_promise(admin, unique):
    prefix = f"t{unique}"
    raw = f"{prefix}-bindings"
    admin.create_topics({raw: {"num_partitions": 4, "replication_factor": 1,
                               "configs": {"retention.ms": WEEK_MS}}}, wait_for_metadata=True)
    plan = _plan(admin, prefix)
    outcome = {o.name: o for o in apply_plan(admin, plan, alter_unsafe=True)}[raw]
    assert outcome.action == "altered"
    assert topic_configs(admin, [raw])[raw]["retention.ms"] == plan.configs_for(raw)["retention.ms"]
    verify_topics(admin, plan, require_all=True)


def test_compliant_but_different_topic_is_aligned_to_the_plan(admin, unique):
    prefix = f"t{unique}"
    stats = f"{prefix}-stats"
    admin.create_topics({stats: {"num_partitions": 4, "replication_factor": 1,
                                 "configs": {"retention.ms": "60000", "segment.ms": "60000",
                                             "message.timestamp.type": "LogAppendTime"}}},
                        wait_for_metadata=True)
    plan = _plan(admin, prefix)
    outcome = {o.name: o for o in apply_plan(admin, plan)}[stats]
    assert outcome.action == "altered" and "retention.ms 60000→" in outcome.detail
    assert topic_configs(admin, [stats])[stats]["retention.ms"] == plan.configs_for(stats)["retention.ms"]


def test_changelog_with_delete_policy_is_never_altered(admin, unique):
    prefix = f"t{unique}"
    cl = f"{prefix}-mappings-changelog"
    admin.create_topics({cl: {"num_partitions": 4, "replication_factor": 1, "configs": {}}},
                        wait_for_metadata=True)
    plan = _plan(admin, prefix)
    outcome = {o.name: o for o in apply_plan(admin, plan, alter_unsafe=True)}[cl]
    assert outcome.action == "refused" and "must be compact" in outcome.detail
    assert topic_configs(admin, [cl])[cl]["cleanup.policy"] == "delete"


def test_prepare_retention_is_the_worker_startup_check(admin, unique):
    from agents.kafka_admin import prepare_retention
    from stream.policy import expiry_ms

    prefix = f"t{unique}"
    layout = make_layout(prefix, prefix)
    ops = load_operators(OPERATORS)
    with pytest.raises(ConfigError, match="does not exist"):
        prepare_retention(admin, ops, layout=layout)
    apply_plan(admin, _plan(admin, prefix))
    plan = prepare_retention(admin, ops, layout=layout)
    r = plan.retention["connect2ip"]
    assert expiry_ms(0, r) == r.ttl_ms and r.worst_case_ms <= 86_400_000
    # a topic altered behind our back after apply makes the next start-up fail
    from agents.kafka_admin import _alter

    _alter(admin, f"{prefix}-mappings-changelog", {"max.compaction.lag.ms": str(2**63 - 1)})
    with pytest.raises(ConfigError, match=f"{prefix}-mappings-changelog"):
        prepare_retention(admin, ops, layout=layout)
