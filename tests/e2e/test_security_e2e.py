"""Security end to end on the local broker in secure mode (its own broker, not the session's).

The broker runs SASL_SSL (SCRAM-SHA-512) with the StandardAuthorizer; the ACLs are exactly what
``ipanon acl apply`` creates.  Every refusal below is the broker's: each test connects as a
role and asserts the specific error the broker returns."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAuthorizationFailedError

from agents.acl import authority_topic, query_topics
from agents.broker import ADMIN_USER, LocalBroker
from agents.kafka_io import count, read_all
from agents.keystore import load_lookup_key
from agents.lookup_client import lookup_many
from agents.security import KafkaSecurity, kafka_python_kwargs, probe
from agents.topics import Topics
from tests.conftest import REPO, wait_for

pytestmark = pytest.mark.broker

AUTHORITIES = ("rights-demo", "se-police-demo")
SUBSCRIBER = "kund-4711@isp.example"


class CmdlineWatch:
    """Polls every process's /proc/<pid>/cmdline (what ``ps`` shows every local user) in a
    thread while the ``with`` body runs; ``seen`` holds each distinct command line."""

    def __init__(self, period_s: float = 0.01):
        import threading

        self.period_s, self.seen, self._stop = period_s, set(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        with open(f"/proc/{d}/cmdline", "rb") as f:
                            self.seen.add(f.read())
                    except OSError:
                        pass
            self._stop.wait(self.period_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    b = LocalBroker(tmp_path_factory.mktemp("secure-broker"), secure=True,
                    users=["ipanon-admin", "ipanon-collector-connect2ip", "ipanon-worker", "ipanon-analyst", "ipanon-staff",
                           "ipanon-auditor", *(f"ipanon-authority-{a}" for a in AUTHORITIES)])
    with CmdlineWatch() as watch:  # every command line seen while the broker formats and starts
        b.start(quiet=True, timeout_s=180)
    b.seen_cmdlines = watch.seen
    try:
        yield b
    finally:
        b.stop()


def env_for(b: LocalBroker, user: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPANON_")}
    env["IPANON_KAFKA_SECURITY"] = str(b.client_file(user))
    return env


def cli(b: LocalBroker, user: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agents.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env=env_for(b, user), timeout=timeout)


@pytest.fixture(scope="module")
def deployment(secure, tmp_path_factory):
    """Topics (created by the admin with the retention plan) and ACLs (``ipanon acl apply``,
    as the admin) for one prefix; per-authority reply topics created as the router would."""
    from agents.keystore import ensure_demo_keys
    from agents.kafka_io import ensure_topics
    from agents.runtime import apply_topics
    from agents.settings import Settings

    d = tmp_path_factory.mktemp("secure-deploy")
    prefix = f"s{uuid.uuid4().hex[:8]}"
    ops = d / "operators"
    ops.mkdir()
    shutil.copy(REPO / "config" / "operators" / "connect2ip.toml", ops / "connect2ip.toml")
    ensure_demo_keys(d / "keys", ["connect2ip"])
    settings = Settings(bootstrap=secure.bootstrap, app_id=prefix, topic_prefix=prefix, operators_dir=ops,
                        keys_dir=d / "keys", data_dir=d / "data", heartbeat_ms=1000,
                        security=secure.security(ADMIN_USER))
    plan = apply_topics(settings)
    shared = plan.configs_for(query_topics(prefix)[1]) if query_topics(prefix)[1] in {t.name for t in plan.topics} else {}
    ensure_topics(secure.bootstrap, [authority_topic(prefix, a) for a in AUTHORITIES], partitions=1,
                  configs={authority_topic(prefix, a): shared for a in AUTHORITIES},
                  security=secure.security(ADMIN_USER))
    r = cli(secure, ADMIN_USER, "acl", "apply", "--bootstrap", secure.bootstrap, "--prefix", prefix,
            "--app-id", prefix, *(x for a in AUTHORITIES for x in ("--authority", a)), "--operator", "connect2ip")
    assert r.returncode == 0, r.stderr
    assert "bindings created" in r.stdout
    # `acl apply` returns once describe_acls shows every binding; the authoriser reads the same
    # metadata image, so a granted read works now (no wait here on purpose)
    return {"prefix": prefix, "dir": d, "plan": plan, "topics": Topics(prefix), "settings": settings}


def read_refused(sec: KafkaSecurity, bootstrap: str, topic: str) -> None:
    """The broker refuses this identity the records of ``topic``: either already its offsets
    (no Describe) or the fetch itself (Describe — implied by Write — but no Read)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **kafka_python_kwargs(sec))
    tp = TopicPartition(topic, 0)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            c.end_offsets([tp])  # ListOffsets: needs Describe
            c.assign([tp])
            c.seek(tp, 0)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # Fetch: needs Read
                c.poll(timeout_ms=1000)
    finally:
        c.close()


