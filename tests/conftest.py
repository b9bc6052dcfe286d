"""Shared fixtures.  ``broker`` starts the project's real local Kafka (agents.broker, the same
code as ``ipanon broker start``) once per test session in a temporary directory."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples"


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    from agents.broker import LocalBroker

    b = LocalBroker(tmp_path_factory.mktemp("broker"))
    b.start(quiet=True)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def bootstrap(broker) -> str:
    return broker.bootstrap


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic and app names, so tests never share state."""
    return uuid.uuid4().hex[:8]
