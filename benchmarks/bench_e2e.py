"""End to end: mixed raw events through ``ipanon worker`` on a real broker, against the ceiling and a peer.

In one run, on one broker, with the same topic shapes (``--partitions``, default 4):

1. *backlog*: ``--events`` realistic raw records (RADIUS radius-json / DHCP kea-hook / CGNAT
   ipfix-json ≈ 60/30/10, event times just before now so the table really stores them) are
   written to the raw topics before anything consumes them;
2. *ceiling*: a raw aiokafka pass-through (consume the raw topics, partitions assigned
   without a consumer group → produce every value unchanged to a pass-through topic, batched,
   no processing) drains that backlog: events/s, and events per CPU-second of this process;
2b. *peer*: ``quix_peer.py`` (Quix Streams: the comparable stateful job, HMAC-SHA256 subscriber
   pseudonym, per-address state in its RocksDB store with changelog topics, one record written
   per event; see its docstring) drains the same raw topics as a child process, under its own
   consumer group: events/s = output records ÷ (last − first output record read), CPU from
   /proc.  Skipped, and said so in ``peer``, when quixstreams is not installed (``.[bench]``);
3. *worker*: a fresh ``ipanon worker`` drains the same backlog (ingest → bindings and stats →
   mapping table).  Sustained events/s = stats records ÷ (end − first stats record read),
   so start-up and rebalancing are not counted; the backlog is complete when the stats topic
   holds one record per binding (counted by parsing the same raw records here) *and* the
   mapping stage's consumer group has committed the whole bindings topic (ingest sends the
   statistics, the mapping stage reads the bindings after it: either may finish first); end = the later of the last
   stats record and the last table write (newest changelog record).  Worker CPU is sampled
   while waiting and taken at that end;
4. *latency*: ``--latency-events`` more records are produced at a steady rate below the
   measured throughput (half of it, at most 5000/s); latency = the instant this script reads
   the stats record − raw record produce time, pairing the k-th produced binding with
   the k-th stats record in time order (see ``StatsReader``), p50/p99.  Skipped when the
   backlog did not drain in time (it would measure the queue).

Stats records are timed by when this script reads them (it polls the whole time, 50 ms fetch
wait): their Kafka timestamp is their hour bucket's start (the exact time would undo the
bucketing), so it says nothing about when they were written.

``--workers K`` (e.g. ``--workers 2 --partitions 8``): after the single worker, K worker
processes of one fresh deployment (prefix, app id, keys; own data directories) drain the same
backlog, produced again to that deployment's raw topics on the same broker, measured the same
way with their CPU summed (``scale``; ``ratios.workers_K_over_1``).  The processes start
together, so their group's rebalances fall in the first seconds, partly inside the span.

Also reported: the worker's CPU seconds during the backlog (events per CPU-second is less
noisy than events/s on a shared machine) and its RSS.  ``--profile FILE`` records the worker
with py-spy (``--format raw``: collapsed stacks) during the backlog; ``profile_summary.py``
turns that into the top functions.

``--engine lean`` runs ``lean_engine.py`` instead of the worker: the same per-event work with
the same pure core, on plain aiokafka batches without Faust — how much of the gap is Faust.

Prints exactly one JSON line.  Targets: ≥ 50k events/s and ≥ 0.5 × pass-through, ≥ 1.0 × the
peer, two workers ≥ 1.6 × one (judged in docs/benchmarks.md "Figures on the quiet machine" and
"Against a Quix Streams peer").  ``ratios`` gives ipanon ÷ peer and
ipanon ÷ pass-through for events/s and per CPU-second.
The machine is a 2-core box shared with other busy processes: figures are noisy and
``machine.load1`` says how busy it was.

    python benchmarks/bench_e2e.py [--bootstrap HOST:PORT] [--events N] [--profile out.txt]
    python benchmarks/bench_e2e.py --events 60000 --workers 2 --partitions 8
    python benchmarks/bench_e2e.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as H  # noqa: E402


def expected_count(events) -> list[int]:
    """Per raw event, how many stats records the worker emits for it (one per binding that
    carries an address; resets carry none)."""
    from stream.parse import get_format

    return [sum(1 for b in get_format(fmt).parse(value, operator=H.OPERATOR) if b.action != "reset" and b.ip is not None)
            for fmt, value in events]


async def _passthrough(bootstrap: str, topics, out_topic: str, n: int, timeout_s: float, partitions: int) -> dict:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from aiokafka import TopicPartition

    # assigned partitions, no consumer group: the ceiling should not wait for a group
    # coordinator (a fresh broker creates __consumer_offsets lazily) nor commit on close
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                         enable_auto_commit=False, max_poll_records=2000)
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1, max_batch_size=256 * 1024)
    await c.start()
    await p.start()
    tps = [TopicPartition(t, k) for t in topics.raw for k in range(partitions)]
    c.assign(tps)
    await c.seek_to_beginning(*tps)
    got = 0
    t_first = cpu_first = None
    deadline = time.monotonic() + timeout_s
    try:
        while got < n and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500)
            for tp, recs in batch.items():
                if recs and t_first is None:
                    t_first, cpu_first = time.perf_counter(), time.process_time()
                for r in recs:
                    if r.value is None:
                        continue
                    await p.send(out_topic, value=r.value, key=r.key, headers=list(r.headers))  # queues; no ack wait
                    got += 1
        await p.flush()
        t_end, cpu_end = time.perf_counter(), time.process_time()
    finally:
        await p.stop()
        await c.stop()
    dt = (t_end - t_first) if t_first else float("nan")
    cpu = (cpu_end - cpu_first) if t_first else 0.0  # this process: only the pass-through runs in it then
    return {"events": got, "seconds": round(dt, 3), "eps": round(got / dt) if got and dt > 0 else 0,
            "cpu_s": round(cpu, 2), "events_per_cpu_s": round(got / cpu) if cpu > 0 else 0}


class StatsReader:
    """Reads the stats topic from the beginning; keeps (read time, read time) of every record
    (the record's own timestamp is its hour bucket: see the module docstring).  Records are not matched to raw events one by one (their ids are keyed hashes
    under the worker's own statistics keyring): the backlog is complete when the count is
    reached, and latency pairs the k-th produced event with the k-th stats record in time
    order — exact for a FIFO pipeline, and an estimate of the per-event delay otherwise."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer

        self.c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                               enable_auto_commit=False, max_poll_records=5000, fetch_max_wait_ms=50)
        self.seen: list[tuple[int, int]] = []

    def poll(self, ms: int = 200) -> int:
        n = 0
        for recs in self.c.poll(timeout_ms=ms).values():
            now = time.time_ns() // 1_000_000
            for r in recs:
                if r.value is not None:
                    self.seen.append((now, now))
                    n += 1
        return n

    def wait_for(self, count: int, timeout_s: float, alive=lambda: True, tick=lambda: None) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.seen) < count and time.monotonic() < deadline and alive():
            self.poll()
            tick()
        return len(self.seen) >= count

    def close(self) -> None:
        self.c.close()


