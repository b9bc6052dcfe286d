"""The worker's components are wired through explicit ports (issue 16 part 6): the sweeper tells
its listeners about each pass instead of having its method replaced."""

from __future__ import annotations

import asyncio

from agents.app import NO_PARTS
from agents.settings import Settings


def _pipeline(tmp_path, **kw):
    from agents.app import Pipeline

    s = Settings(bootstrap="127.0.0.1:9", app_id="tports", topic_prefix="tports", data_dir=tmp_path / "data",
                 keys_dir=tmp_path / "keys", web_enabled=False, web_port=0)
    return Pipeline(s, {}, clock=lambda: 1_000_000, **kw)


def test_the_sweeper_calls_its_listeners_after_each_pass_and_survives_a_failing_one(tmp_path):
    p = _pipeline(tmp_path, parts=NO_PARTS)
    seen = []

    def broken(now, n, seconds):
        raise RuntimeError("listener bug")

    p.after_sweep.append(broken)
    p.after_sweep.append(lambda now, n, seconds: seen.append((now, n, seconds >= 0)))
    sweep_once = p.sweep_once
    asyncio.run(p._sweeper())
    asyncio.run(p._sweeper())
    assert seen == [(1_000_000, 0, True)] * 2
    assert p.sweep_once == sweep_once  # nobody replaced the method
    assert "sweeper_errors" not in p.counters
