"""A malformed Kafka address is one clear error line and exit code 2, never a traceback — from
the flag or from IPANON_BOOTSTRAP, for the worker and every other command that talks to Kafka."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agents.cli import CliError, check_bootstrap
from agents.keystore import ensure_demo_keys
from tests.conftest import REPO


@pytest.mark.parametrize("value", ["not a host:port", "localhost:", ":9092", "localhost:0", "localhost:65536",
                                   "localhost:9092,", "host:port", "[::1", "a b:9092", ""])
def test_malformed_addresses_are_refused(value):
    with pytest.raises(CliError, match="host:port"):
        check_bootstrap(value, "--bootstrap")


@pytest.mark.parametrize("value", ["localhost:9092", "127.0.0.1:1", "[::1]:9092", "kafka-0.kafka.svc:9093",
                                   "a:1,b:2", "broker", "10.0.0.1:65535"])
def test_real_addresses_pass(value):
    check_bootstrap(value, "--bootstrap")


def _run(args, env=None):
    e = {k: v for k, v in os.environ.items() if k != "IPANON_BOOTSTRAP"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "agents.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env=e, timeout=60)


def test_worker_with_a_bad_bootstrap_flag(tmp_path):
    keys = tmp_path / "keys"
    ensure_demo_keys(keys, ["connect2ip", "framsteget", "hektor", "junet", "op003"])
    p = _run(["worker", "--bootstrap", "not a host:port", "--keys", str(keys), "--data-dir", str(tmp_path / "d")])
    assert p.returncode == 2
    assert p.stderr.splitlines() == ["ipanon: --bootstrap 'not a host:port' is not host:port[,host:port…] "
                                     "(e.g. localhost:9092)"]
    assert "Traceback" not in p.stdout + p.stderr


def test_a_bad_environment_address_is_named_as_such(tmp_path):
    p = _run(["topics", "plan"], env={"IPANON_BOOTSTRAP": "x y"})
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "IPANON_BOOTSTRAP 'x y'" in p.stderr
    assert "Traceback" not in p.stderr
