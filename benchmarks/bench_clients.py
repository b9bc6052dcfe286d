"""Which Kafka client for the worker's batch loops: aiokafka or confluent-kafka (librdkafka)?

One broker, one backlog of ``--records`` small keyed records (≈ 100-byte values, 4 partitions),
drained by a consume → produce pass-through the way a batch stage does it, once per client:

- *aiokafka*: ``getmany(max_records=B)``; every record handed to ``producer.send`` (queues it,
  no ack wait); the batch's delivery futures awaited together; offsets committed;
- *aiokafka_batches*: the same through the project's ack-flush routine
  (``agents.kafka_clients.send_all`` + ``aio_batches``): one ``BatchBuilder`` per output
  partition (the default partitioner's choice), one ``send_batch`` each, no per-record ``await``;
- *confluent*: ``consume(num_messages=B)``; every record handed to ``produce`` (librdkafka's
  own thread batches and sends); ``flush()`` per batch (waits for every ack); offsets committed
  synchronously.

Both consume in a consumer group of their own (assigned on join, ``auto.offset.reset`` earliest),
produce with acks=all and commit once per batch after the acks, as ``agents.batch`` does.  Each
client runs ``--rounds`` times, alternating, into fresh output topics and groups; records/s is
records ÷ (last ack − first record received), so group join is not counted.  CPU seconds are the
process's (librdkafka's threads included) over the same span.

confluent-kafka is a benchmark-only dependency (``pip install confluent-kafka``); without it
that client is reported as not installed.  Prints exactly one JSON line.

    python benchmarks/bench_clients.py [--bootstrap HOST:PORT] [--records N] [--batch B] [--rounds R]
    python benchmarks/bench_clients.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as H  # noqa: E402

PARTITIONS = 4


def _value(i: int) -> bytes:
    return (b'{"Acct-Status-Type":"Interim-Update","Framed-IP-Address":"100.64.%d.%d","User-Name":"sub-%08d"}'
            % ((i >> 8) & 255, i & 255, i))


def fill(bootstrap: str, topic: str, n: int) -> None:
    from agents.kafka_io import producer

    p = producer(bootstrap, linger_ms=20, acks=1, max_in_flight_requests_per_connection=5)
    try:
        for i in range(n):
            p.send(topic, key=b"s%06d" % (i % 100_000), value=_value(i))
        p.flush()
    finally:
        p.close()


def _span(t0: float, c0: float, n: int) -> dict:
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"records": n, "seconds": round(dt, 3), "rps": round(n / dt) if dt > 0 else 0,
            "cpu_s": round(cpu, 3), "per_cpu_s": round(n / cpu) if cpu > 0 else 0}


async def run_aiokafka(bootstrap: str, src: str, dst: str, n: int, batch: int, timeout_s: float) -> dict:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    c = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=f"bench-aio-{uuid.uuid4().hex[:8]}",
                         enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=batch)
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024)
    await p.start()
    await c.start()
    got, t0, c0 = 0, None, 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while got < n and time.monotonic() < deadline:
            recs = await c.getmany(timeout_ms=200, max_records=batch)
            if not recs:
                continue
            if t0 is None:
                t0, c0 = time.perf_counter(), time.process_time()
            futs = [await p.send(dst, r.value, key=r.key) for rs in recs.values() for r in rs]
            await asyncio.gather(*futs)
            await c.commit({tp: rs[-1].offset + 1 for tp, rs in recs.items()})
            got += len(futs)
        return _span(t0, c0, got) if t0 else {"records": 0}
    finally:
        await c.stop()
        await p.stop()


async def run_aiokafka_batches(bootstrap: str, src: str, dst: str, n: int, batch: int, timeout_s: float) -> dict:
    """aiokafka through the project's ack-flush routine (``agents.kafka_clients.send_all`` with
    ``aio_batches``): records grouped into one ``BatchBuilder`` per output partition, one
    ``send_batch`` each, no per-record ``await``."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from agents.kafka_clients import aio_batches, send_all

    c = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=f"bench-aiob-{uuid.uuid4().hex[:8]}",
                         enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=batch)
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024)
    await p.start()
    await c.start()
    hand = aio_batches(p)
    got, t0, c0 = 0, None, 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while got < n and time.monotonic() < deadline:
            recs = await c.getmany(timeout_ms=200, max_records=batch)
            if not recs:
                continue
            if t0 is None:
                t0, c0 = time.perf_counter(), time.process_time()
            got += await send_all(hand, [(dst, r.key, r.value, None) for rs in recs.values() for r in rs])
            await c.commit({tp: rs[-1].offset + 1 for tp, rs in recs.items()})
        return _span(t0, c0, got) if t0 else {"records": 0}
    finally:
        await c.stop()
        await p.stop()


