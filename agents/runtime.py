"""Start-up: settings + configuration on disk + the broker → what the worker runs with.

Refuses to start half-configured: every operator profile must load
(``stream.config``), every operator must have a key file (``agents.keystore``), the broker must
be reachable, and every topic must exist with configs that keep every promise on *this* broker
(``agents.kafka_admin.prepare_retention``); otherwise a ``ConfigError`` names what to fix.

The plan's parameters (heartbeat, sweeper period, partitions, ingest lag, and with the table
on disk the store's erasure cycle, tick and allowance) come from the same ``Settings`` the
worker then runs with, and the schedule bucket width from the sweeper's own
schedule (``agents.mapping_table.SCHEDULE_BUCKET_MS``), so the bound the plan relies on is the
behaviour the worker has.  ``apply_topics`` creates the topics with that same plan (demo, tests; operators
run ``ipanon topics apply`` with the same flags).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from stream.config import OperatorPolicy, load_operators as load_policies
from stream.disk_bound import DiskBound
from stream.errors import ConfigError
from stream.policy import PlanParams, TopicPlan, make_layout, plan_topics

from .ratchet_store import key_material
from .settings import Settings


@dataclass(frozen=True)
class OperatorRuntime:
    """What the worker needs per operator, resolved at start-up from policy, plan and keys."""

    name: str
    ttl_ms: int
    stats_key: bytes
    policy: Optional[OperatorPolicy] = None
    stale_after_ms: int = 24 * 3600 * 1000
    epoch: int = 0

    def __repr__(self) -> str:  # keys never in reprs
        return f"OperatorRuntime({self.name!r}, ttl_ms={self.ttl_ms})"


def operator_names(operators_dir: Path) -> list[str]:
    return sorted(load_policies(operators_dir))


def keys_dir(settings: Settings) -> Path:
    return Path(settings.keys_dir) if settings.keys_dir else Path(settings.data_dir) / "keys"


def store_disk_bound(settings: Settings) -> Optional[DiskBound]:
    """The on-disk table store's erasure parameters (B_disk = cycle + tick + allowance), from the
    one ``Settings.disk_bound`` the worker's store and its erasure tick use too; None with the
    table in memory (no disk term).  Impossible values are a ``ConfigError``, not a traceback."""
    if settings.table_store != "disk":
        return None
    try:
        return settings.disk_bound()
    except ValueError as e:
        raise ConfigError(f"table store erasure parameters (cycle {settings.erasure_cycle_ms} ms, tick "
                          f"{settings.erasure_tick_ms} ms, allowance {settings.compaction_allowance_ms} ms): {e}; "
                          f"set IPANON_ERASURE_CYCLE_MS / IPANON_ERASURE_TICK_MS / IPANON_COMPACTION_ALLOWANCE_MS "
                          f"(or the worker's --erasure-* flags)") from None


def plan_params(settings: Settings) -> PlanParams:
    from .mapping_table import SCHEDULE_BUCKET_MS  # imports Faust: not at module level

    return PlanParams(heartbeat_ms=settings.heartbeat_ms,
                      sweeper_period_ms=settings.sweeper_period_ms,
                      schedule_bucket_ms=SCHEDULE_BUCKET_MS,
                      ingest_lag_ms=settings.ingest_lag_ms,
                      partitions=settings.partitions,
                      replication_factor=settings.replication_factor,
                      disk=store_disk_bound(settings))


def _admin(settings: Settings):
    from kafka.errors import KafkaError

    from .kafka_admin import admin_client

    try:
        return admin_client(settings.bootstrap, settings.security)
    except KafkaError as e:
        raise ConfigError(f"cannot reach Kafka at {settings.bootstrap} ({type(e).__name__}); "
                          f"check --bootstrap / IPANON_BOOTSTRAP, or run `ipanon broker start`") from None


def apply_topics(settings: Settings, policies: Optional[Mapping[str, OperatorPolicy]] = None) -> TopicPlan:
    """Create (or safely alter) every topic with the planned configs for these settings."""
    from .kafka_admin import apply_plan, read_broker_settings

    policies = policies or load_policies(settings.operators_dir)
    admin = _admin(settings)
    try:
        broker, _ = read_broker_settings(admin)
        plan = plan_topics(policies, broker, plan_params(settings),
                           make_layout(settings.topic_prefix, settings.app_id, policies))
        apply_plan(admin, plan)
        return plan
    finally:
        admin.close()


#: start-up checks retried this many times when the broker drops mid-check (a broker restart)
CHECK_ATTEMPTS = 6


def _checked_plan(settings: Settings, policies, prepare_retention) -> TopicPlan:
    """The verified plan.  A broker that cannot be reached at all is reported at once; one that
    goes away while the topics are being checked (it restarts) is asked again with a backoff,
    and a ``ConfigError`` names the error if it does not come back."""
    import logging
    import time

    from kafka.errors import KafkaError

    delay = 1.0
    for attempt in range(1, CHECK_ATTEMPTS + 1):
        admin = _admin(settings)
        try:
            return prepare_retention(admin, policies, plan_params(settings),
                                     make_layout(settings.topic_prefix, settings.app_id, policies))
        except KafkaError as e:
            if attempt == CHECK_ATTEMPTS:
                raise ConfigError(f"Kafka at {settings.bootstrap} failed while the worker checked its topics "
                                  f"({type(e).__name__}), {CHECK_ATTEMPTS} times; is the broker restarting?") from None
            logging.getLogger("ipanon").warning("start-up checks: broker error (%s); asking again in %.0f s",
                                                type(e).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        finally:
            admin.close()
    raise AssertionError("unreachable")


def prepare(settings: Settings) -> tuple[dict[str, OperatorRuntime], TopicPlan]:
    """Everything the worker checks before it starts; raises ``ConfigError``."""
    from .kafka_admin import prepare_retention

    policies = load_policies(settings.operators_dir)
    kd = keys_dir(settings)
    keys = {name: key_material(kd, name) for name in policies}  # the seed, or b"" once a ratchet replaced it
    plan = _checked_plan(settings, policies, prepare_retention)
    Path(settings.data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    # table state and default keys: owner only (docs/security.md); made once every check passed
    Path(settings.data_dir).chmod(0o700)
    out = {}
    for name, pol in policies.items():
        ttl = plan.retention[name].ttl_ms
        if settings.ttl_ms_override is not None:
            # an override may only shorten retention, never extend it past the plan
            ttl = min(ttl, settings.ttl_ms_override)
        out[name] = OperatorRuntime(name=name, ttl_ms=ttl, stats_key=keys[name], policy=pol,
                                    stale_after_ms=pol.sessions.lost_stop_window_ms)
    return out, plan
