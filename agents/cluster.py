"""A local three-node Apache Kafka (KRaft) cluster, for fault tests.

Built on ``agents.broker`` (the same jars, log4j configuration and test-friendly settings as
the single local broker, ``LOCAL_OVERRIDES``), but with three combined broker+controller nodes
and a static controller quorum (``controller.quorum.voters``), so the cluster survives the loss
of any one node: the quorum keeps a majority (2 of 3) and every partition, replicated three
times with ``min.insync.replicas=2``, keeps accepting ``acks=all`` writes.

Layout: ``<dir>/node<N>/{server.properties,data/,broker.log}`` and ``<dir>/cluster.json``
(ports, cluster id, pids).  Everything listens on 127.0.0.1 only.

    c = LocalCluster(tmp_dir)
    c.start()                 # all three nodes; returns when each has started
    c.bootstrap               # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
    c.kill(2)                 # SIGKILL node 2 (a crash, not a clean shutdown)
    c.start_node(2)           # bring it back (same ports, same log dirs)
    c.stop()                  # every node

Not for production: one machine, no security (the secure mode lives in ``agents.broker``).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Mapping, Optional

from .broker import LOCAL_OVERRIDES, LOG4J, BrokerError, _need, _pid_alive, _port_open, fetch, free_port

#: What makes the cluster fault-tolerant: three replicas, two must acknowledge.
CLUSTER_OVERRIDES: dict[str, str] = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "unclean.leader.election.enable": "false",
    # a crashed node is noticed within seconds, not the default 9 s + 18 s
    "broker.session.timeout.ms": "6000",
    "broker.heartbeat.interval.ms": "1000",
    "replica.lag.time.max.ms": "10000",
}


class LocalCluster:
    """Three KRaft nodes (ids 1-3) in one directory.  ``start``/``stop`` are idempotent."""

    NODES = (1, 2, 3)

    def __init__(self, state_dir: Path, *, overrides: Optional[Mapping[str, str]] = None,
                 heap: str = "384m") -> None:
        self.dir = Path(state_dir).resolve()
        self.overrides = {**LOCAL_OVERRIDES, **CLUSTER_OVERRIDES, **(overrides or {})}
        self.heap = heap
        self.meta_path = self.dir / "cluster.json"
        self.procs: dict[int, subprocess.Popen] = {}

    # -- state ------------------------------------------------------------------------------

    def _meta(self) -> dict:
        try:
            return json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, m: dict) -> None:
        self.meta_path.write_text(json.dumps(m))

    def node_dir(self, n: int) -> Path:
        return self.dir / f"node{n}"

    def log_path(self, n: int) -> Path:
        return self.node_dir(n) / "broker.log"

    @property
    def bootstrap(self) -> str:
        m = self._meta()
        if not m:
            raise BrokerError(f"no cluster in {self.dir}: call start() first")
        return ",".join(f"127.0.0.1:{m['ports'][str(n)]}" for n in self.NODES)

    def running(self) -> list[int]:
        m = self._meta()
        return [n for n in self.NODES
                if (pid := m.get("pids", {}).get(str(n))) and _pid_alive(pid) and _port_open(m["ports"][str(n)])]

    # -- lifecycle --------------------------------------------------------------------------

    def _format(self, java: str, libs: Path) -> dict:
        m = {"ports": {}, "controller_ports": {}, "pids": {},
             "cluster_id": base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")}
        used: set[int] = set()
        for n in self.NODES:
            for key in ("ports", "controller_ports"):
                p = free_port()
                while p in used:
                    p = free_port()
                used.add(p)
                m[key][str(n)] = p
        for n in self.NODES:
            self.node_dir(n).mkdir(parents=True, exist_ok=True)
            self._write_properties(n, m)
            fmt = subprocess.run(
                [java, "-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={LOG4J}", "kafka.tools.StorageTool",
                 "format", "-t", m["cluster_id"], "-c", str(self.node_dir(n) / "server.properties")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if fmt.returncode != 0:
                raise BrokerError(f"formatting node {n} failed: {fmt.stdout.strip()[-300:]}")
        self._save(m)
        return m

    def _write_properties(self, n: int, m: dict) -> None:
        port, cport = m["ports"][str(n)], m["controller_ports"][str(n)]
        voters = ",".join(f"{i}@127.0.0.1:{m['controller_ports'][str(i)]}" for i in self.NODES)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(n),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.node_dir(n) / "data"),
            "offsets.topic.num.partitions": "4",
            **self.overrides,
        }
        (self.node_dir(n) / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def start(self, *, timeout_s: float = 120.0) -> str:
        java = _need("java", "install Java 17+ (Debian: apt-get install openjdk-17-jre-headless)")
        libs = fetch(quiet=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        m = self._meta()
        if not m or not all((self.node_dir(n) / "data" / "meta.properties").exists() for n in self.NODES):
            m = self._format(java, libs)
        for n in self.NODES:
            self._launch(n, java, libs)
        self._wait(self.NODES, timeout_s)
        return self.bootstrap

    def start_node(self, n: int, *, timeout_s: float = 120.0) -> None:
        java = _need("java", "install Java 17+")
        self._launch(n, java, fetch(quiet=True))
        self._wait((n,), timeout_s)

    def _launch(self, n: int, java: str, libs: Path) -> None:
        m = self._meta()
        pid = m.get("pids", {}).get(str(n))
        if pid and _pid_alive(pid):
            return
        for port in (m["ports"][str(n)], m["controller_ports"][str(n)]):
            if _port_open(port):
                raise BrokerError(f"port {port} of cluster node {n} is taken by another process")
        self._write_properties(n, m)
        mark = self.log_path(n).stat().st_size if self.log_path(n).exists() else 0
        with open(self.log_path(n), "ab") as log:
            proc = subprocess.Popen(
                [java, "-Xms64m", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                 "-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={LOG4J}", "kafka.Kafka",
                 str(self.node_dir(n) / "server.properties")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[n] = proc
        m.setdefault("pids", {})[str(n)] = proc.pid
        m.setdefault("log_marks", {})[str(n)] = mark
        self._save(m)

    def _wait(self, nodes, timeout_s: float) -> None:
        m = self._meta()
        deadline = time.monotonic() + timeout_s
        pending = set(nodes)
        while pending and time.monotonic() < deadline:
            for n in sorted(pending):
                proc = self.procs.get(n)
                if proc is not None and proc.poll() is not None:
                    tail = self.log_path(n).read_text(errors="replace").strip().splitlines()[-3:]
                    raise BrokerError(f"cluster node {n} exited with code {proc.returncode}: {' | '.join(tail)[-400:]}")
                with open(self.log_path(n), "rb") as f:
                    f.seek(m.get("log_marks", {}).get(str(n), 0))
                    started = b"Kafka Server started" in f.read()
                if started and _port_open(m["ports"][str(n)]):
                    pending.discard(n)
            time.sleep(0.3)
        if pending:
            raise BrokerError(f"cluster node(s) {sorted(pending)} did not start within {timeout_s:.0f}s; see {self.dir}")

    def kill(self, n: int) -> None:
        """SIGKILL one node: a crash (no controlled shutdown, no leadership hand-over)."""
        self._signal(n, signal.SIGKILL, 10.0)

    def stop_node(self, n: int, timeout_s: float = 30.0) -> None:
        """A clean shutdown of one node (SIGTERM; SIGKILL after ``timeout_s``)."""
        if not self._signal(n, signal.SIGTERM, timeout_s):
            self._signal(n, signal.SIGKILL, 10.0)

    def _signal(self, n: int, sig: int, wait_s: float) -> bool:
        m = self._meta()
        pid = m.get("pids", {}).get(str(n))
        if not pid or not _pid_alive(pid):
            return True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not _pid_alive(pid):
                m["pids"].pop(str(n), None)
                self._save(m)
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        for n in self.NODES:
            self.stop_node(n)
