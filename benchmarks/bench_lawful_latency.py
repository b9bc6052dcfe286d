"""Submit-to-answer latency of a lawful request that needs no approval (LEK), on the real
broker, with a real ``ipanon worker`` whose mapping table holds ``--mappings`` entries.

1. Fill a worker's table (own topic prefix, a registry with one LEK authority and a large
   rate budget) with one open RADIUS session per address, subscriber ``sub-<i>@bench.example``
   on ``10.x.y.z`` address ``i``, in one of two ways (``--fill``):
   ``ingest``: start the worker and send one RADIUS Start per address through the real ingest
   path (~30 mappings/s on the shared 2-core box); ``fill_s`` = first send → the changelog
   holds every mapping;
   ``changelog`` (the default above 20 000 mappings): write the mappings straight into the
   fresh worker's changelog with ``bench_state.write_changelog`` (the keys, sealed values and
   partitions the worker would write for those Starts), then start the worker and wait for
   its table to restore them; ``fill_s`` = the changelog write, ``restore_s`` = the worker's
   own "mapping table: restored N records … in S s" figure, ``ready_s`` = worker start →
   that line and the following "Worker ready"; ``schedule_rebuilt_s`` = worker start → the
   sweeper's "schedule rebuilt from the store" line (it opens every value in the background,
   ~50 s at 1M, and answers wait behind it): the requests start after it unless
   ``--during-rebuild``.
2. Send ``--warmup`` requests (default 5; their latencies are reported as ``warmup_ms``, not in
   the figures), then ``--requests`` signed LEK requests one at a time, each for a random filled address;
   the latency of one is from just before the producer send to the moment this process has
   read the sealed answer from ``<prefix>-query-responses`` (so it includes both Kafka hops,
   the desk's checks, the lookup, the HPKE seal, the audit append and the snapshot write the
   agent does before it moves on).  Every answer is opened and checked against the filled
   subscriber (``correct``).

``--store disk``: the worker keeps its table on disk (``--table-store disk``); the
changelog is written as the mapping stage writes it (``ipanon-revisit`` header) and the
requests start once the table is restored (no schedule to rebuild).  ``--pad N`` adds N records
of the worker's key and value sizes with random bytes (``bench_disk_worker.fill_raw``: sealing
50M values takes longer than a run; the walk counts them unreadable, no request asks for
them), so the store holds ``--mappings`` + N.  ``--restart``: the worker is stopped after the
restore and started again on its intact store before the requests (``restart_s``: start →
restored).  ``rss_mb``: the worker's RSS 10 s after it is ready (an erasure tick has run),
``rss_after_mb`` after the requests.  Once the worker has stopped, this process opens its
store and times ``DiskStore.get`` of 20 000 random filled keys (``get_p50_us`` /
``get_p99_us``: the in-process lookup).

``--profile FILE``: py-spy records the worker during the requests (``--format raw``, collapsed
stacks; ``profile_summary.py`` summarises them).

``worker_cpu_s`` / ``bench_cpu_s``: CPU seconds of the worker / this process over the requests;
``load1_before`` / ``load1_after``: the 1-minute load average before the fill and at the end.

Prints exactly one JSON line.  ``--smoke``: 200 mappings, 5 requests.  Figures come from a
2-core machine shared with other busy processes: treat them as noisy.

usage: python benchmarks/bench_lawful_latency.py [--smoke] [--bootstrap HOST:PORT] [--mappings N] [--requests R]
                                                [--fill auto|ingest|changelog] [--store disk [--pad N] [--restart]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519  # noqa: E402

from agents.commands.keys import authority_toml  # noqa: E402
from agents.kafka_io import count_records, producer  # noqa: E402
from stream import access  # noqa: E402
from stream.access import open_answer  # noqa: E402

AUTH = "bench-police"
CHANGELOG_FILL_ABOVE = 20_000  # --fill auto: the ingest path above this many mappings takes > 10 min


def _address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def _radius_mappings(n: int, start_ms: int):
    """What the worker stores for the ingest path's RADIUS Start of address ``i`` (see
    ``stream.intervals._interval_from``): one open interval, session ``<NAS>/<Acct-Session-Id>``."""
    import ipaddress

    from stream import intervals as iv

    for i in range(n):
        yield "ip", ipaddress.IPv4Network(_address(i)), iv.Interval(
            start_ms=start_ms, end_ms=None, holder=f"sub-{i}@bench.example", session=f"192.0.2.1/B-{i}",
            nas="192.0.2.1", last_ms=start_ms)


def _wait_restored(w, n: int, timeout_s: float, schedule: bool) -> tuple[float, float, Optional[float]]:
    """Wait until the worker's table logs it restored its changelog and Faust's "Worker ready"
    follows, and (``schedule``) until the sweeper's schedule is rebuilt from the restored store;
    returns (the table's own restore seconds, seconds from here to "Worker ready", seconds from
    here to the schedule line or None)."""
    t0 = time.monotonic()
    restored = re.compile(r"mapping table: restored (\d+) records .* in ([\d.]+) s")
    rebuilt = re.compile(r"sweeper: schedule rebuilt from the store: (\d+) keys")
    ready = None
    while time.monotonic() - t0 < timeout_s and w.proc.poll() is None:
        lines = w.log().splitlines()
        if ready is None:
            for k, line in enumerate(lines):
                m = restored.search(line)
                if m and int(m.group(1)) >= n and any("Worker ready" in x for x in lines[k + 1:]):
                    ready = (float(m.group(2)), time.monotonic() - t0)
        if ready is not None:
            if not schedule:
                return (*ready, None)
            if any((m := rebuilt.search(x)) and int(m.group(1)) >= n for x in lines):
                return (*ready, time.monotonic() - t0)
        time.sleep(0.5)
    raise SystemExit(f"the worker did not restore {n} mappings within {timeout_s} s (worker log: {w.log_path})")


def _disk_gets(w, n: int, now_ms: int, count: int = 20_000) -> dict:
    """``--store disk``, the worker stopped: open its store here and time ``DiskStore.get`` of
    ``count`` random filled keys (each must be there)."""
    import ipaddress

    import _harness as H
    import bench_state
    from agents.disk_store import DiskStore
    from agents.mapping_table import partition_for
    from stream import intervals as iv

    enc = bench_state.Encoder(w, now_ms)
    rng = random.Random(17)
    keys = []
    for _ in range(count):
        net = ipaddress.IPv4Network(_address(rng.randrange(n)))
        keys.append((partition_for(iv.routing_key(H.OPERATOR, net).encode(), w.settings.partitions),
                     enc.vault.key("ip", net)))
    store = DiskStore(w.settings.store_dir, bound=w.settings.disk_bound())
    try:
        return H.timed_gets(store, keys, "in-process get: a filled key of partition {p} is missing from the store")
    finally:
        store.close()


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def _fill_by_ingest(args, w, p, start_s: int) -> float:
    """One RADIUS Start per address through the worker's ingest; seconds until the changelog
    holds every mapping."""
    bootstrap, T = args.bootstrap, w.topics
    headers = [("ipanon-format", b"radius-json"), ("ipanon-operator", b"connect2ip")]
    t_fill = time.monotonic()
    todo = list(range(args.mappings))
    for _attempt in range(5):  # a send can fail (e.g. a leader not yet known): check and resend
        futs = []
        for i in todo:
            rec = {"User-Name": f"sub-{i}@bench.example", "Acct-Status-Type": "Start",
                   "Acct-Session-Id": f"B-{i}", "NAS-IP-Address": "192.0.2.1",
                   "Framed-IP-Address": _address(i), "Event-Timestamp": start_s}
            futs.append((i, p.send(T.raw_radius, key=f"bench-{i % 64}".encode(),
                                   value=json.dumps(rec).encode(), headers=headers)))
        p.flush()
        todo = [i for i, f in futs if f.failed() or not f.succeeded()]
        if not todo:
            break
    if todo:
        raise SystemExit(f"{len(todo)} raw records could not be produced")
    changelog = f"{w.settings.app_id}-mappings-changelog"
    deadline = time.monotonic() + args.fill_timeout_s
    while count_records(bootstrap, changelog) < args.mappings:
        if time.monotonic() > deadline or w.proc.poll() is not None:
            raise SystemExit(f"table fill did not finish (worker log: {w.log_path})")
        time.sleep(5.0 if args.mappings > 10_000 else 0.5)
    return time.monotonic() - t_fill


async def _requests(args, T, sk, ek, start_s: int) -> tuple[list[float], int]:
    """Send ``--requests`` signed LEK requests one at a time with aiokafka (acks=all, no
    linger) and read each sealed answer from the responses topic; returns (latencies in ms,
    answers naming the filled subscriber).  An aiokafka client, not kafka-python: the latter's
    send-and-wait alone took ~24 ms here, more than the worker's whole part."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    prod = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=0)
    cons = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, group_id=None, enable_auto_commit=False,
                            fetch_max_wait_ms=100)
    await prod.start()
    await cons.start()
    try:
        parts = cons.partitions_for_topic(T.query_responses)
        if not parts:
            parts = (await prod.partitions_for(T.query_responses)) or {0}
        tps = [TopicPartition(T.query_responses, x) for x in sorted(parts)]
        cons.assign(tps)
        await cons.seek_to_end(*tps)
        for tp in tps:
            await cons.position(tp)
        rng = random.Random(7)
        lat_ms: list[float] = []
        correct = 0
        for n in range(args.warmup + args.requests):
            i = rng.randrange(args.mappings)
            ms = int(time.time() * 1000)
            body = access.request_body(authority=AUTH, request_number=f"r{n}", basis="lek-law-enforcement",
                                       case_ref=f"BENCH-{n}", address=_address(i), port=None,
                                       from_ms=start_s * 1000, to_ms=ms, issued_ms=ms, nonce=secrets.token_hex(16))
            msg = access.sign_request(sk, body)
            rid = f"{AUTH}/r{n}"
            t0 = time.perf_counter()
            await prod.send_and_wait(T.query_requests, key=AUTH.encode(), value=msg)
            answer = None
            limit = time.monotonic() + 60
            while answer is None and time.monotonic() < limit:
                for recs in (await cons.getmany(timeout_ms=1000)).values():
                    for r in recs:
                        if r.value is None:
                            continue
                        m = json.loads(r.value)
                        if m.get("request_id") == rid and m.get("type") in ("answer", "status"):
                            answer = m
            t1 = time.perf_counter()
            if answer is None:
                raise SystemExit(f"no answer for {rid} within 60 s")
            lat_ms.append((t1 - t0) * 1000)
            if n < args.warmup:
                continue
            if answer["type"] == "answer":
                res = open_answer(ek, answer)["result"]
                if [m["subscriber"] for m in res.get("matches", [])] == [f"sub-{i}@bench.example"]:
                    correct += 1
        return lat_ms, correct
    finally:
        await cons.stop()
        await prod.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default: the running local broker)")
    ap.add_argument("--mappings", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5,
                    help="requests sent first and left out of the figures (reported as warmup_ms): the worker's "
                         "first sends to the responses, audit and state topics fetch their metadata")
    ap.add_argument("--fill", choices=("auto", "ingest", "changelog"), default="auto",
                    help=f"how the table is filled (auto: changelog above {CHANGELOG_FILL_ABOVE} mappings)")
    ap.add_argument("--fill-timeout-s", type=float, default=900.0)
    ap.add_argument("--during-rebuild", action="store_true",
                    help="--fill changelog: start the requests at \"Worker ready\", while the sweeper still "
                         "rebuilds its schedule from the restored store (default: after that)")
    ap.add_argument("--heartbeat-ms", type=int, default=10_000,
                    help="worker heartbeat period (the 1 s test default costs ~80 sends/s of producer time)")
    ap.add_argument("--profile", help="write a py-spy raw profile of the worker during the requests here")
    ap.add_argument("--store", choices=("memory", "disk"), default="memory",
                    help="the worker's table store (disk: --table-store disk, filled through the changelog)")
    ap.add_argument("--pad", type=int, default=0,
                    help="--store disk: this many more records of random bytes in the changelog (store size)")
    ap.add_argument("--restart", action="store_true",
                    help="--store disk: restart the worker on its intact store before the requests")
    args = ap.parse_args(argv)
    if args.smoke:
        args.mappings, args.requests, args.warmup = 200, 5, 1
    if args.store != "disk" and (args.pad or args.restart):
        ap.error("--pad and --restart need --store disk")
    if args.fill == "auto":
        args.fill = "changelog" if args.mappings > CHANGELOG_FILL_ABOVE or args.store == "disk" else "ingest"
    if args.bootstrap is None:
        from agents.broker import LocalBroker

        args.bootstrap = LocalBroker().bootstrap
    bootstrap = args.bootstrap

    from tests.conftest import WorkerProcess

    work = Path(tempfile.mkdtemp(prefix="ipanon-bench-lawful-"))
    sk, ek = ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    (work / "authorities").mkdir()
    (work / "staff").mkdir()
    (work / "authorities" / f"{AUTH}.toml").write_text(authority_toml(
        AUTH, AUTH, "SE", sk.public_key(), ek.public_key(), ["lek-law-enforcement"], 10_000_000, 1_000_000))
    os.environ["IPANON_AUTHORITIES"] = str(work / "authorities")
    os.environ["IPANON_STAFF"] = str(work / "staff")
    prefix = f"bl{secrets.token_hex(4)}"
    disk = args.store == "disk"
    w = WorkerProcess(bootstrap, work / "w", prefix, ["connect2ip"], ["--table-store", "disk"] if disk else [],
                      heartbeat_ms=args.heartbeat_ms)
    T = w.topics
    now_s = int(time.time())
    start_s = now_s - 3600
    restore_s = ready_s = schedule_s = restart_s = rss_mb = rss_after_mb = None
    pad_s = 0.0
    load_before = os.getloadavg()
    if args.fill == "changelog":
        import bench_state

        filled = bench_state.write_changelog(bootstrap, w, _radius_mappings(args.mappings, start_s * 1000),
                                             now_s * 1000, revisit=disk)
        fill_s = filled["s"]
        if args.pad:
            import bench_disk_worker

            w.changelog = f"{w.settings.app_id}-mappings-changelog"
            pad_s = bench_disk_worker.fill_raw(bootstrap, w, args.pad, now_s * 1000)
    from _harness import PySpy, cpu_s, rss_kb

    w.start()
    try:
        p = producer(bootstrap)
        if args.fill == "changelog":
            restore_s, ready_s, schedule_s = _wait_restored(w, args.mappings + args.pad, args.fill_timeout_s,
                                                            not args.during_rebuild and not disk)
        else:
            fill_s = _fill_by_ingest(args, w, p, start_s)
        if args.restart:
            w.stop()
            w.log_path.write_text("")
            t_restart = time.monotonic()
            w.start()
            _wait_restored(w, 0, args.fill_timeout_s, False)
            restart_s = round(time.monotonic() - t_restart, 2)
        if disk:
            time.sleep(10)  # an erasure tick runs meanwhile
            rss_mb = round(rss_kb(w.proc.pid) / 1024, 1)

        prof = None
        if args.profile:
            prof = PySpy(w.proc.pid, args.profile, rate=200)
            time.sleep(1.0)
        cpu0, mine0 = cpu_s(w.proc.pid), time.process_time()
        lat_ms, correct = asyncio.run(_requests(args, T, sk, ek, start_s))
        warm_ms, lat_ms = lat_ms[:args.warmup], lat_ms[args.warmup:]
        worker_cpu_s = round(cpu_s(w.proc.pid) - cpu0, 2)
        bench_cpu_s = round(time.process_time() - mine0, 2)
        if prof is not None:
            prof.stop()
        if disk:
            rss_after_mb = round(rss_kb(w.proc.pid) / 1024, 1)
        p.close()
    finally:
        w.stop()
    gets = _disk_gets(w, args.mappings, now_s * 1000) if disk else {"gets": None, "get_p50_us": None, "get_p99_us": None}
    load_after = os.getloadavg()
    print(json.dumps({
        "mappings": args.mappings, "requests": args.requests, "basis": "lek-law-enforcement",
        "fill": args.fill, "fill_s": round(fill_s, 2), "fill_per_s": round(args.mappings / fill_s, 1),
        "restore_s": restore_s, "ready_s": round(ready_s, 2) if ready_s is not None else None,
        "schedule_rebuilt_s": round(schedule_s, 2) if schedule_s is not None else None,
        "latency_ms_p50": round(_pct(lat_ms, 0.50), 2), "latency_ms_p99": round(_pct(lat_ms, 0.99), 2),
        "latency_ms_max": round(max(lat_ms), 2), "latency_ms_min": round(min(lat_ms), 2),
        "slowest_ms": [[n, round(x, 1)] for n, x in sorted(enumerate(lat_ms), key=lambda t: -t[1])[:5]],
        "warmup_ms": [round(x, 1) for x in warm_ms],
        "heartbeat_ms": args.heartbeat_ms,
        "correct": correct, "worker_cpu_s": worker_cpu_s, "bench_cpu_s": bench_cpu_s,
        "store": args.store, "pad": args.pad, "pad_s": round(pad_s, 1), "restart_s": restart_s,
        "rss_mb": rss_mb, "rss_after_mb": rss_after_mb, **gets,
        "load1_before": round(load_before[0], 2), "load1_after": round(load_after[0], 2),
    }))
    import shutil

    shutil.rmtree(work, ignore_errors=True)  # a 50M store is ≈ 7 GB (a failed run keeps it and the worker log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