def write_refused(sec: KafkaSecurity, bootstrap: str, topic: str) -> None:
    """The broker refuses this identity writes to ``topic``.  (Idempotence off: with it,
    kafka-python first asks for a producer id, which the broker refuses as
    ClusterAuthorizationFailed for a principal without Write on any topic — KIP-679.)"""
    p = KafkaProducer(bootstrap_servers=bootstrap, max_block_ms=20_000, enable_idempotence=False, retries=0,
                      **kafka_python_kwargs(sec))
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            p.send(topic, b"forged").get(timeout=30)
    finally:
        p.close()


def read_allowed(sec: KafkaSecurity, bootstrap: str, topic: str) -> dict:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **kafka_python_kwargs(sec))
    try:
        return c.end_offsets([TopicPartition(topic, 0)])
    finally:
        c.close()


def sensitive_topics(dep) -> list[str]:
    t = dep["topics"]
    requests, responses = query_topics(dep["prefix"])
    return [*t.raw, t.bindings, t.deadletter, t.lookup_requests, t.lookup_responses,
            f"{dep['prefix']}-mappings-changelog", requests, responses, t.audit,
            *(authority_topic(dep["prefix"], a) for a in AUTHORITIES)]


# -- who may not connect at all --------------------------------------------------------------

def test_unauthenticated_and_plaintext_clients_get_nothing(secure):
    bs = secure.bootstrap
    analyst = secure.security("ipanon-analyst")
    assert isinstance(probe(bs, analyst), list)  # the real identity connects
    with pytest.raises(KafkaConnectionError):  # plaintext to the TLS listener: dropped
        probe(bs, KafkaSecurity())
    with pytest.raises(KafkaConnectionError):  # TLS but no SASL: dropped before any metadata
        probe(bs, KafkaSecurity("SSL", ca_file=secure.tls_dir / "ca.pem"))
    with pytest.raises(SaslAuthenticationFailed, match="invalid credentials"):
        probe(bs, dataclasses.replace(analyst, password="guessed"))
    with pytest.raises(SaslAuthenticationFailed, match="invalid credentials"):
        probe(bs, dataclasses.replace(analyst, username="ipanon-nobody"))
    with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust our CA stops itself
        probe(bs, dataclasses.replace(analyst, ca_file=None))


def test_controller_listener_needs_the_broker_certificate(secure):
    port = json.loads(secure.meta_path.read_text())["controller_port"]
    with pytest.raises((KafkaConnectionError, ssl.SSLError, ConnectionError)):
        probe(f"127.0.0.1:{port}", KafkaSecurity("SSL", ca_file=secure.tls_dir / "ca.pem"))


# -- least privilege per role ----------------------------------------------------------------

def test_analyst_reads_stats_only(secure, deployment):
    bs, t = secure.bootstrap, deployment["topics"]
    analyst = secure.security("ipanon-analyst")
    assert read_allowed(analyst, bs, t.stats) is not None
    assert read_allowed(analyst, bs, t.aggregates) is not None
    for topic in sensitive_topics(deployment):
        read_refused(analyst, bs, topic)
    write_refused(analyst, bs, t.stats)  # no forged statistics either


def test_authority_reads_only_its_own_replies(secure, deployment):
    bs, t, prefix = secure.bootstrap, deployment["topics"], deployment["prefix"]
    police = secure.security("ipanon-authority-se-police-demo")
    assert read_allowed(police, bs, authority_topic(prefix, "se-police-demo")) is not None
    read_refused(police, bs, authority_topic(prefix, "rights-demo"))
    read_refused(police, bs, query_topics(prefix)[1])  # the shared reply topic (every authority's)
    read_refused(police, bs, t.stats)
    read_refused(police, bs, t.aggregates)
    read_refused(police, bs, query_topics(prefix)[0])  # other authorities' requests


