"""``ipanon topics plan|render`` without a broker: the printed/rendered plan is the same plan
``stream.policy.plan_topics`` computes, so deploy files and the broker cannot disagree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.broker import LOCAL_OVERRIDES
from agents.cli import main
from stream.config import load_operators
from stream.policy import BrokerSettings, KAFKA_DEFAULTS, PlanParams, plan_topics

OPERATORS = Path(__file__).resolve().parents[2] / "config" / "operators"


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["topics", *argv, "--operators", str(OPERATORS), "--prefix", "ipanon", "--app-id", "ipanon",
               "--partitions", "4"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def parse_k8s(text: str) -> list[dict]:
    """Parse the block-mapping YAML subset the renderer writes (scalars are plain words,
    integers or JSON strings).  Strict: anything else fails the test."""
    docs = []
    for chunk in text.split("\n---\n")[1:] if text.startswith("#") else text.split("\n---\n"):
        root: dict = {}
        stack = [(-1, root)]
        for line in chunk.splitlines():
            if not line.strip() or line.lstrip().startswith("#") or line.strip() == "---":
                continue
            indent = len(line) - len(line.lstrip(" "))
            key, sep, value = line.strip().partition(":")
            assert sep, f"not a mapping line: {line!r}"
            while stack[-1][0] >= indent:
                stack.pop()
            parent = stack[-1][1]
            value = value.strip()
            if value == "":
                parent[key] = {}
                stack.append((indent, parent[key]))
            elif value.startswith('"'):
                parent[key] = json.loads(value)
            elif value.isdigit():
                parent[key] = int(value)
            else:
                parent[key] = value
        docs.append(root)
    return docs


def _worker_params(env: dict) -> PlanParams:
    """The plan parameters a worker started with this environment runs with."""
    from agents.runtime import plan_params
    from agents.settings import Settings

    return plan_params(Settings.from_env(env, bootstrap="127.0.0.1:9"))


def _layout():
    """The worker's layout: the shared topics and one raw topic per operator profile."""
    from stream.policy import make_layout

    return make_layout("ipanon", "ipanon", load_operators(OPERATORS))


def test_plan_json_is_the_computed_plan(capsys, monkeypatch):
    for k in ("IPANON_HEARTBEAT_MS", "IPANON_SWEEPER_PERIOD_MS", "IPANON_INGEST_LAG_MS", "IPANON_PARTITIONS",
              "IPANON_REPLICATION_FACTOR", "IPANON_TABLE_STORE", "IPANON_ERASURE_CYCLE_MS", "IPANON_ERASURE_TICK_MS",
              "IPANON_COMPACTION_ALLOWANCE_MS"):
        monkeypatch.delenv(k, raising=False)
    rc, out, _ = _run(capsys, "plan", "--broker-settings", "local", "--json")
    assert rc == 0
    expected = plan_topics(load_operators(OPERATORS), BrokerSettings.from_configs(LOCAL_OVERRIDES),
                           _worker_params({}), _layout())
    assert json.loads(out) == json.loads(json.dumps(expected.to_dict()))


