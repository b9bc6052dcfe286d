"""Static group membership: the id a worker rejoins its consumer groups under.

A restarted worker must present the same ``group.instance.id`` as the incarnation it replaces,
so the group hands it that member's partitions at once instead of waiting out the dead
member's session (``benchmarks/resume_after_kill.py`` measures the effect); two workers of one
deployment must never share one, or the group would fence one of them."""

from __future__ import annotations

from agents.settings import Settings


def _s(**kw) -> Settings:
    return Settings(bootstrap="127.0.0.1:9", **kw)


def test_instance_id_is_stable_for_one_worker_and_distinct_between_workers(tmp_path):
    a = _s(app_id="ipanon", data_dir=tmp_path / "data")
    assert a.group_instance_id == _s(app_id="ipanon", data_dir=tmp_path / "data").group_instance_id
    assert a.group_instance_id.startswith("ipanon-")
    assert a.group_instance_id != _s(app_id="ipanon", data_dir=tmp_path / "data2").group_instance_id
    assert a.group_instance_id != _s(app_id="other", data_dir=tmp_path / "data").group_instance_id
    # the same directory named another way (through a symlink) is the same worker
    (tmp_path / "alias").symlink_to(tmp_path)
    assert a.group_instance_id == _s(app_id="ipanon", data_dir=tmp_path / "alias" / "data").group_instance_id


def test_instance_id_from_the_environment_wins(tmp_path):
    s = Settings.from_env({"IPANON_INSTANCE_ID": "worker-a", "IPANON_SESSION_TIMEOUT_MS": "15000",
                           "IPANON_SWEEPER_PERIOD_MS": "2000"}, bootstrap="127.0.0.1:9", data_dir=tmp_path)
    assert s.group_instance_id == "worker-a"
    assert s.session_timeout_ms == 15_000 and s.sweeper_period_ms == 2_000 and s.sweep_interval_s == 2.0


def test_the_worker_app_and_batch_stages_use_it(tmp_path):
    """The Faust consumer (mapping, lookup, query agents) and both batch stages join with it."""
    from agents.app import NO_PARTS, Pipeline

    s = _s(app_id="tstatic", topic_prefix="tstatic", data_dir=tmp_path / "data", keys_dir=tmp_path / "keys",
           web_enabled=False, web_port=0)
    p = Pipeline(s, {}, parts=NO_PARTS)
    assert p.app.conf.consumer_group_instance_id == s.group_instance_id
    assert p.app.conf.broker_session_timeout == s.session_timeout_ms / 1000
    for stage in p.batch_stages:
        async def consumer_id(stage=stage):
            c, prod = stage._clients()
            return c._group_instance_id

        import asyncio

        assert asyncio.run(consumer_id()) == f"{s.group_instance_id}-{stage.name}"