def test_collector_writes_raw_and_reads_nothing(secure, deployment):
    bs, t = secure.bootstrap, deployment["topics"]
    collector = secure.security("ipanon-collector-connect2ip")
    p = KafkaProducer(bootstrap_servers=bs, max_block_ms=20_000, **kafka_python_kwargs(collector))
    try:
        p.send(t.operator_raw("connect2ip"), b"<134>not a real nat line", headers=[("ipanon-format", b"auto")]).get(timeout=30)
    finally:
        p.close()
    for topic in t.raw_shared:  # the shared topics, where a header would pick the operator
        write_refused(collector, bs, topic)
    write_refused(collector, bs, t.bindings)  # no forged bindings into the worker's internal topics
    write_refused(collector, bs, query_topics(deployment["prefix"])[0])  # nor lawful requests
    for topic in [*sensitive_topics(deployment), t.stats, t.aggregates]:
        read_refused(collector, bs, topic)


def test_auditor_and_staff(secure, deployment):
    bs, t, prefix = secure.bootstrap, deployment["topics"], deployment["prefix"]
    auditor, staff = secure.security("ipanon-auditor"), secure.security("ipanon-staff")
    assert read_allowed(auditor, bs, t.audit) is not None
    for topic in (t.stats, *t.raw, query_topics(prefix)[0], query_topics(prefix)[1]):
        read_refused(auditor, bs, topic)
    assert read_allowed(staff, bs, query_topics(prefix)[0]) is not None
    for topic in (t.stats, t.audit, *t.raw, query_topics(prefix)[1]):
        read_refused(staff, bs, topic)
    # the canaries' measurements: read by whoever writes or checks the compliance report, forged by none
    for who in (auditor, staff):
        assert read_allowed(who, bs, t.canary_results) is not None
        write_refused(who, bs, t.canary_results)
    read_refused(secure.security("ipanon-analyst"), bs, t.canary_results)
    read_refused(secure.security("ipanon-collector-connect2ip"), bs, t.canary_results)


# -- the whole pipeline under the worker's ACLs ----------------------------------------------

