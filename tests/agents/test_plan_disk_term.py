"""The on-disk store's term B_disk in the plan the worker and ``ipanon topics plan`` compute.
The plan and the worker once disagreed on the numbers behind the proof (a 60 s
sweeper in the plan, 1 s in the worker): the erasure cycle, tick and allowance must come from
the one ``Settings`` the worker's store runs with, through ``agents.runtime.plan_params``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.cli import main
from agents.runtime import plan_params
from agents.settings import Settings
from stream.config import format_duration

OPERATORS = Path(__file__).resolve().parents[2] / "config" / "operators"
STORE_ENV = ("IPANON_TABLE_STORE", "IPANON_ERASURE_CYCLE_MS", "IPANON_ERASURE_TICK_MS",
             "IPANON_COMPACTION_ALLOWANCE_MS")
PLAN_ENV = ("IPANON_HEARTBEAT_MS", "IPANON_SWEEPER_PERIOD_MS", "IPANON_INGEST_LAG_MS", "IPANON_PARTITIONS",
            "IPANON_REPLICATION_FACTOR", "IPANON_TOPIC_PREFIX", "IPANON_APP_ID", "IPANON_OPERATORS")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for k in STORE_ENV + PLAN_ENV:
        monkeypatch.delenv(k, raising=False)


def _plan(capsys, *argv, operators: Path = OPERATORS) -> tuple[int, str, str]:
    rc = main(["topics", "plan", "--operators", str(operators), "--broker-settings", "local", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_memory_store_plans_no_disk_term(capsys):
    assert plan_params(Settings(bootstrap="x:9")).disk is None
    rc, out, _ = _plan(capsys, "--json")
    assert rc == 0
    got = json.loads(out)
    assert got["params"]["disk"] is None
    assert all(o["disk_bound_ms"] == 0 for o in got["operators"].values())
    rc, text, _ = _plan(capsys)
    assert "mapping store: memory (no on-disk term: B_disk = 0)" in text


def test_plan_takes_b_disk_from_the_settings_the_worker_runs_with(capsys, monkeypatch):
    env = {"IPANON_TABLE_STORE": "disk", "IPANON_ERASURE_CYCLE_MS": "7000000", "IPANON_ERASURE_TICK_MS": "5000",
           "IPANON_COMPACTION_ALLOWANCE_MS": "600000"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    worker = Settings.from_env(env, bootstrap="127.0.0.1:9")
    bound = worker.disk_bound()  # what the worker's store and its erasure tick run with
    assert (bound.cycle_ms, bound.tick_ms, bound.compaction_allowance_ms) == (7_000_000, 5_000, 600_000)
    params = plan_params(worker)
    assert params.disk == bound and params.disk_bound_ms == bound.bound_ms == 7_605_000

    rc, out, _ = _plan(capsys, "--json")
    assert rc == 0
    got = json.loads(out)
    assert got["params"]["disk"] == {"cycle_ms": 7_000_000, "tick_ms": 5_000, "compaction_allowance_ms": 600_000,
                                     "bound_ms": 7_605_000}
    rc, mem_out, _ = _plan(capsys, "--json", "--table-store", "memory")  # flag over the environment
    mem = json.loads(mem_out)
    assert mem["params"]["disk"] is None
    for name, o in got["operators"].items():
        assert o["disk_bound_ms"] == bound.bound_ms > o["derived_bound_ms"]  # 2h 6m 45s > the 1 h cap
        # TTL = promise - sweeper - bucket - B_disk: shorter than the memory plan's by B_disk - derived
        assert o["ttl_ms"] == o["promise_ms"] - o["sweeper_period_ms"] - o["schedule_bucket_ms"] - bound.bound_ms
        assert mem["operators"][name]["ttl_ms"] - o["ttl_ms"] == bound.bound_ms - o["derived_bound_ms"]
        assert o["worst_case_ms"] == o["promise_ms"]

    rc, text, _ = _plan(capsys)
    assert (f"mapping store: on disk; B_disk = erasure cycle {format_duration(7_000_000)} + erasure tick 5s + "
            f"compaction allowance 10m = {format_duration(7_605_000)} (7605000 ms)") in text


def test_flags_override_the_environment_like_the_workers(capsys, monkeypatch):
    monkeypatch.setenv("IPANON_ERASURE_CYCLE_MS", "999999")
    rc, out, _ = _plan(capsys, "--json", "--table-store", "disk", "--erasure-cycle-ms", "1800000",
                       "--erasure-tick-ms", "2000", "--compaction-allowance-ms", "60000")
    assert rc == 0
    assert json.loads(out)["params"]["disk"] == {"cycle_ms": 1_800_000, "tick_ms": 2_000,
                                                 "compaction_allowance_ms": 60_000, "bound_ms": 1_862_000}


def test_promise_too_short_for_b_disk_is_one_line_naming_the_term(capsys, tmp_path):
    src = (OPERATORS / "connect2ip.toml").read_text()
    (tmp_path / "fast.toml").write_text(src.replace('name = "connect2ip"', 'name = "fast"')
                                        .replace('promise = "24h"', 'promise = "2h"', 1))
    rc, _, _ = _plan(capsys, "--json", operators=tmp_path)  # in memory: feasible
    assert rc == 0
    rc, _, err = _plan(capsys, "--table-store", "disk", "--erasure-cycle-ms", "7200000", operators=tmp_path)
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("ipanon: fast.toml: purposes.lawful_access.promise: 2h leaves no time")
    assert "B_disk" in err and "erasure cycle 2h" in err and "B_disk governs" in err


def test_impossible_erasure_parameters_are_a_config_error_not_a_traceback(capsys):
    rc, _, err = _plan(capsys, "--table-store", "disk", "--erasure-cycle-ms", "1000", "--erasure-tick-ms", "5000")
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1
    assert "table store erasure parameters" in err and "tick must not be longer than the cycle" in err


def _timers(app) -> dict[str, float]:
    """The Faust app's timers, name → interval in seconds (read from ``App.timer``'s closures:
    what the worker will actually run, not what its settings say)."""
    import inspect

    out = {}
    for wrapped in app._app_tasks:
        fun = inspect.getclosurevars(wrapped).nonlocals.get("fun")  # ``around_timer`` for a timer
        nl = inspect.getclosurevars(fun).nonlocals if fun is not None else {}
        if "timer_name" in nl:
            out[nl["timer_name"]] = nl["interval_s"]
    return out


def test_the_workers_store_and_timers_run_the_plans_numbers(capsys, monkeypatch, tmp_path):
    """Build the worker (``agents.app.Pipeline``) from the environment and print the plan from the
    same environment: the store's erasure bound, its schedule bucket and the erasure tick's and
    sweeper's timer periods are the plan's."""
    from agents.app import NO_PARTS, Pipeline

    env = {"IPANON_TABLE_STORE": "disk", "IPANON_ERASURE_CYCLE_MS": "1800000", "IPANON_ERASURE_TICK_MS": "4000",
           "IPANON_COMPACTION_ALLOWANCE_MS": "120000", "IPANON_SWEEPER_PERIOD_MS": "2000"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rc, out, _ = _plan(capsys, "--json")
    assert rc == 0
    plan = json.loads(out)["params"]
    s = Settings.from_env(env, bootstrap="127.0.0.1:9", app_id="tplandisk", topic_prefix="tplandisk",
                          data_dir=tmp_path / "data", keys_dir=tmp_path / "keys", web_port=0)
    p = Pipeline(s, {}, clock=lambda: 1_000_000, parts=NO_PARTS)  # the table, sweeper and store; no extras
    try:
        store = p.table.disk
        assert store is not None, "IPANON_TABLE_STORE=disk did not put the table on disk"
        assert {"cycle_ms": store.bound.cycle_ms, "tick_ms": store.bound.tick_ms,
                "compaction_allowance_ms": store.bound.compaction_allowance_ms,
                "bound_ms": store.bound.bound_ms} == plan["disk"]
        assert store.width_ms == plan["schedule_bucket_ms"]
        timers = _timers(p.app)
        assert timers["ipanon.erasure"] * 1000 == plan["disk"]["tick_ms"]
        assert timers["ipanon.sweeper"] * 1000 == plan["sweeper_period_ms"] == 2_000
    finally:
        p.table.disk.close()
