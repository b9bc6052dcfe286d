"""Robustness tests share the session broker; ``IPANON_TEST_BOOTSTRAP=host:port`` points them at an
already running broker instead (re-running one heavy test on a loaded machine without starting
another JVM).  Fault tests that stop brokers never use either: they start their own."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def bootstrap(request) -> str:
    given = os.environ.get("IPANON_TEST_BOOTSTRAP")
    if given:
        return given
    return request.getfixturevalue("broker").bootstrap
