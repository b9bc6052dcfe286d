"""A lean engine for ``bench_e2e.py --engine lean``: the worker's hot path without Faust.

Not the product — a measuring stick.  It does the work ``ipanon worker`` does for each raw
event, with the same pure core and the same topics, but drives Kafka with plain aiokafka in
batches (``getmany`` → process the whole batch → queue every output with ``send`` → await the
batch's acks → commit offsets), which is what the worker's py-spy profile (docs/benchmarks.md
"Where the time goes") says Faust's per-event stream machinery and its one-message-at-a-time
ProducerBuffer cost us:

- stage 1 (ingest): raw topics → ``get_format(fmt).parse`` → bindings topic, keyed by
  ``intervals.routing_key`` (same as ``Pipeline._binding_outputs``);
- stage 2 (mapping + stats): bindings topic → ``binding_wire.decode`` → the interval update
  on a dict (``decode → stream.mapping.apply/reset → encode``, the decisions
  ``Pipeline.apply_binding`` calls, with the profile's lost-Stop window) → a
  changelog record on the partition of the binding → stats records built per batch by
  ``stream.stats.StatsBuilder.build_many`` under the operator's statistics keyring
  (``agents.ratchet_store``), as ``agents.stats_agent.StatsAgent.handle`` does.

Not done here (the worker does them): dead-lettering, heartbeats, the sweeper, lookups,
sealing values (plain ``intervals.encode``), consent, aggregates, rebalancing of the dict.  Run by the benchmark:

    python benchmarks/lean_engine.py --bootstrap H:P --prefix P --operators DIR --keys DIR
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agents  # noqa: F401,E402  (first: serves the compiled core when it matches the sources)
from stream import intervals as iv  # noqa: E402
from stream import binding_wire, mapping  # noqa: E402
from stream.errors import Rejected  # noqa: E402
from stream.parse import get_format  # noqa: E402

from agents.topics import H_FORMAT, H_OPERATOR, Topics  # noqa: E402


async def run(a) -> None:
    import time

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    import json
    from collections import defaultdict

    from agents import ratchet_store
    from stream.config import load_operators
    from stream.keyring import epoch_of
    from stream.stats import StatsBuilder

    names = Topics(a.prefix)
    policies = load_operators(a.operators)
    rules = {n: mapping.rules_of(pol, ttl_ms=24 * 3600 * 1000, stale_after_ms=pol.sessions.lost_stop_window_ms)
             for n, pol in policies.items()}
    now0 = time.time_ns() // 1_000_000
    builders = {n: StatsBuilder(pol, ratchet_store.load_or_create(
                    a.keys, n, epoch=epoch_of(max(0, now0 - 300_000), pol.key_epoch_ms)))
                for n, pol in policies.items()}
    changelog = f"{a.prefix}-mappings-changelog"
    prod = AIOKafkaProducer(bootstrap_servers=a.bootstrap, linger_ms=5, acks=1, max_batch_size=512 * 1024)
    await prod.start()
    table: dict[bytes, bytes] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def stage(topics, group, handle):
        c = AIOKafkaConsumer(*topics, bootstrap_servers=a.bootstrap, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False, max_poll_records=5000)
        await c.start()
        try:
            while not stop.is_set():
                batch = await c.getmany(timeout_ms=100, max_records=5000)
                recs = [r for rs in batch.values() for r in rs if r.value is not None]
                if not recs:
                    continue
                futs = [await prod.send(t, v, key=k, partition=p)
                        for t, k, v, p in handle(recs, time.time_ns() // 1_000_000)]
                if futs:
                    await asyncio.gather(*futs)
                await c.commit()
        finally:
            await c.stop()

    def ingest(recs, now):
        out = []
        for r in recs:
            try:
                h = dict(r.headers or ())
                fmt, op = h[H_FORMAT].decode(), h[H_OPERATOR].decode()
                for b in get_format(fmt).parse(r.value, operator=op):
                    out.append((names.bindings, iv.routing_key(b.operator, b.ip).encode(), binding_wire.encode(b), None))
            except Rejected:
                pass
        return out

    def mapping_and_stats(recs, now):
        out = []
        by_op = defaultdict(list)
        for r in recs:
            try:
                b = binding_wire.decode(r.value)
                if b.operator not in rules:
                    continue
                if b.action == "reset":  # every key of the operator (the worker: of the partition)
                    prefix = f"{b.operator}|".encode()
                    keys = [k for k in table if k.startswith(prefix)]
                else:
                    keys = [iv.table_key(b.operator, iv.slot_of(b), b.ip).encode()]
                for key in keys:
                    raw = table.get(key)
                    old = iv.decode(raw) if raw is not None else ()
                    change = (mapping.reset(old, b.nas, b.at_ms, rules[b.operator]) if b.action == "reset"
                              else mapping.apply(old, b, now, rules[b.operator]))
                    if change.write:
                        value = None if change.tombstone else iv.encode(change.intervals)
                        if value is None:
                            table.pop(key, None)
                        else:
                            table[key] = value
                        out.append((changelog, key, value, r.partition))
                by_op[b.operator].append(b)
            except Rejected:
                pass
        for name, bs in by_op.items():
            for x in builders[name].build_many(bs):
                if x.record is not None:
                    out.append((names.stats, x.record["id"].encode(),
                                json.dumps(x.record, separators=(",", ":")).encode(), None))
        return out

    try:
        await asyncio.gather(stage(names.raw, f"{a.prefix}-lean-ingest", ingest),
                             stage([names.bindings], f"{a.prefix}-lean-mapping", mapping_and_stats))
    finally:
        await prod.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--operators", type=Path, required=True)
    ap.add_argument("--keys", type=Path, required=True)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
