"""How every ipanon Kafka client connects: TLS, SASL/SCRAM-SHA-512, optionally mutual TLS.

Configured once per process, from the environment:

- ``IPANON_KAFKA_SECURITY`` — path of a client security file (TOML, below); relative paths in
  it are relative to the file.  ``ipanon broker start --secure`` writes one per role.
- or the single variables, which override the file's values: ``IPANON_KAFKA_PROTOCOL``
  (``PLAINTEXT`` | ``SSL`` | ``SASL_SSL`` | ``SASL_PLAINTEXT``), ``IPANON_SASL_MECHANISM``
  (default ``SCRAM-SHA-512``), ``IPANON_SASL_USERNAME``, ``IPANON_SASL_PASSWORD_FILE`` or
  ``IPANON_SASL_PASSWORD``, ``IPANON_SSL_CAFILE``, ``IPANON_SSL_CERTFILE`` and
  ``IPANON_SSL_KEYFILE`` (mutual TLS).

```toml
protocol = "SASL_SSL"
mechanism = "SCRAM-SHA-512"
username = "ipanon-worker"
password_file = "../secrets/ipanon-worker.password"   # mode 0600, else refused
ca_file = "../tls/ca.pem"
# cert_file = "client.pem"; key_file = "client.key"   # mutual TLS (key: mode 0600)
```

Secrets are never taken from the command line (they would show in ``ps`` and shell history),
never put in a repr, an error message or a log line.  A password file or TLS key file that its
group or others can read is refused (``agents.keystore.require_private``) — the same rule as
operator keys.  A security file may not hold a password itself: it is usually world-readable
configuration.

Nothing set = ``PLAINTEXT`` (the local development broker), exactly the behaviour before this
module existed.  The helpers return keyword arguments for kafka-python
(``kafka_python_kwargs``), aiokafka (``aiokafka_kwargs``) and Faust (``faust_credentials``),
so the worker, the CLI tools and the tests all connect the same way.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import tomllib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping, Optional

from stream.errors import ConfigError

from .keystore import require_private

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
ENV_FILE = "IPANON_KAFKA_SECURITY"
_FILE_KEYS = {"protocol", "mechanism", "username", "password_file", "ca_file", "cert_file", "key_file",
              "check_hostname"}


@dataclass(frozen=True)
class KafkaSecurity:
    """One client identity.  ``password`` is loaded from its file/variable at construction
    time by ``load_security``; it is excluded from ``repr`` and comparisons."""

    protocol: str = "PLAINTEXT"
    mechanism: str = "SCRAM-SHA-512"
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False, compare=False)
    ca_file: Optional[Path] = None
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"Kafka security protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.sasl:
            if self.mechanism not in MECHANISMS:
                raise ConfigError(f"SASL mechanism {self.mechanism!r} is not one of {', '.join(MECHANISMS)}")
            if not self.username or self.password is None:
                raise ConfigError(f"{self.protocol} needs a username and a password (IPANON_SASL_USERNAME and "
                                  f"IPANON_SASL_PASSWORD_FILE, or username/password_file in the security file)")
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("mutual TLS needs both a certificate file and a key file")

    def __repr__(self) -> str:  # never the password, never file contents
        who = f" user={self.username}" if self.username else ""
        return f"KafkaSecurity({self.protocol}{who})"

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """One log-safe line: protocol, mechanism and user name only."""
        if not self.sasl:
            return self.protocol + (" (mutual TLS)" if self.cert_file else "")
        return f"{self.protocol} {self.mechanism} as {self.username}" + (" + client certificate" if self.cert_file else "")


PLAINTEXT = KafkaSecurity()


def read_secret(path: Path, what: str) -> str:
    """The first line of a secret file that only its owner can read (else ``ConfigError``)."""
    p = require_private(Path(path), what)
    text = p.read_text().strip("\r\n")
    if not text or "\n" in text:
        raise ConfigError(f"{p}: {what} must hold exactly one non-empty line")
    return text


def _load_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: Kafka security file not found ({ENV_FILE})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    if "password" in data:
        raise ConfigError(f"{path}: put the password in a separate file (password_file, mode 0600), "
                          f"not in the security file")
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(_FILE_KEYS))})")
    base = Path(path).resolve().parent
    for k in ("password_file", "ca_file", "cert_file", "key_file"):
        if k in data:
            data[k] = (base / Path(data[k]).expanduser()).resolve()
    return data


def load_security(env: Mapping[str, str] = os.environ, *, file: Optional[Path] = None) -> KafkaSecurity:
    """The process's Kafka security from ``file`` or ``$IPANON_KAFKA_SECURITY``, overridden by
    the single variables.  Reads and checks the secret files now, so a bad setting stops the
    program at start-up with one clear ``ConfigError``."""
    def get(name: str) -> Optional[str]:
        v = env.get(name)
        return v if v not in (None, "") else None

    path = file or get(ENV_FILE)
    data: dict[str, Any] = _load_file(Path(path)) if path else {}
    for var, key, conv in (("IPANON_KAFKA_PROTOCOL", "protocol", str), ("IPANON_SASL_MECHANISM", "mechanism", str),
                           ("IPANON_SASL_USERNAME", "username", str),
                           ("IPANON_SASL_PASSWORD_FILE", "password_file", Path),
                           ("IPANON_SSL_CAFILE", "ca_file", Path), ("IPANON_SSL_CERTFILE", "cert_file", Path),
                           ("IPANON_SSL_KEYFILE", "key_file", Path)):
        if get(var) is not None:
            data[key] = conv(get(var))
    password = None
    if get("IPANON_SASL_PASSWORD") is not None:
        password = env["IPANON_SASL_PASSWORD"]
    elif data.get("password_file"):
        password = read_secret(data["password_file"], "SASL password file")
    if not data.get("protocol"):
        data["protocol"] = "SASL_SSL" if data.get("username") else ("SSL" if data.get("ca_file") else "PLAINTEXT")
    data.pop("password_file", None)
    for k in ("ca_file", "cert_file"):
        if data.get(k) and not Path(data[k]).is_file():
            raise ConfigError(f"{data[k]}: TLS {k.replace('_', ' ')} not found")
    if data.get("key_file"):
        require_private(Path(data["key_file"]), "TLS private key file")
    return KafkaSecurity(password=password, **data)


_cached: Optional[KafkaSecurity] = None


def current() -> KafkaSecurity:
    """``load_security()`` of this process's environment, loaded once."""
    global _cached
    if _cached is None:
        _cached = load_security()
    return _cached


