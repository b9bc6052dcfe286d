"""The worker's start-up checks ride out a broker restart, and say what happened if it does not
come back (the model-based checker saw a worker die with a KafkaConnectionError traceback when
the broker restarted during its start-up)."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaConnectionError

from agents import runtime
from agents.settings import Settings
from stream.errors import ConfigError


class _Admin:
    closed = 0

    def close(self):
        _Admin.closed += 1


def _run(monkeypatch, failures: int):
    calls = []

    def prepare_retention(admin, policies, params, layout):
        calls.append(admin)
        if len(calls) <= failures:
            raise KafkaConnectionError("broker went away")
        return "the plan"

    monkeypatch.setattr(runtime, "_admin", lambda s: _Admin())
    monkeypatch.setattr("time.sleep", lambda s: None)
    _Admin.closed = 0
    s = Settings(bootstrap="127.0.0.1:9")
    return runtime._checked_plan(s, {}, prepare_retention), calls


def test_a_broker_that_comes_back_is_asked_again(monkeypatch):
    plan, calls = _run(monkeypatch, failures=2)
    assert plan == "the plan" and len(calls) == 3 and _Admin.closed == 3  # every admin client closed


def test_a_broker_that_stays_away_is_one_clear_error(monkeypatch):
    with pytest.raises(ConfigError) as e:
        _run(monkeypatch, failures=runtime.CHECK_ATTEMPTS)
    assert "KafkaConnectionError" in str(e.value) and "restarting" in str(e.value)
    assert _Admin.closed == runtime.CHECK_ATTEMPTS