def test_plan_uses_the_workers_parameters_from_the_environment(capsys, monkeypatch):
    """The plan once assumed a 60 s sweeper while the worker swept every second, and ignored
    IPANON_HEARTBEAT_MS / IPANON_INGEST_LAG_MS: its TTLs and bounds were not the worker's."""
    env = {"IPANON_HEARTBEAT_MS": "30000", "IPANON_INGEST_LAG_MS": "120000", "IPANON_SWEEPER_PERIOD_MS": "2000"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rc, out, _ = _run(capsys, "plan", "--broker-settings", "local", "--json")
    assert rc == 0
    got = json.loads(out)
    assert got["params"]["heartbeat_ms"] == 30_000 and got["params"]["ingest_lag_ms"] == 120_000
    assert got["params"]["sweeper_period_ms"] == 2_000
    worker = plan_topics(load_operators(OPERATORS), BrokerSettings.from_configs(LOCAL_OVERRIDES), _worker_params(env),
                         _layout())
    assert got == json.loads(json.dumps(worker.to_dict()))
    for name, r in worker.retention.items():
        assert got["operators"][name]["ttl_ms"] == r.ttl_ms  # the TTL the worker runs
    rc, text, _ = _run(capsys, "plan", "--broker-settings", "local")
    assert "heartbeat 30s, sweeper 2s" in text and "ingest lag 2m" in text


def test_a_one_minute_promise_plans_a_positive_ttl_without_extra_flags(capsys, tmp_path):
    """With the worker's 1 s sweeper a 60 s promise leaves room (it once gave a negative TTL
    unless --sweeper-period-ms 1000 was passed)."""
    src = (OPERATORS / "connect2ip.toml").read_text()
    (tmp_path / "fast.toml").write_text(src.replace('name = "connect2ip"', 'name = "fast"')
                                        .replace('promise = "24h"', 'promise = "60s"', 1))
    rc = main(["topics", "plan", "--operators", str(tmp_path), "--broker-settings", "local", "--json",
               "--heartbeat-ms", "1000", "--ingest-lag-ms", "5000"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    ttl = json.loads(out.out)["operators"]["fast"]["ttl_ms"]
    assert 0 < ttl < 60_000
    # with a 60 s heartbeat the broker cannot keep it: a clear refusal, never a negative TTL
    rc = main(["topics", "plan", "--operators", str(tmp_path), "--broker-settings", "local", "--json"])
    out = capsys.readouterr()
    assert rc == 2 and "fast.toml: purposes.lawful_access.promise" in out.err and "Traceback" not in out.err


def test_plan_text_lists_every_operator_and_topic_bound(capsys):
    rc, out, _ = _run(capsys, "plan")
    assert rc == 0
    assert "Apache Kafka defaults" in out
    for name in ("connect2ip", "framsteget", "hektor", "junet", "op003"):
        assert f"  {name} " in out
    assert "ipanon-mappings-changelog" in out and " NO" not in out


def test_render_k8s_matches_the_plan(capsys):
    rc, out, _ = _run(capsys, "render", "--k8s", "--cluster", "prod", "--namespace", "net")
    assert rc == 0
    docs = parse_k8s(out)
    plan = plan_topics(load_operators(OPERATORS), KAFKA_DEFAULTS, PlanParams(), _layout())
    assert [d["metadata"]["name"] for d in docs] == [t.name for t in plan.topics]
    for doc, spec in zip(docs, plan.topics):
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2" and doc["kind"] == "KafkaTopic"
        assert doc["metadata"]["namespace"] == "net"
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == "prod"
        assert doc["spec"]["partitions"] == spec.partitions
        assert doc["spec"]["replicas"] == spec.replication_factor
        assert doc["spec"]["config"] == dict(spec.configs)
        bound = doc["metadata"]["annotations"]["ipanon/worst-case-persistence-ms"]
        assert bound == (str(spec.bound_ms) if spec.bound_ms is not None else "unbounded")


def test_render_needs_a_format(capsys):
    rc, _, err = _run(capsys, "render")
    assert rc == 2 and "--k8s" in err


def test_bad_profile_is_one_line_naming_file_and_field(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text('name = "bad"\n[identity]\n[purposes.lawful_access]\npromise = "6mo"\n'
                                       '[purposes.statistics]\npromise = "1d"\nconsent_required = false\n')
    rc = main(["topics", "plan", "--operators", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("ipanon: bad.toml: purposes.lawful_access.promise") and err.count("\n") == 1


def test_promise_too_short_for_kafka_defaults_is_refused(tmp_path, capsys):
    (tmp_path / "fast.toml").write_text('name = "fast"\n[identity]\n[purposes.lawful_access]\npromise = "60s"\n'
                                        '[purposes.statistics]\npromise = "60s"\nconsent_required = false\nbucket = "10s"\n')
    rc = main(["topics", "plan", "--operators", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "fast.toml: purposes.lawful_access.promise" in err
    rc = main(["topics", "plan", "--operators", str(tmp_path), "--broker-settings", "local",
               "--heartbeat-ms", "1000", "--sweeper-period-ms", "1000", "--ingest-lag-ms", "0"])
    assert rc == 0
