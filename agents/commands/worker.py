"""``ipanon worker`` — the Faust worker (ingest, mapping, stats, lookup agents + sweeper)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker", help="run the stream worker (all agents) until stopped",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run ipanon's Faust worker: ingest raw topics, keep the mapping table,\n"
                    "emit pseudonymised statistics, answer lookups, expire on time.\n"
                    "Settings come from flags, then IPANON_* environment variables (README).",
        epilog="example:\n  ipanon broker start\n  ipanon topics apply\n  ipanon worker --keys ~/.config/ipanon/keys",
    )
    p.add_argument("--bootstrap", help="Kafka bootstrap host:port (default: the running local broker)")
    p.add_argument("--app-id", help="Faust application id / consumer group (default ipanon)")
    p.add_argument("--topic-prefix", help="prefix of every topic name (default ipanon)")
    p.add_argument("--partitions", type=int, help="partitions of the worker's topics (default 4)")
    p.add_argument("--replication-factor", type=int, help="replication factor of the worker's topics (default 1)")
    p.add_argument("--operators", type=Path, help="directory of operator profiles (default config/operators)")
    p.add_argument("--keys", type=Path, help="directory of operator key files <operator>.key (mode 0600)")
    p.add_argument("--data-dir", type=Path, help="worker data directory")
    p.add_argument("--web-port", type=int, help="status/metrics web port (default 6066; 0 = no web server)")
    p.add_argument("--default-operator", help="operator for raw records without an ipanon-operator header")
    p.add_argument("--ttl-ms", type=int, help="shorten every operator's table TTL (tests, demo); never lengthens it")
    p.add_argument("--heartbeat-ms", type=int, help="heartbeat period; must match `ipanon topics apply` (default 60000)")
    p.add_argument("--ingest-lag-ms", type=int, help="max raw-record lag after a mapping ends (default 300000)")
    p.add_argument("--sweeper-period-ms", type=int,
                   help="expiry sweeper period; must match `ipanon topics apply` (default 1000)")
    p.add_argument("--instance-id", help="static consumer-group membership id (default: derived from host, "
                                         "app id and data directory; distinct per worker)")
    p.add_argument("--canary-period-ms", type=int,
                   help="one erasure canary per operator this often (default 300000; 0 = off; docs/operations.md)")
    p.add_argument("--table-store", choices=["memory", "disk"],
                   help="where the mapping table lives (default memory; disk = RocksDB under the data directory, "
                        "docs/state-on-disk.md)")
    p.add_argument("--erasure-cycle-ms", type=int,
                   help="disk store: force-compact every partition at least this often (default 3000000)")
    p.add_argument("--erasure-tick-ms", type=int, help="disk store: erasure tick period (default 10000)")
    p.add_argument("--compaction-allowance-ms", type=int,
                   help="disk store: the longest one erasure tick may take (default 300000)")
    p.add_argument("--loglevel", default="warning", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def build(args: argparse.Namespace):
    from ..app import Pipeline
    from ..runtime import prepare
    from ..settings import Settings

    settings = Settings.from_env(
        bootstrap=args.bootstrap, app_id=args.app_id, topic_prefix=args.topic_prefix, partitions=args.partitions, replication_factor=args.replication_factor,
        operators_dir=args.operators, keys_dir=args.keys, data_dir=args.data_dir,
        web_port=args.web_port, default_operator=args.default_operator, ttl_ms_override=args.ttl_ms,
        heartbeat_ms=args.heartbeat_ms, ingest_lag_ms=args.ingest_lag_ms,
        sweeper_period_ms=args.sweeper_period_ms, instance_id=args.instance_id,
        canary_period_ms=args.canary_period_ms, table_store=args.table_store,
        erasure_cycle_ms=args.erasure_cycle_ms, erasure_tick_ms=args.erasure_tick_ms,
        compaction_allowance_ms=args.compaction_allowance_ms,
    )
    operators, plan = prepare(settings)  # ConfigError: the worker does not start half-configured
    return Pipeline(settings, operators, plan=plan)


def worker_class():
    """Faust's Worker, plus the rate limit on repeated Kafka client log lines
    (``agents.logfilter``) on the handlers it sets up: a broker outage otherwise writes one
    ERROR line per reconnect attempt of every client."""
    from faust import Worker

    from ..logfilter import install

    class IpanonWorker(Worker):
        def on_setup_root_logger(self, logger, level) -> None:
            super().on_setup_root_logger(logger, level)
            install(logger)

    return IpanonWorker


def run(args: argparse.Namespace) -> int:
    from faust.exceptions import ImproperlyConfigured

    from ..cli import CliError
    from ..compiled_core import status as core_status

    core = core_status()
    if core.warn:  # a build exists but cannot be used: the worker runs ≈ 20 % slower
        print(f"ipanon worker: warning: {core.line()}", file=sys.stderr, flush=True)
    try:
        pipeline = build(args)  # raises ConfigError before anything starts
    except ImproperlyConfigured as e:
        raise CliError(f"worker settings rejected by Faust: {e}") from None
    worker = worker_class()(pipeline.app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0
