"""Shared fixtures.  ``broker`` starts the project's real local Kafka (agents.broker, the same
code as ``ipanon broker start``) once per test session in a temporary directory."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

# First, before any test imports the core: serve its compiled build if one matches the sources
# (agents/compiled_core.py).  `make test` runs the suite so, then the unit tests interpreted.
import agents  # noqa: F401,E402

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests" / "data" / "samples"


# -- the suite reads nothing outside the repository -------------------------------------------
# A run-time guard (sys.addaudithook): any file a test or its fixtures open, list, create or
# remove in this process must be inside the repository or in a place of the environment (temp
# dirs, the Python installation and venv, the Kafka cache, system files).  A path beside the
# clone (REPO.parent/...) is always refused: CI lays folders there that users do not have.
# Child processes are not seen here; tests/unit/test_self_contained.py scans the sources too.
def _guard_roots() -> tuple[str, ...]:
    import site
    import sys
    import tempfile

    cache = os.environ.get("IPANON_CACHE") or str(Path.home() / ".cache" / "ipanon")
    roots = {tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm", sys.prefix, sys.base_prefix, sys.exec_prefix,
             sys.base_exec_prefix, cache, *site.getsitepackages(), "/proc", "/sys", "/dev", "/etc", "/usr", "/lib",
             "/lib64", "/bin", "/sbin", "/run", "/var/lib", "/var/cache"}
    return tuple(sorted({os.path.realpath(r) for r in roots if r}))


class PathGuard:
    EVENTS = frozenset({"open", "os.listdir", "os.scandir", "os.mkdir", "os.remove", "os.rename", "os.rmdir",
                        "shutil.rmtree", "shutil.copyfile", "os.chmod", "os.link", "os.symlink", "glob.glob"})

    def __init__(self) -> None:
        self.repo = str(REPO)
        self.beside = str(REPO.parent)  # path-guard
        self.roots = _guard_roots()
        self.active = False
        self.violations: list[str] = []
        import threading

        self._busy = threading.local()

    def outside(self, path) -> bool:
        """True if ``path`` is neither in the repository nor in a place of the environment."""
        p = os.path.abspath(os.fsdecode(path))
        inside = lambda root: p == root or p.startswith(root.rstrip("/") + "/")  # noqa: E731
        if inside(self.repo):
            return False
        if inside(self.beside):  # beside the clone: never, even when the clone is in a temp dir
            return True
        return not any(inside(r) for r in self.roots)

    def hook(self, event: str, args: tuple) -> None:
        if not self.active or event not in self.EVENTS or getattr(self._busy, "on", False):
            return
        self._busy.on = True  # no re-entry from what the check itself does
        try:
            for a in args[:2] if event in ("os.rename", "os.link", "os.symlink") else args[:1]:
                if isinstance(a, (str, bytes, os.PathLike)) and self.outside(a):
                    self.violations.append(f"{event} {os.fsdecode(a)}")
        except Exception:  # never break the code under test; a path we cannot decode is not ours
            pass
        finally:
            self._busy.on = False


def _path_guard() -> PathGuard:
    """One guard per process (test modules import this file again as ``tests.conftest``)."""
    import sys

    if not hasattr(sys, "_ipanon_path_guard"):
        sys._ipanon_path_guard = PathGuard()
        sys.addaudithook(sys._ipanon_path_guard.hook)
    return sys._ipanon_path_guard


PATH_GUARD = _path_guard()


def _guarded(item):
    PATH_GUARD.violations.clear()
    PATH_GUARD.active = True
    try:
        result = yield
    finally:
        PATH_GUARD.active = False
    if PATH_GUARD.violations:
        seen = sorted(set(PATH_GUARD.violations))
        PATH_GUARD.violations.clear()
        pytest.fail(f"{item.nodeid} touched paths outside the repository: {'; '.join(seen[:5])}", pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _guarded(item))


#: a hung test fails with its own traceback after this long instead of eating CI's whole budget
#: (the longest test, the kill smoke, gives up by itself after 1500 s)
TEST_TIMEOUT_S = int(os.environ.get("IPANON_TEST_TIMEOUT_S", "1800"))


class HungTest(BaseException):  # not Exception: the code under test must not swallow it
    pass


def _on_alarm(signum, frame):
    raise HungTest(f"test still running after {TEST_TIMEOUT_S} s (IPANON_TEST_TIMEOUT_S)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    import signal
    import threading

    armed = TEST_TIMEOUT_S > 0 and threading.current_thread() is threading.main_thread()
    if armed:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(TEST_TIMEOUT_S)
    try:
        return (yield from _guarded(item))
    finally:
        if armed:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


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


TEST_INGEST_LAG_MS = 2 * 3_600_000


class WorkerProcess:
    """``ipanon worker`` as a child process on the session broker, with its own topic prefix,
    app id, operator profiles and keys.  Tests talk to it only through Kafka, like users do.

    Tests replay up to an hour of history at once, so by default the worker (and the plan its
    topics are applied with) budgets a 2 h ingest lag; with the production default of 5 min the
    worker rightly dead-letters older Stops as too late for the promise (stream.lateness)."""

    on_twin = None  # set by ``worker_factory``: each ``twin()`` is registered for its clean-up

    def __init__(self, bootstrap: str, workdir: Path, prefix: str, operators: list[str], extra: list[str],
                 heartbeat_ms: int = 1000, ingest_lag_ms: int = TEST_INGEST_LAG_MS):
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
        # the statistics seeds as created: the worker shreds <op>.key once it destroys a live
        # epoch (forward secrecy), so a test that recomputes pseudonyms reads them here
        self.seeds = {op: bytes.fromhex((self.keys / f"{op}.key").read_text().strip()) for op in operators}
        # the deployment's lookup key (the worker would create it on first start): tests ask
        # the worker-to-worker lookup path with it, as a worker or the desk does
        from agents.keystore import load_lookup_key

        self.lookup_key = load_lookup_key(self.keys, create=True)
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
        if self.on_twin is not None:  # the factory stops twins too: an orphan outlives its test
            self.on_twin(t)
        return t


@pytest.fixture
def worker_factory(bootstrap, tmp_path):
    started = []

    def make(operators=("connect2ip",), extra=(), prefix=None, **kw) -> WorkerProcess:
        prefix = prefix or f"t{uuid.uuid4().hex[:8]}"
        w = WorkerProcess(bootstrap, tmp_path / f"w{len(started)}", prefix, list(operators), list(extra), **kw)
        w.on_twin = started.append
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


def bench_json(*args: str, timeout: float = 300) -> dict:
    """Run ``python <args>`` (a benchmark and its options) and return the one JSON line it must
    print; a failure shows the end of its stderr."""
    import json
    import subprocess
    import sys

    p = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1, p.stdout[-2000:]
    return json.loads(lines[0])


def bench_smoke(script: str, timeout: float = 120) -> dict:
    """Run ``benchmarks/<script> --smoke`` and return the one JSON line it must print."""
    return bench_json(str(REPO / "benchmarks" / script), "--smoke", timeout=timeout)
