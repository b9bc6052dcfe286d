"""The on-disk store's term of the persistence formula, rule by rule:

    TTL + sweeper period + schedule bucket + max(derived-topic bound, B_disk) <= P

(``stream.policy``: ``PlanParams.disk``, ``OperatorRetention``; B_disk from
``stream.disk_bound.DiskBound``)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from stream.config import parse_operator
from stream.disk_bound import DiskBound, persistence_ms
from stream.errors import ConfigError
from stream.policy import BrokerSettings, PlanParams, plan_topics

LOCAL = BrokerSettings.from_configs({"log.retention.check.interval.ms": "5000", "log.cleaner.backoff.ms": "1000",
                                     "log.segment.delete.delay.ms": "1000"})
HOUR = 3_600_000
DAY = 24 * HOUR


def op(name: str, promise: str, legal_minimum: str | None = None):
    lm = f'legal_minimum = "{legal_minimum}"\n' if legal_minimum else ""
    return parse_operator(
        f'name = "{name}"\n[identity]\n[purposes.lawful_access]\npromise = "{promise}"\n{lm}'
        f'[purposes.statistics]\npromise = "{promise}"\nconsent_required = false\nbucket = "5s"\n',
        file=f"{name}.toml")


def disk(cycle_ms: int, tick_ms: int = 1_000, allowance_ms: int = 0) -> DiskBound:
    return DiskBound(cycle_ms=cycle_ms, tick_ms=tick_ms, compaction_allowance_ms=allowance_ms)


OPS = {"a": op("a", "1d"), "b": op("b", "30d")}


def test_memory_store_has_no_disk_term():
    plan = plan_topics(OPS, LOCAL, PlanParams())
    assert plan.params.disk is None and plan.params.disk_bound_ms == 0
    for name, r in plan.retention.items():
        assert r.disk_bound_ms == 0 and r.deletion_bound_ms == r.derived_bound_ms
        assert r.ttl_ms == OPS[name].lawful_access.promise_ms - plan.params.sweeper_delay_ms - r.derived_bound_ms
        assert r.worst_case_ms == r.promise_ms


def test_disk_term_shorter_than_the_derived_bound_changes_no_ttl():
    mem = plan_topics(OPS, LOCAL, PlanParams())
    derived = mem.retention["a"].derived_bound_ms
    b = disk(cycle_ms=derived // 2, allowance_ms=1_000)
    assert b.bound_ms < derived
    plan = plan_topics(OPS, LOCAL, PlanParams(disk=b))
    for name, r in plan.retention.items():
        assert r.disk_bound_ms == b.bound_ms
        assert r.ttl_ms == mem.retention[name].ttl_ms
        assert r.worst_case_ms == mem.retention[name].worst_case_ms == r.promise_ms


def test_disk_term_longer_than_the_derived_bound_shortens_every_ttl_by_the_difference():
    mem = plan_topics(OPS, LOCAL, PlanParams())
    derived = mem.retention["a"].derived_bound_ms
    b = disk(cycle_ms=derived, tick_ms=5_000, allowance_ms=600_000)  # 10 min 5 s past the derived bound
    plan = plan_topics(OPS, LOCAL, PlanParams(disk=b))
    for name, r in plan.retention.items():
        assert r.deletion_bound_ms == b.bound_ms > r.derived_bound_ms == derived
        assert r.ttl_ms == mem.retention[name].ttl_ms - (b.bound_ms - derived)
        assert r.ttl_ms == r.promise_ms - plan.params.sweeper_delay_ms - b.bound_ms
        # the promise still holds, exactly at the limit
        assert r.worst_case_ms == r.promise_ms


def test_worst_case_is_the_documented_sum():
    b = disk(cycle_ms=50 * 60_000, tick_ms=1_000, allowance_ms=5 * 60_000)
    plan = plan_topics(OPS, LOCAL, PlanParams(sweeper_period_ms=2_000, schedule_bucket_ms=1_000, disk=b))
    for r in plan.retention.values():
        assert r.worst_case_ms == r.ttl_ms + 2_000 + 1_000 + max(r.derived_bound_ms, b.bound_ms)
        assert r.worst_case_ms == persistence_ms(r.ttl_ms, 3_000, r.derived_bound_ms, r.disk_bound_ms)


def test_topic_rows_keep_their_own_bounds():
    """The disk term is the worker's store, not a topic: the per-topic rows are the topic's path
    (TTL + sweeper delay + topic bound), which a longer B_disk only shortens via the TTL."""
    b = disk(cycle_ms=2 * HOUR)
    plan = plan_topics(OPS, LOCAL, PlanParams(disk=b))
    for row in plan.rows:
        assert row.ok
    r = plan.retention["a"]
    cl = next(x for x in plan.rows if x.operator == "a" and x.topic.endswith("-mappings-changelog"))
    assert cl.bound_ms == r.ttl_ms + plan.params.sweeper_delay_ms + plan.topic(cl.topic).bound_ms < r.worst_case_ms


def test_promise_too_short_for_b_disk_is_refused_naming_the_term():
    b = disk(cycle_ms=2 * HOUR, tick_ms=5_000, allowance_ms=10 * 60_000)
    with pytest.raises(ConfigError) as e:
        plan_topics({"fast": op("fast", "2h")}, LOCAL, PlanParams(disk=b))
    msg = str(e.value)
    assert msg.startswith("fast.toml: purposes.lawful_access.promise: 2h leaves no time to keep mappings")
    assert "B_disk 2h 10m (7805000 ms) = erasure cycle 2h + erasure tick 5s + compaction allowance 10m" in msg
    assert "on-disk store's erasure term B_disk governs" in msg
    # the same promise with the table in memory plans fine
    assert plan_topics({"fast": op("fast", "2h")}, LOCAL, PlanParams()).retention["fast"].ttl_ms > 0


def test_promise_exactly_b_disk_plus_sweeper_delay_is_refused_one_ms_more_plans():
    params = PlanParams(disk=disk(cycle_ms=HOUR, tick_ms=1_000, allowance_ms=59_000))
    need = params.disk_bound_ms + params.sweeper_delay_ms  # 1h 1m 2s: a TTL of 0 keeps nothing
    assert need == HOUR + 60_000 + 2_000
    with pytest.raises(ConfigError, match="B_disk"):
        plan_topics({"x": op("x", "1h1m2s")}, LOCAL, params)
    r = plan_topics({"x": op("x", "1h1m3s")}, LOCAL, params).retention["x"]
    assert r.ttl_ms == 1_000 and r.worst_case_ms == r.promise_ms


def test_legal_minimum_out_of_reach_because_of_b_disk_names_the_field_and_the_term():
    b = disk(cycle_ms=DAY, tick_ms=1_000, allowance_ms=0)
    plan_topics({"lek": op("lek", "307d", legal_minimum="306d")}, LOCAL, PlanParams())  # memory: feasible
    with pytest.raises(ConfigError) as e:
        plan_topics({"lek": op("lek", "307d", legal_minimum="306d")}, LOCAL, PlanParams(disk=b))
    msg = str(e.value)
    assert msg.startswith("lek.toml: purposes.lawful_access.legal_minimum: 306d cannot be met")
    assert "B_disk 1d 1s (86401000 ms) = erasure cycle 1d + erasure tick 1s" in msg and "governs" in msg


def test_refusal_without_disk_names_the_derived_bound_not_b_disk():
    with pytest.raises(ConfigError) as e:
        plan_topics({"x": op("x", "5s")}, LOCAL, PlanParams(heartbeat_ms=1_000, ingest_lag_ms=0))
    assert "B_disk" not in str(e.value)


def test_disk_parameter_must_be_a_disk_bound():
    with pytest.raises(ConfigError, match="DiskBound"):
        PlanParams(disk=3_600_000)  # type: ignore[arg-type]


def test_plan_dict_carries_the_disk_term():
    b = disk(cycle_ms=50 * 60_000, tick_ms=2_000, allowance_ms=300_000)
    d = json.loads(json.dumps(plan_topics(OPS, LOCAL, PlanParams(disk=b)).to_dict()))
    assert d["params"]["disk"] == {"cycle_ms": 3_000_000, "tick_ms": 2_000, "compaction_allowance_ms": 300_000,
                                   "bound_ms": 3_302_000}
    for name, o in d["operators"].items():
        assert o["disk_bound_ms"] == 3_302_000
        assert o["worst_case_ms"] == o["ttl_ms"] + o["sweeper_period_ms"] + o["schedule_bucket_ms"] + max(
            o["derived_bound_ms"], o["disk_bound_ms"])
    mem = plan_topics(OPS, LOCAL, PlanParams()).to_dict()
    assert mem["params"]["disk"] is None and all(o["disk_bound_ms"] == 0 for o in mem["operators"].values())


def test_plan_text_prints_the_term():
    from agents.commands.topics import format_plan

    b = disk(cycle_ms=50 * 60_000, tick_ms=1_000, allowance_ms=300_000)
    plan = plan_topics(OPS, LOCAL, PlanParams(disk=b))
    text = format_plan(plan, "test")
    assert ("mapping store: on disk; B_disk = erasure cycle 50m + erasure tick 1s + compaction allowance 5m "
            "= 55m 1s (3301000 ms)") in text
    assert "max(derived-topic bound, B_disk) ≤ promise" in text
    from stream.config import format_duration as d

    r = plan.retention["a"]
    row = next(line for line in text.splitlines() if line.startswith("  a "))
    # the last three columns: derived bound, B_disk, worst case
    assert row.endswith(f"{d(r.derived_bound_ms):>9} {'55m 1s':>9} {d(r.worst_case_ms):>10}"), row
    mem = format_plan(replace(plan, params=PlanParams()), "test")
    assert "mapping store: memory (no on-disk term: B_disk = 0)" in mem