def ssl_context(sec: KafkaSecurity) -> Optional[ssl.SSLContext]:
    """A verifying TLS client context (CA file or the system store; client certificate for
    mutual TLS), or ``None`` for a protocol without TLS."""
    if not sec.tls:
        return None
    ctx = ssl.create_default_context(cafile=str(sec.ca_file) if sec.ca_file else None)
    ctx.check_hostname = sec.check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if sec.cert_file:
        ctx.load_cert_chain(str(sec.cert_file), str(sec.key_file))
    return ctx


def kafka_python_kwargs(sec: Optional[KafkaSecurity] = None) -> dict[str, Any]:
    """Keyword arguments for ``KafkaProducer``/``KafkaConsumer``/``KafkaAdminClient``.  With
    TLS an ``ssl_context`` is passed, so kafka-python verifies exactly as aiokafka does."""
    sec = current() if sec is None else sec
    kw: dict[str, Any] = {"security_protocol": sec.protocol}
    if sec.tls:
        kw["ssl_context"] = ssl_context(sec)
        kw["ssl_check_hostname"] = sec.check_hostname
    if sec.sasl:
        kw.update(sasl_mechanism=sec.mechanism, sasl_plain_username=sec.username, sasl_plain_password=sec.password)
    return kw


def aiokafka_kwargs(sec: Optional[KafkaSecurity] = None) -> dict[str, Any]:
    """Keyword arguments for aiokafka clients (same names as kafka-python, minus the
    hostname flag, which lives in the context)."""
    kw = kafka_python_kwargs(sec)
    kw.pop("ssl_check_hostname", None)
    return kw


def faust_credentials(sec: Optional[KafkaSecurity] = None):
    """``broker_credentials`` for ``faust.App`` (``None`` = plaintext)."""
    sec = current() if sec is None else sec
    if sec.protocol == "PLAINTEXT":
        return None
    import faust

    if sec.sasl:
        return faust.SASLCredentials(username=sec.username, password=sec.password,
                                     ssl_context=ssl_context(sec), mechanism=sec.mechanism)
    return faust.SSLCredentials(ssl_context(sec))


