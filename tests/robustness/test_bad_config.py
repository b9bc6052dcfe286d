"""Bad configuration stops ``ipanon worker`` before it starts: one clear line on stderr
naming what to fix, exit code 2, no traceback — and nothing half-started: no topic of the
deployment's prefix created, no data directory, no key-state files written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO

SEED = REPO / "config" / "operators" / "connect2ip.toml"


def _setup(tmp_path: Path, profile: str | None = None) -> tuple[Path, Path, Path]:
    from agents.keystore import ensure_demo_keys

    ops, keys, data = tmp_path / "ops", tmp_path / "keys", tmp_path / "data"
    ops.mkdir()
    (ops / "connect2ip.toml").write_text(profile if profile is not None else SEED.read_text())
    ensure_demo_keys(keys, ["connect2ip"])
    return ops, keys, data


def _run_worker(bootstrap: str, ops: Path, keys: Path, data: Path, prefix: str, timeout: float = 150):
    args = [sys.executable, "-m", "agents.cli", "worker", "--bootstrap", bootstrap, "--topic-prefix", prefix,
            "--app-id", prefix, "--operators", str(ops), "--keys", str(keys), "--data-dir", str(data),
            "--web-port", "0"]
    env = {k: v for k, v in os.environ.items() if k != "IPANON_DEBUG"}
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def _assert_one_clear_line(p: subprocess.CompletedProcess, *needles: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("ipanon: ")
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _topics_with(bootstrap: str, prefix: str) -> list[str]:
    from kafka import KafkaAdminClient

    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return [t for t in a.list_topics() if t.startswith(prefix)]
    finally:
        a.close()


def _assert_nothing_started(bootstrap: str, prefix: str, data: Path, keys: Path) -> None:
    assert _topics_with(bootstrap, prefix) == []
    assert not data.exists()
    assert sorted(p.name for p in keys.iterdir()) == ["connect2ip.key"]  # no vault/ratchet state


PROFILE_CASES = {
    # unknown field: a typo must not be silently ignored (it could be a mistyped promise)
    "unknown-field": (lambda t: t.replace('display_name =', 'colour = "blue"\ndisplay_name ='),
                      ("connect2ip.toml", "colour", "unknown key")),
    # a promise (2 min) shorter than this broker's physical deletion bound (> 2 min here)
    "promise-below-deletion-bound": (
        lambda t: t.replace('promise = "24h"', 'promise = "2m"').replace('key_epoch = "24h"', 'key_epoch = "1m"'),
        ("connect2ip.toml", "purposes.lawful_access.promise", "shorter than what this broker can physically guarantee")),
    # key epoch longer than the promise: a shredded key would outlive the data it protects
    "key-epoch-beyond-promise": (lambda t: t.replace('promise = "24h"', 'promise = "2m"'),
                                 ("connect2ip.toml", "key_epoch", "longer than")),
    "not-toml": (lambda t: t + "\n[[[broken\n", ("connect2ip.toml",)),
}


@pytest.mark.broker
@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_bad_operator_profile_stops_the_worker(case, tmp_path, bootstrap):
    edit, needles = PROFILE_CASES[case]
    text = SEED.read_text()
    assert edit(text) != text  # the case really changes the profile
    ops, keys, data = _setup(tmp_path, edit(text))
    prefix = f"bc{uuid.uuid4().hex[:8]}"
    _assert_one_clear_line(_run_worker(bootstrap, ops, keys, data, prefix), *needles)
    _assert_nothing_started(bootstrap, prefix, data, keys)


KEY_CASES = {
    "missing": (lambda p: p.unlink(), ("connect2ip.key", "no key file", "head -c32 /dev/urandom")),
    "not-hex": (lambda p: p.write_text("zz" * 32 + "\n"), ("connect2ip.key", "64 hex characters")),
    "too-short": (lambda p: p.write_text("ab" * 16 + "\n"), ("connect2ip.key", "32 bytes")),
    "group-readable": (lambda p: p.chmod(0o640), ("connect2ip.key", "chmod 600")),
    "a-directory": (lambda p: (p.unlink(), p.mkdir()), ("connect2ip.key", "not a regular file")),
}


@pytest.mark.broker
@pytest.mark.parametrize("case", sorted(KEY_CASES))
def test_missing_or_malformed_key_stops_the_worker(case, tmp_path, bootstrap):
    ops, keys, data = _setup(tmp_path)
    key = keys / "connect2ip.key"
    secret = key.read_text().strip()
    KEY_CASES[case][0](key)
    prefix = f"bk{uuid.uuid4().hex[:8]}"
    p = _run_worker(bootstrap, ops, keys, data, prefix)
    line = _assert_one_clear_line(p, *KEY_CASES[case][1])
    assert secret not in p.stderr + p.stdout and secret[:16] not in line  # never echo key material
    assert _topics_with(bootstrap, prefix) == [] and not data.exists()


def test_unreachable_broker_stops_the_worker(tmp_path):
    from agents.broker import free_port

    ops, keys, data = _setup(tmp_path)
    port = free_port()  # nothing listens there
    p = _run_worker(f"127.0.0.1:{port}", ops, keys, data, "unreachable", timeout=240)
    _assert_one_clear_line(p, f"cannot reach Kafka at 127.0.0.1:{port}", "--bootstrap")
    assert not data.exists()


def test_no_operator_profiles_stops_the_worker(tmp_path, bootstrap):
    ops, keys, data = _setup(tmp_path)
    shutil.rmtree(ops)
    ops.mkdir()
    p = _run_worker(bootstrap, ops, keys, data, f"bn{uuid.uuid4().hex[:8]}")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert len([x for x in p.stderr.splitlines() if x.strip()]) == 1 and str(ops.name) in p.stderr
