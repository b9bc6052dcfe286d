"""``agents.batch.tune_gc``: a worker's batch stages raise the collector's thresholds to
``GC_THRESHOLD`` (docs/benchmarks.md, "Hot path cuts, third session", cut 6), an operator's
``IPANON_GC_THRESHOLD`` wins, and a malformed one is refused for the default, not half-applied."""

from __future__ import annotations

import asyncio
import gc

import pytest

from agents import batch as B


@pytest.fixture(autouse=True)
def _restore_thresholds():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_default_is_gc_threshold(monkeypatch):
    monkeypatch.delenv("IPANON_GC_THRESHOLD", raising=False)
    gc.set_threshold(700, 10, 10)
    assert B.tune_gc() == B.GC_THRESHOLD == gc.get_threshold()
    assert B.tune_gc() == B.GC_THRESHOLD  # idempotent


@pytest.mark.parametrize("env,want", [("700,10,10", (700, 10, 10)), (" 5000, 2 ,3 ", (5000, 2, 3)),
                                      ("1,2", None), ("a,b,c", None), ("1,-2,3", None), ("1,2,3,4", None)])
def test_the_environment_wins_and_a_bad_value_gives_the_default(monkeypatch, env, want):
    monkeypatch.setenv("IPANON_GC_THRESHOLD", env)
    assert B.tune_gc() == (want or B.GC_THRESHOLD) == gc.get_threshold()


def test_a_stage_sets_them_when_it_starts(monkeypatch):
    monkeypatch.delenv("IPANON_GC_THRESHOLD", raising=False)
    gc.set_threshold(700, 10, 10)
    st = B.BatchStage.__new__(B.BatchStage)
    st.name, st.count = "t", lambda *a, **k: None

    async def serve():
        raise asyncio.CancelledError

    st._serve = serve
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(st.run())
    assert gc.get_threshold() == B.GC_THRESHOLD
