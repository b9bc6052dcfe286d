"""Measure physical deletion on the real local broker against the bound ``stream.policy`` computes.

For a delete-policy topic (the raw/bindings role) and a compacted topic (the changelog role),
both with the configs the plan computes for a short test promise on this broker:

- delete: write a record carrying a unique marker at t0, keep appending heartbeats every
  ``heartbeat_ms``, and scan every file of the topic's partition directory until the marker is
  gone; report ``t_gone - t0`` next to the computed bound;
- compact: write key K with a marked value, then a tombstone for K at t1, keep heartbeating,
  and scan until both the marked value and the tombstone's key bytes are gone; report both
  delays after t1 next to the bound.

Prints exactly one JSON line.  ``--smoke`` uses a shorter promise and one trial.  Figures come
from a 2-core machine shared with other busy processes: treat them as noisy.

usage: python benchmarks/bench_deletion.py [--smoke] [--broker-dir DIR] [--trials N] [--promise-s S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agents.broker import LocalBroker  # noqa: E402
from agents.kafka_admin import admin_client, read_broker_settings  # noqa: E402
from stream.config import parse_operator  # noqa: E402
from stream.policy import PlanParams, plan_topics  # noqa: E402


def _profile(promise_s: int):
    return parse_operator(
        f'name = "bench"\n[identity]\n[purposes.lawful_access]\npromise = "{promise_s}s"\n'
        f'[purposes.statistics]\npromise = "{promise_s}s"\nconsent_required = false\n', file="bench.toml")


def _present(data_dir: Path, topic: str, needles: list[bytes]) -> list[bool]:
    found = [False] * len(needles)
    for d in data_dir.glob(f"{topic}-*"):
        for f in d.iterdir():
            try:
                blob = f.read_bytes()
            except OSError:  # deleted while we looked
                continue
            for i, n in enumerate(needles):
                found[i] = found[i] or n in blob
    return found


def _wait_gone(producer, topic, data_dir, needles, hb_ms, limit_s):
    """Heartbeat and scan until each needle is gone; returns ms after start per needle (None
    if still present at the limit)."""
    start = time.monotonic()
    gone: list = [None] * len(needles)
    next_hb = start
    while time.monotonic() - start < limit_s and any(g is None for g in gone):
        now = time.monotonic()
        if now >= next_hb:
            producer.send(topic, key=b"heartbeat", value=b"hb")
            producer.flush()
            next_hb = now + hb_ms / 1000
        for i, p in enumerate(_present(data_dir, topic, needles)):
            if not p and gone[i] is None:
                gone[i] = int((time.monotonic() - start) * 1000)
        time.sleep(0.1)
    return gone


def run(broker: LocalBroker, promise_s: int, trials: int, hb_ms: int) -> dict:
    from kafka import KafkaProducer

    bootstrap = broker.bootstrap
    data_dir = broker.dir / "data"
    admin = admin_client(bootstrap)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        settings, _ = read_broker_settings(admin)
        params = PlanParams(heartbeat_ms=hb_ms, sweeper_period_ms=hb_ms, ingest_lag_ms=0, partitions=1)
        tag = uuid.uuid4().hex[:8]
        layout = {f"bench-{tag}-raw": "raw", f"bench-{tag}-changelog": "derived"}
        plan = plan_topics({"bench": _profile(promise_s)}, settings, params, layout)
        raw, cl = plan.topic(f"bench-{tag}-raw"), plan.topic(f"bench-{tag}-changelog")
        admin.create_topics({t.name: {"num_partitions": 1, "replication_factor": 1, "configs": dict(t.configs)}
                             for t in (raw, cl)}, wait_for_metadata=True)
        limit_s = 3 * max(raw.bound_ms, cl.bound_ms) / 1000 + 10
        delete_ms, value_ms, tomb_ms = [], [], []
        for i in range(trials):
            marker = f"MARK-{uuid.uuid4().hex}".encode()
            producer.send(raw.name, key=b"k", value=marker)
            producer.flush()
            delete_ms.append(_wait_gone(producer, raw.name, data_dir, [marker], hb_ms, limit_s)[0])

            key = f"KEY-{uuid.uuid4().hex}".encode()
            vmark = f"VAL-{uuid.uuid4().hex}".encode()
            producer.send(cl.name, key=key, value=vmark)
            producer.flush()
            producer.send(cl.name, key=key, value=None)  # tombstone
            producer.flush()
            v, k = _wait_gone(producer, cl.name, data_dir, [vmark, key], hb_ms, limit_s)
            value_ms.append(v)
            tomb_ms.append(k)
        admin.delete_topics([raw.name, cl.name])
    finally:
        producer.close()
        admin.close()

    def worst(xs):
        return None if any(x is None for x in xs) else max(xs)

    return {
        "promise_ms": promise_s * 1000,
        "heartbeat_ms": hb_ms,
        "trials": trials,
        "broker_retention_check_interval_ms": settings.retention_check_interval_ms,
        "broker_cleaner_backoff_ms": settings.cleaner_backoff_ms,
        "delete_bound_ms": raw.bound_ms,
        "delete_measured_ms": delete_ms,
        "delete_measured_max_ms": worst(delete_ms),
        "compact_bound_ms": cl.bound_ms,
        "compact_value_measured_ms": value_ms,
        "compact_tombstone_measured_ms": tomb_ms,
        "compact_measured_max_ms": worst([max(a, b) if a is not None and b is not None else None
                                          for a, b in zip(value_ms, tomb_ms)]),
        "ttl_ms": plan.retention["bench"].ttl_ms,
        "within_bound": (worst(delete_ms) is not None and worst(delete_ms) <= raw.bound_ms
                         and all(x is not None and x <= cl.bound_ms for x in value_ms + tomb_ms)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="short promise, one trial")
    ap.add_argument("--broker-dir", type=Path, default=None,
                    help="state dir of a running local broker (default: start a temporary one)")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--promise-s", type=int, default=None)
    ap.add_argument("--heartbeat-ms", type=int, default=1000)
    args = ap.parse_args()
    promise_s = args.promise_s or (15 if args.smoke else 40)
    trials = args.trials or (1 if args.smoke else 3)
    own = args.broker_dir is None
    if own:
        import tempfile

        broker = LocalBroker(Path(tempfile.mkdtemp(prefix="ipanon-bench-")))
        broker.start(quiet=True)
    else:
        broker = LocalBroker(args.broker_dir)
    try:
        print(json.dumps(run(broker, promise_s, trials, args.heartbeat_ms)))
    finally:
        if own:
            broker.wipe()
    return 0


if __name__ == "__main__":
    sys.exit(main())
