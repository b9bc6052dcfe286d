"""Broker faults under load: nothing lost, the worker resumes without manual action.

Two scenarios, each on brokers of its own (never the test session's shared broker):

- ``single``: one local broker (``agents.broker.LocalBroker`` in a temporary directory).  Under
  continuous load the broker is stopped for ``--down-s`` seconds (default 30; a clean SIGTERM
  shutdown, or ``--crash`` for SIGKILL) and started again on the same ports and log dirs.  The
  worker keeps running throughout: nobody restarts it.
- ``cluster``: three KRaft nodes (``agents.cluster.LocalCluster``), every topic replicated 3×
  with ``min.insync.replicas=2``.  One node — the leader of the most partitions of the raw topic
  — is SIGKILLed for ``--down-s`` seconds, then restarted.

The feeder (a producer thread, ``acks=all``, the same records as ``kill_test.py``) counts only
acknowledged sends as fed; kafka-python retries while the broker is away.  After the fault the
feeder runs on for a while, stops, and ``kill_test.settle_and_verify`` checks that every fed
binding is in the mapping table (one lookup per address) and has exactly one distinct stats
record id.  Also reported: whether the worker process stayed alive, the longest gap in
produced records (how long the fault blocked the collector side), and tracebacks in the worker
log.

Prints ONE JSON line per run.  Timings are noisy (shared 2-core machine).

    python benchmarks/broker_faults.py --scenario single            # 30 s outage
    python benchmarks/broker_faults.py --scenario cluster
    python benchmarks/broker_faults.py --smoke                      # single, 8 s outage
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._harness import Worker, machine  # noqa: E402
from benchmarks.kill_test import Feeder, settle_and_verify  # noqa: E402


def _rf3_topics(w: Worker) -> None:
    """Re-create the worker's topics with replication factor 3 (the plan's own configs).
    ``ipanon worker`` verifies configs, not the replication factor, so it runs on them as is."""
    from stream.config import load_operators
    from stream.policy import PlanParams, make_layout, plan_topics

    from agents.kafka_admin import admin_client, apply_plan, read_broker_settings
    from agents.runtime import plan_params

    s = w.settings
    admin = admin_client(s.bootstrap, s.security)
    try:
        names = [t for t in admin.list_topics() if t.startswith(w.prefix)]
        if names:
            admin.delete_topics(names)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(t.startswith(w.prefix) for t in admin.list_topics()):
                time.sleep(0.5)
        broker, _ = read_broker_settings(admin)
        p = plan_params(s)
        params = PlanParams(**{**{f: getattr(p, f) for f in p.__dataclass_fields__}, "replication_factor": 3})
        ops = load_operators(s.operators_dir)  # a raw topic per operator: none writes another's
        plan = plan_topics(ops, broker, params, make_layout(s.topic_prefix, s.app_id, ops))
        apply_plan(admin, plan)
    finally:
        admin.close()


def _leader_of_most(bootstrap: str, topic: str) -> int:
    from collections import Counter

    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        c.topics()
        cm = c._client.cluster  # noqa: SLF001 — metadata is what we want here
        leaders = Counter(cm.leader_for_partition(__import__("kafka").TopicPartition(topic, p))
                          for p in (cm.partitions_for_topic(topic) or ()))
        return leaders.most_common(1)[0][0] if leaders else 1
    finally:
        c.close()


@contextlib.contextmanager
def _single(workdir: Path):
    from agents.broker import LocalBroker

    b = LocalBroker(workdir / "broker", heap="512m")
    b.start(quiet=True)
    try:
        yield b
    finally:
        b.wipe()


@contextlib.contextmanager
def _cluster(workdir: Path, state_dir: Path | None = None):
    """A cluster in ``state_dir`` (kept running afterwards: reuse across runs) or a throw-away one."""
    from agents.cluster import LocalCluster

    c = LocalCluster(state_dir or workdir / "cluster")
    c.start(timeout_s=300)
    try:
        yield c
    finally:
        if state_dir is None:
            c.stop()


def run(scenario: str, *, down_s: float, rate: float, before_s: float, after_s: float, crash: bool,
        workdir: Path, settle_timeout_s: float = 600.0, state_dir: Path | None = None) -> dict:
    ctx = _single(workdir) if scenario == "single" else _cluster(workdir, state_dir)
    with ctx as brokers:
        bootstrap = brokers.bootstrap
        w = Worker(bootstrap, workdir / "w", heartbeat_ms=60_000)
        if scenario == "cluster":
            _rf3_topics(w)
        base_s = int(time.time()) - 3600
        feeder = Feeder(bootstrap, w.topics.raw_radius, rate, base_s, limit=10**7)
        w.start()
        feeder.start()
        fault = {}
        try:
            time.sleep(before_s)
            t0 = time.monotonic()
            if scenario == "single":
                if crash:
                    import os
                    import signal

                    os.kill(brokers._meta()["pid"], signal.SIGKILL)  # noqa: SLF001
                    time.sleep(1)
                    brokers.stop()
                else:
                    brokers.stop()
                fault["stopped_in_s"] = round(time.monotonic() - t0, 1)
                time.sleep(down_s)
                brokers.start(quiet=True, timeout_s=180)
                fault["node"] = 1
            else:
                victim = _leader_of_most(bootstrap, w.topics.raw_radius)
                brokers.kill(victim)
                fault["node"] = victim
                time.sleep(down_s)
                brokers.start_node(victim, timeout_s=300)
            fault["down_s"] = round(time.monotonic() - t0, 1)
            fed_before_restart = len(feeder.acked)
            time.sleep(after_s)
            worker_alive = w.alive()
            feeder.stop_flag.set()
            feeder.join(300)
            fed_ids = list(feeder.acked)
            if not w.alive():  # no manual action: a dead worker is a failure, reported as such
                worker_alive = False
            v = settle_and_verify(bootstrap, w.topics, fed_ids, base_s, settle_timeout_s, w.lookup_key)
            log = w.log_path.read_bytes()
        finally:
            feeder.stop_flag.set()
            w.stop()
    return {"bench": "broker_faults", "scenario": scenario, "crash": crash or scenario == "cluster", **fault,
            "worker_alive_after_fault": worker_alive, "fed_when_broker_back": fed_before_restart,
            "feed_failed": feeder.failed, "feed_fail_kinds": feeder.fail_kinds, **v,
            "ok": v["ok"] and worker_alive, "worker_tracebacks": log.count(b"Traceback"),
            "worker_errors": log.count(b"[ERROR]"), "rate": rate, "machine": machine(),
            "note": "shared 2-core machine: timings noisy"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=["single", "cluster"], default="single")
    ap.add_argument("--down-s", type=float, default=30.0, help="how long the broker/node stays down")
    ap.add_argument("--rate", type=float, default=50.0, help="records per second fed")
    ap.add_argument("--crash", action="store_true", help="single: SIGKILL the broker instead of stopping it")
    ap.add_argument("--cluster-dir", type=Path, help="cluster: keep/reuse the 3-node cluster in this directory")
    ap.add_argument("--smoke", action="store_true", help="single broker, 8 s outage, short phases")
    args = ap.parse_args(argv)
    before, after, down = (20.0, 15.0, 8.0) if args.smoke else (40.0, 40.0, args.down_s)
    scenario = "single" if args.smoke else args.scenario
    with tempfile.TemporaryDirectory(prefix="ipanon-faults-") as d:
        fig = run(scenario, down_s=down, rate=args.rate, before_s=before, after_s=after, crash=args.crash,
                  workdir=Path(d), state_dir=args.cluster_dir)
    fig["smoke"] = args.smoke
    print(json.dumps(fig, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
