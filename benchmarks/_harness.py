"""Shared pieces of the worker benchmarks: a broker, a worker subprocess, mixed traffic, RSS.

Not a benchmark itself (no ``bench_`` prefix).  Every benchmark that needs Kafka takes
``--bootstrap`` (an already running broker, e.g. the one ``run_all.py`` starts) or else starts
a throw-away local broker of its own (``agents.broker.LocalBroker`` in a temporary directory:
the same code as ``ipanon broker start``), so each script also runs on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agents.topics import H_FORMAT, H_OPERATOR, Topics  # noqa: E402

OPERATOR = "connect2ip"  # the strictest seed profile (24 h promise)
#: how late a binding may reach the statistics stage.  The benchmarks feed event times up to an
#: hour old; with the worker's default (its 5 min ingest lag) the stats stage destroys yesterday's
#: key epoch at 00:05 UTC and drops every later binding stamped 23:xx (``stats_late_epoch``) —
#: a kill test run past midnight then "lost" most of its statistics (CI, 2026-12-06).
STATS_LATE_MS = 3 * 3_600_000


def machine() -> dict:
    """What the figures came from: cores, load (the machine is shared), memory, Python."""
    import platform

    load = os.getloadavg()
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from agents.compiled_core import status

    # the worker subprocesses share this environment, so they run the same form of the core
    return {"cores": os.cpu_count(), "load1": round(load[0], 2), "load5": round(load[1], 2),
            "mem_gb": round(mem_kb / 2**20, 1), "cpu": cpu, "python": platform.python_version(),
            "core": "compiled" if status().active else "interpreted"}


@contextlib.contextmanager
def broker(bootstrap: Optional[str]) -> Iterator[tuple[str, Optional[Path]]]:
    """(bootstrap, data dir or None).  The data dir is known only for a broker we start."""
    if bootstrap:
        yield bootstrap, None
        return
    from agents.broker import LocalBroker

    d = Path(tempfile.mkdtemp(prefix="ipanon-bench-broker-"))
    b = LocalBroker(d)
    b.start(quiet=True)
    try:
        yield b.bootstrap, d / "data"
    finally:
        b.wipe()


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PySpy:
    """``py-spy record`` of a running process into ``path`` (``--format raw``: collapsed stacks,
    for ``profile_summary.py``); ``stop()`` ends it and lets py-spy write the file."""

    def __init__(self, pid: int, path: str, rate: int) -> None:
        self.proc = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
                                      "--format", "raw", "--rate", str(rate), "--nonblocking", "-o", path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, timeout_s: float = 60) -> None:
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        self.proc.wait(timeout_s)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Worker:
    """``ipanon worker`` as a child process with its own topic prefix, app id, profile and keys
    (the same arrangement as the test suite's ``worker_factory``)."""

    def __init__(self, bootstrap: str, workdir: Path, prefix: Optional[str] = None,
                 heartbeat_ms: int = 60_000, operators: tuple[str, ...] = (OPERATOR,),
                 engine: str = "worker", partitions: int = 4) -> None:
        import shutil

        from agents.keystore import ensure_demo_keys, load_key, load_lookup_key
        from agents.runtime import apply_topics
        from agents.settings import Settings

        self.prefix = prefix or f"b{uuid.uuid4().hex[:8]}"
        self.topics = Topics(self.prefix)
        self.dir = workdir
        ops = workdir / "operators"
        ops.mkdir(parents=True, exist_ok=True)
        for op in operators:
            shutil.copy(REPO / "config" / "operators" / f"{op}.toml", ops / f"{op}.toml")
        self.keys_dir = workdir / "keys"
        ensure_demo_keys(self.keys_dir, operators)
        self.keys = {op: load_key(self.keys_dir, op) for op in operators}
        self.lookup_key = load_lookup_key(self.keys_dir, create=True)  # to ask the lookup path
        self.settings = Settings(bootstrap=bootstrap, app_id=self.prefix, topic_prefix=self.prefix,
                                 operators_dir=ops, keys_dir=self.keys_dir, data_dir=workdir / "data",
                                 heartbeat_ms=heartbeat_ms, partitions=partitions)
        self.plan = apply_topics(self.settings)
        self.changelog = f"{self.prefix}-mappings-changelog"
        self.args = [sys.executable, "-m", "agents.cli", "worker", "--bootstrap", bootstrap,
                     "--topic-prefix", self.prefix, "--app-id", self.prefix, "--operators", str(ops),
                     "--keys", str(self.keys_dir), "--data-dir", str(workdir / "data"), "--web-port", "0",
                     "--heartbeat-ms", str(heartbeat_ms), "--loglevel", "info"]
        if engine == "lean":  # benchmarks/lean_engine.py: the hot path without Faust (a measuring stick)
            self.args = [sys.executable, str(REPO / "benchmarks" / "lean_engine.py"), "--bootstrap", bootstrap,
                         "--prefix", self.prefix, "--operators", str(ops), "--keys", str(self.keys_dir)]
        self.log_path = workdir / "worker.log"
        self.env = {**os.environ, "IPANON_STATS_LATE_MS": os.environ.get("IPANON_STATS_LATE_MS", str(STATS_LATE_MS)),
                    "IPANON_PARTITIONS": str(partitions)}
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Worker":
        self.proc = subprocess.Popen(self.args, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     cwd=REPO, env=self.env, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, n: int = 2000) -> str:
        """Errors and warnings of the worker's log (the first 40) and its last lines: enough to
        say why a run did not complete."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        marks = ("ERROR", "CRITICAL", "Traceback", "Error:", "crashed", "WARNING")
        bad = [ln for ln in lines if any(m in ln for m in marks) and "producer buffer full" not in ln][:40]
        return ("\n".join(bad) + "\n...\n" + "\n".join(lines[-8:]))[-n:]


# -- traffic -----------------------------------------------------------------------------------

FORMAT_TOPIC = {"radius-json": "radius", "kea-hook": "dhcp", "ipfix-json": "nat"}


def mixed_events(n: int, now_ms: int, seed: int = 8, addresses: int = 50_000) -> list[tuple[str, bytes]]:
    """``n`` raw records, ~60 % RADIUS (radius-json), ~30 % DHCP (kea-hook), ~10 % CGNAT
    (ipfix-json port blocks), in event-time order over the last ``n`` ms before ``now_ms``
    (so none is past its expiry and the mapping table really stores them).  RADIUS sessions go
    Start → Interim-Update → Stop on an address pool smaller than the subscriber base, so
    addresses are re-used; DHCP leases are committed, renewed, released; NAT blocks are
    allocated and freed."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes]] = []
    sess: dict[int, tuple[int, int, int]] = {}  # radius address → (session no, step, subscriber)
    lease: dict[int, int] = {}
    block: dict[int, int] = {}
    t0 = now_ms - n - 60_000
    for i in range(n):
        at = t0 + i
        r = rng.random()
        if r < 0.6:
            a = rng.randrange(addresses)
            s_no, step, sub = sess.get(a, (0, 0, rng.randrange(addresses * 2)))
            status = ("Start", "Interim-Update", "Stop")[step]
            rec = {"User-Name": f"kund-{sub}@isp.example", "Acct-Status-Type": status,
                   "Acct-Session-Id": f"{a:06X}-{s_no:06X}", "NAS-IP-Address": f"192.0.2.{a % 8 + 1}",
                   "Calling-Station-Id": f"02:00:5e:{(sub >> 16) & 255:02x}:{(sub >> 8) & 255:02x}:{sub & 255:02x}",
                   "Framed-IP-Address": f"100.{64 + (a >> 16)}.{(a >> 8) & 255}.{a & 255}",
                   "Event-Timestamp": at // 1000}
            if step:
                rec.update({"Acct-Session-Time": 300 * step, "Acct-Input-Octets": rng.randrange(10**9),
                            "Acct-Output-Octets": rng.randrange(10**9)})
            sess[a] = (s_no + 1, 0, rng.randrange(addresses * 2)) if step == 2 else (s_no, step + 1, sub)
            out.append(("radius-json", json.dumps(rec).encode()))
        elif r < 0.9:
            a = rng.randrange(addresses // 2)
            k = lease.get(a, 0)
            hook = ("leases4_committed", "lease4_renew", "lease4_release")[k % 3]
            mac = f"02:00:00:{(a >> 16) & 255:02x}:{(a >> 8) & 255:02x}:{a & 255:02x}"
            addr = f"10.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"
            if hook == "leases4_committed":
                env = {"hook": hook, "LEASES4_SIZE": "1", "LEASES4_AT0_ADDRESS": addr,
                       "LEASES4_AT0_CLTT": str(at // 1000), "LEASES4_AT0_VALID_LIFETIME": "3600",
                       "LEASES4_AT0_HWADDR": mac, "DELETED_LEASES4_SIZE": "0"}
            else:
                env = {"hook": hook, "LEASE4_ADDRESS": addr, "LEASE4_CLTT": str(at // 1000),
                       "LEASE4_VALID_LIFETIME": "3600", "LEASE4_HWADDR": mac, "ts_ms": str(at)}
            lease[a] = k + 1
            out.append(("kea-hook", json.dumps(env).encode()))
        else:
            a = rng.randrange(addresses // 4)
            k = block.get(a, 0)
            blk = a % 60
            rec = {"natEvent": 16 if k % 2 == 0 else 17,
                   "sourceIPv4Address": f"100.127.{(a >> 8) & 255}.{a & 255}",
                   "postNATSourceIPv4Address": f"198.51.100.{a // 60 % 250 + 1}",
                   "portRangeStart": 1024 + blk * 1024, "portRangeEnd": 2047 + blk * 1024,
                   "observationTimeMilliseconds": at}
            block[a] = k + 1
            out.append(("ipfix-json", json.dumps(rec).encode()))
    return out


def produce(bootstrap: str, topics: Topics, events: list[tuple[str, bytes]], operator: str = OPERATOR,
            sources: int = 8) -> list[int]:
    """Send ``events`` to the raw topics (keyed by one of ``sources`` source ids, so every
    partition gets traffic); returns each record's produce time (ms, wall clock)."""
    from agents.kafka_io import producer

    p = producer(bootstrap, linger_ms=5, acks=1, max_in_flight_requests_per_connection=5)
    sent = []
    try:
        for i, (fmt, value) in enumerate(events):
            topic = topics.raw_by_family[FORMAT_TOPIC[fmt]]
            t = time.time_ns() // 1_000_000
            p.send(topic, key=f"src-{i % sources}".encode(), value=value,
                   headers=[(H_FORMAT, fmt.encode()), (H_OPERATOR, operator.encode())], timestamp_ms=t)
            sent.append(t)
        p.flush()
    finally:
        p.close()
    return sent


def percentile(xs: list[float], q: float) -> Optional[float]:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def timed_gets(store, keys, missing: str) -> dict:
    """``store.get(p, k)`` for each (partition, key) of ``keys``, timed one by one: gets and the
    p50/p99 in µs.  A key not found ends the run (``missing``, formatted with ``p``): a benchmark
    that times lookups of absent keys would time the wrong thing."""
    lat = []
    for p, k in keys:
        t = time.perf_counter_ns()
        v = store.get(p, k)
        lat.append(time.perf_counter_ns() - t)
        if v is None:
            raise SystemExit(missing.format(p=p))
    return {"gets": len(lat), "get_p50_us": round(percentile(lat, 0.50) / 1000, 1),
            "get_p99_us": round(percentile(lat, 0.99) / 1000, 1)}