def _table_done_ms(bootstrap: str, group: str, bindings: str, changelog: str, timeout_s: float,
                   alive=lambda: True, tick=lambda: None) -> int | None:
    """Wait until the mapping stage's consumer group (``<app id>-mapping``; the lean engine's
    ``<prefix>-lean-mapping``) has committed every record of the bindings topic, then return
    the timestamp of the last table write (the newest non-heartbeat changelog record): the
    instant the mapping table had taken the whole backlog.  None on timeout.  The stats stage
    runs in a consumer group of its own, so the last stats record alone does not say the
    table is done."""
    from kafka import KafkaConsumer, TopicPartition

    from agents.kafka_io import HEARTBEAT_KEY, wait_group_caught_up

    if not wait_group_caught_up(bootstrap, group, bindings, timeout_s=timeout_s, alive=alive, tick=tick):
        return None
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        ctps = [TopicPartition(changelog, p) for p in (c.partitions_for_topic(changelog) or ())]
        cends = c.end_offsets(ctps)
        c.assign(ctps)
        for tp in ctps:
            c.seek(tp, max(0, cends[tp] - 20))
        last = None
        left = {tp for tp in ctps if cends[tp] > 0}
        while left:
            for tp, recs in c.poll(timeout_ms=500).items():
                for r in recs:
                    if not (r.value is None and r.key == HEARTBEAT_KEY):
                        last = r.timestamp if last is None else max(last, r.timestamp)
                    if r.offset + 1 >= cends[tp]:
                        left.discard(tp)
        return last
    finally:
        c.close()


