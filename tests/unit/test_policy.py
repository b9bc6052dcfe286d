"""Deletion-bound maths and the topic plan (stream/policy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from stream.config import load_operators, parse_operator
from stream.errors import ConfigError
from stream.policy import (DEFAULT_LAYOUT, KAFKA_DEFAULTS, MAPPINGS_CHANGELOG, BrokerSettings, PlanParams,
                           check_topic, compact_bound_ms, config_differences, delete_bound_ms, expiry_ms,
                           plan_topics, topic_bound_ms)

OPERATORS = Path(__file__).resolve().parents[2] / "config" / "operators"
DAY = 86_400_000
LOCAL = BrokerSettings.from_configs({"log.retention.check.interval.ms": "5000", "log.cleaner.backoff.ms": "1000",
                                     "log.segment.delete.delay.ms": "1000"})


def op(name: str, promise: str, legal_minimum: str | None = None, stats: str | None = None):
    lm = f'legal_minimum = "{legal_minimum}"\n' if legal_minimum else ""
    return parse_operator(
        f'name = "{name}"\n[identity]\n[purposes.lawful_access]\npromise = "{promise}"\n{lm}'
        f'[purposes.statistics]\npromise = "{stats or promise}"\nconsent_required = false\n'
        # stats records are stamped with their bucket start: the plan wants retention > 2 buckets
        f'bucket = "5s"\n',
        file=f"{name}.toml")


# -- bounds -------------------------------------------------------------------------------

def test_delete_bound_is_the_documented_sum():
    cfg = {"cleanup.policy": "delete", "segment.ms": "1000", "retention.ms": "20000",
           "file.delete.delay.ms": "300", "message.timestamp.type": "LogAppendTime"}
    b = BrokerSettings(retention_check_interval_ms=5000, cleaner_backoff_ms=1, segment_delete_delay_ms=1)
    assert delete_bound_ms(cfg, b, heartbeat_ms=700) == 1000 + 700 + 20000 + 5000 + 300
    assert topic_bound_ms(cfg, b, 700) == 27000


def test_kafka_default_delete_topic_with_logappendtime_keeps_data_over_two_weeks():
    cfg = {"message.timestamp.type": "LogAppendTime"}  # everything else: Kafka defaults
    assert topic_bound_ms(cfg, KAFKA_DEFAULTS, 60_000) == 7 * DAY + 60_000 + 7 * DAY + 300_000 + 60_000


def test_createtime_adds_the_allowed_future_skew_and_unlimited_skew_is_unbounded():
    cfg = {"retention.ms": "1000", "segment.ms": "1000", "file.delete.delay.ms": "0"}
    assert delete_bound_ms(cfg, LOCAL, 0) is None  # CreateTime, after.max.ms = Long.MAX by default
    cfg["message.timestamp.after.max.ms"] = "3600000"
    assert delete_bound_ms(cfg, LOCAL, 0) == 1000 + 1000 + 5000 + 3_600_000


def test_infinite_retention_is_unbounded():
    assert delete_bound_ms({"retention.ms": "-1", "message.timestamp.type": "LogAppendTime"}, LOCAL, 0) is None


def test_compact_bound_is_the_documented_sum():
    cfg = {"cleanup.policy": "compact", "segment.ms": "10000", "max.compaction.lag.ms": "12000",
           "min.compaction.lag.ms": "0", "delete.retention.ms": "4000", "file.delete.delay.ms": "500",
           "message.timestamp.type": "LogAppendTime"}
    hb, backoff = 1000, 1000
    b = BrokerSettings(retention_check_interval_ms=99, cleaner_backoff_ms=backoff, segment_delete_delay_ms=1)
    one_pass = max(10000 + hb, 12000) + backoff
    assert compact_bound_ms(cfg, b, hb) == 2 * one_pass + 4000 + 500


def test_compact_roll_is_capped_by_max_compaction_lag():
    # LogConfig.maxSegmentMs (KIP-354): a compacted log rolls at min(segment.ms, max.compaction.lag.ms)
    cfg = {"segment.ms": str(7 * DAY), "max.compaction.lag.ms": "60000", "delete.retention.ms": "0",
           "file.delete.delay.ms": "0", "message.timestamp.type": "LogAppendTime"}
    b = BrokerSettings(cleaner_backoff_ms=0)
    assert compact_bound_ms(cfg, b, 5000) == 2 * (60000 + 5000)


def test_compaction_without_max_lag_or_cleaner_gives_no_bound():
    cfg = {"cleanup.policy": "compact", "message.timestamp.type": "LogAppendTime"}
    assert compact_bound_ms(cfg, LOCAL, 1000) is None
    cfg["max.compaction.lag.ms"] = "1000"
    assert compact_bound_ms(cfg, LOCAL, 1000) is not None
    assert compact_bound_ms(cfg, BrokerSettings(cleaner_enabled=False), 1000) is None


def test_compact_delete_takes_the_earlier_mechanism():
    cfg = {"cleanup.policy": "compact,delete", "segment.ms": "1000", "retention.ms": "1000",
           "max.compaction.lag.ms": "100000", "delete.retention.ms": "0", "file.delete.delay.ms": "0",
           "message.timestamp.type": "LogAppendTime"}
    d = delete_bound_ms(cfg, LOCAL, 0)
    c = compact_bound_ms(cfg, LOCAL, 0)
    assert d < c
    assert topic_bound_ms(cfg, LOCAL, 0) == d


def test_broker_settings_from_configs():
    b = BrokerSettings.from_configs({"log.retention.check.interval.ms": "5000", "log.cleaner.enable": "false"})
    assert b.retention_check_interval_ms == 5000
    assert b.cleaner_backoff_ms == 15_000 and b.segment_delete_delay_ms == 60_000
    assert b.cleaner_enabled is False
    with pytest.raises(ConfigError, match="log.cleaner.backoff.ms"):
        BrokerSettings.from_configs({"log.cleaner.backoff.ms": "soon"})


# -- the plan -----------------------------------------------------------------------------

@pytest.mark.parametrize("broker", [KAFKA_DEFAULTS, LOCAL], ids=["kafka-defaults", "local"])
def test_seed_plan_keeps_every_promise(broker):
    ops = load_operators(OPERATORS)
    plan = plan_topics(ops, broker)
    params = plan.params
    for spec in plan.topics:
        # the bound recomputed from the planned configs is what the plan says, within budget
        assert topic_bound_ms(spec.configs, broker, params.heartbeat_ms) == spec.bound_ms
        if spec.budget_ms is not None:
            assert spec.bound_ms <= spec.budget_ms
    for name, r in plan.retention.items():
        assert r.ttl_ms + params.sweeper_period_ms + r.derived_bound_ms <= ops[name].lawful_access.promise_ms
        assert r.worst_case_ms <= r.promise_ms
    assert plan.retention["hektor"].ttl_ms >= 306 * DAY
    assert all(row.ok for row in plan.rows)
    # one row per operator and topic, plus the erasure row of each consent_required operator
    # on every stats-role topic (withdrawal → physically gone: docs/statistics.md)
    erasing = [o for o in ops.values() if o.statistics.consent_required]
    stats_topics = [t for t in plan.topics if t.role == "stats"]
    assert len(plan.rows) == len(ops) * len(plan.topics) + len(erasing) * len(stats_topics)
    assert {(r.operator, r.topic) for r in plan.rows if r.purpose == "erasure"} == \
        {(o.name, t.name) for o in erasing for t in stats_topics}
    for t in stats_topics:  # bucket-start timestamps: CreateTime with a bounded skew
        assert t.configs["message.timestamp.type"] == "CreateTime"
        assert int(t.configs["message.timestamp.after.max.ms"]) == params.clock_skew_ms


def test_shared_topics_follow_the_strictest_promise():
    ops = load_operators(OPERATORS)
    plan = plan_topics(ops, LOCAL)
    raw = plan.topic("ipanon-raw-radius")
    assert raw.governed_by == ("connect2ip", "purposes.lawful_access.promise")
    # raw budget = strictest promise (24h) minus the ingest lag
    assert raw.budget_ms == DAY - plan.params.ingest_lag_ms
    assert plan.topic("ipanon-stats").governed_by == ("connect2ip", "purposes.statistics.promise")
    # without Connect2IP the next strictest (Framsteget, 21d) governs and raw topics keep the
    # 24h buffer cap; the changelog budget stays capped at 1h
    plan2 = plan_topics({k: v for k, v in ops.items() if k != "connect2ip"}, LOCAL)
    assert plan2.topic("ipanon-raw-radius").governed_by == ("framsteget", "purposes.lawful_access.promise")
    assert plan2.topic("ipanon-raw-radius").budget_ms == DAY
    assert plan2.topic("ipanon-stats").governed_by == ("framsteget", "purposes.statistics.promise")


def test_a_stricter_operator_shortens_everyone_shared_topics_and_ttls():
    a = plan_topics({"slow": op("slow", "30d")}, LOCAL)
    b = plan_topics({"slow": op("slow", "30d"), "fast": op("fast", "2h")}, LOCAL)
    assert b.topic("ipanon-bindings").budget_ms < a.topic("ipanon-bindings").budget_ms
    assert b.topic(MAPPINGS_CHANGELOG).bound_ms <= 2 * 3_600_000 // 24
    assert b.retention["fast"].ttl_ms + b.params.sweeper_period_ms + b.retention["fast"].derived_bound_ms <= 2 * 3_600_000


def test_changelog_is_compacted_and_time_bounded():
    plan = plan_topics(load_operators(OPERATORS), KAFKA_DEFAULTS)
    cl = plan.configs_for(MAPPINGS_CHANGELOG)
    assert cl["cleanup.policy"] == "compact"
    assert int(cl["max.compaction.lag.ms"]) < 2**63 - 1
    assert int(cl["segment.ms"]) <= int(cl["max.compaction.lag.ms"])
    assert cl["message.timestamp.type"] == "LogAppendTime"
    assert plan.configs_for("ipanon-audit")["retention.ms"] == "-1"
    assert plan.topic("ipanon-audit").bound_ms is None


def test_fast_test_profile_on_local_broker():
    params = PlanParams(heartbeat_ms=1000, sweeper_period_ms=1000, ingest_lag_ms=0)
    plan = plan_topics({"fast": op("fast", "60s")}, LOCAL, params)
    r = plan.retention["fast"]
    assert 0 < r.ttl_ms and r.worst_case_ms <= 60_000
    assert expiry_ms(1_000, r) == 1_000 + r.ttl_ms


def test_promise_shorter_than_the_broker_can_delete_names_file_and_field():
    # Kafka defaults: the retention check alone runs every 5 minutes
    with pytest.raises(ConfigError, match=r"^fast\.toml: purposes\.lawful_access\.promise: .*broker"):
        plan_topics({"slow": op("slow", "30d"), "fast": op("fast", "5m")}, KAFKA_DEFAULTS)


def test_legal_minimum_that_the_ttl_cannot_reach_names_the_field():
    with pytest.raises(ConfigError, match=r"^lek\.toml: purposes\.lawful_access\.legal_minimum"):
        plan_topics({"lek": op("lek", "307d", legal_minimum="306d23h59m")}, KAFKA_DEFAULTS)
    plan_topics({"lek": op("lek", "307d", legal_minimum="306d")}, KAFKA_DEFAULTS)  # feasible


def test_statistics_promise_too_short_names_the_field():
    with pytest.raises(ConfigError, match=r"^s\.toml: purposes\.statistics\.promise"):
        plan_topics({"s": op("s", "30d", stats="5m")}, KAFKA_DEFAULTS)


def test_layout_matches_agents_topics():
    from agents import topics as T

    expected = {*T.RAW_TOPICS, T.BINDINGS, T.DEADLETTER, T.STATS, T.AGGREGATES, T.AGGREGATE_PARTS, T.LOOKUP_REQUESTS,
                T.LOOKUP_RESPONSES, T.AUDIT, T.CONSENT, MAPPINGS_CHANGELOG,
                T.QUERY_REQUESTS, T.QUERY_RESPONSES, T.HOLDS, T.QUERY_STATE, T.ERASURES, T.CANARY_RESULTS}
    assert set(DEFAULT_LAYOUT) == set(T.Topics().all()) | {MAPPINGS_CHANGELOG}
    assert set(DEFAULT_LAYOUT) == expected


def test_unknown_role_in_layout_is_refused():
    with pytest.raises(ConfigError, match="role"):
        plan_topics({"a": op("a", "30d")}, LOCAL, layout={"x": "archive"})


def test_plan_to_dict_is_json_ready():
    import json
    d = plan_topics(load_operators(OPERATORS), LOCAL).to_dict()
    s = json.dumps(d)
    assert d["operators"]["connect2ip"]["promise_ms"] == DAY
    assert "ipanon-mappings-changelog" in s


# -- verifying an existing topic ---------------------------------------------------------

def test_check_topic_accepts_the_planned_configs():
    plan = plan_topics(load_operators(OPERATORS), LOCAL)
    for spec in plan.topics:
        assert check_topic(spec, dict(spec.configs), LOCAL, plan.params.heartbeat_ms) == spec.bound_ms
        assert config_differences(spec, dict(spec.configs)) == {}


def test_check_topic_refuses_retention_too_long_with_a_clear_message():
    plan = plan_topics(load_operators(OPERATORS), LOCAL)
    spec = plan.topic("ipanon-raw-radius")
    actual = {**spec.configs, "retention.ms": str(7 * DAY)}
    with pytest.raises(ConfigError) as e:
        check_topic(spec, actual, LOCAL, plan.params.heartbeat_ms)
    msg = str(e.value)
    assert "ipanon-raw-radius" in msg and "retention.ms=604800000" in msg
    assert "connect2ip" in msg and "purposes.lawful_access.promise" in msg
    assert config_differences(spec, actual) == {"retention.ms": (str(7 * DAY), spec.configs["retention.ms"])}


def test_check_topic_refuses_a_changelog_that_is_not_compacted_or_unbounded():
    plan = plan_topics(load_operators(OPERATORS), LOCAL)
    spec = plan.topic(MAPPINGS_CHANGELOG)
    with pytest.raises(ConfigError, match="must be compact"):
        check_topic(spec, {**spec.configs, "cleanup.policy": "delete"}, LOCAL, 60_000)
    unbounded = {k: v for k, v in spec.configs.items() if k != "max.compaction.lag.ms"}
    with pytest.raises(ConfigError, match="∞"):
        check_topic(spec, unbounded, LOCAL, 60_000)


def test_check_topic_rejects_when_the_broker_is_slower_than_planned():
    plan = plan_topics(load_operators(OPERATORS), LOCAL)
    spec = plan.topic(MAPPINGS_CHANGELOG)
    slow = BrokerSettings(cleaner_backoff_ms=10 * 60_000)
    with pytest.raises(ConfigError, match="budget"):
        check_topic(spec, dict(spec.configs), slow, plan.params.heartbeat_ms)


# -- properties ---------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(promises=st.lists(st.integers(min_value=60_000, max_value=400 * DAY), min_size=1, max_size=4),
       check=st.integers(min_value=100, max_value=600_000),
       backoff=st.integers(min_value=100, max_value=60_000),
       hb=st.integers(min_value=100, max_value=120_000),
       sweep=st.integers(min_value=100, max_value=120_000),
       lag=st.integers(min_value=0, max_value=600_000))
def test_any_feasible_plan_keeps_every_promise(promises, check, backoff, hb, sweep, lag):
    ops = {f"o{i}": op(f"o{i}", f"{p}ms") for i, p in enumerate(promises)}
    broker = BrokerSettings(retention_check_interval_ms=check, cleaner_backoff_ms=backoff)
    params = PlanParams(heartbeat_ms=hb, sweeper_period_ms=sweep, ingest_lag_ms=lag)
    try:
        plan = plan_topics(ops, broker, params)
    except ConfigError as e:
        assert str(e).split(":")[0].endswith(".toml")  # always names a profile
        return
    for spec in plan.topics:
        assert topic_bound_ms(spec.configs, broker, hb) == spec.bound_ms
        if spec.budget_ms is not None:
            assert spec.bound_ms <= spec.budget_ms
    for name, r in plan.retention.items():
        p = ops[name].lawful_access.promise_ms
        assert r.ttl_ms > 0
        assert r.ttl_ms + sweep + r.derived_bound_ms <= p
        raw = plan.topic("ipanon-raw-radius").bound_ms
        assert lag + raw <= p
    assert all(row.ok for row in plan.rows)


def test_actual_bounds_beyond_the_planned_ones_break_the_promise_even_within_budget():
    """A topic can sit within its budget and still break a promise: the worker's TTL was cut for
    the *planned* changelog bound.  ``rows_with_bounds`` re-checks every row with the bounds the
    topics really have (the worker refuses to start on any row that is not ok)."""
    from stream.policy import rows_with_bounds

    ops = load_operators(OPERATORS)
    plan = plan_topics(ops, KAFKA_DEFAULTS, PlanParams())
    assert all(r.ok for r in rows_with_bounds(plan, {}))
    changelog = next(t for t in plan.topics if t.name.endswith("-changelog"))
    assert all(r.ok for r in rows_with_bounds(plan, {changelog.name: changelog.bound_ms}))
    slack = plan.retention["connect2ip"]
    over = slack.promise_ms - slack.ttl_ms - plan.params.sweeper_delay_ms + 1  # one ms too long
    bad = [r for r in rows_with_bounds(plan, {changelog.name: over}) if not r.ok]
    assert bad and {r.operator for r in bad} >= {"connect2ip"} and all(r.topic == changelog.name for r in bad)
    raw = next(t for t in plan.topics if t.role == "raw")
    worst = min(o.lawful_access.promise_ms for o in ops.values()) - plan.params.ingest_lag_ms + 1
    assert any(not r.ok and r.topic == raw.name for r in rows_with_bounds(plan, {raw.name: worst}))


def _consent_op(name: str, erasure: str | None, stats: str = "181d", bucket: str = "1h"):
    er = f'erasure = "{erasure}"\n' if erasure else ""
    return parse_operator(
        f'name = "{name}"\n[identity]\n[purposes.lawful_access]\npromise = "181d"\n'
        f'[purposes.statistics]\npromise = "{stats}"\nconsent_required = true\nbucket = "{bucket}"\n{er}',
        file=f"{name}.toml")


def test_consent_erasure_bounds_the_stats_topics_and_the_plan_says_so():
    """A withdrawal must erase, not only hide: a withdrawn subscriber's records must be physically
    gone from every stats-role topic (records, erasure notices, cell contributions) within
    ``erasure``."""
    plan = plan_topics({"junet": _consent_op("junet", "2d")}, LOCAL)
    for t in plan.topics:
        if t.role == "stats":
            assert t.governed_by == ("junet", "purposes.statistics.erasure")
            assert t.bound_ms <= 2 * DAY - plan.params.ingest_lag_ms
    rows = [r for r in plan.rows if r.purpose == "erasure"]
    assert rows and all(r.ok and r.promise_ms == 2 * DAY for r in rows)
    # without `erasure` a consent operator gets the default (30 d, at most its promise)
    assert _consent_op("x", None).statistics.erasure_ms == 30 * DAY
    assert _consent_op("x", None, stats="7d").statistics.erasure_ms == 7 * DAY
    # a promise shorter than the erasure bound governs instead
    plan = plan_topics({"junet": _consent_op("junet", "30d", stats="2d")}, LOCAL)
    assert plan.topic("ipanon-stats").governed_by == ("junet", "purposes.statistics.promise")


def test_stats_retention_must_outlast_two_buckets():
    """Records are stamped with their bucket start (up to two buckets before the write): a
    shorter retention would delete them on arrival, so the plan refuses it and names the field."""
    with pytest.raises(ConfigError, match=r"^junet\.toml: purposes\.statistics\.erasure: .*two statistics buckets"):
        plan_topics({"junet": _consent_op("junet", "3h", bucket="2h")}, LOCAL)
    plan_topics({"junet": _consent_op("junet", "3h", bucket="1h")}, LOCAL)