def start_worker(secure, dep, log: Path, extra: tuple = ()) -> subprocess.Popen:
    s = dep["settings"]
    args = [sys.executable, "-m", "agents.cli", "worker", "--bootstrap", secure.bootstrap, "--topic-prefix",
            dep["prefix"], "--app-id", dep["prefix"], "--operators", str(s.operators_dir), "--keys", str(s.keys_dir),
            "--data-dir", str(s.data_dir), "--web-port", "0", "--heartbeat-ms", "1000", "--loglevel", "info", *extra]
    return subprocess.Popen(args, cwd=REPO, env=env_for(secure, "ipanon-worker"), stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_pipeline_over_tls_and_scram_with_generated_acls(secure, deployment, tmp_path):
    bs, t, prefix = secure.bootstrap, deployment["topics"], deployment["prefix"]
    log = tmp_path / "worker.log"
    w = start_worker(secure, deployment, log)
    try:
        now = int(time.time())
        records = [
            {"User-Name": SUBSCRIBER, "Acct-Status-Type": "Start", "Acct-Session-Id": "S-1",
             "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": "100.64.12.34", "Event-Timestamp": now - 600},
            {"User-Name": SUBSCRIBER, "Acct-Status-Type": "Stop", "Acct-Session-Id": "S-1",
             "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": "100.64.12.34", "Event-Timestamp": now - 60,
             "Acct-Session-Time": 540},  # within the worker's 5 min ingest lag, else dead-lettered too-late
        ]
        feed = tmp_path / "radius.jsonl"
        feed.write_text("".join(json.dumps(r) + "\n" for r in records))
        r = cli(secure, "ipanon-collector-connect2ip", "produce", "--format", "radius-json", "--operator", "connect2ip",
                "--topic", t.operator_raw("connect2ip"), "--bootstrap", bs, "--no-create-topic", str(feed))
        assert r.returncode == 0, r.stderr

        analyst = secure.security("ipanon-analyst")
        wait_for(lambda: w.poll() is None and count(bs, t.stats, security=analyst) >= 2, timeout_s=240,
                 what=f"stats records readable by the analyst (worker log: {log})")
        assert w.poll() is None, log.read_text()[-2000:]
        stats = b"".join(r.value for r in read_all(bs, t.stats, security=analyst))
        assert SUBSCRIBER.encode() not in stats and b"100.64.12.34" not in stats

        ms = now * 1000
        worker = secure.security("ipanon-worker")
        key = load_lookup_key(deployment["settings"].keys_dir)  # the worker made it at start
        ans = lookup_many(bs, t, [{"operator": "connect2ip", "ip": "100.64.12.34", "from_ms": ms - 450_000,
                                   "to_ms": ms - 449_999}], key=key, timeout_s=90, security=worker)
        (got,) = ans.values()
        assert [h["subscriber"] for h in got["holders"]] == [SUBSCRIBER]

        if not hasattr(t, "query_requests"):
            pytest.skip("no query agent in this tree: lawful query step not run")
        keys = tmp_path / "keys"
        keys.mkdir()
        for f in ("se-police-demo.sign.pem", "se-police-demo.enc.pem"):
            shutil.copy(REPO / "config" / "keys" / "demo" / f, keys / f)
            os.chmod(keys / f, 0o600)
        police = "ipanon-authority-se-police-demo"
        r = cli(secure, police, "query", "submit", "--authority", "se-police-demo", "--key",
                str(keys / "se-police-demo.sign.pem"), "--basis", "lek-law-enforcement", "--case", "SEC-1",
                "--address", "100.64.12.34", "--from", str(ms - 700_000), "--to", str(ms), "--number", "sec-1",
                "--bootstrap", bs, "--prefix", prefix)
        assert r.returncode == 0, r.stderr
        r = cli(secure, police, "query", "fetch", "se-police-demo/sec-1", "--key", str(keys / "se-police-demo.enc.pem"),
                "--wait", "120", "--bootstrap", bs, "--prefix", prefix)
        assert r.returncode == 0, r.stderr + log.read_text()[-3000:]
        answer = json.loads(r.stdout)
        assert [m["subscriber"] for m in answer["result"]["matches"]] == [SUBSCRIBER]
        # the other authority cannot even see that this answer exists
        read_refused(secure.security("ipanon-authority-rights-demo"), bs, authority_topic(prefix, "se-police-demo"))
    finally:
        stop(w)


# -- mutual TLS: a client certificate instead of a password ----------------------------------

def test_mutual_tls_certificate_gets_the_same_acls_as_the_scram_user(secure, deployment, tmp_path):
    from agents.security import issue_client_certificate, make_local_pki

    ms, t = secure.mtls_bootstrap, deployment["topics"]
    analyst = secure.security("ipanon-analyst", mtls=True)
    assert analyst.protocol == "SSL" and analyst.cert_file is not None
    assert read_allowed(analyst, ms, t.stats) is not None  # CN=ipanon-analyst → User:ipanon-analyst
    for topic in (*t.raw, t.bindings, query_topics(deployment["prefix"])[1]):
        read_refused(analyst, ms, topic)
    with pytest.raises(KafkaConnectionError):  # TLS without a client certificate: dropped
        probe(ms, KafkaSecurity("SSL", ca_file=secure.tls_dir / "ca.pem"))
    # a certificate for the same name from another CA is not accepted
    make_local_pki(tmp_path / "rogue")
    cert, key = issue_client_certificate(tmp_path / "rogue", "ipanon-worker", tmp_path / "rogue" / "clients")
    with pytest.raises((KafkaConnectionError, ssl.SSLError, ConnectionError)):
        probe(ms, KafkaSecurity("SSL", ca_file=secure.tls_dir / "ca.pem", cert_file=cert, key_file=key))


# -- secrets never on a command line, data never readable by other local users -------------

def test_no_scram_password_on_any_command_line_while_the_secure_broker_starts(secure):
    """``ps`` shows every process's argv to every local user: the passwords given to
    StorageTool when the storage is formatted must not be there, nor anywhere else."""
    passwords = [p.read_text().strip().encode() for p in (secure.dir / "secrets").glob("*.password")]
    assert len(passwords) == len(secure.users) and all(len(p) >= 32 for p in passwords)
    storage_tool = [c for c in secure.seen_cmdlines if b"java" in c and b"@" in c and b"kafka.Kafka" not in c]
    # the watch really saw the format step (a JVM started with an @argfile), and the broker
    assert storage_tool, sorted(c[:120] for c in secure.seen_cmdlines if b"java" in c)
    assert any(b"kafka.Kafka" in c for c in secure.seen_cmdlines)
    leaks = [c.replace(b"\0", b" ")[:200] for c in secure.seen_cmdlines for p in passwords if p in c]
    assert leaks == []
    assert not (secure.dir / "format.args").exists()  # the argfile holding them is gone


def _as_nobody(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, user=65534, group=65534, extra_groups=[],
                          timeout=30)


def _world_traversable_dir(tmp_path: Path) -> Path:
    """A directory whose ancestors every user may traverse (pytest's own tmp dirs are 0700,
    which would hide any mistake below them)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="ipanon-modes-"))
    d.chmod(0o755)
    return d


def test_broker_and_worker_data_are_owner_only(secure, deployment, tmp_path):
    """Log segments of the secure broker and the worker's data directory: no group/other
    permission anywhere, and the user ``nobody`` can read neither a segment holding a
    subscriber id nor list the worker's directory."""
    bs, t = secure.bootstrap, deployment["topics"]
    marker = f"owner-only-{uuid.uuid4().hex[:8]}@isp.example"
    feed = tmp_path / "radius.jsonl"
    feed.write_text(json.dumps({"User-Name": marker, "Acct-Status-Type": "Start", "Acct-Session-Id": "M-1",
                                "NAS-IP-Address": "192.0.2.10", "Framed-IP-Address": "100.64.77.1",
                                "Event-Timestamp": int(time.time())}) + "\n")
    r = cli(secure, "ipanon-collector-connect2ip", "produce", "--format", "radius-json", "--operator", "connect2ip",
            "--topic", t.operator_raw("connect2ip"), "--bootstrap", bs, "--no-create-topic", str(feed))
    assert r.returncode == 0, r.stderr

    data = secure.dir / "data"
    segment = wait_for(lambda: next((p for p in data.glob(f"{t.operator_raw('connect2ip')}-*/*.log")
                                     if marker.encode() in p.read_bytes()), None), timeout_s=60,
                       what="the record in a raw-topic log segment")
    assert (secure.dir.stat().st_mode & 0o777) == 0o700
    loose = [(str(p.relative_to(secure.dir)), oct(p.stat().st_mode & 0o777))
             for p in [data, *data.rglob("*")] if p.stat().st_mode & 0o077]
    assert loose == []

    pub = _world_traversable_dir(tmp_path)
    w = None
    try:
        if os.geteuid() == 0:  # act as nobody on a hard link of the segment (same inode, same mode)
            link = pub / "segment.log"
            os.link(segment, link)
            assert marker.encode() in link.read_bytes()  # the owner reads it
            got = _as_nobody("cat", str(link))
            assert got.returncode != 0 and "Permission denied" in got.stderr, got
            assert marker not in got.stdout

        wdata = pub / "worker"
        dep = {**deployment, "settings": dataclasses.replace(deployment["settings"], data_dir=wdata)}
        log = tmp_path / "worker.log"
        w = start_worker(secure, dep, log)
        wait_for(lambda: w.poll() is not None or (wdata.is_dir() and any(p.is_dir() for p in wdata.iterdir())), timeout_s=120,
                 what=f"the worker's data directory (log: {log})")
        assert w.poll() is None, log.read_text()[-2000:]
        assert (wdata.stat().st_mode & 0o777) == 0o700
        if os.geteuid() == 0:
            got = _as_nobody("ls", str(wdata))
            assert got.returncode != 0 and "Permission denied" in got.stderr, got
    finally:
        if w is not None:
            stop(w)
        shutil.rmtree(pub, ignore_errors=True)


def _http_get(url: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def test_worker_serves_no_faust_views_only_status_and_metrics(secure, deployment, tmp_path):
    """Faust's /router/ and /table/… views answer anyone without authentication (the table
    view would list mapping keys): the worker must not serve them; /status and /metrics stay."""
    from agents.broker import free_port

    port = free_port()
    dep = {**deployment, "settings": dataclasses.replace(deployment["settings"], data_dir=tmp_path / "data")}
    log = tmp_path / "worker.log"
    w = start_worker(secure, dep, log, extra=("--web-port", str(port)))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: w.poll() is not None or _http_get(base + "/status.json")[0] == 200, timeout_s=180,
                 what=f"the worker's web server (log: {log})")
        assert w.poll() is None, log.read_text()[-2000:]
        status, body = _http_get(base + "/status.json")
        assert status == 200 and "connect2ip" in json.loads(body)["operators"]
        status, body = _http_get(base + "/metrics")
        assert status == 200 and b"ipanon_compliance_ratio" in body
        assert _http_get(base + "/status")[0] == 200
        table = f"{deployment['prefix']}-mappings"  # whatever the table's name, no /table/ view exists
        for path in ("/router/", "/router/?key=x", "/table/", f"/table/{table}/", f"/table/{table}/x/",
                     "/graph/", "/stats/", "/assignments/", "/performance/"):
            status, body = _http_get(base + path)
            assert status == 404, (path, status, body[:200])
    finally:
        stop(w)


# -- errors that say what failed ---------------------------------------------------------------

def _env_with(secure, tmp_path, *, protocol="SASL_SSL", password=None, ca=True, user="ipanon-staff") -> dict:
    """Single-variable security settings for ``user``, with one thing wrong."""
    sec = secure.security(user)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPANON_")}
    env["IPANON_KAFKA_PROTOCOL"] = protocol
    if protocol.startswith("SASL_"):
        pw = tmp_path / f"pw-{uuid.uuid4().hex[:6]}"
        pw.write_text(password if password is not None else sec.password)
        pw.chmod(0o600)
        env.update(IPANON_SASL_USERNAME=user, IPANON_SASL_PASSWORD_FILE=str(pw))
    if ca and sec.ca_file:
        env["IPANON_SSL_CAFILE"] = str(sec.ca_file)
    return env


def _timed_cli(env: dict, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "agents.cli", *args], cwd=REPO, capture_output=True, text=True,
                       env=env, timeout=120)
    return r, time.monotonic() - t


