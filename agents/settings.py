"""Worker settings: loaded once at the edge (CLI flags > environment > defaults) and passed in.

Environment variables (all optional): ``IPANON_BOOTSTRAP`` (default: the running local broker),
``IPANON_APP_ID`` (default ``ipanon``), ``IPANON_TOPIC_PREFIX`` (``ipanon``), ``IPANON_PARTITIONS`` (4), ``IPANON_REPLICATION_FACTOR`` (1), ``IPANON_DATA_DIR``
(``~/.local/state/ipanon/worker``), ``IPANON_OPERATORS`` (``config/operators``),
``IPANON_KEYS`` (directory of operator key files), ``IPANON_DEFAULT_OPERATOR`` (used for raw
records without an ``ipanon-operator`` header; unset = such records are dead-lettered),
``IPANON_WEB_PORT`` (6066; 0 disables the web server), ``IPANON_WEB_BIND`` (127.0.0.1; 0.0.0.0
in containers so Prometheus can scrape ``/metrics``), ``IPANON_TTL_MS`` (shorten every operator's table TTL; never lengthens it past the retention
plan), ``IPANON_HEARTBEAT_MS`` (60000: how often the worker appends to every partition of the
topics that hold raw identifiers, so their segments roll), ``IPANON_INGEST_LAG_MS`` (300000:
the longest a raw record may arrive after its mapping ended), ``IPANON_SWEEPER_PERIOD_MS`` (1000:
how often the expiry sweeper runs).  The retention plan (``stream.policy``) is computed with these
same values, by the worker and by ``ipanon topics plan|apply|render`` alike
(``agents.runtime.plan_params``).  ``IPANON_INSTANCE_ID`` (static consumer-group membership; default
derived from host, app id and data directory) and ``IPANON_SESSION_TIMEOUT_MS`` (30000) govern how
fast a restarted worker takes its partitions back (docs/operations.md).  ``IPANON_CANARY_PERIOD_MS``
(300000; 0 = off): one erasure canary per operator this often (``agents.canary``).

The mapping table's store (docs/state-on-disk.md): ``IPANON_TABLE_STORE`` (``memory``,
the default: a dict restored from the changelog at every start; ``disk``: RocksDB under
``<data dir>/<IPANON_STATE_DIR>`` (default ``state``), mode 0700, restarted from its checkpoint),
and the on-disk erasure parameters ``IPANON_ERASURE_CYCLE_MS`` (3000000: every held partition is
force-compacted at least this often), ``IPANON_ERASURE_TICK_MS`` (10000: the erasure tick) and
``IPANON_COMPACTION_ALLOWANCE_MS`` (300000: the longest one tick may take), which give the disk
term ``B_disk = cycle + tick + allowance`` of the retention plan (``stream.disk_bound``).

Kafka security (TLS, SASL/SCRAM): ``IPANON_KAFKA_SECURITY`` (a client security file)
and/or ``IPANON_KAFKA_PROTOCOL``, ``IPANON_SASL_USERNAME``, ``IPANON_SASL_PASSWORD_FILE``,
``IPANON_SSL_CAFILE`` … — see ``agents.security``.  Loaded into ``Settings.security`` (secret
files checked and read at start-up); never from flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from .broker import REPO_ROOT
from .security import KafkaSecurity, load_security


@dataclass(frozen=True)
class Settings:
    bootstrap: str
    app_id: str = "ipanon"
    topic_prefix: str = "ipanon"
    partitions: int = 4
    replication_factor: int = 1
    data_dir: Path = Path.home() / ".local" / "state" / "ipanon" / "worker"
    operators_dir: Path = REPO_ROOT / "config" / "operators"
    keys_dir: Optional[Path] = None
    default_operator: Optional[str] = None
    web_port: int = 6066
    web_bind: str = "127.0.0.1"
    web_enabled: bool = True
    ttl_ms_override: Optional[int] = None
    #: the expiry sweeper runs this often; part of the deletion bound (``stream.policy.PlanParams``)
    sweeper_period_ms: int = 1_000
    heartbeat_ms: int = 60_000
    ingest_lag_ms: int = 300_000
    batch_size: int = 2000
    batch_within_s: float = 0.05
    log_level: str = "warning"
    extra: Mapping[str, str] = field(default_factory=dict)
    #: how every client of this worker connects (None = ``agents.security.current()``)
    security: Optional[KafkaSecurity] = None
    #: this worker's static group membership id (None: derived from host, app id and data dir)
    instance_id: Optional[str] = None
    #: consumer group session timeout: how long a member that vanished without leaving keeps
    #: its partitions when it does not come back (a static member that comes back takes them at once)
    session_timeout_ms: int = 30_000
    #: one erasure canary per operator this often (``agents.canary``; 0 = off)
    canary_period_ms: int = 300_000
    #: where the mapping table lives: ``memory`` (a dict) or ``disk`` (RocksDB, ``agents.disk_store``)
    table_store: str = "memory"
    #: the RocksDB directory, relative to ``data_dir`` (one per changelog topic below it)
    state_dir: str = "state"
    #: erasure on disk (``stream.disk_bound.DiskBound``): cycle, tick and the allowance of one tick
    erasure_cycle_ms: int = 3_000_000
    erasure_tick_ms: int = 10_000
    compaction_allowance_ms: int = 300_000

    def __post_init__(self) -> None:
        if self.table_store not in ("memory", "disk"):
            from stream.errors import ConfigError

            raise ConfigError(f"table store {self.table_store!r}: expected 'memory' or 'disk'")

    def disk_bound(self):
        """The on-disk store's erasure parameters and bound (``stream.disk_bound.DiskBound``)."""
        from stream.disk_bound import DiskBound

        return DiskBound(cycle_ms=self.erasure_cycle_ms, tick_ms=self.erasure_tick_ms,
                         compaction_allowance_ms=self.compaction_allowance_ms)

    @property
    def store_dir(self) -> Path:
        """The on-disk table's RocksDB directory: one per changelog topic (``<app id>-mappings-changelog``),
        so a data directory reused under another app id never reads another topic's checkpoints."""
        return Path(self.data_dir) / self.state_dir / f"{self.app_id}-mappings-changelog"

    @property
    def sweep_interval_s(self) -> float:
        return self.sweeper_period_ms / 1000

    @property
    def group_instance_id(self) -> str:
        """Static membership (KIP-345): a restarted worker rejoins under the same id and gets its
        partitions back without waiting for the session timeout of its former self.  Stable for one
        host + app id + data directory, distinct for two workers of one deployment."""
        if self.instance_id:
            return self.instance_id
        import hashlib
        import socket

        where = f"{socket.gethostname()}|{Path(self.data_dir).resolve()}"
        return f"{self.app_id}-{hashlib.sha256(where.encode()).hexdigest()[:12]}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides) -> "Settings":
        def get(name, conv=str, default=None):
            v = env.get(name)
            return conv(v) if v not in (None, "") else default

        kw = dict(
            bootstrap=get("IPANON_BOOTSTRAP"),
            app_id=get("IPANON_APP_ID", default="ipanon"),
            topic_prefix=get("IPANON_TOPIC_PREFIX", default="ipanon"),
            partitions=get("IPANON_PARTITIONS", int, 4),
            replication_factor=get("IPANON_REPLICATION_FACTOR", int, 1),
            data_dir=get("IPANON_DATA_DIR", Path, cls.data_dir),
            operators_dir=get("IPANON_OPERATORS", Path, cls.operators_dir),
            keys_dir=get("IPANON_KEYS", Path, None),
            default_operator=get("IPANON_DEFAULT_OPERATOR"),
            web_port=get("IPANON_WEB_PORT", int, 6066),
            web_bind=get("IPANON_WEB_BIND", default="127.0.0.1"),
            ttl_ms_override=get("IPANON_TTL_MS", int, None),
            heartbeat_ms=get("IPANON_HEARTBEAT_MS", int, 60_000),
            ingest_lag_ms=get("IPANON_INGEST_LAG_MS", int, 300_000),
            sweeper_period_ms=get("IPANON_SWEEPER_PERIOD_MS", int, 1_000),
            instance_id=get("IPANON_INSTANCE_ID"),
            session_timeout_ms=get("IPANON_SESSION_TIMEOUT_MS", int, 30_000),
            canary_period_ms=get("IPANON_CANARY_PERIOD_MS", int, 300_000),
            table_store=get("IPANON_TABLE_STORE", default="memory"),
            state_dir=get("IPANON_STATE_DIR", default="state"),
            erasure_cycle_ms=get("IPANON_ERASURE_CYCLE_MS", int, 3_000_000),
            erasure_tick_ms=get("IPANON_ERASURE_TICK_MS", int, 10_000),
            compaction_allowance_ms=get("IPANON_COMPACTION_ALLOWANCE_MS", int, 300_000),
            security=load_security(env),
        )
        kw.update({k: v for k, v in overrides.items() if v is not None})
        if kw["web_port"] == 0:  # 0 = no web server
            kw["web_enabled"] = False
        if not kw["bootstrap"]:
            from .broker import LocalBroker

            kw["bootstrap"] = LocalBroker().bootstrap
        return cls(**kw)