def connect_hint(sec: Optional[KafkaSecurity] = None) -> str:
    """What to check when a client fails to connect or is refused (safe to print)."""
    sec = current() if sec is None else sec
    return f"connecting {sec.describe()}; check IPANON_KAFKA_SECURITY / IPANON_SASL_* / IPANON_SSL_*"


# -- a local certificate authority (``ipanon broker start --secure``) ----------------------

def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def make_local_pki(directory: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                   broker_cn: str = "ipanon-broker", days: int = 365, now: Optional[datetime] = None) -> dict[str, Path]:
    """A throw-away CA and a broker certificate for ``hosts`` (ECDSA P-256, SHA-256), in PEM.

    Writes ``ca.pem`` (the clients' and the broker's trust anchor), ``ca.key``, and
    ``broker.pem`` = the broker's PKCS#8 key followed by its certificate and the CA
    certificate — the layout Kafka's ``ssl.keystore.type=PEM`` reads (KIP-651).  The broker
    certificate also works as a TLS *client* certificate (its DN is the broker's principal on
    the mutual-TLS controller listener).  Key files are mode 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    now = now or datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ipanon local CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, broker_cn)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    pkcs8 = dict(encoding=pem, format=serialization.PrivateFormat.PKCS8,
                 encryption_algorithm=serialization.NoEncryption())
    paths = {"ca": d / "ca.pem", "ca_key": d / "ca.key", "broker": d / "broker.pem"}
    paths["ca"].write_bytes(ca.public_bytes(pem))
    _write_private(paths["ca_key"], ca_key.private_bytes(**pkcs8))
    _write_private(paths["broker"], key.private_bytes(**pkcs8) + cert.public_bytes(pem) + ca.public_bytes(pem))
    return paths


def issue_client_certificate(tls_dir: Path, cn: str, out_dir: Path, *, days: int = 365,
                             now: Optional[datetime] = None) -> tuple[Path, Path]:
    """A TLS client certificate ``CN=<cn>`` from the CA in ``tls_dir`` (``make_local_pki``), for
    mutual TLS.  Writes ``<out_dir>/<cn>.pem`` (certificate + CA) and ``<cn>.key`` (PKCS#8,
    0600).  The secure local broker maps ``CN=<cn>`` to the principal ``User:<cn>``, so a
    certificate gets exactly the ACLs of the SCRAM user of the same name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    tls_dir, out_dir = Path(tls_dir), Path(out_dir)
    ca = x509.load_pem_x509_certificate((tls_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key(require_private(tls_dir / "ca.key", "CA key file").read_bytes(), None)
    now = now or datetime.now(timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o700)
    cert_path, key_path = out_dir / f"{cn}.pem", out_dir / f"{cn}.key"
    cert_path.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    _write_private(key_path, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def write_client_file(path: Path, sec: KafkaSecurity, password_file: Optional[Path]) -> Path:
    """A security file (format above) for one identity; paths are written relative to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def rel(p: Path) -> str:
        return os.path.relpath(Path(p).resolve(), path.parent.resolve())

    lines = [f'protocol = "{sec.protocol}"']
    if sec.sasl:
        lines += [f'mechanism = "{sec.mechanism}"', f'username = "{sec.username}"']
        if password_file:
            lines.append(f'password_file = "{rel(password_file)}"')
    for k in ("ca_file", "cert_file", "key_file"):
        v = getattr(sec, k)
        if v:
            lines.append(f'{k} = "{rel(v)}"')
    path.write_text("# ipanon Kafka client security (see agents/security.py)\n" + "\n".join(lines) + "\n")
    return path


def with_identity(sec: KafkaSecurity, username: str, password: str) -> KafkaSecurity:
    """The same transport settings under another SASL identity (tests, ``acl apply``)."""
    return replace(sec, username=username, password=password)


def probe(bootstrap: str, sec: Optional[KafkaSecurity] = None, *, timeout_s: float = 15.0) -> list[str]:
    """Connect once to the first bootstrap server as ``sec`` and ask for metadata; returns the
    topic names this identity may see.  Raises what the broker made of it — e.g. aiokafka's
    ``SaslAuthenticationFailed`` for bad credentials, ``KafkaConnectionError`` when the broker
    drops a plaintext or unauthenticated connection, ``ssl.SSLCertVerificationError`` for an
    untrusted broker certificate.  For diagnostics and the security tests."""
    import asyncio

    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    sec = current() if sec is None else sec
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    kw = aiokafka_kwargs(sec)

    async def run() -> list[str]:
        conn = await create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **kw)
        try:
            resp = await conn.send(MetadataRequest(None, False))  # None = every topic it may describe
            return sorted(t[1] for t in resp.topics if t[0] == 0)
        finally:
            conn.close()

    return asyncio.run(asyncio.wait_for(run(), timeout_s))


# -- saying what failed ---------------------------------------------------------------------

class ConnectFailed(Exception):
    """A connection check failed; ``kind`` is ``unreachable`` | ``authentication`` |
    ``tls-verification`` | ``protocol`` | ``timeout``; the message is safe to print."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def diagnose(bootstrap: str, sec: Optional[KafkaSecurity] = None, *, timeout_s: float = 5.0) -> list[str]:
    """Connect once (``probe``) and say what failed in one line, within ``timeout_s``: the
    kafka clients themselves only report a ``KafkaTimeoutError`` after their full timeout
    for a wrong password, an untrusted certificate, a plaintext client on a TLS listener and
    an unreachable broker alike.  Returns the visible topic names; raises ``ConnectFailed``."""
    import asyncio

    from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

    sec = current() if sec is None else sec
    who = sec.describe()
    try:
        return probe(bootstrap, sec, timeout_s=timeout_s)
    except SaslAuthenticationFailed:
        raise ConnectFailed("authentication", f"authentication failed at {bootstrap} ({who}): wrong password "
                                              f"or unknown user") from None
    except ssl.SSLCertVerificationError:
        raise ConnectFailed("tls-verification", f"TLS verification failed at {bootstrap}: the broker's certificate "
                                                f"is not signed by the trusted CA (IPANON_SSL_CAFILE / ca_file: "
                                                f"{sec.ca_file or 'system store'})") from None
    except ssl.SSLError as e:
        raise ConnectFailed("protocol", f"TLS handshake with {bootstrap} failed ({e.reason or type(e).__name__}): "
                                        f"is it a TLS listener? client uses {sec.protocol}") from None
    except ConnectionRefusedError:
        raise ConnectFailed("unreachable", f"nothing listens at {bootstrap} (connection refused): is the broker "
                                           f"running?") from None
    except (asyncio.TimeoutError, TimeoutError):
        hint = " (a TLS client talking to a plaintext listener waits like this)" if sec.tls else ""
        raise ConnectFailed("timeout", f"no answer from {bootstrap} within {timeout_s:g} s{hint}") from None
    except (KafkaConnectionError, ConnectionError, EOFError, OSError) as e:
        if sec.protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
            raise ConnectFailed("protocol", f"{bootstrap} closed the connection of a {sec.protocol} client: it "
                                            f"probably expects TLS (set IPANON_KAFKA_SECURITY or "
                                            f"IPANON_KAFKA_PROTOCOL)") from None
        raise ConnectFailed("unreachable", f"cannot connect to {bootstrap} ({type(e).__name__}, {who})") from None


def topic_access(bootstrap: str, topic: str, sec: Optional[KafkaSecurity] = None, *,
                 timeout_s: float = 5.0) -> str:
    """``ok``, ``denied`` (an ACL: the broker answers TOPIC_AUTHORIZATION_FAILED) or
    ``missing`` for one topic, as this identity sees it."""
    import asyncio

    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    sec = current() if sec is None else sec
    host, _, port = bootstrap.split(",")[0].rpartition(":")

    async def run() -> str:
        conn = await create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **aiokafka_kwargs(sec))
        try:
            resp = await conn.send(MetadataRequest([topic], False))
            code = next((t[0] for t in resp.topics if t[1] == topic), 3)
            return "ok" if code == 0 else ("denied" if code == 29 else "missing")
        finally:
            conn.close()

    return asyncio.run(asyncio.wait_for(run(), timeout_s))
