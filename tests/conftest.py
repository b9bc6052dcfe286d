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


class WorkerProcess:
    """``ipanon worker`` as a child process on the session broker, with its own topic prefix,
    app id, operator profiles and keys.  Tests talk to it only through Kafka, like users do."""

    def __init__(self, bootstrap: str, workdir: Path, prefix: str, operators: list[str], extra: list[str],
                 heartbeat_ms: int = 1000, ingest_lag_ms: int = 300_000):
        import shutil
        import subprocess
        import sys

        from agents.keystore import ensure_demo_keys
        from agents.runtime import apply_topics
        from agents.settings import Settings
        from agents.topics import Topics

        self.bootstrap = bootstrap
        self.topics = Topics(prefix)
        self.dir = workdir
        self.operators_dir = workdir / "operators"
        self.operators_dir.mkdir(parents=True, exist_ok=True)
        for op in operators:  # a seed profile name, or (name, toml text) for a test profile
            if isinstance(op, tuple):
                (self.operators_dir / f"{op[0]}.toml").write_text(op[1])
            else:
                shutil.copy(REPO / "config" / "operators" / f"{op}.toml", self.operators_dir / f"{op}.toml")
        operators = [op[0] if isinstance(op, tuple) else op for op in operators]
        self.keys = workdir / "keys"
        ensure_demo_keys(self.keys, operators)
        self.settings = Settings(bootstrap=bootstrap, app_id=prefix, topic_prefix=prefix,
                                 operators_dir=self.operators_dir, keys_dir=self.keys,
                                 data_dir=workdir / "data", heartbeat_ms=heartbeat_ms,
                                 ingest_lag_ms=ingest_lag_ms)
        self.plan = apply_topics(self.settings)  # the same plan the worker verifies at start-up
        self.args = [sys.executable, "-m", "agents.cli", "worker", "--bootstrap", bootstrap,
                     "--topic-prefix", prefix, "--app-id", prefix, "--operators", str(self.operators_dir),
                     "--keys", str(self.keys), "--data-dir", str(workdir / "data"), "--web-port", "0",
                     "--heartbeat-ms", str(heartbeat_ms), "--ingest-lag-ms", str(ingest_lag_ms),
                     "--loglevel", "info", *extra]
        self.log_path = workdir / "worker.log"
        self.proc = None

    def start(self):
        import subprocess

        self.proc = subprocess.Popen(self.args, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     cwd=REPO, start_new_session=True)
        return self

    def stop(self, sig=None):
        import os
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig or signal.SIGTERM)
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def twin(self, n: int = 2) -> "WorkerProcess":
        """A second worker of the same deployment (same topics, app id, profiles and key state;
        own data directory and log) — to join the consumer group."""
        import copy

        t = copy.copy(self)
        t.proc = None
        data = self.dir / f"data{n}"
        t.args = [str(data) if a == str(self.dir / "data") else a for a in self.args]
        t.log_path = self.dir / f"worker{n}.log"
        return t


@pytest.fixture
def worker_factory(bootstrap, tmp_path):
    started = []

    def make(operators=("connect2ip",), extra=(), prefix=None, **kw) -> WorkerProcess:
        prefix = prefix or f"t{uuid.uuid4().hex[:8]}"
        w = WorkerProcess(bootstrap, tmp_path / f"w{len(started)}", prefix, list(operators), list(extra), **kw)
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()


def wait_for(predicate, timeout_s: float = 90.0, interval_s: float = 0.5, what: str = "condition"):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def bench_smoke(script: str, timeout: float = 120) -> dict:
    """Run ``benchmarks/<script> --smoke`` and return the one JSON line it must print."""
    import json
    import subprocess
    import sys

    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--smoke"], capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1, p.stdout
    return json.loads(lines[0])