def _warm_group_coordinator(bootstrap: str, topic: str, timeout_s: float = 120.0) -> None:
    """Join and leave a throw-away consumer group, so a fresh broker has created
    ``__consumer_offsets`` and elected its coordinator before the worker starts (on a fresh,
    loaded broker the worker's first minutes otherwise went to GroupCoordinatorNotAvailable
    retries, and twice it stalled)."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"{topic}-warmup", enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout_s
        while not c.assignment() and time.monotonic() < deadline:
            c.poll(timeout_ms=500)
    finally:
        c.close()


def _peer_available() -> str | None:
    """None when the Quix Streams peer can run, else why not."""
    try:
        import quixstreams  # noqa: F401
    except ImportError:
        return "quixstreams not installed: pip install -e .[bench]"
    return None


def _peer(bootstrap: str, prefix: str, backlog, partitions: int, tmp: Path, timeout_s: float) -> dict:
    """Run ``quix_peer.py`` as a child process on the same raw topics; measured like the worker:
    events/s = output records ÷ (last − first output record read), CPU from /proc up to then.
    Quix writes its changelog and commits at its checkpoints (every 5 s by default), so the
    state's completeness (the group has committed its repartition topics) is waited for and
    reported but not counted in the span — in the peer's favour."""
    import os
    import signal
    import subprocess

    from kafka import KafkaAdminClient

    from agents.kafka_io import count, ensure_topics, wait_group_caught_up
    from quix_peer import FAMILIES, extract

    want = sum(1 for fmt, v in backlog if extract(fmt, json.loads(v)) is not None)
    group, out_topic = f"{prefix}-quix", f"{prefix}-quix-out"
    ensure_topics(bootstrap, [out_topic], partitions=partitions)
    reader = StatsReader(bootstrap, out_topic)
    log = tmp / "quix-peer.log"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("quix_peer.py")), "--bootstrap", bootstrap,
                             "--prefix", prefix, "--group", group, "--out-topic", out_topic,
                             "--state-dir", str(tmp / "quix-state")],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    alive = lambda: proc.poll() is None  # noqa: E731
    try:
        cpu0 = H.cpu_s(proc.pid)
        cpu_at: list[tuple[int, float]] = []

        def sample() -> None:
            cpu_at.append((time.time_ns() // 1_000_000, H.cpu_s(proc.pid)))

        ok = reader.wait_for(want, timeout_s=timeout_s, alive=alive, tick=sample)
        sample()
        ts = sorted(t for t, _ in reader.seen)
        got = len(ts)
        span_s = max(ts[-1] - ts[0], 1) / 1000 if got > 1 else float("nan")
        cpu = next((c for t, c in cpu_at if t >= ts[-1]), cpu_at[-1][1]) - cpu0 if got else 0.0
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            internal = [t for t in admin.list_topics() if group in t]
        finally:
            admin.close()
        repart = sorted(t for t in internal if t.startswith("repartition__"))
        changelogs = sorted(t for t in internal if t.startswith("changelog__"))
        t0 = time.monotonic()
        committed = ok and all(wait_group_caught_up(bootstrap, group, t, timeout_s=60, alive=alive) for t in repart)
        state_s = time.monotonic() - t0
        changelog_records = sum(count(bootstrap, t) for t in changelogs)
        rss = H.rss_kb(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        reader.close()
    import quixstreams

    out = {"quixstreams": quixstreams.__version__, "events": got, "expected": want, "complete": ok,
           "eps": round(got / span_s) if got > 1 and span_s > 0 else 0, "span_s": round(span_s, 3),
           "cpu_s": round(cpu, 2), "events_per_cpu_s": round(got / cpu) if cpu else 0,
           "rss_mb": round(rss / 1024, 1), "state_committed": committed,
           "state_committed_after_s": round(state_s, 2), "repartition_topics": len(repart),
           "changelog_topics": len(changelogs), "changelog_records": changelog_records,
           "raw_topics": len(FAMILIES)}
    if not ok:
        out["log_tail"] = log.read_text(errors="replace")[-3000:]
    return out


def _drain(workers: list, reader: "StatsReader", want: int, group: str, timeout: float) -> dict:
    """Wait until ``workers`` (one deployment: one prefix, one app id) have drained the backlog;
    their summed CPU from /proc up to its end.  The workers keep running (the latency phase)."""
    pids = [w.pid for w in workers]
    alive = lambda: all(w.alive() for w in workers)  # noqa: E731
    cpu_of = lambda: sum(H.cpu_s(p) for p in pids)  # noqa: E731
    w = workers[0]
    cpu0 = cpu_of()
    cpu_at: list[tuple[int, float]] = []  # (wall ms, workers' CPU s): CPU at the backlog's end

    def sample() -> None:
        cpu_at.append((time.time_ns() // 1_000_000, cpu_of()))

    ok = reader.wait_for(want, timeout_s=timeout, alive=alive, tick=sample)
    sample()
    table_ms = _table_done_ms(w.settings.bootstrap, group, w.topics.bindings, w.changelog, timeout_s=timeout,
                              alive=alive, tick=sample) if ok else None
    sample()
    ts = sorted(t for t, _ in reader.seen)[:want]
    got = len(ts)
    end_ms = max(ts[-1], table_ms or 0) if got else 0
    span_s = max(end_ms - ts[0], 1) / 1000 if got > 1 else float("nan")
    # CPU up to the backlog's end (first sample at or after it)
    cpu = next((c for t, c in cpu_at if t >= end_ms), cpu_at[-1][1]) - cpu0
    eps = got / span_s if got > 1 and span_s > 0 else 0.0
    return {"ok": ok, "got": got, "ts": ts, "table_ms": table_ms, "span_s": span_s, "cpu": cpu, "eps": eps,
            "rss_kb": sum(H.rss_kb(p) for p in pids)}


def _ready_backlog(bootstrap: str, w, backlog, sources: int = 8) -> tuple[float, int]:
    """Produce ``backlog`` to ``w``'s raw topics (keyed by one of ``sources`` source ids, as
    ``_harness.produce``); (events/s of the produce, records sent again).  Every send's result
    is checked and a failed one sent again: on a fresh broker, a just-created partition of an
    8-partition topic refused records for seconds and the backlog silently lost a third of
    them.  Returns once every record is readable."""
    from agents.kafka_io import count, producer
    from agents.topics import H_FORMAT, H_OPERATOR

    n = len(backlog)
    t = time.perf_counter()
    p = producer(bootstrap, linger_ms=5, acks=1, max_in_flight_requests_per_connection=5)
    todo, again = list(range(n)), 0
    try:
        for _ in range(60):
            futs = []
            for i in todo:
                fmt, value = backlog[i]
                futs.append((i, p.send(w.topics.raw_by_family[H.FORMAT_TOPIC[fmt]], key=f"src-{i % sources}".encode(),
                                       value=value, headers=[(H_FORMAT, fmt.encode()), (H_OPERATOR, H.OPERATOR.encode())],
                                       timestamp_ms=time.time_ns() // 1_000_000)))
            p.flush()
            todo = [i for i, f in futs if f.failed()]
            if not todo:
                break
            again += len(todo)
            time.sleep(1)
    finally:
        p.close()
    if todo:
        raise RuntimeError(f"{len(todo)} of {n} backlog records not accepted by the broker")
    produce_eps = n / (time.perf_counter() - t)
    deadline = time.monotonic() + 120
    while sum(count(bootstrap, tname) for tname in w.topics.raw) < n and time.monotonic() < deadline:
        time.sleep(1)
    return produce_eps, again


def _more_workers(w, k: int, tmp: Path) -> list:
    """``w`` and ``k - 1`` more processes of the same deployment (prefix, app id, keys), each
    with its own data directory (so its own static-membership id) and log."""
    import copy

    out = [w]
    for i in range(1, k):
        d = tmp / f"worker{i + 1}"
        d.mkdir(parents=True, exist_ok=True)
        wi = copy.copy(w)
        wi.args = list(w.args)
        wi.args[wi.args.index("--data-dir") + 1] = str(d / "data")
        wi.log_path, wi.proc = d / "worker.log", None
        out.append(wi)
    return out


def _scale(bootstrap: str, n: int, k: int, partitions: int, tmp: Path, timeout: float) -> dict:
    """``k`` worker processes of one fresh deployment drain the same backlog (the same records,
    event times moved to just before now, produced again to that deployment's raw topics on the
    same broker).  Not the first run's bytes: minutes later their event times are past the
    ingest lag, and the worker dead-letters them as too late (seen: 3 763 of 60 000)."""
    d = tmp / f"scale{k}"
    d.mkdir()
    backlog = H.mixed_events(n, time.time_ns() // 1_000_000, seed=1)
    want = sum(expected_count(backlog))
    w = H.Worker(bootstrap, d, partitions=partitions)
    _, again = _ready_backlog(bootstrap, w, backlog)
    _warm_group_coordinator(bootstrap, w.topics.raw[0])
    ws = _more_workers(w, k, d)
    reader = StatsReader(bootstrap, w.topics.stats)
    try:
        for wi in ws:
            wi.start()
        r = _drain(ws, reader, want, f"{w.settings.app_id}-mapping", timeout)
        load = H.machine()["load1"]
    finally:
        for wi in ws:
            wi.stop()
        reader.close()
    out = {"workers": k, "partitions": partitions, "eps": round(r["eps"]), "complete": r["ok"],
           "table_done": r["table_ms"] is not None, "stats_records": r["got"], "span_s": round(r["span_s"], 3),
           "cpu_s": round(r["cpu"], 2), "events_per_cpu_s": round(r["got"] / r["cpu"]) if r["cpu"] else 0,
           "rss_mb": round(r["rss_kb"] / 1024, 1), "load1_end": load, "produce_resent": again}
    if not r["ok"]:  # where the missing records stopped: ingest (bindings, dead letters) or stats
        from agents.kafka_io import count_records

        out["bindings_records"] = count_records(bootstrap, w.topics.bindings)
        out["deadletter_records"] = count_records(bootstrap, w.topics.deadletter)
        out["worker_log_tail"] = "\n---\n".join(wi.log_tail(3000) for wi in ws)
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if a and b else None


def run(a) -> dict:
    from agents.kafka_io import ensure_topics

    n, nl = a.events, a.latency_events
    with H.broker(a.bootstrap) as (bootstrap, _), tempfile.TemporaryDirectory(prefix="ipanon-bench-e2e-") as tmp:
        w = H.Worker(bootstrap, Path(tmp), engine=a.engine, partitions=a.partitions)
        now = time.time_ns() // 1_000_000
        backlog = H.mixed_events(n, now, seed=1)
        later = H.mixed_events(nl, now + n + 120_000, seed=2)
        per_b = expected_count(later)
        want_a = sum(expected_count(backlog))
        load_start = H.machine()["load1"]

        produce_eps, resent = _ready_backlog(bootstrap, w, backlog)

        pt_topic = f"{w.prefix}-passthrough"
        ensure_topics(bootstrap, [pt_topic], partitions=w.settings.partitions)
        ceiling = asyncio.run(_passthrough(bootstrap, w.topics, pt_topic, n, timeout_s=max(60, n / 500),
                                           partitions=w.settings.partitions))

        _warm_group_coordinator(bootstrap, pt_topic)
        timeout = a.timeout or max(120, n / 100)
        skip = "--no-peer given" if a.no_peer else _peer_available()
        peer = {"skipped": skip} if skip else _peer(bootstrap, w.prefix, backlog, w.settings.partitions, Path(tmp),
                                                     timeout_s=timeout)
        reader = StatsReader(bootstrap, w.topics.stats)
        w.start()
        prof = None
        try:
            if a.profile:
                prof = H.PySpy(w.pid, a.profile, rate=50)
            group = f"{w.prefix}-lean-mapping" if a.engine == "lean" else f"{w.settings.app_id}-mapping"
            r = _drain([w], reader, want_a, group, timeout)
            ok_a, got_a, ts, table_ms, span_s, cpu_a, eps = (r[k] for k in ("ok", "got", "ts", "table_ms", "span_s",
                                                                             "cpu", "eps"))
            rss_a = r["rss_kb"]
            if prof is not None:
                prof.stop(30)

            # latency at a steady rate below throughput
            rate = a.rate or max(50, min(int(eps * 0.5), 5000))
            sent_at: list[int] = []
            if not ok_a:  # still draining the backlog: a latency figure would measure the queue
                nl = 0
            from agents.kafka_io import producer
            from agents.topics import H_FORMAT, H_OPERATOR

            p = producer(bootstrap, linger_ms=0, acks=1, max_in_flight_requests_per_connection=5)
            tick = 0.01
            per_tick = max(1, int(rate * tick))
            t_start = time.perf_counter()
            for k in range(0, nl, per_tick):
                for j in range(k, min(nl, k + per_tick)):
                    fmt, value = later[j]
                    ts_ms = time.time_ns() // 1_000_000
                    p.send(w.topics.raw_by_family[H.FORMAT_TOPIC[fmt]], key=f"src-{j % 8}".encode(), value=value,
                           headers=[(H_FORMAT, fmt.encode()), (H_OPERATOR, H.OPERATOR.encode())], timestamp_ms=ts_ms)
                    sent_at += [ts_ms] * per_b[j]
                p.flush()
                reader.poll(0)
                sleep = t_start + (k // per_tick + 1) * tick - time.perf_counter()
                if sleep > 0:
                    time.sleep(sleep)
            p.close()
            reader.wait_for(want_a + len(sent_at), timeout_s=60, alive=w.alive)
            later_recs = sorted(reader.seen)[want_a:]
            sent_at.sort()
            lat = [r[0] - t0 for r, t0 in zip(later_recs, sent_at)]
            lat_recv = sorted(r[1] for r in later_recs)
            lat_recv = [r - t0 for r, t0 in zip(lat_recv, sent_at)]
            rss_end = H.rss_kb(w.pid)
        finally:
            w.stop()
            reader.close()
        log_tail = "" if ok_a else w.log_tail(6000)
        load_one = H.machine()["load1"]
        # K workers should not need longer than one did: stop waiting at 3× its time (a stall
        # otherwise costs the whole timeout)
        t_scale = min(timeout, max(120.0, 3 * span_s)) if ok_a else timeout
        scale = _scale(bootstrap, n, a.workers, w.settings.partitions, Path(tmp), t_scale) \
            if a.workers > 1 else None
    ratio = eps / ceiling["eps"] if ceiling["eps"] else 0.0
    per_cpu = round(got_a / cpu_a) if cpu_a else 0
    peer_eps, peer_cpu = peer.get("eps", 0), peer.get("events_per_cpu_s", 0)
    ratios = {"ipanon_over_peer": _ratio(eps, peer_eps), "ipanon_over_peer_per_cpu_s": _ratio(per_cpu, peer_cpu),
              "ipanon_over_passthrough": round(ratio, 3),
              "ipanon_over_passthrough_per_cpu_s": _ratio(per_cpu, ceiling["events_per_cpu_s"]),
              "peer_over_passthrough": _ratio(peer_eps, ceiling["eps"])}
    if scale:
        ratios[f"workers_{a.workers}_over_1"] = _ratio(scale["eps"], eps)
        ratios[f"workers_{a.workers}_over_1_per_cpu_s"] = _ratio(scale["events_per_cpu_s"], per_cpu)
    out = {
        "bench": "e2e", "engine": a.engine, "smoke": a.smoke, "events": n, "partitions": a.partitions,
        "table_store": os.environ.get("IPANON_TABLE_STORE", "memory"),
        "mix": {"radius-json": 0.6, "kea-hook": 0.3, "ipfix-json": 0.1},
        "worker_eps": round(eps), "worker_complete": ok_a, "worker_stats_records": got_a,
        "worker_span_s": round(span_s, 3), "worker_cpu_s": round(cpu_a, 2),
        "worker_table_done": table_ms is not None,
        "table_after_stats_s": round((table_ms - ts[-1]) / 1000, 3) if table_ms and got_a else None,
        "worker_events_per_cpu_s": per_cpu,
        "passthrough_eps": ceiling["eps"], "passthrough_events": ceiling["events"],
        "passthrough_cpu_s": ceiling["cpu_s"], "passthrough_events_per_cpu_s": ceiling["events_per_cpu_s"],
        "peer": peer, "scale": scale, "ratios": ratios,
        "ratio": round(ratio, 3), "produce_eps": round(produce_eps), "produce_resent": resent,
        "latency_rate_eps": rate, "latency_events": len(lat),
        "latency_p50_ms": H.percentile(lat, 0.5), "latency_p99_ms": H.percentile(lat, 0.99),
        "latency_recv_p50_ms": H.percentile(lat_recv, 0.5), "latency_recv_p99_ms": H.percentile(lat_recv, 0.99),
        "worker_rss_mb": round(max(rss_a, rss_end) / 1024, 1),
        "targets": {"eps": 50_000, "ratio": 0.5, "over_peer": 1.0, "workers_2_over_1": 1.6},
        "targets_met": {"eps": eps >= 50_000, "ratio": ratio >= 0.5,
                        "over_peer": (ratios["ipanon_over_peer"] or 0) >= 1.0 if peer_eps else None,
                        "workers_2_over_1": (ratios.get("workers_2_over_1") or 0) >= 1.6 if a.workers == 2 else None},
        "load1_start": load_start, "load1_after_one_worker": load_one,
        "profile": a.profile, "machine": H.machine(),
    }
    if not ok_a:
        out["worker_log_tail"] = log_tail
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    ap.add_argument("--bootstrap", help="use this running broker (default: start a throw-away local one)")
    ap.add_argument("--events", type=int, default=40_000, help="backlog size (default 40000)")
    ap.add_argument("--latency-events", type=int, default=4_000)
    ap.add_argument("--rate", type=int, help="latency phase rate, events/s (default: half the measured throughput, ≤ 5000)")
    ap.add_argument("--timeout", type=float, help="seconds to wait for the backlog (default: scaled to --events)")
    ap.add_argument("--engine", choices=["worker", "lean"], default="worker",
                    help="worker = `ipanon worker` (default); lean = benchmarks/lean_engine.py, the same work "
                         "on plain aiokafka batches without Faust (a measuring stick, not the product)")
    ap.add_argument("--profile", help="write a py-spy raw profile of the worker during the backlog here")
    ap.add_argument("--partitions", type=int, default=4, help="partitions of every topic (default 4)")
    ap.add_argument("--workers", type=int, default=1,
                    help="also run this many worker processes of one fresh deployment on the same backlog "
                         "(e.g. --workers 2 --partitions 8); 1 = only the single worker")
    ap.add_argument("--no-peer", action="store_true", help="skip the Quix Streams peer")
    ap.add_argument("--table-store", choices=["memory", "disk"],
                    help="the workers' mapping table store (IPANON_TABLE_STORE; default: the environment's, else memory)")
    a = ap.parse_args()
    if a.table_store:
        os.environ["IPANON_TABLE_STORE"] = a.table_store  # the worker processes inherit it (_harness.Worker)
    if a.workers > 1 and a.engine != "worker":
        ap.error("--workers needs --engine worker")
    if a.smoke:
        a.events, a.latency_events, a.rate = 300, 100, 200
    print(json.dumps(run(a)))


if __name__ == "__main__":
    main()
