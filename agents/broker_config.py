"""The files a local broker is started on: ``server.properties`` and, in secure mode, the
credentials of every user.

``agents.broker.LocalBroker`` runs the broker's process (format, start, stop, status); this
module assembles what that process reads, so the lifecycle and the configuration can be read
(and changed) apart (no class over 250 lines).  Secure mode is described in
``agents.broker``'s module docstring; the names below are re-exported there.

- ``write_server_properties``: the plaintext (``PLAINTEXT`` client listener) or secure
  (``SASL_SSL`` with SCRAM-SHA-512, a mutual-TLS ``MTLS`` listener, a mutual-TLS controller,
  ``StandardAuthorizer`` with no ACL meaning no access) properties.  The secure file holds the
  admin password (inter-broker login) and is written owner-only.
- ``prepare_secure``: the throw-away CA and broker certificate, one SCRAM password per user
  (0600), each user's client security file and, for every user but the admin, a client
  certificate ``CN=<user>``; returns the ``StorageTool format --add-scram`` arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

#: SCRAM users of a secure local broker (authorities are added per registry entry as
#: ``ipanon-authority-<id>``).  ``ipanon-admin`` is the super user.
ADMIN_USER = "ipanon-admin"
#: The broker's own certificate (CN=ipanon-broker) as a principal, after the mapping rule
#: ``RULE:^CN=([a-z0-9-]+)$/$1/`` that also turns a client certificate CN=<user> into User:<user>.
BROKER_PRINCIPAL = "User:ipanon-broker"
SSL_PRINCIPAL_RULES = "RULE:^CN=([a-z0-9-]+)$/$1/,DEFAULT"
SECURE_USERS = (ADMIN_USER, "ipanon-worker", "ipanon-analyst", "ipanon-staff", "ipanon-auditor")


def _single_node(data: Path, overrides: Mapping[str, str]) -> dict[str, str]:
    """What both modes share: the data directory, the internal topics of a one-node cluster,
    then the caller's overrides (last, so they win)."""
    return {
        "log.dirs": str(data),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        **overrides,
    }


def plain_properties(port: int, cport: int, data: Path, overrides: Mapping[str, str]) -> dict[str, str]:
    """A single KRaft node (broker and controller) on loopback, no security."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        **_single_node(data, overrides),
    }


def secure_properties(port: int, cport: int, mport: Optional[int], data: Path, overrides: Mapping[str, str],
                      *, tls_dir: Path, admin_pw: str) -> dict[str, str]:
    """The same node with SASL_SSL (SCRAM-SHA-512) clients, an optional mutual-TLS client
    listener on ``mport``, a mutual-TLS controller and the standard authorizer."""
    ca, ks = tls_dir / "ca.pem", tls_dir / "broker.pem"
    mtls = f",MTLS://127.0.0.1:{mport}" if mport else ""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
        "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}{mtls}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}{mtls}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL,MTLS:SSL",
        "listener.name.mtls.ssl.client.auth": "required",
        "ssl.principal.mapping.rules": SSL_PRINCIPAL_RULES,
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN_USER}" password="{admin_pw}";',
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(ks),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca),
        "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
        "listener.name.controller.ssl.client.auth": "required",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN_USER};{BROKER_PRINCIPAL}",
        **_single_node(data, overrides),
    }


def write_server_properties(state_dir: Path, *, port: int, cport: int, data: Path, overrides: Mapping[str, str],
                            secure: bool, mtls_port: Optional[int], tls_dir: Path, admin_password_file: Path) -> None:
    """``<state_dir>/server.properties``; the secure one (it holds the admin password) 0600."""
    if not secure:
        props = plain_properties(port, cport, data, overrides)
        (state_dir / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return
    from .security import _write_private, read_secret

    admin_pw = read_secret(admin_password_file, "SASL password file")
    props = secure_properties(port, cport, mtls_port, data, overrides, tls_dir=tls_dir, admin_pw=admin_pw)
    # holds the admin password (inter-broker login): owner-only, like every secret
    _write_private(state_dir / "server.properties", "".join(f"{k}={v}\n" for k, v in props.items()).encode())


def prepare_secure(state_dir: Path, tls_dir: Path, users: Iterable[str], *,
                   password_file: Callable[[str], Path], client_file: Callable[..., Path]) -> list[str]:
    """Certificates, passwords and client files; returns the StorageTool SCRAM arguments."""
    import secrets as _secrets

    from .security import (KafkaSecurity, _write_private, issue_client_certificate, make_local_pki,
                           write_client_file)

    paths = make_local_pki(tls_dir)
    (state_dir / "secrets").mkdir(mode=0o700, exist_ok=True)
    args = []
    for user in users:
        pw = _secrets.token_hex(24)  # hex: safe inside StorageTool's [name=…,password=…] syntax
        _write_private(password_file(user), (pw + "\n").encode())
        args += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={pw}]"]
        write_client_file(client_file(user),
                          KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", user, "-", ca_file=paths["ca"]),
                          password_file(user))
        if user != ADMIN_USER:  # the admin is a SCRAM identity only
            cert, key = issue_client_certificate(tls_dir, user, tls_dir / "clients")
            write_client_file(client_file(user, mtls=True),
                              KafkaSecurity("SSL", ca_file=paths["ca"], cert_file=cert, key_file=key), None)
    return args