@pytest.mark.parametrize("case,expect", [
    ("wrong-password", "authentication failed"),
    ("missing-ca", "TLS verification failed"),
    ("plaintext", "probably expects TLS"),
])
def test_connection_errors_say_what_failed(secure, deployment, tmp_path, case, expect):
    env = {"wrong-password": lambda: _env_with(secure, tmp_path, password="not-the-password"),
           "missing-ca": lambda: _env_with(secure, tmp_path, ca=False),
           "plaintext": lambda: _env_with(secure, tmp_path, protocol="PLAINTEXT")}[case]()
    r, took = _timed_cli(env, "audit", "verify", "--no-anchor", "--bootstrap", secure.bootstrap,
                         "--prefix", deployment["prefix"])
    assert r.returncode == 2 and expect in r.stderr, r.stderr
    assert "KafkaTimeoutError" not in r.stderr and "Traceback" not in r.stderr
    assert "not-the-password" not in r.stderr + r.stdout
    assert took < 25, f"{case}: took {took:.1f} s"  # was 30 s and more (a Kafka client timeout)


def test_unreachable_broker_is_reported_in_seconds(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPANON_")}
    r, took = _timed_cli(env, "query", "status", "se-police-demo/1", "--bootstrap", f"127.0.0.1:{port}")
    assert r.returncode == 2 and "nothing listens" in r.stderr, r.stderr
    assert took < 10, f"took {took:.1f} s"


def test_acl_denial_in_query_status_is_reported_as_a_denial(secure, deployment):
    # rights-demo may read only its own reply topic; asking about another authority's request
    r = cli(secure, "ipanon-authority-rights-demo", "query", "status", "se-police-demo/1",
            "--bootstrap", secure.bootstrap, "--prefix", deployment["prefix"], timeout=120)
    assert r.returncode == 2 and "denied" in r.stderr and "does not exist" not in r.stderr, r.stderr
