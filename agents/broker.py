"""A real, local, single-node Apache Kafka (KRaft) broker assembled from Maven Central.

Used by ``ipanon broker start|stop|status``, by ``ipanon demo`` and by the test suite's broker
fixture (``tests/conftest.py``) — one code path for all three.

Layout:
- jars: ``$IPANON_CACHE`` (default ``~/.cache/ipanon``) ``/kafka-<version>/libs``, fetched once
  with ``mvn dependency:copy-dependencies`` from ``deploy/kafka/pom.xml``;
- state: a directory of its own (default ``~/.local/state/ipanon/broker``) holding
  ``server.properties``, ``data/`` (the log dirs), ``broker.log`` and ``broker.json`` (pid,
  ports, bootstrap address).  Ports are picked free on first start and kept, because the KRaft
  voter set records the controller endpoint at format time.

Everything listens on 127.0.0.1 only.

Secure mode (``LocalBroker(dir, secure=True)``, ``ipanon broker start --secure``):
the client listener is ``SASL_SSL`` with SCRAM-SHA-512 only; TLS certificates come from a
throw-away CA made on the fly (``agents.security.make_local_pki``, PEM keystore); one SCRAM
user per role (``SECURE_USERS`` + one per registered authority) is created when the storage
is formatted (``StorageTool format --add-scram``), each password in ``secrets/<user>.password``
(0600) with a client security file ``clients/<user>.toml``; Kafka's ``StandardAuthorizer`` is
on with ``allow.everyone.if.no.acl.found=false`` and only ``ipanon-admin`` (and the broker's
own certificate principal) as super users, so every other user can do exactly what ``ipanon
acl apply`` grants.  The controller listener is mutual TLS on loopback (the broker presents
its certificate; an unauthenticated client cannot even complete the handshake).  A second
client listener, ``MTLS`` (``mtls_bootstrap``), is mutual TLS: every user but the admin also
gets a client certificate ``CN=<user>`` (``clients/<user>.mtls.toml``), which
``ssl.principal.mapping.rules`` turns into ``User:<user>`` — the same ACLs as the SCRAM user.
A state directory is formatted either secure or not; the mode is kept in ``broker.json``.

``LocalBroker`` runs the process (format, start, stop, status); the files it is started on
(``server.properties``, the secure mode's certificates, passwords and client files) are
assembled by ``agents.broker_config``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

# the secure mode's users and principals live with the files they go into; re-exported here
from .broker_config import (ADMIN_USER, BROKER_PRINCIPAL, SECURE_USERS, SSL_PRINCIPAL_RULES,  # noqa: F401
                            prepare_secure, write_server_properties)

KAFKA_VERSION = "4.1.1"
REPO_ROOT = Path(__file__).resolve().parents[1]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"

#: Broker settings for a fast local/test broker.  Retention-relevant intervals are short so
#: the physical-deletion bound of ``stream.policy`` is small on this broker; production
#: brokers set their own and ``ipanon topics apply`` reads them back.
LOCAL_OVERRIDES: dict[str, str] = {
    "group.initial.rebalance.delay.ms": "0",
    "log.retention.check.interval.ms": "5000",
    "log.cleaner.backoff.ms": "1000",
    "file.delete.delay.ms": "1000",
    "log.segment.delete.delay.ms": "1000",
    "num.partitions": "4",
    "auto.create.topics.enable": "false",
}


#: umask of the broker's JVMs: every file Kafka writes (log segments hold subscriber ids and
#: addresses) is readable by the broker's user only.
PRIVATE_UMASK = 0o077


def _write_argfile(path: Path, args: list[str]) -> None:
    """A java launcher @argfile (one quoted argument a line), created 0600."""
    from .security import _write_private

    quote = lambda a: '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'  # noqa: E731
    _write_private(path, "".join(quote(a) + "\n" for a in args).encode())


def new_cluster_id(make_uuid=uuid.uuid4) -> str:
    """A KRaft cluster id (22 characters of URL-safe base64) that does not start with "-":
    StorageTool would read ``-t -…`` as an option and fail (1 start in 64)."""
    while True:
        cid = base64.urlsafe_b64encode(make_uuid().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class BrokerError(Exception):
    """A one-line, actionable message about the local broker."""


def cache_dir() -> Path:
    return Path(os.environ.get("IPANON_CACHE") or Path.home() / ".cache" / "ipanon")


def default_state_dir() -> Path:
    return Path(os.environ.get("IPANON_STATE") or Path.home() / ".local" / "state" / "ipanon") / "broker"


def _need(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(f"{tool} not found on PATH: {hint}")
    return path


def fetch(*, quiet: bool = False) -> Path:
    """Return the directory of Kafka's jars, fetching them from Maven Central once."""
    libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    if (libs / ".complete").exists():
        return libs
    mvn = _need("mvn", "install Maven (Debian: apt-get install maven) to fetch Kafka from Maven Central")
    _need("java", "install Java 17+ (Debian: apt-get install openjdk-17-jre-headless)")
    if not POM.exists():
        raise BrokerError(f"{POM} is missing: run ipanon from its source checkout (pip install -e .)")
    tmp = libs.with_name(f"libs.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {libs} (once) …",
              file=sys.stderr, flush=True)
    proc = subprocess.run(
        [mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if proc.returncode != 0 or not any(tmp.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
        raise BrokerError(f"Maven could not fetch Kafka {KAFKA_VERSION}: {tail or 'no output'}")
    (tmp / ".complete").write_text(KAFKA_VERSION)
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    return libs


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A free loopback port *outside* the kernel's ephemeral range: a port from ``bind(0)``
    can be taken by any client's outgoing connection (a Kafka client's, say) between our
    check and the listener's bind — seen here as "address already in use"."""
    import random

    lo, _ = _ephemeral_range()
    candidates = random.sample(range(10_000, lo), min(200, max(0, lo - 10_000))) if lo > 10_100 else []
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


@dataclass
class BrokerInfo:
    running: bool
    bootstrap: Optional[str]
    pid: Optional[int]
    state_dir: Path

    def line(self) -> str:
        if self.running:
            return f"running: bootstrap {self.bootstrap} (pid {self.pid}, dir {self.state_dir})"
        return f"stopped (dir {self.state_dir})"


def operator_ids(operators_dir: Optional[Path] = None) -> list[str]:
    """Operator names of the profiles in ``config/operators`` (one collector user each,
    ``ipanon-collector-<operator>``).  The file stem is the profile name
    (``stream.config`` refuses a profile whose ``name`` differs)."""
    d = Path(operators_dir or os.environ.get("IPANON_OPERATORS") or REPO_ROOT / "config" / "operators")
    return sorted(f.stem for f in d.glob("*.toml")) if d.is_dir() else []


def authority_ids(authorities_dir: Optional[Path] = None) -> list[str]:
    """Authority ids registered in ``config/authorities`` (the ``id`` of each TOML)."""
    import tomllib

    d = Path(authorities_dir or REPO_ROOT / "config" / "authorities")
    out = []
    for f in sorted(d.glob("*.toml")) if d.is_dir() else ():
        try:
            out.append(str(tomllib.loads(f.read_text())["id"]))
        except (KeyError, ValueError):
            continue
    return out


class LocalBroker:
    """One local broker in its own state directory.  ``start`` and ``stop`` are idempotent."""

    def __init__(self, state_dir: Optional[Path] = None, *, overrides: Optional[Mapping[str, str]] = None,
                 heap: str = "768m", secure: bool = False, users: Optional[list[str]] = None) -> None:
        self.dir = Path(state_dir or default_state_dir()).resolve()
        self.overrides = {**LOCAL_OVERRIDES, **(overrides or {})}
        self.heap = heap
        self.secure = secure
        self.users = list(users) if users is not None else \
            [*SECURE_USERS, *(f"ipanon-collector-{o}" for o in operator_ids()),
             *(f"ipanon-authority-{a}" for a in authority_ids())]
        self.meta_path = self.dir / "broker.json"
        self.log_path = self.dir / "broker.log"

    # -- secure mode ---------------------------------------------------------------------

    @property
    def tls_dir(self) -> Path:
        return self.dir / "tls"

    def password_file(self, user: str) -> Path:
        return self.dir / "secrets" / f"{user}.password"

    def client_file(self, user: str, *, mtls: bool = False) -> Path:
        """The client security file (``IPANON_KAFKA_SECURITY``) of one user of a secure broker:
        SCRAM over TLS, or (``mtls``) a client certificate on the mutual-TLS listener."""
        return self.dir / "clients" / (f"{user}.mtls.toml" if mtls else f"{user}.toml")

    @property
    def mtls_bootstrap(self) -> str:
        """Bootstrap address of the mutual-TLS listener of a running secure broker."""
        self.bootstrap  # raises if not running
        return f"127.0.0.1:{self._meta()['mtls_port']}"

    def security(self, user: str = ADMIN_USER, *, mtls: bool = False):
        """``agents.security.KafkaSecurity`` for one user of this (secure) broker."""
        from .security import load_security

        if not self._meta().get("secure"):
            raise BrokerError(f"local broker in {self.dir} is not in secure mode")
        return load_security({}, file=self.client_file(user, mtls=mtls))

    def _prepare_secure(self) -> list[str]:
        """Certificates, passwords and client files; returns the StorageTool SCRAM arguments."""
        return prepare_secure(self.dir, self.tls_dir, self.users, password_file=self.password_file,
                              client_file=self.client_file)

    # -- state ---------------------------------------------------------------------------

    def _meta(self) -> dict:
        try:
            return json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return {}

    def status(self) -> BrokerInfo:
        m = self._meta()
        pid = m.get("pid")
        running = bool(pid) and _pid_alive(pid) and _port_open(m["port"])
        return BrokerInfo(running, m.get("bootstrap") if running else None, pid if running else None, self.dir)

    @property
    def bootstrap(self) -> str:
        info = self.status()
        if not info.running:
            raise BrokerError(f"local broker in {self.dir} is not running: run `ipanon broker start`")
        return info.bootstrap  # type: ignore[return-value]

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, *, timeout_s: float = 180.0, quiet: bool = False) -> BrokerInfo:
        info = self.status()
        if info.running:
            return info
        java = _need("java", "install Java 17+ (Debian: apt-get install openjdk-17-jre-headless)")
        libs = fetch(quiet=quiet)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dir.chmod(0o700)  # log segments hold subscriber ids and addresses: owner only
        m = self._meta()
        data = self.dir / "data"
        if not (data / "meta.properties").exists():
            m = {"port": free_port(), "controller_port": free_port(), "secure": self.secure}
            while m["controller_port"] == m["port"]:
                m["controller_port"] = free_port()
            if self.secure:
                m["mtls_port"] = free_port()
                while m["mtls_port"] in (m["port"], m["controller_port"]):
                    m["mtls_port"] = free_port()
            shutil.rmtree(data, ignore_errors=True)
            scram = self._prepare_secure() if self.secure else []
            self.mtls_port = m.get("mtls_port")
            self._write_properties(m["port"], m["controller_port"], data)
            cluster_id = new_cluster_id()
            # The SCRAM passwords reach StorageTool through a 0600 java @argfile, never argv:
            # /proc/<pid>/cmdline (ps) is readable by every local user.
            argfile = self.dir / "format.args"
            _write_argfile(argfile, ["kafka.tools.StorageTool", "format", "-t", cluster_id,
                                     "-c", str(self.dir / "server.properties"), "--standalone", *scram])
            try:
                fmt = subprocess.run(
                    [java, "-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={LOG4J}", f"@{argfile}"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, umask=PRIVATE_UMASK,
                )
            finally:
                argfile.unlink(missing_ok=True)
            if fmt.returncode != 0:  # the output may echo the SCRAM arguments: show no passwords
                tail = fmt.stdout.strip()[-300:] if not scram else fmt.stdout.strip().splitlines()[-1][:200]
                raise BrokerError(f"formatting the broker's storage failed: {tail}")
        else:
            if bool(m.get("secure")) != self.secure:
                want, have = ("secure", "plaintext") if self.secure else ("plaintext", "secure")
                raise BrokerError(f"the broker in {self.dir} was formatted {have}; cannot start it {want} "
                                  f"(use another --dir, or `ipanon broker wipe`)")
            self.mtls_port = m.get("mtls_port")
            self._write_properties(m["port"], m["controller_port"], data)
        for port in (m["port"], m["controller_port"], *([m["mtls_port"]] if m.get("mtls_port") else [])):
            if _port_open(port):
                raise BrokerError(f"port {port} of the local broker is taken by another process; "
                                  f"stop it or remove {self.dir} to start afresh")
        log = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        proc = subprocess.Popen(
            [java, f"-Xms128m", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
             "-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={LOG4J}",
             "kafka.Kafka", str(self.dir / "server.properties")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI that started it; `stop` ends it
            umask=PRIVATE_UMASK,  # segments, indexes, checkpoints: 0600 files in 0700 dirs
        )
        log.close()
        m.update(pid=proc.pid, bootstrap=f"127.0.0.1:{m['port']}", started_at=time.time(),
                 kafka_version=KAFKA_VERSION)
        self.meta_path.write_text(json.dumps(m))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise BrokerError(f"broker exited with code {proc.returncode}: {' | '.join(tail)[-400:]}")
            if _port_open(m["port"]) and b"Kafka Server started" in self.log_path.read_bytes()[-20000:]:
                return self.status()
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"broker did not start within {timeout_s:.0f}s; see {self.log_path}")

    def stop(self, *, timeout_s: float = 30.0) -> BrokerInfo:
        m = self._meta()
        pid = m.get("pid")
        if pid and _pid_alive(pid):
            for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and _pid_alive(pid):
                    try:  # reap it if it is our child
                        os.waitpid(pid, os.WNOHANG)
                    except ChildProcessError:
                        pass
                    time.sleep(0.1)
                if not _pid_alive(pid):
                    break
        if m:
            m.pop("pid", None)
            m.pop("bootstrap", None)
            self.meta_path.write_text(json.dumps(m))
        return self.status()

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _write_properties(self, port: int, cport: int, data: Path) -> None:
        write_server_properties(self.dir, port=port, cport=cport, data=data, overrides=self.overrides,
                                secure=self.secure, mtls_port=getattr(self, "mtls_port", None),
                                tls_dir=self.tls_dir, admin_password_file=self.password_file(ADMIN_USER))