def run_confluent(bootstrap: str, src: str, dst: str, n: int, batch: int, timeout_s: float) -> dict:
    from confluent_kafka import Consumer, Producer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-ck-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 256 * 1024})
    c.subscribe([src])
    got, t0, c0 = 0, None, 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while got < n and time.monotonic() < deadline:
            msgs = c.consume(num_messages=batch, timeout=0.2)
            if not msgs:
                continue
            if t0 is None:
                t0, c0 = time.perf_counter(), time.process_time()
            ends: dict[tuple[str, int], int] = {}
            k = 0
            for m in msgs:
                if m.error():
                    continue
                p.produce(dst, m.value(), m.key())
                ends[(m.topic(), m.partition())] = m.offset() + 1
                k += 1
            if p.flush(30) != 0:
                raise RuntimeError("confluent producer: records not acknowledged within 30 s")
            c.commit(offsets=[TopicPartition(t, q, o) for (t, q), o in ends.items()], asynchronous=False)
            got += k
        return _span(t0, c0, got) if t0 else {"records": 0}
    finally:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", help="an already running broker (default: start a throw-away one)")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=2000, help="records per consume call (the worker's batch_size)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per client, alternating")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--smoke", action="store_true", help="2000 records, one round")
    a = ap.parse_args()
    if a.smoke:
        a.records, a.rounds = 2000, 1
    try:
        import confluent_kafka  # noqa: F401
        have_ck = True
    except ImportError:
        have_ck = False
    from agents.kafka_io import ensure_topics

    out: dict = {"bench": "clients", "smoke": a.smoke, "records": a.records, "batch": a.batch, "partitions": PARTITIONS}
    with H.broker(a.bootstrap) as (bootstrap, _):
        run = uuid.uuid4().hex[:8]
        src = f"bench-clients-in-{run}"
        dsts = [f"bench-clients-out-{run}-{i}" for i in range(3 * a.rounds)]
        ensure_topics(bootstrap, [src, *dsts], partitions=PARTITIONS)
        fill(bootstrap, src, a.records)
        res: dict[str, list[dict]] = {"aiokafka": [], "aiokafka_batches": [], "confluent": []}
        for r in range(a.rounds):
            res["aiokafka"].append(asyncio.run(run_aiokafka(bootstrap, src, dsts[3 * r], a.records, a.batch, a.timeout)))
            res["aiokafka_batches"].append(asyncio.run(
                run_aiokafka_batches(bootstrap, src, dsts[3 * r + 1], a.records, a.batch, a.timeout)))
            if have_ck:
                res["confluent"].append(run_confluent(bootstrap, src, dsts[3 * r + 2], a.records, a.batch, a.timeout))
        for name, runs in res.items():
            if not runs:
                out[name] = {"skipped": "confluent-kafka not installed"}
                continue
            best = max(runs, key=lambda x: x.get("rps", 0))
            out[name] = {"best_rps": best.get("rps", 0), "best_per_cpu_s": max(x.get("per_cpu_s", 0) for x in runs),
                         "runs": runs}
            if any(x.get("records") != a.records for x in runs):
                out[name]["incomplete"] = True
        if have_ck and out["aiokafka"]["best_rps"]:
            out["confluent_over_aiokafka"] = round(out["confluent"]["best_rps"] / out["aiokafka"]["best_rps"], 2)
    out["machine"] = H.machine()
    out["pid_cpus"] = len(os.sched_getaffinity(0))
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
